//! The engine: the clock, the event queue, CPUs, task states, resources and detection.
//!
//! `Sim` is the handle simulated code holds; `Executor` (executor.rs) owns the task
//! futures and drives the loop. All state of a run is in one `Engine` behind a `RefCell`;
//! it is borrowed only inside a poll, never across an `.await`.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::chooser::{Chooser, Decision, DecisionKind};
use crate::coverage::Coverage;
use crate::lockdep::{LockOrder, LockRef};
use crate::outcome::{Outcome, OutcomeKind};
use crate::resource::{Mode, Resource, ResourceId, ResourceStats, WaitKind, Waiter};
use crate::trace::{Span, Trace, TraceKind};
use crate::{CpuId, Cycle, TaskId};

/// What a run is allowed, and what it records.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub cpus: u32,
    /// Past this, the run ends in `limit`.
    pub max_time: Cycle,
    /// The event budget: dispatching more events than this ends the run in `limit`.
    pub max_events: u64,
    /// A task that runs this long without declaring progress ends the run in `livelock`.
    pub watchdog_cycles: u64,
    /// Each cost varies by up to this fraction either way, drawn by the chooser.
    pub jitter: f64,
    /// Keep the trace events (for tables and Perfetto), not just their hash.
    pub record_trace: bool,
    /// CPUs 0..online_cpus start online; the rest of `cpus` start offline.
    pub online_cpus: u32,
    /// The longest interrupt or preemption the chooser may inject (`run.max_stall`); 0: none.
    pub max_stall_cycles: u64,
    /// Record what the run covered (coverage.rs) for `--strategy coverage`.
    pub coverage: bool,
}

/// How long a normal task may keep its CPU while another normal task waits for it, before
/// it yields at its next preemptible point (CFS time slicing; about 1 ms at 2 GHz).
pub const SCHED_SLICE_CYCLES: u64 = 2_000_000;

/// A task asleep on a lock or completion is reported after this many watchdog periods
/// (the hung-task detector), a running one after one (the soft-lockup detector).
pub const HUNG_TASK_FACTOR: u64 = 5;

/// Stall lengths the chooser picks from: `k / STALL_STEPS` of `max_stall` for k in 1..=STALL_STEPS.
pub const STALL_STEPS: u32 = 16;

/// A logical CPU as the host sees it.
#[derive(Clone, Debug)]
pub struct CpuState {
    pub irqs_enabled: bool,
    pub preempt_count: u32,
    /// In the online mask. An offline CPU runs nothing; its tasks wait for it.
    pub online: bool,
    current: Option<TaskId>,
    /// Ready tasks in the order they get the CPU: stoppers first, then normal tasks.
    runq: VecDeque<TaskId>,
}

/// How a task competes for its CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskPriority {
    /// A kernel thread or user task: preempted at preemptible points by a stopper.
    Normal,
    /// A stop_machine stopper (highest-priority RT): runs as soon as the CPU's current task
    /// reaches a point where it can be preempted, or sleeps.
    Stopper,
    /// An interrupt handler (an IPI's function): runs as soon as the CPU's current task is at
    /// a point with IRQs on, preemption or not; held while IRQs are off.
    Irq,
}

type SpawnedFuture = std::pin::Pin<Box<dyn Future<Output = ()>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// Its start time has not come.
    NotStarted,
    /// Owns its CPU (computing, busy-waiting, or spinning on a lock).
    Running,
    /// Ready, queued behind the task that owns its CPU.
    Runnable,
    /// Off its CPU: sleeping, or waiting for a sleeping lock.
    Sleeping,
    Finished,
}

struct TaskState {
    name: String,
    cpu: CpuId,
    priority: TaskPriority,
    status: TaskStatus,
    /// Parked (no event) until another task unparks it; says what it waits for.
    parked: Option<&'static str>,
    last_progress: Cycle,
    /// The resource it is queued on, for the wait-for graph.
    waiting_on: Option<(ResourceId, Mode)>,
    /// In an intentional sleep: the watchdog leaves it alone.
    in_sleep: bool,
    /// When it last joined its CPU's run queue.
    runnable_since: Cycle,
    /// Set by a grant: cycles it waited, read back by the `Acquire` future.
    granted_wait: u64,
}

/// All state of a run that is not a task's own future.
pub struct Engine {
    now: Cycle,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    same_cycle: Vec<(u64, u64, u32)>,
    cpus: Vec<CpuState>,
    tasks: Vec<TaskState>,
    resources: Vec<Resource>,
    chooser: Box<dyn Chooser>,
    decisions: Vec<u32>,
    decision_options: Vec<u32>,
    stall_points: u64,
    lock_order: LockOrder,
    trace: Trace,
    current: Option<TaskId>,
    stop: Option<Outcome>,
    config: EngineConfig,
    next_watchdog_check: Cycle,
    events: u64,
    scratch_tasks: Vec<TaskId>,
    /// Tasks spawned by running tasks, for the executor to take over after the poll.
    pending_spawns: Vec<(TaskId, SpawnedFuture)>,
    /// `Some` only when `config.coverage` is on.
    pub(crate) coverage: Option<Box<Coverage>>,
}

/// The handle simulated code uses to reach the engine.
#[derive(Clone)]
pub struct Sim(Rc<RefCell<Engine>>);

impl Engine {
    pub(crate) fn new(config: EngineConfig, chooser: Box<dyn Chooser>) -> Engine {
        let cpus = (0..config.cpus)
            .map(|index| CpuState {
                irqs_enabled: true,
                preempt_count: 0,
                online: index < config.online_cpus,
                current: None,
                runq: VecDeque::new(),
            })
            .collect();
        Engine {
            now: Cycle::ZERO,
            seq: 0,
            queue: BinaryHeap::with_capacity(64),
            same_cycle: Vec::with_capacity(8),
            cpus,
            tasks: Vec::new(),
            resources: Vec::new(),
            chooser,
            decisions: Vec::new(),
            decision_options: Vec::new(),
            stall_points: 0,
            lock_order: LockOrder::default(),
            trace: Trace::new(config.record_trace),
            current: None,
            stop: None,
            next_watchdog_check: Cycle(config.watchdog_cycles / 4),
            coverage: config.coverage.then(Box::default),
            config,
            events: 0,
            scratch_tasks: Vec::new(),
            pending_spawns: Vec::new(),
        }
    }

    pub fn now(&self) -> Cycle {
        self.now
    }

    /// The task being polled. Panics outside a poll: that is a bug in the simulator.
    pub fn current_task(&self) -> TaskId {
        self.current.expect("engine: no task is running")
    }

    pub fn task_cpu(&self, task: TaskId) -> CpuId {
        self.tasks[task.0 as usize].cpu
    }

    pub fn task_name(&self, task: TaskId) -> &str {
        &self.tasks[task.0 as usize].name
    }

    pub fn task_status(&self, task: TaskId) -> TaskStatus {
        self.tasks[task.0 as usize].status
    }

    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn cpu(&self, cpu: CpuId) -> &CpuState {
        &self.cpus[cpu.0 as usize]
    }

    pub fn cpu_mut(&mut self, cpu: CpuId) -> &mut CpuState {
        &mut self.cpus[cpu.0 as usize]
    }

    pub fn num_cpus(&self) -> u32 {
        self.cpus.len() as u32
    }

    /// Asks the chooser, and records the answer (and how many options it had) in the
    /// decision vector. `cpus` says whose decision it is (see `Decision`).
    pub fn choose(&mut self, kind: DecisionKind, options: u32, cpus: &[CpuId]) -> u32 {
        if options < 2 {
            return 0;
        }
        let pick = self.chooser.choose(&Decision { kind, options, cpus });
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.decision(kind, cpus);
        }
        self.decisions.push(pick);
        self.decision_options.push(options);
        pick
    }

    /// `base` cycles of work on `cpu`, moved within the jitter band by the chooser.
    pub fn cost_for(&mut self, cpu: CpuId, base: u64) -> u64 {
        let delta = (base as f64 * self.config.jitter) as u64;
        if delta == 0 {
            return base;
        }
        let options = u32::try_from(2 * delta + 1).unwrap_or(u32::MAX);
        let pick = u64::from(self.choose(DecisionKind::CostJitter, options, &[cpu]));
        base - delta + pick
    }

    /// `base` cycles of work on the current task's CPU, moved within the jitter band.
    pub fn cost(&mut self, base: u64) -> u64 {
        let cpu = self.task_cpu(self.current_task());
        self.cost_for(cpu, base)
    }

    /// A point where the current task's code can be interrupted or preempted: if IRQs and
    /// preemption are on, the chooser may stall the CPU here. Returns the stall in cycles
    /// (0 almost always); the caller spends it.
    pub fn stall_point(&mut self) -> u64 {
        let task = self.current_task();
        let cpu = self.task_cpu(task);
        let state = self.cpu(cpu);
        if self.config.max_stall_cycles == 0 || !state.irqs_enabled || state.preempt_count > 0 {
            return 0;
        }
        self.stall_points += 1;
        let step = self.choose(DecisionKind::Stall, STALL_STEPS + 1, &[cpu]);
        (self.config.max_stall_cycles * u64::from(step) / u64::from(STALL_STEPS)).max(u64::from(step.min(1)))
    }

    /// Declares that the current task made progress (the watchdog's notion of it).
    pub fn progress(&mut self) {
        let now = self.now;
        let task = self.current_task();
        self.tasks[task.0 as usize].last_progress = now;
    }

    /// Ends the run after the current poll with `outcome` (the first stop wins).
    pub fn stop(&mut self, outcome: Outcome) {
        if self.stop.is_none() {
            self.stop = Some(outcome);
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// Records a domain event of the current task: `code`, `a`, `b` go into the trace hash;
    /// `text` is built only when the trace is being kept.
    pub fn mark(&mut self, span: Span, code: u32, a: u64, b: u64, text: impl FnOnce() -> String) {
        let task = self.current_task();
        let cpu = self.task_cpu(task);
        let span_word = span as u64;
        self.trace.record(
            self.now,
            cpu,
            task,
            || TraceKind::Mark { span, code, a, b, text: text().into_boxed_str() },
            [0x4d41_524b ^ span_word, u64::from(code), a, b],
        );
    }

    pub fn is_recording(&self) -> bool {
        self.trace.is_recording()
    }

    pub fn new_resource(
        &mut self,
        name: impl Into<String>,
        class: impl Into<String>,
        handoff_cycles: u64,
    ) -> ResourceId {
        let id = ResourceId(self.resources.len() as u32);
        self.resources.push(Resource {
            name: name.into(),
            class: class.into(),
            handoff_cycles,
            recursive_shared: false,
            holders: Vec::new(),
            waiters: VecDeque::new(),
            stats: ResourceStats::default(),
        });
        id
    }

    /// Lets a task that holds `resource` shared take it shared again (a percpu rwsem read
    /// side): it succeeds unless a writer waits, in which case it queues behind the writer.
    pub fn set_recursive_shared(&mut self, resource: ResourceId) {
        self.resources[resource.0 as usize].recursive_shared = true;
    }

    pub fn resource_name(&self, resource: ResourceId) -> &str {
        &self.resources[resource.0 as usize].name
    }

    pub fn resource_class(&self, resource: ResourceId) -> &str {
        &self.resources[resource.0 as usize].class
    }

    /// The mode in which `task` holds `resource`, if it does.
    pub fn holds(&self, resource: ResourceId, task: TaskId) -> Option<Mode> {
        self.resources[resource.0 as usize].holds(task)
    }

    pub fn num_holders(&self, resource: ResourceId) -> usize {
        self.resources[resource.0 as usize].holders.len()
    }

    fn schedule_wake(&mut self, task: TaskId, at: Cycle) {
        self.seq += 1;
        self.queue.push(Reverse((at.0, self.seq, task.0)));
    }

    /// The current task gives up its CPU (it sleeps); the next queued task gets it.
    fn leave_cpu(&mut self, task: TaskId) {
        let cpu = self.task_cpu(task);
        let state = &mut self.cpus[cpu.0 as usize];
        debug_assert_eq!(state.current, Some(task), "leave_cpu by a task that does not own it");
        state.current = None;
        self.run_next(cpu);
    }

    /// Gives a free, online CPU to the first task of its run queue.
    fn run_next(&mut self, cpu: CpuId) {
        let state = &mut self.cpus[cpu.0 as usize];
        if state.current.is_some() || !state.online {
            return;
        }
        state.current = state.runq.pop_front();
        if let Some(next) = state.current {
            self.tasks[next.0 as usize].status = TaskStatus::Running;
            let now = self.now;
            self.schedule_wake(next, now);
        }
    }

    /// Queues `task` for its CPU: stoppers ahead of normal tasks; `first_of_its_kind` puts
    /// it ahead of the others of its priority (a preempted task goes back first).
    fn enqueue(&mut self, task: TaskId, first_of_its_kind: bool) {
        let priority = self.tasks[task.0 as usize].priority;
        let cpu = self.task_cpu(task);
        let tasks = &self.tasks;
        let runq = &self.cpus[cpu.0 as usize].runq;
        let position = runq
            .iter()
            .position(|queued| {
                let queued_priority = tasks[queued.0 as usize].priority;
                queued_priority < priority || (first_of_its_kind && queued_priority == priority)
            })
            .unwrap_or(runq.len());
        self.cpus[cpu.0 as usize].runq.insert(position, task);
        self.tasks[task.0 as usize].status = TaskStatus::Runnable;
        self.tasks[task.0 as usize].runnable_since = self.now;
    }

    /// Whether the current task must let another task have its CPU now: it is at a point
    /// where it can be preempted (IRQs and preemption on) and a stopper is queued, or a normal
    /// task has waited for the CPU a whole time slice.
    pub fn should_yield(&self) -> bool {
        let task = self.current_task();
        let state = &self.tasks[task.0 as usize];
        let cpu = self.cpu(state.cpu);
        let Some(next) = cpu.runq.front().map(|next| &self.tasks[next.0 as usize]) else { return false };
        if !cpu.irqs_enabled {
            return false;
        }
        // An interrupt comes in wherever IRQs are on; a task only where it is preemptible.
        if next.priority == TaskPriority::Irq {
            return state.priority < TaskPriority::Irq;
        }
        let outranked = next.priority > state.priority;
        let slice_over =
            next.priority == state.priority && self.now.since(next.runnable_since) >= SCHED_SLICE_CYCLES;
        state.priority == TaskPriority::Normal && cpu.preempt_count == 0 && (outranked || slice_over)
    }

    /// Takes `cpu` into or out of the online mask. Coming online, it runs what waits for it.
    pub fn set_cpu_online(&mut self, cpu: CpuId, online: bool) {
        self.cpus[cpu.0 as usize].online = online;
        if online {
            self.run_next(cpu);
        }
    }

    /// CPUs in the online mask, in order.
    pub fn online_cpus(&self) -> Vec<CpuId> {
        (0..self.cpus.len() as u32).map(CpuId).filter(|cpu| self.cpus[cpu.0 as usize].online).collect()
    }

    /// Adds a task from inside a run (a stopper, a kworker): it starts now on `cpu`.
    pub fn spawn(
        &mut self,
        cpu: CpuId,
        priority: TaskPriority,
        name: String,
        future: SpawnedFuture,
    ) -> TaskId {
        let now = self.now;
        let task = self.add_task(name, cpu, now);
        self.tasks[task.0 as usize].priority = priority;
        self.pending_spawns.push((task, future));
        task
    }

    /// Wakes a parked task after `delay` cycles; false if it was not parked.
    pub fn unpark(&mut self, task: TaskId, delay: u64) -> bool {
        if self.tasks[task.0 as usize].parked.take().is_none() {
            return false;
        }
        let at = self.now.saturating_add(delay);
        self.schedule_wake(task, at);
        true
    }

    fn trace_task(&mut self, task: TaskId, kind: TraceKind, words: [u64; 4]) {
        let cpu = self.task_cpu(task);
        self.trace.record(self.now, cpu, task, || kind, words);
    }

    /// Grants queued waiters of `resource` that no longer conflict, in queue order.
    fn grant_waiters(&mut self, resource: ResourceId) {
        loop {
            let res = &mut self.resources[resource.0 as usize];
            let Some(&Waiter { task, mode, since }) = res.waiters.front() else { return };
            if res.holders.iter().any(|&(_, held)| mode.conflicts_with(held)) {
                return;
            }
            res.waiters.pop_front();
            res.holders.push((task, mode));
            let handoff = res.handoff_cycles;
            let waiter_cpu = self.task_cpu(task);
            let handoff = self.cost_for(waiter_cpu, handoff);
            let resumes_at = self.now.saturating_add(handoff);
            let waited = resumes_at.since(since);
            let res = &mut self.resources[resource.0 as usize];
            res.stats.acquisitions += 1;
            res.stats.wait_cycles += waited;
            let state = &mut self.tasks[task.0 as usize];
            state.waiting_on = None;
            state.granted_wait = waited;
            self.schedule_wake(task, resumes_at);
        }
    }

    /// Releases `resource` held by the current task.
    pub fn release(&mut self, resource: ResourceId) {
        let task = self.current_task();
        let res = &mut self.resources[resource.0 as usize];
        let Some(position) = res.holders.iter().position(|&(holder, _)| holder == task) else {
            let name = res.name.clone();
            self.stop(Outcome::new(
                OutcomeKind::Error,
                format!("simulator bug: {} releases {name}, which it does not hold", self.task_name(task)),
                vec![task],
            ));
            return;
        };
        res.holders.swap_remove(position);
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.release(resource, self.tasks[task.0 as usize].cpu);
        }
        self.trace_task(task, TraceKind::Release { resource }, [0x52454c, u64::from(resource.0), 0, 0]);
        self.grant_waiters(resource);
    }

    /// Lock-order check as the current task attempts `resource` (as lockdep does, before
    /// any waiting): an edge from every resource it holds.
    fn check_lock_order(&mut self, task: TaskId, resource: ResourceId) {
        let held: Vec<u32> = self
            .resources
            .iter()
            .enumerate()
            .filter(|(_, res)| res.holds(task).is_some())
            .map(|(index, _)| index as u32)
            .collect();
        if held.is_empty() {
            return;
        }
        let resources = &self.resources;
        let lock = |id: u32| LockRef {
            id,
            name: &resources[id as usize].name,
            class: &resources[id as usize].class,
        };
        let held_refs: Vec<LockRef<'_>> = held.iter().map(|&id| lock(id)).collect();
        let names = |id: u32| resources[id as usize].name.clone();
        let cpu = self.tasks[task.0 as usize].cpu;
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.lock_order(&held_refs, &lock(resource.0));
        }
        self.lock_order.on_acquire(cpu, task, self.now, &held_refs, &lock(resource.0), &names);
    }

    /// The lock-order inversions found so far.
    pub fn lock_order_findings(&self) -> &[String] {
        self.lock_order.findings()
    }

    /// The tasks `task` waits for, by the wait-for graph (empty when it is not waiting).
    fn blockers(&self, task: TaskId, out: &mut Vec<TaskId>) {
        if let Some((resource, mode)) = self.tasks[task.0 as usize].waiting_on {
            self.resources[resource.0 as usize].blockers_of(task, mode, out);
        }
    }

    /// A cycle in the wait-for graph through `start`, as the list of tasks on it.
    fn find_wait_cycle(&mut self, start: TaskId) -> Option<Vec<TaskId>> {
        // Depth-first search over tasks; graphs here are tiny (one edge set per waiter).
        let mut path: Vec<(TaskId, Vec<TaskId>)> = Vec::new();
        let mut visited = vec![false; self.tasks.len()];
        let mut first = std::mem::take(&mut self.scratch_tasks);
        first.clear();
        self.blockers(start, &mut first);
        path.push((start, first));
        visited[start.0 as usize] = true;
        while let Some((_, next)) = path.last_mut() {
            let Some(candidate) = next.pop() else {
                path.pop();
                continue;
            };
            if candidate == start {
                return Some(path.iter().map(|(task, _)| *task).collect());
            }
            if visited[candidate.0 as usize] {
                continue;
            }
            visited[candidate.0 as usize] = true;
            let mut edges = Vec::new();
            self.blockers(candidate, &mut edges);
            path.push((candidate, edges));
        }
        None
    }

    fn describe_wait(&self, task: TaskId) -> String {
        let state = &self.tasks[task.0 as usize];
        let held: Vec<&str> = self
            .resources
            .iter()
            .filter(|res| res.holds(task).is_some())
            .map(|res| res.name.as_str())
            .collect();
        let mut text = format!("{} ({})", state.cpu, state.name);
        if let Some(reason) = state.parked {
            text += &format!(" waits for {reason}");
        }
        if !held.is_empty() {
            text += &format!(" holds {}", held.join(", "));
        }
        if let Some((resource, mode)) = state.waiting_on {
            let res = &self.resources[resource.0 as usize];
            let mut blockers = Vec::new();
            res.blockers_of(task, mode, &mut blockers);
            let by: Vec<String> = blockers.iter().map(|b| self.task_cpu(*b).to_string()).collect();
            text += &format!(
                "{} waits for {} ({}){}",
                if held.is_empty() { "" } else { " and" },
                res.name,
                mode.name(),
                if by.is_empty() { String::new() } else { format!(" held by {}", by.join(", ")) }
            );
        }
        text
    }

    fn report_deadlock(&mut self, cycle: Vec<TaskId>) {
        let parts: Vec<String> = cycle.iter().map(|&task| self.describe_wait(task)).collect();
        let what = format!("wait cycle: {}", parts.join("; "));
        self.stop(Outcome::new(OutcomeKind::Deadlock, what, cycle));
    }

    /// No event left while tasks are unfinished: nobody can run.
    fn report_stuck(&mut self) {
        let stuck: Vec<TaskId> = (0..self.tasks.len() as u32)
            .map(TaskId)
            .filter(|&task| self.task_status(task) != TaskStatus::Finished)
            .collect();
        let parts: Vec<String> = stuck.iter().map(|&task| self.describe_wait(task)).collect();
        let what = format!("no task can run: {}", parts.join("; "));
        self.stop(Outcome::new(OutcomeKind::Deadlock, what, stuck));
    }

    fn check_watchdog(&mut self) {
        let period = (self.config.watchdog_cycles / 4).max(1);
        self.next_watchdog_check = self.now.saturating_add(period);
        let limit = self.config.watchdog_cycles;
        let now = self.now;
        // A task on its CPU (running, spinning, or queued for it) without progress is the
        // soft-lockup case; one asleep on a lock or a completion is the hung-task case,
        // given HUNG_TASK_FACTOR times longer.
        let limit_of = |state: &TaskState| match state.status {
            TaskStatus::Sleeping => limit.saturating_mul(HUNG_TASK_FACTOR),
            _ => limit,
        };
        let stalled = self.tasks.iter().enumerate().find(|(_, state)| {
            matches!(state.status, TaskStatus::Running | TaskStatus::Runnable | TaskStatus::Sleeping)
                && !state.in_sleep
                && now.since(state.last_progress) > limit_of(state)
        });
        if let Some((index, state)) = stalled {
            let task = TaskId(index as u32);
            let kind = if state.status == TaskStatus::Sleeping {
                "blocked without progress"
            } else {
                "made no progress"
            };
            let what = format!(
                "{} ({}) {kind} for {} cycles (watchdog {}){}{}",
                state.cpu,
                state.name,
                now.since(state.last_progress),
                limit_of(state),
                match state.waiting_on {
                    Some((resource, mode)) => {
                        format!(
                            ", waiting for {} ({})",
                            self.resources[resource.0 as usize].name,
                            mode.name()
                        )
                    }
                    None => String::new(),
                },
                state.parked.map_or(String::new(), |reason| format!(", waiting for {reason}")),
            );
            self.stop(Outcome::new(OutcomeKind::Livelock, what, vec![task]));
        }
    }

    /// Takes the next event, letting the chooser order events due on the same cycle.
    fn next_event(&mut self) -> Option<(Cycle, TaskId)> {
        let Reverse(first) = self.queue.pop()?;
        let same_cycle = matches!(self.queue.peek(), Some(Reverse(next)) if next.0 == first.0);
        if !same_cycle {
            return Some((Cycle(first.0), TaskId(first.2)));
        }
        let mut batch = std::mem::take(&mut self.same_cycle);
        batch.clear();
        batch.push(first);
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.0 != first.0 {
                break;
            }
            batch.push(self.queue.pop().expect("peeked").0);
        }
        let cpus: Vec<CpuId> = batch.iter().map(|&(_, _, task)| self.task_cpu(TaskId(task))).collect();
        let pick = self.choose(DecisionKind::SameCycleOrder, batch.len() as u32, &cpus) as usize;
        let chosen = batch.remove(pick);
        for rest in batch.drain(..) {
            self.queue.push(Reverse(rest));
        }
        self.same_cycle = batch;
        Some((Cycle(chosen.0), TaskId(chosen.2)))
    }
}

impl Sim {
    pub(crate) fn new(engine: Engine) -> Sim {
        Sim(Rc::new(RefCell::new(engine)))
    }

    /// Runs `f` with the engine borrowed. Never call it across an `.await`.
    pub fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }

    pub fn now(&self) -> Cycle {
        self.0.borrow().now
    }

    /// Busy for `cycles`: the task keeps its CPU (a SEAMCALL, an atomic, `cpu_relax()`).
    pub fn delay(&self, cycles: u64) -> Delay {
        Delay { sim: self.clone(), cycles, sleep: false, armed: false }
    }

    /// Sleeps for `cycles`: the CPU is free for other tasks; the watchdog does not count it.
    pub fn sleep(&self, cycles: u64) -> Delay {
        Delay { sim: self.clone(), cycles, sleep: true, armed: false }
    }

    /// Acquires `resource` in `mode`, queueing FIFO behind conflicting holders and waiters.
    pub fn acquire(&self, resource: ResourceId, mode: Mode, wait: WaitKind) -> Acquire {
        Acquire { sim: self.clone(), resource, mode, wait, queued: false }
    }

    /// Gives the CPU to the queued stopper (see `Engine::should_yield`); back when it is done.
    pub fn yield_cpu(&self) -> Yield {
        Yield { sim: self.clone(), yielded: false }
    }

    /// Waits, with no event, until another task `unpark`s this one. `Spin` keeps the CPU
    /// (busy-waiting on a flag); `Sleep` gives it up. `reason` names what it waits for.
    pub fn park(&self, wait: WaitKind, reason: &'static str) -> Park {
        Park { sim: self.clone(), wait, reason, parked: false }
    }

    /// Adds a task from inside a run; it starts now.
    pub fn spawn(
        &self,
        cpu: CpuId,
        priority: TaskPriority,
        name: String,
        future: impl Future<Output = ()> + 'static,
    ) -> TaskId {
        self.with(|engine| engine.spawn(cpu, priority, name, Box::pin(future)))
    }

    /// Releases `resource` held by the current task; queued waiters get it after the hand-off.
    pub fn release(&self, resource: ResourceId) {
        self.with(|engine| engine.release(resource));
    }
}

/// The future of [`Sim::delay`] and [`Sim::sleep`].
pub struct Delay {
    sim: Sim,
    cycles: u64,
    sleep: bool,
    armed: bool,
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.armed {
            if self.sleep {
                let task = self.sim.with(|engine| engine.current_task());
                self.sim.with(|engine| engine.tasks[task.0 as usize].in_sleep = false);
            }
            return Poll::Ready(());
        }
        if self.cycles == 0 && !self.sleep {
            return Poll::Ready(());
        }
        let (cycles, sleep) = (self.cycles, self.sleep);
        self.sim.with(|engine| {
            let task = engine.current_task();
            let at = engine.now.saturating_add(cycles);
            engine.schedule_wake(task, at);
            if sleep {
                engine.tasks[task.0 as usize].in_sleep = true;
                engine.tasks[task.0 as usize].status = TaskStatus::Sleeping;
                engine.leave_cpu(task);
            }
        });
        self.armed = true;
        Poll::Pending
    }
}

/// What an acquisition cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// Cycles spent queued (0 when the resource was free).
    pub waited_cycles: u64,
}

impl Acquired {
    pub fn contended(&self) -> bool {
        self.waited_cycles > 0
    }
}

/// The future of [`Sim::acquire`].
pub struct Acquire {
    sim: Sim,
    resource: ResourceId,
    mode: Mode,
    wait: WaitKind,
    queued: bool,
}

impl Future for Acquire {
    type Output = Acquired;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Acquired> {
        let (resource, mode, wait, queued) = (self.resource, self.mode, self.wait, self.queued);
        let ready = self.sim.with(|engine| {
            let task = engine.current_task();
            if queued {
                // Woken by a grant: we already hold it.
                let waited = engine.tasks[task.0 as usize].granted_wait;
                engine.trace_task(
                    task,
                    TraceKind::Acquire { resource, mode, waited_cycles: waited },
                    [0x4143, u64::from(resource.0), mode as u64, waited],
                );
                if let Some(coverage) = engine.coverage.as_deref_mut() {
                    coverage.acquire(
                        &engine.resources,
                        resource,
                        engine.tasks[task.0 as usize].cpu,
                        mode,
                        true,
                    );
                }
                return Some(Acquired { waited_cycles: waited });
            }
            engine.check_lock_order(task, resource);
            let res = &mut engine.resources[resource.0 as usize];
            if let Some(held) = res
                .holds(task)
                .filter(|&held| !(res.recursive_shared && held == Mode::Shared && mode == Mode::Shared))
            {
                // A non-recursive lock taken again by its holder: the kernel would hang here.
                let name = res.name.clone();
                engine.stop(Outcome::new(
                    OutcomeKind::Deadlock,
                    format!(
                        "{} ({}) takes {name} ({}) again while holding it ({}): self-deadlock",
                        engine.task_cpu(task),
                        engine.task_name(task),
                        mode.name(),
                        held.name()
                    ),
                    vec![task],
                ));
                return None;
            }
            if res.can_grant_now(mode) {
                res.holders.push((task, mode));
                res.stats.acquisitions += 1;
                engine.trace_task(
                    task,
                    TraceKind::Acquire { resource, mode, waited_cycles: 0 },
                    [0x4143, u64::from(resource.0), mode as u64, 0],
                );
                if let Some(coverage) = engine.coverage.as_deref_mut() {
                    coverage.acquire(
                        &engine.resources,
                        resource,
                        engine.tasks[task.0 as usize].cpu,
                        mode,
                        false,
                    );
                }
                return Some(Acquired { waited_cycles: 0 });
            }
            let now = engine.now;
            res.waiters.push_back(Waiter { task, mode, since: now });
            res.stats.contended += 1;
            engine.tasks[task.0 as usize].waiting_on = Some((resource, mode));
            if let Some(coverage) = engine.coverage.as_deref_mut() {
                coverage.wait(&engine.resources, task, resource, mode);
            }
            engine.trace_task(
                task,
                TraceKind::Wait { resource, mode },
                [0x5754, u64::from(resource.0), mode as u64, 0],
            );
            if wait == WaitKind::Sleep {
                engine.tasks[task.0 as usize].status = TaskStatus::Sleeping;
                engine.leave_cpu(task);
            }
            if let Some(cycle) = engine.find_wait_cycle(task) {
                engine.report_deadlock(cycle);
            }
            None
        });
        match ready {
            Some(acquired) => Poll::Ready(acquired),
            None => {
                self.queued = true;
                Poll::Pending
            }
        }
    }
}

/// What the executor needs from the engine between polls.
impl Engine {
    pub(crate) fn add_task(&mut self, name: String, cpu: CpuId, start: Cycle) -> TaskId {
        let task = TaskId(self.tasks.len() as u32);
        self.tasks.push(TaskState {
            name,
            cpu,
            priority: TaskPriority::Normal,
            status: TaskStatus::NotStarted,
            parked: None,
            last_progress: start,
            waiting_on: None,
            in_sleep: false,
            runnable_since: start,
            granted_wait: 0,
        });
        self.schedule_wake(task, start);
        task
    }

    /// Pops the next event and decides whether the task runs now. Returns the task to poll,
    /// or `Err` with the run's end.
    pub(crate) fn advance(&mut self) -> Result<Option<TaskId>, Outcome> {
        if let Some(outcome) = self.stop.take() {
            return Err(outcome);
        }
        let Some((at, task)) = self.next_event() else {
            if self.tasks.iter().all(|state| state.status == TaskStatus::Finished) {
                return Err(Outcome::pass());
            }
            self.report_stuck();
            return Err(self.stop.take().expect("report_stuck stops"));
        };
        if at > self.config.max_time {
            return Err(Outcome::new(
                OutcomeKind::Limit,
                format!("run.max_time ({} cycles) reached with tasks unfinished", self.config.max_time.0),
                Vec::new(),
            ));
        }
        self.now = at;
        self.events += 1;
        if self.events > self.config.max_events {
            return Err(Outcome::new(
                OutcomeKind::Limit,
                format!("run.max_events ({} events) reached with tasks unfinished", self.config.max_events),
                Vec::new(),
            ));
        }
        if self.now >= self.next_watchdog_check {
            self.check_watchdog();
            if let Some(outcome) = self.stop.take() {
                return Err(outcome);
            }
        }
        let cpu = self.task_cpu(task);
        let status = self.task_status(task);
        match status {
            TaskStatus::Running => {}
            TaskStatus::NotStarted | TaskStatus::Sleeping => {
                let state = &mut self.cpus[cpu.0 as usize];
                match state.current {
                    None if state.online => state.current = Some(task),
                    Some(owner) if owner == task => {}
                    _ => {
                        self.enqueue(task, false);
                        return Ok(None);
                    }
                }
                if status == TaskStatus::NotStarted {
                    self.tasks[task.0 as usize].last_progress = self.now;
                    self.trace_task(task, TraceKind::TaskStart, [0x5354, 0, 0, 0]);
                }
                self.tasks[task.0 as usize].status = TaskStatus::Running;
            }
            TaskStatus::Runnable | TaskStatus::Finished => {
                return Err(Outcome::new(
                    OutcomeKind::Error,
                    format!("simulator bug: event for task {} in state {status:?}", self.task_name(task)),
                    vec![task],
                ));
            }
        }
        self.current = Some(task);
        Ok(Some(task))
    }

    pub(crate) fn finish_task(&mut self, task: TaskId) {
        self.tasks[task.0 as usize].status = TaskStatus::Finished;
        self.trace_task(task, TraceKind::TaskEnd, [0x454e44, 0, 0, 0]);
        let still_held: Vec<String> = self
            .resources
            .iter()
            .filter(|res| res.holds(task).is_some())
            .map(|res| res.name.clone())
            .collect();
        if !still_held.is_empty() {
            let what = format!(
                "{} ({}) finished holding {}",
                self.task_cpu(task),
                self.task_name(task),
                still_held.join(", ")
            );
            self.stop(Outcome::new(OutcomeKind::Warn, what, vec![task]));
        }
        self.leave_cpu(task);
    }

    pub(crate) fn end_poll(&mut self) {
        self.current = None;
    }

    pub(crate) fn take_spawns(&mut self) -> Vec<(TaskId, SpawnedFuture)> {
        std::mem::take(&mut self.pending_spawns)
    }

    pub(crate) fn take_decisions(&mut self) -> (Vec<u32>, Vec<u32>) {
        (std::mem::take(&mut self.decisions), std::mem::take(&mut self.decision_options))
    }

    pub(crate) fn stall_points(&self) -> u64 {
        self.stall_points
    }

    pub(crate) fn chooser_diverged(&self) -> bool {
        self.chooser.diverged()
    }

    pub(crate) fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Name, class and figures of every resource, in creation order.
    pub fn resource_stats(&self) -> Vec<(String, String, ResourceStats)> {
        self.resources.iter().map(|res| (res.name.clone(), res.class.clone(), res.stats)).collect()
    }
}

/// The future of [`Sim::yield_cpu`].
pub struct Yield {
    sim: Sim,
    yielded: bool,
}

impl Future for Yield {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        let yielded = self.sim.with(|engine| {
            if !engine.should_yield() {
                return false;
            }
            let task = engine.current_task();
            let cpu = engine.task_cpu(task);
            // Preempted by a stopper: back first among its peers. Giving up its time slice:
            // behind the task that waited for it.
            let preempted = engine.cpus[cpu.0 as usize].runq.front().is_some_and(|next| {
                engine.tasks[next.0 as usize].priority > engine.tasks[task.0 as usize].priority
            });
            engine.cpus[cpu.0 as usize].current = None;
            engine.enqueue(task, preempted);
            engine.run_next(cpu);
            true
        });
        if !yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        Poll::Pending
    }
}

/// The future of [`Sim::park`].
pub struct Park {
    sim: Sim,
    wait: WaitKind,
    reason: &'static str,
    parked: bool,
}

impl Future for Park {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.parked {
            return Poll::Ready(());
        }
        let (wait, reason) = (self.wait, self.reason);
        self.sim.with(|engine| {
            let task = engine.current_task();
            engine.tasks[task.0 as usize].parked = Some(reason);
            if wait == WaitKind::Sleep {
                engine.tasks[task.0 as usize].status = TaskStatus::Sleeping;
                engine.leave_cpu(task);
            }
        });
        self.parked = true;
        Poll::Pending
    }
}
