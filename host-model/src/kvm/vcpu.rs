//! A vCPU's KVM_RUN: the run loop, the guest entry with IRQs off, TDH.VP.ENTER and the exit
//! handlers (arch/x86/kvm/x86.c, arch/x86/kvm/vmx/tdx.c).
//!
//! The loop holds `kvm->srcu` for read everywhere but inside the guest. The guest entry
//! sets `vcpu->mode = IN_GUEST_MODE` with IRQs off before it looks at requests, so a kick
//! either sees the vCPU outside (no IPI needed: it will see the request) or in guest mode
//! (the IPI makes it exit and is acknowledged once IRQs are back on).

use std::rc::Rc;

use seam_model::status::TDX_OPERAND_BUSY;
use seam_model::{LeafCall, LeafOutput, TdExitReason, TdId};
use sim_core::Span;

use super::tdx_fault::tdx_handle_ept_violation;
use super::vm::{
    KvmTd, KvmVcpu, VcpuMode, VcpuTdState, ack_kick, kvm_get_vcpu, kvm_td, kvm_vcpu_exiting_guest_mode,
    request,
};
use crate::guest::{Guest, GuestExit, GuestProgram, guest_run};
use crate::kernel::Errno;
use crate::kernel::completion::{OnCpu, smp_call_function_many};
use crate::kernel::cpu::{Cpu, mark};
use crate::kernel::lockdep::{lockdep_assert_irqs_disabled, might_sleep};
use crate::kernel::mutex::{mutex_lock, mutex_unlock};
use crate::kernel::srcu::{srcu_read_lock, srcu_read_unlock};
use crate::tdx::seamcall::{VpEnter, seamcall, tdh_vp_enter, tdh_vp_exit, tdh_vp_exited};

/// `enum exit_fastpath_completion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitFastpath {
    #[doc(alias = "EXIT_FASTPATH_NONE")]
    None,
    /// The exit needs no handler: go round the run loop (the `wait_for_sept_zap` skip, a
    /// BUSY VP.ENTER).
    #[doc(alias = "EXIT_FASTPATH_EXIT_HANDLED")]
    ExitHandled,
}

/// What the run loop does after a round: go on (1) or return to userspace with a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLoop {
    Continue,
    /// 0 to userspace (KVM_EXIT_TDX for the guest's final TDVMCALL).
    Userspace,
    Error(Errno),
}

/// `signal_pending(current)` for the thread running `vcpu`: the VMM signalled it to stop
/// (`vcpu_run`'s `for` is over, or `vmm_signal_vcpu`).
pub fn signal_pending(cpu: &Cpu, vcpu: &KvmVcpu) -> bool {
    vcpu.signal_pending.get()
        || vcpu.guest.borrow().deadline.is_some_and(|deadline| cpu.sim.now() >= deadline)
}

/// The VMM's `pthread_kill()` of the thread running vCPU `index` of `td`: a signal is
/// pending for it, and a vCPU in guest mode is kicked out (its CPU sent an IPI, which makes
/// the guest exit), so its `KVM_RUN` returns -EINTR at the next check, or at once if the
/// thread is not in it yet.
///
/// Kernel: `signal_wake_up()` -> `kick_process()` for the thread; KVM's side of it is
/// `kvm_vcpu_kick()`, virt/kvm/kvm_main.c.
pub async fn vmm_signal_vcpu(cpu: &Cpu, td: TdId, index: u32) {
    let Ok(vcpu) = kvm_get_vcpu(kvm_td(cpu, td), index) else { return };
    vcpu.signal_pending.set(true);
    if let Some(target) = kvm_vcpu_exiting_guest_mode(cpu, &vcpu) {
        let kick: OnCpu<()> = Rc::new(|on: Cpu| Box::pin(async move { ack_kick(&on).await }));
        smp_call_function_many(cpu, &[target], kick, false).await;
    }
}

/// KVM_RUN on vCPU `index` of `td`, from the VMM's vCPU thread on this CPU, until the guest
/// is done, the VMM stops it (`deadline`: returns 0 as the VMM's loop ends), or KVM returns
/// an error (-EIO for a dead VM, -EFAULT for a fault on GPAs with no memslot).
///
/// Kernel: `kvm_vcpu_ioctl(KVM_RUN)` -> `kvm_arch_vcpu_ioctl_run()` -> `vcpu_run()`,
/// arch/x86/kvm/x86.c; the VMM's loop around it.
pub async fn kvm_vcpu_ioctl_run(
    cpu: &Cpu,
    td: TdId,
    index: u32,
    program: GuestProgram,
    run_cycles: Option<u64>,
) -> Result<(), Errno> {
    might_sleep(cpu, "kvm_vcpu_ioctl");
    let kvm = kvm_td(cpu, td);
    let vcpu = kvm_get_vcpu(kvm, index)?;
    mutex_lock(cpu, vcpu.mutex).await;
    if vcpu.state.get() != VcpuTdState::Initialized || kvm.state.get() != super::vm::TdState::Runnable {
        mutex_unlock(cpu, vcpu.mutex);
        return Err(Errno::EINVAL);
    }
    let deadline = run_cycles.map(|cycles| cpu.sim.now().saturating_add(cycles));
    *vcpu.guest.borrow_mut() = Guest::new(program, deadline);
    tdx_vcpu_load(cpu, &vcpu).await;
    vcpu.task.set(Some(cpu.task));
    let ret = vcpu_run(cpu, kvm, &vcpu).await;
    vcpu.task.set(None);
    vcpu.loaded_cpu.set(None);
    mutex_unlock(cpu, vcpu.mutex);
    // Back in userspace, the thread takes the signal.
    let signalled = vcpu.signal_pending.replace(false);
    match ret {
        // The VMM's loop ends at its deadline or its signal: that was the stop.
        Err(Errno::EINTR) if deadline.is_some() || signalled => Ok(()),
        other => other,
    }
}

/// `vcpu_load()` -> `tdx_vcpu_load()`: a vCPU still associated with another CPU in the
/// module is flushed there first (TDH.VP.FLUSH by IPI, `tdx_flush_vp_on_cpu()`).
async fn tdx_vcpu_load(cpu: &Cpu, vcpu: &Rc<KvmVcpu>) {
    if let Some(other) = vcpu.associated_cpu.get()
        && other != cpu.id
    {
        tdx_flush_vp_on_cpu(cpu, vcpu, other).await;
    }
    vcpu.loaded_cpu.set(Some(cpu.id));
}

/// `tdx_flush_vp_on_cpu()`: TDH.VP.FLUSH on the CPU the vCPU is associated with, by IPI,
/// waiting for it.
pub async fn tdx_flush_vp_on_cpu(cpu: &Cpu, vcpu: &Rc<KvmVcpu>, target: sim_core::CpuId) {
    let Some(tdvpr) = vcpu.tdvpr.get() else { return };
    let td = vcpu.td;
    if target == cpu.id {
        tdx_flush_vp(cpu, td, tdvpr).await;
    } else {
        let flush: OnCpu<()> =
            Rc::new(move |on: Cpu| Box::pin(async move { tdx_flush_vp(&on, td, tdvpr).await }));
        smp_call_function_many(cpu, &[target], flush, true).await;
    }
    vcpu.associated_cpu.set(None);
}

/// `tdx_flush_vp()`: TDH.VP.FLUSH on this CPU (IRQs off: from the IPI or the teardown).
async fn tdx_flush_vp(cpu: &Cpu, td: TdId, tdvpr: seam_model::Hpa) {
    let output = seamcall(cpu, LeafCall::VpFlush { td, tdvpr }).await;
    let status = output.status.without_operand();
    // Not associated (already flushed) is fine; anything else is KVM's bug.
    if !status.is_success() && status != seam_model::status::TDX_VCPU_NOT_ASSOCIATED {
        cpu.warn("tdx_flush_vp", format!("KVM_BUG_ON: TDH.VP.FLUSH failed: {}", output.status));
    }
}

/// `vcpu_run()`: round after round of guest entry until one returns to userspace.
///
/// Kernel: `vcpu_run()`, arch/x86/kvm/x86.c.
async fn vcpu_run(cpu: &Cpu, kvm: &KvmTd, vcpu: &Rc<KvmVcpu>) -> Result<(), Errno> {
    let mut idx = srcu_read_lock(cpu, &kvm.srcu);
    let ret = loop {
        // Not kernel code: the simulator may run coalescable rounds at once here.
        super::coalesce::coalesce_fault_rounds(cpu, kvm, vcpu).await;
        let (back, round) = vcpu_enter_guest(cpu, kvm, vcpu, idx).await;
        idx = back;
        match round {
            RunLoop::Continue => {}
            RunLoop::Userspace => break Ok(()),
            RunLoop::Error(errno) => break Err(errno),
        }
        // xfer_to_guest_mode_handle_work(): signals end KVM_RUN, and the thread may be
        // rescheduled, with SRCU dropped.
        if signal_pending(cpu, vcpu) {
            break Err(Errno::EINTR);
        }
        srcu_read_unlock(cpu, &kvm.srcu, idx);
        cpu.cond_resched().await;
        idx = srcu_read_lock(cpu, &kvm.srcu);
    };
    srcu_read_unlock(cpu, &kvm.srcu, idx);
    ret
}

/// One guest entry and exit: requests, IRQs off, `IN_GUEST_MODE`, SRCU dropped, the TDX
/// run, then IRQs back on (pending IPIs such as the kick run here), SRCU retaken, and the
/// exit handled.
///
/// Kernel: `vcpu_enter_guest()`, arch/x86/kvm/x86.c.
async fn vcpu_enter_guest(
    cpu: &Cpu,
    kvm: &KvmTd,
    vcpu: &Rc<KvmVcpu>,
    idx: crate::kernel::srcu::SrcuIdx,
) -> (crate::kernel::srcu::SrcuIdx, RunLoop) {
    cpu.work(cpu.host().costs.vcpu_run_loop).await;
    if vcpu.request_pending() {
        if vcpu.check_request(request::VM_DEAD) {
            return (idx, RunLoop::Error(Errno::EIO));
        }
        // KVM_REQ_OUTSIDE_GUEST_MODE carries no work.
        vcpu.check_request(request::OUTSIDE_GUEST_MODE);
    }
    cpu.preempt_disable();
    let irqs = cpu.local_irq_save();
    vcpu.mode.set(VcpuMode::InGuestMode);
    srcu_read_unlock(cpu, &kvm.srcu, idx);
    if vcpu.request_pending() || signal_pending(cpu, vcpu) {
        vcpu.mode.set(VcpuMode::OutsideGuestMode);
        cpu.local_irq_restore(irqs);
        cpu.maybe_stall().await;
        cpu.preempt_enable();
        return (srcu_read_lock(cpu, &kvm.srcu), RunLoop::Continue);
    }
    let (fastpath, output) = tdx_vcpu_run(cpu, kvm, vcpu).await;
    vcpu.mode.set(VcpuMode::OutsideGuestMode);
    cpu.local_irq_restore(irqs);
    // IRQs on: a pending IPI (the kick's acknowledgement) is handled here.
    cpu.maybe_stall().await;
    cpu.preempt_enable();
    let idx = srcu_read_lock(cpu, &kvm.srcu);
    let round = tdx_handle_exit(cpu, kvm, vcpu, fastpath, output).await;
    (idx, round)
}

/// `tdx_vcpu_run()`: no entry while a zap waits for the vCPUs to stay out
/// (`wait_for_sept_zap`); else TDH.VP.ENTER and the guest until it exits. A BUSY entry is
/// "handled" in the fastpath: KVM re-enables IRQs and comes round again.
///
/// Kernel: `tdx_vcpu_run()`, arch/x86/kvm/vmx/tdx.c.
async fn tdx_vcpu_run(cpu: &Cpu, kvm: &KvmTd, vcpu: &Rc<KvmVcpu>) -> (ExitFastpath, Option<LeafOutput>) {
    lockdep_assert_irqs_disabled(cpu, "tdx_vcpu_run");
    let blocks = cpu.host().config.sept_busy.kick_and_block();
    if blocks && kvm.wait_for_sept_zap.get() {
        cpu.host().stats.borrow_mut().vcpu_entries_blocked += 1;
        return (ExitFastpath::ExitHandled, None);
    }
    let output = tdx_vcpu_enter_exit(cpu, kvm, vcpu).await;
    if output.status.is_operand_busy() {
        return (ExitFastpath::ExitHandled, Some(output));
    }
    (ExitFastpath::None, Some(output))
}

/// `tdx_vcpu_enter_exit()`: TDH.VP.ENTER and the guest's run until its exit.
async fn tdx_vcpu_enter_exit(cpu: &Cpu, kvm: &KvmTd, vcpu: &Rc<KvmVcpu>) -> LeafOutput {
    let tdvpr = vcpu.tdvpr.get().expect("an initialised vCPU has a TDVPR");
    let call = LeafCall::VpEnter { td: kvm.td, tdvpr };
    cpu.host().stats.borrow_mut().vcpu_entries += 1;
    vcpu.guest.borrow_mut().pending_violation = false;
    match tdh_vp_enter(cpu, call).await {
        VpEnter::Returned(output) => output,
        VpEnter::Running(run) => {
            vcpu.associated_cpu.set(Some(cpu.id));
            match guest_run(cpu, &vcpu.guest, run).await {
                GuestExit::Exit(run, exit) => {
                    cpu.mark(Span::Instant, mark::GUEST, exit.guest_rip, 0, || {
                        format!("(guest exits: {:?})", exit.reason)
                    });
                    tdh_vp_exit(cpu, call, run, exit).await
                }
                GuestExit::Exited(output) => tdh_vp_exited(cpu, call, output).await,
            }
        }
    }
}

/// `tdx_handle_exit()`: the fastpath's "handled" goes round; an EPT violation goes to
/// `tdx_handle_ept_violation()`; an external interrupt was handled when IRQs came on; the
/// guest's final TDVMCALL goes to userspace; a failed VP.ENTER is KVM's bug.
///
/// Kernel: `tdx_handle_exit()`, arch/x86/kvm/vmx/tdx.c.
async fn tdx_handle_exit(
    cpu: &Cpu,
    kvm: &KvmTd,
    vcpu: &Rc<KvmVcpu>,
    fastpath: ExitFastpath,
    output: Option<LeafOutput>,
) -> RunLoop {
    if fastpath == ExitFastpath::ExitHandled {
        return RunLoop::Continue;
    }
    let output = output.expect("a run that was not handled in the fastpath has VP.ENTER's output");
    let Some(exit) = output.exit else {
        cpu.warn(
            "tdx_handle_exit",
            format!("KVM_BUG_ON: TDH.VP.ENTER of vCPU {} failed: {}", vcpu.index, output.status),
        );
        super::vm::kvm_vm_bugged(cpu, kvm).await;
        return RunLoop::Error(Errno::EIO);
    };
    debug_assert_ne!(output.status.without_operand(), TDX_OPERAND_BUSY);
    match exit {
        TdExitReason::EptViolation { gpa } => {
            cpu.host().stats.borrow_mut().ept_violations += 1;
            match tdx_handle_ept_violation(cpu, kvm, vcpu, gpa).await {
                Ok(()) => {
                    cpu.progress();
                    RunLoop::Continue
                }
                Err(errno) => RunLoop::Error(errno),
            }
        }
        TdExitReason::ExternalInterrupt => RunLoop::Continue,
        TdExitReason::Tdvmcall => RunLoop::Userspace,
    }
}
