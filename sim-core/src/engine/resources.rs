//! Queued resources as the engine runs them: creation, the attempt (with lockdep), queueing,
//! grants in FIFO order, releases. An attempt allocates nothing: lockdep reads the task's
//! own list of held locks.

use super::Engine;
use crate::outcome::{Blocked, Finding, OrderEdge, Outcome, OutcomeKind, WaitsFor};
use crate::resource::{Mode, Name, ResourceId, ResourceStats, WaitKind, Waiter};
use crate::trace::TraceKind;
use crate::{Cycle, TaskId};

/// What an attempt found.
pub(super) enum Attempt {
    /// Granted at once.
    Granted,
    /// Queued behind conflicting holders or waiters.
    Queued,
    /// The task holds it already and it does not nest: the kernel would hang here.
    SelfDeadlock,
}

impl Engine {
    /// A new resource named `name` in lock class `class` (lockdep's class graph, lockstat's
    /// class rows).
    pub fn new_resource(
        &mut self,
        name: impl Into<Name>,
        class: &'static str,
        handoff_cycles: u64,
    ) -> ResourceId {
        let class_id = self.class_id(class);
        self.resources.add(name.into(), class, class_id, handoff_cycles)
    }

    /// Puts `resource` in the lockdep class `key` instead of its kind's: locks of one kind
    /// taken at different sites (`kvm->lock` and `tdx_lock` are both mutexes) are different
    /// classes to lockdep, as a `lock_class_key` per init site makes them in the kernel.
    pub fn set_lockdep_class(&mut self, resource: ResourceId, key: &'static str) {
        let class_id = self.class_id(key);
        self.resources[resource.0 as usize].class_id = class_id;
    }

    /// The lockdep class called `key`, numbered in first-use order.
    #[inline]
    fn class_id(&mut self, key: &'static str) -> u32 {
        self.classes.id(key)
    }

    /// Lets a task that holds `resource` shared take it shared again (a percpu rwsem read
    /// side): it succeeds unless a writer waits, in which case it queues behind the writer.
    pub fn set_recursive_shared(&mut self, resource: ResourceId) {
        self.resources[resource.0 as usize].recursive_shared = true;
    }

    /// Whether a task is queued for `resource` (the kernel's `rwlock_is_contended()`,
    /// `spin_is_contended()`).
    pub fn resource_contended(&self, resource: ResourceId) -> bool {
        !self.resources[resource.0 as usize].waiters.is_empty()
    }

    pub fn resource_name(&self, resource: ResourceId) -> &str {
        &self.resources[resource.0 as usize].name
    }

    pub fn resource_class(&self, resource: ResourceId) -> &'static str {
        self.resources[resource.0 as usize].class
    }

    /// The mode in which `task` holds `resource`, if it does.
    pub fn holds(&self, resource: ResourceId, task: TaskId) -> Option<Mode> {
        self.resources[resource.0 as usize].holds(task)
    }

    pub fn num_holders(&self, resource: ResourceId) -> usize {
        self.resources[resource.0 as usize].holders.len()
    }

    /// The tasks holding `resource` right now.
    pub fn holders_of(&self, resource: ResourceId) -> impl Iterator<Item = TaskId> + '_ {
        self.resources[resource.0 as usize].holders.iter().map(|&(task, _)| task)
    }

    /// Name, class and figures of every resource, in creation order: one allocation, shared
    /// by the run's result and its metrics.
    pub fn resource_stats(&self) -> std::sync::Arc<[(Name, &'static str, ResourceStats)]> {
        self.resource_figures().map(|(name, class, figures)| (name.clone(), class, figures.clone())).collect()
    }

    /// What [`Engine::resource_stats`] lists, borrowed: for a reader that pools the figures
    /// where they are (`check`'s judge) rather than keeping a copy of the run's list.
    pub fn resource_figures(
        &self,
    ) -> impl ExactSizeIterator<Item = (&Name, &'static str, &ResourceStats)> + Clone + '_ {
        self.resources.iter().map(|res| (&res.name, res.class, &res.stats.figures))
    }

    /// Cycles `resource` was held, over the holds that ended.
    pub fn hold_cycles(&self, resource: ResourceId) -> u64 {
        self.resources[resource.0 as usize].stats.figures.hold_cycles
    }

    /// An uncontended acquisition of `resource` held for `hold` cycles, made where no other
    /// task could have met it and not replayed through the queue (a coalesced fault round of
    /// host-model's `kvm::coalesce`): counted as lockstat counts one. The resource must be
    /// free now.
    pub fn account_uncontended_hold(&mut self, resource: ResourceId, hold: u64) {
        let res = &mut self.resources[resource.0 as usize];
        assert!(res.holders.is_empty(), "account_uncontended_hold: {} is held", res.name);
        let figures = &mut res.stats.figures;
        figures.acquisitions += 1;
        figures.hold_cycles += hold;
        figures.hold_max_cycles = figures.hold_max_cycles.max(hold);
    }

    /// The current task attempts `resource` in `mode`: lockdep first (as the kernel's, before
    /// any waiting), then a grant, a queue place, or a self-deadlock.
    pub(super) fn attempt(&mut self, resource: ResourceId, mode: Mode, wait: WaitKind) -> Attempt {
        let task = self.current_task();
        self.check_lock_order(task, resource);
        let res = &mut self.resources[resource.0 as usize];
        if res
            .holds(task)
            .is_some_and(|held| !(res.recursive_shared && held == Mode::Shared && mode == Mode::Shared))
        {
            return Attempt::SelfDeadlock;
        }
        if res.can_grant_now(mode) {
            res.holders.push((task, mode));
            res.stats.granted(task, self.now, None);
            res.last_grant = self.now;
            self.tasks[task.0 as usize].held.push(resource);
            if let Some(coverage) = self.coverage.as_deref_mut() {
                coverage.acquire(&self.resources, resource, self.tasks[task.0 as usize].cpu, mode, false);
            }
            self.trace_task(
                task,
                TraceKind::Acquire { resource, mode, waited_cycles: 0 },
                [0x4143, u64::from(resource.0), mode as u64, 0],
            );
            return Attempt::Granted;
        }
        let now = self.now;
        res.waiters.push_back(Waiter { task, mode, wait, since: now });
        res.stats.contended();
        self.tasks[task.0 as usize].waiting_on = Some((resource, mode));
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.wait(&self.resources, task, resource, mode);
        }
        self.trace_task(
            task,
            TraceKind::Wait { resource, mode },
            [0x5754, u64::from(resource.0), mode as u64, 0],
        );
        if wait == WaitKind::Sleep {
            self.tasks[task.0 as usize].status = super::TaskStatus::Sleeping;
            self.leave_cpu(task);
        }
        if let Some(cycle) = self.find_resource_cycle(task) {
            self.report_deadlock(cycle);
        }
        Attempt::Queued
    }

    /// Stops the run: the current task takes a lock it holds (not a nesting read).
    pub(super) fn report_self_deadlock(&mut self, resource: ResourceId, mode: Mode) {
        let task = self.current_task();
        let held = self.holds(resource, task).expect("a self-deadlock holds the lock");
        let cpu = self.task_cpu(task);
        let what = format!(
            "{cpu} ({}) takes {} ({}) again while holding it ({}): self-deadlock",
            self.task_name(task),
            self.resource_name(resource),
            mode.name(),
            held.name()
        );
        let finding = Finding::SelfDeadlock { task, cpu, resource, mode, held };
        self.stop(Outcome::new(OutcomeKind::Deadlock, what, self.now, finding));
    }

    /// A queued task that was granted: what it waited, read back once.
    pub(super) fn take_granted_wait(&mut self, resource: ResourceId, mode: Mode) -> u64 {
        let task = self.current_task();
        let waited = self.tasks[task.0 as usize].granted_wait;
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.acquire(&self.resources, resource, self.tasks[task.0 as usize].cpu, mode, true);
        }
        self.trace_task(
            task,
            TraceKind::Acquire { resource, mode, waited_cycles: waited },
            [0x4143, u64::from(resource.0), mode as u64, waited],
        );
        waited
    }

    /// Grants queued waiters of `resource` that no longer conflict, in queue order.
    fn grant_waiters(&mut self, resource: ResourceId) {
        loop {
            let res = &mut self.resources[resource.0 as usize];
            let Some(&Waiter { task, mode, since, .. }) = res.waiters.front() else { return };
            if res.holders.iter().any(|&(_, held)| mode.conflicts_with(held)) {
                return;
            }
            res.waiters.pop_front();
            res.holders.push((task, mode));
            res.last_grant = self.now;
            let handoff = res.handoff_cycles;
            let waiter_cpu = self.task_cpu(task);
            let handoff = self.cost_for(waiter_cpu, handoff);
            let resumes_at = self.now.saturating_add(handoff);
            let waited = resumes_at.since(since);
            let res = &mut self.resources[resource.0 as usize];
            res.stats.granted(task, resumes_at, Some(waited));
            let state = &mut self.tasks[task.0 as usize];
            state.waiting_on = None;
            state.granted_wait = waited;
            state.held.push(resource);
            // Getting a lock it queued for is forward progress (the queue moved to it).
            state.last_progress = state.last_progress.max(resumes_at);
            self.schedule_wake(task, resumes_at);
        }
    }

    /// Releases `resource` held by the current task.
    pub fn release(&mut self, resource: ResourceId) {
        let task = self.current_task();
        let res = &mut self.resources[resource.0 as usize];
        let Some(position) = res.holders.iter().position(|&(holder, _)| holder == task) else {
            let detail = format!(
                "simulator bug: {} releases {}, which it does not hold",
                self.task_name(task),
                self.resource_name(resource)
            );
            let subjects = vec![crate::Subject::Resource(resource)];
            let outcome = self.report_here(OutcomeKind::Error, "", detail, subjects);
            self.stop(outcome);
            return;
        };
        res.holders.swap_remove(position);
        res.stats.released(task, self.now);
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.release(resource, self.tasks[task.0 as usize].cpu);
        }
        let held = &mut self.tasks[task.0 as usize].held;
        if let Some(index) = held.iter().rposition(|&id| id == resource) {
            crate::resource::remove_in_order(held, index);
        }
        self.trace_task(task, TraceKind::Release { resource }, [0x52454c, u64::from(resource.0), 0, 0]);
        self.grant_waiters(resource);
    }

    /// Lock-order check as the current task attempts `resource`: an edge from every lock
    /// it holds (lockdep's check happens before any waiting).
    fn check_lock_order(&mut self, task: TaskId, resource: ResourceId) {
        let state = &self.tasks[task.0 as usize];
        if state.held.is_empty() {
            return;
        }
        let resources = &self.resources;
        let class_of = |id: ResourceId| resources[id.0 as usize].class_id;
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.lock_order(resources, &state.held, resource);
        }
        self.lock_order.on_acquire((state.cpu, task, self.now), &state.held, resource, class_of);
    }

    /// The first lock-order inversion as an outcome, if any was seen.
    pub(super) fn lock_order_outcome(&self) -> Option<Outcome> {
        let first = self.lock_order.findings().first()?;
        let what = self.describe_inversion(&first.taking, &first.earlier, first.classes);
        let finding = Finding::LockOrder {
            taking: first.taking.clone(),
            earlier: first.earlier.clone(),
            classes: first.classes,
        };
        Some(Outcome::new(OutcomeKind::LockOrder, what, first.taking.cycle, finding))
    }

    /// Every lock-order inversion seen, in words.
    pub fn lock_order_findings(&self) -> Vec<String> {
        self.lock_order
            .findings()
            .iter()
            .map(|inversion| {
                self.describe_inversion(&inversion.taking, &inversion.earlier, inversion.classes)
            })
            .collect()
    }

    fn describe_inversion(&self, taking: &OrderEdge, earlier: &[OrderEdge], classes: bool) -> String {
        let name = |id: ResourceId| {
            if classes {
                let class = self.classes[self.resources[id.0 as usize].class_id as usize];
                format!("{} (class {class})", self.resource_name(id))
            } else {
                self.resource_name(id).to_string()
            }
        };
        let edge = |edge: &OrderEdge, verb: &str| {
            format!(
                "{} (task {}) {verb} {} while holding {} at cycle {}",
                edge.cpu,
                edge.task.0,
                name(edge.to),
                name(edge.from),
                edge.cycle.0
            )
        };
        let before: Vec<String> = earlier.iter().map(|e| edge(e, "took")).collect();
        format!("lock-order inversion: {}, but {}", edge(taking, "takes"), before.join(", and "))
    }

    /// What `task` holds and waits for, as data.
    pub(super) fn blocked(&self, task: TaskId) -> Blocked {
        let state = &self.tasks[task.0 as usize];
        Blocked { task, cpu: state.cpu, holds: state.held.to_vec(), waits: self.waits_for(task) }
    }

    /// What a queued task's resource wait is blocked by.
    pub(super) fn resource_wait(&self, task: TaskId) -> Option<WaitsFor> {
        let (resource, mode) = self.tasks[task.0 as usize].waiting_on?;
        let res = &self.resources[resource.0 as usize];
        let mut blockers = Vec::new();
        res.blockers_of(task, mode, &mut blockers);
        let wait = res
            .waiters
            .iter()
            .find(|waiter| waiter.task == task)
            .map_or(WaitKind::Spin, |waiter| waiter.wait);
        Some(WaitsFor::Resource { resource, mode, wait, blockers })
    }

    /// When the resource `task` waits on last changed hands (the queue moved).
    pub(super) fn queue_moved_at(&self, task: TaskId) -> Option<Cycle> {
        let (resource, _) = self.tasks[task.0 as usize].waiting_on?;
        Some(self.resources[resource.0 as usize].last_grant)
    }
}
