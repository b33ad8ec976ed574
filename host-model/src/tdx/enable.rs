//! TDX enabling and CPU hotplug (spec/host-algorithms.md §2): the VMXON refcount,
//! `try_init_module_global()`, `tdx_cpu_enable()`, the cpuhp callbacks, `tdx_enable()` and
//! `init_tdx_module()`, in every `host.enable` design.

use std::cell::Cell;
use std::rc::Rc;

use seam_model::status::{TDX_SEAMCALL_UD, TDX_SEAMCALL_VMFAILINVALID};
use seam_model::{LeafCall, LeafOutput};
use sim_core::CpuId;

use crate::host::HostConfig;
use crate::kernel::Errno;
pub use crate::kernel::arch::cpu_vmxon;
use crate::kernel::arch::{cpu_vmxoff, topology_physical_package_id, vmx_is_on};
use crate::kernel::completion::{OnCpu, smp_call_on_cpu};
use crate::kernel::cpu::Cpu;
use crate::kernel::cpuhp::{CpuhpState, cpuhp_remove_state, cpuhp_setup_state, cpuhp_setup_state_cpuslocked};
use crate::kernel::lockdep::{cannot_fail, lockdep_assert_held, might_sleep};
use crate::kernel::mutex::{RwSem, down_read, up_read};
use crate::kernel::spinlock::{Spinlock, raw_spin_lock, raw_spin_unlock};
use crate::tdx::seamcall::seamcall;

/// `host.enable`: the TDX enabling / CPU-hotplug design (spec/host-algorithms.md §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnableDesign {
    /// Today's upstream (§2.1): VMXON refcount in the core kernel, TDX brought up at boot, a
    /// cpuhp callback that makes every onlined CPU TDX-capable or refuses it.
    #[default]
    BootCpuhp,
    /// H2: `tdx_cpu_enable()` in KVM's per-CPU hardware enable, right after VMXON.
    KvmHardwareEnable,
    /// H3: a separate TDX cpuhp state that reads `kvm_usage_count` without `kvm_lock`.
    CpuhpUnlockedUsage,
    /// H4: a TDX cpuhp state doing `tdx_cpu_enable()` unconditionally, without VMXON.
    LpInitWithoutVmxon,
    /// H0: `cpus_read_lock()` held across the whole of `vt_init()`.
    CpusReadLockVtInit,
}

impl EnableDesign {
    /// Every design, in the order `host.enable`'s error lists them; the first is the default.
    pub const ALL: &'static [EnableDesign] = &[
        EnableDesign::BootCpuhp,
        EnableDesign::KvmHardwareEnable,
        EnableDesign::CpuhpUnlockedUsage,
        EnableDesign::LpInitWithoutVmxon,
        EnableDesign::CpusReadLockVtInit,
    ];

    /// The scenario name (`host.enable`).
    pub const fn name(self) -> &'static str {
        match self {
            EnableDesign::BootCpuhp => "boot-cpuhp",
            EnableDesign::KvmHardwareEnable => "kvm-hardware-enable",
            EnableDesign::CpuhpUnlockedUsage => "cpuhp-unlocked-usage",
            EnableDesign::LpInitWithoutVmxon => "lp-init-without-vmxon",
            EnableDesign::CpusReadLockVtInit => "cpus-read-lock-vt-init",
        }
    }

    pub fn from_name(name: &str) -> Option<EnableDesign> {
        EnableDesign::ALL.iter().copied().find(|design| design.name() == name)
    }

    /// Where the design comes from, for `tdxsim list designs`.
    pub const fn source(self) -> &'static str {
        match self {
            EnableDesign::BootCpuhp => {
                "current: TDX at boot, VMXON refcount, virt/tdx cpuhp state (Sean Christopherson, v3 00/16, 2026-02-13)"
            }
            EnableDesign::KvmHardwareEnable => {
                "H2: tdx_cpu_enable() in KVM's hardware enable after VMXON (Kai Huang, 2024-03-22)"
            }
            EnableDesign::CpuhpUnlockedUsage => {
                "H3: TDX cpuhp state reads kvm_usage_count without kvm_lock (Kai Huang, 2024-03-22)"
            }
            EnableDesign::LpInitWithoutVmxon => {
                "H4: TDX cpuhp state, tdx_cpu_enable() without VMXON (Kai Huang, 2024-03-22)"
            }
            EnableDesign::CpusReadLockVtInit => {
                "H0: cpus_read_lock() across vt_init(), the read lock nested (Kai Huang, 2024-03-22)"
            }
        }
    }
}

/// TDX's kernel state: `tdx_module_state`, the per-CPU flags, the locks of enabling and update.
pub struct TdxState {
    /// `tdx_module_state.initialized`: TDX is usable.
    pub module_initialized: Cell<bool>,
    /// `tdx_module_state.sysinit_done` / `.sysinit_ret`. Protected by sysinit_lock.
    pub sysinit_done: Cell<bool>,
    pub sysinit_ret: Cell<Result<(), Errno>>,
    /// `sysinit_lock`: raw spinlock around TDH.SYS.INIT-once.
    pub sysinit_lock: Spinlock,
    /// Per-CPU `tdx_lp_initialized`.
    pub lp_initialized: Vec<Cell<bool>>,
    /// Per-CPU `virtualization_nr_users`, the VMXON refcount of arch/x86/virt/hw.c.
    pub virtualization_nr_users: Vec<Cell<u32>>,
    /// `seamldr_lock`: one CPU at a time in the P-SEAMLDR.
    pub seamldr_lock: Spinlock,
    /// U6's `update_rwsem`: TD builds read, the update writes.
    pub update_rwsem: RwSem,
}

impl TdxState {
    pub fn new(sim: &sim_core::Sim, config: &HostConfig) -> TdxState {
        let possible = config.possible_cpus as usize;
        // Enabled at boot: every platform LP did LP.INIT and TDX holds a VMX reference.
        let booted = config.tdx_initialized;
        TdxState {
            module_initialized: Cell::new(booted),
            sysinit_done: Cell::new(booted),
            sysinit_ret: Cell::new(Ok(())),
            sysinit_lock: Spinlock::new_raw(sim, "sysinit_lock", config.costs.spin_handoff),
            lp_initialized: (0..possible).map(|_| Cell::new(booted)).collect(),
            virtualization_nr_users: (0..possible).map(|_| Cell::new(u32::from(booted))).collect(),
            seamldr_lock: Spinlock::new_raw_irqsave(sim, "seamldr_lock", config.costs.spin_handoff),
            update_rwsem: RwSem::new(sim, "update_rwsem", false),
        }
    }
}

/// `seamcall_prerr()`'s mapping of a status to an errno (spec/host-algorithms.md §1.2).
pub fn seamcall_errno(output: LeafOutput) -> Result<(), Errno> {
    let status = output.status;
    if status.is_success() {
        return Ok(());
    }
    // The software-defined codes differ only in their low bits: compare them whole.
    if status == TDX_SEAMCALL_VMFAILINVALID {
        return Err(Errno::ENODEV);
    }
    if status == TDX_SEAMCALL_UD {
        return Err(Errno::EACCES);
    }
    Err(Errno::EIO)
}

/// `x86_virt_get_ref(VMX)`: VMXON on this CPU's 0 -> 1. arch/x86/virt/hw.c.
pub async fn x86_virt_get_ref(cpu: &Cpu) -> Result<(), Errno> {
    // The refcount is per CPU: preemption stays off while it is read and VMXON runs.
    cpu.preempt_disable();
    let users = &cpu.host().tdx.virtualization_nr_users[cpu.id.0 as usize];
    users.set(users.get() + 1);
    let mut ret = Ok(());
    if users.get() == 1
        && let Err(errno) = cpu_vmxon(cpu).await
    {
        users.set(users.get() - 1);
        ret = Err(errno);
    }
    cpu.preempt_enable();
    ret
}

/// `x86_virt_put_ref(VMX)`: VMXOFF on 1 -> 0.
pub async fn x86_virt_put_ref(cpu: &Cpu) {
    cpu.preempt_disable();
    let users = &cpu.host().tdx.virtualization_nr_users[cpu.id.0 as usize];
    cannot_fail(cpu, users.get() > 0, "x86_virt_put_ref", || "the VMX refcount is already 0".to_string());
    users.set(users.get().saturating_sub(1));
    if users.get() == 0 {
        cpu_vmxoff(cpu).await;
    }
    cpu.preempt_enable();
}

/// TDH.SYS.INIT once, its result cached, failures included.
///
/// Kernel: `try_init_module_global()`, arch/x86/virt/vmx/tdx/tdx.c.
pub async fn try_init_module_global(cpu: &Cpu) -> Result<(), Errno> {
    let tdx = &cpu.host().tdx;
    raw_spin_lock(cpu, tdx.sysinit_lock).await;
    // sysinit_done and sysinit_ret are protected by sysinit_lock.
    lockdep_assert_held(cpu, tdx.sysinit_lock.resource, "try_init_module_global");
    if tdx.sysinit_done.get() {
        let ret = tdx.sysinit_ret.get();
        raw_spin_unlock(cpu, tdx.sysinit_lock);
        return ret;
    }
    let ret = seamcall_errno(seamcall(cpu, LeafCall::SysInit).await);
    tdx.sysinit_ret.set(ret);
    tdx.sysinit_done.set(true);
    raw_spin_unlock(cpu, tdx.sysinit_lock);
    ret
}

/// Makes this CPU TDX-capable: SYS.INIT once for the module, then LP.INIT here.
///
/// Kernel: `tdx_cpu_enable()`, arch/x86/virt/vmx/tdx/tdx.c (current form, §2.1.3).
pub async fn tdx_cpu_enable(cpu: &Cpu) -> Result<(), Errno> {
    let lp_initialized = &cpu.host().tdx.lp_initialized[cpu.id.0 as usize];
    if lp_initialized.get() {
        return Ok(());
    }
    try_init_module_global(cpu).await?;
    seamcall_errno(seamcall(cpu, LeafCall::SysLpInit).await)?;
    lp_initialized.set(true);
    Ok(())
}

/// The cpuhp startup callback "virt/tdx:online": a VMX reference, then `tdx_cpu_enable()`;
/// a failure refuses the CPU. Kernel: `tdx_online_cpu()` (§2.1.4).
pub async fn tdx_online_cpu(cpu: &Cpu) -> Result<(), Errno> {
    // In the hotplug thread of the CPU coming up: process context, its own CPU.
    might_sleep(cpu, "tdx_online_cpu");
    x86_virt_get_ref(cpu).await?;
    if let Err(errno) = tdx_cpu_enable(cpu).await {
        x86_virt_put_ref(cpu).await;
        return Err(errno);
    }
    Ok(())
}

/// The cpuhp teardown callback: refuses to take down the last online CPU of a package
/// while a TDX guest HKID exists. Kernel: `tdx_offline_cpu()` (§2.1.5).
pub async fn tdx_offline_cpu(cpu: &Cpu) -> Result<(), Errno> {
    // In the hotplug thread of the CPU going down: its own CPU, not migratable.
    cannot_fail(cpu, cpu.sim.with(|engine| engine.cpu(cpu.id).online), "tdx_offline_cpu", || {
        format!("{} runs its teardown while already offline", cpu.id)
    });
    if cpu.host().kvm.hkids_allocated.get() > 0 {
        let package = topology_physical_package_id(cpu, cpu.id);
        let online = cpu.sim.with(|engine| engine.online_cpus());
        let another_in_package = online
            .iter()
            .any(|&other| other != cpu.id && topology_physical_package_id(cpu, other) == package);
        if !another_in_package {
            // "TDX requires all packages to have an online CPU" (rate-limited warning).
            return Err(Errno::EBUSY);
        }
    }
    // WBINVD if this CPU's cache is marked incoherent, then drop the VMX reference.
    x86_virt_put_ref(cpu).await;
    Ok(())
}

/// A cpuhp callback: an async host function of the CPU it runs on.
type CallbackFn = fn(&Cpu) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Errno>> + '_>>;

fn callback(function: CallbackFn) -> OnCpu<Result<(), Errno>> {
    Rc::new(move |cpu: Cpu| Box::pin(async move { function(&cpu).await }))
}

/// A CPU left the online mask. [I] It comes back through INIT/SIPI, which resets its LP in
/// the module (no LP.INIT, VMX off), and the kernel forgets its per-CPU TDX state, so the
/// next bring-up must make it TDX-capable again (spec/seam-module.md §7).
pub fn tdx_cpu_went_offline(cpu: &Cpu, target: CpuId) {
    let tdx = &cpu.host().tdx;
    tdx.lp_initialized[target.0 as usize].set(false);
    tdx.virtualization_nr_users[target.0 as usize].set(0);
}

/// The boot-time TDX cpuhp state of §2.1, installed at boot when TDX was enabled then.
/// Its callbacks hold nothing, so a thread makes them once and every host built on it
/// shares them (a run's host is built with this state installed).
pub fn tdx_cpuhp_state() -> CpuhpState {
    thread_local! {
        static STATE: CpuhpState = CpuhpState {
            name: "virt/tdx:online",
            startup: callback(|cpu| Box::pin(tdx_online_cpu(cpu))),
            teardown: Some(callback(|cpu| Box::pin(tdx_offline_cpu(cpu)))),
        };
    }
    STATE.with(CpuhpState::clone)
}

/// The TDX cpuhp callback of H3: reads `kvm_usage_count` without `kvm_lock` to decide
/// whether to VMXON itself (Kai Huang's option 3, 2024-03-22).
async fn tdx_online_cpu_unlocked_usage(cpu: &Cpu) -> Result<(), Errno> {
    if cpu.host().kvm.usage_count.get() > 0 {
        return tdx_cpu_enable(cpu).await;
    }
    cpu_vmxon(cpu).await?;
    let ret = tdx_cpu_enable(cpu).await;
    cpu_vmxoff(cpu).await;
    ret
}

/// The TDX cpuhp callback of H4: `tdx_cpu_enable()` with no VMXON (option 4).
async fn tdx_online_cpu_without_vmxon(cpu: &Cpu) -> Result<(), Errno> {
    tdx_cpu_enable(cpu).await
}

/// KVM's cpuhp startup in the 2024 designs: when VMs exist, VMXON (and, from H2 on,
/// `tdx_cpu_enable()`) on the new CPU. Kernel: `kvm_online_cpu()` + `vt_hardware_enable()`.
async fn kvm_online_cpu(cpu: &Cpu) -> Result<(), Errno> {
    if cpu.host().kvm.usage_count.get() == 0 {
        return Ok(());
    }
    // The enable runs with IRQs off, as from the IPI of hardware_enable_all().
    let flags = cpu.local_irq_save();
    let ret = crate::kvm::main::hardware_enable(cpu).await;
    cpu.local_irq_restore(flags);
    ret
}

/// The package's first online CPU, for per-package SEAMCALLs.
pub fn first_online_cpu_of_package(cpu: &Cpu, package: u32) -> Option<CpuId> {
    let online = cpu.sim.with(|engine| engine.online_cpus());
    online.into_iter().find(|&other| topology_physical_package_id(cpu, other) == package)
}

/// TDX module initialisation after every LP did LP.INIT: metadata, SYS.CONFIG, one
/// KEY.CONFIG per package (serially, on a CPU of that package), TDMR.INIT until done.
///
/// Kernel: `init_tdx_module()`, arch/x86/virt/vmx/tdx/tdx.c (§2.1.7).
pub async fn init_tdx_module(cpu: &Cpu) -> Result<(), Errno> {
    might_sleep(cpu, "init_tdx_module");
    seamcall_errno(
        seamcall(cpu, LeafCall::SysRd { field: seam_model::call::metadata::FIELD_MODULE_HV }).await,
    )?;
    let dpamt = cpu.host().config.dpamt;
    seamcall_errno(seamcall(cpu, LeafCall::SysConfig { dpamt }).await)?;
    for package in 0..cpu.host().config.packages {
        let Some(target) = first_online_cpu_of_package(cpu, package) else {
            return Err(Errno::EINVAL);
        };
        let key_config: OnCpu<Result<(), Errno>> = Rc::new(|on: Cpu| {
            Box::pin(async move { seamcall_errno(seamcall(&on, LeafCall::SysKeyConfig).await) })
        });
        smp_call_on_cpu(cpu, target, key_config).await?;
    }
    let end = cpu.host().config.memory_bytes;
    loop {
        let output = seamcall(cpu, LeafCall::SysTdmrInit).await;
        seamcall_errno(output)?;
        if output.next.is_none_or(|next| next >= end) {
            break;
        }
        cpu.cond_resched().await;
    }
    Ok(())
}

/// Brings TDX up. In the current design (§2.1.6): install the TDX cpuhp state (every
/// online CPU does VMXON and LP.INIT, the first SYS.INIT), then initialise the module.
/// In the 2024 designs (§2.4), KVM's module load does it: VMXON and `tdx_cpu_enable()` on
/// the online CPUs, module init, VMXOFF, then KVM's (and TDX's) hotplug callbacks.
///
/// Kernel: `tdx_enable()`, arch/x86/virt/vmx/tdx/tdx.c; `vt_init()`/`tdx_bringup()` for H0-H4.
pub async fn tdx_enable(cpu: &Cpu) -> Result<(), Errno> {
    might_sleep(cpu, "tdx_enable");
    let design = cpu.host().config.enable_design;
    let ret = match design {
        EnableDesign::BootCpuhp => tdx_enable_boot_cpuhp(cpu).await,
        EnableDesign::KvmHardwareEnable
        | EnableDesign::CpuhpUnlockedUsage
        | EnableDesign::LpInitWithoutVmxon
        | EnableDesign::CpusReadLockVtInit => vt_init(cpu, design).await,
    };
    if ret.is_ok() {
        cpu.host().tdx.module_initialized.set(true);
    }
    ret
}

async fn tdx_enable_boot_cpuhp(cpu: &Cpu) -> Result<(), Errno> {
    cpuhp_setup_state(cpu, tdx_cpuhp_state()).await?;
    if let Err(errno) = init_tdx_module(cpu).await {
        cpuhp_remove_state(cpu, "virt/tdx:online").await;
        return Err(errno);
    }
    Ok(())
}

/// KVM's module load in the 2024 designs (Kai Huang's reply, 2024-03-22).
async fn vt_init(cpu: &Cpu, design: EnableDesign) -> Result<(), Errno> {
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    // H0: keep hotplug off across all of vt_init().
    if design == EnableDesign::CpusReadLockVtInit {
        down_read(cpu, hotplug_lock).await;
    }
    let ret = tdx_bringup(cpu).await;
    if design == EnableDesign::CpusReadLockVtInit {
        // kvm_init() -> static_call_update() takes cpus_read_lock() again: fine unless a
        // hotplug writer is pending by now.
        down_read(cpu, hotplug_lock).await;
        up_read(cpu, hotplug_lock);
    }
    let ret = match ret {
        Ok(()) => register_hotplug_callbacks(cpu, design).await,
        Err(errno) => Err(errno),
    };
    if design == EnableDesign::CpusReadLockVtInit {
        up_read(cpu, hotplug_lock);
    }
    ret
}

/// `hardware_setup()`'s TDX part: VMXON + `tdx_cpu_enable()` on every online CPU, module
/// init, VMXOFF everywhere.
async fn tdx_bringup(cpu: &Cpu) -> Result<(), Errno> {
    let online = cpu.sim.with(|engine| engine.online_cpus());
    let enable: OnCpu<Result<(), Errno>> = Rc::new(|on: Cpu| {
        Box::pin(async move {
            cpu_vmxon(&on).await?;
            tdx_cpu_enable(&on).await
        })
    });
    let mut ret = Ok(());
    for &target in &online {
        ret = smp_call_on_cpu(cpu, target, enable.clone()).await;
        if ret.is_err() {
            break;
        }
    }
    if ret.is_ok() {
        ret = init_tdx_module(cpu).await;
    }
    let disable: OnCpu<Result<(), Errno>> = Rc::new(|on: Cpu| {
        Box::pin(async move {
            if vmx_is_on(&on) {
                cpu_vmxoff(&on).await;
            }
            Ok(())
        })
    });
    for &target in &online {
        let _ = smp_call_on_cpu(cpu, target, disable.clone()).await;
    }
    ret
}

async fn register_hotplug_callbacks(cpu: &Cpu, design: EnableDesign) -> Result<(), Errno> {
    let kvm_state = CpuhpState {
        name: "kvm/cpu:online",
        startup: callback(|cpu| Box::pin(kvm_online_cpu(cpu))),
        teardown: None,
    };
    let tdx_state = match design {
        EnableDesign::CpuhpUnlockedUsage => Some(CpuhpState {
            name: "kvm/cpu/tdx:online",
            startup: callback(|cpu| Box::pin(tdx_online_cpu_unlocked_usage(cpu))),
            teardown: None,
        }),
        EnableDesign::LpInitWithoutVmxon => Some(CpuhpState {
            name: "kvm/cpu/tdx:online",
            startup: callback(|cpu| Box::pin(tdx_online_cpu_without_vmxon(cpu))),
            teardown: None,
        }),
        EnableDesign::BootCpuhp | EnableDesign::KvmHardwareEnable | EnableDesign::CpusReadLockVtInit => None,
    };
    // kvm_init() registers KVM's callback with the _cpuslocked form under H0.
    if design == EnableDesign::CpusReadLockVtInit {
        cpuhp_setup_state_cpuslocked(cpu, kvm_state).await?;
    } else {
        cpuhp_setup_state(cpu, kvm_state).await?;
    }
    if let Some(state) = tdx_state {
        cpuhp_setup_state(cpu, state).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use seam_model::status::TDX_OPERAND_BUSY;
    use seam_model::{LeafOutput, TdxStatus};

    use super::*;

    #[test]
    fn seamcall_errno_tells_the_software_codes_apart() {
        let errno = |status: TdxStatus| seamcall_errno(LeafOutput::status(status));
        assert_eq!(errno(TdxStatus(0)), Ok(()));
        assert_eq!(errno(TDX_SEAMCALL_VMFAILINVALID), Err(Errno::ENODEV));
        assert_eq!(errno(TDX_SEAMCALL_UD), Err(Errno::EACCES));
        assert_eq!(errno(TDX_OPERAND_BUSY), Err(Errno::EIO));
    }
}
