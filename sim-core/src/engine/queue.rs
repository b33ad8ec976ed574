//! The event queue: task wake-ups and watchdog timers, earliest first.
//!
//! Events come out ordered by their cycle and then by their sequence number, which is unique
//! for task events, so the order is total and does not depend on how the heap stores them
//! (only a watchdog timer can tie, with another timer for the same cycle, and either does
//! the same). What makes it cheaper than a `BinaryHeap` of tuples, with the same order:
//! - an entry's cycle and sequence number are one 128-bit key, so comparing two entries is
//!   one wide comparison, not a chain of branches over three fields;
//! - the event pushed last waits beside the heap (`deferred`) until the next pop. Most
//!   events are a task's next wake-up, scheduled just before the pop that follows, and that
//!   pop then puts it in the place of the heap's first entry: one pass down, not a push (a
//!   pass up) and a pop (a pass down and another up);
//! - that pass down moves the hole to the bottom along the earlier child and then lifts the
//!   entry back up (as `BinaryHeap::pop` does, which `BinaryHeap`'s replace of its first
//!   entry does not): one comparison per level on the way down, whose outcome a CPU cannot
//!   predict, instead of two.

/// The task word of a watchdog timer.
pub(super) const WATCHDOG: u32 = u32::MAX;

/// One event: when it is due, its sequence number, and the task it wakes (or `WATCHDOG`).
#[derive(Clone, Copy, Debug)]
pub(super) struct QueuedEvent {
    /// The cycle in the high 64 bits, the sequence number in the low 64.
    key: u128,
    /// The task id, widened to a word so an entry has no padding: with padding, a push's
    /// stores and the next sift's loads of the same entry differ in width, and the load
    /// waits for the stores to retire.
    task: u64,
}

impl QueuedEvent {
    pub(super) fn new(at: u64, seq: u64, task: u32) -> QueuedEvent {
        QueuedEvent { key: (u128::from(at) << 64) | u128::from(seq), task: u64::from(task) }
    }

    pub(super) fn at(&self) -> u64 {
        (self.key >> 64) as u64
    }

    pub(super) fn seq(&self) -> u64 {
        self.key as u64
    }

    pub(super) fn task(&self) -> u32 {
        self.task as u32
    }

    pub(super) fn is_watchdog(&self) -> bool {
        self.task() == WATCHDOG
    }
}

/// The run's pending events.
pub(super) struct EventQueue {
    /// A binary min-heap by key: `heap[0]` is the earliest, each entry is earlier than its
    /// children at `2i + 1` and `2i + 2`.
    heap: Vec<QueuedEvent>,
    /// The event pushed last, not yet in `heap`.
    deferred: Option<QueuedEvent>,
}

impl EventQueue {
    /// An empty queue whose heap is `heap` (emptied), keeping its allocation.
    pub(super) fn in_storage(mut heap: Vec<QueuedEvent>) -> EventQueue {
        heap.clear();
        EventQueue { heap, deferred: None }
    }

    /// The heap's vector, for the next run's queue (`in_storage`).
    pub(super) fn take_storage(&mut self) -> Vec<QueuedEvent> {
        self.deferred = None;
        std::mem::take(&mut self.heap)
    }

    #[inline]
    pub(super) fn push(&mut self, event: QueuedEvent) {
        if let Some(earlier) = self.deferred.replace(event) {
            self.heap.push(earlier);
            self.sift_up(self.heap.len() - 1, earlier);
        }
    }

    /// The first event due.
    pub(super) fn peek(&self) -> Option<&QueuedEvent> {
        match (&self.deferred, self.heap.first()) {
            (Some(deferred), Some(top)) if top.key < deferred.key => Some(top),
            (Some(deferred), _) => Some(deferred),
            (None, top) => top,
        }
    }

    /// Takes the first event due.
    pub(super) fn pop(&mut self) -> Option<QueuedEvent> {
        match self.deferred.take() {
            Some(deferred) => match self.heap.first() {
                Some(top) if top.key < deferred.key => Some(self.replace_top(deferred)),
                _ => Some(deferred),
            },
            None => {
                let last = self.heap.pop()?;
                if self.heap.is_empty() {
                    return Some(last);
                }
                Some(self.replace_top(last))
            }
        }
    }

    /// Takes the heap's first entry and puts `event` in its place.
    fn replace_top(&mut self, event: QueuedEvent) -> QueuedEvent {
        let top = self.heap[0];
        let end = self.heap.len();
        let (mut hole, mut child) = (0, 1);
        while child + 1 < end {
            child += usize::from(self.heap[child + 1].key < self.heap[child].key);
            self.heap[hole] = self.heap[child];
            hole = child;
            child = 2 * hole + 1;
        }
        if child + 1 == end {
            self.heap[hole] = self.heap[child];
            hole = child;
        }
        self.sift_up(hole, event);
        top
    }

    /// Puts `event` at `hole` or above it, moving later entries down.
    fn sift_up(&mut self, mut hole: usize, event: QueuedEvent) {
        while hole > 0 {
            let parent = (hole - 1) / 2;
            if self.heap[parent].key <= event.key {
                break;
            }
            self.heap[hole] = self.heap[parent];
            hole = parent;
        }
        self.heap[hole] = event;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever mix of pushes and pops, events come out in (cycle, seq) order.
    #[test]
    fn pops_in_cycle_then_sequence_order() {
        let mut queue = EventQueue::in_storage(Vec::new());
        let mut reference = std::collections::BTreeSet::new();
        let mut seq = 0u64;
        let mut popped = Vec::new();
        let mut expected = Vec::new();
        for step in 0u64..2000 {
            // A fixed, irregular pattern: several pushes, then a pop, some at equal cycles.
            let at = (step * 7919) % 97;
            seq += 1;
            queue.push(QueuedEvent::new(at, seq, (step % 5) as u32));
            reference.insert((at, seq));
            if step % 3 != 1 {
                let event = queue.pop().expect("an event was pushed");
                popped.push((event.at(), event.seq()));
                expected.push(reference.pop_first().expect("the reference has it too"));
                assert_eq!(queue.peek().map(|next| (next.at(), next.seq())), reference.first().copied());
            }
        }
        while let Some(event) = queue.pop() {
            popped.push((event.at(), event.seq()));
        }
        expected.extend(reference);
        assert_eq!(popped, expected);
    }

    #[test]
    fn a_watchdog_timer_comes_after_task_events_of_its_cycle() {
        let mut queue = EventQueue::in_storage(Vec::new());
        queue.push(QueuedEvent::new(10, u64::MAX, WATCHDOG));
        queue.push(QueuedEvent::new(10, 3, 1));
        queue.push(QueuedEvent::new(9, 4, 2));
        let order: Vec<(u64, u32)> = std::iter::from_fn(|| queue.pop()).map(|e| (e.at(), e.task())).collect();
        assert_eq!(order, vec![(9, 2), (10, 1), (10, WATCHDOG)]);
    }
}
