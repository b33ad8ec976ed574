//! `tdxsim`: run, check and replay scenario files.
//!
//! Exit codes: 0 when everything expected held, 1 when an expectation failed, 2 when a
//! file or the command line is malformed (nothing ran).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use scenarios::check::{CheckOptions, check_with};
use scenarios::run::{RunResult, Schedule, run_once};
use scenarios::schema::{CALLS, METRICS, Scenario, Strategy};
use scenarios::{load_file, table};
use seam_model::Leaf;
use sim_core::{Outcome, OutcomeKind};
use std::io::IsTerminal;

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
        /// Schedule with this strategy instead of the file's run.strategy.
        #[arg(long)]
        strategy: Option<StrategyArg>,
    },
    /// Explore run.runs seeds of each file and judge its [expect]; exit 1 if any fails.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Worker threads (default: one per core). Results are the same for any number.
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// Explore with this strategy instead of each file's run.strategy.
        #[arg(long)]
        strategy: Option<StrategyArg>,
    },
    /// Repeat one run exactly: the same outcome and trace hash.
    Replay {
        file: PathBuf,
        #[arg(long)]
        seed: u64,
        /// Print the run as a `CPU 0 | CPU 1` table.
        #[arg(long)]
        table: bool,
        /// The strategy the run was found with (default: the file's run.strategy).
        #[arg(long)]
        strategy: Option<StrategyArg>,
    },
    /// Print a catalogue.
    List { what: Catalogue },
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    Random,
    Pct,
    Exhaustive,
}

impl From<StrategyArg> for Strategy {
    fn from(arg: StrategyArg) -> Strategy {
        match arg {
            StrategyArg::Random => Strategy::Random,
            StrategyArg::Pct => Strategy::Pct,
            StrategyArg::Exhaustive => Strategy::Exhaustive,
        }
    }
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
        Command::Run { file, seed, table, strategy } => {
            run_command(&file, seed, table, strategy.map(Into::into))
        }
        Command::Replay { file, seed, table, strategy } => {
            run_command(&file, Some(seed), table, strategy.map(Into::into))
        }
        Command::Check { files, jobs, strategy } => {
            check_command(&files, CheckOptions { jobs, strategy: strategy.map(Into::into) })
        }
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

fn run_command(file: &Path, seed: Option<u64>, show_table: bool, strategy: Option<Strategy>) -> ExitCode {
    let scenario = match load(file) {
        Ok(scenario) => scenario,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or(scenario.run.seed);
    let result = run_once(&scenario, &Schedule::for_seed(&scenario, strategy, seed), show_table);
    print_run(&scenario, seed, &result);
    if show_table {
        println!();
        print!("{}", table::render(&result));
    }
    let expected = scenario.expect.as_ref().map_or(OutcomeKind::Pass, |expect| expect.outcome);
    if result.outcome.kind == OutcomeKind::Pass || result.outcome.kind == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
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

/// A progress bar on a terminal; nothing in CI logs or pipes.
fn progress_bar(runs: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(runs);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs ({per_sec})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    Some(bar)
}

fn check_command(files: &[PathBuf], options: CheckOptions) -> ExitCode {
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
        let bar = progress_bar(scenario.run.runs);
        let summary = check_with(scenario, options, &|| {
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        });
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let seconds = started.elapsed().as_secs_f64();
        let counts: Vec<String> =
            summary.outcomes.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        let first = match &summary.first_failing {
            Some((seed, outcome)) => format!("first failing seed {seed} ({})", short(outcome)),
            None => "no failing seed".to_string(),
        };
        let rate = summary.runs as f64 / seconds.max(1e-9);
        let verdict = if summary.verdict.is_ok() { "ok  " } else { "FAIL" };
        let coverage = match summary.complete {
            Some(true) => " (every schedule within the bound)",
            Some(false) => " (bound not exhausted)",
            None => "",
        };
        println!(
            "{verdict} {}: {} {} runs{coverage}: {} | {first} | {rate:.0} runs/s",
            scenario.path,
            summary.runs,
            summary.strategy.name(),
            counts.join(", ")
        );
        if let Err(why) = &summary.verdict {
            failed += 1;
            println!("     {why}");
            if let Some((seed, _)) = &summary.first_failing {
                let strategy = match summary.strategy {
                    Strategy::Random => String::new(),
                    other => format!(" --strategy {}", other.name()),
                };
                println!("     replay: tdxsim replay {} --seed {seed}{strategy} --table", scenario.path);
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
