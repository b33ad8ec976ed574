//! Trace recording and the stable trace hash.
//!
//! Every event is folded into a 64-bit FNV-1a hash whether or not it is kept, so two runs
//! compare by hash; events themselves are kept only when asked (tables, Perfetto output).

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
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub fn new(record: bool) -> Trace {
        Trace { hash: FNV_OFFSET, count: 0, events: record.then(Vec::new) }
    }

    pub fn is_recording(&self) -> bool {
        self.events.is_some()
    }

    pub fn hash(&self) -> u64 {
        self.hash
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
        for byte in word.to_le_bytes() {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    /// Folds the event into the hash, and keeps it when recording. `text` is only called
    /// when recording, so hot paths pay for no formatting.
    pub fn record(
        &mut self,
        cycle: Cycle,
        cpu: CpuId,
        task: TaskId,
        kind: impl FnOnce() -> TraceKind,
        words: [u64; 4],
    ) {
        self.count += 1;
        self.mix(cycle.0);
        self.mix(u64::from(cpu.0) << 32 | u64::from(task.0));
        for word in words {
            self.mix(word);
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
            let mut trace = Trace::new(false);
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
    fn events_are_kept_only_when_recording() {
        let mut quiet = Trace::new(false);
        let mut loud = Trace::new(true);
        for trace in [&mut quiet, &mut loud] {
            trace.record(Cycle(5), CpuId(1), TaskId(2), || TraceKind::TaskEnd, [7, 0, 0, 0]);
        }
        assert_eq!(quiet.hash(), loud.hash());
        assert!(quiet.take_events().is_empty());
        assert_eq!(loud.take_events().len(), 1);
    }
}
