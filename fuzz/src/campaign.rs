//! A fuzz campaign (`tdxsim fuzz`): generated scenarios under random, PCT or
//! coverage-guided schedules until a run breaks the property, then the first such run
//! (by case number) shrunk.
//!
//! Cases run in fixed-size batches on a rayon pool and are judged in case order, so the
//! finding, the counts and the shrunk result depend on the seed alone, not on `jobs`. A
//! `time` budget is checked between batches only: it decides how many batches run, never
//! what a case does.

use std::time::{Duration, Instant};

use proptest::strategy::BoxedStrategy;
use rayon::prelude::*;

use crate::corpus::{BATCH, Explorer};
use crate::mutate::mutate_scenario;
use crate::property::{Property, Violation};
use crate::runner::{Runner, Verdict};
use crate::schedule::Schedule;
use crate::shrink::{ShrinkConfig, ShrinkError, Shrunk, shrink};
use crate::spec::ScenarioSpec;
use crate::strategy::{Draws, GenConfig, scenarios};

/// How a campaign schedules its cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchStrategy {
    /// Each case a fresh scenario and a random schedule from its seed.
    Random,
    /// Each case a fresh scenario and a PCT schedule from its seed.
    Pct,
    /// Fresh cases and mutations of the runs that covered something new (corpus.rs).
    Coverage,
}

impl SearchStrategy {
    pub const fn name(self) -> &'static str {
        match self {
            SearchStrategy::Random => "random",
            SearchStrategy::Pct => "pct",
            SearchStrategy::Coverage => "coverage",
        }
    }
}

/// Cases per batch for random and PCT (coverage uses the explorer's `BATCH`).
const BATCH_CASES: u64 = 32;

/// What a campaign does.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    pub seed: u64,
    pub strategy: SearchStrategy,
    /// Stop after this many cases.
    pub cases: Option<u64>,
    /// Stop once this much wall time has passed (checked between batches).
    pub time: Option<Duration>,
    /// Worker threads (0: one per core).
    pub jobs: usize,
    pub generate: GenConfig,
    pub property: Property,
    /// `depth` of PCT schedules.
    pub pct_depth: u32,
    pub shrink: ShrinkConfig,
}

/// Where a campaign is, after each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub cases: u64,
    /// Cases that broke the property.
    pub findings: u64,
    /// Distinct coverage features seen (coverage strategy only).
    pub features: usize,
}

/// The first case that broke the property, as found.
#[derive(Clone, Debug)]
pub struct Found {
    /// Its case number.
    pub case: u64,
    pub spec: ScenarioSpec,
    pub schedule: Schedule,
    pub violation: Violation,
    pub verdict: Verdict,
}

/// What a campaign did.
#[derive(Clone, Debug)]
pub struct CampaignReport {
    pub cases: u64,
    pub findings: u64,
    pub features: usize,
    pub found: Option<Found>,
    /// `found`, shrunk.
    pub shrunk: Option<Shrunk>,
}

/// Why a campaign stopped short.
#[derive(Debug)]
pub enum CampaignError {
    /// A generated scenario did not load: a bug in the generator.
    Runner {
        case: u64,
        scenario: String,
        why: String,
    },
    Shrink(ShrinkError),
}

impl std::fmt::Display for CampaignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CampaignError::Runner { case, scenario, why } => {
                write!(f, "generated case {case} did not load (a generator bug): {why}\n{scenario}")
            }
            CampaignError::Shrink(error) => write!(f, "shrinking failed: {error}"),
        }
    }
}

impl std::error::Error for CampaignError {}

/// The seed of case `index` of a campaign seeded `seed` (splitmix64 of both).
pub fn case_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The scenario of case `index` (fresh draws), a function of the seed and the index alone.
pub fn fresh_case(config: &CampaignConfig, index: u64) -> ScenarioSpec {
    Draws::new(case_seed(config.seed, index)).draw(&scenarios(&config.generate))
}

struct Budget {
    started: Instant,
    cases: Option<u64>,
    time: Option<Duration>,
}

impl Budget {
    /// Cases the next batch may run (0: the budget is spent).
    fn allows(&self, done: u64, batch: u64) -> u64 {
        if self.time.is_some_and(|time| self.started.elapsed() >= time) {
            return 0;
        }
        match self.cases {
            Some(cases) => batch.min(cases.saturating_sub(done)),
            None => batch,
        }
    }
}

/// Runs the campaign; `progress` is called after every batch.
pub fn run_campaign(
    runner: &dyn Runner,
    print: &(dyn Fn(&ScenarioSpec) -> String + Sync),
    config: &CampaignConfig,
    progress: &dyn Fn(&Progress),
) -> Result<CampaignReport, CampaignError> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(config.jobs).build().expect("a rayon thread pool");
    let budget = Budget { started: Instant::now(), cases: config.cases, time: config.time };
    let coverage = config.strategy == SearchStrategy::Coverage;
    let mut explorer: Explorer<ScenarioSpec> = Explorer::new(config.seed);
    let donors = scenarios(&config.generate);
    let mut state = Progress { cases: 0, findings: 0, features: 0 };
    let mut found: Option<Found> = None;
    while found.is_none() {
        let batch = if coverage { BATCH as u64 } else { BATCH_CASES };
        let count = budget.allows(state.cases, batch);
        if count == 0 {
            break;
        }
        let planned = plan_batch(config, &mut explorer, &donors, state.cases, count);
        let results = pool.install(|| run_batch(runner, print, &planned, coverage));
        judge_batch(config, &mut explorer, &mut state, &mut found, planned, results)?;
        state.features = explorer.corpus.features();
        progress(&state);
    }
    let shrunk = match &found {
        Some(found) => Some(
            shrink(
                runner,
                print,
                config.property,
                &config.generate.limits,
                &found.spec,
                &found.schedule,
                config.shrink,
            )
            .map_err(CampaignError::Shrink)?,
        ),
        None => None,
    };
    Ok(CampaignReport {
        cases: state.cases,
        findings: state.findings,
        features: state.features,
        found,
        shrunk,
    })
}

/// The next `count` cases, the first of them case `first_case`: planned by the explorer
/// under the coverage strategy, else fresh scenarios under schedules from their seeds.
fn plan_batch(
    config: &CampaignConfig,
    explorer: &mut Explorer<ScenarioSpec>,
    donors: &BoxedStrategy<ScenarioSpec>,
    first_case: u64,
    count: u64,
) -> Vec<(ScenarioSpec, Schedule)> {
    match config.strategy {
        SearchStrategy::Coverage => {
            let mut fresh = |k: u64| (fresh_case(config, k), Schedule::Random(case_seed(config.seed, k)));
            let mut mutate = |spec: &ScenarioSpec, rng: &mut rand_chacha::ChaCha8Rng| {
                mutate_scenario(spec, donors, &config.generate.limits, rng)
            };
            explorer.plan(count as usize, &mut fresh, &mut mutate)
        }
        SearchStrategy::Random | SearchStrategy::Pct => (first_case..first_case + count)
            .map(|index| {
                let seed = case_seed(config.seed, index);
                let schedule = match config.strategy {
                    SearchStrategy::Pct => Schedule::Pct { seed, depth: config.pct_depth },
                    _ => Schedule::Random(seed),
                };
                (fresh_case(config, index), schedule)
            })
            .collect(),
    }
}

/// Runs the planned cases in parallel (on the current rayon pool): each case's printed
/// scenario and its verdict, in plan order.
fn run_batch(
    runner: &dyn Runner,
    print: &(dyn Fn(&ScenarioSpec) -> String + Sync),
    planned: &[(ScenarioSpec, Schedule)],
    coverage: bool,
) -> Vec<(String, Result<Verdict, String>)> {
    planned
        .par_iter()
        .map(|(spec, schedule)| {
            let text = print(spec);
            let verdict = runner.run(&text, schedule, coverage);
            (text, verdict)
        })
        .collect()
}

/// Judges a batch's results in case order: counts the cases and the findings, feeds the
/// explorer (coverage strategy) and keeps the first case that broke the property in `found`.
fn judge_batch(
    config: &CampaignConfig,
    explorer: &mut Explorer<ScenarioSpec>,
    state: &mut Progress,
    found: &mut Option<Found>,
    planned: Vec<(ScenarioSpec, Schedule)>,
    results: Vec<(String, Result<Verdict, String>)>,
) -> Result<(), CampaignError> {
    let coverage = config.strategy == SearchStrategy::Coverage;
    for ((spec, schedule), (text, verdict)) in planned.into_iter().zip(results) {
        let case = state.cases;
        state.cases += 1;
        let verdict = verdict.map_err(|why| CampaignError::Runner { case, scenario: text, why })?;
        if coverage {
            explorer.absorb(&spec, &verdict);
        }
        if let Some(violation) = config.property.check(&verdict) {
            state.findings += 1;
            if found.is_none() {
                *found = Some(Found { case, spec, schedule, violation, verdict });
            }
        }
    }
    Ok(())
}
