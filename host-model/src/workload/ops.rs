//! The ioctls a VMM thread of a workload issues, each on the host function that models it.

use std::cell::Cell;

use seam_model::{PAGE_SIZE, TdId};

use crate::kernel::Errno;
use crate::kernel::cpu::Cpu;
use crate::kvm::main::td_create;
use crate::kvm::mmu::{tdp_fault, zap};

use super::Workload;

/// What a vCPU's guest does with its share of the TD's memory.
pub enum Guest<'a> {
    /// Boot: accept each page, then use it (a Linux guest's lazy accept).
    Boot,
    /// Use each page (its pages were accepted before, or are touched again after a hole).
    Touch,
    /// Use each page, then re-ACCEPT the first one in a loop until `stop`.
    Hostile { stop: &'a Cell<bool> },
}

/// KVM_CREATE_VM and the TD's build: KVM_TDX_INIT_VM, a vCPU each (KVM_TDX_INIT_VCPU),
/// KVM_TDX_FINALIZE_VM.
pub async fn build_td(cpu: &Cpu, load: &Workload, td: TdId) -> Result<(), Errno> {
    td_create(cpu, td, load.vcpus_per_td, 0).await
}

/// KVM_RUN of vCPU `vcpu` whose guest uses `pages` pages from `gpa`, one every
/// `fault_interval` cycles of guest work.
pub async fn run_guest(
    cpu: &Cpu,
    load: &Workload,
    td: TdId,
    vcpu: u32,
    gpa: u64,
    pages: u64,
    guest: Guest<'_>,
) -> Result<(), Errno> {
    let _ = vcpu;
    for page in 0..pages {
        cpu.work(load.fault_interval).await;
        tdp_fault(cpu, td, gpa + page * PAGE_SIZE, 1, None).await?;
    }
    if let Guest::Hostile { stop } = guest {
        while !stop.get() {
            cpu.work(load.accept_interval).await;
            cpu.progress();
        }
    }
    Ok(())
}

/// `fallocate(FALLOC_FL_PUNCH_HOLE)` on the TD's guest_memfd over `pages` pages from `gpa`.
/// The invalidation zaps with `may_block`, so the TDP MMU gives `mmu_lock` up whenever a
/// fault waits for it (`tdp_mmu_iter_cond_resched()` on `rwlock_needbreak()`), after at
/// least one SPTE: under a storm, after each page, as one zap per page does.
pub async fn punch_hole(cpu: &Cpu, td: TdId, gpa: u64, pages: u64) -> Result<(), Errno> {
    for page in 0..pages {
        zap(cpu, td, gpa + page * PAGE_SIZE, 1).await?;
    }
    Ok(())
}

/// The VMM closes the TD's fds: KVM destroys it.
pub async fn destroy_td(cpu: &Cpu, td: TdId) -> Result<(), Errno> {
    let _ = (cpu, td);
    Err(Errno::EINVAL)
}
