//! The sweep's results: one `PointRecord` per finished point, and the two CSV files made
//! from them, `runs.csv` (a row per run) and `points.csv` (a row per point, statistics over
//! its passing runs).
//!
//! Both files are a pure function of the manifest and the set of records, so they are the
//! same bytes whatever order points finished in, however many threads ran them, and
//! whether they ran in one sweep, several partitions merged, or a killed sweep resumed.
//!
//! Columns: `point`, one per axis key, then (runs.csv) `seed`, `outcome`, `finding`, or
//! (points.csv) `runs` and a count per outcome; then the metrics. A metric column set is the
//! union over all runs: plain names first, in the order runs list them, then qualified names
//! (`lock_contended[pamt_lock]`) sorted. A run without a metric (a lock its design never
//! takes) has an empty cell, not 0. points.csv has `<metric>.mean`, `.p50`, `.p95`, `.min`,
//! `.max` over the point's runs that passed (nearest-rank percentiles); a point with no
//! passing run, or whose passing runs lack the metric, has empty cells: a gap in a plot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ReportError;
use crate::manifest::Manifest;

/// The outcome of a run that passed.
pub const PASS: &str = "pass";

/// One run of a point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub seed: u64,
    /// The outcome's name (`pass`, `deadlock`, ...).
    pub outcome: String,
    /// What the outcome says beyond its name (empty for a pass).
    pub finding: String,
    /// (metric, value), each name once.
    pub metrics: Vec<(String, u64)>,
}

/// A finished point: its index in the grid, its axis values, and its runs in seed order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointRecord {
    pub point: u64,
    /// One text per axis column (`Manifest::axis_columns`).
    pub values: Vec<String>,
    pub runs: Vec<RunRecord>,
}

/// Statistics of one metric over a point's passing runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub mean: f64,
    pub p50: u64,
    pub p95: u64,
    pub min: u64,
    pub max: u64,
}

impl Summary {
    /// `None` for no values.
    pub fn of(values: &[u64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let total: u128 = sorted.iter().map(|&value| u128::from(value)).sum();
        let rank = |quantile: f64| {
            let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        Some(Summary {
            runs: sorted.len(),
            mean: total as f64 / sorted.len() as f64,
            p50: rank(0.5),
            p95: rank(0.95),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// A number as the CSV files print it: integral values without a fraction, others with at
/// most three decimals.
pub fn format_number(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        format!("{}", rounded as i64)
    } else {
        let text = format!("{rounded:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Metric columns over all runs (see the module doc for the order).
pub fn metric_columns(points: &[PointRecord]) -> Vec<String> {
    let mut plain: Vec<String> = Vec::new();
    let mut seen_plain = BTreeSet::new();
    let mut qualified = BTreeSet::new();
    for run in sorted_points(points).into_iter().flat_map(|point| &point.runs) {
        for (name, _) in &run.metrics {
            if name.contains('[') {
                qualified.insert(name.clone());
            } else if seen_plain.insert(name.clone()) {
                plain.push(name.clone());
            }
        }
    }
    plain.extend(qualified);
    plain
}

fn sorted_points(points: &[PointRecord]) -> Vec<&PointRecord> {
    let mut sorted: Vec<&PointRecord> = points.iter().collect();
    sorted.sort_by_key(|point| point.point);
    sorted
}

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new())
}

fn finish(writer: csv::Writer<Vec<u8>>) -> Vec<u8> {
    writer.into_inner().expect("writing to memory cannot fail")
}

/// `runs.csv`.
pub fn runs_csv(manifest: &Manifest, points: &[PointRecord]) -> Vec<u8> {
    let metrics = metric_columns(points);
    let mut out = writer();
    let mut header: Vec<&str> = vec!["point"];
    header.extend(manifest.axis_columns());
    header.extend(["seed", "outcome", "finding"]);
    header.extend(metrics.iter().map(String::as_str));
    out.write_record(&header).expect("in memory");
    for point in sorted_points(points) {
        for run in &point.runs {
            let values: BTreeMap<&str, u64> =
                run.metrics.iter().map(|(name, value)| (name.as_str(), *value)).collect();
            let mut row = vec![point.point.to_string()];
            row.extend(point.values.iter().cloned());
            row.extend([run.seed.to_string(), run.outcome.clone(), run.finding.clone()]);
            row.extend(
                metrics.iter().map(|name| values.get(name.as_str()).map_or_else(String::new, u64::to_string)),
            );
            out.write_record(&row).expect("in memory");
        }
    }
    finish(out)
}

/// The statistics columns of one metric in points.csv.
pub const STATISTICS: &[&str] = &["mean", "p50", "p95", "min", "max"];

/// `points.csv`.
pub fn points_csv(manifest: &Manifest, points: &[PointRecord]) -> Vec<u8> {
    let metrics = metric_columns(points);
    let mut out = writer();
    let mut header: Vec<String> = vec!["point".to_string()];
    header.extend(manifest.axis_columns().into_iter().map(str::to_string));
    header.push("runs".to_string());
    header.extend(manifest.outcomes.iter().cloned());
    for name in &metrics {
        header.extend(STATISTICS.iter().map(|statistic| format!("{name}.{statistic}")));
    }
    out.write_record(&header).expect("in memory");
    for point in sorted_points(points) {
        let mut row = vec![point.point.to_string()];
        row.extend(point.values.iter().cloned());
        row.push(point.runs.len().to_string());
        for outcome in &manifest.outcomes {
            row.push(point.runs.iter().filter(|run| run.outcome == *outcome).count().to_string());
        }
        for name in &metrics {
            let values: Vec<u64> = point
                .runs
                .iter()
                .filter(|run| run.outcome == PASS)
                .filter_map(|run| {
                    run.metrics.iter().find(|(metric, _)| metric == name).map(|(_, value)| *value)
                })
                .collect();
            match Summary::of(&values) {
                Some(summary) => row.extend([
                    format_number(summary.mean),
                    summary.p50.to_string(),
                    summary.p95.to_string(),
                    summary.min.to_string(),
                    summary.max.to_string(),
                ]),
                None => row.extend(STATISTICS.iter().map(|_| String::new())),
            }
        }
        out.write_record(&row).expect("in memory");
    }
    finish(out)
}

/// runs.csv as read back: a row per run, cells by column name.
#[derive(Clone, Debug)]
pub struct RunsTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl RunsTable {
    /// Reads `dir/runs.csv`.
    pub fn read(dir: &Path) -> Result<RunsTable, ReportError> {
        let path = dir.join("runs.csv");
        let bytes = std::fs::read(&path).map_err(|error| ReportError::io(&path, error))?;
        RunsTable::parse(&bytes).map_err(|why| ReportError::Invalid { path, why })
    }

    /// Parses runs.csv text.
    pub fn parse(bytes: &[u8]) -> Result<RunsTable, String> {
        let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
        let columns: Vec<String> =
            reader.headers().map_err(|error| error.to_string())?.iter().map(str::to_string).collect();
        for required in ["point", "seed", "outcome"] {
            if !columns.iter().any(|column| column == required) {
                return Err(format!("no `{required}` column"));
            }
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|error| error.to_string())?;
            rows.push(record.iter().map(str::to_string).collect());
        }
        Ok(RunsTable { columns, rows })
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Axis, MANIFEST_FORMAT, ReportSpec};

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            name: "t".into(),
            about: None,
            sweep_file: "s.toml".into(),
            base: "b.toml".into(),
            base_name: "b".into(),
            strategy: "random".into(),
            seeds: vec![0, 1],
            axes: vec![Axis {
                keys: vec!["host.dpamt".into()],
                values: vec![vec!["a".into()], vec!["b".into()]],
            }],
            points: 2,
            ghz: Some(2.0),
            outcomes: vec!["pass".into(), "deadlock".into()],
            tool_version: "0".into(),
            commit: None,
            partition: None,
            report: ReportSpec::default(),
        }
    }

    fn run(seed: u64, outcome: &str, metrics: &[(&str, u64)]) -> RunRecord {
        RunRecord {
            seed,
            outcome: outcome.into(),
            finding: if outcome == PASS { String::new() } else { "cycle of waits, \"A\"".into() },
            metrics: metrics.iter().map(|(name, value)| (name.to_string(), *value)).collect(),
        }
    }

    fn points() -> Vec<PointRecord> {
        vec![
            PointRecord {
                point: 1,
                values: vec!["b".into()],
                runs: vec![run(0, "deadlock", &[("seamcalls", 3)]), run(1, "deadlock", &[("seamcalls", 5)])],
            },
            PointRecord {
                point: 0,
                values: vec!["a".into()],
                runs: vec![
                    run(0, PASS, &[("seamcalls", 10), ("lock_contended[pamt_lock]", 2)]),
                    run(1, PASS, &[("seamcalls", 13), ("sim_cycles", 7)]),
                ],
            },
        ]
    }

    #[test]
    fn runs_csv_has_a_row_per_run_in_point_order_and_empty_missing_cells() {
        let text = String::from_utf8(runs_csv(&manifest(), &points())).unwrap();
        assert_eq!(
            text,
            "point,host.dpamt,seed,outcome,finding,seamcalls,sim_cycles,lock_contended[pamt_lock]\n\
             0,a,0,pass,,10,,2\n\
             0,a,1,pass,,13,7,\n\
             1,b,0,deadlock,\"cycle of waits, \"\"A\"\"\",3,,\n\
             1,b,1,deadlock,\"cycle of waits, \"\"A\"\"\",5,,\n"
        );
        let table = RunsTable::parse(text.as_bytes()).unwrap();
        assert_eq!(table.rows.len(), 4);
        assert_eq!(table.rows[2][table.column("finding").unwrap()], "cycle of waits, \"A\"");
    }

    #[test]
    fn points_csv_summarises_passing_runs_and_leaves_all_failing_points_empty() {
        let text = String::from_utf8(points_csv(&manifest(), &points())).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("point,host.dpamt,runs,pass,deadlock,seamcalls.mean,seamcalls.p50,"));
        assert_eq!(lines[1], "0,a,2,2,0,11.5,10,13,10,13,7,7,7,7,7,2,2,2,2,2");
        assert_eq!(lines[2], "1,b,2,0,2,,,,,,,,,,,,,,,", "every run failed: a gap, not a zero");
    }

    #[test]
    fn the_files_do_not_depend_on_record_order() {
        let mut reversed = points();
        reversed.reverse();
        assert_eq!(runs_csv(&manifest(), &points()), runs_csv(&manifest(), &reversed));
        assert_eq!(points_csv(&manifest(), &points()), points_csv(&manifest(), &reversed));
    }

    #[test]
    fn summaries_use_nearest_rank() {
        let summary = Summary::of(&[5, 1, 4, 2, 3]).unwrap();
        assert_eq!((summary.min, summary.p50, summary.p95, summary.max), (1, 3, 5, 5));
        assert_eq!(summary.mean, 3.0);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(format_number(11.5), "11.5");
        assert_eq!(format_number(2.0), "2");
        assert_eq!(format_number(1.0 / 3.0), "0.333");
    }
}
