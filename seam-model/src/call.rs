//! What a host passes to a leaf and what it gets back.
//!
//! Operands are typed rather than raw registers; each variant's doc says which register
//! the field stands for, so operand ids in BUSY statuses (RCX, RDX, R8) stay meaningful.

use serde::{Deserialize, Serialize};

use crate::{Gpa, Hpa, Leaf, TdId, TdxStatus};

/// One SEAMCALL with its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeafCall {
    /// TDH.PHYMEM.PAMT.ADD: RCX = 2MB range `hpa` (level 2MB), RDX/R8 = the page pair.
    PamtAdd { hpa: Hpa, pair: [Hpa; 2] },
    /// TDH.PHYMEM.PAMT.REMOVE: RCX = 2MB range `hpa` (level 2MB).
    PamtRemove { hpa: Hpa },
    /// TDH.MEM.PAGE.AUG: RCX = `gpa` (4KB), RDX = the TD's TDR, R8 = `page`.
    PageAug { td: TdId, gpa: Gpa, page: Hpa },
    /// TDH.MEM.PAGE.REMOVE: RCX = `gpa` (4KB), RDX = the TD's TDR.
    PageRemove { td: TdId, gpa: Gpa },
    /// TDH.MEM.RANGE.BLOCK: RCX = `gpa` (4KB), RDX = the TD's TDR.
    RangeBlock { td: TdId, gpa: Gpa },
    /// TDH.MEM.TRACK: RCX = the TD's TDR.
    Track { td: TdId },
    /// TDH.PHYMEM.PAGE.WBINVD: RCX = `page` with the TD's HKID.
    PageWbinvd { page: Hpa },
}

impl LeafCall {
    pub fn leaf(&self) -> Leaf {
        match self {
            LeafCall::PamtAdd { .. } => Leaf::PhymemPamtAdd,
            LeafCall::PamtRemove { .. } => Leaf::PhymemPamtRemove,
            LeafCall::PageAug { .. } => Leaf::MemPageAug,
            LeafCall::PageRemove { .. } => Leaf::MemPageRemove,
            LeafCall::RangeBlock { .. } => Leaf::MemRangeBlock,
            LeafCall::Track { .. } => Leaf::MemTrack,
            LeafCall::PageWbinvd { .. } => Leaf::PhymemPageWbinvd,
        }
    }
}

impl std::fmt::Display for LeafCall {
    /// `PAMT.ADD(0x200000, pair 0x400000 0x600000)`: short enough for a table cell.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeafCall::PamtAdd { hpa, pair } => {
                write!(f, "PAMT.ADD({hpa}, pair {} {})", pair[0], pair[1])
            }
            LeafCall::PamtRemove { hpa } => write!(f, "PAMT.REMOVE({hpa})"),
            LeafCall::PageAug { td, gpa, page } => write!(f, "PAGE.AUG({td}, {gpa}, {page})"),
            LeafCall::PageRemove { td, gpa } => write!(f, "PAGE.REMOVE({td}, {gpa})"),
            LeafCall::RangeBlock { td, gpa } => write!(f, "RANGE.BLOCK({td}, {gpa})"),
            LeafCall::Track { td } => write!(f, "TRACK({td})"),
            LeafCall::PageWbinvd { page } => write!(f, "PAGE.WBINVD({page})"),
        }
    }
}

/// What a leaf returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafOutput {
    pub status: TdxStatus,
    /// PAMT.REMOVE on success: the pair it gives back (RDX, R8).
    pub pair: Option<[Hpa; 2]>,
    /// A page-freeing leaf brought its 2MB range's count to 0 (bit 62 of the output).
    pub removal_hint: bool,
}

impl LeafOutput {
    pub fn status(status: TdxStatus) -> LeafOutput {
        LeafOutput { status, pair: None, removal_hint: false }
    }
}
