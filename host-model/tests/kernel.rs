//! The kernel primitives issue 4 needs, on their own: stop_machine, cpuhp, the hotplug lock.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use host_model::kernel::Errno;
use host_model::kernel::completion::OnCpu;
use host_model::kernel::cpuhp::{CpuhpState, cpu_down, cpu_up, cpuhp_setup_state};
use host_model::kernel::mutex::{down_read, up_read};
use host_model::kernel::spinlock::{spin_lock, spin_unlock};
use host_model::kernel::stop_machine::{stop_machine, stop_machine_cpuslocked};
use host_model::{Cpu, DpamtDesign, Host, HostConfig, HostCosts};
use sim_core::{CpuId, Cycle, EngineConfig, Executor, OutcomeKind, RandomChooser, RunReport, Seed};

struct World {
    exec: Executor<'static>,
    host: Rc<Host>,
}

fn world(cpus: u32, online: u32) -> World {
    world_with(cpus, online, 0, Box::new(RandomChooser::new(Seed(1))))
}

/// `world` with stalls up to `max_stall_cycles` and this chooser.
fn world_with(cpus: u32, online: u32, max_stall_cycles: u64, chooser: Box<dyn sim_core::Chooser>) -> World {
    let exec = Executor::new(
        EngineConfig {
            cpus,
            max_time: Cycle(100_000_000),
            watchdog_cycles: 50_000_000,
            jitter: 0.0,
            record_trace: false,
            hash_trace: true,
            max_stall_cycles,
            coverage: false,
            max_recorded_decisions: sim_core::MAX_RECORDED_DECISIONS,
            max_events: u64::MAX,
            hung_task_cycles: 250_000_000,
            online_cpus: online,
        },
        chooser,
    );
    let config = HostConfig {
        memory_bytes: 16 << 20,
        ghz: 2.0,
        dpamt: true,
        host_priority: true,
        possible_cpus: cpus,
        online_cpus: online,
        packages: 1,
        tdx_initialized: false,
        seamret_erratum: false,
        compat_sensitive: true,
        leaf_locks: seam_model::LeafLocks::Interleaved,
        hint_aug_retries: 1,
        dpamt_design: DpamtDesign::DecAndLock,
        enable_design: Default::default(),
        update_design: Default::default(),
        sept_busy: Default::default(),
        sept_retries: host_model::kvm::design::SEPT_RETRIES_DEFAULT,
        leaf_costs: BTreeMap::new(),
        costs: HostCosts::default(),
        range_labels: BTreeMap::new(),
        range_lock_names: BTreeMap::new(),
        reserved_ranges: Default::default(),
        tds: Vec::new(),
        kvm_tds: Vec::new(),
        gmem_locality: Default::default(),
    };
    let module = Rc::new(std::cell::RefCell::new(config.new_module()));
    let host = Rc::new(Host::new(exec.sim(), config, module, Rc::new(host_model::observe::NoObserver)));
    World { exec, host }
}

impl World {
    fn task<F, Fut>(&mut self, cpu: u32, start: u64, name: &str, body: F)
    where
        F: FnOnce(Cpu) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let host = self.host.clone();
        self.exec.spawn(CpuId(cpu), Cycle(start), name.to_string(), move |ctx| {
            body(Cpu::new(ctx.sim, ctx.cpu, ctx.task, host))
        });
    }

    fn run(mut self) -> RunReport {
        self.exec.run()
    }
}

type Log = Rc<RefCell<Vec<(u32, u64, bool)>>>;

/// A stop_machine function that logs (CPU, cycle, IRQs on) and returns `ret_on_cpu1` on CPU 1.
fn logging(log: &Log, ret_on_cpu1: i32) -> OnCpu<i32> {
    let log = log.clone();
    Rc::new(move |cpu: Cpu| {
        let log = log.clone();
        Box::pin(async move {
            let irqs_on = cpu.sim.with(|engine| engine.cpu(cpu.id).irqs_enabled);
            log.borrow_mut().push((cpu.id.0, cpu.sim.now().0, irqs_on));
            cpu.work(1_000).await;
            if cpu.id.0 == 1 { ret_on_cpu1 } else { 0 }
        })
    })
}

#[test]
fn stop_machine_runs_the_function_on_every_online_cpu_with_irqs_off() {
    let mut world = world(4, 3);
    let log: Log = Rc::default();
    let result: Rc<RefCell<Option<Result<(), i32>>>> = Rc::default();
    let (function, slot) = (logging(&log, -16), result.clone());
    let lock = world.host.cpu_hotplug_lock;
    world.task(0, 0, "updater", move |cpu| async move {
        let result = stop_machine(&cpu, lock, move |on| function(on)).await;
        *slot.borrow_mut() = Some(result);
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    let log = log.borrow();
    let cpus: BTreeSet<u32> = log.iter().map(|&(cpu, _, _)| cpu).collect();
    assert_eq!(cpus, BTreeSet::from([0, 1, 2]), "not the offline CPU 3");
    assert!(log.iter().all(|&(_, _, irqs_on)| !irqs_on), "{log:?}");
    assert_eq!(*result.borrow(), Some(Err(-16)), "an error on any CPU is the result");
}

#[test]
fn stop_machine_waits_for_a_cpu_inside_a_spinlock() {
    // U7: a preempt-disabled section (a spinlock held for 500k cycles) delays the update.
    let mut world = world(2, 2);
    let log: Log = Rc::default();
    let function = logging(&log, 0);
    let (lock, spin) = (world.host.cpu_hotplug_lock, world.host.dpamt_lock);
    world.task(1, 0, "dpamt", move |cpu| async move {
        spin_lock(&cpu, spin).await;
        cpu.sim.delay(500_000).await;
        spin_unlock(&cpu, spin);
        cpu.work(100).await;
    });
    world.task(0, 1_000, "updater", move |cpu| async move {
        let _ = stop_machine(&cpu, lock, move |on| function(on)).await;
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    let log = log.borrow();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter().all(|&(_, at, _)| at >= 500_000),
        "no CPU runs the function before the unlock: {log:?}"
    );
}

#[test]
fn stop_machine_cpuslocked_without_the_hotplug_lock_is_a_broken_precondition() {
    let mut world = world(2, 2);
    let log: Log = Rc::default();
    let function = logging(&log, 0);
    let lock = world.host.cpu_hotplug_lock;
    world.task(0, 0, "updater", move |cpu| async move {
        let _ = stop_machine_cpuslocked(&cpu, lock, move |on| function(on)).await;
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Error);
    assert!(
        report.outcome.what.contains("stop_machine_cpuslocked: lockdep_assert_cpus_held() failed"),
        "{}",
        report.outcome.what
    );
}

#[test]
fn cpus_read_lock_then_stop_machine_deadlocks_against_a_pending_hotplug_writer() {
    // U3: the updater takes cpus_read_lock(), a cpu_up() queues as writer, and stop_machine()
    // (not _cpuslocked) takes the read lock again.
    let mut world = world(3, 2);
    let log: Log = Rc::default();
    let function = logging(&log, 0);
    let lock = world.host.cpu_hotplug_lock;
    world.task(0, 0, "updater", move |cpu| async move {
        down_read(&cpu, lock).await;
        cpu.sim.sleep(10_000).await;
        let _ = stop_machine(&cpu, lock, move |on| function(on)).await;
        up_read(&cpu, lock);
    });
    world.task(1, 1_000, "hotplug", |cpu| async move {
        let _ = cpu_up(&cpu, CpuId(2)).await;
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Deadlock, "{}", report.outcome);
    assert!(report.outcome.what.contains("cpu_hotplug_lock"), "{}", report.outcome.what);
    assert!(log.borrow().is_empty(), "the update never ran");
}

fn callback(
    log: &Rc<RefCell<Vec<String>>>,
    what: &'static str,
    fail_on: Option<u32>,
) -> OnCpu<Result<(), Errno>> {
    let log = log.clone();
    Rc::new(move |cpu: Cpu| {
        let log = log.clone();
        Box::pin(async move {
            log.borrow_mut().push(format!("{what} on {}", cpu.id.0));
            if fail_on == Some(cpu.id.0) { Err(Errno::EBUSY) } else { Ok(()) }
        })
    })
}

#[test]
fn cpuhp_states_run_on_every_cpu_and_a_failing_bring_up_rolls_back() {
    let mut world = world(3, 2);
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let states = [
        CpuhpState {
            name: "a",
            startup: callback(&log, "a up", None),
            teardown: Some(callback(&log, "a down", None)),
        },
        CpuhpState {
            name: "b",
            startup: callback(&log, "b up", Some(2)),
            teardown: Some(callback(&log, "b down", None)),
        },
    ];
    let results: Rc<RefCell<Vec<Result<(), Errno>>>> = Rc::default();
    let slot = results.clone();
    world.task(0, 0, "setup", move |cpu| async move {
        for state in states {
            let result = cpuhp_setup_state(&cpu, state).await;
            slot.borrow_mut().push(result);
        }
        let result = cpu_up(&cpu, CpuId(2)).await;
        slot.borrow_mut().push(result);
        let online = cpu.sim.with(|engine| engine.cpu(CpuId(2)).online);
        assert!(!online, "a failed bring-up leaves the CPU offline");
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    assert_eq!(*results.borrow(), vec![Ok(()), Ok(()), Err(Errno::EBUSY)]);
    assert_eq!(
        *log.borrow(),
        ["a up on 0", "a up on 1", "b up on 0", "b up on 1", "a up on 2", "b up on 2", "a down on 2"]
    );
}

#[test]
fn a_refused_cpu_down_leaves_the_cpu_online() {
    let mut world = world(2, 2);
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let state = CpuhpState {
        name: "t",
        startup: callback(&log, "up", None),
        teardown: Some(callback(&log, "down", Some(1))),
    };
    world.task(0, 0, "admin", move |cpu| async move {
        cpuhp_setup_state(&cpu, state).await.unwrap();
        assert_eq!(cpu_down(&cpu, CpuId(1)).await, Err(Errno::EBUSY));
        assert!(cpu.sim.with(|engine| engine.cpu(CpuId(1)).online));
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    assert_eq!(*log.borrow(), ["up on 0", "up on 1", "down on 1"]);
}

#[test]
fn an_ipi_waits_while_the_target_has_irqs_off_and_interrupts_preempt_disabled_code() {
    use host_model::kernel::completion::on_each_cpu;
    let mut world = world(2, 2);
    let log: Log = Rc::default();
    let function = logging(&log, 0);
    world.task(1, 0, "irqs-off", |cpu| async move {
        // IRQs off for 100k cycles, then preemption off (IRQs on) for 100k more.
        let flags = cpu.local_irq_save();
        cpu.work(100_000).await;
        cpu.local_irq_restore(flags);
        cpu.preempt_disable();
        for _ in 0..10 {
            cpu.work(10_000).await;
        }
        cpu.preempt_enable();
    });
    world.task(0, 1_000, "sender", move |cpu| async move {
        let _ = on_each_cpu(&cpu, function).await;
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    let log = log.borrow();
    let on_cpu1 = log.iter().find(|&&(cpu, _, _)| cpu == 1).expect("the handler ran on CPU 1");
    // Held until IRQs came back on (100k), taken at the next point after that, before the
    // preempt-disabled stretch ended (200k), and run with IRQs off.
    assert!((100_000..120_000).contains(&on_cpu1.1), "{on_cpu1:?}");
    assert!(!on_cpu1.2);
}

/// Stalls CPU 1 once, at its first stall point, with the longest interrupt; no other
/// deviation from the default.
struct OneLongIrqOnCpu1 {
    stalled: bool,
}

impl sim_core::Chooser for OneLongIrqOnCpu1 {
    fn choose(&mut self, decision: &sim_core::Decision<'_>) -> u32 {
        if decision.kind == sim_core::DecisionKind::Stall && decision.cpus == [CpuId(1)] && !self.stalled {
            self.stalled = true;
            return decision.options - 1;
        }
        0
    }
}

#[test]
fn an_ipi_sent_while_its_cpu_serves_an_interrupt_lands_when_that_interrupt_returns() {
    use host_model::kernel::completion::on_each_cpu;
    let stall = 100_000;
    let mut world = world_with(2, 2, stall, Box::new(OneLongIrqOnCpu1 { stalled: false }));
    let log: Log = Rc::default();
    let function = logging(&log, 0);
    let done: Rc<RefCell<Vec<u64>>> = Rc::default();
    let worked = done.clone();
    world.task(1, 0, "worker", move |cpu| async move {
        // Ten units of work with IRQs on: the first one's stall point takes the interrupt.
        for _ in 0..10 {
            cpu.work(10_000).await;
            worked.borrow_mut().push(cpu.sim.now().0);
        }
    });
    world.task(0, 1_000, "sender", move |cpu| async move {
        let _ = on_each_cpu(&cpu, function).await;
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    let on_cpu1 = log.borrow().iter().find(|&&(cpu, _, _)| cpu == 1).map(|&(_, at, _)| at).unwrap();
    let first_unit = done.borrow()[0];
    // The IPI came in during the 100k-cycle interrupt; it ran as that interrupt returned,
    // before the interrupted unit of work went on (it ends 10k cycles after the stall).
    assert!(on_cpu1 >= stall, "the handler ran at {on_cpu1}, inside the interrupt");
    assert!(
        on_cpu1 < first_unit,
        "the handler ran at {on_cpu1}, after the unit it interrupted ({first_unit})"
    );
}

#[test]
fn a_deadlock_through_stop_machine_and_a_spinning_cpu_names_its_cycle() {
    // CPU 1's task spins with preemption off for a flag that the updater on CPU 0 sets only
    // after stop_machine() returns: CPU 1's stopper can never run there, the updater waits
    // for the stoppers, the stoppers for each other at their barrier. The wait-for graph
    // goes through a completion, the barrier and a CPU, and the finding names that cycle
    // instead of "no task can run".
    let mut world = world(2, 2);
    let hotplug = world.host.cpu_hotplug_lock;
    let function = logging(&Log::default(), 0);
    let flag = world.exec.sim().with(|engine| engine.new_wait());
    let updater = world.exec.sim().with(|engine| engine.num_tasks() as u32);
    world.task(0, 0, "updater", move |cpu| async move {
        down_read(&cpu, hotplug).await;
        let _ = stop_machine_cpuslocked(&cpu, hotplug, move |on| function(on)).await;
        up_read(&cpu, hotplug);
    });
    world.task(1, 100, "spinner", move |cpu| async move {
        cpu.preempt_disable();
        cpu.sim.with(|engine| engine.wait_add_party(flag, sim_core::TaskId(updater)));
        cpu.sim.park_on(sim_core::WaitKind::Spin, "the flag", flag).await;
        cpu.preempt_enable();
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Deadlock, "{}", report.outcome);
    let what = &report.outcome.what;
    assert!(what.starts_with("wait cycle: "), "{what}");
    assert!(what.contains("CPU 1 (spinner) waits for the flag from CPU 0 (updater)"), "{what}");
    assert!(
        what.contains("CPU 1 (migration/1) waits for its CPU, which CPU 1 (spinner) will not give up"),
        "{what}"
    );
    assert!(
        what.contains("CPU 0 (updater) holds cpu_hotplug_lock and waits for the stoppers (stop_machine) from CPU 0 (migration/0)"),
        "{what}"
    );
    let sim_core::Finding::WaitCycle(cycle) = &report.outcome.finding else { panic!("a typed cycle") };
    assert_eq!(cycle.len(), 4, "updater, both stoppers, spinner: {cycle:?}");
}

#[test]
fn an_ipi_waits_for_the_seamcall_its_cpu_is_in() {
    // A SEAMCALL is one instruction: an IPI sent while CPU 1 is inside one (IRQs on,
    // preemption off) runs after SEAM exit, never between the module's begin and finish.
    let mut world = world(2, 2);
    let log: Log = Rc::default();
    let in_seam: Rc<RefCell<Vec<bool>>> = Rc::default();
    let seen = in_seam.clone();
    let returned: Rc<RefCell<u64>> = Rc::default();
    let returned_at = returned.clone();
    world.task(1, 0, "seamcaller", move |cpu| async move {
        let field = seam_model::call::metadata::FIELD_MODULE_HV;
        let _ = host_model::tdx::seamcall::seamcall(&cpu, seam_model::LeafCall::SysRd { field }).await;
        *returned_at.borrow_mut() = cpu.sim.now().0;
    });
    let handler_log = log.clone();
    world.task(0, 1_500, "sender", move |cpu| async move {
        let seen = seen.clone();
        let log = handler_log.clone();
        let handler: OnCpu<()> = Rc::new(move |on: Cpu| {
            let seen = seen.clone();
            let log = log.clone();
            Box::pin(async move {
                seen.borrow_mut().push(on.sim.with(|engine| engine.cpu(on.id).in_seam));
                log.borrow_mut().push((on.id.0, on.sim.now().0, false));
            })
        });
        let _ = host_model::kernel::completion::on_each_cpu(&cpu, handler).await;
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    assert_eq!(*in_seam.borrow(), [false, false], "no handler ran inside SEAM");
    let on_cpu1 = log.borrow().iter().find(|&&(cpu, _, _)| cpu == 1).map(|&(_, at, _)| at).unwrap();
    let returned = *returned.borrow();
    assert!(returned > 1_500, "the IPI was sent while the SEAMCALL ran (it returned at {returned})");
    assert!(on_cpu1 >= returned, "the handler ran at {on_cpu1}, before the SEAMCALL returned at {returned}");
}
