//! Scheduling: who owns each CPU, the run queues, where a task can be preempted, and the
//! interrupts and preemptions the chooser injects.
//!
//! Two kinds of stall are told apart. An *interrupt* (hardirq, softirq, NMI) lands wherever
//! IRQs are on, preempt-off sections included: the task keeps its CPU and time passes. A
//! *preemption* lands only where preemption is on too: the task leaves its CPU for a while
//! and another may run there. With IRQs off, or inside a SEAMCALL, neither.

use std::cell::RefCell;

use super::{
    Engine, Next, SCHED_SLICE_CYCLES, STALL_MIN_CYCLES, STALL_STEPS, SpawnedFuture, TaskPriority, TaskStatus,
};
use crate::chooser::DecisionKind;
use crate::outcome::{Finding, Outcome, OutcomeKind};
use crate::resource::Name;
use crate::trace::TraceKind;
use crate::{CpuId, TaskId};

/// What the chooser decided at a point where the current task can be interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    None,
    /// An interrupt of this many cycles: the task keeps its CPU.
    Irq(u64),
    /// A preemption of this many cycles: the task leaves its CPU.
    Preempt(u64),
}

/// What a unit of work (a host `work()`) meets first, found in one call: most units neither
/// yield nor stall, and go straight to their jittered cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkPoint {
    /// A queued task must have the CPU first (`yield_target`); nothing was decided yet.
    Yield,
    /// The chooser stalled the task here; the cost is drawn when the stall is over.
    Stall(Stall),
    /// Nothing in the way: busy for this many cycles (the base moved within its band).
    Busy(u64),
}

/// Length `step` (0-based) of `STALL_STEPS` from `STALL_MIN_CYCLES` to `max_stall`, evenly
/// spaced in log scale. Computed when a stall first draws it, not per run (most runs stall
/// rarely), and remembered by the thread for its next runs with the same `max_stall`: a
/// `powf` costs more than the rest of a stall point.
pub(super) fn stall_length(max_stall: u64, step: u32) -> u64 {
    thread_local! {
        /// The `max_stall` the lengths are for, and each step's length (0: not computed yet).
        static LENGTHS: RefCell<(u64, [u64; STALL_STEPS as usize])> =
            const { RefCell::new((0, [0; STALL_STEPS as usize])) };
    }
    LENGTHS.with_borrow_mut(|(lengths_for, lengths)| {
        if *lengths_for != max_stall {
            *lengths_for = max_stall;
            *lengths = [0; STALL_STEPS as usize];
        }
        let length = &mut lengths[step as usize];
        if *length == 0 {
            *length = log_spaced_length(max_stall, step);
        }
        *length
    })
}

/// [`stall_length`] computed: never 0.
fn log_spaced_length(max_stall: u64, step: u32) -> u64 {
    let low = STALL_MIN_CYCLES.min(max_stall) as f64;
    let ratio = max_stall as f64 / low;
    let fraction = f64::from(step) / f64::from(STALL_STEPS - 1);
    ((low * ratio.powf(fraction)).round() as u64).clamp(1, max_stall)
}

impl Engine {
    pub fn cpu(&self, cpu: CpuId) -> &super::CpuState {
        &self.cpus[cpu.0 as usize]
    }

    pub fn cpu_mut(&mut self, cpu: CpuId) -> &mut super::CpuState {
        &mut self.cpus[cpu.0 as usize]
    }

    pub fn num_cpus(&self) -> u32 {
        self.cpus.len() as u32
    }

    /// `num_online_cpus()`.
    pub fn num_online_cpus(&self) -> u32 {
        self.online_count
    }

    /// CPUs in the online mask, in order.
    pub fn online_cpus(&self) -> Vec<CpuId> {
        (0..self.cpus.len() as u32).map(CpuId).filter(|cpu| self.cpus[cpu.0 as usize].online).collect()
    }

    /// Takes `cpu` into or out of the online mask. Coming online, it runs what waits for it.
    pub fn set_cpu_online(&mut self, cpu: CpuId, online: bool) {
        let state = &mut self.cpus[cpu.0 as usize];
        if state.online != online {
            if online {
                self.online_count += 1;
            } else {
                self.online_count -= 1;
            }
        }
        state.online = online;
        if online {
            self.run_next(cpu);
        }
    }

    /// A point where the current task's code can be interrupted (IRQs on, not inside a
    /// SEAMCALL): the chooser decides whether an interrupt — or, where preemption is on
    /// too, a preemption — takes the CPU here, and for how long.
    #[inline]
    pub fn stall_point(&mut self) -> Stall {
        let task = self.current_task();
        let cpu = self.task_cpu(task);
        let state = self.cpu(cpu);
        if self.config.max_stall_cycles == 0 || !state.irqs_enabled || state.in_seam {
            return Stall::None;
        }
        let preemptible =
            state.preempt_count == 0 && self.tasks[task.0 as usize].priority == TaskPriority::Normal;
        self.stall_points += 1;
        let step = self.choose(DecisionKind::Stall, STALL_STEPS + 1, &[cpu]);
        if step == 0 {
            return Stall::None;
        }
        let cycles = stall_length(self.config.max_stall_cycles, step - 1);
        if preemptible && self.choose(DecisionKind::StallKind, 2, &[cpu]) == 1 {
            return Stall::Preempt(cycles);
        }
        Stall::Irq(cycles)
    }

    /// A unit of work of `base` cycles on the current task: `yield_target`, `stall_point`
    /// and `cost` asked in that order, stopping at the first with something to do.
    pub fn work_point(&mut self, base: u64) -> WorkPoint {
        if self.should_yield() {
            return WorkPoint::Yield;
        }
        match self.stall_point() {
            Stall::None => WorkPoint::Busy(self.cost(base)),
            stall => WorkPoint::Stall(stall),
        }
    }

    /// Whether the current task must let another task have its CPU now: a queued interrupt
    /// handler wherever IRQs are on; a queued stopper, or a normal task that waited a whole
    /// time slice, where preemption is on too. Never inside a SEAMCALL.
    pub fn should_yield(&self) -> bool {
        let task = self.current_task();
        let state = &self.tasks[task.0 as usize];
        let cpu = self.cpu(state.cpu);
        let Some(next) = cpu.runq.front().map(|next| &self.tasks[next.0 as usize]) else { return false };
        if !cpu.irqs_enabled || cpu.in_seam {
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

    /// Whether an interrupt handler or a stopper's wake-up IPI is queued for the current
    /// task's CPU: what makes a guest running under VMX exit at its next instruction, and
    /// what ends an interruptible period.
    pub fn interrupt_queued(&self) -> bool {
        let cpu = self.task_cpu(self.current_task());
        self.cpu(cpu).runq.front().is_some_and(|next| self.task_priority(*next) > TaskPriority::Normal)
    }

    /// The kernel's `need_resched()`: a normal task waiting for the current task's CPU has
    /// waited a whole time slice, or a higher priority waits, whether or not the current
    /// task could be preempted right now (code with preemption off polls this to give the
    /// CPU up at a point of its choosing).
    pub fn need_resched(&self) -> bool {
        let task = self.current_task();
        let state = &self.tasks[task.0 as usize];
        let Some(next) = self.cpu(state.cpu).runq.front().map(|next| &self.tasks[next.0 as usize]) else {
            return false;
        };
        next.priority > state.priority
            || (next.priority == state.priority && self.now.since(next.runnable_since) >= SCHED_SLICE_CYCLES)
    }

    /// The priority of the task the current one must yield to now, if any (see
    /// `should_yield`): `Irq` is an interrupt, anything else a preemption.
    pub fn yield_target(&self) -> Option<TaskPriority> {
        if !self.should_yield() {
            return None;
        }
        let cpu = self.task_cpu(self.current_task());
        let next = self.cpu(cpu).runq.front()?;
        Some(self.tasks[next.0 as usize].priority)
    }

    /// The current task gives up its CPU (it sleeps); the next queued task gets it.
    pub(super) fn leave_cpu(&mut self, task: TaskId) {
        let cpu = self.task_cpu(task);
        let state = &mut self.cpus[cpu.0 as usize];
        debug_assert_eq!(state.current, Some(task), "leave_cpu by a task that does not own it");
        state.current = None;
        self.run_next(cpu);
    }

    /// Gives a free, online CPU to the first task of its run queue.
    pub(super) fn run_next(&mut self, cpu: CpuId) {
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

    /// Queues `task` for its CPU: higher priorities first; `first_of_its_kind` puts it
    /// ahead of the others of its priority (a preempted task goes back first).
    pub(super) fn enqueue(&mut self, task: TaskId, first_of_its_kind: bool) {
        let priority = self.tasks[task.0 as usize].priority;
        self.enqueue_at(task, |queued| queued < priority || (first_of_its_kind && queued == priority));
    }

    /// Queues `task` for its CPU ahead of every queued task that is not an interrupt
    /// handler: an interrupted task that cannot be preempted gets its CPU back when the
    /// handlers return, whatever else (a stopper) is waiting for the CPU.
    fn enqueue_behind_interrupts(&mut self, task: TaskId) {
        self.enqueue_at(task, |queued| queued < TaskPriority::Irq);
    }

    /// Queues `task` before the first queued task whose priority `goes_before` accepts.
    fn enqueue_at(&mut self, task: TaskId, goes_before: impl Fn(TaskPriority) -> bool) {
        let priority = self.tasks[task.0 as usize].priority;
        let cpu = self.task_cpu(task);
        let tasks = &self.tasks;
        let runq = &self.cpus[cpu.0 as usize].runq;
        let position = runq
            .iter()
            .position(|queued| goes_before(tasks[queued.0 as usize].priority))
            .unwrap_or(runq.len());
        self.cpus[cpu.0 as usize].runq.insert(position, task);
        self.tasks[task.0 as usize].status = TaskStatus::Runnable;
        self.tasks[task.0 as usize].runnable_since = self.now;
        // An interrupt or a stopper's wake-up IPI for a CPU whose task is in an
        // interruptible period (a guest running under VMX) ends the period now.
        if priority > TaskPriority::Normal
            && let Some(owner) = self.cpus[cpu.0 as usize].current
        {
            self.interrupt(owner);
            // An interrupt for a CPU that spins with IRQs on wakes the spinner: it yields to
            // the handler and spins again.
            let state = &self.cpus[cpu.0 as usize];
            let irqs_on = state.irqs_enabled && !state.in_seam;
            let spins = self.tasks[owner.0 as usize].parked.is_some_and(|parked| parked.irq_wakes);
            if priority == TaskPriority::Irq && irqs_on && spins {
                self.unpark(owner, 0);
            }
        }
    }

    /// Ends `task`'s interruptible period now, if it is in one; its scheduled end goes stale.
    pub(super) fn interrupt(&mut self, task: TaskId) {
        let Some(seq) = self.tasks[task.0 as usize].interruptible.take() else { return };
        let at = self.stale_wakes.partition_point(|&stale| stale < seq);
        self.stale_wakes.insert(at, seq);
        self.tasks[task.0 as usize].interrupted = true;
        let now = self.now;
        self.schedule_wake(task, now);
    }

    /// The current task yields to the task its CPU's queue says must run (see
    /// `should_yield`): it goes back first among its peers when preempted by a higher
    /// priority, behind the task that waited when its time slice is over.
    pub(super) fn yield_now(&mut self) {
        let task = self.current_task();
        let cpu = self.task_cpu(task);
        let own_priority = self.tasks[task.0 as usize].priority;
        let next_priority =
            self.cpus[cpu.0 as usize].runq.front().map(|next| self.tasks[next.0 as usize].priority);
        let preempted = next_priority.is_some_and(|next| next > own_priority);
        // Taken by an interrupt where it cannot be preempted, the task is what the
        // interrupt returns to; where it can, the stopper the interrupt woke may run first.
        let returns_from_interrupt = next_priority == Some(TaskPriority::Irq)
            && (self.cpus[cpu.0 as usize].preempt_count > 0 || own_priority != TaskPriority::Normal);
        if let Some((coverage, next)) =
            self.coverage.as_deref_mut().zip(self.cpus[cpu.0 as usize].runq.front())
        {
            let (to, from) = (&self.task_names[next.0 as usize], &self.task_names[task.0 as usize]);
            coverage.yielded(&self.resources, to, from, &self.tasks[task.0 as usize].held);
        }
        self.cpus[cpu.0 as usize].current = None;
        if returns_from_interrupt {
            self.enqueue_behind_interrupts(task);
        } else {
            self.enqueue(task, preempted);
        }
        self.run_next(cpu);
    }

    /// Adds a task from inside a run (a stopper, a kworker): it starts now on `cpu`.
    pub fn spawn(
        &mut self,
        cpu: CpuId,
        priority: TaskPriority,
        name: impl Into<Name>,
        future: SpawnedFuture,
    ) -> TaskId {
        let now = self.now;
        let task = self.add_task(name.into(), cpu, now);
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
        // A task that slept on a wait object until it was done waited, it did not stall: its
        // watchdog starts over when it wakes, as after an intentional sleep (a spinner, which
        // kept its CPU, keeps its count).
        let state = &mut self.tasks[task.0 as usize];
        if state.status == TaskStatus::Sleeping && !state.preempted {
            state.last_progress = state.last_progress.max(at);
        }
        self.schedule_wake(task, at);
        true
    }

    /// Decides whether `task`, whose event came, runs now or queues for its CPU.
    pub(super) fn dispatch(&mut self, task: TaskId) -> Next {
        let cpu = self.task_cpu(task);
        let status = self.task_status(task);
        match status {
            TaskStatus::Running => {}
            TaskStatus::NotStarted | TaskStatus::Sleeping => {
                let preempted = std::mem::replace(&mut self.tasks[task.0 as usize].preempted, false);
                let state = &mut self.cpus[cpu.0 as usize];
                match state.current {
                    None if state.online => state.current = Some(task),
                    Some(owner) if owner == task => {}
                    _ => {
                        self.enqueue(task, preempted);
                        return Next::Queued;
                    }
                }
                if status == TaskStatus::NotStarted {
                    self.tasks[task.0 as usize].last_progress = self.now;
                    self.arm_watchdog(self.now.saturating_add(self.config.watchdog_cycles));
                    self.trace_task(task, TraceKind::TaskStart, [0x5354, 0, 0, 0]);
                }
                self.tasks[task.0 as usize].status = TaskStatus::Running;
            }
            TaskStatus::Runnable | TaskStatus::Finished => {
                let what =
                    format!("simulator bug: event for task {} in state {status:?}", self.task_name(task));
                let finding = Finding::Report {
                    name: String::new(),
                    task: Some(task),
                    cpu: Some(cpu),
                    detail: what.clone(),
                    subjects: Vec::new(),
                };
                return Next::End(Box::new(Outcome::new(OutcomeKind::Error, what, self.now, finding)));
            }
        }
        self.current = Some(task);
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.running = cpu;
        }
        Next::Poll(task)
    }

    pub(crate) fn finish_task(&mut self, task: TaskId) {
        self.tasks[task.0 as usize].status = TaskStatus::Finished;
        self.trace_task(task, TraceKind::TaskEnd, [0x454e44, 0, 0, 0]);
        let still_held = std::mem::take(&mut self.tasks[task.0 as usize].held);
        if !still_held.is_empty() {
            let names: Vec<&str> = still_held.iter().map(|&id| self.resource_name(id)).collect();
            let detail = format!(
                "{} ({}) finished holding {}",
                self.task_cpu(task),
                self.task_name(task),
                names.join(", ")
            );
            let subjects = still_held.iter().map(|&id| crate::Subject::Resource(id)).collect();
            let outcome = self.report_here(OutcomeKind::Warn, "", detail, subjects);
            self.stop(outcome);
            self.tasks[task.0 as usize].held = still_held;
        }
        self.leave_cpu(task);
    }
}
