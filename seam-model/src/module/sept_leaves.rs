//! The secure-EPT leaves KVM's fault and zap paths use: TDH.MEM.PAGE.AUG, RANGE.BLOCK,
//! TRACK, PAGE.REMOVE and TDH.PHYMEM.PAGE.WBINVD (spec §6), with the SEPT tree lock, the
//! SEPT entry locks (host priority, §2.3) and the TD epoch.

use super::{LockList, LockStop, Module, ModuleLock, check_gpa};
use crate::lock::LockMode;
use crate::pamt::{PageType, WalkTarget};
use crate::status::{
    TDX_EPT_ENTRY_FREE, TDX_EPT_ENTRY_STATE_INCORRECT, TDX_GPA_RANGE_ALREADY_BLOCKED,
    TDX_GPA_RANGE_NOT_BLOCKED, TDX_MISSING_PAMT_PAGE_PAIR, TDX_OPERAND_BUSY, TDX_PAGE_NOT_FREE, TDX_SUCCESS,
    TDX_TLB_TRACKING_NOT_DONE, TdxStatus, operand,
};
use crate::td::SeptState;
use crate::{Gpa, Hpa, LeafCall, LeafOutput, TdId};

impl Module {
    pub(super) fn check_sept_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
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
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
    }

    pub(super) fn lock_sept_leaf(&mut self, call: &LeafCall, list: &mut LockList) -> Result<(), LockStop> {
        match *call {
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
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
    }

    fn lock_page_aug(&mut self, td: TdId, gpa: Gpa, page: Hpa, list: &mut LockList) -> Result<(), LockStop> {
        self.lock_td(ModuleLock::Tdr(td), LockMode::Shared, operand::TDR, list)?;
        self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)?;
        self.lock_td(ModuleLock::SeptTree(td), LockMode::Shared, operand::SEPT, list)?;
        let entry = ModuleLock::SeptEntry(td, gpa.0);
        self.lock_td(entry, LockMode::Exclusive, operand::SEPT_ENTRY, list)?;
        self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::R8, list).map(|_| ())
    }

    /// The removed page's 4KB entry is locked implicitly (no walk), and only once the
    /// entry is known to be blocked, as the module orders it; contention there is
    /// BUSY|RCX because the page is reached through the GPA.
    fn lock_page_remove(&mut self, td: TdId, gpa: Gpa, list: &mut LockList) -> Result<(), LockStop> {
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
        self.pamt.try_lock(page_lock, LockMode::Exclusive, list).map_err(|stop| match stop {
            LockStop::Contended(_) => LockStop::Busy(TDX_OPERAND_BUSY.with_operand(operand::RCX)),
            other => other,
        })
    }

    pub(super) fn check_sept_leaf(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
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
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
    }

    pub(super) fn finish_sept_leaf(&mut self, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::PageAug { td, gpa, page } => self.finish_page_aug(td, gpa, page),
            LeafCall::RangeBlock { td, gpa } => self.finish_range_block(td, gpa),
            LeafCall::Track { td } => self.finish_track(td),
            LeafCall::PageRemove { td, gpa } => self.finish_page_remove(td, gpa),
            LeafCall::PageWbinvd { .. } => LeafOutput::status(TDX_SUCCESS),
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
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
