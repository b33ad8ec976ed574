//! `stop_machine()` and `stop_machine_cpuslocked()` with `multi_cpu_stop()` semantics.
//!
//! The caller sleeps while a stopper (highest-priority RT) is queued on every online CPU.
//! A stopper gets its CPU only where the running task can be preempted — so a CPU inside
//! a preempt-disabled section (a spinlock, a SEAMCALL) holds everyone up. The stoppers then
//! walk PREPARE -> DISABLE_IRQ -> RUN -> EXIT in lock step, each state acked by all, and run
//! the function on every CPU with IRQs off.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use sim_core::{TaskId, TaskPriority, WaitId, WaitKind};

use super::Errno;
use super::completion::{Completion, spawn_future_on_cpu};
use super::cpu::Cpu;
use super::lockdep::{lockdep_assert_cpus_held, lockdep_assert_irqs_disabled, might_sleep};
use super::mutex::{RwSem, down_read, up_read};

/// A lock-step barrier the stoppers spin on (`ack_state()` in multi_cpu_stop). Its parties
/// are the stoppers, so a stopper spinning here waits for the ones that have not arrived.
pub struct SpinBarrier {
    parties: u32,
    arrived: Cell<u32>,
    waiters: RefCell<Vec<TaskId>>,
    wait: WaitId,
}

impl SpinBarrier {
    pub fn new(cpu: &Cpu, parties: u32) -> SpinBarrier {
        let wait = cpu.sim.with(|engine| engine.new_wait());
        SpinBarrier { parties, arrived: Cell::new(0), waiters: RefCell::new(Vec::new()), wait }
    }

    /// `task` is one of the parties.
    pub fn add_party(&self, cpu: &Cpu, task: TaskId) {
        cpu.sim.with(|engine| engine.wait_add_party(self.wait, task));
    }

    /// Arrives and spins until all parties have; the last releases the others.
    pub async fn arrive_and_wait(&self, cpu: &Cpu, what: &'static str) {
        cpu.work(cpu.host().costs.atomic).await;
        self.arrived.set(self.arrived.get() + 1);
        cpu.sim.with(|engine| {
            if let Some(party) = engine.wait_party_of(self.wait, cpu.task) {
                engine.wait_party_done(self.wait, party);
            }
        });
        if self.arrived.get() == self.parties {
            self.arrived.set(0);
            cpu.sim.with(|engine| engine.wait_reset(self.wait));
            let handoff = cpu.host().costs.spin_handoff;
            for waiter in self.waiters.borrow_mut().drain(..) {
                cpu.sim.with(|engine| engine.unpark(waiter, handoff));
            }
            return;
        }
        self.waiters.borrow_mut().push(cpu.task);
        cpu.sim.park_on(WaitKind::Spin, what, self.wait).await;
    }
}

/// The states of `multi_cpu_stop()`, in order.
const MULTI_STOP_STATES: [&str; 3] = ["MULTI_STOP_PREPARE", "MULTI_STOP_DISABLE_IRQ", "MULTI_STOP_RUN"];

/// `multi_cpu_stop()` on one CPU: lock step through the states, the function in RUN.
async fn multi_cpu_stop<F: Future<Output = i32>>(
    cpu: Cpu,
    barrier: Rc<SpinBarrier>,
    function: impl Fn(Cpu) -> F,
) -> i32 {
    let mut err = 0;
    let mut irqs_were_enabled = true;
    for state in MULTI_STOP_STATES {
        match state {
            "MULTI_STOP_DISABLE_IRQ" => irqs_were_enabled = cpu.local_irq_save(),
            "MULTI_STOP_RUN" => {
                lockdep_assert_irqs_disabled(&cpu, "multi_cpu_stop");
                err = function(cpu.clone()).await
            }
            _ => {}
        }
        cpu.progress();
        barrier.arrive_and_wait(&cpu, "the other stoppers (multi_cpu_stop)").await;
    }
    cpu.local_irq_restore(irqs_were_enabled);
    err
}

/// `stop_machine_cpuslocked()`: runs `function` on every online CPU with IRQs off, while
/// nothing else runs anywhere. The caller must hold `cpus_read_lock()`. `function` makes
/// each CPU's future, held in its stopper's own rather than boxed apart (an
/// [`OnCpu`](super::completion::OnCpu) `f` passes as `move |on| f(on)`).
///
/// Kernel: kernel/stop_machine.c.
pub async fn stop_machine_cpuslocked<F: Future<Output = i32> + 'static>(
    cpu: &Cpu,
    hotplug_lock: RwSem,
    function: impl Fn(Cpu) -> F + Clone + 'static,
) -> Result<(), i32> {
    // lockdep_assert_cpus_held(): the online mask must not change under us.
    lockdep_assert_cpus_held(cpu, "stop_machine_cpuslocked");
    might_sleep(cpu, "stop_machine_cpuslocked");
    let _ = hotplug_lock;
    let online = cpu.sim.with(|engine| engine.online_cpus());
    let costs = &cpu.host().costs;
    cpu.work(costs.stop_machine_base + costs.stop_machine_per_cpu * online.len() as u64).await;
    let barrier = Rc::new(SpinBarrier::new(cpu, online.len() as u32));
    let mut results = Vec::with_capacity(online.len());
    let mut dones = Vec::with_capacity(online.len());
    for &target in &online {
        let done = Rc::new(Completion::new(cpu));
        let stopper_barrier = barrier.clone();
        let function = function.clone();
        results.push(spawn_future_on_cpu(
            cpu,
            target,
            TaskPriority::Stopper,
            format!("migration/{}", target.0),
            move |on| multi_cpu_stop(on, stopper_barrier, function),
            done.clone(),
        ));
        dones.push(done);
    }
    for done in &dones {
        barrier.add_party(cpu, done.completer().expect("spawn_on_cpu names the stopper"));
    }
    for done in &dones {
        done.wait(cpu, "the stoppers (stop_machine)").await;
    }
    let first_error = results.iter().filter_map(|result| *result.borrow()).find(|&ret| ret != 0);
    match first_error {
        Some(ret) => Err(ret),
        None => Ok(()),
    }
}

/// `stop_machine()`: takes `cpus_read_lock()` itself around `stop_machine_cpuslocked()`.
pub async fn stop_machine<F: Future<Output = i32> + 'static>(
    cpu: &Cpu,
    hotplug_lock: RwSem,
    function: impl Fn(Cpu) -> F + Clone + 'static,
) -> Result<(), i32> {
    might_sleep(cpu, "stop_machine");
    down_read(cpu, hotplug_lock).await;
    let result = stop_machine_cpuslocked(cpu, hotplug_lock, function).await;
    up_read(cpu, hotplug_lock);
    result
}

/// Maps a stop_machine() error code back to an errno for callers that return one.
pub fn errno_of(ret: i32) -> Errno {
    [Errno::EBUSY, Errno::ENOMEM, Errno::ENODEV, Errno::EINVAL, Errno::EACCES]
        .into_iter()
        .find(|errno| errno.code() == -ret)
        .unwrap_or(Errno::EIO)
}
