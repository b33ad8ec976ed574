//! `Module`: the TDX module's state and the modelled leaves, each split in `begin` (dispatch
//! and operand checks, then the try-locks), `step` (the next try-lock, when they interleave)
//! and `finish` (state checks, effects, release).
//!
//! A leaf takes its locks in the module's order (spec/seam-module.md §5.4, §5.5, §6), one
//! atomic attempt at a time, a try-lock cost apart (`LeafLocks::Interleaved`, the default;
//! module/locks.rs says how): between two of its attempts a leaf on another LP can take or
//! release a lock. At the first contended try-lock the leaf undoes what it took and answers
//! `TDX_OPERAND_BUSY` with that lock's operand id. A state check that the module makes
//! *between* two lock attempts also ends the locking: the ticket then holds the locks taken
//! so far and `finish` returns that failure, so outcomes keep the module's order (for
//! example PAMT.ADD on a backed range answers HPA_RANGE_NOT_FREE even if a pair page's
//! range is busy). Every state check reads state that the held locks protect, so deciding it
//! in `finish` gives the same answer as deciding it in `begin`.
//!
//! Before any of that, `begin` makes the SEAMCALL dispatch checks of spec §3 (VMX,
//! P-SEAMLDR, `seam_ready`, `sys_state`, `lp_is_init`). The leaves live by family:
//! - `pamt_leaves`: TDH.PHYMEM.PAMT.ADD / REMOVE (spec §5.4, §5.5);
//! - `sept_leaves`: SEPT.ADD, PAGE.ADD, PAGE.AUG, RANGE.BLOCK, TRACK, PAGE.REMOVE,
//!   PAGE.WBINVD;
//! - `td_leaves`: the TD build: MNG.CREATE, MNG.KEY.CONFIG, MNG.INIT, VP.CREATE, MR.FINALIZE;
//! - `vcpu_leaves`: VP.ADDCX, VP.INIT, VP.FLUSH and VP.ENTER's lock set;
//! - `guest`: VP.ENTER's guest run ([`Module::enter_guest`], [`Module::exit_guest`]), the
//!   zero-step filter, and the guest's TDG.MEM.PAGE.ACCEPT;
//! - `teardown_leaves`: MNG.VPFLUSHDONE, PHYMEM.CACHE.WB, MNG.KEY.FREEID, PHYMEM.PAGE.RECLAIM;
//! - `lifecycle`: dispatch, per-LP state, the SYS leaves, the update and the P-SEAMLDR;
//! - `locks`: how a leaf's attempts are made and undone.
//!
//! A leaf's state checks are made once, when it holds its whole lock set (`Begin::Held`),
//! and the ticket keeps the answer for `will_fail` and `finish`. The few checks that read
//! state no held lock protects (the epoch refcounts that TD exits decrement, the TD epoch
//! that PAGE.REMOVE reads) therefore answer as of that moment, as the module's do.

mod guest;
mod lifecycle;
mod locks;
mod pamt_leaves;
mod sept_leaves;
mod td_leaves;
mod teardown_leaves;
mod vcpu_leaves;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sim_core::CpuId;

pub use guest::{AcceptTicket, Entered, GuestAccept, GuestRun, PageRound};
use lifecycle::InstallSession;
pub use lifecycle::{Handoff, SysState};
pub use locks::LeafLocks;
pub(crate) use locks::{Attempt, LockList, LockStop};

use crate::lock::{LockMode, Sharex};
use crate::pamt::{Dpamt2M, OwnerSlot, PageType, Pamt, PamtStorage};
use crate::sept::GPA_LIMIT;
use crate::status::{TDX_OPERAND_ADDR_RANGE_ERROR, TDX_OPERAND_INVALID, TdxStatus, operand};
use crate::td::{Td, VcpuState};
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
    /// How a leaf's try-locks meet other LPs' (spec §2): one attempt at a time, or the
    /// whole set at once.
    pub leaf_locks: LeafLocks,
    /// How long TDH.VP.ENTER holds the SEPT tree lock exclusive once zero-step is suspected.
    pub zero_step_sept_hold: ZeroStepSeptHold,
    /// Calls one package's TDH.PHYMEM.CACHE.WB takes: each call writes back this share of
    /// the package's cache sub-blocks, then sees a pending host interrupt and returns
    /// TDX_INTERRUPTED_RESUMABLE, until the last. [I] The module stops when an interrupt is
    /// pending, which a sans-IO model cannot see, and the number of sub-blocks is the
    /// CPU's; we fix the count. 1 .. [`MAX_CACHE_WB_CALLS`].
    pub cache_wb_calls: u32,
}

/// The largest [`ModuleConfig::cache_wb_calls`]: KVM gives up after `TDX_SEAMCALL_RETRIES`
/// (10000) calls.
pub const MAX_CACHE_WB_CALLS: u32 = 10_000;
/// The largest TDMR the model takes: S-EPT entries keep 32-bit pfns.
pub const MAX_MEMORY_BYTES: u64 = 1 << 44;

/// How long TDH.VP.ENTER holds `secure_ept_lock` exclusive in zero-step mode (spec §6.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZeroStepSeptHold {
    /// From the entry until the TD exits: every SEPT-lock user on the TD gets BUSY (0x92)
    /// while the suspected vCPU runs. Spec §2.5 [I], Yan Zhao's lock table ("VP.ENTER
    /// takes SEPT exclusive when 0-step is suspected").
    #[default]
    WhileRunning,
    /// Only while VP.ENTER checks the logged GPAs, released before the guest runs: what
    /// the TDX 1.5 and 2.0 module sources do (`td_entry_stepping_filter`) [V-mod].
    EntryOnly,
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
            leaf_locks: LeafLocks::Interleaved,
            zero_step_sept_hold: ZeroStepSeptHold::WhileRunning,
            cache_wb_calls: 4,
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
    /// A vCPU's TDVPR page lock.
    Tdvpr(TdId, Hpa),
    /// The TDEL bit of the non-leaf S-EPT entry of this level (1 ..= 3) covering this GPA
    /// (TDH.MEM.SEPT.ADD's parent entry).
    SeptNonLeafEntry(TdId, u8, u64),
    /// Not a lock but a count a leaf holds the same way: `epoch_refcount[parity]`, which a
    /// vCPU keeps raised from TDH.VP.ENTER to its TD exit. TRACK answers
    /// PREVIOUS_TLB_EPOCH_BUSY while the previous parity's count is not 0.
    #[doc(alias = "epoch_refcount")]
    EpochRefcount(TdId, u8),
    /// The package's TDH.PHYMEM.CACHE.WB try-mutex (`wbt_entries[pkg].entry_lock`,
    /// operand WBCACHE, 0xBC).
    Wbcache(u32),
}

impl ModuleLock {
    /// The TD whose lock this is, for TD locks.
    pub const fn td(self) -> Option<TdId> {
        match self {
            ModuleLock::Pamt1G(_)
            | ModuleLock::Pamt2M(_)
            | ModuleLock::Pamt4K(_)
            | ModuleLock::Global
            | ModuleLock::Kot
            | ModuleLock::Wbcache(_) => None,
            ModuleLock::Tdr(td)
            | ModuleLock::Tdcs(td)
            | ModuleLock::SeptTree(td)
            | ModuleLock::SeptEntry(td, _)
            | ModuleLock::Epoch(td)
            | ModuleLock::Tdvpr(td, _)
            | ModuleLock::SeptNonLeafEntry(td, _, _)
            | ModuleLock::EpochRefcount(td, _) => Some(td),
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
            ModuleLock::Tdvpr(td, tdvpr) => write!(f, "tdvpr[td{} {tdvpr}]", td.0),
            ModuleLock::SeptNonLeafEntry(td, level, gpa) => {
                write!(f, "sept_entry[td{} L{level} {gpa:#x}]", td.0)
            }
            ModuleLock::EpochRefcount(td, parity) => write!(f, "epoch_refcount[td{} {parity}]", td.0),
            ModuleLock::Wbcache(package) => write!(f, "wbcache[pkg{package}]"),
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

/// What `begin` and `step` answer.
#[derive(Debug)]
pub enum Begin {
    /// The leaf returned without holding anything: a dispatch check (spec §3), an injected
    /// failure, an operand error found before locking, or a BUSY status at a contended
    /// try-lock (all locks taken so far undone). `try_locks` counts its attempts.
    Done { output: LeafOutput, try_locks: u32 },
    /// The leaf made one try-lock attempt and has more to make, or must undo what it took
    /// after a failed one: call `step` after a try-lock cost (`LeafLocks::Interleaved` only).
    Locking(Ticket),
    /// Every lock of the leaf is held (for a P-SEAMLDR leaf: the LP is inside the
    /// P-SEAMLDR); call `finish` after the leaf's cost.
    Held(Ticket),
}

/// A leaf between `begin` and `finish`: it holds its locks until `finish` consumes it.
///
/// Boxed: `begin`, `step` and `finish` pass it by value, once per try-lock attempt, and its
/// lock list is inline; moving a pointer is cheaper than moving the list.
#[must_use = "a ticket holds module locks until Module::finish"]
#[derive(Debug)]
pub struct Ticket(Box<TicketState>);

/// What a ticket holds; reached only through [`Ticket`]'s accessors.
#[derive(Debug)]
pub struct TicketState {
    lp: CpuId,
    call: LeafCall,
    list: LockList,
    /// An attempt failed with this status; the next `step` undoes the locks and returns it.
    failed: Option<TdxStatus>,
    cost_override: Option<u64>,
    /// The leaf's state checks, made when it got its whole lock set.
    checked: Option<Result<(), TdxStatus>>,
}

impl std::ops::Deref for Ticket {
    type Target = TicketState;
    fn deref(&self) -> &TicketState {
        &self.0
    }
}

impl std::ops::DerefMut for Ticket {
    fn deref_mut(&mut self) -> &mut TicketState {
        &mut self.0
    }
}

impl Ticket {
    fn new(lp: CpuId, call: LeafCall, list: LockList, cost_override: Option<u64>) -> Ticket {
        Ticket(Box::new(TicketState { lp, call, list, failed: None, cost_override, checked: None }))
    }

    pub fn lp(&self) -> CpuId {
        self.lp
    }

    pub fn call(&self) -> &LeafCall {
        &self.call
    }

    /// The locks held, in the order they were taken.
    pub fn locks(&self) -> &[HeldLock] {
        &self.list.held
    }

    /// Try-lock attempts made so far (a 2MB exclusive walk counts shared + promote).
    pub fn try_locks(&self) -> u32 {
        self.list.try_locks
    }

    /// The cost in cycles of this call when it differs from its leaf's: only the last
    /// LP's SEAMLDR.INSTALL, which loads the new image
    /// ([`crate::leaf::seamldr_install_last_cost_cycles`]). The host uses it instead of the
    /// leaf's cost.
    pub fn cost_override(&self) -> Option<u64> {
        self.cost_override
    }
}

/// Per-LP state: the module's view (spec §1, §7) and the hardware's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LpState {
    /// TDH.SYS.LP.INIT done against the current module image.
    lp_is_init: bool,
    /// Tickets of this LP that are alive: from `begin` past its operand checks until a pass
    /// answers `Done`, `finish`, or VP.ENTER's return; the module's `lp_is_busy` is
    /// `busy_calls > 0`. A count, not a flag, because tests build overlap by hand and may
    /// hold two tickets on one LP.
    busy_calls: u32,
    /// Hardware: VMXON done; a SEAMCALL with VMX off is #UD.
    vmx_on: bool,
    /// Hardware: a P-SEAMLDR SEAMRET cleared the current VMCS (the erratum, spec §8.2).
    current_vmcs_cleared: bool,
    /// The vCPU whose guest runs on this LP (inside TDH.VP.ENTER), if any.
    running: Option<(TdId, Hpa)>,
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
    /// The LPs that have called SEAMLDR.INSTALL in the current session; `None` when no
    /// session is open.
    install_session: Option<InstallSession>,
    /// Failures to return from the next call of a leaf (`inject_failure`).
    injected: BTreeMap<Leaf, TdxStatus>,
    /// The TD each PAMT owner slot names; `None` for a free slot.
    owners: Vec<Option<TdId>>,
    /// By package: the TDH.PHYMEM.CACHE.WB state (`wbt_entries`).
    wbt: Vec<WbtEntry>,
    /// A TD whose TDR a PAGE.RECLAIM in `finish` just reclaimed, dropped after the release.
    reclaimed_td: Option<TdId>,
}

/// A module's vectors that [`Module::build`] empties and fills: new ones for [`Module::new`],
/// an earlier module's for [`Module::reset`] (their capacities are all that is kept).
#[derive(Default)]
struct ModuleStorage {
    pamt: PamtStorage,
    pkg_key_configured: Vec<bool>,
    lps: Vec<LpState>,
    owners: Vec<Option<TdId>>,
    wbt: Vec<WbtEntry>,
}

/// One package's TDH.PHYMEM.CACHE.WB state.
#[derive(Clone, Debug, Default)]
struct WbtEntry {
    /// The try-mutex. invariant: held only while a CACHE.WB ticket of an LP of this package
    /// holds `ModuleLock::Wbcache`.
    locked: bool,
    /// Calls done of the write-back in progress (`intr_point`); 0 when none is.
    progress: u32,
    /// The TDs whose HKIDs were FLUSHED when the write-back started (`hkid_flushed`).
    covers: Vec<TdId>,
}

impl Module {
    pub fn new(config: ModuleConfig) -> Module {
        Module::build(config, ModuleStorage::default())
    }

    /// Makes this module what `Module::new(config)` makes, built by the same constructor
    /// into its own emptied vectors: a thread's runs reuse one module (scenarios' run.rs),
    /// and nothing of the earlier run survives but capacities.
    pub fn reset(&mut self, config: ModuleConfig) {
        let storage = ModuleStorage {
            pamt: self.pamt.take_storage(),
            pkg_key_configured: std::mem::take(&mut self.pkg_key_configured),
            lps: std::mem::take(&mut self.lps),
            owners: std::mem::take(&mut self.owners),
            wbt: std::mem::take(&mut self.wbt),
        };
        *self = Module::build(config, storage);
    }

    /// The one constructor: every field named, every vector filled from empty.
    fn build(config: ModuleConfig, storage: ModuleStorage) -> Module {
        assert!(config.num_lps >= 1, "module: a platform has at least one LP");
        assert!(
            (1..=config.num_lps).contains(&config.packages),
            "module: packages must be between 1 and num_lps"
        );
        assert!(config.memory_bytes <= MAX_MEMORY_BYTES, "module: memory above {MAX_MEMORY_BYTES:#x} bytes");
        assert!(
            (1..=MAX_CACHE_WB_CALLS).contains(&config.cache_wb_calls),
            "module: cache_wb_calls must be 1..={MAX_CACHE_WB_CALLS}"
        );
        let booted = config.initialized;
        let lp = LpState {
            lp_is_init: booted,
            busy_calls: 0,
            vmx_on: booted,
            current_vmcs_cleared: false,
            running: None,
        };
        let ModuleStorage { pamt, mut pkg_key_configured, mut lps, mut owners, mut wbt } = storage;
        pkg_key_configured.clear();
        pkg_key_configured.resize(config.packages as usize, booted);
        lps.clear();
        lps.resize(config.num_lps as usize, lp);
        owners.clear();
        wbt.clear();
        wbt.resize(config.packages as usize, WbtEntry::default());
        Module {
            config,
            pamt: Pamt::build(config.memory_bytes, config.dpamt, pamt),
            tds: BTreeMap::new(),
            seam_ready: true,
            sys_state: if booted { SysState::SysReady } else { SysState::SysinitPending },
            global_lock: Sharex::new(),
            kot_lock: Sharex::new(),
            num_of_lps: if booted { config.num_lps } else { 0 },
            num_init_lps: if booted { config.num_lps } else { 0 },
            config_done: booted,
            dpamt_enabled: booted && config.dpamt,
            pkg_key_configured,
            tdmr_next: if booted { config.memory_bytes } else { 0 },
            handoff: None,
            lps,
            seamldr_lp: None,
            install_session: None,
            injected: BTreeMap::new(),
            owners,
            wbt,
            reclaimed_td: None,
        }
    }

    pub fn config(&self) -> ModuleConfig {
        self.config
    }

    /// Whether Dynamic PAMT is on: chosen at boot, by TDH.SYS.CONFIG, or by the handoff.
    pub fn dpamt_enabled(&self) -> bool {
        self.dpamt_enabled
    }

    /// Creates a runnable TD, its keys configured on every package. Shortcut: the TD's
    /// control pages occupy no simulated memory; TDs a scenario builds go through
    /// TDH.MNG.CREATE and the rest of the build instead.
    pub fn create_td(&mut self, td: TdId) {
        assert!(!self.tds.contains_key(&td), "create_td: {td} already exists");
        let mut new = Td::new(self.config.host_priority, self.take_owner_slot(td));
        new.key_packages = (0..self.config.packages).collect();
        self.tds.insert(td, new);
    }

    /// Gives a TD a READY vCPU on `tdvpr`, associated with no LP. Shortcut, like
    /// [`Module::create_td`]: the TDVPR and its TDCX pages occupy no simulated memory; a
    /// TD built through the leaves gets its vCPUs from TDH.VP.CREATE, ADDCX and INIT.
    pub fn create_vcpu(&mut self, td: TdId, tdvpr: Hpa) {
        assert!(
            self.pamt.contains(tdvpr) && tdvpr.0.is_multiple_of(PAGE_SIZE),
            "create_vcpu: bad TDVPR {tdvpr}"
        );
        self.tds
            .get_mut(&td)
            .unwrap_or_else(|| panic!("create_vcpu: no {td}"))
            .add_vcpu(tdvpr, VcpuState::Ready);
    }

    /// A free PAMT owner slot for `td`.
    fn take_owner_slot(&mut self, td: TdId) -> OwnerSlot {
        let slot = match self.owners.iter().position(Option::is_none) {
            Some(slot) => slot,
            None => {
                self.owners.push(None);
                self.owners.len() - 1
            }
        };
        self.owners[slot] = Some(td);
        OwnerSlot::try_from(slot).expect("module: more TDs alive at once than PAMT owner slots")
    }

    /// The TD a PAMT owner slot names.
    fn owner_td(&self, slot: OwnerSlot) -> TdId {
        self.owners[usize::from(slot)].expect("module: an in-use page's owner slot names a TD")
    }

    /// The SEAMCALL dispatch checks (spec §3), an injected failure, the operand checks,
    /// then the leaf's first try-lock attempt (all of them with `LeafLocks::Atomic`). A
    /// P-SEAMLDR leaf that gets past dispatch is `Held` while its LP is inside the P-SEAMLDR.
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
        // Most runs inject nothing: the empty plan is one compare, not a map lookup.
        if !self.injected.is_empty()
            && let Some(status) = self.injected.remove(&leaf)
        {
            return done(status, 0);
        }
        if let Err(status) = self.check_operands(call) {
            return done(status, 0);
        }
        let list = match self.config.leaf_locks {
            LeafLocks::Interleaved => LockList::default(),
            LeafLocks::Atomic => LockList::atomic(),
        };
        assert!(self.lp(lp).running.is_none(), "begin: {lp} runs a guest, it cannot issue a SEAMCALL");
        let ticket = Ticket::new(lp, *call, list, None);
        // The LP is busy while the ticket lives: until a pass answers `Done`, or `finish`.
        self.lp_mut(lp).busy_calls += 1;
        self.lock_pass(ticket)
    }

    /// The next try-lock attempt of a leaf that `begin` (or an earlier `step`) left
    /// `Locking`.
    ///
    /// Inline: the host calls it once per try-lock attempt, and inlined it takes the
    /// answer where the host keeps it instead of copying it out.
    #[inline]
    pub fn step(&mut self, ticket: Ticket) -> Begin {
        self.lock_pass(ticket)
    }

    /// One pass over the leaf's lock set (module/locks.rs): `Held` when it got to the end,
    /// `Locking` when it paused after its new attempt, `Done` with BUSY when one failed.
    /// With interleaved attempts, undoing after a failure is a step of its own: until it,
    /// the leaf still holds what it took, as on hardware, where the release is a further
    /// atomic operation after the failed one.
    fn lock_pass(&mut self, mut ticket: Ticket) -> Begin {
        if let Some(status) = ticket.failed {
            self.release_all(&ticket.list.held);
            self.leave_module(ticket.lp);
            return done(status, ticket.list.try_locks);
        }
        let allowance = match self.config.leaf_locks {
            LeafLocks::Interleaved => 1,
            LeafLocks::Atomic => u32::MAX,
        };
        ticket.list.pass(allowance);
        let state = &mut *ticket;
        let locked = self.lock_leaf(state.lp, &state.call, &mut state.list);
        let locked = locked.and_then(|()| self.after_locks(ticket.lp, &ticket.call).map_err(LockStop::Busy));
        match locked {
            Ok(()) => {
                ticket.checked = Some(self.check_leaf(ticket.lp, &ticket.call));
                Begin::Held(ticket)
            }
            Err(LockStop::Pause) => Begin::Locking(ticket),
            Err(LockStop::Busy(status)) if self.config.leaf_locks == LeafLocks::Interleaved => {
                ticket.failed = Some(status);
                Begin::Locking(ticket)
            }
            Err(LockStop::Busy(status)) => {
                self.release_all(&ticket.list.held);
                self.leave_module(ticket.lp);
                done(status, ticket.list.try_locks)
            }
            Err(LockStop::Contended) => {
                unreachable!("module: PAMT contention reached the leaf unmapped")
            }
        }
    }

    /// The leaf's state checks and effects, then the release of every lock it holds
    /// (HP bits persist), and the LP leaves the module (or the P-SEAMLDR).
    pub fn finish(&mut self, ticket: Ticket) -> LeafOutput {
        // The ticket's locks are held by construction (only a pass adds to the list, after
        // its try-lock succeeded); debug builds check it, release runs do not pay for it.
        for held in ticket.locks() {
            debug_assert!(self.is_held(*held), "finish: {held} of {} is not held", ticket.call);
        }
        let lp = ticket.lp;
        let output = match self.checked(&ticket) {
            Err(status) => LeafOutput::status(status),
            Ok(()) => {
                assert!(
                    !matches!(ticket.call, LeafCall::VpEnter { .. }),
                    "finish: VP.ENTER runs the guest: call Module::enter_guest, then exit_guest"
                );
                self.apply(lp, &ticket.call)
            }
        };
        self.release_all(&ticket.list.held);
        self.drop_reclaimed_td();
        if ticket.call.leaf().is_seamldr() {
            self.leave_seamldr(lp);
        } else {
            self.leave_module(lp);
        }
        output
    }

    /// A ticket of `lp` ended: one call fewer keeps the LP busy.
    pub(super) fn leave_module(&mut self, lp: CpuId) {
        let lp_state = self.lp_mut(lp);
        lp_state.busy_calls = lp_state.busy_calls.checked_sub(1).expect("module: the LP was busy");
    }

    /// Whether the held leaf will fail its state checks. A failing leaf returns as soon as
    /// it has checked, so the host holds its locks only for the try-locks, not the leaf's work.
    /// The answer is the one `finish` will give: the state it reads is guarded by the
    /// ticket's locks.
    ///
    /// Inline: the host asks it of every held leaf, and the answer is kept in the ticket.
    #[inline]
    pub fn will_fail(&self, ticket: &Ticket) -> bool {
        self.checked(ticket).is_err()
    }

    /// The ticket's state checks: made when it got its locks, or now for a P-SEAMLDR leaf.
    fn checked(&self, ticket: &Ticket) -> Result<(), TdxStatus> {
        ticket.checked.unwrap_or_else(|| self.check_leaf(ticket.lp, &ticket.call))
    }

    /// The fault plan a run gives the module: the next call of `leaf`, by any LP, that gets
    /// past the dispatch checks (spec §3) returns `status` from `begin` without effect.
    /// Injecting again for the same leaf replaces the pending failure.
    ///
    /// SEAMLDR.INSTALL takes a P-SEAMLDR status (`status::seamldr::*`). An INSTALL failure
    /// on a call that is not the session's last rejects that call only. On the last call
    /// (the one that would load the image) it is the load failing: the session ends, the
    /// old image is already gone (`seam_ready` stays false), the handoff and the TDs are
    /// lost, and the output's `value` (RDX) is 1, "unrecoverable" [I].
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
    /// O(1) for a range with no page in use.
    #[inline]
    pub fn first_page_in_use(&self, range_index: usize) -> Option<u64> {
        self.pamt.first_page_in_use(range_index)
    }

    /// The 4KB pages of range `range_index` in use (type not NDA), in either PAMT mode.
    pub fn pages_in_use(&self, range_index: usize) -> u16 {
        self.pamt.pages_in_use(range_index)
    }

    /// The TD owning an in-use page (its PAMT entry's owner), if any.
    pub fn page_owner(&self, page: Hpa) -> Option<TdId> {
        self.pamt.owner(page).map(|slot| self.owner_td(slot))
    }

    /// The bytes the PAMT and every TD's S-EPT own on the heap: what the model's memory
    /// footprint grows with ([`crate::pamt::Pamt::heap_bytes`], [`crate::sept::Sept::heap_bytes`]).
    pub fn state_heap_bytes(&self) -> usize {
        self.pamt.heap_bytes() + self.tds.values().map(|td| td.sept.heap_bytes()).sum::<usize>()
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
            + self.wbt.iter().filter(|entry| entry.locked).count()
    }
}

fn done(status: TdxStatus, try_locks: u32) -> Begin {
    Begin::Done { output: LeafOutput::status(status), try_locks }
}

// Each leaf's four parts, by family: operand checks before any lock, in register order;
// the lock set in the module's order (`Err` is the BUSY status, or a pause between two
// attempts); the state checks with every lock held; the effect.
impl Module {
    fn check_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        if !call.leaf().is_modelled() {
            return Err(TDX_OPERAND_INVALID.with_operand(operand::RAX));
        }
        match *call {
            LeafCall::PamtAdd { .. } | LeafCall::PamtRemove { .. } => self.check_pamt_operands(call),
            LeafCall::PageAug { .. }
            | LeafCall::RangeBlock { .. }
            | LeafCall::PageRemove { .. }
            | LeafCall::Track { .. }
            | LeafCall::PageWbinvd { .. }
            | LeafCall::SeptAdd { .. }
            | LeafCall::PageAdd { .. } => self.check_sept_operands(call),
            LeafCall::MngCreate { .. }
            | LeafCall::MngKeyConfig { .. }
            | LeafCall::MngInit { .. }
            | LeafCall::VpCreate { .. }
            | LeafCall::MrFinalize { .. } => self.check_td_operands(call),
            LeafCall::VpAddcx { .. }
            | LeafCall::VpInit { .. }
            | LeafCall::VpEnter { .. }
            | LeafCall::VpFlush { .. } => self.check_vcpu_operands(call),
            LeafCall::MngVpflushdone { .. }
            | LeafCall::CacheWb { .. }
            | LeafCall::MngKeyFreeid { .. }
            | LeafCall::PageReclaim { .. } => self.check_teardown_operands(call),
            LeafCall::SysInit
            | LeafCall::SysLpInit
            | LeafCall::SysConfig { .. }
            | LeafCall::SysKeyConfig
            | LeafCall::SysTdmrInit
            | LeafCall::SysRd { .. }
            | LeafCall::SysShutdown { .. }
            | LeafCall::SysUpdate
            | LeafCall::SeamldrInfo
            | LeafCall::SeamldrInstall => self.check_lifecycle_operands(call),
        }
    }

    fn lock_leaf(&mut self, lp: CpuId, call: &LeafCall, list: &mut LockList) -> Result<(), LockStop> {
        match *call {
            LeafCall::PamtAdd { .. } | LeafCall::PamtRemove { .. } => self.lock_pamt_leaf(call, list),
            LeafCall::PageAug { .. }
            | LeafCall::RangeBlock { .. }
            | LeafCall::PageRemove { .. }
            | LeafCall::Track { .. }
            | LeafCall::PageWbinvd { .. }
            | LeafCall::SeptAdd { .. }
            | LeafCall::PageAdd { .. } => self.lock_sept_leaf(call, list),
            LeafCall::MngCreate { .. }
            | LeafCall::MngKeyConfig { .. }
            | LeafCall::MngInit { .. }
            | LeafCall::VpCreate { .. }
            | LeafCall::MrFinalize { .. } => self.lock_td_leaf(call, list),
            LeafCall::VpAddcx { .. }
            | LeafCall::VpInit { .. }
            | LeafCall::VpEnter { .. }
            | LeafCall::VpFlush { .. } => self.lock_vcpu_leaf(lp, call, list),
            LeafCall::MngVpflushdone { .. }
            | LeafCall::CacheWb { .. }
            | LeafCall::MngKeyFreeid { .. }
            | LeafCall::PageReclaim { .. } => self.lock_teardown_leaf(lp, call, list),
            LeafCall::SysInit
            | LeafCall::SysLpInit
            | LeafCall::SysConfig { .. }
            | LeafCall::SysKeyConfig
            | LeafCall::SysTdmrInit
            | LeafCall::SysRd { .. }
            | LeafCall::SysShutdown { .. }
            | LeafCall::SysUpdate
            | LeafCall::SeamldrInfo
            | LeafCall::SeamldrInstall => self.lock_lifecycle(call, list),
        }
    }

    /// The leaf's state checks, in the module's order; `Err` is the status it returns.
    fn check_leaf(&self, lp: CpuId, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::PamtAdd { .. } | LeafCall::PamtRemove { .. } => self.check_pamt_leaf(call),
            LeafCall::PageAug { .. }
            | LeafCall::RangeBlock { .. }
            | LeafCall::PageRemove { .. }
            | LeafCall::Track { .. }
            | LeafCall::PageWbinvd { .. }
            | LeafCall::SeptAdd { .. }
            | LeafCall::PageAdd { .. } => self.check_sept_leaf(call),
            LeafCall::MngCreate { .. }
            | LeafCall::MngKeyConfig { .. }
            | LeafCall::MngInit { .. }
            | LeafCall::VpCreate { .. }
            | LeafCall::MrFinalize { .. } => self.check_td_leaf(lp, call),
            LeafCall::VpAddcx { .. }
            | LeafCall::VpInit { .. }
            | LeafCall::VpEnter { .. }
            | LeafCall::VpFlush { .. } => self.check_vcpu_leaf(lp, call),
            LeafCall::MngVpflushdone { .. }
            | LeafCall::CacheWb { .. }
            | LeafCall::MngKeyFreeid { .. }
            | LeafCall::PageReclaim { .. } => self.check_teardown_leaf(lp, call),
            LeafCall::SysInit
            | LeafCall::SysLpInit
            | LeafCall::SysConfig { .. }
            | LeafCall::SysKeyConfig
            | LeafCall::SysTdmrInit
            | LeafCall::SysRd { .. }
            | LeafCall::SysShutdown { .. }
            | LeafCall::SysUpdate
            | LeafCall::SeamldrInfo
            | LeafCall::SeamldrInstall => self.check_lifecycle_leaf(lp, call),
        }
    }

    /// The leaf's effect once its checks passed.
    fn apply(&mut self, lp: CpuId, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::PamtAdd { .. } | LeafCall::PamtRemove { .. } => self.finish_pamt_leaf(call),
            LeafCall::PageAug { .. }
            | LeafCall::RangeBlock { .. }
            | LeafCall::PageRemove { .. }
            | LeafCall::Track { .. }
            | LeafCall::PageWbinvd { .. }
            | LeafCall::SeptAdd { .. }
            | LeafCall::PageAdd { .. } => self.finish_sept_leaf(call),
            LeafCall::MngCreate { .. }
            | LeafCall::MngKeyConfig { .. }
            | LeafCall::MngInit { .. }
            | LeafCall::VpCreate { .. }
            | LeafCall::MrFinalize { .. } => self.finish_td_leaf(lp, call),
            LeafCall::VpAddcx { .. }
            | LeafCall::VpInit { .. }
            | LeafCall::VpEnter { .. }
            | LeafCall::VpFlush { .. } => self.finish_vcpu_leaf(lp, call),
            LeafCall::MngVpflushdone { .. }
            | LeafCall::CacheWb { .. }
            | LeafCall::MngKeyFreeid { .. }
            | LeafCall::PageReclaim { .. } => self.finish_teardown_leaf(lp, call),
            LeafCall::SysInit
            | LeafCall::SysLpInit
            | LeafCall::SysConfig { .. }
            | LeafCall::SysKeyConfig
            | LeafCall::SysTdmrInit
            | LeafCall::SysRd { .. }
            | LeafCall::SysShutdown { .. }
            | LeafCall::SysUpdate
            | LeafCall::SeamldrInfo
            | LeafCall::SeamldrInstall => self.finish_lifecycle(lp, call),
        }
    }
}

// Operand checks the leaf families share.
impl Module {
    /// A 4KB page operand: aligned, then inside memory.
    fn check_page(&self, page: Hpa, operand_id: u32) -> Result<(), TdxStatus> {
        check_page_of(&self.pamt, page, operand_id)
    }

    fn check_inside(&self, address: Hpa, operand_id: u32) -> Result<(), TdxStatus> {
        check_inside_of(&self.pamt, address, operand_id)
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

/// A page operand: 4KB aligned and inside the memory the PAMT covers.
pub(super) fn check_page_of(pamt: &Pamt, page: Hpa, operand_id: u32) -> Result<(), TdxStatus> {
    check_aligned(page, PAGE_SIZE, operand_id)?;
    check_inside_of(pamt, page, operand_id)
}

fn check_inside_of(pamt: &Pamt, address: Hpa, operand_id: u32) -> Result<(), TdxStatus> {
    if !pamt.contains(address) {
        return Err(TDX_OPERAND_ADDR_RANGE_ERROR.with_operand(operand_id));
    }
    Ok(())
}

fn check_aligned(address: Hpa, alignment: u64, operand_id: u32) -> Result<(), TdxStatus> {
    if !address.0.is_multiple_of(alignment) {
        return Err(TDX_OPERAND_INVALID.with_operand(operand_id));
    }
    Ok(())
}

/// The GPA in RCX must be 4KB aligned and private: below the shared bit of the model's
/// 48-bit GPA width ([`crate::sept::GPA_LIMIT`]).
fn check_gpa(gpa: Gpa) -> Result<(), TdxStatus> {
    if !gpa.0.is_multiple_of(PAGE_SIZE) || gpa.0 >= GPA_LIMIT {
        return Err(TDX_OPERAND_INVALID.with_operand(operand::RCX));
    }
    Ok(())
}
