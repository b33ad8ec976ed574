//! The single-threaded executor: owns the task futures and drives the event loop.
//!
//! A task is boxed once when spawned; the loop allocates nothing per event. Futures are
//! woken only through the engine's event queue, so the `Waker` is a no-op.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::chooser::RunChooser;
use crate::coverage::CoverageReport;
use crate::engine::{Engine, EngineConfig, Next, Sim};
use crate::outcome::Outcome;
use crate::resource::{Name, ResourceStats};
use crate::trace::TraceEvent;
use crate::{CpuId, Cycle, TaskId};

/// What a task future gets when it is spawned.
#[derive(Clone)]
pub struct TaskCtx {
    pub sim: Sim,
    pub task: TaskId,
    pub cpu: CpuId,
}

/// A task's future. It may borrow what outlives the executor (`'a`: a scenario the caller
/// holds), so a run does not copy its inputs.
type TaskFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Everything a finished run reports.
pub struct RunReport {
    pub outcome: Outcome,
    /// The cycle the run ended at.
    pub end: Cycle,
    /// `None` when `EngineConfig::hash_trace` was off.
    pub trace_hash: Option<u64>,
    pub trace_events: Vec<TraceEvent>,
    /// The decision vector: replaying it gives this run again.
    pub decisions: Vec<u32>,
    /// How many options each decision had (the exhaustive enumerator needs them).
    pub decision_options: Vec<u32>,
    /// Decisions the run made; more than `decisions.len()` when the vector was too long to
    /// keep (`MAX_RECORDED_DECISIONS`: then `decisions` is empty and the seed replays it).
    pub decisions_made: u64,
    pub decisions_dropped: bool,
    /// Points where the chooser could have stalled a CPU (PCT's horizon).
    pub stall_points: u64,
    /// Lock-order inversions seen, whether or not the run deadlocked.
    pub lock_order: Vec<String>,
    /// A replaying chooser found that the vector did not fit this run.
    pub diverged: bool,
    /// Events dispatched.
    pub events: u64,
    pub resources: std::sync::Arc<[(Name, &'static str, ResourceStats)]>,
    /// The CPU of every task, by task id (scenario tasks first, then those spawned in the run).
    pub task_cpus: Vec<CpuId>,
    /// What the run covered, when `EngineConfig::coverage` was on.
    pub coverage: Option<CoverageReport>,
}

/// Tasks a run's executor has room for before its list of futures grows.
const TASKS_INLINE: usize = 8;

pub struct Executor<'a> {
    sim: Sim,
    futures: Vec<Option<TaskFuture<'a>>>,
}

/// The engine of the last run built on this store, kept for the next one: that run's
/// engine is the same one reset ([`Engine::reset`]: built by the constructor a new engine
/// is built by, into the old one's emptied vectors), so a run's setup allocates none of
/// them. It is reused only once nothing of the earlier run holds it any more (its tasks'
/// futures, its host); until then a run gets a new engine.
#[derive(Default)]
pub struct EngineStore(RefCell<Option<Sim>>);

impl<'a> Executor<'a> {
    /// `chooser`: a `Box<dyn Chooser>`, or a `RandomChooser` (then called directly).
    pub fn new(config: EngineConfig, chooser: impl Into<RunChooser>) -> Executor<'a> {
        Executor { sim: Sim::new(Engine::new(config, chooser.into())), futures: Vec::new() }
    }

    /// As [`Executor::new`], with the engine `store` kept from its last run when nothing
    /// else holds it; the store keeps this run's engine for the next.
    pub fn new_in(store: &EngineStore, config: EngineConfig, chooser: impl Into<RunChooser>) -> Executor<'a> {
        let chooser = chooser.into();
        let mut kept = store.0.borrow_mut();
        let sim = match kept.take() {
            Some(sim) if sim.is_sole_handle() => {
                sim.with(|engine| engine.reset(config, chooser));
                sim
            }
            _ => Sim::new(Engine::new(config, chooser)),
        };
        *kept = Some(sim.clone());
        // Room for a few tasks at once: a litmus test's spawns then grow nothing.
        Executor { sim, futures: Vec::with_capacity(TASKS_INLINE) }
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Adds a task pinned to `cpu` that starts at `start`.
    pub fn spawn<F, Fut>(&mut self, cpu: CpuId, start: Cycle, name: impl Into<Name>, body: F) -> TaskId
    where
        F: FnOnce(TaskCtx) -> Fut,
        Fut: Future<Output = ()> + 'a,
    {
        let task = self.sim.with(|engine| engine.add_task(name.into(), cpu, start));
        let ctx = TaskCtx { sim: self.sim.clone(), task, cpu };
        self.futures.push(Some(Box::pin(body(ctx))));
        task
    }

    /// Runs until every task finishes or something ends the run.
    pub fn run(&mut self) -> RunReport {
        let outcome = self.run_to_end();
        self.report(outcome, true)
    }

    /// Runs to the end as [`Executor::run`] does, but the report lists no resources
    /// (`RunReport::resources` is empty): `pool` reads the run's lock figures from the engine
    /// where they are ([`Engine::resource_figures`]) instead of from a copy.
    pub fn run_pooling(&mut self, pool: impl FnOnce(&Engine)) -> RunReport {
        let outcome = self.run_to_end();
        let report = self.report(outcome, false);
        self.sim.with(|engine| pool(engine));
        report
    }

    /// Polls the tasks until the run ends: its outcome before the end-of-run checks.
    fn run_to_end(&mut self) -> Outcome {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let futures = &self.futures;
            let next = self.sim.with(|engine| {
                engine.advance(|task| {
                    if let Some(Some(future)) = futures.get(task.0 as usize) {
                        crate::prefetch(&**future);
                    }
                })
            });
            let task = match next {
                Next::Poll(task) => task,
                Next::Queued => continue,
                Next::End(outcome) => break *outcome,
            };
            // The next task's state and future asked of the caches while this one runs.
            if let Some(next) = self.sim.with(|engine| engine.prefetch_next_task())
                && let Some(Some(next_future)) = self.futures.get(next.0 as usize)
            {
                crate::prefetch(&**next_future);
            }
            let Some(future) = self.futures[task.0 as usize].as_mut() else {
                let what = "simulator bug: a finished task was woken";
                let at = self.sim.with(|engine| engine.now());
                break Outcome::report(
                    crate::OutcomeKind::Error,
                    "",
                    what,
                    (at, Some(task), None),
                    Vec::new(),
                );
            };
            let poll = future.as_mut().poll(&mut cx);
            if poll == Poll::Ready(()) {
                self.futures[task.0 as usize] = None;
                self.sim.with(|engine| engine.finish_task(task));
            }
            let spawned = self.sim.with(|engine| {
                engine.end_poll();
                engine.take_spawns()
            });
            if let Some(spawned) = spawned {
                for (spawned_task, future) in spawned {
                    debug_assert_eq!(spawned_task.0 as usize, self.futures.len());
                    self.futures.push(Some(future));
                }
            }
        }
    }

    /// The report of a run that ended in `outcome`, with the list of its resources when
    /// `list_resources`.
    fn report(&mut self, outcome: Outcome, list_resources: bool) -> RunReport {
        self.sim.with(|engine| {
            let lock_order = engine.lock_order_findings();
            let outcome = engine.final_outcome(outcome);
            let (decisions, decision_options) = engine.take_decisions();
            let (decisions_made, decisions_dropped) = engine.decisions_made();
            RunReport {
                outcome,
                end: engine.now(),
                trace_hash: engine.trace_mut().hash(),
                trace_events: engine.trace_mut().take_events(),
                decisions,
                decision_options,
                decisions_made,
                decisions_dropped,
                stall_points: engine.stall_points(),
                lock_order,
                diverged: engine.chooser_diverged(),
                events: engine.events(),
                resources: if list_resources {
                    engine.resource_stats()
                } else {
                    std::sync::Arc::from(Vec::new())
                },
                task_cpus: (0..engine.num_tasks() as u32).map(|task| engine.task_cpu(TaskId(task))).collect(),
                coverage: engine.take_coverage(),
            }
        })
    }
}
