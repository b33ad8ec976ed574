//! `Cpu`: what a host task runs with. Its methods are the per-CPU kernel operations
//! (`preempt_disable()`, `local_irq_save()`, `cpu_relax()`, `WARN_ON()`).

use std::rc::Rc;

use sim_core::{CpuId, Outcome, OutcomeKind, Sim, Span, TaskId};

use crate::host::Host;

/// A host task's view of its CPU and of the host it runs in.
#[derive(Clone)]
pub struct Cpu {
    pub sim: Sim,
    pub id: CpuId,
    pub task: TaskId,
    host: Rc<Host>,
}

/// Trace mark codes used by host-model (hashed into the trace).
pub mod mark {
    pub const STEP: u32 = 1;
    pub const SEAMCALL: u32 = 2;
    pub const ATOMIC: u32 = 3;
    pub const WARN: u32 = 4;
    pub const PAGE: u32 = 5;
    pub const CALL: u32 = 6;
    pub const STALL: u32 = 7;
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
}

impl Cpu {
    pub fn new(sim: Sim, id: CpuId, task: TaskId, host: Rc<Host>) -> Cpu {
        Cpu { sim, id, task, host }
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
        self.maybe_stall().await;
        let cycles = self.sim.with(|engine| engine.cost(cycles));
        self.sim.delay(cycles).await;
    }

    /// A point where an interrupt, NMI or preemption could take this CPU away (IRQs and
    /// preemption on): the chooser decides whether it does, and for how long.
    pub async fn maybe_stall(&self) {
        // A queued stopper (stop_machine), or a task whose turn it is, takes the CPU here first.
        if self.sim.with(|engine| engine.should_yield()) {
            self.mark(Span::Instant, mark::STALL, 0, 1, || "(preempted)".to_string());
            self.sim.yield_cpu().await;
        }
        let stall_cycles = self.sim.with(|engine| engine.stall_point());
        if stall_cycles == 0 {
            return;
        }
        self.mark(Span::Begin, mark::STALL, stall_cycles, 0, || {
            format!("(interrupted for {stall_cycles} cycles)")
        });
        self.sim.delay(stall_cycles).await;
        self.mark(Span::End, mark::STALL, stall_cycles, 0, || "(back)".to_string());
    }

    /// `cpu_relax()` in a spin loop.
    pub async fn cpu_relax(&self) {
        self.work(self.host.costs.cpu_relax).await;
    }

    /// `cond_resched()` with nothing else to run.
    pub async fn cond_resched(&self) {
        self.work(self.host.costs.cond_resched).await;
    }

    pub fn preempt_disable(&self) {
        self.sim.with(|engine| engine.cpu_mut(self.id).preempt_count += 1);
    }

    pub fn preempt_enable(&self) {
        self.sim.with(|engine| {
            let state = engine.cpu_mut(self.id);
            assert!(state.preempt_count > 0, "preempt_enable() without preempt_disable() on {}", self.id);
            state.preempt_count -= 1;
        });
    }

    pub fn preempt_count(&self) -> u32 {
        self.sim.with(|engine| engine.cpu(self.id).preempt_count)
    }

    /// `local_irq_save()`: returns whether IRQs were on.
    pub fn local_irq_save(&self) -> bool {
        self.sim.with(|engine| std::mem::replace(&mut engine.cpu_mut(self.id).irqs_enabled, false))
    }

    /// `local_irq_restore()`.
    pub fn local_irq_restore(&self, irqs_were_enabled: bool) {
        self.sim.with(|engine| engine.cpu_mut(self.id).irqs_enabled = irqs_were_enabled);
    }

    /// `WARN_ON()` / `KVM_BUG_ON()` / an error print on an unexpected status: a finding.
    /// The run ends with `warn` once this task next waits; the algorithm carries on until then.
    pub fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        self.sim.with(|engine| {
            let text = message.clone();
            engine.mark(Span::Instant, mark::WARN, 0, 0, || format!("WARN: {text}"));
            let what = format!("{}: {message}", self.id);
            engine.stop(Outcome::new(OutcomeKind::Warn, what, vec![self.task]));
        });
    }

    /// Records a coverage feature (`cover::*`); nothing when the run does not record coverage.
    pub fn cover(&self, code: u32, a: u64, b: u64) {
        self.sim.with(|engine| engine.cover(code, a, b));
    }

    /// A trace mark of this task.
    pub fn mark(&self, span: Span, code: u32, a: u64, b: u64, text: impl FnOnce() -> String) {
        self.sim.with(|engine| engine.mark(span, code, a, b, text));
    }

    /// Declares progress to the watchdog (a step of the task completed).
    pub fn progress(&self) {
        self.sim.with(|engine| engine.progress());
        self.host.stats.borrow_mut().since_progress.remove(&self.id.0);
    }
}
