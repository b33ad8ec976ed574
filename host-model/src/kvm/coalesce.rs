//! Coalesced fault rounds (`[[workload]] coalesce_faults = N`): not kernel code, the
//! simulator's way of running a boot of tens of millions of faults in seconds, with a
//! stated approximation. Off by default; docs/performance.md gives the measurements.
//!
//! A *round* is one page of a booting guest, from one resolved EPT-violation fault to the
//! next: TDH.VP.ENTER, the guest's ACCEPT and touch of the page KVM just mapped, its work,
//! its ACCEPT of the next page (the TD exits on the EPT violation), the exit, and KVM's
//! fault: the guest_memfd page, `mmu_lock` for read, the DPAMT get and PAGE.AUG. Simulated in
//! full that is about 28 events and 36 chooser decisions.
//!
//! A round is *coalescable* when nothing another CPU does can meet it:
//! - the vCPU is its TD's only one and no other task touches the TD (the loader allows the
//!   key only on a `td_boot` workload with one vCPU per TD, in a file with no steps), and it
//!   has no request, signal, queued interrupt or task waiting for its CPU;
//! - the next page is unmapped, under S-EPT tables that are there (no SEPT.ADD), in a
//!   memslot that is valid, with no invalidation running, and the vCPU's page caches are
//!   full (the fault's top-up would allocate nothing);
//! - the design's DPAMT get takes its reference on the page guest_memfd draws for it
//!   without a lock: the design has the lock-free fast path and the page's 2MB range is
//!   backed (its count above 0), so the round never touches `pamt_lock`.
//!
//! Other TDs' faults may use the same 2MB range (a scattered page, a stream that moved on
//! into it), and cannot meet the round there: PAGE.AUG's PAMT walk holds the 1GB and 2MB
//! entries shared and only its own page's 4KB entry exclusively, and nothing takes the 2MB
//! entry exclusively (PAMT.ADD or REMOVE of the range) while its count is above 0, which
//! the round's own reference keeps it. Their fast-path increments of the count commute with
//! the round's.
//!
//! Rounds that are not coalescable are simulated in full: every fault that takes the
//! global lock, adds an S-EPT table or tops up its caches. So is one coalescable round in
//! `N` (and the first [`WARM_UP`]): those are the *samples*.
//!
//! A coalesced round makes the same state changes as the full one, at once: the module's
//! through `Module::page_rounds_at_once` (which stops at a round that would not go straight
//! through, and which seam-model/tests/page_round.rs compares with the calls one by one);
//! the allocator's stream; the refcount's observed increment; the mirror and guest_memfd
//! entries; the counts by leaf and status and the checker's observation. What it does not simulate is time:
//! its length, its fault latency and its `mmu_lock` hold are those of a sample drawn at
//! random from this vCPU's last [`SAMPLES`]. The rounds of a run of coalesced rounds then
//! pass as one delay of their summed lengths; a run is at most `host.guest_tick` long, and
//! the next starts when it ends.
//!
//! The approximation, and what bounds it:
//! - the state changes of a run of rounds are made at its start, so another CPU sees them
//!   up to the run's length early (at most `host.guest_tick`, 1 ms). By the conditions
//!   above nobody depends on them in that time but the page allocator, whose choices for
//!   other TDs may then differ (which pages, not how many), and the count's value other
//!   CPUs' increments see (never 0 either way);
//! - a coalesced round's length is a sample's, not its own draw of the jitter bands and
//!   stalls: the distribution is the same (the samples are full rounds of the same kind,
//!   on the same vCPU), the draws are not.
//!
//! Determinism holds: the samples are picked by the run's chooser.

use std::cell::RefCell;

use seam_model::{Gpa, Hpa, PAGE_SIZE, RANGE_2M, TdExitReason};
use sim_core::{Cycle, Span};

use super::fault_stats::record_fault;
use super::tdx_fault::{caches_full_for_a_leaf, missing_tables};
use super::vm::{KvmTd, KvmVcpu, MirrorEntry, SlotLookup, TdState};
use crate::kernel::cpu::Cpu;
use crate::kernel::page_alloc::draw_gmem_page;
use crate::kernel::random::get_random_u32_below;
use crate::tdx::dpamt::{pamt_get_has_lock_free_path, pamt_get_is_lock_free, tdx_pamt_get_at_once};
use crate::tdx::seamcall::{count_page_rounds, page_rounds_at_once};

/// Full rounds a vCPU keeps as samples (the latest).
pub const SAMPLES: usize = 256;
/// Coalescable rounds a vCPU simulates in full before it coalesces any.
pub const WARM_UP: usize = 32;
/// The most `coalesce_faults` may be.
pub const MAX_EVERY: u32 = 4096;

/// Trace mark code of a run of coalesced rounds; `a` is the rounds, `b` their cycles.
pub const MARK_COALESCED: u32 = 12;

/// One coalescable round simulated in full.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// From the previous fault's resolution to this one's.
    period: u64,
    /// Its fault's latency.
    latency: u64,
    /// Its `mmu_lock` hold.
    mmu_hold: u64,
}

/// A coalescable round now running in full: what it started from.
#[derive(Clone, Copy, Debug)]
struct Sampling {
    started: Cycle,
    resolved: u64,
    mmu_hold: u64,
}

/// A vCPU's coalescing.
#[derive(Debug)]
pub struct Coalescing {
    /// One coalescable round in `every` is simulated in full.
    every: u32,
    samples: Vec<Sample>,
    /// Where the next sample goes once `samples` is full.
    next: usize,
    /// Coalescable rounds coalesced since the last one simulated in full.
    since_full: u32,
    sampling: Option<Sampling>,
    /// Faults this vCPU resolved in full, and the last one's latency.
    resolved: u64,
    last_latency: u64,
    /// A 2MB range of GPA (its index) whose S-EPT tables KVM has linked: tables are not
    /// unlinked while a TD boots (the loader lets only a td_boot workload coalesce).
    tables_linked: Option<u64>,
    /// The plan of a run, kept between runs for its capacity (a run allocates nothing).
    plan: Plan,
}

/// A run's plan: each round's (next GPA, page) and its sample, and the pages drawn for
/// rounds that will not be coalesced.
#[derive(Debug, Default)]
struct Plan {
    rounds: Vec<(Gpa, Hpa)>,
    samples: Vec<Sample>,
    unused: Vec<Hpa>,
}

impl Coalescing {
    fn record(&mut self, sample: Sample) {
        if self.samples.len() < SAMPLES {
            self.samples.push(sample);
        } else {
            self.samples[self.next] = sample;
            self.next = (self.next + 1) % SAMPLES;
        }
    }

    /// Whether the coalescable round after `planned` more coalesced ones must run in full.
    fn full_turn(&self, planned: usize) -> bool {
        self.samples.len() < WARM_UP || self.since_full as usize + planned + 1 >= self.every as usize
    }
}

/// Coalesces one round in `every` (1: none) of `vcpu`'s coalescable ones from now on.
pub fn enable(vcpu: &KvmVcpu, every: u32) {
    assert!((1..=MAX_EVERY).contains(&every), "coalesce::enable: every = {every}");
    let coalescing = (every > 1).then(|| Coalescing {
        every,
        samples: Vec::new(),
        next: 0,
        since_full: 0,
        sampling: None,
        resolved: 0,
        last_latency: 0,
        tables_linked: None,
        plan: Plan::default(),
    });
    *vcpu.coalescing.borrow_mut() = coalescing;
}

/// `tdx_handle_ept_violation()` resolved a fault of `vcpu` in `latency` cycles.
pub fn fault_resolved(vcpu: &KvmVcpu, latency: u64) {
    if let Some(state) = vcpu.coalescing.borrow_mut().as_mut() {
        state.resolved += 1;
        state.last_latency = latency;
    }
}

/// At the top of a round of `vcpu_run` (SRCU held): the round that just ended becomes a
/// sample if it was a coalescable one run in full; then as many coalescable rounds as come
/// run at once, up to the next one whose turn it is to run in full, and their time passes.
pub async fn coalesce_fault_rounds(cpu: &Cpu, kvm: &KvmTd, vcpu: &KvmVcpu) {
    let Some(mut state) = vcpu.coalescing.borrow_mut().take() else { return };
    let mmu_lock = kvm.mmu_lock.resource;
    if let Some(sampling) = state.sampling.take()
        && state.resolved == sampling.resolved + 1
    {
        let mmu_hold = cpu.sim.with(|engine| engine.hold_cycles(mmu_lock)) - sampling.mmu_hold;
        let period = cpu.sim.now().since(sampling.started);
        state.record(Sample { period, latency: state.last_latency, mmu_hold });
    }
    // Runs of at most a tick of coalesced rounds, until a round must run in full.
    loop {
        let (rounds, cycles, more) = coalesce_run(cpu, kvm, vcpu, &mut state);
        if rounds == 0 {
            break;
        }
        cpu.host().stats.borrow_mut().coalesced_faults += rounds;
        cpu.mark(Span::Begin, MARK_COALESCED, rounds, cycles, || {
            format!("({rounds} fault rounds coalesced)")
        });
        cpu.sim.delay(cycles).await;
        cpu.mark(Span::End, MARK_COALESCED, rounds, cycles, || "(coalesced rounds end)".to_string());
        cpu.progress();
        if !more {
            break;
        }
    }
    *vcpu.coalescing.borrow_mut() = Some(state);
}

/// One run of coalesced rounds from now, made at once: (rounds, their cycles, whether it
/// stopped only at the tick, with more rounds to coalesce after its time has passed).
///
/// The run is planned first (each round's page drawn, its sample picked), then the module
/// makes as many of the planned rounds as it can, then the host's side of those. Nothing
/// else runs meanwhile, so what the plan checked once for the run (the vCPU's requests and
/// signal, its CPU's queue, the VM and its invalidations) holds for every round of it.
fn coalesce_run(cpu: &Cpu, kvm: &KvmTd, vcpu: &KvmVcpu, state: &mut Coalescing) -> (u64, u64, bool) {
    let now = cpu.sim.now();
    let Some((accepted, first_next, available)) = coalescable(cpu, kvm, vcpu) else { return (0, 0, false) };
    let tick = cpu.host().costs.guest_tick;
    let mut plan = std::mem::take(&mut state.plan);
    let ran = plan_and_make(cpu, kvm, vcpu, state, &mut plan, (now, accepted, first_next, available), tick);
    state.plan = plan;
    ran
}

/// [`coalesce_run`] with its plan's buffers (empty at the start).
fn plan_and_make(
    cpu: &Cpu,
    kvm: &KvmTd,
    vcpu: &KvmVcpu,
    state: &mut Coalescing,
    plan: &mut Plan,
    (now, accepted, first_next, available): (Cycle, Gpa, Gpa, u32),
    tick: u64,
) -> (u64, u64, bool) {
    plan.rounds.clear();
    plan.samples.clear();
    plan.unused.clear();
    // The plan: (next GPA, page) and the sample of each round; `ends` is the page drawn for
    // the round that stopped it, which runs in full (a sample when `sampling`).
    let (planned, samples) = (&mut plan.rounds, &mut plan.samples);
    let mut planned_cycles = 0u64;
    let (mut ends, mut sampling, mut more) = (None, false, false);
    for k in 0..u64::from(available) {
        let next = Gpa(first_next.0 + k * PAGE_SIZE);
        if !next_is_unmapped(cpu, kvm, state, next) {
            break;
        }
        let Some(page) = draw_gmem_page(cpu, kvm.td) else { break };
        let fast = pamt_get_is_lock_free(cpu, page);
        if !fast || state.full_turn(planned.len()) {
            (ends, sampling) = (Some(page), fast);
            break;
        }
        let sample = state.samples[get_random_u32_below(cpu, state.samples.len() as u32) as usize];
        planned.push((next, page));
        samples.push(sample);
        planned_cycles += sample.period;
        if planned_cycles >= tick {
            more = true;
            break;
        }
    }
    let tdvpr = vcpu.tdvpr.get().expect("an initialised vCPU has a TDVPR");
    let (made, answered) = page_rounds_at_once(cpu, (kvm.td, tdvpr), accepted, planned);
    // Pages drawn for rounds that will run in full go to them, in order.
    plan.unused.extend(planned[made..].iter().map(|&(_, page)| page).chain(ends));
    cpu.host().pages.borrow_mut().keep_ahead(kvm.td, &plan.unused);
    state.since_full += made as u32;
    let cycles: u64 = samples[..made].iter().map(|sample| sample.period).sum();
    if made == planned.len() && sampling {
        state.since_full = 0;
        let mmu_hold = cpu.sim.with(|engine| engine.hold_cycles(kvm.mmu_lock.resource))
            + samples.iter().map(|sample| sample.mmu_hold).sum::<u64>();
        state.sampling =
            Some(Sampling { started: now.saturating_add(cycles), resolved: state.resolved, mmu_hold });
    }
    let Some(round) = answered else { return (0, 0, false) };
    debug_assert_eq!(round.vp_enter.exit, Some(TdExitReason::EptViolation { gpa: planned[made - 1].0 }));
    assert!(round.aug.status.is_success(), "coalesced PAGE.AUG returned {}", round.aug.status);
    for (&(next, page), &sample) in planned[..made].iter().zip(samples.iter()) {
        coalesced_round(cpu, kvm, vcpu, next, page, sample);
    }
    count_page_rounds(cpu, &round, made as u64);
    (made as u64, cycles, more && made == planned.len())
}

/// Whether `vcpu`'s guest is at a coalescable period's start (see the module comment), but
/// for its pages: (the page KVM just mapped, the next page, how many pages follow).
fn coalescable(cpu: &Cpu, kvm: &KvmTd, vcpu: &KvmVcpu) -> Option<(Gpa, Gpa, u32)> {
    if !pamt_get_has_lock_free_path(cpu) || !caches_full_for_a_leaf(cpu, &vcpu.caches()) {
        return None;
    }
    let periods = {
        let guest = vcpu.guest.borrow();
        if guest.pending_violation {
            return None;
        }
        guest.coalescable_periods()?
    };
    let quiet = !vcpu.request_pending()
        && !super::vcpu::signal_pending(cpu, vcpu)
        && !kvm.vm_dead.get()
        && kvm.state.get() == TdState::Runnable
        && !kvm.wait_for_sept_zap.get()
        && kvm.mmu_invalidate_in_progress.get() == 0
        && cpu.sim.with(|engine| !engine.interrupt_queued() && engine.yield_target().is_none());
    quiet.then_some(periods)
}

/// Whether the fault on `next` would add no S-EPT table and find no guest_memfd page (a
/// mirror leaf of it would be the module's entry not FREE, which the module refuses), in a
/// valid memslot.
fn next_is_unmapped(cpu: &Cpu, kvm: &KvmTd, state: &mut Coalescing, next: Gpa) -> bool {
    let gfn = next.0 / PAGE_SIZE;
    let table = next.0 / RANGE_2M;
    if state.tables_linked != Some(table) {
        if missing_tables(kvm, gfn) != 0 {
            return false;
        }
        state.tables_linked = Some(table);
    }
    kvm.gmem.borrow().get(gfn).is_none() && matches!(kvm.vcpu_gfn_to_memslot(cpu, gfn), SlotLookup::Valid)
}

/// One coalesced round, the module's side made already (`round`): the host's side of
/// `vcpu_enter_guest()` through `tdx_handle_ept_violation()`'s fault of `next` on `page`, at
/// once, with `sample`'s `mmu_lock` hold and fault latency.
fn coalesced_round(cpu: &Cpu, kvm: &KvmTd, vcpu: &KvmVcpu, next: Gpa, page: Hpa, sample: Sample) {
    // tdx_vcpu_enter_exit(): the guest's period, the TD exit.
    {
        let mut guest = vcpu.guest.borrow_mut();
        guest.pending_violation = false;
        guest.pass_period();
    }
    vcpu.associated_cpu.set(Some(cpu.id));
    {
        let mut stats = cpu.host().stats.borrow_mut();
        stats.vcpu_entries += 1;
        stats.ept_violations += 1;
    }
    // kvm_mmu_page_fault(): the guest_memfd page, then the map under mmu_lock for read.
    let gfn = next.0 / PAGE_SIZE;
    kvm.gmem.borrow_mut().insert(gfn, (page, true));
    cpu.sim.with(|engine| engine.account_uncontended_hold(kvm.mmu_lock.resource, sample.mmu_hold));
    // tdx_sept_set_private_spte(): the DPAMT get (PAGE.AUG was the module's).
    tdx_pamt_get_at_once(cpu, page);
    kvm.mirror.borrow_mut().leaves.insert(gfn, MirrorEntry { page, allocated: true, frozen: false });
    record_fault(cpu, sample.latency);
}

/// The KVM side's per-vCPU slot for it.
pub type CoalescingSlot = RefCell<Option<Coalescing>>;
