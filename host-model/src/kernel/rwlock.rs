//! `rwlock_t`: x86 queued rwlock. Readers share; a writer excludes everyone; waiters queue
//! FIFO, so a reader arriving behind a waiting writer waits too. Both modes disable
//! preemption and spin.

use sim_core::{Mode, ResourceId, WaitKind};

use super::cpu::Cpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RwLock {
    pub resource: ResourceId,
}

impl RwLock {
    pub fn new(sim: &sim_core::Sim, name: impl Into<sim_core::Name>, handoff_cycles: u64) -> RwLock {
        let name = name.into();
        RwLock { resource: sim.with(|engine| engine.new_resource(name, "rwlock", handoff_cycles)) }
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
