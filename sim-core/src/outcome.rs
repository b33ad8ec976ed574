//! How a run ends.

use serde::{Deserialize, Serialize};

use crate::TaskId;

/// The kinds of ending of SCENARIOS.md "Outcomes".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OutcomeKind {
    Pass,
    Deadlock,
    Livelock,
    LockOrder,
    Invariant,
    Warn,
    Limit,
    Error,
}

impl OutcomeKind {
    pub const ALL: &'static [OutcomeKind] = &[
        OutcomeKind::Pass,
        OutcomeKind::Deadlock,
        OutcomeKind::Livelock,
        OutcomeKind::LockOrder,
        OutcomeKind::Invariant,
        OutcomeKind::Warn,
        OutcomeKind::Limit,
        OutcomeKind::Error,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            OutcomeKind::Pass => "pass",
            OutcomeKind::Deadlock => "deadlock",
            OutcomeKind::Livelock => "livelock",
            OutcomeKind::LockOrder => "lock-order",
            OutcomeKind::Invariant => "invariant",
            OutcomeKind::Warn => "warn",
            OutcomeKind::Limit => "limit",
            OutcomeKind::Error => "error",
        }
    }

    pub fn from_name(name: &str) -> Option<OutcomeKind> {
        OutcomeKind::ALL.iter().copied().find(|kind| kind.name() == name)
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One run's ending: its kind and what was found, in words a kernel developer reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub what: String,
    /// The tasks the finding is about (the wait cycle, the starved task, the warner).
    pub tasks: Vec<TaskId>,
}

impl Outcome {
    pub fn new(kind: OutcomeKind, what: impl Into<String>, tasks: Vec<TaskId>) -> Outcome {
        Outcome { kind, what: what.into(), tasks }
    }

    pub fn pass() -> Outcome {
        Outcome::new(OutcomeKind::Pass, "", Vec::new())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.what.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.what)
        }
    }
}
