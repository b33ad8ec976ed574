//! Dynamic PAMT: `tdx_pamt_get()` / `tdx_pamt_put()` in every design of
//! spec/host-algorithms.md §3.

use serde::{Deserialize, Serialize};

/// The DPAMT locking designs published or discussed on the lists (`host.dpamt`).
///
/// An enum, not a trait: the set is closed (it is the list history), and each design
/// differs from the others in a few steps that are matched where they differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DpamtDesign {
    /// D1, RFC v1 (2025-05): no kernel refcount; ADD on MISSING_PAMT_PAGE_PAIR, REMOVE on
    /// the zero-count hint.
    Hint,
    /// D2, v2–v4 (2025-06..11): global `pamt_lock` + refcount, lock-free fast paths,
    /// the put decrements outside the lock.
    GlobalLockFastpath,
    /// D3, v6 patch 05 (2026-05-25): every get and put under the global `dpamt_lock`.
    GlobalLock,
    /// D4, v6 final: fast paths, locked transitions, `atomic_dec_and_lock` in put.
    #[default]
    DecAndLock,
    /// D5, 2025-09-26 proposal: per-2MB rwlocks mirroring the module's locks, taken in
    /// the module's order (target, then the pair's ranges).
    Per2mRwlock,
    /// D5': per-2MB rwlocks taken in PFN order.
    Per2mRwlockPfnOrder,
    /// D6, the "back-pocket" plan of 2025-09-29: global rwlock taken for read, write on BUSY.
    GlobalRwlockFallback,
}

impl DpamtDesign {
    pub const ALL: &'static [DpamtDesign] = &[
        DpamtDesign::Hint,
        DpamtDesign::GlobalLockFastpath,
        DpamtDesign::GlobalLock,
        DpamtDesign::DecAndLock,
        DpamtDesign::Per2mRwlock,
        DpamtDesign::Per2mRwlockPfnOrder,
        DpamtDesign::GlobalRwlockFallback,
    ];

    /// The scenario name (`host.dpamt`).
    pub const fn name(self) -> &'static str {
        match self {
            DpamtDesign::Hint => "hint",
            DpamtDesign::GlobalLockFastpath => "global-lock-fastpath",
            DpamtDesign::GlobalLock => "global-lock",
            DpamtDesign::DecAndLock => "dec-and-lock",
            DpamtDesign::Per2mRwlock => "per-2m-rwlock",
            DpamtDesign::Per2mRwlockPfnOrder => "per-2m-rwlock-pfn-order",
            DpamtDesign::GlobalRwlockFallback => "global-rwlock-fallback",
        }
    }

    /// Where the design comes from, for `tdxsim list designs`.
    pub const fn source(self) -> &'static str {
        match self {
            DpamtDesign::Hint => "D1: hint-based lazy PAMT, RFC v1 (Kirill A. Shutemov, 2025-05-02)",
            DpamtDesign::GlobalLockFastpath => {
                "D2: global pamt_lock + refcount with lock-free fast paths, DPAMT v2-v4 (2025-06..11)"
            }
            DpamtDesign::GlobalLock => {
                "D3: fully locked get/put, DPAMT v6 05/11 (Rick Edgecombe, 2026-05-25)"
            }
            DpamtDesign::DecAndLock => "D4: atomic_dec_and_lock put, DPAMT v6 final (2026-05-25)",
            DpamtDesign::Per2mRwlock => {
                "D5: per-2MB rwlocks in the module's order (Rick Edgecombe, 2025-09-26; AB-BA: Yan Zhao, 2025-09-28)"
            }
            DpamtDesign::Per2mRwlockPfnOrder => "D5': per-2MB rwlocks in PFN order (2025-09-29)",
            DpamtDesign::GlobalRwlockFallback => {
                "D6: global rwlock read, write on BUSY (Rick Edgecombe, 2025-09-29; details inferred)"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<DpamtDesign> {
        DpamtDesign::ALL.iter().copied().find(|design| design.name() == name)
    }
}
