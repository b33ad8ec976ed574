//! The events due on the current cycle, waiting for the chooser to order them.
//!
//! They wait in the order they were scheduled, each with its task's CPU (what the chooser is
//! told). A pick takes the `k`-th one still waiting: the entry is marked taken, not removed,
//! so a barrier that wakes 4096 stoppers at once costs each pick a pass over 64 words of
//! bits, not a move of the entries behind it; the entries go when the last is taken. The
//! waiting events' CPUs are gathered in order only for a decision that reads them.

use super::queue::QueuedEvent;
use crate::CpuId;

#[derive(Debug, Default)]
pub(super) struct SameCycle {
    events: Vec<QueuedEvent>,
    cpus: Vec<CpuId>,
    /// One bit per entry: still waiting.
    waiting: Vec<u64>,
    /// How many are still waiting.
    live: usize,
}

impl SameCycle {
    /// Room for `capacity` events, none waiting.
    pub(super) fn with_capacity(capacity: usize) -> SameCycle {
        SameCycle {
            events: Vec::with_capacity(capacity),
            cpus: Vec::with_capacity(capacity),
            waiting: Vec::with_capacity(capacity.div_ceil(64)),
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
        if index.is_multiple_of(64) {
            self.waiting.push(0);
        }
        self.waiting[index / 64] |= 1 << (index % 64);
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
        let (word, bits) = self
            .waiting
            .iter()
            .enumerate()
            .find_map(|(word, &bits)| {
                let count = bits.count_ones() as usize;
                if rest < count {
                    return Some((word, bits));
                }
                rest -= count;
                None
            })
            .expect("same_cycle: the live count matches the bits");
        let mut bits = bits;
        for _ in 0..rest {
            bits &= bits - 1;
        }
        let index = word * 64 + bits.trailing_zeros() as usize;
        self.waiting[word] &= !(1 << (index % 64));
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
        self.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
