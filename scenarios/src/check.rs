//! `[expect]` over the runs `tdxsim check` explores (SCENARIOS.md "Outcomes").
//!
//! Random and PCT runs are independent and run in parallel (rayon), then are judged in seed
//! order, so the result is the same for any number of threads. The exhaustive enumeration
//! is sequential: each schedule follows from the one before.

use std::collections::BTreeMap;

use rayon::prelude::*;
use sim_core::{Exhaustive, Outcome, OutcomeKind};

use crate::run::{Metrics, Schedule, pct_horizon, run_once};
use crate::schema::{Bound, Scenario, Strategy};

/// How to explore.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Worker threads (0: one per core).
    pub jobs: usize,
    /// Overrides `run.strategy`.
    pub strategy: Option<Strategy>,
}

/// The result of exploring a scenario's runs.
pub struct CheckSummary {
    pub strategy: Strategy,
    pub runs: u64,
    pub outcomes: BTreeMap<OutcomeKind, u64>,
    /// The first run that did not pass: (seed, or schedule number for `exhaustive`; outcome).
    pub first_failing: Option<(u64, Outcome)>,
    pub metrics: Metrics,
    pub events: u64,
    /// `exhaustive` only: whether every schedule within the bound was covered.
    pub complete: Option<bool>,
    /// `Ok` when every expectation holds, else why not.
    pub verdict: Result<(), String>,
}

/// What one run leaves for the verdict.
pub(crate) struct RunSummary {
    /// The seed, or the schedule number for `exhaustive` and `coverage`.
    pub(crate) seed: u64,
    pub(crate) outcome: Outcome,
    pub(crate) metrics: Metrics,
    pub(crate) events: u64,
}

/// Runs the scenario's schedules and judges `[expect]`. A file without `[expect]` is held
/// to `outcome = "pass"`.
pub fn check(scenario: &Scenario) -> CheckSummary {
    check_with(scenario, CheckOptions::default(), &|| {})
}

/// `check` with options; `on_run` is called once per finished run (progress bars).
pub fn check_with(scenario: &Scenario, options: CheckOptions, on_run: &(dyn Fn() + Sync)) -> CheckSummary {
    let strategy = options.strategy.unwrap_or(scenario.run.strategy);
    let (runs, complete) = match strategy {
        Strategy::Exhaustive => {
            let (runs, complete) = explore_exhaustive(scenario, on_run);
            (runs, Some(complete))
        }
        Strategy::Random | Strategy::Pct => (explore_seeds(scenario, strategy, options.jobs, on_run), None),
        Strategy::Coverage => (crate::coverage::explore(scenario, options.jobs, on_run), None),
    };
    judge_runs(scenario, strategy, runs, complete)
}

fn explore_seeds(
    scenario: &Scenario,
    strategy: Strategy,
    jobs: usize,
    on_run: &(dyn Fn() + Sync),
) -> Vec<RunSummary> {
    let horizon = if strategy == Strategy::Pct { pct_horizon(scenario) } else { 0 };
    let one = |index: u64| {
        let seed = scenario.run.seed.wrapping_add(index);
        let schedule = match strategy {
            Strategy::Pct => Schedule::Pct { seed, depth: scenario.run.pct_depth, horizon },
            _ => Schedule::Random(seed),
        };
        let result = run_once(scenario, &schedule, false);
        on_run();
        RunSummary { seed, outcome: result.outcome, metrics: result.metrics, events: result.events }
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build().expect("a rayon thread pool");
    pool.install(|| (0..scenario.run.runs).into_par_iter().map(one).collect())
}

fn explore_exhaustive(scenario: &Scenario, on_run: &(dyn Fn() + Sync)) -> (Vec<RunSummary>, bool) {
    let enumerator = Exhaustive::new(scenario.run.exhaustive_bound);
    let mut prefix = Vec::new();
    let mut runs = Vec::new();
    for index in 0..scenario.run.runs {
        let result = run_once(scenario, &Schedule::Prefix(prefix.clone()), false);
        on_run();
        let next = enumerator.next_prefix(&result.decisions, &result.decision_options);
        runs.push(RunSummary {
            seed: index,
            outcome: result.outcome,
            metrics: result.metrics,
            events: result.events,
        });
        match next {
            Some(next) => prefix = next,
            None => return (runs, true),
        }
    }
    (runs, false)
}

fn judge_runs(
    scenario: &Scenario,
    strategy: Strategy,
    runs: Vec<RunSummary>,
    complete: Option<bool>,
) -> CheckSummary {
    let expected = scenario.expect.as_ref().map_or(OutcomeKind::Pass, |expect| expect.outcome);
    let what = scenario.expect.as_ref().and_then(|expect| expect.what.clone());
    let within = scenario.expect.as_ref().and_then(|expect| expect.within_runs).unwrap_or(u64::MAX);
    let mut outcomes = BTreeMap::new();
    let mut first_failing = None;
    let mut first_error = None;
    let mut found = None;
    let mut closest = None;
    let mut metrics = Metrics::default();
    let mut events = 0;
    let total = runs.len() as u64;
    for (index, run) in runs.into_iter().enumerate() {
        *outcomes.entry(run.outcome.kind).or_default() += 1;
        metrics.add(&run.metrics);
        events += run.events;
        let outcome = run.outcome;
        if outcome.kind == OutcomeKind::Error && first_error.is_none() {
            first_error = Some((run.seed, outcome.clone()));
        }
        if outcome.kind == expected && (index as u64) < within && found.is_none() {
            if what.as_ref().is_none_or(|what| outcome.what.contains(what.as_str())) {
                found = Some((run.seed, outcome.clone()));
            } else if closest.is_none() {
                closest = Some((run.seed, outcome.clone()));
            }
        }
        if outcome.kind != OutcomeKind::Pass && first_failing.is_none() {
            first_failing = Some((run.seed, outcome));
        }
    }
    let verdict =
        judge(expected, what.as_deref(), within.min(total), &first_failing, &first_error, &found, &closest)
            .and_then(|()| judge_metrics(scenario, &metrics));
    CheckSummary { strategy, runs: total, outcomes, first_failing, metrics, events, complete, verdict }
}

fn judge(
    expected: OutcomeKind,
    what: Option<&str>,
    within: u64,
    first_failing: &Option<(u64, Outcome)>,
    first_error: &Option<(u64, Outcome)>,
    found: &Option<(u64, Outcome)>,
    closest: &Option<(u64, Outcome)>,
) -> Result<(), String> {
    if let Some((seed, outcome)) = first_error {
        return Err(format!("seed {seed} ended in {outcome} (a simulator bug; never expected)"));
    }
    if expected == OutcomeKind::Pass {
        return match first_failing {
            None => Ok(()),
            Some((seed, outcome)) => {
                Err(format!("expected every run to pass; seed {seed} ended in {outcome}"))
            }
        };
    }
    if found.is_some() {
        return Ok(());
    }
    let wanted = match what {
        Some(what) => format!("{expected} containing {what:?}"),
        None => expected.to_string(),
    };
    let seen = match closest {
        Some((seed, outcome)) => format!("; seed {seed} ended in {outcome}"),
        None => String::new(),
    };
    Err(format!("expected a run ending in {wanted} within {within} runs; none did{seen}"))
}

fn judge_metrics(scenario: &Scenario, metrics: &Metrics) -> Result<(), String> {
    let Some(expect) = &scenario.expect else { return Ok(()) };
    for bound in &expect.metrics {
        let value = metrics.get(&bound.metric).unwrap_or(0);
        let holds = match bound.bound {
            Bound::Max => value <= bound.value,
            Bound::Min => value >= bound.value,
        };
        if !holds {
            let side = match bound.bound {
                Bound::Max => "max",
                Bound::Min => "min",
            };
            return Err(format!(
                "expect.metrics.{}_{side} = {} does not hold: {} over all runs is {value}",
                bound.metric, bound.value, bound.metric
            ));
        }
    }
    Ok(())
}
