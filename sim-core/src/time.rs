//! Simulated time and identifiers shared by every crate.

use serde::{Deserialize, Serialize};

/// A point on the one global simulated clock, in CPU cycles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cycle(pub u64);

impl Cycle {
    pub const ZERO: Cycle = Cycle(0);
    pub const MAX: Cycle = Cycle(u64::MAX);

    pub fn saturating_add(self, cycles: u64) -> Cycle {
        Cycle(self.0.saturating_add(cycles))
    }

    pub fn since(self, earlier: Cycle) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A logical CPU (an LP in module terms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CpuId(pub u32);

impl std::fmt::Display for CpuId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CPU {}", self.0)
    }
}

/// A simulated task (a kernel thread pinned to one CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u32);

/// The seed of one run: run `i` of a scenario uses `run.seed + i`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seed(pub u64);

/// Converts human time units to cycles with the machine's clock rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clock {
    pub ghz: f64,
}

impl Clock {
    pub fn ns_to_cycles(&self, ns: f64) -> u64 {
        (ns * self.ghz).round() as u64
    }

    pub fn cycles_to_ns(&self, cycles: u64) -> f64 {
        cycles as f64 / self.ghz
    }
}
