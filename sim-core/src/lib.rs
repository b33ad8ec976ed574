//! The tdxsim engine. It knows nothing about TDX.
//!
//! Modules:
//! - `time`: `Cycle`, `CpuId`, `TaskId`, `Seed`, `Clock`.
//! - `chooser`: the `Chooser` trait and its random and replay strategies.
//! - `coverage`: what a run covered (lock-order and wait-for edges, model features), when asked.
//! - `engine`: `Engine` (clock, queue, CPUs, tasks, resources, detection) and the `Sim` handle.
//! - `executor`: `Executor`, which owns the task futures and runs the loop.
//! - `lockdep`: lock-order checking over lock instances and classes.
//! - `resource`: queued shared/exclusive resources, the basis of every lock and of the wait-for graph.
//! - `trace`: trace events and the stable trace hash.
//! - `outcome`: how a run ends.
pub mod chooser;
pub mod coverage;
pub mod engine;
pub mod executor;
pub mod lockdep;
pub mod outcome;
pub mod resource;
pub mod time;
pub mod trace;

pub use chooser::{
    Chooser, Decision, DecisionKind, Exhaustive, NominalChooser, PctChooser, PrefixChooser, RandomChooser,
    ReplayChooser,
};
pub use coverage::{CoverageReport, FeatureTag, model_code};
pub use engine::{
    Acquired, CpuState, Engine, EngineConfig, HUNG_TASK_FACTOR, SCHED_SLICE_CYCLES, STALL_STEPS, Sim,
    TaskPriority, TaskStatus,
};
pub use executor::{Executor, RunReport, TaskCtx};
pub use outcome::{Outcome, OutcomeKind};
pub use resource::{Mode, ResourceId, ResourceStats, WaitKind};
pub use time::{Clock, CpuId, Cycle, Seed, TaskId};
pub use trace::{Span, TraceEvent, TraceKind};
