//! Property-based fuzzing of lock orderings: generated scenarios and schedules, shrinking to
//! the interleaving a kernel developer would draw, and coverage-guided exploration.
//!
//! This crate never depends on the `tdxsim` package (whose binary calls into it): whoever
//! runs scenarios passes a [`Runner`] (scenario text + schedule in, typed [`Verdict`] out).
//!
//! Modules:
//! - `spec`: `ScenarioSpec`, a generated scenario, valid once normalized; `Size`.
//! - `print`: `to_toml`, a spec as a scenario file; `Template`, a file whose machine and designs a campaign keeps.
//! - `strategy`: proptest strategies for scenarios and schedules; `Draws`, seeded draws for campaigns.
//! - `schedule`: `Schedule` and `Deviations`, a sparse list of deviations from the default choice.
//! - `runner`: the `Runner` trait and `Verdict`.
//! - `property`: `Property`, what must hold, checked over verdicts.
//! - `shrink`: `shrink`, a counterexample cut down in scenario and schedule.
//! - `corpus`: the coverage corpus, schedule mutations and the `Explorer`.
//! - `mutate`: scenario mutations.
//! - `explore`: coverage-guided exploration of one scenario's schedules (`check --strategy coverage`).
//! - `campaign`: `run_campaign`, the `tdxsim fuzz` search.
pub mod campaign;
pub mod corpus;
pub mod explore;
pub mod mutate;
pub mod print;
pub mod property;
pub mod runner;
pub mod schedule;
pub mod shrink;
pub mod spec;
pub mod strategy;

pub use campaign::{CampaignConfig, CampaignReport, Progress, SearchStrategy, run_campaign};
pub use property::{Property, Violation};
pub use runner::{Runner, Verdict};
pub use schedule::{Deviations, Schedule};
pub use shrink::{ShrinkConfig, Shrunk, shrink};
pub use spec::{Designs, MachineLimits, ScenarioSpec, Size};
