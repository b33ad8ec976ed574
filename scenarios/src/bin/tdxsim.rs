//! `tdxsim`: run, check and replay scenario files.
//!
//! Exit codes: 0 when everything expected held, 1 when an expectation failed, 2 when a
//! file or the command line is malformed (nothing ran).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use scenarios::bundle::{self, Bundle};
use scenarios::check::{CheckOptions, CheckSummary, check_with};
use scenarios::run::{RunResult, Schedule, check_determinism, run_once};
use scenarios::schema::{CALLS, METRICS, Scenario, Strategy};
use scenarios::{load_file, table};
use seam_model::Leaf;
use sim_core::{Outcome, OutcomeKind, TraceEvent};
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
        /// Where a run that does not pass writes its repro bundle [default: tdxsim-out].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Run the seed twice more with the trace recorded and compare; exit 1 if they differ.
        #[arg(long)]
        check_determinism: bool,
        /// Schedule with this strategy instead of the file's run.strategy.
        #[arg(long)]
        strategy: Option<StrategyArg>,
        /// Write the run as Chrome trace-event JSON, for ui.perfetto.dev, to this file.
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Explore run.runs seeds of each file and judge its [expect]; exit 1 if any fails.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where a failed file writes its first failing seed's repro bundle [default:
        /// tdxsim-out]; given explicitly, files whose expectation held write theirs too.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Worker threads (default: one per core). Results are the same for any number.
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// Explore with this strategy instead of each file's run.strategy.
        #[arg(long)]
        strategy: Option<StrategyArg>,
    },
    /// Repeat one run exactly: the same outcome and trace hash. FILE --seed N, or a BUNDLE.
    Replay {
        /// A scenario file (with --seed) or a repro bundle.
        file: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        /// Print the run as a `CPU 0 | CPU 1` table.
        #[arg(long)]
        table: bool,
        /// The strategy the run was found with (default: the file's run.strategy).
        #[arg(long)]
        strategy: Option<StrategyArg>,
        /// Write the run as Chrome trace-event JSON, for ui.perfetto.dev, to this file.
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Fuzz designs from scratch (or around FILE): generated scenarios and schedules until a
    /// run fails, then the failure shrunk and written to --out; exit 1 when one is found.
    Fuzz(scenarios::fuzzing::FuzzArgs),
    /// Print a catalogue.
    List { what: Catalogue },
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    Random,
    Pct,
    Exhaustive,
    Coverage,
}

impl From<StrategyArg> for Strategy {
    fn from(arg: StrategyArg) -> Strategy {
        match arg {
            StrategyArg::Random => Strategy::Random,
            StrategyArg::Pct => Strategy::Pct,
            StrategyArg::Exhaustive => Strategy::Exhaustive,
            StrategyArg::Coverage => Strategy::Coverage,
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
        Command::Run { file, seed, table, out, check_determinism, strategy, trace } => {
            let strategy = strategy.map(Into::into);
            let out = Some(out.as_deref().unwrap_or(Path::new(DEFAULT_OUT)));
            let code = run_command(&file, seed, table, out, strategy, trace.as_deref());
            if check_determinism && code != ExitCode::from(2) {
                let determinism = determinism_command(&file, seed, strategy);
                if determinism != ExitCode::SUCCESS {
                    return determinism;
                }
            }
            code
        }
        Command::Replay { file, seed, table, strategy, trace } => {
            replay_command(&file, seed, table, strategy.map(Into::into), trace.as_deref())
        }
        Command::Check { files, out, jobs, strategy } => {
            check_command(&files, out.as_deref(), CheckOptions { jobs, strategy: strategy.map(Into::into) })
        }
        Command::Fuzz(args) => scenarios::fuzzing::fuzz_command(&args),
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

/// Where failing runs write their repro bundles unless `--out` says otherwise.
const DEFAULT_OUT: &str = "tdxsim-out";

/// One run; when `bundle_dir` is given and the run does not pass, its bundle is written
/// before anything is printed.
fn run_command(
    file: &Path,
    seed: Option<u64>,
    show_table: bool,
    bundle_dir: Option<&Path>,
    strategy: Option<Strategy>,
    trace_file: Option<&Path>,
) -> ExitCode {
    let scenario = match load(file) {
        Ok(scenario) => scenario,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or(scenario.run.seed);
    let strategy = strategy.unwrap_or(scenario.run.strategy);
    let record = show_table || trace_file.is_some();
    let result = run_once(&scenario, &Schedule::for_seed(&scenario, Some(strategy), seed), record);
    let bundle_line = bundle_dir
        .filter(|_| result.outcome.kind != OutcomeKind::Pass)
        .and_then(|dir| write_bundle(dir, &scenario, strategy, seed, &result));
    print_run(&scenario, seed, &result);
    if let Some(line) = bundle_line {
        println!("{line}");
    }
    if let Err(code) = show_run(&scenario, &result, show_table, trace_file) {
        return code;
    }
    exit_code_of(&scenario, &result)
}

/// The trace file and the table a run or a replay was asked for.
fn show_run(
    scenario: &Scenario,
    result: &RunResult,
    show_table: bool,
    trace_file: Option<&Path>,
) -> Result<(), ExitCode> {
    if let Some(trace_file) = trace_file {
        write_chrome_trace(trace_file, scenario, result)?;
    }
    if show_table {
        println!();
        print!("{}", table::render(result));
    }
    Ok(())
}

/// 0 when the run passed or ended as the file expects, else 1.
fn exit_code_of(scenario: &Scenario, result: &RunResult) -> ExitCode {
    let expected = scenario.expect.as_ref().map_or(OutcomeKind::Pass, |expect| expect.outcome);
    if result.outcome.kind == OutcomeKind::Pass || result.outcome.kind == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Writes the run as Chrome trace-event JSON (Perfetto opens it).
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

fn check_command(files: &[PathBuf], out: Option<&Path>, options: CheckOptions) -> ExitCode {
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
        let bundle_line = check_bundle(scenario, &summary, out);
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
        if let Some(line) = bundle_line {
            println!("     {line}");
        }
    }
    println!("{} passed, {failed} failed", scenarios.len() - failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// Writes the repro bundle of `result` (a run of `scenario` from `seed`) to `dir`; returns
/// the line that replays it, or says on stderr why it could not be written.
fn write_bundle(
    dir: &Path,
    scenario: &Scenario,
    strategy: Strategy,
    seed: u64,
    result: &RunResult,
) -> Option<String> {
    let written = std::fs::read_to_string(&scenario.path)
        .and_then(|text| bundle::write(dir, &Bundle::new(scenario, &text, strategy, seed, result)));
    match written {
        Ok(path) => Some(format!("replay: tdxsim replay {}", path.display())),
        Err(error) => {
            eprintln!(
                "tdxsim: could not write the repro bundle of {} seed {seed} to {}: {error}",
                scenario.path,
                dir.display()
            );
            None
        }
    }
}

/// `check`'s bundle: the first failing seed, re-run for its decisions, when the file's
/// expectation failed, or whenever `--out` was given.
fn check_bundle(scenario: &Scenario, summary: &CheckSummary, out: Option<&Path>) -> Option<String> {
    let (seed, outcome) = summary.first_failing.as_ref()?;
    if summary.verdict.is_ok() && out.is_none() {
        return None;
    }
    let result = run_once(scenario, &Schedule::for_seed(scenario, Some(summary.strategy), *seed), false);
    if result.outcome != *outcome {
        eprintln!(
            "tdxsim: simulator bug: seed {seed} of {} ran to a different outcome the second time",
            scenario.path
        );
    }
    write_bundle(out.unwrap_or(Path::new(DEFAULT_OUT)), scenario, summary.strategy, *seed, &result)
}

/// `replay FILE --seed N` or `replay BUNDLE` (recognised by its extension or its magic).
fn replay_command(
    file: &Path,
    seed: Option<u64>,
    show_table: bool,
    strategy: Option<Strategy>,
    trace_file: Option<&Path>,
) -> ExitCode {
    match (bundle::looks_like_bundle(file), seed) {
        (true, None) => replay_bundle(file, show_table, trace_file),
        (true, Some(_)) => {
            eprintln!("{}: a bundle replays its own recorded run; drop --seed", file.display());
            ExitCode::from(2)
        }
        (false, Some(seed)) => run_command(file, Some(seed), show_table, None, strategy, trace_file),
        (false, None) => {
            eprintln!("{}: not a bundle; replaying a scenario file needs --seed N", file.display());
            ExitCode::from(2)
        }
    }
}

/// Replays a bundle's decisions on its embedded scenario, prints the run as `run` does, and
/// exits 1 if the trace hash or outcome differ from what the bundle recorded.
fn replay_bundle(path: &Path, show_table: bool, trace_file: Option<&Path>) -> ExitCode {
    let bundle = match bundle::read(path) {
        Ok(bundle) => bundle,
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    if bundle.tool_version != env!("CARGO_PKG_VERSION") {
        eprintln!(
            "note: {} was written by tdxsim {}, this is {}",
            path.display(),
            bundle.tool_version,
            env!("CARGO_PKG_VERSION")
        );
    }
    let (scenario, result) = match bundle.replay(show_table || trace_file.is_some()) {
        Ok(replayed) => replayed,
        Err(error) => {
            eprintln!("{}: the embedded scenario does not load: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    print_run(&scenario, bundle.seed, &result);
    if let Err(code) = show_run(&scenario, &result, show_table, trace_file) {
        return code;
    }
    let mismatches = bundle.mismatches(&result);
    if !mismatches.is_empty() {
        println!("MISMATCH: this replay does not reproduce {}:", path.display());
        for mismatch in &mismatches {
            println!("  {mismatch}");
        }
        return ExitCode::from(1);
    }
    println!("bundle: reproduced (same trace hash and outcome as recorded)");
    exit_code_of(&scenario, &result)
}

/// `run --check-determinism`: the seed twice with the trace recorded; names the first
/// differing event when the trace hashes differ.
fn determinism_command(file: &Path, seed: Option<u64>, strategy: Option<Strategy>) -> ExitCode {
    let scenario = match load(file) {
        Ok(scenario) => scenario,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or(scenario.run.seed);
    let broken = match check_determinism(&scenario, &Schedule::for_seed(&scenario, strategy, seed)) {
        Ok(hash) => {
            println!("determinism: 2 runs, same trace hash {hash:016x}");
            return ExitCode::SUCCESS;
        }
        Err(broken) => broken,
    };
    let [first, second] = broken.trace_hashes;
    println!("determinism: FAILED: 2 runs of seed {seed} gave trace hashes {first:016x} and {second:016x}");
    let event = |event: &Option<TraceEvent>| match event {
        Some(event) => format!("task {} {:?}", event.task.0, event.kind),
        None => "(the trace had ended)".to_string(),
    };
    match &broken.first_difference {
        Some((index, a, b)) => {
            let at = a.as_ref().or(b.as_ref()).expect("a difference has at least one event");
            println!("  first differing event #{index} at cycle {} on CPU {}:", at.cycle.0, at.cpu.0);
            println!("    run 1: {}", event(a));
            println!("    run 2: {}", event(b));
        }
        None => println!(
            "  the recorded events are equal; they differ only in hashed words the trace does not keep"
        ),
    }
    ExitCode::from(1)
}

fn short(outcome: &Outcome) -> String {
    let text = outcome.to_string();
    if text.chars().count() > 100 { text.chars().take(97).collect::<String>() + "..." } else { text }
}

fn list(what: Catalogue) {
    match what {
        Catalogue::Calls => {
            for (name, arguments, runs) in CALLS {
                println!("{name:<24} {arguments:<40} {runs}");
            }
        }
        Catalogue::Designs => {
            for design in host_model::DpamtDesign::ALL {
                let default = if *design == host_model::DpamtDesign::default() { " (default)" } else { "" };
                println!("host.dpamt  = {:<26} {}{default}", design.name(), design.source());
            }
            for design in host_model::tdx::enable::EnableDesign::ALL {
                let default = if *design == Default::default() { " (default)" } else { "" };
                println!("host.enable = {:<26} {}{default}", design.name(), design.source());
            }
            for design in host_model::seamldr::update::UpdateDesign::ALL {
                let default = if *design == Default::default() { " (default)" } else { "" };
                println!("host.update = {:<26} {}{default}", design.name(), design.source());
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
            for (name, says, when) in scenarios::checker::INVARIANTS {
                println!("{name:<32} {says}; checked {when}");
            }
            println!(
                "{:<32} a lock-order inversion over lock instances or classes; checked at every lock attempt",
                "lock-order"
            );
        }
    }
}
