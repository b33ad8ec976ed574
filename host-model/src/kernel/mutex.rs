//! `struct mutex`, `rw_semaphore` and `percpu_rw_semaphore`: sleeping locks, FIFO.
//!
//! The percpu rwsem is `cpu_hotplug_lock`: `cpus_read_lock()` may nest while no writer
//! waits; once a hotplug writer is pending, a nested read queues behind it and the holder
//! deadlocks (spec/host-algorithms.md §0, H0, U3). `rw_semaphore` behaves the same for
//! `down_read()` nesting, which is what makes U6's `update_rwsem` hang.

use sim_core::{Mode, ResourceId, WaitKind};

use super::cpu::Cpu;
use super::lockdep::might_sleep;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mutex {
    pub resource: ResourceId,
}

impl Mutex {
    pub fn new(sim: &sim_core::Sim, name: impl Into<sim_core::Name>) -> Mutex {
        let name = name.into();
        Mutex { resource: sim.with(|engine| engine.new_resource(name, "mutex", 0)) }
    }

    /// A mutex of its own lockdep class `class` (`mutex_init()` at its own site, as
    /// `kvm->lock` or `vcpu->mutex`), so lockdep orders it apart from other mutexes.
    pub fn with_class(sim: &sim_core::Sim, name: impl Into<sim_core::Name>, class: &'static str) -> Mutex {
        let mutex = Mutex::new(sim, name);
        sim.with(|engine| engine.set_lockdep_class(mutex.resource, class));
        mutex
    }
}

/// `mutex_lock()`: may sleep; process context only.
pub async fn mutex_lock(cpu: &Cpu, lock: Mutex) {
    might_sleep(cpu, "mutex_lock");
    cpu.maybe_stall().await;
    cpu.sim.acquire(lock.resource, Mode::Exclusive, WaitKind::Sleep).await;
}

/// `mutex_unlock()`.
pub fn mutex_unlock(cpu: &Cpu, lock: Mutex) {
    cpu.sim.release(lock.resource);
}

/// A reader/writer semaphore; `percpu` only changes the name of its class in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RwSem {
    pub resource: ResourceId,
}

impl RwSem {
    pub fn new(sim: &sim_core::Sim, name: impl Into<sim_core::Name>, percpu: bool) -> RwSem {
        let name = name.into();
        let class = if percpu { "percpu_rwsem" } else { "rwsem" };
        let resource = sim.with(|engine| {
            let resource = engine.new_resource(name, class, 0);
            engine.set_recursive_shared(resource);
            resource
        });
        RwSem { resource }
    }
}

/// `down_read()` / `cpus_read_lock()`.
pub async fn down_read(cpu: &Cpu, sem: RwSem) {
    might_sleep(cpu, "down_read");
    cpu.maybe_stall().await;
    cpu.sim.acquire(sem.resource, Mode::Shared, WaitKind::Sleep).await;
    cpu.work(cpu.host().costs.cpus_read_lock).await;
}

/// `up_read()` / `cpus_read_unlock()`.
pub fn up_read(cpu: &Cpu, sem: RwSem) {
    cpu.sim.release(sem.resource);
}

/// `down_write()` / `cpus_write_lock()`.
pub async fn down_write(cpu: &Cpu, sem: RwSem, cost_cycles: u64) {
    might_sleep(cpu, "down_write");
    cpu.maybe_stall().await;
    cpu.sim.acquire(sem.resource, Mode::Exclusive, WaitKind::Sleep).await;
    cpu.work(cost_cycles).await;
}

/// `up_write()` / `cpus_write_unlock()`.
pub fn up_write(cpu: &Cpu, sem: RwSem) {
    cpu.sim.release(sem.resource);
}
