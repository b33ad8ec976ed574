//! Scenario files: schema, loader, runner, expectations.
//!
//! Modules:
//! - `schema`: `Scenario` and its parts, typed and validated; `CALLS`, `METRICS`.
//! - `load`: `load_file` / `load_str`, TOML text to `Scenario`, every check before any run.
//! - `error`: `ScenarioError`, one positioned error (`FILE:LINE:COL: KEY: expected …, found …`).
//! - `units`: sizes (`"64M"`), times (`"50us"`) and addresses (`"0x200000"`).
pub mod error;
pub mod load;
pub mod schema;
pub mod units;

pub use load::{load_file, load_str};
