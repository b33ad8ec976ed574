//! TDH.VP.ENTER and its guest run, the zero-step detector, the guest's TDG.MEM.PAGE.ACCEPT
//! with host priority, TDH.VP.FLUSH, and TRACK's epoch against running vCPUs: every
//! success, failure and BUSY path.

mod common;

use common::*;
use seam_model::status::{
    TDX_GPA_RANGE_NOT_BLOCKED, TDX_OP_STATE_INCORRECT, TDX_OPERAND_BUSY_HOST_PRIORITY, TDX_OPERAND_INVALID,
    TDX_PAGE_ALREADY_ACCEPTED, TDX_PREVIOUS_TLB_EPOCH_BUSY, TDX_SUCCESS, TDX_SYS_BUSY,
    TDX_TD_KEYS_NOT_CONFIGURED, TDX_TLB_TRACKING_NOT_DONE, TDX_VCPU_ASSOCIATED, TDX_VCPU_NOT_ASSOCIATED,
    TDX_VCPU_STATE_INCORRECT, operand,
};
use seam_model::{
    Begin, Entered, Gpa, GuestAccept, GuestRun, Hpa, LeafCall, Module, ModuleConfig, ModuleLock, SeptState,
    TdExit, TdExitReason, TdxStatus, VcpuState, ZeroStepSeptHold,
};

fn track() -> LeafCall {
    LeafCall::Track { td: TD }
}

fn block(gpa: u64) -> LeafCall {
    LeafCall::RangeBlock { td: TD, gpa: Gpa(gpa) }
}

fn page_remove(gpa: u64) -> LeafCall {
    LeafCall::PageRemove { td: TD, gpa: Gpa(gpa) }
}

fn flush(tdvpr: Hpa) -> LeafCall {
    LeafCall::VpFlush { td: TD, tdvpr }
}

/// A runnable TD with one vCPU (associated with LP0) and range 2 backed for private pages.
fn one_vcpu() -> (Module, Hpa) {
    let (mut module, built) = runnable(1);
    back(&mut module, 2);
    (module, built.tdvprs[0])
}

// ---- TDH.VP.ENTER ----

#[test]
fn vp_enter_runs_the_guest_until_the_host_exits_it() {
    let (mut module, tdvpr) = one_vcpu();
    let ticket = held_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr });
    assert_eq!(
        ticket.locks(),
        [
            sh(ModuleLock::Tdvpr(TD, tdvpr)),
            sh(ModuleLock::Tdr(TD)),
            sh(ModuleLock::Tdcs(TD)),
            sh(ModuleLock::EpochRefcount(TD, 0)),
        ]
    );
    assert_eq!(ticket.try_locks(), 4, "the epoch's lock, count and release are one attempt");
    assert!(!module.will_fail(&ticket));
    let Entered::Running(run) = module.enter_guest(ticket) else { panic!("the guest should run") };
    assert_eq!(
        run.locks(),
        [sh(ModuleLock::Tdvpr(TD, tdvpr)), sh(ModuleLock::Tdr(TD)), sh(ModuleLock::EpochRefcount(TD, 0))],
        "the TDCS lock is released at entry; the epoch lock was never kept"
    );
    assert!(!run.holds_sept_tree());
    assert_eq!((run.lp(), run.td(), run.tdvpr()), (LP0, TD, tdvpr));
    assert!(module.lp_is_busy(LP0), "a running guest keeps its LP inside SEAM");
    assert_eq!(module.running_vcpu(LP0), Some((TD, tdvpr)));
    let td = module.td(TD).unwrap();
    assert_eq!(td.vcpus[&tdvpr].state, VcpuState::Active);
    assert_eq!(td.epoch_refcount, [1, 0]);
    assert_eq!(td.epoch_lock.holders(), 0);
    let output = module.exit_guest(run, interrupt(0x1000));
    assert_eq!(output.status, TDX_SUCCESS.with_operand(1), "the VMX exit reason in the low bits");
    assert!(output.status.is_success());
    assert_eq!(output.exit, Some(TdExitReason::ExternalInterrupt));
    assert!(!module.lp_is_busy(LP0));
    assert_eq!(module.running_vcpu(LP0), None);
    let td = module.td(TD).unwrap();
    assert_eq!((td.vcpus[&tdvpr].state, td.epoch_refcount), (VcpuState::Ready, [0, 0]));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn each_exit_reason_has_its_vmx_number() {
    let (mut module, tdvpr) = one_vcpu();
    for (reason, number) in [
        (TdExitReason::EptViolation { gpa: Gpa(0x1000) }, 48),
        (TdExitReason::ExternalInterrupt, 1),
        (TdExitReason::Tdvmcall, 77),
    ] {
        let run = enter(&mut module, LP0, tdvpr);
        let output = module.exit_guest(run, TdExit { reason, guest_rip: number.into() });
        assert_eq!((output.status, output.exit), (TDX_SUCCESS.with_operand(number), Some(reason)));
    }
}

#[test]
fn vp_enter_on_another_lp_is_vcpu_associated_until_vp_flush_on_the_first() {
    let (mut module, tdvpr) = one_vcpu();
    let output = enter_returns(&mut module, LP1, tdvpr);
    assert_eq!(output.status, TDX_VCPU_ASSOCIATED, "VP.INIT associated it with LP0");
    assert_eq!(status_on(&mut module, LP1, flush(tdvpr)), TDX_VCPU_NOT_ASSOCIATED);
    let ticket = held_on(&mut module, LP0, flush(tdvpr));
    assert_eq!(ticket.locks(), [ex(ModuleLock::Tdvpr(TD, tdvpr)), sh(ModuleLock::Tdr(TD))]);
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    assert_eq!(module.td(TD).unwrap().num_assoc_vcpus, 0);
    assert_eq!(status_on(&mut module, LP0, flush(tdvpr)), TDX_VCPU_NOT_ASSOCIATED, "not associated anywhere");
    let run = enter(&mut module, LP1, tdvpr);
    let td = module.td(TD).unwrap();
    assert_eq!((td.vcpus[&tdvpr].associated_lp, td.num_assoc_vcpus), (Some(LP1), 1), "entry associates");
    module.exit_guest(run, interrupt(0));
    assert_eq!(enter_returns(&mut module, LP0, tdvpr).status, TDX_VCPU_ASSOCIATED);
}

#[test]
fn vp_enter_before_the_build_ends_is_op_state_incorrect() {
    let mut module = module();
    back(&mut module, 1);
    let built = build(&mut module, TD, 0, 1, false);
    let output = enter_returns(&mut module, LP0, built.tdvprs[0]);
    assert_eq!(output.status, TDX_OP_STATE_INCORRECT);
    assert_eq!(output.exit, None);
    assert!(!module.lp_is_busy(LP0));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn vp_enter_of_an_uninitialised_vcpu_is_vcpu_state_incorrect() {
    let mut module = module();
    back(&mut module, 1);
    build(&mut module, TD, 0, 0, false);
    let tdvpr = control(20);
    ok(&mut module, LeafCall::VpCreate { td: TD, tdvpr });
    ok(&mut module, LeafCall::MrFinalize { td: TD });
    let ticket = held_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr });
    assert_eq!(ticket.locks().len(), 3, "the vCPU is checked before the epoch");
    assert!(module.will_fail(&ticket));
    let Entered::Returned(output) = module.enter_guest(ticket) else { panic!("no guest to run") };
    assert_eq!(output.status, TDX_VCPU_STATE_INCORRECT);
    assert_eq!(module.td(TD).unwrap().num_assoc_vcpus, 0, "no association on the way");
}

#[test]
fn vp_enter_after_teardown_began_is_keys_not_configured() {
    let (mut module, tdvpr) = one_vcpu();
    ok(&mut module, flush(tdvpr));
    ok(&mut module, LeafCall::MngVpflushdone { td: TD });
    assert_eq!(enter_returns(&mut module, LP0, tdvpr).status, TDX_TD_KEYS_NOT_CONFIGURED);
    assert_eq!(status_of(&mut module, flush(tdvpr)), TDX_TD_KEYS_NOT_CONFIGURED, "nothing left to flush");
}

#[test]
fn vp_enter_is_busy_td_epoch_while_track_holds_it_and_stays_associated() {
    let (mut module, tdvpr) = one_vcpu();
    ok(&mut module, flush(tdvpr));
    let tracker = held_on(&mut module, LP2, track());
    let (status, try_locks) = done_on(&mut module, LP1, LeafCall::VpEnter { td: TD, tdvpr });
    assert_eq!((status, try_locks), (busy(operand::TD_EPOCH), 4));
    let td = module.td(TD).unwrap();
    assert_eq!(td.vcpus[&tdvpr].associated_lp, Some(LP1), "the module associates before the epoch");
    assert_eq!(td.epoch_refcount, [0, 0]);
    assert_eq!(module.finish(tracker).status, TDX_SUCCESS);
    let run = enter(&mut module, LP1, tdvpr);
    assert_eq!(run.locks()[2], sh(ModuleLock::EpochRefcount(TD, 1)), "it joins the new epoch");
    module.exit_guest(run, interrupt(0));
}

#[test]
fn vp_enter_is_busy_tdvpr_against_vp_flush_and_busy_tdr_against_a_tdr_writer() {
    let (mut module, tdvpr) = one_vcpu();
    let flusher = held_on(&mut module, LP1, flush(tdvpr));
    assert_eq!(done_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr }), (busy(operand::TDVPR), 1));
    assert_eq!(module.finish(flusher).status, TDX_VCPU_NOT_ASSOCIATED, "VP.FLUSH on LP1 of LP0's vCPU");
    // MNG.KEY.CONFIG takes the TDR exclusive (it then fails: the key is configured).
    let writer = held_on(&mut module, LP1, LeafCall::MngKeyConfig { td: TD });
    assert_eq!(done_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr }), (busy(operand::TDR), 2));
    module.finish(writer);
}

#[test]
fn a_running_vcpu_makes_vp_flush_busy_tdvpr_and_sys_shutdown_sys_busy() {
    let (mut module, tdvpr) = one_vcpu();
    let run = enter(&mut module, LP0, tdvpr);
    assert_eq!(done_on(&mut module, LP1, flush(tdvpr)), (busy(operand::TDVPR), 1));
    let shutdown = status_on(&mut module, LP1, LeafCall::SysShutdown { avoid_compat_sensitive: false });
    assert_eq!(shutdown, TDX_SYS_BUSY, "LP0 is inside SEAM while its guest runs");
    module.exit_guest(run, interrupt(0));
}

#[test]
#[should_panic(expected = "call Module::enter_guest")]
fn finishing_vp_enter_like_another_leaf_is_our_bug() {
    let (mut module, tdvpr) = one_vcpu();
    let ticket = held_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr });
    module.finish(ticket);
}

#[test]
#[should_panic(expected = "runs a guest")]
fn a_seamcall_from_an_lp_running_a_guest_is_our_bug() {
    let (mut module, tdvpr) = one_vcpu();
    let _run = enter(&mut module, LP0, tdvpr);
    module.begin(LP0, &track());
}

#[test]
fn vp_enter_operand_errors_name_rcx() {
    let (mut module, _) = one_vcpu();
    let invalid = TDX_OPERAND_INVALID.with_operand(operand::RCX);
    assert_eq!(done_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr: control(40) }).0, invalid);
    assert_eq!(done_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr: Hpa(0x1001) }).0, invalid);
}

// ---- zero-step ----

const FAULT_RIP: u64 = 0xffff_8000_0000_1234;

/// Enters and exits with an EPT violation on `gpa` at FAULT_RIP, `times` times.
fn fault_repeatedly(module: &mut Module, tdvpr: Hpa, gpa: u64, times: usize) {
    for _ in 0..times {
        let run = enter(module, LP0, tdvpr);
        let output = module.exit_guest(run, ept_violation(gpa, FAULT_RIP));
        assert_eq!(output.exit, Some(TdExitReason::EptViolation { gpa: Gpa(gpa) }));
    }
}

#[test]
fn six_ept_violations_on_one_instruction_arm_nothing_and_the_seventh_arms_zero_step() {
    let (mut module, tdvpr) = one_vcpu();
    fault_repeatedly(&mut module, tdvpr, 0x1000, 6);
    let vcpu = &module.td(TD).unwrap().vcpus[&tdvpr];
    assert_eq!((vcpu.epf_streak, vcpu.zero_step_suspected()), (6, false));
    let run = enter(&mut module, LP0, tdvpr);
    assert!(!run.holds_sept_tree());
    module.exit_guest(run, ept_violation(0x1000, FAULT_RIP));
    let vcpu = &module.td(TD).unwrap().vcpus[&tdvpr];
    assert_eq!(vcpu.epf_gpas, [0x1000]);
    // The next entry takes the SEPT tree exclusive and, the page still unmapped, emulates
    // the EPT violation without running the guest.
    let ticket = held_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr });
    assert_eq!(ticket.locks().last(), Some(&ex(ModuleLock::SeptTree(TD))));
    let Entered::Returned(output) = module.enter_guest(ticket) else {
        panic!("the filter emulates the exit")
    };
    assert_eq!(output.exit, Some(TdExitReason::EptViolation { gpa: Gpa(0x1000) }));
    assert_eq!(output.status, TDX_SUCCESS.with_operand(48));
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.td(TD).unwrap().vcpus[&tdvpr].epf_gpas, [0x1000], "the filter changes nothing");
}

#[test]
fn in_zero_step_mode_the_running_vcpu_makes_every_sept_user_busy_0x92() {
    let (mut module, tdvpr) = one_vcpu();
    aug(&mut module, 0x3000, page(2, 3));
    ok(&mut module, block(0x3000));
    ok(&mut module, track());
    fault_repeatedly(&mut module, tdvpr, 0x1000, 7);
    aug(&mut module, 0x1000, page(2, 0)); // the host maps the page: the filter lets it in
    let run = enter(&mut module, LP0, tdvpr);
    assert!(run.holds_sept_tree(), "WhileRunning: held until the TD exits");
    let sept = busy(operand::SEPT);
    let sept_add = LeafCall::SeptAdd { td: TD, gpa: Gpa(0x20_0000), level: 1, page: control(30) };
    assert_eq!(done_on(&mut module, LP1, sept_add).0, sept);
    assert_eq!(
        done_on(&mut module, LP1, LeafCall::PageAug { td: TD, gpa: Gpa(0x2000), page: page(2, 1) }).0,
        sept
    );
    assert_eq!(done_on(&mut module, LP1, page_remove(0x3000)).0, sept);
    assert_eq!(done_on(&mut module, LP1, block(0x1000)).0, sept);
    // Progress (another RIP) ends zero-step mode; the next entry leaves the tree alone.
    module.exit_guest(run, interrupt(FAULT_RIP + 4));
    assert!(!module.td(TD).unwrap().vcpus[&tdvpr].zero_step_suspected());
    assert_eq!(status_on(&mut module, LP1, page_remove(0x3000)), TDX_SUCCESS);
    let run = enter(&mut module, LP0, tdvpr);
    assert!(!run.holds_sept_tree());
    module.exit_guest(run, interrupt(FAULT_RIP + 8));
}

#[test]
fn with_entry_only_hold_the_tree_is_free_while_the_guest_runs() {
    let mut module =
        Module::new(ModuleConfig { zero_step_sept_hold: ZeroStepSeptHold::EntryOnly, ..config(true) });
    back(&mut module, 1);
    let built = build(&mut module, TD, 0, 1, true);
    back(&mut module, 2);
    let tdvpr = built.tdvprs[0];
    fault_repeatedly(&mut module, tdvpr, 0x1000, 7);
    aug(&mut module, 0x1000, page(2, 0));
    let ticket = held_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr });
    assert_eq!(ticket.locks().last(), Some(&ex(ModuleLock::SeptTree(TD))), "taken for the entry check");
    let Entered::Running(run) = module.enter_guest(ticket) else { panic!("the page is mapped") };
    assert!(!run.holds_sept_tree(), "released before the guest runs, as the module source does");
    assert_eq!(
        status_on(&mut module, LP1, LeafCall::PageAug { td: TD, gpa: Gpa(0x2000), page: page(2, 1) }),
        TDX_SUCCESS
    );
    module.exit_guest(run, interrupt(FAULT_RIP));
}

#[test]
fn a_zero_step_entry_is_busy_sept_while_block_holds_the_tree_and_gives_its_epoch_back() {
    let (mut module, tdvpr) = one_vcpu();
    aug(&mut module, 0x3000, page(2, 3));
    fault_repeatedly(&mut module, tdvpr, 0x1000, 7);
    let blocker = held_on(&mut module, LP1, block(0x3000));
    let (status, try_locks) = done_on(&mut module, LP0, LeafCall::VpEnter { td: TD, tdvpr });
    assert_eq!((status, try_locks), (busy(operand::SEPT), 5));
    assert_eq!(module.td(TD).unwrap().epoch_refcount, [0, 0], "the epoch count was given back");
    assert_eq!(module.finish(blocker).status, TDX_SUCCESS);
}

#[test]
fn a_pending_page_is_not_an_expected_fault_so_the_filter_lets_the_guest_in() {
    let (mut module, tdvpr) = one_vcpu();
    fault_repeatedly(&mut module, tdvpr, 0x1000, 7);
    aug(&mut module, 0x1000, page(2, 0)); // PENDING: the guest gets #VE and accepts it
    let run = enter(&mut module, LP0, tdvpr);
    assert!(run.holds_sept_tree());
    module.exit_guest(run, ept_violation(0x2000, FAULT_RIP));
    assert_eq!(module.td(TD).unwrap().vcpus[&tdvpr].epf_gpas, [0x1000, 0x2000], "still no progress");
}

// ---- TDG.MEM.PAGE.ACCEPT ----

fn accept(module: &mut Module, run: GuestRun, gpa: u64) -> GuestAccept {
    module.guest_accept(run, Gpa(gpa))
}

fn locked(answer: GuestAccept) -> seam_model::AcceptTicket {
    match answer {
        GuestAccept::Locked(ticket) => ticket,
        other => panic!("expected the ACCEPT to hold the entry, got {other:?}"),
    }
}

fn returned(answer: GuestAccept) -> (GuestRun, TdxStatus) {
    match answer {
        GuestAccept::Returned { run, status } => (run, status),
        other => panic!("expected a status for the guest, got {other:?}"),
    }
}

#[test]
fn accept_maps_a_pending_page_under_the_entrys_guest_lock() {
    let (mut module, tdvpr) = one_vcpu();
    aug(&mut module, 0x1000, page(2, 0));
    let run = enter(&mut module, LP0, tdvpr);
    let ticket = locked(accept(&mut module, run, 0x1000));
    assert!(ticket.accepts());
    assert_eq!(ticket.gpa(), Gpa(0x1000));
    assert!(module.td(TD).unwrap().entry(0x1000).locked);
    let (run, status) = module.finish_accept(ticket);
    assert_eq!(status, TDX_SUCCESS);
    let entry = module.td(TD).unwrap().entry(0x1000);
    assert_eq!((entry.state, entry.locked, entry.hpa), (SeptState::Mapped, false, page(2, 0)));
    // A second ACCEPT reads the entry under its lock and answers ALREADY_ACCEPTED.
    let ticket = locked(accept(&mut module, run, 0x1000));
    assert!(!ticket.accepts());
    let (run, status) = module.finish_accept(ticket);
    assert_eq!(status, TDX_PAGE_ALREADY_ACCEPTED);
    assert_eq!(status.0, 0x0000_0b0a_0000_0000, "informational (bit 63 clear), detail level 0");
    module.exit_guest(run, interrupt(0));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn accept_of_a_free_blocked_or_unreachable_gpa_becomes_an_ept_violation_exit() {
    let (mut module, tdvpr) = one_vcpu();
    aug(&mut module, 0x2000, page(2, 2));
    ok(&mut module, block(0x2000));
    for gpa in [0x1000, 0x2000, 0x20_0000] {
        let run = enter(&mut module, LP0, tdvpr);
        let GuestAccept::Exited(output) = accept(&mut module, run, gpa) else {
            panic!("{gpa:#x}: a TD exit")
        };
        assert_eq!(output.exit, Some(TdExitReason::EptViolation { gpa: Gpa(gpa) }));
        assert!(!module.lp_is_busy(LP0), "VP.ENTER returned");
        assert!(!module.td(TD).unwrap().entry(gpa).locked);
    }
    assert_eq!(module.td(TD).unwrap().vcpus[&tdvpr].epf_streak, 0, "ACCEPT's exits are not counted");
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn accept_of_a_misaligned_gpa_is_operand_invalid_rcx_to_the_guest() {
    let (mut module, tdvpr) = one_vcpu();
    let run = enter(&mut module, LP0, tdvpr);
    let (run, status) = returned(accept(&mut module, run, 0x1001));
    assert_eq!(status, TDX_OPERAND_INVALID.with_operand(operand::RCX));
    module.exit_guest(run, interrupt(0));
}

#[test]
fn accept_is_busy_rcx_while_a_host_leaf_holds_the_entry() {
    let (mut module, tdvpr) = one_vcpu();
    aug(&mut module, 0x1000, page(2, 0));
    let blocker = held_on(&mut module, LP1, block(0x1000));
    let run = enter(&mut module, LP0, tdvpr);
    let (run, status) = returned(accept(&mut module, run, 0x1000));
    assert_eq!(status, busy(operand::RCX));
    assert!(!module.td(TD).unwrap().entry(0x1000).host_priority, "a losing guest sets no HP");
    assert_eq!(module.finish(blocker).status, TDX_SUCCESS);
    module.exit_guest(run, interrupt(0));
}

/// Spec §2.2–2.3: once a host loses to a guest's ACCEPT, the guest's next ACCEPT backs off
/// with BUSY_HOST_PRIORITY and the host's retry wins (clearing HP).
#[test]
fn a_host_that_loses_to_accept_claims_priority_and_its_retry_wins() {
    let (mut module, tdvpr) = one_vcpu();
    aug(&mut module, 0x1000, page(2, 0));
    let run = enter(&mut module, LP0, tdvpr);
    let ticket = locked(accept(&mut module, run, 0x1000));
    assert_eq!(done_on(&mut module, LP1, block(0x1000)), (busy(operand::SEPT_ENTRY), 4));
    assert!(module.td(TD).unwrap().entry(0x1000).host_priority);
    let (run, status) = module.finish_accept(ticket);
    assert_eq!(status, TDX_SUCCESS);
    assert!(module.td(TD).unwrap().entry(0x1000).host_priority, "HP survives the guest's release");
    let (run, status) = returned(accept(&mut module, run, 0x1000));
    assert_eq!(status, TDX_OPERAND_BUSY_HOST_PRIORITY.with_operand(operand::RCX));
    assert_eq!(status_on(&mut module, LP1, block(0x1000)), TDX_SUCCESS, "the host's retry wins");
    assert!(!module.td(TD).unwrap().entry(0x1000).host_priority);
    let GuestAccept::Exited(_) = accept(&mut module, run, 0x1000) else { panic!("blocked: a TD exit") };
}

/// The older module (`module.host_priority = false`): a guest re-ACCEPTing in a loop keeps
/// winning the entry, and the host's PAGE.REMOVE loses every round (the K0 starvation).
#[test]
fn without_host_priority_an_accept_storm_keeps_beating_the_host() {
    let mut module = Module::new(config(false));
    back(&mut module, 1);
    let built = build(&mut module, TD, 0, 1, true);
    back(&mut module, 2);
    let tdvpr = built.tdvprs[0];
    aug(&mut module, 0x1000, page(2, 0));
    let mut run = enter(&mut module, LP0, tdvpr);
    for round in 0..5 {
        let ticket = locked(accept(&mut module, run, 0x1000));
        assert_eq!(ticket.accepts(), round == 0);
        assert_eq!(done_on(&mut module, LP1, block(0x1000)).0, busy(operand::SEPT_ENTRY), "round {round}");
        assert!(!module.td(TD).unwrap().entry(0x1000).host_priority, "an older module has no HP bit");
        run = module.finish_accept(ticket).0;
    }
    module.exit_guest(run, interrupt(0));
    assert_eq!(module.td(TD).unwrap().tdr_lock, seam_model::SharexHp::without_host_priority());
    let vcpu_lock = module.td(TD).unwrap().vcpus[&tdvpr].tdvpr_lock;
    assert_eq!(vcpu_lock, seam_model::SharexHp::without_host_priority(), "no HP on the new locks either");
}

// ---- TDH.VP.FLUSH ----

#[test]
fn vp_flush_is_busy_tdr_while_a_leaf_holds_the_tdr_exclusive() {
    let (mut module, tdvpr) = one_vcpu();
    let writer = held_on(&mut module, LP1, LeafCall::MngKeyConfig { td: TD });
    assert_eq!(done_on(&mut module, LP0, flush(tdvpr)), (busy(operand::TDR), 2));
    module.finish(writer);
    ok(&mut module, flush(tdvpr));
    let unknown = done_on(&mut module, LP0, flush(control(40))).0;
    assert_eq!(unknown, TDX_OPERAND_INVALID.with_operand(operand::RCX));
}

// ---- TDH.MEM.TRACK and the TLB epoch ----

#[test]
fn track_while_a_vcpu_runs_bumps_the_epoch_and_a_second_track_waits_for_it() {
    let (mut module, tdvpr) = one_vcpu();
    let run = enter(&mut module, LP0, tdvpr);
    assert_eq!(status_on(&mut module, LP1, track()), TDX_SUCCESS, "the vCPU holds no epoch lock");
    assert_eq!(module.td(TD).unwrap().td_epoch, 1);
    let ticket = held_on(&mut module, LP1, track());
    assert_eq!(ticket.locks().last(), Some(&ex(ModuleLock::Epoch(TD))));
    assert!(module.will_fail(&ticket));
    assert_eq!(module.finish(ticket).status, TDX_PREVIOUS_TLB_EPOCH_BUSY);
    assert_eq!(TDX_PREVIOUS_TLB_EPOCH_BUSY.class(), 0x02, "a retry can succeed");
    module.exit_guest(run, interrupt(0));
    assert_eq!(status_on(&mut module, LP1, track()), TDX_SUCCESS, "the old epoch drained");
    assert_eq!(module.td(TD).unwrap().td_epoch, 2);
}

#[test]
fn page_remove_waits_for_the_vcpus_of_the_blocked_epoch_to_exit() {
    let (mut module, tdvpr) = one_vcpu();
    aug(&mut module, 0x1000, page(2, 0));
    let run = enter(&mut module, LP0, tdvpr);
    assert_eq!(status_on(&mut module, LP1, block(0x1000)), TDX_SUCCESS);
    assert_eq!(status_on(&mut module, LP1, track()), TDX_SUCCESS);
    let early = status_on(&mut module, LP1, page_remove(0x1000));
    assert_eq!(early, TDX_TLB_TRACKING_NOT_DONE.with_operand(operand::RCX), "the vCPU may still cache it");
    module.exit_guest(run, interrupt(0)); // KVM's kick after TRACK
    let output = run_on(&mut module, LP1, page_remove(0x1000));
    assert_eq!(output.status, TDX_SUCCESS);
    assert!(output.removal_hint, "the range's only private page");
    let again = status_on(&mut module, LP1, page_remove(0x1000));
    assert_eq!(again, TDX_GPA_RANGE_NOT_BLOCKED.with_operand(operand::RCX));
}

#[test]
fn vp_enter_locking_interleaves_with_another_lps_track() {
    let (mut module, tdvpr) = one_vcpu();
    // VP.ENTER makes its first three attempts, then TRACK takes the epoch exclusive in
    // between, so VP.ENTER's fourth attempt fails and it undoes the rest.
    let mut answer = module.begin(LP0, &LeafCall::VpEnter { td: TD, tdvpr });
    for _ in 0..2 {
        let Begin::Locking(ticket) = answer else { panic!("more attempts to make") };
        answer = module.step(ticket);
    }
    let Begin::Locking(entering) = answer else { panic!("the epoch attempt is still to come") };
    assert_eq!(entering.locks().len(), 3);
    let tracker = held_on(&mut module, LP1, track());
    let Begin::Locking(failed) = module.step(entering) else {
        panic!("the failure is undone in a step of its own")
    };
    let Begin::Done { output, try_locks } = module.step(failed) else { panic!("then it returns") };
    assert_eq!((output.status, try_locks), (busy(operand::TD_EPOCH), 4));
    assert_eq!(module.finish(tracker).status, TDX_SUCCESS);
    assert!(!module.lp_is_busy(LP0));
    assert_eq!(module.held_lock_count(), 0);
}

// ---- the shortcuts ----

#[test]
fn a_shortcut_vcpu_of_a_shortcut_td_runs_and_accepts_on_the_prebuilt_sept() {
    let mut module = module();
    module.create_td(TD);
    let tdvpr = control(0);
    module.create_vcpu(TD, tdvpr);
    back(&mut module, 2);
    aug(&mut module, 0x40_0000, page(2, 0));
    let run = enter(&mut module, LP3, tdvpr);
    let ticket = locked(accept(&mut module, run, 0x40_0000));
    let (run, status) = module.finish_accept(ticket);
    assert_eq!(status, TDX_SUCCESS);
    let output = module.exit_guest(run, ept_violation(0x80_0000, 0));
    assert_eq!(output.exit, Some(TdExitReason::EptViolation { gpa: Gpa(0x80_0000) }));
    let td = module.td(TD).unwrap();
    assert_eq!(td.vcpus[&tdvpr].associated_lp, Some(LP3));
    assert_eq!(td.entry(0x40_0000).state, SeptState::Mapped);
    assert_eq!(module.page_type(tdvpr), seam_model::PageType::Nda, "a shortcut's pages take no memory");
}
