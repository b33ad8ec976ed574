//! `tdxsim fuzz`: the fuzz crate's campaign, run through this package's loader and runner,
//! and its shrunk finding written out as a scenario file `tdxsim check` runs, a repro
//! bundle, the replay command and the `CPU 0 | CPU 1` table.
//!
//! Also the fuzz crate's [`Runner`] over `load_str` + `run_once_with` ([`ScenarioRunner`]),
//! which `fuzz/tests/` uses too.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuzz::campaign::{CampaignConfig, CampaignReport, Found, SearchStrategy, run_campaign};
use fuzz::print::{Document, Template, to_toml};
use fuzz::spec::{Designs, MachineLimits, ScenarioSpec};
use fuzz::strategy::{GenConfig, Menu};
use fuzz::{Property, Runner, ShrinkConfig, Shrunk, Verdict};
use host_model::DpamtDesign;
use host_model::seamldr::update::UpdateDesign;
use host_model::tdx::enable::EnableDesign;

use crate::bundle::{self, Bundle};
use crate::check::check;
use crate::load::{load_file, load_str};
use crate::run::{RunResult, Schedule, pct_horizon, run_once, run_once_with};
use crate::schema::{Scenario, Strategy};
use crate::shell::replay_bundle_command;
use crate::table;

/// The engine schedule of a fuzz schedule on `scenario`.
pub fn engine_schedule(scenario: &Scenario, schedule: &fuzz::Schedule) -> Schedule {
    match schedule {
        fuzz::Schedule::Random(seed) => Schedule::Random(*seed),
        fuzz::Schedule::Pct { seed, depth } => {
            Schedule::Pct { seed: *seed, depth: *depth, horizon: pct_horizon(scenario) }
        }
        fuzz::Schedule::Deviations(deviations) => Schedule::Prefix(deviations.to_decisions()),
    }
}

/// One run of `scenario` under a fuzz schedule.
pub fn run_schedule(
    scenario: &Scenario,
    schedule: &fuzz::Schedule,
    record_trace: bool,
    coverage: bool,
) -> RunResult {
    run_once_with(scenario, &engine_schedule(scenario, schedule), record_trace, coverage)
}

/// A run as the fuzz crate sees it.
pub fn verdict_of(result: RunResult) -> Verdict {
    let coverage = result.coverage.unwrap_or_default();
    Verdict {
        outcome: result.outcome,
        decisions: result.decisions,
        decision_options: result.decision_options,
        decision_kinds: coverage.decision_kinds,
        decision_cpus: coverage.decision_cpus,
        near_spans: coverage.near_spans,
        features: coverage.features,
        feature_first_at: coverage.first_at,
        feature_first_cpus: coverage.first_cpus,
        seamcalls: result.metrics.seamcalls,
        pamt_end: result.pamt_end,
        events: result.events,
    }
}

/// The fuzz crate's runner: scenario text through `load_str`, one run through `run_once_with`.
pub struct ScenarioRunner;

/// The path generated scenarios load under (it names them in messages).
pub const GENERATED_PATH: &str = "<generated>";

impl Runner for ScenarioRunner {
    fn run(&self, text: &str, schedule: &fuzz::Schedule, coverage: bool) -> Result<Verdict, String> {
        let scenario = load_str(GENERATED_PATH, text).map_err(|error| error.to_string())?;
        Ok(verdict_of(run_schedule(&scenario, schedule, false, coverage)))
    }
}

/// `--strategy` of `tdxsim fuzz`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FuzzStrategy {
    Random,
    Pct,
    Coverage,
}

/// `tdxsim fuzz`.
#[derive(Clone, Debug, clap::Args)]
pub struct FuzzArgs {
    /// A scenario file to fuzz around: its machine, module and designs are kept, its tasks
    /// generated.
    pub file: Option<PathBuf>,
    /// A design to fuzz, `dpamt=…`, `enable=…` or `update=…` (`tdxsim list designs`);
    /// repeat it for several (every combination is fuzzed, case by case).
    #[arg(long = "design", value_name = "KEY=VALUE")]
    pub designs: Vec<String>,
    /// Stop after this much wall time (`90s`, `10m`) [default: 60s unless --cases is given].
    #[arg(long, value_name = "DURATION")]
    pub time: Option<String>,
    /// Stop after this many cases.
    #[arg(long)]
    pub cases: Option<u64>,
    /// Worker threads (default: one per core). Results are the same for any number.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// How cases are scheduled.
    #[arg(long, value_enum, default_value = "random")]
    pub strategy: FuzzStrategy,
    /// The campaign's seed: the same seed gives the same cases, finding and shrunk result.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the shrunk finding is written [default: tdxsim-out].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Exit statuses of `tdxsim fuzz` (the binary's, docs/cli.md).
pub mod status {
    /// Nothing found.
    pub const NONE_FOUND: u8 = 0;
    /// A finding, shrunk and written.
    pub const FOUND: u8 = 1;
    /// A bad command line or template: nothing ran.
    pub const BAD_INPUT: u8 = 2;
    /// The finding could not be written to `--out`.
    pub const OUTPUT: u8 = 3;
}

/// A bad command line or template.
fn usage(message: String) -> u8 {
    eprintln!("tdxsim fuzz: {message}");
    status::BAD_INPUT
}

/// Parses `90s`, `10m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds > 0.0 && seconds <= 30.0 * 24.0 * 3600.0)
        .then(|| Duration::from_secs_f64(seconds))
}

/// The designs `--design` names, over `base` (the template's, or today's defaults): every
/// combination of the values given per key.
pub fn designs_of(args: &[String], base: Designs) -> Result<Vec<Designs>, String> {
    let mut dpamt: Vec<DpamtDesign> = Vec::new();
    let mut enable: Vec<EnableDesign> = Vec::new();
    let mut update: Vec<UpdateDesign> = Vec::new();
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(format!("--design {arg:?}: expected KEY=VALUE, e.g. dpamt=per-2m-rwlock"));
        };
        let names = |all: Vec<&str>| all.join(", ");
        match key.trim() {
            "dpamt" => dpamt.push(DpamtDesign::from_name(value.trim()).ok_or_else(|| {
                format!(
                    "--design dpamt={value}: not a DPAMT design; one of {}",
                    names(DpamtDesign::ALL.iter().map(|d| d.name()).collect())
                )
            })?),
            "enable" => enable.push(EnableDesign::from_name(value.trim()).ok_or_else(|| {
                format!(
                    "--design enable={value}: not an enable design; one of {}",
                    names(EnableDesign::ALL.iter().map(|d| d.name()).collect())
                )
            })?),
            "update" => update.push(UpdateDesign::from_name(value.trim()).ok_or_else(|| {
                format!(
                    "--design update={value}: not an update design; one of {}",
                    names(UpdateDesign::ALL.iter().map(|d| d.name()).collect())
                )
            })?),
            other => {
                return Err(format!(
                    "--design {arg:?}: unknown key {other:?}; expected dpamt, enable or update"
                ));
            }
        }
    }
    if dpamt.is_empty() {
        dpamt.push(base.dpamt);
    }
    if enable.is_empty() {
        enable.push(base.enable);
    }
    if update.is_empty() {
        update.push(base.update);
    }
    let mut combinations = Vec::new();
    for &dpamt in &dpamt {
        for &enable in &enable {
            for &update in &update {
                let designs = Designs { dpamt, enable, update };
                if !combinations.contains(&designs) {
                    combinations.push(designs);
                }
            }
        }
    }
    Ok(combinations)
}

/// A file-name-safe label of the designs fuzzed.
fn label_of(designs: &[Designs]) -> String {
    let label: Vec<String> = designs.iter().map(|d| d.label()).collect();
    let label = label.join("+").replace("dpamt=", "").replace("enable=", "").replace("update=", "");
    label.replace([' ', '='], "-")
}

/// How a finding's `[expect]` names it, from typed data: the outcome, and for a status
/// finding the status's name.
fn expect_of(shrunk: &Shrunk) -> Vec<RunKey> {
    let mut expect =
        vec![("outcome".to_string(), toml::Value::String(shrunk.violation.outcome.name().to_string()))];
    let status = match shrunk.violation.property {
        Property::NeverRemovesTwice => Some("TDX_NO_PAMT_PAGE_PAIR"),
        Property::NeverMissesPair => Some("TDX_MISSING_PAMT_PAGE_PAIR"),
        _ => None,
    };
    if let Some(status) = status {
        expect.push(("what".to_string(), toml::Value::String(status.to_string())));
    }
    expect
}

/// A `[run]` key and its value, as the printer takes them.
type RunKey = (String, toml::Value);

/// Check runs tried when looking for the `[run]` that makes `tdxsim check` reproduce a
/// finding.
const REPRODUCE_RUNS_MAX: u64 = 2_000;

/// The scenario text (`print` given its `[run]` keys) that `tdxsim check` meets the finding
/// in: the default schedule when the shrunk one is the default (exhaustive's first schedule),
/// else the first of exhaustive, random and PCT that finds it within `REPRODUCE_RUNS_MAX`
/// runs, with `runs` cut down to what it needs. `None`: none does.
fn reproducing_text(shrunk: &Shrunk, print: &dyn Fn(&[RunKey]) -> String) -> Option<String> {
    let int = |value: u64| toml::Value::Integer(value as i64);
    let keys = |strategy: &str, runs: u64, bound: Option<u64>| {
        let mut keys = vec![
            ("strategy".to_string(), toml::Value::String(strategy.to_string())),
            ("runs".to_string(), int(runs)),
        ];
        if let Some(bound) = bound {
            keys.push(("exhaustive_bound".to_string(), int(bound)));
        }
        keys
    };
    let meets = |text: &str| load_str(GENERATED_PATH, text).ok().map(|scenario| check(&scenario));
    let bound = shrunk.schedule.len().max(1) as u64;
    let mut attempts = Vec::new();
    if shrunk.schedule.is_empty() {
        attempts.push(keys("exhaustive", 1, Some(1)));
    }
    attempts.push(keys("exhaustive", REPRODUCE_RUNS_MAX, Some(bound)));
    attempts.push(keys("random", REPRODUCE_RUNS_MAX, None));
    attempts.push(keys("pct", REPRODUCE_RUNS_MAX, None));
    for mut attempt in attempts {
        let text = print(&attempt);
        let Some(summary) = meets(&text).filter(|summary| summary.verdict.is_ok()) else { continue };
        let Some((first, _)) = summary.first_failing else { continue };
        // Fewer runs, so CI checks it quickly: from the first failing run up, doubling.
        let mut runs = first + 1;
        while runs < summary.runs {
            attempt[1].1 = int(runs);
            let trimmed = print(&attempt);
            if meets(&trimmed).is_some_and(|summary| summary.verdict.is_ok()) {
                return Some(trimmed);
            }
            runs *= 2;
        }
        return Some(text);
    }
    None
}

/// What `tdxsim fuzz` wrote for a finding.
pub struct Written {
    pub scenario: PathBuf,
    /// The repro bundle of the run of `scenario` that `tdxsim check` meets first; `None`
    /// when check does not meet the finding (its seed and strategy would not make the run).
    pub bundle: Option<PathBuf>,
    /// The table of that run (of the shrunk run when there is no bundle).
    pub table: String,
}

/// The first run of `scenario`'s own `[run]` that ends as its `[expect]` says: (seed, or
/// schedule number for `exhaustive`; the run, trace recorded).
fn first_expected_run(scenario: &Scenario) -> Option<(u64, RunResult)> {
    let expect = scenario.expect.as_ref()?;
    let wanted = |result: &RunResult| {
        result.outcome.kind == expect.outcome
            && expect.what.as_ref().is_none_or(|what| result.outcome.what.contains(what.as_str()))
    };
    match scenario.run.strategy {
        Strategy::Exhaustive => {
            let enumerator = sim_core::Exhaustive::new(scenario.run.exhaustive_bound);
            let mut prefix = Vec::new();
            for index in 0..scenario.run.runs {
                let result = run_once(scenario, &Schedule::Prefix(prefix.clone()), true);
                if wanted(&result) {
                    return Some((index, result));
                }
                prefix = enumerator.next_prefix(&result.decisions, &result.decision_options)?;
            }
            None
        }
        Strategy::Random | Strategy::Pct | Strategy::Coverage => (0..scenario.run.runs).find_map(|index| {
            let seed = scenario.run.seed.wrapping_add(index);
            let result = run_once(scenario, &Schedule::for_seed(scenario, None, seed), true);
            wanted(&result).then_some((seed, result))
        }),
    }
}

/// Writes the shrunk finding to `dir`: `<stem>.toml` (the shrunk scenario, with the `[run]`
/// under which `tdxsim check` meets it and its `[expect]`), the repro bundle of the run check
/// meets first (named as `check` names bundles), and `<stem>.table.txt`, that run's table.
pub fn write_finding(
    dir: &Path,
    stem: &str,
    shrunk: &Shrunk,
    name: &str,
    about: &str,
    template: Option<&Template>,
) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let expect = expect_of(shrunk);
    let print = |run: &[RunKey]| {
        let document = Document {
            name: name.to_string(),
            about: about.to_string(),
            template,
            run: run.to_vec(),
            expect: expect.clone(),
        };
        to_toml(&shrunk.spec, &document)
    };
    let text = reproducing_text(shrunk, &print).unwrap_or_else(|| print(&[]));
    let path = dir.join(format!("{stem}.toml"));
    std::fs::write(&path, &text)?;
    let scenario = load_str(&path.display().to_string(), &text)
        .map_err(|error| std::io::Error::other(format!("the written scenario does not load: {error}")))?;
    let (bundle, result) = match first_expected_run(&scenario) {
        Some((seed, result)) => {
            let bundle = Bundle::new(&scenario, &text, scenario.run.strategy, seed, &result);
            (Some(bundle::write(dir, &bundle)?), result)
        }
        None => {
            let schedule = fuzz::Schedule::Deviations(shrunk.schedule.clone());
            (None, run_schedule(&scenario, &schedule, true, false))
        }
    };
    let table = table::render(&result);
    std::fs::write(dir.join(format!("{stem}.table.txt")), &table)?;
    Ok(Written { scenario: path, bundle, table })
}

/// A progress line on a terminal; nothing in CI logs or pipes.
fn progress_line() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} {msg}").expect("a valid template"),
    );
    Some(bar)
}

/// The template `tdxsim fuzz FILE` generates around: FILE's machine, module and designs;
/// `Err` is the exit status when FILE is refused.
fn template_of(file: &Path) -> Result<(Template, Designs), u8> {
    let scenario = match load_file(file) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("{error}");
            return Err(status::BAD_INPUT);
        }
    };
    let designs =
        Designs { dpamt: scenario.host.dpamt, enable: scenario.host.enable, update: scenario.host.update };
    let limits = MachineLimits::of_template(
        scenario.machine.cpus,
        scenario.machine.possible_cpus,
        scenario.machine.memory_bytes,
    );
    if limits.ranges_max == 0 {
        return Err(usage(format!(
            "{}: machine.memory leaves no 2MB range to generate pages in",
            file.display()
        )));
    }
    match Template::new(&scenario.path, &scenario.text, limits, designs) {
        Ok(template) => Ok((template, designs)),
        Err(error) => Err(usage(error.to_string())),
    }
}

/// The campaign `args` ask for over `designs`, generating within `template`'s limits when
/// there is one; `Err` is the exit status of a bad `--time`.
fn campaign_config(
    args: &FuzzArgs,
    designs: &[Designs],
    template: Option<&Template>,
) -> Result<CampaignConfig, u8> {
    let time = match (&args.time, args.cases) {
        (Some(text), _) => match parse_duration(text) {
            Some(time) => Some(time),
            None => return Err(usage(format!("--time {text:?}: expected a duration like 60s, 10m or 1h"))),
        },
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(60)),
    };
    let mut generate = GenConfig::new(designs.to_vec());
    generate.menu = Menu::for_designs(designs);
    if let Some(template) = template {
        generate.limits = template.limits.clone();
    }
    let strategy = match args.strategy {
        FuzzStrategy::Random => SearchStrategy::Random,
        FuzzStrategy::Pct => SearchStrategy::Pct,
        FuzzStrategy::Coverage => SearchStrategy::Coverage,
    };
    Ok(CampaignConfig {
        seed: args.seed,
        strategy,
        cases: args.cases,
        time,
        jobs: args.jobs,
        generate,
        property: Property::Passes,
        pct_depth: 3,
        shrink: ShrinkConfig::default(),
    })
}

/// `tdxsim fuzz`: exit 0 when nothing was found, 1 with the shrunk finding, 2 on bad input,
/// 3 when the finding could not be written.
pub fn fuzz_command(args: &FuzzArgs) -> u8 {
    let (template, base) = match &args.file {
        Some(file) => match template_of(file) {
            Ok((template, designs)) => (Some(template), designs),
            Err(status) => return status,
        },
        None => (None, Designs::default()),
    };
    let designs = match designs_of(&args.designs, base) {
        Ok(designs) => designs,
        Err(message) => return usage(message),
    };
    let config = match campaign_config(args, &designs, template.as_ref()) {
        Ok(config) => config,
        Err(status) => return status,
    };
    let strategy = config.strategy;
    let label = label_of(&designs);
    let case_document =
        Document { name: format!("fuzz: {label}"), template: template.as_ref(), ..Document::default() };
    let print = |spec: &ScenarioSpec| to_toml(spec, &case_document);
    println!(
        "fuzz: {} ({} strategy, seed {}){}",
        designs.iter().map(Designs::label).collect::<Vec<_>>().join(", "),
        strategy.name(),
        args.seed,
        template.as_ref().map_or(String::new(), |t| format!(", around {}", t.path))
    );
    let started = Instant::now();
    let bar = progress_line();
    let on_progress = |progress: &fuzz::Progress| {
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "{} cases, {} findings, {} coverage features",
                progress.cases, progress.findings, progress.features
            ));
        }
    };
    let report = match run_campaign(&ScenarioRunner, &print, &config, &on_progress) {
        Ok(report) => report,
        Err(error) => {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            eprintln!("tdxsim fuzz: {error}");
            return status::BAD_INPUT;
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report_campaign(args, &config, &report, &label, template.as_ref(), started.elapsed())
}

/// What `tdxsim fuzz` prints after its campaign, and its exit status: no finding, or the
/// finding and its shrunk form, written to `--out` as a scenario, a bundle and a table.
fn report_campaign(
    args: &FuzzArgs,
    config: &CampaignConfig,
    report: &CampaignReport,
    label: &str,
    template: Option<&Template>,
    elapsed: Duration,
) -> u8 {
    let (Some(found), Some(shrunk)) = (&report.found, &report.shrunk) else {
        println!(
            "no finding in {} cases ({:.1} s{})",
            report.cases,
            elapsed.as_secs_f64(),
            if config.strategy == SearchStrategy::Coverage {
                format!(", {} coverage features", report.features)
            } else {
                String::new()
            }
        );
        return status::NONE_FOUND;
    };
    println!(
        "found at case {} of {} ({:.1} s): {}",
        found.case,
        report.cases,
        elapsed.as_secs_f64(),
        found.verdict.outcome
    );
    println!(
        "shrunk in {} runs: {} (from {}); schedule: {} ({} deviations)",
        shrunk.runs,
        shrunk.spec.size(),
        shrunk.original,
        fuzz::Schedule::Deviations(shrunk.schedule.clone()),
        shrunk.schedule.len()
    );
    println!("shrunk outcome: {}", shrunk.verdict.outcome);
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("tdxsim-out"));
    let stem = format!("fuzz-{label}");
    let name = format!("fuzz: {} ({})", shrunk.violation.outcome, shrunk.spec.size());
    let about = finding_about(config, template, found, shrunk);
    match write_finding(&dir, &stem, shrunk, &name, &about, template) {
        Ok(written) => {
            print_written(&written);
            status::FOUND
        }
        Err(error) => {
            eprintln!("tdxsim fuzz: could not write the finding to {}: {error}", dir.display());
            status::OUTPUT
        }
    }
}

/// The `about` of a finding's scenario file: the command that found it, and how far it shrank.
fn finding_about(
    config: &CampaignConfig,
    template: Option<&Template>,
    found: &Found,
    shrunk: &Shrunk,
) -> String {
    format!(
        "Found by `tdxsim fuzz --design {}{} --strategy {} --seed {}` at case {}, then shrunk from {} in {} runs.",
        config
            .generate
            .designs
            .iter()
            .map(|d| d.label().replace(' ', " --design "))
            .collect::<Vec<_>>()
            .join(" --design "),
        template.map_or(String::new(), |t| format!(" {}", t.path)),
        config.strategy.name(),
        config.seed,
        found.case,
        shrunk.original,
        shrunk.runs
    )
}

/// Where a written finding went, the command that replays its bundle, and its table.
fn print_written(written: &Written) {
    match &written.bundle {
        Some(bundle) => {
            println!("scenario: {} (tdxsim check meets the finding)", written.scenario.display());
            println!("replay: {} --table", replay_bundle_command(bundle));
        }
        None => println!(
            "scenario: {} (tdxsim check does not meet it within {REPRODUCE_RUNS_MAX} runs of any \
             strategy; the table is of the shrunk schedule)",
            written.scenario.display()
        ),
    }
    println!();
    print!("{}", written.table);
}
