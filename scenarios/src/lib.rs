//! Scenario files: schema, loader, runner, expectations.
//!
//! Modules:
//! - `schema`: `Scenario` and its parts, typed and validated; `CALLS`, `METRICS`.
//! - `load`: `load_file` / `load_str`, TOML text to `Scenario`, every check before any run.
//! - `bundle`: `Bundle`, a repro bundle (one run, replayable without its file); `read` / `write`.
//! - `check`: `check`, the runs of `tdxsim check` and the verdict on `[expect]`.
//! - `coverage`: `--strategy coverage` for `check`, `run` and `replay` (the fuzz crate's explorer).
//! - `fuzzing`: `tdxsim fuzz` (the fuzz crate's campaign, its output), and `ScenarioRunner`.
//! - `checker`: `StateChecker`, which observes a run and owns every named invariant.
//! - `near_miss`: how near per-CPU hardware transitions came, the checker's coverage data.
//! - `faults`: the fault plan a run gives the module (`fail_step`).
//! - `sweep`: `Sweep`, a sweep file checked point by point; `run` / `merge`, the grid on rayon into CSV.
//! - `table`: the two-column `CPU 0 | CPU 1` interleaving table, focused on the finding of a failing run.
//! - `perfetto`: `chrome_trace`, the run as Chrome trace-event JSON for Perfetto.
//! - `error`: `ScenarioError`, one positioned error (`FILE:LINE:COL: KEY: expected …, found …`); `printable`.
//! - `files`: `read_regular` (regular files of bounded size only), `scenario_files` (directories walked).
//! - `keys`: every key the loader accepts, the one list for the loader, `list keys` and the docs; maximums.
//! - `lockstat`: `render`, the lock figures of `run --lock-stat` (lockstat / perf lock contention).
//! - `metrics`: `Metrics`, every figure by its `[expect.metrics]` name, and how runs combine.
//! - `report`: `FileReport`, what `check` prints per file: human lines, JSON, JUnit.
//! - `shell`: the `tdxsim replay …` lines, complete and shell-quoted.
//! - `run`: `run_once`, one run of a scenario from a seed or a decision vector; `Metrics`.
//! - `kvm_steps`: what the KVM steps run, their trace labels, the TDs the host knows.
//! - `units`: sizes (`"64M"`), times (`"50us"`) and addresses (`"0x200000"`).
pub mod bundle;
pub mod check;
pub mod checker;
pub mod coverage;
pub mod error;
pub mod faults;
pub mod files;
pub mod fuzzing;
pub mod keys;
pub mod kvm_steps;
pub mod load;
pub mod lockstat;
pub mod metrics;
pub mod near_miss;
pub mod perfetto;
pub mod report;
pub mod run;
pub mod schema;
pub mod shell;
pub mod sweep;
pub mod table;
pub mod units;

pub use load::{load_file, load_str, workload_defaults};
