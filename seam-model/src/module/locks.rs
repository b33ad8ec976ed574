//! How a leaf takes its try-locks, one attempt at a time (spec §2).
//!
//! Each lock is its own atomic operation, a try-lock cost apart from the next, so between
//! two attempts of one leaf a leaf on another LP can take or release a lock. The lock sets
//! are written as straight-line functions (one per leaf, in the module's order, with the
//! state checks the module makes between attempts). To take them one attempt at a time
//! without rewriting them as state machines, each *pass* re-runs the leaf's function from
//! the top: the attempts already made are replayed (their locks are held, so the state
//! checks between them read the same state and take the same path), then one new attempt
//! is made, and the pass stops. With `LeafLocks::Atomic` a single pass makes every attempt.

use super::{HeldLock, Module, ModuleLock};
use crate::lock::{Caller, LockMode, SharexHp};
use crate::pamt::{WalkEnd, WalkTarget};
use crate::status::{TDX_OPERAND_BUSY, TdxStatus, operand};
use crate::td::Td;
use crate::{Hpa, TdId};

/// How a leaf's try-locks meet other LPs' (`module.leaf_locks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LeafLocks {
    /// Each attempt is its own atomic operation, `TRY_LOCK_CYCLES` after the previous one:
    /// two leaves on different LPs can each hold one lock and fail on the other's. What
    /// the hardware does (spec §2).
    #[default]
    Interleaved,
    /// A leaf takes its whole lock set at once at SEAM entry: a simplification.
    Atomic,
}

impl LeafLocks {
    pub const ALL: &'static [LeafLocks] = &[LeafLocks::Interleaved, LeafLocks::Atomic];

    pub const fn name(self) -> &'static str {
        match self {
            LeafLocks::Interleaved => "interleaved",
            LeafLocks::Atomic => "atomic",
        }
    }

    pub fn from_name(name: &str) -> Option<LeafLocks> {
        LeafLocks::ALL.iter().copied().find(|locks| locks.name() == name)
    }
}

/// The locks one leaf holds so far, and where its attempts are.
#[derive(Debug, Default)]
pub(crate) struct LockList {
    /// invariant: every lock here is held by this leaf, in acquisition order. Inline: a
    /// leaf holds a handful, and a SEAMCALL should not allocate.
    pub(crate) held: smallvec::SmallVec<[HeldLock; 8]>,
    /// Attempts made so far, over every pass (a 2MB exclusive walk counts shared + promote).
    pub(crate) try_locks: u32,
    /// Attempts of earlier passes the current pass has still to walk past.
    to_replay: u32,
    /// New attempts the current pass may still make.
    allowance: u32,
}

/// What the next attempt of a pass is.
pub(crate) enum Attempt {
    /// Made in an earlier pass: the lock is held, nothing to do.
    Replay,
    /// A new attempt: try the lock.
    Try,
}

/// Why a lock set stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockStop {
    /// A try-lock failed: the leaf answers this BUSY status.
    Busy(TdxStatus),
    /// A PAMT try-lock failed; the leaf turns it into BUSY with the operand it walked for.
    Contended,
    /// This pass made its attempt; the next comes after a try-lock cost.
    Pause,
}

impl From<TdxStatus> for LockStop {
    fn from(status: TdxStatus) -> LockStop {
        LockStop::Busy(status)
    }
}

impl LockList {
    /// A list whose first pass makes every attempt (`LeafLocks::Atomic`, and tests).
    pub(crate) fn atomic() -> LockList {
        LockList { allowance: u32::MAX, ..LockList::default() }
    }

    /// Starts a pass that may make `allowance` new attempts.
    pub(crate) fn pass(&mut self, allowance: u32) {
        self.to_replay = self.try_locks;
        self.allowance = allowance;
    }

    /// Whether the pass's next `attempts` attempts are all replays; if so the pass walks
    /// past them. A lock set stretch an earlier pass made in full skips them in one step.
    pub(crate) fn replay(&mut self, attempts: u32) -> bool {
        if self.to_replay < attempts {
            return false;
        }
        self.to_replay -= attempts;
        true
    }

    /// Whether the pass has replayed every earlier attempt and made its new ones: its next
    /// attempt, whatever it is, is a `Pause`.
    pub(crate) fn is_paused(&self) -> bool {
        self.to_replay == 0 && self.allowance == 0
    }

    /// The next attempt of this pass, or `Pause` when the pass has made its new ones.
    pub(crate) fn next_attempt(&mut self) -> Result<Attempt, LockStop> {
        if self.to_replay > 0 {
            self.to_replay -= 1;
            return Ok(Attempt::Replay);
        }
        if self.allowance == 0 {
            return Err(LockStop::Pause);
        }
        self.allowance -= 1;
        self.try_locks += 1;
        Ok(Attempt::Try)
    }
}

impl Module {
    /// The PAMT walk of spec §5.2 for `page`; contention is TDX_OPERAND_BUSY with `operand_id`.
    #[inline]
    pub(super) fn walk(
        &mut self,
        page: Hpa,
        target: WalkTarget,
        operand_id: u32,
        list: &mut LockList,
    ) -> Result<WalkEnd, LockStop> {
        self.pamt.walk(page, target, list).map_err(|stop| match stop {
            LockStop::Contended => LockStop::Busy(TDX_OPERAND_BUSY.with_operand(operand_id)),
            other => other,
        })
    }

    /// One host try-lock on a TD lock.
    pub(super) fn lock_td(
        &mut self,
        lock: ModuleLock,
        mode: LockMode,
        operand_id: u32,
        list: &mut LockList,
    ) -> Result<(), LockStop> {
        if let Attempt::Replay = list.next_attempt()? {
            return Ok(());
        }
        let td = self.tds.get_mut(&lock.td().expect("lock_td: a TD lock")).expect("lock_td: TD checked");
        let result = match lock {
            ModuleLock::SeptEntry(_, gpa) => td.sept.try_lock_entry(gpa, Caller::Host),
            ModuleLock::SeptNonLeafEntry(_, level, gpa) => {
                td.sept.try_lock_non_leaf(gpa, level, Caller::Host)
            }
            _ => {
                let sharex = td_sharex(td, lock);
                match mode {
                    LockMode::Shared => sharex.acquire_shared(Caller::Host),
                    LockMode::Exclusive => sharex.acquire_exclusive(Caller::Host),
                }
            }
        };
        match result {
            Ok(()) => {
                list.held.push(HeldLock { lock, mode });
                Ok(())
            }
            Err(busy) => Err(LockStop::Busy(busy.status().with_operand(operand_id))),
        }
    }

    /// A package's TDH.PHYMEM.CACHE.WB try-mutex (spec §2.4): contention is
    /// TDX_OPERAND_BUSY|WBCACHE.
    pub(super) fn lock_wbcache(&mut self, package: u32, list: &mut LockList) -> Result<(), LockStop> {
        if let Attempt::Replay = list.next_attempt()? {
            return Ok(());
        }
        let entry = &mut self.wbt[package as usize];
        if entry.locked {
            return Err(LockStop::Busy(TDX_OPERAND_BUSY.with_operand(operand::WBCACHE)));
        }
        entry.locked = true;
        list.held.push(HeldLock { lock: ModuleLock::Wbcache(package), mode: LockMode::Exclusive });
        Ok(())
    }

    /// A module-wide `sharex` lock: `global_lock` (contention is TDX_SYS_BUSY) or
    /// `kot_lock` (TDX_OPERAND_BUSY|KOT).
    pub(super) fn lock_global(
        &mut self,
        lock: ModuleLock,
        mode: LockMode,
        list: &mut LockList,
    ) -> Result<(), LockStop> {
        if let Attempt::Replay = list.next_attempt()? {
            return Ok(());
        }
        let (sharex, busy) = match lock {
            ModuleLock::Global => (&mut self.global_lock, super::lifecycle::global_lock_busy()),
            ModuleLock::Kot => (&mut self.kot_lock, TDX_OPERAND_BUSY.with_operand(operand::KOT)),
            other => unreachable!("module: {other} is not a module-wide lock"),
        };
        let taken = match mode {
            LockMode::Shared => sharex.acquire_shared(),
            LockMode::Exclusive => sharex.acquire_exclusive(),
        };
        if !taken {
            return Err(LockStop::Busy(busy));
        }
        list.held.push(HeldLock { lock, mode });
        Ok(())
    }

    /// Releases in reverse order of acquisition.
    pub(super) fn release_all(&mut self, locks: &[HeldLock]) {
        for held in locks.iter().rev() {
            match held.lock {
                ModuleLock::Pamt1G(index) => self.pamt.release_1g(index, held.mode),
                ModuleLock::Pamt2M(index) => self.pamt.release_2m(index, held.mode),
                ModuleLock::Pamt4K(pfn) => self.pamt.release_4k(pfn, held.mode),
                ModuleLock::SeptEntry(td, gpa) => self.td_mut(td).sept.release_entry(gpa),
                ModuleLock::SeptNonLeafEntry(td, level, gpa) => {
                    self.td_mut(td).sept.release_non_leaf(gpa, level)
                }
                ModuleLock::EpochRefcount(td, parity) => {
                    let count = &mut self.td_mut(td).epoch_refcount[usize::from(parity)];
                    *count = count.checked_sub(1).expect("module: epoch refcount below 0");
                }
                ModuleLock::Global => self.global_lock.release(held.mode),
                ModuleLock::Kot => self.kot_lock.release(held.mode),
                ModuleLock::Wbcache(package) => {
                    let entry = &mut self.wbt[package as usize];
                    assert!(entry.locked, "module: releasing a free wbcache mutex");
                    entry.locked = false;
                }
                lock @ (ModuleLock::Tdr(_)
                | ModuleLock::Tdcs(_)
                | ModuleLock::SeptTree(_)
                | ModuleLock::Epoch(_)
                | ModuleLock::Tdvpr(..)) => {
                    let td = lock.td().expect("a TD lock");
                    td_sharex(self.td_mut(td), lock).release(held.mode)
                }
            }
        }
    }

    pub(super) fn is_held(&self, held: HeldLock) -> bool {
        let holds = |readers: u16, exclusive: bool| match held.mode {
            LockMode::Shared => readers > 0,
            LockMode::Exclusive => exclusive,
        };
        match held.lock {
            ModuleLock::Pamt1G(_) | ModuleLock::Pamt2M(_) | ModuleLock::Pamt4K(_) => {
                self.pamt.is_held(held.lock, held.mode)
            }
            ModuleLock::SeptEntry(td, gpa) => self.tds[&td].entry(gpa).locked,
            ModuleLock::SeptNonLeafEntry(td, level, gpa) => self.tds[&td].sept.non_leaf_locked(gpa, level),
            ModuleLock::EpochRefcount(td, parity) => self.tds[&td].epoch_refcount[usize::from(parity)] > 0,
            ModuleLock::Global => holds(self.global_lock.readers(), self.global_lock.is_exclusive()),
            ModuleLock::Kot => holds(self.kot_lock.readers(), self.kot_lock.is_exclusive()),
            ModuleLock::Wbcache(package) => self.wbt[package as usize].locked,
            lock @ (ModuleLock::Tdr(td)
            | ModuleLock::Tdcs(td)
            | ModuleLock::SeptTree(td)
            | ModuleLock::Epoch(td)
            | ModuleLock::Tdvpr(td, _)) => {
                let td = &self.tds[&td];
                let sharex = match lock {
                    ModuleLock::Tdr(_) => td.tdr_lock,
                    ModuleLock::Tdcs(_) => td.tdcs_lock,
                    ModuleLock::SeptTree(_) => td.sept_lock,
                    ModuleLock::Tdvpr(_, tdvpr) => td.vcpus[&tdvpr].tdvpr_lock,
                    _ => td.epoch_lock,
                };
                holds(sharex.readers(), sharex.is_exclusive())
            }
        }
    }

    pub(super) fn td_mut(&mut self, td: TdId) -> &mut Td {
        self.tds.get_mut(&td).expect("module: the TD exists")
    }
}

fn td_sharex(td: &mut Td, lock: ModuleLock) -> &mut SharexHp {
    match lock {
        ModuleLock::Tdr(_) => &mut td.tdr_lock,
        ModuleLock::Tdcs(_) => &mut td.tdcs_lock,
        ModuleLock::SeptTree(_) => &mut td.sept_lock,
        ModuleLock::Epoch(_) => &mut td.epoch_lock,
        ModuleLock::Tdvpr(_, tdvpr) => &mut td.vcpu_mut(tdvpr).tdvpr_lock,
        other => unreachable!("module: {other} is not a TD sharex_hp lock"),
    }
}
