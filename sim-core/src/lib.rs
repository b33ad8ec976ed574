//! The tdxsim engine. It knows nothing about TDX.
//!
//! Modules:
//! - `time`: `Cycle`, `CpuId`, `TaskId`, `Seed`, `Clock`.
//! - `chooser`: the `Chooser` trait and its random and replay strategies.
//! - `coverage`: what a run covered (lock-order and wait-for edges, model features), when asked.
//! - `engine`: `Engine` (clock, queue, CPUs, tasks, resources, wait objects, detection) and
//!   the `Sim` handle, split in `sched`, `resources`, `waits`, `detect` and `futures`.
//! - `executor`: `Executor`, which owns the task futures and runs the loop.
//! - `histogram`: `Histogram`, fixed log2 buckets with 8 sub-buckets, for wait and latency percentiles.
//! - `lockdep`: lock-order checking over lock instances and classes.
//! - `narrow`: `Narrow512`, 512 pfn-like values at two bytes each while they share a few high parts.
//! - `resource`: queued shared/exclusive resources, the basis of every lock and of the wait-for graph.
//! - `trace`: trace events and the stable trace hash.
//! - `outcome`: how a run ends, and its typed finding.
pub mod chooser;
pub mod coverage;
pub mod engine;
pub mod executor;
pub mod histogram;
pub mod lockdep;
pub mod narrow;
pub mod outcome;
pub mod resource;
pub mod time;
pub mod trace;

pub use chooser::{
    Chooser, Decision, DecisionKind, Exhaustive, NominalChooser, PctChooser, PrefixChooser, RandomChooser,
    ReplayChooser, RunChooser,
};
pub use coverage::{
    COUNT_TOP, CoverageReport, FeatureTag, NearSpan, half_octaves, model_code, nearness, ranked,
};
pub use engine::{
    Acquired, CpuState, Engine, EngineConfig, Interruptible, MAX_RECORDED_DECISIONS, SCHED_SLICE_CYCLES,
    STALL_MIN_CYCLES, STALL_STEPS, Sim, Stall, TaskPriority, TaskStatus, WaitId, WorkPoint,
};
pub use executor::{EngineStore, Executor, RunReport, TaskCtx};
pub use histogram::Histogram;
pub use narrow::Narrow512;
pub use outcome::{Blocked, Finding, OrderEdge, Outcome, OutcomeKind, Subject, WaitsFor};
pub use resource::{Mode, Name, ResourceId, ResourceStats, WaitKind};
pub use time::{Clock, CpuId, Cycle, Seed, TaskId};
pub use trace::{Span, TraceEvent, TraceKind};

/// Asks the caches for every line of `value` up to its first 1 KiB: a hint that reads
/// nothing a run sees and cannot fault. A task's state and future are read at several
/// lines each (a future's state tag is laid out last), and the loads that follow depend on
/// one another; asked for at once, their misses overlap. Nothing elsewhere.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    let size = std::mem::size_of_val(value).min(1024);
    let mut offset = 0;
    while offset < size {
        prefetch_address(start.wrapping_add(offset));
        offset += 64;
    }
    if size > 0 {
        prefetch_address(start.wrapping_add(size - 1));
    }
}

#[inline(always)]
fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 takes any address, valid or not, and changes no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
