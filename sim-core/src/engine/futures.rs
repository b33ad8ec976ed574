//! The `Sim` handle simulated code holds, and the futures it awaits. Each future takes the
//! engine's borrow only inside its poll.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::resources::Attempt;
use super::{Engine, Parked, TaskPriority, TaskStatus, WaitId};
use crate::resource::{Mode, Name, ResourceId, WaitKind};
use crate::{CpuId, Cycle, TaskId};

/// The handle simulated code uses to reach the engine.
#[derive(Clone)]
pub struct Sim(Rc<RefCell<Engine>>);

impl Sim {
    pub(crate) fn new(engine: Engine) -> Sim {
        Sim(Rc::new(RefCell::new(engine)))
    }

    /// Nothing else holds this engine.
    pub(crate) fn is_sole_handle(&self) -> bool {
        Rc::strong_count(&self.0) == 1 && Rc::weak_count(&self.0) == 0
    }

    /// Runs `f` with the engine borrowed. Never call it across an `.await`.
    pub fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }

    #[inline]
    pub fn now(&self) -> Cycle {
        self.0.borrow().now
    }

    /// Busy for `cycles`: the task keeps its CPU (a SEAMCALL, an atomic, `cpu_relax()`).
    #[inline]
    pub fn delay(&self, cycles: u64) -> Delay<'_> {
        Delay { sim: self, cycles, sleep: false, armed: false }
    }

    /// Sleeps for `cycles`: the CPU is free for other tasks; the watchdog does not count it.
    #[inline]
    pub fn sleep(&self, cycles: u64) -> Delay<'_> {
        Delay { sim: self, cycles, sleep: true, armed: false }
    }

    /// Busy for up to `cycles` keeping its CPU, like [`Sim::delay`], but ended early when an
    /// interrupt handler or a stopper is queued for this CPU: a guest running under VMX,
    /// which any interrupt makes exit. Resolves to true when it was cut short.
    pub fn interruptible(&self, cycles: u64) -> Interruptible {
        Interruptible { sim: self.clone(), cycles, armed: false }
    }

    /// Off its CPU for `cycles` because something else got it (a preemption): the CPU may
    /// run another task meanwhile; the task comes back first among its peers.
    pub fn preempted_for(&self, cycles: u64) -> Preempt {
        Preempt { sim: self.clone(), cycles, armed: false }
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
    /// (busy-waiting on a flag); `Sleep` gives it up. `reason` names what it waits for, and
    /// `wait`, when given, the tasks that must act for it (the wait-for graph's edges).
    pub fn park(&self, wait: WaitKind, reason: &'static str) -> Park {
        Park { sim: self.clone(), wait, reason, on: None, parked: false, irq_wakes: false }
    }

    /// `park` on a wait object: its parties that have not acted are what this task waits for.
    pub fn park_on(&self, wait: WaitKind, reason: &'static str, on: WaitId) -> Park {
        Park { sim: self.clone(), wait, reason, on: Some(on), parked: false, irq_wakes: false }
    }

    /// A `Spin` `park_on` with IRQs on: an interrupt queued for the CPU wakes the task early
    /// (the caller looks at its flag again, and yields to the handler), as a CPU spinning in
    /// `csd_lock_wait()` runs an IPI that reaches it.
    pub fn spin_on_irqs_on(&self, reason: &'static str, on: WaitId) -> Park {
        Park { sim: self.clone(), wait: WaitKind::Spin, reason, on: Some(on), parked: false, irq_wakes: true }
    }

    /// Adds a task from inside a run; it starts now.
    pub fn spawn(
        &self,
        cpu: CpuId,
        priority: TaskPriority,
        name: impl Into<Name>,
        future: impl Future<Output = ()> + 'static,
    ) -> TaskId {
        self.with(|engine| engine.spawn(cpu, priority, name, Box::pin(future)))
    }

    /// Releases `resource` held by the current task; queued waiters get it after the hand-off.
    pub fn release(&self, resource: ResourceId) {
        self.with(|engine| engine.release(resource));
    }
}

/// The future of [`Sim::delay`] and [`Sim::sleep`]. It borrows the task's `Sim`: a busy
/// delay is most of a run's events, and a clone of the handle per delay is a reference
/// count taken and dropped on each.
pub struct Delay<'a> {
    sim: &'a Sim,
    cycles: u64,
    sleep: bool,
    armed: bool,
}

impl Future for Delay<'_> {
    type Output = ();

    // Inlined into the tasks' futures (another crate): a busy delay is most of a run's events.
    #[inline]
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.armed {
            if self.sleep {
                self.sim.with(Engine::end_sleep);
            }
            return Poll::Ready(());
        }
        if self.cycles == 0 && !self.sleep {
            return Poll::Ready(());
        }
        let (cycles, sleep) = (self.cycles, self.sleep);
        let done = self.sim.with(|engine| {
            let at = engine.now.saturating_add(cycles);
            if sleep {
                engine.begin_sleep(at);
                return false;
            }
            if engine.advance_inline(at) {
                return true;
            }
            let task = engine.current_task();
            engine.schedule_wake(task, at);
            false
        });
        if done {
            return Poll::Ready(());
        }
        self.armed = true;
        Poll::Pending
    }
}

impl Engine {
    /// The current task sleeps until `at`: it gives up its CPU.
    #[cold]
    fn begin_sleep(&mut self, at: Cycle) {
        let task = self.current_task();
        self.schedule_wake(task, at);
        let state = &mut self.tasks[task.0 as usize];
        state.in_sleep = true;
        state.status = TaskStatus::Sleeping;
        self.leave_cpu(task);
    }

    /// The current task's sleep is over. An intentional sleep is idleness, not a stall: the
    /// watchdog starts over.
    #[cold]
    fn end_sleep(&mut self) {
        let task = self.current_task();
        let now = self.now;
        let state = &mut self.tasks[task.0 as usize];
        state.in_sleep = false;
        state.last_progress = now;
        let limit = self.config.watchdog_cycles;
        self.arm_watchdog(now.saturating_add(limit));
    }
}

/// The future of [`Sim::interruptible`].
pub struct Interruptible {
    sim: Sim,
    cycles: u64,
    armed: bool,
}

impl Future for Interruptible {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<bool> {
        if self.armed {
            return Poll::Ready(self.sim.with(|engine| {
                let task = engine.current_task();
                let state = &mut engine.tasks[task.0 as usize];
                state.interruptible = None;
                std::mem::replace(&mut state.interrupted, false)
            }));
        }
        let cycles = self.cycles;
        let pending = self.sim.with(|engine| {
            let task = engine.current_task();
            // An interrupt already queued for this CPU ends the period before it starts.
            if engine.interrupt_queued() {
                return false;
            }
            let at = engine.now.saturating_add(cycles);
            let seq = engine.schedule_wake(task, at);
            engine.tasks[task.0 as usize].interruptible = Some(seq);
            true
        });
        if !pending {
            return Poll::Ready(true);
        }
        self.armed = true;
        Poll::Pending
    }
}

/// The future of [`Sim::preempted_for`].
pub struct Preempt {
    sim: Sim,
    cycles: u64,
    armed: bool,
}

impl Future for Preempt {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.armed {
            return Poll::Ready(());
        }
        let cycles = self.cycles;
        self.sim.with(|engine| {
            let task = engine.current_task();
            let at = engine.now.saturating_add(cycles);
            engine.schedule_wake(task, at);
            let state = &mut engine.tasks[task.0 as usize];
            state.preempted = true;
            state.status = TaskStatus::Sleeping;
            engine.leave_cpu(task);
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
            if queued {
                // Woken by a grant: we already hold it.
                return Some(Acquired { waited_cycles: engine.take_granted_wait(resource, mode) });
            }
            match engine.attempt(resource, mode, wait) {
                Attempt::Granted => Some(Acquired { waited_cycles: 0 }),
                Attempt::Queued => None,
                Attempt::SelfDeadlock => {
                    engine.report_self_deadlock(resource, mode);
                    None
                }
            }
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
            engine.yield_now();
            true
        });
        if !yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        Poll::Pending
    }
}

/// The future of [`Sim::park`] and [`Sim::park_on`].
pub struct Park {
    sim: Sim,
    wait: WaitKind,
    reason: &'static str,
    on: Option<WaitId>,
    parked: bool,
    irq_wakes: bool,
}

impl Future for Park {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.parked {
            return Poll::Ready(());
        }
        let (wait, reason, on, irq_wakes) = (self.wait, self.reason, self.on, self.irq_wakes);
        self.sim.with(|engine| {
            let task = engine.current_task();
            engine.tasks[task.0 as usize].parked = Some(Parked { reason, wait: on, irq_wakes });
            if wait == WaitKind::Sleep {
                engine.tasks[task.0 as usize].status = TaskStatus::Sleeping;
                engine.leave_cpu(task);
            }
        });
        self.parked = true;
        Poll::Pending
    }
}
