//! `[expect]` over the runs `tdxsim check` explores (docs/scenarios.md "Outcomes", "`[expect]`").
//!
//! Random and PCT runs are independent and run in parallel (rayon), then are judged in seed
//! order, so the result is the same for any number of threads. The exhaustive enumeration
//! is sequential: each schedule follows from the one before.

use std::collections::BTreeMap;

use rayon::prelude::*;
use sim_core::{Exhaustive, Outcome, OutcomeKind};

use crate::run::{Metrics, Runner, Schedule, pct_horizon};
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

/// Runs judged at once: the parallel batch, after which its runs are folded into the verdict
/// and dropped, so memory stays flat in `run.runs`.
const BATCH_RUNS: u64 = 4096;

/// Runs the scenario's schedules and judges `[expect]`. A file without `[expect]` is held
/// to `outcome = "pass"`.
pub fn check(scenario: &Scenario) -> CheckSummary {
    check_with(scenario, CheckOptions::default(), &|| {})
}

/// `check` with options; `on_run` is called once per finished run (progress bars).
pub fn check_with(scenario: &Scenario, options: CheckOptions, on_run: &(dyn Fn() + Sync)) -> CheckSummary {
    let strategy = options.strategy.unwrap_or(scenario.run.strategy);
    let mut judge = Judge::new(scenario);
    let complete = match strategy {
        Strategy::Exhaustive => Some(explore_exhaustive(scenario, on_run, &mut judge)),
        Strategy::Random | Strategy::Pct => {
            explore_seeds(scenario, strategy, options.jobs, on_run, &mut judge);
            None
        }
        Strategy::Coverage => {
            for run in crate::coverage::explore(scenario, options.jobs, on_run) {
                judge.add(run);
            }
            None
        }
    };
    judge.finish(scenario, strategy, complete)
}

fn explore_seeds(
    scenario: &Scenario,
    strategy: Strategy,
    jobs: usize,
    on_run: &(dyn Fn() + Sync),
    judge: &mut Judge,
) {
    let horizon = if strategy == Strategy::Pct { pct_horizon(scenario) } else { 0 };
    let runner = Runner::new(scenario);
    let schedule_of = |index: u64| {
        let seed = scenario.run.seed.wrapping_add(index);
        let schedule = match strategy {
            Strategy::Pct => Schedule::Pct { seed, depth: scenario.run.pct_depth, horizon },
            _ => Schedule::Random(seed),
        };
        (seed, schedule)
    };
    if jobs == 1 {
        // One job runs its seeds on this thread, and the judge pools each run's lock figures
        // from the engine as they are: no copy of a run's lock list is made, and nothing the
        // run allocated is freed by another thread (the allocator's slower path).
        for index in 0..scenario.run.runs {
            let (seed, schedule) = schedule_of(index);
            let run = runner.explore_pooled(&schedule, &mut judge.locks, &mut judge.metrics);
            on_run();
            judge.add_pooled(RunSummary {
                seed,
                outcome: run.outcome,
                metrics: run.metrics,
                events: run.events,
            });
        }
        return;
    }
    let one = |index: u64| {
        let (seed, schedule) = schedule_of(index);
        let run = runner.explore(&schedule);
        on_run();
        RunSummary { seed, outcome: run.outcome, metrics: run.metrics, events: run.events }
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build().expect("a rayon thread pool");
    let mut first = 0;
    while first < scenario.run.runs {
        let last = first.saturating_add(BATCH_RUNS).min(scenario.run.runs);
        let batch: Vec<RunSummary> = pool.install(|| (first..last).into_par_iter().map(one).collect());
        // In seed order, whatever thread ran which seed.
        for run in batch {
            judge.add(run);
        }
        first = last;
    }
}

/// Returns whether every schedule within the bound was covered.
fn explore_exhaustive(scenario: &Scenario, on_run: &(dyn Fn() + Sync), judge: &mut Judge) -> bool {
    let enumerator = Exhaustive::new(scenario.run.exhaustive_bound);
    let mut prefix = Vec::new();
    let runner = Runner::new(scenario);
    for index in 0..scenario.run.runs {
        let result = runner.run(&Schedule::Prefix(prefix.clone()), false);
        on_run();
        let next = enumerator.next_prefix(&result.decisions, &result.decision_options);
        judge.add(RunSummary {
            seed: index,
            outcome: result.outcome,
            metrics: result.metrics,
            events: result.events,
        });
        match next {
            Some(next) => prefix = next,
            None => return true,
        }
    }
    false
}

/// The verdict being built, one run at a time in seed order: what it keeps does not grow
/// with the number of runs.
struct Judge {
    expected: OutcomeKind,
    what: Option<String>,
    within: u64,
    runs: u64,
    outcomes: BTreeMap<OutcomeKind, u64>,
    first_failing: Option<(u64, Outcome)>,
    first_error: Option<(u64, Outcome)>,
    /// The first run, within `within`, that ended as expected (and matched `what`).
    found: Option<(u64, Outcome)>,
    /// The first run within `within` of the expected kind whose finding did not match `what`.
    closest: Option<(u64, Outcome)>,
    metrics: Metrics,
    /// The runs' lock instances, pooled by position until `finish`.
    locks: crate::metrics::LockPool,
    events: u64,
}

impl Judge {
    fn new(scenario: &Scenario) -> Judge {
        let expect = scenario.expect.as_ref();
        Judge {
            expected: expect.map_or(OutcomeKind::Pass, |expect| expect.outcome),
            what: expect.and_then(|expect| expect.what.clone()),
            within: expect.and_then(|expect| expect.within_runs).unwrap_or(u64::MAX),
            runs: 0,
            outcomes: BTreeMap::new(),
            first_failing: None,
            first_error: None,
            found: None,
            closest: None,
            metrics: Metrics::default(),
            locks: Default::default(),
            events: 0,
        }
    }

    fn add(&mut self, run: RunSummary) {
        self.locks.add(&run.metrics.run_locks, &mut self.metrics);
        self.add_pooled(run);
    }

    /// [`Judge::add`] of a run whose lock figures are pooled already
    /// (`Runner::explore_pooled`): pooling is by sums and maxima, so which comes first
    /// does not matter.
    fn add_pooled(&mut self, run: RunSummary) {
        let index = self.runs;
        self.runs += 1;
        *self.outcomes.entry(run.outcome.kind).or_default() += 1;
        self.metrics.add_counts(&run.metrics);
        self.events += run.events;
        let outcome = run.outcome;
        if outcome.kind == OutcomeKind::Error && self.first_error.is_none() {
            self.first_error = Some((run.seed, outcome.clone()));
        }
        if outcome.kind == self.expected && index < self.within && self.found.is_none() {
            if self.what.as_ref().is_none_or(|what| outcome.what.contains(what.as_str())) {
                self.found = Some((run.seed, outcome.clone()));
            } else if self.closest.is_none() {
                self.closest = Some((run.seed, outcome.clone()));
            }
        }
        if outcome.kind != OutcomeKind::Pass && self.first_failing.is_none() {
            self.first_failing = Some((run.seed, outcome));
        }
    }

    fn finish(mut self, scenario: &Scenario, strategy: Strategy, complete: Option<bool>) -> CheckSummary {
        self.locks.flush(&mut self.metrics);
        let verdict = judge(
            self.expected,
            self.what.as_deref(),
            self.within.min(self.runs),
            &self.first_failing,
            &self.first_error,
            &self.found,
            &self.closest,
        )
        .and_then(|()| judge_metrics(scenario, &self.metrics));
        CheckSummary {
            strategy,
            runs: self.runs,
            outcomes: self.outcomes,
            first_failing: self.first_failing,
            metrics: self.metrics,
            events: self.events,
            complete,
            verdict,
        }
    }
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
