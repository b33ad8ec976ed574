//! One run of a scenario: schema -> World (engine + host) -> tasks -> outcome.
//!
//! Like TigerBeetle's VOPR wiring: everything a run needs is built here from the
//! `Scenario` and a seed (or a decision vector), and nothing outside it is read.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use host_model::kernel::cpu::mark;
use host_model::kernel::cpuhp::{cpu_down, cpu_up};
use host_model::kvm::mmu::zap;
use host_model::kvm::tdx_fault::tdp_fault;
use host_model::seamldr::update::seamldr_install_module;
use host_model::tdx::dpamt::{PairSource, tdx_pamt_get, tdx_pamt_put};
use host_model::tdx::enable::{tdx_cpu_enable, tdx_enable};
use host_model::tdx::seamcall::seamcall;
use host_model::{Cpu, Host, HostConfig, HostCosts};
use seam_model::{Hpa, Leaf, LeafCall, Module, RANGE_2M, TdId, TdxStatus};
use sim_core::{
    Chooser, CoverageReport, CpuId, Cycle, EngineConfig, EngineStore, Executor, Exhaustive, Outcome,
    OutcomeKind, PctChooser, PrefixChooser, RandomChooser, ReplayChooser, ResourceStats, RunChooser,
    RunReport, Seed, Span, TraceEvent,
};

use crate::checker::StateChecker;
use crate::metrics::LockPool;
use crate::schema::{Call, Scenario, StepResult, Strategy};

/// How to schedule a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every decision drawn from this seed (`run.strategy = "random"`).
    Random(u64),
    /// PCT from this seed, with `depth - 1` change points among the first `horizon`
    /// preemptible points (`run.strategy = "pct"`).
    Pct { seed: u64, depth: u32, horizon: u64 },
    /// A recorded decision vector.
    Replay(Vec<u32>),
    /// One schedule of the exhaustive enumeration: this prefix, then the default everywhere.
    Prefix(Vec<u32>),
    /// Every cost at the middle of its band, nothing else deviating (`NominalChooser`).
    Nominal,
}

impl Schedule {
    /// The schedule of seed `seed` (or, for `exhaustive`, schedule number `seed`) under the
    /// scenario's strategy, or `strategy` when given.
    pub fn for_seed(scenario: &Scenario, strategy: Option<Strategy>, seed: u64) -> Schedule {
        match strategy.unwrap_or(scenario.run.strategy) {
            Strategy::Random => Schedule::Random(seed),
            Strategy::Pct => {
                Schedule::Pct { seed, depth: scenario.run.pct_depth, horizon: pct_horizon(scenario) }
            }
            Strategy::Exhaustive => Schedule::Prefix(exhaustive_schedule(scenario, seed)),
            Strategy::Coverage => Schedule::Prefix(crate::coverage::coverage_schedule(scenario, seed)),
        }
    }
}

/// PCT's horizon for a scenario: the preemptible points of its default schedule. Computed
/// from the scenario alone, so every run of a check (in any thread) uses the same one.
pub fn pct_horizon(scenario: &Scenario) -> u64 {
    run_once(scenario, &Schedule::Prefix(Vec::new()), false).stall_points.max(1)
}

/// The decision prefix of schedule number `index` of the exhaustive enumeration (the
/// enumeration order of `check`), or of the last schedule if there are fewer.
pub fn exhaustive_schedule(scenario: &Scenario, index: u64) -> Vec<u32> {
    let enumerator = Exhaustive::new(scenario.run.exhaustive_bound);
    let mut prefix = Vec::new();
    for _ in 0..index {
        let result = run_once(scenario, &Schedule::Prefix(prefix.clone()), false);
        match enumerator.next_prefix(&result.decisions, &result.decision_options) {
            Some(next) => prefix = next,
            None => break,
        }
    }
    prefix
}

/// What one run produced.
pub struct RunResult {
    pub outcome: Outcome,
    pub end: Cycle,
    pub trace_hash: u64,
    pub decisions: Vec<u32>,
    /// How many options each decision had.
    pub decision_options: Vec<u32>,
    /// Decisions made; with `decisions_dropped` the run made more than
    /// `sim_core::MAX_RECORDED_DECISIONS`, kept none, and its seed replays it.
    pub decisions_made: u64,
    pub decisions_dropped: bool,
    /// Preemptible points met (where a stall could have been injected).
    pub stall_points: u64,
    /// Lock-order inversions seen, even when the run ended otherwise.
    pub lock_order: Vec<String>,
    /// A replayed vector did not fit this scenario.
    pub diverged: bool,
    pub events: u64,
    pub metrics: Metrics,
    /// Kept only when asked for.
    pub trace: Vec<TraceEvent>,
    /// Per task: its CPU.
    pub task_cpus: Vec<CpuId>,
    /// (name, class, figures) per host lock, by resource id.
    pub resources: std::sync::Arc<[(sim_core::Name, &'static str, ResourceStats)]>,
    /// What the run covered, when asked for (`run_once_with`, `--strategy coverage`).
    pub coverage: Option<CoverageReport>,
    /// Per 2MB range at the end of the run: the host's refcount and whether the module has
    /// the range backed (what `dpamt-refcount-matches-module` compares).
    pub pamt_end: Vec<(i32, bool)>,
}

pub use crate::metrics::Metrics;

/// Every physical page a step names (named or literal), so the page allocator keeps off
/// their 2MB ranges.
fn scenario_pages(scenario: &Scenario) -> Vec<u64> {
    let mut pages: Vec<u64> = scenario.pages.values().copied().collect();
    for step in scenario.tasks.iter().flat_map(|task| &task.steps) {
        match &step.call {
            Call::TdxPamtGet { page, pair } | Call::TdxPamtPut { page, pair } => {
                pages.push(*page);
                pages.extend(pair.iter().flatten());
            }
            Call::TdpFault { page: Some(page), count, .. }
            | Call::InitMemRegion { page: Some(page), count, .. } => {
                pages.extend((0..u64::from(*count)).map(|i| page + i * seam_model::PAGE_SIZE));
            }
            Call::Seamcall(LeafCall::PamtAdd { hpa, pair }) => {
                pages.push(hpa.0);
                pages.extend(pair.iter().map(|p| p.0));
            }
            Call::Seamcall(LeafCall::PamtRemove { hpa } | LeafCall::PageWbinvd { page: hpa }) => {
                pages.push(hpa.0)
            }
            Call::Seamcall(LeafCall::PageAug { page, .. }) => pages.push(page.0),
            _ => {}
        }
    }
    pages
}

/// Names 2MB ranges after the pages a scenario names in them: the shared stem of their
/// names (`A1`, `A2` -> `A`), as the list postings call ranges; hex otherwise.
pub fn range_labels(scenario: &Scenario) -> BTreeMap<usize, String> {
    let mut stems: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (name, &address) in &scenario.pages {
        let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
        stems.entry((address / RANGE_2M) as usize).or_default().push(stem);
    }
    stems
        .into_iter()
        .filter_map(|(range, names)| {
            let first = names[0];
            (!first.is_empty() && names.iter().all(|stem| *stem == first)).then(|| (range, first.to_string()))
        })
        .collect()
}

/// How a page prints in traces: its scenario name, or its address.
pub fn page_label(scenario: &Scenario, page: u64) -> String {
    scenario
        .pages
        .iter()
        .find(|(_, address)| **address == page)
        .map_or_else(|| format!("{page:#x}"), |(name, _)| name.clone())
}

fn step_label(scenario: &Scenario, call: &Call) -> String {
    let page = |address: u64| page_label(scenario, address);
    match call {
        Call::Seamcall(leaf_call) => format!("seamcall {leaf_call}"),
        Call::TdxPamtGet { page: p, pair: Some([a, b]) } => {
            format!("tdx_pamt_get({}, pair {} {})", page(*p), page(*a), page(*b))
        }
        Call::TdxPamtGet { page: p, pair: None } => format!("tdx_pamt_get({})", page(*p)),
        Call::TdxPamtPut { page: p, .. } => format!("tdx_pamt_put({})", page(*p)),
        Call::TdpFault { td, gpa, count, page: p } => format!(
            "tdp_fault(TD {td}, {gpa:#x} x{count}{})",
            p.map_or(String::new(), |p| format!(", {}", page(p)))
        ),
        Call::Zap { td, gpa, count } => format!("zap(TD {td}, {gpa:#x} x{count})"),
        Call::TdxEnable => "tdx_enable()".to_string(),
        Call::TdxCpuEnable => "tdx_cpu_enable()".to_string(),
        Call::CpuUp { target } => format!("cpu_up(CPU {target})"),
        Call::CpuDown { target } => format!("cpu_down(CPU {target})"),
        Call::SeamldrInstallModule { fail_step: Some(step) } => {
            format!("seamldr_install_module(fail {})", step.name())
        }
        Call::SeamldrInstallModule { fail_step: None } => "seamldr_install_module()".to_string(),
        Call::Sleep { cycles } => format!("sleep({cycles} cycles)"),
        Call::Spin { cycles } => format!("spin({cycles} cycles)"),
        Call::TdCreate { .. }
        | Call::VcpuInit { .. }
        | Call::InitMemRegion { .. }
        | Call::TdFinalize { .. }
        | Call::VcpuRun { .. }
        | Call::MemslotDelete { .. }
        | Call::TdDestroy { .. } => {
            crate::kvm_steps::kvm_step_label(call).expect("kvm_step_label names every KVM step")
        }
    }
}

/// One step of a scenario task. The steps a litmus test is made of (SEAMCALLs, DPAMT get
/// and put) are awaited in place; the others, whose futures are much larger (TDX enabling,
/// CPU hotplug, the runtime update, KVM), are boxed when they run, so that every task's
/// future is no larger than the common steps need: a task's future is moved into its box
/// once per run, and its size is what that costs.
async fn run_step(cpu: &Cpu, call: &Call, module: &RefCell<Module>) -> StepResult {
    match call {
        Call::Seamcall(leaf_call) => StepResult::Status(seamcall(cpu, *leaf_call).await.status),
        Call::TdxPamtGet { page, pair } => {
            let source = match pair {
                Some([a, b]) => PairSource::Given([Hpa(*a), Hpa(*b)]),
                None => PairSource::Allocate,
            };
            StepResult::Errno(tdx_pamt_get(cpu, Hpa(*page), source).await)
        }
        Call::TdxPamtPut { page, .. } => {
            tdx_pamt_put(cpu, Hpa(*page)).await;
            StepResult::Errno(Ok(()))
        }
        Call::TdpFault { td, gpa, count, page } => {
            StepResult::Errno(Box::pin(tdp_fault(cpu, TdId(*td), *gpa, *count, page.map(Hpa))).await)
        }
        Call::Zap { td, gpa, count } => StepResult::Errno(Box::pin(zap(cpu, TdId(*td), *gpa, *count)).await),
        Call::TdxEnable => StepResult::Errno(Box::pin(tdx_enable(cpu)).await),
        Call::TdxCpuEnable => {
            // Callers run it pinned, with preemption off.
            cpu.preempt_disable();
            let ret = Box::pin(tdx_cpu_enable(cpu)).await;
            cpu.preempt_enable();
            StepResult::Errno(ret)
        }
        Call::CpuUp { target } => StepResult::Errno(Box::pin(cpu_up(cpu, CpuId(*target))).await),
        Call::CpuDown { target } => StepResult::Errno(Box::pin(cpu_down(cpu, CpuId(*target))).await),
        Call::SeamldrInstallModule { fail_step } => {
            // The fault plan: the step's failure, armed in the module before the update runs.
            if let Some(step) = fail_step {
                step.arm(&mut module.borrow_mut());
            }
            StepResult::Errno(Box::pin(seamldr_install_module(cpu)).await)
        }
        Call::TdCreate { .. }
        | Call::VcpuInit { .. }
        | Call::InitMemRegion { .. }
        | Call::TdFinalize { .. }
        | Call::VcpuRun { .. }
        | Call::MemslotDelete { .. }
        | Call::TdDestroy { .. } => StepResult::Errno(
            Box::pin(crate::kvm_steps::run_kvm_step(cpu, call))
                .await
                .expect("run_kvm_step runs every KVM step"),
        ),
        Call::Sleep { cycles } => {
            cpu.sim.sleep(*cycles).await;
            StepResult::Errno(Ok(()))
        }
        Call::Spin { cycles } => {
            cpu.preempt_disable();
            cpu.sim.delay(*cycles).await;
            cpu.preempt_enable();
            StepResult::Errno(Ok(()))
        }
    }
}

/// Runs `scenario` once.
pub fn run_once(scenario: &Scenario, schedule: &Schedule, record_trace: bool) -> RunResult {
    run_once_with(scenario, schedule, record_trace, false)
}

/// Runs `scenario` once, recording what it covered when `coverage` is on.
pub fn run_once_with(
    scenario: &Scenario,
    schedule: &Schedule,
    record_trace: bool,
    coverage: bool,
) -> RunResult {
    Runner::new(scenario).run_with(schedule, record_trace, coverage)
}

thread_local! {
    /// The engine of this thread's last run, which its next run is built into: a run's
    /// engine is reset, not rebuilt (sim-core's `EngineStore`).
    static ENGINES: EngineStore = EngineStore::default();
    /// The module of this thread's last run, reset for the next (`HostConfig::reset_module`)
    /// once nothing of that run holds it.
    static MODULES: RefCell<Option<Rc<RefCell<Module>>>> = const { RefCell::new(None) };
}

/// The module of a run on `config`: this thread's last one reset when no host, checker or
/// task of its run holds it any more, else a new one. Kept for the thread's next run.
fn module_for_run(config: &HostConfig) -> Rc<RefCell<Module>> {
    MODULES.with(|store| {
        let mut kept = store.borrow_mut();
        let module = match kept.take() {
            Some(module) if Rc::strong_count(&module) == 1 && Rc::weak_count(&module) == 0 => {
                config.reset_module(&mut module.borrow_mut());
                module
            }
            _ => Rc::new(RefCell::new(config.new_module())),
        };
        *kept = Some(module.clone());
        module
    })
}

/// What `check`'s verdict reads of an exploration run (`Runner::explore`).
pub struct Explored {
    pub outcome: Outcome,
    pub metrics: Metrics,
    pub events: u64,
}

/// What every run of a scenario shares, worked out once: the host's configuration (labels,
/// reserved ranges, TDs, costs). Exploring many seeds of one scenario goes through one
/// `Runner`, so a run's setup copies pointers and allocates little.
pub struct Runner<'s> {
    scenario: &'s Scenario,
    host_config: Arc<HostConfig>,
    /// The scenario tasks' names (`task 0`, ...), formatted once: a run's spawn copies a
    /// pointer to each.
    task_names: Vec<sim_core::Name>,
}

impl<'s> Runner<'s> {
    pub fn new(scenario: &'s Scenario) -> Runner<'s> {
        let task_names = (0..scenario.tasks.len()).map(|index| format!("task {index}").into()).collect();
        Runner { scenario, host_config: Arc::new(host_config(scenario)), task_names }
    }

    pub fn scenario(&self) -> &'s Scenario {
        self.scenario
    }

    /// One run from `schedule`; `record_trace` keeps the events (tables, Perfetto).
    pub fn run(&self, schedule: &Schedule, record_trace: bool) -> RunResult {
        self.run_with(schedule, record_trace, false)
    }

    /// One run, recording what it covered when `coverage` is on.
    pub fn run_with(&self, schedule: &Schedule, record_trace: bool, coverage: bool) -> RunResult {
        self.execute(schedule, engine_config(self.scenario, record_trace, coverage), Kept::Everything, None)
    }

    /// One run of `check`'s exploration: what its verdict reads. Neither the trace hash nor
    /// the decision vector is kept: nothing reads them there (`check` runs its first
    /// failing seed again for its hash and its bundle).
    pub fn explore(&self, schedule: &Schedule) -> Explored {
        let result = self.execute(schedule, self.explore_config(), Kept::Verdict, None);
        Explored { outcome: result.outcome, metrics: result.metrics, events: result.events }
    }

    /// The engine of an exploration run: neither the trace hash nor the decision vector kept.
    fn explore_config(&self) -> EngineConfig {
        EngineConfig {
            hash_trace: false,
            max_recorded_decisions: 0,
            ..engine_config(self.scenario, false, false)
        }
    }

    /// [`Runner::explore`] for a judge that pools lock figures itself: the run's locks go
    /// into `locks` (and their totals into `into.locks`) from the engine as they are, and
    /// the metrics returned list none. `check` with one job judges its runs this way, on the
    /// thread that runs them.
    pub fn explore_pooled(&self, schedule: &Schedule, locks: &mut LockPool, into: &mut Metrics) -> Explored {
        let result = self.execute(schedule, self.explore_config(), Kept::Verdict, Some((locks, into)));
        Explored { outcome: result.outcome, metrics: result.metrics, events: result.events }
    }

    /// One run of `schedule`. With `pool`, the run's lock figures go there, not into the
    /// result ([`Runner::explore_pooled`]).
    fn execute(
        &self,
        schedule: &Schedule,
        config: EngineConfig,
        kept: Kept,
        pool: Option<(&mut LockPool, &mut Metrics)>,
    ) -> RunResult {
        let scenario = self.scenario;
        let other = |chooser: Box<dyn Chooser>| RunChooser::Other(chooser);
        let chooser = match schedule {
            Schedule::Random(seed) => RandomChooser::new(Seed(*seed)).into(),
            Schedule::Pct { seed, depth, horizon } => other(Box::new(PctChooser::new(
                Seed(*seed),
                scenario.machine.possible_cpus,
                *depth,
                *horizon,
            ))),
            Schedule::Replay(decisions) => other(Box::new(ReplayChooser::new(decisions.clone()))),
            Schedule::Prefix(prefix) => other(Box::new(PrefixChooser::new(prefix.clone()))),
            Schedule::Nominal => other(Box::new(sim_core::NominalChooser)),
        };
        let mut executor = ENGINES.with(|store| Executor::new_in(store, config, chooser));
        let config = self.host_config.clone();
        let module = module_for_run(&config);
        let checker = Rc::new(StateChecker::new(module.clone()));
        let host = Rc::new(Host::new(executor.sim(), config, module.clone(), checker.clone()));
        for (index, task) in scenario.tasks.iter().enumerate() {
            let host = host.clone();
            let module = module.clone();
            let cpu_id = CpuId(task.cpu);
            executor.spawn(cpu_id, task.start, self.task_names[index].clone(), move |ctx| async move {
                let cpu = Cpu::new(ctx.sim.clone(), ctx.cpu, ctx.task, host);
                for _ in 0..task.repeat {
                    for (step_index, step) in task.steps.iter().enumerate() {
                        if let Some(at) = step.at {
                            let now = cpu.sim.now();
                            if now < at {
                                cpu.sim.sleep(at.since(now)).await;
                            }
                        }
                        cpu.mark(Span::Begin, mark::STEP, step_index as u64, 0, || {
                            step_label(scenario, &step.call)
                        });
                        let result = run_step(&cpu, &step.call, &module).await;
                        cpu.mark(Span::End, mark::STEP, step_index as u64, 0, || {
                            format!("{} = {result}", step.call.name())
                        });
                        if let Some(expected) = step.returns
                            && !expected.matches(result)
                        {
                            let label = step_label(scenario, &step.call);
                            cpu.warn("step", format!("{label} returned {result}, expected {expected}"));
                        }
                        cpu.progress();
                    }
                }
            });
        }
        host_model::workload::spawn_workloads(&mut executor, &host, &scenario.workloads);
        let report = match pool {
            None => executor.run(),
            Some((locks, into)) => executor.run_pooling(|engine| {
                into.add_lock_totals(engine.resource_figures().map(|(_, _, stats)| stats));
                locks.add_borrowed(engine.resource_figures(), into);
            }),
        };
        finish_run(report, &host, &module, &checker, kept)
    }
}

/// What a run's result keeps of the host's end state besides what a verdict reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// `explore`: the outcome, metrics and events; `pamt_end` stays empty.
    Verdict,
    Everything,
}

/// The engine's configuration for a run of `scenario`.
fn engine_config(scenario: &Scenario, record_trace: bool, coverage: bool) -> EngineConfig {
    EngineConfig {
        cpus: scenario.machine.possible_cpus,
        max_time: scenario.run.max_time,
        watchdog_cycles: scenario.run.watchdog.0,
        jitter: scenario.module.jitter,
        record_trace,
        hash_trace: true,
        max_stall_cycles: scenario.run.max_stall.0,
        hung_task_cycles: scenario.run.hung_task.0,
        max_events: scenario.run.max_events,
        online_cpus: scenario.machine.cpus,
        coverage,
        max_recorded_decisions: sim_core::MAX_RECORDED_DECISIONS,
    }
}

/// The host's configuration for every run of `scenario`.
fn host_config(scenario: &Scenario) -> HostConfig {
    let reserved_ranges =
        Arc::new(scenario_pages(scenario).iter().map(|page| (page / RANGE_2M) as usize).collect());
    let (existing_tds, kvm_tds) = crate::kvm_steps::scenario_tds(scenario);
    let labels = range_labels(scenario);
    HostConfig {
        memory_bytes: scenario.machine.memory_bytes,
        ghz: scenario.machine.ghz,
        dpamt: scenario.module.dpamt,
        host_priority: scenario.module.host_priority,
        possible_cpus: scenario.machine.possible_cpus,
        online_cpus: scenario.machine.cpus,
        packages: scenario.machine.packages,
        tdx_initialized: scenario.module.initialized,
        seamret_erratum: scenario.module.seamret_erratum,
        compat_sensitive: scenario.module.compat_sensitive,
        leaf_locks: scenario.module.leaf_locks,
        hint_aug_retries: scenario.host.hint_aug_retries,
        dpamt_design: scenario.host.dpamt,
        enable_design: scenario.host.enable,
        update_design: scenario.host.update,
        sept_busy: scenario.host.sept_busy,
        sept_retries: scenario.host.sept_retries,
        leaf_costs: scenario.module.costs.clone(),
        costs: HostCosts::default(),
        range_lock_names: HostConfig::lock_names_of(&labels),
        range_labels: labels,
        reserved_ranges,
        kvm_tds,
        tds: existing_tds,
        gmem_locality: scenario
            .workloads
            .iter()
            .flat_map(|load| load.td_ids().map(|td| (td, load.locality.0)))
            .collect(),
    }
}

/// The run's result from the engine's report: the livelock explained, the end-of-run
/// checks, the metrics.
fn finish_run(
    report: RunReport,
    host: &Host,
    module: &RefCell<Module>,
    checker: &StateChecker,
    kept: Kept,
) -> RunResult {
    let task_cpus = report.task_cpus;
    let mut outcome = report.outcome;
    if outcome.kind == OutcomeKind::Livelock {
        explain_livelock(host, &report_task_cpus(&outcome, &task_cpus), &mut outcome);
    }
    if outcome.kind == OutcomeKind::Pass
        && let Some(broken) = checker.check_at_end(host)
    {
        outcome = Outcome { cycle: report.end, ..broken };
    }
    // The run is over: its counts move into the metrics.
    let mut host_stats = host.stats.borrow_mut();
    let mut metrics = Metrics {
        seamcalls: std::mem::take(&mut host_stats.seamcalls),
        busy: std::mem::take(&mut host_stats.busy),
        faults: std::mem::take(&mut host_stats.faults),
        sim_cycles: report.end.0,
        kvm: crate::metrics::kvm_of(&host_stats),
        ..Metrics::default()
    };
    drop(host_stats);
    let resources = report.resources;
    metrics.set_run_locks(resources.clone());
    let pamt_end = if kept == Kept::Verdict {
        Vec::new()
    } else {
        let module = module.borrow();
        (0..host.pamt_refcount.len())
            .map(|index| {
                let backed = matches!(module.dpamt(index), seam_model::Dpamt2M::Backed { .. });
                (host.pamt_refcount[index].get(), backed)
            })
            .collect()
    };
    RunResult {
        outcome,
        end: report.end,
        // Only `explore` runs unhashed, and it keeps no `RunResult`.
        trace_hash: report.trace_hash.unwrap_or_default(),
        decisions: report.decisions,
        decision_options: report.decision_options,
        decisions_made: report.decisions_made,
        decisions_dropped: report.decisions_dropped,
        stall_points: report.stall_points,
        lock_order: report.lock_order,
        diverged: report.diverged,
        events: report.events,
        metrics,
        trace: report.trace_events,
        task_cpus,
        resources,
        coverage: report.coverage,
        pamt_end,
    }
}

/// Two runs of one schedule that did not agree (`tdxsim run --check-determinism`).
#[derive(Debug)]
pub struct Nondeterminism {
    pub trace_hashes: [u64; 2],
    /// Where the recorded traces first differ: (index, first run's event, second run's event);
    /// `None` for an event when that run's trace had already ended. `None` altogether when the
    /// kept events are equal and only hashed words differ.
    pub first_difference: Option<(usize, Option<TraceEvent>, Option<TraceEvent>)>,
}

/// Runs `schedule` twice with the trace recorded: `Ok(trace hash)` when both runs agree.
pub fn check_determinism(scenario: &Scenario, schedule: &Schedule) -> Result<u64, Box<Nondeterminism>> {
    let first = run_once(scenario, schedule, true);
    let second = run_once(scenario, schedule, true);
    if first.trace_hash == second.trace_hash {
        return Ok(first.trace_hash);
    }
    Err(Box::new(Nondeterminism {
        trace_hashes: [first.trace_hash, second.trace_hash],
        first_difference: first_trace_difference(&first.trace, &second.trace),
    }))
}

/// The first index where two traces differ, with both events there.
pub fn first_trace_difference(
    first: &[TraceEvent],
    second: &[TraceEvent],
) -> Option<(usize, Option<TraceEvent>, Option<TraceEvent>)> {
    let index = (0..first.len().max(second.len())).find(|&index| first.get(index) != second.get(index))?;
    Some((index, first.get(index).cloned(), second.get(index).cloned()))
}

fn report_task_cpus(outcome: &Outcome, task_cpus: &[CpuId]) -> Vec<CpuId> {
    outcome.tasks().iter().map(|task| task_cpus[task.0 as usize]).collect()
}

/// Appends what the stuck CPU's SEAMCALLs kept returning since its last progress.
fn explain_livelock(host: &Host, cpus: &[CpuId], outcome: &mut Outcome) {
    let stats = host.stats.borrow();
    for cpu in cpus {
        let Some(statuses) = stats.since_progress.get(cpu.0 as usize).filter(|statuses| !statuses.is_empty())
        else {
            continue;
        };
        let mut by_count: Vec<(&(Leaf, TdxStatus), &u64)> =
            statuses.iter().map(|(key, count)| (key, count)).collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = by_count
            .iter()
            .take(4)
            .map(|((leaf, status), count)| format!("{leaf} -> {status} x{count}"))
            .collect();
        outcome.what += &format!("; meanwhile its SEAMCALLs returned: {}", parts.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use sim_core::{TaskId, TraceKind};

    use super::*;

    fn event(cycle: u64, kind: TraceKind) -> TraceEvent {
        TraceEvent { cycle: Cycle(cycle), cpu: CpuId(1), task: TaskId(0), kind }
    }

    /// The end-of-run `dpamt-refcount-matches-module` names the first range whose refcount
    /// and the module's backing disagree, and nothing while they agree.
    #[test]
    fn the_end_check_names_the_first_refcount_the_module_does_not_back() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/library/dpamt/s-d5-prime-pfn-order.toml");
        let scenario = crate::load_file(std::path::Path::new(path)).expect("a library file loads");
        let config = Arc::new(host_config(&scenario));
        let executor =
            Executor::new(engine_config(&scenario, false, false), Box::new(sim_core::NominalChooser));
        let module = Rc::new(RefCell::new(config.new_module()));
        let checker = Rc::new(StateChecker::new(module.clone()));
        let host = Host::new(executor.sim(), config, module, checker.clone());
        assert!(checker.check_at_end(&host).is_none());
        host.pamt_refcount[3].set(1);
        host.pamt_refcount[1].set(2);
        let broken = checker.check_at_end(&host).expect("refcounts the module does not back");
        assert_eq!(broken.kind, OutcomeKind::Invariant);
        assert_eq!(
            broken.what,
            "dpamt-refcount-matches-module: pamt_refcount[A] = 2 but the module has the range unbacked"
        );
    }

    #[test]
    fn first_trace_difference_names_the_first_unequal_or_missing_event() {
        let a = vec![event(1, TraceKind::TaskStart), event(2, TraceKind::TaskEnd)];
        let b = vec![event(1, TraceKind::TaskStart), event(3, TraceKind::TaskEnd)];
        assert_eq!(first_trace_difference(&a, &a), None);
        assert_eq!(first_trace_difference(&a, &b), Some((1, Some(a[1].clone()), Some(b[1].clone()))));
        assert_eq!(first_trace_difference(&a, &a[..1]), Some((1, Some(a[1].clone()), None)));
    }
}
