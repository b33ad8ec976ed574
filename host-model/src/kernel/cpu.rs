//! `Cpu`: what a host task runs with. Its methods are the per-CPU kernel operations
//! (`preempt_disable()`, `local_irq_save()`, `cpu_relax()`, `WARN_ON()`).

use std::rc::Rc;

use sim_core::{CpuId, OutcomeKind, Sim, Span, Stall, Subject, TaskId, TaskPriority, WorkPoint};

use crate::host::Host;

/// A host task's view of its CPU and of the host it runs in.
#[derive(Clone)]
pub struct Cpu {
    pub sim: Sim,
    pub id: CpuId,
    pub task: TaskId,
    host: Rc<Host>,
    /// Whether the run's trace takes marks (it hashes or records them); `check`'s
    /// exploration runs do neither, and a mark is then nothing.
    traced: bool,
}

/// Trace mark codes used by host-model (hashed into the trace).
pub mod mark {
    pub const STEP: u32 = 1;
    pub const SEAMCALL: u32 = 2;
    /// `a` is the element index (a 2MB range for `pamt_refcount`).
    pub const ATOMIC: u32 = 3;
    pub const WARN: u32 = 4;
    /// `a` is 1 for an allocation, 2 for a free; `b` the page.
    pub const PAGE: u32 = 5;
    pub const CALL: u32 = 6;
    /// `a` is the stall's cycles; `b` 0 for an interrupt, 1 for a preemption by a stopper or
    /// a task whose turn it is, 2 for a preemption the chooser injected.
    pub const STALL: u32 = 7;
    /// A kernel log line (`pr_warn()`, `pr_err()`): not a finding, a line in the table.
    pub const PRINTK: u32 = 8;
    /// What the guest did inside VP.ENTER (runs, ACCEPT, exits): `a` is the guest RIP.
    pub const GUEST: u32 = 9;
    /// A KVM event that is not a SEAMCALL: a kick, `wait_for_sept_zap`, a memslot change.
    pub const KVM: u32 = 10;
}

/// What a stall mark's `b` says it was.
pub mod stall {
    pub const IRQ: u64 = 0;
    pub const YIELD: u64 = 1;
    pub const PREEMPTED: u64 = 2;
}

/// Coverage feature codes used by host-model (`--strategy coverage`; sim-core coverage.rs).
pub mod cover {
    /// A SEAMCALL returned: `a` = the leaf (RAX), `b` = the status with its operand detail.
    pub const SEAMCALL: u32 = 1;
    /// A DPAMT refcount decision at or across zero while another get/put of the same range
    /// was in flight (a near miss of `dpamt-refcount-matches-module`): `a` = the site
    /// (`dpamt::ZeroCrossing`), `b` = how many others were in flight (capped at 3).
    pub const NEAR_MISS: u32 = 2;
    /// An `atomic_t` operation: `a` = its site (the atomic's and the operation's names),
    /// `b` = the value found and left (bucketed) and who wrote it last (kernel/atomic.rs).
    pub const ATOMIC: u32 = 3;
    /// A transition of per-CPU hardware state (VMXON, VMXOFF) that follows no other task's,
    /// recorded by the checker: `a` = the state, the transition and the task's name, hashed;
    /// `b` = 0 for the first one on its CPU, 1 after the same task's (scenarios'
    /// near_miss.rs; one after another task's is a nearness feature instead).
    pub const NEAR_TRANSITION: u32 = 4;
}

impl Cpu {
    pub fn new(sim: Sim, id: CpuId, task: TaskId, host: Rc<Host>) -> Cpu {
        let traced = sim.with(|engine| engine.is_tracing());
        Cpu { sim, id, task, host, traced }
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host, shared: for tasks this one spawns on other CPUs.
    pub fn host_rc(&self) -> Rc<Host> {
        self.host.clone()
    }

    /// Busy for `cycles` of work, moved within the jitter band. Where this CPU can be
    /// interrupted or preempted, the chooser may first stall it (`maybe_stall`).
    pub async fn work(&self, cycles: u64) {
        // `maybe_stall` then `busy`, with the usual case (no yield, no stall) decided and its
        // cost drawn in one engine call.
        match self.sim.with(|engine| engine.work_point(cycles)) {
            WorkPoint::Busy(cycles) => self.sim.delay(cycles).await,
            WorkPoint::Yield => {
                self.maybe_stall().await;
                self.busy(cycles).await;
            }
            WorkPoint::Stall(stall) => {
                self.stall(stall).await;
                self.busy(cycles).await;
            }
        }
    }

    /// Busy for `cycles`, moved within the jitter band, with no point where anything can
    /// land: the inside of one instruction (a SEAMCALL) or of an IRQs-off handler step.
    pub async fn busy(&self, cycles: u64) {
        let cycles = self.sim.with(|engine| engine.cost(cycles));
        self.sim.delay(cycles).await;
    }

    /// A point where the task's code can be interrupted: a queued stopper or IPI takes the
    /// CPU here first; then the chooser may inject an interrupt (wherever IRQs are on, the
    /// task keeps its CPU) or, where preemption is on too, a preemption (the task leaves
    /// its CPU for a while).
    pub async fn maybe_stall(&self) {
        if let Some(priority) = self.sim.with(|engine| engine.yield_target()) {
            let (kind, text) = match priority {
                TaskPriority::Irq => (stall::IRQ, "(IPI)"),
                TaskPriority::Normal | TaskPriority::Stopper => (stall::YIELD, "(preempted)"),
            };
            self.mark(Span::Instant, mark::STALL, 0, kind, || text.to_string());
            self.sim.yield_cpu().await;
        }
        let stall = self.sim.with(|engine| engine.stall_point());
        self.stall(stall).await;
    }

    /// What the chooser decided at an interruptible point: an interrupt or a preemption of
    /// the CPU for a while, marked in the trace, or nothing.
    async fn stall(&self, stall: Stall) {
        match stall {
            Stall::None => {}
            Stall::Irq(cycles) => {
                self.mark(Span::Begin, mark::STALL, cycles, stall::IRQ, || {
                    format!("(irq {})", self.host.stall_length(cycles))
                });
                self.sim.delay(cycles).await;
                self.mark(Span::End, mark::STALL, cycles, stall::IRQ, || "(irq returns)".to_string());
                // An IPI that came in meanwhile was held off by this handler's IRQs-off
                // run; it lands as the handler returns, before the interrupted code goes on.
                if self.sim.with(|engine| engine.yield_target()) == Some(TaskPriority::Irq) {
                    self.mark(Span::Instant, mark::STALL, 0, stall::IRQ, || "(IPI)".to_string());
                    self.sim.yield_cpu().await;
                }
            }
            Stall::Preempt(cycles) => {
                self.mark(Span::Begin, mark::STALL, cycles, stall::PREEMPTED, || {
                    format!("(preempted {})", self.host.stall_length(cycles))
                });
                self.sim.preempted_for(cycles).await;
                self.mark(Span::End, mark::STALL, cycles, stall::PREEMPTED, || "(runs again)".to_string());
            }
        }
    }

    /// `cpu_relax()` in a spin loop.
    pub async fn cpu_relax(&self) {
        self.work(self.host.costs.cpu_relax).await;
    }

    /// `cond_resched()` with nothing else to run.
    pub async fn cond_resched(&self) {
        crate::kernel::lockdep::might_sleep(self, "cond_resched");
        self.work(self.host.costs.cond_resched).await;
    }

    pub fn preempt_disable(&self) {
        self.sim.with(|engine| engine.cpu_mut(self.id).preempt_count += 1);
    }

    pub fn preempt_enable(&self) {
        let count = self.preempt_count();
        if count == 0 {
            self.precondition_failed(
                "preempt_enable",
                "preempt_count is already 0 (unbalanced preempt_enable)",
            );
            return;
        }
        self.sim.with(|engine| engine.cpu_mut(self.id).preempt_count -= 1);
    }

    pub fn preempt_count(&self) -> u32 {
        self.sim.with(|engine| engine.cpu(self.id).preempt_count)
    }

    pub fn irqs_disabled(&self) -> bool {
        self.sim.with(|engine| !engine.cpu(self.id).irqs_enabled)
    }

    /// `local_irq_save()`: returns whether IRQs were on.
    pub fn local_irq_save(&self) -> bool {
        self.sim.with(|engine| std::mem::replace(&mut engine.cpu_mut(self.id).irqs_enabled, false))
    }

    /// `local_irq_restore()`.
    pub fn local_irq_restore(&self, irqs_were_enabled: bool) {
        self.sim.with(|engine| engine.cpu_mut(self.id).irqs_enabled = irqs_were_enabled);
    }

    /// `WARN_ON()` / `KVM_BUG_ON()` / an error print on an unexpected status in `function`:
    /// a finding. The run ends with `warn` once this task next waits; the algorithm carries
    /// on until then.
    pub fn warn(&self, function: &str, message: impl Into<String>) {
        self.warn_about(function, message, Vec::new());
    }

    /// `warn` naming what the warning is about (the table focuses on it).
    pub fn warn_about(&self, function: &str, message: impl Into<String>, subjects: Vec<Subject>) {
        let message = message.into();
        self.sim.with(|engine| {
            let text = format!("{function}: {message}");
            engine.mark(Span::Instant, mark::WARN, 0, 0, || format!("WARN: {text}"));
            let detail = format!("{}: {text}", self.id);
            let outcome = engine.report_here(OutcomeKind::Warn, "", detail, subjects);
            engine.stop(outcome);
        });
    }

    /// Records a coverage feature (`cover::*`); nothing when the run does not record coverage.
    pub fn cover(&self, code: u32, a: u64, b: u64) {
        self.sim.with(|engine| engine.cover(code, a, b));
    }

    /// Records a coverage feature whose count in the run the explorer climbs (sim-core's
    /// `Engine::cover_counted`); nothing when the run does not record coverage.
    pub fn cover_counted(&self, code: u32, a: u64, b: u64) {
        self.sim.with(|engine| engine.cover_counted(code, a, b));
    }

    /// A kernel precondition of `function` does not hold (`lockdep_assert_*`, a "cannot
    /// fail" that failed, a sleep in atomic context): the model of the kernel is broken,
    /// which ends the run in `error` naming the function.
    pub fn precondition_failed(&self, function: &str, what: impl Into<String>) {
        let what = what.into();
        self.sim.with(|engine| {
            let detail = format!("{}: {function}: {what}", self.id);
            engine.mark(Span::Instant, mark::WARN, 1, 0, || format!("BUG: {function}: {what}"));
            let outcome = engine.report_here(OutcomeKind::Error, "precondition", detail, Vec::new());
            engine.stop(outcome);
        });
    }

    /// A kernel log line at `level` (`pr_warn_ratelimited`, `pr_err`): shown in tables and
    /// traces; not a finding.
    pub fn printk(&self, level: &'static str, message: &'static str) {
        self.mark(Span::Instant, mark::PRINTK, 0, 0, || format!("{level}: {message}"));
    }

    /// A trace mark of this task.
    pub fn mark(&self, span: Span, code: u32, a: u64, b: u64, text: impl FnOnce() -> String) {
        if !self.traced {
            return;
        }
        self.sim.with(|engine| engine.mark(span, code, a, b, text));
    }

    /// Declares progress to the watchdog (a unit of work completed).
    pub fn progress(&self) {
        self.sim.with(|engine| engine.progress());
        if let Some(statuses) = self.host.stats.borrow_mut().since_progress.get_mut(self.id.0 as usize) {
            statuses.clear();
        }
    }
}
