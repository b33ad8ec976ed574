//! Detection: the wait-for graph and its cycles, and the two watchdogs.
//!
//! Every wait is an edge to the tasks that must act: a lock's conflicting holders and the
//! waiters ahead, a wait object's parties that have not acted, and the owner of a CPU that
//! cannot be preempted for a task queued behind it. A cycle is a deadlock. Lock queues are
//! checked for a cycle at every queueing; the whole graph when no task can run, and when a
//! watchdog fires (so a deadlock through a completion or a barrier is named as one).
//!
//! The soft-lockup watchdog fires for a task on its CPU without progress for
//! `watchdog_cycles`, the hung-task watchdog for one asleep on a lock or completion for
//! `hung_task_cycles`. A waiter whose queue or wait object keeps moving is not stalled. The
//! watchdog's timer is an event at the earliest moment a task could cross its limit, so it
//! fires at the limit, not when some later event happens to arrive.

use super::queue::{QueuedEvent, WATCHDOG};
use super::{Engine, TaskStatus};
use crate::outcome::{Blocked, Finding, Outcome, OutcomeKind, WaitsFor};
use crate::resource::WaitKind;
use crate::{Cycle, TaskId};

impl Engine {
    /// What `task` waits for, if it is blocked.
    pub(super) fn waits_for(&self, task: TaskId) -> Option<WaitsFor> {
        let state = &self.tasks[task.0 as usize];
        if let Some(wait) = self.resource_wait(task) {
            return Some(wait);
        }
        if let Some(parked) = state.parked {
            let what = parked.reason.to_string();
            let blockers = parked.wait.map_or_else(Vec::new, |wait| self.wait_pending(wait));
            return Some(WaitsFor::Event { what, blockers });
        }
        if let Some(polling) = state.polling {
            let blockers = polling.wait.map_or_else(Vec::new, |wait| self.wait_pending(wait));
            return Some(WaitsFor::Event { what: polling.reason.to_string(), blockers });
        }
        if state.status == TaskStatus::Runnable {
            let cpu = self.cpu(state.cpu);
            let owner = cpu.current?;
            if !self.can_be_preempted(owner) {
                return Some(WaitsFor::Cpu { owner });
            }
        }
        None
    }

    /// Whether the task owning a CPU gives it up at some point without anyone else acting:
    /// not when it spins on a lock or flag, or runs with preemption or IRQs off.
    fn can_be_preempted(&self, owner: TaskId) -> bool {
        let state = &self.tasks[owner.0 as usize];
        let cpu = self.cpu(state.cpu);
        let spinning = state.waiting_on.is_some() || state.parked.is_some();
        !spinning && cpu.preempt_count == 0 && cpu.irqs_enabled
    }

    fn blockers(&self, task: TaskId, out: &mut Vec<TaskId>) {
        if let Some(waits) = self.waits_for(task) {
            out.extend_from_slice(waits.blockers());
        }
    }

    /// A cycle of lock waits through `start` (the check made at every queueing: cheap, it
    /// follows lock queues only).
    pub(super) fn find_resource_cycle(&mut self, start: TaskId) -> Option<Vec<TaskId>> {
        self.find_cycle(start, true)
    }

    /// A cycle through `start` over every kind of wait (or lock queues only).
    fn find_cycle(&mut self, start: TaskId, locks_only: bool) -> Option<Vec<TaskId>> {
        let edges = |engine: &Engine, task: TaskId, out: &mut Vec<TaskId>| {
            let state = &engine.tasks[task.0 as usize];
            if let Some((resource, mode)) = state.waiting_on {
                engine.resources[resource.0 as usize].cycle_blockers_of(task, mode, out);
            } else if !locks_only {
                engine.blockers(task, out);
            }
        };
        // A generation stamp per task instead of a fresh `visited` vector per search.
        self.visit_generation = self.visit_generation.wrapping_add(1);
        if self.visit_generation == 0 {
            self.visit_marks.iter_mut().for_each(|mark| *mark = 0);
            self.visit_generation = 1;
        }
        self.visit_marks.resize(self.tasks.len(), 0);
        let generation = self.visit_generation;
        // A depth-first search whose frames share one list of candidates: a frame's are the
        // tail of `pending` from its `base`, so the next one is always the last element.
        let mut pending = std::mem::take(&mut self.scratch_tasks);
        pending.clear();
        edges(self, start, &mut pending);
        let mut path: smallvec::SmallVec<[(TaskId, usize); 8]> = smallvec::smallvec![(start, 0)];
        self.visit_marks[start.0 as usize] = generation;
        let mut cycle = None;
        while let Some(&(_, base)) = path.last() {
            if pending.len() == base {
                path.pop();
                continue;
            }
            let candidate = pending.pop().expect("a frame's candidates are not empty");
            if candidate == start {
                cycle = Some(path.iter().map(|(task, _)| *task).collect());
                break;
            }
            if self.visit_marks[candidate.0 as usize] == generation {
                continue;
            }
            self.visit_marks[candidate.0 as usize] = generation;
            let before = pending.len();
            edges(self, candidate, &mut pending);
            if pending.len() > before {
                path.push((candidate, before));
            }
        }
        self.scratch_tasks = pending;
        cycle
    }

    /// The first cycle in the whole wait-for graph among unfinished tasks, by task order.
    fn find_any_cycle(&mut self) -> Option<Vec<TaskId>> {
        for index in 0..self.tasks.len() as u32 {
            let task = TaskId(index);
            if self.task_status(task) == TaskStatus::Finished {
                continue;
            }
            if let Some(cycle) = self.find_cycle(task, false) {
                return Some(cycle);
            }
        }
        None
    }

    pub(super) fn describe_blocked(&self, blocked: &Blocked) -> String {
        let names: Vec<&str> = blocked.holds.iter().map(|&id| self.resource_name(id)).collect();
        let mut text = format!("{} ({})", blocked.cpu, self.task_names[blocked.task.0 as usize]);
        if !names.is_empty() {
            text += &format!(" holds {}", names.join(", "));
        }
        let and = if names.is_empty() { "" } else { " and" };
        let by = |tasks: &[TaskId]| {
            let mut cpus: Vec<String> = Vec::new();
            for task in tasks {
                let name = format!("{} ({})", self.task_cpu(*task), self.task_name(*task));
                if !cpus.contains(&name) {
                    cpus.push(name);
                }
            }
            cpus.join(", ")
        };
        match &blocked.waits {
            Some(WaitsFor::Resource { resource, mode, wait, blockers }) => {
                let verb = match wait {
                    WaitKind::Spin => "spins on",
                    WaitKind::Sleep => "blocks on",
                };
                text += &format!("{and} {verb} {} ({})", self.resource_name(*resource), mode.name());
                if !blockers.is_empty() {
                    let holders: Vec<String> =
                        blockers.iter().map(|task| self.task_cpu(*task).to_string()).collect();
                    let mut unique: Vec<String> = Vec::new();
                    for holder in holders {
                        if !unique.contains(&holder) {
                            unique.push(holder);
                        }
                    }
                    text += &format!(" held by {}", unique.join(", "));
                }
            }
            Some(WaitsFor::Event { what, blockers }) => {
                text += &format!("{and} waits for {what}");
                if !blockers.is_empty() {
                    text += &format!(" from {}", by(blockers));
                }
            }
            Some(WaitsFor::Cpu { owner }) => {
                text += &format!("{and} waits for its CPU, which {} will not give up", by(&[*owner]));
            }
            None => {}
        }
        text
    }

    pub(super) fn report_deadlock(&mut self, cycle: Vec<TaskId>) {
        let blocked: Vec<Blocked> = cycle.iter().map(|&task| self.blocked(task)).collect();
        let parts: Vec<String> = blocked.iter().map(|b| self.describe_blocked(b)).collect();
        let what = format!("wait cycle: {}", parts.join("; "));
        self.stop(Outcome::new(OutcomeKind::Deadlock, what, self.now, Finding::WaitCycle(blocked)));
    }

    /// No event left while tasks are unfinished: a cycle if there is one, else everyone.
    #[cold]
    pub(super) fn report_stuck(&mut self) {
        if let Some(cycle) = self.find_any_cycle() {
            self.report_deadlock(cycle);
            return;
        }
        let blocked: Vec<Blocked> = (0..self.tasks.len() as u32)
            .map(TaskId)
            .filter(|&task| self.task_status(task) != TaskStatus::Finished)
            .map(|task| self.blocked(task))
            .collect();
        let parts: Vec<String> = blocked.iter().map(|b| self.describe_blocked(b)).collect();
        let what = format!("no task can run: {}", parts.join("; "));
        self.stop(Outcome::new(OutcomeKind::Deadlock, what, self.now, Finding::Stuck(blocked)));
    }

    /// Queues the watchdog's timer for `at`, unless an earlier one is queued.
    pub(super) fn arm_watchdog(&mut self, at: Cycle) {
        if self.watchdog_timer.is_some_and(|queued| queued <= at) {
            return;
        }
        self.watchdog_timer = Some(at);
        self.queue.push(QueuedEvent::new(at.0, u64::MAX, WATCHDOG));
    }

    /// When `task` last moved forward, as the watchdogs see it: its own progress, or the
    /// last move of the lock queue or wait object it is waiting on.
    fn effective_progress(&self, task: TaskId) -> Cycle {
        let state = &self.tasks[task.0 as usize];
        let mut progress = state.last_progress;
        if let Some(moved) = self.queue_moved_at(task) {
            progress = progress.max(moved);
        }
        if let Some(wait) = state.parked.and_then(|parked| parked.wait) {
            progress = progress.max(self.wait_last_activity(wait));
        }
        progress
    }

    /// The moment `task` crosses its watchdog limit, and which watchdog it is: `None` when
    /// no watchdog watches it (not started, finished, in an intentional sleep).
    fn watchdog_deadline(&self, task: TaskId) -> Option<(Cycle, OutcomeKind, u64)> {
        let state = &self.tasks[task.0 as usize];
        if state.in_sleep || matches!(state.status, TaskStatus::NotStarted | TaskStatus::Finished) {
            return None;
        }
        let asleep = state.status == TaskStatus::Sleeping && !state.preempted;
        let (kind, limit) = if asleep {
            (OutcomeKind::Hung, self.config.hung_task_cycles)
        } else {
            (OutcomeKind::Livelock, self.config.watchdog_cycles)
        };
        Some((self.effective_progress(task).saturating_add(limit), kind, limit))
    }

    /// A task past its limit that waits on a completion or a lock-step protocol whose parties
    /// still move forward (a worker that progresses, a long serial phase) is waiting, not
    /// stalled: the latest of those parties' moves, plus its limit, is its new deadline. A
    /// lock waiter gets no such credit beyond its queue moving: a holder that keeps the lock
    /// while it works hangs its waiters, as the hung-task detector says.
    fn deadline_through_blockers(&self, task: TaskId, limit: u64) -> Option<Cycle> {
        let Some(WaitsFor::Event { blockers, .. }) = self.waits_for(task) else { return None };
        let latest = blockers.iter().map(|&blocker| self.effective_progress(blocker)).max()?;
        Some(latest.saturating_add(limit))
    }

    /// The watchdog's timer fired: report the first task past its limit, or queue the timer
    /// for the next moment one could be.
    #[cold]
    pub(super) fn check_watchdog(&mut self) {
        let now = self.now;
        let mut next: Option<Cycle> = None;
        let mut stalled = None;
        for index in 0..self.tasks.len() as u32 {
            let task = TaskId(index);
            let Some((mut deadline, kind, limit)) = self.watchdog_deadline(task) else { continue };
            if deadline <= now
                && let Some(through) = self.deadline_through_blockers(task, limit)
            {
                deadline = deadline.max(through);
            }
            if deadline <= now {
                stalled = Some((task, kind, limit));
                break;
            }
            next = Some(next.map_or(deadline, |earliest| earliest.min(deadline)));
        }
        let Some((task, kind, limit)) = stalled else {
            if let Some(at) = next {
                self.arm_watchdog(at);
            }
            return;
        };
        // A stall that is a wait cycle is a deadlock, and is named as one.
        if let Some(cycle) = self.find_cycle(task, false) {
            self.report_deadlock(cycle);
            return;
        }
        let blocked = self.blocked(task);
        let since = self.tasks[task.0 as usize].last_progress;
        let for_cycles = now.since(since);
        let (verb, limit_name) = match kind {
            OutcomeKind::Hung => ("blocked without progress", "hung-task limit"),
            _ => ("made no progress", "watchdog"),
        };
        let what = format!(
            "{} {verb} for {for_cycles} cycles ({limit_name} {limit})",
            self.describe_blocked(&Blocked { waits: None, holds: Vec::new(), ..blocked.clone() })
        );
        let waits = match &blocked.waits {
            Some(_) => format!(": {}", self.describe_blocked(&blocked)),
            None => String::new(),
        };
        let finding = Finding::NoProgress { blocked, for_cycles, limit_cycles: limit };
        self.stop(Outcome::new(kind, what + &waits, now, finding));
    }
}
