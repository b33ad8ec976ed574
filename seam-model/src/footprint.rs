//! What the module's per-page state costs at the scale of issue 9 §5: a 160 GiB machine
//! whose memory is all private pages of 10 TDs of 16 GiB, every 4KB page mapped.
//!
//! The structures are filled through their own `assign_page` / `map` (what PAGE.AUG and
//! ACCEPT do to them), not through the leaves, so the test stays fast; the bytes are the
//! ones the structures own ([`Pamt::heap_bytes`], [`Sept::heap_bytes`]). Two layouts bound
//! the cost: the host allocator hands each TD contiguous memory (locality 1), or it
//! interleaves the TDs' pages page by page (locality 0: every 2MB range shared by all ten
//! TDs, no table of contiguous pages).

use crate::pamt::{PageType, Pamt};
use crate::sept::{Sept, SeptState};
use crate::{Hpa, PAGE_SIZE};

const GIB: u64 = 1 << 30;
const TDS: u64 = 10;
const TD_PAGES: u64 = 16 * GIB / PAGE_SIZE;
const PAGES: u64 = TDS * TD_PAGES;

/// Bytes of PAMT plus every S-EPT once each TD's GPA page `j` maps host pfn `pfn(td, j)`.
fn footprint(pfn: impl Fn(u64, u64) -> u64) -> (usize, usize) {
    let mut pamt = Pamt::new(TDS * 16 * GIB, false);
    let mut septs = Vec::new();
    for td in 0..TDS {
        let mut sept = Sept::prebuilt(true);
        for gpa_page in 0..TD_PAGES {
            let page = Hpa(pfn(td, gpa_page) * PAGE_SIZE);
            pamt.assign_page(page, PageType::Reg, td as u16);
            sept.map(gpa_page * PAGE_SIZE, page, SeptState::Mapped);
        }
        assert_eq!(sept.mapped_entries(), TD_PAGES);
        septs.push(sept);
    }
    assert_eq!(pamt.pages_in_use(0), 512, "every page is in use");
    assert_eq!(septs[3].entry(5 * PAGE_SIZE).hpa, Hpa(pfn(3, 5) * PAGE_SIZE));
    (pamt.heap_bytes(), septs.iter().map(Sept::heap_bytes).sum())
}

/// Contiguous: 41,943,040 pages in 1.33 bytes each, under 11 bits (the PAMT's 4-bit type
/// and bitmap bit, 0.73 bytes with the per-2MB entries; the S-EPT's 2 bits of state, its
/// lock and HP bits and per-table headers, 0.59 bytes). Interleaved: 7.33 bytes each, a
/// 2-byte owner and a 4-byte pfn per page on top.
#[test]
fn ten_tds_of_16_gib_fully_mapped_cost_under_eleven_bits_a_page_contiguous_and_seven_bytes_interleaved() {
    let (pamt, sept) = footprint(|td, gpa_page| td * TD_PAGES + gpa_page);
    let per_page = (pamt + sept) as f64 / PAGES as f64;
    println!("contiguous: PAMT {pamt} + S-EPT {sept} bytes, {per_page:.3} bytes per 4KB page");
    assert_eq!(PAGES, 41_943_040);
    assert!(pamt as u64 <= PAGES * 3 / 4, "contiguous PAMT: {pamt} bytes");
    assert!(sept as u64 <= PAGES * 5 / 8, "contiguous S-EPT: {sept} bytes");
    assert!(per_page < 1.4, "contiguous: {per_page:.2} bytes per 4KB page");

    let (pamt, sept) = footprint(|td, gpa_page| gpa_page * TDS + td);
    let per_page = (pamt + sept) as f64 / PAGES as f64;
    println!("interleaved: PAMT {pamt} + S-EPT {sept} bytes, {per_page:.3} bytes per 4KB page");
    assert!(pamt as u64 <= PAGES * 11 / 4, "interleaved PAMT: {pamt} bytes");
    assert!(sept as u64 <= PAGES * 19 / 4, "interleaved S-EPT: {sept} bytes");
    assert!(per_page < 7.5, "interleaved: {per_page:.2} bytes per 4KB page");
    assert!(((pamt + sept) as u64) < (2 << 30) / 4, "well under the 2 GiB RSS budget");
}
