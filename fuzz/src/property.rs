//! The properties fuzzing checks, each over typed verdicts (outcome kind, SEAMCALL statuses,
//! end state), never over the text of a finding.

use seam_model::Leaf;
use seam_model::status::{TDX_MISSING_PAMT_PAGE_PAIR, TDX_NO_PAMT_PAGE_PAIR};
use sim_core::{Finding, OutcomeKind};

/// The name of the host model's report of the hint design's unbounded AUG retry.
pub const UNBOUNDED_RETRY: &str = "unbounded retry";

use crate::runner::Verdict;

/// Something every run must satisfy; a run that does not is a counterexample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// Every run passes (or ends at `run.max_time`): what `tdxsim fuzz` looks for by default.
    Passes,
    /// Never a deadlock, livelock (soft lockup), hung task, lock-order inversion, broken
    /// invariant, WARN or simulator error: designs the library calls correct.
    NoFinding,
    /// Never a deadlock or lock-order inversion (a simulator error counts too):
    /// `per-2m-rwlock-pfn-order`, whose BUSY from walkers it does not mirror is a known WARN.
    NoDeadlockOrInversion,
    /// Host refcounts and the module's PAMT agree whenever no get/put is in flight: no run
    /// breaks `dpamt-refcount-matches-module` (checked as each range's last get/put
    /// returns), and a run that finished has, for every range, refcount > 0 exactly where the
    /// module has the range backed.
    RefcountsAgree,
    /// Never a PAMT.REMOVE that finds the range already removed (TDX_NO_PAMT_PAGE_PAIR):
    /// the v2–v4 put removes twice (S-D2).
    NeverRemovesTwice,
    /// Never a PAGE.AUG that misses its PAMT pair (TDX_MISSING_PAMT_PAGE_PAIR) after the
    /// fault's PAMT.ADD said the range was backed, the race the hint design retries without
    /// bound (S-D1): a `livelock` the host model reports as an unbounded retry.
    NeverMissesPair,
    /// Never a deadlock: `per-2m-rwlock` deadlocks (S-D5, Yan Zhao's AB-BA).
    NeverDeadlocks,
}

/// A run that broke a property: which, how the run ended, and the shape of its finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: Property,
    pub outcome: OutcomeKind,
    pub shape: Shape,
}

/// What kind of finding a run ended with, from its typed data: shrinking keeps it, so a
/// counterexample never turns into another bug of the same outcome kind on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Passed, or ended at a limit.
    Nothing,
    WaitCycle,
    Stuck,
    SelfDeadlock,
    /// A CPU or task made no progress (soft lockup, hung task).
    NoProgress,
    LockOrder,
    /// A named report of a model or checker (an invariant, a WARN's source, a precondition).
    Report(String),
}

impl Shape {
    pub fn of(finding: &Finding) -> Shape {
        match finding {
            Finding::None | Finding::Limit => Shape::Nothing,
            Finding::WaitCycle(_) => Shape::WaitCycle,
            Finding::Stuck(_) => Shape::Stuck,
            Finding::SelfDeadlock { .. } => Shape::SelfDeadlock,
            Finding::NoProgress { .. } => Shape::NoProgress,
            Finding::LockOrder { .. } => Shape::LockOrder,
            Finding::Report { name, .. } => Shape::Report(name.clone()),
        }
    }
}

impl Property {
    pub const fn name(self) -> &'static str {
        match self {
            Property::Passes => "every run passes",
            Property::NoFinding => "no deadlock, livelock, hung task, lock-order, invariant, warn or error",
            Property::NoDeadlockOrInversion => "no deadlock or lock-order inversion",
            Property::RefcountsAgree => "refcounts agree with the module's PAMT when no get/put is in flight",
            Property::NeverRemovesTwice => "PAMT.REMOVE never finds the range already removed",
            Property::NeverMissesPair => "PAGE.AUG never misses its PAMT pair",
            Property::NeverDeadlocks => "no deadlock",
        }
    }

    /// The violation `verdict` is of this property, if it is one.
    pub fn check(self, verdict: &Verdict) -> Option<Violation> {
        let kind = verdict.outcome.kind;
        let broken = match self {
            Property::Passes => !matches!(kind, OutcomeKind::Pass | OutcomeKind::Limit),
            Property::NoFinding => is_finding(kind),
            Property::NoDeadlockOrInversion => {
                matches!(kind, OutcomeKind::Deadlock | OutcomeKind::LockOrder | OutcomeKind::Error)
            }
            Property::RefcountsAgree => {
                let finished = matches!(kind, OutcomeKind::Pass | OutcomeKind::LockOrder);
                let disagree = verdict.pamt_end.iter().any(|&(refcount, backed)| (refcount > 0) != backed);
                kind == OutcomeKind::Invariant || kind == OutcomeKind::Error || (finished && disagree)
            }
            Property::NeverRemovesTwice => {
                verdict.seamcall_count(Leaf::PhymemPamtRemove, TDX_NO_PAMT_PAGE_PAIR) > 0
                    && kind != OutcomeKind::Pass
            }
            Property::NeverMissesPair => {
                // The fault's loop, AUG -> MISSING -> ADD -> AUG, is the design; the finding is
                // the host model's report that an AUG missed its pair after the ADD said the
                // range was backed (host-model kvm/mmu.rs, `report_unbounded_retry`).
                kind == OutcomeKind::Livelock
                    && verdict.seamcall_count(Leaf::MemPageAug, TDX_MISSING_PAMT_PAGE_PAIR) > 0
                    && matches!(&verdict.outcome.finding, Finding::Report { name, .. } if name == UNBOUNDED_RETRY)
            }
            Property::NeverDeadlocks => matches!(kind, OutcomeKind::Deadlock | OutcomeKind::Error),
        };
        broken.then(|| Violation {
            property: self,
            outcome: kind,
            shape: Shape::of(&verdict.outcome.finding),
        })
    }

    /// Whether `candidate` shows the same counterexample as `original` for shrinking: the
    /// same property broken with the same outcome and finding shape, except that a
    /// lock-order inversion may become the deadlock it allows (the stronger evidence of the
    /// same bug).
    pub fn same_violation(self, original: &Violation, candidate: &Verdict) -> bool {
        let Some(found) = self.check(candidate) else { return false };
        (found.outcome == original.outcome && found.shape == original.shape)
            || (original.outcome == OutcomeKind::LockOrder && found.outcome == OutcomeKind::Deadlock)
    }
}

/// The outcomes that are findings for a design the library calls correct.
fn is_finding(kind: OutcomeKind) -> bool {
    match kind {
        OutcomeKind::Pass | OutcomeKind::Limit => false,
        OutcomeKind::Deadlock
        | OutcomeKind::Livelock
        | OutcomeKind::Hung
        | OutcomeKind::LockOrder
        | OutcomeKind::Invariant
        | OutcomeKind::Warn
        | OutcomeKind::Error => true,
    }
}
