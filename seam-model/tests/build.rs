//! Every success, failure and BUSY path of the TD-build leaves KVM needs besides those of
//! leaves.rs: TDH.MEM.SEPT.ADD, TDH.MEM.PAGE.ADD, TDH.VP.ADDCX and TDH.VP.INIT.

mod common;

use common::*;
use seam_model::status::{
    TDX_EPT_ENTRY_STATE_INCORRECT, TDX_EPT_WALK_FAILED, TDX_MISSING_PAMT_PAGE_PAIR, TDX_OP_STATE_INCORRECT,
    TDX_OPERAND_ADDR_RANGE_ERROR, TDX_OPERAND_INVALID, TDX_PAGE_NOT_FREE, TDX_SUCCESS,
    TDX_TD_KEYS_NOT_CONFIGURED, TDX_TDCX_NUM_INCORRECT, TDX_VCPU_STATE_INCORRECT, operand,
};
use seam_model::{
    Begin, Dpamt2M, Gpa, Hpa, LeafCall, Lifecycle, Module, ModuleConfig, ModuleLock, PageType, SeptState,
    TdId, VcpuState,
};

/// A TD created, keyed on both packages and initialised, with no S-EPT table yet.
fn initialised(module: &mut Module) {
    back(module, 1);
    ok(module, LeafCall::MngCreate { td: TD, tdr: control(0) });
    ok_on(module, LP0, LeafCall::MngKeyConfig { td: TD });
    ok_on(module, LP2, LeafCall::MngKeyConfig { td: TD });
    ok(module, LeafCall::MngInit { td: TD });
}

fn sept_add(gpa: u64, level: u8, page: Hpa) -> LeafCall {
    LeafCall::SeptAdd { td: TD, gpa: Gpa(gpa), level, page }
}

fn page_add(gpa: u64, page: Hpa) -> LeafCall {
    LeafCall::PageAdd { td: TD, gpa: Gpa(gpa), page, source: Hpa(0x3f0_0000) }
}

// ---- TDH.MEM.SEPT.ADD ----

#[test]
fn sept_add_builds_the_tree_top_down_and_assigns_each_page() {
    let mut module = module();
    initialised(&mut module);
    assert_eq!(module.td(TD).unwrap().lifecycle, Lifecycle::KeysConfigured);
    let ticket = held_on(&mut module, LP0, sept_add(0, 3, control(1)));
    assert_eq!(
        ticket.locks(),
        [
            sh(ModuleLock::Tdr(TD)),
            sh(ModuleLock::Tdcs(TD)),
            sh(ModuleLock::SeptTree(TD)),
            ex(ModuleLock::SeptNonLeafEntry(TD, 3, 0)),
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(1)),
            ex(ModuleLock::Pamt4K(control(1).pfn())),
        ]
    );
    assert_eq!(ticket.locks()[3].to_string(), "sept_entry[td1 L3 0x0] ex");
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    ok(&mut module, sept_add(0, 2, control(2)));
    ok(&mut module, sept_add(0x20_0000, 1, control(3)));
    let td = module.td(TD).unwrap();
    assert_eq!(td.sept.table_pages(), [control(1), control(2), control(3)]);
    assert_eq!(td.child_pages, 3);
    for n in 1..=3 {
        assert_eq!(module.page_type(control(n)), PageType::Ept);
        assert_eq!(module.page_owner(control(n)), Some(TD));
    }
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 4, .. }), "TDR + 3 S-EPT pages");
    // The new table holds the 4KB entries of [2MB, 4MB): AUG works there, not below.
    back(&mut module, 2);
    aug(&mut module, 0x20_1000, page(2, 0));
    let status = status_of(&mut module, LeafCall::PageAug { td: TD, gpa: Gpa(0x1000), page: page(2, 1) });
    assert_eq!(status, TDX_EPT_WALK_FAILED.with_operand(operand::RCX));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn sept_add_below_a_missing_table_is_ept_walk_failed_and_stops_at_the_tree() {
    let mut module = module();
    initialised(&mut module);
    let ticket = held_on(&mut module, LP0, sept_add(0, 1, control(1)));
    assert_eq!(ticket.locks().len(), 3, "TDR, TDCS, SEPT: the walk failed before the entry lock");
    assert_eq!(module.finish(ticket).status, TDX_EPT_WALK_FAILED.with_operand(operand::RCX));
    assert_eq!(module.page_type(control(1)), PageType::Nda);
    assert_eq!(module.td(TD).unwrap().child_pages, 0);
}

#[test]
fn sept_add_over_a_present_entry_is_ept_entry_state_incorrect_before_the_page_lock() {
    let mut module = module();
    initialised(&mut module);
    ok(&mut module, sept_add(0, 3, control(1)));
    let ticket = held_on(&mut module, LP0, sept_add(0, 3, control(2)));
    assert_eq!(ticket.locks().len(), 4, "the entry is present: no walk to the new page");
    assert_eq!(module.finish(ticket).status, TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
    assert_eq!(module.page_type(control(2)), PageType::Nda);
}

#[test]
fn sept_add_on_a_prebuilt_sept_finds_every_entry_present() {
    let mut module = module();
    module.create_td(TD);
    back(&mut module, 1);
    let status = status_of(&mut module, sept_add(0, 1, control(0)));
    assert_eq!(status, TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
}

#[test]
fn sept_add_needs_dpamt_backing_for_its_page_and_a_free_page() {
    let mut module = module();
    initialised(&mut module);
    let unbacked = status_of(&mut module, sept_add(0, 3, page(5, 0)));
    assert_eq!(unbacked, TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8));
    let in_use = status_of(&mut module, sept_add(0, 3, control(0)));
    assert_eq!(in_use, TDX_PAGE_NOT_FREE.with_operand(operand::R8), "the TDR is in use");
    let backing = status_of(&mut module, sept_add(0, 3, page(31, 2)));
    assert_eq!(backing, TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8), "range 31 is not backed");
    assert_eq!(module.td(TD).unwrap().sept.table_pages(), []);
}

#[test]
fn sept_add_before_mng_init_is_op_state_incorrect_and_after_teardown_keys_not_configured() {
    let mut module = module();
    back(&mut module, 1);
    ok(&mut module, LeafCall::MngCreate { td: TD, tdr: control(0) });
    let status = status_of(&mut module, sept_add(0, 3, control(1)));
    assert_eq!(status, TDX_TD_KEYS_NOT_CONFIGURED, "keys not on every package yet");
    ok_on(&mut module, LP0, LeafCall::MngKeyConfig { td: TD });
    ok_on(&mut module, LP2, LeafCall::MngKeyConfig { td: TD });
    let ticket = held_on(&mut module, LP0, sept_add(0, 3, control(1)));
    assert_eq!(ticket.locks().len(), 2, "TDR, TDCS: op_state is checked under the TDCS lock");
    assert_eq!(module.finish(ticket).status, TDX_OP_STATE_INCORRECT);
    ok(&mut module, LeafCall::MngInit { td: TD });
    ok(&mut module, LeafCall::MngVpflushdone { td: TD });
    let ticket = held_on(&mut module, LP0, sept_add(0, 3, control(1)));
    assert_eq!(ticket.locks(), [sh(ModuleLock::Tdr(TD))], "the life cycle is checked before the TDCS lock");
    assert_eq!(module.finish(ticket).status, TDX_TD_KEYS_NOT_CONFIGURED);
}

#[test]
fn sept_add_is_busy_sept_while_range_block_holds_the_tree() {
    let (mut module, _) = runnable(0);
    back(&mut module, 2);
    aug(&mut module, 0x1000, page(2, 0));
    let blocker = held_on(&mut module, LP1, LeafCall::RangeBlock { td: TD, gpa: Gpa(0x1000) });
    let (status, try_locks) = done_on(&mut module, LP0, sept_add(0x20_0000, 1, control(10)));
    assert_eq!(status, busy(operand::SEPT));
    assert_eq!(try_locks, 3);
    assert_eq!(module.finish(blocker).status, TDX_SUCCESS);
    ok(&mut module, sept_add(0x20_0000, 1, control(10)));
}

#[test]
fn sept_add_of_one_entry_twice_is_busy_sept_entry_and_the_loser_claims_it() {
    let (mut module, _) = runnable(0);
    let first = held_on(&mut module, LP1, sept_add(0x20_0000, 1, control(10)));
    let (status, try_locks) = done_on(&mut module, LP0, sept_add(0x20_0000, 1, control(11)));
    assert_eq!(status, busy(operand::SEPT_ENTRY));
    assert_eq!(try_locks, 4);
    assert!(module.td(TD).unwrap().sept.non_leaf_host_priority(0x20_0000, 1), "the losing host set HP");
    assert_eq!(module.finish(first).status, TDX_SUCCESS);
    let retry = status_of(&mut module, sept_add(0x20_0000, 1, control(11)));
    assert_eq!(retry, TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX), "the winner linked it");
    assert!(!module.td(TD).unwrap().sept.non_leaf_host_priority(0x20_0000, 1), "a host win clears HP");
}

#[test]
fn sept_add_is_busy_r8_while_pamt_add_holds_its_pages_range() {
    let (mut module, _) = runnable(0);
    let holder =
        held_on(&mut module, LP1, LeafCall::PamtAdd { hpa: range(3), pair: [page(31, 6), page(31, 7)] });
    let (status, try_locks) = done_on(&mut module, LP0, sept_add(0x20_0000, 1, page(3, 0)));
    assert_eq!(status, busy(operand::R8));
    assert_eq!(try_locks, 6);
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    ok(&mut module, sept_add(0x20_0000, 1, page(3, 0)));
}

#[test]
fn sept_add_is_busy_tdr_while_page_add_holds_it_exclusive() {
    let mut module = module();
    initialised(&mut module);
    ok(&mut module, sept_add(0, 3, control(1)));
    ok(&mut module, sept_add(0, 2, control(2)));
    ok(&mut module, sept_add(0, 1, control(3)));
    back(&mut module, 2);
    let adder = held_on(&mut module, LP1, page_add(0x1000, page(2, 0)));
    assert_eq!(done_on(&mut module, LP0, sept_add(0x20_0000, 1, control(4))), (busy(operand::TDR), 1));
    assert_eq!(module.finish(adder).status, TDX_SUCCESS);
}

#[test]
fn sept_add_operand_errors_name_their_register() {
    let mut module = module();
    initialised(&mut module);
    let rcx = TDX_OPERAND_INVALID.with_operand(operand::RCX);
    assert_eq!(done_on(&mut module, LP0, sept_add(0, 0, control(1))).0, rcx, "level 0 has no table to add");
    assert_eq!(done_on(&mut module, LP0, sept_add(0, 4, control(1))).0, rcx, "above the root");
    assert_eq!(done_on(&mut module, LP0, sept_add(0x1000, 1, control(1))).0, rcx, "not 2MB aligned");
    assert_eq!(done_on(&mut module, LP0, sept_add(0x20_0000, 2, control(1))).0, rcx, "not 1GB aligned");
    assert_eq!(done_on(&mut module, LP0, sept_add(1 << 47, 3, control(1))).0, rcx, "a shared GPA");
    let other_td = LeafCall::SeptAdd { td: TdId(9), gpa: Gpa(0), level: 3, page: control(1) };
    assert_eq!(done_on(&mut module, LP0, other_td).0, TDX_OPERAND_INVALID.with_operand(operand::RDX));
    let r8 = TDX_OPERAND_INVALID.with_operand(operand::R8);
    assert_eq!(done_on(&mut module, LP0, sept_add(0, 3, Hpa(control(1).0 + 8))).0, r8);
    let outside = done_on(&mut module, LP0, sept_add(0, 3, Hpa(MEMORY))).0;
    assert_eq!(outside, TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand::R8));
}

// ---- TDH.MEM.PAGE.ADD ----

#[test]
fn page_add_maps_a_measured_page_with_the_tdr_exclusive() {
    let mut module = module();
    let built = {
        back(&mut module, 1);
        build(&mut module, TD, 0, 0, false)
    };
    back(&mut module, 2);
    let ticket = held_on(&mut module, LP0, page_add(0x5000, page(2, 7)));
    assert_eq!(
        ticket.locks(),
        [
            ex(ModuleLock::Tdr(TD)),
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(2)),
            ex(ModuleLock::Pamt4K(page(2, 7).pfn())),
        ],
        "no TDCS or SEPT lock: the TDR exclusive keeps every other leaf off"
    );
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    let entry = module.td(TD).unwrap().entry(0x5000);
    assert_eq!((entry.state, entry.hpa), (SeptState::Mapped, page(2, 7)), "no ACCEPT needed");
    assert_eq!(module.page_type(page(2, 7)), PageType::Reg);
    assert_eq!(module.page_owner(page(2, 7)), Some(TD));
    assert!(matches!(module.dpamt(2), Dpamt2M::Backed { count: 1, .. }));
    assert_eq!(module.td(TD).unwrap().child_pages, built.sept.len() as u64 + 1);
    ok(&mut module, LeafCall::MrFinalize { td: TD });
    let late = status_of(&mut module, page_add(0x6000, page(2, 8)));
    assert_eq!(late, TDX_OP_STATE_INCORRECT, "PAGE.ADD is build-time only");
}

#[test]
fn page_add_state_failures() {
    let mut module = module();
    back(&mut module, 1);
    build(&mut module, TD, 0, 0, false);
    back(&mut module, 2);
    let walk = status_of(&mut module, page_add(0x20_0000, page(2, 0)));
    assert_eq!(walk, TDX_EPT_WALK_FAILED.with_operand(operand::RCX), "no table for [2MB, 4MB)");
    ok(&mut module, page_add(0x1000, page(2, 0)));
    let twice = status_of(&mut module, page_add(0x1000, page(2, 1)));
    assert_eq!(twice, TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
    let unbacked = status_of(&mut module, page_add(0x2000, page(5, 0)));
    assert_eq!(unbacked, TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8));
    let in_use = status_of(&mut module, page_add(0x2000, page(2, 0)));
    assert_eq!(in_use, TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn page_add_operand_errors() {
    let mut module = module();
    initialised(&mut module);
    let bad_source = LeafCall::PageAdd { td: TD, gpa: Gpa(0), page: page(2, 0), source: Hpa(0x1234) };
    assert_eq!(done_on(&mut module, LP0, bad_source).0, TDX_OPERAND_INVALID.with_operand(operand::R9));
    assert_eq!(
        done_on(&mut module, LP0, page_add(0x1001, page(2, 0))).0,
        TDX_OPERAND_INVALID.with_operand(operand::RCX)
    );
    assert_eq!(
        done_on(&mut module, LP0, page_add(0, Hpa(MEMORY))).0,
        TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand::R8)
    );
}

/// The 6.19 K4 example (host-algorithms §4.7): while one ioctl's PAGE.ADD holds the TDR
/// exclusive, another's VP.ADDCX on the same TD is OPERAND_BUSY on the TDR.
#[test]
fn page_add_makes_a_concurrent_vp_addcx_busy_tdr_and_is_busy_tdr_itself_against_it() {
    let mut module = module();
    back(&mut module, 1);
    build(&mut module, TD, 0, 0, false);
    back(&mut module, 2);
    let tdvpr = control(10);
    ok(&mut module, LeafCall::VpCreate { td: TD, tdvpr });
    let adder = held_on(&mut module, LP1, page_add(0x1000, page(2, 0)));
    let addcx = LeafCall::VpAddcx { td: TD, tdvpr, tdcx: control(11) };
    assert_eq!(done_on(&mut module, LP0, addcx), (busy(operand::TDR), 2), "TDVPR taken, TDR busy");
    assert_eq!(module.finish(adder).status, TDX_SUCCESS);
    let addcx_holder = held_on(&mut module, LP1, addcx);
    assert_eq!(done_on(&mut module, LP0, page_add(0x2000, page(2, 1))), (busy(operand::TDR), 1));
    assert_eq!(module.finish(addcx_holder).status, TDX_SUCCESS);
    let second_adder = held_on(&mut module, LP1, page_add(0x2000, page(2, 1)));
    assert_eq!(done_on(&mut module, LP0, page_add(0x3000, page(2, 2))), (busy(operand::TDR), 1));
    assert_eq!(module.finish(second_adder).status, TDX_SUCCESS);
}

#[test]
fn page_add_is_busy_r8_while_pamt_add_holds_the_target_range() {
    let mut module = module();
    back(&mut module, 1);
    build(&mut module, TD, 0, 0, false);
    let holder =
        held_on(&mut module, LP1, LeafCall::PamtAdd { hpa: range(2), pair: [page(31, 4), page(31, 5)] });
    assert_eq!(done_on(&mut module, LP0, page_add(0x1000, page(2, 0))), (busy(operand::R8), 3));
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    ok(&mut module, page_add(0x1000, page(2, 0)));
}

// ---- TDH.VP.ADDCX and TDH.VP.INIT ----

fn created_vcpu() -> (Module, Hpa) {
    let mut module = module();
    back(&mut module, 1);
    build(&mut module, TD, 0, 0, false);
    let tdvpr = control(10);
    ok(&mut module, LeafCall::VpCreate { td: TD, tdvpr });
    (module, tdvpr)
}

fn addcx(tdvpr: Hpa, tdcx: Hpa) -> LeafCall {
    LeafCall::VpAddcx { td: TD, tdvpr, tdcx }
}

#[test]
fn vp_addcx_gives_the_vcpu_a_tdcx_page() {
    let (mut module, tdvpr) = created_vcpu();
    let ticket = held_on(&mut module, LP0, addcx(tdvpr, control(11)));
    assert_eq!(
        ticket.locks(),
        [
            ex(ModuleLock::Tdvpr(TD, tdvpr)),
            sh(ModuleLock::Tdr(TD)),
            sh(ModuleLock::Tdcs(TD)),
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(1)),
            ex(ModuleLock::Pamt4K(control(11).pfn())),
        ]
    );
    assert_eq!(ticket.locks()[0].to_string(), format!("tdvpr[td1 {tdvpr}] ex"));
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    assert_eq!(module.page_type(control(11)), PageType::Tdcx);
    assert_eq!(module.page_owner(control(11)), Some(TD));
    let vcpu = &module.td(TD).unwrap().vcpus[&tdvpr];
    assert_eq!((vcpu.tdcx.as_slice(), vcpu.tdvps_pages()), ([control(11)].as_slice(), 2));
}

#[test]
fn vp_addcx_page_failures_name_rcx() {
    let (mut module, tdvpr) = created_vcpu();
    let unbacked = status_of(&mut module, addcx(tdvpr, page(6, 0)));
    assert_eq!(unbacked, TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::RCX));
    let in_use = status_of(&mut module, addcx(tdvpr, tdvpr));
    assert_eq!(in_use, TDX_PAGE_NOT_FREE.with_operand(operand::RCX));
    assert!(module.td(TD).unwrap().vcpus[&tdvpr].tdcx.is_empty());
}

#[test]
fn vp_addcx_beyond_the_maximum_is_tdcx_num_incorrect_and_after_init_vcpu_state_incorrect() {
    let (mut module, tdvpr) = created_vcpu();
    for n in 0..14 {
        ok(&mut module, addcx(tdvpr, control(11 + n)));
    }
    let ticket = held_on(&mut module, LP0, addcx(tdvpr, control(40)));
    assert_eq!(ticket.locks().len(), 3, "the vCPU is checked before the new page's lock");
    assert_eq!(module.finish(ticket).status, TDX_TDCX_NUM_INCORRECT);
    ok(&mut module, LeafCall::VpInit { td: TD, tdvpr });
    assert_eq!(status_of(&mut module, addcx(tdvpr, control(40))), TDX_VCPU_STATE_INCORRECT);
}

#[test]
fn vp_addcx_and_vp_init_after_the_build_are_op_state_incorrect() {
    let (mut module, tdvpr) = created_vcpu();
    ok(&mut module, LeafCall::MrFinalize { td: TD });
    assert_eq!(status_of(&mut module, addcx(tdvpr, control(11))), TDX_OP_STATE_INCORRECT);
    assert_eq!(status_of(&mut module, LeafCall::VpInit { td: TD, tdvpr }), TDX_OP_STATE_INCORRECT);
}

#[test]
fn vp_addcx_is_busy_on_its_tdvpr_and_on_its_page() {
    let (mut module, tdvpr) = created_vcpu();
    let holder = held_on(&mut module, LP1, addcx(tdvpr, control(11)));
    assert_eq!(done_on(&mut module, LP0, addcx(tdvpr, control(12))), (busy(operand::TDVPR), 1));
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    let range_holder =
        held_on(&mut module, LP1, LeafCall::PamtAdd { hpa: range(4), pair: [page(31, 8), page(31, 9)] });
    assert_eq!(done_on(&mut module, LP0, addcx(tdvpr, page(4, 0))), (busy(operand::RCX), 5));
    assert_eq!(module.finish(range_holder).status, TDX_SUCCESS);
}

#[test]
fn vp_addcx_operand_errors() {
    let (mut module, tdvpr) = created_vcpu();
    let not_a_vcpu = done_on(&mut module, LP0, addcx(control(12), control(11))).0;
    assert_eq!(not_a_vcpu, TDX_OPERAND_INVALID.with_operand(operand::RDX));
    let bad_page = done_on(&mut module, LP0, addcx(tdvpr, Hpa(control(11).0 + 1))).0;
    assert_eq!(bad_page, TDX_OPERAND_INVALID.with_operand(operand::RCX));
    let outside = done_on(&mut module, LP0, addcx(tdvpr, Hpa(MEMORY))).0;
    assert_eq!(outside, TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand::RCX));
}

#[test]
fn vp_init_needs_every_tdvps_page_then_associates_the_vcpu_with_its_lp() {
    let (mut module, tdvpr) = created_vcpu();
    let init = LeafCall::VpInit { td: TD, tdvpr };
    for n in 0..4 {
        ok(&mut module, addcx(tdvpr, control(11 + n)));
    }
    assert_eq!(status_on(&mut module, LP1, init), TDX_TDCX_NUM_INCORRECT, "5 of 6 TDVPS pages");
    ok(&mut module, addcx(tdvpr, control(15)));
    let ticket = held_on(&mut module, LP1, init);
    assert_eq!(
        ticket.locks(),
        [ex(ModuleLock::Tdvpr(TD, tdvpr)), sh(ModuleLock::Tdr(TD)), sh(ModuleLock::Tdcs(TD))]
    );
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    let td = module.td(TD).unwrap();
    let vcpu = &td.vcpus[&tdvpr];
    assert_eq!((vcpu.state, vcpu.associated_lp), (VcpuState::Ready, Some(LP1)));
    assert_eq!(td.num_assoc_vcpus, 1);
    assert_eq!(status_of(&mut module, init), TDX_VCPU_STATE_INCORRECT, "VP.INIT twice");
}

#[test]
fn vp_init_is_busy_tdvpr_against_addcx_and_busy_tdr_against_page_add() {
    let (mut module, tdvpr) = created_vcpu();
    back(&mut module, 2);
    let init = LeafCall::VpInit { td: TD, tdvpr };
    let holder = held_on(&mut module, LP1, addcx(tdvpr, control(11)));
    assert_eq!(done_on(&mut module, LP0, init), (busy(operand::TDVPR), 1));
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    let adder = held_on(&mut module, LP1, page_add(0x1000, page(2, 0)));
    assert_eq!(done_on(&mut module, LP0, init), (busy(operand::TDR), 2));
    assert_eq!(module.finish(adder).status, TDX_SUCCESS);
    let unknown = done_on(&mut module, LP0, LeafCall::VpInit { td: TD, tdvpr: control(30) }).0;
    assert_eq!(unknown, TDX_OPERAND_INVALID.with_operand(operand::RCX));
}

#[test]
fn a_whole_build_leaves_no_lock_and_counts_every_control_page() {
    let (module, built) = runnable(2);
    let td = module.td(TD).unwrap();
    assert_eq!(td.child_pages, (built.sept.len() + built.tdvprs.len() + built.tdcx.len()) as u64);
    assert_eq!(td.num_assoc_vcpus, 2, "VP.INIT associated both with LP0");
    assert!(td.vcpus.values().all(|vcpu| vcpu.state == VcpuState::Ready));
    assert_eq!(module.pages_in_use(1), 1 + 3 + 12);
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn two_mng_creates_of_one_td_id_in_lock_step_the_later_one_is_refused_under_the_kot() {
    let mut module = module();
    back(&mut module, 1);
    let first = LeafCall::MngCreate { td: TD, tdr: control(0) };
    let second = LeafCall::MngCreate { td: TD, tdr: control(1) };
    // Both pass their operand checks; the first takes its locks and finishes while the
    // second is between attempts, which then finds the id taken.
    let Begin::Locking(late) = module.begin(LP1, &second) else { panic!("more attempts to make") };
    ok(&mut module, first);
    let mut answer = module.step(late);
    while let Begin::Locking(ticket) = answer {
        answer = module.step(ticket);
    }
    let Begin::Held(ticket) = answer else { panic!("the KOT is free again") };
    assert_eq!(module.finish(ticket).status, TDX_OPERAND_INVALID.with_operand(operand::RCX));
    assert_eq!(module.page_type(control(1)), PageType::Nda);
    assert_eq!(module.page_owner(control(0)), Some(TD));
}

/// `Module::reset` makes what `Module::new` makes, whatever the module's earlier life left
/// (a TD built, ranges backed; other LPs, packages, memory and boot state): a
/// thread's runs reuse one module (scenarios' run.rs).
#[test]
fn a_reset_module_is_a_new_one() {
    let (mut module, _) = runnable(2);
    back(&mut module, 2);
    let smaller = ModuleConfig {
        num_lps: 1,
        packages: 1,
        initialized: false,
        ..ModuleConfig::new(16 * MB, false, false)
    };
    for config in [smaller, config(false), config(true)] {
        module.reset(config);
        assert_eq!(format!("{module:?}"), format!("{:?}", Module::new(config)), "{config:?}");
        if config.initialized && config.memory_bytes == MEMORY {
            back(&mut module, 1);
            build(&mut module, TD, 0, 1, false);
        }
    }
}
