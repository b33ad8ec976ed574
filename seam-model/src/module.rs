//! `Module`: the TDX module's state and the modelled leaves, each split in `begin`
//! (operand checks and try-locks) and `finish` (state checks, effects, release).
//!
//! A leaf takes its locks in the module's order (spec/seam-module.md §5.4, §5.5, §6). At
//! the first contended try-lock it undoes what it took and answers
//! `TDX_OPERAND_BUSY` with that lock's operand id. A state check that the module makes
//! *between* two lock attempts also ends the locking: the ticket then holds the locks
//! taken so far and `finish` returns that failure, so outcomes keep the module's order
//! (for example PAMT.ADD on a backed range answers HPA_RANGE_NOT_FREE even if a pair
//! page's range is busy). Every state check reads state that the held locks protect, so
//! deciding it in `finish` gives the same answer as deciding it in `begin`.
//!
//! Before any of that, `begin` makes the SEAMCALL dispatch checks of spec §3 (VMX,
//! P-SEAMLDR, `seam_ready`, `sys_state`, `lp_is_init`); the module's life cycle (boot
//! initialisation, TD-preserving update) and the P-SEAMLDR are in `module/lifecycle.rs`.

mod lifecycle;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sim_core::CpuId;

pub use lifecycle::{Handoff, SysState};

use crate::lock::{Caller, LockMode, Sharex};
use crate::pamt::{Dpamt2M, PageType, Pamt, WalkTarget};
use crate::status::{
    TDX_EPT_ENTRY_FREE, TDX_EPT_ENTRY_STATE_INCORRECT, TDX_GPA_RANGE_ALREADY_BLOCKED,
    TDX_GPA_RANGE_NOT_BLOCKED, TDX_HPA_RANGE_NOT_FREE, TDX_MISSING_PAMT_PAGE_PAIR, TDX_NO_PAMT_PAGE_PAIR,
    TDX_OP_STATE_INCORRECT, TDX_OPERAND_ADDR_RANGE_ERROR, TDX_OPERAND_BUSY, TDX_OPERAND_INVALID,
    TDX_PAGE_NOT_FREE, TDX_PAMT_PAGE_NOT_EMPTY, TDX_SUCCESS, TDX_TLB_TRACKING_NOT_DONE, TdxStatus, operand,
};
use crate::td::{OpState, SeptState, Td};
use crate::{Gpa, Hpa, Leaf, LeafCall, LeafOutput, PAGE_SIZE, RANGE_1G, RANGE_2M, TdId};

/// What the module is built with, and the platform it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleConfig {
    /// The one TDMR is `[0, memory_bytes)`; a non-zero multiple of 2MB.
    pub memory_bytes: u64,
    /// Dynamic PAMT (TDH.SYS.CONFIG R8 bit 16); false is the static PAMT. With
    /// `initialized = false` it is ignored: the host's TDH.SYS.CONFIG chooses.
    pub dpamt: bool,
    /// The module's `sharex_hp` locks and SEPT entry locks set HP when a host loses.
    pub host_priority: bool,
    /// Every platform LP (`tot_num_lps`, what MCHECK counted at boot; the host passes its
    /// number of possible CPUs, not the online ones). LPs are `CpuId(0..num_lps)`.
    pub num_lps: u32,
    /// Packages; LP `i` is in package `i * packages / num_lps`. 1 ..= `num_lps`.
    pub packages: u32,
    /// True: the module was initialised at boot (SYS_READY, LP.INIT done on every LP,
    /// VMX on everywhere). False: the BIOS loaded it and nothing more (SYSINIT_PENDING,
    /// no LP initialised, VMX off everywhere).
    pub initialized: bool,
    /// The CPU has the SEAMRET erratum (IA32_VMX_BASIC bit 60 clear): returning from the
    /// P-SEAMLDR clears the LP's current VMCS (spec §8.2).
    pub seamret_erratum: bool,
    /// The module knows TDH.SYS.SHUTDOWN's AVOID_COMPAT_SENSITIVE flag (RCX bit 16).
    pub compat_sensitive_supported: bool,
}

impl ModuleConfig {
    /// One LP in one package, initialised at boot, no erratum, compat-sensitive flag known:
    /// what the DPAMT scenarios assume.
    pub fn new(memory_bytes: u64, dpamt: bool, host_priority: bool) -> ModuleConfig {
        ModuleConfig {
            memory_bytes,
            dpamt,
            host_priority,
            num_lps: 1,
            packages: 1,
            initialized: true,
            seamret_erratum: false,
            compat_sensitive_supported: true,
        }
    }

    /// The package of `lp`: LPs are split evenly, in order.
    pub fn package_of(&self, lp: CpuId) -> u32 {
        (u64::from(lp.0) * u64::from(self.packages) / u64::from(self.num_lps)) as u32
    }
}

/// A lock inside the module, named by what it guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ModuleLock {
    /// The PAMT 1GB entry with this index.
    Pamt1G(usize),
    /// The PAMT 2MB entry of the range with this index.
    Pamt2M(usize),
    /// The PAMT 4KB entry of this pfn.
    Pamt4K(u64),
    Tdr(TdId),
    Tdcs(TdId),
    #[doc(alias = "secure_ept_lock")]
    SeptTree(TdId),
    /// The TDEL bit of the S-EPT leaf entry for this GPA.
    SeptEntry(TdId, u64),
    #[doc(alias = "epoch_lock")]
    Epoch(TdId),
    /// The module's global "SYS" lock that the SYS.* leaves take (operand SYS, 0xB8).
    #[doc(alias = "global_lock")]
    Global,
    /// The key ownership table lock (operand KOT, 0xBA).
    #[doc(alias = "kot_lock")]
    Kot,
}

impl ModuleLock {
    /// The TD whose lock this is, for TD locks.
    pub const fn td(self) -> Option<TdId> {
        match self {
            ModuleLock::Pamt1G(_)
            | ModuleLock::Pamt2M(_)
            | ModuleLock::Pamt4K(_)
            | ModuleLock::Global
            | ModuleLock::Kot => None,
            ModuleLock::Tdr(td)
            | ModuleLock::Tdcs(td)
            | ModuleLock::SeptTree(td)
            | ModuleLock::SeptEntry(td, _)
            | ModuleLock::Epoch(td) => Some(td),
        }
    }
}

impl std::fmt::Display for ModuleLock {
    /// `pamt2m[0x200000]`: PAMT entries by the address they cover, TD locks by TD.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleLock::Pamt1G(index) => write!(f, "pamt1g[{:#x}]", *index as u64 * RANGE_1G),
            ModuleLock::Pamt2M(index) => write!(f, "pamt2m[{:#x}]", *index as u64 * RANGE_2M),
            ModuleLock::Pamt4K(pfn) => write!(f, "pamt4k[{:#x}]", pfn * PAGE_SIZE),
            ModuleLock::Tdr(td) => write!(f, "tdr[td{}]", td.0),
            ModuleLock::Tdcs(td) => write!(f, "tdcs[td{}]", td.0),
            ModuleLock::SeptTree(td) => write!(f, "secure_ept_lock[td{}]", td.0),
            ModuleLock::SeptEntry(td, gpa) => write!(f, "sept_entry[td{} {gpa:#x}]", td.0),
            ModuleLock::Epoch(td) => write!(f, "epoch_lock[td{}]", td.0),
            ModuleLock::Global => f.write_str("global_lock"),
            ModuleLock::Kot => f.write_str("kot_lock"),
        }
    }
}

/// A lock a leaf holds, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HeldLock {
    pub lock: ModuleLock,
    pub mode: LockMode,
}

impl std::fmt::Display for HeldLock {
    /// `pamt2m[0x200000] ex`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.lock, self.mode)
    }
}

/// What `begin` answers.
#[derive(Debug)]
pub enum Begin {
    /// The leaf returned without holding anything: a dispatch check (spec §3), an injected
    /// failure, an operand error found before locking, or TDX_OPERAND_BUSY at the first
    /// contended try-lock (all locks taken so far undone).
    Done { output: LeafOutput, try_locks: u32 },
    /// Every lock of the leaf is held (for a P-SEAMLDR leaf: the LP is inside the
    /// P-SEAMLDR); call `finish` after the leaf's cost.
    Held(Ticket),
}

/// A leaf between `begin` and `finish`: it holds its locks until `finish` consumes it.
#[must_use = "a ticket holds module locks until Module::finish"]
#[derive(Debug)]
pub struct Ticket {
    lp: CpuId,
    call: LeafCall,
    // invariant: every lock here is held by this ticket, in acquisition order.
    locks: Vec<HeldLock>,
    try_locks: u32,
    cost_override: Option<u64>,
}

impl Ticket {
    pub fn lp(&self) -> CpuId {
        self.lp
    }

    pub fn call(&self) -> &LeafCall {
        &self.call
    }

    /// The locks held, in the order they were taken.
    pub fn locks(&self) -> &[HeldLock] {
        &self.locks
    }

    /// Try-lock attempts `begin` made (a 2MB exclusive walk counts shared + promote).
    pub fn try_locks(&self) -> u32 {
        self.try_locks
    }

    /// The cost in cycles of this call when it differs from its leaf's: only the last
    /// LP's SEAMLDR.INSTALL, which loads the new image
    /// ([`seamldr_install_last_cost_cycles`]). The host uses it instead of the leaf's cost.
    pub fn cost_override(&self) -> Option<u64> {
        self.cost_override
    }
}

/// Locks taken so far by one leaf, and how many attempts it made.
#[derive(Debug, Default)]
pub(crate) struct LockList {
    pub(crate) held: Vec<HeldLock>,
    pub(crate) try_locks: u32,
}

/// Per-LP state: the module's view (spec §1, §7) and the hardware's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LpState {
    /// TDH.SYS.LP.INIT done against the current module image.
    lp_is_init: bool,
    /// Tickets of this LP between `begin` and `finish`: the module's `lp_is_busy` is
    /// `busy_calls > 0`. A count, not a flag, because tests build overlap by hand and may
    /// hold two tickets on one LP.
    busy_calls: u32,
    /// Hardware: VMXON done; a SEAMCALL with VMX off is #UD.
    vmx_on: bool,
    /// Hardware: a P-SEAMLDR SEAMRET cleared the current VMCS (the erratum, spec §8.2).
    current_vmcs_cleared: bool,
}

/// The TDX module and the P-SEAMLDR: PAMT, TDs, life-cycle state and the modelled leaves.
#[derive(Clone, Debug)]
pub struct Module {
    config: ModuleConfig,
    pamt: Pamt,
    /// The TDs of the current module image.
    tds: BTreeMap<TdId, Td>,
    /// A module image is loaded and SEAMCALLs reach it; cleared by the first
    /// SEAMLDR.INSTALL of a session, set by a successful last one.
    seam_ready: bool,
    /// Written under `global_lock` held exclusive, except by SEAMLDR.INSTALL (the module
    /// is shut down then) and TDMR.INIT's step to SYS_READY (shared; see `maybe_ready`).
    sys_state: SysState,
    global_lock: Sharex,
    kot_lock: Sharex,
    /// `tot_num_lps` as SYS.INIT recorded it.
    num_of_lps: u32,
    // invariant: num_init_lps == number of LPs with lp_is_init.
    num_init_lps: u32,
    /// TDH.SYS.CONFIG succeeded on this image (or the image was initialised at boot, or
    /// imported its configuration with SYS.UPDATE).
    config_done: bool,
    /// Chosen by SYS.CONFIG R8 bit 16 (or imported by SYS.UPDATE).
    dpamt_enabled: bool,
    /// By package. Protected by `global_lock` (KEY.CONFIG takes it exclusive).
    pkg_key_configured: Vec<bool>,
    /// `tdmr_init_progress` of the one TDMR: the next address TDMR.INIT initialises.
    tdmr_next: u64,
    /// Written by SYS.SHUTDOWN, imported by SYS.UPDATE of the next image.
    handoff: Option<Handoff>,
    /// By `CpuId`. invariant: `lps.len() == config.num_lps`.
    lps: Vec<LpState>,
    /// The LP inside the P-SEAMLDR, if any (at most one, spec §8.1).
    seamldr_lp: Option<CpuId>,
    /// The LPs that have called SEAMLDR.INSTALL in the current session, in call order;
    /// `None` when no session is open.
    install_session: Option<Vec<CpuId>>,
    /// Failures to return from the next call of a leaf (`inject_failure`).
    injected: BTreeMap<Leaf, TdxStatus>,
}

impl Module {
    pub fn new(config: ModuleConfig) -> Module {
        assert!(config.num_lps >= 1, "module: a platform has at least one LP");
        assert!(
            (1..=config.num_lps).contains(&config.packages),
            "module: packages must be between 1 and num_lps"
        );
        let booted = config.initialized;
        let lp = LpState { lp_is_init: booted, busy_calls: 0, vmx_on: booted, current_vmcs_cleared: false };
        Module {
            config,
            pamt: Pamt::new(config.memory_bytes, config.dpamt),
            tds: BTreeMap::new(),
            seam_ready: true,
            sys_state: if booted { SysState::SysReady } else { SysState::SysinitPending },
            global_lock: Sharex::new(),
            kot_lock: Sharex::new(),
            num_of_lps: if booted { config.num_lps } else { 0 },
            num_init_lps: if booted { config.num_lps } else { 0 },
            config_done: booted,
            dpamt_enabled: booted && config.dpamt,
            pkg_key_configured: vec![booted; config.packages as usize],
            tdmr_next: if booted { config.memory_bytes } else { 0 },
            handoff: None,
            lps: vec![lp; config.num_lps as usize],
            seamldr_lp: None,
            install_session: None,
            injected: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> ModuleConfig {
        self.config
    }

    /// Whether Dynamic PAMT is on: chosen at boot, by TDH.SYS.CONFIG, or by the handoff.
    pub fn dpamt_enabled(&self) -> bool {
        self.dpamt_enabled
    }

    /// Creates a runnable TD. Shortcut: building a TD (TDH.MNG.CREATE, KEY.CONFIG, ADDCX,
    /// MNG.INIT, VP.CREATE, MR.FINALIZE) is outside this version's model and comes with
    /// the TD-lifecycle work, so the TD's control pages occupy no simulated memory.
    pub fn create_td(&mut self, td: TdId) {
        let previous = self.tds.insert(td, Td::new(self.config.host_priority));
        assert!(previous.is_none(), "create_td: {td} already exists");
    }

    /// The SEAMCALL dispatch checks (spec §3), an injected failure, the operand checks,
    /// then the leaf's try-locks in the module's order. A P-SEAMLDR leaf that gets past
    /// dispatch is `Held` while its LP is inside the P-SEAMLDR.
    ///
    /// `lp` must be one of the platform's `num_lps` LPs.
    pub fn begin(&mut self, lp: CpuId, call: &LeafCall) -> Begin {
        let leaf = call.leaf();
        if let Err(status) = self.check_dispatch(lp, leaf) {
            return done(status, 0);
        }
        if leaf.is_seamldr() {
            return self.begin_seamldr(lp, call);
        }
        if let Some(status) = self.injected.remove(&leaf) {
            return done(status, 0);
        }
        if let Err(status) = self.check_operands(call) {
            return done(status, 0);
        }
        let mut list = LockList::default();
        let locked = self.lock_leaf(call, &mut list).and_then(|()| self.after_locks(lp, call));
        match locked {
            Ok(()) => {
                self.lp_mut(lp).busy_calls += 1;
                Begin::Held(Ticket {
                    lp,
                    call: *call,
                    locks: list.held,
                    try_locks: list.try_locks,
                    cost_override: None,
                })
            }
            Err(status) => {
                self.release_all(&list.held);
                done(status, list.try_locks)
            }
        }
    }

    /// The leaf's state checks and effects, then the release of every lock it holds
    /// (HP bits persist), and the LP leaves the module (or the P-SEAMLDR).
    pub fn finish(&mut self, ticket: Ticket) -> LeafOutput {
        for held in &ticket.locks {
            assert!(self.is_held(*held), "finish: {held} of {} is not held", ticket.call);
        }
        let lp = ticket.lp;
        let output = match self.check_leaf(lp, &ticket.call) {
            Err(status) => LeafOutput::status(status),
            Ok(()) => match ticket.call {
                LeafCall::PamtAdd { hpa, pair } => self.finish_pamt_add(hpa, pair),
                LeafCall::PamtRemove { hpa } => self.finish_pamt_remove(hpa),
                LeafCall::PageAug { td, gpa, page } => self.finish_page_aug(td, gpa, page),
                LeafCall::RangeBlock { td, gpa } => self.finish_range_block(td, gpa),
                LeafCall::Track { td } => self.finish_track(td),
                LeafCall::PageRemove { td, gpa } => self.finish_page_remove(td, gpa),
                LeafCall::PageWbinvd { .. } => LeafOutput::status(TDX_SUCCESS),
                LeafCall::MngCreate { td, tdr } => self.finish_mng_create(td, tdr),
                LeafCall::MngInit { td } => self.finish_op_state(td, OpState::Initialized),
                LeafCall::VpCreate { td, tdvpr } => self.finish_vp_create(td, tdvpr),
                LeafCall::MrFinalize { td } => self.finish_op_state(td, OpState::Runnable),
                _ => self.finish_lifecycle(lp, &ticket.call),
            },
        };
        self.release_all(&ticket.locks);
        if ticket.call.leaf().is_seamldr() {
            self.leave_seamldr(lp);
        } else {
            let lp_state = self.lp_mut(lp);
            lp_state.busy_calls = lp_state.busy_calls.checked_sub(1).expect("finish: the LP was busy");
        }
        output
    }

    /// Whether the held leaf will fail its state checks. A failing leaf returns as soon as
    /// it has checked, so the host holds its locks only for the try-locks, not the leaf's work.
    /// The answer is the one `finish` will give: the state it reads is guarded by the
    /// ticket's locks.
    pub fn will_fail(&self, ticket: &Ticket) -> bool {
        self.check_leaf(ticket.lp, &ticket.call).is_err()
    }

    /// The next call of `leaf`, by any LP, that gets past the dispatch checks (spec §3)
    /// returns `status` from `begin` without effect. Injecting again for the same leaf
    /// replaces the pending failure.
    ///
    /// SEAMLDR.INSTALL takes a P-SEAMLDR status (`status::seamldr::*`); this is the knob
    /// `seamldr_install_module`'s `fail_step` uses. An INSTALL failure on a call that is
    /// not the session's last rejects that call only. On the last call (the one that
    /// would load the image) it is the load failing: the session ends, the old image is
    /// already gone (`seam_ready` stays false), the handoff and the TDs are lost, and the
    /// output's `value` (RDX) is 1, "unrecoverable" [I].
    pub fn inject_failure(&mut self, leaf: Leaf, status: TdxStatus) {
        self.injected.insert(leaf, status);
    }

    /// The DPAMT state of a 2MB range; always `Unbacked` with static PAMT, which keeps no
    /// DPAMT state (see [`Module::has_4k_level`]).
    pub fn dpamt(&self, range_index: usize) -> Dpamt2M {
        self.pamt.dpamt(range_index)
    }

    /// Whether the range has PAMT 4KB entries: always with static PAMT, when backed with
    /// DPAMT.
    pub fn has_4k_level(&self, range_index: usize) -> bool {
        self.pamt.has_4k_level(range_index)
    }

    /// The DPAMT bitmap bit: `page` backs some range's 4KB entries.
    pub fn is_pamt_backing_page(&self, page: Hpa) -> bool {
        self.pamt.is_backing_page(page)
    }

    pub fn page_type(&self, page: Hpa) -> PageType {
        self.pamt.page_type(page)
    }

    pub fn num_ranges(&self) -> usize {
        self.pamt.num_ranges()
    }

    /// The first 4KB page (index within the range) of range `range_index` in use, if any.
    pub fn first_page_in_use(&self, range_index: usize) -> Option<u64> {
        self.pamt.first_page_in_use(range_index)
    }

    pub fn td(&self, td: TdId) -> Option<&Td> {
        self.tds.get(&td)
    }

    /// Module locks held right now, each reader counted (0 when no ticket is out).
    pub fn held_lock_count(&self) -> usize {
        self.pamt.held_lock_count()
            + self.tds.values().map(Td::held_lock_count).sum::<usize>()
            + self.global_lock.holders()
            + self.kot_lock.holders()
    }
}

fn done(status: TdxStatus, try_locks: u32) -> Begin {
    Begin::Done { output: LeafOutput::status(status), try_locks }
}

// Operand checks: before any lock, in register order, as the module does.
impl Module {
    fn check_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        if !call.leaf().is_modelled() {
            return Err(TDX_OPERAND_INVALID.with_operand(operand::RAX));
        }
        match *call {
            LeafCall::PamtAdd { hpa, pair } => {
                self.check_dpamt_enabled()?;
                check_aligned(hpa, RANGE_2M, operand::RCX)?;
                self.check_page(pair[0], operand::RDX)?;
                self.check_page(pair[1], operand::R8)?;
                self.check_inside(hpa, operand::RCX)
            }
            LeafCall::PamtRemove { hpa } => {
                self.check_dpamt_enabled()?;
                check_aligned(hpa, RANGE_2M, operand::RCX)?;
                self.check_inside(hpa, operand::RCX)
            }
            LeafCall::PageAug { td, gpa, page } => {
                check_gpa(gpa)?;
                self.check_td(td, operand::RDX)?;
                self.check_page(page, operand::R8)
            }
            LeafCall::RangeBlock { td, gpa } | LeafCall::PageRemove { td, gpa } => {
                check_gpa(gpa)?;
                self.check_td(td, operand::RDX)
            }
            LeafCall::Track { td } => self.check_td(td, operand::RCX),
            LeafCall::PageWbinvd { page } => self.check_page(page, operand::RCX),
            LeafCall::MngCreate { td, tdr } => {
                self.check_page(tdr, operand::RCX)?;
                // [I] The model names TDs by id: reusing a live TD's id is refused on the
                // TDR operand (on hardware the TDR page *is* the TD's identity).
                if self.tds.contains_key(&td) {
                    return Err(TDX_OPERAND_INVALID.with_operand(operand::RCX));
                }
                Ok(())
            }
            LeafCall::MngInit { td } | LeafCall::MrFinalize { td } => self.check_td(td, operand::RCX),
            LeafCall::VpCreate { td, tdvpr } => {
                self.check_page(tdvpr, operand::RCX)?;
                self.check_td(td, operand::RDX)
            }
            _ => self.check_lifecycle_operands(call),
        }
    }

    fn check_dpamt_enabled(&self) -> Result<(), TdxStatus> {
        if !self.dpamt_enabled {
            return Err(TDX_OPERAND_INVALID.with_operand(operand::RAX));
        }
        Ok(())
    }

    /// A 4KB page operand: aligned, then inside memory.
    fn check_page(&self, page: Hpa, operand_id: u32) -> Result<(), TdxStatus> {
        check_aligned(page, PAGE_SIZE, operand_id)?;
        self.check_inside(page, operand_id)
    }

    fn check_inside(&self, address: Hpa, operand_id: u32) -> Result<(), TdxStatus> {
        if !self.pamt.contains(address) {
            return Err(TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand_id));
        }
        Ok(())
    }

    /// [I] A TDR that names no TD: the module would find a page that is not a TDR; we
    /// answer OPERAND_INVALID on the register that carries the TDR.
    fn check_td(&self, td: TdId, operand_id: u32) -> Result<(), TdxStatus> {
        if !self.tds.contains_key(&td) {
            return Err(TDX_OPERAND_INVALID.with_operand(operand_id));
        }
        Ok(())
    }
}

fn check_aligned(address: Hpa, alignment: u64, operand_id: u32) -> Result<(), TdxStatus> {
    if !address.0.is_multiple_of(alignment) {
        return Err(TDX_OPERAND_INVALID.with_operand(operand_id));
    }
    Ok(())
}

/// The GPA in RCX must be 4KB aligned. No GPA-width check: TDs have no GPAW yet.
fn check_gpa(gpa: Gpa) -> Result<(), TdxStatus> {
    if !gpa.0.is_multiple_of(PAGE_SIZE) {
        return Err(TDX_OPERAND_INVALID.with_operand(operand::RCX));
    }
    Ok(())
}

// Lock sets, one function per leaf, in the module's order. `Err` is the BUSY status.
impl Module {
    fn lock_leaf(&mut self, call: &LeafCall, list: &mut LockList) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::PamtAdd { hpa, pair } => self.lock_pamt_add(hpa, pair, list),
            LeafCall::PamtRemove { hpa } => self.walk(hpa, WalkTarget::Range2MExclusive, operand::RCX, list),
            LeafCall::PageAug { td, gpa, page } => self.lock_page_aug(td, gpa, page, list),
            LeafCall::RangeBlock { td, .. } => {
                self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)?;
                self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)?;
                self.lock_td(ModuleLock::SeptTree(td), LockMode::Exclusive, operand::SEPT, list)
            }
            LeafCall::Track { td } => {
                self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)?;
                self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)?;
                self.lock_td(ModuleLock::Epoch(td), LockMode::Exclusive, operand::TD_EPOCH, list)
            }
            LeafCall::PageRemove { td, gpa } => self.lock_page_remove(td, gpa, list),
            // [I] The spec leaves WBINVD's locks open ("page / KOT"); no lock is modelled.
            LeafCall::PageWbinvd { .. } => Ok(()),
            LeafCall::MngCreate { tdr, .. } => {
                if !self.lock_new_page(tdr, list)? {
                    return Ok(()); // MISSING_PAMT_PAGE_PAIR or PAGE_NOT_FREE, decided in finish
                }
                self.lock_global(ModuleLock::Kot, LockMode::Exclusive, list)
            }
            LeafCall::MngInit { td } | LeafCall::MrFinalize { td } => {
                self.lock_td(ModuleLock::Tdr(td), LockMode::Exclusive, operand::TDR, list)
            }
            LeafCall::VpCreate { td, tdvpr } => {
                if !self.lock_new_page(tdvpr, list)? {
                    return Ok(()); // MISSING_PAMT_PAGE_PAIR or PAGE_NOT_FREE, decided in finish
                }
                self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)?;
                self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)
            }
            _ => self.lock_lifecycle(call, list),
        }
    }

    /// A page-assigning leaf's new control page (RCX): walk to its 4KB entry exclusive.
    /// `Ok(false)` when the module stops there: the range has no DPAMT backing, or the page
    /// is not free.
    fn lock_new_page(&mut self, page: Hpa, list: &mut LockList) -> Result<bool, TdxStatus> {
        self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::RCX, list)?;
        Ok(self.new_page_status(page).is_ok())
    }

    /// A module-wide `sharex` lock: `global_lock` (contention is TDX_SYS_BUSY) or
    /// `kot_lock` (TDX_OPERAND_BUSY|KOT).
    fn lock_global(
        &mut self,
        lock: ModuleLock,
        mode: LockMode,
        list: &mut LockList,
    ) -> Result<(), TdxStatus> {
        list.try_locks += 1;
        let (sharex, busy) = match lock {
            ModuleLock::Global => (&mut self.global_lock, lifecycle::global_lock_busy()),
            ModuleLock::Kot => (&mut self.kot_lock, TDX_OPERAND_BUSY.with_operand(operand::KOT)),
            _ => unreachable!("module: {lock} is not a module-wide lock"),
        };
        let taken = match mode {
            LockMode::Shared => sharex.acquire_shared(),
            LockMode::Exclusive => sharex.acquire_exclusive(),
        };
        if !taken {
            return Err(busy);
        }
        list.held.push(HeldLock { lock, mode });
        Ok(())
    }

    /// Spec §5.4 steps 3–5: X's 2MB entry exclusive, then each pair page outside X down to
    /// its 4KB entry shared.
    fn lock_pamt_add(&mut self, hpa: Hpa, pair: [Hpa; 2], list: &mut LockList) -> Result<(), TdxStatus> {
        self.walk(hpa, WalkTarget::Range2MExclusive, operand::RCX, list)?;
        if self.pamt.dpamt(hpa.range_index()) != Dpamt2M::Unbacked {
            return Ok(()); // HPA_RANGE_NOT_FREE, decided in finish
        }
        for (page, operand_id) in pair.into_iter().zip([operand::RDX, operand::R8]) {
            if page.range_index() == hpa.range_index() {
                continue; // covered by X's exclusive lock
            }
            self.walk(page, WalkTarget::Page4K(LockMode::Shared), operand_id, list)?;
            if self.pamt.page_type(page) != PageType::Nda {
                return Ok(()); // PAGE_NOT_FREE, decided in finish
            }
        }
        Ok(())
    }

    fn lock_page_aug(&mut self, td: TdId, gpa: Gpa, page: Hpa, list: &mut LockList) -> Result<(), TdxStatus> {
        self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)?;
        self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)?;
        self.lock_td(ModuleLock::SeptTree(td), LockMode::Shared, operand::SEPT, list)?;
        let entry = ModuleLock::SeptEntry(td, gpa.0);
        self.lock_td(entry, LockMode::Exclusive, operand::SEPT_ENTRY, list)?;
        self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::R8, list)
    }

    /// The removed page's 4KB entry is locked implicitly (no walk), and only once the
    /// entry is known to be blocked, as the module orders it; contention there is
    /// BUSY|RCX because the page is reached through the GPA.
    fn lock_page_remove(&mut self, td: TdId, gpa: Gpa, list: &mut LockList) -> Result<(), TdxStatus> {
        self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)?;
        self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)?;
        self.lock_td(ModuleLock::SeptTree(td), LockMode::Shared, operand::SEPT, list)?;
        let entry = ModuleLock::SeptEntry(td, gpa.0);
        self.lock_td(entry, LockMode::Exclusive, operand::SEPT_ENTRY, list)?;
        let entry = self.tds[&td].entry(gpa.0);
        if entry.state != SeptState::Blocked {
            return Ok(()); // GPA_RANGE_NOT_BLOCKED, decided in finish
        }
        let page_lock = ModuleLock::Pamt4K(entry.hpa.pfn());
        self.pamt
            .try_lock(page_lock, LockMode::Exclusive, list)
            .map_err(|_| TDX_OPERAND_BUSY.with_operand(operand::RCX))
    }

    fn walk(
        &mut self,
        page: Hpa,
        target: WalkTarget,
        operand_id: u32,
        list: &mut LockList,
    ) -> Result<(), TdxStatus> {
        match self.pamt.walk(page, target, list) {
            Ok(_) => Ok(()),
            Err(_) => Err(TDX_OPERAND_BUSY.with_operand(operand_id)),
        }
    }

    /// One host try-lock on a TD lock.
    fn lock_td(
        &mut self,
        lock: ModuleLock,
        mode: LockMode,
        operand_id: u32,
        list: &mut LockList,
    ) -> Result<(), TdxStatus> {
        list.try_locks += 1;
        let td = self.tds.get_mut(&lock.td().expect("lock_td: a TD lock")).expect("lock_td: TD checked");
        let result = match lock {
            ModuleLock::SeptEntry(_, gpa) => td.try_lock_entry(gpa, Caller::Host),
            _ => {
                let sharex = td_sharex(td, lock);
                match mode {
                    LockMode::Shared => sharex.acquire_shared(Caller::Host),
                    LockMode::Exclusive => sharex.acquire_exclusive(Caller::Host),
                }
            }
        };
        match result {
            Ok(()) => {
                list.held.push(HeldLock { lock, mode });
                Ok(())
            }
            Err(busy) => Err(busy.status().with_operand(operand_id)),
        }
    }

    /// Releases in reverse order of acquisition.
    fn release_all(&mut self, locks: &[HeldLock]) {
        for held in locks.iter().rev() {
            match held.lock {
                ModuleLock::Pamt1G(_) | ModuleLock::Pamt2M(_) | ModuleLock::Pamt4K(_) => {
                    self.pamt.release(held.lock, held.mode)
                }
                ModuleLock::SeptEntry(td, gpa) => self.td_mut(td).release_entry(gpa),
                ModuleLock::Global => self.global_lock.release(held.mode),
                ModuleLock::Kot => self.kot_lock.release(held.mode),
                lock => td_sharex(self.td_mut(lock.td().expect("a TD lock")), lock).release(held.mode),
            }
        }
    }

    fn is_held(&self, held: HeldLock) -> bool {
        match held.lock {
            ModuleLock::Pamt1G(_) | ModuleLock::Pamt2M(_) | ModuleLock::Pamt4K(_) => {
                self.pamt.is_held(held.lock, held.mode)
            }
            ModuleLock::SeptEntry(td, gpa) => self.tds[&td].entry(gpa).locked,
            ModuleLock::Global | ModuleLock::Kot => {
                let sharex = if held.lock == ModuleLock::Global { self.global_lock } else { self.kot_lock };
                match held.mode {
                    LockMode::Shared => sharex.readers() > 0,
                    LockMode::Exclusive => sharex.is_exclusive(),
                }
            }
            lock => {
                let td = &self.tds[&lock.td().expect("a TD lock")];
                let sharex = match lock {
                    ModuleLock::Tdr(_) => td.tdr_lock,
                    ModuleLock::Tdcs(_) => td.tdcs_lock,
                    ModuleLock::SeptTree(_) => td.sept_lock,
                    _ => td.epoch_lock,
                };
                match held.mode {
                    LockMode::Shared => sharex.readers() > 0,
                    LockMode::Exclusive => sharex.is_exclusive(),
                }
            }
        }
    }

    fn td_mut(&mut self, td: TdId) -> &mut Td {
        self.tds.get_mut(&td).expect("module: the TD exists")
    }
}

fn td_sharex(td: &mut Td, lock: ModuleLock) -> &mut crate::lock::SharexHp {
    match lock {
        ModuleLock::Tdr(_) => &mut td.tdr_lock,
        ModuleLock::Tdcs(_) => &mut td.tdcs_lock,
        ModuleLock::SeptTree(_) => &mut td.sept_lock,
        ModuleLock::Epoch(_) => &mut td.epoch_lock,
        _ => unreachable!("module: {lock} is not a TD sharex_hp lock"),
    }
}

// State checks and effects, with every lock of the leaf held.
impl Module {
    /// The leaf's state checks, in the module's order; `Err` is the status it returns.
    fn check_leaf(&self, lp: CpuId, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::PamtAdd { hpa, pair } => {
                // Spec §5.4 steps 4-5.
                let range_index = hpa.range_index();
                if self.pamt.dpamt(range_index) != Dpamt2M::Unbacked {
                    return Err(TDX_HPA_RANGE_NOT_FREE.with_operand(operand::RCX));
                }
                let operands = [operand::RDX, operand::R8];
                for (page, operand_id) in pair.into_iter().zip(operands) {
                    if page.range_index() != range_index && self.pamt.page_type(page) != PageType::Nda {
                        return Err(TDX_PAGE_NOT_FREE.with_operand(operand_id));
                    }
                }
                // The module test-and-sets both bitmap bits (undoing the first if the second
                // was set), for pages inside X too: a page of an unbacked X may back another
                // range. Equal pair pages fail on R8.
                if self.pamt.is_backing_page(pair[0]) {
                    return Err(TDX_PAGE_NOT_FREE.with_operand(operand::RDX));
                }
                if pair[0] == pair[1] || self.pamt.is_backing_page(pair[1]) {
                    return Err(TDX_PAGE_NOT_FREE.with_operand(operand::R8));
                }
                Ok(())
            }
            LeafCall::PamtRemove { hpa } => {
                // Spec §5.5 steps 4-5.
                let range_index = hpa.range_index();
                if !matches!(self.pamt.dpamt(range_index), Dpamt2M::Backed { .. }) {
                    return Err(TDX_NO_PAMT_PAGE_PAIR.with_operand(operand::RCX));
                }
                if let Some(page_index) = self.pamt.first_page_in_use(range_index) {
                    // The detail says which page of the pair holds the entry: 256 entries each.
                    return Err(TDX_PAMT_PAGE_NOT_EMPTY.with_operand((page_index / 256) as u32));
                }
                Ok(())
            }
            LeafCall::PageAug { td, gpa, page } => {
                // [I] The page checks (type not NDA, or a DPAMT backing page) answer
                // PAGE_NOT_FREE|R8: the spec names only MISSING_PAMT_PAGE_PAIR and
                // EPT_ENTRY_STATE_INCORRECT here.
                if !self.pamt.has_4k_level(page.range_index()) {
                    return Err(TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8));
                }
                if self.tds[&td].entry(gpa.0).state != SeptState::Free {
                    return Err(TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
                }
                if self.pamt.page_type(page) != PageType::Nda || self.pamt.is_backing_page(page) {
                    return Err(TDX_PAGE_NOT_FREE.with_operand(operand::R8));
                }
                Ok(())
            }
            LeafCall::RangeBlock { td, gpa } => {
                // A free entry answers EPT_ENTRY_FREE|RCX, as the module does; an already
                // blocked one the informational GPA_RANGE_ALREADY_BLOCKED|RCX.
                match self.tds[&td].entry(gpa.0).state {
                    SeptState::Free => Err(TDX_EPT_ENTRY_FREE.with_operand(operand::RCX)),
                    SeptState::Blocked => Err(TDX_GPA_RANGE_ALREADY_BLOCKED.with_operand(operand::RCX)),
                    SeptState::Pending | SeptState::Mapped => Ok(()),
                }
            }
            LeafCall::Track { .. } | LeafCall::PageWbinvd { .. } => Ok(()),
            LeafCall::PageRemove { td, gpa } => {
                let td = &self.tds[&td];
                let entry = td.entry(gpa.0);
                if entry.state != SeptState::Blocked {
                    return Err(TDX_GPA_RANGE_NOT_BLOCKED.with_operand(operand::RCX));
                }
                // Tracked means a TRACK bumped the epoch after the block.
                if entry.blocked_epoch >= td.td_epoch {
                    return Err(TDX_TLB_TRACKING_NOT_DONE.with_operand(operand::RCX));
                }
                Ok(())
            }
            LeafCall::MngCreate { tdr, .. } => self.new_page_status(tdr),
            LeafCall::MngInit { td } => self.check_op_state(td, OpState::Uninitialized),
            LeafCall::VpCreate { td, tdvpr } => {
                self.new_page_status(tdvpr)?;
                self.check_op_state(td, OpState::Initialized)
            }
            LeafCall::MrFinalize { td } => self.check_op_state(td, OpState::Initialized),
            _ => self.check_lifecycle_leaf(lp, call),
        }
    }

    /// A page-assigning leaf's new page (RCX): the range must have its 4KB level, and the
    /// page must be NDA and not a DPAMT backing page (spec §5.3).
    fn new_page_status(&self, page: Hpa) -> Result<(), TdxStatus> {
        if !self.pamt.has_4k_level(page.range_index()) {
            return Err(TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::RCX));
        }
        if self.pamt.page_type(page) != PageType::Nda || self.pamt.is_backing_page(page) {
            return Err(TDX_PAGE_NOT_FREE.with_operand(operand::RCX));
        }
        Ok(())
    }

    /// [I] The module's op_state checks answer OP_STATE_INCORRECT; no operand detail.
    fn check_op_state(&self, td: TdId, expected: OpState) -> Result<(), TdxStatus> {
        if self.tds[&td].op_state != expected {
            return Err(TDX_OP_STATE_INCORRECT);
        }
        Ok(())
    }

    /// TDH.MNG.CREATE: the TDR page becomes PT_TDR and the TD exists, not initialised.
    fn finish_mng_create(&mut self, td: TdId, tdr: Hpa) -> LeafOutput {
        self.pamt.set_page_type(tdr, PageType::Tdr);
        self.pamt.count_up(tdr.range_index());
        let previous = self.tds.insert(td, Td::created(self.config.host_priority, tdr));
        assert!(previous.is_none(), "MNG.CREATE: {td} was checked absent under kot_lock");
        LeafOutput::status(TDX_SUCCESS)
    }

    fn finish_vp_create(&mut self, td: TdId, tdvpr: Hpa) -> LeafOutput {
        self.pamt.set_page_type(tdvpr, PageType::Tdvpr);
        self.pamt.count_up(tdvpr.range_index());
        self.td_mut(td).tdvprs.push(tdvpr);
        LeafOutput::status(TDX_SUCCESS)
    }

    /// TDH.MNG.INIT (build starts) and TDH.MR.FINALIZE (build ends).
    fn finish_op_state(&mut self, td: TdId, op_state: OpState) -> LeafOutput {
        self.td_mut(td).op_state = op_state;
        LeafOutput::status(TDX_SUCCESS)
    }

    /// Spec §5.4 steps 4–6.
    fn finish_pamt_add(&mut self, hpa: Hpa, pair: [Hpa; 2]) -> LeafOutput {
        let range_index = hpa.range_index();
        for page in pair {
            assert!(
                !self.pamt.set_backing_page(page, true),
                "PAMT.ADD: checked pair page {page} was backing"
            );
        }
        assert_eq!(
            self.pamt.first_page_in_use(range_index),
            None,
            "PAMT.ADD: unbacked range has in-use pages"
        );
        self.pamt.set_dpamt(range_index, Dpamt2M::Backed { hpa0: pair[0], hpa1: pair[1], count: 0 });
        LeafOutput::status(TDX_SUCCESS)
    }

    /// Spec §5.5 steps 4–7.
    fn finish_pamt_remove(&mut self, hpa: Hpa) -> LeafOutput {
        let range_index = hpa.range_index();
        let Dpamt2M::Backed { hpa0, hpa1, count } = self.pamt.dpamt(range_index) else {
            unreachable!("PAMT.REMOVE: checked range is backed");
        };
        assert_eq!(count, 0, "PAMT.REMOVE: all 512 entries are NDA but count is {count}");
        assert!(self.pamt.set_backing_page(hpa0, false), "PAMT.REMOVE: hpa0 bitmap bit was clear");
        assert!(self.pamt.set_backing_page(hpa1, false), "PAMT.REMOVE: hpa1 bitmap bit was clear");
        self.pamt.set_dpamt(range_index, Dpamt2M::Unbacked);
        LeafOutput { pair: Some([hpa0, hpa1]), ..LeafOutput::status(TDX_SUCCESS) }
    }

    fn finish_page_aug(&mut self, td: TdId, gpa: Gpa, page: Hpa) -> LeafOutput {
        let range_index = page.range_index();
        let entry = self.td_mut(td).sept.get_mut(&gpa.0).expect("PAGE.AUG: the entry is locked");
        entry.state = SeptState::Pending;
        entry.hpa = page;
        self.pamt.set_page_type(page, PageType::Reg);
        self.pamt.count_up(range_index);
        LeafOutput::status(TDX_SUCCESS)
    }

    /// A PENDING entry can be blocked too.
    fn finish_range_block(&mut self, td: TdId, gpa: Gpa) -> LeafOutput {
        let td = self.td_mut(td);
        let td_epoch = td.td_epoch;
        let entry = td.sept.get_mut(&gpa.0).expect("RANGE.BLOCK: the checked entry is mapped");
        entry.state = SeptState::Blocked;
        entry.blocked_epoch = td_epoch;
        LeafOutput::status(TDX_SUCCESS)
    }

    /// No vCPU runs in this version, so no vCPU can still be in the previous epoch and
    /// PREVIOUS_TLB_EPOCH_BUSY cannot happen yet.
    fn finish_track(&mut self, td: TdId) -> LeafOutput {
        self.td_mut(td).td_epoch += 1;
        LeafOutput::status(TDX_SUCCESS)
    }

    fn finish_page_remove(&mut self, td: TdId, gpa: Gpa) -> LeafOutput {
        let td = self.tds.get_mut(&td).expect("module: the TD exists");
        let entry = td.entry(gpa.0);
        let slot = td.sept.get_mut(&gpa.0).expect("PAGE.REMOVE: the entry is locked");
        slot.state = SeptState::Free;
        slot.hpa = Hpa(0);
        slot.blocked_epoch = 0;
        let page = entry.hpa;
        assert_eq!(self.pamt.page_type(page), PageType::Reg, "PAGE.REMOVE: a mapped page is REG");
        self.pamt.set_page_type(page, PageType::Nda);
        let count = self.pamt.count_down(page.range_index());
        LeafOutput { removal_hint: count == Some(0), ..LeafOutput::status(TDX_SUCCESS) }
    }
}
