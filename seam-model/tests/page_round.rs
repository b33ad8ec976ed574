//! `Module::page_round_at_once` against the calls it stands for, made one by one: the same
//! outputs and the same module afterwards, and `None` with nothing changed wherever one of
//! the calls would not go straight through.

mod common;

use common::*;
use seam_model::status::TDX_SUCCESS;
use seam_model::{
    Gpa, GuestAccept, Hpa, Leaf, LeafCall, Module, PageRound, SeptState, TdExitReason, TdxStatus,
};

/// A runnable TD with one vCPU, range 2 backed, GPA 0x1000 AUGed (PENDING) with a page of
/// range 2: the guest's first page mapped, as a boot's first fault leaves it.
fn booting() -> (Module, Hpa) {
    let (mut module, built) = runnable(1);
    back(&mut module, 2);
    aug(&mut module, 0x1000, page(2, 0));
    (module, built.tdvprs[0])
}

/// The round one call at a time, as host-model makes it in full: VP.ENTER, ACCEPT of
/// `accepted`, ACCEPT of `next` (the TD exits), PAGE.AUG of `page` at `next`.
fn one_by_one(module: &mut Module, tdvpr: Hpa, accepted: u64, next: u64, page: Hpa) -> PageRound {
    let run = enter(module, LP0, tdvpr);
    let run = match module.guest_accept(run, Gpa(accepted)) {
        GuestAccept::Locked(ticket) => {
            let (run, status) = module.finish_accept(ticket);
            assert_eq!(status, TDX_SUCCESS);
            run
        }
        other => panic!("ACCEPT of the PENDING page: {other:?}"),
    };
    let vp_enter = match module.guest_accept(run, Gpa(next)) {
        GuestAccept::Exited(output) => output,
        other => panic!("ACCEPT of the FREE page: {other:?}"),
    };
    let aug = run_on(module, LP0, LeafCall::PageAug { td: TD, gpa: Gpa(next), page });
    PageRound { vp_enter, aug }
}

fn state(module: &Module) -> String {
    format!("{module:?}")
}

#[test]
fn a_round_at_once_leaves_the_module_the_calls_leave() {
    let (mut module, tdvpr) = booting();
    let mut twin = module.clone();
    for index in 1..6u64 {
        let (accepted, next, page) = (index * 0x1000, (index + 1) * 0x1000, page(2, index));
        let expected = one_by_one(&mut module, tdvpr, accepted, next, page);
        let round = twin.page_round_at_once(LP0, TD, tdvpr, Gpa(accepted), Gpa(next), page);
        assert_eq!(round, Some(expected), "round {index}");
        assert_eq!(state(&twin), state(&module), "round {index}: the module afterwards");
    }
    let sept = &module.td(TD).unwrap().sept;
    assert_eq!((sept.state(0x5000), sept.state(0x6000)), (SeptState::Mapped, SeptState::Pending));
    let last = twin.page_round_at_once(LP0, TD, tdvpr, Gpa(0x6000), Gpa(0x7000), page(2, 6)).unwrap();
    assert_eq!(last.vp_enter.exit, Some(TdExitReason::EptViolation { gpa: Gpa(0x7000) }));
    assert_eq!(last.aug.status, TDX_SUCCESS);
}

#[test]
fn the_first_entry_associates_the_vcpu_as_vp_enter_does() {
    // VP.INIT associated the vCPU with LP0; a flush undoes it, and the round's entry must
    // associate it again.
    let (mut module, tdvpr) = booting();
    ok(&mut module, LeafCall::VpFlush { td: TD, tdvpr });
    let mut twin = module.clone();
    let expected = one_by_one(&mut module, tdvpr, 0x1000, 0x2000, page(2, 1));
    assert_eq!(twin.page_round_at_once(LP0, TD, tdvpr, Gpa(0x1000), Gpa(0x2000), page(2, 1)), Some(expected));
    assert_eq!(state(&twin), state(&module));
}

/// `page_round_at_once` refuses, and leaves the module as it was.
fn refused(module: &mut Module, tdvpr: Hpa, accepted: u64, next: u64, page: Hpa, why: &str) {
    let before = state(module);
    let round = module.page_round_at_once(LP0, TD, tdvpr, Gpa(accepted), Gpa(next), page);
    assert_eq!(round, None, "{why}");
    assert_eq!(state(module), before, "{why}: nothing changed");
}

#[test]
fn a_round_that_would_not_go_straight_through_is_refused() {
    let (mut module, tdvpr) = booting();
    refused(&mut module, tdvpr, 0x2000, 0x3000, page(2, 1), "the accepted page is not PENDING");
    refused(&mut module, tdvpr, 0x1000, 0x1000, page(2, 1), "the next page is not FREE");
    refused(&mut module, tdvpr, 0x1000, 0x20_0000, page(2, 1), "no table over the next page");
    refused(&mut module, tdvpr, 0x1000, 0x2000, page(3, 0), "the page's range has no PAMT backing");
    refused(&mut module, tdvpr, 0x1000, 0x2000, page(2, 0), "the page is the TD's already");
    refused(&mut module, tdvpr, 0x1000, 0x2000, Hpa(page(2, 1).0 + 8), "an unaligned page");

    // Another LP holds a lock a call takes: the TD's TDR (shared is fine, exclusive not),
    // the page's own PAMT entry.
    let held = held_on(&mut module, LP1, LeafCall::MngVpflushdone { td: TD });
    refused(&mut module, tdvpr, 0x1000, 0x2000, page(2, 1), "TDR held exclusive");
    module.finish(held);

    // The vCPU runs on another LP, or this LP is inside a SEAMCALL.
    let run = enter(&mut module, LP0, tdvpr);
    refused(&mut module, tdvpr, 0x1000, 0x2000, page(2, 1), "LP0 runs the guest");
    let exit = module.exit_guest(run, interrupt(0x10));
    assert!(exit.status.is_success());
    let busy = held_on(&mut module, LP0, LeafCall::Track { td: TD });
    refused(&mut module, tdvpr, 0x1000, 0x2000, page(2, 1), "LP0 is inside TRACK");
    module.finish(busy);

    // The guest holds the accepted entry's lock (its own ACCEPT in flight elsewhere).
    let run = enter(&mut module, LP0, tdvpr);
    let GuestAccept::Locked(ticket) = module.guest_accept(run, Gpa(0x1000)) else { panic!("ACCEPT locks") };
    let before = state(&module);
    assert_eq!(module.page_round_at_once(LP1, TD, tdvpr, Gpa(0x1000), Gpa(0x2000), page(2, 1)), None);
    assert_eq!(state(&module), before);
    let (run, _) = module.finish_accept(ticket);
    let _ = module.exit_guest(run, interrupt(0x20));

    // After all that, a round goes through as the calls do.
    let mut twin = module.clone();
    let (accepted, next) = (0x2000, 0x3000);
    aug(&mut module, accepted, page(2, 2));
    aug(&mut twin, accepted, page(2, 2));
    let expected = one_by_one(&mut module, tdvpr, accepted, next, page(2, 3));
    assert_eq!(twin.page_round_at_once(LP0, TD, tdvpr, Gpa(accepted), Gpa(next), page(2, 3)), Some(expected));
    assert_eq!(state(&twin), state(&module));
}

#[test]
fn a_suspected_zero_step_or_an_injected_fault_refuses_the_round() {
    let (mut module, tdvpr) = booting();
    // EPT violations on one instruction past the detector's threshold: VP.ENTER would
    // check the logged GPA (and could emulate the exit without running the guest).
    for _ in 0..=6 {
        let run = enter(&mut module, LP0, tdvpr);
        let _ = module.exit_guest(run, ept_violation(0x2000, 0x40));
    }
    assert!(module.td(TD).unwrap().vcpus[&tdvpr].zero_step_suspected());
    refused(&mut module, tdvpr, 0x1000, 0x2000, page(2, 1), "zero-step suspected");

    let (mut module, tdvpr) = booting();
    module.inject_failure(Leaf::VpEnter, TdxStatus(0x8000_0000_0000_0000));
    refused(&mut module, tdvpr, 0x1000, 0x2000, page(2, 1), "a fault injected");
}

#[test]
fn rounds_in_one_call_leave_the_module_the_calls_leave_and_stop_at_the_first_refused() {
    let (mut module, tdvpr) = booting();
    let mut twin = module.clone();
    let rounds: Vec<(Gpa, Hpa)> = (2..8u64).map(|index| (Gpa(index * 0x1000), page(2, index - 1))).collect();
    let mut accepted = 0x1000;
    let mut expected = None;
    for &(next, page) in &rounds {
        expected = Some(one_by_one(&mut module, tdvpr, accepted, next.0, page));
        accepted = next.0;
    }
    assert_eq!(twin.page_rounds_at_once(LP0, (TD, tdvpr), Gpa(0x1000), &rounds), (rounds.len(), expected));
    assert_eq!(state(&twin), state(&module));

    // A page the TD has already, third in the list: the first two rounds are made, no more.
    let (mut module, tdvpr) = booting();
    let mut twin = module.clone();
    let rounds = [
        (Gpa(0x2000), page(2, 1)),
        (Gpa(0x3000), page(2, 2)),
        (Gpa(0x4000), page(2, 1)),
        (Gpa(0x5000), page(2, 4)),
    ];
    let first = one_by_one(&mut module, tdvpr, 0x1000, 0x2000, page(2, 1));
    let second = one_by_one(&mut module, tdvpr, 0x2000, 0x3000, page(2, 2));
    assert_eq!(first.aug, second.aug);
    assert_eq!(twin.page_rounds_at_once(LP0, (TD, tdvpr), Gpa(0x1000), &rounds), (2, Some(second)));
    assert_eq!(state(&twin), state(&module));
    assert_eq!(twin.page_rounds_at_once(LP0, (TD, tdvpr), Gpa(0x1000), &[]), (0, None));
}
