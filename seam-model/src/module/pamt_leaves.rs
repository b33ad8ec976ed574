//! TDH.PHYMEM.PAMT.ADD and TDH.PHYMEM.PAMT.REMOVE (spec §5.4, §5.5): the Dynamic-PAMT leaves
//! that give a 2MB range its page pair and take it back.

use super::{LockList, LockStop, Module, check_aligned};
use crate::lock::LockMode;
use crate::pamt::{Dpamt2M, PageType, WalkTarget};
use crate::status::{
    TDX_HPA_RANGE_NOT_FREE, TDX_NO_PAMT_PAGE_PAIR, TDX_OPERAND_INVALID, TDX_PAGE_NOT_FREE,
    TDX_PAMT_PAGE_NOT_EMPTY, TDX_SUCCESS, TdxStatus, operand,
};
use crate::{Hpa, LeafCall, LeafOutput, RANGE_2M};

impl Module {
    /// Spec §5.4 / §5.5 steps 1–2: DPAMT on, then RCX, RDX, R8.
    pub(super) fn check_pamt_operands(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        self.check_dpamt_enabled()?;
        match *call {
            LeafCall::PamtAdd { hpa, pair } => {
                check_aligned(hpa, RANGE_2M, operand::RCX)?;
                self.check_page(pair[0], operand::RDX)?;
                self.check_page(pair[1], operand::R8)?;
                self.check_inside(hpa, operand::RCX)
            }
            LeafCall::PamtRemove { hpa } => {
                check_aligned(hpa, RANGE_2M, operand::RCX)?;
                self.check_inside(hpa, operand::RCX)
            }
            _ => unreachable!("pamt_leaves: {call} is not a PAMT leaf"),
        }
    }

    fn check_dpamt_enabled(&self) -> Result<(), TdxStatus> {
        if !self.dpamt_enabled {
            return Err(TDX_OPERAND_INVALID.with_operand(operand::RAX));
        }
        Ok(())
    }

    pub(super) fn lock_pamt_leaf(&mut self, call: &LeafCall, list: &mut LockList) -> Result<(), LockStop> {
        match *call {
            LeafCall::PamtAdd { hpa, pair } => self.lock_pamt_add(hpa, pair, list),
            // Spec §5.5 step 3.
            LeafCall::PamtRemove { hpa } => {
                self.walk(hpa, WalkTarget::Range2MExclusive, operand::RCX, list).map(|_| ())
            }
            _ => unreachable!("pamt_leaves: {call} is not a PAMT leaf"),
        }
    }

    /// Spec §5.4 steps 3–5: X's 2MB entry exclusive, then each pair page outside X down to
    /// its 4KB entry shared.
    fn lock_pamt_add(&mut self, hpa: Hpa, pair: [Hpa; 2], list: &mut LockList) -> Result<(), LockStop> {
        self.walk(hpa, WalkTarget::Range2MExclusive, operand::RCX, list)?;
        if self.pamt.dpamt(hpa.range_index()) != Dpamt2M::Unbacked {
            return Ok(()); // HPA_RANGE_NOT_FREE, decided in finish
        }
        for (&page, &operand_id) in pair.iter().zip(&[operand::RDX, operand::R8]) {
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

    pub(super) fn check_pamt_leaf(&self, call: &LeafCall) -> Result<(), TdxStatus> {
        match *call {
            LeafCall::PamtAdd { hpa, pair } => self.check_pamt_add(hpa, pair),
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
            _ => unreachable!("pamt_leaves: {call} is not a PAMT leaf"),
        }
    }

    /// Spec §5.4 steps 4-5.
    fn check_pamt_add(&self, hpa: Hpa, pair: [Hpa; 2]) -> Result<(), TdxStatus> {
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
        // The module test-and-sets both bitmap bits (undoing the first if the second was
        // set), for pages inside X too: a page of an unbacked X may back another range.
        // Equal pair pages fail on R8.
        if self.pamt.is_backing_page(pair[0]) {
            return Err(TDX_PAGE_NOT_FREE.with_operand(operand::RDX));
        }
        if pair[0] == pair[1] || self.pamt.is_backing_page(pair[1]) {
            return Err(TDX_PAGE_NOT_FREE.with_operand(operand::R8));
        }
        Ok(())
    }

    pub(super) fn finish_pamt_leaf(&mut self, call: &LeafCall) -> LeafOutput {
        match *call {
            LeafCall::PamtAdd { hpa, pair } => self.finish_pamt_add(hpa, pair),
            LeafCall::PamtRemove { hpa } => self.finish_pamt_remove(hpa),
            _ => unreachable!("pamt_leaves: {call} is not a PAMT leaf"),
        }
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
}
