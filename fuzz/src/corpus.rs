//! Coverage-guided exploration: a corpus of runs that covered something new, and the
//! mutations that make new runs from them.
//!
//! In the spirit of reads-from-guided fuzzing (RFF, ASPLOS 2024), adapted from reads-from
//! pairs to what tdxsim records (sim-core coverage.rs): lock-order and wait-for edges,
//! contended lock pairs, (leaf, status, operand) triples of SEAMCALLs, and DPAMT near misses.
//! A run that covers a feature no earlier run did joins the corpus, together with where in
//! its schedule the new features appeared (a model feature covered 2, 4, 8, ... times is a
//! feature of its own, so a run that got more BUSY answers than any before is new). A new
//! entry's aimed mutations run first: a long stall at and just before those points, then its
//! schedule kept up to the first of them and redrawn from there. Entries whose features are rare are picked more
//! often; a pick is mutated near where its new features appeared, mostly: a same-cycle
//! order flipped, a stall inserted, lengthened, shortened, moved or dropped, a stretch of
//! cost jitter redrawn, or the schedule redrawn from some point on. A mutated schedule keeps
//! every decision before its first change, so the run it gives follows its parent up to the
//! point the mutation aims at.
//!
//! A nearness feature (two tasks' events on the same state, and how far apart: sim-core's
//! `FeatureTag::Nearness`) is new only when a run comes nearer at its site than every run
//! before (IJON's minimum): a run that does gets, before anything else, the longest stall
//! at as many of the last stall points of the earlier event's CPU before it as span the
//! distance, nearest pair first, so the task that made it is held past the other and their
//! order flips. Each step nearer is kept and followed up at once. A window (a pair whose
//! swap breaks an invariant, `NearSpan::window`) is followed up already when first seen.
//!
//! A counted feature (sim-core's `FeatureTag::HitCount`: how many BUSY answers one leaf and
//! operand got) is new only when its count is higher than every run's before at its site
//! (IJON's maximum): a run that takes it higher gets, before anything else, stalls of drawn
//! length at the stall points of the CPU that made the count's last hit, at and just before
//! it, so the retry that got through is held until the other side holds the lock again.
//!
//! Everything is a function of the seed: candidates for a batch are drawn in order from one
//! ChaCha8 stream before the batch runs, and results are absorbed in candidate order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use host_model::kernel::cpu::cover;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use sim_core::{CpuId, DecisionKind, FeatureTag, model_code, nearness, ranked};

use crate::runner::Verdict;
use crate::schedule::{Deviations, Schedule};

/// Runs an explorer plans and absorbs together (after the first ones, explore.rs): fixed, so
/// results do not depend on how many threads run a batch.
pub const BATCH: usize = 8;

/// Decisions before a new feature's first appearance that mutations aim at.
const HOTSPOT_WINDOW: u32 = 96;

/// How much a new feature is worth aiming mutations at: DPAMT near misses most, then
/// SEAMCALL statuses, wait-for edges, and the reads-from of atomics and locks; lock-order
/// edges and contended pairs least (they come with the wait-for edges that matter).
pub fn hotspot_weight(feature: u64) -> u64 {
    match (FeatureTag::of(feature), model_code(feature)) {
        (Some(FeatureTag::Nearness | FeatureTag::HitCount), _) | (_, Some(cover::NEAR_MISS)) => 8,
        (_, Some(cover::SEAMCALL)) => 4,
        (Some(FeatureTag::WaitFor), _) => 3,
        (_, Some(cover::ATOMIC)) | (Some(FeatureTag::LockHandoff | FeatureTag::Yielded), _) => 2,
        _ => 1,
    }
}

/// A uniform draw in `0..bound` (`bound` > 0).
pub fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    debug_assert!(bound > 0);
    ((u128::from(rng.next_u64()) * u128::from(bound)) >> 64) as u64
}

/// A run kept for what it covered first.
#[derive(Clone, Debug)]
pub struct Entry<S> {
    pub subject: S,
    pub decisions: Vec<u32>,
    pub options: Vec<u32>,
    pub kinds: Vec<DecisionKind>,
    /// The CPU each decision is about.
    pub cpus: Vec<CpuId>,
    pub features: Vec<u64>,
    /// Where its new features first appeared (decisions made by then), and how much each
    /// is worth aiming at (`hotspot_weight`).
    pub hotspots: Vec<(u32, u64)>,
    /// For each nearness site this run came nearer at than the runs before, which had been
    /// measured there: the distance, where the earlier of the two events happened, on which
    /// CPU, and how many of the longest stalls span the distance (sorted, each once).
    pub nearer_at: Vec<(u8, u32, CpuId, u32)>,
    /// For each counted feature whose count this run took higher than the runs before,
    /// which had covered it: the count's rank (`sim_core::COUNT_TOP` less the count), where
    /// its last hit was, on which CPU, and its site (sorted, each once).
    pub climbed_at: Vec<(u8, u32, CpuId, u64)>,
    picks: u32,
}

/// The runs that covered something new, and how often each feature was covered.
#[derive(Clone, Debug)]
pub struct Corpus<S> {
    entries: Vec<Entry<S>>,
    /// Feature -> runs that covered it.
    hits: BTreeMap<u64, u32>,
    /// Ranked site (nearness, hit count) -> the best rank any run came to at it.
    nearest: BTreeMap<u64, u8>,
}

impl<S> Default for Corpus<S> {
    fn default() -> Corpus<S> {
        Corpus { entries: Vec::new(), hits: BTreeMap::new(), nearest: BTreeMap::new() }
    }
}

impl<S: Clone> Corpus<S> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct features covered so far.
    pub fn features(&self) -> usize {
        self.hits.len()
    }

    /// Counts `verdict`'s features and keeps it when it covered a new one; returns how many
    /// were new.
    pub fn absorb(&mut self, subject: &S, verdict: &Verdict) -> usize {
        let mut hotspots = Vec::new();
        let mut nearest = Vec::new();
        let mut nearer_at = Vec::new();
        let mut climbed_at = Vec::new();
        for (position, &feature) in verdict.features.iter().enumerate() {
            let hits = self.hits.entry(feature).or_default();
            let new = match ranked(feature) {
                // Nearer (a higher count) than any run before at its site, or nothing new.
                Some((site, rank)) => {
                    nearest.push((site, rank));
                    self.nearest.get(&site).is_none_or(|&best| rank < best)
                }
                None => *hits == 0,
            };
            if new {
                let at = verdict.feature_first_at.get(position).copied().unwrap_or(0);
                hotspots.push((at, hotspot_weight(feature)));
                // Progress only where an earlier run was measured at the site: a first
                // sighting is no nearer than anything. But an invariant's window is worth
                // holding open the first time it is seen.
                if let Some((site, rank)) = ranked(feature) {
                    let seen = self.nearest.contains_key(&site);
                    let cpu = first_cpu(verdict, position);
                    if nearness(feature).is_some() {
                        let (stalls, window) = near_span(verdict, feature);
                        if seen || window {
                            nearer_at.push((rank, at, cpu, stalls));
                        }
                    } else if seen {
                        climbed_at.push((rank, at, cpu, site));
                    }
                }
            }
            *hits += 1;
        }
        for (site, distance) in nearest {
            let best = self.nearest.entry(site).or_insert(distance);
            *best = (*best).min(distance);
        }
        let new = hotspots.len();
        if new > 0 && !verdict.decision_kinds.is_empty() {
            hotspots.sort_unstable();
            hotspots.dedup();
            nearer_at.sort_unstable();
            nearer_at.dedup();
            climbed_at.sort_unstable();
            climbed_at.dedup();
            self.entries.push(Entry {
                subject: subject.clone(),
                decisions: verdict.decisions.clone(),
                options: verdict.decision_options.clone(),
                kinds: verdict.decision_kinds.clone(),
                cpus: verdict.decision_cpus.clone(),
                features: verdict.features.clone(),
                hotspots,
                nearer_at,
                climbed_at,
                picks: 0,
            });
        }
        new
    }

    /// Weights for picking: the rarer an entry's features, the heavier; each pick makes it
    /// lighter. Integer arithmetic, so the same on every machine.
    fn weights(&self) -> Vec<u64> {
        self.entries
            .iter()
            .map(|entry| {
                let rarity: u64 = entry
                    .features
                    .iter()
                    .map(|feature| 1_000_000 / u64::from(self.hits.get(feature).copied().unwrap_or(1).max(1)))
                    .sum();
                (rarity / (1 + u64::from(entry.picks) / 2)).max(1)
            })
            .collect()
    }

    /// Picks `count` entries (indices), by weight.
    fn pick(&mut self, rng: &mut ChaCha8Rng, count: usize) -> Vec<usize> {
        let weights = self.weights();
        let total: u64 = weights.iter().sum();
        let mut picked = Vec::with_capacity(count);
        for _ in 0..count {
            let mut target = below(rng, total.max(1));
            let mut chosen = weights.len() - 1;
            for (index, &weight) in weights.iter().enumerate() {
                if target < weight {
                    chosen = index;
                    break;
                }
                target -= weight;
            }
            self.entries[chosen].picks += 1;
            picked.push(chosen);
        }
        picked
    }

    pub fn entry(&self, index: usize) -> &Entry<S> {
        &self.entries[index]
    }
}

/// The CPU feature `position` of `verdict`'s run was first covered on (`CpuId(u32::MAX)`,
/// no CPU, when the run did not say): for a hit count, that of its last hit; for a
/// nearness, that of the earlier event.
fn first_cpu(verdict: &Verdict, position: usize) -> CpuId {
    verdict.feature_first_cpus.get(position).copied().unwrap_or(CpuId(u32::MAX))
}

/// How many of the longest stalls span the distance of nearness `feature` in `verdict`'s
/// run (one when the run did not say), and whether the pair is an invariant's window.
fn near_span(verdict: &Verdict, feature: u64) -> (u32, bool) {
    match verdict.near_spans.binary_search_by_key(&feature, |span| span.feature) {
        Ok(position) => {
            let span = verdict.near_spans[position];
            (span.stalls.max(1), span.window)
        }
        Err(_) => (1, false),
    }
}

/// What the explorer does to an entry's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    /// A long stall at the first stall point at or after a hotspot: the task that just
    /// covered something new is held there while the others run on.
    StallAtHotspot,
    /// A long stall at the last stall point before a hotspot: the task about to cover it is
    /// held back, so what the others do next comes first (the event's order reversed).
    StallBeforeHotspot,
    FlipOrder,
    InsertStall,
    LengthenStall,
    ShortenStall,
    MoveStall,
    DropStall,
    RedrawJitter,
    RedrawTail,
}

const MUTATIONS: &[(Mutation, u64)] = &[
    (Mutation::StallAtHotspot, 5),
    (Mutation::StallBeforeHotspot, 5),
    (Mutation::FlipOrder, 3),
    (Mutation::InsertStall, 4),
    (Mutation::LengthenStall, 3),
    (Mutation::ShortenStall, 1),
    (Mutation::MoveStall, 2),
    (Mutation::DropStall, 1),
    (Mutation::RedrawJitter, 1),
    (Mutation::RedrawTail, 1),
];

/// Indices of `kinds` matching `wanted` (and `keep` on the current option), inside the
/// window before `hotspot` when one is given and holds any.
fn indices_of<S>(
    entry: &Entry<S>,
    decisions: &[u32],
    hotspot: Option<u32>,
    wanted: &dyn Fn(DecisionKind, u32) -> bool,
) -> Vec<usize> {
    let all = || (0..decisions.len()).filter(|&i| wanted(entry.kinds[i], decisions[i]));
    if let Some(hotspot) = hotspot {
        let low = hotspot.saturating_sub(HOTSPOT_WINDOW) as usize;
        let near: Vec<usize> = all().filter(|&i| i >= low && i <= hotspot as usize).collect();
        if !near.is_empty() {
            return near;
        }
    }
    all().collect()
}

fn choose(rng: &mut ChaCha8Rng, indices: &[usize]) -> Option<usize> {
    (!indices.is_empty()).then(|| indices[below(rng, indices.len() as u64) as usize])
}

/// A random stall option the way `RandomChooser` draws one: one point in 32, any length.
fn random_option(rng: &mut ChaCha8Rng, kind: DecisionKind, options: u32) -> u32 {
    if kind == DecisionKind::Stall && below(rng, 32) != 0 {
        return 0;
    }
    below(rng, u64::from(options)) as u32
}

/// One to three mutations of `entry`'s schedule, as a dense decision vector.
pub fn mutate_schedule<S>(entry: &Entry<S>, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut decisions = entry.decisions.clone();
    let len = decisions.len().min(entry.kinds.len()).min(entry.options.len());
    decisions.truncate(len);
    if len == 0 {
        return decisions;
    }
    let rounds = 1 + below(rng, 3);
    for _ in 0..rounds {
        let hotspot = if below(rng, 4) != 0 { pick_hotspot(&entry.hotspots, rng) } else { None };
        let total: u64 = MUTATIONS.iter().map(|(_, weight)| weight).sum();
        let mut target = below(rng, total);
        let mut mutation = MUTATIONS[0].0;
        for &(candidate, weight) in MUTATIONS {
            if target < weight {
                mutation = candidate;
                break;
            }
            target -= weight;
        }
        apply(entry, &mut decisions, hotspot, mutation, rng);
    }
    decisions
}

/// The stall decision an aimed mutation at `hotspot` changes: the first stall point at or
/// after it (`StallAtHotspot`) or the last one before it (`StallBeforeHotspot`).
fn aimed_stall<S>(entry: &Entry<S>, hotspot: u32, mutation: Mutation) -> Option<usize> {
    let len = entry.decisions.len().min(entry.kinds.len()).min(entry.options.len());
    let stall = |i: &usize| entry.kinds[*i] == DecisionKind::Stall;
    let hotspot = (hotspot as usize).min(len);
    match mutation {
        Mutation::StallBeforeHotspot => (0..hotspot).rev().find(stall),
        _ => (hotspot..len).find(stall),
    }
}

/// FNV-1a of a schedule, for telling planned schedules apart.
fn schedule_hash(parent: usize, decisions: &[u32]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ parent as u64;
    for &option in decisions {
        for byte in option.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// A hotspot, by weight; `None` when there is none.
fn pick_hotspot(hotspots: &[(u32, u64)], rng: &mut ChaCha8Rng) -> Option<u32> {
    let total: u64 = hotspots.iter().map(|&(_, weight)| weight).sum();
    if total == 0 {
        return None;
    }
    let mut target = below(rng, total);
    for &(at, weight) in hotspots {
        if target < weight {
            return Some(at);
        }
        target -= weight;
    }
    None
}

/// Applies one `mutation` to `decisions`, near `hotspot` when one is given; a mutation with
/// nothing to work on inserts a stall instead.
fn apply<S>(
    entry: &Entry<S>,
    decisions: &mut [u32],
    hotspot: Option<u32>,
    mutation: Mutation,
    rng: &mut ChaCha8Rng,
) {
    match mutation {
        Mutation::StallAtHotspot | Mutation::StallBeforeHotspot => {
            let Some(hotspot) = hotspot else {
                return apply(entry, decisions, None, Mutation::InsertStall, rng);
            };
            stall_near_hotspot(entry, decisions, hotspot, mutation, rng);
        }
        Mutation::FlipOrder => {
            let orders = indices_of(entry, decisions, hotspot, &|kind, _| {
                matches!(kind, DecisionKind::SameCycleOrder | DecisionKind::WaiterWins)
            });
            if let Some(index) = choose(rng, &orders) {
                let options = u64::from(entry.options[index]);
                decisions[index] =
                    ((u64::from(decisions[index]) + 1 + below(rng, options - 1)) % options) as u32;
            }
        }
        Mutation::InsertStall => {
            let free = indices_of(entry, decisions, hotspot, &|kind, option| is_stall(kind) && option == 0);
            if let Some(index) = choose(rng, &free) {
                decisions[index] = 1 + below(rng, u64::from(max_option(entry, index).max(1))) as u32;
            }
        }
        Mutation::LengthenStall | Mutation::ShortenStall | Mutation::DropStall | Mutation::MoveStall => {
            let stalled =
                indices_of(entry, decisions, hotspot, &|kind, option| is_stall(kind) && option != 0);
            let Some(index) = choose(rng, &stalled) else {
                // Nothing to change: insert one instead.
                return apply(entry, decisions, hotspot, Mutation::InsertStall, rng);
            };
            change_stall(entry, decisions, index, mutation, rng);
        }
        Mutation::RedrawJitter => redraw_jitter(entry, decisions, hotspot, rng),
        Mutation::RedrawTail => redraw_tail(entry, decisions, hotspot, rng),
    }
}

/// Whether a decision of this kind is a stall point.
/// The stall points of `cpu` (of any CPU when it is `CpuId(u32::MAX)`) before decision
/// `before` that are not at their longest yet, nearest first.
fn stalls_before<S>(entry: &Entry<S>, before: usize, cpu: CpuId) -> impl Iterator<Item = usize> + '_ {
    let len = entry.decisions.len().min(entry.kinds.len()).min(entry.options.len());
    let any = cpu == CpuId(u32::MAX);
    (0..before.min(len)).rev().filter(move |&i| {
        is_stall(entry.kinds[i])
            && (any || entry.cpus.get(i).is_none_or(|&c| c == cpu))
            && entry.decisions[i] + 1 < entry.options[i]
    })
}

fn is_stall(kind: DecisionKind) -> bool {
    kind == DecisionKind::Stall
}

/// The largest option decision `index` of `entry`'s run offered (0 when it offered none).
fn max_option<S>(entry: &Entry<S>, index: usize) -> u32 {
    entry.options[index].saturating_sub(1)
}

/// A long stall at the first stall point at or after `hotspot` (`StallAtHotspot`) or at the
/// last one before it (`StallBeforeHotspot`); nothing when there is no such point.
fn stall_near_hotspot<S>(
    entry: &Entry<S>,
    decisions: &mut [u32],
    hotspot: u32,
    mutation: Mutation,
    rng: &mut ChaCha8Rng,
) {
    let hotspot = (hotspot as usize).min(decisions.len());
    let index = if mutation == Mutation::StallAtHotspot {
        (hotspot..decisions.len()).find(|&i| is_stall(entry.kinds[i]))
    } else {
        (0..hotspot).rev().find(|&i| is_stall(entry.kinds[i]))
    };
    let Some(index) = index else { return };
    let options = u64::from(max_option(entry, index).max(1));
    // The long half of the band: short stalls rarely outlast another CPU's step.
    decisions[index] = (options / 2 + 1 + below(rng, options - options / 2)).min(options) as u32;
}

/// Lengthens, shortens, drops or moves (as `mutation` says) the stall at decision `index`.
fn change_stall<S>(
    entry: &Entry<S>,
    decisions: &mut [u32],
    index: usize,
    mutation: Mutation,
    rng: &mut ChaCha8Rng,
) {
    let option = decisions[index];
    match mutation {
        Mutation::LengthenStall => {
            decisions[index] =
                (option + 1 + below(rng, u64::from(option)) as u32).min(max_option(entry, index));
        }
        Mutation::ShortenStall => decisions[index] = (option / 2).max(1),
        Mutation::DropStall => decisions[index] = 0,
        _ => move_stall(entry, decisions, index, rng),
    }
}

/// Moves the stall at decision `index` to another stall point within a few of this one
/// (nothing when the draw lands past either end).
fn move_stall<S>(entry: &Entry<S>, decisions: &mut [u32], index: usize, rng: &mut ChaCha8Rng) {
    let option = decisions[index];
    let points: Vec<usize> = (0..decisions.len()).filter(|&i| is_stall(entry.kinds[i])).collect();
    let here = points.binary_search(&index).unwrap_or(0);
    let offset = 1 + below(rng, 8) as usize;
    let there = if below(rng, 2) == 0 { here.saturating_sub(offset) } else { here + offset };
    if let Some(&target) = points.get(there) {
        decisions[index] = 0;
        decisions[target] = option.min(max_option(entry, target));
    }
}

/// Redraws the cost jitter of a short stretch of decisions starting in the window before
/// `hotspot` (anywhere when there is none).
fn redraw_jitter<S>(entry: &Entry<S>, decisions: &mut [u32], hotspot: Option<u32>, rng: &mut ChaCha8Rng) {
    let start = match hotspot {
        Some(hotspot) => (hotspot.saturating_sub(HOTSPOT_WINDOW) as usize).min(decisions.len() - 1),
        None => below(rng, decisions.len() as u64) as usize,
    };
    let stretch = 1 + below(rng, 32) as usize;
    for index in start..(start + stretch).min(decisions.len()) {
        if entry.kinds[index] == DecisionKind::CostJitter {
            decisions[index] = below(rng, u64::from(entry.options[index])) as u32;
        }
    }
}

/// Redraws every decision from `hotspot` on (from a random point when there is none), the
/// way `RandomChooser` draws them.
fn redraw_tail<S>(entry: &Entry<S>, decisions: &mut [u32], hotspot: Option<u32>, rng: &mut ChaCha8Rng) {
    let start = match hotspot {
        Some(hotspot) => (hotspot as usize).min(decisions.len() - 1),
        None => below(rng, decisions.len() as u64) as usize,
    };
    for (index, option) in decisions.iter_mut().enumerate().skip(start) {
        *option = random_option(rng, entry.kinds[index], entry.options[index]);
    }
}

/// The coverage-guided search state: a corpus, the seeded stream mutations draw from, how
/// many fresh cases it has asked for, the aimed mutations still to run, and the mutated
/// schedules already planned (never planned twice).
pub struct Explorer<S> {
    pub corpus: Corpus<S>,
    rng: ChaCha8Rng,
    fresh: u64,
    /// Aimed mutations of new entries still to run: (entry, what), in order.
    aimed: VecDeque<(usize, Aim)>,
    /// The longest stalls before the earlier event of each pair that came nearer than
    /// ever: run before anything else, fresh draws included.
    /// Each with its rank, entry, and (for a count) its site: a count's aims are dropped
    /// once another run has taken the count higher.
    nearer: Vec<(u8, usize, Aim, Option<u64>)>,
    planned: BTreeSet<u64>,
    /// Cases that are fresh draws whatever the corpus holds, bar nearness aims (the first
    /// ones of an exploration: `fresh_first`).
    first_fresh: u64,
    /// For each case planned and not absorbed yet (in order): whether it was a fresh draw,
    /// and the decision its schedule was changed at, when it is an aimed or random mutation
    /// of a corpus entry's schedule.
    pending: VecDeque<(bool, Option<u32>)>,
    /// Fresh draws and mutations run so far, and how many of each covered something new:
    /// the odds that decide which of the two the next case is.
    yields: [Yield; 2],
}

/// An aimed mutation of a new entry's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aim {
    /// A long stall at this stall decision.
    Stall(usize),
    /// The longest stall at each of the last `count` stall points of `cpu` before decision
    /// `before` that do not have it yet (`stalls_before`): the earlier of two events that
    /// came nearer than ever was there, and that many longest stalls span their distance,
    /// so its task is held past the later one and the two events' order flips.
    StallsLongest { before: usize, cpu: CpuId, count: usize },
    /// A stall of a length drawn when it is planned, at this stall decision: one next to
    /// where a count that climbed higher than ever stopped (a retry that got through after
    /// a run of BUSY answers). Which length puts the task back under the other side's hold
    /// depends on the other side's phase, which the run does not measure, so each aim draws
    /// one, from its own stratum of `CLIMB_DRAWS` (the second number) so that two aims at
    /// one point try different lengths.
    StallDrawn(usize, usize),
    /// The entry's decisions up to this one, the rest drawn afresh (as `random` draws): the
    /// run follows its parent to where it covered something new and goes on differently,
    /// so a feature that counts (a bucket of BUSY answers) can be pushed one bucket further.
    RedrawFrom(usize),
}

/// How often one source of cases (fresh draws, mutations) ran and covered something new.
#[derive(Clone, Copy, Debug, Default)]
struct Yield {
    tries: u64,
    new: u64,
}

impl Yield {
    /// The posterior mean of its chance to cover something new (a uniform prior), in
    /// millionths.
    fn odds(self) -> u64 {
        (self.new + 1) * 1_000_000 / (self.tries + 2)
    }
}

/// The share of fresh draws, in 1/`FRESH_SHARE_DENOMINATOR`, stays within these: neither
/// source is starved on the evidence of a few runs.
const FRESH_SHARE_MIN: u64 = 1;
const FRESH_SHARE_MAX: u64 = 3;
const FRESH_SHARE_DENOMINATOR: u64 = 4;

/// Distinct stall decisions of a new entry that aimed mutations stall, the ones its
/// first hotspots point at first.
const AIMED_PER_ENTRY: usize = 8;

/// Hotspots of a new entry that aimed mutations redraw the schedule from (the first ones in
/// the order its stalls are aimed).
const REDRAWS_PER_ENTRY: usize = 2;

/// Aimed mutations waiting at most; past it, new entries get none.
const AIMED_QUEUE_MAX: usize = 64;

/// The most longest stalls an aim at a pair that came nearer than ever holds its earlier
/// event's task with: two events farther apart are not a near miss, however much nearer
/// than before (a millisecond apart, they are twenty of the default `run.max_stall`).
const NEAR_REACH: usize = 4;

/// Aims at a pair that came nearer than ever beyond the one whose longest stalls span its
/// distance: each holds the earlier event's task with one stall more (the stalls are of
/// that CPU, but the task may not run through all of them).
const NEARER_EXTRA: usize = 1;

/// Nearness aims waiting at most.
const NEARER_QUEUE_MAX: usize = 16;

/// Stalls of drawn length at each of the two stall points next to the last hit of a count
/// that climbed higher than ever (the first one at or after it, the last one before it),
/// one from each quarter of the stall lengths. Stall lengths are log-spaced, and which of
/// them pays is a narrow band for a low count: of a zap that lost 2 rounds in S-K0, only
/// stalls of about 80 to 240 cycles (four of the 32 lengths) made it lose all 17, where
/// for one that lost 13 half of all lengths did (docs/exploration.md).
const CLIMB_DRAWS: usize = 4;

/// Tries at a random mutation that is new before settling for a repeat.
const MUTATION_TRIES: usize = 8;

impl<S: Clone> Explorer<S> {
    pub fn new(seed: u64) -> Explorer<S> {
        Explorer {
            corpus: Corpus::default(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x636f_7665_7261_6765),
            fresh: 0,
            aimed: VecDeque::new(),
            nearer: Vec::new(),
            planned: BTreeSet::new(),
            first_fresh: 0,
            pending: VecDeque::new(),
            yields: [Yield::default(); 2],
        }
    }

    /// The first `count` cases are fresh draws (`fresh(0)`, `fresh(1)`, …) except where a
    /// run came nearer at a nearness site or took a count higher than the runs before it
    /// (its aims run first), and as long as the fresh draws after the first cover something
    /// new (`first_fresh_pays`).
    pub fn fresh_first(mut self, count: u64) -> Explorer<S> {
        self.first_fresh = count;
        self
    }

    /// Whether the next case is one of the first `fresh_first` fresh draws: so while fresh
    /// draws after the first case keep covering something new, or none has been absorbed
    /// yet. Where the first of them covered nothing the first case did not, the rest are
    /// not forced: the corpus's aims and the sources' odds decide, as after them.
    fn first_fresh_pays(&self) -> bool {
        let [fresh, _] = self.yields;
        self.fresh < self.first_fresh && (fresh.tries <= 1 || fresh.new >= 2)
    }

    /// Whether the next case is a fresh draw: always while the corpus is empty; after that
    /// with the share the two sources' odds of covering something new give (fresh draws
    /// against mutations), within `FRESH_SHARE_MIN..=FRESH_SHARE_MAX` quarters. A scenario
    /// whose mutations keep finding new interleavings spends its runs on them; one where
    /// they stopped (every run covers what the corpus has) goes back to fresh draws, which
    /// are what finds a bug that coverage gives no trail to.
    fn fresh_next(&mut self) -> bool {
        if self.corpus.is_empty() {
            return true;
        }
        let [fresh, mutated] = self.yields.map(Yield::odds);
        let scale = 1_000_000u64;
        let low = scale * FRESH_SHARE_MIN / FRESH_SHARE_DENOMINATOR;
        let high = scale * FRESH_SHARE_MAX / FRESH_SHARE_DENOMINATOR;
        let share = (fresh * scale / (fresh + mutated).max(1)).clamp(low, high);
        below(&mut self.rng, scale) < share
    }

    /// The next `count` cases: first the longest stalls of runs that came nearer at a
    /// nearness site (nearest first); then fresh ones from `fresh(k)` (k = 0, 1, … over the
    /// whole exploration) while the corpus is empty or the first `fresh_first` are not all
    /// drawn and, after, in the share `fresh_next` gives;
    /// then the aimed mutations of new entries (a long stall at, or just before, the points
    /// where they covered something new, the earliest first, and their schedule redrawn
    /// from the first of those points); then random mutations of entries
    /// picked by weight: their schedule, or (when `mutate_subject` gives one) their subject,
    /// run under the parent's schedule or a fresh one.
    pub fn plan(
        &mut self,
        count: usize,
        fresh: &mut dyn FnMut(u64) -> (S, Schedule),
        mutate_subject: &mut dyn FnMut(&S, &mut ChaCha8Rng) -> Option<S>,
    ) -> Vec<(S, Schedule)> {
        let mut planned = Vec::with_capacity(count);
        for _ in 0..count {
            if let Some((index, aim)) = self.pop_nearer() {
                planned.push(self.plan_aimed(index, aim));
                continue;
            }
            if self.first_fresh_pays() || self.fresh_next() {
                planned.push(fresh(self.fresh));
                self.pending.push_back((true, None));
                self.fresh += 1;
                continue;
            }
            if let Some((index, aim)) = self.aimed.pop_front() {
                planned.push(self.plan_aimed(index, aim));
                continue;
            }
            let index = self.corpus.pick(&mut self.rng, 1)[0];
            let entry = self.corpus.entry(index).clone();
            if let Some(case) = self.plan_subject_mutation(&entry, fresh, mutate_subject) {
                planned.push(case);
                continue;
            }
            planned.push(self.plan_schedule_mutation(index, &entry));
        }
        planned
    }

    /// The nearness aim to run next: the nearest pair's first, of the newest entry when two
    /// came as near.
    fn pop_nearer(&mut self) -> Option<(usize, Aim)> {
        let best = &self.corpus.nearest;
        self.nearer
            .retain(|&(rank, _, _, site)| site.is_none_or(|site| best.get(&site).is_none_or(|&b| rank <= b)));
        let next = (0..self.nearer.len()).min_by_key(|&position| {
            (self.nearer[position].0, std::cmp::Reverse(self.nearer[position].1), position)
        })?;
        let (_, index, aim, _) = self.nearer.remove(next);
        Some((index, aim))
    }

    /// Entry `index`'s subject under its schedule changed as `aim` says.
    fn plan_aimed(&mut self, index: usize, aim: Aim) -> (S, Schedule) {
        let entry = self.corpus.entry(index);
        let mut decisions = entry.decisions.clone();
        let len = entry.kinds.len().min(entry.options.len());
        decisions.truncate(len);
        let at = match aim {
            Aim::Stall(stall) => {
                decisions[stall] = (entry.options[stall].saturating_sub(1) * 3 / 4).max(1);
                stall
            }
            Aim::StallsLongest { before, cpu, count } => {
                let stalls: Vec<usize> = stalls_before(entry, before, cpu).take(count).collect();
                for &stall in &stalls {
                    decisions[stall] = entry.options[stall].saturating_sub(1).max(1);
                }
                stalls.last().copied().unwrap_or(before)
            }
            Aim::StallDrawn(stall, stratum) => {
                let longest = u64::from(entry.options[stall].saturating_sub(1).max(1));
                let (strata, stratum) = (CLIMB_DRAWS as u64, stratum as u64);
                let (low, high) = (longest * stratum / strata, longest * (stratum + 1) / strata);
                decisions[stall] = (1 + low + below(&mut self.rng, (high - low).max(1))).min(longest) as u32;
                stall
            }
            Aim::RedrawFrom(from) => {
                for (index, option) in decisions.iter_mut().enumerate().skip(from) {
                    *option = random_option(&mut self.rng, entry.kinds[index], entry.options[index]);
                }
                from
            }
        };
        self.pending.push_back((false, Some(at as u32)));
        self.planned.insert(schedule_hash(index, &decisions));
        let entry = self.corpus.entry(index);
        (entry.subject.clone(), Schedule::Deviations(Deviations::from_decisions(&decisions)))
    }

    /// One time in four, `entry`'s subject mutated (when `mutate_subject` gives one), run
    /// under `entry`'s schedule or a fresh one; `None` otherwise.
    fn plan_subject_mutation(
        &mut self,
        entry: &Entry<S>,
        fresh: &mut dyn FnMut(u64) -> (S, Schedule),
        mutate_subject: &mut dyn FnMut(&S, &mut ChaCha8Rng) -> Option<S>,
    ) -> Option<(S, Schedule)> {
        if below(&mut self.rng, 4) != 0 {
            return None;
        }
        let subject = mutate_subject(&entry.subject, &mut self.rng)?;
        let schedule = if below(&mut self.rng, 2) == 0 {
            Schedule::Deviations(Deviations::from_decisions(&entry.decisions))
        } else {
            let (_, schedule) = fresh(self.fresh);
            self.fresh += 1;
            schedule
        };
        self.pending.push_back((false, None));
        Some((subject, schedule))
    }

    /// Entry `index`'s subject under a mutation of its schedule, one not planned before
    /// when `MUTATION_TRIES` draws find one.
    fn plan_schedule_mutation(&mut self, index: usize, entry: &Entry<S>) -> (S, Schedule) {
        let mut decisions = mutate_schedule(entry, &mut self.rng);
        for _ in 1..MUTATION_TRIES {
            let hash = schedule_hash(index, &decisions);
            if decisions != entry.decisions && !self.planned.contains(&hash) {
                break;
            }
            decisions = mutate_schedule(entry, &mut self.rng);
        }
        self.planned.insert(schedule_hash(index, &decisions));
        let first_change = decisions.iter().zip(&entry.decisions).position(|(a, b)| a != b);
        self.pending.push_back((false, first_change.map(|at| at as u32)));
        (entry.subject.clone(), Schedule::Deviations(Deviations::from_decisions(&decisions)))
    }

    /// Takes in one run's coverage (each planned case once, in the order planned); returns
    /// how many features were new. A run that joins the corpus gets its aimed mutations
    /// queued, ahead of those already waiting: first at the hotspots that follow the point
    /// its parent's schedule was changed at, nearest first (the change's consequences, where
    /// one more stall most likely makes another new interleaving), then the rest, earliest
    /// first.
    pub fn absorb(&mut self, subject: &S, verdict: &Verdict) -> usize {
        let (was_fresh, changed_at) = self.pending.pop_front().unwrap_or((true, None));
        let entries = self.corpus.len();
        let new = self.corpus.absorb(subject, verdict);
        let source = &mut self.yields[usize::from(!was_fresh)];
        source.tries += 1;
        source.new += u64::from(new > 0);
        if self.corpus.len() > entries && self.nearer.len() < NEARER_QUEUE_MAX {
            self.queue_progress_aims(self.corpus.len() - 1);
        }
        if self.corpus.len() > entries && self.aimed.len() < AIMED_QUEUE_MAX {
            self.queue_hotspot_aims(self.corpus.len() - 1, changed_at);
        }
        new
    }

    /// The aims of entry `index` where it came nearer at a nearness site (the longest stall
    /// at the last stall points before the earlier event) or took a count higher (stalls of
    /// drawn length at its CPU's stall points next to the count's last hit): they run
    /// before anything else.
    fn queue_progress_aims(&mut self, index: usize) {
        let entry = self.corpus.entry(index);
        let len = entry.decisions.len().min(entry.kinds.len()).min(entry.options.len());
        let mut aims: Vec<(u8, Aim)> = Vec::new();
        for &(distance, at, cpu, stalls) in &entry.nearer_at {
            if stalls as usize > NEAR_REACH {
                continue;
            }
            let before = at as usize;
            let available = stalls_before(entry, before, cpu).take(stalls as usize + NEARER_EXTRA).count();
            for count in stalls as usize..=stalls as usize + NEARER_EXTRA {
                let aim = Aim::StallsLongest { before, cpu, count: count.min(available) };
                if count.min(available) > 0 && !aims.iter().any(|&(_, a)| a == aim) {
                    aims.push((distance, aim));
                }
            }
        }
        for (distance, aim) in aims {
            self.nearer.push((distance, index, aim, None));
        }
        for &(rank, at, cpu, site) in &entry.climbed_at {
            // The stall points of the CPU that made the count's last hit.
            let any = cpu == CpuId(u32::MAX);
            let its = |i: &usize| {
                is_stall(entry.kinds[*i]) && (any || entry.cpus.get(*i).is_none_or(|&c| c == cpu))
            };
            let after = (at as usize..len).find(its);
            let before = (0..(at as usize).min(len)).rev().find(its);
            for stall in [after, before].into_iter().flatten() {
                for stratum in 0..CLIMB_DRAWS {
                    self.nearer.push((rank, index, Aim::StallDrawn(stall, stratum), Some(site)));
                }
            }
        }
    }

    /// The aims of new entry `index` at its hotspots (those after `changed_at`, where its
    /// parent's schedule was changed, first, each in the order they appeared): a long stall
    /// at and before each, then its schedule redrawn from the first ones.
    fn queue_hotspot_aims(&mut self, index: usize, changed_at: Option<u32>) {
        let entry = self.corpus.entry(index);
        let mut hotspots = entry.hotspots.clone();
        let after = |at: u32| changed_at.is_some_and(|changed| at > changed);
        // In the order they appeared, those after the change first: the earliest is where
        // the run first went its own way, and a stall there moves all that follows.
        hotspots.sort_by_key(|&(at, _)| (!after(at), at));
        let mut stalls: Vec<usize> = Vec::new();
        for &(at, _) in &hotspots {
            for mutation in [Mutation::StallAtHotspot, Mutation::StallBeforeHotspot] {
                if let Some(stall) = aimed_stall(entry, at, mutation)
                    && entry.decisions[stall] == 0
                    && !stalls.contains(&stall)
                    && stalls.len() < AIMED_PER_ENTRY
                {
                    stalls.push(stall);
                }
            }
        }
        let len = entry.decisions.len().min(entry.kinds.len()).min(entry.options.len());
        let mut redraws: Vec<usize> = Vec::new();
        for &(at, _) in &hotspots {
            let at = at as usize;
            if at < len && !redraws.contains(&at) && redraws.len() < REDRAWS_PER_ENTRY {
                redraws.push(at);
            }
        }
        // Newest first: a run that covered something new after an aimed change is one
        // step from its parent, and its own aimed changes build on that step. Its stalls
        // first, then its redraws.
        let aims = stalls.into_iter().map(Aim::Stall).chain(redraws.into_iter().map(Aim::RedrawFrom));
        for aim in aims.rev() {
            self.aimed.push_front((index, aim));
        }
    }
}

#[cfg(test)]
mod tests {
    use sim_core::{NearSpan, Outcome};

    use super::*;

    fn verdict(features: Vec<u64>, kinds: Vec<DecisionKind>) -> Verdict {
        Verdict {
            outcome: Outcome::pass(),
            decisions: vec![0; kinds.len()],
            decision_options: vec![17; kinds.len()],
            decision_cpus: vec![CpuId(0); kinds.len()],
            near_spans: Vec::new(),
            feature_first_at: (0..features.len() as u32).collect(),
            feature_first_cpus: vec![CpuId(0); features.len()],
            decision_kinds: kinds,
            features,
            seamcalls: Default::default(),
            pamt_end: Vec::new(),
            events: 0,
        }
    }

    #[test]
    fn only_runs_with_new_features_join_and_rare_ones_weigh_more() {
        let kinds = vec![DecisionKind::Stall; 4];
        let mut corpus: Corpus<()> = Corpus::default();
        assert_eq!(corpus.absorb(&(), &verdict(vec![1, 2], kinds.clone())), 2);
        assert_eq!(corpus.absorb(&(), &verdict(vec![1, 2], kinds.clone())), 0);
        assert_eq!(corpus.absorb(&(), &verdict(vec![1, 3], kinds.clone())), 1);
        assert_eq!(corpus.len(), 2);
        assert_eq!(corpus.features(), 3);
        let weights = corpus.weights();
        assert!(weights[1] > weights[0], "feature 3 is rarer than 2: {weights:?}");
    }

    #[test]
    fn mutations_change_only_what_they_aim_at_and_stay_in_range() {
        use DecisionKind::{CostJitter, SameCycleOrder, Stall};
        let kinds: Vec<DecisionKind> =
            (0..200).map(|i| [Stall, CostJitter, SameCycleOrder, Stall][i % 4]).collect();
        let mut corpus: Corpus<()> = Corpus::default();
        let mut run = verdict(vec![7], kinds.clone());
        run.decision_options =
            kinds.iter().map(|kind| if *kind == SameCycleOrder { 2 } else { 17 }).collect();
        corpus.absorb(&(), &run);
        let entry = corpus.entry(0).clone();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut changed = 0;
        for _ in 0..200 {
            let mutated = mutate_schedule(&entry, &mut rng);
            assert_eq!(mutated.len(), 200);
            for (index, &option) in mutated.iter().enumerate() {
                assert!(option < entry.options[index], "{index}: {option}");
            }
            changed += usize::from(mutated != entry.decisions);
        }
        assert!(changed > 150, "{changed} of 200 mutations changed something");
    }

    #[test]
    fn plans_are_a_function_of_the_seed() {
        let plan = |seed| {
            let mut explorer: Explorer<u64> = Explorer::new(seed);
            let kinds = vec![DecisionKind::Stall; 50];
            explorer.absorb(&0, &verdict(vec![1], kinds.clone()));
            explorer.absorb(&1, &verdict(vec![2], kinds));
            let mut fresh = |k| (100 + k, Schedule::Random(k));
            explorer.plan(16, &mut fresh, &mut |subject, _| Some(subject + 10))
        };
        assert_eq!(plan(5), plan(5));
        assert_ne!(plan(5), plan(6));
    }

    #[test]
    fn a_new_entry_is_stalled_then_redrawn_from_its_hotspot() {
        let mut explorer: Explorer<()> = Explorer::new(3);
        let kinds = vec![DecisionKind::Stall; 40];
        let mut run = verdict(vec![9], kinds);
        run.feature_first_at = vec![20];
        let mut fresh = |k| ((), Schedule::Random(k));
        // The first case is fresh (the corpus is empty); its run joins.
        assert_eq!(explorer.plan(1, &mut fresh, &mut |_, _| None)[0].1, Schedule::Random(0));
        explorer.absorb(&(), &run);
        let aims: Vec<Aim> = explorer.aimed.iter().map(|&(_, aim)| aim).collect();
        // A stall at the hotspot and one just before, then the redraw from it.
        assert_eq!(aims, vec![Aim::Stall(20), Aim::Stall(19), Aim::RedrawFrom(20)]);
        // Planned, the redraw keeps the parent's decisions before the hotspot.
        explorer.aimed.retain(|&(_, aim)| matches!(aim, Aim::RedrawFrom(_)));
        let redraw = loop {
            let planned = explorer.plan(1, &mut fresh, &mut |_, _| None);
            if let Schedule::Deviations(deviations) = &planned[0].1 {
                break deviations.clone();
            }
        };
        assert!(redraw.as_slice().iter().all(|&(index, _)| index >= 20), "{redraw:?}");
    }

    #[test]
    fn a_count_taken_higher_is_followed_up_first_on_its_cpu_and_a_higher_one_supersedes_it() {
        let count = |rank: u64| (u64::from(FeatureTag::HitCount as u8) << 56) | 0x4321 << 8 | rank;
        // Stall points alternate between CPUs 0 and 1.
        let kinds = vec![DecisionKind::Stall; 40];
        let mut explorer: Explorer<()> = Explorer::new(9).fresh_first(8);
        let run = |explorer: &mut Explorer<()>, rank: u64, at: u32| {
            let mut run = verdict(vec![count(rank)], kinds.clone());
            run.decision_cpus = (0..40).map(|i| CpuId(i % 2)).collect();
            run.feature_first_at = vec![at];
            run.feature_first_cpus = vec![CpuId(1)];
            explorer.absorb(&(), &run)
        };
        let mut fresh = |k| ((), Schedule::Random(k));
        let aimed_at = |planned: &[((), Schedule)]| -> Vec<u32> {
            planned
                .iter()
                .map(|(_, schedule)| match schedule {
                    Schedule::Deviations(deviations) => deviations.as_slice()[0].0,
                    other => panic!("not an aimed mutation: {other:?}"),
                })
                .collect()
        };
        // The first count measured is no progress; a lower count is nothing new.
        assert_eq!(run(&mut explorer, 124, 10), 1);
        assert_eq!(run(&mut explorer, 125, 10), 0);
        assert!(explorer.nearer.is_empty());
        // Higher: drawn stalls at CPU 1's stall point at the last hit and at its one before,
        // ahead of the fresh draws.
        assert_eq!(run(&mut explorer, 120, 20), 1);
        assert_eq!(explorer.corpus.entry(1).climbed_at, vec![(120, 20, CpuId(1), 0x4321)]);
        let planned = explorer.plan(2, &mut fresh, &mut |_, _| None);
        assert_eq!(aimed_at(&planned), vec![21, 21]);
        // A run that takes it higher still drops what is left of those aims: one drawn
        // stall from each of the `CLIMB_DRAWS` quarters at each of its two points.
        assert_eq!(run(&mut explorer, 118, 30), 1);
        let planned = explorer.plan(2 * CLIMB_DRAWS + 1, &mut fresh, &mut |_, _| None);
        let points = [vec![31; CLIMB_DRAWS], vec![29; CLIMB_DRAWS]].concat();
        assert_eq!(aimed_at(&planned[..2 * CLIMB_DRAWS]), points);
        assert_eq!(planned[2 * CLIMB_DRAWS].1, Schedule::Random(0));
        // Lengths (options 1 to 16 here) one from each quarter, shortest first.
        let quarters: Vec<u32> = planned[..CLIMB_DRAWS]
            .iter()
            .map(|(_, schedule)| match schedule {
                Schedule::Deviations(deviations) => (deviations.as_slice()[0].1 - 1) / 4,
                other => panic!("not an aimed mutation: {other:?}"),
            })
            .collect();
        assert_eq!(quarters, [0, 1, 2, 3]);
    }

    #[test]
    fn only_a_nearer_run_is_new_at_a_nearness_site_and_its_cpu_is_held_for_the_distance() {
        let near = |distance: u64| (u64::from(FeatureTag::Nearness as u8) << 56) | 0x1234 << 8 | distance;
        // Stall points alternate between CPUs 0 and 1; the earlier event is on CPU 1.
        let kinds = vec![DecisionKind::Stall; 40];
        let mut explorer: Explorer<()> = Explorer::new(7).fresh_first(8);
        let run = |explorer: &mut Explorer<()>, distance, at, stalls| {
            let mut run = verdict(vec![near(distance)], kinds.clone());
            run.decision_cpus = (0..40).map(|i| CpuId(i % 2)).collect();
            run.feature_first_at = vec![at];
            run.feature_first_cpus = vec![CpuId(1)];
            run.near_spans = vec![NearSpan { feature: near(distance), stalls, window: false }];
            explorer.absorb(&(), &run)
        };
        // The first sighting is new, but is no progress: no nearness aim.
        assert_eq!(run(&mut explorer, 34, 20, 3), 1);
        // As far, or farther: nothing new.
        assert_eq!(run(&mut explorer, 34, 20, 3), 0);
        assert_eq!(run(&mut explorer, 36, 20, 5), 0);
        assert!(explorer.nearer.is_empty());
        // Nearer, but farther than `NEAR_REACH` longest stalls span: new, and no aim.
        assert_eq!(run(&mut explorer, 33, 20, NEAR_REACH as u32 + 1), 1);
        assert!(explorer.nearer.is_empty());
        // Nearer, two longest stalls apart: CPU 1's last two stall points before the
        // earlier event get the longest stall, then its last three.
        assert_eq!(run(&mut explorer, 30, 24, 2), 1);
        assert_eq!(explorer.corpus.entry(2).nearer_at, vec![(30, 24, CpuId(1), 2)]);
        let mut fresh = |k| ((), Schedule::Random(k));
        let planned = explorer.plan(3, &mut fresh, &mut |_, _| None);
        let stalled = aimed_deviations(&planned[..2]);
        assert_eq!(stalled, vec![vec![(21, 16), (23, 16)], vec![(19, 16), (21, 16), (23, 16)]]);
        // Then the first runs are fresh draws again.
        assert_eq!(planned[2].1, Schedule::Random(0));
    }

    /// The deviations of planned cases that are all aimed mutations.
    fn aimed_deviations(planned: &[((), Schedule)]) -> Vec<Vec<(u32, u32)>> {
        planned
            .iter()
            .map(|(_, schedule)| match schedule {
                Schedule::Deviations(deviations) => deviations.as_slice().to_vec(),
                other => panic!("not an aimed mutation: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_window_within_reach_is_held_open_the_first_time_it_is_seen() {
        let near =
            |site: u64, distance: u64| (u64::from(FeatureTag::Nearness as u8) << 56) | site << 8 | distance;
        let kinds = vec![DecisionKind::Stall; 40];
        let mut explorer: Explorer<()> = Explorer::new(7).fresh_first(8);
        let run = |explorer: &mut Explorer<()>, feature, stalls, window| {
            let mut run = verdict(vec![feature], kinds.clone());
            run.decision_cpus = (0..40).map(|i| CpuId(i % 2)).collect();
            run.feature_first_at = vec![24];
            run.feature_first_cpus = vec![CpuId(0)];
            run.near_spans = vec![NearSpan { feature, stalls, window }];
            explorer.absorb(&(), &run)
        };
        // A plain pair first seen one longest stall apart: no aim.
        assert_eq!(run(&mut explorer, near(0x1234, 18), 1, false), 1);
        assert!(explorer.nearer.is_empty());
        // A window, beyond reach: no aim either.
        assert_eq!(run(&mut explorer, near(0x5678, 40), NEAR_REACH as u32 + 1, true), 1);
        assert!(explorer.nearer.is_empty());
        // A window first seen one longest stall apart: CPU 0's last stall point before the
        // earlier event gets the longest stall, then its last two; before any fresh draw.
        assert_eq!(run(&mut explorer, near(0x9abc, 18), 1, true), 1);
        let mut fresh = |k| ((), Schedule::Random(k));
        let planned = explorer.plan(3, &mut fresh, &mut |_, _| None);
        let stalled = aimed_deviations(&planned[..2]);
        assert_eq!(stalled, vec![vec![(22, 16)], vec![(20, 16), (22, 16)]]);
        assert_eq!(planned[2].1, Schedule::Random(0));
    }

    #[test]
    fn a_new_entry_without_a_parent_is_aimed_at_in_the_order_its_features_appeared() {
        let tagged = |tag: FeatureTag, word: u64| (u64::from(tag as u8) << 56) | word << 8;
        let kinds = vec![DecisionKind::Stall; 40];
        // A lock-order edge (weighs 1) at decision 10, a wait-for edge (weighs 3) at 30.
        let mut run =
            verdict(vec![tagged(FeatureTag::LockOrderClass, 2), tagged(FeatureTag::WaitFor, 1)], kinds);
        run.feature_first_at = vec![10, 30];
        let mut explorer: Explorer<()> = Explorer::new(3);
        explorer.absorb(&(), &run);
        let aims: Vec<Aim> = explorer.aimed.iter().map(|&(_, aim)| aim).collect();
        assert_eq!(
            aims,
            vec![
                Aim::Stall(10),
                Aim::Stall(9),
                Aim::Stall(30),
                Aim::Stall(29),
                Aim::RedrawFrom(10),
                Aim::RedrawFrom(30)
            ]
        );
    }

    #[test]
    fn the_first_fresh_draws_are_forced_only_while_they_cover_something_new() {
        let kinds = vec![DecisionKind::Stall; 40];
        let mut fresh = |k| ((), Schedule::Random(k));
        let mut fresh_in_next_five = |second_and_third_new: bool| {
            let mut explorer: Explorer<()> = Explorer::new(4).fresh_first(8);
            explorer.plan(3, &mut fresh, &mut |_, _| None);
            explorer.absorb(&(), &verdict(vec![1], kinds.clone()));
            let later = if second_and_third_new { [vec![2], vec![3]] } else { [vec![1], vec![1]] };
            for features in later {
                explorer.absorb(&(), &verdict(features, kinds.clone()));
            }
            let planned = explorer.plan(5, &mut fresh, &mut |_, _| None);
            planned.iter().filter(|(_, schedule)| matches!(schedule, Schedule::Random(_))).count()
        };
        // Fresh draws that pay stay forced; ones that covered nothing give way to the aims.
        assert_eq!(fresh_in_next_five(true), 5);
        assert!(fresh_in_next_five(false) < 5);
    }

    #[test]
    fn fresh_draws_get_more_of_the_runs_when_mutations_stop_finding_anything() {
        let kinds = vec![DecisionKind::Stall; 8];
        let fresh_share = |mutations_new: bool| {
            let mut explorer: Explorer<()> = Explorer::new(11);
            explorer.absorb(&(), &verdict(vec![1], kinds.clone()));
            explorer.yields =
                [Yield { tries: 20, new: 5 }, Yield { tries: 60, new: if mutations_new { 50 } else { 0 } }];
            (0..1000).filter(|_| explorer.fresh_next()).count()
        };
        let (productive, barren) = (fresh_share(true), fresh_share(false));
        // Fresh draws at the floor (a quarter) while mutations pay, near the cap after.
        assert!((200..300).contains(&productive), "{productive}");
        assert!((700..800).contains(&barren), "{barren}");
    }
}
