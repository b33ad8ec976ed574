//! The TDX module runtime update (spec/host-algorithms.md §5): `seamldr_install_module()`
//! and the lock-step state machine every CPU runs, in every `host.update` design.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use seam_model::LeafCall;
use seam_model::status::TDX_UPDATE_COMPAT_SENSITIVE;
use sim_core::{Span, TaskId, TaskPriority, WaitId, WaitKind};

use crate::kernel::Errno;
use crate::kernel::completion::{Completion, OnCpu, spawn_on_cpu};
use crate::kernel::cpu::{Cpu, mark};
use crate::kernel::lockdep::{lockdep_assert_cpus_held, lockdep_assert_held, might_sleep};
use crate::kernel::mutex::{down_read, down_write, up_read, up_write};
use crate::kernel::spinlock::{Spinlock, raw_spin_lock_irqsave, raw_spin_unlock_irqrestore};
use crate::kernel::stop_machine::{stop_machine, stop_machine_cpuslocked};
use crate::tdx::enable::{seamcall_errno, tdx_cpu_enable};
use crate::tdx::seamcall::seamcall;

/// `host.update`: the runtime-update design (spec/host-algorithms.md §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateDesign {
    /// Today's upstream (§5.1, §5.2): `cpus_read_lock` + `stop_machine_cpuslocked`, lock-step
    /// state machine, abort after a failed step.
    #[default]
    StopMachine,
    /// U1: the state machine advances even after a failed step.
    StopMachineNoAbort,
    /// U2: no stop_machine: the state machine runs in a kworker per CPU with IRQs on while
    /// the CPUs' other tasks keep running and issuing SEAMCALLs.
    NoStopMachine,
    /// U3: `cpus_read_lock()` then plain `stop_machine()`, which takes it again.
    NestedCpusReadLock,
    /// U6: `update_rwsem`, read-held by TD builds from init to finalize, write-held by the update.
    UpdateRwsem,
}

impl UpdateDesign {
    /// Every design, in the order `host.update`'s error lists them; the first is the default.
    pub const ALL: &'static [UpdateDesign] = &[
        UpdateDesign::StopMachine,
        UpdateDesign::StopMachineNoAbort,
        UpdateDesign::NoStopMachine,
        UpdateDesign::NestedCpusReadLock,
        UpdateDesign::UpdateRwsem,
    ];

    /// The scenario name (`host.update`).
    pub const fn name(self) -> &'static str {
        match self {
            UpdateDesign::StopMachine => "stop-machine",
            UpdateDesign::StopMachineNoAbort => "stop-machine-no-abort",
            UpdateDesign::NoStopMachine => "no-stop-machine",
            UpdateDesign::NestedCpusReadLock => "nested-cpus-read-lock",
            UpdateDesign::UpdateRwsem => "update-rwsem",
        }
    }

    pub fn from_name(name: &str) -> Option<UpdateDesign> {
        UpdateDesign::ALL.iter().copied().find(|design| design.name() == name)
    }

    /// Where the design comes from, for `tdxsim list designs`.
    pub const fn source(self) -> &'static str {
        match self {
            UpdateDesign::StopMachine => {
                "current: stop_machine_cpuslocked, abort after a failed step (runtime update v10, Chao Gao, 2026-05-20)"
            }
            UpdateDesign::StopMachineNoAbort => {
                "U1: no abort, a failed SHUTDOWN still installs (Chao Gao, Re: v7 10/22, 2026-04-14)"
            }
            UpdateDesign::NoStopMachine => {
                "U2: no stop_machine, the state machine in a kworker per CPU with IRQs on while other SEAMCALLs go on (rejected, v9 12/23, 2026-05-13)"
            }
            UpdateDesign::NestedCpusReadLock => {
                "U3: cpus_read_lock() then stop_machine(), the read lock nested (known kernel pattern bug)"
            }
            UpdateDesign::UpdateRwsem => {
                "U6: update_rwsem held across TD build (Dave Hansen, Re: v2 00/21, 2025-10)"
            }
        }
    }
}

/// The states of the update, in order (`enum module_update_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UpdateState {
    #[doc(alias = "MODULE_UPDATE_START")]
    Start,
    #[doc(alias = "MODULE_UPDATE_SHUTDOWN")]
    Shutdown,
    #[doc(alias = "MODULE_UPDATE_CPU_INSTALL")]
    CpuInstall,
    #[doc(alias = "MODULE_UPDATE_CPU_INIT")]
    CpuInit,
    #[doc(alias = "MODULE_UPDATE_RUN_UPDATE")]
    RunUpdate,
    #[doc(alias = "MODULE_UPDATE_DONE")]
    Done,
}

impl UpdateState {
    /// The kernel's name of the state.
    pub const fn name(self) -> &'static str {
        match self {
            UpdateState::Start => "MODULE_UPDATE_START",
            UpdateState::Shutdown => "MODULE_UPDATE_SHUTDOWN",
            UpdateState::CpuInstall => "MODULE_UPDATE_CPU_INSTALL",
            UpdateState::CpuInit => "MODULE_UPDATE_CPU_INIT",
            UpdateState::RunUpdate => "MODULE_UPDATE_RUN_UPDATE",
            UpdateState::Done => "MODULE_UPDATE_DONE",
        }
    }

    fn next(self) -> UpdateState {
        match self {
            UpdateState::Start => UpdateState::Shutdown,
            UpdateState::Shutdown => UpdateState::CpuInstall,
            UpdateState::CpuInstall => UpdateState::CpuInit,
            UpdateState::CpuInit => UpdateState::RunUpdate,
            UpdateState::RunUpdate | UpdateState::Done => UpdateState::Done,
        }
    }
}

/// `update_ctrl`: the state, the acks of this state, the failures, and the raw spinlock.
pub struct UpdateCtrl {
    state: Cell<UpdateState>,
    num_ack: Cell<u32>,
    num_failed: Cell<u32>,
    lock: Spinlock,
    /// CPUs spinning for the next state (they re-read `state` after each `cpu_relax()`).
    spinners: RefCell<Vec<TaskId>>,
    /// U1: the state advances even after a failed step.
    abort_on_failure: bool,
    /// The CPUs that must ack the current state: a spinner waits for those that have not.
    acks: WaitId,
}

impl UpdateCtrl {
    fn wake_spinners(&self, cpu: &Cpu) {
        let relax = cpu.host().costs.cpu_relax;
        for spinner in self.spinners.borrow_mut().drain(..) {
            cpu.sim.with(|engine| engine.unpark(spinner, relax));
        }
    }
}

/// The lead CPU's SHUTDOWN step: read the handoff version, TDH.SYS.SHUTDOWN (refusing
/// compatibility-sensitive work when the module can), and on success forget that the
/// module and every CPU were initialised.
///
/// Kernel: `tdx_module_shutdown()`, arch/x86/virt/vmx/tdx/tdx.c (update v10).
async fn tdx_module_shutdown(cpu: &Cpu) -> Result<(), Errno> {
    let field = seam_model::call::metadata::FIELD_MODULE_HV;
    seamcall_errno(seamcall(cpu, LeafCall::SysRd { field }).await)?;
    let avoid_compat_sensitive = cpu.host().config.compat_sensitive;
    let tdx = &cpu.host().tdx;
    let output = seamcall(cpu, LeafCall::SysShutdown { avoid_compat_sensitive }).await;
    if output.status.without_operand() == TDX_UPDATE_COMPAT_SENSITIVE {
        return Err(Errno::EBUSY);
    }
    seamcall_errno(output)?;
    tdx.module_initialized.set(false);
    tdx.sysinit_done.set(false);
    tdx.sysinit_ret.set(Ok(()));
    // Every CPU is inside the update: no locking needed.
    for lp_initialized in &tdx.lp_initialized {
        lp_initialized.set(false);
    }
    Ok(())
}

/// `seamldr_call()`: one P-SEAMLDR call, serialised by `seamldr_lock`; refused on CPUs
/// where returning from the P-SEAMLDR clears the current VMCS.
async fn seamldr_call(cpu: &Cpu, call: LeafCall) -> Result<(), Errno> {
    // P-SEAMLDR calls come from the update's state machine, with IRQs off.
    if cpu.host().config.seamret_erratum {
        cpu.warn("seamldr_call", "P-SEAMLDR calls clear the VMCS on this CPU (X86_BUG_SEAMRET_INVD_VMCS)");
        return Err(Errno::EINVAL);
    }
    let lock = cpu.host().tdx.seamldr_lock;
    let flags = raw_spin_lock_irqsave(cpu, lock).await;
    let ret = seamcall_errno(seamcall(cpu, call).await);
    raw_spin_unlock_irqrestore(cpu, lock, flags);
    ret
}

/// The lead CPU's RUN_UPDATE step: TDH.SYS.UPDATE imports the handoff; then the version is
/// re-read and TDX is usable again. Kernel: `tdx_module_run_update()`.
async fn tdx_module_run_update(cpu: &Cpu) -> Result<(), Errno> {
    seamcall_errno(seamcall(cpu, LeafCall::SysUpdate).await)?;
    let field = seam_model::call::metadata::FIELD_MODULE_HV;
    if seamcall_errno(seamcall(cpu, LeafCall::SysRd { field }).await).is_err() {
        cpu.warn("tdx_module_run_update", "reading the new module version failed");
    }
    cpu.host().tdx.module_initialized.set(true);
    Ok(())
}

fn errno_code(ret: Result<(), Errno>) -> i32 {
    match ret {
        Ok(()) => 0,
        Err(errno) => -errno.code(),
    }
}

/// `ack_state()`: under the raw spinlock, count this CPU's ack and its failure; the last
/// ack of a state with no failure moves everyone to the next state.
async fn ack_state(cpu: &Cpu, ctrl: &UpdateCtrl, failed: bool) {
    let flags = raw_spin_lock_irqsave(cpu, ctrl.lock).await;
    // num_ack, num_failed and state are protected by update_ctrl.lock.
    lockdep_assert_held(cpu, ctrl.lock.resource, "ack_state");
    let online = cpu.sim.with(|engine| engine.num_online_cpus());
    ctrl.num_failed.set(ctrl.num_failed.get() + u32::from(failed));
    ctrl.num_ack.set(ctrl.num_ack.get() + 1);
    cpu.sim.with(|engine| {
        if let Some(party) = engine.wait_party_of(ctrl.acks, cpu.task) {
            engine.wait_party_done(ctrl.acks, party);
        }
    });
    let advance = ctrl.num_ack.get() == online && (ctrl.num_failed.get() == 0 || !ctrl.abort_on_failure);
    if advance {
        let next = ctrl.state.get().next();
        ctrl.state.set(next);
        ctrl.num_ack.set(0);
        cpu.sim.with(|engine| engine.wait_reset(ctrl.acks));
        cpu.mark(Span::Instant, mark::CALL, next as u64, 0, || format!("update state -> {}", next.name()));
    }
    raw_spin_unlock_irqrestore(cpu, ctrl.lock, flags);
    if advance || failed {
        ctrl.wake_spinners(cpu);
    }
}

/// The per-CPU state machine: follow the states in lock step, do this CPU's work in each,
/// ack it, and leave at DONE or as soon as any CPU failed.
///
/// Kernel: `do_seamldr_install_module()`, arch/x86/virt/vmx/tdx/seamldr.c (§5.2).
async fn do_seamldr_install_module(cpu: Cpu, ctrl: Rc<UpdateCtrl>) -> i32 {
    // CPU 0 leads: it is always online.
    let lead = cpu.id.0 == 0;
    cpu.sim.with(|engine| engine.wait_add_party(ctrl.acks, cpu.task));
    let mut cur = UpdateState::Start;
    let mut ret = 0;
    loop {
        let state = ctrl.state.get();
        if state != cur {
            cur = state;
            ret = match cur {
                UpdateState::Shutdown if lead => errno_code(tdx_module_shutdown(&cpu).await),
                UpdateState::CpuInstall => errno_code(seamldr_call(&cpu, LeafCall::SeamldrInstall).await),
                UpdateState::CpuInit => errno_code(tdx_cpu_enable(&cpu).await),
                UpdateState::RunUpdate if lead => errno_code(tdx_module_run_update(&cpu).await),
                _ => ret,
            };
            cpu.progress();
            ack_state(&cpu, &ctrl, ret != 0).await;
        }
        let failed = ctrl.abort_on_failure && ctrl.num_failed.get() != 0;
        if cur == UpdateState::Done || failed {
            return ret;
        }
        if ctrl.state.get() == cur {
            // cpu_relax() until the state moves or someone fails.
            ctrl.spinners.borrow_mut().push(cpu.task);
            cpu.sim.park_on(WaitKind::Spin, "the other CPUs' acks of this update state", ctrl.acks).await;
        }
    }
}

/// Installs a new TDX module at run time, preserving TDs: every CPU runs the state
/// machine with IRQs off inside stop_machine, while nothing else runs.
///
/// Kernel: `seamldr_install_module()`, arch/x86/virt/vmx/tdx/seamldr.c (update v10, §5.1).
/// Designs: `stop-machine-no-abort` (U1) keeps going after a failed step; `no-stop-machine`
/// (U2) runs the state machine in kworkers while other work goes on; `nested-cpus-read-lock`
/// (U3) calls `stop_machine()` under `cpus_read_lock()`; `update-rwsem` (U6) excludes TD
/// builds with `update_rwsem`.
pub async fn seamldr_install_module(cpu: &Cpu) -> Result<(), Errno> {
    might_sleep(cpu, "seamldr_install_module");
    let design = cpu.host().config.update_design;
    cpu.host().observer.update_started(cpu);
    // Validate the image header and fill SEAMLDR_PARAMS (a page).
    cpu.work(cpu.host().costs.alloc_page).await;
    let abort_on_failure = match design {
        UpdateDesign::StopMachineNoAbort => false,
        UpdateDesign::StopMachine
        | UpdateDesign::NoStopMachine
        | UpdateDesign::NestedCpusReadLock
        | UpdateDesign::UpdateRwsem => true,
    };
    let ctrl = Rc::new(UpdateCtrl {
        state: Cell::new(UpdateState::Shutdown),
        num_ack: Cell::new(0),
        num_failed: Cell::new(0),
        lock: Spinlock::new_raw_irqsave(&cpu.sim, "update_ctrl.lock", cpu.host().costs.spin_handoff),
        spinners: RefCell::new(Vec::new()),
        abort_on_failure,
        acks: cpu.sim.with(|engine| engine.new_wait()),
    });
    let function = {
        let ctrl = ctrl.clone();
        move |on: Cpu| do_seamldr_install_module(on, ctrl.clone())
    };
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    let update_rwsem = cpu.host().tdx.update_rwsem;
    let result = match design {
        UpdateDesign::StopMachine | UpdateDesign::StopMachineNoAbort => {
            down_read(cpu, hotplug_lock).await;
            let result = stop_machine_cpuslocked(cpu, hotplug_lock, function).await;
            up_read(cpu, hotplug_lock);
            result
        }
        UpdateDesign::NestedCpusReadLock => {
            down_read(cpu, hotplug_lock).await;
            let result = stop_machine(cpu, hotplug_lock, function).await;
            up_read(cpu, hotplug_lock);
            result
        }
        UpdateDesign::NoStopMachine => {
            down_read(cpu, hotplug_lock).await;
            let result = run_in_kworkers(cpu, Rc::new(move |on| Box::pin(function(on)))).await;
            up_read(cpu, hotplug_lock);
            result
        }
        UpdateDesign::UpdateRwsem => {
            down_write(cpu, update_rwsem, 0).await;
            down_read(cpu, hotplug_lock).await;
            let result = stop_machine_cpuslocked(cpu, hotplug_lock, function).await;
            up_read(cpu, hotplug_lock);
            up_write(cpu, update_rwsem);
            result
        }
    };
    cpu.host().observer.update_returned(cpu, ctrl.state.get().name());
    result.map_err(crate::kernel::stop_machine::errno_of)
}

/// U2: the same state machine, but in a kworker per CPU with IRQs on, while the CPUs'
/// other tasks keep running and issuing SEAMCALLs.
async fn run_in_kworkers(cpu: &Cpu, function: OnCpu<i32>) -> Result<(), i32> {
    lockdep_assert_cpus_held(cpu, "run_in_kworkers");
    let online = cpu.sim.with(|engine| engine.online_cpus());
    let mut results = Vec::new();
    let mut dones = Vec::new();
    for target in online {
        let done = Rc::new(Completion::new(cpu));
        results.push(spawn_on_cpu(
            cpu,
            target,
            TaskPriority::Normal,
            format!("kworker/{}", target.0),
            function.clone(),
            done.clone(),
        ));
        dones.push(done);
    }
    for done in &dones {
        done.wait(cpu, "the update kworkers").await;
    }
    match results.iter().filter_map(|result| *result.borrow()).find(|&ret| ret != 0) {
        Some(ret) => Err(ret),
        None => Ok(()),
    }
}
