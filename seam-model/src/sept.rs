//! One TD's secure EPT (spec/seam-module.md §1, §2.3): its tables and its 4KB leaf entries,
//! packed so that a fully mapped TD costs well under a byte of state per 4KB page.
//!
//! The tree has four levels, as a TD with a 48-bit GPA width has [I]: the root (level 3,
//! 512GB entries) lives in the TDCS and always exists; TDH.MEM.SEPT.ADD adds a level-2 table
//! (1GB entries) under a root entry, a level-1 table (2MB entries) under a level-2 entry,
//! and a level-0 table (the 512 4KB leaf entries of one 2MB range) under a level-1 entry.
//!
//! Storage follows the tree: level-1 tables by `gpa >> 30` in a small map, each with a
//! direct array of its 512 level-0 tables, so finding a leaf entry is one lookup in a map of
//! a few entries per GB of guest memory and two array indexings. A level-0 table keeps,
//! per entry, 2 bits of state, the TDEL lock bit (bit 11) and the host-priority bit
//! (bit 52) in bitmaps, and the mapped page's pfn: one base pfn for the whole table while
//! its pages are contiguous (`pfn = base + index`, what a host allocator with locality
//! gives), else an array of 512 `u32` pfns. The fields only a zap uses (the epoch at which
//! an entry was blocked) and the lock and HP bits of non-leaf entries are kept sparse.
//!
//! Iteration is over ordered maps and arrays only, so it is deterministic.
//!
//! A *prebuilt* S-EPT (the [`crate::Module::create_td`] shortcut) has every table already,
//! occupying no simulated memory: only its leaf entries are modelled, and SEPT.ADD finds
//! every entry present. Its tables are made the first time an entry of theirs is used and
//! kept after, as a real S-EPT keeps its tables: an entry lock never allocates twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use sim_core::Narrow512;

use crate::Hpa;
use crate::lock::{Caller, HpBusy};

/// Levels of the S-EPT, as TDH.MEM.SEPT.ADD's RCX encodes them (spec/constants.md §6).
pub const LEVEL_4K: u8 = 0;
/// The level of the root table's entries (four-level EPT).
pub const LEVEL_ROOT: u8 = 3;
/// Private GPAs are below the shared bit, bit 47 of a 48-bit GPA width [I]: the model's
/// TDs have no TD_PARAMS, so every TD gets the four-level layout.
pub const GPA_LIMIT: u64 = 1 << 47;
/// Leaf entries per level-0 table.
const ENTRIES: usize = 512;
const WORDS: usize = ENTRIES / 64;

/// The state of a secure-EPT leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeptState {
    /// No page mapped.
    Free,
    /// PAGE.AUG mapped a page; the guest has not accepted it yet (TDG.MEM.PAGE.ACCEPT).
    Pending,
    /// The guest accepted the page, or PAGE.ADD mapped it at build time.
    Mapped,
    /// RANGE.BLOCK cut the guest's access; PAGE.REMOVE may take the page once tracked.
    /// A blocked PENDING entry also lands here: no modelled leaf (UNBLOCK is not one)
    /// tells them apart.
    Blocked,
}

impl SeptState {
    const fn bits(self) -> u64 {
        match self {
            SeptState::Free => 0,
            SeptState::Pending => 1,
            SeptState::Mapped => 2,
            SeptState::Blocked => 3,
        }
    }

    const fn from_bits(bits: u64) -> SeptState {
        match bits & 3 {
            0 => SeptState::Free,
            1 => SeptState::Pending,
            2 => SeptState::Mapped,
            _ => SeptState::Blocked,
        }
    }
}

/// A secure-EPT leaf entry for one 4KB GPA, as [`Sept::entry`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeptEntry {
    pub state: SeptState,
    /// The mapped page; `Hpa(0)` while `Free`.
    pub hpa: Hpa,
    /// `td_epoch` when RANGE.BLOCK blocked the entry; 0 unless `Blocked`.
    pub blocked_epoch: u64,
    /// The TDEL bit (bit 11): a leaf (or a guest TDCALL) holds this entry's lock.
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

/// The pfns a level-0 table maps.
#[derive(Clone, Debug)]
enum Pfns {
    /// No entry has a page.
    None,
    /// Entry `i` (when not free) maps `base + i` (wrapping `u32` arithmetic).
    Linear(u32),
    /// Entry `i` maps `pfns.get(i)`; meaningless for free entries. Two bytes an entry while
    /// the pages fall in a few host 2MB ranges.
    Explicit(Box<Narrow512>),
}

/// A level-0 table: the 512 leaf entries of one 2MB GPA range.
#[derive(Clone, Debug)]
struct LeafTable {
    /// The S-EPT page holding the table; `None` in a prebuilt S-EPT.
    page: Option<Hpa>,
    /// 2 bits of [`SeptState`] per entry.
    states: [u64; ENTRIES / 32],
    locked: [u64; WORDS],
    host_priority: [u64; WORDS],
    // invariant: mapped == number of entries whose state is not Free.
    mapped: u16,
    pfns: Pfns,
}

impl LeafTable {
    fn new(page: Option<Hpa>) -> LeafTable {
        LeafTable {
            page,
            states: [0; ENTRIES / 32],
            locked: [0; WORDS],
            host_priority: [0; WORDS],
            mapped: 0,
            pfns: Pfns::None,
        }
    }

    fn state(&self, index: usize) -> SeptState {
        SeptState::from_bits(self.states[index / 32] >> (2 * (index % 32)))
    }

    fn set_state(&mut self, index: usize, state: SeptState) {
        let word = &mut self.states[index / 32];
        let shift = 2 * (index % 32);
        *word = (*word & !(3 << shift)) | (state.bits() << shift);
    }

    fn pfn(&self, index: usize) -> u32 {
        match &self.pfns {
            Pfns::None => unreachable!("sept: a mapped entry has a pfn"),
            Pfns::Linear(base) => base.wrapping_add(index as u32),
            Pfns::Explicit(pfns) => pfns.get(index),
        }
    }

    /// Records that entry `index` (free until now) maps `pfn`.
    fn set_pfn(&mut self, index: usize, pfn: u32) {
        let linear_base = pfn.wrapping_sub(index as u32);
        match &mut self.pfns {
            Pfns::None => self.pfns = Pfns::Linear(linear_base),
            Pfns::Linear(base) if *base == linear_base => {}
            Pfns::Linear(base) => {
                // The pages stop being contiguous: keep every pfn from now on.
                let base = *base;
                let mut pfns = Box::<Narrow512>::default();
                for other in 0..ENTRIES {
                    pfns.set(other, base.wrapping_add(other as u32));
                }
                pfns.set(index, pfn);
                self.pfns = Pfns::Explicit(pfns);
            }
            Pfns::Explicit(pfns) => pfns.set(index, pfn),
        }
    }

    fn bit(bits: &[u64; WORDS], index: usize) -> bool {
        bits[index / 64] & (1 << (index % 64)) != 0
    }

    fn set_bit(bits: &mut [u64; WORDS], index: usize, value: bool) {
        let mask = 1 << (index % 64);
        if value {
            bits[index / 64] |= mask;
        } else {
            bits[index / 64] &= !mask;
        }
    }

    /// No entry mapped, locked or claimed: the table reads as all FREE.
    fn is_blank(&self) -> bool {
        self.mapped == 0 && self.locked == [0; WORDS] && self.host_priority == [0; WORDS]
    }

    fn heap_bytes(&self) -> usize {
        match &self.pfns {
            Pfns::Explicit(pfns) => std::mem::size_of::<Narrow512>() + pfns.heap_bytes(),
            Pfns::None | Pfns::Linear(_) => 0,
        }
    }
}

/// A level-1 table: the 512 2MB entries of one 1GB GPA range, each pointing to a level-0
/// table or nothing.
#[derive(Clone, Debug)]
struct DirTable {
    /// The S-EPT page holding the table; `None` in a prebuilt S-EPT.
    page: Option<Hpa>,
    leaves: Box<[Option<Box<LeafTable>>; ENTRIES]>,
}

impl DirTable {
    fn new(page: Option<Hpa>) -> DirTable {
        DirTable { page, leaves: Box::new(std::array::from_fn(|_| None)) }
    }
}

/// Level-1 tables by `gpa >> 30`: directly indexed for the first TiB of GPA space (where a
/// TD's memory is; a lookup per leaf-entry access must be cheap), in a map beyond it.
#[derive(Clone, Debug, Default)]
struct Dirs {
    near: Vec<Option<DirTable>>,
    /// Keys at or above `NEAR_DIRS`.
    far: BTreeMap<u64, DirTable>,
}

/// Level-1 tables (1GB each) kept in `Dirs::near`.
const NEAR_DIRS: u64 = 1024;

impl Dirs {
    fn get(&self, index: u64) -> Option<&DirTable> {
        if index < NEAR_DIRS {
            return self.near.get(index as usize)?.as_ref();
        }
        self.far.get(&index)
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut DirTable> {
        if index < NEAR_DIRS {
            return self.near.get_mut(index as usize)?.as_mut();
        }
        self.far.get_mut(&index)
    }

    fn insert(&mut self, index: u64, dir: DirTable) {
        if index < NEAR_DIRS {
            let slot = index as usize;
            if self.near.len() <= slot {
                self.near.resize_with(slot + 1, || None);
            }
            self.near[slot] = Some(dir);
        } else {
            self.far.insert(index, dir);
        }
    }

    /// In GPA order.
    fn values(&self) -> impl Iterator<Item = &DirTable> {
        self.near.iter().flatten().chain(self.far.values())
    }

    fn heap_bytes(&self) -> usize {
        let map_entry = 8 + std::mem::size_of::<DirTable>() + std::mem::size_of::<usize>();
        self.near.capacity() * std::mem::size_of::<Option<DirTable>>() + self.far.len() * map_entry
    }
}

/// The lock and HP bits of one non-leaf entry (TDH.MEM.SEPT.ADD locks its parent entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct EntryBits {
    locked: bool,
    host_priority: bool,
}

/// Where a walk from the root towards a GPA stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The table holding the entry of the asked level exists.
    Reached,
    /// A table above it is missing: TDX_EPT_WALK_FAILED.
    Failed,
}

/// One TD's secure EPT. See the module documentation for the layout.
#[derive(Clone, Debug)]
pub struct Sept {
    prebuilt: bool,
    /// Whether a host that loses an entry lock sets the entry's HP bit.
    host_priority: bool,
    /// Level-2 tables (1GB entries), by `gpa >> 39`, with their page.
    tables_1g: BTreeMap<u64, Hpa>,
    /// Level-1 tables, by `gpa >> 30`.
    dirs: Dirs,
    /// `blocked_epoch` of each blocked leaf entry, by GPA.
    blocked: BTreeMap<u64, u64>,
    /// Lock and HP bits of non-leaf entries, by `gpa | level`; absent means both clear.
    non_leaf_bits: BTreeMap<u64, EntryBits>,
}

impl Sept {
    /// An S-EPT with only its root (a TD built by TDH.MNG.CREATE).
    pub fn new(host_priority: bool) -> Sept {
        Sept {
            prebuilt: false,
            host_priority,
            tables_1g: BTreeMap::new(),
            dirs: Dirs::default(),
            blocked: BTreeMap::new(),
            non_leaf_bits: BTreeMap::new(),
        }
    }

    /// An S-EPT whose tables all exist and occupy no simulated memory.
    pub fn prebuilt(host_priority: bool) -> Sept {
        Sept { prebuilt: true, ..Sept::new(host_priority) }
    }

    pub fn is_prebuilt(&self) -> bool {
        self.prebuilt
    }

    /// The GPA range one entry of `level` covers: 4KB, 2MB, 1GB, 512GB.
    pub const fn entry_bytes(level: u8) -> u64 {
        1 << (12 + 9 * level as u32)
    }

    /// Whether the table holding the entry of `level` that covers `gpa` exists.
    /// `level` is 0 ..= [`LEVEL_ROOT`]; the root table always exists.
    pub fn walk(&self, gpa: u64, level: u8) -> Walk {
        assert!(level <= LEVEL_ROOT, "sept: level {level} above the root");
        let reached = self.prebuilt
            || match level {
                LEVEL_ROOT => true,
                2 => self.tables_1g.contains_key(&(gpa >> 39)),
                1 => self.dirs.get(gpa >> 30).is_some(),
                _ => self.dirs.get(gpa >> 30).is_some_and(|dir| dir.leaves[leaf_slot(gpa)].is_some()),
            };
        if reached { Walk::Reached } else { Walk::Failed }
    }

    /// Whether the non-leaf entry of `level` (1 ..= [`LEVEL_ROOT`]) covering `gpa` points to
    /// a table. In a prebuilt S-EPT every one does.
    pub fn non_leaf_present(&self, gpa: u64, level: u8) -> bool {
        assert!((1..=LEVEL_ROOT).contains(&level), "sept: level {level} has no non-leaf entries");
        self.prebuilt || self.walk(gpa, level - 1) == Walk::Reached
    }

    /// TDH.MEM.SEPT.ADD's effect: the non-leaf entry of `level` covering `gpa` now points
    /// to a new table held in `page`. The caller checked the walk and that the entry is free.
    pub fn add_table(&mut self, gpa: u64, level: u8, page: Hpa) {
        assert!(!self.prebuilt, "sept: a prebuilt S-EPT has every table");
        assert_eq!(self.walk(gpa, level), Walk::Reached, "sept: SEPT.ADD below a missing table");
        assert!(!self.non_leaf_present(gpa, level), "sept: SEPT.ADD over a present entry");
        match level {
            LEVEL_ROOT => {
                self.tables_1g.insert(gpa >> 39, page);
            }
            2 => {
                self.dirs.insert(gpa >> 30, DirTable::new(Some(page)));
            }
            1 => {
                let dir = self.dirs.get_mut(gpa >> 30).expect("sept: the walk reached the level-1 table");
                dir.leaves[leaf_slot(gpa)] = Some(Box::new(LeafTable::new(Some(page))));
            }
            _ => unreachable!("sept: SEPT.ADD level {level} was checked"),
        }
    }

    /// The S-EPT pages the tables occupy (none in a prebuilt S-EPT), in GPA order by level.
    pub fn table_pages(&self) -> Vec<Hpa> {
        let mut pages: Vec<Hpa> = self.tables_1g.values().copied().collect();
        for dir in self.dirs.values() {
            pages.extend(dir.page);
            pages.extend(dir.leaves.iter().flatten().filter_map(|leaf| leaf.page));
        }
        pages
    }

    /// The leaf entry for the 4KB-aligned `gpa`; FREE where no table holds it.
    pub fn entry(&self, gpa: u64) -> SeptEntry {
        let Some(leaf) = self.leaf(gpa) else {
            return SeptEntry::FREE;
        };
        let index = leaf_index(gpa);
        let state = leaf.state(index);
        SeptEntry {
            state,
            hpa: if state == SeptState::Free { Hpa(0) } else { Hpa(u64::from(leaf.pfn(index)) << 12) },
            // Only a blocked entry has one (`set_state` and `unmap` keep the map so).
            blocked_epoch: match state {
                SeptState::Blocked => self.blocked.get(&gpa).copied().unwrap_or(0),
                SeptState::Free | SeptState::Pending | SeptState::Mapped => 0,
            },
            locked: LeafTable::bit(&leaf.locked, index),
            host_priority: LeafTable::bit(&leaf.host_priority, index),
        }
    }

    /// Whether the leaf entry of `gpa` is neither locked nor claimed by a host: what
    /// [`Sept::entry`]'s `locked` and `host_priority` say, without the rest.
    pub fn entry_is_idle(&self, gpa: u64) -> bool {
        self.leaf(gpa).is_none_or(|leaf| {
            let index = leaf_index(gpa);
            !LeafTable::bit(&leaf.locked, index) && !LeafTable::bit(&leaf.host_priority, index)
        })
    }

    pub fn state(&self, gpa: u64) -> SeptState {
        self.leaf(gpa).map_or(SeptState::Free, |leaf| leaf.state(leaf_index(gpa)))
    }

    /// A free entry now maps `page` in `state` (PAGE.AUG: PENDING; PAGE.ADD: MAPPED).
    pub fn map(&mut self, gpa: u64, page: Hpa, state: SeptState) {
        assert_ne!(state, SeptState::Free, "sept: map to a FREE state");
        let pfn = u32::try_from(page.pfn()).expect("sept: pfns fit 32 bits (memory is at most 16 TiB)");
        let leaf = self.leaf_mut(gpa);
        let index = leaf_index(gpa);
        assert_eq!(leaf.state(index), SeptState::Free, "sept: mapping over a present entry");
        leaf.set_pfn(index, pfn);
        leaf.set_state(index, state);
        leaf.mapped += 1;
    }

    /// A mapped entry changes state: ACCEPT (PENDING -> MAPPED) or RANGE.BLOCK, which
    /// records `td_epoch` as the entry's `blocked_epoch`.
    pub fn set_state(&mut self, gpa: u64, state: SeptState, td_epoch: u64) {
        assert_ne!(state, SeptState::Free, "sept: use unmap to free an entry");
        let leaf = self.leaf_mut(gpa);
        let index = leaf_index(gpa);
        assert_ne!(leaf.state(index), SeptState::Free, "sept: state change of a free entry");
        leaf.set_state(index, state);
        if state == SeptState::Blocked {
            self.blocked.insert(gpa, td_epoch);
        } else {
            self.blocked.remove(&gpa);
        }
    }

    /// PAGE.REMOVE: the entry becomes FREE; returns the page it mapped.
    pub fn unmap(&mut self, gpa: u64) -> Hpa {
        let leaf = self.leaf_mut(gpa);
        let index = leaf_index(gpa);
        assert_ne!(leaf.state(index), SeptState::Free, "sept: unmapping a free entry");
        let page = Hpa(u64::from(leaf.pfn(index)) << 12);
        leaf.set_state(index, SeptState::Free);
        leaf.mapped -= 1;
        if leaf.mapped == 0 {
            leaf.pfns = Pfns::None;
        }
        self.blocked.remove(&gpa);
        page
    }

    /// Takes a leaf entry's TDEL bit (spec §2.3). A host that loses sets the entry's HP
    /// bit (when the module has host priority); a host that wins clears it; a guest that
    /// finds HP set backs off with BUSY_HOST_PRIORITY. The caller walked to the entry.
    pub fn try_lock_entry(&mut self, gpa: u64, caller: Caller) -> Result<(), HpBusy> {
        let host_priority = self.host_priority;
        let leaf = self.leaf_mut(gpa);
        let index = leaf_index(gpa);
        let result = lock_bits(
            LeafTable::bit(&leaf.locked, index),
            LeafTable::bit(&leaf.host_priority, index),
            caller,
            host_priority,
        );
        LeafTable::set_bit(&mut leaf.locked, index, result.locked);
        LeafTable::set_bit(&mut leaf.host_priority, index, result.host_priority);
        result.answer
    }

    pub fn release_entry(&mut self, gpa: u64) {
        let leaf = self.leaf_mut(gpa);
        let index = leaf_index(gpa);
        assert!(LeafTable::bit(&leaf.locked, index), "sept: releasing an entry lock that is not held");
        LeafTable::set_bit(&mut leaf.locked, index, false);
    }

    /// The TDEL bit of the non-leaf entry of `level` covering `gpa` (SEPT.ADD's parent).
    pub fn try_lock_non_leaf(&mut self, gpa: u64, level: u8, caller: Caller) -> Result<(), HpBusy> {
        let key = non_leaf_key(gpa, level);
        let bits = self.non_leaf_bits.get(&key).copied().unwrap_or_default();
        let result = lock_bits(bits.locked, bits.host_priority, caller, self.host_priority);
        self.set_non_leaf_bits(key, EntryBits { locked: result.locked, host_priority: result.host_priority });
        result.answer
    }

    pub fn release_non_leaf(&mut self, gpa: u64, level: u8) {
        let key = non_leaf_key(gpa, level);
        let bits = self.non_leaf_bits.get(&key).copied().unwrap_or_default();
        assert!(bits.locked, "sept: releasing a non-leaf entry lock that is not held");
        self.set_non_leaf_bits(key, EntryBits { locked: false, ..bits });
    }

    pub fn non_leaf_locked(&self, gpa: u64, level: u8) -> bool {
        self.non_leaf_bits.get(&non_leaf_key(gpa, level)).is_some_and(|bits| bits.locked)
    }

    pub fn non_leaf_host_priority(&self, gpa: u64, level: u8) -> bool {
        self.non_leaf_bits.get(&non_leaf_key(gpa, level)).is_some_and(|bits| bits.host_priority)
    }

    /// Entry locks (leaf and non-leaf) held right now.
    pub fn locked_entries(&self) -> usize {
        let leaves: usize = self
            .dirs
            .values()
            .flat_map(|dir| dir.leaves.iter().flatten())
            .map(|leaf| leaf.locked.iter().map(|word| word.count_ones() as usize).sum::<usize>())
            .sum();
        leaves + self.non_leaf_bits.values().filter(|bits| bits.locked).count()
    }

    /// No leaf entry is mapped, locked or claimed, and no non-leaf entry carries a bit.
    pub fn is_empty(&self) -> bool {
        self.non_leaf_bits.is_empty()
            && self.dirs.values().flat_map(|dir| dir.leaves.iter().flatten()).all(|leaf| leaf.is_blank())
    }

    /// Whether the leaf entry for `gpa` is anything but a plain FREE entry.
    pub fn contains(&self, gpa: u64) -> bool {
        self.entry(gpa) != SeptEntry::FREE
    }

    /// Leaf entries that are not FREE.
    pub fn mapped_entries(&self) -> u64 {
        self.dirs
            .values()
            .flat_map(|dir| dir.leaves.iter().flatten())
            .map(|leaf| u64::from(leaf.mapped))
            .sum()
    }

    /// The bytes this S-EPT owns on the heap: tables, pfn arrays and sparse maps. A B-tree
    /// entry is counted as its key and value plus one pointer of node overhead [I], which is
    /// about what `std`'s nodes of 11 entries cost.
    pub fn heap_bytes(&self) -> usize {
        let map_entry = |key: usize, value: usize| key + value + std::mem::size_of::<usize>();
        let mut bytes = self.tables_1g.len() * map_entry(8, std::mem::size_of::<Hpa>());
        bytes += self.blocked.len() * map_entry(8, 8);
        bytes += self.non_leaf_bits.len() * map_entry(8, std::mem::size_of::<EntryBits>());
        bytes += self.dirs.heap_bytes();
        for dir in self.dirs.values() {
            bytes += std::mem::size_of::<[Option<Box<LeafTable>>; ENTRIES]>();
            for leaf in dir.leaves.iter().flatten() {
                bytes += std::mem::size_of::<LeafTable>() + leaf.heap_bytes();
            }
        }
        bytes
    }

    fn leaf(&self, gpa: u64) -> Option<&LeafTable> {
        self.dirs.get(gpa >> 30)?.leaves[leaf_slot(gpa)].as_deref()
    }

    /// The level-0 table holding `gpa`, made on demand in a prebuilt S-EPT.
    fn leaf_mut(&mut self, gpa: u64) -> &mut LeafTable {
        let prebuilt = self.prebuilt;
        if self.dirs.get(gpa >> 30).is_none() {
            assert!(prebuilt, "sept: a leaf entry below a missing level-1 table (walk first)");
            self.dirs.insert(gpa >> 30, DirTable::new(None));
        }
        let dir = self.dirs.get_mut(gpa >> 30).expect("sept: the level-1 table exists");
        let slot = &mut dir.leaves[leaf_slot(gpa)];
        if slot.is_none() {
            assert!(prebuilt, "sept: a leaf entry below a missing level-0 table (walk first)");
            *slot = Some(Box::new(LeafTable::new(None)));
        }
        slot.as_mut().expect("sept: the table was just made")
    }

    fn set_non_leaf_bits(&mut self, key: u64, bits: EntryBits) {
        if bits == EntryBits::default() {
            self.non_leaf_bits.remove(&key);
        } else {
            self.non_leaf_bits.insert(key, bits);
        }
    }
}

/// What one try-lock on an entry's TDEL bit does to the lock and HP bits (spec §2.3).
struct LockBits {
    locked: bool,
    host_priority: bool,
    answer: Result<(), HpBusy>,
}

fn lock_bits(locked: bool, host_priority: bool, caller: Caller, priority_enabled: bool) -> LockBits {
    if locked {
        let claims = caller == Caller::Host && priority_enabled;
        return LockBits { locked, host_priority: host_priority || claims, answer: Err(HpBusy::Busy) };
    }
    if caller == Caller::Guest && host_priority {
        return LockBits { locked, host_priority, answer: Err(HpBusy::BusyHostPriority) };
    }
    let host_priority = host_priority && caller == Caller::Guest;
    LockBits { locked: true, host_priority, answer: Ok(()) }
}

/// The slot of `gpa`'s level-0 table in its level-1 table.
const fn leaf_slot(gpa: u64) -> usize {
    ((gpa >> 21) & 511) as usize
}

/// The index of `gpa`'s entry in its level-0 table.
const fn leaf_index(gpa: u64) -> usize {
    ((gpa >> 12) & 511) as usize
}

/// A non-leaf entry's key: its GPA aligned to what the entry covers, with the level in the
/// low bits (which alignment leaves clear).
fn non_leaf_key(gpa: u64, level: u8) -> u64 {
    (gpa & !(Sept::entry_bytes(level) - 1)) | u64::from(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn states_pack_two_bits_per_entry_without_clobbering_neighbours() {
        let mut sept = Sept::prebuilt(true);
        sept.map(0x1000, Hpa(0x40_0000), SeptState::Pending);
        sept.map(0x2000, Hpa(0x40_1000), SeptState::Mapped);
        sept.set_state(0x2000, SeptState::Blocked, 7);
        assert_eq!(sept.state(0x0), SeptState::Free);
        assert_eq!(sept.state(0x1000), SeptState::Pending);
        assert_eq!(sept.entry(0x2000).state, SeptState::Blocked);
        assert_eq!(sept.entry(0x2000).blocked_epoch, 7);
        assert_eq!(sept.state(0x3000), SeptState::Free);
        assert_eq!(sept.unmap(0x2000), Hpa(0x40_1000));
        assert_eq!(sept.entry(0x2000), SeptEntry::FREE);
        assert_eq!(sept.entry(0x1000).hpa, Hpa(0x40_0000));
    }

    #[test]
    fn contiguous_pages_keep_one_base_and_scattered_pages_an_array() {
        let mut sept = Sept::prebuilt(true);
        for index in 0..512u64 {
            sept.map(index * 4096, Hpa(0x100_0000 + index * 4096), SeptState::Pending);
        }
        let contiguous = sept.heap_bytes();
        assert!(matches!(sept.leaf(0).unwrap().pfns, Pfns::Linear(_)));
        // A page out of line turns the table's pfns into an array, keeping the others.
        sept.unmap(5 * 4096);
        sept.map(5 * 4096, Hpa(0x900_0000), SeptState::Pending);
        assert!(matches!(sept.leaf(0).unwrap().pfns, Pfns::Explicit(_)));
        // Two host 2MB ranges: two bytes a pfn.
        assert_eq!(sept.heap_bytes(), contiguous + std::mem::size_of::<Narrow512>() + 512 * 2);
        assert_eq!(sept.entry(5 * 4096).hpa, Hpa(0x900_0000));
        assert_eq!(sept.entry(6 * 4096).hpa, Hpa(0x100_0000 + 6 * 4096));
        assert_eq!(sept.mapped_entries(), 512);
        for index in 0..512u64 {
            sept.unmap(index * 4096);
        }
        assert!(sept.is_empty());
        assert_eq!(sept.heap_bytes(), contiguous, "the table stays, its pfns array is gone");
    }

    #[test]
    fn a_walk_needs_every_table_above_the_entry() {
        let mut sept = Sept::new(true);
        let gpa = 0x4020_0000; // 1GB + 2MB
        assert_eq!(sept.walk(gpa, LEVEL_ROOT), Walk::Reached);
        assert_eq!(sept.walk(gpa, 2), Walk::Failed);
        sept.add_table(gpa, 3, Hpa(0x1000));
        assert_eq!(sept.walk(gpa, 2), Walk::Reached);
        assert_eq!(sept.walk(gpa, 1), Walk::Failed);
        assert!(sept.non_leaf_present(gpa, 3));
        sept.add_table(gpa, 2, Hpa(0x2000));
        assert_eq!(sept.walk(gpa, 0), Walk::Failed);
        sept.add_table(gpa, 1, Hpa(0x3000));
        assert_eq!(sept.walk(gpa, 0), Walk::Reached);
        assert_eq!(sept.walk(gpa + 2 * MB, 0), Walk::Failed, "the next 2MB has no table");
        assert_eq!(sept.table_pages(), [Hpa(0x1000), Hpa(0x2000), Hpa(0x3000)]);
        sept.map(gpa, Hpa(0x8000), SeptState::Pending);
        assert!(!sept.is_empty());
    }

    #[test]
    fn entry_lock_host_loses_then_claims_priority() {
        let mut sept = Sept::prebuilt(true);
        assert_eq!(sept.try_lock_entry(0x1000, Caller::Host), Ok(()));
        assert!(sept.entry(0x1000).locked);
        assert_eq!(sept.try_lock_entry(0x1000, Caller::Host), Err(HpBusy::Busy));
        assert!(sept.entry(0x1000).host_priority);
        sept.release_entry(0x1000);
        assert_eq!(sept.try_lock_entry(0x1000, Caller::Guest), Err(HpBusy::BusyHostPriority));
        assert!(!sept.entry(0x1000).locked, "the guest backed off");
        assert_eq!(sept.try_lock_entry(0x1000, Caller::Host), Ok(()));
        assert!(!sept.entry(0x1000).host_priority, "a host success clears HP");
        sept.release_entry(0x1000);
        assert!(sept.is_empty(), "a free entry with no lock and no HP leaves nothing");
        assert_eq!(sept.locked_entries(), 0);
    }

    #[test]
    fn entry_lock_guest_loses_without_setting_hp_and_keeps_hp_it_finds_free() {
        let mut sept = Sept::prebuilt(true);
        assert_eq!(sept.try_lock_entry(0x2000, Caller::Guest), Ok(()));
        assert_eq!(sept.try_lock_entry(0x2000, Caller::Guest), Err(HpBusy::Busy));
        assert!(!sept.entry(0x2000).host_priority);
        assert_eq!(sept.locked_entries(), 1);
    }

    #[test]
    fn entry_lock_without_host_priority_never_sets_hp() {
        let mut sept = Sept::prebuilt(false);
        assert_eq!(sept.try_lock_entry(0x1000, Caller::Guest), Ok(()));
        assert_eq!(sept.try_lock_entry(0x1000, Caller::Host), Err(HpBusy::Busy));
        assert!(!sept.entry(0x1000).host_priority);
        sept.release_entry(0x1000);
        assert_eq!(sept.try_lock_entry(0x1000, Caller::Guest), Ok(()));
    }

    #[test]
    fn non_leaf_entry_locks_are_sparse_and_keyed_by_level() {
        let mut sept = Sept::new(true);
        assert_eq!(sept.try_lock_non_leaf(0x20_1000, 1, Caller::Host), Ok(()));
        assert!(sept.non_leaf_locked(0x20_0000, 1), "the key is the entry's aligned GPA");
        assert!(!sept.non_leaf_locked(0x20_0000, 2));
        assert_eq!(sept.try_lock_non_leaf(0x20_0000, 1, Caller::Host), Err(HpBusy::Busy));
        assert!(sept.non_leaf_host_priority(0x20_0000, 1));
        sept.release_non_leaf(0x20_0000, 1);
        assert!(!sept.is_empty(), "the HP bit stays");
        assert_eq!(sept.try_lock_non_leaf(0x20_0000, 1, Caller::Host), Ok(()));
        sept.release_non_leaf(0x20_0000, 1);
        assert!(sept.is_empty());
    }

    #[test]
    fn absent_entries_read_as_free() {
        let sept = Sept::new(true);
        assert_eq!(sept.entry(0x5000), SeptEntry::FREE);
        assert_eq!(sept.state(0x5000), SeptState::Free);
        assert!(!sept.contains(0x5000));
    }
}
