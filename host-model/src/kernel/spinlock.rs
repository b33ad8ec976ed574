//! `raw_spinlock_t` and `spinlock_t` (non-RT): queued and FIFO like qspinlock; a waiter
//! spins on its CPU with preemption off; the next holder runs after a cache-line hand-off.

use sim_core::{Mode, ResourceId, WaitKind};

use super::cpu::Cpu;

/// A spinning lock. `spinlock_t` and `raw_spinlock_t` are the same on non-RT kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spinlock {
    pub resource: ResourceId,
}

impl Spinlock {
    /// Creates the lock in the engine; `name` is what reports and tables show.
    pub fn new(sim: &sim_core::Sim, name: &str, handoff_cycles: u64) -> Spinlock {
        let resource = sim.with(|engine| engine.new_resource(name, "spinlock", handoff_cycles));
        Spinlock { resource }
    }

    /// A `raw_spinlock_t` (it spins even on PREEMPT_RT; taken with IRQs off).
    pub fn new_raw(sim: &sim_core::Sim, name: &str, handoff_cycles: u64) -> Spinlock {
        let resource = sim.with(|engine| engine.new_resource(name, "raw_spinlock", handoff_cycles));
        Spinlock { resource }
    }
}

/// `spin_lock()`: disables preemption, then spins until the lock is ours.
pub async fn spin_lock(cpu: &Cpu, lock: Spinlock) {
    cpu.maybe_stall().await;
    cpu.preempt_disable();
    cpu.sim.acquire(lock.resource, Mode::Exclusive, WaitKind::Spin).await;
    cpu.work(cpu.host().costs.spin_lock).await;
}

/// `spin_unlock()`.
pub fn spin_unlock(cpu: &Cpu, lock: Spinlock) {
    cpu.sim.release(lock.resource);
    cpu.preempt_enable();
}

/// `raw_spin_lock_irqsave()`: returns the saved IRQ state for the restore.
pub async fn raw_spin_lock_irqsave(cpu: &Cpu, lock: Spinlock) -> bool {
    let flags = cpu.local_irq_save();
    spin_lock(cpu, lock).await;
    flags
}

/// `raw_spin_unlock_irqrestore()`.
pub fn raw_spin_unlock_irqrestore(cpu: &Cpu, lock: Spinlock, flags: bool) {
    spin_unlock(cpu, lock);
    cpu.local_irq_restore(flags);
}
