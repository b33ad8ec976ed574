//! Helpers for the tests of the leaves KVM needs: a four-LP, two-package module with DPAMT,
//! TDs built through the real leaves, and shorthands to begin, hold and finish calls.
//!
//! Memory (64MB, 32 ranges of 2MB): range 31 gives the DPAMT page pairs (pages `2i, 2i+1`
//! back range `i`), range 1 the TD control and S-EPT pages (`control(n)`), ranges 2.. the
//! private pages (`private(range, index)`).

#![allow(dead_code)] // each test file uses some of the helpers

use seam_model::status::{TDX_OPERAND_BUSY, TDX_SUCCESS};
use seam_model::{
    Begin, Entered, Gpa, GuestRun, HeldLock, Hpa, LeafCall, LeafOutput, LockMode, Module, ModuleConfig,
    ModuleLock, TdExit, TdExitReason, TdId, TdxStatus, Ticket,
};
use sim_core::CpuId;

pub const MB: u64 = 1 << 20;
pub const MEMORY: u64 = 64 * MB;
pub const TD: TdId = TdId(1);
pub const LP0: CpuId = CpuId(0);
pub const LP1: CpuId = CpuId(1);
/// LP2 and LP3 are the second package.
pub const LP2: CpuId = CpuId(2);
pub const LP3: CpuId = CpuId(3);

pub fn config(host_priority: bool) -> ModuleConfig {
    ModuleConfig { num_lps: 4, packages: 2, ..ModuleConfig::new(MEMORY, true, host_priority) }
}

pub fn module() -> Module {
    Module::new(config(true))
}

pub fn range(index: u64) -> Hpa {
    Hpa(index * 2 * MB)
}

pub fn page(range_index: u64, page_index: u64) -> Hpa {
    Hpa(range_index * 2 * MB + page_index * 4096)
}

/// The `n`th control page (range 1).
pub fn control(n: u64) -> Hpa {
    page(1, n)
}

pub fn busy(operand_id: u32) -> TdxStatus {
    TDX_OPERAND_BUSY.with_operand(operand_id)
}

pub fn sh(lock: ModuleLock) -> HeldLock {
    HeldLock { lock, mode: LockMode::Shared }
}

pub fn ex(lock: ModuleLock) -> HeldLock {
    HeldLock { lock, mode: LockMode::Exclusive }
}

/// Begins `call` on `lp` and makes its try-lock attempts back to back.
pub fn settle(module: &mut Module, lp: CpuId, call: &LeafCall) -> Begin {
    let mut answer = module.begin(lp, call);
    while let Begin::Locking(ticket) = answer {
        answer = module.step(ticket);
    }
    answer
}

/// Begins and finishes `call` on `lp` at once.
pub fn run_on(module: &mut Module, lp: CpuId, call: LeafCall) -> LeafOutput {
    match settle(module, lp, &call) {
        Begin::Done { output, .. } => output,
        Begin::Held(ticket) => module.finish(ticket),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

pub fn status_on(module: &mut Module, lp: CpuId, call: LeafCall) -> TdxStatus {
    run_on(module, lp, call).status
}

pub fn status_of(module: &mut Module, call: LeafCall) -> TdxStatus {
    status_on(module, LP0, call)
}

/// `call` on `lp` must succeed.
pub fn ok_on(module: &mut Module, lp: CpuId, call: LeafCall) {
    let status = status_on(module, lp, call);
    assert_eq!(status, TDX_SUCCESS, "{call} on {lp}");
}

pub fn ok(module: &mut Module, call: LeafCall) {
    ok_on(module, LP0, call);
}

/// Begins a leaf on `lp` that must get all its locks, and keeps them.
pub fn held_on(module: &mut Module, lp: CpuId, call: LeafCall) -> Ticket {
    match settle(module, lp, &call) {
        Begin::Held(ticket) => ticket,
        Begin::Done { output, .. } => panic!("{call}: expected the locks, got {}", output.status),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

/// Begins a leaf on `lp` that must return without holding anything: (status, attempts).
pub fn done_on(module: &mut Module, lp: CpuId, call: LeafCall) -> (TdxStatus, u32) {
    let before = module.held_lock_count();
    match settle(module, lp, &call) {
        Begin::Done { output, try_locks } => {
            assert_eq!(module.held_lock_count(), before, "{call}: a Done begin holds nothing");
            (output.status, try_locks)
        }
        Begin::Held(ticket) => panic!("{call}: expected Done, got locks {:?}", ticket.locks()),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

/// Backs range `index` with a pair from range 31.
pub fn back(module: &mut Module, index: u64) {
    let pair = [page(31, 2 * index), page(31, 2 * index + 1)];
    ok(module, LeafCall::PamtAdd { hpa: range(index), pair });
}

/// The pages a built TD got, by role.
#[derive(Clone, Debug, Default)]
pub struct Built {
    pub tdr: Hpa,
    /// S-EPT pages: the level-2, level-1 and level-0 tables of GPA 0 (GPAs 0 .. 2MB).
    pub sept: Vec<Hpa>,
    pub tdvprs: Vec<Hpa>,
    pub tdcx: Vec<Hpa>,
}

/// Builds TD `td` through the leaves: MNG.CREATE, MNG.KEY.CONFIG on both packages,
/// MNG.INIT, SEPT.ADD of the tables for GPAs [0, 2MB), and `vcpus` vCPUs (VP.CREATE,
/// 5 × VP.ADDCX, VP.INIT on LP0). Control pages start at `control(first)`; range 1 must be
/// backed. Leaves the build open (op_state INITIALIZED) when `finalize` is false.
pub fn build(module: &mut Module, td: TdId, first: u64, vcpus: usize, finalize: bool) -> Built {
    let mut next = first;
    let mut take = || {
        let page = control(next);
        next += 1;
        page
    };
    let tdr = take();
    ok(module, LeafCall::MngCreate { td, tdr });
    ok_on(module, LP0, LeafCall::MngKeyConfig { td });
    ok_on(module, LP2, LeafCall::MngKeyConfig { td });
    ok(module, LeafCall::MngInit { td });
    let mut built = Built { tdr, ..Built::default() };
    for level in [3, 2, 1] {
        let page = take();
        ok(module, LeafCall::SeptAdd { td, gpa: Gpa(0), level, page });
        built.sept.push(page);
    }
    for _ in 0..vcpus {
        let tdvpr = take();
        ok(module, LeafCall::VpCreate { td, tdvpr });
        for _ in 0..5 {
            let tdcx = take();
            ok(module, LeafCall::VpAddcx { td, tdvpr, tdcx });
            built.tdcx.push(tdcx);
        }
        ok(module, LeafCall::VpInit { td, tdvpr });
        built.tdvprs.push(tdvpr);
    }
    if finalize {
        ok(module, LeafCall::MrFinalize { td });
    }
    built
}

/// A module with range 1 backed and TD 1 built, finalised, with `vcpus` vCPUs.
pub fn runnable(vcpus: usize) -> (Module, Built) {
    let mut module = module();
    back(&mut module, 1);
    let built = build(&mut module, TD, 0, vcpus, true);
    (module, built)
}

/// VP.ENTER on `lp` that must enter the guest.
pub fn enter(module: &mut Module, lp: CpuId, tdvpr: Hpa) -> GuestRun {
    let ticket = held_on(module, lp, LeafCall::VpEnter { td: TD, tdvpr });
    match module.enter_guest(ticket) {
        Entered::Running(run) => run,
        Entered::Returned(output) => {
            panic!("VP.ENTER on {lp}: expected the guest to run, got {}", output.status)
        }
    }
}

/// VP.ENTER on `lp` that must return without running the guest.
pub fn enter_returns(module: &mut Module, lp: CpuId, tdvpr: Hpa) -> LeafOutput {
    match settle(module, lp, &LeafCall::VpEnter { td: TD, tdvpr }) {
        Begin::Done { output, .. } => output,
        Begin::Held(ticket) => match module.enter_guest(ticket) {
            Entered::Returned(output) => output,
            Entered::Running(run) => panic!("VP.ENTER on {lp}: the guest runs on {}", run.lp()),
        },
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

pub fn ept_violation(gpa: u64, guest_rip: u64) -> TdExit {
    TdExit { reason: TdExitReason::EptViolation { gpa: Gpa(gpa) }, guest_rip }
}

pub fn interrupt(guest_rip: u64) -> TdExit {
    TdExit { reason: TdExitReason::ExternalInterrupt, guest_rip }
}

/// Maps private page `page` at `gpa` of TD 1 (PENDING) with PAGE.AUG on LP0.
pub fn aug(module: &mut Module, gpa: u64, page: Hpa) {
    ok(module, LeafCall::PageAug { td: TD, gpa: Gpa(gpa), page });
}
