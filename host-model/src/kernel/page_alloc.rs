//! `alloc_page()` / `__free_page()` over the simulated machine's memory.
//!
//! Deterministic: freed pages are reused last-in first-out (like the per-CPU page lists),
//! and fresh pages come from the top of memory downwards. 2MB ranges that hold pages a
//! scenario names are never handed out, so a scenario controls which ranges it races on;
//! a scenario that wants a pair page inside such a range names it in `pair`.

use std::collections::BTreeSet;

use seam_model::{Hpa, PAGE_SIZE, RANGE_2M};
use sim_core::Span;

use super::cpu::{Cpu, mark};
use super::lockdep::might_sleep;

pub struct PageAllocator {
    /// Next never-used page, counting down; `None` once memory is used up.
    next_fresh: Option<u64>,
    freed: Vec<Hpa>,
    /// Indices of 2MB ranges the allocator must not hand out.
    reserved_ranges: BTreeSet<usize>,
    /// Pages handed out and not freed since.
    allocated: BTreeSet<Hpa>,
}

impl PageAllocator {
    pub fn new(memory_bytes: u64, reserved_ranges: BTreeSet<usize>) -> PageAllocator {
        PageAllocator {
            next_fresh: memory_bytes.checked_sub(PAGE_SIZE),
            freed: Vec::new(),
            reserved_ranges,
            allocated: BTreeSet::new(),
        }
    }

    /// Pages handed out and not freed since, in address order.
    pub fn allocated(&self) -> impl Iterator<Item = Hpa> + '_ {
        self.allocated.iter().copied()
    }

    fn take(&mut self) -> Option<Hpa> {
        let page = self.take_page()?;
        self.allocated.insert(page);
        Some(page)
    }

    fn take_page(&mut self) -> Option<Hpa> {
        if let Some(page) = self.freed.pop() {
            return Some(page);
        }
        loop {
            let address = self.next_fresh?;
            self.next_fresh = address.checked_sub(PAGE_SIZE);
            let page = Hpa(address);
            if !self.reserved_ranges.contains(&page.range_index()) {
                return Some(page);
            }
            // Skip the whole reserved range at once.
            self.next_fresh = page.range_base().0.checked_sub(PAGE_SIZE);
            debug_assert_eq!(page.range_base().0 % RANGE_2M, 0);
        }
    }

    /// Pages of reserved ranges belong to the scenario that named them (a task may pass the
    /// same `pair` again), so freeing one does not put it in the allocator's hands.
    /// False when `page` was not handed out (or was already given back): a double free.
    fn give_back(&mut self, page: Hpa) -> bool {
        if self.reserved_ranges.contains(&page.range_index()) {
            return true;
        }
        if !self.allocated.remove(&page) {
            return false;
        }
        self.freed.push(page);
        true
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
    cpu.mark(Span::Instant, mark::PAGE, 1, page.map_or(u64::MAX, |p| p.0), || match page {
        Some(page) => format!("alloc_page() = {page}"),
        None => "alloc_page() = NULL".to_string(),
    });
    page
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
}
