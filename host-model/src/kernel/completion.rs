//! `struct completion` and the cross-CPU calls built on it: `smp_call_on_cpu()` runs a
//! function in a kworker on another CPU and sleeps until it is done.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use sim_core::{CpuId, TaskId, TaskPriority, WaitKind};

use super::cpu::Cpu;

#[derive(Default)]
pub struct Completion {
    done: Cell<bool>,
    waiters: RefCell<Vec<TaskId>>,
}

impl Completion {
    /// `wait_for_completion()`: sleeps until `complete()`.
    pub async fn wait(&self, cpu: &Cpu, what: &'static str) {
        while !self.done.get() {
            self.waiters.borrow_mut().push(cpu.task);
            cpu.sim.park(WaitKind::Sleep, what).await;
        }
    }

    /// `complete_all()`.
    pub fn complete(&self, cpu: &Cpu) {
        self.done.set(true);
        for waiter in self.waiters.borrow_mut().drain(..) {
            cpu.sim.with(|engine| engine.unpark(waiter, 0));
        }
    }
}

/// A function run on another CPU, given that CPU's `Cpu`.
pub type OnCpu<T> = Rc<dyn Fn(Cpu) -> Pin<Box<dyn Future<Output = T>>>>;

/// Runs `function` in a new task on `target` (a kworker, or a stopper with `priority`) and
/// returns its handle and the cell its result lands in; `done` completes when it returns.
pub fn spawn_on_cpu<T: 'static>(
    cpu: &Cpu,
    target: CpuId,
    priority: TaskPriority,
    name: String,
    function: OnCpu<T>,
    done: Rc<Completion>,
) -> Rc<RefCell<Option<T>>> {
    let result = Rc::new(RefCell::new(None));
    let slot = result.clone();
    let host = cpu.host_rc();
    let sim = cpu.sim.clone();
    let future = async move {
        let task = sim.with(|engine| engine.current_task());
        let target_cpu = Cpu::new(sim.clone(), target, task, host);
        let value = function(target_cpu.clone()).await;
        *slot.borrow_mut() = Some(value);
        done.complete(&target_cpu);
    };
    cpu.sim.spawn(target, priority, name, future);
    result
}

/// `smp_call_on_cpu()`: runs `function` on `target` in a kworker and sleeps until it is done.
pub async fn smp_call_on_cpu<T: 'static>(cpu: &Cpu, target: CpuId, function: OnCpu<T>) -> T {
    cpu.work(cpu.host().costs.smp_call_on_cpu).await;
    let done = Rc::new(Completion::default());
    let name = format!("kworker/{}", target.0);
    let result = spawn_on_cpu(cpu, target, TaskPriority::Normal, name, function, done.clone());
    done.wait(cpu, "smp_call_on_cpu()").await;
    result.borrow_mut().take().expect("the completion fires after the result is stored")
}

/// `on_each_cpu()` / `smp_call_function_many()`: runs `function` on every online CPU in
/// interrupt context (an IPI: it interrupts whatever runs there as soon as IRQs are on, and
/// waits while they are off), and waits for all of them. The handler runs with IRQs off.
pub async fn on_each_cpu<T: 'static>(cpu: &Cpu, function: OnCpu<T>) -> Vec<T> {
    let online = cpu.sim.with(|engine| engine.online_cpus());
    let mut results = Vec::new();
    let mut dones = Vec::new();
    for target in online {
        let done = Rc::new(Completion::default());
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
        done.wait(cpu, "the IPI handlers (on_each_cpu)").await;
    }
    results
        .into_iter()
        .map(|result| result.borrow_mut().take().expect("each handler stored its result"))
        .collect()
}
