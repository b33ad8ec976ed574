//! Dynamic PAMT: `tdx_pamt_get()` / `tdx_pamt_put()` in every design of the DPAMT series
//! (docs/model.md, "Dynamic PAMT"): one function per kernel function, the designs matched
//! where they differ.

use serde::{Deserialize, Serialize};

/// The DPAMT locking designs published or discussed on the lists (`host.dpamt`).
///
/// An enum, not a trait: the set is closed (it is the list history), and each design
/// differs from the others in a few steps that are matched where they differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DpamtDesign {
    /// D1, RFC v1 (2025-05): no kernel refcount; ADD on MISSING_PAMT_PAGE_PAIR, REMOVE on
    /// the zero-count hint.
    Hint,
    /// D2, v2–v4 (2025-06..11): global `pamt_lock` + refcount, lock-free fast paths,
    /// the put decrements outside the lock.
    GlobalLockFastpath,
    /// D3, v6 patch 05 (2026-05-25): every get and put under the global `dpamt_lock`.
    GlobalLock,
    /// D4, v6 final: fast paths, locked transitions, `atomic_dec_and_lock` in put.
    #[default]
    DecAndLock,
    /// D5, 2025-09-26 proposal: per-2MB rwlocks mirroring the module's locks, taken in
    /// the module's order (target, then the pair's ranges).
    Per2mRwlock,
    /// D5': per-2MB rwlocks taken in PFN order.
    Per2mRwlockPfnOrder,
    /// D6, the "back-pocket" plan of 2025-09-29: global rwlock taken for read, write on BUSY.
    GlobalRwlockFallback,
}

impl DpamtDesign {
    pub const ALL: &'static [DpamtDesign] = &[
        DpamtDesign::Hint,
        DpamtDesign::GlobalLockFastpath,
        DpamtDesign::GlobalLock,
        DpamtDesign::DecAndLock,
        DpamtDesign::Per2mRwlock,
        DpamtDesign::Per2mRwlockPfnOrder,
        DpamtDesign::GlobalRwlockFallback,
    ];

    /// The scenario name (`host.dpamt`).
    pub const fn name(self) -> &'static str {
        match self {
            DpamtDesign::Hint => "hint",
            DpamtDesign::GlobalLockFastpath => "global-lock-fastpath",
            DpamtDesign::GlobalLock => "global-lock",
            DpamtDesign::DecAndLock => "dec-and-lock",
            DpamtDesign::Per2mRwlock => "per-2m-rwlock",
            DpamtDesign::Per2mRwlockPfnOrder => "per-2m-rwlock-pfn-order",
            DpamtDesign::GlobalRwlockFallback => "global-rwlock-fallback",
        }
    }

    /// Where the design comes from, for `tdxsim list designs`.
    pub const fn source(self) -> &'static str {
        match self {
            DpamtDesign::Hint => "D1: hint-based lazy PAMT, RFC v1 (Kirill A. Shutemov, 2025-05-02)",
            DpamtDesign::GlobalLockFastpath => {
                "D2: global pamt_lock + refcount with lock-free fast paths, DPAMT v2-v4 (2025-06..11)"
            }
            DpamtDesign::GlobalLock => {
                "D3: fully locked get/put, DPAMT v6 05/11 (Rick Edgecombe, 2026-05-25)"
            }
            DpamtDesign::DecAndLock => "D4: atomic_dec_and_lock put, DPAMT v6 final (2026-05-25)",
            DpamtDesign::Per2mRwlock => {
                "D5: per-2MB rwlocks in the module's order (Rick Edgecombe, 2025-09-26; AB-BA: Yan Zhao, 2025-09-28)"
            }
            DpamtDesign::Per2mRwlockPfnOrder => "D5': per-2MB rwlocks in PFN order (2025-09-29)",
            DpamtDesign::GlobalRwlockFallback => {
                "D6: global rwlock read, write on BUSY (Rick Edgecombe, 2025-09-29; details inferred)"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<DpamtDesign> {
        DpamtDesign::ALL.iter().copied().find(|design| design.name() == name)
    }

    /// What the global DPAMT spinlock is called: `pamt_lock` in v1–v4, `dpamt_lock` in the
    /// v6-era tree (D5's and D6's global locks are theirs; the name is v6's).
    pub const fn lock_name(self) -> &'static str {
        match self {
            DpamtDesign::Hint | DpamtDesign::GlobalLockFastpath => "pamt_lock",
            DpamtDesign::GlobalLock
            | DpamtDesign::DecAndLock
            | DpamtDesign::Per2mRwlock
            | DpamtDesign::Per2mRwlockPfnOrder
            | DpamtDesign::GlobalRwlockFallback => "dpamt_lock",
        }
    }

    /// Whether the design keeps a kernel refcount per 2MB range that must agree with the
    /// module's backing (D1 has none: it follows the module's statuses and hints).
    pub const fn uses_refcount(self) -> bool {
        match self {
            DpamtDesign::Hint => false,
            DpamtDesign::GlobalLockFastpath
            | DpamtDesign::GlobalLock
            | DpamtDesign::DecAndLock
            | DpamtDesign::Per2mRwlock
            | DpamtDesign::Per2mRwlockPfnOrder
            | DpamtDesign::GlobalRwlockFallback => true,
        }
    }
}

use std::cell::RefCell;

use seam_model::status::{TDX_HPA_RANGE_NOT_FREE, TDX_NO_PAMT_PAGE_PAIR, TDX_PAMT_PAGE_NOT_EMPTY};
use seam_model::{Hpa, LeafCall, LeafOutput};
use sim_core::{CpuId, Cycle, Mode, Subject};
use smallvec::{SmallVec, smallvec};

use crate::kernel::Errno;
use crate::kernel::atomic::{
    Atomic, atomic_add_unless, atomic_cmpxchg, atomic_dec, atomic_dec_and_test, atomic_inc,
    atomic_inc_not_zero, atomic_inc_not_zero_at_once, atomic_read, atomic_set,
};
use crate::kernel::cpu::{Cpu, cover, mark};
use crate::kernel::lockdep::{lockdep_assert_held, lockdep_assert_not_in_irq, might_sleep};
use crate::kernel::page_alloc::{alloc_page, free_page};
use crate::kernel::rwlock::{RwLock, read_lock, read_unlock, write_lock, write_unlock};
use crate::kernel::spinlock::{Spinlock, spin_lock, spin_unlock};
use crate::tdx::seamcall::seamcall;

/// Pages the KVM fault path allocated before taking `mmu_lock` (`tdx_pamt_cache`).
pub type PamtCache = RefCell<Vec<Hpa>>;

/// Where a get's page pair comes from.
#[derive(Clone, Copy)]
pub enum PairSource<'a> {
    /// `alloc_page(GFP_KERNEL)` twice (control pages; process context, may sleep).
    Allocate,
    /// The scenario names the pair (`pair = [..]`).
    Given([Hpa; 2]),
    /// The per-vCPU cache topped up before `mmu_lock` (KVM fault path).
    Cache(&'a PamtCache),
}

/// One lock of a design's DPAMT lock set.
#[derive(Clone, Copy, Debug)]
enum PamtLock {
    Spin(Spinlock),
    Write(RwLock),
    Read(RwLock),
}

/// Marks a get or put of a range as in flight; when the last one of that range returns,
/// the checker is told the range is quiet (refcount and backing must agree then).
struct InFlight<'a> {
    cpu: &'a Cpu,
    index: usize,
}

impl<'a> InFlight<'a> {
    fn enter(cpu: &'a Cpu, page: Hpa) -> InFlight<'a> {
        let index = page.range_index();
        let in_flight = &cpu.host().pamt_in_flight[index];
        in_flight.set(in_flight.get() + 1);
        InFlight { cpu, index }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let in_flight = &self.cpu.host().pamt_in_flight[self.index];
        in_flight.set(in_flight.get() - 1);
        if in_flight.get() == 0 {
            self.cpu.host().observer.pamt_range_quiet(self.cpu, self.index);
        }
    }
}

/// Where a DPAMT path decides at zero: the sites of coverage's near misses.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
enum ZeroCrossing {
    /// A get found the count at 0 and takes the slow path.
    GetSlowPath = 1,
    /// A get lost the race: the count was raised while it waited for the lock.
    GetLostRace = 2,
    /// PAMT.ADD said HPA_RANGE_NOT_FREE: the range is backed already.
    AddFoundBacked = 3,
    /// A put takes the count from 1 to 0 (and goes on to remove).
    PutLast = 4,
    /// A put that saw 1 -> 0 found the count raised again under the lock.
    PutRaced = 5,
    /// A hint-driven PAMT.REMOVE found the range in use again, or removed already.
    RemoveLostRace = 6,
}

/// Coverage: a decision at zero while another get/put of the range is in flight, the shape
/// every DPAMT race has (a near miss of `dpamt-refcount-matches-module`).
fn cover_zero_crossing(cpu: &Cpu, page: Hpa, site: ZeroCrossing) {
    let others = cpu.host().pamt_in_flight[page.range_index()].get().saturating_sub(1);
    if others > 0 {
        cpu.cover(cover::NEAR_MISS, site as u64, u64::from(others.min(3)));
    }
}

/// Coverage: a put that saw 1 -> 0 read the count under the lock and found it raised again
/// (`ZeroCrossing::PutRaced`): where it read, on which CPU, and when.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RacedRead {
    cpu: CpuId,
    decision: u32,
    at: Cycle,
}

/// The nearness site of the double remove's window: a raced read, then another CPU's put
/// taking the same range's count to 0. Had the read come after that decrement, it would have
/// found 0 and removed, and the other put would have removed again.
const RACED_READ_THEN_PUT_LAST: u64 = 0x6470_616d_745f_7252; // "dpamt_rR"

/// Coverage: remember where a put's read under the lock found the count raised again.
fn cover_raced_read(cpu: &Cpu, page: Hpa) {
    cover_zero_crossing(cpu, page, ZeroCrossing::PutRaced);
    let read = cpu.sim.with(|engine| {
        engine.covering().then(|| RacedRead {
            cpu: cpu.id,
            decision: engine.covered_decisions(),
            at: engine.now(),
        })
    });
    if let Some(read) = read {
        cpu.host().raced_reads.borrow_mut().insert(page.range_index(), read);
    }
}

/// Coverage: a put took `page`'s count to 0; if another CPU's put read it raised under the
/// lock before, how near the two came (holding that read past this decrement is the
/// double remove). Each raced read is paired once.
fn cover_put_after_raced_read(cpu: &Cpu, page: Hpa) {
    let mut raced_reads = cpu.host().raced_reads.borrow_mut();
    let Some(read) = raced_reads.get(&page.range_index()).copied() else {
        return;
    };
    if read.cpu == cpu.id {
        return;
    }
    raced_reads.remove(&page.range_index());
    drop(raced_reads);
    cpu.sim.with(|engine| {
        let cycles = engine.now().0.saturating_sub(read.at.0);
        let distance = sim_core::half_octaves(cycles);
        engine.cover_window(RACED_READ_THEN_PUT_LAST, distance, read.decision, read.cpu, cycles);
    });
}

/// `pamt_refcount[page >> 21]`.
fn pamt_refcount(cpu: &Cpu, page: Hpa) -> Atomic<'_> {
    let index = page.range_index();
    Atomic::pamt_refcount(&cpu.host().pamt_refcount[index], index)
}

fn dpamt_enabled(cpu: &Cpu) -> bool {
    cpu.host().config.dpamt
}

/// A design's lock set around one PAMT leaf: at most the target's and two pair ranges'.
type PamtLocks = SmallVec<[PamtLock; 3]>;

/// The locks a refcount design takes around PAMT.ADD of `page`'s range with `pair`, in order.
fn pamt_locks_for_add(cpu: &Cpu, design: RefcountDesign, page: Hpa, pair: [Hpa; 2]) -> PamtLocks {
    let order = match design {
        RefcountDesign::GlobalLockFastpath | RefcountDesign::GlobalLock | RefcountDesign::DecAndLock => {
            return smallvec![PamtLock::Spin(cpu.host().dpamt_lock)];
        }
        RefcountDesign::Per2mRwlock => RangeOrder::ModuleOrder,
        RefcountDesign::Per2mRwlockPfnOrder => RangeOrder::PfnOrder,
    };
    // Mirror the module's PAMT.ADD lock set: the target range exclusive, the pair's ranges
    // shared. A range that appears twice is taken once, exclusive winning.
    let mut ranges: SmallVec<[(Hpa, Mode); 3]> = smallvec![(page.range_base(), Mode::Exclusive)];
    for pair_page in pair {
        if !ranges.iter().any(|(range, _)| *range == pair_page.range_base()) {
            ranges.push((pair_page.range_base(), Mode::Shared));
        }
    }
    match order {
        RangeOrder::ModuleOrder => {}
        RangeOrder::PfnOrder => ranges.sort_by_key(|(range, _)| *range),
    }
    ranges
        .into_iter()
        .map(|(range, mode)| {
            let lock = cpu.host().pamt_range_lock(range);
            match mode {
                Mode::Exclusive => PamtLock::Write(lock),
                Mode::Shared => PamtLock::Read(lock),
            }
        })
        .collect()
}

/// How D5's per-2MB rwlocks are ordered.
enum RangeOrder {
    /// As the module takes them: the target, then the pair's ranges (D5).
    ModuleOrder,
    /// By physical address (D5').
    PfnOrder,
}

/// The locks a refcount design takes around PAMT.REMOVE of `page`'s range.
fn pamt_locks_for_remove(cpu: &Cpu, design: RefcountDesign, page: Hpa) -> PamtLocks {
    match design {
        RefcountDesign::Per2mRwlock | RefcountDesign::Per2mRwlockPfnOrder => {
            smallvec![PamtLock::Write(cpu.host().pamt_range_lock(page))]
        }
        RefcountDesign::GlobalLockFastpath | RefcountDesign::GlobalLock | RefcountDesign::DecAndLock => {
            smallvec![PamtLock::Spin(cpu.host().dpamt_lock)]
        }
    }
}

async fn pamt_lock(cpu: &Cpu, locks: &[PamtLock]) {
    for lock in locks {
        match *lock {
            PamtLock::Spin(lock) => spin_lock(cpu, lock).await,
            PamtLock::Write(lock) => write_lock(cpu, lock).await,
            PamtLock::Read(lock) => read_lock(cpu, lock).await,
        }
    }
}

fn pamt_unlock(cpu: &Cpu, locks: &[PamtLock]) {
    for lock in locks.iter().rev() {
        match *lock {
            PamtLock::Spin(lock) => spin_unlock(cpu, lock),
            PamtLock::Write(lock) => write_unlock(cpu, lock),
            PamtLock::Read(lock) => read_unlock(cpu, lock),
        }
    }
}

/// `lockdep_assert_held()` on every lock of a design's set.
fn assert_pamt_locks_held(cpu: &Cpu, locks: &[PamtLock], function: &str) {
    for lock in locks {
        let resource = match *lock {
            PamtLock::Spin(lock) => lock.resource,
            PamtLock::Write(lock) | PamtLock::Read(lock) => lock.resource,
        };
        lockdep_assert_held(cpu, resource, function);
    }
}

/// `atomic_dec_and_lock()` over the design's lock set: decrement without the locks unless
/// this is the last reference; for the last one take the locks, then decrement. True, with
/// the locks held, only when the count reached 0.
///
/// Kernel: `_atomic_dec_and_lock()`, lib/dec_and_lock.c.
async fn pamt_dec_and_lock(cpu: &Cpu, refcount: Atomic<'_>, locks: &[PamtLock]) -> bool {
    // Subtract 1 from the counter unless that drops it to 0 (i.e. it was 1).
    if atomic_add_unless(cpu, refcount, -1, 1).await {
        return false;
    }
    // Otherwise do it the slow way.
    pamt_lock(cpu, locks).await;
    if atomic_dec_and_test(cpu, refcount).await {
        assert_pamt_locks_held(cpu, locks, "atomic_dec_and_lock");
        return true;
    }
    pamt_unlock(cpu, locks);
    false
}

/// `alloc_pamt_pages()`: the two pages a 2MB range's 4KB PAMT entries live in.
async fn alloc_pamt_pages(cpu: &Cpu, source: PairSource<'_>) -> Result<[Hpa; 2], Errno> {
    match source {
        PairSource::Given(pair) => Ok(pair),
        PairSource::Cache(cache) => {
            let mut cache = cache.borrow_mut();
            match (cache.pop(), cache.pop()) {
                (Some(first), Some(second)) => Ok([first, second]),
                _ => Err(Errno::ENOMEM),
            }
        }
        PairSource::Allocate => {
            // GFP_KERNEL may sleep: never with a spinlock or mmu_lock held.
            might_sleep(cpu, "alloc_pamt_pages");
            let Some(first) = alloc_page(cpu).await else { return Err(Errno::ENOMEM) };
            let Some(second) = alloc_page(cpu).await else {
                free_page(cpu, first).await;
                return Err(Errno::ENOMEM);
            };
            Ok([first, second])
        }
    }
}

/// `free_pamt_pages()`.
async fn free_pamt_pages(cpu: &Cpu, pair: [Hpa; 2]) {
    for page in pair {
        free_page(cpu, page).await;
    }
}

/// `tdh_phymem_pamt_add()`.
pub async fn tdh_phymem_pamt_add(cpu: &Cpu, page: Hpa, pair: [Hpa; 2]) -> LeafOutput {
    lockdep_assert_not_in_irq(cpu, "tdh_phymem_pamt_add");
    seamcall(cpu, LeafCall::PamtAdd { hpa: page.range_base(), pair }).await
}

/// `tdh_phymem_pamt_remove()`.
pub async fn tdh_phymem_pamt_remove(cpu: &Cpu, page: Hpa) -> LeafOutput {
    lockdep_assert_not_in_irq(cpu, "tdh_phymem_pamt_remove");
    seamcall(cpu, LeafCall::PamtRemove { hpa: page.range_base() }).await
}

fn warn_status(cpu: &Cpu, function: &str, leaf: &str, page: Hpa, output: LeafOutput) {
    let index = page.range_index();
    let range = cpu.host().range_label(index);
    let subjects = vec![Subject::Marked(mark::ATOMIC, index as u64)];
    cpu.warn_about(function, format!("{leaf}({range}) failed: {}", output.status), subjects);
}

/// The designs that keep a refcount and share one shape of get and put (D2–D5').
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefcountDesign {
    GlobalLockFastpath,
    GlobalLock,
    DecAndLock,
    Per2mRwlock,
    Per2mRwlockPfnOrder,
}

impl RefcountDesign {
    /// Whether a get first tries to take a reference without the lock. D3 has no fast
    /// path: every get goes through the lock.
    fn has_fast_path(self) -> bool {
        match self {
            RefcountDesign::GlobalLock => false,
            RefcountDesign::GlobalLockFastpath
            | RefcountDesign::DecAndLock
            | RefcountDesign::Per2mRwlock
            | RefcountDesign::Per2mRwlockPfnOrder => true,
        }
    }
}

/// Take a reference on the 2MB range holding `page`; add PAMT backing on 0 -> 1.
///
/// Kernel: `tdx_pamt_get()`, arch/x86/virt/vmx/tdx/tdx.c — v2–v4 (D2), v6 05/11 (D3),
/// v6 final (D4); D5/D5' are the 2025-09-26 per-2MB rwlock proposal; D1 (RFC v1) has no
/// refcount, only the ADD half (`tdx_pamt_add_hint`); D6 has its own shape below.
/// Events: refcount fast path, the design's lock set, TDH.PHYMEM.PAMT.ADD.
pub async fn tdx_pamt_get(cpu: &Cpu, page: Hpa, source: PairSource<'_>) -> Result<(), Errno> {
    lockdep_assert_not_in_irq(cpu, "tdx_pamt_get");
    let _in_flight = InFlight::enter(cpu, page);
    if !dpamt_enabled(cpu) {
        return Ok(());
    }
    let design = cpu.host().config.dpamt_design;
    let Some(refcount) = refcount_design(design) else {
        return match design {
            DpamtDesign::Hint => tdx_pamt_add_hint(cpu, page, source).await,
            DpamtDesign::GlobalRwlockFallback => tdx_pamt_get_rwlock_fallback(cpu, page, source).await,
            DpamtDesign::GlobalLockFastpath
            | DpamtDesign::GlobalLock
            | DpamtDesign::DecAndLock
            | DpamtDesign::Per2mRwlock
            | DpamtDesign::Per2mRwlockPfnOrder => {
                unreachable!("tdx_pamt_get: {design:?} is a refcount design")
            }
        };
    };
    tdx_pamt_get_refcount(cpu, refcount, page, source).await
}

/// The refcount design `design` is, if it is one (D1 and the rwlock fallback are not).
fn refcount_design(design: DpamtDesign) -> Option<RefcountDesign> {
    match design {
        DpamtDesign::Hint | DpamtDesign::GlobalRwlockFallback => None,
        DpamtDesign::GlobalLockFastpath => Some(RefcountDesign::GlobalLockFastpath),
        DpamtDesign::GlobalLock => Some(RefcountDesign::GlobalLock),
        DpamtDesign::DecAndLock => Some(RefcountDesign::DecAndLock),
        DpamtDesign::Per2mRwlock => Some(RefcountDesign::Per2mRwlock),
        DpamtDesign::Per2mRwlockPfnOrder => Some(RefcountDesign::Per2mRwlockPfnOrder),
    }
}

/// Whether the design's `tdx_pamt_get()` has a lock-free fast path (or DPAMT is off and
/// there is nothing to get).
pub fn pamt_get_has_lock_free_path(cpu: &Cpu) -> bool {
    if !dpamt_enabled(cpu) {
        return true;
    }
    refcount_design(cpu.host().config.dpamt_design).is_some_and(RefcountDesign::has_fast_path)
}

/// Whether `tdx_pamt_get()` of `page` would take its reference without a lock: the design
/// has the fast path and the range is backed (its count above 0).
pub fn pamt_get_is_lock_free(cpu: &Cpu, page: Hpa) -> bool {
    pamt_get_has_lock_free_path(cpu) && (!dpamt_enabled(cpu) || pamt_refcount(cpu, page).value.get() != 0)
}

/// `tdx_pamt_get()` at once, for a coalesced fault round (`kvm::coalesce`, which accounts
/// its time), where [`pamt_get_is_lock_free`]: the fast path's reference, with the same
/// observation.
pub fn tdx_pamt_get_at_once(cpu: &Cpu, page: Hpa) {
    assert!(pamt_get_is_lock_free(cpu, page), "tdx_pamt_get_at_once: {page} needs the lock");
    if !dpamt_enabled(cpu) {
        return;
    }
    let _in_flight = InFlight::enter(cpu, page);
    let taken = atomic_inc_not_zero_at_once(cpu, pamt_refcount(cpu, page));
    assert!(taken, "tdx_pamt_get_at_once: the count was checked not 0");
}

async fn tdx_pamt_get_refcount(
    cpu: &Cpu,
    design: RefcountDesign,
    page: Hpa,
    source: PairSource<'_>,
) -> Result<(), Errno> {
    let pamt_refcount = pamt_refcount(cpu, page);
    // Fast path: the range is already backed, just take a reference.
    if design.has_fast_path() && atomic_inc_not_zero(cpu, pamt_refcount).await {
        return Ok(());
    }
    cover_zero_crossing(cpu, page, ZeroCrossing::GetSlowPath);
    let pamt_pages = alloc_pamt_pages(cpu, source).await?;
    let locks = pamt_locks_for_add(cpu, design, page, pamt_pages);
    pamt_lock(cpu, &locks).await;
    // Lost race to another tdx_pamt_get(): it added the backing while we waited.
    let lost_race = match design {
        // v2-v4 read the count, then incremented it.
        RefcountDesign::GlobalLockFastpath => {
            let raced = atomic_read(cpu, pamt_refcount).await != 0;
            if raced {
                atomic_inc(cpu, pamt_refcount).await;
            }
            raced
        }
        RefcountDesign::GlobalLock
        | RefcountDesign::DecAndLock
        | RefcountDesign::Per2mRwlock
        | RefcountDesign::Per2mRwlockPfnOrder => atomic_inc_not_zero(cpu, pamt_refcount).await,
    };
    if lost_race {
        cover_zero_crossing(cpu, page, ZeroCrossing::GetLostRace);
        pamt_unlock(cpu, &locks);
        free_pamt_pages(cpu, pamt_pages).await;
        return Ok(());
    }
    assert_pamt_locks_held(cpu, &locks, "tdx_pamt_get");
    let output = tdh_phymem_pamt_add(cpu, page, pamt_pages).await;
    if output.status.is_success() {
        atomic_set(cpu, pamt_refcount, 1).await;
        pamt_unlock(cpu, &locks);
        return Ok(());
    }
    let pending_put = output.status.without_operand() == TDX_HPA_RANGE_NOT_FREE;
    let keep_backing = match design {
        // v2-v4: a put dropped the count to 0 and has not removed yet; its REMOVE will see
        // our count and back off. Keep the backing.
        RefcountDesign::GlobalLockFastpath => pending_put,
        // v6: any failure is a bug.
        RefcountDesign::GlobalLock
        | RefcountDesign::DecAndLock
        | RefcountDesign::Per2mRwlock
        | RefcountDesign::Per2mRwlockPfnOrder => false,
    };
    if keep_backing {
        cover_zero_crossing(cpu, page, ZeroCrossing::AddFoundBacked);
        atomic_set(cpu, pamt_refcount, 1).await;
        pamt_unlock(cpu, &locks);
        free_pamt_pages(cpu, pamt_pages).await;
        return Ok(());
    }
    warn_status(cpu, "tdx_pamt_get", "TDH.PHYMEM.PAMT.ADD", page, output);
    pamt_unlock(cpu, &locks);
    free_pamt_pages(cpu, pamt_pages).await;
    Err(Errno::EIO)
}

/// Drop a reference on the 2MB range holding `page`; remove the PAMT backing on 1 -> 0.
///
/// Kernel: `tdx_pamt_put()`, arch/x86/virt/vmx/tdx/tdx.c — the designs as in `tdx_pamt_get`.
/// Events: the design's decrement and lock set, TDH.PHYMEM.PAMT.REMOVE.
pub async fn tdx_pamt_put(cpu: &Cpu, page: Hpa) {
    lockdep_assert_not_in_irq(cpu, "tdx_pamt_put");
    let _in_flight = InFlight::enter(cpu, page);
    if !dpamt_enabled(cpu) {
        return;
    }
    let design = match cpu.host().config.dpamt_design {
        DpamtDesign::Hint => return tdx_pamt_remove_hint(cpu, page).await,
        DpamtDesign::GlobalRwlockFallback => return tdx_pamt_put_rwlock_fallback(cpu, page).await,
        DpamtDesign::GlobalLockFastpath => RefcountDesign::GlobalLockFastpath,
        DpamtDesign::GlobalLock => RefcountDesign::GlobalLock,
        DpamtDesign::DecAndLock => RefcountDesign::DecAndLock,
        DpamtDesign::Per2mRwlock => RefcountDesign::Per2mRwlock,
        DpamtDesign::Per2mRwlockPfnOrder => RefcountDesign::Per2mRwlockPfnOrder,
    };
    tdx_pamt_put_refcount(cpu, design, page).await
}

async fn tdx_pamt_put_refcount(cpu: &Cpu, design: RefcountDesign, page: Hpa) {
    let pamt_refcount = pamt_refcount(cpu, page);
    let locks = pamt_locks_for_remove(cpu, design, page);
    match design {
        RefcountDesign::GlobalLockFastpath => {
            // v2-v4: the 1 -> 0 decision is made outside the lock.
            if !atomic_dec_and_test(cpu, pamt_refcount).await {
                return;
            }
            cover_zero_crossing(cpu, page, ZeroCrossing::PutLast);
            cover_put_after_raced_read(cpu, page);
            pamt_lock(cpu, &locks).await;
            // A getter re-established the range meanwhile.
            if atomic_read(cpu, pamt_refcount).await != 0 {
                cover_raced_read(cpu, page);
                pamt_unlock(cpu, &locks);
                return;
            }
        }
        RefcountDesign::GlobalLock => {
            pamt_lock(cpu, &locks).await;
            if atomic_read(cpu, pamt_refcount).await > 1 {
                atomic_dec(cpu, pamt_refcount).await;
                pamt_unlock(cpu, &locks);
                return;
            }
            cover_zero_crossing(cpu, page, ZeroCrossing::PutLast);
        }
        RefcountDesign::DecAndLock | RefcountDesign::Per2mRwlock | RefcountDesign::Per2mRwlockPfnOrder => {
            if !pamt_dec_and_lock(cpu, pamt_refcount, &locks).await {
                return;
            }
            cover_zero_crossing(cpu, page, ZeroCrossing::PutLast);
        }
    }
    assert_pamt_locks_held(cpu, &locks, "tdx_pamt_put");
    let output = tdh_phymem_pamt_remove(cpu, page).await;
    if !output.status.is_success() {
        match design {
            // v2-v4 put the reference back and printed an error; the pair is leaked.
            RefcountDesign::GlobalLockFastpath => atomic_inc(cpu, pamt_refcount).await,
            // v6 05: WARN, leave the count at 1 and leak the pages on purpose.
            RefcountDesign::GlobalLock => {}
            // v6 final and D5: WARN, count back to 1 (leak).
            RefcountDesign::DecAndLock
            | RefcountDesign::Per2mRwlock
            | RefcountDesign::Per2mRwlockPfnOrder => atomic_set(cpu, pamt_refcount, 1).await,
        }
        warn_status(cpu, "tdx_pamt_put", "TDH.PHYMEM.PAMT.REMOVE", page, output);
        pamt_unlock(cpu, &locks);
        return;
    }
    match design {
        RefcountDesign::GlobalLock => atomic_set(cpu, pamt_refcount, 0).await,
        RefcountDesign::GlobalLockFastpath
        | RefcountDesign::DecAndLock
        | RefcountDesign::Per2mRwlock
        | RefcountDesign::Per2mRwlockPfnOrder => {}
    }
    pamt_unlock(cpu, &locks);
    if let Some(pair) = output.pair {
        free_pamt_pages(cpu, pair).await;
    }
}

/// D1's ADD half: give `page`'s range its backing; "already backed" (HPA_RANGE_NOT_FREE)
/// counts as success and frees the pair; BUSY is retried, since this design has no lock of
/// its own.
///
/// Kernel: RFC v1 "TDX: Enable Dynamic PAMT" (Kirill A. Shutemov, 2025-05-02); its callers
/// come here when a page-assigning SEAMCALL returned MISSING_PAMT_PAGE_PAIR, then retry it.
pub async fn tdx_pamt_add_hint(cpu: &Cpu, page: Hpa, source: PairSource<'_>) -> Result<(), Errno> {
    let pamt_pages = alloc_pamt_pages(cpu, source).await?;
    loop {
        let output = tdh_phymem_pamt_add(cpu, page, pamt_pages).await;
        if output.status.is_success() {
            return Ok(());
        }
        if output.status.without_operand() == TDX_HPA_RANGE_NOT_FREE {
            cover_zero_crossing(cpu, page, ZeroCrossing::AddFoundBacked);
            free_pamt_pages(cpu, pamt_pages).await;
            return Ok(());
        }
        if output.status.is_operand_busy() {
            cpu.cpu_relax().await;
            continue;
        }
        warn_status(cpu, "tdx_pamt_add", "TDH.PHYMEM.PAMT.ADD", page, output);
        free_pamt_pages(cpu, pamt_pages).await;
        return Err(Errno::EIO);
    }
}

/// D1's REMOVE half: remove `page`'s range backing after a page-freeing SEAMCALL returned
/// the zero-count hint. PAMT_PAGE_NOT_EMPTY means someone started using the range again;
/// NO_PAMT_PAGE_PAIR means another hint holder removed it first (our reading [I]); both are
/// left alone. BUSY is retried.
pub async fn tdx_pamt_remove_hint(cpu: &Cpu, page: Hpa) {
    loop {
        let output = tdh_phymem_pamt_remove(cpu, page).await;
        if output.status.is_success() {
            if let Some(pair) = output.pair {
                free_pamt_pages(cpu, pair).await;
            }
            return;
        }
        let status = output.status.without_operand();
        if status == TDX_PAMT_PAGE_NOT_EMPTY || status == TDX_NO_PAMT_PAGE_PAIR {
            cover_zero_crossing(cpu, page, ZeroCrossing::RemoveLostRace);
            return;
        }
        if output.status.is_operand_busy() {
            cpu.cpu_relax().await;
            continue;
        }
        warn_status(cpu, "tdx_pamt_remove", "TDH.PHYMEM.PAMT.REMOVE", page, output);
        return;
    }
}

/// D6's refcount value while an ADD or REMOVE of the range is in flight.
const PAMT_TRANSITION: i32 = -1;

/// D6's PAMT SEAMCALL: under the global rwlock held for read; on BUSY retake it for write,
/// which shuts out every other DPAMT SEAMCALL, and retry once.
async fn pamt_seamcall_with_fallback(cpu: &Cpu, call: LeafCall) -> LeafOutput {
    let lock = cpu.host().dpamt_rwlock;
    lockdep_assert_held(cpu, lock.resource, "pamt_seamcall_with_fallback");
    let output = seamcall(cpu, call).await;
    if !output.status.is_operand_busy() {
        read_unlock(cpu, lock);
        return output;
    }
    read_unlock(cpu, lock);
    write_lock(cpu, lock).await;
    let output = seamcall(cpu, call).await;
    write_unlock(cpu, lock);
    output
}

/// D6 get: fast path as D4; the slow path claims the 0 -> 1 transition with a cmpxchg to a
/// sentinel under the global rwlock held for read.
///
/// Design: Rick Edgecombe, DPAMT v3 thread, 2025-09-29 ("back-pocket" plan); the transition
/// marker is our filling-in of its details [I] (spec/host-algorithms.md §3.7).
async fn tdx_pamt_get_rwlock_fallback(cpu: &Cpu, page: Hpa, source: PairSource<'_>) -> Result<(), Errno> {
    let pamt_refcount = pamt_refcount(cpu, page);
    let lock = cpu.host().dpamt_rwlock;
    if inc_if_positive(cpu, pamt_refcount).await {
        return Ok(());
    }
    let pamt_pages = alloc_pamt_pages(cpu, source).await?;
    loop {
        read_lock(cpu, lock).await;
        if inc_if_positive(cpu, pamt_refcount).await {
            read_unlock(cpu, lock);
            free_pamt_pages(cpu, pamt_pages).await;
            return Ok(());
        }
        if atomic_cmpxchg(cpu, pamt_refcount, 0, PAMT_TRANSITION).await == 0 {
            cover_zero_crossing(cpu, page, ZeroCrossing::GetSlowPath);
            break;
        }
        // Another CPU's ADD or REMOVE of this range is in flight.
        read_unlock(cpu, lock);
        cpu.cpu_relax().await;
    }
    let output =
        pamt_seamcall_with_fallback(cpu, LeafCall::PamtAdd { hpa: page.range_base(), pair: pamt_pages })
            .await;
    if output.status.is_success() {
        atomic_set(cpu, pamt_refcount, 1).await;
        return Ok(());
    }
    atomic_set(cpu, pamt_refcount, 0).await;
    warn_status(cpu, "tdx_pamt_get", "TDH.PHYMEM.PAMT.ADD", page, output);
    free_pamt_pages(cpu, pamt_pages).await;
    Err(Errno::EIO)
}

/// D6 put: the 1 -> 0 transition is claimed with a cmpxchg to the sentinel.
async fn tdx_pamt_put_rwlock_fallback(cpu: &Cpu, page: Hpa) {
    let pamt_refcount = pamt_refcount(cpu, page);
    let lock = cpu.host().dpamt_rwlock;
    if atomic_add_unless(cpu, pamt_refcount, -1, 1).await {
        return;
    }
    loop {
        read_lock(cpu, lock).await;
        let count = atomic_read(cpu, pamt_refcount).await;
        if count > 1 && atomic_cmpxchg(cpu, pamt_refcount, count, count - 1).await == count {
            read_unlock(cpu, lock);
            return;
        }
        if count == 1 && atomic_cmpxchg(cpu, pamt_refcount, 1, PAMT_TRANSITION).await == 1 {
            cover_zero_crossing(cpu, page, ZeroCrossing::PutLast);
            break;
        }
        read_unlock(cpu, lock);
        cpu.cpu_relax().await;
    }
    let output = pamt_seamcall_with_fallback(cpu, LeafCall::PamtRemove { hpa: page.range_base() }).await;
    if !output.status.is_success() {
        atomic_set(cpu, pamt_refcount, 1).await;
        warn_status(cpu, "tdx_pamt_put", "TDH.PHYMEM.PAMT.REMOVE", page, output);
        return;
    }
    atomic_set(cpu, pamt_refcount, 0).await;
    if let Some(pair) = output.pair {
        free_pamt_pages(cpu, pair).await;
    }
}

/// Increments a D6 refcount only when it is positive (not 0, not the transition sentinel).
async fn inc_if_positive(cpu: &Cpu, refcount: Atomic<'_>) -> bool {
    loop {
        let count = atomic_read(cpu, refcount).await;
        if count <= 0 {
            return false;
        }
        if atomic_cmpxchg(cpu, refcount, count, count + 1).await == count {
            return true;
        }
    }
}
