//! The module's try-locks (spec/seam-module.md §2): `sharex` and `sharex_hp`.
//!
//! Nothing here ever waits. Every operation either succeeds at once or reports failure,
//! and the leaf that called it undoes what it took and returns a BUSY status.
//! Releasing a lock that is not held is our bug and panics.

use serde::{Deserialize, Serialize};

use crate::status::{TDX_OPERAND_BUSY, TDX_OPERAND_BUSY_HOST_PRIORITY, TdxStatus};

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl std::fmt::Display for LockMode {
    /// `sh` / `ex`, as the spec's lock tables write them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "sh",
            LockMode::Exclusive => "ex",
        })
    }
}

/// Who asks for a `sharex_hp` lock: a SEAMCALL from the host, or a TDCALL from a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Caller {
    Host,
    Guest,
}

/// Why a `sharex_hp` try-lock failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HpBusy {
    /// The lock is held in a conflicting mode: `TDX_OPERAND_BUSY`.
    Busy,
    /// A guest met the host's claim: `TDX_OPERAND_BUSY_HOST_PRIORITY`.
    BusyHostPriority,
}

impl HpBusy {
    /// The status a leaf returns for this failure (the operand id is added by the leaf).
    pub const fn status(self) -> TdxStatus {
        match self {
            HpBusy::Busy => TDX_OPERAND_BUSY,
            HpBusy::BusyHostPriority => TDX_OPERAND_BUSY_HOST_PRIORITY,
        }
    }
}

/// `sharex`: a plain shared/exclusive try-lock (spec §2.1).
///
/// The module packs it in 16 bits (bit 0 exclusive, bits 15:1 readers); we keep the two
/// fields apart for clarity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharex {
    exclusive: bool,
    // invariant: readers == 0 whenever exclusive is set.
    readers: u16,
}

impl Sharex {
    pub const fn new() -> Sharex {
        Sharex { exclusive: false, readers: 0 }
    }

    /// Adds a reader unless a writer holds the lock.
    pub fn acquire_shared(&mut self) -> bool {
        if self.exclusive {
            return false;
        }
        self.readers = self.readers.checked_add(1).expect("sharex: reader count overflow");
        true
    }

    /// Takes the lock exclusive if nobody holds it at all.
    pub fn acquire_exclusive(&mut self) -> bool {
        if !self.is_free() {
            return false;
        }
        self.exclusive = true;
        true
    }

    /// Turns the caller's shared hold into an exclusive one; fails if anyone else reads.
    /// On failure the caller still holds its shared lock.
    pub fn promote(&mut self) -> bool {
        assert!(self.readers >= 1 && !self.exclusive, "sharex: promote without a shared hold");
        if self.readers != 1 {
            return false;
        }
        self.readers = 0;
        self.exclusive = true;
        true
    }

    pub fn release_shared(&mut self) {
        assert!(self.readers >= 1, "sharex: release_shared without a reader");
        self.readers -= 1;
    }

    pub fn release_exclusive(&mut self) {
        assert!(self.exclusive, "sharex: release_exclusive without the writer");
        self.exclusive = false;
    }

    pub fn release(&mut self, mode: LockMode) {
        match mode {
            LockMode::Shared => self.release_shared(),
            LockMode::Exclusive => self.release_exclusive(),
        }
    }

    pub const fn is_free(&self) -> bool {
        !self.exclusive && self.readers == 0
    }

    pub const fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    pub const fn readers(&self) -> u16 {
        self.readers
    }

    /// Holders right now: the readers, or 1 for a writer.
    pub const fn holders(&self) -> usize {
        self.readers as usize + self.exclusive as usize
    }
}

/// `sharex_hp`: shared/exclusive try-lock with a host-priority (HP) bit (spec §2.2).
///
/// A host that loses sets HP; while HP is set a guest cannot take the lock, so the host's
/// retry wins. A host success clears HP; releasing keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharexHp {
    /// The exclusive bit and reader count: a plain `sharex` word.
    word: Sharex,
    host_priority: bool,
    /// False for a module without host priority: a losing host never sets HP.
    priority_enabled: bool,
}

impl Default for SharexHp {
    fn default() -> SharexHp {
        SharexHp::new()
    }
}

impl SharexHp {
    pub const fn new() -> SharexHp {
        SharexHp { word: Sharex::new(), host_priority: false, priority_enabled: true }
    }

    /// A lock of a module that has no host priority: it then behaves as a plain `sharex`.
    pub const fn without_host_priority() -> SharexHp {
        SharexHp { priority_enabled: false, ..SharexHp::new() }
    }

    /// Table rows "acquire shared" of spec §2.2.
    pub fn acquire_shared(&mut self, caller: Caller) -> Result<(), HpBusy> {
        if self.word.is_exclusive() {
            // A writer is the reason for the failure, whoever asks.
            self.host_lost(caller);
            return Err(HpBusy::Busy);
        }
        if caller == Caller::Guest && self.host_priority {
            return Err(HpBusy::BusyHostPriority);
        }
        assert!(self.word.acquire_shared(), "sharex_hp: no writer, so the read is taken");
        self.host_won(caller);
        Ok(())
    }

    /// Table rows "acquire exclusive" of spec §2.2.
    pub fn acquire_exclusive(&mut self, caller: Caller) -> Result<(), HpBusy> {
        if !self.word.is_free() {
            self.host_lost(caller);
            return Err(HpBusy::Busy);
        }
        if caller == Caller::Guest && self.host_priority {
            return Err(HpBusy::BusyHostPriority);
        }
        assert!(self.word.acquire_exclusive(), "sharex_hp: a free lock is taken");
        self.host_won(caller);
        Ok(())
    }

    /// Table rows "promote" of spec §2.2. On failure the caller still holds its shared lock.
    ///
    /// [I] The table says "any caller, only reader → success"; we let a guest promote even
    /// with HP set (it already holds the lock), and clear HP only when a host wins.
    pub fn promote(&mut self, caller: Caller) -> Result<(), HpBusy> {
        if !self.word.promote() {
            self.host_lost(caller);
            return Err(HpBusy::Busy);
        }
        self.host_won(caller);
        Ok(())
    }

    pub fn release_shared(&mut self) {
        self.word.release_shared();
    }

    /// Clears the writer and keeps HP (spec §2.2, last row).
    pub fn release_exclusive(&mut self) {
        self.word.release_exclusive();
    }

    pub fn release(&mut self, mode: LockMode) {
        self.word.release(mode);
    }

    pub const fn host_priority(&self) -> bool {
        self.host_priority
    }

    pub const fn is_exclusive(&self) -> bool {
        self.word.is_exclusive()
    }

    pub const fn readers(&self) -> u16 {
        self.word.readers()
    }

    /// Holders right now: the readers, or 1 for a writer.
    pub const fn holders(&self) -> usize {
        self.word.holders()
    }

    fn host_lost(&mut self, caller: Caller) {
        if caller == Caller::Host && self.priority_enabled {
            self.host_priority = true;
        }
    }

    fn host_won(&mut self, caller: Caller) {
        if caller == Caller::Host {
            self.host_priority = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharex_readers_share_and_writer_excludes() {
        let mut lock = Sharex::new();
        assert!(lock.acquire_shared());
        assert!(lock.acquire_shared());
        assert_eq!(lock.readers(), 2);
        assert!(!lock.acquire_exclusive(), "readers block a writer");
        lock.release_shared();
        lock.release_shared();
        assert!(lock.is_free());
        assert!(lock.acquire_exclusive());
        assert!(!lock.acquire_shared(), "a writer blocks readers");
        assert_eq!(lock.readers(), 0, "a failed shared acquire takes its reader back");
        assert!(!lock.acquire_exclusive(), "a writer blocks a writer");
        lock.release_exclusive();
        assert!(lock.is_free());
    }

    #[test]
    fn sharex_promote_needs_the_only_reader() {
        let mut lock = Sharex::new();
        assert!(lock.acquire_shared());
        assert!(lock.acquire_shared());
        assert!(!lock.promote());
        assert_eq!(lock.readers(), 2, "a failed promote keeps the caller's shared hold");
        lock.release_shared();
        assert!(lock.promote());
        assert!(lock.is_exclusive());
        assert_eq!(lock.holders(), 1);
        lock.release(LockMode::Exclusive);
        assert!(lock.is_free());
    }

    #[test]
    #[should_panic(expected = "release_shared without a reader")]
    fn sharex_release_of_a_free_lock_is_our_bug() {
        Sharex::new().release_shared();
    }

    // One test per row of the spec §2.2 table, in table order.

    #[test]
    fn hp_shared_host_without_writer_succeeds_and_clears_hp() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_exclusive(Caller::Host), Ok(()));
        assert_eq!(lock.acquire_shared(Caller::Host), Err(HpBusy::Busy));
        lock.release_exclusive();
        assert!(lock.host_priority());
        assert_eq!(lock.acquire_shared(Caller::Host), Ok(()));
        assert!(!lock.host_priority());
        assert_eq!(lock.readers(), 1);
    }

    #[test]
    fn hp_shared_host_against_writer_sets_hp_and_fails_busy() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_exclusive(Caller::Guest), Ok(()));
        assert_eq!(lock.acquire_shared(Caller::Host), Err(HpBusy::Busy));
        assert!(lock.host_priority());
        assert_eq!(lock.readers(), 0);
        assert!(lock.is_exclusive());
    }

    #[test]
    fn hp_shared_guest_with_hp_set_fails_busy_host_priority() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_shared(Caller::Guest), Ok(()));
        assert_eq!(lock.acquire_exclusive(Caller::Host), Err(HpBusy::Busy));
        assert!(lock.host_priority());
        assert_eq!(lock.acquire_shared(Caller::Guest), Err(HpBusy::BusyHostPriority));
        assert_eq!(lock.readers(), 1, "the guest backed its reader out");
        assert_eq!(HpBusy::BusyHostPriority.status(), TDX_OPERAND_BUSY_HOST_PRIORITY);
    }

    #[test]
    fn hp_shared_guest_against_writer_fails_busy() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_exclusive(Caller::Host), Ok(()));
        assert_eq!(lock.acquire_shared(Caller::Guest), Err(HpBusy::Busy));
        assert!(!lock.host_priority(), "a losing guest never sets HP");
        assert_eq!(HpBusy::Busy.status(), TDX_OPERAND_BUSY);
    }

    #[test]
    fn hp_exclusive_any_on_free_lock_succeeds() {
        for caller in [Caller::Host, Caller::Guest] {
            let mut lock = SharexHp::new();
            assert_eq!(lock.acquire_exclusive(caller), Ok(()));
            assert!(lock.is_exclusive());
            assert_eq!(lock.holders(), 1);
        }
    }

    #[test]
    fn hp_exclusive_host_with_only_hp_succeeds_and_clears_hp() {
        let mut lock = hp_set_and_free();
        assert_eq!(lock.acquire_exclusive(Caller::Host), Ok(()));
        assert!(!lock.host_priority());
        assert!(lock.is_exclusive());
    }

    #[test]
    fn hp_exclusive_guest_with_only_hp_fails_busy_host_priority() {
        let mut lock = hp_set_and_free();
        assert_eq!(lock.acquire_exclusive(Caller::Guest), Err(HpBusy::BusyHostPriority));
        assert!(!lock.is_exclusive());
        assert!(lock.host_priority());
    }

    #[test]
    fn hp_exclusive_host_on_held_lock_sets_hp_and_fails_busy() {
        let mut readers = SharexHp::new();
        assert_eq!(readers.acquire_shared(Caller::Guest), Ok(()));
        assert_eq!(readers.acquire_exclusive(Caller::Host), Err(HpBusy::Busy));
        assert!(readers.host_priority());
        let mut writer = SharexHp::new();
        assert_eq!(writer.acquire_exclusive(Caller::Guest), Ok(()));
        assert_eq!(writer.acquire_exclusive(Caller::Host), Err(HpBusy::Busy));
        assert!(writer.host_priority());
    }

    #[test]
    fn hp_exclusive_guest_on_held_lock_fails_busy() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_shared(Caller::Host), Ok(()));
        assert_eq!(lock.acquire_exclusive(Caller::Guest), Err(HpBusy::Busy));
        assert!(!lock.host_priority());
        assert_eq!(lock.readers(), 1);
    }

    #[test]
    fn hp_promote_any_as_only_reader_succeeds() {
        for caller in [Caller::Host, Caller::Guest] {
            let mut lock = SharexHp::new();
            assert_eq!(lock.acquire_shared(caller), Ok(()));
            assert_eq!(lock.promote(caller), Ok(()));
            assert!(lock.is_exclusive());
            assert_eq!(lock.readers(), 0);
        }
    }

    #[test]
    fn hp_promote_host_with_other_readers_sets_hp_and_fails_busy() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_shared(Caller::Host), Ok(()));
        assert_eq!(lock.acquire_shared(Caller::Guest), Ok(()));
        assert_eq!(lock.promote(Caller::Host), Err(HpBusy::Busy));
        assert!(lock.host_priority());
        assert_eq!(lock.readers(), 2, "a failed promote keeps the shared hold");
    }

    #[test]
    fn hp_release_exclusive_keeps_hp() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_exclusive(Caller::Guest), Ok(()));
        assert_eq!(lock.acquire_exclusive(Caller::Host), Err(HpBusy::Busy));
        lock.release_exclusive();
        assert!(lock.host_priority());
        assert_eq!(lock.holders(), 0);
    }

    #[test]
    fn hp_after_a_host_loses_the_host_retry_beats_the_guest() {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_exclusive(Caller::Guest), Ok(()));
        assert_eq!(lock.acquire_exclusive(Caller::Host), Err(HpBusy::Busy));
        lock.release_exclusive();
        assert_eq!(lock.acquire_shared(Caller::Guest), Err(HpBusy::BusyHostPriority));
        assert_eq!(lock.acquire_exclusive(Caller::Host), Ok(()));
    }

    #[test]
    fn hp_disabled_never_sets_hp() {
        let mut lock = SharexHp::without_host_priority();
        assert_eq!(lock.acquire_exclusive(Caller::Guest), Ok(()));
        assert_eq!(lock.acquire_exclusive(Caller::Host), Err(HpBusy::Busy));
        assert!(!lock.host_priority());
        lock.release_exclusive();
        assert_eq!(lock.acquire_shared(Caller::Guest), Ok(()));
    }

    /// A free lock whose HP bit is set: a host lost against a writer that has since left.
    fn hp_set_and_free() -> SharexHp {
        let mut lock = SharexHp::new();
        assert_eq!(lock.acquire_exclusive(Caller::Guest), Ok(()));
        assert_eq!(lock.acquire_exclusive(Caller::Host), Err(HpBusy::Busy));
        lock.release_exclusive();
        assert!(lock.host_priority());
        assert_eq!(lock.holders(), 0);
        lock
    }
}
