//! The ioctls a VMM thread of a workload issues, each on the KVM function that models it.

use seam_model::{PAGE_SIZE, TdId};

use crate::guest::GuestProgram;
use crate::kernel::Errno;
use crate::kernel::cpu::Cpu;
use crate::kvm::memslot::{MemslotChange, kvm_set_memory_region};
use crate::kvm::mmu::zap;
use crate::kvm::tdx_init::{TdCreate, kvm_tdx_finalize_vm, kvm_tdx_init_mem_region, td_create};
use crate::kvm::teardown::kvm_destroy_vm;
use crate::kvm::vcpu::kvm_vcpu_ioctl_run;

use super::Workload;

/// KVM_CREATE_VM and the TD's build: KVM_TDX_INIT_VM, KVM_TDX_INIT_VCPU for each vCPU,
/// KVM_TDX_INIT_MEM_REGION of the initial image on vCPU 0 (PAGE.ADD), KVM_TDX_FINALIZE_VM.
pub async fn build_td(cpu: &Cpu, load: &Workload, td: TdId) -> Result<(), Errno> {
    td_create(cpu, td, TdCreate { init_vcpus: true, build_cycles: 0, finalize: false }).await?;
    let mut left = load.initial_pages();
    let mut gpa = 0;
    while left > 0 {
        // One ioctl per 2MB of image, as a VMM copies its firmware volume.
        let count = left.min(512);
        kvm_tdx_init_mem_region(cpu, td, 0, gpa, count as u32, None).await?;
        gpa += count * PAGE_SIZE;
        left -= count;
        cpu.progress();
    }
    kvm_tdx_finalize_vm(cpu, td).await
}

/// KVM_RUN of vCPU `vcpu` until its guest is done: it accepts (when `accept`) and touches
/// `pages` pages from `gpa`, working `fault_interval` cycles before each.
pub async fn run_guest(
    cpu: &Cpu,
    load: &Workload,
    td: TdId,
    vcpu: u32,
    (gpa, pages): (u64, u64),
    accept: bool,
) -> Result<(), Errno> {
    if pages == 0 {
        return Ok(());
    }
    let program = GuestProgram {
        gpa,
        pages: u32::try_from(pages).expect("the loader keeps a vCPU's share below 2^32 pages"),
        accept,
        interval_cycles: load.fault_interval,
        rounds: 1,
        hostile: false,
    };
    kvm_vcpu_ioctl_run(cpu, td, vcpu, program, None).await
}

/// KVM_RUN of vCPU `vcpu` whose hostile guest re-ACCEPTs `gpa` in a loop until the VMM
/// signals the thread (`vmm_signal_vcpu`).
pub async fn run_hostile_guest(
    cpu: &Cpu,
    load: &Workload,
    td: TdId,
    vcpu: u32,
    gpa: u64,
) -> Result<(), Errno> {
    let program = GuestProgram {
        gpa,
        pages: 1,
        accept: true,
        interval_cycles: load.fault_interval,
        rounds: 1,
        hostile: true,
    };
    kvm_vcpu_ioctl_run(cpu, td, vcpu, program, Some(u64::MAX)).await
}

/// `fallocate(FALLOC_FL_PUNCH_HOLE)` on the TD's guest_memfd over `pages` pages from `gpa`
/// (what a VMM does for a guest's conversion of private memory to shared).
pub async fn punch_hole(cpu: &Cpu, td: TdId, gpa: u64, pages: u64) -> Result<(), Errno> {
    zap(cpu, td, gpa, u32::try_from(pages).expect("the loader keeps a hole below 2^32 pages")).await
}

/// The VMM takes the memslot of `pages` pages at `gpa` away and gives it back (a guest's
/// memory hot-unplug and replug, handled on the thread that took its exit): two
/// `KVM_SET_USER_MEMORY_REGION2` ioctls, a deletion (size 0) and a creation of the same
/// slot over the same guest_memfd range.
pub async fn memslot_change(cpu: &Cpu, td: TdId, gpa: u64, pages: u64) -> Result<(), Errno> {
    kvm_set_memory_region(cpu, td, seam_model::Gpa(gpa), pages, MemslotChange::Delete).await?;
    cpu.progress();
    kvm_set_memory_region(cpu, td, seam_model::Gpa(gpa), pages, MemslotChange::Create).await
}

/// The VMM closes the TD's fds: KVM destroys it (HKID release, reclaim of every page).
pub async fn destroy_td(cpu: &Cpu, td: TdId) -> Result<(), Errno> {
    kvm_destroy_vm(cpu, td).await
}
