//! Tearing a TD down (spec §6; host-algorithms §4.6): TDH.MNG.VPFLUSHDONE (no vCPU is
//! associated any more), TDH.PHYMEM.CACHE.WB on one LP per package (the caches hold no
//! line of the HKID), TDH.MNG.KEY.FREEID (the HKID is free), then TDH.PHYMEM.PAGE.RECLAIM
//! of every page the TD owned, its TDR last. Orders and statuses as the TDX module source
//! has them [V-mod].
//!
//! The key life cycle moves KEYS_CONFIGURED (or HKID_ASSIGNED) -> BLOCKED (VPFLUSHDONE; the
//! HKID's KOT entry is FLUSHED and every package owes it a write-back) -> TEARDOWN
//! (KEY.FREEID, once every package wrote back).

use sim_core::CpuId;

use super::{LockList, LockStop, Module, ModuleLock};
use crate::lock::LockMode;
use crate::pamt::{PageType, WalkEnd, WalkTarget};
use crate::status::{
    TDX_FLUSHVP_NOT_DONE, TDX_INTERRUPTED_RESUMABLE, TDX_LIFECYCLE_STATE_INCORRECT,
    TDX_NO_HKID_READY_TO_WBCACHE, TDX_PAGE_METADATA_INCORRECT, TDX_SUCCESS, TDX_TD_ASSOCIATED_PAGES_EXIST,
    TDX_WBCACHE_NOT_COMPLETE, TDX_WBCACHE_RESUME_ERROR, TdxStatus, operand,
};
use crate::td::Lifecycle;
use crate::{Hpa, LeafCall, LeafOutput, TdId};

impl Module {
    pub(super) fn check_teardown_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::MngVpflushdone { td } | LeafCall::MngKeyFreeid { td } => {
                self.check_td(td, operand::RCX)
            }
            // RCX is 0 (start) or 1 (resume); other values, OPERAND_INVALID|RCX in the
            // module, cannot be written as a `bool`.
            LeafCall::CacheWb { .. } => Ok(()),
            LeafCall::PageReclaim { page } => self.check_page(page, operand::RCX),
            _ => unreachable!("teardown_leaves: {call} is not a teardown leaf"),
        }
    }

    pub(super) fn lock_teardown_leaf(
        &mut self,
        lp: CpuId,
        call: &LeafCall,
        list: &mut LockList,
    ) -> Result<(), LockStop> {
        match *call {
            // TDR ex; KOT ex. The life cycle and the vCPUs are checked under both.
            LeafCall::MngVpflushdone { td } => {
                self.lock_td(ModuleLock::Tdr(td), LockMode::Exclusive, operand::TDR, list)?;
                self.lock_global(ModuleLock::Kot, LockMode::Exclusive, list)
            }
            // The package's try-mutex, then KOT sh ("TDH.PHYMEM.CACHE.WB tries to acquire
            // the TDX module global lock", KVM's comment on `tdx_lock`).
            LeafCall::CacheWb { .. } => {
                self.lock_wbcache(self.package_of(lp), list)?;
                self.lock_global(ModuleLock::Kot, LockMode::Shared, list)
            }
            // TDR ex; the life cycle (BLOCKED) before KOT ex.
            LeafCall::MngKeyFreeid { td } => {
                self.lock_td(ModuleLock::Tdr(td), LockMode::Exclusive, operand::TDR, list)?;
                if self.tds[&td].lifecycle != Lifecycle::Blocked {
                    return Ok(()); // LIFECYCLE_STATE_INCORRECT, decided in finish
                }
                self.lock_global(ModuleLock::Kot, LockMode::Exclusive, list)
            }
            LeafCall::PageReclaim { page } => self.lock_page_reclaim(page, list),
            _ => unreachable!("teardown_leaves: {call} is not a teardown leaf"),
        }
    }

    /// TDH.PHYMEM.PAGE.RECLAIM: the page's 4KB entry exclusive (walk; BUSY|RCX), its type
    /// (not NDA), then its owner's TDR shared (BUSY|TDR). For the TDR page itself the TDR
    /// lock is that page's PAMT entry on hardware: the model takes the TDR exclusive
    /// instead, which keeps the TD's other reclaims (TDR shared) off while it checks the
    /// child count.
    fn lock_page_reclaim(&mut self, page: Hpa, list: &mut LockList) -> Result<(), LockStop> {
        if self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::RCX, list)? == WalkEnd::Range2M {
            return Ok(()); // an unbacked range: PAGE_METADATA_INCORRECT, decided in finish
        }
        let Some(td) = self.page_owner(page) else {
            return Ok(()); // an NDA page: PAGE_METADATA_INCORRECT, decided in finish
        };
        if self.pamt.page_type(page) == PageType::Tdr {
            self.lock_td(ModuleLock::Tdr(td), LockMode::Exclusive, operand::RCX, list)
        } else {
            self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)
        }
    }

    pub(super) fn check_teardown_leaf(&self, lp: CpuId, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::MngVpflushdone { td } => {
                let state = &self.tds[&td];
                if !matches!(state.lifecycle, Lifecycle::HkidAssigned | Lifecycle::KeysConfigured) {
                    return Err(TDX_LIFECYCLE_STATE_INCORRECT);
                }
                if state.num_assoc_vcpus != 0 {
                    return Err(TDX_FLUSHVP_NOT_DONE);
                }
                Ok(())
            }
            LeafCall::CacheWb { resume: false } => {
                if self.hkids_flushed().is_empty() {
                    return Err(TDX_NO_HKID_READY_TO_WBCACHE);
                }
                Ok(())
            }
            LeafCall::CacheWb { resume: true } => {
                if self.wbt[self.package_of(lp) as usize].progress == 0 {
                    return Err(TDX_WBCACHE_RESUME_ERROR);
                }
                Ok(())
            }
            LeafCall::MngKeyFreeid { td } => {
                let state = &self.tds[&td];
                if state.lifecycle != Lifecycle::Blocked {
                    return Err(TDX_LIFECYCLE_STATE_INCORRECT);
                }
                if !state.wbinvd_pending.is_empty() {
                    return Err(TDX_WBCACHE_NOT_COMPLETE);
                }
                Ok(())
            }
            LeafCall::PageReclaim { page } => {
                let Some(td) = self.page_owner(page).filter(|_| self.pamt.has_4k_level(page.range_index()))
                else {
                    return Err(TDX_PAGE_METADATA_INCORRECT.with_operand(operand::RCX));
                };
                let state = &self.tds[&td];
                if state.lifecycle != Lifecycle::Teardown {
                    return Err(TDX_LIFECYCLE_STATE_INCORRECT);
                }
                if self.pamt.page_type(page) == PageType::Tdr && state.child_pages != 0 {
                    return Err(TDX_TD_ASSOCIATED_PAGES_EXIST);
                }
                Ok(())
            }
            _ => unreachable!("teardown_leaves: {call} is not a teardown leaf"),
        }
    }

    pub(super) fn finish_teardown_leaf(&mut self, lp: CpuId, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::MngVpflushdone { td } => {
                let packages = self.config.packages;
                let state = self.td_mut(td);
                state.wbinvd_pending = (0..packages).collect();
                state.lifecycle = Lifecycle::Blocked;
                LeafOutput::status(TDX_SUCCESS)
            }
            LeafCall::CacheWb { resume } => self.finish_cache_wb(lp, resume),
            LeafCall::MngKeyFreeid { td } => {
                self.td_mut(td).lifecycle = Lifecycle::Teardown;
                LeafOutput::status(TDX_SUCCESS)
            }
            LeafCall::PageReclaim { page } => self.finish_page_reclaim(page),
            _ => unreachable!("teardown_leaves: {call} is not a teardown leaf"),
        }
    }

    /// After PAGE.RECLAIM of a TDR released its locks: the TD and its owner slot are gone.
    pub(super) fn drop_reclaimed_td(&mut self) {
        if let Some(td) = self.reclaimed_td.take() {
            let state = self.tds.remove(&td).expect("PAGE.RECLAIM: the owner exists");
            assert_eq!(state.held_lock_count(), 0, "PAGE.RECLAIM: nothing holds a lock of a TD in teardown");
            self.owners[usize::from(state.owner_slot)] = None;
        }
    }

    /// The TDs whose HKID is FLUSHED (life cycle BLOCKED), in TD order.
    fn hkids_flushed(&self) -> Vec<TdId> {
        self.tds
            .iter()
            .filter(|(_, state)| state.lifecycle == Lifecycle::Blocked)
            .map(|(&td, _)| td)
            .collect()
    }

    /// One call of the package's write-back. A start records the FLUSHED HKIDs it covers;
    /// each call does `1 / cache_wb_calls` of the package's sub-blocks [I] and returns
    /// TDX_INTERRUPTED_RESUMABLE until the last, which clears the package's bit in each
    /// covered HKID's `wbinvd_bitmap`. An HKID flushed after the start is not covered.
    fn finish_cache_wb(&mut self, lp: CpuId, resume: bool) -> LeafOutput {
        let package = self.package_of(lp);
        if !resume {
            let covers = self.hkids_flushed();
            let entry = &mut self.wbt[package as usize];
            entry.progress = 0;
            entry.covers = covers;
        }
        let calls = self.config.cache_wb_calls;
        let entry = &mut self.wbt[package as usize];
        entry.progress += 1;
        if entry.progress < calls {
            return LeafOutput::status(TDX_INTERRUPTED_RESUMABLE);
        }
        entry.progress = 0;
        let covers = std::mem::take(&mut entry.covers);
        for td in covers {
            // A covered TD whose HKID was freed and reclaimed meanwhile is gone.
            if let Some(state) = self.tds.get_mut(&td).filter(|state| state.lifecycle == Lifecycle::Blocked) {
                state.wbinvd_pending.remove(&package);
            }
        }
        LeafOutput::status(TDX_SUCCESS)
    }

    /// The page becomes NDA again; its range counts one page fewer (the removal hint at 0)
    /// and its TD one child fewer, or, for the TDR, the TD is gone.
    fn finish_page_reclaim(&mut self, page: Hpa) -> LeafOutput {
        let td = self.page_owner(page).expect("PAGE.RECLAIM: the checked page has an owner");
        let page_type = self.pamt.page_type(page);
        let count = self.pamt.free_page(page);
        if page_type == PageType::Tdr {
            assert_eq!(self.tds[&td].child_pages, 0, "PAGE.RECLAIM: the TDR goes last");
            // The TD goes once the leaf released its TDR lock (`drop_reclaimed_td`).
            self.reclaimed_td = Some(td);
        } else {
            let state = self.td_mut(td);
            state.child_pages =
                state.child_pages.checked_sub(1).expect("PAGE.RECLAIM: the TD counted the page");
        }
        LeafOutput {
            removal_hint: count == Some(0),
            value: Some(u64::from(page_type.value())),
            ..LeafOutput::status(TDX_SUCCESS)
        }
    }
}
