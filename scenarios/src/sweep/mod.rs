//! `tdxsim sweep`: a grid of scenario variants, each run for a number of seeds, into
//! `runs.csv` and `points.csv` (docs/sweeps.md is the reference).
//!
//! A sweep file names a base scenario and axes over any of its keys:
//!
//! ```toml
//! name = "dpamt: contention against CPUs"
//! base = "../library/dpamt/fault-storm-scripted.toml"   # relative to this file
//! seeds = 4                                             # runs per point
//! [[axis]]
//! key = "host.dpamt"
//! values = ["global-lock-fastpath", "dec-and-lock"]
//! [[axis]]
//! key = ["machine.cpus", "task.len"]                    # set together
//! range = { from = 1, to = 64, factor = 2 }             # 1, 2, 4, ..., 64
//! ```
//!
//! Points are the axes' product, the first axis varying slowest; point `i` of the grid is
//! the same scenario in every partition and every rerun. Each point's scenario is the base
//! file with the point's values written in (`edit`), loaded by the scenario loader, so a
//! value the loader would refuse is refused here, with the sweep file's line and column,
//! before anything runs (`Sweep::load` derives and loads every point).
//!
//! Modules: `edit` (axis keys, writing a value into the base's TOML), `exec` (running the
//! grid on rayon, the durable log, resume, partitions, merge, the output files).

mod edit;
mod exec;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use reports::manifest::{Mark, PlotSpec, ReportSpec};
use toml_edit::{DocumentMut, Item, Table, Value};

pub use edit::{EditError, KeyPath};
pub use exec::{MergeSummary, Partition, Progress, SweepOptions, SweepSummary, git_describe, merge, run};

use crate::error::{ErrorKind, ScenarioError, line_column};
use crate::load_str;
use crate::metrics::MetricName;
use crate::schema::{Scenario, Strategy};
use crate::units::parse_time;

/// Most axes a sweep may have.
pub const MAX_AXES: usize = 16;
/// Most values one axis may have.
pub const MAX_AXIS_VALUES: usize = 4096;
/// Most points a grid may have.
pub const MAX_POINTS: u64 = 20_000;
/// Most seeds per point.
pub const MAX_SEEDS: u64 = 10_000;
/// Most runs a sweep may make (points x seeds).
pub const MAX_RUNS: u64 = 2_000_000;

const TOP_KEYS: &[&str] = &["name", "about", "base", "seeds", "seed", "record", "axis", "report"];
/// Most extra metrics a sweep file may `record`.
pub const MAX_RECORD: usize = 64;
const AXIS_KEYS: &[&str] = &["key", "values", "range"];
const RANGE_KEYS: &[&str] = &["from", "to", "step", "factor"];
const REPORT_KEYS: &[&str] = &["title", "x", "series", "plot", "mark"];
const PLOT_KEYS: &[&str] = &["metric", "title", "per", "scale"];
const MARK_KEYS: &[&str] = &["metric", "series", "x", "y", "label", "panel"];

/// Why a sweep was refused or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The sweep file itself: TOML, keys, values, or a point its values make invalid.
    #[error("{0}")]
    File(Box<ScenarioError>),
    /// The base scenario does not load as it is.
    #[error("{at}: base: the base scenario is refused: {error}")]
    Base { at: String, error: Box<ScenarioError> },
    /// A sweep directory: its log belongs to another sweep, is corrupt, or partitions do not
    /// make a whole sweep.
    #[error("{}: {why}", path.display())]
    Dir { path: PathBuf, why: String },
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
}

impl SweepError {
    fn file(error: ScenarioError) -> SweepError {
        SweepError::File(Box::new(error))
    }

    fn io(path: &Path, error: std::io::Error) -> SweepError {
        SweepError::Io { path: path.to_path_buf(), error }
    }

    /// The CLI's exit status (docs/cli.md): 2 when input was refused before anything ran, 3
    /// when a file could not be written or read.
    pub fn exit_code(&self) -> u8 {
        match self {
            SweepError::File(_) | SweepError::Base { .. } | SweepError::Dir { .. } => 2,
            SweepError::Io { .. } => 3,
        }
    }
}

/// One key an axis sets, with where it is written.
#[derive(Clone, Debug)]
pub struct AxisKey {
    /// As written (the CSV column's name).
    pub text: String,
    pub path: KeyPath,
    span: Range<usize>,
}

/// One value of an axis: what each of its keys gets.
#[derive(Clone, Debug)]
pub struct AxisValue {
    pub per_key: Vec<Value>,
    /// As the CSV files show them (strings without quotes).
    pub texts: Vec<String>,
    span: Range<usize>,
}

/// One `[[axis]]`.
#[derive(Clone, Debug)]
pub struct SweepAxis {
    pub keys: Vec<AxisKey>,
    pub values: Vec<AxisValue>,
}

/// A sweep file, checked: every point's scenario loads.
pub struct Sweep {
    /// The sweep file as named, and its text.
    pub path: String,
    pub text: String,
    pub name: String,
    pub about: Option<String>,
    /// The base scenario, loaded as it is; its path as opened (relative to the sweep file).
    pub base: Scenario,
    pub base_text: String,
    base_document: DocumentMut,
    pub seeds: Vec<u64>,
    pub strategy: Strategy,
    /// `record`: metrics each run records besides every plain, per-class and per-leaf one
    /// (pooled locks, per-instance figures).
    pub record: Vec<String>,
    pub axes: Vec<SweepAxis>,
    pub report: ReportSpec,
    /// `machine.ghz` when every point has the same.
    pub ghz: Option<f64>,
}

impl Sweep {
    /// Reads, checks and derives every point of the sweep file at `path`.
    pub fn load(path: &Path) -> Result<Sweep, SweepError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| SweepError::file(ScenarioError::io(&file, &error)))?;
        Sweep::from_text(&file, &text, path.parent().unwrap_or(Path::new("")))
    }

    /// Checks a sweep file's `text` (named `file` in messages); `base` paths are relative to `dir`.
    pub fn from_text(file: &str, text: &str, dir: &Path) -> Result<Sweep, SweepError> {
        let reader = Reader { file, text };
        let document = toml_edit::Document::parse(text.to_string())
            .map_err(|error| SweepError::file(reader.syntax(&error)))?;
        let top = document.as_table();
        reader.check_keys(top, "", TOP_KEYS)?;
        let name = reader.required_string(top, "", "name")?;
        let about = reader.optional_string(top, "", "about")?;
        let base = reader.base(top, dir)?;
        let base_text = base.text.clone();
        let base_document: DocumentMut = base_text.parse().expect("the loader parsed this text as TOML");
        let seeds = reader.seeds(top, &base)?;
        let record = reader.record(top)?;
        let axes = reader.axes(top)?;
        let report = reader.report(top, &axes, &base)?;
        let mut sweep = Sweep {
            path: file.to_string(),
            text: text.to_string(),
            name,
            about,
            strategy: base.run.strategy,
            base,
            base_text,
            base_document,
            seeds,
            record,
            axes,
            report,
            ghz: None,
        };
        let points = sweep.points();
        let seeds_count = sweep.seeds.len() as u64;
        if points > MAX_POINTS || points.saturating_mul(seeds_count) > MAX_RUNS {
            let span = top.get("axis").map(span_of).unwrap_or(0..0);
            return Err(SweepError::file(reader.error(
                span,
                "axis",
                &format!("at most {MAX_POINTS} points and {MAX_RUNS} runs"),
                format!("{points} points x {seeds_count} seeds"),
            )));
        }
        sweep.ghz = sweep.common_ghz()?;
        Ok(sweep)
    }

    /// Loads every point, on all cores (the grid can be thousands of scenarios), and returns
    /// their `machine.ghz` when all points share it. The error reported is that of the first
    /// point in grid order, whatever the threads did.
    fn common_ghz(&self) -> Result<Option<f64>, SweepError> {
        let clocks: Vec<Result<f64, SweepError>> = (0..self.points())
            .into_par_iter()
            .map(|point| self.derive(point).map(|scenario| scenario.machine.ghz))
            .collect();
        let mut ghz = None;
        for clock in clocks {
            let clock = clock?;
            ghz = match ghz {
                None => Some(Some(clock)),
                Some(Some(same)) if same == clock => Some(Some(same)),
                Some(_) => Some(None),
            };
        }
        Ok(ghz.flatten())
    }

    /// Points in the grid.
    pub fn points(&self) -> u64 {
        self.axes.iter().map(|axis| axis.values.len() as u64).product()
    }

    /// The value index of every axis at `point` (first axis slowest).
    pub fn picks(&self, point: u64) -> Vec<usize> {
        let mut rest = point;
        let mut picks = vec![0; self.axes.len()];
        for (axis, pick) in self.axes.iter().zip(picks.iter_mut()).rev() {
            let count = axis.values.len() as u64;
            *pick = (rest % count) as usize;
            rest /= count;
        }
        picks
    }

    /// Every axis column's value at `point`, as the CSV files show it.
    pub fn point_values(&self, point: u64) -> Vec<String> {
        let picks = self.picks(point);
        self.axes.iter().zip(picks).flat_map(|(axis, pick)| axis.values[pick].texts.clone()).collect()
    }

    /// `key = value, ...` of `point`.
    pub fn point_label(&self, point: u64) -> String {
        let picks = self.picks(point);
        let mut parts = Vec::new();
        for (axis, pick) in self.axes.iter().zip(picks) {
            for (key, value) in axis.keys.iter().zip(&axis.values[pick].per_key) {
                parts.push(format!("{} = {}", key.text, value_text(value, false)));
            }
        }
        parts.join(", ")
    }

    /// The scenario of `point`: the base with the point's values written in, loaded.
    pub fn derive(&self, point: u64) -> Result<Scenario, SweepError> {
        let picks = self.picks(point);
        let mut document = self.base_document.clone();
        let reader = Reader { file: &self.path, text: &self.text };
        for (axis, &pick) in self.axes.iter().zip(&picks) {
            let value = &axis.values[pick];
            for (key, per_key) in axis.keys.iter().zip(&value.per_key) {
                edit::apply(&mut document, &key.path, per_key).map_err(|error| {
                    let (span, why) = match error {
                        EditError::Key(why) => (key.span.clone(), why),
                        EditError::Value(why) => (value.span.clone(), why),
                    };
                    SweepError::file(reader.error(
                        span,
                        &key.text,
                        &format!("a key of the base scenario ({why})"),
                        reader.found(value.span.clone()),
                    ))
                })?;
            }
        }
        let text =
            format!("# tdxsim sweep {}, point {point}: {}\n{document}", self.path, self.point_label(point));
        load_str(&self.base.path, &text).map_err(|error| self.point_error(point, &picks, &error))
    }

    /// A point whose scenario the loader refused: blamed on the value of the axis whose key
    /// the error names (else the last axis), with the loader's reason.
    fn point_error(&self, point: u64, picks: &[usize], error: &ScenarioError) -> SweepError {
        let reader = Reader { file: &self.path, text: &self.text };
        let blamed = self
            .axes
            .iter()
            .enumerate()
            .rev()
            .find(|(_, axis)| {
                axis.keys.iter().any(|key| {
                    let loader_key = key.path.loader_key();
                    error.key == loader_key
                        || error.key.starts_with(&format!("{loader_key}."))
                        || error.key.starts_with(&format!("{loader_key}["))
                })
            })
            .map_or(self.axes.len().saturating_sub(1), |(index, _)| index);
        let Some(axis) = self.axes.get(blamed) else {
            return SweepError::file(reader.error(
                0..0,
                "base",
                "a base scenario that loads",
                error.to_string(),
            ));
        };
        let value = &axis.values[picks[blamed]];
        let unknown_key = error
            .expected
            .starts_with("one of the keys")
            .then(|| axis.keys.iter().find(|key| key.path.loader_key() == error.key))
            .flatten();
        if let Some(key) = unknown_key {
            return SweepError::file(reader.error(
                key.span.clone(),
                &key.text,
                "a key that scenario files have",
                format!(
                    "{} ({}: expected {}, found {})",
                    reader.found(key.span.clone()),
                    error.key,
                    error.expected,
                    error.found
                ),
            ));
        }
        let why = if error.key.is_empty() {
            format!("expected {}, found {}", error.expected, error.found)
        } else {
            format!("{}: expected {}, found {}", error.key, error.expected, error.found)
        };
        let keys: Vec<&str> = axis.keys.iter().map(|key| key.text.as_str()).collect();
        SweepError::file(reader.error(
            value.span.clone(),
            &keys.join(" + "),
            "a value the base scenario accepts",
            format!(
                "{} (point {point}: {}): {why}",
                reader.found(value.span.clone()),
                self.point_label(point)
            ),
        ))
    }

    /// The manifest's description of the axes.
    fn manifest_axes(&self) -> Vec<reports::manifest::Axis> {
        self.axes
            .iter()
            .map(|axis| reports::manifest::Axis {
                keys: axis.keys.iter().map(|key| key.text.clone()).collect(),
                values: axis.values.iter().map(|value| value.texts.clone()).collect(),
            })
            .collect()
    }
}

/// A value as text: a string's contents, or the TOML of anything else.
fn value_text(value: &Value, bare_strings: bool) -> String {
    match value.as_str() {
        Some(text) if bare_strings => text.to_string(),
        _ => {
            let mut value = value.clone();
            value.decor_mut().clear();
            value.to_string().trim().to_string()
        }
    }
}

fn span_of(item: &Item) -> Range<usize> {
    item.span().unwrap_or(0..0)
}

/// Positioned reading of the sweep file.
struct Reader<'t> {
    file: &'t str,
    text: &'t str,
}

impl Reader<'_> {
    /// The `base` key: the base scenario, loaded relative to `dir`; refused when its strategy
    /// is not one that runs seeds.
    fn base(&self, top: &Table, dir: &Path) -> Result<Scenario, SweepError> {
        let base_item = top
            .get("base")
            .ok_or_else(|| self.missing(top, "base", "a path to the base scenario (required)"))?;
        let base_name =
            self.string(base_item, "base", "a path to the base scenario, relative to this file")?;
        let base_path = dir.join(base_name);
        let base_at = self.position(span_of(base_item));
        let base = crate::load_file(&base_path)
            .map_err(|error| SweepError::Base { at: base_at.clone(), error: Box::new(error) })?;
        // Exhaustive and coverage-guided runs follow from the runs before them: not seeds.
        if matches!(base.run.strategy, Strategy::Exhaustive | Strategy::Coverage) {
            return Err(SweepError::file(self.error(
                span_of(base_item),
                "base",
                "a base scenario with run.strategy random or pct (a sweep runs seeds)",
                format!("{} with run.strategy = \"{}\"", base.path, base.run.strategy.name()),
            )));
        }
        Ok(base)
    }

    /// The `seeds` and `seed` keys: the seeds every point runs, `seeds` of them (default 1)
    /// counting up from `seed` (default: the base's `run.seed`).
    fn seeds(&self, top: &Table, base: &Scenario) -> Result<Vec<u64>, SweepError> {
        let seeds_count = match top.get("seeds") {
            Some(item) => self.int(item, "seeds", 1, MAX_SEEDS)?,
            None => 1,
        };
        let first_seed = match top.get("seed") {
            Some(item) => self.int(item, "seed", 0, u64::MAX - MAX_SEEDS)?,
            None => base.run.seed,
        };
        Ok((0..seeds_count).map(|index| first_seed.wrapping_add(index)).collect())
    }

    fn position(&self, span: Range<usize>) -> String {
        let (line, column) = line_column(self.text.as_bytes(), span.start);
        format!("{}:{line}:{column}", self.file)
    }

    fn error(&self, span: Range<usize>, key: &str, expected: &str, found: String) -> ScenarioError {
        let (line, column) = line_column(self.text.as_bytes(), span.start);
        ScenarioError {
            kind: ErrorKind::Invalid,
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            expected: expected.to_string(),
            found,
        }
    }

    fn syntax(&self, error: &toml_edit::TomlError) -> ScenarioError {
        ScenarioError {
            kind: ErrorKind::Syntax,
            expected: "valid TOML".to_string(),
            found: error.message().split_whitespace().collect::<Vec<_>>().join(" "),
            ..self.error(error.span().unwrap_or(0..0), "", "", String::new())
        }
    }

    /// The text at `span`, on one line, cut at 60 characters.
    fn found(&self, span: Range<usize>) -> String {
        let text = self.text.get(span).unwrap_or("");
        let one_line =
            text.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ");
        match one_line.chars().count() {
            0 => "nothing".to_string(),
            1..=60 => one_line,
            _ => one_line.chars().take(60).collect::<String>() + "…",
        }
    }

    fn invalid(&self, item: &Item, key: &str, expected: &str) -> SweepError {
        SweepError::file(self.error(span_of(item), key, expected, self.found(span_of(item))))
    }

    fn missing(&self, table: &Table, name: &str, expected: &str) -> SweepError {
        let span = table.span().unwrap_or(0..0);
        SweepError::file(self.error(span, name, expected, "nothing".to_string()))
    }

    fn check_keys(&self, table: &Table, path: &str, allowed: &[&str]) -> Result<(), SweepError> {
        for (name, _) in table.iter() {
            if !allowed.contains(&name) {
                let key = table.key(name).expect("iterated");
                let span = key.span().unwrap_or(0..0);
                return Err(SweepError::file(self.error(
                    span.clone(),
                    &join(path, name),
                    &format!("one of the keys {}", allowed.join(", ")),
                    self.found(span),
                )));
            }
        }
        Ok(())
    }

    fn string(&self, item: &Item, key: &str, expected: &str) -> Result<String, SweepError> {
        item.as_str().map(str::to_string).ok_or_else(|| self.invalid(item, key, expected))
    }

    fn required_string(&self, table: &Table, path: &str, name: &str) -> Result<String, SweepError> {
        let item =
            table.get(name).ok_or_else(|| self.missing(table, &join(path, name), "a string (required)"))?;
        let text = self.string(item, &join(path, name), "a non-empty string")?;
        if text.trim().is_empty() {
            return Err(self.invalid(item, &join(path, name), "a non-empty string"));
        }
        Ok(text)
    }

    fn optional_string(&self, table: &Table, path: &str, name: &str) -> Result<Option<String>, SweepError> {
        table.get(name).map(|item| self.string(item, &join(path, name), "a string")).transpose()
    }

    fn int(&self, item: &Item, key: &str, min: u64, max: u64) -> Result<u64, SweepError> {
        let expected = format!("an integer {min}..={max}");
        match item.as_integer() {
            Some(value) if value >= 0 && (min..=max).contains(&(value as u64)) => Ok(value as u64),
            _ => Err(self.invalid(item, key, &expected)),
        }
    }

    fn number(&self, item: &Item, key: &str) -> Result<f64, SweepError> {
        item.as_float()
            .or_else(|| item.as_integer().map(|value| value as f64))
            .filter(|value| value.is_finite())
            .ok_or_else(|| self.invalid(item, key, "a number"))
    }

    /// `item` as a table: a `[table]` or an inline `{ ... }`.
    fn table(&self, item: &Item, key: &str) -> Result<Table, SweepError> {
        match item {
            Item::Table(table) => Ok(table.clone()),
            Item::Value(Value::InlineTable(inline)) => Ok(inline.clone().into_table()),
            _ => Err(self.invalid(item, key, "a table")),
        }
    }

    /// `[[name]]` entries (or an inline array of tables).
    fn tables(&self, top: &Table, path: &str, name: &str) -> Result<Vec<(Table, Range<usize>)>, SweepError> {
        let key = join(path, name);
        match top.get(name) {
            None => Ok(Vec::new()),
            Some(Item::ArrayOfTables(array)) => {
                Ok(array.iter().map(|table| (table.clone(), table.span().unwrap_or(0..0))).collect())
            }
            Some(item @ Item::Value(Value::Array(array))) => array
                .iter()
                .map(|value| match value {
                    Value::InlineTable(inline) => {
                        Ok((inline.clone().into_table(), value.span().unwrap_or(span_of(item))))
                    }
                    _ => Err(self.invalid(item, &key, &format!("[[{key}]] tables"))),
                })
                .collect(),
            Some(item) => Err(self.invalid(item, &key, &format!("[[{key}]] tables"))),
        }
    }

    fn axes(&self, top: &Table) -> Result<Vec<SweepAxis>, SweepError> {
        let entries = self.tables(top, "", "axis")?;
        if entries.is_empty() {
            return Err(self.missing(top, "axis", "at least one [[axis]]"));
        }
        if entries.len() > MAX_AXES {
            return Err(SweepError::file(self.error(
                entries[MAX_AXES].1.clone(),
                "axis",
                &format!("at most {MAX_AXES} axes"),
                format!("{} axes", entries.len()),
            )));
        }
        let mut axes: Vec<SweepAxis> = Vec::new();
        for (index, (table, span)) in entries.iter().enumerate() {
            let path = format!("axis[{index}]");
            self.check_keys(table, &path, AXIS_KEYS)?;
            let key_item = table.get("key").ok_or_else(|| {
                SweepError::file(self.error(
                    span.clone(),
                    &join(&path, "key"),
                    "a scenario key or a list of them (required)",
                    "nothing".to_string(),
                ))
            })?;
            let keys = self.axis_keys(key_item, &join(&path, "key"))?;
            for key in &keys {
                let column_taken = axes
                    .iter()
                    .flat_map(|axis| &axis.keys)
                    .any(|other| other.text == key.text || other.path == key.path);
                if column_taken {
                    return Err(SweepError::file(self.error(
                        key.span.clone(),
                        &join(&path, "key"),
                        "a key no other axis sets",
                        self.found(key.span.clone()),
                    )));
                }
            }
            let values = match (table.get("values"), table.get("range")) {
                (Some(values), None) => self.values(values, &join(&path, "values"), keys.len())?,
                (None, Some(range)) => self.range(range, &join(&path, "range"), keys.len())?,
                (Some(values), Some(_)) => {
                    return Err(self.invalid(values, &path, "either values or range, not both"));
                }
                (None, None) => {
                    return Err(SweepError::file(self.error(
                        span.clone(),
                        &path,
                        "values = [...] or range = { from, to, step | factor }",
                        "neither".to_string(),
                    )));
                }
            };
            axes.push(SweepAxis { keys, values });
        }
        Ok(axes)
    }

    fn axis_keys(&self, item: &Item, path: &str) -> Result<Vec<AxisKey>, SweepError> {
        let expected = "a scenario key like \"machine.cpus\", or a list of them set together";
        let one = |value: &Value| -> Result<AxisKey, SweepError> {
            let span = value.span().unwrap_or(span_of(item));
            let text = value.as_str().ok_or_else(|| {
                SweepError::file(self.error(span.clone(), path, expected, self.found(span.clone())))
            })?;
            let key_path = KeyPath::parse(text).map_err(|why| {
                SweepError::file(self.error(
                    span.clone(),
                    path,
                    &format!("a scenario key ({why})"),
                    self.found(span.clone()),
                ))
            })?;
            Ok(AxisKey { text: text.trim().to_string(), path: key_path, span })
        };
        match item.as_value() {
            Some(Value::Array(array)) if !array.is_empty() && array.len() <= MAX_AXES => {
                array.iter().map(one).collect()
            }
            Some(value @ Value::String(_)) => Ok(vec![one(value)?]),
            _ => Err(self.invalid(item, path, expected)),
        }
    }

    /// `values = [...]`: each a value for the one key, or (several keys) a list of one per
    /// key or a single value for all.
    fn values(&self, item: &Item, path: &str, keys: usize) -> Result<Vec<AxisValue>, SweepError> {
        let Some(Value::Array(array)) = item.as_value() else {
            return Err(self.invalid(item, path, "a list of values"));
        };
        if array.is_empty() || array.len() > MAX_AXIS_VALUES {
            return Err(self.invalid(item, path, &format!("a list of 1..={MAX_AXIS_VALUES} values")));
        }
        array
            .iter()
            .map(|value| {
                let span = value.span().unwrap_or(span_of(item));
                let per_key = match value {
                    Value::Array(inner) if keys > 1 => {
                        if inner.len() != keys {
                            return Err(SweepError::file(self.error(
                                span.clone(),
                                path,
                                &format!("a list of {keys} values, one per key"),
                                self.found(span.clone()),
                            )));
                        }
                        inner.iter().cloned().collect()
                    }
                    other => vec![other.clone(); keys],
                };
                Ok(axis_value(per_key, span))
            })
            .collect()
    }

    /// `range = { from, to, step }` (arithmetic) or `{ from, to, factor }` (geometric;
    /// `factor = 2` gives powers of two), `to` included when reached.
    fn range(&self, item: &Item, path: &str, keys: usize) -> Result<Vec<AxisValue>, SweepError> {
        let table = self.table(item, path)?;
        self.check_keys(&table, path, RANGE_KEYS)?;
        let span = span_of(item);
        let get = |name: &str| -> Result<(f64, bool), SweepError> {
            let entry = table.get(name).ok_or_else(|| {
                SweepError::file(self.error(
                    span.clone(),
                    &join(path, name),
                    "a number (required)",
                    "nothing".to_string(),
                ))
            })?;
            Ok((self.number(entry, &join(path, name))?, entry.is_integer()))
        };
        let (from, from_int) = get("from")?;
        let (to, to_int) = get("to")?;
        let bad = |why: &str| SweepError::file(self.error(span.clone(), path, why, self.found(span.clone())));
        if to < from {
            return Err(bad("from <= to"));
        }
        let (numbers, integers) = match (table.get("step"), table.get("factor")) {
            (Some(_), None) => {
                let (step, step_int) = get("step")?;
                if step <= 0.0 {
                    return Err(bad("step > 0"));
                }
                let count = ((to - from) / step + 1e-9).floor() + 1.0;
                if count > MAX_AXIS_VALUES as f64 {
                    return Err(bad(&format!("at most {MAX_AXIS_VALUES} values")));
                }
                (
                    (0..count as usize).map(|index| from + step * index as f64).collect::<Vec<_>>(),
                    from_int && to_int && step_int,
                )
            }
            (None, Some(_)) => {
                let (factor, factor_int) = get("factor")?;
                if factor <= 1.0 || from <= 0.0 {
                    return Err(bad("factor > 1 and from > 0"));
                }
                let mut numbers = vec![from];
                while let Some(next) =
                    numbers.last().map(|last| last * factor).filter(|next| *next <= to * (1.0 + 1e-12))
                {
                    if numbers.len() >= MAX_AXIS_VALUES {
                        return Err(bad(&format!("at most {MAX_AXIS_VALUES} values")));
                    }
                    numbers.push(next);
                }
                (numbers, from_int && to_int && factor_int)
            }
            _ => return Err(bad("exactly one of step or factor")),
        };
        Ok(numbers
            .into_iter()
            .map(|number| {
                let value = if integers { Value::from(number.round() as i64) } else { Value::from(number) };
                axis_value(vec![value; keys], span.clone())
            })
            .collect())
    }

    fn report(&self, top: &Table, axes: &[SweepAxis], base: &Scenario) -> Result<ReportSpec, SweepError> {
        let Some(item) = top.get("report") else { return Ok(ReportSpec::default()) };
        let table = self.table(item, "report")?;
        self.check_keys(&table, "report", REPORT_KEYS)?;
        let columns: Vec<&str> =
            axes.iter().flat_map(|axis| axis.keys.iter().map(|key| key.text.as_str())).collect();
        let column = |name: &str| -> Result<Option<String>, SweepError> {
            let Some(entry) = table.get(name) else { return Ok(None) };
            let text = self.string(entry, &join("report", name), "an axis key of this sweep")?;
            if !columns.contains(&text.as_str()) {
                return Err(self.invalid(
                    entry,
                    &join("report", name),
                    &format!("one of the axis keys {}", columns.join(", ")),
                ));
            }
            Ok(Some(text))
        };
        let mut spec = ReportSpec {
            title: self.optional_string(&table, "report", "title")?,
            x: column("x")?,
            series: column("series")?,
            plots: Vec::new(),
            marks: Vec::new(),
        };
        for (index, (plot, span)) in self.tables(&table, "report", "plot")?.into_iter().enumerate() {
            let path = format!("report.plot[{index}]");
            self.check_keys(&plot, &path, PLOT_KEYS)?;
            let metric = self.metric(&plot, &path, "metric", &span)?.expect("required");
            let per = self.metric_optional(&plot, &path, "per")?;
            let scale = plot
                .get("scale")
                .map(|item| self.number(item, &join(&path, "scale")))
                .transpose()?
                .unwrap_or(1.0);
            let title = self.optional_string(&plot, &path, "title")?.unwrap_or_else(|| metric.clone());
            spec.plots.push(PlotSpec { metric, per, scale, title });
        }
        for (index, (mark, span)) in self.tables(&table, "report", "mark")?.into_iter().enumerate() {
            let path = format!("report.mark[{index}]");
            self.check_keys(&mark, &path, MARK_KEYS)?;
            let metric = self.metric(&mark, &path, "metric", &span)?.expect("required");
            let y_item = mark.get("y").ok_or_else(|| {
                SweepError::file(self.error(
                    span.clone(),
                    &join(&path, "y"),
                    "a number, or a time like \"4ms\" for a *_cycles metric (required)",
                    "nothing".to_string(),
                ))
            })?;
            let y = match y_item.as_str() {
                Some(text) => {
                    parse_time(text, base.clock()).map(|cycles| cycles as f64).ok_or_else(|| {
                        self.invalid(y_item, &join(&path, "y"), "a number, or a time like \"4ms\"")
                    })?
                }
                None => self.number(y_item, &join(&path, "y"))?,
            };
            let x = mark.get("x").map(|item| self.number(item, &join(&path, "x"))).transpose()?;
            let label = self.required_string(&mark, &path, "label")?;
            let series = self.optional_string(&mark, &path, "series")?;
            let panel = match mark.get("panel") {
                None => BTreeMap::new(),
                Some(item) => self.mark_panel(item, &join(&path, "panel"), axes)?,
            };
            spec.marks.push(Mark { metric, series, x, y, label, panel });
        }
        Ok(spec)
    }

    /// `report.mark.panel`: axis key -> one of that axis's values.
    fn mark_panel(
        &self,
        item: &Item,
        path: &str,
        axes: &[SweepAxis],
    ) -> Result<BTreeMap<String, String>, SweepError> {
        let table = self.table(item, path)?;
        let mut panel = BTreeMap::new();
        for (column, entry) in table.iter() {
            let key = join(path, column);
            let Some((axis, index)) = axes.iter().find_map(|axis| {
                axis.keys.iter().position(|key| key.text == column).map(|index| (axis, index))
            }) else {
                let columns: Vec<&str> =
                    axes.iter().flat_map(|axis| axis.keys.iter().map(|key| key.text.as_str())).collect();
                let expected = format!("an axis key of this sweep ({})", columns.join(", "));
                return Err(SweepError::file(self.error(
                    span_of(entry),
                    &key,
                    &expected,
                    format!("{column:?}"),
                )));
            };
            let texts: Vec<&str> = axis.values.iter().map(|value| value.texts[index].as_str()).collect();
            let value = entry.as_value().map(|value| value_text(value, true));
            match value {
                Some(value) if texts.contains(&value.as_str()) => {
                    panel.insert(column.to_string(), value);
                }
                _ => {
                    return Err(self.invalid(
                        entry,
                        &key,
                        &format!("one of the axis's values {}", texts.join(", ")),
                    ));
                }
            }
        }
        Ok(panel)
    }

    fn record(&self, top: &Table) -> Result<Vec<String>, SweepError> {
        let Some(item) = top.get("record") else { return Ok(Vec::new()) };
        let expected =
            "a list of metric names (tdxsim list metrics), like \"lock_contended[pamt_lock,dpamt_lock]\"";
        let Some(Value::Array(array)) = item.as_value() else {
            return Err(self.invalid(item, "record", expected));
        };
        if array.len() > MAX_RECORD {
            return Err(self.invalid(item, "record", &format!("at most {MAX_RECORD} metrics")));
        }
        let mut names = Vec::new();
        for value in array.iter() {
            let span = value.span().unwrap_or(span_of(item));
            match value.as_str() {
                Some(name) if MetricName::parse(name).is_some() => names.push(name.to_string()),
                _ => {
                    return Err(SweepError::file(self.error(
                        span.clone(),
                        "record",
                        expected,
                        self.found(span),
                    )));
                }
            }
        }
        Ok(names)
    }

    fn metric(
        &self,
        table: &Table,
        path: &str,
        name: &str,
        span: &Range<usize>,
    ) -> Result<Option<String>, SweepError> {
        match self.metric_optional(table, path, name)? {
            Some(metric) => Ok(Some(metric)),
            None => Err(SweepError::file(self.error(
                span.clone(),
                &join(path, name),
                "a metric name (required)",
                "nothing".to_string(),
            ))),
        }
    }

    fn metric_optional(&self, table: &Table, path: &str, name: &str) -> Result<Option<String>, SweepError> {
        let Some(item) = table.get(name) else { return Ok(None) };
        let expected =
            "a metric name (tdxsim list metrics), like lock_contended or lock_contended[pamt_lock]";
        let text = self.string(item, &join(path, name), expected)?;
        if MetricName::parse(&text).is_none() {
            return Err(self.invalid(item, &join(path, name), expected));
        }
        Ok(Some(text))
    }
}

fn axis_value(per_key: Vec<Value>, span: Range<usize>) -> AxisValue {
    let texts = per_key.iter().map(|value| value_text(value, true)).collect();
    AxisValue { per_key, texts, span }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}
