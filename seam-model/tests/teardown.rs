//! TD teardown (host-algorithms §4.6): TDH.MNG.VPFLUSHDONE, TDH.PHYMEM.CACHE.WB (resumable,
//! per package), TDH.MNG.KEY.FREEID and TDH.PHYMEM.PAGE.RECLAIM: every success, failure and
//! BUSY path, and a whole teardown that gives every page and DPAMT range back.

mod common;

use common::*;
use seam_model::status::{
    TDX_FLUSHVP_NOT_DONE, TDX_INTERRUPTED_RESUMABLE, TDX_LIFECYCLE_STATE_INCORRECT,
    TDX_NO_HKID_READY_TO_WBCACHE, TDX_OPERAND_ADDR_RANGE_ERROR, TDX_OPERAND_INVALID,
    TDX_PAGE_METADATA_INCORRECT, TDX_SUCCESS, TDX_TD_ASSOCIATED_PAGES_EXIST, TDX_WBCACHE_NOT_COMPLETE,
    TDX_WBCACHE_RESUME_ERROR, operand,
};
use seam_model::{
    Dpamt2M, Gpa, GuestAccept, Hpa, LeafCall, Lifecycle, Module, ModuleConfig, ModuleLock, PageType, TdId,
};

const TD2: TdId = TdId(2);

fn vpflushdone(td: TdId) -> LeafCall {
    LeafCall::MngVpflushdone { td }
}

fn freeid(td: TdId) -> LeafCall {
    LeafCall::MngKeyFreeid { td }
}

fn reclaim(page: Hpa) -> LeafCall {
    LeafCall::PageReclaim { page }
}

const START: LeafCall = LeafCall::CacheWb { resume: false };
const RESUME: LeafCall = LeafCall::CacheWb { resume: true };

/// Runs one package's write-back on `lp` as KVM's `smp_func_do_phymem_cache_wb` does:
/// resume while INTERRUPTED_RESUMABLE. Returns the calls made.
fn cache_wb(module: &mut Module, lp: sim_core::CpuId) -> u32 {
    let mut status = status_on(module, lp, START);
    let mut calls = 1;
    while status == TDX_INTERRUPTED_RESUMABLE {
        status = status_on(module, lp, RESUME);
        calls += 1;
    }
    assert_eq!(status, TDX_SUCCESS);
    calls
}

/// A runnable TD whose only vCPU was flushed: ready for VPFLUSHDONE.
fn flushed() -> (Module, Built) {
    let (mut module, built) = runnable(1);
    ok(&mut module, LeafCall::VpFlush { td: TD, tdvpr: built.tdvprs[0] });
    (module, built)
}

// ---- TDH.MNG.VPFLUSHDONE ----

#[test]
fn vpflushdone_blocks_the_td_and_owes_every_package_a_write_back() {
    let (mut module, _) = flushed();
    let ticket = held_on(&mut module, LP0, vpflushdone(TD));
    assert_eq!(ticket.locks(), [ex(ModuleLock::Tdr(TD)), ex(ModuleLock::Kot)]);
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    let td = module.td(TD).unwrap();
    assert_eq!(td.lifecycle, Lifecycle::Blocked);
    assert_eq!(td.wbinvd_pending.iter().copied().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(status_of(&mut module, vpflushdone(TD)), TDX_LIFECYCLE_STATE_INCORRECT, "only once");
}

#[test]
fn vpflushdone_while_a_vcpu_is_associated_is_flushvp_not_done() {
    let (mut module, built) = runnable(2);
    ok(&mut module, LeafCall::VpFlush { td: TD, tdvpr: built.tdvprs[0] });
    assert_eq!(status_of(&mut module, vpflushdone(TD)), TDX_FLUSHVP_NOT_DONE, "the second vCPU");
    assert_eq!(module.td(TD).unwrap().lifecycle, Lifecycle::KeysConfigured);
}

#[test]
fn vpflushdone_works_before_the_keys_are_configured() {
    let mut module = module();
    back(&mut module, 1);
    ok(&mut module, LeafCall::MngCreate { td: TD, tdr: control(0) });
    ok_on(&mut module, LP0, LeafCall::MngKeyConfig { td: TD });
    assert_eq!(module.td(TD).unwrap().lifecycle, Lifecycle::HkidAssigned, "package 1 has no key yet");
    ok(&mut module, vpflushdone(TD));
}

#[test]
fn vpflushdone_is_busy_tdr_while_a_guest_runs_and_busy_kot_against_cache_wb() {
    let (mut module, built) = runnable(1);
    let run = enter(&mut module, LP0, built.tdvprs[0]);
    assert_eq!(done_on(&mut module, LP1, vpflushdone(TD)), (busy(operand::TDR), 1));
    module.exit_guest(run, interrupt(0));
    ok(&mut module, LeafCall::VpFlush { td: TD, tdvpr: built.tdvprs[0] });
    // Another TD's flushed HKID gives CACHE.WB something to write back.
    build(&mut module, TD2, 20, 0, true);
    ok(&mut module, vpflushdone(TD2));
    let writer = held_on(&mut module, LP2, START);
    assert_eq!(writer.locks(), [ex(ModuleLock::Wbcache(1)), sh(ModuleLock::Kot)]);
    assert_eq!(done_on(&mut module, LP1, vpflushdone(TD)), (busy(operand::KOT), 2));
    module.finish(writer);
    ok(&mut module, vpflushdone(TD));
}

#[test]
fn vpflushdone_of_an_unknown_td_is_operand_invalid_rcx() {
    let (mut module, _) = flushed();
    assert_eq!(
        done_on(&mut module, LP0, vpflushdone(TdId(9))).0,
        TDX_OPERAND_INVALID.with_operand(operand::RCX)
    );
}

// ---- TDH.PHYMEM.CACHE.WB ----

#[test]
fn cache_wb_with_no_flushed_hkid_is_no_hkid_ready_and_a_resume_with_nothing_to_resume_an_error() {
    let (mut module, _) = flushed();
    assert_eq!(status_of(&mut module, START), TDX_NO_HKID_READY_TO_WBCACHE);
    assert!(!TDX_NO_HKID_READY_TO_WBCACHE.is_success() && TDX_NO_HKID_READY_TO_WBCACHE.0 >> 63 == 0, "info");
    assert_eq!(status_of(&mut module, RESUME), TDX_WBCACHE_RESUME_ERROR);
}

#[test]
fn cache_wb_resumes_until_done_and_clears_only_its_packages_bit() {
    let (mut module, _) = flushed();
    ok(&mut module, vpflushdone(TD));
    assert_eq!(status_on(&mut module, LP1, START), TDX_INTERRUPTED_RESUMABLE);
    assert_eq!(status_on(&mut module, LP1, RESUME), TDX_INTERRUPTED_RESUMABLE);
    assert_eq!(status_on(&mut module, LP0, RESUME), TDX_INTERRUPTED_RESUMABLE, "any LP of the package");
    assert_eq!(module.td(TD).unwrap().wbinvd_pending.len(), 2, "nothing written back until the end");
    assert_eq!(status_on(&mut module, LP1, RESUME), TDX_SUCCESS, "the 4th call of 4 completes");
    assert_eq!(module.td(TD).unwrap().wbinvd_pending.iter().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(status_on(&mut module, LP1, RESUME), TDX_WBCACHE_RESUME_ERROR, "nothing left to resume");
    assert_eq!(cache_wb(&mut module, LP3), 4);
    assert!(module.td(TD).unwrap().wbinvd_pending.is_empty());
}

#[test]
fn cache_wb_start_restarts_an_interrupted_write_back() {
    let (mut module, _) = flushed();
    ok(&mut module, vpflushdone(TD));
    assert_eq!(status_of(&mut module, START), TDX_INTERRUPTED_RESUMABLE);
    assert_eq!(status_of(&mut module, RESUME), TDX_INTERRUPTED_RESUMABLE);
    assert_eq!(cache_wb(&mut module, LP0), 4, "a new start does the whole package again");
}

#[test]
fn cache_wb_does_not_cover_an_hkid_flushed_after_it_started() {
    let (mut module, built) = runnable(1);
    build(&mut module, TD2, 20, 0, true);
    ok(&mut module, vpflushdone(TD2));
    assert_eq!(status_of(&mut module, START), TDX_INTERRUPTED_RESUMABLE);
    ok(&mut module, LeafCall::VpFlush { td: TD, tdvpr: built.tdvprs[0] });
    ok(&mut module, vpflushdone(TD));
    while status_of(&mut module, RESUME) == TDX_INTERRUPTED_RESUMABLE {}
    assert!(!module.td(TD2).unwrap().wbinvd_pending.contains(&0));
    assert!(module.td(TD).unwrap().wbinvd_pending.contains(&0), "flushed after the start");
}

#[test]
fn cache_wb_is_busy_wbcache_on_its_package_only_and_busy_kot_against_freeid() {
    let (mut module, _) = flushed();
    ok(&mut module, vpflushdone(TD));
    let first = held_on(&mut module, LP0, START);
    assert_eq!(done_on(&mut module, LP1, START), (busy(operand::WBCACHE), 1));
    let other_package = held_on(&mut module, LP2, START);
    assert_eq!(module.finish(first).status, TDX_INTERRUPTED_RESUMABLE);
    assert_eq!(module.finish(other_package).status, TDX_INTERRUPTED_RESUMABLE);
    let freeing = held_on(&mut module, LP3, freeid(TD));
    assert_eq!(freeing.locks(), [ex(ModuleLock::Tdr(TD)), ex(ModuleLock::Kot)]);
    assert_eq!(done_on(&mut module, LP0, RESUME), (busy(operand::KOT), 2));
    assert_eq!(module.finish(freeing).status, TDX_WBCACHE_NOT_COMPLETE);
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn one_call_does_the_whole_write_back_when_configured_so() {
    let mut module = Module::new(ModuleConfig { cache_wb_calls: 1, ..config(true) });
    back(&mut module, 1);
    build(&mut module, TD, 0, 0, true);
    ok(&mut module, vpflushdone(TD));
    assert_eq!(cache_wb(&mut module, LP0), 1);
    assert_eq!(cache_wb(&mut module, LP2), 1);
    ok(&mut module, freeid(TD));
}

// ---- TDH.MNG.KEY.FREEID ----

#[test]
fn freeid_before_every_package_wrote_back_is_wbcache_not_complete() {
    let (mut module, _) = flushed();
    ok(&mut module, vpflushdone(TD));
    assert_eq!(status_of(&mut module, freeid(TD)), TDX_WBCACHE_NOT_COMPLETE);
    cache_wb(&mut module, LP0);
    assert_eq!(status_of(&mut module, freeid(TD)), TDX_WBCACHE_NOT_COMPLETE, "package 1 still owes it");
    cache_wb(&mut module, LP2);
    ok(&mut module, freeid(TD));
    assert_eq!(module.td(TD).unwrap().lifecycle, Lifecycle::Teardown);
    assert_eq!(status_of(&mut module, freeid(TD)), TDX_LIFECYCLE_STATE_INCORRECT, "only once");
}

#[test]
fn freeid_before_vpflushdone_is_lifecycle_state_incorrect_before_the_kot() {
    let (mut module, _) = flushed();
    let ticket = held_on(&mut module, LP0, freeid(TD));
    assert_eq!(ticket.locks(), [ex(ModuleLock::Tdr(TD))], "the life cycle is checked before KOT");
    assert_eq!(module.finish(ticket).status, TDX_LIFECYCLE_STATE_INCORRECT);
}

#[test]
fn freeid_is_busy_kot_against_cache_wb_and_busy_tdr_against_itself() {
    let (mut module, _) = flushed();
    ok(&mut module, vpflushdone(TD));
    let writer = held_on(&mut module, LP2, START);
    assert_eq!(done_on(&mut module, LP0, freeid(TD)), (busy(operand::KOT), 2));
    module.finish(writer);
    let first = held_on(&mut module, LP1, freeid(TD));
    assert_eq!(done_on(&mut module, LP0, freeid(TD)), (busy(operand::TDR), 1));
    module.finish(first);
}

// ---- TDH.PHYMEM.PAGE.RECLAIM ----

/// A TD with a private page at GPA 0x1000 (accepted), torn down to TEARDOWN.
fn torn_down() -> (Module, Built, Hpa) {
    let (mut module, built) = runnable(1);
    back(&mut module, 2);
    let private = page(2, 9);
    aug(&mut module, 0x1000, private);
    let run = enter(&mut module, LP0, built.tdvprs[0]);
    let GuestAccept::Locked(ticket) = module.guest_accept(run, Gpa(0x1000)) else { panic!("PENDING") };
    let (run, _) = module.finish_accept(ticket);
    module.exit_guest(run, interrupt(0));
    ok(&mut module, LeafCall::VpFlush { td: TD, tdvpr: built.tdvprs[0] });
    ok(&mut module, vpflushdone(TD));
    cache_wb(&mut module, LP0);
    cache_wb(&mut module, LP2);
    ok(&mut module, freeid(TD));
    (module, built, private)
}

#[test]
fn reclaim_gives_a_private_page_back_with_the_removal_hint_at_zero() {
    let (mut module, _, private) = torn_down();
    let ticket = held_on(&mut module, LP0, reclaim(private));
    assert_eq!(
        ticket.locks(),
        [
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(2)),
            ex(ModuleLock::Pamt4K(private.pfn())),
            sh(ModuleLock::Tdr(TD)),
        ]
    );
    let children = module.td(TD).unwrap().child_pages;
    let output = module.finish(ticket);
    assert_eq!(output.status, TDX_SUCCESS);
    assert_eq!(output.value, Some(u64::from(PageType::Reg.value())), "RCX: the page type it had");
    assert!(output.removal_hint, "range 2's only page");
    assert_eq!(module.page_type(private), PageType::Nda);
    assert_eq!(module.page_owner(private), None);
    assert!(matches!(module.dpamt(2), Dpamt2M::Backed { count: 0, .. }));
    assert_eq!(module.td(TD).unwrap().child_pages, children - 1);
    assert_eq!(
        status_of(&mut module, reclaim(private)),
        TDX_PAGE_METADATA_INCORRECT.with_operand(operand::RCX)
    );
    ok(&mut module, LeafCall::PamtRemove { hpa: range(2) });
}

#[test]
fn reclaim_before_freeid_is_lifecycle_state_incorrect() {
    let (mut module, built) = flushed();
    ok(&mut module, vpflushdone(TD));
    assert_eq!(status_of(&mut module, reclaim(built.tdcx[0])), TDX_LIFECYCLE_STATE_INCORRECT);
    assert_eq!(status_of(&mut module, reclaim(built.tdr)), TDX_LIFECYCLE_STATE_INCORRECT);
    assert_eq!(module.page_type(built.tdcx[0]), PageType::Tdcx);
}

#[test]
fn reclaim_of_a_page_in_an_unbacked_range_or_not_in_use_is_page_metadata_incorrect() {
    let (mut module, _, _) = torn_down();
    let unbacked = held_on(&mut module, LP0, reclaim(page(9, 0)));
    assert_eq!(unbacked.locks().len(), 2, "the walk stopped at the unbacked 2MB entry");
    assert_eq!(module.finish(unbacked).status, TDX_PAGE_METADATA_INCORRECT.with_operand(operand::RCX));
    assert_eq!(
        status_of(&mut module, reclaim(control(100))),
        TDX_PAGE_METADATA_INCORRECT.with_operand(operand::RCX)
    );
}

#[test]
fn reclaim_of_the_tdr_waits_for_every_other_page_and_then_the_td_is_gone() {
    let (mut module, built, private) = torn_down();
    let ticket = held_on(&mut module, LP0, reclaim(built.tdr));
    assert_eq!(ticket.locks().last(), Some(&ex(ModuleLock::Tdr(TD))), "the TDR's own lock, exclusive");
    assert_eq!(module.finish(ticket).status, TDX_TD_ASSOCIATED_PAGES_EXIST);
    let mut pages = vec![private];
    pages.extend(&built.sept);
    pages.extend(&built.tdcx);
    pages.extend(&built.tdvprs);
    let types: Vec<u64> =
        pages.iter().map(|&page| run_on(&mut module, LP0, reclaim(page)).value.unwrap()).collect();
    let expected = |page_type: PageType, count| std::iter::repeat_n(u64::from(page_type.value()), count);
    let expected: Vec<u64> = expected(PageType::Reg, 1)
        .chain(expected(PageType::Ept, 3))
        .chain(expected(PageType::Tdcx, 5))
        .chain(expected(PageType::Tdvpr, 1))
        .collect();
    assert_eq!(types, expected);
    let output = run_on(&mut module, LP0, reclaim(built.tdr));
    assert_eq!(output.status, TDX_SUCCESS);
    assert_eq!(output.value, Some(u64::from(PageType::Tdr.value())));
    assert!(output.removal_hint, "range 1 is empty now");
    assert!(module.td(TD).is_none());
    assert_eq!(module.pages_in_use(1), 0);
    ok(&mut module, LeafCall::PamtRemove { hpa: range(1) });
    ok(&mut module, LeafCall::PamtRemove { hpa: range(2) });
    assert_eq!(module.held_lock_count(), 0);
    // The TD's id and owner slot are free again.
    back(&mut module, 1);
    build(&mut module, TD, 0, 1, true);
    assert_eq!(module.page_owner(control(0)), Some(TD));
}

#[test]
fn reclaim_is_busy_rcx_on_its_page_and_busy_tdr_against_the_tdr_reclaim() {
    let (mut module, built, private) = torn_down();
    let first = held_on(&mut module, LP1, reclaim(private));
    assert_eq!(done_on(&mut module, LP0, reclaim(private)), (busy(operand::RCX), 3));
    module.finish(first);
    let tdr = held_on(&mut module, LP1, reclaim(built.tdr));
    assert_eq!(done_on(&mut module, LP0, reclaim(built.tdcx[0])), (busy(operand::TDR), 4));
    assert_eq!(module.finish(tdr).status, TDX_TD_ASSOCIATED_PAGES_EXIST);
    let range_holder = held_on(&mut module, LP1, LeafCall::PamtRemove { hpa: range(1) });
    assert_eq!(done_on(&mut module, LP0, reclaim(built.tdcx[0])), (busy(operand::RCX), 2));
    assert_eq!(
        module.finish(range_holder).status.without_operand(),
        seam_model::status::TDX_PAMT_PAGE_NOT_EMPTY
    );
}

#[test]
fn reclaim_operand_errors_name_rcx() {
    let (mut module, _, _) = torn_down();
    assert_eq!(
        done_on(&mut module, LP0, reclaim(Hpa(0x1001))).0,
        TDX_OPERAND_INVALID.with_operand(operand::RCX)
    );
    let outside = done_on(&mut module, LP0, reclaim(Hpa(MEMORY))).0;
    assert_eq!(outside, TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand::RCX));
}
