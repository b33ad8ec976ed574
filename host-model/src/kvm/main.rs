//! KVM's global state: `kvm_usage_count` under `kvm_lock`, per-CPU hardware enable, the
//! TDX `tdx_lock`, and the control pages TDs are built from.

use std::cell::Cell;
use std::rc::Rc;

use seam_model::Hpa;

use crate::kernel::Errno;
use crate::kernel::completion::{OnCpu, on_each_cpu};
use crate::kernel::cpu::Cpu;
use crate::kernel::lockdep::{lockdep_assert_irqs_disabled, might_sleep};
use crate::kernel::mutex::{Mutex, mutex_lock, mutex_unlock};
use crate::kernel::page_alloc::{alloc_page, free_page};
use crate::tdx::dpamt::{PairSource, tdx_pamt_get, tdx_pamt_put};
use crate::tdx::enable::{EnableDesign, cpu_vmxon, tdx_cpu_enable, x86_virt_get_ref};

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
pub async fn kvm_get_usage(cpu: &Cpu) -> Result<(), Errno> {
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

/// `kvm_destroy_vm()`'s release of the usage count (the CPUs stay enabled: today's design
/// keeps VMX on, and the earlier ones' disable has no SEAMCALL). Kernel:
/// `hardware_disable_all()` under `kvm_lock`.
pub async fn kvm_put_usage(cpu: &Cpu) {
    might_sleep(cpu, "kvm_destroy_vm");
    let kvm = &cpu.host().kvm;
    mutex_lock(cpu, kvm.kvm_lock).await;
    kvm.usage_count.set(kvm.usage_count.get().saturating_sub(1));
    mutex_unlock(cpu, kvm.kvm_lock);
}

/// A page for a TD control structure with its PAMT reference (`tdx_alloc_control_page()`).
pub async fn tdx_alloc_control_page(cpu: &Cpu) -> Result<Hpa, Errno> {
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
pub async fn tdx_free_control_page(cpu: &Cpu, page: Hpa) {
    might_sleep(cpu, "tdx_free_control_page");
    tdx_pamt_put(cpu, page).await;
    free_page(cpu, page).await;
}
