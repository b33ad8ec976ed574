//! `alloc_page()` / `__free_page()` over the simulated machine's memory.
//!
//! Deterministic: freed pages are reused last-in first-out (like the per-CPU page lists),
//! and fresh pages come from the top of memory downwards. 2MB ranges that hold pages a
//! scenario names are never handed out, so a scenario controls which ranges it races on;
//! a scenario that wants a pair page inside such a range names it in `pair`.
//!
//! A guest_memfd allocates through a *stream* ([`alloc_gmem_page`]) whose locality says how
//! often two consecutive pages of the stream share a 2MB range (the host allocator's
//! fragmentation as a TD's private memory sees it): with probability `locality` the next
//! page is the next free one below the stream's last in the same range (or, that range
//! full, in the next range down); otherwise it is a page of a range drawn at random. The
//! draws go through the run's chooser (`get_random_u32_below`), so a seed replays them.
//!
//! The allocator's state is one bit per 4KB page (handed out or not), and two bytes and a
//! bit per 2MB range (how many of its pages are handed out; whether it is closed to streams,
//! full or reserved), so a 160 GiB machine costs 5 MB.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use seam_model::{Hpa, PAGE_SIZE, RANGE_2M, TdId};
use sim_core::Span;

use super::cpu::{Cpu, mark};
use super::lockdep::might_sleep;
use super::random::get_random_u32_below;

/// 4KB pages per 2MB range.
const PAGES_PER_RANGE: u64 = RANGE_2M / PAGE_SIZE;

/// How a stream's locality is drawn: `stay` in `LOCALITY_ONE` means "always".
pub const LOCALITY_ONE: u32 = 1 << 16;

pub struct PageAllocator {
    /// Next never-used page, counting down; `None` once memory is used up.
    next_fresh: Option<u64>,
    /// Pages given back, reused last-in first-out. May hold a page a stream took since
    /// (a stream takes any free page); such entries are skipped when popped.
    freed: Vec<Hpa>,
    /// Indices of 2MB ranges the allocator must not hand out: the host configuration's,
    /// shared by every run of a scenario rather than copied into each.
    reserved_ranges: Arc<BTreeSet<usize>>,
    /// One bit per page: handed out and not freed since.
    allocated: Vec<u64>,
    /// Per 2MB range: how many of its pages are handed out.
    range_used: Vec<u16>,
    /// One bit per 2MB range: closed to streams, being full or reserved (the bits past the
    /// last range are set), so a stream that jumps finds an open range a word at a time.
    closed: Vec<u64>,
    /// Per stream: the page it took last, and its locality in 1/65536ths.
    streams: Vec<Stream>,
    /// The stream of each TD's guest_memfd that has one (a workload's TDs).
    gmem_streams: BTreeMap<TdId, usize>,
}

/// One guest_memfd's allocation stream.
#[derive(Clone, Debug)]
struct Stream {
    last: Option<Hpa>,
    /// Chance in `LOCALITY_ONE` that the next page stays next to the last one.
    locality: u32,
    /// Pages drawn ahead of their faults (by a coalescer, `kvm::coalesce`, that then let
    /// the faults run in full), handed out by the stream's next allocations, the last first.
    ahead: Vec<Hpa>,
}

impl PageAllocator {
    pub fn new(memory_bytes: u64, reserved_ranges: impl Into<Arc<BTreeSet<usize>>>) -> PageAllocator {
        let pages = memory_bytes / PAGE_SIZE;
        let ranges = (memory_bytes / RANGE_2M) as usize;
        let reserved_ranges: Arc<BTreeSet<usize>> = reserved_ranges.into();
        let mut closed = vec![0u64; ranges.div_ceil(64)];
        for index in
            reserved_ranges.iter().copied().filter(|&index| index < ranges).chain(ranges..closed.len() * 64)
        {
            closed[index / 64] |= 1 << (index % 64);
        }
        PageAllocator {
            next_fresh: memory_bytes.checked_sub(PAGE_SIZE),
            freed: Vec::new(),
            reserved_ranges,
            allocated: vec![0; pages.div_ceil(64) as usize],
            range_used: vec![0; ranges],
            closed,
            streams: Vec::new(),
            gmem_streams: BTreeMap::new(),
        }
    }

    /// An allocator whose TDs in `gmem_locality` allocate guest_memfd pages in streams of
    /// their locality (in 1/65536ths).
    pub fn with_gmem_streams(
        memory_bytes: u64,
        reserved_ranges: Arc<BTreeSet<usize>>,
        gmem_locality: &BTreeMap<TdId, u32>,
    ) -> PageAllocator {
        let mut pages = PageAllocator::new(memory_bytes, reserved_ranges);
        for (&td, &locality) in gmem_locality {
            pages.add_gmem_stream(td, locality);
        }
        pages
    }

    /// Gives TD `td`'s guest_memfd its own stream with `locality` (in 1/65536ths).
    pub fn add_gmem_stream(&mut self, td: TdId, locality: u32) {
        let stream = self.add_stream(locality);
        self.gmem_streams.insert(td, stream);
    }

    /// Adds an allocation stream with `locality` in 1/65536ths (at most [`LOCALITY_ONE`]);
    /// returns its number.
    pub fn add_stream(&mut self, locality: u32) -> usize {
        assert!(locality <= LOCALITY_ONE, "add_stream: locality {locality} above 1");
        self.streams.push(Stream { last: None, locality, ahead: Vec::new() });
        self.streams.len() - 1
    }

    /// Keeps `pages`, which TD `td`'s stream handed out, for the stream's next allocations,
    /// in their order: pages drawn ahead of the faults that will use them.
    pub fn keep_ahead(&mut self, td: TdId, pages: &[Hpa]) {
        let stream = self.gmem_streams[&td];
        self.streams[stream].ahead.extend(pages.iter().rev());
    }

    /// Pages handed out and not freed since, in address order.
    pub fn allocated(&self) -> impl Iterator<Item = Hpa> + '_ {
        self.allocated.iter().enumerate().flat_map(|(word_index, &word)| {
            BitIter(word).map(move |bit| Hpa((word_index as u64 * 64 + u64::from(bit)) * PAGE_SIZE))
        })
    }

    /// How many pages are handed out.
    pub fn allocated_count(&self) -> u64 {
        self.range_used.iter().map(|&used| u64::from(used)).sum()
    }

    fn is_allocated(&self, page: Hpa) -> bool {
        let index = page.0 / PAGE_SIZE;
        self.allocated[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    fn mark(&mut self, page: Hpa, allocated: bool) {
        let index = page.0 / PAGE_SIZE;
        let word = &mut self.allocated[(index / 64) as usize];
        let bit = 1u64 << (index % 64);
        debug_assert_eq!(*word & bit != 0, !allocated, "page_alloc: {page} marked twice");
        let range = page.range_index();
        let used = &mut self.range_used[range];
        if allocated {
            *word |= bit;
            *used += 1;
        } else {
            *word &= !bit;
            *used -= 1;
        }
        // A reserved range hands out no page, so only fullness moves its bit.
        debug_assert!(!self.reserved_ranges.contains(&range), "page_alloc: {page} is in a reserved range");
        let full = u64::from(*used) == PAGES_PER_RANGE;
        let closed = &mut self.closed[range / 64];
        *closed = (*closed & !(1 << (range % 64))) | (u64::from(full) << (range % 64));
    }

    fn take(&mut self) -> Option<Hpa> {
        let page = self.take_page()?;
        self.mark(page, true);
        Some(page)
    }

    fn take_page(&mut self) -> Option<Hpa> {
        while let Some(page) = self.freed.pop() {
            if !self.is_allocated(page) {
                return Some(page);
            }
        }
        loop {
            let address = self.next_fresh?;
            self.next_fresh = address.checked_sub(PAGE_SIZE);
            let page = Hpa(address);
            if self.reserved_ranges.contains(&page.range_index()) {
                // Skip the whole reserved range at once.
                self.next_fresh = page.range_base().0.checked_sub(PAGE_SIZE);
                debug_assert_eq!(page.range_base().0 % RANGE_2M, 0);
                continue;
            }
            if !self.is_allocated(page) {
                return Some(page);
            }
        }
    }

    /// Whether range `index` has a page a stream may take.
    fn range_open(&self, index: usize) -> bool {
        self.closed[index / 64] & (1 << (index % 64)) == 0
    }

    /// The highest free page of range `index` below `below` (exclusive; `None`: the whole
    /// range).
    fn free_page_in_range(&self, index: usize, below: Option<Hpa>) -> Option<Hpa> {
        let first = index as u64 * PAGES_PER_RANGE;
        let end = below.map_or(first + PAGES_PER_RANGE, |page| page.0 / PAGE_SIZE);
        let mut page = end;
        while page > first {
            // Word by word: the bits of pages [word start, page) that are free.
            let word_start = ((page - 1) / 64 * 64).max(first);
            let word = self.allocated[(word_start / 64) as usize];
            let span = page - word_start;
            let mask = if span == 64 { u64::MAX } else { ((1u64 << span) - 1) << (word_start % 64) };
            let free = !word & mask;
            if free != 0 {
                let bit = 63 - u64::from(free.leading_zeros());
                return Some(Hpa(((word_start / 64) * 64 + bit) * PAGE_SIZE));
            }
            page = word_start;
        }
        None
    }

    /// The first open range at or below `index`, wrapping to the top of memory.
    fn open_range_from(&self, index: usize) -> Option<usize> {
        let top = self.range_used.len().checked_sub(1)?;
        self.open_range_at_or_below(index)
            .or_else(|| self.open_range_at_or_below(top).filter(|&range| range > index))
    }

    /// The highest open range at or below `index`.
    fn open_range_at_or_below(&self, index: usize) -> Option<usize> {
        let mut word = index / 64;
        let mut open = !self.closed[word] & (u64::MAX >> (63 - index % 64));
        loop {
            if open != 0 {
                return Some(word * 64 + 63 - open.leading_zeros() as usize);
            }
            word = word.checked_sub(1)?;
            open = !self.closed[word];
        }
    }

    /// The next page of stream `stream`: next to its last page when `stay`, else the top
    /// free page of the first open range from `random_range` down.
    fn take_from_stream(&mut self, stream: usize, stay: bool, random_range: usize) -> Option<Hpa> {
        let last = self.streams[stream].last;
        let page = match last {
            Some(last) if stay => {
                let index = last.range_index();
                match self
                    .free_page_in_range(index, Some(last))
                    .or_else(|| self.free_page_in_range(index, None))
                {
                    Some(page) if self.range_open(index) => Some(page),
                    // That range is full: the next one down, as contiguous memory goes on.
                    _ => self
                        .open_range_from(index.checked_sub(1).unwrap_or(self.range_used.len() - 1))
                        .and_then(|range| self.free_page_in_range(range, None)),
                }
            }
            _ => self.open_range_from(random_range).and_then(|range| self.free_page_in_range(range, None)),
        }?;
        self.mark(page, true);
        self.streams[stream].last = Some(page);
        Some(page)
    }

    /// Pages of reserved ranges belong to the scenario that named them (a task may pass the
    /// same `pair` again), so freeing one does not put it in the allocator's hands.
    /// False when `page` was not handed out (or was already given back): a double free.
    fn give_back(&mut self, page: Hpa) -> bool {
        if self.reserved_ranges.contains(&page.range_index()) {
            return true;
        }
        if !self.is_allocated(page) {
            return false;
        }
        self.mark(page, false);
        self.freed.push(page);
        true
    }

    fn ranges(&self) -> usize {
        self.range_used.len()
    }
}

/// The set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// `alloc_page(GFP_KERNEL)`; `None` is the kernel's NULL (out of memory). May sleep.
pub async fn alloc_page(cpu: &Cpu) -> Option<Hpa> {
    might_sleep(cpu, "alloc_page(GFP_KERNEL)");
    alloc_page_atomic(cpu).await
}

/// `alloc_page(GFP_ATOMIC)`: never sleeps, so it may be called under a spinlock.
pub async fn alloc_page_atomic(cpu: &Cpu) -> Option<Hpa> {
    cpu.work(cpu.host().costs.alloc_page).await;
    let page = cpu.host().pages.borrow_mut().take();
    mark_alloc(cpu, page);
    page
}

fn mark_alloc(cpu: &Cpu, page: Option<Hpa>) {
    cpu.mark(Span::Instant, mark::PAGE, 1, page.map_or(u64::MAX, |p| p.0), || match page {
        Some(page) => format!("alloc_page() = {page}"),
        None => "alloc_page() = NULL".to_string(),
    });
}

/// A guest_memfd folio of one 4KB page for TD `td`: from the TD's allocation stream when it
/// has one (see the module comment for how its locality places the page), else as
/// `alloc_page()` would. May sleep.
///
/// Kernel: `kvm_gmem_get_folio()` -> `filemap_alloc_folio()` (order 0), virt/kvm/guest_memfd.c;
/// where the buddy allocator finds the page is the stream's locality.
pub async fn alloc_gmem_page(cpu: &Cpu, td: TdId) -> Option<Hpa> {
    might_sleep(cpu, "kvm_gmem_get_folio");
    if !cpu.host().pages.borrow().gmem_streams.contains_key(&td) {
        return alloc_page_atomic(cpu).await;
    }
    cpu.work(cpu.host().costs.alloc_page).await;
    let page = draw_gmem_page(cpu, td);
    mark_alloc(cpu, page);
    page
}

/// The stream's choice of TD `td`'s next guest_memfd page, made at once: the page drawn
/// ahead if there is one, else where the stream's locality puts it. `alloc_gmem_page`
/// without its cost, for a TD that has a stream.
pub fn draw_gmem_page(cpu: &Cpu, td: TdId) -> Option<Hpa> {
    let stream = cpu.host().pages.borrow().gmem_streams[&td];
    let (locality, ranges, started, ahead) = {
        let mut pages = cpu.host().pages.borrow_mut();
        let ranges = pages.ranges();
        let state = &mut pages.streams[stream];
        (state.locality, ranges, state.last.is_some(), state.ahead.pop())
    };
    if ahead.is_some() {
        return ahead;
    }
    let stay = started
        && match locality {
            0 => false,
            LOCALITY_ONE => true,
            _ => get_random_u32_below(cpu, LOCALITY_ONE) < locality,
        };
    // A range is drawn only where the stream jumps: its first page, or a scattered one.
    let random_range = if stay { 0 } else { get_random_u32_below(cpu, ranges as u32) as usize };
    cpu.host().pages.borrow_mut().take_from_stream(stream, stay, random_range)
}

/// `__free_page()`.
pub async fn free_page(cpu: &Cpu, page: Hpa) {
    cpu.work(cpu.host().costs.free_page).await;
    let was_allocated = cpu.host().pages.borrow_mut().give_back(page);
    cpu.mark(Span::Instant, mark::PAGE, 2, page.0, || format!("__free_page({page})"));
    cpu.host().observer.page_freed(cpu, page, was_allocated);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first open range at or below `index`, wrapping: one range at a time.
    fn open_range_by_scan(pages: &PageAllocator, index: usize) -> Option<usize> {
        let ranges = pages.range_used.len();
        let open = |range: usize| {
            u64::from(pages.range_used[range]) < PAGES_PER_RANGE && !pages.reserved_ranges.contains(&range)
        };
        (0..ranges).map(|step| (index + ranges - step) % ranges).find(|&range| open(range))
    }

    #[test]
    fn a_jump_finds_the_open_range_a_scan_of_every_range_finds() {
        let ranges = 130;
        let mut pages = PageAllocator::new(ranges * RANGE_2M, BTreeSet::from([5, 64, 129]));
        let fill = |pages: &mut PageAllocator, range: u64| {
            for page in 0..PAGES_PER_RANGE {
                pages.mark(Hpa(range * RANGE_2M + page * PAGE_SIZE), true);
            }
        };
        for range in [0, 1, 63, 65].into_iter().chain(100..128) {
            fill(&mut pages, range);
        }
        let agree = |pages: &PageAllocator| {
            for index in 0..ranges as usize {
                assert_eq!(
                    pages.open_range_from(index),
                    open_range_by_scan(pages, index),
                    "from range {index}"
                );
            }
        };
        agree(&pages);
        assert_eq!(pages.open_range_from(1), Some(128), "wraps to the top, past the reserved 129");
        assert_eq!(pages.open_range_from(110), Some(99));
        pages.mark(Hpa(110 * RANGE_2M), false);
        agree(&pages);
        assert_eq!(pages.open_range_from(115), Some(110), "a range a page left is open again");
        for range in (2..100).filter(|range| ![5, 63, 64, 65].contains(range)).chain([128]) {
            fill(&mut pages, range);
        }
        pages.mark(Hpa(110 * RANGE_2M), true);
        agree(&pages);
        assert_eq!(pages.open_range_from(50), None, "every range full or reserved");
    }

    #[test]
    fn hands_out_top_down_skips_reserved_ranges_and_reuses_freed_pages() {
        let mut pages = PageAllocator::new(6 * RANGE_2M, BTreeSet::from([5]));
        let first = pages.take().unwrap();
        assert_eq!(first, Hpa(5 * RANGE_2M - PAGE_SIZE), "range 5 is reserved");
        let second = pages.take().unwrap();
        assert_eq!(second, Hpa(5 * RANGE_2M - 2 * PAGE_SIZE));
        assert!(pages.give_back(first));
        assert!(!pages.give_back(first), "a double free is reported");
        assert_eq!(pages.take(), Some(first));
        assert_eq!(pages.allocated().collect::<Vec<_>>(), vec![second, first]);
        assert_eq!(pages.allocated_count(), 2);
    }

    #[test]
    fn pages_of_reserved_ranges_are_never_handed_out_even_after_a_free() {
        let mut pages = PageAllocator::new(6 * RANGE_2M, BTreeSet::from([1]));
        assert!(pages.give_back(Hpa(RANGE_2M + PAGE_SIZE)));
        assert_ne!(pages.take(), Some(Hpa(RANGE_2M + PAGE_SIZE)));
    }

    #[test]
    fn runs_out() {
        let mut pages = PageAllocator::new(RANGE_2M, BTreeSet::new());
        let count = std::iter::from_fn(|| pages.take()).count();
        assert_eq!(count as u64, RANGE_2M / PAGE_SIZE);
    }

    #[test]
    fn a_staying_stream_fills_its_range_downwards_then_the_next_range_down() {
        let mut pages = PageAllocator::new(4 * RANGE_2M, BTreeSet::new());
        let stream = pages.add_stream(LOCALITY_ONE);
        let first = pages.take_from_stream(stream, false, 2).unwrap();
        assert_eq!(first, Hpa(3 * RANGE_2M - PAGE_SIZE), "the top page of range 2");
        let mut last = first;
        for _ in 1..PAGES_PER_RANGE {
            let page = pages.take_from_stream(stream, true, 0).unwrap();
            assert_eq!(page, Hpa(last.0 - PAGE_SIZE));
            last = page;
        }
        assert_eq!(last, Hpa(2 * RANGE_2M));
        assert_eq!(pages.take_from_stream(stream, true, 0), Some(Hpa(2 * RANGE_2M - PAGE_SIZE)));
    }

    #[test]
    fn a_jumping_stream_takes_the_first_open_range_at_or_below_its_draw_and_the_fresh_cursor_skips_its_pages()
    {
        let mut pages = PageAllocator::new(4 * RANGE_2M, BTreeSet::from([1]));
        let stream = pages.add_stream(0);
        assert_eq!(pages.take_from_stream(stream, false, 3), Some(Hpa(4 * RANGE_2M - PAGE_SIZE)));
        assert_eq!(
            pages.take_from_stream(stream, false, 1),
            Some(Hpa(RANGE_2M - PAGE_SIZE)),
            "1 is reserved"
        );
        assert_eq!(pages.take_from_stream(stream, false, 3), Some(Hpa(4 * RANGE_2M - 2 * PAGE_SIZE)));
        assert_eq!(pages.take(), Some(Hpa(4 * RANGE_2M - 3 * PAGE_SIZE)), "above it is the stream's");
        assert_eq!(pages.range_used[3], 3);
        // A page freed and then taken by a stream is not handed out twice.
        let page = Hpa(4 * RANGE_2M - PAGE_SIZE);
        assert!(pages.give_back(page));
        assert_eq!(pages.take_from_stream(stream, false, 3), Some(page));
        assert_ne!(pages.take(), Some(page));
    }

    #[test]
    fn a_full_range_sends_a_staying_stream_on_and_full_memory_ends_it() {
        let mut pages = PageAllocator::new(RANGE_2M, BTreeSet::new());
        let stream = pages.add_stream(LOCALITY_ONE);
        let mut taken = 0;
        while pages.take_from_stream(stream, taken > 0, 0).is_some() {
            taken += 1;
        }
        assert_eq!(taken, PAGES_PER_RANGE);
        assert_eq!(pages.take(), None);
    }
}
