//! `tdxsim`: run, check and replay scenario files.
//!
//! Exit codes ([`EXIT_CODES`], also in every `--help` and in docs/cli.md): 0 when everything
//! expected held, 1 when an expectation failed, 2 when a file or the command line is
//! malformed (nothing ran), 3 when an output (a repro bundle, a trace, a JUnit file, standard
//! output itself) could not be written.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// mimalloc: exploration builds and drops a small world per run, tens of allocations each,
/// and glibc's allocator was a sixth of a litmus run's time. Allocation never affects
/// what a run does, so results and trace hashes are the same under any allocator.
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use scenarios::bundle::{self, Bundle};
use scenarios::check::{CheckOptions, check_with};
use scenarios::error::printable;
use scenarios::report::{self, FileReport, FirstFailing};
use scenarios::run::{RunResult, Schedule, check_determinism, run_once};
use scenarios::schema::{CALLS, METRICS, Scenario, Strategy};
use scenarios::shell::{replay_bundle_command, replay_seed_command};
use scenarios::{files, keys, load_file, table};
use seam_model::Leaf;
use sim_core::{OutcomeKind, TraceEvent};

const EXIT_CODES: &str = "\
Exit codes:
  0  everything expected held
  1  an expectation failed, a replay did not reproduce, or a determinism check failed
  2  bad input: a malformed scenario file, an unreadable or damaged bundle, a bad command
     line; nothing ran
  3  an output could not be written: a repro bundle, --trace, --junit, or standard output
     (printed after the result; a closed pipe ends quietly with 3)
When more than one applies, the larger code is the exit status.
The scenario format, the outcomes and these codes: docs/scenarios.md and docs/cli.md.";

/// The exit codes of [`EXIT_CODES`].
mod code {
    pub const FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const OUTPUT: u8 = 3;
}

#[derive(Parser)]
#[command(
    name = "tdxsim",
    version,
    about = "Deterministic simulator of the TDX module and the Linux host algorithms around it",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario once and print its outcome, trace hash and counts.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The scenario file (docs/scenarios.md).
        file: PathBuf,
        /// The run's seed (default: the file's run.seed); for --strategy exhaustive, the
        /// number of the schedule in the enumeration.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the run as a `CPU 0 | CPU 1` table.
        #[arg(long)]
        table: bool,
        /// Where a run that does not pass writes its repro bundle [default: tdxsim-out].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Columns the --table may take; long cells wrap inside their column [default: the
        /// terminal's width, or 100 when not a terminal].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(40..))]
        width: Option<u16>,
        /// Run the seed twice more with the trace recorded and compare; exit 1 if they differ.
        #[arg(long)]
        check_determinism: bool,
        /// Schedule with this strategy instead of the file's run.strategy.
        #[arg(long)]
        strategy: Option<StrategyArg>,
        /// Write the run as Chrome trace-event JSON, for ui.perfetto.dev, to this file.
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
        /// Also print lockstat / `perf lock contention` figures per lock class and instance
        /// (sorted by total wait), BUSY returns by leaf and operand, and fault latency.
        #[arg(long)]
        lock_stat: bool,
    },
    /// Explore run.runs seeds of each file and judge its [expect]; exit 1 if any fails.
    #[command(after_help = EXIT_CODES)]
    Check {
        /// Scenario files, or directories to search for *.toml files (in sorted order).
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
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
        /// `human`: result lines; `json`: one JSON object per line, per file then a summary
        /// (keys: docs/cli.md).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Also write the results as JUnit XML to this file: one test case per scenario file.
        #[arg(long, value_name = "FILE.xml")]
        junit: Option<PathBuf>,
        /// Add runs per second to each result line (they change from run to run, so CI logs
        /// leave them out by default).
        #[arg(long)]
        timing: bool,
    },
    /// Repeat one run exactly: the same outcome and trace hash. FILE --seed N, or a BUNDLE.
    #[command(after_help = EXIT_CODES)]
    Replay {
        /// A scenario file (with --seed) or a repro bundle (`.bundle`, or a file starting with
        /// the bundle magic).
        file: PathBuf,
        /// The seed to replay a scenario file from (required with a scenario file; a bundle
        /// has its own); for --strategy exhaustive, the number of the schedule.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the run as a `CPU 0 | CPU 1` table.
        #[arg(long)]
        table: bool,
        /// The strategy the run was found with (default: the file's run.strategy).
        #[arg(long)]
        strategy: Option<StrategyArg>,
        /// Columns the --table may take; long cells wrap inside their column [default: the
        /// terminal's width, or 100 when not a terminal].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(40..))]
        width: Option<u16>,
        /// Write the run as Chrome trace-event JSON, for ui.perfetto.dev, to this file.
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
        /// Also print lock statistics, as `run --lock-stat` does.
        #[arg(long)]
        lock_stat: bool,
    },
    /// Fuzz designs from scratch (or around FILE): generated scenarios and schedules until a
    /// run fails, then the failure shrunk and written to --out; exit 1 when one is found.
    #[command(after_help = EXIT_CODES)]
    Fuzz(scenarios::fuzzing::FuzzArgs),
    /// Print a catalogue: the calls steps can make, the designs, leaves, outcomes, metrics,
    /// invariants, or every key a scenario file may have.
    #[command(after_help = EXIT_CODES)]
    List {
        /// Which catalogue.
        what: Catalogue,
    },
    /// Print a shell completion script.
    #[command(after_help = EXIT_CODES)]
    Completions {
        /// The shell: bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(after_help = EXIT_CODES)]
    Man {
        /// Write tdxsim.1 and tdxsim-<command>.1 into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Run a sweep file's grid (docs/sweeps.md) into runs.csv and points.csv; or merge partitions.
    #[command(after_help = EXIT_CODES)]
    Sweep(sweep_cli::SweepArgs),
    /// Render a sweep directory's plots (SVG), report.md and report.html (docs/sweeps.md).
    #[command(after_help = EXIT_CODES)]
    Report {
        /// A directory `tdxsim sweep` wrote.
        dir: PathBuf,
    },
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Catalogue {
    Calls,
    Designs,
    Leaves,
    Outcomes,
    Metrics,
    Invariants,
    Keys,
}

/// Prints a line on standard output; a write that fails ends the process (see [`output_failed`]).
macro_rules! out {
    () => { emit(format_args!("\n")) };
    ($($arg:tt)*) => { emit(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Prints a line on standard error; a closed or full stderr is not worth dying over.
macro_rules! err {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn emit(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text) {
        output_failed(&error);
    }
}

/// Standard output is gone: a closed pipe (`| head -1`) ends quietly, anything else (a full
/// disk) says so; both exit 3. Bundles are written before anything is printed, so nothing
/// a failing run owes is lost.
fn output_failed(error: &std::io::Error) -> ! {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        err!("tdxsim: cannot write to standard output: {error}");
    }
    std::process::exit(i32::from(code::OUTPUT))
}

// After the macros, which it uses.
#[path = "tdxsim/allocator.rs"]
mod allocator;
#[path = "tdxsim/sweep_cli.rs"]
mod sweep_cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run { file, seed, table, width, out, check_determinism, strategy, trace, lock_stat } => {
            let strategy = strategy.map(Into::into);
            let out = out.as_deref().unwrap_or(Path::new(DEFAULT_OUT));
            let show =
                Show { table: table.then(|| table_width(width)), trace_file: trace.as_deref(), lock_stat };
            let status = run_command(&file, seed, show, Some(out), strategy);
            if check_determinism && status != code::BAD_INPUT {
                status.max(determinism_command(&file, seed, strategy))
            } else {
                status
            }
        }
        Command::Replay { file, seed, table, strategy, width, trace, lock_stat } => {
            let show =
                Show { table: table.then(|| table_width(width)), trace_file: trace.as_deref(), lock_stat };
            replay_command(&file, seed, show, strategy.map(Into::into))
        }
        Command::Check { paths, out, jobs, strategy, format, junit, timing } => {
            let options = CheckOptions { jobs, strategy: strategy.map(Into::into) };
            check_command(&paths, out.as_deref(), options, format, junit.as_deref(), timing)
        }
        Command::Fuzz(args) => scenarios::fuzzing::fuzz_command(&args),
        Command::List { what } => {
            list(what);
            0
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tdxsim", &mut script);
            emit(format_args!("{}", String::from_utf8_lossy(&script)));
            0
        }
        Command::Man { out } => man(out.as_deref()),
        Command::Sweep(args) => sweep_cli::sweep(args),
        Command::Report { dir } => sweep_cli::report(&dir),
    };
    if let Err(error) = std::io::stdout().flush() {
        output_failed(&error);
    }
    ExitCode::from(status)
}

/// `--width`, else the terminal's width, else [`table::DEFAULT_WIDTH`].
fn table_width(width: Option<u16>) -> usize {
    if let Some(width) = width {
        return usize::from(width);
    }
    let terminal = console::Term::stdout();
    match terminal.size_checked() {
        Some((_, columns)) if terminal.is_term() => usize::from(columns).max(40),
        _ => table::DEFAULT_WIDTH,
    }
}

fn man(out: Option<&Path>) -> u8 {
    let command = Cli::command();
    if let Some(dir) = out {
        return match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir)) {
            Ok(()) => {
                out!("man pages: {}", printable(&dir.display().to_string()));
                0
            }
            Err(error) => {
                err!("{}: cannot write the man pages: {error}", printable(&dir.display().to_string()));
                code::OUTPUT
            }
        };
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page).expect("rendering into memory");
    emit(format_args!("{}", String::from_utf8_lossy(&page)));
    0
}

fn load(file: &Path) -> Result<Scenario, u8> {
    load_file(file).map_err(|error| {
        err!("{error}");
        code::BAD_INPUT
    })
}

/// Where failing runs write their repro bundles unless `--out` says otherwise.
const DEFAULT_OUT: &str = "tdxsim-out";

/// One run; when `bundle_dir` is given and the run does not pass, its bundle is written
/// before anything is printed.
/// What to show of a run besides its summary.
#[derive(Clone, Copy)]
struct Show<'a> {
    /// The table's width, if a table is wanted.
    table: Option<usize>,
    trace_file: Option<&'a Path>,
    lock_stat: bool,
}

fn run_command(
    file: &Path,
    seed: Option<u64>,
    show: Show,
    bundle_dir: Option<&Path>,
    strategy: Option<Strategy>,
) -> u8 {
    let scenario = match load(file) {
        Ok(scenario) => scenario,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or(scenario.run.seed);
    let strategy = strategy.unwrap_or(scenario.run.strategy);
    let record = show.table.is_some() || show.trace_file.is_some();
    let result = run_once(&scenario, &Schedule::for_seed(&scenario, Some(strategy), seed), record);
    let bundle = bundle_dir
        .filter(|_| result.outcome.kind != OutcomeKind::Pass)
        .map(|dir| write_bundle(dir, &scenario, strategy, seed, &result));
    let replay = replay_seed_command(&scenario.path, seed, strategy, false);
    print_run(&scenario, seed, &result, Some(&replay));
    let mut status = exit_code_of(&scenario, &result);
    match bundle {
        Some(Ok(path)) => out!("replay: {}", replay_bundle_command(&path)),
        Some(Err(why)) => {
            err!("tdxsim: {why}");
            status = status.max(code::OUTPUT);
        }
        None => {}
    }
    status.max(show_run(&scenario, &result, show))
}

/// The trace file, lock statistics and table a run or a replay was asked for: 0, or 3 if the trace
/// could not be written.
fn show_run(scenario: &Scenario, result: &RunResult, show: Show) -> u8 {
    let mut status = 0;
    if let Some(trace_file) = show.trace_file {
        status = write_chrome_trace(trace_file, scenario, result);
    }
    if show.lock_stat {
        out!();
        emit(format_args!("{}", scenarios::lockstat::render(&result.metrics, scenario.clock())));
    }
    if let Some(width) = show.table {
        out!();
        let options = table::TableOptions { width, pages: Some(&scenario.pages) };
        emit(format_args!("{}", table::render_with(result, &options)));
    }
    status
}

/// 0 when the run passed or ended as the file expects, else 1.
fn exit_code_of(scenario: &Scenario, result: &RunResult) -> u8 {
    let expected = scenario.expect.as_ref().map_or(OutcomeKind::Pass, |expect| expect.outcome);
    if result.outcome.kind == OutcomeKind::Pass || result.outcome.kind == expected { 0 } else { code::FAILED }
}

/// Writes the run as Chrome trace-event JSON (Perfetto opens it).
fn write_chrome_trace(trace_file: &Path, scenario: &Scenario, result: &RunResult) -> u8 {
    let json = scenarios::perfetto::chrome_trace(result, scenario);
    let text = serde_json::to_string(&json).expect("trace JSON serialises");
    let shown = printable(&trace_file.display().to_string()).into_owned();
    match std::fs::write(trace_file, text) {
        Ok(()) => {
            out!("trace: {shown} (open in ui.perfetto.dev)");
            0
        }
        Err(error) => {
            err!("{shown}: cannot write the trace: {error}");
            code::OUTPUT
        }
    }
}

/// What `run` and `replay` print about a run; `replay` is the line that repeats it.
fn print_run(scenario: &Scenario, seed: u64, result: &RunResult, replay: Option<&str>) {
    let clock = scenario.clock();
    out!("scenario: {} ({})", printable(&scenario.name), printable(&scenario.path));
    out!("seed {seed}: {}", printable(&result.outcome.to_string()));
    out!(
        "trace hash: {:016x}  end: cycle {} ({:.1} us)  events: {}  decisions: {}",
        result.trace_hash,
        result.end.0,
        clock.cycles_to_ns(result.end.0) / 1000.0,
        result.events,
        result.decisions_made
    );
    out!("SEAMCALLs:");
    for ((leaf, status), count) in &result.metrics.seamcalls {
        out!("  {:<24} {:<32} {count}", leaf.name(), status.name());
    }
    out!(
        "locks: {} acquisitions, {} contended, {} wait cycles",
        result.metrics.locks.acquisitions,
        result.metrics.locks.contended,
        result.metrics.locks.wait_cycles
    );
    for (name, _, stats) in result.resources.iter() {
        if stats.acquisitions > 0 || stats.contended > 0 {
            out!(
                "  {:<24} {} acquisitions, {} contended, {} wait cycles",
                printable(name),
                stats.acquisitions,
                stats.contended,
                stats.wait_cycles
            );
        }
    }
    if result.outcome.kind != OutcomeKind::Pass
        && let Some(replay) = replay
    {
        out!("replay: {replay}");
    }
}

/// A progress bar on a terminal, naming the file and the time left; nothing in CI logs or pipes.
fn progress_bar(scenario: &Scenario) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(scenario.run.runs);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {elapsed_precise} [{bar:30}] {pos}/{len} runs, {per_sec}, eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(printable(&scenario.path).into_owned());
    Some(bar)
}

/// `check`: loads every scenario file under `paths`, checks each against its expectation and
/// prints its report, then the summary; 0 when every file holds, else the worst exit code.
fn check_command(
    paths: &[PathBuf],
    out: Option<&Path>,
    options: CheckOptions,
    format: Format,
    junit: Option<&Path>,
    timing: bool,
) -> u8 {
    let scenarios = match load_scenarios(paths, format) {
        Ok(scenarios) => scenarios,
        Err(status) => return status,
    };
    let mut status = 0;
    let mut reports = Vec::new();
    for scenario in &scenarios {
        let (report, rate) = check_file(scenario, out, options, timing);
        match format {
            Format::Human => {
                for line in report.human_lines(rate) {
                    out!("{line}");
                }
            }
            Format::Json => out!("{}", report.json()),
        }
        if let Some(Err(why)) = &report.bundle {
            err!("tdxsim: {why}");
            status = status.max(code::OUTPUT);
        }
        if report.verdict.is_err() {
            status = status.max(code::FAILED);
        }
        reports.push(report);
    }
    if let Some(junit) = junit {
        let shown = printable(&junit.display().to_string()).into_owned();
        if let Err(error) = std::fs::write(junit, report::junit(&reports)) {
            err!("{shown}: cannot write the JUnit report: {error}");
            status = status.max(code::OUTPUT);
        }
    }
    let failed = reports.iter().filter(|report| report.verdict.is_err()).count();
    match format {
        Format::Human => out!("{} passed, {failed} failed", reports.len() - failed),
        Format::Json => out!("{}", report::summary_json(&reports, status)),
    }
    status
}

/// The scenario files under `paths`, every one loaded: a malformed file fails the command
/// (exit 2, its error printed) before any run.
fn load_scenarios(paths: &[PathBuf], format: Format) -> Result<Vec<Scenario>, u8> {
    let files = match files::scenario_files(paths) {
        Ok(files) if files.is_empty() => {
            err!("tdxsim check: no scenario files (*.toml) in the paths given");
            return Err(code::BAD_INPUT);
        }
        Ok(files) => files,
        Err(error) => {
            err!("tdxsim check: cannot search the paths given: {error}");
            return Err(code::BAD_INPUT);
        }
    };
    let mut scenarios = Vec::new();
    for file in &files {
        match load_file(file) {
            Ok(scenario) => scenarios.push(scenario),
            Err(error) => {
                err!("{error}");
                if format == Format::Json {
                    out!("{}", report::load_error_json(&error));
                }
                return Err(code::BAD_INPUT);
            }
        }
    }
    Ok(scenarios)
}

/// Checks one scenario, runs its first failing seed again for the trace hash, and writes that
/// run's bundle when the check failed or `--out` was given; returns the file's report and, with
/// `timing`, its runs per second.
fn check_file(
    scenario: &Scenario,
    out: Option<&Path>,
    options: CheckOptions,
    timing: bool,
) -> (FileReport, Option<f64>) {
    let started = Instant::now();
    let bar = progress_bar(scenario);
    let summary = check_with(scenario, options, &|| {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    // The first failing run again, for its trace hash and its bundle.
    let first = summary.first_failing.as_ref().map(|(seed, outcome)| {
        let schedule = Schedule::for_seed(scenario, Some(summary.strategy), *seed);
        let result = run_once(scenario, &schedule, false);
        if result.outcome != *outcome {
            err!(
                "tdxsim: simulator bug: seed {seed} of {} ran to a different outcome the second time",
                printable(&scenario.path)
            );
        }
        (*seed, result)
    });
    let bundle =
        first.as_ref().filter(|_| summary.verdict.is_err() || out.is_some()).map(|(seed, result)| {
            write_bundle(out.unwrap_or(Path::new(DEFAULT_OUT)), scenario, summary.strategy, *seed, result)
        });
    let first_failing = first.map(|(seed, result)| FirstFailing {
        seed,
        outcome: result.outcome,
        trace_hash: result.trace_hash,
    });
    let rate = timing.then(|| summary.runs as f64 / seconds.max(1e-9));
    (FileReport::new(scenario, &summary, first_failing, bundle), rate)
}

/// Writes the repro bundle of `result` (a run of `scenario` from `seed`) to `dir`; returns
/// its path, or why it could not be written.
fn write_bundle(
    dir: &Path,
    scenario: &Scenario,
    strategy: Strategy,
    seed: u64,
    result: &RunResult,
) -> Result<PathBuf, String> {
    // The bundle embeds the text the run was loaded from, not whatever the file holds now.
    bundle::write(dir, &Bundle::new(scenario, &scenario.text, strategy, seed, result)).map_err(|error| {
        format!(
            "could not write the repro bundle of {} seed {seed} to {}: {error}",
            printable(&scenario.path),
            printable(&dir.display().to_string())
        )
    })
}

/// `replay FILE --seed N` or `replay BUNDLE` (recognised by its extension or its magic).
fn replay_command(file: &Path, seed: Option<u64>, show: Show, strategy: Option<Strategy>) -> u8 {
    let shown = printable(&file.display().to_string()).into_owned();
    match (bundle::looks_like_bundle(file), seed) {
        (true, None) => replay_bundle(file, show),
        (true, Some(_)) => {
            err!("{shown}: a bundle replays its own recorded run; drop --seed");
            code::BAD_INPUT
        }
        (false, Some(seed)) => run_command(file, Some(seed), show, None, strategy),
        (false, None) => {
            err!("{shown}: not a bundle; replaying a scenario file needs --seed N");
            code::BAD_INPUT
        }
    }
}

/// Replays a bundle's decisions on its embedded scenario, prints the run as `run` does, and
/// exits 1 if anything the bundle records (trace hash, outcome, its seed and strategy's
/// decisions, every decision used) is not what the replay gives.
fn replay_bundle(path: &Path, show: Show) -> u8 {
    let shown = printable(&path.display().to_string()).into_owned();
    let bundle = match bundle::read(path) {
        Ok(bundle) => bundle,
        Err(error) => {
            err!("{shown}: {error}");
            return code::BAD_INPUT;
        }
    };
    let this_version = env!("CARGO_PKG_VERSION");
    if bundle.tool_version != this_version {
        // First, so that a mismatch below is read knowing it.
        out!(
            "note: {shown} was written by tdxsim {}, this is tdxsim {this_version}; a mismatch may come from the change of version",
            printable(&bundle.tool_version)
        );
    }
    let (scenario, result) = match bundle.replay(show.table.is_some() || show.trace_file.is_some()) {
        Ok(replayed) => replayed,
        Err(error) => {
            err!("{shown}: the embedded scenario does not load: {error}");
            return code::BAD_INPUT;
        }
    };
    print_run(&scenario, bundle.seed, &result, Some(&replay_bundle_command(path)));
    let status = show_run(&scenario, &result, show);
    let mut mismatches = bundle.mismatches(&result);
    mismatches.extend(bundle.seed_mismatches(&scenario));
    if !mismatches.is_empty() {
        out!("MISMATCH: this replay does not reproduce {shown}:");
        for mismatch in &mismatches {
            out!("  {}", printable(mismatch));
        }
        return status.max(code::FAILED);
    }
    out!(
        "bundle: reproduced (same trace hash, outcome and decisions as recorded, from its seed and strategy)"
    );
    status.max(exit_code_of(&scenario, &result))
}

/// `run --check-determinism`: the seed twice with the trace recorded; names the first
/// differing event when the trace hashes differ.
fn determinism_command(file: &Path, seed: Option<u64>, strategy: Option<Strategy>) -> u8 {
    let scenario = match load(file) {
        Ok(scenario) => scenario,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or(scenario.run.seed);
    let broken = match check_determinism(&scenario, &Schedule::for_seed(&scenario, strategy, seed)) {
        Ok(hash) => {
            out!("determinism: 2 runs, same trace hash {hash:016x}");
            return 0;
        }
        Err(broken) => broken,
    };
    let [first, second] = broken.trace_hashes;
    out!("determinism: FAILED: 2 runs of seed {seed} gave trace hashes {first:016x} and {second:016x}");
    let event = |event: &Option<TraceEvent>| match event {
        Some(event) => format!("task {} {:?}", event.task.0, event.kind),
        None => "(the trace had ended)".to_string(),
    };
    match &broken.first_difference {
        Some((index, a, b)) => {
            let at = a.as_ref().or(b.as_ref()).expect("a difference has at least one event");
            out!("  first differing event #{index} at cycle {} on CPU {}:", at.cycle.0, at.cpu.0);
            out!("    run 1: {}", printable(&event(a)));
            out!("    run 2: {}", printable(&event(b)));
        }
        None => {
            out!("  the recorded events are equal; they differ only in hashed words the trace does not keep")
        }
    }
    code::FAILED
}

/// `list WHAT`: prints one of the catalogues a scenario writer picks names from.
fn list(what: Catalogue) {
    match what {
        Catalogue::Calls => {
            for (name, arguments, runs) in CALLS {
                out!("{name:<24} {arguments:<40} {runs}");
            }
        }
        Catalogue::Designs => list_designs(),
        Catalogue::Leaves => list_leaves(),
        Catalogue::Outcomes => {
            for kind in OutcomeKind::ALL {
                out!("{kind}");
            }
        }
        Catalogue::Metrics => {
            for (name, meaning) in METRICS {
                out!("{name:<32} {meaning} (bound with {name}_max / {name}_min)");
            }
        }
        Catalogue::Invariants => {
            for (name, says, when) in scenarios::checker::INVARIANTS {
                out!("{name:<32} {says}; checked {when}");
            }
            out!(
                "{:<32} a lock-order inversion over lock instances or classes; checked at every lock attempt",
                "lock-order"
            );
        }
        Catalogue::Keys => list_keys(),
    }
}

/// `list designs`: every design enum's variants, the default marked, with the source each models.
fn list_designs() {
    for design in host_model::DpamtDesign::ALL {
        let default = if *design == host_model::DpamtDesign::default() { " (default)" } else { "" };
        out!("host.dpamt  = {:<26} {}{default}", design.name(), design.source());
    }
    for design in host_model::tdx::enable::EnableDesign::ALL {
        let default = if *design == Default::default() { " (default)" } else { "" };
        out!("host.enable = {:<26} {}{default}", design.name(), design.source());
    }
    for design in host_model::seamldr::update::UpdateDesign::ALL {
        let default = if *design == Default::default() { " (default)" } else { "" };
        out!("host.update = {:<26} {}{default}", design.name(), design.source());
    }
    for design in host_model::SeptBusyDesign::ALL {
        let default = if *design == Default::default() { " (default)" } else { "" };
        out!("host.sept_busy = {:<23} {}{default}", design.name(), design.source());
    }
}

/// `list leaves`: every SEAMCALL leaf with its RAX, default cost and whether it is modelled.
fn list_leaves() {
    for leaf in Leaf::ALL {
        let modelled = if leaf.is_modelled() { "modelled" } else { "-" };
        out!(
            "{:#018x} {:<24} {:>10} cycles  {modelled}",
            leaf.rax(),
            leaf.name(),
            leaf.default_cost_cycles()
        );
    }
}

/// `list keys`: every scenario key, with its maximum where the key has one.
fn list_keys() {
    let limits = keys::limits();
    let mut line = String::new();
    for key in keys::all() {
        line.clear();
        let _ = write!(line, "{key}");
        if let Some((_, maximum)) = limits.iter().find(|(limited, _)| *limited == key) {
            let _ =
                write!(line, "{:width$}  at most {maximum}", "", width = 40usize.saturating_sub(key.len()));
        }
        out!("{line}");
    }
}
