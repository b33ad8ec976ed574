//! `manifest.json`: what a sweep was (its file, base scenario, axes, seeds, tool and commit)
//! and how its report should look. `tdxsim sweep` writes it beside `runs.csv` and
//! `points.csv`; `tdxsim report` reads nothing else to know the sweep.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ReportError;

/// The manifest format this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// A sweep, as `manifest.json` describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// invariant: == MANIFEST_FORMAT.
    pub format: u32,
    /// The sweep file's `name`.
    pub name: String,
    pub about: Option<String>,
    /// The sweep file as named on the command line.
    pub sweep_file: String,
    /// The base scenario's path (relative to where tdxsim ran) and `name`.
    pub base: String,
    pub base_name: String,
    /// `run.strategy` of every run (`random` or `pct`).
    pub strategy: String,
    /// The seeds every point runs, in order.
    pub seeds: Vec<u64>,
    pub axes: Vec<Axis>,
    /// Points in the whole grid (of every partition).
    pub points: u64,
    /// `machine.ghz` when every point has the same; times are then shown in ns..s.
    pub ghz: Option<f64>,
    /// Every outcome a run can end in; points.csv has a count column for each.
    pub outcomes: Vec<String>,
    pub tool_version: String,
    /// `git describe --always --dirty` where the sweep ran, when there was a repository.
    pub commit: Option<String>,
    /// `count:K/N` for one partition's directory; absent for a whole (or merged) sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    pub report: ReportSpec,
}

/// One axis: the keys it sets and, per value, what each key gets (as text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// invariant: not empty; each key is one CSV column.
    pub keys: Vec<String>,
    /// invariant: every entry has one text per key.
    pub values: Vec<Vec<String>>,
}

/// `[report]` of the sweep file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportSpec {
    pub title: Option<String>,
    /// The axis column plotted along x (numeric), and the one giving a line per value.
    pub x: Option<String>,
    pub series: Option<String>,
    pub plots: Vec<PlotSpec>,
    pub marks: Vec<Mark>,
}

/// One plot (per combination of the axes that are neither x nor series).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlotSpec {
    /// A metric column of runs.csv.
    pub metric: String,
    /// Plot metric / per * scale of each run instead (BUSY per 1000 SEAMCALLs).
    pub per: Option<String>,
    pub scale: f64,
    /// What the y axis shows, in words.
    pub title: String,
}

/// A published figure drawn on the plot of `metric`: a point at (x, y), or a horizontal
/// line at y when x is unknown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The plot it goes on: a `PlotSpec::metric`.
    pub metric: String,
    /// The series value it is compared with (the design it was measured on).
    pub series: Option<String>,
    pub x: Option<f64>,
    /// In the metric's own unit (cycles for `*_cycles`).
    pub y: f64,
    pub label: String,
    /// The panels it goes on: axis column -> value (as the CSV shows it), all of which a
    /// panel must have; empty: every panel of the metric. Only panel axes (neither x nor
    /// series) restrict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub panel: BTreeMap<String, String>,
}

impl Manifest {
    /// Every axis column, in CSV order.
    pub fn axis_columns(&self) -> Vec<&str> {
        self.axes.iter().flat_map(|axis| axis.keys.iter().map(String::as_str)).collect()
    }

    /// The JSON text written to `manifest.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serialises") + "\n"
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, ReportError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|error| ReportError::io(&path, error))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|error| ReportError::Invalid { path: path.clone(), why: error.to_string() })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ReportError::Invalid {
                path,
                why: format!("manifest format {} (this tdxsim reads {MANIFEST_FORMAT})", manifest.format),
            });
        }
        Ok(manifest)
    }
}
