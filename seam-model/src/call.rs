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
    /// TDH.VP.ADDCX: RCX = the new TDCX page `tdcx`, RDX = the vCPU's TDVPR.
    VpAddcx { td: TdId, tdvpr: Hpa, tdcx: Hpa },
    /// TDH.VP.INIT (version 1): RCX = the vCPU's TDVPR. The vCPU becomes READY and is
    /// associated with the calling LP. The initial guest RCX (RDX) and x2APIC id (R8) are
    /// not modelled.
    VpInit { td: TdId, tdvpr: Hpa },
    /// TDH.VP.ENTER: RCX = the vCPU's TDVPR. The guest runs until a TD exit: `begin`, then
    /// [`crate::Module::enter_guest`] and [`crate::Module::exit_guest`], not `finish`.
    VpEnter { td: TdId, tdvpr: Hpa },
    /// TDH.VP.FLUSH: RCX = the vCPU's TDVPR, on the LP it is associated with.
    VpFlush { td: TdId, tdvpr: Hpa },
    /// TDH.MEM.SEPT.ADD: RCX = `gpa` | `level` (the level of the parent entry: 1 adds the
    /// table of a 2MB range's 4KB entries, 2 the table of a 1GB range's 2MB entries, 3 the
    /// table of a 512GB range's 1GB entries; `gpa` aligned to what that entry covers),
    /// RDX = the TD's TDR, R8 = the new S-EPT `page`.
    SeptAdd { td: TdId, gpa: Gpa, level: u8, page: Hpa },
    /// TDH.MEM.PAGE.ADD (TD build): RCX = `gpa` (4KB), RDX = the TD's TDR, R8 = the target
    /// `page`, R9 = the `source` page whose contents are copied in and measured.
    PageAdd { td: TdId, gpa: Gpa, page: Hpa, source: Hpa },
    /// TDH.MNG.VPFLUSHDONE: RCX = the TD's TDR. Every vCPU is flushed: teardown begins.
    MngVpflushdone { td: TdId },
    /// TDH.PHYMEM.CACHE.WB: RCX = 0 to start the calling LP's package's write-back, 1 to
    /// resume one that returned TDX_INTERRUPTED_RESUMABLE.
    CacheWb { resume: bool },
    /// TDH.MNG.KEY.FREEID: RCX = the TD's TDR. Frees the TD's HKID.
    MngKeyFreeid { td: TdId },
    /// TDH.PHYMEM.PAGE.RECLAIM: RCX = a page of a TD in teardown (its TDR last).
    PageReclaim { page: Hpa },
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
            LeafCall::VpAddcx { .. } => Leaf::VpAddcx,
            LeafCall::VpInit { .. } => Leaf::VpInit,
            LeafCall::VpEnter { .. } => Leaf::VpEnter,
            LeafCall::VpFlush { .. } => Leaf::VpFlush,
            LeafCall::SeptAdd { .. } => Leaf::MemSeptAdd,
            LeafCall::PageAdd { .. } => Leaf::MemPageAdd,
            LeafCall::MngVpflushdone { .. } => Leaf::MngVpflushdone,
            LeafCall::CacheWb { .. } => Leaf::PhymemCacheWb,
            LeafCall::MngKeyFreeid { .. } => Leaf::MngKeyFreeid,
            LeafCall::PageReclaim { .. } => Leaf::PhymemPageReclaim,
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
    /// `TDH.PHYMEM.PAMT.ADD(0x200000, pair 0x400000 0x600000)`: the leaf's full name, as
    /// `tdxsim list leaves` and every message print it, then its operands.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.leaf().name())?;
        match self {
            LeafCall::PamtAdd { hpa, pair } => write!(f, "({hpa}, pair {} {})", pair[0], pair[1]),
            LeafCall::PamtRemove { hpa } => write!(f, "({hpa})"),
            LeafCall::PageAug { td, gpa, page } => write!(f, "({td}, {gpa}, {page})"),
            LeafCall::PageRemove { td, gpa } | LeafCall::RangeBlock { td, gpa } => write!(f, "({td}, {gpa})"),
            LeafCall::Track { td } | LeafCall::MngInit { td } | LeafCall::MrFinalize { td } => {
                write!(f, "({td})")
            }
            LeafCall::PageWbinvd { page } => write!(f, "({page})"),
            LeafCall::MngCreate { td, tdr } => write!(f, "({td}, tdr {tdr})"),
            LeafCall::MngKeyConfig { td } => write!(f, "({td})"),
            LeafCall::VpCreate { td, tdvpr } => write!(f, "({td}, tdvpr {tdvpr})"),
            LeafCall::SysConfig { dpamt: true } => f.write_str("(dpamt)"),
            LeafCall::SysRd { field } => write!(f, "({field:#x})"),
            LeafCall::SysShutdown { avoid_compat_sensitive: true } => f.write_str("(avoid compat-sensitive)"),
            LeafCall::CacheWb { resume: false }
            | LeafCall::SysInit
            | LeafCall::SysLpInit
            | LeafCall::SysConfig { dpamt: false }
            | LeafCall::SysKeyConfig
            | LeafCall::SysTdmrInit
            | LeafCall::SysShutdown { avoid_compat_sensitive: false }
            | LeafCall::SysUpdate
            | LeafCall::SeamldrInfo
            | LeafCall::SeamldrInstall => Ok(()),
            LeafCall::VpAddcx { td, tdvpr, tdcx } => write!(f, "({td}, tdvpr {tdvpr}, tdcx {tdcx})"),
            LeafCall::VpInit { td, tdvpr }
            | LeafCall::VpEnter { td, tdvpr }
            | LeafCall::VpFlush { td, tdvpr } => {
                write!(f, "({td}, tdvpr {tdvpr})")
            }
            LeafCall::SeptAdd { td, gpa, level, page } => write!(f, "({td}, {gpa} level {level}, {page})"),
            LeafCall::PageAdd { td, gpa, page, source } => {
                write!(f, "({td}, {gpa}, {page}, source {source})")
            }
            LeafCall::MngVpflushdone { td } | LeafCall::MngKeyFreeid { td } => write!(f, "({td})"),
            LeafCall::CacheWb { resume: true } => f.write_str("(resume)"),
            LeafCall::PageReclaim { page } => write!(f, "({page})"),
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
    /// TDH.PHYMEM.PAGE.RECLAIM on success: RCX, the page type the page had
    /// ([`crate::PageType::value`]).
    pub value: Option<u64>,
    /// TDH.VP.ENTER that entered the guest (or emulated a TD exit): why the TD exited.
    /// The status is then TDX_SUCCESS with the VMX basic exit reason in its low bits
    /// ([`TdExitReason::vmx_exit_reason`]), as KVM reads `vp_enter_ret`.
    pub exit: Option<TdExitReason>,
}

impl LeafOutput {
    /// Just a status; every other output empty.
    pub fn status(status: TdxStatus) -> LeafOutput {
        LeafOutput { status, pair: None, removal_hint: false, next: None, value: None, exit: None }
    }
}

/// Why a TD exited to the host: what ends a TDH.VP.ENTER.
///
/// The host side (its guest model) decides when the guest exits and why; the module keeps
/// the zero-step state the exit implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TdExitReason {
    /// An EPT violation on the private GPA `gpa`: the page is not mapped (FREE), blocked,
    /// or a table above it is missing. Counts towards the zero-step detector when the
    /// guest made no progress since the entry.
    #[doc(alias = "EXIT_REASON_EPT_VIOLATION")]
    EptViolation { gpa: Gpa },
    /// An external interrupt arrived while the guest ran (a timer, an IPI, KVM's
    /// `KVM_REQ_OUTSIDE_GUEST_MODE` kick).
    #[doc(alias = "EXIT_REASON_EXTERNAL_INTERRUPT")]
    ExternalInterrupt,
    /// TDG.VP.VMCALL: the guest asks the host for a service (HLT, MMIO, MapGPA, ...).
    #[doc(alias = "EXIT_REASON_TDCALL")]
    Tdvmcall,
}

impl TdExitReason {
    /// The VMX basic exit reason (Intel SDM Appendix C): 48, 1, 77.
    pub const fn vmx_exit_reason(self) -> u32 {
        match self {
            TdExitReason::EptViolation { .. } => 48,
            TdExitReason::ExternalInterrupt => 1,
            TdExitReason::Tdvmcall => 77,
        }
    }
}

/// A TD exit as the host reports it to [`crate::Module::exit_guest`]: why, and the guest RIP
/// at the exit. An exit at a RIP other than the previous exit's is forward progress, which
/// resets the zero-step detector (spec §6.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdExit {
    pub reason: TdExitReason,
    pub guest_rip: u64,
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
