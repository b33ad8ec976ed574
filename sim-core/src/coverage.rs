//! What a run covered, for coverage-guided exploration (`--strategy coverage`).
//!
//! A run with `EngineConfig::coverage` on records *features*: small facts about how its
//! tasks met, each folded into a `u64` (a tag in the top byte, a hash of the facts below).
//! Two runs that cover the same features met in the same ways as far as the explorer can
//! tell; a run with a feature no earlier run had is kept in the explorer's corpus and
//! mutated further (reads-from-guided fuzzing, RFF, ASPLOS 2024, adapted from reads-from
//! pairs to lock and status events). The engine records:
//! - lock-order edges ("took B while holding A"), over classes and over lock names;
//! - wait-for edges: a task queues on a lock held in a conflicting mode, what it holds
//!   meanwhile, and whether the holder it waits for is itself waiting (one step short of a
//!   wait cycle);
//! - contended pairs: a lock contended while the waiter holds another;
//! - lock hand-offs: who last released a lock a task takes (the lock's reads-from);
//! - yields: which task gave its CPU to which (an IPI handler, a stopper), holding what.
//!
//! Models add their own through [`Engine::cover`] (host-model: each SEAMCALL's leaf, status
//! and operand, and the near misses of its invariants). A model feature covered the 2nd,
//! 4th, 8th, ... time in a run is also a feature of its own (AFL's hit-count buckets).
//! Through [`Engine::cover_counted`] a model names a feature whose count is a gradient to
//! climb (host-model: the BUSY answers of a leaf, towards a retry bound running out): the run
//! records how many times it was covered (one by one up to `COUNT_TOP`) at its last hit, and
//! explorers count it new only when the count is higher than any run's before (IJON's
//! maximum). Through
//! [`Engine::cover_nearness`] a model or checker says how near two events came at a site
//! (scenarios: a VMXON some cycles after another task's VMXOFF on the same CPU); explorers
//! count such a feature new only when it is nearer than any before at its site.
//!
//! Off (the default), none of this exists: the engine holds `None` and every hook is one
//! branch. On, features go into one `Vec` that is sorted and deduplicated as it grows, and
//! the kind of every decision is kept so mutators know which decisions are stalls.

use std::collections::BTreeMap;

use crate::chooser::DecisionKind;
use crate::engine::Engine;
use crate::resource::{Mode, Resource, ResourceId};
use crate::{CpuId, TaskId};

/// The top byte of a feature: which kind of fact it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum FeatureTag {
    /// Took a lock of one class while holding one of another (or the same) class, and
    /// whether the taken lock was created after the held one (AB vs BA within a class).
    LockOrderClass = 1,
    /// Took lock B while holding lock A, by lock name.
    LockOrderName = 2,
    /// Queued on a lock (name, modes of waiter and holders), and whether a holder waits too.
    WaitFor = 3,
    /// Queued on a lock while holding another.
    ContendedPair = 4,
    /// A model's own feature ([`Engine::cover`]).
    Model = 5,
    /// Took a lock (name, mode), after waiting or not, last released by this CPU, another
    /// one, or nobody yet: the lock's reads-from.
    LockHandoff = 6,
    /// A task gave its CPU to another (an IPI handler, a stopper, a peer whose slice came)
    /// while holding these locks: where an interrupt or preemption landed.
    Yielded = 7,
    /// How near two events came at a site a model names ([`Engine::cover_nearness`]): the
    /// site's hash above, the distance in the low byte. An explorer counts it new only when
    /// the distance is below every earlier run's at the site (IJON's minimum, S&P 2020), so
    /// runs that come nearer are kept and runs that stay as far are not.
    Nearness = 8,
    /// How many times a run covered a counted model feature ([`Engine::cover_counted`]): the
    /// feature's hash above, `COUNT_TOP` less the count (at most `COUNT_TOP`) in the low byte
    /// (so smaller is more, as for `Nearness`). Placed at the feature's last hit: the frontier
    /// of the count is where it stopped growing.
    HitCount = 9,
}

/// The low byte of a `HitCount` feature is this less the count, told apart one by one up to
/// here (a retry bound is a count: 14 and 15 lost rounds are different steps towards 16).
pub const COUNT_TOP: u8 = 128;

impl FeatureTag {
    /// The tag of a feature word.
    pub fn of(feature: u64) -> Option<FeatureTag> {
        match (feature >> 56) as u8 {
            1 => Some(FeatureTag::LockOrderClass),
            2 => Some(FeatureTag::LockOrderName),
            3 => Some(FeatureTag::WaitFor),
            4 => Some(FeatureTag::ContendedPair),
            5 => Some(FeatureTag::Model),
            6 => Some(FeatureTag::LockHandoff),
            7 => Some(FeatureTag::Yielded),
            8 => Some(FeatureTag::Nearness),
            9 => Some(FeatureTag::HitCount),
            _ => None,
        }
    }
}

/// What a run covered, once it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoverageReport {
    /// invariant: sorted ascending, no duplicates.
    pub features: Vec<u64>,
    /// For each feature (same order), how many decisions the run had made when it was first
    /// covered: where in the schedule a mutator should look to reach it again differently.
    pub first_at: Vec<u32>,
    /// For each feature (same order), the CPU it was first covered on (`CpuId(u32::MAX)`
    /// when no task was running): the task a mutation holds to reach it differently. A
    /// `HitCount` feature's is the CPU of its last hit, a `Nearness` feature's that of the
    /// earlier of its two events.
    pub first_cpus: Vec<CpuId>,
    /// The kind of every decision of the run, by index into its decision vector.
    pub decision_kinds: Vec<DecisionKind>,
    /// The CPU each decision is about (the first of its options for same-cycle order and
    /// waiters; `CpuId(u32::MAX)` when it names none), by index.
    pub decision_cpus: Vec<CpuId>,
    /// For each `Nearness` feature (sorted by feature, each once): how many of the longest
    /// stalls (`run.max_stall`) it takes to hold the earlier of its two events past the
    /// later one, so they swap, and whether swapping them breaks an invariant.
    pub near_spans: Vec<NearSpan>,
}

/// What a run says of one of its `Nearness` features beyond its distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NearSpan {
    pub feature: u64,
    /// How many of the longest stalls it takes to hold the earlier event past the later.
    pub stalls: u32,
    /// The pair is an invariant's window ([`Engine::cover_window`]): had the earlier event
    /// come after the later one, the invariant would have broken. A plain nearness pair
    /// (two tasks' transitions of one state) only orders two events.
    pub window: bool,
}

/// The recorder a run with coverage on carries.
pub struct Coverage {
    /// (feature, decisions made when it was recorded, the CPU it was recorded on).
    features: Vec<(u64, u32, CpuId)>,
    /// The CPU of the task being polled (the engine's dispatch).
    pub(crate) running: CpuId,
    decision_kinds: Vec<DecisionKind>,
    decision_cpus: Vec<CpuId>,
    /// The CPU that last released each lock, by resource id.
    last_release: Vec<Option<CpuId>>,
    /// `features` is sorted and deduplicated again when it reaches this length.
    compact_at: usize,
    /// How often each model feature was covered so far (for its hit-count buckets).
    model_hits: BTreeMap<u64, u32>,
    /// For each counted model feature (its site word): how often it was covered, and the
    /// decisions made and the CPU at its last hit.
    counted: BTreeMap<u64, (u64, u32, CpuId)>,
    /// Each nearness feature recorded, the longest stalls that span its distance, and
    /// whether it is a window.
    near_spans: Vec<NearSpan>,
}

const COMPACT_AT_LEAST: usize = 1024;

/// FNV-1a over 64-bit words and strings: stable across runs, threads and builds.
#[derive(Clone, Copy)]
struct FeatureHash(u64);

impl FeatureHash {
    fn new(tag: FeatureTag) -> FeatureHash {
        FeatureHash(0xcbf2_9ce4_8422_2325).word(tag as u64)
    }

    fn bytes(mut self, bytes: &[u8]) -> FeatureHash {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    fn word(self, word: u64) -> FeatureHash {
        self.bytes(&word.to_le_bytes())
    }

    fn text(self, text: &str) -> FeatureHash {
        // The length first, so ("ab", "c") and ("a", "bc") differ.
        self.word(text.len() as u64).bytes(text.as_bytes())
    }

    fn feature(self, tag: FeatureTag) -> u64 {
        (u64::from(tag as u8) << 56) | (self.0 & 0x00ff_ffff_ffff_ffff)
    }

    /// A model feature keeps its code in the byte below the tag, so explorers can tell
    /// kinds of model features apart.
    fn model_feature(self, code: u32) -> u64 {
        (u64::from(FeatureTag::Model as u8) << 56)
            | (u64::from(code as u8) << 48)
            | (self.0 & 0x0000_ffff_ffff_ffff)
    }
}

/// The code a model feature was recorded with ([`Engine::cover`]; its low byte), or `None`
/// for an engine feature.
pub fn model_code(feature: u64) -> Option<u32> {
    (FeatureTag::of(feature) == Some(FeatureTag::Model)).then_some(((feature >> 48) & 0xff) as u32)
}

/// A nearness feature's site (its hash, a stable word) and distance; `None` for any other
/// feature.
pub fn nearness(feature: u64) -> Option<(u64, u8)> {
    (FeatureTag::of(feature) == Some(FeatureTag::Nearness)).then_some(site_and_rank(feature))
}

/// A ranked feature's site and rank, smaller better: a nearness feature's distance, or a
/// hit count's `COUNT_TOP` less its count; `None` for any other feature.
/// Explorers count one new only when its rank is below every earlier run's at its site.
pub fn ranked(feature: u64) -> Option<(u64, u8)> {
    matches!(FeatureTag::of(feature), Some(FeatureTag::Nearness | FeatureTag::HitCount))
        .then_some(site_and_rank(feature))
}

fn site_and_rank(feature: u64) -> (u64, u8) {
    ((feature >> 8) & 0x0000_ffff_ffff_ffff, (feature & 0xff) as u8)
}

/// A `tag` feature at `site` (a stable word) with `rank` in its low byte.
fn ranked_feature(tag: FeatureTag, site: u64, rank: u8) -> u64 {
    let hash = FeatureHash::new(tag).word(site).0 & 0x0000_ffff_ffff_ffff;
    (u64::from(tag as u8) << 56) | hash << 8 | u64::from(rank)
}

/// `n` in half-octaves: 2 * log2, rounded down, with the half step from the bit below the
/// top one (0, 1, 2 and 3 for themselves, 4 for 4 and 5, 5 for 6 and 7, 6 for 8 to 11): a
/// scale on which 12 is as far above 8 as 24 is above 16.
pub fn half_octaves(n: u64) -> u8 {
    if n < 2 {
        return n as u8;
    }
    let top = 63 - u64::from(n.leading_zeros());
    let half = (n >> (top - 1)) & 1;
    (2 * top + half) as u8
}

fn mode_word(mode: Mode) -> u64 {
    match mode {
        Mode::Shared => 1,
        Mode::Exclusive => 2,
    }
}

impl Default for Coverage {
    fn default() -> Coverage {
        Coverage::new()
    }
}

impl Coverage {
    pub fn new() -> Coverage {
        Coverage {
            features: Vec::new(),
            running: CpuId(u32::MAX),
            decision_kinds: Vec::new(),
            decision_cpus: Vec::new(),
            last_release: Vec::new(),
            compact_at: COMPACT_AT_LEAST,
            model_hits: BTreeMap::new(),
            counted: BTreeMap::new(),
            near_spans: Vec::new(),
        }
    }

    fn push(&mut self, feature: u64) {
        let at = self.decision_kinds.len() as u32;
        self.push_at(feature, at, self.running);
    }

    fn push_at(&mut self, feature: u64, at: u32, cpu: CpuId) {
        self.features.push((feature, at, cpu));
        if self.features.len() >= self.compact_at {
            self.compact();
            self.compact_at = (2 * self.features.len()).max(COMPACT_AT_LEAST);
        }
    }

    /// Sorted by feature, each once, at its first occurrence.
    fn compact(&mut self) {
        self.features.sort_unstable();
        self.features.dedup_by_key(|(feature, _, _)| *feature);
    }

    /// A decision was made (the engine's `choose`).
    pub(crate) fn decision(&mut self, kind: DecisionKind, cpus: &[CpuId]) {
        self.decision_kinds.push(kind);
        self.decision_cpus.push(cpus.first().copied().unwrap_or(CpuId(u32::MAX)));
    }

    /// A task takes `taken` while holding `held` (the engine's lock-order check).
    pub(crate) fn lock_order(&mut self, resources: &[Resource], held: &[ResourceId], taken: ResourceId) {
        let taken_lock = &resources[taken.0 as usize];
        for &lock in held {
            if lock == taken {
                continue;
            }
            let held_lock = &resources[lock.0 as usize];
            let class_edge = FeatureHash::new(FeatureTag::LockOrderClass)
                .text(held_lock.class)
                .text(taken_lock.class)
                .word(u64::from(taken > lock));
            self.push(class_edge.feature(FeatureTag::LockOrderClass));
            let name_edge =
                FeatureHash::new(FeatureTag::LockOrderName).text(&held_lock.name).text(&taken_lock.name);
            self.push(name_edge.feature(FeatureTag::LockOrderName));
        }
    }

    /// `task` queues on `resource` for `mode` (the engine's `Acquire`, after the queueing).
    pub(crate) fn wait(&mut self, resources: &[Resource], task: TaskId, resource: ResourceId, mode: Mode) {
        let waited = &resources[resource.0 as usize];
        // Whether a holder of the lock is itself queued on another lock: one edge short of
        // the wait cycle a deadlock is.
        let mut chained: Option<&str> = None;
        for &(holder, _) in &waited.holders {
            if let Some(other) = resources.iter().find(|res| res.waiters.iter().any(|w| w.task == holder)) {
                chained = Some(other.name.as_str());
            }
        }
        let held_modes = waited.holders.iter().fold(0, |modes, &(_, held)| modes | mode_word(held));
        let wait_for = FeatureHash::new(FeatureTag::WaitFor)
            .text(&waited.name)
            .word(mode_word(mode))
            .word(held_modes)
            .text(chained.unwrap_or(""));
        self.push(wait_for.feature(FeatureTag::WaitFor));
        for held in resources.iter().filter(|res| res.holds(task).is_some()) {
            let pair = FeatureHash::new(FeatureTag::ContendedPair).text(&held.name).text(&waited.name);
            self.push(pair.feature(FeatureTag::ContendedPair));
        }
    }

    /// `cpu` released `resource`.
    pub(crate) fn release(&mut self, resource: ResourceId, cpu: CpuId) {
        let index = resource.0 as usize;
        if self.last_release.len() <= index {
            self.last_release.resize(index + 1, None);
        }
        self.last_release[index] = Some(cpu);
    }

    /// A task on `cpu` got `resource` in `mode` (after queueing when `waited`).
    pub(crate) fn acquire(
        &mut self,
        resources: &[Resource],
        resource: ResourceId,
        cpu: CpuId,
        mode: Mode,
        waited: bool,
    ) {
        let from = match self.last_release.get(resource.0 as usize).copied().flatten() {
            None => 0,
            Some(releaser) if releaser == cpu => 1,
            Some(_) => 2,
        };
        let handoff = FeatureHash::new(FeatureTag::LockHandoff)
            .text(&resources[resource.0 as usize].name)
            .word(mode_word(mode))
            .word(u64::from(waited))
            .word(from);
        self.push(handoff.feature(FeatureTag::LockHandoff));
    }

    /// Task `from`, holding `held`, gives its CPU to task `to` (the engine's yield).
    pub(crate) fn yielded(&mut self, resources: &[Resource], to: &str, from: &str, held: &[ResourceId]) {
        let mut feature = FeatureHash::new(FeatureTag::Yielded).text(to).text(from);
        for lock in held {
            feature = feature.text(&resources[lock.0 as usize].name);
        }
        self.push(feature.feature(FeatureTag::Yielded));
    }

    /// A model's feature: `code` says what it is, `a` and `b` its facts.
    pub(crate) fn model(&mut self, code: u32, a: u64, b: u64) {
        let hash = FeatureHash::new(FeatureTag::Model).word(u64::from(code)).word(a).word(b);
        let feature = hash.model_feature(code);
        self.push(feature);
        let hits = self.model_hits.entry(feature).or_default();
        *hits += 1;
        if *hits >= 2 && hits.is_power_of_two() {
            // The bucket [2^k, 2^(k+1)) reached: a feature of its own, at this point.
            let bucket = u64::from(hits.trailing_zeros());
            self.push(hash.word(0x6869_7473).word(bucket).model_feature(code));
        }
    }

    /// A counted model feature: itself, as `model` records it (without hit-count buckets),
    /// and one more hit of its count.
    pub(crate) fn counted(&mut self, code: u32, a: u64, b: u64, cpu: CpuId) {
        let hash = FeatureHash::new(FeatureTag::Model).word(u64::from(code)).word(a).word(b);
        self.push(hash.model_feature(code));
        let at = self.decision_kinds.len() as u32;
        let count = self.counted.entry(hash.0).or_insert((0, at, cpu));
        *count = (count.0 + 1, at, cpu);
    }

    /// How near two events came at `site` (a model's word), placed at decision `at`; the
    /// earlier event was on `cpu`, and `stalls` of the longest stalls span the distance;
    /// `window` when their swap would break an invariant.
    pub(crate) fn nearness(
        &mut self,
        site: u64,
        distance: u8,
        at: u32,
        cpu: CpuId,
        stalls: u32,
        window: bool,
    ) {
        let at = at.min(self.decision_kinds.len() as u32);
        let feature = ranked_feature(FeatureTag::Nearness, site, distance);
        self.push_at(feature, at, cpu);
        self.near_spans.push(NearSpan { feature, stalls, window });
    }

    pub(crate) fn finish(mut self) -> CoverageReport {
        let counted = std::mem::take(&mut self.counted);
        for (site, (count, last_at, cpu)) in counted {
            let rank = COUNT_TOP - count.min(u64::from(COUNT_TOP)) as u8;
            let feature = ranked_feature(FeatureTag::HitCount, site, rank);
            self.push_at(feature, last_at, cpu);
        }
        let mut near_spans = std::mem::take(&mut self.near_spans);
        // Each feature once, as it was first recorded (the place its first_at names).
        near_spans.sort_by_key(|span| span.feature);
        near_spans.dedup_by_key(|span| span.feature);
        self.compact();
        CoverageReport {
            first_at: self.features.iter().map(|&(_, at, _)| at).collect(),
            first_cpus: self.features.iter().map(|&(_, _, cpu)| cpu).collect(),
            features: self.features.into_iter().map(|(feature, _, _)| feature).collect(),
            decision_kinds: self.decision_kinds,
            decision_cpus: self.decision_cpus,
            near_spans,
        }
    }
}

impl Engine {
    /// Records a model's coverage feature (`code` names its kind, `a` and `b` its facts);
    /// nothing when coverage is off.
    pub fn cover(&mut self, code: u32, a: u64, b: u64) {
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.model(code, a, b);
        }
    }

    /// Records a counted model feature: `cover`'s feature, whose count in the run the
    /// explorer climbs (the BUSY answers of one leaf and operand); nothing when coverage is
    /// off.
    pub fn cover_counted(&mut self, code: u32, a: u64, b: u64) {
        if self.coverage.is_some() {
            let cpu = self.task_cpu(self.current_task());
            if let Some(coverage) = self.coverage.as_deref_mut() {
                coverage.counted(code, a, b, cpu);
            }
        }
    }

    /// How near two events came at `site` (a word naming the pair of events, stable across
    /// runs): `distance`, smaller is nearer, placed at decision `at` (where the earlier event
    /// happened, on `cpu`), `cycles` apart; nothing when coverage is off. The explorer is
    /// told how many of the longest stalls (`run.max_stall`) it takes to hold the earlier
    /// event past the later one.
    pub fn cover_nearness(&mut self, site: u64, distance: u8, at: u32, cpu: CpuId, cycles: u64) {
        self.cover_near(site, distance, at, cpu, cycles, false);
    }

    /// `cover_nearness` for a pair that is an invariant's window: had the earlier event
    /// come after the later one, the invariant would have broken (host-model: a DPAMT put's
    /// read under its lock, then another put's decrement). Explorers follow such a pair
    /// up the first time they see it within reach, not only when it comes nearer.
    pub fn cover_window(&mut self, site: u64, distance: u8, at: u32, cpu: CpuId, cycles: u64) {
        self.cover_near(site, distance, at, cpu, cycles, true);
    }

    fn cover_near(&mut self, site: u64, distance: u8, at: u32, cpu: CpuId, cycles: u64, window: bool) {
        let max_stall = self.config().max_stall_cycles;
        if let Some(coverage) = self.coverage.as_deref_mut() {
            let stalls = match max_stall {
                0 => 0,
                longest => u32::try_from(cycles / longest + 1).unwrap_or(u32::MAX),
            };
            coverage.nearness(site, distance, at, cpu, stalls, window);
        }
    }

    /// How many decisions this run has made so far, when it records coverage (0 when not).
    pub fn covered_decisions(&self) -> u32 {
        self.coverage.as_deref().map_or(0, |coverage| coverage.decision_kinds.len() as u32)
    }

    /// Whether this run records coverage.
    pub fn covering(&self) -> bool {
        self.coverage.is_some()
    }

    pub(crate) fn take_coverage(&mut self) -> Option<CoverageReport> {
        self.coverage.take().map(|coverage| coverage.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_is_placed_on_the_cpu_it_was_first_covered_on() {
        let mut coverage = Coverage::new();
        coverage.model(2, 0, 0);
        coverage.running = CpuId(1);
        coverage.model(1, 0, 0);
        coverage.running = CpuId(2);
        coverage.model(1, 0, 0);
        coverage.nearness(0x77, 30, 0, CpuId(0), 2, false);
        let report = coverage.finish();
        let cpu_of = |wanted: &dyn Fn(u64) -> bool| {
            let position = report.features.iter().position(|&f| wanted(f)).unwrap();
            report.first_cpus[position]
        };
        assert_eq!(report.first_cpus.len(), report.features.len());
        assert_eq!(cpu_of(&|f| model_code(f) == Some(2)), CpuId(u32::MAX), "no task was running");
        assert_eq!(cpu_of(&|f| model_code(f) == Some(1)), CpuId(1), "where it was first covered");
        assert_eq!(cpu_of(&|f| nearness(f).is_some()), CpuId(0), "the earlier event's");
        assert_eq!(
            report.near_spans,
            vec![NearSpan {
                feature: report.features
                    [report.features.iter().position(|&f| nearness(f).is_some()).unwrap()],
                stalls: 2,
                window: false,
            }]
        );
    }

    #[test]
    fn a_counted_feature_is_one_ranked_feature_at_its_last_hit_on_its_cpu() {
        let mut coverage = Coverage::new();
        for hit in 0..5u32 {
            coverage.counted(1, 0x2d, 0x8000_0200_0000_0000, CpuId(hit % 2 + 3));
            coverage.decision(DecisionKind::Stall, &[CpuId(0)]);
        }
        let report = coverage.finish();
        let ranked_features: Vec<(u64, u8)> = report.features.iter().filter_map(|&f| ranked(f)).collect();
        // Five hits: the count itself, smaller rank for more hits.
        assert_eq!(ranked_features.len(), 1);
        assert_eq!(ranked_features[0].1, COUNT_TOP - 5);
        let position = report.features.iter().position(|&f| ranked(f).is_some()).unwrap();
        assert_eq!(report.first_at[position], 4, "placed at the last hit, after four decisions");
        assert_eq!(report.first_cpus[position], CpuId(3), "on the CPU of the last hit");
        // The plain feature is there too, and no AFL buckets for a counted one.
        let models = report.features.iter().filter(|&&f| model_code(f) == Some(1)).count();
        assert_eq!(models, 1);
        assert_eq!((half_octaves(4), half_octaves(5), half_octaves(6), half_octaves(8)), (4, 4, 5, 6));
    }

    #[test]
    fn a_count_is_told_apart_one_by_one_up_to_its_top() {
        // A retry bound is a count: a run that lost 15 rounds is nearer to 17 than one that
        // lost 14, though both are 7 half-octaves.
        let rank = |hits: u64| {
            let mut coverage = Coverage::new();
            for _ in 0..hits {
                coverage.counted(1, 0x2d, 0x8000_0200_0000_0000, CpuId(0));
            }
            let report = coverage.finish();
            report.features.iter().find_map(|&f| ranked(f)).unwrap().1
        };
        assert_eq!((rank(14), rank(15), rank(16)), (COUNT_TOP - 14, COUNT_TOP - 15, COUNT_TOP - 16));
        assert_eq!(rank(u64::from(COUNT_TOP)), 0);
        assert_eq!(rank(1000), 0, "past the top every count is as high");
    }

    #[test]
    fn features_are_sorted_deduplicated_and_tagged() {
        let mut coverage = Coverage::new();
        for round in 0..3000u64 {
            coverage.model(7, round % 10, 0);
            if round == 5 {
                coverage.decision(DecisionKind::Stall, &[CpuId(0)]);
            }
        }
        let lock = |name: &str| Resource {
            name: name.to_string().into(),
            class: "rwlock",
            class_id: 0,
            handoff_cycles: 0,
            recursive_shared: false,
            holders: smallvec::SmallVec::new(),
            waiters: Default::default(),
            last_grant: crate::Cycle::ZERO,
            stats: Default::default(),
        };
        let resources = [lock("rw[A]"), lock("rw[B]")];
        coverage.lock_order(&resources, &[ResourceId(0)], ResourceId(1));
        coverage.lock_order(&resources, &[ResourceId(1)], ResourceId(0));
        let report = coverage.finish();
        assert!(report.features.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(report.first_at.len(), report.features.len());
        // Each feature keeps where it was first seen: the first ten before the decision.
        let model = |b| FeatureHash::new(FeatureTag::Model).word(7).word(b).word(0).model_feature(7);
        let at = |feature| report.first_at[report.features.binary_search(&feature).unwrap()];
        assert_eq!(at(model(3)), 0);
        assert_eq!(model_code(model(3)), Some(7));
        assert_eq!(report.decision_kinds, vec![DecisionKind::Stall]);
        let count = |tag| report.features.iter().filter(|&&f| FeatureTag::of(f) == Some(tag)).count();
        // Ten features, each hit 300 times: itself and its buckets 2, 4, ..., 256.
        assert_eq!(count(FeatureTag::Model), 10 * 9);
        // AB and BA are two class edges (the creation order differs) and two name edges.
        assert_eq!(count(FeatureTag::LockOrderClass), 2);
        assert_eq!(count(FeatureTag::LockOrderName), 2);
    }

    #[test]
    fn hashing_separates_fields() {
        let a = FeatureHash::new(FeatureTag::Model).text("ab").text("c").feature(FeatureTag::Model);
        let b = FeatureHash::new(FeatureTag::Model).text("a").text("bc").feature(FeatureTag::Model);
        assert_ne!(a, b);
        assert_eq!(FeatureTag::of(a), Some(FeatureTag::Model));
    }
}
