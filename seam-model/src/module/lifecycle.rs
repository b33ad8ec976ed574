//! The module's life cycle and the P-SEAMLDR: SEAMCALL dispatch (spec §3), boot-time
//! initialisation and the TD-preserving update (§4), per-LP state (§7), the P-SEAMLDR
//! (§8) and what each phase accepts (§9).
//!
//! The SYS.* leaves follow the two-phase shape of the others: `begin` takes
//! `global_lock`, `finish` checks the state and applies the effect. SYS.SHUTDOWN is the
//! one leaf with an effect in `begin`: it sets SYS_SHUTDOWN as soon as it holds the lock,
//! before it looks for busy LPs, so calls that arrive while it runs see the module shut down.
//!
//! A P-SEAMLDR leaf has no locks: between `begin` and `finish` its LP is *inside* the
//! P-SEAMLDR, and any other P-SEAMLDR call meanwhile gets VMfailInvalid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sim_core::CpuId;

use super::{LockList, LockStop, LpState, Module, ModuleLock};
use crate::call::metadata;
use crate::leaf::seamldr_install_last_cost_cycles;
use crate::lock::LockMode;
use crate::pamt::Pamt;
use crate::status::seamldr::{SEAMLDR_EBADCALL, SEAMLDR_EBADHANDOFF, SEAMLDR_SUCCESS};
use crate::status::{
    TDX_KEY_CONFIGURED, TDX_METADATA_FIELD_ID_INCORRECT, TDX_OPERAND_INVALID, TDX_SEAMCALL_UD,
    TDX_SEAMCALL_VMFAILINVALID, TDX_SUCCESS, TDX_SYS_BUSY, TDX_SYS_CONFIG_NOT_PENDING,
    TDX_SYS_INIT_NOT_PENDING, TDX_SYS_INVALID_HANDOFF, TDX_SYS_KEY_CONFIG_NOT_PENDING, TDX_SYS_LP_INIT_DONE,
    TDX_SYS_LP_INIT_NOT_DONE, TDX_SYS_LP_INIT_NOT_PENDING, TDX_SYS_NOT_READY, TDX_SYS_SHUTDOWN,
    TDX_SYS_STATE_INCORRECT, TDX_UPDATE_COMPAT_SENSITIVE, TdxStatus, operand,
};
use crate::td::Td;
use crate::{Begin, Leaf, LeafCall, LeafOutput, RANGE_1G, TdId, Ticket};

/// The module's `sys_state` (spec §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SysState {
    /// Loaded; TDH.SYS.INIT not done yet.
    #[doc(alias = "SYSINIT_PENDING")]
    SysinitPending,
    /// TDH.SYS.INIT done; LP.INIT, CONFIG, KEY.CONFIG, TDMR.INIT (or SYS.UPDATE) to go.
    #[doc(alias = "SYSINIT_DONE")]
    SysinitDone,
    #[doc(alias = "SYS_READY")]
    SysReady,
    /// TDH.SYS.SHUTDOWN succeeded (or is running): only SYS.LP.SHUTDOWN is accepted.
    #[doc(alias = "SYS_SHUTDOWN")]
    SysShutdown,
}

/// What TDH.SYS.SHUTDOWN hands to the next module image: the TDs with their state, and
/// the configuration SYS.UPDATE restores instead of SYS.CONFIG / KEY.CONFIG / TDMR.INIT.
#[derive(Clone, Debug)]
pub struct Handoff {
    tds: BTreeMap<TdId, Td>,
    dpamt_enabled: bool,
}

impl Handoff {
    /// The TDs the handoff carries.
    pub fn td_names(&self) -> Vec<TdId> {
        self.tds.keys().copied().collect()
    }

    pub fn dpamt_enabled(&self) -> bool {
        self.dpamt_enabled
    }
}

/// Contention on `global_lock`. The module answers a plain TDX_SYS_BUSY, no operand.
pub(super) const fn global_lock_busy() -> TdxStatus {
    TDX_SYS_BUSY
}

// Per-LP state and the platform view the host drives.
impl Module {
    /// Models VMXON (`on`) and VMXOFF on `lp`. Not while the LP is inside SEAM.
    pub fn set_vmx(&mut self, lp: CpuId, on: bool) {
        assert!(!self.lp_is_busy(lp), "set_vmx: {lp} is inside a SEAMCALL");
        assert_ne!(self.seamldr_lp, Some(lp), "set_vmx: {lp} is inside the P-SEAMLDR");
        self.lp_mut(lp).vmx_on = on;
    }

    /// The LP was taken offline and will come back through INIT/SIPI: it loses its LP.INIT
    /// on the current image and VMX. [I] Spec §7: an LP that comes online later needs
    /// LP.INIT before any other SEAMCALL.
    pub fn reset_lp(&mut self, lp: CpuId) {
        assert!(!self.lp_is_busy(lp), "reset_lp: {lp} is inside a SEAMCALL");
        let state = self.lp_mut(lp);
        let was_init = std::mem::replace(&mut state.lp_is_init, false);
        state.vmx_on = false;
        if was_init {
            self.num_init_lps = self.num_init_lps.saturating_sub(1);
        }
    }

    /// The hardware view: VMX is on, so SEAMCALL does not #UD.
    pub fn vmx_on(&self, lp: CpuId) -> bool {
        self.lp(lp).vmx_on
    }

    /// TDH.SYS.LP.INIT is done on `lp` against the current module image.
    ///
    /// Inline: the state checker asks it at every SEAMCALL.
    #[inline]
    pub fn lp_is_init(&self, lp: CpuId) -> bool {
        self.lp(lp).lp_is_init
    }

    /// `lp` is inside a TDX-module SEAMCALL: from a `begin` that did not return `Done` until
    /// its `finish`, or for TDH.VP.ENTER until its guest run ends (`exit_guest`), the whole
    /// time the guest runs (spec §7). P-SEAMLDR calls do not count (see [`Module::seamldr_lp`]).
    pub fn lp_is_busy(&self, lp: CpuId) -> bool {
        self.lp(lp).busy_calls > 0
    }

    /// The erratum (spec §8.2): a P-SEAMLDR call on `lp` returned and cleared its current
    /// VMCS. Stays set until the host reloads it with [`Module::vmptrld`].
    pub fn current_vmcs_cleared(&self, lp: CpuId) -> bool {
        self.lp(lp).current_vmcs_cleared
    }

    /// Models VMPTRLD on `lp`: the LP has a current VMCS again.
    pub fn vmptrld(&mut self, lp: CpuId) {
        self.lp_mut(lp).current_vmcs_cleared = false;
    }

    /// The package `lp` belongs to.
    pub fn package_of(&self, lp: CpuId) -> u32 {
        self.config.package_of(lp)
    }

    /// A module image is loaded and SEAMCALLs reach it.
    pub fn seam_ready(&self) -> bool {
        self.seam_ready
    }

    pub fn sys_state(&self) -> SysState {
        self.sys_state
    }

    /// LPs that did TDH.SYS.LP.INIT against the current image.
    pub fn num_init_lps(&self) -> u32 {
        self.num_init_lps
    }

    /// TDH.SYS.KEY.CONFIG has programmed the key of `package`.
    pub fn pkg_key_configured(&self, package: u32) -> bool {
        self.pkg_key_configured[package as usize]
    }

    /// The handoff SYS.SHUTDOWN wrote, until SYS.UPDATE imports it (or it is lost).
    pub fn handoff(&self) -> Option<&Handoff> {
        self.handoff.as_ref()
    }

    /// The LP inside the P-SEAMLDR right now, if any.
    pub fn seamldr_lp(&self) -> Option<CpuId> {
        self.seamldr_lp
    }

    /// The LPs that called SEAMLDR.INSTALL in the open session, in order; empty when no
    /// session is open.
    pub fn install_callers(&self) -> Vec<CpuId> {
        self.install_session.as_ref().map_or_else(Vec::new, |session| session.callers.clone())
    }

    /// The TDs the module has and can run: those of a loaded, SYS_READY module, whatever
    /// their build state. Empty while an update is in progress (from SYS.SHUTDOWN until
    /// SYS.UPDATE) and for good once an update is lost.
    pub fn td_names(&self) -> Vec<TdId> {
        if !self.seam_ready || self.sys_state != SysState::SysReady {
            return Vec::new();
        }
        self.tds.keys().copied().collect()
    }

    /// Inline: the host's per-SEAMCALL reads of an LP's state go through it.
    #[inline]
    pub(super) fn lp(&self, lp: CpuId) -> &LpState {
        let num_lps = self.lps.len();
        self.lps.get(lp.0 as usize).unwrap_or_else(|| panic!("module: {lp} is not one of {num_lps} LPs"))
    }

    pub(super) fn lp_mut(&mut self, lp: CpuId) -> &mut LpState {
        let num_lps = self.lps.len();
        self.lps.get_mut(lp.0 as usize).unwrap_or_else(|| panic!("module: {lp} is not one of {num_lps} LPs"))
    }
}

// SEAMCALL dispatch, spec §3.
impl Module {
    /// Steps 1, 2 (the P-SEAMLDR's serialisation), 3, 5, 6 and 7 of spec §3, in order.
    /// Step 4 (`lp_is_busy`) is `begin` returning `Held`; step 8 (unknown leaf) is
    /// `check_operands`.
    pub(super) fn check_dispatch(&self, lp: CpuId, leaf: Leaf) -> Result<(), TdxStatus> {
        let lp_state = *self.lp(lp);
        if !lp_state.vmx_on {
            return Err(TDX_SEAMCALL_UD);
        }
        if leaf.is_seamldr() {
            // [I] Whoever is inside, this call cannot enter; the model never lets one LP
            // be inside twice.
            if self.seamldr_lp.is_some() {
                return Err(TDX_SEAMCALL_VMFAILINVALID);
            }
            return Ok(());
        }
        if !self.seam_ready {
            return Err(TDX_SEAMCALL_VMFAILINVALID);
        }
        if self.sys_state == SysState::SysShutdown && leaf != Leaf::SysLpShutdown {
            return Err(TDX_SYS_SHUTDOWN);
        }
        if self.sys_state != SysState::SysReady && !leaf.is_accepted_before_ready() {
            return Err(TDX_SYS_NOT_READY);
        }
        if !lp_state.lp_is_init && !leaf.is_allowed_before_lp_init() {
            return Err(TDX_SYS_LP_INIT_NOT_DONE);
        }
        Ok(())
    }

    /// `lp` enters the P-SEAMLDR (dispatch let it in). An injected failure returns at once.
    pub(super) fn begin_seamldr(&mut self, lp: CpuId, call: &LeafCall) -> Begin {
        let is_last_install = self.is_last_install(lp, call);
        if let Some(status) = self.injected.remove(&call.leaf()) {
            let mut output = LeafOutput::status(status);
            if is_last_install {
                self.fail_image_load();
                output.value = Some(1);
            }
            self.seamret(lp);
            return Begin::Done { output, try_locks: 0 };
        }
        self.seamldr_lp = Some(lp);
        let cost_override = is_last_install.then(seamldr_install_last_cost_cycles);
        Begin::Held(Ticket::new(lp, *call, LockList::atomic(), cost_override))
    }

    /// `lp` returns from the P-SEAMLDR.
    pub(super) fn leave_seamldr(&mut self, lp: CpuId) {
        assert_eq!(self.seamldr_lp, Some(lp), "P-SEAMLDR: {lp} returns without being inside");
        self.seamldr_lp = None;
        self.seamret(lp);
    }

    /// SEAMRET from the P-SEAMLDR: on a CPU with the erratum, the current VMCS is gone.
    fn seamret(&mut self, lp: CpuId) {
        if self.config.seamret_erratum {
            self.lp_mut(lp).current_vmcs_cleared = true;
        }
    }

    /// `call` is the SEAMLDR.INSTALL that would load the new image: it passes its checks
    /// and every other platform LP has already called in this session.
    fn is_last_install(&self, lp: CpuId, call: &LeafCall) -> bool {
        if *call != LeafCall::SeamldrInstall || self.check_lifecycle_leaf(lp, call).is_err() {
            return false;
        }
        let callers = self.install_session.as_ref().map_or(0, |session| session.callers.len());
        callers + 1 == self.config.num_lps as usize
    }

    /// Spec §3 step 4 comes before step 5, so SYS.SHUTDOWN sees LPs whose calls are in
    /// flight. It holds `global_lock` here; its effect on `sys_state` is immediate.
    pub(super) fn after_locks(&mut self, lp: CpuId, call: &LeafCall) -> Result<(), TdxStatus> {
        let LeafCall::SysShutdown { avoid_compat_sensitive } = *call else {
            return Ok(());
        };
        assert_eq!(self.sys_state, SysState::SysReady, "SYS.SHUTDOWN: dispatch admits it only when ready");
        if avoid_compat_sensitive && self.tds.values().any(Td::is_building) {
            return Err(TDX_UPDATE_COMPAT_SENSITIVE);
        }
        self.sys_state = SysState::SysShutdown;
        let other_busy =
            (0..self.config.num_lps).map(CpuId).any(|other| other != lp && self.lp_is_busy(other));
        if other_busy {
            self.sys_state = SysState::SysReady;
            return Err(TDX_SYS_BUSY);
        }
        Ok(())
    }
}

// The SYS leaves and the P-SEAMLDR leaves: operands, locks, checks and effects.
impl Module {
    pub(super) fn check_lifecycle_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::SysRd { field } => match field {
                metadata::FIELD_MODULE_HV | metadata::FIELD_PAMT_PAGE_BITMAP_ENTRY_BITS => Ok(()),
                _ => Err(TDX_METADATA_FIELD_ID_INCORRECT.with_operand(operand::RDX)),
            },
            // [I] Without the feature RCX bit 16 is reserved, and reserved bits are refused.
            LeafCall::SysShutdown { avoid_compat_sensitive: true }
                if !self.config.compat_sensitive_supported =>
            {
                Err(TDX_OPERAND_INVALID.with_operand(operand::RCX))
            }
            _ => Ok(()),
        }
    }

    /// `global_lock`: exclusive for the leaves that change the module's configuration,
    /// shared for LP.INIT (spec §6) and, [I], TDMR.INIT. [I] KEY.CONFIG takes it exclusive:
    /// Linux says KEY.CONFIG "cannot run concurrently", and the lock keeps the
    /// package-key state stable between `will_fail` and `finish`.
    pub(super) fn lock_lifecycle(&mut self, call: &LeafCall, list: &mut LockList) -> Result<(), LockStop> {
        match *call {
            LeafCall::SysInit
            | LeafCall::SysConfig { .. }
            | LeafCall::SysKeyConfig
            | LeafCall::SysShutdown { .. }
            | LeafCall::SysUpdate => self.lock_global(ModuleLock::Global, LockMode::Exclusive, list),
            LeafCall::SysLpInit | LeafCall::SysTdmrInit => {
                self.lock_global(ModuleLock::Global, LockMode::Shared, list)
            }
            LeafCall::SysRd { .. } => Ok(()),
            _ => unreachable!("lock_lifecycle: {call} is not a SYS leaf"),
        }
    }

    /// The state checks of the SYS and P-SEAMLDR leaves, in the module's order.
    pub(super) fn check_lifecycle_leaf(&self, lp: CpuId, call: &LeafCall) -> Result<(), TdxStatus> {
        let state = self.sys_state;
        match *call {
            LeafCall::SysInit if state != SysState::SysinitPending => Err(TDX_SYS_INIT_NOT_PENDING),
            // Spec §7: an LP that comes online later may do LP.INIT once the module has
            // done SYS.INIT, also when the module is already ready.
            LeafCall::SysLpInit if !matches!(state, SysState::SysinitDone | SysState::SysReady) => {
                Err(TDX_SYS_LP_INIT_NOT_PENDING)
            }
            LeafCall::SysLpInit if self.lp(lp).lp_is_init => Err(TDX_SYS_LP_INIT_DONE),
            LeafCall::SysConfig { .. }
                if state != SysState::SysinitDone
                    || self.config_done
                    || self.num_init_lps < self.num_of_lps =>
            {
                Err(TDX_SYS_CONFIG_NOT_PENDING)
            }
            // [I] KEY.CONFIG needs SYS.CONFIG first, and the module not ready yet.
            LeafCall::SysKeyConfig if state != SysState::SysinitDone || !self.config_done => {
                Err(TDX_SYS_KEY_CONFIG_NOT_PENDING)
            }
            // [I] Informational, no change: the package's key is already programmed.
            LeafCall::SysKeyConfig if self.pkg_key_configured[self.package_of(lp) as usize] => {
                Err(TDX_KEY_CONFIGURED)
            }
            // [I] TDMR.INIT needs SYS.CONFIG (which names the TDMRs). Once every TDMR is
            // initialised it keeps answering success with RDX = the TDMR's end.
            LeafCall::SysTdmrInit if !self.config_done => Err(TDX_SYS_STATE_INCORRECT),
            LeafCall::SysUpdate if state != SysState::SysinitDone || self.num_init_lps < self.num_of_lps => {
                Err(TDX_SYS_STATE_INCORRECT)
            }
            LeafCall::SysUpdate if self.handoff.is_none() => Err(TDX_SYS_INVALID_HANDOFF),
            LeafCall::SeamldrInstall => self.check_install(lp),
            _ => Ok(()),
        }
    }

    /// Spec §8.4 step 1: the same LP twice in a session is EBADCALL. Whether the module was
    /// shut down with a handoff is the last call's question (`finish_install`).
    fn check_install(&self, lp: CpuId) -> Result<(), TdxStatus> {
        match &self.install_session {
            Some(session) if session.has_called(lp) => Err(SEAMLDR_EBADCALL),
            _ => Ok(()),
        }
    }

    /// The effects of the SYS and P-SEAMLDR leaves, once their checks passed.
    pub(super) fn finish_lifecycle(&mut self, lp: CpuId, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::SysInit => {
                self.num_of_lps = self.config.num_lps;
                self.num_init_lps = 0;
                self.sys_state = SysState::SysinitDone;
            }
            LeafCall::SysLpInit => {
                self.lp_mut(lp).lp_is_init = true;
                self.num_init_lps += 1;
            }
            LeafCall::SysConfig { dpamt } => self.finish_sys_config(dpamt),
            LeafCall::SysKeyConfig => {
                let package = self.package_of(lp) as usize;
                self.pkg_key_configured[package] = true;
                self.maybe_ready();
            }
            LeafCall::SysTdmrInit => {
                self.tdmr_next = (self.tdmr_next + RANGE_1G).min(self.config.memory_bytes);
                self.maybe_ready();
                return LeafOutput { next: Some(self.tdmr_next), ..LeafOutput::status(TDX_SUCCESS) };
            }
            LeafCall::SysRd { field } => {
                let value = match field {
                    metadata::FIELD_MODULE_HV => metadata::MODULE_HV,
                    _ => metadata::PAMT_PAGE_BITMAP_ENTRY_BITS,
                };
                return LeafOutput { value: Some(value), ..LeafOutput::status(TDX_SUCCESS) };
            }
            LeafCall::SysShutdown { .. } => {
                assert_eq!(self.sys_state, SysState::SysShutdown, "SYS.SHUTDOWN: set in begin");
                self.handoff = Some(Handoff { tds: self.tds.clone(), dpamt_enabled: self.dpamt_enabled });
            }
            LeafCall::SysUpdate => self.finish_sys_update(),
            LeafCall::SeamldrInfo => {
                return LeafOutput {
                    value: Some(u64::from(self.seam_ready)),
                    ..LeafOutput::status(SEAMLDR_SUCCESS)
                };
            }
            LeafCall::SeamldrInstall => return self.finish_install(lp),
            _ => unreachable!("finish_lifecycle: {call} is not a SYS or P-SEAMLDR leaf"),
        }
        LeafOutput::status(TDX_SUCCESS)
    }

    /// Records the TDMR's PAMT in the chosen mode. [I] A normal SYS.CONFIG after an update
    /// (the architectural fallback of spec §4.2) starts afresh: the handoff is dropped.
    fn finish_sys_config(&mut self, dpamt: bool) {
        assert_eq!(self.pamt.held_lock_count(), 0, "SYS.CONFIG: no PAMT leaf runs before READY");
        self.pamt = Pamt::new(self.config.memory_bytes, dpamt);
        self.dpamt_enabled = dpamt;
        self.config_done = true;
        self.handoff = None;
    }

    /// Imports the handoff: the TDs, and the configuration in place of CONFIG, KEY.CONFIG
    /// and TDMR.INIT. The PAMT stayed in memory across the update.
    fn finish_sys_update(&mut self) {
        let handoff = self.handoff.take().expect("SYS.UPDATE: the handoff was checked");
        self.tds = handoff.tds;
        self.dpamt_enabled = handoff.dpamt_enabled;
        self.config_done = true;
        self.pkg_key_configured.fill(true);
        self.tdmr_next = self.config.memory_bytes;
        self.sys_state = SysState::SysReady;
    }

    /// SYS_READY once every package key is programmed and the TDMR is initialised. Reached
    /// from TDMR.INIT with `global_lock` shared: the leaves that can overlap it (LP.INIT,
    /// TDMR.INIT) accept READY as well as SYSINIT_DONE, so their checks do not change.
    fn maybe_ready(&mut self) {
        let keys_done = self.pkg_key_configured.iter().all(|&configured| configured);
        if self.sys_state == SysState::SysinitDone && keys_done && self.tdmr_next >= self.config.memory_bytes
        {
            self.sys_state = SysState::SysReady;
        }
    }

    /// Spec §8.4 steps 2–5: the first call closes the module off, whatever state it was in
    /// (which is why an update that goes on after a failed SHUTDOWN is destructive, spec
    /// host-algorithms §5.5 U1); the last one loads the new image and ends the session. [I]
    /// A session that began without a shut-down module and its handoff fails at the last
    /// call with EBADHANDOFF, leaving no module.
    fn finish_install(&mut self, lp: CpuId) -> LeafOutput {
        let session = self.install_session.get_or_insert_with(InstallSession::default);
        session.add(lp);
        let num_callers = session.callers.len();
        self.seam_ready = false;
        if num_callers < self.config.num_lps as usize {
            return LeafOutput::status(SEAMLDR_SUCCESS);
        }
        self.install_session = None;
        if self.sys_state != SysState::SysShutdown || self.handoff.is_none() {
            self.fail_image_load();
            return LeafOutput { value: Some(1), ..LeafOutput::status(SEAMLDR_EBADHANDOFF) };
        }
        self.load_new_image();
        LeafOutput::status(SEAMLDR_SUCCESS)
    }

    /// The new image: SYSINIT_PENDING, no LP initialised, handoff pending, no TDs until
    /// SYS.UPDATE imports them. The PAMT stays in memory.
    fn load_new_image(&mut self) {
        for lp_state in &mut self.lps {
            assert_eq!(lp_state.busy_calls, 0, "SEAMLDR.INSTALL: a module call outlived SYS.SHUTDOWN");
            lp_state.lp_is_init = false;
        }
        assert!(self.handoff.is_some(), "SEAMLDR.INSTALL: the session began with a handoff");
        self.seam_ready = true;
        self.sys_state = SysState::SysinitPending;
        self.num_of_lps = 0;
        self.num_init_lps = 0;
        self.config_done = false;
        self.pkg_key_configured.fill(false);
        self.tdmr_next = 0;
        self.tds.clear();
    }

    /// The last INSTALL failed to load the image: the old module is already gone, so the
    /// platform is left with none, and the handoff and TDs with it. The session ends.
    fn fail_image_load(&mut self) {
        self.install_session = None;
        self.seam_ready = false;
        self.handoff = None;
        self.tds.clear();
        for lp_state in &mut self.lps {
            lp_state.lp_is_init = false;
        }
        self.num_init_lps = 0;
    }
}

/// A SEAMLDR.INSTALL session: the LPs that called, in order, and a bit per LP for the
/// check of a second call (4096 LPs call once each: no scan of the callers per call).
#[derive(Clone, Debug, Default)]
pub(super) struct InstallSession {
    callers: Vec<CpuId>,
    called: Vec<u64>,
}

impl InstallSession {
    fn has_called(&self, lp: CpuId) -> bool {
        let index = lp.0 as usize;
        self.called.get(index / 64).is_some_and(|word| word & (1 << (index % 64)) != 0)
    }

    fn add(&mut self, lp: CpuId) {
        let index = lp.0 as usize;
        if self.called.len() <= index / 64 {
            self.called.resize(index / 64 + 1, 0);
        }
        self.called[index / 64] |= 1 << (index % 64);
        self.callers.push(lp);
    }
}
