//! Kernel primitives with kernel names and semantics, built on sim-core resources.
//!
//! - `arch`: the hardware without SEAMCALL: VMXON/VMXOFF, LP reset, package topology.
//! - `cpu`: `Cpu`, the handle a host task runs with (preemption, IRQs, costs, WARN).
//! - `lockdep`: the kernel's context assertions (`lockdep_assert_held()`, `might_sleep()`).
//! - `spinlock`: `raw_spinlock_t` / `spinlock_t`: queued, FIFO, spins in simulated time.
//! - `rwlock`: `rwlock_t`: queued reader/writer spinning lock.
//! - `atomic`: `atomic_t` operations as awaited steps, including `atomic_dec_and_lock`.
//! - `mutex`: `struct mutex`, `rw_semaphore`, the percpu rwsem `cpu_hotplug_lock`.
//! - `completion`: `struct completion`, `smp_call_on_cpu()`.
//! - `stop_machine`: `stop_machine()` / `stop_machine_cpuslocked()` with `multi_cpu_stop()`.
//! - `cpuhp`: the online mask, `cpu_up()` / `cpu_down()`, dynamic cpuhp states.
//! - `page_alloc`: `alloc_page()` / `__free_page()` over simulated memory.
//! - `random`: `get_random_u32_below()`, drawn through the run's chooser.
//! - `srcu`: sleepable RCU (`srcu_read_lock()`, `synchronize_srcu()`), `kvm->srcu`.
pub mod arch;
pub mod atomic;
pub mod completion;
pub mod cpu;
pub mod cpuhp;
pub mod lockdep;
pub mod mutex;
pub mod page_alloc;
pub mod random;
pub mod rwlock;
pub mod spinlock;
pub mod srcu;
pub mod stop_machine;

/// Kernel error numbers as host functions return them (`-EBUSY` is `Err(Errno::EBUSY)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Errno {
    #[error("EBUSY")]
    EBUSY,
    #[error("EIO")]
    EIO,
    #[error("ENOMEM")]
    ENOMEM,
    #[error("ENODEV")]
    ENODEV,
    #[error("EINVAL")]
    EINVAL,
    #[error("EACCES")]
    EACCES,
    /// A memory fault KVM hands to userspace (`KVM_EXIT_MEMORY_FAULT`): no memslot for the GPA.
    #[error("EFAULT")]
    EFAULT,
    /// Interrupted by a signal (the VMM stopping a vCPU thread).
    #[error("EINTR")]
    EINTR,
    /// Try again: the prefault met a memslot being deleted or moved.
    #[error("EAGAIN")]
    EAGAIN,
    /// It exists already (a memslot created over one that is still there).
    #[error("EEXIST")]
    EEXIST,
}

impl Errno {
    /// The positive errno value.
    pub const fn code(self) -> i32 {
        match self {
            Errno::EBUSY => 16,
            Errno::EIO => 5,
            Errno::ENOMEM => 12,
            Errno::ENODEV => 19,
            Errno::EINVAL => 22,
            Errno::EACCES => 13,
            Errno::EFAULT => 14,
            Errno::EINTR => 4,
            Errno::EAGAIN => 11,
            Errno::EEXIST => 17,
        }
    }
}
