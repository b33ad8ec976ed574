//! `tdxsim`: run, check and replay scenario files.
//!
//! Exit codes: 0 when everything expected held, 1 when an expectation failed, 2 when a
//! file or the command line is malformed (nothing ran).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use scenarios::check::check;
use scenarios::run::{RunResult, Schedule, run_once};
use scenarios::schema::{CALLS, METRICS, Scenario};
use scenarios::{load_file, table};
use seam_model::Leaf;
use sim_core::{Outcome, OutcomeKind};

#[derive(Parser)]
#[command(
    name = "tdxsim",
    version,
    about = "Deterministic simulator of the TDX module and the Linux host algorithms around it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario once and print its outcome, trace hash and counts.
    Run {
        file: PathBuf,
        /// The run's seed (default: the file's run.seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Print the run as a `CPU 0 | CPU 1` table.
        #[arg(long)]
        table: bool,
        /// Write the run as Chrome trace-event JSON, for ui.perfetto.dev, to this file.
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Explore run.runs seeds of each file and judge its [expect]; exit 1 if any fails.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Repeat one run exactly: the same outcome and trace hash.
    Replay {
        file: PathBuf,
        #[arg(long)]
        seed: u64,
        /// Print the run as a `CPU 0 | CPU 1` table.
        #[arg(long)]
        table: bool,
        /// Write the run as Chrome trace-event JSON, for ui.perfetto.dev, to this file.
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Print a catalogue.
    List { what: Catalogue },
}

#[derive(Clone, Copy, ValueEnum)]
enum Catalogue {
    Calls,
    Designs,
    Leaves,
    Outcomes,
    Metrics,
    Invariants,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { file, seed, table, trace } => run_command(&file, seed, table, trace.as_deref()),
        Command::Replay { file, seed, table, trace } => {
            run_command(&file, Some(seed), table, trace.as_deref())
        }
        Command::Check { files } => check_command(&files),
        Command::List { what } => {
            list(what);
            ExitCode::SUCCESS
        }
    }
}

fn load(file: &Path) -> Result<Scenario, ExitCode> {
    load_file(file).map_err(|error| {
        eprintln!("{error}");
        ExitCode::from(2)
    })
}

fn run_command(file: &Path, seed: Option<u64>, show_table: bool, trace_file: Option<&Path>) -> ExitCode {
    let scenario = match load(file) {
        Ok(scenario) => scenario,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or(scenario.run.seed);
    let result = run_once(&scenario, &Schedule::Random(seed), show_table || trace_file.is_some());
    print_run(&scenario, seed, &result);
    if show_table {
        println!();
        print!("{}", table::render(&result));
    }
    if let Some(trace_file) = trace_file
        && let Err(code) = write_chrome_trace(trace_file, &scenario, &result)
    {
        return code;
    }
    let expected = scenario.expect.as_ref().map_or(OutcomeKind::Pass, |expect| expect.outcome);
    if result.outcome.kind == OutcomeKind::Pass || result.outcome.kind == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--trace FILE.json`: the run as Chrome trace-event JSON; exit 2 when the file cannot be written.
fn write_chrome_trace(trace_file: &Path, scenario: &Scenario, result: &RunResult) -> Result<(), ExitCode> {
    let json = scenarios::perfetto::chrome_trace(result, scenario);
    let text = serde_json::to_string(&json).expect("trace JSON serialises");
    std::fs::write(trace_file, text).map_err(|error| {
        eprintln!("{}: cannot write the trace: {error}", trace_file.display());
        ExitCode::from(2)
    })?;
    println!("trace: {} (open in ui.perfetto.dev)", trace_file.display());
    Ok(())
}

fn print_run(scenario: &Scenario, seed: u64, result: &RunResult) {
    let clock = scenario.clock();
    println!("scenario: {} ({})", scenario.name, scenario.path);
    println!("seed {seed}: {}", result.outcome);
    println!(
        "trace hash: {:016x}  end: cycle {} ({:.1} us)  events: {}  decisions: {}",
        result.trace_hash,
        result.end.0,
        clock.cycles_to_ns(result.end.0) / 1000.0,
        result.events,
        result.decisions.len()
    );
    println!("SEAMCALLs:");
    for ((leaf, status), count) in &result.metrics.seamcalls {
        println!("  {:<24} {:<32} {count}", leaf.name(), status.name());
    }
    println!(
        "locks: {} acquisitions, {} contended, {} wait cycles",
        result.metrics.lock_acquisitions, result.metrics.lock_contended, result.metrics.lock_wait_cycles
    );
    for (name, _, stats) in &result.resources {
        if stats.acquisitions > 0 || stats.contended > 0 {
            println!(
                "  {name:<24} {} acquisitions, {} contended, {} wait cycles",
                stats.acquisitions, stats.contended, stats.wait_cycles
            );
        }
    }
    if !matches!(result.outcome.kind, OutcomeKind::Pass) {
        println!("replay: tdxsim replay {} --seed {seed}", scenario.path);
    }
}

fn check_command(files: &[PathBuf]) -> ExitCode {
    // Load everything first: a malformed file fails the command before any run.
    let mut scenarios = Vec::new();
    for file in files {
        match load(file) {
            Ok(scenario) => scenarios.push(scenario),
            Err(code) => return code,
        }
    }
    let mut failed = 0;
    for scenario in &scenarios {
        let started = Instant::now();
        let summary = check(scenario);
        let seconds = started.elapsed().as_secs_f64();
        let counts: Vec<String> =
            summary.outcomes.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        let first = match &summary.first_failing {
            Some((seed, outcome)) => format!("first failing seed {seed} ({})", short(outcome)),
            None => "no failing seed".to_string(),
        };
        let rate = summary.runs as f64 / seconds.max(1e-9);
        let verdict = if summary.verdict.is_ok() { "ok  " } else { "FAIL" };
        println!(
            "{verdict} {}: {} runs: {} | {first} | {rate:.0} runs/s",
            scenario.path,
            summary.runs,
            counts.join(", ")
        );
        if let Err(why) = &summary.verdict {
            failed += 1;
            println!("     {why}");
            if let Some((seed, _)) = &summary.first_failing {
                println!("     replay: tdxsim replay {} --seed {seed} --table", scenario.path);
            }
        }
    }
    println!("{} passed, {failed} failed", scenarios.len() - failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn short(outcome: &Outcome) -> String {
    let text = outcome.to_string();
    if text.chars().count() > 100 { text.chars().take(97).collect::<String>() + "..." } else { text }
}

fn list(what: Catalogue) {
    match what {
        Catalogue::Calls => {
            for (name, arguments, runs) in CALLS {
                println!("{name:<16} {arguments:<40} {runs}");
            }
        }
        Catalogue::Designs => {
            for design in host_model::DpamtDesign::ALL {
                let default = if *design == host_model::DpamtDesign::default() { " (default)" } else { "" };
                println!("host.dpamt = {:<26} {}{default}", design.name(), design.source());
            }
        }
        Catalogue::Leaves => {
            for leaf in Leaf::ALL {
                let modelled = if leaf.is_modelled() { "modelled" } else { "-" };
                println!(
                    "{:#018x} {:<24} {:>10} cycles  {modelled}",
                    leaf.rax(),
                    leaf.name(),
                    leaf.default_cost_cycles()
                );
            }
        }
        Catalogue::Outcomes => {
            for kind in OutcomeKind::ALL {
                println!("{kind}");
            }
        }
        Catalogue::Metrics => {
            for (name, meaning) in METRICS {
                println!("{name:<32} {meaning} (bound with {name}_max / {name}_min)");
            }
        }
        Catalogue::Invariants => {
            println!(
                "dpamt-refcount-matches-module   after a passing run: pamt_refcount[X] > 0 exactly when the module has X backed"
            );
        }
    }
}
