//! Every success and failure path of every modelled leaf, through the public API.
//!
//! Overlap is built by hand: `held(..)` begins a leaf and keeps its ticket, so a second
//! leaf begun before `finish` meets the first one's locks.

use seam_model::status::{
    TDX_EPT_ENTRY_FREE, TDX_EPT_ENTRY_STATE_INCORRECT, TDX_GPA_RANGE_ALREADY_BLOCKED,
    TDX_GPA_RANGE_NOT_BLOCKED, TDX_HPA_RANGE_NOT_FREE, TDX_MISSING_PAMT_PAGE_PAIR, TDX_NO_PAMT_PAGE_PAIR,
    TDX_OPERAND_ADDR_RANGE_ERROR, TDX_OPERAND_BUSY, TDX_OPERAND_INVALID, TDX_PAGE_NOT_FREE,
    TDX_PAMT_PAGE_NOT_EMPTY, TDX_SUCCESS, TDX_TLB_TRACKING_NOT_DONE, operand,
};
use seam_model::{
    Begin, Dpamt2M, Gpa, HeldLock, Hpa, LeafCall, LeafOutput, LockMode, Module, ModuleConfig, ModuleLock,
    PageType, SeptState, TdId, TdxStatus, Ticket,
};
use sim_core::CpuId;

const MB: u64 = 1 << 20;
/// 8 ranges: X0 = 0x0, X1 = 0x200000, ... X7 = 0xE00000.
const MEMORY: u64 = 16 * MB;
const TD: TdId = TdId(1);
const LP0: CpuId = CpuId(0);
const LP1: CpuId = CpuId(1);

/// Begins `call` on `lp` and makes its try-lock attempts back to back, with nothing in
/// between: what the whole lock set gives when no other LP moves meanwhile.
fn settle(module: &mut Module, lp: CpuId, call: &LeafCall) -> Begin {
    let mut answer = module.begin(lp, call);
    while let Begin::Locking(ticket) = answer {
        answer = module.step(ticket);
    }
    answer
}

fn range(index: u64) -> Hpa {
    Hpa(index * 2 * MB)
}

fn page(range_index: u64, page_index: u64) -> Hpa {
    Hpa(range_index * 2 * MB + page_index * 4096)
}

fn module_with(dpamt: bool, host_priority: bool) -> Module {
    // Two LPs: `run` calls on LP0, `held` on LP1.
    let mut module =
        Module::new(ModuleConfig { num_lps: 2, ..ModuleConfig::new(MEMORY, dpamt, host_priority) });
    module.create_td(TD);
    module
}

fn dpamt_module() -> Module {
    module_with(true, true)
}

/// Begins and finishes at once.
fn run(module: &mut Module, call: LeafCall) -> LeafOutput {
    match settle(module, LP0, &call) {
        Begin::Done { output, .. } => output,
        Begin::Held(ticket) => module.finish(ticket),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

fn status_of(module: &mut Module, call: LeafCall) -> TdxStatus {
    run(module, call).status
}

/// Begins a leaf that must get all its locks, and keeps them.
fn held(module: &mut Module, call: LeafCall) -> Ticket {
    match settle(module, LP1, &call) {
        Begin::Held(ticket) => ticket,
        Begin::Done { output, .. } => panic!("{call}: expected the locks, got {}", output.status),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

/// Begins a leaf that must return without holding anything.
fn done(module: &mut Module, call: LeafCall) -> (TdxStatus, u32) {
    let before = module.held_lock_count();
    match settle(module, LP0, &call) {
        Begin::Done { output, try_locks } => {
            assert_eq!(module.held_lock_count(), before, "{call}: a Done begin holds nothing");
            assert_eq!(output.pair, None);
            assert!(!output.removal_hint);
            (output.status, try_locks)
        }
        Begin::Held(ticket) => panic!("{call}: expected Done, got locks {:?}", ticket.locks()),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

fn add(hpa: Hpa, pair: [Hpa; 2]) -> LeafCall {
    LeafCall::PamtAdd { hpa, pair }
}

fn remove(hpa: Hpa) -> LeafCall {
    LeafCall::PamtRemove { hpa }
}

fn aug(gpa: u64, page: Hpa) -> LeafCall {
    LeafCall::PageAug { td: TD, gpa: Gpa(gpa), page }
}

fn block(gpa: u64) -> LeafCall {
    LeafCall::RangeBlock { td: TD, gpa: Gpa(gpa) }
}

fn track() -> LeafCall {
    LeafCall::Track { td: TD }
}

fn page_remove(gpa: u64) -> LeafCall {
    LeafCall::PageRemove { td: TD, gpa: Gpa(gpa) }
}

fn busy(operand_id: u32) -> TdxStatus {
    TDX_OPERAND_BUSY.with_operand(operand_id)
}

/// Backs range `index` with a pair taken from range 7's first pages (never AUGed here).
fn back(module: &mut Module, index: u64) -> [Hpa; 2] {
    let pair = [page(7, 2 * index), page(7, 2 * index + 1)];
    assert_eq!(status_of(module, add(range(index), pair)), TDX_SUCCESS);
    pair
}

fn sh(lock: ModuleLock) -> HeldLock {
    HeldLock { lock, mode: LockMode::Shared }
}

fn ex(lock: ModuleLock) -> HeldLock {
    HeldLock { lock, mode: LockMode::Exclusive }
}

// ---- TDH.PHYMEM.PAMT.ADD ----

#[test]
fn pamt_add_backs_the_range_and_sets_both_bitmap_bits() {
    let mut module = dpamt_module();
    let pair = [page(3, 0), page(3, 1)];
    let ticket = held(&mut module, add(range(1), pair));
    assert_eq!(
        ticket.locks(),
        [
            sh(ModuleLock::Pamt1G(0)),
            ex(ModuleLock::Pamt2M(1)),
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(3)),
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(3)),
        ],
        "range 3 is unbacked, so the pair walks stop at its 2MB entry"
    );
    assert_eq!(ticket.try_locks(), 7);
    assert_eq!(ticket.lp(), LP1);
    assert_eq!(*ticket.call(), add(range(1), pair));
    let output = module.finish(ticket);
    assert_eq!(output, LeafOutput::status(TDX_SUCCESS));
    assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 0 });
    assert!(module.is_pamt_backing_page(pair[0]));
    assert!(module.is_pamt_backing_page(pair[1]));
    assert!(!module.is_pamt_backing_page(page(3, 2)));
    assert_eq!(module.dpamt(3), Dpamt2M::Unbacked, "backing pages need no backing");
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn pamt_add_with_its_pair_inside_the_range_takes_only_that_range() {
    let mut module = dpamt_module();
    let pair = [page(1, 0), page(1, 1)];
    let ticket = held(&mut module, add(range(1), pair));
    assert_eq!(ticket.locks(), [sh(ModuleLock::Pamt1G(0)), ex(ModuleLock::Pamt2M(1))]);
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    assert!(module.is_pamt_backing_page(page(1, 0)));
    assert_eq!(module.page_type(page(1, 0)), PageType::Nda, "backing is a bitmap bit, not a type");
}

#[test]
fn pamt_add_walks_a_pair_page_of_a_backed_range_down_to_its_4k_entry() {
    let mut module = dpamt_module();
    back(&mut module, 2);
    let ticket = held(&mut module, add(range(1), [page(2, 5), page(1, 0)]));
    assert_eq!(
        ticket.locks(),
        [
            sh(ModuleLock::Pamt1G(0)),
            ex(ModuleLock::Pamt2M(1)),
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(2)),
            sh(ModuleLock::Pamt4K(page(2, 5).pfn())),
        ]
    );
    assert_eq!(ticket.locks()[4].to_string(), "pamt4k[0x405000] sh");
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
}

#[test]
fn pamt_add_on_a_backed_range_is_hpa_range_not_free_rcx() {
    let mut module = dpamt_module();
    let pair = back(&mut module, 1);
    let status = status_of(&mut module, add(range(1), [page(4, 0), page(4, 1)]));
    assert_eq!(status, TDX_HPA_RANGE_NOT_FREE.with_operand(operand::RCX));
    assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 0 });
    assert!(!module.is_pamt_backing_page(page(4, 0)));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn pamt_add_on_a_backed_range_stops_before_the_pair_walks() {
    // The module checks X before walking the pair, so a busy pair range does not matter.
    let mut module = dpamt_module();
    back(&mut module, 1);
    let holder = held(&mut module, add(range(4), [page(4, 0), page(4, 1)]));
    let ticket = held(&mut module, add(range(1), [page(4, 8), page(4, 9)]));
    assert_eq!(ticket.locks().len(), 2);
    assert_eq!(module.finish(ticket).status, TDX_HPA_RANGE_NOT_FREE.with_operand(operand::RCX));
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
}

#[test]
fn pamt_add_while_another_add_holds_the_range_is_busy_rcx() {
    let mut module = dpamt_module();
    let holder = held(&mut module, add(range(1), [page(3, 0), page(3, 1)]));
    let holding = module.held_lock_count();
    let (status, try_locks) = done(&mut module, add(range(1), [page(4, 0), page(4, 1)]));
    assert_eq!(status, busy(operand::RCX));
    assert_eq!(try_locks, 2, "1GB shared, then the 2MB shared try fails");
    assert_eq!(module.held_lock_count(), holding);
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert!(!module.is_pamt_backing_page(page(4, 0)), "the BUSY leaf changed nothing");
}

#[test]
fn pamt_add_whose_first_pair_page_lies_in_a_held_range_is_busy_rdx() {
    let mut module = dpamt_module();
    let holder = held(&mut module, add(range(3), [page(3, 0), page(3, 1)]));
    let (status, try_locks) = done(&mut module, add(range(1), [page(3, 8), page(5, 0)]));
    assert_eq!(status, busy(operand::RDX));
    assert_eq!(try_locks, 5, "1GB, 2MB, promote, then 1GB and the failing 2MB of the pair");
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.dpamt(1), Dpamt2M::Unbacked);
    assert!(!module.is_pamt_backing_page(page(3, 8)));
}

#[test]
fn pamt_add_whose_second_pair_page_lies_in_a_held_range_is_busy_r8() {
    let mut module = dpamt_module();
    let holder = held(&mut module, add(range(3), [page(3, 0), page(3, 1)]));
    let (status, try_locks) = done(&mut module, add(range(1), [page(5, 0), page(3, 8)]));
    assert_eq!(status, busy(operand::R8));
    assert_eq!(try_locks, 7);
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.dpamt(1), Dpamt2M::Unbacked);
}

#[test]
fn pamt_add_ab_ba_the_later_add_is_busy_on_its_own_range_either_order() {
    // ADD(A) takes its pair from B while ADD(B) takes its pair from A (host-algorithms §3.6).
    for first_is_a in [true, false] {
        let mut module = dpamt_module();
        let add_a = add(range(1), [page(2, 0), page(2, 1)]);
        let add_b = add(range(2), [page(1, 0), page(1, 1)]);
        let (first, second) = if first_is_a { (add_a, add_b) } else { (add_b, add_a) };
        let holder = held(&mut module, first);
        let (status, try_locks) = done(&mut module, second);
        // The first holds the second's range shared (pair walk): the promote fails.
        assert_eq!(status, busy(operand::RCX), "first_is_a = {first_is_a}");
        assert_eq!(try_locks, 3);
        assert_eq!(module.finish(holder).status, TDX_SUCCESS);
        assert_eq!(module.held_lock_count(), 0);
        let (backed, unbacked) = if first_is_a { (1, 2) } else { (2, 1) };
        assert!(matches!(module.dpamt(backed), Dpamt2M::Backed { .. }));
        assert_eq!(module.dpamt(unbacked), Dpamt2M::Unbacked);
    }
}

#[test]
fn pamt_add_with_a_pair_page_already_backing_is_page_not_free() {
    let mut module = dpamt_module();
    let pair = back(&mut module, 1); // pages (7,2) and (7,3)
    let first = status_of(&mut module, add(range(2), [pair[0], page(5, 0)]));
    assert_eq!(first, TDX_PAGE_NOT_FREE.with_operand(operand::RDX));
    let second = status_of(&mut module, add(range(2), [page(5, 0), pair[1]]));
    assert_eq!(second, TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    assert!(!module.is_pamt_backing_page(page(5, 0)), "the first bit was undone");
    assert_eq!(module.dpamt(2), Dpamt2M::Unbacked);
    // A page inside X is tested too: it may back another range.
    let inside = status_of(&mut module, add(range(7), [page(7, 2), page(7, 9)]));
    assert_eq!(inside, TDX_PAGE_NOT_FREE.with_operand(operand::RDX));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn pamt_add_with_a_pair_page_in_use_is_page_not_free() {
    let mut module = dpamt_module();
    back(&mut module, 2);
    assert_eq!(status_of(&mut module, aug(0x1000, page(2, 7))), TDX_SUCCESS);
    let first = status_of(&mut module, add(range(1), [page(2, 7), page(3, 0)]));
    assert_eq!(first, TDX_PAGE_NOT_FREE.with_operand(operand::RDX));
    let second = status_of(&mut module, add(range(1), [page(3, 0), page(2, 7)]));
    assert_eq!(second, TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    assert!(!module.is_pamt_backing_page(page(3, 0)));
    assert_eq!(module.dpamt(1), Dpamt2M::Unbacked);
}

#[test]
fn pamt_add_with_a_used_first_pair_page_stops_before_the_second_walk() {
    let mut module = dpamt_module();
    back(&mut module, 2);
    assert_eq!(status_of(&mut module, aug(0x1000, page(2, 7))), TDX_SUCCESS);
    let holder = held(&mut module, add(range(3), [page(3, 0), page(3, 1)]));
    let ticket = held(&mut module, add(range(1), [page(2, 7), page(3, 9)]));
    assert_eq!(ticket.locks().len(), 5, "X, then the first pair page down to 4KB; not range 3");
    assert_eq!(module.finish(ticket).status, TDX_PAGE_NOT_FREE.with_operand(operand::RDX));
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
}

#[test]
fn pamt_add_with_equal_pair_pages_is_page_not_free_r8() {
    let mut module = dpamt_module();
    let status = status_of(&mut module, add(range(1), [page(3, 0), page(3, 0)]));
    assert_eq!(status, TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    assert!(!module.is_pamt_backing_page(page(3, 0)));
    assert_eq!(module.dpamt(1), Dpamt2M::Unbacked);
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn pamt_add_operand_errors_name_their_register() {
    let mut module = dpamt_module();
    let cases = [
        (add(Hpa(0x201000), [page(3, 0), page(3, 1)]), TDX_OPERAND_INVALID, operand::RCX),
        (add(range(1), [Hpa(0x600010), page(3, 1)]), TDX_OPERAND_INVALID, operand::RDX),
        (add(range(1), [Hpa(MEMORY), page(3, 1)]), TDX_OPERAND_ADDR_RANGE_ERROR, operand::RDX),
        (add(range(1), [page(3, 0), Hpa(0x600800)]), TDX_OPERAND_INVALID, operand::R8),
        (add(range(1), [page(3, 0), Hpa(MEMORY + 4096)]), TDX_OPERAND_ADDR_RANGE_ERROR, operand::R8),
        (add(Hpa(MEMORY), [page(3, 0), page(3, 1)]), TDX_OPERAND_ADDR_RANGE_ERROR, operand::RCX),
        // The pair is checked before X's range, as the module orders it.
        (add(Hpa(MEMORY), [Hpa(MEMORY), page(3, 1)]), TDX_OPERAND_ADDR_RANGE_ERROR, operand::RDX),
    ];
    for (call, expected, operand_id) in cases {
        assert_eq!(done(&mut module, call), (expected.with_operand(operand_id), 0), "{call}");
    }
}

// ---- TDH.PHYMEM.PAMT.REMOVE ----

#[test]
fn pamt_remove_returns_the_pair_and_unbacks_the_range() {
    let mut module = dpamt_module();
    let pair = back(&mut module, 1);
    let ticket = held(&mut module, remove(range(1)));
    assert_eq!(ticket.locks(), [sh(ModuleLock::Pamt1G(0)), ex(ModuleLock::Pamt2M(1))]);
    assert_eq!(ticket.locks()[1].to_string(), "pamt2m[0x200000] ex");
    let output = module.finish(ticket);
    assert_eq!(output, LeafOutput { pair: Some(pair), ..LeafOutput::status(TDX_SUCCESS) });
    assert_eq!(module.dpamt(1), Dpamt2M::Unbacked);
    assert!(!module.is_pamt_backing_page(pair[0]));
    assert!(!module.is_pamt_backing_page(pair[1]));
    // The pages can back a range again.
    assert_eq!(status_of(&mut module, add(range(2), pair)), TDX_SUCCESS);
}

#[test]
fn pamt_remove_of_an_unbacked_range_is_no_pamt_page_pair_rcx() {
    let mut module = dpamt_module();
    assert_eq!(status_of(&mut module, remove(range(1))), TDX_NO_PAMT_PAGE_PAIR.with_operand(operand::RCX));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn pamt_remove_with_a_page_in_use_is_pamt_page_not_empty_with_the_pair_half() {
    for (page_index, pair_half) in [(0, 0), (255, 0), (256, 1), (511, 1)] {
        let mut module = dpamt_module();
        let pair = back(&mut module, 1);
        assert_eq!(status_of(&mut module, aug(0x1000, page(1, page_index))), TDX_SUCCESS);
        let status = status_of(&mut module, remove(range(1)));
        assert_eq!(status, TDX_PAMT_PAGE_NOT_EMPTY.with_operand(pair_half), "page {page_index}");
        assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 1 });
        assert!(module.is_pamt_backing_page(pair[0]));
    }
}

#[test]
fn pamt_remove_is_busy_rcx_while_an_aug_in_the_range_holds_it_shared() {
    let mut module = dpamt_module();
    let pair = back(&mut module, 1);
    let aug_ticket = held(&mut module, aug(0x1000, page(1, 9)));
    let (status, try_locks) = done(&mut module, remove(range(1)));
    assert_eq!(status, busy(operand::RCX));
    assert_eq!(try_locks, 3, "1GB, 2MB shared, then the promote fails");
    assert_eq!(module.finish(aug_ticket).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 1 });
}

#[test]
fn pamt_remove_operand_errors_name_rcx() {
    let mut module = dpamt_module();
    assert_eq!(done(&mut module, remove(Hpa(0x300000))), (TDX_OPERAND_INVALID.with_operand(operand::RCX), 0));
    assert_eq!(
        done(&mut module, remove(Hpa(MEMORY))),
        (TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand::RCX), 0)
    );
}

// ---- TDH.MEM.PAGE.AUG ----

#[test]
fn page_aug_maps_a_pending_page_and_counts_it() {
    let mut module = dpamt_module();
    let pair = back(&mut module, 1);
    let ticket = held(&mut module, aug(0x1000, page(1, 4)));
    assert_eq!(
        ticket.locks(),
        [
            sh(ModuleLock::Tdr(TD)),
            sh(ModuleLock::Tdcs(TD)),
            sh(ModuleLock::SeptTree(TD)),
            ex(ModuleLock::SeptEntry(TD, 0x1000)),
            sh(ModuleLock::Pamt1G(0)),
            sh(ModuleLock::Pamt2M(1)),
            ex(ModuleLock::Pamt4K(page(1, 4).pfn())),
        ]
    );
    assert_eq!(ticket.try_locks(), 7);
    assert_eq!(module.finish(ticket), LeafOutput::status(TDX_SUCCESS));
    assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 1 });
    assert_eq!(module.page_type(page(1, 4)), PageType::Reg);
    let entry = module.td(TD).unwrap().entry(0x1000);
    assert_eq!(entry.state, SeptState::Pending);
    assert_eq!(entry.hpa, page(1, 4));
    assert!(!entry.locked);
    assert_eq!(status_of(&mut module, aug(0x2000, page(1, 5))), TDX_SUCCESS);
    assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 2 });
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn page_aug_on_an_unbacked_range_is_missing_pamt_page_pair() {
    let mut module = dpamt_module();
    let ticket = held(&mut module, aug(0x1000, page(1, 4)));
    assert_eq!(ticket.locks().len(), 6, "the walk stops at the unbacked 2MB entry");
    assert_eq!(module.finish(ticket).status, TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8));
    assert_eq!(module.page_type(page(1, 4)), PageType::Nda);
    assert_eq!(module.td(TD).unwrap().entry(0x1000).state, SeptState::Free);
    assert!(module.td(TD).unwrap().sept.is_empty());
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn page_aug_on_an_occupied_gpa_is_ept_entry_state_incorrect() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    let status = status_of(&mut module, aug(0x1000, page(1, 5)));
    assert_eq!(status, TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
    assert_eq!(module.page_type(page(1, 5)), PageType::Nda);
    assert_eq!(module.td(TD).unwrap().entry(0x1000).hpa, page(1, 4));
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 1, .. }));
}

#[test]
fn page_aug_on_a_pamt_backing_page_is_page_not_free_r8() {
    let mut module = dpamt_module();
    let pair = [page(1, 0), page(1, 1)];
    assert_eq!(status_of(&mut module, add(range(1), pair)), TDX_SUCCESS);
    let status = status_of(&mut module, aug(0x1000, pair[1]));
    assert_eq!(status, TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    assert_eq!(module.page_type(pair[1]), PageType::Nda);
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 0, .. }));
}

#[test]
fn page_aug_of_a_page_in_use_is_page_not_free_r8() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    let status = status_of(&mut module, aug(0x2000, page(1, 4)));
    assert_eq!(status, TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    assert_eq!(module.td(TD).unwrap().entry(0x2000).state, SeptState::Free);
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 1, .. }));
}

#[test]
fn page_aug_is_busy_sept_entry_on_the_same_gpa_and_the_loser_claims_priority() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    let holder = held(&mut module, aug(0x1000, page(1, 4)));
    let (status, try_locks) = done(&mut module, aug(0x1000, page(1, 5)));
    assert_eq!(status, busy(operand::SEPT_ENTRY));
    assert_eq!(try_locks, 4);
    assert!(module.td(TD).unwrap().entry(0x1000).host_priority, "the losing host set HP");
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert!(module.td(TD).unwrap().entry(0x1000).host_priority, "HP survives the release");
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.page_type(page(1, 5)), PageType::Nda);
    // The next host win clears it.
    assert_eq!(status_of(&mut module, block(0x1000)), TDX_SUCCESS);
    assert_eq!(
        status_of(&mut module, page_remove(0x1000)),
        TDX_TLB_TRACKING_NOT_DONE.with_operand(operand::RCX)
    );
    assert!(!module.td(TD).unwrap().entry(0x1000).host_priority);
}

#[test]
fn page_aug_without_host_priority_leaves_no_hp_bit() {
    let mut module = module_with(true, false);
    back(&mut module, 1);
    let holder = held(&mut module, aug(0x1000, page(1, 4)));
    assert_eq!(done(&mut module, aug(0x1000, page(1, 5))).0, busy(operand::SEPT_ENTRY));
    assert!(!module.td(TD).unwrap().entry(0x1000).host_priority);
    let blocker = done(&mut module, block(0x2000));
    assert_eq!(blocker.0, busy(operand::SEPT));
    assert!(!module.td(TD).unwrap().sept_lock.host_priority());
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
}

#[test]
fn page_aug_is_busy_r8_on_a_page_another_aug_holds() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    let holder = held(&mut module, aug(0x1000, page(1, 4)));
    let (status, try_locks) = done(&mut module, aug(0x2000, page(1, 4)));
    assert_eq!(status, busy(operand::R8));
    assert_eq!(try_locks, 7);
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert!(!module.td(TD).unwrap().sept.contains(0x2000), "no trace of the loser's entry");
}

#[test]
fn page_aug_is_busy_r8_while_pamt_add_holds_the_range() {
    let mut module = dpamt_module();
    let holder = held(&mut module, add(range(1), [page(3, 0), page(3, 1)]));
    let (status, try_locks) = done(&mut module, aug(0x1000, page(1, 4)));
    assert_eq!(status, busy(operand::R8));
    assert_eq!(try_locks, 6);
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS, "the retry wins");
}

#[test]
fn page_aug_is_busy_sept_while_range_block_holds_the_tree() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    let blocker = held(&mut module, block(0x1000));
    let (status, try_locks) = done(&mut module, aug(0x2000, page(1, 5)));
    assert_eq!(status, busy(operand::SEPT));
    assert_eq!(try_locks, 3);
    assert!(module.td(TD).unwrap().sept_lock.host_priority());
    assert_eq!(module.finish(blocker).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 1, .. }));
}

#[test]
fn page_aug_operand_errors_name_their_register() {
    let mut module = dpamt_module();
    let other_td = LeafCall::PageAug { td: TdId(9), gpa: Gpa(0x1000), page: page(1, 4) };
    let cases = [
        (aug(0x1800, page(1, 4)), TDX_OPERAND_INVALID, operand::RCX),
        (other_td, TDX_OPERAND_INVALID, operand::RDX),
        (aug(0x1000, Hpa(0x200004)), TDX_OPERAND_INVALID, operand::R8),
        (aug(0x1000, Hpa(MEMORY)), TDX_OPERAND_ADDR_RANGE_ERROR, operand::R8),
    ];
    for (call, expected, operand_id) in cases {
        assert_eq!(done(&mut module, call), (expected.with_operand(operand_id), 0), "{call}");
    }
}

// ---- TDH.MEM.RANGE.BLOCK ----

#[test]
fn range_block_blocks_a_pending_entry_at_the_current_epoch() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    assert_eq!(status_of(&mut module, track()), TDX_SUCCESS);
    let ticket = held(&mut module, block(0x1000));
    assert_eq!(
        ticket.locks(),
        [
            sh(ModuleLock::Tdr(TD)),
            sh(ModuleLock::Tdcs(TD)),
            ex(ModuleLock::SeptTree(TD)),
            ex(ModuleLock::SeptEntry(TD, 0x1000)),
        ],
        "the entry's lock too, against a guest's ACCEPT"
    );
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    let entry = module.td(TD).unwrap().entry(0x1000);
    assert_eq!(entry.state, SeptState::Blocked);
    assert_eq!(entry.blocked_epoch, 1);
    assert_eq!(entry.hpa, page(1, 4));
}

#[test]
fn range_block_of_a_free_entry_is_ept_entry_free_rcx() {
    let mut module = dpamt_module();
    assert_eq!(status_of(&mut module, block(0x1000)), TDX_EPT_ENTRY_FREE.with_operand(operand::RCX));
    assert!(module.td(TD).unwrap().sept.is_empty());
}

#[test]
fn range_block_twice_is_the_informational_already_blocked() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    assert_eq!(status_of(&mut module, block(0x1000)), TDX_SUCCESS);
    assert_eq!(status_of(&mut module, track()), TDX_SUCCESS);
    let status = status_of(&mut module, block(0x1000));
    assert_eq!(status, TDX_GPA_RANGE_ALREADY_BLOCKED.with_operand(operand::RCX));
    assert_eq!(status.0 >> 63, 0, "informational: not an error");
    assert_eq!(module.td(TD).unwrap().entry(0x1000).blocked_epoch, 0, "the first block's epoch stays");
}

#[test]
fn range_block_is_busy_sept_while_an_aug_holds_the_tree_shared() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    let holder = held(&mut module, aug(0x1000, page(1, 4)));
    let (status, try_locks) = done(&mut module, block(0x1000));
    assert_eq!(status, busy(operand::SEPT));
    assert_eq!(try_locks, 3);
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.td(TD).unwrap().entry(0x1000).state, SeptState::Pending);
}

#[test]
fn range_block_is_busy_sept_against_another_block() {
    let mut module = dpamt_module();
    let holder = held(&mut module, block(0x1000));
    assert_eq!(done(&mut module, block(0x2000)), (busy(operand::SEPT), 3));
    assert_eq!(module.finish(holder).status, TDX_EPT_ENTRY_FREE.with_operand(operand::RCX));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn range_block_operand_errors() {
    let mut module = dpamt_module();
    assert_eq!(done(&mut module, block(0x1001)), (TDX_OPERAND_INVALID.with_operand(operand::RCX), 0));
    let other_td = LeafCall::RangeBlock { td: TdId(9), gpa: Gpa(0x1000) };
    assert_eq!(done(&mut module, other_td), (TDX_OPERAND_INVALID.with_operand(operand::RDX), 0));
}

// ---- TDH.MEM.TRACK ----

#[test]
fn track_bumps_the_epoch() {
    let mut module = dpamt_module();
    let ticket = held(&mut module, track());
    assert_eq!(
        ticket.locks(),
        [sh(ModuleLock::Tdr(TD)), sh(ModuleLock::Tdcs(TD)), ex(ModuleLock::Epoch(TD))]
    );
    assert_eq!(ticket.locks()[2].to_string(), "epoch_lock[td1] ex");
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    assert_eq!(module.td(TD).unwrap().td_epoch, 1);
    assert_eq!(status_of(&mut module, track()), TDX_SUCCESS);
    assert_eq!(module.td(TD).unwrap().td_epoch, 2);
}

#[test]
fn track_is_busy_td_epoch_against_another_track() {
    let mut module = dpamt_module();
    let holder = held(&mut module, track());
    assert_eq!(done(&mut module, track()), (busy(operand::TD_EPOCH), 3));
    assert_eq!(module.finish(holder).status, TDX_SUCCESS);
    assert_eq!(module.td(TD).unwrap().td_epoch, 1, "only the winner bumped it");
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn track_of_an_unknown_td_is_operand_invalid_rcx() {
    let mut module = dpamt_module();
    let call = LeafCall::Track { td: TdId(9) };
    assert_eq!(done(&mut module, call), (TDX_OPERAND_INVALID.with_operand(operand::RCX), 0));
}

// ---- TDH.MEM.PAGE.REMOVE ----

#[test]
fn page_remove_before_block_is_gpa_range_not_blocked_and_takes_no_page_lock() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    let ticket = held(&mut module, page_remove(0x1000));
    assert_eq!(ticket.locks().len(), 4, "TDR, TDCS, SEPT tree, SEPT entry");
    assert_eq!(module.finish(ticket).status, TDX_GPA_RANGE_NOT_BLOCKED.with_operand(operand::RCX));
    assert_eq!(module.page_type(page(1, 4)), PageType::Reg);
    // A free GPA is not blocked either.
    let free = status_of(&mut module, page_remove(0x5000));
    assert_eq!(free, TDX_GPA_RANGE_NOT_BLOCKED.with_operand(operand::RCX));
    assert!(!module.td(TD).unwrap().sept.contains(0x5000));
}

#[test]
fn page_remove_before_track_is_tlb_tracking_not_done() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    assert_eq!(status_of(&mut module, track()), TDX_SUCCESS, "a TRACK before the block does not count");
    assert_eq!(status_of(&mut module, block(0x1000)), TDX_SUCCESS);
    let status = status_of(&mut module, page_remove(0x1000));
    assert_eq!(status, TDX_TLB_TRACKING_NOT_DONE.with_operand(operand::RCX));
    assert_eq!(module.td(TD).unwrap().entry(0x1000).state, SeptState::Blocked);
    assert_eq!(module.page_type(page(1, 4)), PageType::Reg);
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 1, .. }));
}

#[test]
fn aug_block_track_remove_gives_the_hint_exactly_when_the_count_reaches_zero() {
    let mut module = dpamt_module();
    let pair = back(&mut module, 1);
    for (gpa, page_index) in [(0x1000, 4), (0x2000, 300)] {
        assert_eq!(status_of(&mut module, aug(gpa, page(1, page_index))), TDX_SUCCESS);
        assert_eq!(status_of(&mut module, block(gpa)), TDX_SUCCESS);
    }
    assert_eq!(status_of(&mut module, track()), TDX_SUCCESS);

    let ticket = held(&mut module, page_remove(0x1000));
    assert_eq!(ticket.locks()[4], ex(ModuleLock::Pamt4K(page(1, 4).pfn())), "implicit: no walk");
    assert_eq!(ticket.locks().len(), 5);
    let first = module.finish(ticket);
    assert_eq!(first, LeafOutput::status(TDX_SUCCESS));
    assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 1 });
    assert_eq!(module.page_type(page(1, 4)), PageType::Nda);
    assert_eq!(module.td(TD).unwrap().entry(0x1000).state, SeptState::Free);
    assert_eq!(
        status_of(&mut module, remove(range(1))),
        TDX_PAMT_PAGE_NOT_EMPTY.with_operand(1),
        "page 300 sits in the second half of the pair"
    );

    let last = run(&mut module, page_remove(0x2000));
    assert_eq!(last, LeafOutput { removal_hint: true, ..LeafOutput::status(TDX_SUCCESS) });
    assert_eq!(module.dpamt(1), Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 0 });
    assert!(module.td(TD).unwrap().sept.is_empty());
    assert_eq!(run(&mut module, remove(range(1))).pair, Some(pair));
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn page_remove_is_busy_rcx_while_an_aug_of_the_same_page_holds_its_4k_entry() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    assert_eq!(status_of(&mut module, block(0x1000)), TDX_SUCCESS);
    assert_eq!(status_of(&mut module, track()), TDX_SUCCESS);
    // A buggy host AUGs the same page at another GPA: it holds the page's 4KB entry.
    let stray = held(&mut module, aug(0x2000, page(1, 4)));
    let (status, try_locks) = done(&mut module, page_remove(0x1000));
    assert_eq!(status, busy(operand::RCX));
    assert_eq!(try_locks, 5);
    assert_eq!(module.finish(stray).status, TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.td(TD).unwrap().entry(0x1000).state, SeptState::Blocked);
    assert!(run(&mut module, page_remove(0x1000)).removal_hint);
}

#[test]
fn page_remove_is_busy_on_the_entry_and_on_the_tree() {
    let mut module = dpamt_module();
    back(&mut module, 1);
    assert_eq!(status_of(&mut module, aug(0x1000, page(1, 4))), TDX_SUCCESS);
    let holder = held(&mut module, page_remove(0x1000));
    assert_eq!(done(&mut module, page_remove(0x1000)), (busy(operand::SEPT_ENTRY), 4));
    assert_eq!(module.finish(holder).status, TDX_GPA_RANGE_NOT_BLOCKED.with_operand(operand::RCX));
    let blocker = held(&mut module, block(0x1000));
    assert_eq!(done(&mut module, page_remove(0x1000)), (busy(operand::SEPT), 3));
    assert_eq!(module.finish(blocker).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
}

#[test]
fn page_remove_operand_errors() {
    let mut module = dpamt_module();
    assert_eq!(done(&mut module, page_remove(0x10)), (TDX_OPERAND_INVALID.with_operand(operand::RCX), 0));
    let other_td = LeafCall::PageRemove { td: TdId(9), gpa: Gpa(0x1000) };
    assert_eq!(done(&mut module, other_td), (TDX_OPERAND_INVALID.with_operand(operand::RDX), 0));
}

// ---- TDH.PHYMEM.PAGE.WBINVD ----

#[test]
fn page_wbinvd_takes_no_lock_and_succeeds() {
    let mut module = dpamt_module();
    let ticket = held(&mut module, LeafCall::PageWbinvd { page: page(1, 4) });
    assert!(ticket.locks().is_empty());
    assert_eq!(ticket.try_locks(), 0);
    assert_eq!(module.finish(ticket), LeafOutput::status(TDX_SUCCESS));
    let misaligned = LeafCall::PageWbinvd { page: Hpa(0x1234) };
    assert_eq!(done(&mut module, misaligned), (TDX_OPERAND_INVALID.with_operand(operand::RCX), 0));
    let outside = LeafCall::PageWbinvd { page: Hpa(MEMORY) };
    assert_eq!(done(&mut module, outside), (TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand::RCX), 0));
}

// ---- Static PAMT ----

#[test]
fn static_pamt_refuses_pamt_add_and_remove_on_rax() {
    let mut module = module_with(false, true);
    let invalid = (TDX_OPERAND_INVALID.with_operand(operand::RAX), 0);
    assert_eq!(done(&mut module, add(range(1), [page(3, 0), page(3, 1)])), invalid);
    assert_eq!(done(&mut module, remove(range(1))), invalid);
    // Even with bad operands: the DPAMT check comes first.
    assert_eq!(done(&mut module, add(Hpa(1), [Hpa(1), Hpa(1)])), invalid);
}

#[test]
fn static_pamt_has_every_4k_entry_and_never_misses_a_pair() {
    let mut module = module_with(false, true);
    for index in 0..module.num_ranges() {
        assert!(module.has_4k_level(index));
        assert_eq!(module.dpamt(index), Dpamt2M::Unbacked, "static PAMT keeps no DPAMT state");
    }
    let ticket = held(&mut module, aug(0x1000, page(1, 4)));
    assert_eq!(ticket.locks()[6], ex(ModuleLock::Pamt4K(page(1, 4).pfn())));
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    assert_eq!(module.page_type(page(1, 4)), PageType::Reg);
    assert_eq!(status_of(&mut module, block(0x1000)), TDX_SUCCESS);
    assert_eq!(status_of(&mut module, track()), TDX_SUCCESS);
    let output = run(&mut module, page_remove(0x1000));
    assert_eq!(output, LeafOutput::status(TDX_SUCCESS), "no removal hint without DPAMT");
    assert_eq!(module.page_type(page(1, 4)), PageType::Nda);
    assert_eq!(module.held_lock_count(), 0);
}

// ---- Module as a whole ----

#[test]
fn module_lock_display_names_what_the_lock_guards() {
    let shown = [
        (ex(ModuleLock::Pamt2M(1)), "pamt2m[0x200000] ex"),
        (sh(ModuleLock::Pamt1G(1)), "pamt1g[0x40000000] sh"),
        (sh(ModuleLock::Tdr(TD)), "tdr[td1] sh"),
        (sh(ModuleLock::Tdcs(TD)), "tdcs[td1] sh"),
        (sh(ModuleLock::SeptTree(TD)), "secure_ept_lock[td1] sh"),
        (ex(ModuleLock::SeptEntry(TD, 0x3000)), "sept_entry[td1 0x3000] ex"),
    ];
    for (held, text) in shown {
        assert_eq!(held.to_string(), text);
    }
}

#[test]
fn a_fresh_module_holds_nothing_and_has_one_range_per_2mb() {
    let module = dpamt_module();
    assert_eq!(module.num_ranges(), 8);
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(module.page_type(page(7, 511)), PageType::Nda);
    assert!(!module.is_pamt_backing_page(page(0, 0)));
}

#[test]
#[should_panic(expected = "already exists")]
fn creating_a_td_twice_is_our_bug() {
    let mut module = dpamt_module();
    module.create_td(TD);
}

// Interleaved try-locks (spec §2): each attempt is its own atomic operation.

/// Steps both leaves one attempt at a time, LP0 then LP1, until neither is `Locking`.
fn lockstep(module: &mut Module, first: LeafCall, second: LeafCall) -> (Begin, Begin) {
    let mut a = module.begin(LP0, &first);
    let mut b = module.begin(LP1, &second);
    loop {
        let a_locking = matches!(a, Begin::Locking(_));
        let b_locking = matches!(b, Begin::Locking(_));
        if !a_locking && !b_locking {
            return (a, b);
        }
        if let Begin::Locking(ticket) = a {
            a = module.step(ticket);
        }
        if let Begin::Locking(ticket) = b {
            b = module.step(ticket);
        }
    }
}

#[test]
fn crossed_pamt_adds_in_lock_step_each_take_their_range_and_fail_on_the_others() {
    // ADD(X1, pair in X2) on LP0 and ADD(X2, pair in X1) on LP1: each promotes its own 2MB
    // entry to exclusive before trying the other's shared, so both answer BUSY.
    let mut module = dpamt_module();
    let first = add(range(1), [page(2, 1), page(2, 2)]);
    let second = add(range(2), [page(1, 1), page(1, 2)]);
    let (a, b) = lockstep(&mut module, first, second);
    let (Begin::Done { output: a, try_locks: a_tries }, Begin::Done { output: b, try_locks: b_tries }) =
        (a, b)
    else {
        panic!("both leaves return at once");
    };
    assert_eq!(a.status, busy(operand::RDX), "LP0 fails on its pair page's range");
    assert_eq!(b.status, busy(operand::RDX), "LP1 too: the symmetric BUSY of host-algorithms §3.6");
    // 1GB sh, 2MB sh, promote, then the pair page's 1GB sh and 2MB sh, which fails.
    assert_eq!((a_tries, b_tries), (5, 5));
    assert_eq!(module.held_lock_count(), 0, "each undid what it took");
    assert!(!module.lp_is_busy(LP0) && !module.lp_is_busy(LP1));
}

#[test]
fn atomic_leaf_locks_let_the_first_crossed_add_take_its_whole_set() {
    let mut module = Module::new(ModuleConfig {
        num_lps: 2,
        leaf_locks: seam_model::LeafLocks::Atomic,
        ..ModuleConfig::new(MEMORY, true, true)
    });
    let first = add(range(1), [page(2, 1), page(2, 2)]);
    let second = add(range(2), [page(1, 1), page(1, 2)]);
    let Begin::Held(ticket) = module.begin(LP0, &first) else { panic!("atomic: all locks at once") };
    assert_eq!(ticket.try_locks(), 7, "X1: 3, X2 walk for each pair page: 2 each");
    let (status, tries) = done(&mut module, second);
    assert_eq!(status, busy(operand::RCX), "the second ADD meets X2 held shared by the first");
    assert_eq!(tries, 3, "1GB sh, 2MB sh, promote fails");
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
}

#[test]
fn a_leaf_between_two_attempts_holds_what_it_took_and_its_lp_is_busy() {
    let mut module = dpamt_module();
    let Begin::Locking(ticket) = module.begin(LP0, &add(range(3), [page(4, 0), page(4, 1)])) else {
        panic!("interleaved: one attempt per pass");
    };
    assert_eq!(ticket.try_locks(), 1);
    assert_eq!(ticket.locks(), [sh(ModuleLock::Pamt1G(0))]);
    assert!(module.lp_is_busy(LP0), "inside SEAM from its first attempt");
    // Another LP's REMOVE of X3 now gets the 2MB entry shared before this ADD promotes it.
    let Begin::Locking(remover) = module.begin(LP1, &remove(range(3))) else { panic!() };
    let Begin::Locking(remover) = module.step(remover) else { panic!() };
    let Begin::Locking(ticket) = module.step(ticket) else { panic!() };
    // The ADD's promote now fails: two readers of X3's 2MB entry. It undoes its holds in
    // a step of its own.
    let Begin::Locking(ticket) = module.step(ticket) else { panic!("promote fails") };
    assert_eq!(ticket.locks().len(), 2, "still held until the undo");
    let Begin::Done { output, try_locks } = module.step(ticket) else { panic!("undone") };
    assert_eq!((output.status, try_locks), (busy(operand::RCX), 3));
    assert!(!module.lp_is_busy(LP0));
    // The REMOVE, alone now, promotes and finds nothing to remove.
    let Begin::Held(remover) = module.step(remover) else { panic!() };
    assert_eq!(module.finish(remover).status, TDX_NO_PAMT_PAGE_PAIR.with_operand(operand::RCX));
    assert_eq!(module.held_lock_count(), 0);
}
