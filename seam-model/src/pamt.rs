//! The PAMT tree (spec/seam-module.md §5): 1GB and 2MB entries with their try-locks, the
//! per-2MB DPAMT state, the DPAMT backing bitmap, and the type of every 4KB page.
//!
//! The model has one TDMR, `[0, memory_bytes)`. Per simulated 4KB page it keeps 4 bits of
//! page type and 1 bit of backing bitmap; per 2MB range, how many of its pages are in use
//! and which TD owns them (one owner for the whole range while its pages belong to one TD,
//! an array of 512 owners only for a range shared by several); 4KB entry locks exist only
//! while held. So a 160 GiB machine costs about 31 MB here, plus 1KB per shared range.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lock::{LockMode, Sharex};
use crate::module::{Attempt, HeldLock, LockList, LockStop, ModuleLock};
use crate::{Hpa, PAGE_SIZE, PAGES_PER_2M, RANGE_1G, RANGE_2M};

/// The type a PAMT entry gives its page (spec/constants.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PageType {
    /// Not assigned to anything: free for the host.
    #[doc(alias = "PT_NDA")]
    Nda = 0,
    /// A TD's private page.
    #[doc(alias = "PT_REG")]
    Reg = 3,
    #[doc(alias = "PT_TDR")]
    Tdr = 4,
    #[doc(alias = "PT_TDCX")]
    Tdcx = 5,
    #[doc(alias = "PT_TDVPR")]
    Tdvpr = 6,
    /// A secure-EPT page.
    #[doc(alias = "PT_EPT")]
    Ept = 8,
    /// The module's marker for a 2MB node that owns a DPAMT page pair; no 4KB page has it.
    #[doc(alias = "PT_PAMT")]
    Pamt = 15,
}

impl PageType {
    /// The 4-bit value the module stores.
    pub const fn value(self) -> u8 {
        self as u8
    }

    pub const fn from_value(value: u8) -> Option<PageType> {
        Some(match value {
            0 => PageType::Nda,
            3 => PageType::Reg,
            4 => PageType::Tdr,
            5 => PageType::Tdcx,
            6 => PageType::Tdvpr,
            8 => PageType::Ept,
            15 => PageType::Pamt,
            _ => return None,
        })
    }
}

/// [`PageType::from_value`] of every nibble: reading a page's type is a load.
const PAGE_TYPE_OF_NIBBLE: [Option<PageType>; 16] = {
    let mut table = [None; 16];
    let mut value = 0;
    while value < table.len() {
        table[value] = PageType::from_value(value as u8);
        value += 1;
    }
    table
};

/// What a 2MB range has at its 4KB level (spec §5.3).
///
/// `Mapped2M` of the spec is left out: this version of the model has no huge pages
/// (no PAGE.DEMOTE / PROMOTE), so a range is never mapped as one 2MB page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dpamt2M {
    /// 2MB entry type NDA: no page pair, this entry is the leaf of every walk.
    Unbacked,
    /// 2MB entry type PAMT: the pair holding the 512 4KB entries, and how many of those
    /// 4KB pages are in use (0..=512).
    Backed { hpa0: Hpa, hpa1: Hpa, count: u16 },
}

/// Where a PAMT walk stops (spec §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkTarget {
    /// The page's 2MB entry, exclusive (PAMT.ADD / REMOVE on their range).
    Range2MExclusive,
    /// The page's 4KB entry in this mode; the 2MB entry is taken shared.
    Page4K(LockMode),
}

/// The level a walk reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkEnd {
    /// The 2MB entry is the leaf: the target was the range, or (DPAMT) the range has no
    /// 4KB level.
    Range2M,
    Page4K,
}

#[derive(Clone, Copy, Debug)]
struct Entry2M {
    lock: Sharex,
    /// Protected by `lock`: changes only under it held exclusive, except `count`, which
    /// the module changes atomically while a 4KB lock in the range is held.
    state: Dpamt2M,
}

/// A TD's owner slot: what a PAMT entry's `owner` field (the TDR's address) is in the
/// model, a small index the module maps to its TD.
pub type OwnerSlot = u16;

/// The owners of a 2MB range's in-use pages.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owners {
    /// No page of the range is in use.
    None,
    /// Every in-use page of the range belongs to this TD.
    One(OwnerSlot),
    /// Pages of several TDs: the owner of each page (meaningless for pages not in use).
    Each(Box<[OwnerSlot; PAGES_PER_2M as usize]>),
}

/// What a 2MB range's 4KB pages are used for, summed up.
#[derive(Clone, Debug)]
struct RangeUse {
    // invariant: in_use == number of pages of the range whose type is not NDA.
    in_use: u16,
    owners: Owners,
}

/// The PAMT of the one TDMR `[0, memory_bytes)`.
#[derive(Clone, Debug)]
pub struct Pamt {
    dpamt: bool,
    num_pages: u64,
    entries_1g: Vec<Sharex>,
    entries_2m: Vec<Entry2M>,
    /// By range index. Protected like the 4KB entries it sums up: a page's share changes
    /// under that page's 4KB entry lock (or its range's 2MB lock).
    ranges: Vec<RangeUse>,
    /// 4KB entry locks that some leaf holds; an entry is dropped when fully released.
    // invariant: no entry here is free.
    locks_4k: BTreeMap<u64, Sharex>,
    /// Two pages per byte: the low nibble is the even page.
    // invariant (DPAMT): every page of an unbacked range is NDA.
    page_types: Vec<u8>,
    /// 1 bit per page: the page currently backs some range's 4KB level.
    backing_bitmap: Vec<u64>,
}

/// A PAMT's vectors that [`Pamt::build`] empties and fills: new ones for [`Pamt::new`], an
/// earlier PAMT's for `Module::reset` (their capacities are all that is kept).
#[derive(Default)]
pub(crate) struct PamtStorage {
    entries_1g: Vec<Sharex>,
    entries_2m: Vec<Entry2M>,
    ranges: Vec<RangeUse>,
    page_types: Vec<u8>,
    backing_bitmap: Vec<u64>,
}

impl Pamt {
    /// `memory_bytes` must be a non-zero multiple of 2MB.
    pub fn new(memory_bytes: u64, dpamt: bool) -> Pamt {
        Pamt::build(memory_bytes, dpamt, PamtStorage::default())
    }

    /// This PAMT's vectors, for the next one [`Pamt::build`] makes; it is left empty.
    pub(crate) fn take_storage(&mut self) -> PamtStorage {
        PamtStorage {
            entries_1g: std::mem::take(&mut self.entries_1g),
            entries_2m: std::mem::take(&mut self.entries_2m),
            ranges: std::mem::take(&mut self.ranges),
            page_types: std::mem::take(&mut self.page_types),
            backing_bitmap: std::mem::take(&mut self.backing_bitmap),
        }
    }

    /// The one constructor: every field named, every vector filled from empty.
    pub(crate) fn build(memory_bytes: u64, dpamt: bool, storage: PamtStorage) -> Pamt {
        assert!(memory_bytes > 0, "pamt: memory must not be empty");
        assert_eq!(memory_bytes % RANGE_2M, 0, "pamt: memory must be a multiple of 2MB");
        let num_pages = memory_bytes / PAGE_SIZE;
        let num_ranges = (memory_bytes / RANGE_2M) as usize;
        let entry_2m = Entry2M { lock: Sharex::new(), state: Dpamt2M::Unbacked };
        let PamtStorage { mut entries_1g, mut entries_2m, mut ranges, mut page_types, mut backing_bitmap } =
            storage;
        entries_1g.clear();
        entries_1g.resize(memory_bytes.div_ceil(RANGE_1G) as usize, Sharex::new());
        entries_2m.clear();
        entries_2m.resize(num_ranges, entry_2m);
        ranges.clear();
        ranges.extend((0..num_ranges).map(|_| RangeUse { in_use: 0, owners: Owners::None }));
        page_types.clear();
        page_types.resize(num_pages.div_ceil(2) as usize, 0);
        backing_bitmap.clear();
        backing_bitmap.resize(num_pages.div_ceil(64) as usize, 0);
        Pamt {
            dpamt,
            num_pages,
            entries_1g,
            entries_2m,
            ranges,
            locks_4k: BTreeMap::new(),
            page_types,
            backing_bitmap,
        }
    }

    pub fn is_dpamt(&self) -> bool {
        self.dpamt
    }

    pub fn memory_bytes(&self) -> u64 {
        self.num_pages * PAGE_SIZE
    }

    pub fn contains(&self, address: Hpa) -> bool {
        address.0 < self.memory_bytes()
    }

    pub fn num_ranges(&self) -> usize {
        self.entries_2m.len()
    }

    /// The DPAMT state of a range; always `Unbacked` with static PAMT, which has no DPAMT
    /// state (see [`Pamt::has_4k_level`]).
    pub fn dpamt(&self, range_index: usize) -> Dpamt2M {
        self.entries_2m[range_index].state
    }

    /// Whether walks into this range go down to 4KB entries: always with static PAMT,
    /// only when `Backed` with DPAMT.
    pub fn has_4k_level(&self, range_index: usize) -> bool {
        !self.dpamt || matches!(self.entries_2m[range_index].state, Dpamt2M::Backed { .. })
    }

    /// Inline: PAMT.ADD's lock set reads a pair page's type between its attempts, each pass.
    #[inline]
    pub fn page_type(&self, page: Hpa) -> PageType {
        let pfn = page.pfn();
        let byte = self.page_types[(pfn / 2) as usize];
        let nibble = if pfn.is_multiple_of(2) { byte & 0xF } else { byte >> 4 };
        PAGE_TYPE_OF_NIBBLE[usize::from(nibble)].expect("pamt: only PageType values are ever stored")
    }

    pub fn is_backing_page(&self, page: Hpa) -> bool {
        let pfn = page.pfn();
        self.backing_bitmap[(pfn / 64) as usize] & (1 << (pfn % 64)) != 0
    }

    /// Index (0..512) of the first page of the range whose type is not NDA. O(1) when no
    /// page of the range is in use; a scan of the range otherwise.
    ///
    /// Inline: the state checker's `no-page-in-unbacked-range` asks it, mostly of empty
    /// ranges, and so do PAMT.ADD and REMOVE; the scan is out of line.
    #[inline]
    pub fn first_page_in_use(&self, range_index: usize) -> Option<u64> {
        if self.ranges[range_index].in_use == 0 {
            return None;
        }
        self.scan_first_page_in_use(range_index)
    }

    #[inline(never)]
    fn scan_first_page_in_use(&self, range_index: usize) -> Option<u64> {
        let base = Hpa(range_index as u64 * RANGE_2M);
        let first = (0..PAGES_PER_2M).find(|i| self.page_type(Hpa(base.0 + i * PAGE_SIZE)) != PageType::Nda);
        assert!(first.is_some(), "pamt: range {range_index} counts pages in use but has none");
        first
    }

    /// How many 4KB pages of the range are in use (type not NDA), whatever the PAMT mode.
    pub fn pages_in_use(&self, range_index: usize) -> u16 {
        self.ranges[range_index].in_use
    }

    /// The owner slot of an in-use page (`None` for an NDA page).
    pub fn owner(&self, page: Hpa) -> Option<OwnerSlot> {
        if self.page_type(page) == PageType::Nda {
            return None;
        }
        match &self.ranges[page.range_index()].owners {
            Owners::None => unreachable!("pamt: an in-use page has an owner"),
            Owners::One(slot) => Some(*slot),
            Owners::Each(slots) => Some(slots[page_index(page)]),
        }
    }

    /// The bytes the PAMT owns on the heap: per-page types and bitmap, per-range entries
    /// and summaries, and the owner arrays of shared ranges.
    pub fn heap_bytes(&self) -> usize {
        let shared = self.ranges.iter().filter(|range| matches!(range.owners, Owners::Each(_))).count();
        self.page_types.len()
            + self.backing_bitmap.len() * std::mem::size_of::<u64>()
            + self.entries_1g.len() * std::mem::size_of::<Sharex>()
            + self.entries_2m.len() * std::mem::size_of::<Entry2M>()
            + self.ranges.len() * std::mem::size_of::<RangeUse>()
            + shared * std::mem::size_of::<[OwnerSlot; PAGES_PER_2M as usize]>()
            + self.locks_4k.len() * (std::mem::size_of::<u64>() + std::mem::size_of::<Sharex>())
    }

    /// Locks held right now, counting each reader (for tests and checkers).
    pub fn held_lock_count(&self) -> usize {
        let gb: usize = self.entries_1g.iter().map(Sharex::holders).sum();
        let range: usize = self.entries_2m.iter().map(|entry| entry.lock.holders()).sum();
        let page: usize = self.locks_4k.values().map(Sharex::holders).sum();
        gb + range + page
    }

    /// A page-assigning leaf gives an NDA page its type and owner: the range counts one
    /// more page in use, and (DPAMT) its 2MB node's count goes up.
    pub(crate) fn assign_page(&mut self, page: Hpa, page_type: PageType, owner: OwnerSlot) {
        assert_ne!(page_type, PageType::Nda, "pamt: assigning a page makes it in use");
        assert_eq!(self.page_type(page), PageType::Nda, "pamt: assigning page {page} that is in use");
        let range_index = page.range_index();
        self.set_page_type(page, page_type);
        let range = &mut self.ranges[range_index];
        range.owners = match std::mem::replace(&mut range.owners, Owners::None) {
            Owners::None => Owners::One(owner),
            Owners::One(slot) if slot == owner => Owners::One(slot),
            Owners::One(slot) => {
                let mut slots = Box::new([slot; PAGES_PER_2M as usize]);
                slots[page_index(page)] = owner;
                Owners::Each(slots)
            }
            Owners::Each(mut slots) => {
                slots[page_index(page)] = owner;
                Owners::Each(slots)
            }
        };
        range.in_use += 1;
        self.count_up(range_index);
        self.assert_count_matches(range_index);
    }

    /// A page-freeing leaf makes an in-use page NDA again. Returns the range's new DPAMT
    /// count (`None` with static PAMT): 0 is when the leaf reports the removal hint.
    pub(crate) fn free_page(&mut self, page: Hpa) -> Option<u16> {
        assert_ne!(self.page_type(page), PageType::Nda, "pamt: freeing page {page} that is free");
        let range_index = page.range_index();
        self.set_page_type(page, PageType::Nda);
        let range = &mut self.ranges[range_index];
        range.in_use = range.in_use.checked_sub(1).expect("pamt: in-use count below 0");
        if range.in_use == 0 {
            range.owners = Owners::None;
        }
        let count = self.count_down(range_index);
        self.assert_count_matches(range_index);
        count
    }

    /// invariant (DPAMT): a backed range's count is its pages in use.
    fn assert_count_matches(&self, range_index: usize) {
        if let Dpamt2M::Backed { count, .. } = self.entries_2m[range_index].state {
            assert_eq!(count, self.ranges[range_index].in_use, "pamt: DPAMT count vs pages in use");
        }
    }

    fn set_page_type(&mut self, page: Hpa, page_type: PageType) {
        let pfn = page.pfn();
        let byte = &mut self.page_types[(pfn / 2) as usize];
        *byte = if pfn.is_multiple_of(2) {
            (*byte & 0xF0) | page_type.value()
        } else {
            (*byte & 0x0F) | (page_type.value() << 4)
        };
    }

    /// Sets or clears a page's bitmap bit; returns what it was.
    pub(crate) fn set_backing_page(&mut self, page: Hpa, backing: bool) -> bool {
        let pfn = page.pfn();
        let word = &mut self.backing_bitmap[(pfn / 64) as usize];
        let bit = 1 << (pfn % 64);
        let was = *word & bit != 0;
        if backing {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        was
    }

    pub(crate) fn set_dpamt(&mut self, range_index: usize, state: Dpamt2M) {
        assert!(self.dpamt, "pamt: static PAMT has no DPAMT state");
        self.entries_2m[range_index].state = state;
    }

    /// A page of the range became in use (page-assigning leaf). No-op with static PAMT.
    fn count_up(&mut self, range_index: usize) {
        if let Dpamt2M::Backed { count, .. } = &mut self.entries_2m[range_index].state {
            assert!(*count < PAGES_PER_2M as u16, "pamt: count above 512");
            *count += 1;
        }
    }

    /// A page of the range was freed (page-freeing leaf); returns the new count, `None`
    /// with static PAMT.
    fn count_down(&mut self, range_index: usize) -> Option<u16> {
        assert!(self.has_4k_level(range_index), "pamt: freeing a page of an unbacked range");
        match &mut self.entries_2m[range_index].state {
            Dpamt2M::Backed { count, .. } => {
                *count = count.checked_sub(1).expect("pamt: count below 0");
                Some(*count)
            }
            Dpamt2M::Unbacked => None,
        }
    }

    /// The PAMT walk of spec §5.2 for `page`, taking each lock into `list`, one attempt at
    /// a time as the list's pass allows (see module/locks.rs).
    ///
    /// A 2MB exclusive target is taken shared and then promoted, as the module does (two
    /// try-lock attempts). On contention returns `Contended`; what the walk took stays in
    /// `list` for the leaf to undo (after a failed promote, the 2MB entry held shared, last).
    ///
    /// Inline: most passes replay a walk an earlier pass made in full, and that check is a
    /// few instructions; the walk that makes attempts is out of line.
    #[inline]
    pub(crate) fn walk(
        &mut self,
        page: Hpa,
        target: WalkTarget,
        list: &mut LockList,
    ) -> Result<WalkEnd, LockStop> {
        // A walk an earlier pass made in full replays each attempt and ends where it goes
        // now: the same path in one step.
        let (attempts, end) = match target {
            WalkTarget::Range2MExclusive => (3, WalkEnd::Range2M),
            WalkTarget::Page4K(_) if self.has_4k_level(page.range_index()) => (3, WalkEnd::Page4K),
            WalkTarget::Page4K(_) => (2, WalkEnd::Range2M),
        };
        if list.replay(attempts) {
            return Ok(end);
        }
        // A walk starts with an attempt: after the pass's new one, it pauses there.
        if list.is_paused() {
            return Err(LockStop::Pause);
        }
        self.walk_attempts(page, target, list)
    }

    /// The part of [`Pamt::walk`] past a full replay: the attempts this pass makes.
    #[inline(never)]
    fn walk_attempts(
        &mut self,
        page: Hpa,
        target: WalkTarget,
        list: &mut LockList,
    ) -> Result<WalkEnd, LockStop> {
        // A walk that replays in full was checked when it made its attempts.
        assert!(self.contains(page), "pamt: walk outside memory, operand checks missed it");
        let range_index = page.range_index();
        // Its 1GB and 2MB shared holds replay in one step when an earlier pass took both.
        let range = ModuleLock::Pamt2M(range_index);
        if !list.replay(2) {
            let gb_index = (page.0 / RANGE_1G) as usize;
            let gb = HeldLock { lock: ModuleLock::Pamt1G(gb_index), mode: LockMode::Shared };
            try_lock_entry(&mut self.entries_1g[gb_index], gb, list)?;
            let range_shared = HeldLock { lock: range, mode: LockMode::Shared };
            try_lock_entry(&mut self.entries_2m[range_index].lock, range_shared, list)?;
        }
        match target {
            WalkTarget::Range2MExclusive => {
                if let Attempt::Try = list.next_attempt()? {
                    if !self.entries_2m[range_index].lock.promote() {
                        return Err(LockStop::Contended);
                    }
                    let last = list.held.last_mut().expect("pamt: the shared 2MB hold was pushed");
                    assert_eq!(last.lock, range);
                    last.mode = LockMode::Exclusive;
                }
                Ok(WalkEnd::Range2M)
            }
            WalkTarget::Page4K(mode) => {
                if !self.has_4k_level(range_index) {
                    return Ok(WalkEnd::Range2M);
                }
                self.try_lock(ModuleLock::Pamt4K(page.pfn()), mode, list)?;
                Ok(WalkEnd::Page4K)
            }
        }
    }

    /// One try-lock on a PAMT entry; on success the hold goes into `list`.
    ///
    /// Inline: about half the calls replay an attempt or pause, a few instructions; the
    /// acquisition is out of line.
    #[inline]
    pub(crate) fn try_lock(
        &mut self,
        lock: ModuleLock,
        mode: LockMode,
        list: &mut LockList,
    ) -> Result<(), LockStop> {
        match list.next_attempt()? {
            Attempt::Replay => Ok(()),
            Attempt::Try => self.acquire(lock, mode, list),
        }
    }

    /// The attempt of [`Pamt::try_lock`] that a pass makes.
    #[inline(never)]
    fn acquire(&mut self, lock: ModuleLock, mode: LockMode, list: &mut LockList) -> Result<(), LockStop> {
        let sharex = match lock {
            ModuleLock::Pamt1G(index) => &mut self.entries_1g[index],
            ModuleLock::Pamt2M(index) => &mut self.entries_2m[index].lock,
            ModuleLock::Pamt4K(pfn) => self.locks_4k.entry(pfn).or_default(),
            other => unreachable!("pamt: {other} is not a PAMT lock"),
        };
        take_entry(sharex, HeldLock { lock, mode }, list)
    }

    /// Releases any PAMT lock; the module releases by level (`Module::release_all`).
    #[cfg(test)]
    fn release(&mut self, lock: ModuleLock, mode: LockMode) {
        match lock {
            ModuleLock::Pamt1G(index) => self.release_1g(index, mode),
            ModuleLock::Pamt2M(index) => self.release_2m(index, mode),
            ModuleLock::Pamt4K(pfn) => self.release_4k(pfn, mode),
            _ => unreachable!("pamt: {lock} is not a PAMT lock"),
        }
    }

    /// Inline: a leaf releases a 1GB and a 2MB entry for each walk, a flag or count each;
    /// a 4KB entry's release (a map entry) is out of line.
    #[inline]
    pub(crate) fn release_1g(&mut self, index: usize, mode: LockMode) {
        self.entries_1g[index].release(mode);
    }

    #[inline]
    pub(crate) fn release_2m(&mut self, index: usize, mode: LockMode) {
        self.entries_2m[index].lock.release(mode);
    }

    #[inline(never)]
    pub(crate) fn release_4k(&mut self, pfn: u64, mode: LockMode) {
        let sharex = self.locks_4k.get_mut(&pfn).expect("pamt: releasing an unheld 4KB lock");
        sharex.release(mode);
        if sharex.is_free() {
            self.locks_4k.remove(&pfn);
        }
    }

    /// Whether a walk to `page`'s 4KB entry would take every lock at once: the 1GB and 2MB
    /// entries not held exclusive, the page's own entry (where the range has the 4KB level)
    /// held by nobody.
    pub(crate) fn page_walk_is_free(&self, page: Hpa) -> bool {
        let range_index = page.range_index();
        let gb = &self.entries_1g[(page.0 / RANGE_1G) as usize];
        !gb.is_exclusive()
            && !self.entries_2m[range_index].lock.is_exclusive()
            && (!self.has_4k_level(range_index) || !self.locks_4k.contains_key(&page.pfn()))
    }

    /// Whether `lock` is held in `mode` right now (for finish-time assertions).
    pub(crate) fn is_held(&self, lock: ModuleLock, mode: LockMode) -> bool {
        let sharex = match lock {
            ModuleLock::Pamt1G(index) => self.entries_1g[index],
            ModuleLock::Pamt2M(index) => self.entries_2m[index].lock,
            ModuleLock::Pamt4K(pfn) => self.locks_4k.get(&pfn).copied().unwrap_or_default(),
            _ => unreachable!("pamt: {lock} is not a PAMT lock"),
        };
        match mode {
            LockMode::Shared => sharex.readers() > 0,
            LockMode::Exclusive => sharex.is_exclusive(),
        }
    }
}

/// One try-lock on the 1GB or 2MB entry `sharex` that `held` names: what
/// [`Pamt::try_lock`] does, for a walk that has the entry at hand.
#[inline]
fn try_lock_entry(sharex: &mut Sharex, held: HeldLock, list: &mut LockList) -> Result<(), LockStop> {
    if let Attempt::Replay = list.next_attempt()? {
        return Ok(());
    }
    take_entry(sharex, held, list)
}

/// The attempt on the entry `sharex` that `held` names; on success the hold goes into `list`.
#[inline]
fn take_entry(sharex: &mut Sharex, held: HeldLock, list: &mut LockList) -> Result<(), LockStop> {
    let taken = match held.mode {
        LockMode::Shared => sharex.acquire_shared(),
        LockMode::Exclusive => sharex.acquire_exclusive(),
    };
    if !taken {
        return Err(LockStop::Contended);
    }
    list.held.push(held);
    Ok(())
}

/// The index of `page` in its 2MB range.
const fn page_index(page: Hpa) -> usize {
    (page.pfn() % PAGES_PER_2M) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn release_all(pamt: &mut Pamt, list: &mut LockList) {
        while let Some(held) = list.held.pop() {
            pamt.release(held.lock, held.mode);
        }
    }

    #[test]
    fn page_types_pack_two_per_byte_without_clobbering_neighbours() {
        let mut pamt = Pamt::new(4 * MB, true);
        pamt.set_page_type(Hpa(0x1000), PageType::Reg);
        pamt.set_page_type(Hpa(0x2000), PageType::Pamt);
        assert_eq!(pamt.page_type(Hpa(0x0000)), PageType::Nda);
        assert_eq!(pamt.page_type(Hpa(0x1000)), PageType::Reg);
        assert_eq!(pamt.page_type(Hpa(0x2000)), PageType::Pamt);
        assert_eq!(pamt.page_type(Hpa(0x3000)), PageType::Nda);
        pamt.set_page_type(Hpa(0x1000), PageType::Nda);
        assert_eq!(pamt.page_type(Hpa(0x1000)), PageType::Nda);
        assert_eq!(pamt.page_type(Hpa(0x2000)), PageType::Pamt);
        for page_type in [PageType::Tdr, PageType::Tdcx, PageType::Tdvpr, PageType::Ept] {
            assert_eq!(PageType::from_value(page_type.value()), Some(page_type));
        }
        assert_eq!(PageType::from_value(1), None);
    }

    #[test]
    fn bitmap_is_one_bit_per_page() {
        let mut pamt = Pamt::new(4 * MB, true);
        assert!(!pamt.set_backing_page(Hpa(0x3F000), true));
        assert!(pamt.is_backing_page(Hpa(0x3F000)));
        assert!(!pamt.is_backing_page(Hpa(0x3E000)));
        assert!(!pamt.is_backing_page(Hpa(0x40000)));
        assert!(pamt.set_backing_page(Hpa(0x3F000), false));
        assert!(!pamt.is_backing_page(Hpa(0x3F000)));
    }

    #[test]
    fn a_160_gib_machine_costs_under_one_byte_per_page() {
        let memory_bytes = 160 << 30;
        let pamt = Pamt::new(memory_bytes, true);
        let pages = memory_bytes / PAGE_SIZE;
        let bytes = pamt.heap_bytes();
        assert!((bytes as u64) < pages * 3 / 4, "{bytes} bytes for {pages} pages");
        assert_eq!(pamt.num_ranges(), 160 * 512);
        assert_eq!(pamt.entries_1g.len(), 160);
    }

    #[test]
    fn one_gb_entries_round_up() {
        let pamt = Pamt::new(RANGE_1G + 2 * MB, true);
        assert_eq!(pamt.entries_1g.len(), 2);
        assert_eq!(pamt.num_ranges(), 513);
    }

    #[test]
    fn walk_to_a_range_exclusive_takes_1g_shared_then_promotes() {
        let mut pamt = Pamt::new(4 * MB, true);
        let mut list = LockList::atomic();
        let end = pamt.walk(Hpa(0x200000), WalkTarget::Range2MExclusive, &mut list);
        assert_eq!(end, Ok(WalkEnd::Range2M));
        assert_eq!(
            list.held.as_slice(),
            [
                HeldLock { lock: ModuleLock::Pamt1G(0), mode: LockMode::Shared },
                HeldLock { lock: ModuleLock::Pamt2M(1), mode: LockMode::Exclusive },
            ]
        );
        assert_eq!(list.try_locks, 3, "1GB shared, 2MB shared, promote");
        assert!(pamt.is_held(ModuleLock::Pamt2M(1), LockMode::Exclusive));
        release_all(&mut pamt, &mut list);
        assert_eq!(pamt.held_lock_count(), 0);
    }

    #[test]
    fn walk_to_a_page_of_an_unbacked_dpamt_range_stops_at_2m() {
        let mut pamt = Pamt::new(4 * MB, true);
        let mut list = LockList::atomic();
        let end = pamt.walk(Hpa(0x201000), WalkTarget::Page4K(LockMode::Exclusive), &mut list);
        assert_eq!(end, Ok(WalkEnd::Range2M));
        assert_eq!(list.held.len(), 2);
        assert_eq!(list.held[1], HeldLock { lock: ModuleLock::Pamt2M(1), mode: LockMode::Shared });
        release_all(&mut pamt, &mut list);
    }

    #[test]
    fn walk_to_a_page_of_a_backed_range_takes_its_4k_entry() {
        let mut pamt = Pamt::new(4 * MB, true);
        pamt.set_dpamt(1, Dpamt2M::Backed { hpa0: Hpa(0), hpa1: Hpa(0x1000), count: 0 });
        let mut list = LockList::atomic();
        let end = pamt.walk(Hpa(0x201000), WalkTarget::Page4K(LockMode::Exclusive), &mut list);
        assert_eq!(end, Ok(WalkEnd::Page4K));
        assert_eq!(list.held[2], HeldLock { lock: ModuleLock::Pamt4K(0x201), mode: LockMode::Exclusive });
        assert_eq!(pamt.held_lock_count(), 3);
        release_all(&mut pamt, &mut list);
        assert!(pamt.locks_4k.is_empty(), "a released 4KB lock leaves no entry behind");
    }

    #[test]
    fn static_pamt_always_has_the_4k_level() {
        let mut pamt = Pamt::new(4 * MB, false);
        assert!(pamt.has_4k_level(0));
        assert_eq!(pamt.dpamt(0), Dpamt2M::Unbacked);
        let mut list = LockList::atomic();
        let end = pamt.walk(Hpa(0x1000), WalkTarget::Page4K(LockMode::Shared), &mut list);
        assert_eq!(end, Ok(WalkEnd::Page4K));
        assert_eq!(pamt.count_down(0), None, "static PAMT keeps no count");
        release_all(&mut pamt, &mut list);
    }

    #[test]
    fn walk_reports_the_lock_that_failed() {
        let mut pamt = Pamt::new(4 * MB, true);
        let mut holder = LockList::atomic();
        pamt.walk(Hpa(0x200000), WalkTarget::Range2MExclusive, &mut holder).unwrap();

        let mut list = LockList::atomic();
        let end = pamt.walk(Hpa(0x203000), WalkTarget::Page4K(LockMode::Shared), &mut list);
        assert_eq!(end, Err(LockStop::Contended));
        assert_eq!(list.held.len(), 1, "only the 1GB entry was taken");
        release_all(&mut pamt, &mut list);

        // A reader on the range makes the promote fail, not the shared acquire.
        let mut reader = LockList::atomic();
        release_all(&mut pamt, &mut holder);
        pamt.walk(Hpa(0x203000), WalkTarget::Page4K(LockMode::Shared), &mut reader).unwrap();
        let mut list = LockList::atomic();
        let end = pamt.walk(Hpa(0x200000), WalkTarget::Range2MExclusive, &mut list);
        assert_eq!(end, Err(LockStop::Contended));
        assert_eq!(list.try_locks, 3);
        assert_eq!(list.held.len(), 2, "the shared 2MB hold stays for the leaf to undo");
        release_all(&mut pamt, &mut list);
        release_all(&mut pamt, &mut reader);
        assert_eq!(pamt.held_lock_count(), 0);
    }

    #[test]
    fn counts_move_only_on_backed_ranges() {
        let mut pamt = Pamt::new(4 * MB, true);
        pamt.count_up(0);
        assert_eq!(pamt.dpamt(0), Dpamt2M::Unbacked);
        pamt.set_dpamt(0, Dpamt2M::Backed { hpa0: Hpa(0x200000), hpa1: Hpa(0x201000), count: 0 });
        pamt.count_up(0);
        pamt.count_up(0);
        assert_eq!(pamt.count_down(0), Some(1));
        assert_eq!(pamt.count_down(0), Some(0));
    }

    #[test]
    fn first_page_in_use_is_free_for_an_empty_range_and_scans_otherwise() {
        let mut pamt = Pamt::new(4 * MB, false);
        assert_eq!(pamt.first_page_in_use(1), None);
        pamt.assign_page(Hpa(0x200000 + 300 * PAGE_SIZE), PageType::Reg, 1);
        pamt.assign_page(Hpa(0x200000 + 511 * PAGE_SIZE), PageType::Reg, 1);
        assert_eq!(pamt.pages_in_use(1), 2);
        assert_eq!(pamt.first_page_in_use(1), Some(300));
        assert_eq!(pamt.first_page_in_use(0), None);
        assert_eq!(pamt.free_page(Hpa(0x200000 + 300 * PAGE_SIZE)), None, "static PAMT keeps no count");
        assert_eq!(pamt.first_page_in_use(1), Some(511));
    }

    #[test]
    fn a_range_of_one_owner_keeps_one_slot_and_a_shared_range_an_array() {
        let mut pamt = Pamt::new(4 * MB, false);
        let before = pamt.heap_bytes();
        pamt.assign_page(Hpa(0x1000), PageType::Reg, 3);
        pamt.assign_page(Hpa(0x2000), PageType::Tdvpr, 3);
        assert_eq!(pamt.owner(Hpa(0x1000)), Some(3));
        assert_eq!(pamt.heap_bytes(), before, "one owner costs nothing per page");
        pamt.assign_page(Hpa(0x3000), PageType::Reg, 4);
        assert_eq!(pamt.owner(Hpa(0x2000)), Some(3));
        assert_eq!(pamt.owner(Hpa(0x3000)), Some(4));
        assert_eq!(pamt.owner(Hpa(0x4000)), None);
        assert_eq!(pamt.heap_bytes(), before + 1024);
        for page in [0x1000, 0x2000, 0x3000] {
            pamt.free_page(Hpa(page));
        }
        assert_eq!(pamt.heap_bytes(), before, "an unused range forgets its owners");
    }

    #[test]
    fn dpamt_counts_follow_assign_and_free() {
        let mut pamt = Pamt::new(4 * MB, true);
        pamt.set_dpamt(1, Dpamt2M::Backed { hpa0: Hpa(0), hpa1: Hpa(0x1000), count: 0 });
        pamt.assign_page(Hpa(0x201000), PageType::Reg, 0);
        pamt.assign_page(Hpa(0x202000), PageType::Ept, 0);
        assert!(matches!(pamt.dpamt(1), Dpamt2M::Backed { count: 2, .. }));
        assert_eq!(pamt.free_page(Hpa(0x201000)), Some(1));
        assert_eq!(pamt.free_page(Hpa(0x202000)), Some(0));
        assert_eq!(pamt.pages_in_use(1), 0);
    }
}
