//! Queued shared/exclusive resources: the one mechanism under every simulated lock.
//!
//! Kernel primitives (spinlocks, rwlocks, mutexes, rwsems) are built on this in host-model;
//! what the engine keeps here is who holds what and who waits for what, in queue order,
//! which is exactly the wait-for graph deadlock detection needs.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
use crate::{Cycle, TaskId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceId(pub u32);

/// A resource's name. Most are fixed (`pamt_lock`, `cpu_hotplug_lock`) and cost nothing;
/// per-object names (`rw[A]`, `kvm[1].mmu_lock`) are shared text, so handing a run's lock
/// list to its report copies pointers, not strings.
#[derive(Clone, Debug)]
pub enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    pub fn as_str(&self) -> &str {
        match self {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Name {
    fn from(name: &'static str) -> Name {
        Name::Static(name)
    }
}

impl From<String> for Name {
    fn from(name: String) -> Name {
        Name::Shared(name.into())
    }
}

impl From<Arc<str>> for Name {
    fn from(name: Arc<str>) -> Name {
        Name::Shared(name)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        // One shared name (the host config's, for every run) is equal to itself without
        // reading its bytes.
        let (mine, theirs) = (self.as_str(), other.as_str());
        std::ptr::eq(mine, theirs) || mine == theirs
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    Shared,
    Exclusive,
}

impl Mode {
    pub const fn conflicts_with(self, other: Mode) -> bool {
        matches!((self, other), (Mode::Exclusive, _) | (_, Mode::Exclusive))
    }

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Shared => "read",
            Mode::Exclusive => "write",
        }
    }
}

/// How a task waits for a resource it cannot have yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitKind {
    /// Busy-wait: the task keeps its CPU (spinlocks, rwlock_t).
    Spin,
    /// Sleep: the CPU is free for other tasks meanwhile (mutex, rwsem).
    Sleep,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Waiter {
    pub task: TaskId,
    pub mode: Mode,
    /// Spinning on its CPU, or blocked asleep.
    pub wait: WaitKind,
    pub since: Cycle,
}

/// Per-resource figures, those of the kernel's lockstat (/proc/lock_stat) and
/// `perf lock contention`.
///
/// A wait is counted from queueing to running with the lock (the hand-off included); a hold,
/// from then (or from an uncontended acquisition) to the release. Wait figures are over
/// contended acquisitions only, as lockstat's waittime is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceStats {
    pub acquisitions: u64,
    /// Acquisitions that had to queue (lockstat's "contentions").
    pub contended: u64,
    /// Total cycles queued.
    pub wait_cycles: u64,
    pub wait_max_cycles: u64,
    /// Total cycles held, over the holds that ended in a release.
    pub hold_cycles: u64,
    pub hold_max_cycles: u64,
    /// Every contended acquisition's wait, for percentiles.
    pub wait_histogram: Histogram,
}

impl ResourceStats {
    /// Adds `other`'s figures, as if both resources' acquisitions had been one's: counts and
    /// totals add, maxima take the larger, wait distributions merge.
    pub fn merge(&mut self, other: &ResourceStats) {
        // A lock the run never attempted has nothing to add (a run leaves most of its locks
        // untouched).
        if other.acquisitions == 0 && other.contended == 0 {
            return;
        }
        self.acquisitions += other.acquisitions;
        self.contended += other.contended;
        self.wait_cycles += other.wait_cycles;
        self.wait_max_cycles = self.wait_max_cycles.max(other.wait_max_cycles);
        self.hold_cycles += other.hold_cycles;
        self.hold_max_cycles = self.hold_max_cycles.max(other.hold_max_cycles);
        self.wait_histogram.merge(&other.wait_histogram);
    }
}

/// A resource's figures and the start of each current hold.
#[derive(Debug, Default)]
pub(crate) struct LockStat {
    pub figures: ResourceStats,
    /// (holder, running with the lock since), one per hold in `Resource::holders`; inline
    /// for the usual one or two, as the holders are.
    holds_since: smallvec::SmallVec<[(TaskId, Cycle); 2]>,
}

impl LockStat {
    /// `task` runs with the resource from `since`, after `waited` cycles queued (`None`:
    /// it was free).
    pub fn granted(&mut self, task: TaskId, since: Cycle, waited: Option<u64>) {
        self.figures.acquisitions += 1;
        if let Some(waited) = waited {
            self.figures.wait_cycles += waited;
            self.figures.wait_max_cycles = self.figures.wait_max_cycles.max(waited);
            self.figures.wait_histogram.record(waited);
        }
        self.holds_since.push((task, since));
    }

    /// No acquisition and no hold, as `LockStat::default()` is.
    fn clear(&mut self) {
        let LockStat { figures, holds_since } = self;
        *figures = ResourceStats::default();
        holds_since.clear();
    }

    /// An acquisition queued.
    pub fn contended(&mut self) {
        self.figures.contended += 1;
    }

    /// `task` released its latest hold at `now`.
    pub fn released(&mut self, task: TaskId, now: Cycle) {
        let Some(position) = self.holds_since.iter().rposition(|&(holder, _)| holder == task) else {
            return; // The engine reports the bad release.
        };
        let (_, since) = remove_in_order(&mut self.holds_since, position);
        // A hold that began after a hand-off still in flight has not started yet.
        let held = now.0.saturating_sub(since.0);
        self.figures.hold_cycles += held;
        self.figures.hold_max_cycles = self.figures.hold_max_cycles.max(held);
    }
}

/// `list.remove(index)`, the rest kept in order, without a call when `index` is the last (a
/// lock released is mostly the last taken): `SmallVec::remove` moves the tail with a
/// `memmove` call even when the tail is empty.
#[inline]
pub(crate) fn remove_in_order<A: smallvec::Array>(list: &mut smallvec::SmallVec<A>, index: usize) -> A::Item {
    if index + 1 == list.len() { list.pop().expect("index is in the list") } else { list.remove(index) }
}

/// A vector whose entries past a live length are dead: what a reset engine keeps of its last
/// run's resources and lockdep classes, so that the next run makes its own in their place
/// instead of pushing new ones. Every view (`Deref` to a slice: indexing, `iter`, `len`) is
/// of the live entries, so no reader sees an earlier run's.
pub(crate) struct LiveVec<T> {
    /// invariant: `live <= entries.len()`; `entries[..live]` are this run's.
    entries: Vec<T>,
    live: usize,
}

impl<T> Default for LiveVec<T> {
    fn default() -> LiveVec<T> {
        LiveVec { entries: Vec::new(), live: 0 }
    }
}

impl<T> LiveVec<T> {
    pub fn with_capacity(capacity: usize) -> LiveVec<T> {
        LiveVec { entries: Vec::with_capacity(capacity), live: 0 }
    }

    /// No entry: every one is dead, kept for the next run to make anew.
    pub fn clear(&mut self) {
        self.live = 0;
    }

    /// The first dead entry, if there is one.
    #[inline]
    fn next_dead(&mut self) -> Option<&mut T> {
        self.entries.get_mut(self.live)
    }

    /// Makes the first dead entry live, as the caller has made it this run's next: its index.
    #[inline]
    fn revive(&mut self) -> usize {
        debug_assert!(self.live < self.entries.len(), "a dead entry to revive");
        self.live += 1;
        self.live - 1
    }

    /// Appends `entry` after the live ones, the dead ones dropped: its index.
    #[inline]
    fn push(&mut self, entry: T) -> usize {
        self.entries.truncate(self.live);
        self.entries.push(entry);
        self.live += 1;
        self.live - 1
    }
}

impl<T> std::ops::Deref for LiveVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.entries[..self.live]
    }
}

impl<T> std::ops::DerefMut for LiveVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.entries[..self.live]
    }
}

/// The resources of a run, by `ResourceId`, in creation order. A reset engine's next run
/// makes its `i`-th resource in entry `i` (`Resource::renew`): no move of a whole `Resource`
/// (about 290 bytes with its lockstat histogram), and the queues keep their storage.
pub(crate) type Resources = LiveVec<Resource>;

impl Resources {
    /// A new resource after the live ones, made in the first dead entry when there is one.
    #[inline]
    pub fn add(&mut self, name: Name, class: &'static str, class_id: u32, handoff_cycles: u64) -> ResourceId {
        let index = match self.next_dead() {
            Some(dead) => {
                dead.renew(name, class, class_id, handoff_cycles);
                self.revive()
            }
            None => self.push(Resource::new(name, class, class_id, handoff_cycles)),
        };
        ResourceId(index as u32)
    }
}

/// Lockdep's classes of a run by dense id, numbered in first-use order.
pub(crate) type Classes = LiveVec<&'static str>;

impl Classes {
    /// The id of the class called `key`, a new one at its first use. A class is one static
    /// string, so the addresses mostly answer before any bytes are compared. No two entries,
    /// live or dead, have the same bytes (a new one drops the dead ones), so a run that meets
    /// its classes in its engine's last run's order finds each new one as the next dead
    /// entry, and need not look for its bytes among the live ones: that run did, there.
    #[inline]
    pub fn id(&mut self, key: &'static str) -> u32 {
        if let Some(index) = self.iter().position(|known| std::ptr::eq(*known, key)) {
            return index as u32;
        }
        if self.next_dead().is_some_and(|next| std::ptr::eq(*next, key)) {
            return self.revive() as u32;
        }
        match self.iter().position(|known| *known == key) {
            Some(index) => index as u32,
            None => self.push(key) as u32,
        }
    }
}

pub(crate) struct Resource {
    pub name: Name,
    pub class: &'static str,
    /// Dense id of `class`, for lockdep's class graph.
    pub class_id: u32,
    /// Cycles from a release to the next holder running (queued-lock cache-line hand-off).
    pub handoff_cycles: u64,
    /// A holder may take it shared again (percpu rwsem read side).
    pub recursive_shared: bool,
    /// Inline for the usual one or two holders: granting a lock does not allocate.
    pub holders: smallvec::SmallVec<[(TaskId, Mode); 2]>,
    /// FIFO: a waiter is granted only when everything ahead of it that conflicts is gone.
    pub waiters: VecDeque<Waiter>,
    /// When it last changed hands: a queued waiter moves up while this moves (watchdog).
    pub last_grant: Cycle,
    pub stats: LockStat,
}

impl Resource {
    fn new(name: Name, class: &'static str, class_id: u32, handoff_cycles: u64) -> Resource {
        Resource {
            name,
            class,
            class_id,
            handoff_cycles,
            recursive_shared: false,
            holders: smallvec::SmallVec::new(),
            waiters: VecDeque::new(),
            last_grant: Cycle::ZERO,
            stats: LockStat::default(),
        }
    }

    /// Makes this (dead) entry what `Resource::new` makes, keeping the waiters' storage.
    /// Every field is named, so a new one cannot be left as the earlier run left it.
    #[inline]
    fn renew(&mut self, name: Name, class: &'static str, class_id: u32, handoff_cycles: u64) {
        let Resource {
            name: old_name,
            class: old_class,
            class_id: old_class_id,
            handoff_cycles: old_handoff_cycles,
            recursive_shared,
            holders,
            waiters,
            last_grant,
            stats,
        } = self;
        *old_name = name;
        *old_class = class;
        *old_class_id = class_id;
        *old_handoff_cycles = handoff_cycles;
        *recursive_shared = false;
        holders.clear();
        waiters.clear();
        *last_grant = Cycle::ZERO;
        stats.clear();
    }

    /// Whether `mode` can be granted now without overtaking anyone queued.
    pub fn can_grant_now(&self, mode: Mode) -> bool {
        self.waiters.is_empty() && self.holders.iter().all(|&(_, held)| !mode.conflicts_with(held))
    }

    /// The tasks `task` (queued with `mode`) waits for: conflicting holders, and conflicting
    /// waiters ahead of it in the queue.
    pub fn blockers_of(&self, task: TaskId, mode: Mode, out: &mut Vec<TaskId>) {
        for &(holder, held) in &self.holders {
            if mode.conflicts_with(held) && holder != task {
                out.push(holder);
            }
        }
        for waiter in &self.waiters {
            if waiter.task == task {
                break;
            }
            if mode.conflicts_with(waiter.mode) {
                out.push(waiter.task);
            }
        }
    }

    /// The tasks `task` waits for as far as cycles go: the conflicting holders, or, when no
    /// holder conflicts (a reader behind a queued writer), the nearest conflicting waiter
    /// ahead. Every other waiter ahead waits for those same tasks, so a cycle through the
    /// queue passes through them: a queue of n waiters costs O(holders) here, not O(n).
    pub fn cycle_blockers_of(&self, task: TaskId, mode: Mode, out: &mut Vec<TaskId>) {
        let before = out.len();
        for &(holder, held) in &self.holders {
            if mode.conflicts_with(held) && holder != task {
                out.push(holder);
            }
        }
        if out.len() > before {
            return;
        }
        let ahead = self.waiters.iter().take_while(|waiter| waiter.task != task);
        if let Some(nearest) = ahead.filter(|waiter| mode.conflicts_with(waiter.mode)).last() {
            out.push(nearest.task);
        }
    }

    pub fn holds(&self, task: TaskId) -> Option<Mode> {
        self.holders.iter().find(|(holder, _)| *holder == task).map(|&(_, mode)| mode)
    }
}

#[cfg(test)]
mod tests {
    use super::remove_in_order;

    #[test]
    fn remove_in_order_keeps_the_rest_in_order_from_the_end_or_the_middle() {
        let mut list: smallvec::SmallVec<[u32; 2]> = smallvec::smallvec![1, 2, 3, 4];
        assert_eq!(remove_in_order(&mut list, 3), 4);
        assert_eq!(list.as_slice(), &[1, 2, 3]);
        assert_eq!(remove_in_order(&mut list, 0), 1);
        assert_eq!(list.as_slice(), &[2, 3]);
        assert_eq!(remove_in_order(&mut list, 1), 3);
        assert_eq!(remove_in_order(&mut list, 0), 2);
        assert!(list.is_empty());
    }
}
