//! The events due on the current cycle, waiting for the chooser to order them.
//!
//! They wait in the order they were scheduled, each with its task's CPU (what the chooser is
//! told). A pick takes the `k`-th one still waiting: the entry is marked taken, not removed,
//! so a barrier that wakes 4096 stoppers at once does not move the entries behind a pick;
//! the entries go when the last is taken. A pick finds its entry by counts kept per 1024
//! entries and per 64 (a pass over at most a few of each, then one word of bits), not by
//! counting the bits of every word before it. The waiting events' CPUs are gathered in
//! order only for a decision that reads them.

use super::queue::QueuedEvent;
use crate::CpuId;

#[derive(Debug, Default)]
pub(super) struct SameCycle {
    events: Vec<QueuedEvent>,
    cpus: Vec<CpuId>,
    /// One bit per entry: still waiting.
    waiting: Vec<u64>,
    /// How many of each word's entries are still waiting.
    word_live: Vec<u8>,
    /// How many of each group of [`GROUP_WORDS`] words' entries are still waiting.
    group_live: Vec<u16>,
    /// How many are still waiting.
    live: usize,
}

/// Words of bits a group counts: 1024 entries.
const GROUP_WORDS: usize = 16;

impl SameCycle {
    /// Room for `capacity` events, none waiting.
    pub(super) fn with_capacity(capacity: usize) -> SameCycle {
        SameCycle {
            events: Vec::with_capacity(capacity),
            cpus: Vec::with_capacity(capacity),
            waiting: Vec::with_capacity(capacity.div_ceil(64)),
            word_live: Vec::with_capacity(capacity.div_ceil(64)),
            group_live: Vec::with_capacity(capacity.div_ceil(64 * GROUP_WORDS)),
            live: 0,
        }
    }

    /// The same, emptied, its vectors' capacities kept.
    pub(super) fn emptied(&mut self) -> SameCycle {
        let mut taken = std::mem::take(self);
        taken.clear();
        taken
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// How many are waiting.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// The cycle they are due on; some must be waiting.
    pub(super) fn cycle(&self) -> u64 {
        debug_assert!(self.live > 0, "same_cycle: no event waits");
        // Every entry since the last clear is of the one cycle.
        self.events[0].at()
    }

    /// `event`, of task on `cpu`, waits after the others.
    pub(super) fn push(&mut self, event: QueuedEvent, cpu: CpuId) {
        let index = self.events.len();
        let word = index / 64;
        if index.is_multiple_of(64) {
            if word.is_multiple_of(GROUP_WORDS) {
                self.group_live.push(0);
            }
            self.waiting.push(0);
            self.word_live.push(0);
        }
        self.waiting[word] |= 1 << (index % 64);
        self.word_live[word] += 1;
        self.group_live[word / GROUP_WORDS] += 1;
        self.events.push(event);
        self.cpus.push(cpu);
        self.live += 1;
    }

    /// The waiting events' CPUs, in order, into `cpus` (emptied first).
    pub(super) fn waiting_cpus(&self, cpus: &mut Vec<CpuId>) {
        cpus.clear();
        cpus.extend(self.waiting_indices().map(|index| self.cpus[index]));
    }

    /// Takes the `k`-th waiting event (from 0).
    pub(super) fn take(&mut self, k: usize) -> QueuedEvent {
        assert!(k < self.live, "same_cycle: event {k} of {} waiting", self.live);
        let mut rest = k;
        let group = rank_position(&self.group_live, &mut rest)
            .expect("same_cycle: the live count matches the groups'");
        let first_word = group * GROUP_WORDS;
        let word = first_word
            + rank_position(&self.word_live[first_word..], &mut rest)
                .expect("same_cycle: a group's count matches its words'");
        let index = word * 64 + select_bit(self.waiting[word], rest as u32) as usize;
        self.waiting[word] &= !(1 << (index % 64));
        self.word_live[word] -= 1;
        self.group_live[group] -= 1;
        self.live -= 1;
        let event = self.events[index];
        if self.live == 0 {
            self.clear();
        }
        event
    }

    fn waiting_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.waiting.iter().enumerate().flat_map(|(word, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                let bit = bits.trailing_zeros();
                if bit == 64 {
                    return None;
                }
                bits &= bits - 1;
                Some(word * 64 + bit as usize)
            })
        })
    }

    fn clear(&mut self) {
        self.events.clear();
        self.cpus.clear();
        self.waiting.clear();
        self.word_live.clear();
        self.group_live.clear();
        self.live = 0;
    }
}

/// The first of `counts` whose entries hold the `rest`-th (from 0); `rest` becomes its rank
/// among that one's.
fn rank_position<T: Copy + Into<usize>>(counts: &[T], rest: &mut usize) -> Option<usize> {
    counts.iter().position(|&count| {
        let count = count.into();
        if *rest < count {
            return true;
        }
        *rest -= count;
        false
    })
}

/// The position of the `rank`-th set bit of `bits` (from 0), which has more than `rank`.
/// Its bytes' counts come from one pass of shifts and masks (no `popcnt` in the baseline
/// x86-64 this is built for), so it steps over whole bytes, then over bits of one byte.
fn select_bit(bits: u64, rank: u32) -> u32 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    let pairs = bits - ((bits >> 1) & (0x55 * LOW));
    let nibbles = (pairs & (0x33 * LOW)) + ((pairs >> 2) & (0x33 * LOW));
    let bytes = (nibbles + (nibbles >> 4)) & (0x0f * LOW);
    // Byte i of `below`: the set bits in bytes 0..=i.
    let below = bytes.wrapping_mul(LOW);
    let mut rest = rank;
    let mut byte = 0;
    while byte < 7 && ((below >> (8 * byte)) & 0xff) as u32 <= rank {
        byte += 1;
    }
    if byte > 0 {
        rest -= ((below >> (8 * (byte - 1))) & 0xff) as u32;
    }
    let mut in_byte = (bits >> (8 * byte)) & 0xff;
    for _ in 0..rest {
        in_byte &= in_byte - 1;
    }
    8 * byte + in_byte.trailing_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_bit_finds_the_rank_th_set_bit() {
        let words = [1u64, u64::MAX, 0x8000_0000_0000_0001, 0x00f0_0000_0f00_ff00, 0xdead_beef_0123_4567];
        for bits in words {
            let set: Vec<u32> = (0..64).filter(|&bit| bits >> bit & 1 == 1).collect();
            for (rank, &bit) in set.iter().enumerate() {
                assert_eq!(select_bit(bits, rank as u32), bit, "{bits:#x} rank {rank}");
            }
        }
    }

    #[test]
    fn a_pick_takes_the_kth_event_still_waiting_in_schedule_order() {
        let mut same = SameCycle::with_capacity(4);
        // 150 events over three words; event i of task i on CPU i % 7.
        let mut model: Vec<u32> = Vec::new();
        for task in 0..150 {
            same.push(QueuedEvent::new(9, u64::from(task), task), CpuId(task % 7));
            model.push(task);
        }
        let mut cpus = Vec::new();
        // Picks from the front, the back and the middle, as a Vec::remove would take them.
        for (step, k) in [0usize, 148, 70, 64, 63, 0, 100].into_iter().enumerate() {
            same.waiting_cpus(&mut cpus);
            let expected: Vec<CpuId> = model.iter().map(|&task| CpuId(task % 7)).collect();
            assert_eq!(cpus, expected, "before step {step}");
            let taken = same.take(k);
            assert_eq!(taken.task(), model.remove(k), "step {step}");
            assert_eq!(same.len(), model.len());
        }
        // One more arrives while others wait: it goes last.
        same.push(QueuedEvent::new(9, 500, 500), CpuId(3));
        model.push(500);
        assert_eq!(same.cycle(), 9);
        while !model.is_empty() {
            let k = model.len() / 2;
            assert_eq!(same.take(k).task(), model.remove(k));
        }
        assert!(same.is_empty() && same.events.is_empty(), "the last take empties the entries");
    }

    #[test]
    fn picks_across_groups_take_what_a_vec_remove_would() {
        // 3000 events: three groups of 1024 and part of a fourth, picked in a scattered order.
        let mut same = SameCycle::with_capacity(8);
        let mut model: Vec<u32> = (0..3000).collect();
        for &task in &model {
            same.push(QueuedEvent::new(4, u64::from(task), task), CpuId(task));
        }
        let mut state = 12345u64;
        while !model.is_empty() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let k = (state >> 33) as usize % model.len();
            assert_eq!(same.take(k).task(), model.remove(k), "{} left", model.len());
            assert_eq!(same.len(), model.len());
        }
        assert!(same.is_empty() && same.group_live.is_empty());
    }
}
