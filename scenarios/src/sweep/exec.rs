//! Running a sweep: the grid's runs on rayon, each finished point appended durably to
//! `DIR/sweep.log`, and `runs.csv`, `points.csv` and `manifest.json` written from the log.
//!
//! - **Same bytes for any `--jobs`**: runs are independent (one seed, one scenario, no
//!   shared state), and the CSV files are made from the set of finished points sorted by
//!   point index (`reports::table`), never from the order they finished in.
//! - **Nothing is lost**: a point is appended to the log (one JSON line, then `fsync`) as
//!   soon as its last seed finishes, after the bundle of its first failing run is written.
//!   Rerunning the same command reads the log, skips finished points, drops a line cut off
//!   by a kill, and ends with the same files as an uninterrupted run. A log written by
//!   another sweep file, base scenario, tdxsim or commit is refused, never mixed in.
//! - **Partitions**: `count:K/N` (cargo-nextest's syntax) runs the points whose index is
//!   K-1 modulo N; `merge` joins partition directories into the bytes of the whole sweep.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use reports::manifest::{MANIFEST_FORMAT, Manifest};
use reports::table::{PointRecord, RunRecord, points_csv, runs_csv};
use serde::{Deserialize, Serialize};
use sim_core::OutcomeKind;

use super::{Sweep, SweepError};
use crate::bundle::{self, Bundle};
use crate::run::{RunResult, Schedule, pct_horizon, run_once};
use crate::schema::{Scenario, Strategy};

/// The log format this version writes and reads.
const LOG_FORMAT: u32 = 1;
const LOG: &str = "sweep.log";
/// Most partitions a sweep may be cut into.
pub const MAX_PARTITIONS: u64 = 10_000;

/// `--partition count:K/N`: the points whose index is K-1 modulo N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// K, 1-based; invariant: 1 <= index <= count <= MAX_PARTITIONS.
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Partition {
    type Err = String;

    fn from_str(text: &str) -> Result<Partition, String> {
        let expected =
            || format!("count:K/N with 1 <= K <= N <= {MAX_PARTITIONS} (cargo-nextest's form), not {text:?}");
        let (index, count) =
            text.strip_prefix("count:").and_then(|rest| rest.split_once('/')).ok_or_else(expected)?;
        let (index, count) =
            (index.parse::<u64>().map_err(|_| expected())?, count.parse::<u64>().map_err(|_| expected())?);
        if index == 0 || index > count || count > MAX_PARTITIONS {
            return Err(expected());
        }
        Ok(Partition { index, count })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "count:{}/{}", self.index, self.count)
    }
}

impl Partition {
    pub fn contains(&self, point: u64) -> bool {
        point % self.count == self.index - 1
    }
}

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub out: PathBuf,
    /// Worker threads (0: one per core). The files are the same for any number.
    pub jobs: usize,
    pub partition: Option<Partition>,
    /// What the manifest records as the commit (`git describe`), if anything.
    pub commit: Option<String>,
}

/// Where a sweep is, for a progress bar.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Points of this run (partition) finished, resumed ones included, and in total.
    pub done: u64,
    pub total: u64,
    /// The point most recently started.
    pub current: String,
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepSummary {
    /// Points of this run (partition), and how many of them a previous run had finished.
    pub points: u64,
    pub resumed: u64,
    /// Runs made now.
    pub runs: u64,
    /// Over every point of this run: runs that did not pass, and points with such a run.
    pub failing_runs: u64,
    pub failing_points: u64,
    /// Points where no run passed: gaps in the plots.
    pub empty_points: u64,
    /// Bundles that could not be written, with why.
    pub bundle_errors: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// The first line of `sweep.log`: which sweep the lines after it belong to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LogHeader {
    tdxsim_sweep_log: u32,
    /// FNV-1a 64 of the sweep file's and the base scenario's text.
    fingerprint: String,
    tool_version: String,
    commit: Option<String>,
    partition: Option<String>,
    points: u64,
    seeds: Vec<u64>,
}

impl LogHeader {
    fn new(sweep: &Sweep, options_partition: Option<Partition>, commit: Option<String>) -> LogHeader {
        let mut hash = Fnv::default();
        hash.write(sweep.text.as_bytes());
        hash.write(b"\n\0\n");
        hash.write(sweep.base_text.as_bytes());
        LogHeader {
            tdxsim_sweep_log: LOG_FORMAT,
            fingerprint: format!("{:016x}", hash.0),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            commit,
            partition: options_partition.map(|partition| partition.to_string()),
            points: sweep.points(),
            seeds: sweep.seeds.clone(),
        }
    }

    /// Why `self` (found in a log) is not `wanted`, in words.
    fn difference(&self, wanted: &LogHeader) -> Option<String> {
        let field = |name: &str, found: String, want: String| {
            (found != want).then(|| format!("it was written with {name} {found}, this is {want}"))
        };
        field("log format", self.tdxsim_sweep_log.to_string(), wanted.tdxsim_sweep_log.to_string())
            .or_else(|| {
                (self.fingerprint != wanted.fingerprint)
                    .then(|| "it is another sweep (the sweep file or its base scenario changed)".to_string())
            })
            .or_else(|| field("tdxsim", self.tool_version.clone(), wanted.tool_version.clone()))
            .or_else(|| field("commit", format!("{:?}", self.commit), format!("{:?}", wanted.commit)))
            .or_else(|| {
                field("partition", format!("{:?}", self.partition), format!("{:?}", wanted.partition))
            })
    }
}

/// FNV-1a 64.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// `git describe --always --dirty` in the current directory, when git and a repository are there.
pub fn git_describe() -> Option<String> {
    let output = std::process::Command::new("git").args(["describe", "--always", "--dirty"]).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<Component> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.iter().collect::<PathBuf>().display().to_string()
}

fn manifest(sweep: &Sweep, partition: Option<Partition>, commit: Option<String>) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        name: sweep.name.clone(),
        about: sweep.about.clone(),
        sweep_file: normalise(Path::new(&sweep.path)),
        base: normalise(Path::new(&sweep.base.path)),
        base_name: sweep.base.name.clone(),
        strategy: sweep.strategy.name().to_string(),
        seeds: sweep.seeds.clone(),
        axes: sweep.manifest_axes(),
        points: sweep.points(),
        ghz: sweep.ghz,
        outcomes: OutcomeKind::ALL.iter().map(|kind| kind.name().to_string()).collect(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        commit,
        partition: partition.map(|partition| partition.to_string()),
        report: sweep.report.clone(),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a reader (or a kill) sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().expect("a file path").to_string_lossy();
    let temporary = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut file = File::create(&temporary).map_err(|error| SweepError::io(&temporary, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| SweepError::io(&temporary, error))?;
    std::fs::rename(&temporary, path).map_err(|error| SweepError::io(path, error))?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename or a new file in `dir` durable (best effort: not every file system can).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// `DIR/sweep.log`, open for appending finished points.
struct Log {
    path: PathBuf,
    file: File,
}

impl Log {
    /// Opens the log of `dir` for `header`, creating it, or reads the points a previous run
    /// finished (dropping a last line cut off by a kill).
    fn open(dir: &Path, header: &LogHeader) -> Result<(Log, BTreeMap<u64, PointRecord>), SweepError> {
        let path = dir.join(LOG);
        if !path.exists() {
            let text = serde_json::to_string(header).expect("a header serialises") + "\n";
            write_atomic(&path, text.as_bytes())?;
            let file =
                OpenOptions::new().append(true).open(&path).map_err(|error| SweepError::io(&path, error))?;
            return Ok((Log { path, file }, BTreeMap::new()));
        }
        let (found, records, good_len) = read_log(&path)?;
        if let Some(why) = found.difference(header) {
            return Err(SweepError::Dir {
                path,
                why: format!(
                    "{why}; resume with the same command, or use another --out (or delete this log) to start over"
                ),
            });
        }
        let file =
            OpenOptions::new().append(true).open(&path).map_err(|error| SweepError::io(&path, error))?;
        let length = file.metadata().map_err(|error| SweepError::io(&path, error))?.len();
        if length != good_len {
            // A kill cut the last line: drop it; that point runs again.
            file.set_len(good_len)
                .and_then(|()| file.sync_all())
                .map_err(|error| SweepError::io(&path, error))?;
        }
        Ok((Log { path, file }, records))
    }

    /// Appends one finished point and waits until it is on disk.
    fn append(&mut self, record: &PointRecord) -> Result<(), SweepError> {
        let line = serde_json::to_string(record).expect("a record serialises") + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|error| SweepError::io(&self.path, error))
    }
}

/// A log's header, its points, and the length of its complete lines (a last line without
/// its newline, or that does not parse, is cut off and not counted).
fn read_log(path: &Path) -> Result<(LogHeader, BTreeMap<u64, PointRecord>, u64), SweepError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|error| SweepError::io(path, error))?;
    let corrupt = |line: usize, why: String| SweepError::Dir {
        path: path.to_path_buf(),
        why: format!("line {line}: {why}; this is not a log tdxsim wrote (delete it to start over)"),
    };
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(end) = bytes[start..].iter().position(|&b| b == b'\n') {
        lines.push((start, start + end + 1));
        start += end + 1;
    }
    let Some(&(header_start, header_end)) = lines.first() else {
        return Err(corrupt(1, "no complete header line".to_string()));
    };
    let header: LogHeader = serde_json::from_slice(&bytes[header_start..header_end])
        .map_err(|error| corrupt(1, format!("not a sweep log header ({error})")))?;
    let mut records = BTreeMap::new();
    let mut good_len = header_end as u64;
    for (number, &(line_start, line_end)) in lines.iter().enumerate().skip(1) {
        match serde_json::from_slice::<PointRecord>(&bytes[line_start..line_end]) {
            Ok(record) => {
                if record.point >= header.points {
                    return Err(corrupt(
                        number + 1,
                        format!("point {} of a {}-point sweep", record.point, header.points),
                    ));
                }
                if records.insert(record.point, record).is_some() {
                    return Err(corrupt(number + 1, "a point finished twice".to_string()));
                }
                good_len = line_end as u64;
            }
            Err(_) if number + 1 == lines.len() => break,
            Err(error) => return Err(corrupt(number + 1, error.to_string())),
        }
    }
    Ok((header, records, good_len))
}

/// One point's runs, until its last seed is in.
struct Pending {
    runs: Vec<Option<RunRecord>>,
    /// Failing runs by seed index, kept for the bundle of the first.
    failures: BTreeMap<usize, RunResult>,
}

/// What a worker sends.
enum Message {
    Started(u64),
    Ran { point: u64, seed_index: usize, record: RunRecord, failed: Option<Box<RunResult>> },
}

/// A point's scenario, derived once and shared by its seeds.
struct Prepared {
    scenario: Scenario,
    pct_horizon: u64,
}

/// Runs the sweep's points (those of `options.partition`) that `options.out` has not
/// finished, then writes the CSV files and the manifest.
pub fn run(
    sweep: &Sweep,
    options: &SweepOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<SweepSummary, SweepError> {
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|error| SweepError::io(out, error))?;
    let manifest = manifest(sweep, options.partition, options.commit.clone());
    write_atomic(&out.join("manifest.json"), manifest.to_json().as_bytes())?;
    let header = LogHeader::new(sweep, options.partition, options.commit.clone());
    let (log, records) = Log::open(out, &header)?;
    let mine: Vec<u64> =
        (0..sweep.points()).filter(|&point| options.partition.is_none_or(|p| p.contains(point))).collect();
    for (point, record) in &records {
        if !mine.contains(point) || record.values != sweep.point_values(*point) {
            return Err(SweepError::Dir {
                path: log.path.clone(),
                why: format!("point {point} does not belong to this sweep"),
            });
        }
    }
    let todo: Vec<(u64, usize)> = mine
        .iter()
        .filter(|point| !records.contains_key(point))
        .flat_map(|&point| (0..sweep.seeds.len()).map(move |seed_index| (point, seed_index)))
        .collect();
    let mut collector = Collector {
        sweep,
        out,
        log,
        summary: SweepSummary {
            points: mine.len() as u64,
            resumed: records.len() as u64,
            ..SweepSummary::default()
        },
        records,
        pending: BTreeMap::new(),
        current: String::new(),
        progress,
    };
    collector.report_progress();
    run_parallel(sweep, options.jobs, &todo, &mut collector)?;
    let Collector { mut summary, records, .. } = collector;
    let all: Vec<PointRecord> = records.into_values().collect();
    let failing = |run: &RunRecord| run.outcome != reports::table::PASS;
    summary.failing_points = all.iter().filter(|point| point.runs.iter().any(failing)).count() as u64;
    summary.failing_runs = all.iter().flat_map(|point| &point.runs).filter(|run| failing(run)).count() as u64;
    summary.empty_points = all.iter().filter(|point| point.runs.iter().all(failing)).count() as u64;
    summary.files = write_outputs(out, &manifest, &all)?;
    Ok(summary)
}

/// Runs `todo` on `jobs` workers that take the next (point, seed) in order, while this
/// thread collects what they send; the first error stops them at their next run.
fn run_parallel(
    sweep: &Sweep,
    jobs: usize,
    todo: &[(u64, usize)],
    collector: &mut Collector,
) -> Result<(), SweepError> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build().expect("a rayon thread pool");
    let workers = pool.current_num_threads().min(todo.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let prepared: Mutex<BTreeMap<u64, Arc<Prepared>>> = Mutex::new(BTreeMap::new());
    let (sender, receiver) = mpsc::channel::<Message>();
    let mut failed = None;
    pool.in_place_scope(|scope| {
        for _ in 0..workers {
            let sender = sender.clone();
            let (next, stop, prepared) = (&next, &stop, &prepared);
            scope.spawn(move |_| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(&(point, seed_index)) = todo.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if seed_index == 0 {
                        let _ = sender.send(Message::Started(point));
                    }
                    let ready = prepare(sweep, prepared, point);
                    if sender.send(run_seed(sweep, &ready, point, seed_index)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for message in receiver {
            if failed.is_some() {
                continue; // Drain: the workers stop at their next run.
            }
            match collector.on_message(message) {
                Ok(Some(finished)) => {
                    prepared.lock().expect("no worker panicked holding it").remove(&finished);
                }
                Ok(None) => {}
                Err(error) => {
                    stop.store(true, Ordering::Relaxed);
                    failed = Some(error);
                }
            }
        }
    });
    failed.map_or(Ok(()), Err)
}

/// The thread that gathers runs into points, writes each finished point and reports progress.
struct Collector<'s> {
    sweep: &'s Sweep,
    out: &'s Path,
    log: Log,
    summary: SweepSummary,
    /// Finished points, resumed ones included.
    records: BTreeMap<u64, PointRecord>,
    pending: BTreeMap<u64, Pending>,
    /// The point most recently started.
    current: String,
    progress: &'s (dyn Fn(&Progress) + Sync),
}

impl Collector<'_> {
    fn report_progress(&self) {
        (self.progress)(&Progress {
            done: self.records.len() as u64,
            total: self.summary.points,
            current: self.current.clone(),
        });
    }

    /// Takes one message; `Some(point)` when it finished that point.
    fn on_message(&mut self, message: Message) -> Result<Option<u64>, SweepError> {
        let (point, seed_index, record, failure) = match message {
            Message::Started(point) => {
                self.current = format!("point {point}: {}", self.sweep.point_label(point));
                self.report_progress();
                return Ok(None);
            }
            Message::Ran { point, seed_index, record, failed } => (point, seed_index, record, failed),
        };
        self.summary.runs += 1;
        let seeds = self.sweep.seeds.len();
        let entry = self
            .pending
            .entry(point)
            .or_insert_with(|| Pending { runs: vec![None; seeds], failures: BTreeMap::new() });
        entry.runs[seed_index] = Some(record);
        if let Some(result) = failure {
            entry.failures.insert(seed_index, *result);
        }
        if entry.runs.iter().any(Option::is_none) {
            return Ok(None);
        }
        let done = self.pending.remove(&point).expect("just seen");
        let record = finish_point(self.sweep, self.out, point, done, &mut self.summary)?;
        self.log.append(&record)?;
        self.records.insert(point, record);
        self.report_progress();
        Ok(Some(point))
    }
}

/// The point's scenario (and PCT horizon), derived by the first seed that needs it.
fn prepare(sweep: &Sweep, prepared: &Mutex<BTreeMap<u64, Arc<Prepared>>>, point: u64) -> Arc<Prepared> {
    if let Some(ready) = prepared.lock().expect("no worker panicked holding it").get(&point) {
        return ready.clone();
    }
    let scenario = sweep.derive(point).expect("Sweep::load derived every point once already");
    let pct_horizon = if sweep.strategy == Strategy::Pct { pct_horizon(&scenario) } else { 0 };
    let ready = Arc::new(Prepared { scenario, pct_horizon });
    prepared.lock().expect("no worker panicked holding it").entry(point).or_insert(ready).clone()
}

fn run_seed(sweep: &Sweep, ready: &Prepared, point: u64, seed_index: usize) -> Message {
    let seed = sweep.seeds[seed_index];
    let scenario = &ready.scenario;
    let schedule = match sweep.strategy {
        Strategy::Pct => Schedule::Pct { seed, depth: scenario.run.pct_depth, horizon: ready.pct_horizon },
        Strategy::Random => Schedule::Random(seed),
        Strategy::Exhaustive | Strategy::Coverage => {
            unreachable!("Sweep::load refuses a base scenario that explores exhaustively or by coverage")
        }
    };
    let result = run_once(scenario, &schedule, false);
    let passed = result.outcome.kind == OutcomeKind::Pass;
    let record = RunRecord {
        seed,
        outcome: result.outcome.kind.name().to_string(),
        finding: if passed { String::new() } else { result.outcome.what.clone() },
        metrics: recorded(sweep, &result.metrics),
    };
    Message::Ran { point, seed_index, record, failed: (!passed).then(|| Box::new(result)) }
}

/// Every metric a run records: the named values, then the sweep file's `record`.
fn recorded(sweep: &Sweep, metrics: &crate::metrics::Metrics) -> Vec<(String, u64)> {
    let mut values = metrics.named_values();
    for name in &sweep.record {
        if !values.iter().any(|(known, _)| known == name) {
            values.push((name.clone(), metrics.get(name).expect("Sweep::load checked the name")));
        }
    }
    values
}

/// A point whose seeds all ran: its first failing run's bundle, then its record.
fn finish_point(
    sweep: &Sweep,
    out: &Path,
    point: u64,
    done: Pending,
    summary: &mut SweepSummary,
) -> Result<PointRecord, SweepError> {
    if let Some((&seed_index, result)) = done.failures.iter().next() {
        let scenario = sweep.derive(point)?;
        let seed = sweep.seeds[seed_index];
        let dir = out.join("bundles").join(format!("point-{point}"));
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            bundle::write(&dir, &Bundle::new(&scenario, &scenario.text, sweep.strategy, seed, result))
        });
        if let Err(error) = written {
            summary.bundle_errors.push(format!("point {point} seed {seed}: {}: {error}", dir.display()));
        }
    }
    let runs = done.runs.into_iter().map(|run| run.expect("every seed ran")).collect();
    Ok(PointRecord { point, values: sweep.point_values(point), runs })
}

/// runs.csv, points.csv and manifest.json of `records`.
fn write_outputs(
    out: &Path,
    manifest: &Manifest,
    records: &[PointRecord],
) -> Result<Vec<PathBuf>, SweepError> {
    let files = [
        ("runs.csv", runs_csv(manifest, records)),
        ("points.csv", points_csv(manifest, records)),
        ("manifest.json", manifest.to_json().into_bytes()),
    ];
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = out.join(name);
        write_atomic(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// What `merge` did.
#[derive(Debug)]
pub struct MergeSummary {
    pub points: u64,
    pub files: Vec<PathBuf>,
}

/// Joins the partitions (or any split) of one sweep in `dirs` into `out`: the same
/// `runs.csv`, `points.csv` and `manifest.json` bytes as the sweep run whole, a log that
/// `tdxsim sweep` can resume from, and every bundle.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<MergeSummary, SweepError> {
    let Some(first) = dirs.first() else {
        return Err(SweepError::Dir { path: out.to_path_buf(), why: "no directory to merge".to_string() });
    };
    for dir in dirs {
        if same_dir(dir, out) {
            return Err(SweepError::Dir {
                path: out.to_path_buf(),
                why: "--out must be a new directory, not one being merged".to_string(),
            });
        }
    }
    let (manifest, header, records) = read_partitions(dirs)?;
    if let Some(missing) = (0..manifest.points).find(|point| !records.contains_key(point)) {
        let count = (0..manifest.points).filter(|point| !records.contains_key(point)).count();
        return Err(SweepError::Dir {
            path: first.clone(),
            why: format!(
                "{count} of {} points are in none of the directories (the first is point {missing}): a partition is missing or did not finish",
                manifest.points
            ),
        });
    }
    std::fs::create_dir_all(out).map_err(|error| SweepError::io(out, error))?;
    let mut log = serde_json::to_string(&header).expect("a header serialises") + "\n";
    for record in records.values() {
        log += &(serde_json::to_string(record).expect("a record serialises") + "\n");
    }
    write_atomic(&out.join(LOG), log.as_bytes())?;
    let all: Vec<PointRecord> = records.into_values().collect();
    let mut files = write_outputs(out, &manifest, &all)?;
    for dir in dirs {
        files.extend(copy_bundles(&dir.join("bundles"), &out.join("bundles"))?);
    }
    Ok(MergeSummary { points: manifest.points, files })
}

/// Reads every directory's manifest, log header and point records (partition marks
/// removed); refuses directories of different sweeps and a point two directories disagree on.
fn read_partitions(
    dirs: &[PathBuf],
) -> Result<(Manifest, LogHeader, BTreeMap<u64, PointRecord>), SweepError> {
    let mut whole: Option<(Manifest, LogHeader, PathBuf)> = None;
    let mut records: BTreeMap<u64, PointRecord> = BTreeMap::new();
    for dir in dirs {
        let mut manifest = Manifest::read(dir)
            .map_err(|error| SweepError::Dir { path: dir.clone(), why: error.to_string() })?;
        let (mut header, found, _) = read_log(&dir.join(LOG))?;
        manifest.partition = None;
        header.partition = None;
        match &whole {
            None => whole = Some((manifest, header, dir.clone())),
            Some((first_manifest, first_header, first_dir)) => {
                if *first_manifest != manifest || *first_header != header {
                    return Err(SweepError::Dir {
                        path: dir.clone(),
                        why: format!(
                            "a different sweep from {} (its manifest or log header differs)",
                            first_dir.display()
                        ),
                    });
                }
            }
        }
        for (point, record) in found {
            match records.get(&point) {
                Some(existing) if *existing != record => {
                    return Err(SweepError::Dir {
                        path: dir.clone(),
                        why: format!("point {point} differs from another directory's"),
                    });
                }
                _ => {
                    records.insert(point, record);
                }
            }
        }
    }
    let (manifest, header, _) = whole.expect("at least one directory");
    Ok((manifest, header, records))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Copies `from/point-N/*.bundle` to `to/point-N/`.
fn copy_bundles(from: &Path, to: &Path) -> Result<Vec<PathBuf>, SweepError> {
    let mut copied = Vec::new();
    let Ok(points) = std::fs::read_dir(from) else { return Ok(copied) };
    let mut points: Vec<PathBuf> = points.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
    points.sort();
    for point in points.into_iter().filter(|path| path.is_dir()) {
        let target = to.join(point.file_name().expect("a directory entry"));
        std::fs::create_dir_all(&target).map_err(|error| SweepError::io(&target, error))?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&point)
            .map_err(|error| SweepError::io(&point, error))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        files.sort();
        for file in
            files.into_iter().filter(|path| path.extension().is_some_and(|ext| ext == bundle::EXTENSION))
        {
            let destination = target.join(file.file_name().expect("a file"));
            std::fs::copy(&file, &destination).map_err(|error| SweepError::io(&destination, error))?;
            copied.push(destination);
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_use_nextest_syntax_and_split_round_robin() {
        let partition: Partition = "count:2/3".parse().unwrap();
        assert_eq!(partition, Partition { index: 2, count: 3 });
        assert_eq!(partition.to_string(), "count:2/3");
        let points: Vec<u64> = (0..8).filter(|&point| partition.contains(point)).collect();
        assert_eq!(points, [1, 4, 7]);
        for bad in ["2/3", "count:0/3", "count:4/3", "count:a/3", "hash:1/2", "count:1/100000"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(normalise(Path::new("scenarios/sweeps/../library/x.toml")), "scenarios/library/x.toml");
        assert_eq!(normalise(Path::new("./a/./b")), "a/b");
        assert_eq!(normalise(Path::new("../a")), "../a");
    }
}
