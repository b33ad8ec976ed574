//! Building a TD through KVM's ioctls (arch/x86/kvm/vmx/tdx.c): KVM_CREATE_VM,
//! KVM_TDX_INIT_VM (TDR, TDH.MNG.CREATE under `tdx_lock`, TDH.MNG.KEY.CONFIG per package,
//! TDH.MNG.INIT), KVM_TDX_INIT_VCPU (TDH.VP.CREATE, TDH.VP.ADDCX, TDH.VP.INIT),
//! KVM_TDX_INIT_MEM_REGION (group 1: TDH.MEM.PAGE.ADD, -EBUSY to userspace) and
//! KVM_TDX_FINALIZE_VM (TDH.MR.FINALIZE), each under the locks of the `host.sept_busy`
//! kernel: `kvm->lock` or the vCPU's mutex before 6.19, the TD state guard since.

use std::rc::Rc;

use seam_model::td::TDVPS_PAGES;
use seam_model::{Hpa, LeafCall, PAGE_SIZE, TdId};

use super::main::{kvm_get_usage, tdx_alloc_control_page, tdx_free_control_page};
use super::tdx_fault::{LeafOp, MmuCaches, kvm_tdp_map_page_op};
use super::vm::{
    KvmTd, KvmVcpu, TdGuard, TdState, VcpuTdState, kvm_get_vcpu, kvm_td, kvm_vm_bugged, tdx_td_guard_lock,
    tdx_td_guard_unlock,
};
use crate::kernel::Errno;
use crate::kernel::completion::{OnCpu, smp_call_on_cpu};
use crate::kernel::cpu::Cpu;
use crate::kernel::lockdep::{cannot_fail, lockdep_assert_cpus_held, might_sleep};
use crate::kernel::mutex::{down_read, mutex_lock, mutex_unlock, up_read};
use crate::kernel::page_alloc::{alloc_page, free_page};
use crate::kernel::srcu::{srcu_read_lock, srcu_read_unlock};
use crate::seamldr::update::UpdateDesign;
use crate::tdx::enable::{first_online_cpu_of_package, seamcall_errno};
use crate::tdx::seamcall::seamcall;

/// The locks a TD-scoped ioctl holds: the 6.19 guard, or what the ioctl took before it.
enum IoctlLocks {
    Guard(TdGuard),
    /// A VM ioctl before 6.19: `kvm->lock`.
    KvmLock,
    /// A vCPU ioctl before 6.19: that vCPU's mutex, and `kvm->slots_lock` when it
    /// populates memory (`kvm_gmem_populate()` needs it).
    VcpuMutex {
        vcpu: Rc<KvmVcpu>,
        slots_lock: bool,
    },
}

/// Takes what a TD-scoped ioctl holds in the design.
async fn tdx_ioctl_lock(cpu: &Cpu, kvm: &KvmTd, vcpu: Option<&Rc<KvmVcpu>>, slots_lock: bool) -> IoctlLocks {
    if cpu.host().config.sept_busy.td_state_guard() {
        return IoctlLocks::Guard(tdx_td_guard_lock(cpu, kvm).await);
    }
    match vcpu {
        None => {
            mutex_lock(cpu, kvm.lock).await;
            IoctlLocks::KvmLock
        }
        Some(vcpu) => {
            mutex_lock(cpu, vcpu.mutex).await;
            if slots_lock {
                mutex_lock(cpu, kvm.slots_lock).await;
            }
            IoctlLocks::VcpuMutex { vcpu: vcpu.clone(), slots_lock }
        }
    }
}

fn tdx_ioctl_unlock(cpu: &Cpu, kvm: &KvmTd, locks: IoctlLocks) {
    match locks {
        IoctlLocks::Guard(guard) => tdx_td_guard_unlock(cpu, kvm, guard),
        IoctlLocks::KvmLock => mutex_unlock(cpu, kvm.lock),
        IoctlLocks::VcpuMutex { vcpu, slots_lock } => {
            if slots_lock {
                mutex_unlock(cpu, kvm.slots_lock);
            }
            mutex_unlock(cpu, vcpu.mutex);
        }
    }
}

/// One page-assigning leaf of a TD build: any failure, BUSY included, is KVM_BUG_ON (the VM
/// is dead) and its page's PAMT reference goes back.
async fn build_leaf(cpu: &Cpu, kvm: &KvmTd, function: &str, call: LeafCall, page: Hpa) -> Result<(), Errno> {
    // TD build leaves run from the VM and vCPU ioctls: process context.
    might_sleep(cpu, function);
    let output = seamcall(cpu, call).await;
    if let Err(errno) = seamcall_errno(output) {
        cpu.warn(function, format!("KVM_BUG_ON: {call} failed: {}", output.status));
        kvm_vm_bugged(cpu, kvm).await;
        tdx_free_control_page(cpu, page).await;
        return Err(errno);
    }
    Ok(())
}

/// The packages of every present CPU that have no online CPU (`__tdx_td_init()`'s check).
fn packages_without_online_cpu(cpu: &Cpu) -> Vec<u32> {
    let packages = cpu.host().config.packages;
    (0..packages).filter(|&package| first_online_cpu_of_package(cpu, package).is_none()).collect()
}

/// TDH.MNG.KEY.CONFIG on one CPU: `tdx_do_tdh_mng_key_config()`, run by `smp_call_on_cpu()`.
async fn tdx_do_tdh_mng_key_config(cpu: &Cpu, td: TdId) -> Result<(), Errno> {
    // In the smp_call_on_cpu() kworker of the package's first online CPU.
    might_sleep(cpu, "tdx_do_tdh_mng_key_config");
    let output = seamcall(cpu, LeafCall::MngKeyConfig { td }).await;
    if let Err(errno) = seamcall_errno(output) {
        cpu.warn("tdx_do_tdh_mng_key_config", format!("TDH.MNG.KEY.CONFIG failed: {}", output.status));
        return Err(errno);
    }
    Ok(())
}

/// Makes the TD: its TDR (TDH.MNG.CREATE under `tdx_lock`) and its key on every package
/// (TDH.MNG.KEY.CONFIG on the first online CPU of each, through `smp_call_on_cpu()`), all
/// under `cpus_read_lock()` so the online packages stay as checked. A package with no online
/// CPU fails creation with -EIO and the kernel's warning.
///
/// Kernel: `__tdx_td_init()`, arch/x86/kvm/vmx/tdx.c.
async fn tdx_td_init(cpu: &Cpu, kvm: &KvmTd, tdr: Hpa) -> Result<(), Errno> {
    let td = kvm.td;
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    let global = &cpu.host().kvm;
    down_read(cpu, hotplug_lock).await;
    let missing = packages_without_online_cpu(cpu);
    if !missing.is_empty() {
        cpu.printk(
            "pr_warn_ratelimited",
            "All packages need to have online CPU to create TD. Online CPU and retry.",
        );
        up_read(cpu, hotplug_lock);
        tdx_free_control_page(cpu, tdr).await;
        return Err(Errno::EIO);
    }
    mutex_lock(cpu, global.tdx_lock).await;
    let created = build_leaf(cpu, kvm, "__tdx_td_init", LeafCall::MngCreate { td, tdr }, tdr).await;
    mutex_unlock(cpu, global.tdx_lock);
    if let Err(errno) = created {
        up_read(cpu, hotplug_lock);
        return Err(errno);
    }
    kvm.tdr.set(Some(tdr));
    kvm.hkid_assigned.set(true);
    global.hkids_allocated.set(global.hkids_allocated.get() + 1);
    let mut ret = Ok(());
    for package in 0..cpu.host().config.packages {
        lockdep_assert_cpus_held(cpu, "__tdx_td_init");
        let target = first_online_cpu_of_package(cpu, package);
        cannot_fail(cpu, target.is_some(), "__tdx_td_init", || {
            format!("package {package} lost its online CPUs under cpus_read_lock()")
        });
        let Some(target) = target else { break };
        let key_config: OnCpu<Result<(), Errno>> =
            Rc::new(move |on: Cpu| Box::pin(async move { tdx_do_tdh_mng_key_config(&on, td).await }));
        ret = smp_call_on_cpu(cpu, target, key_config).await;
        if ret.is_err() {
            break;
        }
    }
    up_read(cpu, hotplug_lock);
    ret
}

/// KVM_TDX_INIT_VM: the TDR and keys (`tdx_td_init`), then TDH.MNG.INIT; the TD is
/// TD_STATE_INITIALIZED. Under `kvm->lock` (the guard since 6.19).
///
/// Kernel: `tdx_td_init()`, arch/x86/kvm/vmx/tdx.c.
/// With `hold_update_rwsem` (U6) the build's read hold of `update_rwsem` starts at
/// TDH.MNG.INIT, as the compatibility-sensitive window does.
async fn kvm_tdx_init_vm(cpu: &Cpu, kvm: &KvmTd, hold_update_rwsem: bool) -> Result<(), Errno> {
    let locks = tdx_ioctl_lock(cpu, kvm, None, false).await;
    let ret = async {
        if kvm.state.get() != TdState::Uninitialized {
            return Err(Errno::EINVAL);
        }
        let tdr = tdx_alloc_control_page(cpu).await?;
        tdx_td_init(cpu, kvm, tdr).await?;
        if hold_update_rwsem {
            down_read(cpu, cpu.host().tdx.update_rwsem).await;
        }
        let init = seamcall_errno(seamcall(cpu, LeafCall::MngInit { td: kvm.td }).await);
        if init.is_err() && hold_update_rwsem {
            up_read(cpu, cpu.host().tdx.update_rwsem);
        }
        init?;
        kvm.state.set(TdState::Initialized);
        Ok(())
    }
    .await;
    tdx_ioctl_unlock(cpu, kvm, locks);
    ret
}

/// KVM_TDX_INIT_VCPU on `vcpu`: its TDVPR (TDH.VP.CREATE), its TDCX pages (TDH.VP.ADDCX each)
/// and TDH.VP.INIT, which associates it with this CPU. Any SEAMCALL failure, BUSY included,
/// is KVM_BUG_ON: before 6.19 a concurrent TD ioctl can make one BUSY (K4).
///
/// Kernel: `tdx_vcpu_init()` -> `tdx_td_vcpu_init()`, arch/x86/kvm/vmx/tdx.c.
pub async fn kvm_tdx_init_vcpu(cpu: &Cpu, td: TdId, index: u32) -> Result<(), Errno> {
    might_sleep(cpu, "tdx_vcpu_init");
    let kvm = kvm_td(cpu, td);
    let vcpu = kvm_get_vcpu(kvm, index)?;
    let locks = tdx_ioctl_lock(cpu, kvm, Some(&vcpu), false).await;
    let ret = async {
        if kvm.state.get() != TdState::Initialized || vcpu.state.get() != VcpuTdState::Uninitialized {
            return Err(Errno::EINVAL);
        }
        tdx_td_vcpu_init(cpu, kvm, &vcpu).await
    }
    .await;
    tdx_ioctl_unlock(cpu, kvm, locks);
    ret
}

/// `tdx_td_vcpu_init()`: VP.CREATE, the TDCX pages, VP.INIT.
async fn tdx_td_vcpu_init(cpu: &Cpu, kvm: &KvmTd, vcpu: &KvmVcpu) -> Result<(), Errno> {
    let td = kvm.td;
    let tdvpr = tdx_alloc_control_page(cpu).await?;
    build_leaf(cpu, kvm, "tdx_td_vcpu_init", LeafCall::VpCreate { td, tdvpr }, tdvpr).await?;
    vcpu.tdvpr.set(Some(tdvpr));
    vcpu.tdvpr_allocated.set(true);
    for _ in 1..TDVPS_PAGES {
        let tdcx = tdx_alloc_control_page(cpu).await?;
        build_leaf(cpu, kvm, "tdx_td_vcpu_init", LeafCall::VpAddcx { td, tdvpr, tdcx }, tdcx).await?;
        vcpu.tdcx.borrow_mut().push(tdcx);
    }
    let output = seamcall(cpu, LeafCall::VpInit { td, tdvpr }).await;
    if let Err(errno) = seamcall_errno(output) {
        cpu.warn("tdx_td_vcpu_init", format!("KVM_BUG_ON: TDH.VP.INIT failed: {}", output.status));
        kvm_vm_bugged(cpu, kvm).await;
        return Err(errno);
    }
    vcpu.associated_cpu.set(Some(cpu.id));
    vcpu.state.set(VcpuTdState::Initialized);
    Ok(())
}

/// KVM_TDX_INIT_MEM_REGION on vCPU `index`: `count` pages from `gpa` are given initial
/// contents, each mapped by the prefault (S-EPT tables by TDH.MEM.SEPT.ADD) and added with
/// TDH.MEM.PAGE.ADD (group 1). A BUSY PAGE.ADD ends the ioctl with -EBUSY, for userspace to
/// retry; nothing retries in the kernel. `first_page` names the guest_memfd page of the first
/// GPA (else guest_memfd allocates). TDH.MR.EXTEND (measurement) is not modelled.
///
/// Kernel: `tdx_vcpu_init_mem_region()` -> `kvm_gmem_populate()` ->
/// `tdx_gmem_post_populate()`, arch/x86/kvm/vmx/tdx.c (Yan Zhao, 2025-01-12, patch 1).
pub async fn kvm_tdx_init_mem_region(
    cpu: &Cpu,
    td: TdId,
    index: u32,
    gpa: u64,
    count: u32,
    first_page: Option<Hpa>,
) -> Result<(), Errno> {
    might_sleep(cpu, "tdx_vcpu_init_mem_region");
    let kvm = kvm_td(cpu, td);
    let vcpu = kvm_get_vcpu(kvm, index)?;
    let locks = tdx_ioctl_lock(cpu, kvm, Some(&vcpu), true).await;
    let ret = async {
        if kvm.state.get() != TdState::Initialized {
            return Err(Errno::EINVAL);
        }
        // The VMM's buffer holding the initial contents (PAGE.ADD's source).
        let source = alloc_page(cpu).await.ok_or(Errno::ENOMEM)?;
        let idx = srcu_read_lock(cpu, &kvm.srcu);
        let mut ret = Ok(());
        for page_index in 0..u64::from(count) {
            let gfn = gpa / PAGE_SIZE + page_index;
            let page = first_page.map(|first| Hpa(first.0 + page_index * PAGE_SIZE));
            let caches = MmuCaches { pamt: &vcpu.pamt_cache, spt: &vcpu.spt_cache };
            ret = kvm_tdp_map_page_op(cpu, kvm, caches, gfn, page, LeafOp::Add { source }).await;
            if ret.is_err() {
                break;
            }
            cpu.progress();
        }
        srcu_read_unlock(cpu, &kvm.srcu, idx);
        free_page(cpu, source).await;
        ret
    }
    .await;
    tdx_ioctl_unlock(cpu, kvm, locks);
    ret
}

/// KVM_TDX_FINALIZE_VM: TDH.MR.FINALIZE; the TD is runnable.
///
/// Kernel: `tdx_td_finalize()`, arch/x86/kvm/vmx/tdx.c.
pub async fn kvm_tdx_finalize_vm(cpu: &Cpu, td: TdId) -> Result<(), Errno> {
    might_sleep(cpu, "tdx_td_finalize");
    let kvm = kvm_td(cpu, td);
    let locks = tdx_ioctl_lock(cpu, kvm, None, false).await;
    let ret = async {
        if kvm.state.get() != TdState::Initialized {
            return Err(Errno::EINVAL);
        }
        seamcall_errno(seamcall(cpu, LeafCall::MrFinalize { td }).await)?;
        kvm.state.set(TdState::Runnable);
        Ok(())
    }
    .await;
    tdx_ioctl_unlock(cpu, kvm, locks);
    ret
}

/// What `td_create` does besides the VM and INIT_VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdCreate {
    /// KVM_TDX_INIT_VCPU for each vCPU right away (else `vcpu_init` steps do it).
    pub init_vcpus: bool,
    /// Userspace's build time between INIT_VM and FINALIZE_VM, in cycles.
    pub build_cycles: u64,
    /// KVM_TDX_FINALIZE_VM at the end (else the TD stays in its build).
    pub finalize: bool,
}

/// Creates and builds TD `td`: the VM (hardware enable on the first), KVM_TDX_INIT_VM, then
/// KVM_TDX_INIT_VCPU for each vCPU, `build_cycles` of userspace building, and
/// KVM_TDX_FINALIZE_VM — each part optional after INIT_VM. From MNG.INIT to MR.FINALIZE the
/// build is compatibility-sensitive; under U6 it holds `update_rwsem` for read across that
/// window (when `td_create` finalises the TD itself).
///
/// Kernel: `kvm_create_vm()`, then the ioctls of this file in the order a VMM issues them.
pub async fn td_create(cpu: &Cpu, td: TdId, how: TdCreate) -> Result<(), Errno> {
    might_sleep(cpu, "td_create");
    if !cpu.host().tdx.module_initialized.get() {
        return Err(Errno::ENODEV);
    }
    let kvm = kvm_td(cpu, td);
    if kvm.created.get() {
        return Err(Errno::EINVAL);
    }
    // A new `struct kvm`: a number whose last VM was destroyed starts from scratch.
    kvm.recreate();
    kvm_get_usage(cpu).await?;
    kvm.created.set(true);
    let update_rwsem = cpu.host().tdx.update_rwsem;
    let build_holds_update_rwsem = how.finalize
        && match cpu.host().config.update_design {
            UpdateDesign::UpdateRwsem => true,
            UpdateDesign::StopMachine
            | UpdateDesign::StopMachineNoAbort
            | UpdateDesign::NoStopMachine
            | UpdateDesign::NestedCpusReadLock => false,
        };
    let mut ret = kvm_tdx_init_vm(cpu, kvm, build_holds_update_rwsem).await;
    if ret.is_err() {
        // The VMM closes the VM whose INIT_VM failed; it may create another.
        kvm.created.set(false);
        super::main::kvm_put_usage(cpu).await;
        return ret;
    }
    let holds_update_rwsem = build_holds_update_rwsem;
    if how.init_vcpus {
        for vcpu in &kvm.vcpus {
            if ret.is_err() {
                break;
            }
            ret = kvm_tdx_init_vcpu(cpu, td, vcpu.index).await;
        }
    }
    if ret.is_ok() && how.finalize {
        // Userspace populates initial memory and sets up vCPUs meanwhile.
        cpu.sim.sleep(how.build_cycles).await;
        ret = kvm_tdx_finalize_vm(cpu, td).await;
    }
    if holds_update_rwsem {
        up_read(cpu, update_rwsem);
    }
    ret
}
