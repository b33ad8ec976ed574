//! Shrinking a counterexample to what a kernel developer would draw: fewer CPUs, tasks,
//! steps and ranges, earlier and simpler pages, and a schedule with fewer and shorter
//! deviations from the default.
//!
//! The scenario and the schedule shrink in turn until neither moves. A scenario cut is kept
//! when the cut scenario still breaks the same property with the same outcome under some
//! schedule: the current one, its stalls re-aimed (see below), the default one, or one of a
//! few seeded random ones. A schedule cut (delta debugging over its deviations, then lower
//! options) is kept on the same test.
//!
//! Decision indices shift whenever anything before them changes, so a stall is held by
//! *where it stalls*: the `k`-th stall point of CPU `c`. To run such a plan, the shrinker
//! places each stall at that point of a base run, runs, and re-places those that moved,
//! until the run it gets stalls where it was planned to (decisions before a deviation never
//! move, so each round fixes at least one more).

use crate::property::{Property, Violation};
use crate::runner::{Runner, Verdict};
use crate::schedule::{Deviations, Schedule};
use crate::spec::{MachineLimits, Op, PageRef, ScenarioSpec, Size, named_pages};
use sim_core::{DecisionKind, OutcomeKind};

/// How hard to shrink.
#[derive(Clone, Copy, Debug)]
pub struct ShrinkConfig {
    /// Runs the shrinker may spend in all.
    pub runs_max: u64,
    /// Seeded random schedules tried on a scenario cut that no earlier schedule reproduces.
    pub random_tries: u32,
}

impl Default for ShrinkConfig {
    fn default() -> ShrinkConfig {
        ShrinkConfig { runs_max: 20_000, random_tries: 8 }
    }
}

/// A counterexample after shrinking.
#[derive(Clone, Debug)]
pub struct Shrunk {
    pub spec: ScenarioSpec,
    /// The final run's schedule: replaying it gives `verdict` again.
    pub schedule: Deviations,
    pub verdict: Verdict,
    pub violation: Violation,
    /// The counterexample's size before shrinking.
    pub original: Size,
    /// Runs the shrinking took.
    pub runs: u64,
}

/// Why shrinking could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum ShrinkError {
    /// The case did not load: the generator made an invalid scenario (a bug).
    Runner(String),
    /// The case passed the property when run again: the run is not deterministic (a bug).
    NotReproduced,
}

impl std::fmt::Display for ShrinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShrinkError::Runner(why) => write!(f, "a generated scenario did not load: {why}"),
            ShrinkError::NotReproduced => f.write_str("the counterexample did not reproduce when run again"),
        }
    }
}

impl std::error::Error for ShrinkError {}

/// Where a planned deviation applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    /// Decision number `index` of the run.
    Index(u32),
    /// The `ordinal`-th stall point of CPU `cpu`.
    Stall { cpu: u32, ordinal: u32 },
    /// Whether that stall is a preemption (the decision right after a stall taken).
    StallKind { cpu: u32, ordinal: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Planned {
    site: Site,
    option: u32,
}

/// A plan of deviations, read off a run that recorded its decisions' kinds and CPUs.
fn plan_of(verdict: &Verdict) -> Vec<Planned> {
    let mut ordinals: Vec<u32> = Vec::new();
    let mut plan = Vec::new();
    let mut last_stall: Option<Site> = None;
    for (index, &option) in verdict.decisions.iter().enumerate() {
        let site = match (verdict.decision_kinds.get(index), verdict.decision_cpus.get(index)) {
            (Some(DecisionKind::Stall), Some(cpu)) => {
                let cpu = cpu.0 as usize;
                if ordinals.len() <= cpu {
                    ordinals.resize(cpu + 1, 0);
                }
                ordinals[cpu] += 1;
                Site::Stall { cpu: cpu as u32, ordinal: ordinals[cpu] - 1 }
            }
            (Some(DecisionKind::StallKind), _) => match last_stall {
                Some(Site::Stall { cpu, ordinal }) => Site::StallKind { cpu, ordinal },
                _ => Site::Index(index as u32),
            },
            _ => Site::Index(index as u32),
        };
        last_stall = Some(site);
        if option != 0 {
            plan.push(Planned { site, option });
        }
    }
    plan
}

/// The dense vector of `plan` over `base`'s decisions: stalls go to the matching stall
/// point of `base` (dropped when `base` has none there).
fn dense(plan: &[Planned], base: Option<&Verdict>) -> Vec<u32> {
    let mut stall_index: Vec<Vec<u32>> = Vec::new();
    if let Some(base) = base {
        for (index, (kind, cpu)) in base.decision_kinds.iter().zip(&base.decision_cpus).enumerate() {
            if *kind == DecisionKind::Stall {
                let cpu = cpu.0 as usize;
                if stall_index.len() <= cpu {
                    stall_index.resize(cpu + 1, Vec::new());
                }
                stall_index[cpu].push(index as u32);
            }
        }
    }
    let mut entries = Vec::with_capacity(plan.len());
    for planned in plan {
        let stall_at = |cpu: u32, ordinal: u32| {
            stall_index.get(cpu as usize).and_then(|points| points.get(ordinal as usize)).copied()
        };
        let index = match planned.site {
            Site::Index(index) => Some(index),
            Site::Stall { cpu, ordinal } => stall_at(cpu, ordinal),
            // A stall's kind is decided right after its length, once the stall is taken.
            Site::StallKind { cpu, ordinal } => stall_at(cpu, ordinal).map(|index| index + 1),
        };
        if let Some(index) = index {
            entries.push((index, planned.option));
        }
    }
    Deviations::new(entries).to_decisions()
}

fn has_stalls(plan: &[Planned]) -> bool {
    plan.iter().any(|planned| matches!(planned.site, Site::Stall { .. }))
}

/// Whether a planned deviation is held by where it stalls (not by its index).
fn is_stall_site(site: Site) -> bool {
    matches!(site, Site::Stall { .. } | Site::StallKind { .. })
}

/// How a scenario cut renumbers CPUs: `map[old] = Some(new)`, or `None` when it is gone.
type CpuMap = Vec<Option<u32>>;

/// The order scenarios shrink in: each accepted cut is strictly smaller.
fn complexity(spec: &ScenarioSpec) -> [u64; 12] {
    let size = spec.size();
    let pages = named_pages(spec);
    let page_weight: u64 = pages.iter().map(|page| u64::from(page.range) * 64 + u64::from(page.page)).sum();
    let ops = || spec.tasks.iter().flat_map(|task| &task.ops);
    let spin: u64 = ops().map(|op| if let Op::Spin { ns } = op { u64::from(*ns) } else { 0 }).sum();
    let slots: u64 = ops().map(|op| if let Op::Fault { slot, .. } = op { u64::from(*slot) } else { 0 }).sum();
    // A fault is a get and more (KVM's locks, PAGE.AUG): a get in its place is simpler.
    let faults = ops().filter(|op| matches!(op, Op::Fault { .. })).count() as u64;
    [
        u64::from(size.cpus),
        size.tasks as u64,
        size.steps as u64,
        size.ranges as u64,
        u64::from(spec.total_ranges()),
        pages.len() as u64,
        page_weight,
        spec.tasks.iter().map(|task| u64::from(task.start_ns)).sum(),
        spin,
        faults,
        slots,
        spec.tasks.iter().map(|task| u64::from(task.repeat)).sum(),
    ]
}

/// Every cut of `spec` worth trying, biggest first, each normalized and smaller.
fn candidates(spec: &ScenarioSpec, limits: &MachineLimits) -> Vec<(ScenarioSpec, CpuMap)> {
    let identity: CpuMap = (0..spec.possible_cpus).map(Some).collect();
    let mut cuts = Cuts { limits, current: complexity(spec), out: Vec::new() };
    fewer_tasks(spec, &mut cuts);
    // Fewer CPUs.
    let mut candidate = spec.clone();
    candidate.cpus = candidate.cpus.saturating_sub(1);
    cuts.push(candidate, identity.clone());
    // Fewer ranges: drop range r (and what names it), or merge it into the one below.
    for range in 0..spec.total_ranges() {
        cuts.push(without_range(spec, range, false), identity.clone());
        cuts.push(without_range(spec, range, true), identity.clone());
    }
    fewer_steps(spec, &mut cuts, &identity);
    fewer_repeats_earlier_starts(spec, &mut cuts, &identity);
    simpler_steps(spec, &mut cuts, &identity);
    // No walker ranges.
    if spec.walker_ranges > 0 {
        let mut candidate = spec.clone();
        candidate.walker_ranges = 0;
        cuts.push(candidate, identity);
    }
    cuts.out
}

/// The cuts of one spec collected so far, each normalized, with a task, smaller than the
/// spec (`current` is its complexity) and unlike the others.
struct Cuts<'a> {
    limits: &'a MachineLimits,
    current: [u64; 12],
    out: Vec<(ScenarioSpec, CpuMap)>,
}

impl Cuts<'_> {
    /// Normalizes `candidate` and keeps it (with its CPU renumbering `map`) if it qualifies.
    fn push(&mut self, mut candidate: ScenarioSpec, map: CpuMap) {
        candidate.normalize(self.limits);
        // A scenario keeps at least one task: one without has nothing to run (and the
        // loader refuses it).
        if !candidate.tasks.is_empty()
            && complexity(&candidate) < self.current
            && !self.out.iter().any(|(seen, _)| *seen == candidate)
        {
            self.out.push((candidate, map));
        }
    }
}

/// Fewer tasks: task k's CPU goes; the CPUs above it move down one.
fn fewer_tasks(spec: &ScenarioSpec, cuts: &mut Cuts) {
    for k in 0..spec.tasks.len() {
        let mut candidate = spec.clone();
        candidate.tasks.remove(k);
        candidate.cpus = candidate.cpus.saturating_sub(1);
        let map = (0..spec.possible_cpus)
            .map(|cpu| match (cpu as usize).cmp(&k) {
                std::cmp::Ordering::Less => Some(cpu),
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => Some(cpu - 1),
            })
            .collect();
        cuts.push(candidate, map);
    }
}

/// Fewer steps: halves of a task, then single steps.
fn fewer_steps(spec: &ScenarioSpec, cuts: &mut Cuts, identity: &CpuMap) {
    for (k, task) in spec.tasks.iter().enumerate() {
        let len = task.ops.len();
        if len >= 2 {
            for (from, to) in [(0, len / 2), (len / 2, len)] {
                let mut candidate = spec.clone();
                candidate.tasks[k].ops.drain(from..to);
                cuts.push(candidate, identity.clone());
            }
        }
        for j in 0..len {
            let mut candidate = spec.clone();
            candidate.tasks[k].ops.remove(j);
            cuts.push(candidate, identity.clone());
        }
    }
}

/// Fewer repeats (one, or one less), earlier starts (at 0, or half as late).
fn fewer_repeats_earlier_starts(spec: &ScenarioSpec, cuts: &mut Cuts, identity: &CpuMap) {
    for (k, task) in spec.tasks.iter().enumerate() {
        for repeat in [1, task.repeat.saturating_sub(1)] {
            let mut candidate = spec.clone();
            candidate.tasks[k].repeat = repeat;
            cuts.push(candidate, identity.clone());
        }
        for start_ns in [0, task.start_ns / 2] {
            let mut candidate = spec.clone();
            candidate.tasks[k].start_ns = start_ns;
            cuts.push(candidate, identity.clone());
        }
    }
}

/// Simpler steps: allocated pairs, lower pages, shorter spins.
fn simpler_steps(spec: &ScenarioSpec, cuts: &mut Cuts, identity: &CpuMap) {
    for (k, task) in spec.tasks.iter().enumerate() {
        for (j, op) in task.ops.iter().enumerate() {
            for simpler in simpler_ops(op) {
                let mut candidate = spec.clone();
                candidate.tasks[k].ops[j] = simpler;
                cuts.push(candidate, identity.clone());
            }
        }
    }
}

/// `spec` without range `range`: references above it move down one; references to it are
/// dropped (`merge` false) or moved to the range below (`merge` true).
fn without_range(spec: &ScenarioSpec, range: u8, merge: bool) -> ScenarioSpec {
    let mut candidate = spec.clone();
    let map = |page: PageRef| -> Option<PageRef> {
        match page.range.cmp(&range) {
            std::cmp::Ordering::Less => Some(page),
            std::cmp::Ordering::Equal if merge => Some(PageRef::new(range.saturating_sub(1), page.page)),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(PageRef::new(page.range - 1, page.page)),
        }
    };
    // A pair page of a dropped range moves to the first range (normalization finds it a
    // free page there).
    let pair_map = |page: PageRef| map(page).unwrap_or(PageRef::new(0, page.page));
    for task in &mut candidate.tasks {
        task.ops = task
            .ops
            .drain(..)
            .filter_map(|op| match op {
                Op::Get { page, pair } => {
                    Some(Op::Get { page: map(page)?, pair: pair.map(|p| p.map(pair_map)) })
                }
                Op::Put { page } => Some(Op::Put { page: map(page)? }),
                Op::Fault { slot, page } => Some(Op::Fault { slot, page: map(page)? }),
                Op::Walker { range: walker, pair } => {
                    let walker = map(PageRef::new(walker, 0))?.range;
                    Some(Op::Walker { range: walker, pair: pair.map(pair_map) })
                }
                other => Some(other),
            })
            .collect();
    }
    if range < spec.ranges {
        candidate.ranges = candidate.ranges.saturating_sub(1);
    } else {
        candidate.walker_ranges = candidate.walker_ranges.saturating_sub(1);
    }
    candidate
}

/// Task `k` split at step `at`: its steps from `at` on move to a new task on a new CPU.
/// Not a cut: the way a lock-order inversion one task shows alone (it took two locks in both
/// orders, one after the other) becomes the deadlock it allows, its halves run at once.
fn splits(spec: &ScenarioSpec, limits: &MachineLimits) -> Vec<ScenarioSpec> {
    let mut out = Vec::new();
    if spec.tasks.len() as u32 >= limits.cpus_max {
        return out;
    }
    for (k, task) in spec.tasks.iter().enumerate() {
        for at in 1..task.ops.len() {
            let mut candidate = spec.clone();
            let second = candidate.tasks[k].ops.split_off(at);
            let mut moved = candidate.tasks[k].clone();
            moved.ops = second;
            candidate.tasks.push(moved);
            candidate.cpus = candidate.cpus.max(candidate.tasks.len() as u32);
            candidate.normalize(limits);
            if candidate.tasks.len() == spec.tasks.len() + 1 {
                out.push(candidate);
            }
        }
    }
    out
}

/// Simpler forms of one step.
fn simpler_ops(op: &Op) -> Vec<Op> {
    let lower = |page: PageRef| {
        [
            PageRef::new(page.range, 0),
            PageRef::new(0, page.page),
            PageRef::new(page.range.saturating_sub(1), page.page),
        ]
    };
    match *op {
        Op::Get { page, pair } => {
            // The page moves to an earlier page of its range or to an earlier range: a get
            // of range C with its pair in A and B can become the AB-BA's get of A.
            let mut out: Vec<Op> = lower(page).into_iter().map(|page| Op::Get { page, pair }).collect();
            if let Some(pair) = pair {
                out.push(Op::Get { page, pair: None });
                for which in 0..2 {
                    for lowered in lower(pair[which]) {
                        let mut pair = pair;
                        pair[which] = lowered;
                        out.push(Op::Get { page, pair: Some(pair) });
                    }
                }
            }
            out
        }
        Op::Put { page } => vec![Op::Put { page: PageRef::new(page.range, 0) }],
        Op::Walker { range, pair } => (0..2)
            .flat_map(|which| {
                [PageRef::new(pair[which].range, 0), PageRef::new(range, pair[which].page)].map(|lowered| {
                    let mut pair = pair;
                    pair[which] = lowered;
                    Op::Walker { range, pair }
                })
            })
            .collect(),
        Op::Fault { slot, page } => {
            let mut out: Vec<Op> = lower(page).into_iter().map(|page| Op::Fault { slot, page }).collect();
            out.push(Op::Fault { slot: 0, page });
            out.push(Op::Get { page, pair: None });
            out
        }
        Op::Spin { ns } => vec![Op::Spin { ns: ns / 2 }],
        Op::Zap { .. } | Op::Hotplug { .. } | Op::Update | Op::TdCreate => Vec::new(),
    }
}

/// Random schedules a lock-order inversion is tried under, to find the deadlock it allows.
const ESCALATE_TRIES: u32 = 32;

/// A stable stream of seeds for the random tries (splitmix64).
fn try_seed(index: u32) -> u64 {
    let mut z = u64::from(index).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Shrinker<'a> {
    runner: &'a dyn Runner,
    print: &'a dyn Fn(&ScenarioSpec) -> String,
    property: Property,
    violation: Violation,
    limits: &'a MachineLimits,
    config: ShrinkConfig,
    runs: u64,
    error: Option<String>,
}

impl Shrinker<'_> {
    fn out_of_runs(&self) -> bool {
        self.runs >= self.config.runs_max || self.error.is_some()
    }

    fn run(&mut self, spec: &ScenarioSpec, schedule: &Schedule) -> Option<Verdict> {
        if self.out_of_runs() {
            return None;
        }
        self.runs += 1;
        match self.runner.run(&(self.print)(spec), schedule, true) {
            Ok(verdict) => Some(verdict),
            Err(why) => {
                self.error = Some(why);
                None
            }
        }
    }

    fn run_dense(&mut self, spec: &ScenarioSpec, decisions: &[u32]) -> Option<Verdict> {
        self.run(spec, &Schedule::Deviations(Deviations::from_decisions(decisions)))
    }

    fn keeps(&self, verdict: &Verdict) -> bool {
        self.property.same_violation(&self.violation, verdict)
    }

    /// A run of `spec` that follows `plan` (see the module doc); `base` is a run of `spec`
    /// to place stalls in first, if one is at hand.
    fn realize(&mut self, spec: &ScenarioSpec, plan: &[Planned], base: Option<&Verdict>) -> Option<Verdict> {
        if !has_stalls(plan) {
            return self.run_dense(spec, &dense(plan, None));
        }
        let mut base = match base {
            Some(base) => base.clone(),
            None => self.run(spec, &Schedule::default_choices())?,
        };
        let stalls = plan.iter().filter(|planned| matches!(planned.site, Site::Stall { .. })).count();
        for _ in 0..=stalls {
            let decisions = dense(plan, Some(&base));
            let verdict = self.run_dense(spec, &decisions)?;
            if dense(plan, Some(&verdict)) == decisions {
                return Some(verdict);
            }
            base = verdict;
        }
        Some(base)
    }

    /// Realizes `plan` on `spec` and keeps it if it shows the same violation.
    fn try_plan(&mut self, spec: &ScenarioSpec, plan: &[Planned], base: Option<&Verdict>) -> Option<Verdict> {
        let verdict = self.realize(spec, plan, base).filter(|verdict| self.keeps(verdict))?;
        self.accept(&verdict);
        Some(verdict)
    }

    /// A schedule under which `candidate` still shows the violation, if one is found.
    fn try_candidate(
        &mut self,
        candidate: &ScenarioSpec,
        map: &CpuMap,
        current: &Verdict,
    ) -> Option<Verdict> {
        if let Some(verdict) = self.run_dense(candidate, &current.decisions).filter(|v| self.keeps(v)) {
            return Some(verdict);
        }
        let plan: Vec<Planned> = plan_of(current)
            .into_iter()
            .filter_map(|planned| match planned.site {
                Site::Stall { cpu, ordinal } => {
                    let cpu = map.get(cpu as usize).copied().flatten()?;
                    Some(Planned { site: Site::Stall { cpu, ordinal }, option: planned.option })
                }
                Site::StallKind { cpu, ordinal } => {
                    let cpu = map.get(cpu as usize).copied().flatten()?;
                    Some(Planned { site: Site::StallKind { cpu, ordinal }, option: planned.option })
                }
                Site::Index(_) => Some(planned),
            })
            .collect();
        if has_stalls(&plan) {
            let stalls: Vec<Planned> = plan.iter().copied().filter(|p| is_stall_site(p.site)).collect();
            let base = self.run(candidate, &Schedule::default_choices())?;
            if self.keeps(&base) {
                return Some(base);
            }
            for attempt in [&plan, &stalls] {
                if let Some(verdict) = self.try_plan(candidate, attempt, Some(&base)) {
                    return Some(verdict);
                }
            }
        } else if let Some(verdict) =
            self.run(candidate, &Schedule::default_choices()).filter(|v| self.keeps(v))
        {
            return Some(verdict);
        }
        for attempt in 0..self.config.random_tries {
            let schedule = Schedule::Random(try_seed(attempt));
            if let Some(verdict) = self.run(candidate, &schedule).filter(|v| self.keeps(v)) {
                return Some(verdict);
            }
        }
        None
    }

    /// Notes an accepted run: once a lock-order inversion has shown as a deadlock, shrinking
    /// keeps the deadlock.
    fn accept(&mut self, verdict: &Verdict) {
        if let Some(found) = self.property.check(verdict)
            && found.outcome == OutcomeKind::Deadlock
            && self.violation.outcome == OutcomeKind::LockOrder
        {
            self.violation = found;
        }
    }

    /// A lock-order inversion made a deadlock: under other schedules (`ESCALATE_TRIES` random
    /// ones), or with a task's halves run at once (`splits`).
    fn escalate(&mut self, spec: &mut ScenarioSpec, current: &mut Verdict) -> bool {
        if self.violation.outcome != OutcomeKind::LockOrder {
            return false;
        }
        let deadlocks = |shrinker: &Self, v: &Verdict| {
            shrinker.property.check(v).is_some_and(|f| f.outcome == OutcomeKind::Deadlock)
        };
        let mut candidates = vec![spec.clone()];
        candidates.extend(splits(spec, self.limits));
        for candidate in candidates {
            let schedules = std::iter::once(Schedule::default_choices())
                .chain((0..ESCALATE_TRIES).map(|attempt| Schedule::Random(try_seed(attempt))));
            for schedule in schedules {
                let Some(verdict) = self.run(&candidate, &schedule) else { return false };
                if deadlocks(self, &verdict) {
                    self.accept(&verdict);
                    *spec = candidate;
                    *current = verdict;
                    return true;
                }
            }
        }
        false
    }

    /// Greedy scenario cuts until none is kept.
    fn shrink_scenario(&mut self, spec: &mut ScenarioSpec, current: &mut Verdict) -> bool {
        let mut changed = false;
        'cuts: loop {
            for (candidate, map) in candidates(spec, self.limits) {
                if self.out_of_runs() {
                    break 'cuts;
                }
                if let Some(verdict) = self.try_candidate(&candidate, &map, current) {
                    self.accept(&verdict);
                    *spec = candidate;
                    *current = verdict;
                    changed = true;
                    continue 'cuts;
                }
            }
            break;
        }
        changed
    }

    /// Fewer deviations (all but the stalls at once, then delta debugging), then lower
    /// options, on a fixed scenario.
    fn shrink_schedule(&mut self, spec: &ScenarioSpec, current: &mut Verdict) -> bool {
        let mut changed = false;
        let mut plan = plan_of(current);
        if has_stalls(&plan) && plan.iter().any(|p| matches!(p.site, Site::Index(_))) {
            let stalls: Vec<Planned> = plan.iter().copied().filter(|p| is_stall_site(p.site)).collect();
            if let Some(verdict) = self.try_plan(spec, &stalls, Some(current)) {
                *current = verdict;
                plan = plan_of(current);
                changed = true;
            }
        }
        let mut chunk = plan.len().div_ceil(2).max(1);
        while !plan.is_empty() && !self.out_of_runs() {
            let mut removed = false;
            let mut start = 0;
            while start < plan.len() && !self.out_of_runs() {
                let end = (start + chunk).min(plan.len());
                let without: Vec<Planned> = plan[..start].iter().chain(&plan[end..]).copied().collect();
                match self.try_plan(spec, &without, Some(current)) {
                    Some(verdict) => {
                        *current = verdict;
                        plan = plan_of(current);
                        removed = true;
                        changed = true;
                    }
                    None => start = end,
                }
            }
            if !removed {
                if chunk == 1 {
                    break;
                }
                chunk = chunk.div_ceil(2);
            }
        }
        // Lower each remaining option as far as the violation allows.
        let mut position = 0;
        while position < plan.len() && !self.out_of_runs() {
            let (mut low, mut high) = (1, plan[position].option);
            while low < high && !self.out_of_runs() {
                let middle = low + (high - low) / 2;
                let mut lowered = plan.clone();
                lowered[position].option = middle;
                match self.try_plan(spec, &lowered, Some(current)) {
                    Some(verdict) => {
                        *current = verdict;
                        high = middle;
                        changed = true;
                    }
                    None => low = middle + 1,
                }
            }
            plan = plan_of(current);
            position += 1;
        }
        changed
    }
}

/// Shrinks `spec` run under `schedule`, which breaks `property`. `print` turns a spec into
/// the scenario text the runner loads.
pub fn shrink(
    runner: &dyn Runner,
    print: &dyn Fn(&ScenarioSpec) -> String,
    property: Property,
    limits: &MachineLimits,
    spec: &ScenarioSpec,
    schedule: &Schedule,
    config: ShrinkConfig,
) -> Result<Shrunk, ShrinkError> {
    let first = runner.run(&print(spec), schedule, true).map_err(ShrinkError::Runner)?;
    let violation = property.check(&first).ok_or(ShrinkError::NotReproduced)?;
    let mut shrinker = Shrinker { runner, print, property, violation, limits, config, runs: 1, error: None };
    let original = spec.size();
    let mut spec = spec.clone();
    let mut current = first;
    // An inversion first looked for as a deadlock where it was found, where other tasks
    // still run (a third CPU's writer can be what closes the cycle), then again once shrunk.
    shrinker.escalate(&mut spec, &mut current);
    loop {
        let scenario_changed = shrinker.shrink_scenario(&mut spec, &mut current);
        let schedule_changed = shrinker.shrink_schedule(&spec, &mut current);
        let escalated = !(scenario_changed || schedule_changed) && shrinker.escalate(&mut spec, &mut current);
        if !(scenario_changed || schedule_changed || escalated) || shrinker.out_of_runs() {
            break;
        }
    }
    if let Some(why) = shrinker.error {
        return Err(ShrinkError::Runner(why));
    }
    Ok(Shrunk {
        schedule: Deviations::from_decisions(&current.decisions),
        violation: property.check(&current).unwrap_or(shrinker.violation),
        original,
        spec,
        verdict: current,
        runs: shrinker.runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::{CpuId, Outcome};

    fn verdict(decisions: Vec<u32>, kinds: Vec<DecisionKind>, cpus: Vec<u32>) -> Verdict {
        Verdict {
            outcome: Outcome::pass(),
            decision_options: vec![17; decisions.len()],
            decisions,
            decision_kinds: kinds,
            decision_cpus: cpus.into_iter().map(CpuId).collect(),
            near_spans: Vec::new(),
            features: Vec::new(),
            feature_first_at: Vec::new(),
            feature_first_cpus: Vec::new(),
            seamcalls: Default::default(),
            pamt_end: Vec::new(),
            events: 0,
        }
    }

    #[test]
    fn stalls_are_planned_by_cpu_and_ordinal_and_placed_on_another_run() {
        use DecisionKind::{SameCycleOrder as Order, Stall};
        let run = verdict(vec![0, 5, 1, 0, 3], vec![Stall, Stall, Order, Stall, Stall], vec![0, 1, 0, 1, 0]);
        let plan = plan_of(&run);
        assert_eq!(
            plan,
            vec![
                Planned { site: Site::Stall { cpu: 1, ordinal: 0 }, option: 5 },
                Planned { site: Site::Index(2), option: 1 },
                Planned { site: Site::Stall { cpu: 0, ordinal: 1 }, option: 3 },
            ]
        );
        // On a run whose stall points come in another order: CPU 0's second is decision 1,
        // CPU 1's first is decision 2 (where the positional deviation, later in the plan, wins).
        let other = verdict(vec![0; 4], vec![Stall, Stall, Stall, Order], vec![0, 0, 1, 1]);
        assert_eq!(dense(&plan, Some(&other)), vec![0, 3, 1]);
        // Without a base run, stalls have nowhere to go; positional deviations stay.
        assert_eq!(dense(&plan, None), vec![0, 0, 1]);
    }
}
