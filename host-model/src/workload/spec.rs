//! What a `[[workload]]` asks for, in the host's units (bytes, cycles, pages): the loader
//! fills it in, [`super::spawn_workloads`] turns it into host tasks.

use seam_model::{PAGE_SIZE, TdId};

use crate::kernel::page_alloc::LOCALITY_ONE;

/// The kinds of generated load (`workload.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    /// TDs are created and built (PAGE.ADD of an initial image), then their guests accept
    /// and touch memory through vCPU faults: a boot.
    TdBoot,
    /// Each TD slot creates a TD, boots it, and destroys it, `rounds` times.
    TdChurn,
    /// TDs that exist from the start fault their memory in as fast as their guests go; with
    /// `rounds` > 1 each vCPU's thread punches its memory out again between rounds.
    FaultStorm,
    /// TDs that exist from the start fault their memory in, then each guest converts a
    /// random part of it to shared and back, `rounds` times: a punch-hole (zaps under
    /// `mmu_lock` write, kicks of the other vCPUs) and the part faulted and accepted again.
    ZapStorm,
    /// Hostile guests re-ACCEPT one GPA in a loop while a thread per TD removes pages there:
    /// the host's PAGE.REMOVE against the guest's host-priority locks.
    GuestAcceptStorm,
}

impl WorkloadKind {
    pub const ALL: &'static [WorkloadKind] = &[
        WorkloadKind::TdBoot,
        WorkloadKind::TdChurn,
        WorkloadKind::FaultStorm,
        WorkloadKind::ZapStorm,
        WorkloadKind::GuestAcceptStorm,
    ];

    /// The scenario name (`workload.kind`).
    pub const fn name(self) -> &'static str {
        match self {
            WorkloadKind::TdBoot => "td_boot",
            WorkloadKind::TdChurn => "td_churn",
            WorkloadKind::FaultStorm => "fault_storm",
            WorkloadKind::ZapStorm => "zap_storm",
            WorkloadKind::GuestAcceptStorm => "guest_accept_storm",
        }
    }

    pub fn from_name(name: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.iter().copied().find(|kind| kind.name() == name)
    }

    /// The TDs are built by the workload (through TDH.MNG.CREATE and the rest), rather than
    /// existing in the module from the start.
    pub const fn builds_tds(self) -> bool {
        match self {
            WorkloadKind::TdBoot | WorkloadKind::TdChurn => true,
            WorkloadKind::FaultStorm | WorkloadKind::ZapStorm | WorkloadKind::GuestAcceptStorm => false,
        }
    }
}

/// What a zap_storm round does to its hole (`workload.zap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZapMode {
    /// The guest converts the hole to shared and back: the VMM punches it out of
    /// guest_memfd (`fallocate(FALLOC_FL_PUNCH_HOLE)`), the guest accepts it again.
    #[default]
    PunchHole,
    /// The VMM deletes the hole's memslot (`KVM_SET_USER_MEMORY_REGION2` of size 0: the slot
    /// invalid, SRCU synchronised, its private pages zapped) and creates it again; the
    /// guest accepts and touches it again. Each vCPU's part is cut into memslots of
    /// `zap_size`, so a deletion takes no other vCPU's memory.
    Memslot,
    /// Each round picks one of the two at random.
    Mixed,
}

impl ZapMode {
    pub const ALL: &'static [ZapMode] = &[ZapMode::PunchHole, ZapMode::Memslot, ZapMode::Mixed];

    /// The scenario name (`workload.zap`).
    pub const fn name(self) -> &'static str {
        match self {
            ZapMode::PunchHole => "punch_hole",
            ZapMode::Memslot => "memslot",
            ZapMode::Mixed => "mixed",
        }
    }

    pub fn from_name(name: &str) -> Option<ZapMode> {
        ZapMode::ALL.iter().copied().find(|mode| mode.name() == name)
    }

    /// Its rounds change memslots, so the holes are memslots of their own.
    pub const fn changes_memslots(self) -> bool {
        match self {
            ZapMode::PunchHole => false,
            ZapMode::Memslot | ZapMode::Mixed => true,
        }
    }
}

/// `KVM_USER_MEM_SLOTS` on x86: the memslots one address space of a VM may have
/// (`KVM_MEM_SLOTS_NUM` less the private ones).
pub const KVM_USER_MEM_SLOTS: u64 = 32764;

/// Locality as the page allocator takes it: a fraction in 1/65536ths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locality(pub u32);

impl Locality {
    /// `fraction` in 0.0..=1.0, rounded to the nearest 1/65536.
    pub fn from_fraction(fraction: f64) -> Locality {
        assert!((0.0..=1.0).contains(&fraction), "locality {fraction} outside 0..=1");
        Locality((fraction * f64::from(LOCALITY_ONE)).round() as u32)
    }

    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(LOCALITY_ONE)
    }
}

/// One `[[workload]]`, validated: every size is in range and fits the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// Its TDs are `first_td..first_td + tds`.
    pub first_td: u32,
    pub tds: u32,
    pub vcpus_per_td: u32,
    /// Each TD's private GPA space from 0 (bytes; a multiple of 2MB).
    pub memory_per_td: u64,
    /// Bytes of the initial image PAGE.ADDed at GPA 0 before the TD runs (td_boot,
    /// td_churn); a multiple of 4KB.
    pub initial_memory: u64,
    /// Bytes each TD's guest touches (per round) from GPA `initial_memory`, shared out among
    /// its vCPUs in contiguous parts; a multiple of 4KB.
    pub memory_touched: u64,
    /// Guest work before each touch of a new page, in cycles (1 / `fault_rate`).
    pub fault_interval: u64,
    /// How often consecutive private pages of a TD share a 2MB range.
    pub locality: Locality,
    /// td_churn: lives per TD slot; fault_storm: passes of fault-in (and punch-out between
    /// them); zap_storm: conversions per vCPU; guest_accept_storm: removals the host makes.
    pub rounds: u32,
    /// When the workload starts (cycles).
    pub start: u64,
    /// Its threads run on CPUs `first_cpu..first_cpu + cpus`, round-robin.
    pub first_cpu: u32,
    pub cpus: u32,
    /// zap_storm: bytes each conversion punches out; guest_accept_storm: bytes each removal
    /// takes from a hostile guest's GPA on (multiples of 4KB).
    pub zap_size: u64,
    /// guest_accept_storm: the host thread's wait before each removal (cycles).
    pub zap_interval: u64,
    /// zap_storm: what a round does to its hole.
    pub zap: ZapMode,
    /// td_boot: one coalescable fault round of a vCPU in this many is simulated in full,
    /// the others coalesced (`kvm::coalesce`); 1: none coalesced.
    pub coalesce_faults: u32,
}

impl Workload {
    /// The TDs it runs.
    pub fn td_ids(&self) -> impl Iterator<Item = TdId> + '_ {
        (self.first_td..self.first_td + self.tds).map(TdId)
    }

    /// 4KB pages of the initial image.
    pub fn initial_pages(&self) -> u64 {
        self.initial_memory / PAGE_SIZE
    }

    /// 4KB pages each TD's guest touches per round.
    pub fn touched_pages(&self) -> u64 {
        self.memory_touched / PAGE_SIZE
    }

    /// The pages of TD memory vCPU `vcpu` touches: (first GPA, pages). The touched memory is
    /// cut into `vcpus_per_td` contiguous parts, the first ones a page longer when it does
    /// not divide evenly.
    pub fn vcpu_share(&self, vcpu: u32) -> (u64, u64) {
        let pages = self.touched_pages();
        let vcpus = u64::from(self.vcpus_per_td);
        let vcpu = u64::from(vcpu);
        let base = pages / vcpus;
        let extra = pages % vcpus;
        let first = vcpu * base + vcpu.min(extra);
        let count = base + u64::from(vcpu < extra);
        (self.initial_memory + first * PAGE_SIZE, count)
    }

    /// A zap_storm's holes in vCPU `vcpu`'s part: (pages of a hole, places for one). The
    /// holes are `zap_size` (at most the part) from the part's start; pages left after the
    /// last whole hole are never zapped.
    pub fn holes(&self, vcpu: u32) -> (u64, u64) {
        let pages = self.vcpu_share(vcpu).1;
        let hole_pages = (self.zap_size / PAGE_SIZE).min(pages);
        (hole_pages, (pages / hole_pages.max(1)).max(1))
    }

    /// Hole `place` of vCPU `vcpu`'s part: (first GPA, pages).
    pub fn hole(&self, vcpu: u32, place: u64) -> (u64, u64) {
        let (hole_pages, _) = self.holes(vcpu);
        (self.vcpu_share(vcpu).0 + place * hole_pages * PAGE_SIZE, hole_pages)
    }

    /// The memslots the VMM registers for the workload's TDs besides the base one, as (first
    /// GPA, pages), in GPA order: for a zap_storm that changes memslots, one per hole of
    /// every vCPU's part; else none.
    pub fn memslots(&self) -> Vec<(u64, u64)> {
        let holed = match self.kind {
            WorkloadKind::ZapStorm => self.zap.changes_memslots(),
            WorkloadKind::TdBoot
            | WorkloadKind::TdChurn
            | WorkloadKind::FaultStorm
            | WorkloadKind::GuestAcceptStorm => false,
        };
        if !holed {
            return Vec::new();
        }
        let mut slots = Vec::new();
        for vcpu in 0..self.vcpus_per_td {
            let (hole_pages, places) = self.holes(vcpu);
            if hole_pages == 0 {
                continue;
            }
            slots.extend((0..places).map(|place| self.hole(vcpu, place)));
        }
        slots
    }

    /// The CPU of thread `index` of the workload (round-robin over its CPUs).
    pub fn cpu_of(&self, index: u64) -> u32 {
        self.first_cpu + (index % u64::from(self.cpus)) as u32
    }

    /// Host memory the workload holds at its peak (bytes): every TD's initial and touched
    /// memory, 1/256 more for S-EPT tables and the vCPU's page caches, and 16 control pages
    /// per TD and per vCPU (TDR, TDCS, TDVPR, TDCX).
    pub fn peak_host_bytes(&self) -> u64 {
        let private = self.initial_memory + self.memory_touched;
        let control = 16 * PAGE_SIZE * (1 + u64::from(self.vcpus_per_td));
        u64::from(self.tds) * (private + private / 256 + control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(vcpus: u32, touched_pages: u64) -> Workload {
        Workload {
            kind: WorkloadKind::TdBoot,
            first_td: 1,
            tds: 2,
            vcpus_per_td: vcpus,
            memory_per_td: 64 << 20,
            initial_memory: 2 << 20,
            memory_touched: touched_pages * PAGE_SIZE,
            fault_interval: 1000,
            locality: Locality::from_fraction(0.5),
            rounds: 1,
            start: 0,
            first_cpu: 1,
            cpus: 3,
            zap_size: 0,
            zap_interval: 0,
            zap: ZapMode::PunchHole,
            coalesce_faults: 1,
        }
    }

    #[test]
    fn vcpu_shares_cover_the_touched_memory_once_in_order() {
        let load = workload(3, 10);
        let shares: Vec<(u64, u64)> = (0..3).map(|vcpu| load.vcpu_share(vcpu)).collect();
        assert_eq!(
            shares,
            vec![(2 << 20, 4), ((2 << 20) + 4 * PAGE_SIZE, 3), ((2 << 20) + 7 * PAGE_SIZE, 3)]
        );
        assert_eq!(load.td_ids().collect::<Vec<_>>(), vec![TdId(1), TdId(2)]);
        assert_eq!((0..4).map(|index| load.cpu_of(index)).collect::<Vec<_>>(), vec![1, 2, 3, 1]);
        assert_eq!(Locality::from_fraction(0.5).0, LOCALITY_ONE / 2);
    }

    #[test]
    fn a_memslot_zap_storm_has_a_memslot_per_hole_inside_each_vcpu_part() {
        let mut load = workload(2, 10);
        load.kind = WorkloadKind::ZapStorm;
        load.zap_size = 2 * PAGE_SIZE;
        assert!(load.memslots().is_empty(), "punch-hole needs no memslots of its own");
        load.zap = ZapMode::Memslot;
        let base = 2 << 20;
        let slot = |page: u64| (base + page * PAGE_SIZE, 2);
        // Parts of 5 pages: two holes each, the fifth page of each part in none.
        assert_eq!(load.memslots(), vec![slot(0), slot(2), slot(5), slot(7)]);
        assert_eq!(load.hole(1, 1), slot(7));
        for mode in ZapMode::ALL {
            assert_eq!(ZapMode::from_name(mode.name()), Some(*mode));
        }
    }
}
