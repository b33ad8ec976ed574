//! The tdxsim engine. It knows nothing about TDX.
//!
//! Modules:
//! - `time`: `Cycle`, `CpuId`, `TaskId`, `Seed`, `Clock`.
pub mod time;

pub use time::{Clock, CpuId, Cycle, Seed, TaskId};
