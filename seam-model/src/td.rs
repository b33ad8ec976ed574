//! The TD state the modelled leaves need: the TD-wide locks, the key life cycle, the TLB
//! epoch with its per-parity refcounts, the secure EPT ([`crate::sept`]) and the vCPUs
//! (spec/seam-module.md §1, §2).
//!
//! Of the TD's control pages the TDR (TDH.MNG.CREATE), the TDVPRs (TDH.VP.CREATE), their
//! TDCX pages (TDH.VP.ADDCX) and the S-EPT pages (TDH.MEM.SEPT.ADD) are modelled; the TDCS
//! pages (TDH.MNG.ADDCX), measurements and the TD's HKID value are not.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sim_core::CpuId;

pub use crate::sept::{SeptEntry, SeptState};

use crate::Hpa;
use crate::lock::SharexHp;
use crate::pamt::OwnerSlot;
use crate::sept::Sept;

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

/// The TD's key life cycle (TDR `lifecycle_state`, spec §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// TDH.MNG.CREATE assigned the HKID; TDH.MNG.KEY.CONFIG has not programmed it on every
    /// package yet.
    #[doc(alias = "TD_HKID_ASSIGNED")]
    HkidAssigned,
    /// The key is programmed on every package: the TD can be built and run.
    #[doc(alias = "TD_KEYS_CONFIGURED")]
    KeysConfigured,
    /// TDH.MNG.VPFLUSHDONE: no vCPU is associated and none can be; the HKID waits for
    /// TDH.PHYMEM.CACHE.WB on every package (its KOT entry is HKID_FLUSHED).
    #[doc(alias = "TD_BLOCKED")]
    Blocked,
    /// TDH.MNG.KEY.FREEID released the HKID: the TD's pages can be reclaimed.
    #[doc(alias = "TD_TEARDOWN")]
    Teardown,
}

/// A vCPU's state (TDVPS `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VcpuState {
    /// TDH.VP.CREATE made it; TDH.VP.ADDCX adds its TDCX pages, TDH.VP.INIT initialises it.
    #[doc(alias = "VCPU_UNINITIALIZED")]
    Uninitialized,
    /// Initialised, not running.
    #[doc(alias = "VCPU_READY")]
    Ready,
    /// Inside TDH.VP.ENTER: the guest runs on `associated_lp`.
    #[doc(alias = "VCPU_ACTIVE")]
    Active,
}

/// Pages of a vCPU's TDVPS that TDH.VP.INIT needs: the TDVPR and 5 TDCX pages
/// (`MIN_TDVPS_PAGES` of the TDX 1.5 module, a TD without L2 VMs) [V-mod].
pub const TDVPS_PAGES: usize = 6;
/// At most this many TDVPS pages; TDH.VP.ADDCX beyond it is TDX_TDCX_NUM_INCORRECT
/// (`MAX_TDVPS_PAGES`) [V-mod].
pub const MAX_TDVPS_PAGES: usize = 15;
/// EPT violations on one guest instruction before the module suspects a zero-step attack
/// (`STEPPING_EPF_THRESHOLD`): from the next one on, each faulting GPA is logged and
/// TDH.VP.ENTER checks them under the SEPT tree lock held exclusive (spec §6.10) [V-mod].
pub const ZERO_STEP_EPF_THRESHOLD: u8 = 6;
/// GPAs the zero-step filter logs per vCPU (`EPF_GPA_LIST_SIZE`) [V-mod].
pub const EPF_GPA_LIST_SIZE: usize = 32;

/// One vCPU (TDVPS), named by its TDVPR page.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// The TDVPR page's lock. TDH.VP.ENTER holds it shared while the guest runs;
    /// VP.ADDCX, VP.INIT and VP.FLUSH take it exclusive.
    pub tdvpr_lock: SharexHp,
    /// Protected by `tdvpr_lock`.
    pub state: VcpuState,
    /// The TDCX pages VP.ADDCX gave, in order. Protected by `tdvpr_lock` (exclusive).
    pub tdcx: Vec<Hpa>,
    /// The LP the vCPU is associated with (VP.INIT or VP.ENTER on it, until VP.FLUSH there).
    /// Written with the TDVPR lock held, by a compare-and-exchange in the module.
    pub associated_lp: Option<CpuId>,
    /// The TD epoch the vCPU joined at its last entry (`vcpu_epoch`).
    pub vcpu_epoch: u64,
    /// The guest RIP at the last TD exit: an exit at another RIP is forward progress.
    pub guest_rip: u64,
    /// Consecutive EPT-violation exits at one RIP, up to [`ZERO_STEP_EPF_THRESHOLD`]
    /// (`possibly_epf_stepping`).
    pub epf_streak: u8,
    /// GPAs of EPT violations beyond the threshold (`last_epf_gpa_list`): while not empty,
    /// TDH.VP.ENTER takes the SEPT tree lock exclusive (the zero-step mitigation).
    pub epf_gpas: Vec<u64>,
}

impl Vcpu {
    fn new(lock: SharexHp, state: VcpuState) -> Vcpu {
        Vcpu {
            tdvpr_lock: lock,
            state,
            tdcx: Vec::new(),
            associated_lp: None,
            vcpu_epoch: 0,
            guest_rip: 0,
            epf_streak: 0,
            epf_gpas: Vec::new(),
        }
    }

    /// TDVPS pages the vCPU has: its TDVPR and its TDCX pages (`num_tdvps_pages`).
    pub fn tdvps_pages(&self) -> usize {
        1 + self.tdcx.len()
    }

    /// The zero-step filter is armed: the next TDH.VP.ENTER takes the SEPT tree exclusive.
    pub fn zero_step_suspected(&self) -> bool {
        !self.epf_gpas.is_empty()
    }
}

/// One TD, as far as the modelled leaves see it.
#[derive(Clone, Debug)]
pub struct Td {
    /// The TDR page's lock (on hardware, the TDR's PAMT entry lock).
    pub tdr_lock: SharexHp,
    /// The TDCS lock that SEPT-using leaves take shared (spec §6, "TDCS sh (hp)"; the
    /// module's `op_state_lock`).
    pub tdcs_lock: SharexHp,
    /// `secure_ept_lock`, operand SEPT (0x92).
    #[doc(alias = "secure_ept_lock")]
    pub sept_lock: SharexHp,
    /// Operand TD_EPOCH (0xA9).
    pub epoch_lock: SharexHp,
    /// Protected by `epoch_lock`: TRACK bumps it under the lock held exclusive.
    pub td_epoch: u64,
    /// `epoch_refcount[parity]`: vCPUs inside TDH.VP.ENTER that joined an epoch of that
    /// parity. TDH.VP.ENTER adds itself under `epoch_lock` shared; a TD exit takes itself
    /// off without the lock.
    pub epoch_refcount: [u32; 2],
    /// The secure EPT. Protected by `sept_lock` (exclusive) or, for one entry, by that
    /// entry's TDEL bit; the TDR held exclusive (PAGE.ADD) excludes every other user.
    pub sept: Sept,
    /// Protected by `tdr_lock`: MNG.INIT and MR.FINALIZE change it with the lock exclusive.
    pub op_state: OpState,
    /// Protected by `tdr_lock`: KEY.CONFIG, VPFLUSHDONE and KEY.FREEID change it with the
    /// lock exclusive.
    pub lifecycle: Lifecycle,
    /// The TDR page, for a TD made by TDH.MNG.CREATE (`None` for [`crate::Module::create_td`]).
    pub tdr: Option<Hpa>,
    /// The vCPUs by TDVPR page, in address order.
    pub vcpus: BTreeMap<Hpa, Vcpu>,
    /// Packages whose key TDH.MNG.KEY.CONFIG has programmed for this TD's HKID.
    /// Protected by `tdr_lock` (KEY.CONFIG takes it exclusive).
    pub key_packages: BTreeSet<u32>,
    /// `num_assoc_vcpus`: vCPUs associated with some LP. Changed atomically with the
    /// TDR held shared; read by VPFLUSHDONE with it held exclusive.
    pub num_assoc_vcpus: u32,
    /// `chldcnt`: the TD's pages other than its TDR (TDVPR, TDCX, S-EPT and private
    /// pages). PAGE.RECLAIM of the TDR needs it at 0.
    pub child_pages: u64,
    /// The KOT entry's `wbinvd_bitmap`: packages that still have to run TDH.PHYMEM.CACHE.WB
    /// for this TD's HKID. Set by VPFLUSHDONE, cleared per package by CACHE.WB; protected
    /// by `kot_lock`.
    pub wbinvd_pending: BTreeSet<u32>,
    /// Where the PAMT names this TD as an owner.
    pub owner_slot: OwnerSlot,
    /// False for a module without host priority: a losing host never sets HP.
    host_priority: bool,
}

impl Td {
    /// A runnable TD with no control pages and a prebuilt S-EPT: the shortcut of
    /// [`crate::Module::create_td`].
    pub fn new(host_priority: bool, owner_slot: OwnerSlot) -> Td {
        Td {
            tdr_lock: new_lock(host_priority),
            tdcs_lock: new_lock(host_priority),
            sept_lock: new_lock(host_priority),
            epoch_lock: new_lock(host_priority),
            td_epoch: 0,
            epoch_refcount: [0; 2],
            sept: Sept::prebuilt(host_priority),
            op_state: OpState::Runnable,
            lifecycle: Lifecycle::KeysConfigured,
            tdr: None,
            vcpus: BTreeMap::new(),
            key_packages: BTreeSet::new(),
            num_assoc_vcpus: 0,
            child_pages: 0,
            wbinvd_pending: BTreeSet::new(),
            owner_slot,
            host_priority,
        }
    }

    /// A TD that TDH.MNG.CREATE just made on `tdr`: HKID assigned, not initialised, an
    /// S-EPT of only its root.
    pub fn created(host_priority: bool, owner_slot: OwnerSlot, tdr: Hpa) -> Td {
        Td {
            op_state: OpState::Uninitialized,
            lifecycle: Lifecycle::HkidAssigned,
            tdr: Some(tdr),
            sept: Sept::new(host_priority),
            ..Td::new(host_priority, owner_slot)
        }
    }

    /// Between TDH.MNG.INIT and TDH.MR.FINALIZE (spec §9, "compatibility-sensitive").
    pub fn is_building(&self) -> bool {
        self.op_state == OpState::Initialized
    }

    /// The entry for `gpa`, FREE if no table holds it.
    pub fn entry(&self, gpa: u64) -> SeptEntry {
        self.sept.entry(gpa)
    }

    /// A new vCPU on `tdvpr`, as TDH.VP.CREATE leaves it.
    pub(crate) fn add_vcpu(&mut self, tdvpr: Hpa, state: VcpuState) {
        let previous = self.vcpus.insert(tdvpr, Vcpu::new(new_lock(self.host_priority), state));
        assert!(previous.is_none(), "td: a second vCPU on TDVPR {tdvpr}");
    }

    pub(crate) fn vcpu_mut(&mut self, tdvpr: Hpa) -> &mut Vcpu {
        self.vcpus.get_mut(&tdvpr).expect("td: the vCPU was checked")
    }

    /// Locks held right now, counting each reader and each vCPU still counted in an
    /// epoch (for tests and checkers).
    pub fn held_lock_count(&self) -> usize {
        self.tdr_lock.holders()
            + self.tdcs_lock.holders()
            + self.sept_lock.holders()
            + self.epoch_lock.holders()
            + self.sept.locked_entries()
            + self.vcpus.values().map(|vcpu| vcpu.tdvpr_lock.holders()).sum::<usize>()
            + self.epoch_refcount.iter().map(|&count| count as usize).sum::<usize>()
    }

    /// `is_tlb_tracked` of the module: an entry blocked at `blocked_epoch` is tracked once
    /// TRACK has moved the TD two epochs on, or one epoch on and no vCPU is still running
    /// in the blocked epoch.
    pub fn is_tlb_tracked(&self, blocked_epoch: u64) -> bool {
        let parity = (blocked_epoch & 1) as usize;
        blocked_epoch + 1 < self.td_epoch
            || (blocked_epoch + 1 == self.td_epoch && self.epoch_refcount[parity] == 0)
    }
}

fn new_lock(host_priority: bool) -> SharexHp {
    if host_priority { SharexHp::new() } else { SharexHp::without_host_priority() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortcut_td_is_runnable_with_a_prebuilt_sept() {
        let td = Td::new(true, 0);
        assert_eq!(td.op_state, OpState::Runnable);
        assert_eq!(td.lifecycle, Lifecycle::KeysConfigured);
        assert!(td.sept.is_prebuilt());
        assert_eq!(td.entry(0x5000), SeptEntry::FREE);
        assert_eq!(td.held_lock_count(), 0);
    }

    #[test]
    fn a_created_td_has_only_its_root() {
        let td = Td::created(true, 1, Hpa(0x1000));
        assert_eq!(td.lifecycle, Lifecycle::HkidAssigned);
        assert!(!td.sept.is_prebuilt());
        assert_eq!(td.sept.walk(0, 0), crate::sept::Walk::Failed);
    }

    #[test]
    fn tlb_tracking_waits_for_the_blocked_epochs_vcpus() {
        let mut td = Td::new(true, 0);
        assert!(!td.is_tlb_tracked(0), "no TRACK yet");
        td.td_epoch = 1;
        td.epoch_refcount[0] = 1;
        assert!(!td.is_tlb_tracked(0), "a vCPU still runs in epoch 0");
        td.epoch_refcount[0] = 0;
        assert!(td.is_tlb_tracked(0));
        td.td_epoch = 2;
        td.epoch_refcount[0] = 1;
        assert!(td.is_tlb_tracked(0), "two epochs on, whoever runs");
    }

    #[test]
    fn vcpus_count_their_tdvps_pages() {
        let mut td = Td::new(true, 0);
        td.add_vcpu(Hpa(0x3000), VcpuState::Uninitialized);
        let vcpu = td.vcpu_mut(Hpa(0x3000));
        assert_eq!(vcpu.tdvps_pages(), 1);
        vcpu.tdcx.push(Hpa(0x4000));
        assert_eq!(vcpu.tdvps_pages(), 2);
        assert!(!vcpu.zero_step_suspected());
    }
}
