//! `runs-to-find FILE [--strategy random|pct|coverage] [--bases N] [--first-base K] [--cap N]`:
//! how many runs exploration needs to find what the file's `[expect]` names (its outcome,
//! containing its `what`), over N base seeds (`100000 * k`, k = K..K+N, run seeds base,
//! base+1, ...; K is 0 unless given, and another K checks a figure on bases it was not
//! measured on).
//! Prints each base's count and the median; a base that needs more than `cap` runs counts as
//! `cap + 1` ("not found").
//!
//! The figure issue 7 asks for ("median runs to first failure over 20 base seeds"), made by a
//! command rather than by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use rayon::prelude::*;
use scenarios::run::{Runner, Schedule, pct_horizon};
use scenarios::schema::{Scenario, Strategy};
use sim_core::OutcomeKind;

const USAGE: &str =
    "usage: runs-to-find FILE [--strategy random|pct|coverage] [--bases N] [--first-base K] [--cap N]";

/// What the command line asks for.
struct Args {
    file: PathBuf,
    strategy: Strategy,
    bases: u64,
    first_base: u64,
    cap: u64,
}

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse_args() {
        Ok(args) => report(&args),
        Err(message) => {
            eprintln!("runs-to-find: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// FILE, strategy, bases, first base and cap from the command line.
fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut strategy = Strategy::Random;
    let mut bases = 20u64;
    let mut first_base = 0u64;
    let mut cap = 20_000u64;
    while let Some(arg) = args.next() {
        let mut number = |name: &str| {
            args.next().and_then(|n| n.parse().ok()).ok_or_else(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--strategy" => {
                strategy = match args.next().as_deref() {
                    Some("pct") => Strategy::Pct,
                    Some("random") => Strategy::Random,
                    Some("coverage") => Strategy::Coverage,
                    other => {
                        return Err(format!("--strategy takes random, pct or coverage, found {other:?}"));
                    }
                }
            }
            "--bases" => bases = number("--bases")?,
            "--first-base" => first_base = number("--first-base")?,
            "--cap" => cap = number("--cap")?,
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            path => file = Some(PathBuf::from(path)),
        }
    }
    // Base seeds are 100000 * k: keep k where that does not overflow.
    if first_base.checked_add(bases).is_none_or(|end| end > u64::MAX / 100_000) {
        return Err(format!("--first-base {first_base} with --bases {bases} is past the last base seed"));
    }
    Ok(Args { file: file.ok_or("no FILE given")?, strategy, bases, first_base, cap })
}

/// Each base's count and the median.
fn report(args: &Args) -> ExitCode {
    let Args { ref file, strategy, bases, first_base, cap } = *args;
    let scenario = match scenarios::load_file(file) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let Some(expect) = scenario.expect.as_ref() else {
        eprintln!("{}: no [expect] to find", file.display());
        return ExitCode::from(2);
    };
    if expect.outcome == OutcomeKind::Pass {
        eprintln!("{}: expects pass, so there is nothing to find", file.display());
        return ExitCode::from(2);
    }
    let horizon = pct_horizon(&scenario);
    let mut counts: Vec<u64> = (first_base..first_base + bases)
        .into_par_iter()
        .map(|k| runs_to_find(&scenario, strategy, horizon, 100_000 * k, cap))
        .collect();
    for (k, count) in counts.iter().enumerate() {
        let shown = if *count > cap { format!(">{cap}") } else { count.to_string() };
        println!("base {:>7}: {shown}", 100_000 * (first_base + k as u64));
    }
    counts.sort_unstable();
    let median = if counts.len() % 2 == 1 {
        counts[counts.len() / 2] as f64
    } else {
        (counts[counts.len() / 2 - 1] + counts[counts.len() / 2]) as f64 / 2.0
    };
    let from = if first_base == 0 { String::new() } else { format!(" from base {}", 100_000 * first_base) };
    println!(
        "{}: {} over {bases} bases{from}: median {median} runs (cap {cap})",
        file.display(),
        strategy.name()
    );
    ExitCode::SUCCESS
}

/// Runs from `base` until one ends as the file expects; how many it took.
fn runs_to_find(scenario: &Scenario, strategy: Strategy, horizon: u64, base: u64, cap: u64) -> u64 {
    let expect = scenario.expect.as_ref().expect("report() checked the file has an [expect]");
    let wanted = |outcome: &sim_core::Outcome| {
        outcome.kind == expect.outcome
            && expect.what.as_ref().is_none_or(|what| outcome.what.contains(what.as_str()))
    };
    if strategy == Strategy::Coverage {
        // The coverage-guided exploration seeded with the base (what `check` would run).
        return scenarios::coverage::runs_to_find(scenario, base, cap, &wanted);
    }
    let runner = Runner::new(scenario);
    for index in 0..cap {
        let seed = base + index;
        let schedule = match strategy {
            Strategy::Pct => Schedule::Pct { seed, depth: scenario.run.pct_depth, horizon },
            Strategy::Random | Strategy::Exhaustive | Strategy::Coverage => Schedule::Random(seed),
        };
        let outcome = runner.run(&schedule, false).outcome;
        if wanted(&outcome) {
            return index + 1;
        }
    }
    cap + 1
}
