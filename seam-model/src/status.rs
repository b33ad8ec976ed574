//! `TdxStatus`: the module's RAX encoding, with the real values of spec/constants.md §3–4.
//!
//! bits 63:32 are the status (bit 63 error, bit 62 non-recoverable, 47:40 class,
//! 39:32 code); bits 31:0 are the detail, usually an operand id.

use serde::{Deserialize, Serialize};

/// A SEAMCALL completion status as the module returns it in RAX.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TdxStatus(pub u64);

/// Mask that keeps the status and drops the operand detail (`TDX_SEAMCALL_STATUS_MASK`).
pub const TDX_SEAMCALL_STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;
/// Bit 62 in an output register of a page-freeing leaf: the 2MB range's count reached 0.
pub const PAMT_REMOVAL_HINT: u64 = 1 << 62;

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        $( $(#[$doc])* pub const $name: TdxStatus = TdxStatus($value); )*
        /// Every named status, for printing and parsing.
        pub const NAMED_STATUSES: &[(&str, TdxStatus)] = &[$((stringify!($name), $name)),*];
    };
}

statuses! {
    TDX_SUCCESS = 0x0000_0000_0000_0000;
    TDX_INTERRUPTED_RESUMABLE = 0x8000_0003_0000_0000;
    TDX_OPERAND_INVALID = 0xC000_0100_0000_0000;
    TDX_OPERAND_ADDR_RANGE_ERROR = 0xC000_0101_0000_0000;
    /// A module try-lock failed; the detail is the operand id.
    TDX_OPERAND_BUSY = 0x8000_0200_0000_0000;
    TDX_PREVIOUS_TLB_EPOCH_BUSY = 0x8000_0201_0000_0000;
    TDX_SYS_BUSY = 0x8000_0202_0000_0000;
    TDX_RND_NO_ENTROPY = 0x8000_0203_0000_0000;
    TDX_OPERAND_BUSY_HOST_PRIORITY = 0x8000_0204_0000_0000;
    /// A page's PAMT entry is not what the leaf needs (e.g. PAGE.RECLAIM of an NDA page).
    TDX_PAGE_METADATA_INCORRECT = 0xC000_0300_0000_0000;
    TDX_PAGE_NOT_OWNED_BY_TD = 0xC000_0302_0000_0000;
    TDX_PAGE_NOT_FREE = 0xC000_0303_0000_0000;
    /// PAMT.ADD: the 2MB range already has backing.
    TDX_HPA_RANGE_NOT_FREE = 0xC000_0304_0000_0000;
    /// PAMT.REMOVE: the range has no backing.
    TDX_NO_PAMT_PAGE_PAIR = 0xC000_0305_0000_0000;
    /// PAMT.REMOVE: some 4KB page in the range is still in use.
    TDX_PAMT_PAGE_NOT_EMPTY = 0xC000_0306_0000_0000;
    /// A page-assigning leaf touched a 2MB range with no DPAMT backing.
    TDX_MISSING_PAMT_PAGE_PAIR = 0x8000_0308_0000_0000;
    /// PAGE.RECLAIM of a TDR whose TD still owns other pages.
    TDX_TD_ASSOCIATED_PAGES_EXIST = 0xC000_0400_0000_0000;
    /// TDH.SYS.INIT when the module is not in SYSINIT_PENDING (e.g. called twice).
    TDX_SYS_INIT_NOT_PENDING = 0xC000_0500_0000_0000;
    /// This LP has not done TDH.SYS.LP.INIT against the current module image.
    TDX_SYS_LP_INIT_NOT_DONE = 0xC000_0502_0000_0000;
    /// TDH.SYS.LP.INIT repeated on one LP.
    TDX_SYS_LP_INIT_DONE = 0xC000_0503_0000_0000;
    /// A non-SYS leaf before the module is SYS_READY.
    TDX_SYS_NOT_READY = 0xC000_0505_0000_0000;
    /// The module is shut down (runtime update in progress).
    TDX_SYS_SHUTDOWN = 0xC000_0506_0000_0000;
    TDX_SYS_KEY_CONFIG_NOT_PENDING = 0xC000_0507_0000_0000;
    TDX_SYS_STATE_INCORRECT = 0xC000_0508_0000_0000;
    /// TDH.SYS.UPDATE: no usable handoff data.
    TDX_SYS_INVALID_HANDOFF = 0xC000_0509_0000_0000;
    /// TDH.SYS.LP.INIT before TDH.SYS.INIT.
    TDX_SYS_LP_INIT_NOT_PENDING = 0xC000_050B_0000_0000;
    /// TDH.SYS.CONFIG in the wrong state, or not every platform LP has done LP.INIT.
    TDX_SYS_CONFIG_NOT_PENDING = 0xC000_050C_0000_0000;
    /// TDH.SYS.SHUTDOWN with AVOID_COMPAT_SENSITIVE while a TD build is in progress.
    TDX_UPDATE_COMPAT_SENSITIVE = 0x8000_0512_0000_0000;
    TDX_LIFECYCLE_STATE_INCORRECT = 0xC000_0607_0000_0000;
    TDX_OP_STATE_INCORRECT = 0xC000_0608_0000_0000;
    /// A vCPU does not have the TDVPS pages the leaf needs (VP.INIT before every VP.ADDCX,
    /// or VP.ADDCX beyond the maximum).
    TDX_TDCX_NUM_INCORRECT = 0xC000_0610_0000_0000;
    /// The vCPU's state does not allow the leaf (VP.ENTER before VP.INIT, VP.INIT twice).
    TDX_VCPU_STATE_INCORRECT = 0xC000_0700_0000_0000;
    /// VP.ENTER of a vCPU associated with another LP (TDH.VP.FLUSH there first).
    TDX_VCPU_ASSOCIATED = 0x8000_0701_0000_0000;
    /// VP.FLUSH on an LP the vCPU is not associated with.
    TDX_VCPU_NOT_ASSOCIATED = 0x8000_0702_0000_0000;
    /// Retryable: the CPU could not generate the key.
    TDX_KEY_GENERATION_FAILED = 0x8000_0800_0000_0000;
    /// A key is not in the state the leaf needs (e.g. TDH.MNG.INIT before KEY.CONFIG on
    /// every package).
    TDX_KEY_STATE_INCORRECT = 0xC000_0811_0000_0000;
    /// The TD's key life cycle is not KEYS_CONFIGURED (before KEY.CONFIG on every package,
    /// or once teardown began).
    TDX_TD_KEYS_NOT_CONFIGURED = 0x8000_0810_0000_0000;
    /// Informational: a KEY.CONFIG on a package whose key is already programmed.
    TDX_KEY_CONFIGURED = 0x0000_0815_0000_0000;
    /// KEY.FREEID before TDH.PHYMEM.CACHE.WB completed on every package.
    TDX_WBCACHE_NOT_COMPLETE = 0x8000_0817_0000_0000;
    /// Informational: CACHE.WB found no HKID waiting for a write-back.
    TDX_NO_HKID_READY_TO_WBCACHE = 0x0000_0821_0000_0000;
    /// CACHE.WB resumed with no interrupted write-back on this package.
    TDX_WBCACHE_RESUME_ERROR = 0xC000_0823_0000_0000;
    /// VPFLUSHDONE while a vCPU is still associated with an LP.
    TDX_FLUSHVP_NOT_DONE = 0x8000_0824_0000_0000;
    TDX_EPT_WALK_FAILED = 0xC000_0B00_0000_0000;
    TDX_EPT_ENTRY_FREE = 0xC000_0B01_0000_0000;
    TDX_EPT_ENTRY_NOT_FREE = 0xC000_0B02_0000_0000;
    TDX_GPA_RANGE_NOT_BLOCKED = 0xC000_0B06_0000_0000;
    TDX_GPA_RANGE_ALREADY_BLOCKED = 0x0000_0B07_0000_0000;
    TDX_TLB_TRACKING_NOT_DONE = 0xC000_0B08_0000_0000;
    /// Informational, to the guest: TDG.MEM.PAGE.ACCEPT of a page already accepted.
    TDX_PAGE_ALREADY_ACCEPTED = 0x0000_0B0A_0000_0000;
    TDX_EPT_ENTRY_STATE_INCORRECT = 0xC000_0B0D_0000_0000;
    TDX_METADATA_FIELD_ID_INCORRECT = 0xC000_0C00_0000_0000;
    /// Linux: the SEAMCALL returned VMfailInvalid (no module, or SEAM not ready).
    TDX_SEAMCALL_VMFAILINVALID = 0x8000_FF00_FFFF_0000;
    /// Linux: the SEAMCALL raised #UD (VMX off on this CPU).
    TDX_SEAMCALL_UD = 0x8000_FF00_0000_0006;
}

/// P-SEAMLDR statuses (spec/constants.md §2). They live in the same RAX but use their own
/// encoding: the low bits are part of the code, so they are compared whole, never masked.
pub mod seamldr {
    use super::TdxStatus;

    macro_rules! seamldr_statuses {
        ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
            $( $(#[$doc])* pub const $name: TdxStatus = TdxStatus($value); )*
            /// Every named P-SEAMLDR status.
            pub const NAMED_SEAMLDR_STATUSES: &[(&str, TdxStatus)] = &[$((stringify!($name), $name)),*];
        };
    }

    seamldr_statuses! {
        SEAMLDR_SUCCESS = 0;
        SEAMLDR_EBADPARAM = 0x8000_0000_0000_0000;
        /// For example SEAMLDR.INSTALL called twice on one LP in one session.
        SEAMLDR_EBADCALL = 0x8000_0000_0000_0003;
        /// SEAMLDR.INSTALL with no shut-down module and handoff data to update from.
        SEAMLDR_EBADHANDOFF = 0x8000_0000_0000_0004;
        SEAMLDR_ENOMEM = 0x8000_0000_0001_0002;
        SEAMLDR_EUNSPECERR = 0x8000_0000_0001_0003;
        SEAMLDR_EUNSUPCPU = 0x8000_0000_0001_0004;
        SEAMLDR_EBADSIG = 0x8000_0000_0002_0000;
        SEAMLDR_EBADHASH = 0x8000_0000_0002_0001;
        SEAMLDR_EINTERRUPT = 0x8000_0000_0003_0000;
        SEAMLDR_ENOENTROPY = 0x8000_0000_0003_0001;
    }
}

/// Operand ids (detail bits of a status), spec/constants.md §4.
pub mod operand {
    pub const RAX: u32 = 0x00;
    pub const RCX: u32 = 0x01;
    pub const RDX: u32 = 0x02;
    pub const R8: u32 = 0x08;
    pub const R9: u32 = 0x09;
    pub const TDR: u32 = 0x80;
    pub const TDCX: u32 = 0x81;
    pub const TDVPR: u32 = 0x82;
    pub const TDCS: u32 = 0x90;
    /// `secure_ept_lock`, Linux's `TDX_OPERAND_ID_SEPT`.
    pub const SEPT: u32 = 0x92;
    pub const SEPT_ENTRY: u32 = 0x93;
    pub const TD_EPOCH: u32 = 0xA9;
    pub const OP_STATE: u32 = 0xAC;
    pub const SYS: u32 = 0xB8;
    pub const KOT: u32 = 0xBA;
    /// The per-package TDH.PHYMEM.CACHE.WB mutex.
    pub const WBCACHE: u32 = 0xBC;

    /// Every operand id a status may carry, named as statuses print it (`TDX_OPERAND_BUSY|RCX`).
    pub const NAMES: &[(&str, u32)] = &[
        ("RCX", RCX),
        ("RDX", RDX),
        ("R8", R8),
        ("R9", R9),
        ("TDR", TDR),
        ("TDCX", TDCX),
        ("TDVPR", TDVPR),
        ("TDCS", TDCS),
        ("SEPT", SEPT),
        ("SEPT_ENTRY", SEPT_ENTRY),
        ("TD_EPOCH", TD_EPOCH),
        ("OP_STATE", OP_STATE),
        ("SYS", SYS),
        ("KOT", KOT),
        ("WBCACHE", WBCACHE),
    ];

    /// The name of operand id `id`, if it has one.
    pub fn name(id: u32) -> Option<&'static str> {
        NAMES.iter().find(|(_, named)| *named == id).map(|(name, _)| *name)
    }

    /// The operand id called `name` (`"SEPT"`), if there is one.
    pub fn from_name(name: &str) -> Option<u32> {
        NAMES.iter().find(|(named, _)| *named == name).map(|(_, id)| *id)
    }
}

impl TdxStatus {
    /// This status with `operand` in the detail bits.
    pub const fn with_operand(self, operand: u32) -> TdxStatus {
        TdxStatus((self.0 & TDX_SEAMCALL_STATUS_MASK) | operand as u64)
    }

    /// The status without its detail (`TDX_STATUS()` in Linux terms).
    pub const fn masked(self) -> TdxStatus {
        TdxStatus(self.0 & TDX_SEAMCALL_STATUS_MASK)
    }

    /// The status as summaries and metrics count it: without the detail when the detail
    /// is an operand id; whole when the low bits are part of the code (Linux's VMfailInvalid
    /// and #UD, the P-SEAMLDR errors), so those print as themselves and stay distinct.
    ///
    /// Inline: the host asks it of every SEAMCALL's status.
    #[inline]
    pub fn without_operand(self) -> TdxStatus {
        // No detail bits: the whole value and the masked one are the same (the hot case).
        if self.operand() == 0 {
            return self;
        }
        if self.whole_entry().is_some() { self } else { self.masked() }
    }

    pub const fn operand(self) -> u32 {
        self.0 as u32
    }

    pub const fn is_success(self) -> bool {
        self.masked().0 == TDX_SUCCESS.0
    }

    /// `IS_TDX_OPERAND_BUSY()`: any operand.
    pub const fn is_operand_busy(self) -> bool {
        self.masked().0 == TDX_OPERAND_BUSY.0
    }

    /// Bits 47:40: class 0x02 is "busy / contention".
    pub const fn class(self) -> u8 {
        (self.0 >> 40) as u8
    }

    /// Whether the status is of the busy / contention class (an operand busy, with or
    /// without host priority, a TLB epoch busy): the caller may try again.
    pub const fn is_busy_class(self) -> bool {
        self.class() == 0x02
    }

    /// The name of the masked status, e.g. `TDX_OPERAND_BUSY`; for a status whose low
    /// bits are part of its code, the name of the whole value (see `whole_entry`).
    pub fn name(self) -> &'static str {
        let masked = self.masked();
        self.whole_entry()
            .or_else(|| NAMED_STATUSES.iter().find(|(_, status)| *status == masked))
            .map_or("TDX_UNKNOWN_STATUS", |(name, _)| name)
    }

    /// Looks up a status by its name, e.g. `"TDX_HPA_RANGE_NOT_FREE"` or `"SEAMLDR_EBADCALL"`.
    pub fn from_name(name: &str) -> Option<TdxStatus> {
        NAMED_STATUSES
            .iter()
            .chain(seamldr::NAMED_SEAMLDR_STATUSES)
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }

    /// The named status this whole value is, when its low bits are code rather than an
    /// operand: Linux's software-defined SEAMCALL results (VMfailInvalid, #UD), and
    /// P-SEAMLDR errors that no TDX status claims by its masked value.
    fn whole_entry(self) -> Option<&'static (&'static str, TdxStatus)> {
        let software = NAMED_STATUSES.iter().find(|(_, status)| status.operand() != 0 && *status == self);
        software.or_else(|| {
            let masked = self.masked();
            if self == TDX_SUCCESS || NAMED_STATUSES.iter().any(|(_, status)| *status == masked) {
                return None;
            }
            seamldr::NAMED_SEAMLDR_STATUSES.iter().find(|(_, status)| *status == self)
        })
    }
}

impl std::fmt::Display for TdxStatus {
    /// `TDX_OPERAND_BUSY|RCX` style: the name, then the operand when there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.name();
        let operand = self.operand();
        if operand == 0 || self.whole_entry().is_some() {
            return f.write_str(name);
        }
        let Some(operand_name) = operand::name(operand) else {
            return write!(f, "{name}|{operand:#x}");
        };
        write!(f, "{name}|{operand_name}")
    }
}

impl std::fmt::Debug for TdxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self} ({:#018x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_with_operand_keeps_the_real_encoding() {
        assert_eq!(TDX_OPERAND_BUSY.with_operand(operand::RCX).0, 0x8000_0200_0000_0001);
        assert_eq!(TDX_OPERAND_BUSY.with_operand(operand::SEPT).0, 0x8000_0200_0000_0092);
        assert!(TDX_OPERAND_BUSY.with_operand(operand::TD_EPOCH).is_operand_busy());
        assert_eq!(TDX_OPERAND_BUSY.class(), 0x02);
        assert_eq!(TDX_OPERAND_BUSY.with_operand(operand::WBCACHE).to_string(), "TDX_OPERAND_BUSY|WBCACHE");
        assert_eq!(TDX_PREVIOUS_TLB_EPOCH_BUSY.class(), 0x02);
        assert_eq!(TDX_OPERAND_BUSY_HOST_PRIORITY.class(), 0x02);
    }

    #[test]
    fn display_names_status_and_operand() {
        assert_eq!(TDX_OPERAND_BUSY.with_operand(operand::RDX).to_string(), "TDX_OPERAND_BUSY|RDX");
        assert_eq!(TDX_HPA_RANGE_NOT_FREE.to_string(), "TDX_HPA_RANGE_NOT_FREE");
        assert_eq!(TdxStatus::from_name("TDX_NO_PAMT_PAGE_PAIR"), Some(TDX_NO_PAMT_PAGE_PAIR));
    }

    #[test]
    fn seamldr_statuses_print_whole() {
        assert_eq!(seamldr::SEAMLDR_EBADCALL.to_string(), "SEAMLDR_EBADCALL");
        assert_eq!(seamldr::SEAMLDR_EBADPARAM.to_string(), "SEAMLDR_EBADPARAM");
        assert_eq!(seamldr::SEAMLDR_ENOMEM.to_string(), "SEAMLDR_ENOMEM");
        assert_eq!(TDX_SUCCESS.to_string(), "TDX_SUCCESS");
        assert_eq!(TdxStatus::from_name("SEAMLDR_EBADHANDOFF"), Some(seamldr::SEAMLDR_EBADHANDOFF));
        assert_eq!(TDX_UPDATE_COMPAT_SENSITIVE.0, 0x8000_0512_0000_0000);
        assert_eq!(TDX_SEAMCALL_VMFAILINVALID.to_string(), "TDX_SEAMCALL_VMFAILINVALID");
        assert_eq!(TDX_SEAMCALL_UD.to_string(), "TDX_SEAMCALL_UD");
    }
}
