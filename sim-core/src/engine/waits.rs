//! Wait objects: what a parked task waits for, so that every wait is in the wait-for graph.
//!
//! A completion, a barrier or an acknowledgement loop registers the tasks that must act
//! (its *parties*). A task parked on the object waits for the parties that have not acted
//! yet. Marking a party costs O(1), so a barrier of 4096 stoppers stays linear.

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::{Cycle, TaskId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WaitId(pub u32);

pub(super) struct WaitObject {
    pub parties: Vec<TaskId>,
    // invariant: done.len() == parties.len().
    pub done: Vec<bool>,
    /// (task, party index) sorted by task, equal tasks in the order they were added: finds
    /// a task's party in O(log n), so 4096 stoppers arriving at a barrier stay linear.
    pub by_task: Vec<(TaskId, u32)>,
    /// When a party last acted: tasks parked here are waiting on work that moves.
    pub last_activity: Cycle,
}

impl Engine {
    /// A new wait object with no parties yet. A task parked on it names, itself, what it
    /// waits for.
    pub fn new_wait(&mut self) -> WaitId {
        let id = WaitId(self.waits.len() as u32);
        self.waits.push(WaitObject {
            parties: Vec::new(),
            done: Vec::new(),
            by_task: Vec::new(),
            last_activity: self.now,
        });
        id
    }

    /// `task` must act on `wait`; returns its party index.
    pub fn wait_add_party(&mut self, wait: WaitId, task: TaskId) -> usize {
        let object = &mut self.waits[wait.0 as usize];
        object.parties.push(task);
        object.done.push(false);
        let index = object.parties.len() - 1;
        let at = object.by_task.partition_point(|&(party, _)| party <= task);
        object.by_task.insert(at, (task, index as u32));
        index
    }

    /// Party `index` of `wait` has acted.
    pub fn wait_party_done(&mut self, wait: WaitId, index: usize) {
        let now = self.now;
        let object = &mut self.waits[wait.0 as usize];
        object.done[index] = true;
        object.last_activity = now;
    }

    /// The party of `wait` that is `task`, if it is one.
    pub fn wait_party_of(&self, wait: WaitId, task: TaskId) -> Option<usize> {
        let by_task = &self.waits[wait.0 as usize].by_task;
        let at = by_task.partition_point(|&(party, _)| party < task);
        by_task.get(at).filter(|&&(party, _)| party == task).map(|&(_, index)| index as usize)
    }

    /// Every party must act again (the next state of a lock-step protocol).
    pub fn wait_reset(&mut self, wait: WaitId) {
        let now = self.now;
        let object = &mut self.waits[wait.0 as usize];
        object.done.iter_mut().for_each(|done| *done = false);
        object.last_activity = now;
    }

    /// The parties of `wait` that have not acted yet.
    pub(super) fn wait_pending(&self, wait: WaitId) -> Vec<TaskId> {
        let object = &self.waits[wait.0 as usize];
        object.parties.iter().zip(&object.done).filter(|(_, done)| !**done).map(|(task, _)| *task).collect()
    }

    pub(super) fn wait_last_activity(&self, wait: WaitId) -> Cycle {
        self.waits[wait.0 as usize].last_activity
    }
}
