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
    /// TDH.MNG.CREATE: RCX = the new TD's TDR page `tdr`. `td` names the TD.
    MngCreate { td: TdId, tdr: Hpa },
    /// TDH.MNG.KEY.CONFIG: RCX = the TD's TDR. Programs the TD's key on the calling LP's
    /// package; once per package.
    MngKeyConfig { td: TdId },
    /// TDH.MNG.INIT: RCX = the TD's TDR. Starts the TD build (op_state INITIALIZED).
    MngInit { td: TdId },
    /// TDH.VP.CREATE: RCX = the new TDVPR page `tdvpr`, RDX = the TD's TDR.
    VpCreate { td: TdId, tdvpr: Hpa },
    /// TDH.MR.FINALIZE: RCX = the TD's TDR. Ends the TD build (op_state RUNNABLE).
    MrFinalize { td: TdId },
    /// TDH.SYS.INIT.
    SysInit,
    /// TDH.SYS.LP.INIT on the calling LP.
    SysLpInit,
    /// TDH.SYS.CONFIG: R8 bit 16 = `dpamt`. The TDMR list is the module's one TDMR.
    SysConfig { dpamt: bool },
    /// TDH.SYS.KEY.CONFIG for the calling LP's package.
    SysKeyConfig,
    /// TDH.SYS.TDMR.INIT: RCX = the base of the one TDMR; RDX out = next address.
    SysTdmrInit,
    /// TDH.SYS.RD: RDX = metadata `field` id; R8 out = its value.
    SysRd { field: u64 },
    /// TDH.SYS.SHUTDOWN: RCX bit 16 = AVOID_COMPAT_SENSITIVE. The handoff version in
    /// RCX 15:0 is the module's own, so it is not an operand here.
    SysShutdown { avoid_compat_sensitive: bool },
    /// TDH.SYS.UPDATE: import the handoff of the module before the update.
    SysUpdate,
    /// SEAMLDR.INFO (P-SEAMLDR).
    SeamldrInfo,
    /// SEAMLDR.INSTALL (P-SEAMLDR), update scenario, on the calling LP.
    SeamldrInstall,
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
            LeafCall::MngCreate { .. } => Leaf::MngCreate,
            LeafCall::MngKeyConfig { .. } => Leaf::MngKeyConfig,
            LeafCall::MngInit { .. } => Leaf::MngInit,
            LeafCall::VpCreate { .. } => Leaf::VpCreate,
            LeafCall::MrFinalize { .. } => Leaf::MrFinalize,
            LeafCall::SysInit => Leaf::SysInit,
            LeafCall::SysLpInit => Leaf::SysLpInit,
            LeafCall::SysConfig { .. } => Leaf::SysConfig,
            LeafCall::SysKeyConfig => Leaf::SysKeyConfig,
            LeafCall::SysTdmrInit => Leaf::SysTdmrInit,
            LeafCall::SysRd { .. } => Leaf::SysRd,
            LeafCall::SysShutdown { .. } => Leaf::SysShutdown,
            LeafCall::SysUpdate => Leaf::SysUpdate,
            LeafCall::SeamldrInfo => Leaf::SeamldrInfo,
            LeafCall::SeamldrInstall => Leaf::SeamldrInstall,
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
            LeafCall::MngCreate { td, tdr } => write!(f, "MNG.CREATE({td}, tdr {tdr})"),
            LeafCall::MngKeyConfig { td } => write!(f, "MNG.KEY.CONFIG({td})"),
            LeafCall::MngInit { td } => write!(f, "MNG.INIT({td})"),
            LeafCall::VpCreate { td, tdvpr } => write!(f, "VP.CREATE({td}, tdvpr {tdvpr})"),
            LeafCall::MrFinalize { td } => write!(f, "MR.FINALIZE({td})"),
            LeafCall::SysInit => f.write_str("SYS.INIT"),
            LeafCall::SysLpInit => f.write_str("SYS.LP.INIT"),
            LeafCall::SysConfig { dpamt: true } => f.write_str("SYS.CONFIG(dpamt)"),
            LeafCall::SysConfig { dpamt: false } => f.write_str("SYS.CONFIG"),
            LeafCall::SysKeyConfig => f.write_str("SYS.KEY.CONFIG"),
            LeafCall::SysTdmrInit => f.write_str("SYS.TDMR.INIT"),
            LeafCall::SysRd { field } => write!(f, "SYS.RD({field:#x})"),
            LeafCall::SysShutdown { avoid_compat_sensitive: true } => {
                f.write_str("SYS.SHUTDOWN(avoid compat-sensitive)")
            }
            LeafCall::SysShutdown { avoid_compat_sensitive: false } => f.write_str("SYS.SHUTDOWN"),
            LeafCall::SysUpdate => f.write_str("SYS.UPDATE"),
            LeafCall::SeamldrInfo => f.write_str("SEAMLDR.INFO"),
            LeafCall::SeamldrInstall => f.write_str("SEAMLDR.INSTALL"),
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
    /// TDH.SYS.TDMR.INIT on success: RDX, the next address to initialise. Initialisation
    /// of the TDMR is done when it reaches the TDMR's end (`memory_bytes`), which is how
    /// Linux tests it (`next < tdmr_end`).
    pub next: Option<u64>,
    /// TDH.SYS.RD on success: R8, the field's value. SEAMLDR.INFO: `seam_ready`.
    pub value: Option<u64>,
}

impl LeafOutput {
    /// Just a status; every other output empty.
    pub fn status(status: TdxStatus) -> LeafOutput {
        LeafOutput { status, pair: None, removal_hint: false, next: None, value: None }
    }
}

/// Global metadata fields that TDH.SYS.RD answers (spec/constants.md §7).
pub mod metadata {
    /// `module_hv`: the handoff version the module writes at SYS.SHUTDOWN.
    pub const FIELD_MODULE_HV: u64 = 0x8900_0001_0000_0000;
    /// `pamt_page_bitmap_entry_bits`: bits per 4KB page in the DPAMT bitmap.
    pub const FIELD_PAMT_PAGE_BITMAP_ENTRY_BITS: u64 = 0x9100_0001_0000_0013;
    /// [I] The model's handoff version; every image the model loads has the same one.
    pub const MODULE_HV: u64 = 1;
    /// The bitmap has one bit per page.
    pub const PAMT_PAGE_BITMAP_ENTRY_BITS: u64 = 1;
}
