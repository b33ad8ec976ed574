//! How a run ends, and what it found, as data.
//!
//! An `Outcome` carries its `kind`, the sentence a kernel developer reads (`what`), and the
//! typed `finding` the sentence was made from: the tasks, CPUs and locks involved. Tables,
//! bundles and traces read the finding; nothing parses the sentence back.

use serde::{Deserialize, Serialize};

use crate::resource::{Mode, ResourceId, WaitKind};
use crate::{CpuId, Cycle, TaskId};

/// The kinds of ending of the scenario reference ("Outcomes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OutcomeKind {
    Pass,
    Deadlock,
    /// A CPU ran without progress for `run.watchdog` (the soft-lockup detector).
    Livelock,
    /// A task slept on a mutex, rwsem, percpu-rwsem or completion for longer than the
    /// hung-task limit (the hung-task detector).
    Hung,
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
        OutcomeKind::Hung,
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
            OutcomeKind::Hung => "hung",
            OutcomeKind::LockOrder => "lock-order",
            OutcomeKind::Invariant => "invariant",
            OutcomeKind::Warn => "warn",
            OutcomeKind::Limit => "limit",
            OutcomeKind::Error => "error",
        }
    }

    /// What the outcome means, for `tdxsim list outcomes` and the scenario reference.
    pub const fn meaning(self) -> &'static str {
        match self {
            OutcomeKind::Pass => "every task finished and every invariant held",
            OutcomeKind::Deadlock => "a cycle of waits, or no task can run; the cycle is named",
            OutcomeKind::Livelock => "a CPU ran for run.watchdog without progress (soft lockup)",
            OutcomeKind::Hung => {
                "a task slept on a mutex, rwsem or completion past the hung-task limit (hung task)"
            }
            OutcomeKind::LockOrder => "a lock-order inversion was seen, even if this run did not deadlock",
            OutcomeKind::Invariant => "a named invariant broke (tdxsim list invariants)",
            OutcomeKind::Warn => "the host hit a WARN_ON / KVM_BUG_ON / unexpected status",
            OutcomeKind::Limit => "run.max_time or run.max_events reached",
            OutcomeKind::Error => "a bug in the simulator itself, or a broken kernel precondition",
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

/// What a blocked task waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitsFor {
    /// Queued on a lock; `blockers` are its conflicting holders and the conflicting waiters
    /// ahead of it.
    Resource { resource: ResourceId, mode: Mode, wait: WaitKind, blockers: Vec<TaskId> },
    /// Parked until other tasks do something (complete a completion, reach a barrier, ack a
    /// state); `blockers` are the tasks that have not done it yet.
    Event { what: String, blockers: Vec<TaskId> },
    /// Ready, but its CPU's owner cannot be preempted (preemption or IRQs off).
    Cpu { owner: TaskId },
}

impl WaitsFor {
    pub fn blockers(&self) -> &[TaskId] {
        match self {
            WaitsFor::Resource { blockers, .. } | WaitsFor::Event { blockers, .. } => blockers,
            WaitsFor::Cpu { owner } => std::slice::from_ref(owner),
        }
    }
}

/// One task of a finding: where it runs, what it holds, what it waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub task: TaskId,
    pub cpu: CpuId,
    /// Locks it holds, in the order it took them.
    pub holds: Vec<ResourceId>,
    pub waits: Option<WaitsFor>,
}

/// One "took `to` while holding `from`" edge of a lock-order inversion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEdge {
    pub task: TaskId,
    pub cpu: CpuId,
    pub cycle: Cycle,
    pub from: ResourceId,
    pub to: ResourceId,
}

/// What a model or a checker names in a report: the things the table should focus on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    /// A lock.
    Resource(ResourceId),
    /// Whatever trace marks with this code and first word describe (a refcount of a 2MB
    /// range, a page): `(mark code, a)`.
    Marked(u32, u64),
}

/// The typed content of an outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finding {
    /// Nothing was found (pass).
    None,
    /// A cycle in the wait-for graph: each task on it, in order.
    WaitCycle(Vec<Blocked>),
    /// No task can run and there is no cycle: every unfinished task.
    Stuck(Vec<Blocked>),
    /// A task takes a non-recursive lock it already holds.
    SelfDeadlock { task: TaskId, cpu: CpuId, resource: ResourceId, mode: Mode, held: Mode },
    /// A task without progress: a CPU that ran (`livelock`) or a task that slept (`hung`)
    /// for `for_cycles`, past `limit_cycles`.
    NoProgress { blocked: Blocked, for_cycles: u64, limit_cycles: u64 },
    /// Two paths take the same locks in opposite orders: `taking` closed the cycle that the
    /// `earlier` edges had built.
    LockOrder { taking: OrderEdge, earlier: Vec<OrderEdge>, classes: bool },
    /// A named finding of a model or checker: an invariant, a WARN, a broken precondition.
    Report { name: String, task: Option<TaskId>, cpu: Option<CpuId>, detail: String, subjects: Vec<Subject> },
    /// `run.max_time` or `run.max_events`.
    Limit,
}

/// One run's ending: its kind, what was found in words, and the same as data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub what: String,
    /// The cycle it was found at.
    pub cycle: Cycle,
    pub finding: Finding,
}

impl Outcome {
    pub fn new(kind: OutcomeKind, what: impl Into<String>, cycle: Cycle, finding: Finding) -> Outcome {
        Outcome { kind, what: what.into(), cycle, finding }
    }

    pub fn pass() -> Outcome {
        Outcome::new(OutcomeKind::Pass, "", Cycle::ZERO, Finding::None)
    }

    /// A named report (invariant, WARN, error) by `task` on `cpu`.
    pub fn report(
        kind: OutcomeKind,
        name: impl Into<String>,
        detail: impl Into<String>,
        at: (Cycle, Option<TaskId>, Option<CpuId>),
        subjects: Vec<Subject>,
    ) -> Outcome {
        let (name, detail) = (name.into(), detail.into());
        let what = if name.is_empty() { detail.clone() } else { format!("{name}: {detail}") };
        let (cycle, task, cpu) = at;
        Outcome::new(kind, what, cycle, Finding::Report { name, task, cpu, detail, subjects })
    }

    /// The tasks the finding is about (the wait cycle, the stalled task, the reporter).
    pub fn tasks(&self) -> Vec<TaskId> {
        match &self.finding {
            Finding::None | Finding::Limit => Vec::new(),
            Finding::WaitCycle(blocked) | Finding::Stuck(blocked) => blocked.iter().map(|b| b.task).collect(),
            Finding::SelfDeadlock { task, .. } => vec![*task],
            Finding::NoProgress { blocked, .. } => {
                let mut tasks = vec![blocked.task];
                if let Some(waits) = &blocked.waits {
                    tasks.extend(waits.blockers().iter().filter(|t| **t != blocked.task));
                }
                tasks
            }
            Finding::LockOrder { taking, earlier, .. } => {
                let mut tasks = vec![taking.task];
                for edge in earlier {
                    if !tasks.contains(&edge.task) {
                        tasks.push(edge.task);
                    }
                }
                tasks
            }
            Finding::Report { task, .. } => task.iter().copied().collect(),
        }
    }

    /// Every lock the finding names: held, waited for, or on an order edge.
    pub fn resources(&self) -> Vec<ResourceId> {
        let mut out = Vec::new();
        let mut add = |resource: ResourceId| {
            if !out.contains(&resource) {
                out.push(resource);
            }
        };
        let blocked_resources = |blocked: &Blocked, add: &mut dyn FnMut(ResourceId)| {
            blocked.holds.iter().for_each(|r| add(*r));
            if let Some(WaitsFor::Resource { resource, .. }) = &blocked.waits {
                add(*resource);
            }
        };
        match &self.finding {
            Finding::None | Finding::Limit => {}
            Finding::WaitCycle(list) | Finding::Stuck(list) => {
                list.iter().for_each(|blocked| blocked_resources(blocked, &mut add))
            }
            Finding::SelfDeadlock { resource, .. } => add(*resource),
            Finding::NoProgress { blocked, .. } => blocked_resources(blocked, &mut add),
            Finding::LockOrder { taking, earlier, .. } => {
                for edge in std::iter::once(taking).chain(earlier) {
                    add(edge.from);
                    add(edge.to);
                }
            }
            Finding::Report { subjects, .. } => {
                for subject in subjects {
                    if let Subject::Resource(resource) = subject {
                        add(*resource);
                    }
                }
            }
        }
        out
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
