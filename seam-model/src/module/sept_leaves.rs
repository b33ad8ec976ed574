//! The secure-EPT leaves: TDH.MEM.SEPT.ADD and PAGE.ADD (the build), PAGE.AUG (KVM's fault
//! path), RANGE.BLOCK, TRACK, PAGE.REMOVE and TDH.PHYMEM.PAGE.WBINVD (its zap path), with the
//! SEPT tree lock, the SEPT entry locks (host priority, spec §2.3) and the TD epoch (spec §6).
//!
//! Every leaf here that takes the TDCS lock checks the TD first, as the module's
//! `check_state_map_tdcs_and_lock` does: after the TDR, the key life cycle must be
//! KEYS_CONFIGURED (else TDX_TD_KEYS_NOT_CONFIGURED), and after the TDCS lock the op_state
//! must allow the leaf (else TDX_OP_STATE_INCORRECT; the module's `seamcall_state_lookup`:
//! SEPT.ADD, AUG, BLOCK, TRACK and REMOVE in INITIALIZED and RUNNABLE, PAGE.ADD in
//! INITIALIZED only) [V-mod]. A failing check stops the locking there and the ticket
//! returns it.
//!
//! Operand ids follow the existing model: the TDR, TDCS, SEPT and SEPT-entry locks answer
//! with the structure's id (TDR 0x80, TDCS 0x90, SEPT 0x92, SEPT_ENTRY 0x93), pages with the
//! register that names them. [V-mod] The module source answers the explicit TDR with its
//! register (RDX), the op_state lock with OP_STATE (0xAC) and an entry lock with RCX; Linux
//! reads only the status class, so the difference matters to no host algorithm.

use super::{LockList, LockStop, Module, ModuleLock, check_aligned, check_gpa};
use crate::lock::LockMode;
use crate::pamt::{PageType, Pamt, WalkTarget};
use crate::sept::{GPA_LIMIT, LEVEL_4K, LEVEL_ROOT, Sept, Walk};
use crate::status::{
    TDX_EPT_ENTRY_FREE, TDX_EPT_ENTRY_STATE_INCORRECT, TDX_EPT_WALK_FAILED, TDX_GPA_RANGE_ALREADY_BLOCKED,
    TDX_GPA_RANGE_NOT_BLOCKED, TDX_MISSING_PAMT_PAGE_PAIR, TDX_OP_STATE_INCORRECT, TDX_OPERAND_BUSY,
    TDX_OPERAND_INVALID, TDX_PAGE_NOT_FREE, TDX_PREVIOUS_TLB_EPOCH_BUSY, TDX_SUCCESS,
    TDX_TD_KEYS_NOT_CONFIGURED, TDX_TLB_TRACKING_NOT_DONE, TdxStatus, operand,
};
use crate::td::{Lifecycle, OpState, Td};
use crate::{Gpa, Hpa, LeafCall, LeafOutput, PAGE_SIZE, TdId};

/// The op_states in which the S-EPT leaves other than PAGE.ADD run.
pub(super) const BUILT_OR_RUNNABLE: &[OpState] = &[OpState::Initialized, OpState::Runnable];
/// PAGE.ADD, VP.ADDCX and VP.INIT run only during the build.
pub(super) const BUILDING: &[OpState] = &[OpState::Initialized];

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
            LeafCall::SeptAdd { td, gpa, level, page } => {
                check_sept_level(gpa, level)?;
                self.check_td(td, operand::RDX)?;
                self.check_page(page, operand::R8)
            }
            LeafCall::PageAdd { td, gpa, page, source } => {
                check_gpa(gpa)?;
                self.check_td(td, operand::RDX)?;
                self.check_page(page, operand::R8)?;
                // [I] The source is a shared (host) page: aligned, anywhere in host memory.
                check_aligned(source, PAGE_SIZE, operand::R9)
            }
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
    }

    pub(super) fn lock_sept_leaf(&mut self, call: &LeafCall, list: &mut LockList) -> Result<(), LockStop> {
        match *call {
            LeafCall::PageAug { td, gpa, page } => self.lock_page_aug(td, gpa, page, list),
            // [V-mod] BLOCK also takes the entry's host lock after the tree: with the tree
            // exclusive no host leaf holds an entry, but a guest's ACCEPT may (spec §6 lists
            // only the tree).
            LeafCall::RangeBlock { td, gpa } => {
                if !self.lock_tdr_tdcs(td, LockMode::Shared, BUILT_OR_RUNNABLE, list)? {
                    return Ok(());
                }
                self.lock_td(ModuleLock::SeptTree(td), LockMode::Exclusive, operand::SEPT, list)?;
                if self.check_walk(td, gpa.0, LEVEL_4K).is_err() {
                    return Ok(()); // EPT_WALK_FAILED, decided in finish
                }
                self.lock_td(ModuleLock::SeptEntry(td, gpa.0), LockMode::Exclusive, operand::SEPT_ENTRY, list)
            }
            LeafCall::Track { td } => {
                if !self.lock_tdr_tdcs(td, LockMode::Shared, BUILT_OR_RUNNABLE, list)? {
                    return Ok(());
                }
                self.lock_td(ModuleLock::Epoch(td), LockMode::Exclusive, operand::TD_EPOCH, list)
            }
            LeafCall::PageRemove { td, gpa } => self.lock_page_remove(td, gpa, list),
            // [I] The spec leaves WBINVD's locks open ("page / KOT"); no lock is modelled.
            LeafCall::PageWbinvd { .. } => Ok(()),
            LeafCall::SeptAdd { td, gpa, level, page } => self.lock_sept_add(td, gpa, level, page, list),
            LeafCall::PageAdd { td, gpa, page, .. } => self.lock_page_add(td, gpa, page, list),
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
    }

    /// The TDR in `tdr_mode`, the key life cycle, the TDCS lock shared and the op_state:
    /// how every TDCS-using leaf starts. `Ok(false)` when a check between the locks fails
    /// (the ticket returns it, [`Module::check_td_state`]).
    pub(super) fn lock_tdr_tdcs(
        &mut self,
        td: TdId,
        tdr_mode: LockMode,
        allowed: &[OpState],
        list: &mut LockList,
    ) -> Result<bool, LockStop> {
        self.lock_td(ModuleLock::Tdr(td), tdr_mode, operand::TDR, list)?;
        if self.check_keys_configured(td).is_err() {
            return Ok(false);
        }
        self.lock_td(ModuleLock::Tdcs(td), LockMode::Shared, operand::TDCS, list)?;
        Ok(self.check_op_state_in(td, allowed).is_ok())
    }

    /// What [`Module::lock_tdr_tdcs`] checks, as the ticket reports it.
    pub(super) fn check_td_state(&self, td: TdId, allowed: &[OpState]) -> Result<(), TdxStatus> {
        self.check_keys_configured(td)?;
        self.check_op_state_in(td, allowed)
    }

    pub(super) fn check_keys_configured(&self, td: TdId) -> Result<(), TdxStatus> {
        if self.tds[&td].lifecycle != Lifecycle::KeysConfigured {
            return Err(TDX_TD_KEYS_NOT_CONFIGURED);
        }
        Ok(())
    }

    pub(super) fn check_op_state_in(&self, td: TdId, allowed: &[OpState]) -> Result<(), TdxStatus> {
        if !allowed.contains(&self.tds[&td].op_state) {
            return Err(TDX_OP_STATE_INCORRECT);
        }
        Ok(())
    }

    /// The S-EPT walk to the entry of `level` for `gpa`: TDX_EPT_WALK_FAILED|RCX when a
    /// table above it is missing.
    fn check_walk(&self, td: TdId, gpa: u64, level: u8) -> Result<(), TdxStatus> {
        check_walk_of(&self.tds[&td].sept, gpa, level)
    }

    fn lock_page_aug(&mut self, td: TdId, gpa: Gpa, page: Hpa, list: &mut LockList) -> Result<(), LockStop> {
        if !self.lock_tdr_tdcs(td, LockMode::Shared, BUILT_OR_RUNNABLE, list)? {
            return Ok(());
        }
        self.lock_td(ModuleLock::SeptTree(td), LockMode::Shared, operand::SEPT, list)?;
        if self.check_walk(td, gpa.0, LEVEL_4K).is_err() {
            return Ok(()); // EPT_WALK_FAILED, decided in finish
        }
        let entry = ModuleLock::SeptEntry(td, gpa.0);
        self.lock_td(entry, LockMode::Exclusive, operand::SEPT_ENTRY, list)?;
        self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::R8, list).map(|_| ())
    }

    /// The removed page's 4KB entry is locked implicitly (no walk), and only once the
    /// entry is known to be blocked, as the module orders it; contention there is
    /// BUSY|RCX because the page is reached through the GPA.
    fn lock_page_remove(&mut self, td: TdId, gpa: Gpa, list: &mut LockList) -> Result<(), LockStop> {
        if !self.lock_tdr_tdcs(td, LockMode::Shared, BUILT_OR_RUNNABLE, list)? {
            return Ok(());
        }
        self.lock_td(ModuleLock::SeptTree(td), LockMode::Shared, operand::SEPT, list)?;
        if self.check_walk(td, gpa.0, LEVEL_4K).is_err() {
            return Ok(()); // EPT_WALK_FAILED, decided in finish
        }
        let entry = ModuleLock::SeptEntry(td, gpa.0);
        self.lock_td(entry, LockMode::Exclusive, operand::SEPT_ENTRY, list)?;
        let entry = self.tds[&td].entry(gpa.0);
        if entry.state != crate::SeptState::Blocked {
            return Ok(()); // GPA_RANGE_NOT_BLOCKED, decided in finish
        }
        let page_lock = ModuleLock::Pamt4K(entry.hpa.pfn());
        self.pamt.try_lock(page_lock, LockMode::Exclusive, list).map_err(|stop| match stop {
            LockStop::Contended => LockStop::Busy(TDX_OPERAND_BUSY.with_operand(operand::RCX)),
            other => other,
        })
    }

    /// TDH.MEM.SEPT.ADD (spec §6): TDR sh; TDCS sh; `secure_ept_lock` sh; the parent entry's
    /// host lock; the new S-EPT page exclusive (walk). [V-mod] The walk to the parent's
    /// level and the parent's state are checked between those locks; the page is locked
    /// only when the parent entry is free.
    fn lock_sept_add(
        &mut self,
        td: TdId,
        gpa: Gpa,
        level: u8,
        page: Hpa,
        list: &mut LockList,
    ) -> Result<(), LockStop> {
        if !self.lock_tdr_tdcs(td, LockMode::Shared, BUILT_OR_RUNNABLE, list)? {
            return Ok(());
        }
        self.lock_td(ModuleLock::SeptTree(td), LockMode::Shared, operand::SEPT, list)?;
        if self.check_walk(td, gpa.0, level).is_err() {
            return Ok(()); // EPT_WALK_FAILED, decided in finish
        }
        let parent = ModuleLock::SeptNonLeafEntry(td, level, gpa.0);
        self.lock_td(parent, LockMode::Exclusive, operand::SEPT_ENTRY, list)?;
        if self.tds[&td].sept.non_leaf_present(gpa.0, level) {
            return Ok(()); // EPT_ENTRY_STATE_INCORRECT, decided in finish
        }
        self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::R8, list).map(|_| ())
    }

    /// TDH.MEM.PAGE.ADD (spec §6, build time): the TDR exclusive, which keeps every other
    /// leaf off the TD, so the S-EPT walk takes no SEPT lock; then the target page
    /// exclusive (walk). The source page is read through the host's key and takes no PAMT
    /// lock [I].
    fn lock_page_add(&mut self, td: TdId, gpa: Gpa, page: Hpa, list: &mut LockList) -> Result<(), LockStop> {
        self.lock_td(ModuleLock::Tdr(td), LockMode::Exclusive, operand::TDR, list)?;
        if self.check_page_add_target(td, gpa).is_err() {
            return Ok(()); // decided in finish
        }
        self.walk(page, WalkTarget::Page4K(LockMode::Exclusive), operand::R8, list).map(|_| ())
    }

    /// PAGE.ADD's checks before it locks the page: the TD (with the TDR held exclusive,
    /// no TDCS lock is needed), the walk and a free entry.
    fn check_page_add_target(&self, td: TdId, gpa: Gpa) -> Result<(), TdxStatus> {
        self.check_td_state(td, BUILDING)?;
        self.check_walk(td, gpa.0, LEVEL_4K)?;
        if self.tds[&td].sept.state(gpa.0) != crate::SeptState::Free {
            return Err(TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
        }
        Ok(())
    }

    /// The S-EPT leaves' state checks, in the module's order; `Err` is the status the leaf returns.
    pub(super) fn check_sept_leaf(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::PageAug { td, gpa, page } => self.check_page_aug(td, gpa, page),
            LeafCall::RangeBlock { td, gpa } => self.check_range_block(td, gpa),
            LeafCall::Track { td } => self.check_track(td),
            LeafCall::PageWbinvd { .. } => Ok(()),
            LeafCall::PageRemove { td, gpa } => self.check_page_remove(td, gpa),
            LeafCall::SeptAdd { td, gpa, level, page } => self.check_sept_add(td, gpa, level, page),
            LeafCall::PageAdd { td, gpa, page, .. } => {
                self.check_page_add_target(td, gpa)?;
                if !self.pamt.has_4k_level(page.range_index()) {
                    return Err(TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8));
                }
                self.check_new_private_page(page)
            }
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
    }

    /// PAGE.AUG's checks: the TD, the walk, PAMT backing for the new page, a free entry, and
    /// the page itself.
    fn check_page_aug(&self, td: TdId, gpa: Gpa, page: Hpa) -> Result<(), TdxStatus> {
        self.check_td_state(td, BUILT_OR_RUNNABLE)?;
        self.check_page_aug_target(td, gpa, page)
    }

    /// PAGE.AUG's checks after the TD's: the walk, PAMT backing for the new page, a free
    /// entry, and the page itself.
    pub(super) fn check_page_aug_target(&self, td: TdId, gpa: Gpa, page: Hpa) -> Result<(), TdxStatus> {
        check_page_aug_target_of(&self.pamt, &self.tds[&td].sept, gpa, page)
    }

    /// RANGE.BLOCK's checks: the TD, the walk, and an entry that is mapped or pending.
    fn check_range_block(&self, td: TdId, gpa: Gpa) -> Result<(), TdxStatus> {
        self.check_td_state(td, BUILT_OR_RUNNABLE)?;
        self.check_walk(td, gpa.0, LEVEL_4K)?;
        // A free entry answers EPT_ENTRY_FREE|RCX, as the module does; an already
        // blocked one the informational GPA_RANGE_ALREADY_BLOCKED|RCX.
        match self.tds[&td].entry(gpa.0).state {
            crate::SeptState::Free => Err(TDX_EPT_ENTRY_FREE.with_operand(operand::RCX)),
            crate::SeptState::Blocked => Err(TDX_GPA_RANGE_ALREADY_BLOCKED.with_operand(operand::RCX)),
            crate::SeptState::Pending | crate::SeptState::Mapped => Ok(()),
        }
    }

    /// TRACK's checks: the TD, and no vCPU left in the epoch before the current one.
    fn check_track(&self, td: TdId) -> Result<(), TdxStatus> {
        self.check_td_state(td, BUILT_OR_RUNNABLE)?;
        // [V-mod] A vCPU that entered in the previous epoch is still in the guest:
        // a second TRACK cannot retire that epoch yet.
        let td = &self.tds[&td];
        let previous = (1 - (td.td_epoch & 1)) as usize;
        if td.epoch_refcount[previous] != 0 {
            return Err(TDX_PREVIOUS_TLB_EPOCH_BUSY);
        }
        Ok(())
    }

    /// PAGE.REMOVE's checks: the TD, the walk, a blocked entry, and its blocking epoch tracked.
    fn check_page_remove(&self, td: TdId, gpa: Gpa) -> Result<(), TdxStatus> {
        self.check_td_state(td, BUILT_OR_RUNNABLE)?;
        self.check_walk(td, gpa.0, LEVEL_4K)?;
        let td = &self.tds[&td];
        let entry = td.entry(gpa.0);
        if entry.state != crate::SeptState::Blocked {
            return Err(TDX_GPA_RANGE_NOT_BLOCKED.with_operand(operand::RCX));
        }
        // Tracked: a TRACK moved the epoch on since the block and every vCPU that
        // ran in the blocked epoch has exited (`is_tlb_tracked`).
        if !td.is_tlb_tracked(entry.blocked_epoch) {
            return Err(TDX_TLB_TRACKING_NOT_DONE.with_operand(operand::RCX));
        }
        Ok(())
    }

    /// SEPT.ADD's checks: the TD, the walk to `level`, no table there yet, PAMT backing for
    /// the new S-EPT page, and the page itself.
    fn check_sept_add(&self, td: TdId, gpa: Gpa, level: u8, page: Hpa) -> Result<(), TdxStatus> {
        self.check_td_state(td, BUILT_OR_RUNNABLE)?;
        self.check_walk(td, gpa.0, level)?;
        if self.tds[&td].sept.non_leaf_present(gpa.0, level) {
            return Err(TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
        }
        // [I] The S-EPT page is page-assigning like a TDCX page (spec §5.3, DPAMT v6
        // installs its backing first), though Kirill's list leaves it out.
        if !self.pamt.has_4k_level(page.range_index()) {
            return Err(TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8));
        }
        self.check_new_private_page(page)
    }

    /// A page the leaf gives the TD (R8) is NDA and backs no range.
    fn check_new_private_page(&self, page: Hpa) -> Result<(), TdxStatus> {
        check_new_private_page_of(&self.pamt, page)
    }

    pub(super) fn finish_sept_leaf(&mut self, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::PageAug { td, gpa, page } => {
                self.map_private_page(td, gpa, page, crate::SeptState::Pending)
            }
            LeafCall::RangeBlock { td, gpa } => self.finish_range_block(td, gpa),
            LeafCall::Track { td } => {
                self.td_mut(td).td_epoch += 1;
                LeafOutput::status(TDX_SUCCESS)
            }
            LeafCall::PageRemove { td, gpa } => self.finish_page_remove(td, gpa),
            LeafCall::PageWbinvd { .. } => LeafOutput::status(TDX_SUCCESS),
            LeafCall::SeptAdd { td, gpa, level, page } => self.finish_sept_add(td, gpa, level, page),
            LeafCall::PageAdd { td, gpa, page, .. } => {
                self.map_private_page(td, gpa, page, crate::SeptState::Mapped)
            }
            _ => unreachable!("sept_leaves: {call} is not an S-EPT leaf"),
        }
    }

    /// PAGE.AUG (the entry PENDING until the guest accepts) and PAGE.ADD (MAPPED, and
    /// measured): the page becomes the TD's REG page.
    fn map_private_page(&mut self, td: TdId, gpa: Gpa, page: Hpa, state: crate::SeptState) -> LeafOutput {
        let td = self.tds.get_mut(&td).expect("module: the TD exists");
        map_private_page_of(&mut self.pamt, td, gpa, page, state)
    }

    /// A PENDING entry can be blocked too.
    fn finish_range_block(&mut self, td: TdId, gpa: Gpa) -> LeafOutput {
        let td = self.td_mut(td);
        let td_epoch = td.td_epoch;
        td.sept.set_state(gpa.0, crate::SeptState::Blocked, td_epoch);
        LeafOutput::status(TDX_SUCCESS)
    }

    fn finish_page_remove(&mut self, td: TdId, gpa: Gpa) -> LeafOutput {
        let td = self.tds.get_mut(&td).expect("module: the TD exists");
        let page = td.sept.unmap(gpa.0);
        td.child_pages = td.child_pages.checked_sub(1).expect("PAGE.REMOVE: the TD counted the page");
        assert_eq!(self.pamt.page_type(page), PageType::Reg, "PAGE.REMOVE: a mapped page is REG");
        let count = self.pamt.free_page(page);
        LeafOutput { removal_hint: count == Some(0), ..LeafOutput::status(TDX_SUCCESS) }
    }

    fn finish_sept_add(&mut self, td: TdId, gpa: Gpa, level: u8, page: Hpa) -> LeafOutput {
        let slot = self.tds[&td].owner_slot;
        self.pamt.assign_page(page, PageType::Ept, slot);
        let td = self.td_mut(td);
        td.sept.add_table(gpa.0, level, page);
        td.child_pages += 1;
        LeafOutput::status(TDX_SUCCESS)
    }
}

// The checks and the effect above over the TD's S-EPT and the PAMT, for a caller that holds
// them already (`Module::page_rounds_at_once`, which makes many rounds of one TD).

/// The walk to `gpa`'s entry of `level` reaches its table.
fn check_walk_of(sept: &Sept, gpa: u64, level: u8) -> Result<(), TdxStatus> {
    if sept.walk(gpa, level) == Walk::Failed {
        return Err(TDX_EPT_WALK_FAILED.with_operand(operand::RCX));
    }
    Ok(())
}

/// PAGE.AUG's checks after the TD's: the walk, PAMT backing for the new page, a free entry,
/// and the page itself.
pub(super) fn check_page_aug_target_of(
    pamt: &Pamt,
    sept: &Sept,
    gpa: Gpa,
    page: Hpa,
) -> Result<(), TdxStatus> {
    check_walk_of(sept, gpa.0, LEVEL_4K)?;
    // [I] The page checks (type not NDA, or a DPAMT backing page) answer
    // PAGE_NOT_FREE|R8: the spec names only MISSING_PAMT_PAGE_PAIR and
    // EPT_ENTRY_STATE_INCORRECT here.
    if !pamt.has_4k_level(page.range_index()) {
        return Err(TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::R8));
    }
    if sept.state(gpa.0) != crate::SeptState::Free {
        return Err(TDX_EPT_ENTRY_STATE_INCORRECT.with_operand(operand::RCX));
    }
    check_new_private_page_of(pamt, page)
}

/// A page the leaf gives the TD (R8) is NDA and backs no range.
fn check_new_private_page_of(pamt: &Pamt, page: Hpa) -> Result<(), TdxStatus> {
    if pamt.page_type(page) != PageType::Nda || pamt.is_backing_page(page) {
        return Err(TDX_PAGE_NOT_FREE.with_operand(operand::R8));
    }
    Ok(())
}

/// PAGE.AUG (the entry PENDING until the guest accepts) and PAGE.ADD (MAPPED, and measured):
/// the page becomes TD `td`'s REG page.
pub(super) fn map_private_page_of(
    pamt: &mut Pamt,
    td: &mut Td,
    gpa: Gpa,
    page: Hpa,
    state: crate::SeptState,
) -> LeafOutput {
    pamt.assign_page(page, PageType::Reg, td.owner_slot);
    td.sept.map(gpa.0, page, state);
    td.child_pages += 1;
    LeafOutput::status(TDX_SUCCESS)
}

/// SEPT.ADD's RCX: a level 1 ..= 3 (the parent entry's) and a private GPA aligned to what an
/// entry of that level covers [I: the module's `verify_page_info_input`].
fn check_sept_level(gpa: Gpa, level: u8) -> Result<(), TdxStatus> {
    let aligned = (1..=LEVEL_ROOT).contains(&level) && gpa.0.is_multiple_of(Sept::entry_bytes(level));
    if !aligned || gpa.0 >= GPA_LIMIT {
        return Err(TDX_OPERAND_INVALID.with_operand(operand::RCX));
    }
    Ok(())
}
