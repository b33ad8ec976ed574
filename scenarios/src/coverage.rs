//! `--strategy coverage` for `check`, `run` and `replay`: the coverage-guided exploration of
//! a scenario's schedules (fuzz/src/explore.rs), seeded with `run.seed`. Run `N` of it is
//! what `--seed N` names, as for `exhaustive`: the exploration is replayed up to it.

use fuzz::explore::{explore_schedules, explore_schedules_until};
use sim_core::Outcome;

use crate::check::RunSummary;
use crate::fuzzing::{engine_schedule, verdict_of};
use crate::run::{RunResult, run_once_with};
use crate::schema::Scenario;

/// Runs one schedule of the exploration with coverage on.
fn run_explored(scenario: &Scenario, schedule: &fuzz::Schedule) -> RunResult {
    run_once_with(scenario, &engine_schedule(scenario, schedule), false, true)
}

/// `run.runs` runs of the exploration, in order (`check`).
pub(crate) fn explore(scenario: &Scenario, jobs: usize, on_run: &(dyn Fn() + Sync)) -> Vec<RunSummary> {
    let run = |schedule: &fuzz::Schedule| {
        let result = run_explored(scenario, schedule);
        let summary = RunSummary {
            seed: 0,
            outcome: result.outcome.clone(),
            metrics: result.metrics.clone(),
            events: result.events,
        };
        (verdict_of(result), summary)
    };
    explore_schedules(scenario.run.seed, scenario.run.runs, jobs, &run, on_run)
        .into_iter()
        .enumerate()
        .map(|(index, (_, summary))| RunSummary { seed: index as u64, ..summary })
        .collect()
}

/// How many runs of the exploration seeded `seed` it takes to reach one whose outcome
/// `wanted` accepts (`cap + 1` when none of the first `cap` does).
pub fn runs_to_find(
    scenario: &Scenario,
    seed: u64,
    cap: u64,
    wanted: &(dyn Fn(&Outcome) -> bool + Sync),
) -> u64 {
    let run = |schedule: &fuzz::Schedule| {
        let result = run_explored(scenario, schedule);
        let found = wanted(&result.outcome);
        (verdict_of(result), found)
    };
    let explored = explore_schedules_until(seed, cap, 1, &run, &|| {}, &|found: &bool| *found);
    explored.iter().position(|(_, found)| *found).map_or(cap + 1, |index| index as u64 + 1)
}

/// The decisions of run `index` of the exploration (its whole vector, which replays it).
pub fn coverage_schedule(scenario: &Scenario, index: u64) -> Vec<u32> {
    let run = |schedule: &fuzz::Schedule| {
        let result = run_explored(scenario, schedule);
        let decisions = result.decisions.clone();
        (verdict_of(result), decisions)
    };
    let explored = explore_schedules(scenario.run.seed, index + 1, 1, &run, &|| {});
    explored.into_iter().last().map(|(_, decisions)| decisions).unwrap_or_default()
}
