//! The SEAMCALL leaves: numbers and names of spec/constants.md §1–2, and default costs of
//! spec/calibration.md §2.1.

use serde::{Deserialize, Serialize};

macro_rules! leaves {
    ($($(#[$doc:meta])* $variant:ident = ($number:expr, $name:literal, $cost:expr, $modelled:expr);)*) => {
        /// A SEAMCALL leaf of the TDX module or the P-SEAMLDR.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Leaf {
            $( $(#[$doc])* #[doc(alias = $name)] $variant, )*
        }

        impl Leaf {
            /// Every leaf, in leaf-number order.
            pub const ALL: &'static [Leaf] = &[$(Leaf::$variant),*];

            /// RAX as Linux passes it: the leaf number (P-SEAMLDR leaves have bit 63 set).
            ///
            /// Inline: the host marks, counts and dispatches every SEAMCALL by it.
            #[inline]
            pub const fn rax(self) -> u64 {
                match self { $(Leaf::$variant => $number),* }
            }

            /// The name as spec/constants.md writes it, e.g. `TDH.PHYMEM.PAMT.ADD`.
            pub const fn name(self) -> &'static str {
                match self { $(Leaf::$variant => $name),* }
            }

            /// Default cost in cycles (spec/calibration.md §2.1) of a call that gets past its locks.
            pub const fn default_cost_cycles(self) -> u64 {
                match self { $(Leaf::$variant => $cost),* }
            }

            /// Whether this version of the model implements the leaf (others are refused
            /// by the scenario loader before a run starts).
            pub const fn is_modelled(self) -> bool {
                match self { $(Leaf::$variant => $modelled),* }
            }
        }
    };
}

leaves! {
    /// Entry and exit together; the guest's run time comes on top (calibration §2.1).
    VpEnter = (0, "TDH.VP.ENTER", 10_000, true);
    MngAddcx = (1, "TDH.MNG.ADDCX", 6_000, false);
    MemPageAdd = (2, "TDH.MEM.PAGE.ADD", 20_000, true);
    MemSeptAdd = (3, "TDH.MEM.SEPT.ADD", 6_000, true);
    VpAddcx = (4, "TDH.VP.ADDCX", 6_000, true);
    MemPageRelocate = (5, "TDH.MEM.PAGE.RELOCATE", 6_000, false);
    MemPageAug = (6, "TDH.MEM.PAGE.AUG", 6_000, true);
    MemRangeBlock = (7, "TDH.MEM.RANGE.BLOCK", 4_000, true);
    MngKeyConfig = (8, "TDH.MNG.KEY.CONFIG", 6_000, true);
    MngCreate = (9, "TDH.MNG.CREATE", 6_000, true);
    VpCreate = (10, "TDH.VP.CREATE", 6_000, true);
    MngRd = (11, "TDH.MNG.RD", 2_500, false);
    MemRd = (12, "TDH.MEM.RD", 2_500, false);
    MngWr = (13, "TDH.MNG.WR", 2_500, false);
    MemWr = (14, "TDH.MEM.WR", 2_500, false);
    MemPageDemote = (15, "TDH.MEM.PAGE.DEMOTE", 15_000, false);
    MrExtend = (16, "TDH.MR.EXTEND", 10_000, false);
    MrFinalize = (17, "TDH.MR.FINALIZE", 10_000, true);
    VpFlush = (18, "TDH.VP.FLUSH", 4_000, true);
    MngVpflushdone = (19, "TDH.MNG.VPFLUSHDONE", 4_000, true);
    MngKeyFreeid = (20, "TDH.MNG.KEY.FREEID", 4_000, true);
    MngInit = (21, "TDH.MNG.INIT", 20_000, true);
    VpInit = (22, "TDH.VP.INIT", 10_000, true);
    MemPagePromote = (23, "TDH.MEM.PAGE.PROMOTE", 15_000, false);
    PhymemPageRdmd = (24, "TDH.PHYMEM.PAGE.RDMD", 2_500, false);
    MemSeptRd = (25, "TDH.MEM.SEPT.RD", 2_500, false);
    VpRd = (26, "TDH.VP.RD", 2_500, false);
    MngKeyReclaimid = (27, "TDH.MNG.KEY.RECLAIMID", 2_500, false);
    PhymemPageReclaim = (28, "TDH.PHYMEM.PAGE.RECLAIM", 5_000, true);
    MemPageRemove = (29, "TDH.MEM.PAGE.REMOVE", 5_000, true);
    MemSeptRemove = (30, "TDH.MEM.SEPT.REMOVE", 5_000, false);
    SysKeyConfig = (31, "TDH.SYS.KEY.CONFIG", 100_000, true);
    SysInfo = (32, "TDH.SYS.INFO", 5_000, false);
    SysInit = (33, "TDH.SYS.INIT", 200_000, true);
    SysRd = (34, "TDH.SYS.RD", 2_500, true);
    SysLpInit = (35, "TDH.SYS.LP.INIT", 50_000, true);
    SysTdmrInit = (36, "TDH.SYS.TDMR.INIT", 15_400, true);
    SysRdall = (37, "TDH.SYS.RDALL", 5_000, false);
    MemTrack = (38, "TDH.MEM.TRACK", 3_000, true);
    MemRangeUnblock = (39, "TDH.MEM.RANGE.UNBLOCK", 4_000, false);
    /// One call: the share of a package's write-back it does before it sees a pending
    /// interrupt ([`crate::ModuleConfig::cache_wb_calls`]).
    PhymemCacheWb = (40, "TDH.PHYMEM.CACHE.WB", 50_000, true);
    PhymemPageWbinvd = (41, "TDH.PHYMEM.PAGE.WBINVD", 4_000, true);
    MemSeptWr = (42, "TDH.MEM.SEPT.WR", 2_500, false);
    VpWr = (43, "TDH.VP.WR", 2_500, false);
    SysLpShutdown = (44, "TDH.SYS.LP.SHUTDOWN", 5_000, false);
    SysConfig = (45, "TDH.SYS.CONFIG", 100_000, true);
    ServtdBind = (48, "TDH.SERVTD.BIND", 10_000, false);
    ServtdPrebind = (49, "TDH.SERVTD.PREBIND", 10_000, false);
    SysShutdown = (52, "TDH.SYS.SHUTDOWN", 1_000_000, true);
    SysUpdate = (53, "TDH.SYS.UPDATE", 1_000_000, true);
    /// Give a 2MB range its DPAMT page pair.
    PhymemPamtAdd = (58, "TDH.PHYMEM.PAMT.ADD", 12_000, true);
    /// Take a 2MB range's DPAMT page pair back.
    PhymemPamtRemove = (59, "TDH.PHYMEM.PAMT.REMOVE", 8_000, true);
    SysDisable = (69, "TDH.SYS.DISABLE", 1_000_000, false);
    SeamldrInfo = (0x8000_0000_0000_0000, "SEAMLDR.INFO", 5_000, true);
    /// Non-last LP cost; the last LP's call costs [`seamldr_install_last_cost_cycles`].
    SeamldrInstall = (0x8000_0000_0000_0001, "SEAMLDR.INSTALL", 50_000, true);
    SeamldrShutdown = (0x8000_0000_0000_0002, "SEAMLDR.SHUTDOWN", 5_000, false);
    SeamldrSeaminfo = (0x8000_0000_0000_0003, "SEAMLDR.SEAMINFO", 5_000, false);
    SeamldrCleanup = (0x8000_0000_0000_0004, "SEAMLDR.CLEANUP", 5_000, false);
}

/// SEAM entry plus exit with no leaf work (calibration §2.1).
pub const SEAMCALL_TRANSITION_CYCLES: u64 = 2_000;
/// One uncontended try-lock attempt inside the module (calibration §2.1).
pub const TRY_LOCK_CYCLES: u64 = 50;

/// The last LP's SEAMLDR.INSTALL, which verifies and loads the new image (calibration §2.1).
/// [`crate::Ticket::cost_override`] carries it for that one call.
pub const fn seamldr_install_last_cost_cycles() -> u64 {
    20_000_000
}

impl Leaf {
    /// Looks a leaf up by its name (`TDH.MEM.PAGE.AUG`), also accepting `TDH_MEM_PAGE_AUG`.
    pub fn from_name(name: &str) -> Option<Leaf> {
        let dotted = name.replace('_', ".");
        Leaf::ALL.iter().copied().find(|leaf| leaf.name() == dotted)
    }

    /// P-SEAMLDR leaves have RAX bit 63 set.
    #[inline]
    pub const fn is_seamldr(self) -> bool {
        self.rax() >> 63 == 1
    }

    /// The leaves the module accepts while it is not SYS_READY (spec §3 step 6); the
    /// others answer TDX_SYS_NOT_READY.
    pub const fn is_accepted_before_ready(self) -> bool {
        matches!(
            self,
            Leaf::SysInfo
                | Leaf::SysRd
                | Leaf::SysRdall
                | Leaf::SysInit
                | Leaf::SysLpInit
                | Leaf::SysConfig
                | Leaf::SysKeyConfig
                | Leaf::SysTdmrInit
                | Leaf::SysLpShutdown
                | Leaf::SysUpdate
        )
    }

    /// The leaves an LP may call before its TDH.SYS.LP.INIT (spec §3 step 7).
    pub const fn is_allowed_before_lp_init(self) -> bool {
        matches!(self, Leaf::SysInit | Leaf::SysLpInit | Leaf::SysInfo)
    }
}

impl std::fmt::Display for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        assert_eq!(Leaf::from_name("TDH.PHYMEM.PAMT.ADD"), Some(Leaf::PhymemPamtAdd));
        assert_eq!(Leaf::from_name("TDH_PHYMEM_PAMT_REMOVE"), Some(Leaf::PhymemPamtRemove));
        assert_eq!(Leaf::PhymemPamtAdd.rax(), 58);
        assert_eq!(Leaf::MemPageRemove.rax(), 29);
        assert!(Leaf::SeamldrInstall.is_seamldr());
        assert_eq!(Leaf::from_name("TDH.NOPE"), None);
        for leaf in Leaf::ALL {
            assert_eq!(Leaf::from_name(leaf.name()), Some(*leaf), "{leaf}");
        }
    }
}
