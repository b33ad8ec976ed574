//! `struct completion` and the cross-CPU calls built on it: `smp_call_on_cpu()` runs a
//! function in a kworker on another CPU and sleeps until it is done; `on_each_cpu()` runs
//! it as an IPI on every online CPU, `smp_call_function_many()` on a mask of other CPUs.
//!
//! A completion names the task that will complete it, when that is known (the kworker or
//! handler spawned for it), so a waiter is an edge of the wait-for graph to that task.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use sim_core::{CpuId, Span, TaskId, TaskPriority, WaitId, WaitKind};

use super::cpu::{Cpu, mark, stall};
use super::lockdep::might_sleep;

pub struct Completion {
    done: Cell<bool>,
    waiters: RefCell<Vec<TaskId>>,
    /// The wait object whose party is the completer.
    wait: WaitId,
    /// The completer's party index and task.
    completer: Cell<Option<(usize, TaskId)>>,
}

impl Completion {
    /// `init_completion()`.
    pub fn new(cpu: &Cpu) -> Completion {
        let wait = cpu.sim.with(|engine| engine.new_wait());
        Completion {
            done: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
            wait,
            completer: Cell::new(None),
        }
    }

    /// `task` is the one that will call `complete()`.
    pub fn expect_completer(&self, cpu: &Cpu, task: TaskId) {
        let party = cpu.sim.with(|engine| engine.wait_add_party(self.wait, task));
        self.completer.set(Some((party, task)));
    }

    /// The task that will complete it, when known.
    pub fn completer(&self) -> Option<TaskId> {
        self.completer.get().map(|(_, task)| task)
    }

    /// `wait_for_completion()`: sleeps until `complete()`.
    pub async fn wait(&self, cpu: &Cpu, what: &'static str) {
        might_sleep(cpu, "wait_for_completion");
        self.wait_until_done(cpu, what).await;
    }

    /// Waits until `complete()` without the sleep check: the `csd_lock_wait()` of an IPI
    /// sender, modelled as giving the CPU up so the local handler can run.
    async fn wait_until_done(&self, cpu: &Cpu, what: &'static str) {
        while !self.done.get() {
            self.waiters.borrow_mut().push(cpu.task);
            cpu.sim.park_on(WaitKind::Sleep, what, self.wait).await;
        }
    }

    /// Spins until `complete()`: the sender of an IPI in `csd_lock_wait()`, which keeps its CPU.
    /// It spins with IRQs on: an IPI that reaches its CPU meanwhile runs, and it spins again.
    async fn spin_until_done(&self, cpu: &Cpu, what: &'static str) {
        while !self.done.get() {
            if cpu.sim.with(|engine| engine.yield_target()) == Some(TaskPriority::Irq) {
                cpu.mark(Span::Instant, mark::STALL, 0, stall::IRQ, || "(IPI)".to_string());
                cpu.sim.yield_cpu().await;
                continue;
            }
            self.waiters.borrow_mut().push(cpu.task);
            cpu.sim.spin_on_irqs_on(what, self.wait).await;
        }
    }

    /// `complete_all()`.
    pub fn complete(&self, cpu: &Cpu) {
        self.done.set(true);
        if let Some((party, _)) = self.completer.get() {
            cpu.sim.with(|engine| engine.wait_party_done(self.wait, party));
        }
        for waiter in self.waiters.borrow_mut().drain(..) {
            cpu.sim.with(|engine| engine.unpark(waiter, 0));
        }
    }
}

/// A function run on another CPU, given that CPU's `Cpu`.
pub type OnCpu<T> = Rc<dyn Fn(Cpu) -> Pin<Box<dyn Future<Output = T>>>>;

/// Runs `function` in a new task on `target` (a kworker, or a stopper with `priority`) and
/// returns the cell its result lands in; `done` completes when it returns, and names the
/// new task as its completer.
pub fn spawn_on_cpu<T: 'static>(
    cpu: &Cpu,
    target: CpuId,
    priority: TaskPriority,
    name: String,
    function: OnCpu<T>,
    done: Rc<Completion>,
) -> Rc<RefCell<Option<T>>> {
    spawn_future_on_cpu(cpu, target, priority, name, move |on| function(on), done)
}

/// [`spawn_on_cpu`] of a future made by `make`, held in the task's own future rather than
/// boxed apart: a stopper on each of 4096 CPUs polls through one allocation less an event.
pub fn spawn_future_on_cpu<T: 'static, F: Future<Output = T> + 'static>(
    cpu: &Cpu,
    target: CpuId,
    priority: TaskPriority,
    name: String,
    make: impl FnOnce(Cpu) -> F + 'static,
    done: Rc<Completion>,
) -> Rc<RefCell<Option<T>>> {
    let result = Rc::new(RefCell::new(None));
    let slot = result.clone();
    let host = cpu.host_rc();
    let sim = cpu.sim.clone();
    let completion = done.clone();
    let future = async move {
        let task = sim.with(|engine| engine.current_task());
        let target_cpu = Cpu::new(sim.clone(), target, task, host);
        let value = make(target_cpu.clone()).await;
        *slot.borrow_mut() = Some(value);
        completion.complete(&target_cpu);
    };
    let task = cpu.sim.spawn(target, priority, name, future);
    done.expect_completer(cpu, task);
    result
}

/// `smp_call_on_cpu()`: runs `function` on `target` in a kworker and sleeps until it is done.
pub async fn smp_call_on_cpu<T: 'static>(cpu: &Cpu, target: CpuId, function: OnCpu<T>) -> T {
    might_sleep(cpu, "smp_call_on_cpu");
    cpu.work(cpu.host().costs.smp_call_on_cpu).await;
    let done = Rc::new(Completion::new(cpu));
    let name = format!("kworker/{}", target.0);
    let result = spawn_on_cpu(cpu, target, TaskPriority::Normal, name, function, done.clone());
    done.wait(cpu, "smp_call_on_cpu()").await;
    result.borrow_mut().take().expect("the completion fires after the result is stored")
}

/// `on_each_cpu()`: runs `function` on every online CPU in
/// interrupt context (an IPI: it interrupts whatever runs there as soon as IRQs are on, and
/// waits while they are off), and waits for all of them. The handler runs with IRQs off.
pub async fn on_each_cpu<T: 'static>(cpu: &Cpu, function: OnCpu<T>) -> Vec<T> {
    let online = cpu.sim.with(|engine| engine.online_cpus());
    let mut results = Vec::new();
    let mut dones = Vec::new();
    for target in online {
        let done = Rc::new(Completion::new(cpu));
        let handler = function.clone();
        let in_irq: OnCpu<T> = Rc::new(move |on: Cpu| {
            let handler = handler.clone();
            Box::pin(async move {
                let flags = on.local_irq_save();
                let value = handler(on.clone()).await;
                on.local_irq_restore(flags);
                value
            })
        });
        let name = format!("ipi/{}", target.0);
        results.push(spawn_on_cpu(cpu, target, TaskPriority::Irq, name, in_irq, done.clone()));
        dones.push(done);
    }
    for done in &dones {
        done.wait_until_done(cpu, "the IPI handlers (on_each_cpu)").await;
    }
    results
        .into_iter()
        .map(|result| result.borrow_mut().take().expect("each handler stored its result"))
        .collect()
}

/// The IPI handler for `function` on `target`, run with IRQs off.
fn spawn_ipi<T: 'static>(
    cpu: &Cpu,
    target: CpuId,
    function: &OnCpu<T>,
) -> (Rc<RefCell<Option<T>>>, Rc<Completion>) {
    let done = Rc::new(Completion::new(cpu));
    let handler = function.clone();
    let in_irq: OnCpu<T> = Rc::new(move |on: Cpu| {
        let handler = handler.clone();
        Box::pin(async move {
            let flags = on.local_irq_save();
            let value = handler(on.clone()).await;
            on.local_irq_restore(flags);
            value
        })
    });
    let name = format!("ipi/{}", target.0);
    (spawn_on_cpu(cpu, target, TaskPriority::Irq, name, in_irq, done.clone()), done)
}

/// `smp_call_function_many(mask, func, info, wait)`: runs `function` as an IPI on each CPU of
/// `targets` (never the caller's own), and with `wait` spins until all of them ran it
/// (`csd_lock_wait()`, preemption as the caller has it). An IPI to a CPU with IRQs off waits
/// until they are on; to a CPU running a guest, it makes the guest exit first.
///
/// Kernel: `smp_call_function_many()`, kernel/smp.c.
pub async fn smp_call_function_many<T: 'static>(
    cpu: &Cpu,
    targets: &[CpuId],
    function: OnCpu<T>,
    wait: bool,
) -> Vec<Option<T>> {
    let mut results = Vec::new();
    let mut dones = Vec::new();
    for &target in targets {
        assert_ne!(target, cpu.id, "smp_call_function_many: the mask never holds the caller's CPU");
        let (result, done) = spawn_ipi(cpu, target, &function);
        results.push(result);
        dones.push(done);
    }
    if !wait {
        return results.iter().map(|_| None).collect();
    }
    for done in &dones {
        done.spin_until_done(cpu, "the IPI handlers (smp_call_function_many)").await;
    }
    results.into_iter().map(|result| result.borrow_mut().take()).collect()
}
