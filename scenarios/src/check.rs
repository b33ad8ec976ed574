//! `[expect]` over the runs `tdxsim check` explores (SCENARIOS.md "Outcomes").

use std::collections::BTreeMap;

use sim_core::{Outcome, OutcomeKind};

use crate::run::{Metrics, Schedule, run_once};
use crate::schema::{Bound, Scenario};

/// The result of exploring a scenario's runs.
pub struct CheckSummary {
    pub runs: u64,
    pub outcomes: BTreeMap<OutcomeKind, u64>,
    /// The first run that did not pass: (seed, outcome).
    pub first_failing: Option<(u64, Outcome)>,
    pub metrics: Metrics,
    pub events: u64,
    /// `Ok` when every expectation holds, else why not.
    pub verdict: Result<(), String>,
}

/// Runs seeds `run.seed .. run.seed + run.runs` and judges `[expect]`. A file without
/// `[expect]` is held to `outcome = "pass"`.
pub fn check(scenario: &Scenario) -> CheckSummary {
    let expected = scenario.expect.as_ref().map_or(OutcomeKind::Pass, |expect| expect.outcome);
    let what = scenario.expect.as_ref().and_then(|expect| expect.what.clone());
    let within = scenario.expect.as_ref().and_then(|expect| expect.within_runs).unwrap_or(scenario.run.runs);
    let mut outcomes = BTreeMap::new();
    let mut first_failing = None;
    let mut first_error = None;
    let mut found: Option<(u64, Outcome)> = None;
    let mut closest: Option<(u64, Outcome)> = None;
    let mut metrics = Metrics::default();
    let mut events = 0;
    for index in 0..scenario.run.runs {
        let seed = scenario.run.seed.wrapping_add(index);
        let result = run_once(scenario, &Schedule::Random(seed), false);
        *outcomes.entry(result.outcome.kind).or_default() += 1;
        metrics.add(&result.metrics);
        events += result.events;
        let outcome = result.outcome;
        if outcome.kind == OutcomeKind::Error && first_error.is_none() {
            first_error = Some((seed, outcome.clone()));
        }
        if outcome.kind == expected && index < within && found.is_none() {
            if what.as_ref().is_none_or(|what| outcome.what.contains(what.as_str())) {
                found = Some((seed, outcome.clone()));
            } else if closest.is_none() {
                closest = Some((seed, outcome.clone()));
            }
        }
        if outcome.kind != OutcomeKind::Pass && first_failing.is_none() {
            first_failing = Some((seed, outcome));
        }
    }
    let verdict = judge(expected, what.as_deref(), within, &first_failing, &first_error, &found, &closest)
        .and_then(|()| judge_metrics(scenario, &metrics));
    CheckSummary { runs: scenario.run.runs, outcomes, first_failing, metrics, events, verdict }
}

#[allow(clippy::too_many_arguments)]
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
