//! `rwlock_t`: x86 queued rwlock. Readers share; a writer excludes everyone; waiters queue
//! FIFO, so a reader arriving behind a waiting writer waits too. Both modes disable
//! preemption and spin.

use sim_core::{Mode, ResourceId, WaitKind};

use super::cpu::Cpu;

/// The class of every `rwlock_t`, at one address: `RwLock::new` is generic, and each of its
/// copies would have a literal of its own, which the engine's class lookup (by address
/// first) would then find only by its bytes.
static CLASS: &str = "rwlock";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RwLock {
    pub resource: ResourceId,
}

impl RwLock {
    pub fn new(sim: &sim_core::Sim, name: impl Into<sim_core::Name>, handoff_cycles: u64) -> RwLock {
        let name = name.into();
        RwLock { resource: sim.with(|engine| engine.new_resource(name, CLASS, handoff_cycles)) }
    }
}

/// `read_lock()`.
pub async fn read_lock(cpu: &Cpu, lock: RwLock) {
    cpu.maybe_stall().await;
    cpu.preempt_disable();
    cpu.sim.acquire(lock.resource, Mode::Shared, WaitKind::Spin).await;
    cpu.work(cpu.host().costs.rwlock).await;
}

/// `read_unlock()`.
pub fn read_unlock(cpu: &Cpu, lock: RwLock) {
    cpu.sim.release(lock.resource);
    cpu.preempt_enable();
}

/// `write_lock()`.
pub async fn write_lock(cpu: &Cpu, lock: RwLock) {
    cpu.maybe_stall().await;
    cpu.preempt_disable();
    cpu.sim.acquire(lock.resource, Mode::Exclusive, WaitKind::Spin).await;
    cpu.work(cpu.host().costs.rwlock).await;
}

/// `write_unlock()`.
pub fn write_unlock(cpu: &Cpu, lock: RwLock) {
    cpu.sim.release(lock.resource);
    cpu.preempt_enable();
}

/// `cond_resched_rwlock_write()`: with `lock` held for write, gives it up and the CPU a
/// moment when another CPU waits for the lock (`rwlock_needbreak()`) or another task for this
/// CPU (`need_resched()`), then takes it again. True when it did.
pub async fn cond_resched_rwlock_write(cpu: &Cpu, lock: RwLock) -> bool {
    let needbreak = cpu.sim.with(|engine| engine.resource_contended(lock.resource) || engine.need_resched());
    if !needbreak {
        return false;
    }
    write_unlock(cpu, lock);
    cpu.cond_resched().await;
    write_lock(cpu, lock).await;
    true
}
