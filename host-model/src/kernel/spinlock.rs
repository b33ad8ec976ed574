//! `raw_spinlock_t` and `spinlock_t` (non-RT): queued and FIFO like qspinlock; a waiter
//! spins on its CPU with preemption off; the next holder runs after a cache-line hand-off.

use sim_core::{Mode, ResourceId, WaitKind};

use super::cpu::Cpu;

/// A spinning lock. `spinlock_t` and `raw_spinlock_t` behave the same on non-RT kernels;
/// the kind says which one the kernel declares, and so which calls take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spinlock {
    pub resource: ResourceId,
    pub kind: SpinlockKind,
}

/// Which kernel type a [`Spinlock`] is; its resource class, which tables name calls by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinlockKind {
    /// `spinlock_t`, taken with `spin_lock()`.
    Spinlock,
    /// `raw_spinlock_t`, taken with `raw_spin_lock()`.
    Raw,
    /// `raw_spinlock_t`, taken with `raw_spin_lock_irqsave()` wherever this model takes one.
    RawIrqsave,
}

impl SpinlockKind {
    /// The resource class: `spinlock`, `raw_spinlock` or `raw_spinlock_irqsave`.
    pub const fn class(self) -> &'static str {
        match self {
            SpinlockKind::Spinlock => "spinlock",
            SpinlockKind::Raw => "raw_spinlock",
            SpinlockKind::RawIrqsave => "raw_spinlock_irqsave",
        }
    }
}

impl Spinlock {
    /// Creates a `spinlock_t` in the engine; `name` is what reports and tables show.
    pub fn new(
        cpu_or_host_sim: &sim_core::Sim,
        name: impl Into<sim_core::Name>,
        handoff_cycles: u64,
    ) -> Spinlock {
        Spinlock::of_kind(cpu_or_host_sim, name, handoff_cycles, SpinlockKind::Spinlock)
    }

    /// Creates a `raw_spinlock_t` taken with `raw_spin_lock()` (it spins even on PREEMPT_RT).
    pub fn new_raw(
        cpu_or_host_sim: &sim_core::Sim,
        name: impl Into<sim_core::Name>,
        handoff_cycles: u64,
    ) -> Spinlock {
        Spinlock::of_kind(cpu_or_host_sim, name, handoff_cycles, SpinlockKind::Raw)
    }

    /// Creates a `raw_spinlock_t` taken with `raw_spin_lock_irqsave()`.
    pub fn new_raw_irqsave(
        cpu_or_host_sim: &sim_core::Sim,
        name: impl Into<sim_core::Name>,
        handoff_cycles: u64,
    ) -> Spinlock {
        Spinlock::of_kind(cpu_or_host_sim, name, handoff_cycles, SpinlockKind::RawIrqsave)
    }

    fn of_kind(
        sim: &sim_core::Sim,
        name: impl Into<sim_core::Name>,
        handoff_cycles: u64,
        kind: SpinlockKind,
    ) -> Spinlock {
        let name = name.into();
        let resource = sim.with(|engine| engine.new_resource(name, kind.class(), handoff_cycles));
        Spinlock { resource, kind }
    }
}

/// `spin_lock()`: disables preemption, then spins until the lock is ours.
pub async fn spin_lock(cpu: &Cpu, lock: Spinlock) {
    assert_eq!(lock.kind, SpinlockKind::Spinlock, "spin_lock() on a raw_spinlock_t");
    spin_acquire(cpu, lock).await;
}

async fn spin_acquire(cpu: &Cpu, lock: Spinlock) {
    cpu.maybe_stall().await;
    cpu.preempt_disable();
    cpu.sim.acquire(lock.resource, Mode::Exclusive, WaitKind::Spin).await;
    cpu.work(cpu.host().costs.spin_lock).await;
}

/// `spin_unlock()`.
pub fn spin_unlock(cpu: &Cpu, lock: Spinlock) {
    assert_eq!(lock.kind, SpinlockKind::Spinlock, "spin_unlock() on a raw_spinlock_t");
    spin_unlock_any(cpu, lock);
}

fn spin_unlock_any(cpu: &Cpu, lock: Spinlock) {
    cpu.sim.release(lock.resource);
    cpu.preempt_enable();
}

/// `raw_spin_lock()`: `spin_lock()` of a `raw_spinlock_t`.
pub async fn raw_spin_lock(cpu: &Cpu, lock: Spinlock) {
    assert_eq!(lock.kind, SpinlockKind::Raw, "raw_spin_lock() on another kind of lock");
    spin_acquire(cpu, lock).await;
}

/// `raw_spin_unlock()`.
pub fn raw_spin_unlock(cpu: &Cpu, lock: Spinlock) {
    spin_unlock_any(cpu, lock);
}

/// `raw_spin_lock_irqsave()`: returns the saved IRQ state for the restore.
pub async fn raw_spin_lock_irqsave(cpu: &Cpu, lock: Spinlock) -> bool {
    assert_eq!(lock.kind, SpinlockKind::RawIrqsave, "raw_spin_lock_irqsave() on a spinlock_t");
    let flags = cpu.local_irq_save();
    spin_acquire(cpu, lock).await;
    flags
}

/// `raw_spin_unlock_irqrestore()`.
pub fn raw_spin_unlock_irqrestore(cpu: &Cpu, lock: Spinlock, flags: bool) {
    spin_unlock_any(cpu, lock);
    cpu.local_irq_restore(flags);
}
