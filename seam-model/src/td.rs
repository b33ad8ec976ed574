//! The TD state the modelled leaves need: the TD-wide locks, the TLB epoch and the
//! secure-EPT leaf entries (spec/seam-module.md §1, §2.3).
//!
//! Only 4KB leaf entries are modelled; the S-EPT's non-leaf pages (TDH.MEM.SEPT.ADD) are
//! not. Of the TD's control pages only the TDR (TDH.MNG.CREATE) and the TDVPRs
//! (TDH.VP.CREATE) are; TDCX pages, HKIDs and measurements are not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Hpa;
use crate::lock::{Caller, HpBusy, SharexHp};

/// The state of a secure-EPT leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeptState {
    /// No page mapped. Entries that are free and carry no lock or HP bit are absent
    /// from [`Td::sept`].
    Free,
    /// PAGE.AUG mapped a page; the guest has not accepted it yet.
    Pending,
    /// The guest accepted the page (TDG.MEM.PAGE.ACCEPT, not modelled yet).
    Mapped,
    /// RANGE.BLOCK cut the guest's access; PAGE.REMOVE may take the page once tracked.
    /// A blocked PENDING entry also lands here: nothing modelled tells them apart.
    Blocked,
}

/// A secure-EPT leaf entry for one 4KB GPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeptEntry {
    pub state: SeptState,
    /// The mapped page; meaningless while `Free`.
    pub hpa: Hpa,
    /// `td_epoch` when RANGE.BLOCK blocked the entry.
    pub blocked_epoch: u64,
    /// The TDEL bit (bit 11): a leaf holds this entry's lock.
    pub locked: bool,
    /// The HP bit (bit 52): a host lost this entry's lock and claims it next.
    pub host_priority: bool,
}

impl SeptEntry {
    pub const FREE: SeptEntry = SeptEntry {
        state: SeptState::Free,
        hpa: Hpa(0),
        blocked_epoch: 0,
        locked: false,
        host_priority: false,
    };
}

/// The TD's operational state (TDCS `op_state`), as far as the build goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OpState {
    /// TDH.MNG.CREATE made the TD; TDH.MNG.INIT has not run.
    Uninitialized,
    /// TDH.MNG.INIT ran: the TD build is in progress. A build is compatibility-sensitive:
    /// SYS.SHUTDOWN with AVOID_COMPAT_SENSITIVE refuses to start an update now.
    Initialized,
    /// TDH.MR.FINALIZE ended the build; the TD can run.
    Runnable,
}

/// One TD, as far as the modelled leaves see it.
#[derive(Clone, Debug)]
pub struct Td {
    pub tdr_lock: SharexHp,
    /// The TDCS lock that SEPT-using leaves take shared (spec §6, "TDCS sh (hp)").
    pub tdcs_lock: SharexHp,
    /// `secure_ept_lock`, operand SEPT (0x92).
    #[doc(alias = "secure_ept_lock")]
    pub sept_lock: SharexHp,
    /// Operand TD_EPOCH (0xA9).
    pub epoch_lock: SharexHp,
    /// Protected by `epoch_lock`: TRACK bumps it under the lock held exclusive.
    pub td_epoch: u64,
    /// Leaf entries by 4KB-aligned GPA; absent means FREE with no lock and no HP bit.
    /// Protected by `sept_lock` (exclusive) or, for one entry, by that entry's TDEL bit.
    pub sept: BTreeMap<u64, SeptEntry>,
    /// Protected by `tdr_lock`: MNG.INIT and MR.FINALIZE change it with the lock exclusive.
    pub op_state: OpState,
    /// The TDR page, for a TD made by TDH.MNG.CREATE (`None` for [`crate::Module::create_td`]).
    pub tdr: Option<Hpa>,
    /// TDVPR pages given by TDH.VP.CREATE, in creation order.
    pub tdvprs: Vec<Hpa>,
    /// Packages whose key TDH.MNG.KEY.CONFIG has programmed for this TD's HKID.
    /// Protected by `tdr_lock` (KEY.CONFIG takes it exclusive).
    pub key_packages: std::collections::BTreeSet<u32>,
    /// False for a module without host priority: a losing host never sets HP.
    host_priority: bool,
}

impl Td {
    /// A runnable TD with no control pages: the shortcut of [`crate::Module::create_td`].
    pub fn new(host_priority: bool) -> Td {
        let lock = if host_priority { SharexHp::new() } else { SharexHp::without_host_priority() };
        Td {
            tdr_lock: lock,
            tdcs_lock: lock,
            sept_lock: lock,
            epoch_lock: lock,
            td_epoch: 0,
            sept: BTreeMap::new(),
            op_state: OpState::Runnable,
            tdr: None,
            tdvprs: Vec::new(),
            key_packages: std::collections::BTreeSet::new(),
            host_priority,
        }
    }

    /// A TD that TDH.MNG.CREATE just made on `tdr`: not yet initialised.
    pub fn created(host_priority: bool, tdr: Hpa) -> Td {
        Td { op_state: OpState::Uninitialized, tdr: Some(tdr), ..Td::new(host_priority) }
    }

    /// Between TDH.MNG.INIT and TDH.MR.FINALIZE (spec §9, "compatibility-sensitive").
    pub fn is_building(&self) -> bool {
        self.op_state == OpState::Initialized
    }

    /// The entry for `gpa`, FREE if absent.
    pub fn entry(&self, gpa: u64) -> SeptEntry {
        self.sept.get(&gpa).copied().unwrap_or(SeptEntry::FREE)
    }

    /// Takes an entry's TDEL bit (spec §2.3). A host that loses sets the entry's HP bit;
    /// a host that wins clears it; a guest that finds HP set backs off.
    pub fn try_lock_entry(&mut self, gpa: u64, caller: Caller) -> Result<(), HpBusy> {
        let host_priority = self.host_priority;
        let entry = self.sept.entry(gpa).or_insert(SeptEntry::FREE);
        let result = if entry.locked {
            if caller == Caller::Host && host_priority {
                entry.host_priority = true;
            }
            Err(HpBusy::Busy)
        } else if caller == Caller::Guest && entry.host_priority {
            Err(HpBusy::BusyHostPriority)
        } else {
            entry.locked = true;
            if caller == Caller::Host {
                entry.host_priority = false;
            }
            Ok(())
        };
        self.forget_if_blank(gpa);
        result
    }

    pub fn release_entry(&mut self, gpa: u64) {
        let entry = self.sept.get_mut(&gpa).expect("td: releasing the lock of an absent entry");
        assert!(entry.locked, "td: releasing an entry lock that is not held");
        entry.locked = false;
        self.forget_if_blank(gpa);
    }

    /// Locks held right now, counting each reader (for tests and checkers).
    pub fn held_lock_count(&self) -> usize {
        let entries = self.sept.values().filter(|entry| entry.locked).count();
        self.tdr_lock.holders()
            + self.tdcs_lock.holders()
            + self.sept_lock.holders()
            + self.epoch_lock.holders()
            + entries
    }

    /// Drops a FREE entry that carries nothing, so absent keeps meaning FREE.
    fn forget_if_blank(&mut self, gpa: u64) {
        if self.sept.get(&gpa) == Some(&SeptEntry::FREE) {
            self.sept.remove(&gpa);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lock_host_loses_then_claims_priority() {
        let mut td = Td::new(true);
        assert_eq!(td.try_lock_entry(0x1000, Caller::Host), Ok(()));
        assert!(td.entry(0x1000).locked);
        assert_eq!(td.try_lock_entry(0x1000, Caller::Host), Err(HpBusy::Busy));
        assert!(td.entry(0x1000).host_priority);
        td.release_entry(0x1000);
        assert_eq!(td.try_lock_entry(0x1000, Caller::Guest), Err(HpBusy::BusyHostPriority));
        assert_eq!(td.try_lock_entry(0x1000, Caller::Host), Ok(()));
        assert!(!td.entry(0x1000).host_priority, "a host success clears HP");
        td.release_entry(0x1000);
        assert!(td.sept.is_empty(), "a free entry with no lock and no HP is absent");
        assert_eq!(td.held_lock_count(), 0);
    }

    #[test]
    fn entry_lock_guest_loses_without_setting_hp() {
        let mut td = Td::new(true);
        assert_eq!(td.try_lock_entry(0x2000, Caller::Guest), Ok(()));
        assert_eq!(td.try_lock_entry(0x2000, Caller::Guest), Err(HpBusy::Busy));
        assert!(!td.entry(0x2000).host_priority);
        assert_eq!(td.held_lock_count(), 1);
    }

    #[test]
    fn entry_lock_without_host_priority_never_sets_hp() {
        let mut td = Td::new(false);
        assert_eq!(td.try_lock_entry(0x1000, Caller::Guest), Ok(()));
        assert_eq!(td.try_lock_entry(0x1000, Caller::Host), Err(HpBusy::Busy));
        assert!(!td.entry(0x1000).host_priority);
        assert!(!td.sept_lock.host_priority());
    }

    #[test]
    fn absent_entries_read_as_free() {
        let td = Td::new(true);
        assert_eq!(td.entry(0x5000), SeptEntry::FREE);
        assert_eq!(td.entry(0x5000).state, SeptState::Free);
    }
}
