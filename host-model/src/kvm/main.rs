//! KVM's VM-level state and TD creation: `kvm_usage_count` under `kvm_lock`, per-CPU
//! hardware enable, and the TDH.MNG/VP leaves of building a TD.

use std::cell::Cell;
use std::rc::Rc;

use seam_model::{Hpa, LeafCall, TdId};

use crate::kernel::Errno;
use crate::kernel::completion::smp_call_on_cpu;
use crate::kernel::completion::{OnCpu, on_each_cpu};
use crate::kernel::cpu::Cpu;
use crate::kernel::lockdep::{
    cannot_fail, lockdep_assert_cpus_held, lockdep_assert_irqs_disabled, might_sleep,
};
use crate::kernel::mutex::{Mutex, down_read, mutex_lock, mutex_unlock, up_read};
use crate::kernel::page_alloc::{alloc_page, free_page};
use crate::seamldr::update::UpdateDesign;
use crate::tdx::dpamt::{PairSource, tdx_pamt_get, tdx_pamt_put};
use crate::tdx::enable::{
    EnableDesign, cpu_vmxon, first_online_cpu_of_package, seamcall_errno, tdx_cpu_enable, x86_virt_get_ref,
};
use crate::tdx::seamcall::seamcall;

/// KVM's global state.
pub struct KvmGlobal {
    /// `kvm_lock`: protects `kvm_usage_count`.
    pub kvm_lock: Mutex,
    /// `kvm_usage_count`: VMs in existence. Protected by kvm_lock.
    pub usage_count: Cell<u32>,
    /// KVM TDX's `tdx_lock`: serialises SEAMCALLs on module-global locks (MNG.CREATE).
    pub tdx_lock: Mutex,
    /// TDX guest HKIDs allocated (the KeyID IDA), for `tdx_offline_cpu()`.
    pub hkids_allocated: Cell<u32>,
}

impl KvmGlobal {
    pub fn new(sim: &sim_core::Sim) -> KvmGlobal {
        KvmGlobal {
            kvm_lock: Mutex::new(sim, "kvm_lock"),
            usage_count: Cell::new(0),
            tdx_lock: Mutex::new(sim, "tdx_lock"),
            hkids_allocated: Cell::new(0),
        }
    }
}

/// Per-CPU hardware enable for VMs. Current design: a VMX reference (TDX already made the
/// CPU capable). 2024 designs: VMXON, and from H2 on `tdx_cpu_enable()` right after it.
///
/// Kernel: `kvm_arch_enable_virtualization_cpu()` / `vt_hardware_enable()`.
pub async fn hardware_enable(cpu: &Cpu) -> Result<(), Errno> {
    // From the IPI of hardware_enable_all(), or KVM's cpuhp callback with IRQs off.
    lockdep_assert_irqs_disabled(cpu, "kvm_arch_enable_virtualization_cpu");
    match cpu.host().config.enable_design {
        EnableDesign::BootCpuhp => x86_virt_get_ref(cpu).await,
        EnableDesign::KvmHardwareEnable | EnableDesign::CpusReadLockVtInit => {
            cpu_vmxon(cpu).await?;
            tdx_cpu_enable(cpu).await
        }
        EnableDesign::CpuhpUnlockedUsage | EnableDesign::LpInitWithoutVmxon => cpu_vmxon(cpu).await,
    }
}

/// `kvm_create_vm()`'s enable step: on the first VM, hardware enable on every online CPU
/// by IPI; any failure fails VM creation. Kernel: `hardware_enable_all()` under `kvm_lock`.
async fn kvm_get_usage(cpu: &Cpu) -> Result<(), Errno> {
    might_sleep(cpu, "kvm_create_vm");
    let kvm = &cpu.host().kvm;
    mutex_lock(cpu, kvm.kvm_lock).await;
    kvm.usage_count.set(kvm.usage_count.get() + 1);
    let mut ret = Ok(());
    if kvm.usage_count.get() == 1 {
        let enable: OnCpu<Result<(), Errno>> =
            Rc::new(|on: Cpu| Box::pin(async move { hardware_enable(&on).await }));
        ret = on_each_cpu(cpu, enable).await.into_iter().find(Result::is_err).unwrap_or(Ok(()));
        if ret.is_err() {
            kvm.usage_count.set(kvm.usage_count.get() - 1);
        }
    }
    mutex_unlock(cpu, kvm.kvm_lock);
    ret
}

/// A page for a TD control structure with its PAMT reference (`tdx_alloc_control_page()`).
async fn tdx_alloc_control_page(cpu: &Cpu) -> Result<Hpa, Errno> {
    might_sleep(cpu, "tdx_alloc_control_page");
    let page = alloc_page(cpu).await.ok_or(Errno::ENOMEM)?;
    if let Err(errno) = tdx_pamt_get(cpu, page, PairSource::Allocate).await {
        free_page(cpu, page).await;
        return Err(errno);
    }
    Ok(page)
}

/// A control page the module never took: its PAMT reference and the page go back
/// (`tdx_free_control_page()` for a page that was not reclaimed).
async fn tdx_free_control_page(cpu: &Cpu, page: Hpa) {
    might_sleep(cpu, "tdx_free_control_page");
    tdx_pamt_put(cpu, page).await;
    free_page(cpu, page).await;
}

/// One page-assigning leaf of a TD build; on failure its page's PAMT reference goes back.
async fn build_leaf(cpu: &Cpu, function: &str, call: LeafCall, page: Hpa) -> Result<(), Errno> {
    // TD build leaves run from the VM and vCPU ioctls: process context.
    might_sleep(cpu, function);
    let output = seamcall(cpu, call).await;
    if let Err(errno) = seamcall_errno(output) {
        cpu.warn(function, format!("KVM_BUG_ON: {call} failed: {}", output.status));
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
async fn tdx_td_init(cpu: &Cpu, td: TdId, tdr: Hpa) -> Result<(), Errno> {
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    let kvm = &cpu.host().kvm;
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
    mutex_lock(cpu, kvm.tdx_lock).await;
    let created = build_leaf(cpu, "__tdx_td_init", LeafCall::MngCreate { td, tdr }, tdr).await;
    mutex_unlock(cpu, kvm.tdx_lock);
    if let Err(errno) = created {
        up_read(cpu, hotplug_lock);
        return Err(errno);
    }
    kvm.hkids_allocated.set(kvm.hkids_allocated.get() + 1);
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

/// A vCPU's TDVPR (`tdx_vcpu_create()` + `tdx_td_vcpu_init()`'s TDH.VP.CREATE).
async fn tdx_vcpu_create(cpu: &Cpu, td: TdId) -> Result<(), Errno> {
    might_sleep(cpu, "tdx_vcpu_create");
    let tdvpr = tdx_alloc_control_page(cpu).await?;
    build_leaf(cpu, "tdx_td_vcpu_init", LeafCall::VpCreate { td, tdvpr }, tdvpr).await
}

/// Creates and builds a TD with `vcpus` vCPUs: the VM (hardware enable on the first), the
/// TDR and its keys (`tdx_td_init`), TDH.MNG.INIT, a TDVPR per vCPU, and TDH.MR.FINALIZE
/// after `build_cycles` of userspace building. Between MNG.INIT and MR.FINALIZE the build
/// is compatibility-sensitive; under U6 it holds `update_rwsem` for read across that window.
///
/// Kernel: `kvm_create_vm()`, `tdx_td_init()`, `tdx_vcpu_create()`, `tdx_td_finalize()`
/// (arch/x86/kvm/vmx/tdx.c), modelled as one step.
pub async fn td_create(cpu: &Cpu, td: TdId, vcpus: u32, build_cycles: u64) -> Result<(), Errno> {
    might_sleep(cpu, "td_create");
    if !cpu.host().tdx.module_initialized.get() {
        return Err(Errno::ENODEV);
    }
    kvm_get_usage(cpu).await?;
    let tdr = tdx_alloc_control_page(cpu).await?;
    tdx_td_init(cpu, td, tdr).await?;
    let update_rwsem = cpu.host().tdx.update_rwsem;
    let build_holds_update_rwsem = match cpu.host().config.update_design {
        UpdateDesign::UpdateRwsem => true,
        UpdateDesign::StopMachine
        | UpdateDesign::StopMachineNoAbort
        | UpdateDesign::NoStopMachine
        | UpdateDesign::NestedCpusReadLock => false,
    };
    if build_holds_update_rwsem {
        down_read(cpu, update_rwsem).await;
    }
    let mut ret = seamcall_errno(seamcall(cpu, LeafCall::MngInit { td }).await);
    for _ in 0..vcpus {
        if ret.is_err() {
            break;
        }
        ret = tdx_vcpu_create(cpu, td).await;
    }
    if ret.is_ok() {
        // Userspace populates initial memory and sets up vCPUs meanwhile.
        cpu.sim.sleep(build_cycles).await;
        ret = seamcall_errno(seamcall(cpu, LeafCall::MrFinalize { td }).await);
    }
    if build_holds_update_rwsem {
        up_read(cpu, update_rwsem);
    }
    ret
}
