//! The vCPU leaves: TDH.VP.ADDCX and TDH.VP.INIT (the rest of a vCPU's build after
//! VP.CREATE), TDH.VP.FLUSH (the vCPU leaves its LP), and the lock set of TDH.VP.ENTER,
//! whose guest run is in `guest` (spec §6, §7; the order and checks as the TDX 1.5 module
//! source has them [V-mod]).
//!
//! A vCPU is named by its TDVPR page, and the TD by `td` as everywhere in the model. Its
//! TDVPR lock answers contention with operand TDVPR (0x82) [I; the module answers with the
//! register, RCX or RDX].
//!
//! **Association** (spec §7): VP.INIT associates the vCPU with the LP it runs on; VP.ENTER
//! on another LP answers TDX_VCPU_ASSOCIATED until TDH.VP.FLUSH on the associated LP
//! detaches it (VP.FLUSH elsewhere: TDX_VCPU_NOT_ASSOCIATED); VP.ENTER of an unassociated
//! vCPU associates it. Several vCPUs may be associated with one LP, as KVM's per-CPU
//! `associated_tdvcpus` list assumes [V-mod: the association is per vCPU]. The TD counts
//! its associated vCPUs for TDH.MNG.VPFLUSHDONE.

use sim_core::CpuId;

use super::sept_leaves::BUILDING;
use super::{Attempt, LockList, LockStop, Module, ModuleLock, ZeroStepSeptHold};
use crate::lock::{Caller, LockMode};
use crate::pamt::PageType;
use crate::status::{
    TDX_OPERAND_BUSY, TDX_OPERAND_INVALID, TDX_SUCCESS, TDX_TDCX_NUM_INCORRECT, TDX_VCPU_ASSOCIATED,
    TDX_VCPU_NOT_ASSOCIATED, TDX_VCPU_STATE_INCORRECT, TdxStatus, operand,
};
use crate::td::{MAX_TDVPS_PAGES, OpState, TDVPS_PAGES, VcpuState};
use crate::{HeldLock, Hpa, LeafCall, LeafOutput, TdId};

/// VP.ENTER runs a finalised TD only (`seamcall_state_lookup`) [V-mod].
const RUNNABLE: &[OpState] = &[OpState::Runnable];

impl Module {
    pub(super) fn check_vcpu_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::VpAddcx { td, tdvpr, tdcx } => {
                self.check_page(tdcx, operand::RCX)?;
                self.check_page(tdvpr, operand::RDX)?;
                self.check_vcpu(td, tdvpr, operand::RDX)
            }
            LeafCall::VpInit { td, tdvpr }
            | LeafCall::VpEnter { td, tdvpr }
            | LeafCall::VpFlush { td, tdvpr } => {
                self.check_page(tdvpr, operand::RCX)?;
                self.check_vcpu(td, tdvpr, operand::RCX)
            }
            _ => unreachable!("vcpu_leaves: {call} is not a vCPU leaf"),
        }
    }

    /// [I] A TDVPR that is not one of the TD's vCPUs: the module finds a page that is not
    /// a TDVPR; we answer OPERAND_INVALID on the register that carries it.
    fn check_vcpu(&self, td: TdId, tdvpr: Hpa, operand_id: u32) -> Result<(), TdxStatus> {
        match self.tds.get(&td) {
            Some(state) if state.vcpus.contains_key(&tdvpr) => Ok(()),
            _ => Err(TDX_OPERAND_INVALID.with_operand(operand_id)),
        }
    }

    pub(super) fn lock_vcpu_leaf(
        &mut self,
        lp: CpuId,
        call: &LeafCall,
        list: &mut LockList,
    ) -> Result<(), LockStop> {
        match *call {
            LeafCall::VpAddcx { td, tdvpr, tdcx } => {
                self.lock_td(ModuleLock::Tdvpr(td, tdvpr), LockMode::Exclusive, operand::TDVPR, list)?;
                if !self.lock_tdr_tdcs(td, LockMode::Shared, BUILDING, list)? {
                    return Ok(());
                }
                if self.check_vp_addcx_vcpu(td, tdvpr).is_err() {
                    return Ok(()); // decided in finish
                }
                self.lock_new_page(tdcx, list).map(|_| ())
            }
            LeafCall::VpInit { td, tdvpr } => {
                self.lock_td(ModuleLock::Tdvpr(td, tdvpr), LockMode::Exclusive, operand::TDVPR, list)?;
                self.lock_tdr_tdcs(td, LockMode::Shared, BUILDING, list).map(|_| ())
            }
            LeafCall::VpFlush { td, tdvpr } => {
                self.lock_td(ModuleLock::Tdvpr(td, tdvpr), LockMode::Exclusive, operand::TDVPR, list)?;
                self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)
            }
            LeafCall::VpEnter { td, tdvpr } => self.lock_vp_enter(lp, td, tdvpr, list),
            _ => unreachable!("vcpu_leaves: {call} is not a vCPU leaf"),
        }
    }

    /// TDH.VP.ENTER's lock set, in the module's order [V-mod]:
    /// 1. the TDVPR **shared** (the spec's table, from Yan Zhao's, says exclusive; the 1.5
    ///    and 2.0 sources take it shared and keep it while the guest runs);
    /// 2. the TDR shared, then the key life cycle; the TDCS lock shared (released before
    ///    the guest runs), then op_state RUNNABLE;
    /// 3. the vCPU READY (TDX_VCPU_STATE_INCORRECT) and not associated with another LP
    ///    (TDX_VCPU_ASSOCIATED); then it is associated with this LP, which stays even if a
    ///    later lock fails, as in the module;
    /// 4. `epoch_lock` shared, for a critical section only: the vCPU joins the current
    ///    epoch (`epoch_refcount[td_epoch & 1] += 1`) and the lock is released. The count
    ///    stays raised until the TD exit (`ModuleLock::EpochRefcount`), so TRACK can bump
    ///    the epoch while vCPUs run, and a second TRACK answers PREVIOUS_TLB_EPOCH_BUSY.
    ///    [I] The lock, the add and the release are one attempt: the lock is never held
    ///    across another LP's step;
    /// 5. when zero-step is suspected (the vCPU logged GPAs, spec §6.10), `secure_ept_lock`
    ///    **exclusive** (BUSY|SEPT on contention, the epoch count given back).
    fn lock_vp_enter(
        &mut self,
        lp: CpuId,
        td: TdId,
        tdvpr: Hpa,
        list: &mut LockList,
    ) -> Result<(), LockStop> {
        self.lock_td(ModuleLock::Tdvpr(td, tdvpr), LockMode::Shared, operand::TDVPR, list)?;
        if !self.lock_tdr_tdcs(td, LockMode::Shared, RUNNABLE, list)? {
            return Ok(());
        }
        if self.check_vp_enter_vcpu(lp, td, tdvpr).is_err() {
            return Ok(()); // decided in enter_guest
        }
        self.associate(lp, td, tdvpr);
        self.join_epoch(td, tdvpr, list)?;
        if self.tds[&td].vcpus[&tdvpr].zero_step_suspected() {
            self.lock_td(ModuleLock::SeptTree(td), LockMode::Exclusive, operand::SEPT, list)?;
        }
        Ok(())
    }

    /// Step 4 of [`Module::lock_vp_enter`].
    fn join_epoch(&mut self, td: TdId, tdvpr: Hpa, list: &mut LockList) -> Result<(), LockStop> {
        if let Attempt::Replay = list.next_attempt()? {
            return Ok(());
        }
        let state = self.td_mut(td);
        if state.epoch_lock.acquire_shared(Caller::Host).is_err() {
            return Err(LockStop::Busy(TDX_OPERAND_BUSY.with_operand(operand::TD_EPOCH)));
        }
        let td_epoch = state.td_epoch;
        let parity = (td_epoch & 1) as u8;
        state.epoch_refcount[usize::from(parity)] += 1;
        state.vcpu_mut(tdvpr).vcpu_epoch = td_epoch;
        state.epoch_lock.release_shared();
        list.held.push(HeldLock { lock: ModuleLock::EpochRefcount(td, parity), mode: LockMode::Shared });
        Ok(())
    }

    /// Associates an unassociated vCPU with `lp` (a compare-and-exchange in the module).
    pub(super) fn associate(&mut self, lp: CpuId, td: TdId, tdvpr: Hpa) {
        let state = self.td_mut(td);
        let vcpu = state.vcpu_mut(tdvpr);
        match vcpu.associated_lp {
            None => {
                vcpu.associated_lp = Some(lp);
                state.num_assoc_vcpus += 1;
            }
            Some(associated) => assert_eq!(associated, lp, "VP.ENTER: association was checked"),
        }
    }

    /// VP.ENTER's vCPU checks (step 3 of [`Module::lock_vp_enter`]).
    fn check_vp_enter_vcpu(&self, lp: CpuId, td: TdId, tdvpr: Hpa) -> Result<(), TdxStatus> {
        let vcpu = &self.tds[&td].vcpus[&tdvpr];
        if vcpu.state != VcpuState::Ready {
            return Err(TDX_VCPU_STATE_INCORRECT);
        }
        if vcpu.associated_lp.is_some_and(|associated| associated != lp) {
            return Err(TDX_VCPU_ASSOCIATED);
        }
        Ok(())
    }

    /// VP.ADDCX's vCPU checks, between the TDCS lock and the new page's: not initialised
    /// yet, and room for another TDVPS page.
    fn check_vp_addcx_vcpu(&self, td: TdId, tdvpr: Hpa) -> Result<(), TdxStatus> {
        let vcpu = &self.tds[&td].vcpus[&tdvpr];
        if vcpu.state != VcpuState::Uninitialized {
            return Err(TDX_VCPU_STATE_INCORRECT);
        }
        if vcpu.tdvps_pages() >= MAX_TDVPS_PAGES {
            return Err(TDX_TDCX_NUM_INCORRECT);
        }
        Ok(())
    }

    pub(super) fn check_vcpu_leaf(&self, lp: CpuId, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            // TDVPR ex; TDR sh; TDCS sh; the new TDCX page ex (walk). MISSING_PAMT_PAGE_PAIR
            // and PAGE_NOT_FREE on RCX, as for VP.CREATE's page.
            LeafCall::VpAddcx { td, tdvpr, tdcx } => {
                self.check_td_state(td, BUILDING)?;
                self.check_vp_addcx_vcpu(td, tdvpr)?;
                self.new_page_status(tdcx)
            }
            // TDVPR ex; TDR sh; TDCS sh. Every TDVPS page given, then UNINITIALIZED.
            LeafCall::VpInit { td, tdvpr } => {
                self.check_td_state(td, BUILDING)?;
                let vcpu = &self.tds[&td].vcpus[&tdvpr];
                if vcpu.tdvps_pages() < TDVPS_PAGES {
                    return Err(TDX_TDCX_NUM_INCORRECT);
                }
                if vcpu.state != VcpuState::Uninitialized {
                    return Err(TDX_VCPU_STATE_INCORRECT);
                }
                Ok(())
            }
            // TDVPR ex; TDR sh. Keys configured (TD_KEYS_NOT_CONFIGURED: there is nothing
            // to flush once teardown began), and associated with this LP.
            LeafCall::VpFlush { td, tdvpr } => {
                self.check_keys_configured(td)?;
                if self.tds[&td].vcpus[&tdvpr].associated_lp != Some(lp) {
                    return Err(TDX_VCPU_NOT_ASSOCIATED);
                }
                Ok(())
            }
            LeafCall::VpEnter { td, tdvpr } => {
                self.check_td_state(td, RUNNABLE)?;
                self.check_vp_enter_vcpu(lp, td, tdvpr)
            }
            _ => unreachable!("vcpu_leaves: {call} is not a vCPU leaf"),
        }
    }

    pub(super) fn finish_vcpu_leaf(&mut self, lp: CpuId, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::VpAddcx { td, tdvpr, tdcx } => {
                let slot = self.tds[&td].owner_slot;
                self.pamt.assign_page(tdcx, PageType::Tdcx, slot);
                let state = self.td_mut(td);
                state.vcpu_mut(tdvpr).tdcx.push(tdcx);
                state.child_pages += 1;
            }
            LeafCall::VpInit { td, tdvpr } => {
                let state = self.td_mut(td);
                let vcpu = state.vcpu_mut(tdvpr);
                assert_eq!(vcpu.associated_lp, None, "VP.INIT: an uninitialised vCPU is not associated");
                vcpu.state = VcpuState::Ready;
                vcpu.associated_lp = Some(lp);
                state.num_assoc_vcpus += 1;
            }
            LeafCall::VpFlush { td, tdvpr } => {
                let state = self.td_mut(td);
                state.vcpu_mut(tdvpr).associated_lp = None;
                state.num_assoc_vcpus = state
                    .num_assoc_vcpus
                    .checked_sub(1)
                    .expect("VP.FLUSH: the vCPU was counted as associated");
            }
            LeafCall::VpEnter { .. } => unreachable!("VP.ENTER ends in exit_guest, not finish"),
            _ => unreachable!("vcpu_leaves: {call} is not a vCPU leaf"),
        }
        LeafOutput::status(TDX_SUCCESS)
    }

    /// How long VP.ENTER keeps `secure_ept_lock` in zero-step mode.
    pub(super) fn zero_step_hold(&self) -> ZeroStepSeptHold {
        self.config.zero_step_sept_hold
    }
}
