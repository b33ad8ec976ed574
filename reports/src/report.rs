//! `tdxsim report DIR`: from a sweep directory (manifest.json, runs.csv), one SVG per plot
//! in `DIR/plots/`, `DIR/report.md`, and `DIR/report.html` with the SVGs inline.
//!
//! Roles of the axes: `report.x` (default `machine.cpus`, else the first numeric axis) runs
//! along x; `report.series` (default `host.dpamt`, else the first other axis) gives a line
//! per value; every other axis makes a panel, one plot per combination of its values. Each
//! point's figure is over its runs that passed: the mean, with an error bar from the
//! smallest to the largest. Every sentence under a plot is computed from these figures.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::ReportError;
use crate::manifest::{Axis, Manifest, Mark, PlotSpec};
use crate::plot::{Curve, Plot, Reference, Stat};
use crate::table::{PASS, RunsTable, format_number};

/// The plots a report has when the sweep file names none.
pub fn default_plots() -> Vec<PlotSpec> {
    let plot = |metric: &str, per: Option<&str>, scale: f64, title: &str| PlotSpec {
        metric: metric.to_string(),
        per: per.map(str::to_string),
        scale,
        title: title.to_string(),
    };
    vec![
        plot("lock_contended", None, 1.0, "contended host lock acquisitions"),
        plot("lock_wait_cycles", None, 1.0, "total host lock wait"),
        plot("lock_wait_p99_cycles", None, 1.0, "p99 host lock wait"),
        plot("seamcall_busy", Some("seamcalls"), 1000.0, "BUSY per 1000 SEAMCALLs"),
        plot("fault_latency_p99_cycles", None, 1.0, "p99 fault latency"),
        plot("sim_cycles", None, 1.0, "simulated time to finish"),
    ]
}

/// The files a report wrote.
#[derive(Debug, Default)]
pub struct Rendered {
    pub files: Vec<PathBuf>,
    /// Plots skipped, and why (their metric is not in runs.csv).
    pub skipped: Vec<String>,
}

/// Renders the report of the sweep in `dir` into `dir`.
pub fn render(dir: &Path) -> Result<Rendered, ReportError> {
    let manifest = Manifest::read(dir)?;
    let runs = RunsTable::read(dir)?;
    let sweep = Sweep::new(&manifest, &runs)
        .map_err(|why| ReportError::Invalid { path: dir.join("runs.csv"), why })?;
    let mut rendered = Rendered::default();
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(|error| ReportError::io(&plots_dir, error))?;
    let mut doc = Doc::default();
    sweep.heading(&mut doc, dir);
    let specs =
        if manifest.report.plots.is_empty() { default_plots() } else { manifest.report.plots.clone() };
    sweep.published(&mut doc, &specs);
    for spec in &specs {
        let missing: Vec<&str> = std::iter::once(spec.metric.as_str())
            .chain(spec.per.as_deref())
            .filter(|c| runs.column(c).is_none())
            .collect();
        if !missing.is_empty() {
            rendered.skipped.push(format!("{}: no column {} in runs.csv", spec.title, missing.join(", ")));
            continue;
        }
        for panel in sweep.panels() {
            let figure = sweep.figure(spec, &panel);
            let file = format!("plots/{}.svg", slug(&format!("{} {}", spec.metric, panel.label)));
            let svg = figure.plot.svg();
            let path = dir.join(&file);
            write(&path, svg.as_bytes())?;
            rendered.files.push(path);
            sweep.section(&mut doc, &figure, &file, &svg);
        }
    }
    if !rendered.skipped.is_empty() {
        doc.heading(2, "Plots left out");
        doc.list(&rendered.skipped);
    }
    for (name, bytes) in [("report.md", doc.md.as_bytes().to_vec()), ("report.html", doc.html().into_bytes())]
    {
        let path = dir.join(name);
        write(&path, &bytes)?;
        rendered.files.push(path);
    }
    Ok(rendered)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|error| ReportError::io(path, error))
}

/// A file-name-safe form of `text`.
fn slug(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_string()
}

/// One combination of the panel axes' values.
#[derive(Clone, Debug)]
struct Panel {
    /// (axis index, value index) per panel axis.
    picks: Vec<(usize, usize)>,
    /// `key = value, ...`, empty when there is one panel.
    label: String,
}

/// A plot's figures, ready to draw and describe.
struct Figure {
    plot: Plot,
    spec: PlotSpec,
    panel: Panel,
    /// Per series, per x: the outcomes of the point's runs (for gaps).
    outcomes: Vec<Vec<BTreeMap<String, usize>>>,
    unit: Unit,
}

/// How a metric's values are shown.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Count,
    Ratio,
    Cycles,
    /// Cycles shown as time: divide cycles by this to get the unit.
    Time {
        cycles_per_unit: f64,
        name: &'static str,
    },
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Ratio => "ratio",
            Unit::Cycles => "cycles",
            Unit::Time { name, .. } => name,
        }
    }

    fn show(self, raw: f64) -> f64 {
        match self {
            Unit::Time { cycles_per_unit, .. } => raw / cycles_per_unit,
            Unit::Count | Unit::Ratio | Unit::Cycles => raw,
        }
    }
}

/// The sweep as the report reads it.
struct Sweep<'m> {
    manifest: &'m Manifest,
    /// Axis index and key index of the x column, and of the series axis.
    x: Option<(usize, usize)>,
    series: Option<usize>,
    panel_axes: Vec<usize>,
    /// Per point index: the rows of its runs.
    rows: BTreeMap<u64, Vec<&'m [String]>>,
    runs: &'m RunsTable,
}

impl<'m> Sweep<'m> {
    fn new(manifest: &'m Manifest, runs: &'m RunsTable) -> Result<Sweep<'m>, String> {
        let find = |column: &str| {
            manifest.axes.iter().enumerate().find_map(|(axis, spec)| {
                spec.keys.iter().position(|key| key == column).map(|key| (axis, key))
            })
        };
        let numeric = |(axis, key): (usize, usize)| {
            manifest.axes[axis].values.iter().all(|value| value[key].parse::<f64>().is_ok())
        };
        let x = match &manifest.report.x {
            Some(column) => {
                let found = find(column).ok_or_else(|| format!("report.x {column:?} is not an axis"))?;
                if !numeric(found) {
                    return Err(format!("report.x {column:?} has values that are not numbers"));
                }
                Some(found)
            }
            None => find("machine.cpus").filter(|&found| numeric(found)).or_else(|| {
                (0..manifest.axes.len()).find_map(|axis| {
                    (0..manifest.axes[axis].keys.len()).map(|key| (axis, key)).find(|&found| numeric(found))
                })
            }),
        };
        let x_axis = x.map(|(axis, _)| axis);
        let series = match &manifest.report.series {
            Some(column) => {
                Some(find(column).ok_or_else(|| format!("report.series {column:?} is not an axis"))?.0)
            }
            None => find("host.dpamt")
                .map(|(axis, _)| axis)
                .filter(|axis| Some(*axis) != x_axis)
                .or_else(|| (0..manifest.axes.len()).find(|axis| Some(*axis) != x_axis)),
        };
        if series.is_some() && series == x_axis {
            return Err("report.x and report.series name the same axis".to_string());
        }
        let panel_axes =
            (0..manifest.axes.len()).filter(|axis| Some(*axis) != x_axis && Some(*axis) != series).collect();
        let point_column = runs.column("point").expect("RunsTable::parse checks it");
        let mut rows: BTreeMap<u64, Vec<&[String]>> = BTreeMap::new();
        for row in &runs.rows {
            let point = row[point_column]
                .parse::<u64>()
                .map_err(|_| format!("point {:?} is not a number", row[point_column]))?;
            rows.entry(point).or_default().push(row);
        }
        Ok(Sweep { manifest, x, series, panel_axes, rows, runs })
    }

    /// The point index of one value per axis (the sweep's grid order: first axis slowest).
    fn point_of(&self, picks: &[usize]) -> u64 {
        picks
            .iter()
            .zip(&self.manifest.axes)
            .fold(0u64, |index, (pick, axis)| index * axis.values.len() as u64 + *pick as u64)
    }

    fn panels(&self) -> Vec<Panel> {
        let mut panels = vec![Panel { picks: Vec::new(), label: String::new() }];
        for &axis in &self.panel_axes {
            let spec = &self.manifest.axes[axis];
            panels = panels
                .into_iter()
                .flat_map(|panel| {
                    (0..spec.values.len()).map(move |value| {
                        let mut picks = panel.picks.clone();
                        picks.push((axis, value));
                        Panel { picks, label: String::new() }
                    })
                })
                .collect();
        }
        for panel in &mut panels {
            panel.label = panel
                .picks
                .iter()
                .map(|&(axis, value)| axis_value_label(&self.manifest.axes[axis], value))
                .collect::<Vec<_>>()
                .join(", ");
        }
        panels
    }

    fn series_names(&self) -> Vec<String> {
        match self.series {
            Some(axis) => (0..self.manifest.axes[axis].values.len())
                .map(|value| self.manifest.axes[axis].values[value].join(" + "))
                .collect(),
            None => vec![self.manifest.base_name.clone()],
        }
    }

    /// (value index, x) of the x axis in increasing x; one unnamed x when there is none.
    fn x_values(&self) -> Vec<(usize, f64)> {
        let Some((axis, key)) = self.x else { return vec![(0, 0.0)] };
        let mut values: Vec<(usize, f64)> = self.manifest.axes[axis]
            .values
            .iter()
            .enumerate()
            .map(|(index, value)| (index, value[key].parse::<f64>().expect("checked numeric")))
            .collect();
        values.sort_by(|a, b| a.1.total_cmp(&b.1));
        values
    }

    /// The x column's key.
    fn x_label(&self) -> String {
        match self.x {
            Some((axis, key)) => self.manifest.axes[axis].keys[key].clone(),
            None => "point".to_string(),
        }
    }

    /// What the x axis is, with its unit.
    fn x_title(&self) -> String {
        let key = self.x_label();
        let unit = if key.ends_with("cpus") {
            "CPUs"
        } else if key.starts_with("module.costs") {
            "cycles"
        } else {
            return key;
        };
        let scale = if self.log2_x() { ", log2 axis" } else { "" };
        format!("{key} ({unit}{scale})")
    }

    fn log2_x(&self) -> bool {
        let values = self.x_values();
        self.x.is_some()
            && values.len() >= 3
            && values.iter().all(|(_, x)| *x >= 1.0 && x.fract() == 0.0 && (*x as u64).is_power_of_two())
    }

    fn unit(&self, spec: &PlotSpec) -> Unit {
        if spec.per.is_some() {
            return Unit::Ratio;
        }
        let family = spec.metric.split('[').next().unwrap_or(&spec.metric);
        if !family.ends_with("_cycles") {
            return Unit::Count;
        }
        Unit::Cycles
    }

    /// One run's value of a plot (metric, or metric / per * scale); `None` when absent.
    fn value(&self, spec: &PlotSpec, row: &[String]) -> Option<f64> {
        let cell = |column: &str| row[self.runs.column(column)?].parse::<f64>().ok();
        let value = cell(&spec.metric)?;
        match &spec.per {
            None => Some(value),
            Some(per) => {
                let per = cell(per)?;
                (per > 0.0).then(|| value / per * spec.scale)
            }
        }
    }

    fn figure(&self, spec: &PlotSpec, panel: &Panel) -> Figure {
        let mut unit = self.unit(spec);
        let mut curves = Vec::new();
        let mut outcomes = Vec::new();
        let series_count = self.series.map_or(1, |axis| self.manifest.axes[axis].values.len());
        for (series_index, series) in self.series_names().into_iter().enumerate().take(series_count) {
            let mut points = Vec::new();
            let mut series_outcomes = Vec::new();
            for (x_index, x) in self.x_values() {
                let (point, counts) = self.point(spec, panel, series_index, x_index);
                points.push((x, point));
                series_outcomes.push(counts);
            }
            curves.push(Curve { series, points });
            outcomes.push(series_outcomes);
        }
        if unit == Unit::Cycles
            && let Some(ghz) = self.manifest.ghz
        {
            let largest = curves
                .iter()
                .flat_map(|c| c.points.iter().filter_map(|(_, s)| s.map(|s| s.max)))
                .fold(0.0, f64::max);
            unit = time_unit(largest, ghz);
        }
        for curve in &mut curves {
            for (_, stat) in &mut curve.points {
                if let Some(stat) = stat {
                    *stat = Stat {
                        mean: unit.show(stat.mean),
                        min: unit.show(stat.min),
                        max: unit.show(stat.max),
                        runs: stat.runs,
                    };
                }
            }
        }
        let references = self
            .marks(spec, panel)
            .map(|mark| Reference { x: mark.x, y: unit.show(mark.y), label: mark.label.clone() })
            .collect();
        let title = if panel.label.is_empty() {
            spec.title.clone()
        } else {
            format!("{} ({})", spec.title, panel.label)
        };
        let y_label =
            format!("{} ({})", spec.title, if spec.per.is_some() { "per run" } else { unit.name() });
        Figure {
            plot: Plot { title, x_label: self.x_title(), y_label, log2_x: self.log2_x(), curves, references },
            spec: spec.clone(),
            panel: panel.clone(),
            outcomes,
            unit,
        }
    }

    /// One point of `spec`'s plot of `panel`: the statistics of the metric over the
    /// passing runs of series `series_index` at x value `x_index` (None when none passed),
    /// and how many of the point's runs had each outcome.
    fn point(
        &self,
        spec: &PlotSpec,
        panel: &Panel,
        series_index: usize,
        x_index: usize,
    ) -> (Option<Stat>, BTreeMap<String, usize>) {
        let outcome_column = self.runs.column("outcome").expect("RunsTable::parse checks it");
        let mut picks = vec![0; self.manifest.axes.len()];
        for &(axis, value) in &panel.picks {
            picks[axis] = value;
        }
        if let Some((axis, _)) = self.x {
            picks[axis] = x_index;
        }
        if let Some(axis) = self.series {
            picks[axis] = series_index;
        }
        let rows = self.rows.get(&self.point_of(&picks)).map_or(&[][..], Vec::as_slice);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut values = Vec::new();
        for row in rows {
            *counts.entry(row[outcome_column].clone()).or_default() += 1;
            if row[outcome_column] == PASS
                && let Some(value) = self.value(spec, row)
            {
                values.push(value);
            }
        }
        (stat(&values), counts)
    }

    /// The marks drawn on `spec`'s plot of `panel`: of its metric, and whose `panel`
    /// conditions the panel meets (a condition on an axis that makes no panels holds).
    fn marks<'a>(&'a self, spec: &'a PlotSpec, panel: &'a Panel) -> impl Iterator<Item = &'a Mark> + 'a {
        self.manifest
            .report
            .marks
            .iter()
            .filter(move |mark| mark.metric == spec.metric && self.mark_on(mark, panel))
    }

    fn mark_on(&self, mark: &Mark, panel: &Panel) -> bool {
        mark.panel.iter().all(|(column, value)| {
            panel.picks.iter().all(|&(axis, pick)| {
                let axis = &self.manifest.axes[axis];
                match axis.keys.iter().position(|key| key == column) {
                    Some(key) => axis.values[pick][key] == *value,
                    None => true,
                }
            })
        })
    }

    /// report.md's list of the published figures the sweep marks, and the plots they are on.
    fn published(&self, doc: &mut Doc, specs: &[PlotSpec]) {
        let marks = &self.manifest.report.marks;
        if marks.is_empty() {
            return;
        }
        doc.heading(2, "Published figures marked");
        let panels = self.panels();
        let items: Vec<String> = marks
            .iter()
            .map(|mark| {
                let plots: Vec<String> = specs
                    .iter()
                    .filter(|spec| spec.metric == mark.metric)
                    .flat_map(|spec| {
                        panels.iter().filter(|panel| self.mark_on(mark, panel)).map(|panel| {
                            if panel.label.is_empty() {
                                spec.title.clone()
                            } else {
                                format!("{} ({})", spec.title, panel.label)
                            }
                        })
                    })
                    .collect();
                let at = mark.x.map_or(String::new(), |x| format!(" at {} = {}", self.x_label(), number(x)));
                let series = mark.series.as_ref().map_or(String::new(), |s| format!(", measured on {s}"));
                let family = mark.metric.split('[').next().unwrap_or(&mark.metric);
                let shown = if family.ends_with("_cycles") {
                    match self.manifest.ghz {
                        Some(ghz) => {
                            let unit = time_unit(mark.y, ghz);
                            format!("{} {}", number(unit.show(mark.y)), unit.name())
                        }
                        None => format!("{} cycles", number(mark.y)),
                    }
                } else {
                    number(mark.y)
                };
                let on =
                    if plots.is_empty() { "no plot of this report".to_string() } else { plots.join("; ") };
                format!("{}: `{}` = {shown}{at}{series}; drawn on: {on}", mark.label, mark.metric)
            })
            .collect();
        doc.list(&items);
    }

    /// The list under "What was swept": base scenario, sweep file, points, seeds, runs
    /// and their outcomes, the tool version and commit, and the partition if only one.
    fn sweep_items(&self) -> Vec<String> {
        let manifest = self.manifest;
        let seeds = match (manifest.seeds.first(), manifest.seeds.last()) {
            (Some(first), Some(last)) => format!(
                "{} seeds per point ({first}..={last}, `{}` strategy)",
                manifest.seeds.len(),
                manifest.strategy
            ),
            _ => "no seeds".to_string(),
        };
        let mut outcome_counts: BTreeMap<&str, usize> = BTreeMap::new();
        let outcome_column = self.runs.column("outcome").expect("checked");
        for row in &self.runs.rows {
            *outcome_counts.entry(&row[outcome_column]).or_default() += 1;
        }
        let outcomes: Vec<String> =
            outcome_counts.iter().map(|(outcome, count)| format!("{outcome} {count}")).collect();
        let mut items = vec![
            format!("Base scenario: `{}` ({})", manifest.base, manifest.base_name),
            format!("Sweep file: `{}`", manifest.sweep_file),
            format!(
                "{} points x {seeds}: {} runs; outcomes: {}",
                manifest.points,
                self.runs.rows.len(),
                outcomes.join(", ")
            ),
            format!(
                "tdxsim {}{}",
                manifest.tool_version,
                manifest.commit.as_ref().map_or(String::new(), |commit| format!(", commit `{commit}`"))
            ),
        ];
        if let Some(partition) = &manifest.partition {
            items.push(format!(
                "Only partition `{partition}` of the sweep (merge the partitions for the whole)"
            ));
        }
        items
    }

    fn heading(&self, doc: &mut Doc, dir: &Path) {
        let manifest = self.manifest;
        doc.heading(1, manifest.report.title.as_deref().unwrap_or(&manifest.name));
        if let Some(about) = &manifest.about {
            doc.paragraph(about);
        }
        doc.heading(2, "What was swept");
        doc.list(&self.sweep_items());
        let rows: Vec<Vec<String>> = manifest
            .axes
            .iter()
            .map(|axis| {
                let values: Vec<String> =
                    (0..axis.values.len()).map(|value| axis.values[value].join(" + ")).collect();
                vec![format!("`{}`", axis.keys.join("` + `")), values.join(", ")]
            })
            .collect();
        doc.table(&["axis".to_string(), "values".to_string()], &rows);
        let roles = format!(
            "Plotted along x: `{}`{}; one line per value of {}; each point is the mean over its passing runs, with an error bar from their minimum to their maximum. A point where no run passed is a gap.",
            self.x_label(),
            if self.log2_x() { " (log2 axis)" } else { "" },
            self.series.map_or_else(
                || "the base scenario".to_string(),
                |axis| format!("`{}`", manifest.axes[axis].keys.join("` + `"))
            )
        );
        doc.paragraph(&roles);
        doc.heading(2, "Regenerate");
        doc.code(&format!(
            "tdxsim sweep {} --out {}\ntdxsim report {}",
            manifest.sweep_file,
            dir.display(),
            dir.display()
        ));
    }

    fn section(&self, doc: &mut Doc, figure: &Figure, file: &str, svg: &str) {
        doc.heading(2, &figure.plot.title);
        doc.image(file, &figure.plot.title, svg);
        doc.paragraph(&self.describe(figure));
        let x_label = self.x_label();
        let mut header = vec![x_label];
        header.extend(figure.plot.curves.iter().map(|curve| curve.series.clone()));
        let unit = match figure.unit {
            Unit::Count => String::new(),
            Unit::Ratio => " (each run's ratio)".to_string(),
            Unit::Cycles | Unit::Time { .. } => format!(", in {}", figure.unit.name()),
        };
        let rows: Vec<Vec<String>> = (0..self.x_values().len())
            .map(|x_index| {
                let mut row =
                    vec![number(figure.plot.curves.first().map_or(0.0, |curve| curve.points[x_index].0))];
                for (series, curve) in figure.plot.curves.iter().enumerate() {
                    row.push(match curve.points[x_index].1 {
                        Some(stat) => {
                            format!("{} ({}–{})", number(stat.mean), number(stat.min), number(stat.max))
                        }
                        None => format!("— ({})", outcome_text(&figure.outcomes[series][x_index])),
                    });
                }
                row
            })
            .collect();
        doc.paragraph(&format!("Mean (min–max) over passing runs{unit}:"));
        doc.table(&header, &rows);
    }

    /// The paragraph under a plot: what the figures show, computed from them.
    fn describe(&self, figure: &Figure) -> String {
        let curves = &figure.plot.curves;
        let x_name = self.x_label();
        let unit = match figure.unit {
            Unit::Count | Unit::Ratio => String::new(),
            Unit::Cycles | Unit::Time { .. } => format!(" {}", figure.unit.name()),
        };
        let show = |value: f64| format!("{}{unit}", number(value));
        let mut sentences = Vec::new();
        let xs: Vec<f64> = self.x_values().iter().map(|(_, x)| *x).collect();
        sentences.extend(highest_x_sentences(curves, &xs, &x_name, &show));
        sentences.extend(trends_sentence(curves, &x_name, &show));
        sentences.extend(crossings_sentence(curves, &xs));
        sentences.extend(gaps_sentence(figure));
        sentences.extend(self.mark_sentences(figure, &x_name, &show));
        sentences.join(" ")
    }

    /// One sentence per mark on the figure: its value and, when it names a series, how
    /// that series compares with it at the nearest x (or the last x) with figures.
    fn mark_sentences(&self, figure: &Figure, x_name: &str, show: &dyn Fn(f64) -> String) -> Vec<String> {
        let curves = &figure.plot.curves;
        let mut sentences = Vec::new();
        for mark in self.marks(&figure.spec, &figure.panel) {
            let y = figure.unit.show(mark.y);
            let compared = mark.series.as_ref().and_then(|series| {
                let curve = curves.iter().find(|curve| curve.series == *series)?;
                let (x, stat) = match mark.x {
                    Some(x) => curve
                        .points
                        .iter()
                        .filter(|(_, s)| s.is_some())
                        .min_by(|a, b| (a.0 - x).abs().total_cmp(&(b.0 - x).abs()))?,
                    None => curve.points.iter().rev().find(|(_, s)| s.is_some())?,
                };
                let stat = stat.expect("filtered");
                Some(format!(
                    "; {series} here is {} at {x_name} = {} ({}x the published figure)",
                    show(stat.mean),
                    number(*x),
                    number(stat.mean / y)
                ))
            });
            sentences.push(format!("Marked: {} = {}{}.", mark.label, show(y), compared.unwrap_or_default()));
        }
        sentences
    }
}

/// At the highest x where any series has figures: which line is lowest and which
/// highest (or the only line's mean), and whether the seeds' spread of the two lowest overlaps.
fn highest_x_sentences(
    curves: &[Curve],
    xs: &[f64],
    x_name: &str,
    show: &dyn Fn(f64) -> String,
) -> Vec<String> {
    let mut sentences = Vec::new();
    // The highest x where at least one series has figures.
    if let Some(last) = (0..xs.len()).rev().find(|&i| curves.iter().any(|c| c.points[i].1.is_some())) {
        let mut at: Vec<(&str, Stat)> =
            curves.iter().filter_map(|c| c.points[last].1.map(|s| (c.series.as_str(), s))).collect();
        at.sort_by(|a, b| a.1.mean.total_cmp(&b.1.mean).then(a.0.cmp(b.0)));
        let here = format!("{x_name} = {}", number(xs[last]));
        match at.as_slice() {
            [] => {}
            [(only, stat)] => sentences.push(format!("At {here}, {only} averages {}.", show(stat.mean))),
            [(low, low_stat), .., (high, high_stat)] => {
                let ratio = if low_stat.mean > 0.0 {
                    format!(", {}x the lowest", number(high_stat.mean / low_stat.mean))
                } else {
                    String::new()
                };
                if low_stat.mean == high_stat.mean {
                    sentences.push(format!("At {here}, every line averages {}.", show(low_stat.mean)));
                } else {
                    sentences.push(format!(
                        "At {here}, {low} is lowest ({}) and {high} highest ({}{ratio}).",
                        show(low_stat.mean),
                        show(high_stat.mean)
                    ));
                }
                let (second, second_stat) = at[1];
                if low_stat.mean != second_stat.mean {
                    let overlap = low_stat.max >= second_stat.min;
                    sentences.push(if overlap {
                        format!("There the seeds' spread of {low} and {second} overlaps, so which of the two is lower depends on the seed.")
                    } else {
                        format!("There {low}'s worst seed is still below {second}'s best.")
                    });
                }
            }
        }
    }
    sentences
}

/// "Along x: ..." with how each series with two or more points moves from its first
/// point to its last, or None when no series has two.
fn trends_sentence(curves: &[Curve], x_name: &str, show: &dyn Fn(f64) -> String) -> Option<String> {
    let mut trends = Vec::new();
    for curve in curves {
        let defined: Vec<(f64, Stat)> = curve.points.iter().filter_map(|(x, s)| s.map(|s| (*x, s))).collect();
        if let ([(x0, first), ..], [.., (x1, last)]) = (defined.as_slice(), defined.as_slice())
            && defined.len() >= 2
        {
            let trend = if first.mean == 0.0 && last.mean == 0.0 {
                "stays at 0".to_string()
            } else if first.mean == 0.0 {
                format!("rises from 0 to {}", show(last.mean))
            } else {
                let ratio = last.mean / first.mean;
                if (0.9..=1.1).contains(&ratio) {
                    format!("stays within 10% ({} to {})", show(first.mean), show(last.mean))
                } else if ratio > 1.0 {
                    format!("rises {}x ({} to {})", number(ratio), show(first.mean), show(last.mean))
                } else {
                    format!("falls to {}x ({} to {})", number(ratio), show(first.mean), show(last.mean))
                }
            };
            trends.push(format!("{} {trend} from {} to {}", curve.series, number(*x0), number(*x1)));
        }
    }
    if trends.is_empty() {
        return None;
    }
    Some(format!("Along {x_name}: {}.", trends.join("; ")))
}

/// Where pairs of lines swap order between neighbouring x values, told apart into
/// crossings clear of the seeds' spread and swaps within it; None for fewer than two lines.
fn crossings_sentence(curves: &[Curve], xs: &[f64]) -> Option<String> {
    // "Clear" when at both x values the two error bars are apart, so the swap is not
    // the seeds' noise.
    let apart = |a: Stat, b: Stat| a.max < b.min || b.max < a.min;
    let mut clear = Vec::new();
    let mut within_spread = 0;
    for (i, a) in curves.iter().enumerate() {
        for b in &curves[i + 1..] {
            let mut previous: Option<(f64, f64, bool)> = None;
            for (index, x) in xs.iter().enumerate() {
                let (Some(sa), Some(sb)) = (a.points[index].1, b.points[index].1) else { continue };
                let difference = sa.mean - sb.mean;
                if difference == 0.0 {
                    continue;
                }
                let separated = apart(sa, sb);
                if let Some((x_before, before, separated_before)) = previous
                    && before.signum() != difference.signum()
                {
                    if separated && separated_before {
                        let (lower_after, lower_before) =
                            if difference < 0.0 { (&a.series, &b.series) } else { (&b.series, &a.series) };
                        clear.push(format!(
                            "{} and {} cross between {} and {} ({lower_before} lower before, {lower_after} after)",
                            a.series,
                            b.series,
                            number(x_before),
                            number(*x)
                        ));
                    } else {
                        within_spread += 1;
                    }
                }
                previous = Some((*x, difference, separated));
            }
        }
    }
    if curves.len() < 2 {
        return None;
    }
    let noise = match within_spread {
        0 => String::new(),
        1 => " (one swap of order is within the seeds' spread)".to_string(),
        count => format!(" ({count} swaps of order are within the seeds' spread)"),
    };
    Some(if clear.is_empty() {
        format!("No two lines cross clear of the seeds' spread{noise}.")
    } else {
        format!("Crossings clear of the seeds' spread: {}{noise}.", clear.join("; "))
    })
}

/// The points where no run passed, with their runs' outcomes, or None when there are none.
fn gaps_sentence(figure: &Figure) -> Option<String> {
    let curves = &figure.plot.curves;
    let mut gaps = Vec::new();
    for (series, curve) in curves.iter().enumerate() {
        for (index, (x, stat)) in curve.points.iter().enumerate() {
            if stat.is_none() {
                gaps.push(format!(
                    "{} at {} ({})",
                    curve.series,
                    number(*x),
                    outcome_text(&figure.outcomes[series][index])
                ));
            }
        }
    }
    if gaps.is_empty() {
        return None;
    }
    Some(format!("No run passed (gaps in the plot): {}.", gaps.join("; ")))
}

fn stat(values: &[f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Stat { mean, min, max, runs: values.len() })
}

/// The time unit that shows `largest_cycles` at `ghz` with a readable number.
fn time_unit(largest_cycles: f64, ghz: f64) -> Unit {
    let ns = largest_cycles / ghz;
    let (name, ns_per_unit) = if ns < 1e3 {
        ("ns", 1.0)
    } else if ns < 1e6 {
        ("us", 1e3)
    } else if ns < 1e9 {
        ("ms", 1e6)
    } else {
        ("s", 1e9)
    };
    Unit::Time { cycles_per_unit: ns_per_unit * ghz, name }
}

/// A figure in text: three significant digits, no exponent.
fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format_number(value);
    }
    let digits = (2 - value.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{value:.digits$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

fn outcome_text(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "not run".to_string();
    }
    counts.iter().map(|(outcome, count)| format!("{outcome} {count}")).collect::<Vec<_>>().join(", ")
}

fn axis_value_label(axis: &Axis, value: usize) -> String {
    axis.keys
        .iter()
        .zip(&axis.values[value])
        .map(|(key, text)| format!("{key} = {text}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// report.md and report.html, written side by side.
#[derive(Default)]
struct Doc {
    md: String,
    body: String,
    title: Option<String>,
}

impl Doc {
    fn heading(&mut self, level: usize, text: &str) {
        if self.title.is_none() {
            self.title = Some(text.to_string());
        }
        let _ = writeln!(self.md, "{} {text}\n", "#".repeat(level));
        let _ = writeln!(self.body, "<h{level}>{}</h{level}>", inline_html(text));
    }

    fn paragraph(&mut self, text: &str) {
        let _ = writeln!(self.md, "{text}\n");
        let _ = writeln!(self.body, "<p>{}</p>", inline_html(text));
    }

    fn list(&mut self, items: &[String]) {
        self.body += "<ul>\n";
        for item in items {
            let _ = writeln!(self.md, "- {item}");
            let _ = writeln!(self.body, "<li>{}</li>", inline_html(item));
        }
        self.md += "\n";
        self.body += "</ul>\n";
    }

    fn code(&mut self, text: &str) {
        let _ = writeln!(self.md, "```sh\n{text}\n```\n");
        let _ = writeln!(self.body, "<pre><code>{}</code></pre>", escape(text));
    }

    fn table(&mut self, header: &[String], rows: &[Vec<String>]) {
        let cell = |text: &str| text.replace('|', "\\|");
        let _ = writeln!(self.md, "| {} |", header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(self.md, "|{}", header.iter().map(|_| "---|").collect::<String>());
        self.body += "<table>\n<tr>";
        for h in header {
            let _ = write!(self.body, "<th>{}</th>", inline_html(h));
        }
        self.body += "</tr>\n";
        for row in rows {
            let _ = writeln!(self.md, "| {} |", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
            self.body += "<tr>";
            for c in row {
                let _ = write!(self.body, "<td>{}</td>", inline_html(c));
            }
            self.body += "</tr>\n";
        }
        self.md += "\n";
        self.body += "</table>\n";
    }

    fn image(&mut self, file: &str, alt: &str, svg: &str) {
        let _ = writeln!(self.md, "![{alt}]({file})\n");
        let svg = svg.trim_start_matches(|c| c != '<');
        let svg = match svg.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or(svg, |(_, after)| after.trim_start()),
            None => svg,
        };
        let _ = writeln!(self.body, "<figure>{svg}</figure>");
    }

    fn html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
             body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.45; }}\n\
             table {{ border-collapse: collapse; margin: 1em 0; }}\n\
             th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }}\n\
             th:first-child, td:first-child {{ text-align: left; }}\n\
             code, pre {{ background: #f3f3f3; }} pre {{ padding: 0.6em; }}\n\
             figure {{ margin: 1em 0; }} figure svg {{ max-width: 100%; height: auto; }}\n\
             </style>\n</head>\n<body>\n{}</body>\n</html>\n",
            escape(self.title.as_deref().unwrap_or("tdxsim report")),
            self.body
        )
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Escaped text with `code` spans.
fn inline_html(text: &str) -> String {
    let mut html = String::new();
    for (index, part) in escape(text).split('`').enumerate() {
        if index % 2 == 1 {
            let _ = write!(html, "<code>{part}</code>");
        } else {
            html += part;
        }
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_three_significant_digits() {
        assert_eq!(number(1136.0), "1136");
        assert_eq!(number(4.567), "4.57");
        assert_eq!(number(0.012345), "0.0123");
        assert_eq!(number(0.0), "0");
        assert_eq!(
            slug("lock_contended[pamt_lock] module.costs = 4"),
            "lock-contended-pamt-lock-module-costs-4"
        );
    }

    #[test]
    fn time_units_follow_the_largest_value() {
        assert_eq!(time_unit(1_500.0, 2.0), Unit::Time { cycles_per_unit: 1.0 * 2.0, name: "ns" });
        assert_eq!(time_unit(8_000_000.0, 2.0), Unit::Time { cycles_per_unit: 1e6 * 2.0, name: "ms" });
    }
}
