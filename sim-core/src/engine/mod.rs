//! The engine: the clock, the event queue, CPUs, task states, resources and detection.
//!
//! `Sim` is the handle simulated code holds; `Executor` (executor.rs) owns the task
//! futures and drives the loop. All state of a run is in one `Engine` behind a `RefCell`;
//! it is borrowed only inside a poll, never across an `.await`.
//!
//! The engine is split along its seams:
//! - this file: the `Engine` itself, its config, the clock and queue, choices, marks, stops;
//! - `sched`: CPUs, run queues, preemption points, interrupts and preemptions (stalls);
//! - `resources`: queued locks, their grants and releases, lockdep on every attempt;
//! - `waits`: wait objects, what a parked task waits for (completions, barriers, acks);
//! - `detect`: the wait-for graph, deadlocks, the soft-lockup and hung-task watchdogs;
//! - `queue`: the event queue, earliest first;
//! - `futures`: the `Sim` handle and the futures tasks await.

mod detect;
mod futures;
mod queue;
mod resources;
mod same_cycle;
mod sched;
mod waits;

pub use futures::{Acquire, Acquired, Delay, Interruptible, Park, Preempt, Sim, Yield};
pub use sched::{Stall, WorkPoint};
pub use waits::WaitId;

use crate::chooser::{Decision, DecisionKind, RunChooser};
use crate::coverage::Coverage;
use crate::lockdep::LockOrder;
use crate::outcome::{Finding, Outcome, OutcomeKind, Subject};
use crate::resource::{Classes, LiveVec, Mode, Name, ResourceId, Resources};
use crate::trace::{Span, Trace};
use crate::{CpuId, Cycle, TaskId};
use queue::{EventQueue, QueuedEvent};
use same_cycle::SameCycle;

/// What a run is allowed, and what it records.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub cpus: u32,
    /// Past this, the run ends in `limit`.
    pub max_time: Cycle,
    /// The event budget: dispatching more events than this ends the run in `limit`.
    pub max_events: u64,
    /// A task on its CPU this long without declaring progress ends the run in `livelock`
    /// (the soft-lockup detector).
    pub watchdog_cycles: u64,
    /// A task asleep on a lock or completion this long without progress ends the run in
    /// `hung` (the hung-task detector).
    pub hung_task_cycles: u64,
    /// Each cost varies by up to this fraction either way, drawn by the chooser.
    pub jitter: f64,
    /// Keep the trace events (for tables and Perfetto), not just their hash.
    pub record_trace: bool,
    /// Hash the trace (`RunReport::trace_hash`). Off only where nothing reads the hash:
    /// `check`'s exploration, which runs its first failing seed again for it.
    pub hash_trace: bool,
    /// CPUs 0..online_cpus start online; the rest of `cpus` start offline.
    pub online_cpus: u32,
    /// The longest interrupt or preemption the chooser may inject (`run.max_stall`); 0: none.
    pub max_stall_cycles: u64,
    /// Record what the run covered (coverage.rs) for `--strategy coverage`.
    pub coverage: bool,
    /// The longest decision vector the run keeps ([`MAX_RECORDED_DECISIONS`] for scenarios):
    /// past it the run keeps none, and its seed replays it.
    pub max_recorded_decisions: usize,
}

/// How long a normal task may keep its CPU while another normal task waits for it, before
/// it yields at its next preemptible point (CFS time slicing; about 1 ms at 2 GHz).
pub const SCHED_SLICE_CYCLES: u64 = 2_000_000;

/// Stall lengths the chooser picks from: `STALL_STEPS` lengths spaced evenly on a log scale
/// from `STALL_MIN_CYCLES` to `run.max_stall`, so a 50-cycle window and a 10 us one are both
/// hit often.
pub const STALL_STEPS: u32 = 32;

/// The shortest stall: about one cache miss plus an interrupt entry.
pub const STALL_MIN_CYCLES: u64 = 20;

/// The longest decision vector a run keeps (4M decisions, 32 MB with their option counts).
/// A run that makes more (a boot of millions of faults) keeps none: it is replayed from its
/// seed, which makes the same decisions; a bundle of it records no vector.
pub const MAX_RECORDED_DECISIONS: usize = 1 << 22;

/// Jitter bands an engine keeps worked out (a power of two).
const JITTER_BANDS: usize = 8;

/// A logical CPU as the host sees it.
#[derive(Clone, Debug)]
pub struct CpuState {
    pub irqs_enabled: bool,
    pub preempt_count: u32,
    /// In the online mask. An offline CPU runs nothing; its tasks wait for it.
    pub online: bool,
    /// Inside a SEAMCALL (between SEAM entry and exit): one instruction for the host, so no
    /// interrupt, IPI or preemption lands here; they wait until it returns.
    pub in_seam: bool,
    current: Option<TaskId>,
    /// Ready tasks in the order they get the CPU: stoppers first, then normal tasks.
    runq: std::collections::VecDeque<TaskId>,
}

/// How a task competes for its CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskPriority {
    /// A kernel thread or user task: preempted at preemptible points by a stopper.
    Normal,
    /// A stop_machine stopper (highest-priority RT): runs as soon as the CPU's current task
    /// reaches a point where it can be preempted, or sleeps.
    Stopper,
    /// An interrupt handler (an IPI's function): runs as soon as the CPU's current task is at
    /// a point with IRQs on, preemption or not; held while IRQs are off.
    Irq,
}

type SpawnedFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// Its start time has not come.
    NotStarted,
    /// Owns its CPU (computing, busy-waiting, or spinning on a lock).
    Running,
    /// Ready, queued behind the task that owns its CPU.
    Runnable,
    /// Off its CPU: sleeping, preempted, or waiting for a sleeping lock.
    Sleeping,
    Finished,
}

/// What a parked task waits for.
#[derive(Clone, Copy, Debug)]
struct Parked {
    reason: &'static str,
    wait: Option<WaitId>,
    /// A spinner with IRQs on (`csd_lock_wait()`): an interrupt queued for its CPU wakes it,
    /// so the handler runs and the spinner looks again.
    irq_wakes: bool,
}

/// What the engine reads of a task on its events. Its name and its stale wakes, read
/// rarely, are kept apart (`Engine::task_names`, `Engine::stale_wakes`): 4096 tasks' states
/// are then 152 bytes each, not 200, and share the caches with less.
struct TaskState {
    cpu: CpuId,
    priority: TaskPriority,
    status: TaskStatus,
    /// Parked (no event) until another task unparks it.
    parked: Option<Parked>,
    last_progress: Cycle,
    /// The resource it is queued on, for the wait-for graph.
    waiting_on: Option<(ResourceId, Mode)>,
    /// In an intentional sleep: the watchdog leaves it alone.
    in_sleep: bool,
    /// Off its CPU because something else was given it for a while (a preemption stall).
    preempted: bool,
    /// When it last joined its CPU's run queue.
    runnable_since: Cycle,
    /// Set by a grant: cycles it waited, read back by the `Acquire` future.
    granted_wait: u64,
    /// The locks it holds, in the order it took them (lockdep and reports read this).
    /// Inline: a task holds a few, and its first lock should not allocate.
    held: smallvec::SmallVec<[ResourceId; 4]>,
    /// Busy in an interruptible period ([`Sim::interruptible`]): the sequence number of
    /// the wake event that ends it, which an interrupt makes stale.
    interruptible: Option<u64>,
    /// The interruptible period ended early.
    interrupted: bool,
    /// Running, but spinning until a wait object's parties act (a retry loop that only
    /// another task can end): an edge of the wait-for graph though the task never parks.
    polling: Option<Parked>,
}

/// The vectors of an engine, empty: what [`Engine::build`] builds into. A new engine's are
/// new; a reset engine's are its previous run's, emptied, so they keep their allocations.
struct Storage {
    heap: Vec<QueuedEvent>,
    same_cycle: SameCycle,
    decision_cpus: Vec<CpuId>,
    cpus: Vec<CpuState>,
    tasks: Vec<TaskState>,
    task_names: Vec<Name>,
    stale_wakes: Vec<u64>,
    resources: Resources,
    classes: Classes,
    waits: Vec<waits::WaitObject>,
    decisions: Vec<u32>,
    decision_options: Vec<u32>,
    recorded: Vec<(u64, Outcome)>,
    scratch_tasks: Vec<TaskId>,
    visit_marks: Vec<u32>,
    pending_spawns: Vec<(TaskId, SpawnedFuture)>,
    /// Lockdep's graphs, emptied.
    lock_order: LockOrder,
    /// The jitter bands worked out so far, and the jitter they are for: a band depends on
    /// nothing else, so a run of the same jitter starts with them.
    jitter_bands: (f64, [(u64, u64); JITTER_BANDS]),
}

impl Default for Storage {
    fn default() -> Storage {
        Storage {
            heap: Vec::with_capacity(64),
            same_cycle: SameCycle::with_capacity(8),
            decision_cpus: Vec::with_capacity(8),
            cpus: Vec::new(),
            tasks: Vec::new(),
            task_names: Vec::new(),
            stale_wakes: Vec::new(),
            resources: Resources::with_capacity(16),
            classes: Classes::with_capacity(8),
            waits: Vec::new(),
            decisions: Vec::new(),
            decision_options: Vec::new(),
            recorded: Vec::new(),
            scratch_tasks: Vec::new(),
            visit_marks: Vec::new(),
            pending_spawns: Vec::new(),
            lock_order: LockOrder::default(),
            // Base 0 has band 0 whatever the jitter: a correct entry to start from.
            jitter_bands: (0.0, [(0, 0); JITTER_BANDS]),
        }
    }
}

impl Storage {
    /// `engine`'s vectors, emptied (what they held is dropped here; its resources and lock
    /// classes are dead entries, made again in place by the next run's `new_resource`).
    fn take_from(engine: &mut Engine) -> Storage {
        fn emptied<T>(vector: &mut Vec<T>) -> Vec<T> {
            let mut vector = std::mem::take(vector);
            vector.clear();
            vector
        }
        fn all_dead<T>(entries: &mut LiveVec<T>) -> LiveVec<T> {
            let mut entries = std::mem::take(entries);
            entries.clear();
            entries
        }
        Storage {
            heap: engine.queue.take_storage(),
            same_cycle: engine.same_cycle.emptied(),
            decision_cpus: emptied(&mut engine.decision_cpus),
            cpus: emptied(&mut engine.cpus),
            tasks: emptied(&mut engine.tasks),
            task_names: emptied(&mut engine.task_names),
            stale_wakes: emptied(&mut engine.stale_wakes),
            resources: all_dead(&mut engine.resources),
            classes: all_dead(&mut engine.classes),
            waits: emptied(&mut engine.waits),
            decisions: emptied(&mut engine.decisions),
            decision_options: emptied(&mut engine.decision_options),
            recorded: emptied(&mut engine.recorded),
            scratch_tasks: emptied(&mut engine.scratch_tasks),
            visit_marks: emptied(&mut engine.visit_marks),
            pending_spawns: emptied(&mut engine.pending_spawns),
            lock_order: {
                let mut lock_order = std::mem::take(&mut engine.lock_order);
                lock_order.clear();
                lock_order
            },
            jitter_bands: (engine.config.jitter, engine.jitter_bands),
        }
    }
}

/// All state of a run that is not a task's own future.
pub struct Engine {
    now: Cycle,
    seq: u64,
    queue: EventQueue,
    /// Task events in `queue` (the rest are watchdog timers).
    queued_task_events: u64,
    /// Events due on the current cycle, in schedule order, each with its task's CPU (tasks
    /// never change CPU), so a pick among 4096 looks up no task.
    same_cycle: SameCycle,
    /// The waiting events' CPUs for a same-cycle decision whose chooser reads them.
    decision_cpus: Vec<CpuId>,
    cpus: Vec<CpuState>,
    online_count: u32,
    tasks: Vec<TaskState>,
    /// Each task's name, by task id. Shared text: a scenario's task names are made once,
    /// and a run's spawn copies a pointer.
    task_names: Vec<Name>,
    /// The sequence numbers (unique to a task event) of wake events that an interrupt made
    /// stale, sorted; each is dropped when it comes due. Most runs have none, and an event
    /// looks for its own by a binary search, so 4096 interrupted CPUs cost no scan.
    stale_wakes: Vec<u64>,
    resources: Resources,
    /// Class name -> dense id, in order of first use.
    /// invariant: no two entries, live or dead, have the same bytes (`Classes::id`).
    classes: Classes,
    waits: Vec<waits::WaitObject>,
    chooser: RunChooser,
    decisions: Vec<u32>,
    decision_options: Vec<u32>,
    /// Decisions made, recorded or not.
    decisions_made: u64,
    stall_points: u64,
    /// Jitter bands already worked out: (base cost, how far either way), by a hash of the
    /// base (a run's busy delays have a handful of base costs).
    jitter_bands: [(u64, u64); JITTER_BANDS],
    lock_order: LockOrder,
    trace: Trace,
    current: Option<TaskId>,
    /// The task `prefetch_next_task` asked the caches for, until the next event is taken.
    prefetched: Option<TaskId>,
    stop: Option<Outcome>,
    /// Findings that do not stop the run (invariants), in the order they were made, with
    /// their place in the order of all findings.
    recorded: Vec<(u64, Outcome)>,
    /// Findings made so far (stops and records), and the place of the stop among them.
    findings_made: u64,
    stop_seq: u64,
    config: EngineConfig,
    /// When the watchdog's timer is due, if one is queued.
    watchdog_timer: Option<Cycle>,
    events: u64,
    scratch_tasks: Vec<TaskId>,
    /// The wait-for search's visited marks: `visit_marks[task] == visit_generation`.
    visit_marks: Vec<u32>,
    visit_generation: u32,
    /// Tasks spawned by running tasks, for the executor to take over after the poll.
    pending_spawns: Vec<(TaskId, SpawnedFuture)>,
    /// `Some` only when `config.coverage` is on.
    pub(crate) coverage: Option<Box<Coverage>>,
}

impl Engine {
    pub(crate) fn new(config: EngineConfig, chooser: RunChooser) -> Engine {
        Engine::build(config, chooser, Storage::default())
    }

    /// Makes this engine the one a new run of `config` starts with, as [`Engine::new`]
    /// builds it, keeping the allocations of its vectors (a run's setup then allocates
    /// none of them).
    pub(crate) fn reset(&mut self, config: EngineConfig, chooser: RunChooser) {
        let storage = Storage::take_from(self);
        *self = Engine::build(config, chooser, storage);
    }

    /// The one constructor: the engine before any task, built into `storage` (emptied).
    fn build(config: EngineConfig, chooser: RunChooser, storage: Storage) -> Engine {
        let Storage {
            heap,
            same_cycle,
            decision_cpus,
            mut cpus,
            tasks,
            task_names,
            stale_wakes,
            resources,
            classes,
            waits,
            mut decisions,
            mut decision_options,
            recorded,
            scratch_tasks,
            visit_marks,
            pending_spawns,
            lock_order,
            jitter_bands: (bands_jitter, bands),
        } = storage;
        decisions.reserve(config.max_recorded_decisions.min(256));
        decision_options.reserve(config.max_recorded_decisions.min(256));
        cpus.extend((0..config.cpus).map(|index| CpuState {
            irqs_enabled: true,
            preempt_count: 0,
            online: index < config.online_cpus,
            in_seam: false,
            current: None,
            runq: std::collections::VecDeque::new(),
        }));
        let online_count = cpus.iter().filter(|cpu| cpu.online).count() as u32;
        Engine {
            now: Cycle::ZERO,
            seq: 0,
            queue: EventQueue::in_storage(heap),
            queued_task_events: 0,
            same_cycle,
            decision_cpus,
            cpus,
            online_count,
            tasks,
            task_names,
            stale_wakes,
            resources,
            classes,
            waits,
            chooser,
            decisions,
            decision_options,
            decisions_made: 0,
            stall_points: 0,
            jitter_bands: if bands_jitter == config.jitter { bands } else { [(0, 0); JITTER_BANDS] },
            lock_order,
            trace: Trace::new(config.record_trace, config.hash_trace),
            current: None,
            prefetched: None,
            stop: None,
            recorded,
            findings_made: 0,
            stop_seq: u64::MAX,
            watchdog_timer: None,
            coverage: config.coverage.then(Box::default),
            config,
            events: 0,
            scratch_tasks,
            visit_marks,
            visit_generation: 0,
            pending_spawns,
        }
    }

    pub fn now(&self) -> Cycle {
        self.now
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The task being polled. Panics outside a poll: that is a bug in the simulator.
    #[inline]
    pub fn current_task(&self) -> TaskId {
        self.current.expect("engine: no task is running")
    }

    pub fn task_cpu(&self, task: TaskId) -> CpuId {
        self.tasks[task.0 as usize].cpu
    }

    pub fn task_name(&self, task: TaskId) -> &str {
        &self.task_names[task.0 as usize]
    }

    pub fn task_priority(&self, task: TaskId) -> TaskPriority {
        self.tasks[task.0 as usize].priority
    }

    pub fn task_status(&self, task: TaskId) -> TaskStatus {
        self.tasks[task.0 as usize].status
    }

    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// The locks `task` holds, in the order it took them.
    pub fn held_by(&self, task: TaskId) -> &[ResourceId] {
        &self.tasks[task.0 as usize].held
    }

    /// Asks the chooser, and records the answer (and how many options it had) in the
    /// decision vector. `cpus` says whose decision it is (see `Decision`).
    #[inline]
    pub fn choose(&mut self, kind: DecisionKind, options: u32, cpus: &[CpuId]) -> u32 {
        if options < 2 {
            return 0;
        }
        let pick = self.chooser.choose(&Decision { kind, options, cpus });
        self.decisions_made += 1;
        if self.coverage.is_some() || self.config.max_recorded_decisions > 0 {
            self.record_decision(kind, options, cpus, pick);
        }
        pick
    }

    /// What a decision leaves besides its count: coverage's tally, and its entry in the
    /// decision vector while the vector is short enough to keep. Out of line: `check`'s
    /// exploration runs keep neither.
    #[inline(never)]
    fn record_decision(&mut self, kind: DecisionKind, options: u32, cpus: &[CpuId], pick: u32) {
        if let Some(coverage) = self.coverage.as_deref_mut() {
            coverage.decision(kind, cpus);
        }
        let most = self.config.max_recorded_decisions;
        if self.decisions.len() < most {
            self.decisions.push(pick);
            self.decision_options.push(options);
        } else if self.decisions_made == most as u64 + 1 {
            // Too long to keep: the vector is dropped, and the run's seed replays it.
            self.decisions = Vec::new();
            self.decision_options = Vec::new();
        }
    }

    /// `base` cycles of work on `cpu`, moved within the jitter band by the chooser.
    #[inline]
    pub fn cost_for(&mut self, cpu: CpuId, base: u64) -> u64 {
        let delta = self.jitter_band(base);
        if delta == 0 {
            return base;
        }
        let options = u32::try_from(2 * delta + 1).unwrap_or(u32::MAX);
        let pick = u64::from(self.choose(DecisionKind::CostJitter, options, &[cpu]));
        base - delta + pick
    }

    /// How far either way `base` may move: `base * jitter`, worked out once per base.
    fn jitter_band(&mut self, base: u64) -> u64 {
        let slot = (base.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - JITTER_BANDS.ilog2())) as usize;
        let (known, delta) = self.jitter_bands[slot];
        if known == base {
            return delta;
        }
        let delta = (base as f64 * self.config.jitter) as u64;
        self.jitter_bands[slot] = (base, delta);
        delta
    }

    /// `base` cycles of work on the current task's CPU, moved within the jitter band.
    pub fn cost(&mut self, base: u64) -> u64 {
        let cpu = self.task_cpu(self.current_task());
        self.cost_for(cpu, base)
    }

    /// Declares that the current task made progress (the watchdog's notion of it).
    #[inline]
    pub fn progress(&mut self) {
        let now = self.now;
        let task = self.current_task();
        self.tasks[task.0 as usize].last_progress = now;
    }

    /// Ends the run after the current poll with `outcome` (the first stop wins).
    pub fn stop(&mut self, outcome: Outcome) {
        if self.stop.is_none() {
            self.stop = Some(outcome);
            self.stop_seq = self.findings_made;
        }
        self.findings_made += 1;
    }

    /// Keeps a finding that does not end the run (an invariant seen broken): the run goes
    /// on so what the host does next is seen, and the finding decides its outcome.
    pub fn record(&mut self, outcome: Outcome) {
        const KEPT: usize = 16;
        if self.recorded.len() < KEPT {
            self.recorded.push((self.findings_made, outcome));
        }
        self.findings_made += 1;
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// A report of the current task: an invariant, a WARN, a broken precondition.
    pub fn report_here(
        &self,
        kind: OutcomeKind,
        name: impl Into<String>,
        detail: impl Into<String>,
        subjects: Vec<Subject>,
    ) -> Outcome {
        let task = self.current;
        let cpu = task.map(|task| self.task_cpu(task));
        Outcome::report(kind, name, detail, (self.now, task, cpu), subjects)
    }

    /// Records a domain event of the current task: `code`, `a`, `b` go into the trace hash;
    /// `text` is built only when the trace is being kept.
    pub fn mark(&mut self, span: Span, code: u32, a: u64, b: u64, text: impl FnOnce() -> String) {
        if !self.trace.is_active() {
            return;
        }
        let task = self.current_task();
        let cpu = self.task_cpu(task);
        let span_word = span as u64;
        self.trace.record(
            self.now,
            cpu,
            task,
            || crate::trace::TraceKind::Mark { span, code, a, b, text: text().into_boxed_str() },
            [0x4d41_524b ^ span_word, u64::from(code), a, b],
        );
    }

    pub fn is_recording(&self) -> bool {
        self.trace.is_recording()
    }

    /// Whether the trace takes events: it hashes or records them (see `Trace::is_active`).
    pub fn is_tracing(&self) -> bool {
        self.trace.is_active()
    }

    #[inline]
    fn schedule_wake(&mut self, task: TaskId, at: Cycle) -> u64 {
        self.seq += 1;
        self.queued_task_events += 1;
        self.queue.push(QueuedEvent::new(at.0, self.seq, task.0));
        self.seq
    }

    /// Declares (or, with `None`, ends) that the current task spins until the parties of
    /// `wait` act: it keeps running, but waits for them as a parked task would, so a cycle
    /// through it is a deadlock the detector names. `reason` says what it waits for.
    pub fn set_polling(&mut self, on: Option<(&'static str, WaitId)>) {
        let task = self.current_task();
        self.tasks[task.0 as usize].polling =
            on.map(|(reason, wait)| Parked { reason, wait: Some(wait), irq_wakes: false });
    }

    #[inline]
    fn trace_task(&mut self, task: TaskId, kind: crate::trace::TraceKind, words: [u64; 4]) {
        let cpu = self.task_cpu(task);
        self.trace.record(self.now, cpu, task, || kind, words);
    }

    /// Takes the next task event, letting the chooser order events due on the same cycle;
    /// watchdog timers come last in their cycle and are handled here.
    ///
    /// Events due on the same cycle wait in `same_cycle`, in the order they were scheduled,
    /// until each is chosen: a barrier that wakes 4096 stoppers at once costs one pass over
    /// the heap, not 4096.
    fn next_event(&mut self) -> Option<(Cycle, TaskId, u64)> {
        while self.same_cycle.is_empty() {
            if self.queued_task_events == 0 {
                return None;
            }
            let first = self.queue.pop()?;
            if !first.is_watchdog() {
                let alone = !matches!(self.queue.peek(), Some(next) if next.at() == first.at() && !next.is_watchdog());
                if alone {
                    // The common case: nothing else is due on this cycle.
                    self.queued_task_events -= 1;
                    return Some((Cycle(first.at()), TaskId(first.task()), first.seq()));
                }
                let cpu = self.task_cpu(TaskId(first.task()));
                self.same_cycle.push(first, cpu);
                break;
            }
            if self.watchdog_timer == Some(Cycle(first.at())) {
                self.watchdog_timer = None;
                self.now = Cycle(first.at());
                self.check_watchdog();
                if self.stop.is_some() {
                    return None;
                }
            }
        }
        let cycle = self.same_cycle.cycle();
        while let Some(next) = self.queue.peek() {
            if next.at() != cycle || next.is_watchdog() {
                break;
            }
            let next = self.queue.pop().expect("peeked");
            let cpu = self.task_cpu(TaskId(next.task()));
            self.same_cycle.push(next, cpu);
        }
        let pick = if self.same_cycle.len() == 1 {
            0
        } else {
            // The CPUs in order, for a chooser or coverage that reads them; else none.
            let mut cpus = std::mem::take(&mut self.decision_cpus);
            cpus.clear();
            if self.chooser.reads_cpus() || self.coverage.is_some() {
                self.same_cycle.waiting_cpus(&mut cpus);
            }
            let options = self.same_cycle.len() as u32;
            let pick = self.choose(DecisionKind::SameCycleOrder, options, &cpus) as usize;
            self.decision_cpus = cpus;
            pick
        };
        let chosen = self.same_cycle.take(pick);
        self.queued_task_events -= 1;
        Some((Cycle(chosen.at()), TaskId(chosen.task()), chosen.seq()))
    }

    /// The outcome of a run that ended with `stop`: a simulator error always; otherwise the
    /// earliest finding, a recorded one (an invariant) or the one that stopped the run; a
    /// time or event limit only when nothing was found; a lock-order inversion only when
    /// the run would otherwise pass.
    pub(crate) fn final_outcome(&mut self, stop: Outcome) -> Outcome {
        if stop.kind == OutcomeKind::Error {
            return stop;
        }
        let recorded = std::mem::take(&mut self.recorded).into_iter().next();
        let outcome = match (stop.kind, recorded) {
            (_, None) => stop,
            (OutcomeKind::Pass | OutcomeKind::Limit, Some((_, first))) => first,
            (_, Some((seq, first))) if seq < self.stop_seq => first,
            (_, Some(_)) => stop,
        };
        if outcome.kind != OutcomeKind::Pass {
            return outcome;
        }
        match self.lock_order_outcome() {
            Some(order) => order,
            None => outcome,
        }
    }
}

/// What the executor does next.
pub(crate) enum Next {
    /// Poll this task.
    Poll(TaskId),
    /// The event only queued its task for its CPU.
    Queued,
    /// The run is over (boxed: the common variants stay two words).
    End(Box<Outcome>),
}

/// What the executor needs from the engine between polls.
impl Engine {
    pub(crate) fn add_task(&mut self, name: Name, cpu: CpuId, start: Cycle) -> TaskId {
        let task = TaskId(self.tasks.len() as u32);
        self.task_names.push(name);
        self.tasks.push(TaskState {
            cpu,
            priority: TaskPriority::Normal,
            status: TaskStatus::NotStarted,
            parked: None,
            last_progress: start,
            waiting_on: None,
            in_sleep: false,
            preempted: false,
            runnable_since: start,
            granted_wait: 0,
            held: smallvec::SmallVec::new(),
            interruptible: None,
            interrupted: false,
            polling: None,
        });
        self.schedule_wake(task, start);
        task
    }

    /// The task whose event the queue holds first, when no same-cycle pick is pending: most
    /// often the next one polled. Its state is asked of the caches now (a hint, which changes
    /// nothing a run sees), so that its load overlaps this poll.
    #[inline]
    pub(crate) fn prefetch_next_task(&mut self) -> Option<TaskId> {
        self.prefetched = None;
        if !self.same_cycle.is_empty() {
            return None;
        }
        let next = self.queue.peek().filter(|event| !event.is_watchdog())?;
        let task = TaskId(next.task());
        crate::prefetch(self.tasks.get(task.0 as usize)?);
        self.prefetched = Some(task);
        Some(task)
    }

    /// Pops the next event and decides whether its task runs now: the task to poll, or the
    /// run's end. `picked` is told the task of the next event as soon as it is known, before
    /// the engine reads its state, unless `prefetch_next_task` asked for that task already: a
    /// hint that must change nothing (the executor asks the caches for the task's future
    /// there).
    pub(crate) fn advance(&mut self, mut picked: impl FnMut(TaskId)) -> Next {
        // Tested before it is taken: taking the `Option` moves a whole `Outcome` every time.
        if self.stop.is_some() {
            return self.end_with_stop();
        }
        let (at, task) = loop {
            let Some((at, task, seq)) = self.next_event() else {
                return self.end_without_events();
            };
            if self.prefetched.take() != Some(task) {
                crate::prefetch(&self.tasks[task.0 as usize]);
                picked(task);
            }
            // The end of an interruptible period that an interrupt cut short.
            if !self.stale_wakes.is_empty()
                && let Ok(index) = self.stale_wakes.binary_search(&seq)
            {
                self.stale_wakes.remove(index);
                continue;
            }
            break (at, task);
        };
        if at > self.config.max_time {
            let what =
                format!("run.max_time ({} cycles) reached with tasks unfinished", self.config.max_time.0);
            return Next::End(Box::new(Outcome::new(
                OutcomeKind::Limit,
                what,
                self.config.max_time,
                Finding::Limit,
            )));
        }
        self.now = at;
        self.events += 1;
        if self.events > self.config.max_events {
            let what =
                format!("run.max_events ({} events) reached with tasks unfinished", self.config.max_events);
            return Next::End(Box::new(Outcome::new(OutcomeKind::Limit, what, at, Finding::Limit)));
        }
        self.dispatch(task)
    }

    #[cold]
    fn end_with_stop(&mut self) -> Next {
        Next::End(Box::new(self.stop.take().expect("a stop is set")))
    }

    /// No event is left, or a watchdog stopped the run while looking for one.
    #[cold]
    fn end_without_events(&mut self) -> Next {
        if self.stop.is_some() {
            return self.end_with_stop();
        }
        if self.tasks.iter().all(|state| state.status == TaskStatus::Finished) {
            return Next::End(Box::new(Outcome::pass()));
        }
        self.report_stuck();
        Next::End(Box::new(self.stop.take().expect("report_stuck stops")))
    }

    /// A busy delay of the current task that ends at `at` before anything else happens:
    /// when no other event is due by then (a watchdog timer due at `at` itself comes after
    /// task events anyway), nothing is pending and no limit is crossed, the task's wake-up
    /// would be popped next, alone on its cycle, and dispatched to the task that still has
    /// its CPU. This does the same here — the clock, the sequence number, the event count —
    /// without going through the queue and the executor, so the task's future goes on
    /// without being polled again from its root. Returns whether it did.
    #[inline]
    pub(crate) fn advance_inline(&mut self, at: Cycle) -> bool {
        let next_is_later = match self.queue.peek() {
            None => true,
            Some(next) => next.at() > at.0 || (next.at() == at.0 && next.is_watchdog()),
        };
        if !next_is_later
            || self.stop.is_some()
            || !self.same_cycle.is_empty()
            || !self.pending_spawns.is_empty()
            || at > self.config.max_time
            || self.events >= self.config.max_events
        {
            return false;
        }
        self.seq += 1;
        self.now = at;
        self.events += 1;
        true
    }

    pub(crate) fn end_poll(&mut self) {
        self.current = None;
    }

    /// The tasks spawned during the poll that ended, if any (most polls spawn none).
    pub(crate) fn take_spawns(&mut self) -> Option<Vec<(TaskId, SpawnedFuture)>> {
        if self.pending_spawns.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.pending_spawns))
    }

    /// Decisions the run made, and whether its vector was dropped for its length.
    pub(crate) fn decisions_made(&self) -> (u64, bool) {
        (self.decisions_made, self.decisions_made > self.config.max_recorded_decisions as u64)
    }

    pub(crate) fn take_decisions(&mut self) -> (Vec<u32>, Vec<u32>) {
        (std::mem::take(&mut self.decisions), std::mem::take(&mut self.decision_options))
    }

    pub(crate) fn stall_points(&self) -> u64 {
        self.stall_points
    }

    pub(crate) fn chooser_diverged(&self) -> bool {
        self.chooser.diverged()
    }

    pub(crate) fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    pub(crate) fn events(&self) -> u64 {
        self.events
    }
}
