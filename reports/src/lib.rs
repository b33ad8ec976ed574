//! tdxsim sweep results: the CSV files `tdxsim sweep` writes, and the SVG plots and report
//! `tdxsim report` makes of them.
//!
//! Modules:
//! - `manifest`: `Manifest`, what a sweep was and how its report looks (`manifest.json`).
//! - `table`: `PointRecord`, `runs.csv` and `points.csv`, `Summary` statistics.
//! - `plot`: one SVG per metric (and per combination of the other axes), plotters.
//! - `report`: `render`, `report.md` and a self-contained `report.html` from a sweep directory.
//!
//! **Architecture invariant:** reports does not depend on scenarios (the `tdxsim` binary,
//! in scenarios, depends on reports); a sweep reaches it only as files.
pub mod manifest;
pub mod plot;
pub mod report;
pub mod table;

use std::path::{Path, PathBuf};

pub use manifest::Manifest;
pub use report::render;
pub use table::{PointRecord, RunRecord};

/// Why a sweep directory could not be reported on.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// A file is there but is not what `tdxsim sweep` writes.
    #[error("{}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
}

impl ReportError {
    pub fn io(path: &Path, error: std::io::Error) -> ReportError {
        ReportError::Io { path: path.to_path_buf(), error }
    }
}
