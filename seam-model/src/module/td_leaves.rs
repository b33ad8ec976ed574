//! Building a TD: TDH.MNG.CREATE (the TDR and a HKID), TDH.MNG.KEY.CONFIG (the TD's key on
//! one package; on the last one the key life cycle becomes KEYS_CONFIGURED), TDH.MNG.INIT
//! (the build starts), TDH.VP.CREATE and TDH.MR.FINALIZE (the build ends). A TD's build,
//! from MNG.INIT to MR.FINALIZE, is compatibility-sensitive. The vCPU leaves that follow
//! VP.CREATE are in `vcpu_leaves`, the S-EPT and PAGE.ADD in `sept_leaves`.

use sim_core::CpuId;

use super::{LockList, LockStop, Module, ModuleLock};
use crate::lock::LockMode;
use crate::pamt::{PageType, WalkTarget};
use crate::status::{
    TDX_KEY_CONFIGURED, TDX_KEY_STATE_INCORRECT, TDX_MISSING_PAMT_PAGE_PAIR, TDX_OP_STATE_INCORRECT,
    TDX_OPERAND_INVALID, TDX_PAGE_NOT_FREE, TDX_SUCCESS, TdxStatus, operand,
};
use crate::td::{Lifecycle, OpState, Td, VcpuState};
use crate::{Hpa, LeafCall, LeafOutput, TdId};

impl Module {
    pub(super) fn check_td_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::MngCreate { td, tdr } => {
                self.check_page(tdr, operand::RCX)?;
                // [I] The model names TDs by id: reusing a live TD's id is refused on the
                // TDR operand (on hardware the TDR page *is* the TD's identity).
                if self.tds.contains_key(&td) {
                    return Err(TDX_OPERAND_INVALID.with_operand(operand::RCX));
                }
                Ok(())
            }
            LeafCall::MngKeyConfig { td } | LeafCall::MngInit { td } | LeafCall::MrFinalize { td } => {
                self.check_td(td, operand::RCX)
            }
            LeafCall::VpCreate { td, tdvpr } => {
                self.check_page(tdvpr, operand::RCX)?;
                self.check_td(td, operand::RDX)
            }
            _ => unreachable!("td_leaves: {call} is not a TD build leaf"),
        }
    }

    pub(super) fn lock_td_leaf(&mut self, call: &LeafCall, list: &mut LockList) -> Result<(), LockStop> {
        match *call {
            LeafCall::MngCreate { tdr, .. } => {
                if !self.lock_new_page(tdr, list)? {
                    return Ok(()); // MISSING_PAMT_PAGE_PAIR or PAGE_NOT_FREE, decided in finish
                }
                self.lock_global(ModuleLock::Kot, LockMode::Exclusive, list)
            }
            LeafCall::MngKeyConfig { td } | LeafCall::MngInit { td } | LeafCall::MrFinalize { td } => {
                self.lock_td(ModuleLock::Tdr(td), LockMode::Exclusive, operand::TDR, list)
            }
            LeafCall::VpCreate { td, tdvpr } => {
                if !self.lock_new_page(tdvpr, list)? {
                    return Ok(()); // MISSING_PAMT_PAGE_PAIR or PAGE_NOT_FREE, decided in finish
                }
                self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)?;
                self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)
            }
            _ => unreachable!("td_leaves: {call} is not a TD build leaf"),
        }
    }

    /// A page-assigning leaf's new control page (RCX): walk to its 4KB entry exclusive.
    /// `Ok(false)` when the module stops there: the range has no DPAMT backing, or the page
    /// is not free.
    pub(super) fn lock_new_page(&mut self, page: Hpa, list: &mut LockList) -> Result<bool, LockStop> {
        self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::RCX, list)?;
        Ok(self.new_page_status(page).is_ok())
    }

    pub(super) fn check_td_leaf(&self, lp: CpuId, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::MngCreate { td, tdr } => {
                self.new_page_status(tdr)?;
                // Again under KOT ex: an MNG.CREATE of the same id may have won meanwhile.
                if self.tds.contains_key(&td) {
                    return Err(TDX_OPERAND_INVALID.with_operand(operand::RCX));
                }
                Ok(())
            }
            // [I] Once per package per TD: a repeat is informational, as SYS.KEY.CONFIG's.
            LeafCall::MngKeyConfig { td } => {
                if self.tds[&td].key_packages.contains(&self.package_of(lp)) {
                    return Err(TDX_KEY_CONFIGURED);
                }
                self.check_op_state(td, OpState::Uninitialized)
            }
            LeafCall::MngInit { td } => {
                self.check_op_state(td, OpState::Uninitialized)?;
                // [I] The TD's key must be programmed on every package before its build.
                if self.tds[&td].key_packages.len() < self.config.packages as usize {
                    return Err(TDX_KEY_STATE_INCORRECT);
                }
                Ok(())
            }
            // Once teardown began (VPFLUSHDONE), the key life cycle refuses them.
            LeafCall::VpCreate { td, tdvpr } => {
                self.new_page_status(tdvpr)?;
                self.check_keys_configured(td)?;
                self.check_op_state(td, OpState::Initialized)
            }
            LeafCall::MrFinalize { td } => {
                self.check_keys_configured(td)?;
                self.check_op_state(td, OpState::Initialized)
            }
            _ => unreachable!("td_leaves: {call} is not a TD build leaf"),
        }
    }

    /// A page-assigning leaf's new page (RCX): the range must have its 4KB level, and the
    /// page must be NDA and not a DPAMT backing page (spec §5.3).
    pub(super) fn new_page_status(&self, page: Hpa) -> Result<(), TdxStatus> {
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

    pub(super) fn finish_td_leaf(&mut self, lp: CpuId, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::MngCreate { td, tdr } => self.finish_mng_create(td, tdr),
            LeafCall::MngKeyConfig { td } => {
                let package = self.package_of(lp);
                let packages = self.config.packages as usize;
                let td = self.td_mut(td);
                td.key_packages.insert(package);
                if td.key_packages.len() == packages {
                    td.lifecycle = Lifecycle::KeysConfigured;
                }
                LeafOutput::status(TDX_SUCCESS)
            }
            LeafCall::MngInit { td } => self.finish_op_state(td, OpState::Initialized),
            LeafCall::VpCreate { td, tdvpr } => self.finish_vp_create(td, tdvpr),
            LeafCall::MrFinalize { td } => self.finish_op_state(td, OpState::Runnable),
            _ => unreachable!("td_leaves: {call} is not a TD build leaf"),
        }
    }

    /// TDH.MNG.CREATE: the TDR page becomes PT_TDR, owned by the new TD (a TDR's owner is
    /// itself), and the TD exists with its HKID assigned, not initialised.
    fn finish_mng_create(&mut self, td: TdId, tdr: Hpa) -> LeafOutput {
        assert!(!self.tds.contains_key(&td), "MNG.CREATE: {td} was checked absent under kot_lock");
        let slot = self.take_owner_slot(td);
        self.pamt.assign_page(tdr, PageType::Tdr, slot);
        self.tds.insert(td, Td::created(self.config.host_priority, slot, tdr));
        LeafOutput::status(TDX_SUCCESS)
    }

    /// TDH.VP.CREATE: the TDVPR page becomes the TD's PT_TDVPR and a vCPU with one TDVPS
    /// page, UNINITIALIZED.
    fn finish_vp_create(&mut self, td: TdId, tdvpr: Hpa) -> LeafOutput {
        let slot = self.tds[&td].owner_slot;
        self.pamt.assign_page(tdvpr, PageType::Tdvpr, slot);
        let td = self.td_mut(td);
        td.add_vcpu(tdvpr, VcpuState::Uninitialized);
        td.child_pages += 1;
        LeafOutput::status(TDX_SUCCESS)
    }

    /// TDH.MNG.INIT (build starts) and TDH.MR.FINALIZE (build ends).
    fn finish_op_state(&mut self, td: TdId, op_state: OpState) -> LeafOutput {
        self.td_mut(td).op_state = op_state;
        LeafOutput::status(TDX_SUCCESS)
    }
}
