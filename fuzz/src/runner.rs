//! What the fuzzer needs from whoever runs scenarios: a scenario file's text and a schedule
//! in, a typed verdict out. The `tdxsim` package implements it over its loader and runner
//! (`scenarios::fuzzing`); this crate never depends on that package.

use std::collections::BTreeMap;

use seam_model::{Leaf, TdxStatus};
use sim_core::{CpuId, DecisionKind, NearSpan, Outcome};

use crate::schedule::Schedule;

/// What one run gave, as typed data.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Every decision the run made: replaying them gives the run again.
    pub decisions: Vec<u32>,
    /// How many options each decision had.
    pub decision_options: Vec<u32>,
    /// The kind of each decision (only when coverage was recorded; else empty).
    pub decision_kinds: Vec<DecisionKind>,
    /// The CPU each decision is about (only when coverage was recorded; else empty).
    pub decision_cpus: Vec<CpuId>,
    /// For each nearness feature (sorted): how many of the longest stalls span its
    /// distance, and whether it is a window (only with coverage).
    pub near_spans: Vec<NearSpan>,
    /// What the run covered, sorted (only when coverage was recorded; else empty).
    pub features: Vec<u64>,
    /// For each feature, the number of decisions made when it was first covered.
    pub feature_first_at: Vec<u32>,
    /// For each feature, the CPU it was first covered on (for a hit count, that of its last
    /// hit; for a nearness, that of the earlier event).
    pub feature_first_cpus: Vec<CpuId>,
    /// SEAMCALLs by leaf and (masked) status.
    pub seamcalls: BTreeMap<(Leaf, TdxStatus), u64>,
    /// Per 2MB range at the end: the host's refcount and whether the module has it backed.
    pub pamt_end: Vec<(i32, bool)>,
    pub events: u64,
}

impl Verdict {
    /// How many times `leaf` returned `status` (masked, as in `seamcalls`).
    pub fn seamcall_count(&self, leaf: Leaf, status: TdxStatus) -> u64 {
        self.seamcalls.get(&(leaf, status)).copied().unwrap_or(0)
    }
}

/// Runs a scenario file once.
pub trait Runner: Sync {
    /// Loads `scenario` (a scenario file's text) and runs it once under `schedule`,
    /// recording coverage when `coverage` is on. `Err` says why the text did not load: for
    /// a generated scenario that is a bug in the generator.
    fn run(&self, scenario: &str, schedule: &Schedule, coverage: bool) -> Result<Verdict, String>;
}

impl<F> Runner for F
where
    F: Fn(&str, &Schedule, bool) -> Result<Verdict, String> + Sync,
{
    fn run(&self, scenario: &str, schedule: &Schedule, coverage: bool) -> Result<Verdict, String> {
        self(scenario, schedule, coverage)
    }
}
