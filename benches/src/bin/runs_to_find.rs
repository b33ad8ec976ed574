//! `runs-to-find FILE [--strategy random|pct|coverage] [--bases N] [--cap N]`: how many runs
//! exploration needs to find what the file's `[expect]` names (its outcome, containing its
//! `what`), over N base seeds (`100000 * k`, k = 0..N, run seeds base, base+1, ...).
//! Prints each base's count and the median; a base that needs more than `cap` runs counts as
//! `cap + 1` ("not found").
//!
//! The figure issue 7 asks for ("median runs to first failure over 20 base seeds"), made by a
//! command rather than by hand.

use std::path::PathBuf;

use rayon::prelude::*;
use scenarios::run::{Schedule, pct_horizon, run_once};
use scenarios::schema::{Scenario, Strategy};
use sim_core::OutcomeKind;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut strategy = Strategy::Random;
    let mut bases = 20u64;
    let mut cap = 20_000u64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--strategy" => {
                strategy = match args.next().as_deref() {
                    Some("pct") => Strategy::Pct,
                    Some("random") => Strategy::Random,
                    Some("coverage") => Strategy::Coverage,
                    other => panic!("--strategy random|pct|coverage, got {other:?}"),
                }
            }
            "--bases" => bases = args.next().and_then(|n| n.parse().ok()).expect("--bases N"),
            "--cap" => cap = args.next().and_then(|n| n.parse().ok()).expect("--cap N"),
            path => file = Some(PathBuf::from(path)),
        }
    }
    let file = file.expect("usage: runs-to-find FILE [--strategy random|pct|coverage] [--bases N] [--cap N]");
    let scenario = scenarios::load_file(&file).unwrap_or_else(|error| panic!("{error}"));
    let horizon = pct_horizon(&scenario);
    let mut counts: Vec<u64> = (0..bases)
        .into_par_iter()
        .map(|k| runs_to_find(&scenario, strategy, horizon, 100_000 * k, cap))
        .collect();
    for (k, count) in counts.iter().enumerate() {
        let shown = if *count > cap { format!(">{cap}") } else { count.to_string() };
        println!("base {:>7}: {shown}", 100_000 * k);
    }
    counts.sort_unstable();
    let median = if counts.len() % 2 == 1 {
        counts[counts.len() / 2] as f64
    } else {
        (counts[counts.len() / 2 - 1] + counts[counts.len() / 2]) as f64 / 2.0
    };
    println!("{}: {} over {bases} bases: median {median} runs (cap {cap})", file.display(), strategy.name());
}

/// Runs from `base` until one ends as the file expects; how many it took.
fn runs_to_find(scenario: &Scenario, strategy: Strategy, horizon: u64, base: u64, cap: u64) -> u64 {
    let expect = scenario.expect.as_ref().expect("the file has an [expect] to find");
    assert_ne!(expect.outcome, OutcomeKind::Pass, "a passing expectation has nothing to find");
    let wanted = |outcome: &sim_core::Outcome| {
        outcome.kind == expect.outcome
            && expect.what.as_ref().is_none_or(|what| outcome.what.contains(what.as_str()))
    };
    if strategy == Strategy::Coverage {
        // The coverage-guided exploration seeded with the base (what `check` would run).
        return scenarios::coverage::runs_to_find(scenario, base, cap, &wanted);
    }
    for index in 0..cap {
        let seed = base + index;
        let schedule = match strategy {
            Strategy::Pct => Schedule::Pct { seed, depth: scenario.run.pct_depth, horizon },
            Strategy::Random | Strategy::Exhaustive | Strategy::Coverage => Schedule::Random(seed),
        };
        let outcome = run_once(scenario, &schedule, false).outcome;
        if wanted(&outcome) {
            return index + 1;
        }
    }
    cap + 1
}
