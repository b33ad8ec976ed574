//! Trace recording and the stable trace hash.
//!
//! Every event is folded into a 64-bit hash whether or not it is kept, so two runs compare
//! by hash; events themselves are kept only when asked (tables, Perfetto output). The hash
//! folds a word at a time (multiply, then fold the high half down) and ends with
//! SplitMix64's finalizer: every event is on the hot path, and a byte-at-a-time FNV-1a spent
//! a tenth of a litmus run here.

use crate::resource::{Mode, ResourceId};
use crate::{CpuId, Cycle, TaskId};

/// Whether a mark opens, closes or stands alone (Perfetto's B / E / i phases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Begin,
    End,
    Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceKind {
    TaskStart,
    TaskEnd,
    /// The task queued behind others on a resource.
    Wait {
        resource: ResourceId,
        mode: Mode,
    },
    /// The task got the resource after `waited_cycles` (0: uncontended).
    Acquire {
        resource: ResourceId,
        mode: Mode,
        waited_cycles: u64,
    },
    Release {
        resource: ResourceId,
    },
    /// A domain event recorded by a model: `code`, `a` and `b` are hashed, `text` is for people.
    Mark {
        span: Span,
        code: u32,
        a: u64,
        b: u64,
        text: Box<str>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub cycle: Cycle,
    pub cpu: CpuId,
    pub task: TaskId,
    pub kind: TraceKind,
}

/// The hash of everything that happened, plus the events when recording.
pub struct Trace {
    hash: u64,
    count: u64,
    events: Option<Vec<TraceEvent>>,
    /// Whether events are folded into the hash: off only where nothing reads it.
    hashing: bool,
}

/// The state before any event (FNV-1a's offset basis: any odd constant would do).
const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;
/// An odd multiplier with well-spread bits (SplitMix64's second constant).
const HASH_MULTIPLIER: u64 = 0x94d0_49bb_1331_11eb;

impl Trace {
    /// A trace that keeps its events when `record`, and hashes them when `hash`.
    pub fn new(record: bool, hash: bool) -> Trace {
        Trace { hash: HASH_START, count: 0, events: record.then(Vec::new), hashing: hash }
    }

    /// The hash of the events, if they were hashed.
    pub fn hash(&self) -> Option<u64> {
        self.hashing.then(|| self.finished_hash())
    }

    pub fn is_recording(&self) -> bool {
        self.events.is_some()
    }

    /// Whether an event is hashed or kept: a trace that does neither takes no events.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.hashing || self.events.is_some()
    }

    fn finished_hash(&self) -> u64 {
        let mut hash = self.hash ^ self.count;
        hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash = (hash ^ (hash >> 27)).wrapping_mul(HASH_MULTIPLIER);
        hash ^ (hash >> 31)
    }

    /// Number of events folded into the hash.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn take_events(&mut self) -> Vec<TraceEvent> {
        self.events.take().unwrap_or_default()
    }

    fn mix(&mut self, word: u64) {
        let hash = (self.hash ^ word).wrapping_mul(HASH_MULTIPLIER);
        self.hash = hash ^ (hash >> 32);
    }

    /// Folds the event into the hash, and keeps it when recording. `text` is only called
    /// when recording, so hot paths pay for no formatting. Inlined: in a run whose trace
    /// takes no events (`check`'s exploration) an event is this one test.
    #[inline]
    pub fn record(
        &mut self,
        cycle: Cycle,
        cpu: CpuId,
        task: TaskId,
        kind: impl FnOnce() -> TraceKind,
        words: [u64; 4],
    ) {
        if self.is_active() {
            self.take(cycle, cpu, task, kind, words);
        }
    }

    fn take(
        &mut self,
        cycle: Cycle,
        cpu: CpuId,
        task: TaskId,
        kind: impl FnOnce() -> TraceKind,
        words: [u64; 4],
    ) {
        self.count += 1;
        if self.hashing {
            self.mix(cycle.0);
            self.mix(u64::from(cpu.0) << 32 | u64::from(task.0));
            for word in words {
                self.mix(word);
            }
        }
        if let Some(events) = &mut self.events {
            events.push(TraceEvent { cycle, cpu, task, kind: kind() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_word_and_on_order() {
        let run = |words: &[[u64; 4]]| {
            let mut trace = Trace::new(false, true);
            for w in words {
                trace.record(Cycle(1), CpuId(0), TaskId(0), || TraceKind::TaskStart, *w);
            }
            trace.hash()
        };
        let a = [1, 2, 3, 4];
        let b = [1, 2, 3, 5];
        assert_eq!(run(&[a, b]), run(&[a, b]));
        assert_ne!(run(&[a, b]), run(&[b, a]));
        assert_ne!(run(&[a]), run(&[b]));
    }

    #[test]
    fn flipping_any_bit_of_any_field_changes_the_hash() {
        let hash = |cycle: u64, task: u32, words: [u64; 4]| {
            let mut trace = Trace::new(false, true);
            trace.record(Cycle(cycle), CpuId(3), TaskId(task), || TraceKind::TaskStart, words);
            trace.record(Cycle(9), CpuId(0), TaskId(0), || TraceKind::TaskEnd, [0; 4]);
            trace.hash()
        };
        let base = hash(100, 7, [11, 22, 33, 44]);
        let mut seen = std::collections::BTreeSet::from([base]);
        for bit in 0..64 {
            assert!(seen.insert(hash(100 ^ (1 << bit), 7, [11, 22, 33, 44])), "cycle bit {bit}");
            for word in 0..4 {
                let mut words = [11, 22, 33, 44];
                words[word] ^= 1 << bit;
                assert!(seen.insert(hash(100, 7, words)), "word {word} bit {bit}");
            }
        }
        for bit in 0..32 {
            assert!(seen.insert(hash(100, 7 ^ (1 << bit), [11, 22, 33, 44])), "task bit {bit}");
        }
    }

    #[test]
    fn events_are_kept_only_when_recording() {
        let mut quiet = Trace::new(false, true);
        let mut loud = Trace::new(true, true);
        for trace in [&mut quiet, &mut loud] {
            trace.record(Cycle(5), CpuId(1), TaskId(2), || TraceKind::TaskEnd, [7, 0, 0, 0]);
        }
        assert_eq!(quiet.hash(), loud.hash());
        assert!(quiet.take_events().is_empty());
        assert_eq!(loud.take_events().len(), 1);
    }
}
