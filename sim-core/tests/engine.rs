//! Engine behaviour: time, same-cycle choices and replay, queued resources, and the three
//! detectors (wait cycle, watchdog, time limit).

use sim_core::*;

fn config(cpus: u32, jitter: f64) -> EngineConfig {
    EngineConfig {
        cpus,
        max_time: Cycle(1_000_000),
        watchdog_cycles: 100_000,
        jitter,
        record_trace: true,
        hash_trace: true,
        max_stall_cycles: 0,
        coverage: false,
        max_recorded_decisions: sim_core::MAX_RECORDED_DECISIONS,
        max_events: u64::MAX,
        hung_task_cycles: 500_000,
        online_cpus: u32::MAX,
    }
}

fn executor(cpus: u32, jitter: f64, seed: u64) -> Executor<'static> {
    Executor::new(config(cpus, jitter), Box::new(RandomChooser::new(Seed(seed))))
}

fn marks(report: &RunReport) -> Vec<(u64, u64)> {
    report
        .trace_events
        .iter()
        .filter_map(|event| match event.kind {
            TraceKind::Mark { a, b, .. } => Some((a, b)),
            _ => None,
        })
        .collect()
}

#[test]
fn delays_advance_the_clock_and_the_run_passes() {
    let mut exec = executor(2, 0.0, 0);
    for cpu in 0..2 {
        exec.spawn(CpuId(cpu), Cycle(10 + u64::from(cpu)), format!("t{cpu}"), move |ctx| async move {
            ctx.sim.delay(100 * u64::from(cpu + 1)).await;
            ctx.sim.with(|e| e.progress());
        });
    }
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    assert_eq!(report.end, Cycle(211));
    assert!(report.decisions.is_empty(), "distinct cycles need no choice");
}

#[test]
fn same_cycle_events_are_chosen_and_a_replay_repeats_the_run() {
    let build = |chooser: Box<dyn Chooser>| {
        let mut exec = Executor::new(config(3, 0.0), chooser);
        let lock = exec.sim().with(|e| e.new_resource("L", "test", 0));
        for cpu in 0..3 {
            exec.spawn(CpuId(cpu), Cycle(0), format!("t{cpu}"), move |ctx| async move {
                ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
                ctx.sim.with(|e| e.mark(Span::Instant, 1, u64::from(cpu), 0, || format!("cpu {cpu} in")));
                ctx.sim.delay(10).await;
                ctx.sim.release(lock);
            });
        }
        exec.run()
    };
    let first = build(Box::new(RandomChooser::new(Seed(7))));
    assert_eq!(first.outcome.kind, OutcomeKind::Pass);
    assert!(!first.decisions.is_empty());
    let replay = build(Box::new(ReplayChooser::new(first.decisions.clone())));
    assert_eq!(replay.trace_hash, first.trace_hash);
    assert!(!replay.diverged);
    // Over seeds, every CPU gets to be first into the lock.
    let mut winners = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let report = build(Box::new(RandomChooser::new(Seed(seed))));
        winners.insert(marks(&report)[0].0);
    }
    assert_eq!(winners.len(), 3);
}

#[test]
fn a_contended_lock_is_handed_over_fifo_and_counted() {
    let mut exec = executor(3, 0.0, 0);
    let lock = exec.sim().with(|e| e.new_resource("pamt_lock", "spinlock", 200));
    for cpu in 0..3u32 {
        exec.spawn(CpuId(cpu), Cycle(u64::from(cpu)), format!("t{cpu}"), move |ctx| async move {
            let got = ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
            let now = ctx.sim.now();
            ctx.sim.with(|e| e.mark(Span::Instant, 2, now.0, got.waited_cycles, String::new));
            ctx.sim.delay(1_000).await;
            ctx.sim.release(lock);
        });
    }
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    // t0 at 0; t1 queued at 1, gets it at 1000 + 200 hand-off; t2 at 2200 + 200.
    assert_eq!(marks(&report), vec![(0, 0), (1200, 1199), (2400, 2398)]);
    let (_, _, stats) = &report.resources[0];
    assert_eq!((stats.acquisitions, stats.contended, stats.wait_cycles), (3, 2, 1199 + 2398));
    // lockstat's figures: the longest wait, and each hold from running with the lock to the
    // release (1000 cycles each; the hand-off is wait, not hold).
    assert_eq!(stats.wait_max_cycles, 2398);
    assert_eq!((stats.hold_cycles, stats.hold_max_cycles), (3000, 1000));
    assert_eq!(stats.wait_histogram.count(), 2, "one wait per contended acquisition");
    assert_eq!(stats.wait_histogram.max(), 2398);
    let p50 = stats.wait_histogram.quantile(0.5);
    assert!((1199..=1199 + 1199 / 8).contains(&p50), "p50 {p50} is the shorter wait, within a bucket");
}

#[test]
fn ab_ba_is_a_deadlock_naming_both_locks_and_cpus() {
    let mut exec = executor(2, 0.0, 0);
    let (a, b) = exec.sim().with(|e| (e.new_resource("rw[A]", "rw", 50), e.new_resource("rw[B]", "rw", 50)));
    for (cpu, first, second) in [(0, a, b), (1, b, a)] {
        exec.spawn(CpuId(cpu), Cycle(0), format!("t{cpu}"), move |ctx| async move {
            ctx.sim.acquire(first, Mode::Exclusive, WaitKind::Spin).await;
            ctx.sim.delay(100).await;
            ctx.sim.acquire(second, Mode::Shared, WaitKind::Spin).await;
            ctx.sim.release(second);
            ctx.sim.release(first);
        });
    }
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Deadlock);
    let what = &report.outcome.what;
    assert!(what.contains("CPU 0 (t0) holds rw[A] and spins on rw[B] (read) held by CPU 1"), "{what}");
    assert!(what.contains("CPU 1 (t1) holds rw[B] and spins on rw[A] (read) held by CPU 0"), "{what}");
    assert_eq!(report.outcome.tasks().len(), 2);
}

#[test]
fn a_reader_queues_behind_a_waiting_writer() {
    // Fair queueing: once a writer waits, a new reader does not overtake it.
    let mut exec = executor(3, 0.0, 0);
    let lock = exec.sim().with(|e| e.new_resource("rwsem", "rwsem", 0));
    exec.spawn(CpuId(0), Cycle(0), "reader0", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Sleep).await;
        ctx.sim.delay(1_000).await;
        ctx.sim.release(lock);
    });
    exec.spawn(CpuId(1), Cycle(10), "writer", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Sleep).await;
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, 1, now, String::new));
        ctx.sim.delay(500).await;
        ctx.sim.release(lock);
    });
    exec.spawn(CpuId(2), Cycle(20), "reader2", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Sleep).await;
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, 2, now, String::new));
        ctx.sim.release(lock);
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    assert_eq!(marks(&report), vec![(1, 1_000), (2, 1_500)]);
}

#[test]
fn taking_a_held_lock_again_is_a_self_deadlock() {
    let mut exec = executor(1, 0.0, 0);
    let lock = exec.sim().with(|e| e.new_resource("dpamt_lock", "spinlock", 0));
    exec.spawn(CpuId(0), Cycle(0), "t", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Deadlock);
    assert!(
        report.outcome.what.contains("takes dpamt_lock (write) again while holding it"),
        "{}",
        report.outcome.what
    );
}

#[test]
fn a_busy_loop_without_progress_trips_the_watchdog() {
    let mut exec = executor(1, 0.0, 0);
    exec.spawn(CpuId(0), Cycle(0), "retry", |ctx| async move {
        loop {
            ctx.sim.delay(1_000).await;
        }
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Livelock);
    assert!(report.outcome.what.starts_with("CPU 0 (retry) made no progress"), "{}", report.outcome.what);
    assert_eq!(report.end.0, 100_000, "the watchdog fires at its limit");
}

#[test]
fn progress_keeps_the_watchdog_quiet_until_max_time() {
    let mut exec = executor(1, 0.0, 0);
    exec.spawn(CpuId(0), Cycle(0), "worker", |ctx| async move {
        loop {
            ctx.sim.delay(1_000).await;
            ctx.sim.with(|e| e.progress());
        }
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Limit);
}

#[test]
fn a_sleeping_task_frees_its_cpu_for_another() {
    let mut exec = executor(1, 0.0, 0);
    for (name, start) in [("a", 0), ("b", 1)] {
        exec.spawn(CpuId(0), Cycle(start), name, |ctx| async move {
            ctx.sim.delay(100).await;
            ctx.sim.sleep(1_000).await;
            ctx.sim.delay(100).await;
        });
    }
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    // a: 0..100 busy, sleeps to 1100, then 1100..1200. b waits for the CPU until 100,
    // busy to 200, sleeps to 1200, runs 1200..1300.
    assert_eq!(report.end, Cycle(1_300));
}

#[test]
fn finishing_with_a_lock_held_is_reported() {
    let mut exec = executor(1, 0.0, 0);
    let lock = exec.sim().with(|e| e.new_resource("dpamt_lock", "spinlock", 0));
    exec.spawn(CpuId(0), Cycle(0), "leaker", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Warn);
    assert!(report.outcome.what.contains("finished holding dpamt_lock"));
}

#[test]
fn jitter_moves_costs_within_the_band_and_is_seeded() {
    let end = |seed| {
        let mut exec = executor(1, 0.1, seed);
        exec.spawn(CpuId(0), Cycle(0), "t", |ctx| async move {
            let cost = ctx.sim.with(|e| e.cost(1_000));
            ctx.sim.delay(cost).await;
        });
        exec.run().end.0
    };
    let ends: Vec<u64> = (0..20).map(end).collect();
    assert!(ends.iter().all(|&e| (900..=1100).contains(&e)), "{ends:?}");
    assert_eq!(end(3), end(3));
    assert!(ends.iter().any(|&e| e != ends[0]));
}

#[test]
fn a_run_past_the_decision_limit_keeps_no_vector_but_the_same_seed_makes_the_same_run() {
    let run = |limit: usize| {
        let config = EngineConfig { max_recorded_decisions: limit, ..config(1, 0.1) };
        let mut exec = Executor::new(config, Box::new(RandomChooser::new(Seed(7))));
        exec.spawn(CpuId(0), Cycle(0), "t", |ctx| async move {
            for _ in 0..100 {
                let cost = ctx.sim.with(|e| e.cost(1_000));
                ctx.sim.delay(cost).await;
            }
        });
        exec.run()
    };
    let kept = run(100);
    assert_eq!((kept.decisions.len(), kept.decisions_made, kept.decisions_dropped), (100, 100, false));
    let dropped = run(99);
    assert!(dropped.decisions.is_empty() && dropped.decision_options.is_empty());
    assert_eq!((dropped.decisions_made, dropped.decisions_dropped), (100, true));
    assert_eq!((dropped.trace_hash, dropped.end), (kept.trace_hash, kept.end), "recording changes nothing");
}

#[test]
fn an_inversion_that_did_not_deadlock_ends_the_run_in_lock_order() {
    // CPU 0 takes A then B and is done before CPU 1 takes B then A: no deadlock this time,
    // but the orders are opposite.
    let mut exec = executor(2, 0.0, 0);
    let (a, b) = exec.sim().with(|e| (e.new_resource("A", "lock-a", 0), e.new_resource("B", "lock-b", 0)));
    for (cpu, start, first, second) in [(0, 0, a, b), (1, 1_000, b, a)] {
        exec.spawn(CpuId(cpu), Cycle(start), format!("t{cpu}"), move |ctx| async move {
            ctx.sim.acquire(first, Mode::Exclusive, WaitKind::Spin).await;
            ctx.sim.acquire(second, Mode::Exclusive, WaitKind::Spin).await;
            ctx.sim.delay(10).await;
            ctx.sim.release(second);
            ctx.sim.release(first);
        });
    }
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::LockOrder);
    assert_eq!(
        report.outcome.what,
        "lock-order inversion: CPU 1 (task 1) takes A while holding B at cycle 1000, but CPU 0 (task 0) took B while holding A at cycle 0"
    );
    // Instances and classes both closed a cycle: one inversion, reported once.
    assert_eq!(report.lock_order.len(), 1);
}

#[test]
fn interrupts_land_wherever_irqs_are_on_and_preemptions_only_where_preemption_is_on_too() {
    let mut config = config(1, 0.0);
    config.max_stall_cycles = 20_000;
    // Count what 3000 interruptible points give, with preemption on, then off, then IRQs off.
    let run = |seed: u64| {
        let mut exec = Executor::new(config.clone(), Box::new(RandomChooser::new(Seed(seed))));
        exec.spawn(CpuId(0), Cycle(0), "t", |ctx| async move {
            let mut counts = [0u64; 5];
            for phase in 0..3 {
                match phase {
                    1 => ctx.sim.with(|e| e.cpu_mut(CpuId(0)).preempt_count += 1),
                    2 => ctx.sim.with(|e| e.cpu_mut(CpuId(0)).irqs_enabled = false),
                    _ => {}
                }
                for _ in 0..1_000 {
                    match ctx.sim.with(|e| e.stall_point()) {
                        Stall::None => {}
                        Stall::Irq(cycles) => {
                            assert!((STALL_MIN_CYCLES..=20_000).contains(&cycles));
                            counts[phase] += 1;
                        }
                        Stall::Preempt(cycles) => {
                            assert_eq!(phase, 0, "a preemption only where preemption is on");
                            assert!((STALL_MIN_CYCLES..=20_000).contains(&cycles));
                            counts[3] += 1;
                        }
                    }
                }
            }
            assert_eq!(counts[2], 0, "nothing lands with IRQs off");
            ctx.sim.with(|e| e.mark(Span::Instant, 9, counts[0], counts[1], String::new));
            ctx.sim.with(|e| e.mark(Span::Instant, 9, counts[3], 0, String::new));
        });
        let report = exec.run();
        assert_eq!(report.stall_points, 2_000, "points with IRQs off are not counted");
        let marks = marks(&report);
        (marks[0].0, marks[0].1, marks[1].0)
    };
    let (mut irq_on, mut irq_off, mut preempt) = (0, 0, 0);
    for seed in 0..20 {
        let (a, b, c) = run(seed);
        irq_on += a;
        irq_off += b;
        preempt += c;
    }
    assert!(irq_off > 0, "interrupts land inside preempt-off sections");
    assert!(preempt > 0 && irq_on > 0, "both kinds where preemption is on");
}

#[test]
fn stall_lengths_are_log_spaced_from_the_shortest_to_max_stall() {
    let mut config = config(1, 0.0);
    config.max_stall_cycles = 20_000;
    let mut exec =
        Executor::new(config, Box::new(ReplayChooser::new((1..=STALL_STEPS).flat_map(|s| [s, 0]).collect())));
    exec.spawn(CpuId(0), Cycle(0), "t", |ctx| async move {
        ctx.sim.with(|e| e.cpu_mut(CpuId(0)).preempt_count += 1);
        let mut lengths = Vec::new();
        for _ in 0..STALL_STEPS {
            match ctx.sim.with(|e| e.stall_point()) {
                Stall::Irq(cycles) => lengths.push(cycles),
                other => panic!("{other:?}"),
            }
            ctx.sim.with(|e| e.stall_point());
        }
        assert_eq!(lengths[0], STALL_MIN_CYCLES);
        assert_eq!(*lengths.last().unwrap(), 20_000);
        assert!(lengths.windows(2).all(|pair| pair[0] < pair[1]));
        // Log-spaced: a ~50-cycle and a ~10 us window each have steps near them.
        assert!(lengths.iter().any(|&l| (40..=80).contains(&l)));
        assert!(lengths.iter().any(|&l| (15_000..=20_000).contains(&l)));
    });
    assert_eq!(exec.run().outcome.kind, OutcomeKind::Pass);
}

#[test]
fn a_stopper_runs_at_the_first_preemptible_point_and_the_task_resumes_after_it() {
    let mut exec = executor(2, 0.0, 0);
    exec.spawn(CpuId(0), Cycle(0), "worker", |ctx| async move {
        for step in 0..6u64 {
            if ctx.sim.with(|e| e.should_yield()) {
                ctx.sim.yield_cpu().await;
            }
            let now = ctx.sim.now().0;
            ctx.sim.with(|e| e.mark(Span::Instant, 1, step, now, String::new));
            // Steps 2 and 3 run with preemption off: no yield there.
            let off = step == 2 || step == 3;
            ctx.sim.with(|e| e.cpu_mut(CpuId(0)).preempt_count += u32::from(off));
            ctx.sim.delay(100).await;
            ctx.sim.with(|e| e.cpu_mut(CpuId(0)).preempt_count -= u32::from(off));
        }
    });
    exec.spawn(CpuId(1), Cycle(250), "stop_machine", |ctx| async move {
        ctx.sim.spawn(CpuId(0), TaskPriority::Stopper, "stopper/0", {
            let sim = ctx.sim.clone();
            async move {
                let now = sim.now().0;
                sim.with(|e| e.mark(Span::Instant, 2, 99, now, String::new));
                sim.delay(1_000).await;
            }
        });
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    // The stopper is queued at 250, inside step 2's preempt-disabled delay; it gets the CPU
    // at 300, the first preemptible point after it, for 1000 cycles; then step 3 resumes.
    assert_eq!(
        marks(&report),
        vec![(0, 0), (1, 100), (2, 200), (99, 300), (3, 1_300), (4, 1_400), (5, 1_500)]
    );
}

/// A worker with preemption off is interrupted while a stopper waits for its CPU: the
/// interrupt returns to the worker, which keeps the CPU until its preempt-off section ends.
fn interrupt_while_a_stopper_waits(preempt_off: bool) -> Vec<(u64, u64)> {
    let mut exec = executor(2, 0.0, 0);
    exec.spawn(CpuId(0), Cycle(0), "worker", move |ctx| async move {
        ctx.sim.with(|e| e.cpu_mut(CpuId(0)).preempt_count += u32::from(preempt_off));
        // 0..100: the stopper and then the IPI are queued for CPU 0 at 50.
        ctx.sim.delay(100).await;
        if ctx.sim.with(|e| e.should_yield()) {
            ctx.sim.yield_cpu().await;
        }
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, 1, now, String::new));
        ctx.sim.delay(100).await;
        ctx.sim.with(|e| e.cpu_mut(CpuId(0)).preempt_count -= u32::from(preempt_off));
        if ctx.sim.with(|e| e.should_yield()) {
            ctx.sim.yield_cpu().await;
        }
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, 2, now, String::new));
    });
    exec.spawn(CpuId(1), Cycle(50), "stop_machine and an IPI", |ctx| async move {
        for (priority, id, cost) in [(TaskPriority::Stopper, 98, 1_000), (TaskPriority::Irq, 99, 30)] {
            let sim = ctx.sim.clone();
            ctx.sim.spawn(
                CpuId(0),
                priority,
                format!("task {id}"),
                Box::pin(async move {
                    let now = sim.now().0;
                    sim.with(|e| e.mark(Span::Instant, 2, id, now, String::new));
                    sim.delay(cost).await;
                }),
            );
        }
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    marks(&report)
}

#[test]
fn an_interrupt_returns_to_a_task_with_preemption_off_before_a_waiting_stopper_runs() {
    // The IPI runs 100..130; the worker resumes at 130, leaves its section at 230 and only
    // then does the stopper take the CPU (230..1230).
    assert_eq!(interrupt_while_a_stopper_waits(true), vec![(99, 100), (1, 130), (98, 230), (2, 1_230)]);
    // With preemption on, the stopper runs as soon as the handler returns.
    assert_eq!(interrupt_while_a_stopper_waits(false), vec![(99, 100), (98, 130), (1, 1_130), (2, 1_230)]);
}

#[test]
fn tasks_of_an_offline_cpu_wait_until_it_comes_online() {
    let mut config = config(2, 0.0);
    config.online_cpus = 1;
    let mut exec = Executor::new(config, Box::new(RandomChooser::new(Seed(0))));
    exec.spawn(CpuId(1), Cycle(0), "on-cpu1", |ctx| async move {
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, 1, now, String::new));
    });
    exec.spawn(CpuId(0), Cycle(0), "cpu_up", |ctx| async move {
        ctx.sim.delay(5_000).await;
        ctx.sim.with(|e| e.set_cpu_online(CpuId(1), true));
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    assert_eq!(marks(&report), vec![(1, 5_000)]);
}

#[test]
fn parked_tasks_wake_when_unparked_and_a_forgotten_one_is_reported() {
    let mut exec = executor(2, 0.0, 0);
    let waiter = exec.spawn(CpuId(0), Cycle(0), "waiter", |ctx| async move {
        ctx.sim.park(WaitKind::Sleep, "the completion").await;
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, 0, now, String::new));
    });
    exec.spawn(CpuId(1), Cycle(0), "completer", move |ctx| async move {
        ctx.sim.delay(700).await;
        assert!(ctx.sim.with(|e| e.unpark(waiter, 10)));
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    assert_eq!(marks(&report), vec![(0, 710)]);

    let mut exec = executor(1, 0.0, 0);
    exec.spawn(CpuId(0), Cycle(0), "waiter", |ctx| async move {
        ctx.sim.park(WaitKind::Sleep, "a completion nobody signals").await;
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Deadlock);
    assert!(report.outcome.what.contains("waits for a completion nobody signals"), "{}", report.outcome.what);
}

#[test]
fn a_nested_read_behind_a_pending_writer_deadlocks() {
    // H0 / U3: cpus_read_lock() held, a hotplug writer queues, the holder reads again.
    let mut exec = executor(2, 0.0, 0);
    let lock = exec.sim().with(|e| {
        let lock = e.new_resource("cpu_hotplug_lock", "percpu_rwsem", 0);
        e.set_recursive_shared(lock);
        lock
    });
    exec.spawn(CpuId(0), Cycle(0), "vt_init", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Sleep).await;
        ctx.sim.delay(1_000).await;
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Sleep).await;
        ctx.sim.release(lock);
        ctx.sim.release(lock);
    });
    exec.spawn(CpuId(1), Cycle(100), "cpu_up", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Sleep).await;
        ctx.sim.release(lock);
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Deadlock);
    assert!(
        report.outcome.what.contains(
            "CPU 0 (vt_init) holds cpu_hotplug_lock and blocks on cpu_hotplug_lock (read) held by CPU 1"
        ),
        "{}",
        report.outcome.what
    );

    // Without the writer, the nested read is fine.
    let mut exec = executor(1, 0.0, 0);
    let lock = exec.sim().with(|e| {
        let lock = e.new_resource("cpu_hotplug_lock", "percpu_rwsem", 0);
        e.set_recursive_shared(lock);
        lock
    });
    exec.spawn(CpuId(0), Cycle(0), "vt_init", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Sleep).await;
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Sleep).await;
        ctx.sim.release(lock);
        ctx.sim.release(lock);
    });
    assert_eq!(exec.run().outcome.kind, OutcomeKind::Pass);
}

#[test]
fn a_task_waiting_a_whole_time_slice_gets_the_cpu() {
    let mut config = config(1, 0.0);
    config.watchdog_cycles = 10 * SCHED_SLICE_CYCLES;
    config.max_time = Cycle(100 * SCHED_SLICE_CYCLES);
    let mut exec = Executor::new(config, Box::new(RandomChooser::new(Seed(0))));
    exec.spawn(CpuId(0), Cycle(0), "hog", |ctx| async move {
        for _ in 0..4_000u64 {
            if ctx.sim.with(|e| e.should_yield()) {
                ctx.sim.yield_cpu().await;
            }
            ctx.sim.delay(1_000).await;
            ctx.sim.with(|e| e.progress());
        }
    });
    exec.spawn(CpuId(0), Cycle(10), "kworker", |ctx| async move {
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, 0, now, String::new));
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    // The kworker waits one slice (2M cycles), then the hog yields at its next point.
    let ran_at = marks(&report)[0].1;
    assert!((SCHED_SLICE_CYCLES..SCHED_SLICE_CYCLES + 2_000).contains(&ran_at), "{ran_at}");
}

#[test]
fn a_sleeper_past_the_hung_task_limit_is_hung_not_a_livelock() {
    // t0 holds a mutex-like lock and sleeps on a completion nobody signals; t1 blocks on the
    // lock. t1 is asleep on a lock: the hung-task detector, at exactly its limit.
    let mut config = config(2, 0.0);
    config.hung_task_cycles = 300_000;
    config.max_time = Cycle(10_000_000);
    let mut exec = Executor::new(config, Box::new(RandomChooser::new(Seed(0))));
    let lock = exec.sim().with(|e| e.new_resource("update_rwsem", "rwsem", 0));
    exec.spawn(CpuId(0), Cycle(0), "holder", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Sleep).await;
        loop {
            // Busy and making progress: only the waiter is stuck.
            ctx.sim.delay(1_000).await;
            ctx.sim.with(|e| e.progress());
        }
    });
    exec.spawn(CpuId(1), Cycle(10), "updater", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Sleep).await;
        ctx.sim.release(lock);
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Hung, "{}", report.outcome);
    assert_eq!(report.end, Cycle(10 + 300_000), "fires at its limit");
    assert!(
        report.outcome.what.starts_with("CPU 1 (updater) blocked without progress"),
        "{}",
        report.outcome.what
    );
    assert!(
        report.outcome.what.contains("blocks on update_rwsem (write) held by CPU 0"),
        "{}",
        report.outcome.what
    );
    let Finding::NoProgress { blocked, limit_cycles, .. } = &report.outcome.finding else { panic!() };
    assert_eq!((blocked.task, *limit_cycles), (TaskId(1), 300_000));
}

#[test]
fn a_preemption_lets_another_task_of_the_cpu_run_and_an_interrupt_does_not() {
    // Two tasks on one CPU; the first is stalled once right at its start. As an interrupt,
    // the second waits behind it; as a preemption, the second runs meanwhile.
    let run = |kind: u32| {
        let mut config = config(1, 0.0);
        config.max_stall_cycles = 20_000;
        // Stall decision: the last step (20000 cycles); then irq (0) or preempt (1).
        let chooser = ReplayChooser::new(vec![STALL_STEPS, kind]);
        let mut exec = Executor::new(config, Box::new(chooser));
        let order: std::rc::Rc<std::cell::RefCell<Vec<(&str, u64)>>> = Default::default();
        for (name, start) in [("first", 0), ("second", 1)] {
            let order = order.clone();
            exec.spawn(CpuId(0), Cycle(start), name, move |ctx| async move {
                if name == "first" {
                    match ctx.sim.with(|e| e.stall_point()) {
                        Stall::Irq(cycles) => ctx.sim.delay(cycles).await,
                        Stall::Preempt(cycles) => ctx.sim.preempted_for(cycles).await,
                        Stall::None => panic!("the replayed vector stalls here"),
                    }
                }
                ctx.sim.delay(100).await;
                order.borrow_mut().push((name, ctx.sim.now().0));
            });
        }
        assert_eq!(exec.run().outcome.kind, OutcomeKind::Pass);
        order.borrow().clone()
    };
    assert_eq!(run(0), [("first", 20_100), ("second", 20_200)], "an interrupt keeps the CPU");
    assert_eq!(run(1), [("second", 101), ("first", 20_100)], "a preemption gives it away");
}

#[test]
fn spinners_waiting_on_a_wait_object_that_moves_are_not_livelocked() {
    // A lock-step protocol: CPU 0 works long between its acks, CPU 1 spins for them. The
    // spinner makes no progress of its own for longer than the watchdog, but its wait
    // object's party keeps acting: no livelock. When the party stops, the spinner is stalled.
    let mut exec = executor(2, 0.0, 0);
    let wait = exec.sim().with(|e| e.new_wait());
    let worker = TaskId(0);
    exec.spawn(CpuId(0), Cycle(0), "worker", move |ctx| async move {
        let party = ctx.sim.with(|e| e.wait_add_party(wait, worker));
        for _ in 0..5 {
            ctx.sim.delay(60_000).await;
            ctx.sim.with(|e| {
                e.wait_party_done(wait, party);
                e.progress();
            });
        }
        // Then it stops acting and spins itself: a real stall.
        loop {
            ctx.sim.delay(1_000).await;
        }
    });
    exec.spawn(CpuId(1), Cycle(0), "spinner", move |ctx| async move {
        ctx.sim.park_on(WaitKind::Spin, "the worker's acks", wait).await;
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Livelock, "{}", report.outcome);
    // The spinner's own progress is at 0, its wait object's last act at 300000: it is
    // stalled one watchdog period after that, not at 100000.
    assert_eq!(report.end, Cycle(400_000), "{}", report.outcome);
}

#[test]
fn an_interrupt_for_its_cpu_ends_an_interruptible_period_and_its_old_end_is_dropped() {
    let mut exec = executor(2, 0.0, 0);
    exec.spawn(CpuId(0), Cycle(0), "guest", |ctx| async move {
        // Cut short at 400 by the handler queued for this CPU; then a period nobody cuts.
        let cut = ctx.sim.interruptible(10_000).await;
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, u64::from(cut), now, String::new));
        if ctx.sim.with(|e| e.should_yield()) {
            ctx.sim.yield_cpu().await;
        }
        let cut = ctx.sim.interruptible(1_000).await;
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, u64::from(cut), now, String::new));
    });
    exec.spawn(CpuId(1), Cycle(400), "ipi sender", |ctx| async move {
        ctx.sim.spawn(CpuId(0), TaskPriority::Irq, "ipi/0", {
            let sim = ctx.sim.clone();
            async move {
                let now = sim.now().0;
                sim.with(|e| e.mark(Span::Instant, 2, 99, now, String::new));
                sim.delay(50).await;
            }
        });
    });
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass);
    // The period ends at 400, the handler runs 400..450, the second period 450..1450; the
    // first period's end at 10_000 never wakes the task (the run ends at 1450).
    assert_eq!(marks(&report), vec![(1, 400), (99, 400), (0, 1_450)]);
    assert_eq!(report.end, Cycle(1_450));
}

#[test]
fn a_normal_task_queued_behind_does_not_end_an_interruptible_period() {
    let mut exec = executor(1, 0.0, 0);
    exec.spawn(CpuId(0), Cycle(0), "guest", |ctx| async move {
        let cut = ctx.sim.interruptible(2_000).await;
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 1, u64::from(cut), now, String::new));
    });
    exec.spawn(CpuId(0), Cycle(100), "peer", |ctx| async move {
        let now = ctx.sim.now().0;
        ctx.sim.with(|e| e.mark(Span::Instant, 2, 0, now, String::new));
    });
    let report = exec.run();
    assert_eq!(marks(&report), vec![(0, 2_000), (0, 2_000)]);
}

#[test]
fn a_polling_task_waits_for_a_wait_objects_parties_and_a_cycle_through_it_is_a_deadlock() {
    // Task A spins on a flag B will set only after A's lock is free; B waits for the lock.
    let mut exec = executor(2, 0.0, 0);
    let lock = exec.sim().with(|e| e.new_resource("L", "test", 0));
    let wait = exec.sim().with(|e| e.new_wait());
    let spinner = exec.spawn(CpuId(0), Cycle(0), "spinner", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
        ctx.sim.with(|e| e.set_polling(Some(("the flag B sets", wait))));
        loop {
            ctx.sim.delay(100).await;
        }
    });
    let setter = exec.spawn(CpuId(1), Cycle(0), "setter", move |ctx| async move {
        ctx.sim.delay(10).await;
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
    });
    exec.sim().with(|e| e.wait_add_party(wait, setter));
    let report = exec.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Deadlock, "{}", report.outcome.what);
    assert!(
        report.outcome.what.contains("waits for the flag B sets from CPU 1 (setter)"),
        "{}",
        report.outcome.what
    );
    let Finding::WaitCycle(cycle) = &report.outcome.finding else { panic!("{:?}", report.outcome.finding) };
    let tasks: Vec<TaskId> = cycle.iter().map(|blocked| blocked.task).collect();
    assert!(tasks.contains(&spinner) && tasks.contains(&setter));
}

/// The engine keeps the jitter bands it has worked out, a few slots by a hash of the base:
/// bases that share a slot, met in any order and again, still get their own band.
#[test]
fn jitter_bands_worked_out_once_are_each_bases_own() {
    let jitter = 0.13;
    let bases: Vec<u64> = (0..400u64).map(|i| (i * 7919) % 2000).chain((0..400).rev()).collect();
    let exec = Executor::new(config(1, jitter), Box::new(ReplayChooser::new(vec![0; bases.len()])));
    for &base in &bases {
        let delta = (base as f64 * jitter) as u64;
        let cost = exec.sim().with(|engine| engine.cost_for(CpuId(0), base));
        assert_eq!(cost, base - delta, "base {base}: the low end of its band");
    }
}

/// Three locks left held, queued for, contended and one recursive at the end (t0 and t1
/// deadlock over A and C; t2 waited for B).
fn three_locks_left_held(exec: &mut Executor<'static>) {
    let (a, b, c) = exec.sim().with(|e| {
        let a = e.new_resource("A", "rwsem", 30);
        e.set_recursive_shared(a);
        (a, e.new_resource("B", "rw", 40), e.new_resource("C", "rw", 50))
    });
    exec.spawn(CpuId(0), Cycle(0), "t0", move |ctx| async move {
        ctx.sim.acquire(a, Mode::Shared, WaitKind::Sleep).await;
        ctx.sim.acquire(b, Mode::Exclusive, WaitKind::Spin).await;
        ctx.sim.delay(100).await;
        ctx.sim.release(b);
        ctx.sim.acquire(c, Mode::Exclusive, WaitKind::Spin).await;
    });
    exec.spawn(CpuId(1), Cycle(0), "t1", move |ctx| async move {
        ctx.sim.acquire(c, Mode::Exclusive, WaitKind::Spin).await;
        ctx.sim.delay(50).await;
        ctx.sim.acquire(a, Mode::Exclusive, WaitKind::Sleep).await;
    });
    exec.spawn(CpuId(2), Cycle(1), "t2", move |ctx| async move {
        ctx.sim.acquire(b, Mode::Exclusive, WaitKind::Spin).await;
        ctx.sim.delay(10).await;
        ctx.sim.release(b);
    });
}

/// One lock, not recursive, that t0 takes shared twice while t1 queues for it: a
/// self-deadlock (had the lock kept entry 0's recursion, t0 would queue behind t1 instead).
fn one_lock_taken_twice(exec: &mut Executor<'static>) {
    let lock = exec.sim().with(|e| e.new_resource("L", "spinlock", 7));
    exec.spawn(CpuId(0), Cycle(0), "t0", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Spin).await;
        ctx.sim.delay(100).await;
        ctx.sim.acquire(lock, Mode::Shared, WaitKind::Spin).await;
    });
    exec.spawn(CpuId(1), Cycle(10), "t1", move |ctx| async move {
        ctx.sim.acquire(lock, Mode::Exclusive, WaitKind::Spin).await;
    });
}

type RunSeen = (Outcome, Cycle, Option<u64>, u64, Vec<(Name, &'static str, ResourceStats)>, Vec<String>);

/// Runs `build`'s tasks on `exec`: what the run gave, and the address of its engine.
fn run_seen(mut exec: Executor<'static>, build: impl FnOnce(&mut Executor<'static>)) -> (RunSeen, usize) {
    build(&mut exec);
    let engine = exec.sim().with(|e| e as *const Engine as usize);
    let report = exec.run();
    let seen = (
        report.outcome,
        report.end,
        report.trace_hash,
        report.events,
        report.resources.to_vec(),
        report.lock_order,
    );
    (seen, engine)
}

#[test]
fn a_reused_engine_after_a_run_of_more_locks_gives_the_fresh_engines_run() {
    let builds: [fn(&mut Executor<'static>); 2] = [three_locks_left_held, one_lock_taken_twice];
    let fresh: Vec<RunSeen> = builds.iter().map(|&build| run_seen(executor(3, 0.1, 5), build).0).collect();
    let (big, small) = (&fresh[0], &fresh[1]);
    assert_eq!(big.0.kind, OutcomeKind::Deadlock);
    assert_eq!(big.4.len(), 3);
    assert!(big.4.iter().all(|(_, _, stats)| stats.acquisitions > 0), "every lock was taken");
    assert_eq!(small.0.kind, OutcomeKind::Deadlock);
    assert!(small.0.what.contains("takes L (read) again while holding it"), "{}", small.0.what);
    assert_eq!(small.4.len(), 1, "one lock row");

    let store = EngineStore::default();
    let on_store = |build: fn(&mut Executor<'static>)| {
        run_seen(Executor::new_in(&store, config(3, 0.1), RandomChooser::new(Seed(5))), build)
    };
    let (first, engine) = on_store(three_locks_left_held);
    assert_eq!(&first, big);
    // Fewer locks than the engine's last run left: its entries past the first are dead.
    let (second, reused) = on_store(one_lock_taken_twice);
    assert_eq!(reused, engine, "the store's engine ran the second run");
    assert_eq!(&second, small);
    // More again: the dead entries are made anew.
    let (third, reused) = on_store(three_locks_left_held);
    assert_eq!(reused, engine);
    assert_eq!(&third, big);
}

/// A and B of class `outer` and L and M of class `inner`: CPU 0 takes L inside A, CPU 1 (later)
/// B inside M, an inversion over classes only.
fn class_inversion(exec: &mut Executor<'static>, outer: &'static str, inner: &'static str) {
    let [a, b, l, m] = exec.sim().with(|e| {
        [("A", outer), ("B", outer), ("L", inner), ("M", inner)]
            .map(|(name, class)| e.new_resource(name, class, 0))
    });
    for (cpu, start, first, second) in [(0, 0, a, l), (1, 1_000, m, b)] {
        exec.spawn(CpuId(cpu), Cycle(start), format!("t{cpu}"), move |ctx| async move {
            ctx.sim.acquire(first, Mode::Exclusive, WaitKind::Spin).await;
            ctx.sim.acquire(second, Mode::Exclusive, WaitKind::Spin).await;
            ctx.sim.release(second);
            ctx.sim.release(first);
        });
    }
}

#[test]
fn a_reused_engine_numbers_lock_classes_as_a_fresh_one() {
    // "y" at another address than the literal's: the same class, found by its bytes.
    let other_y: &'static str = String::from("y").leak();
    let orders = [("x", "y"), (other_y, "x"), ("y", other_y), ("x", "y"), ("x", "y")];
    let run = |exec, (outer, inner): (&'static str, &'static str)| {
        run_seen(exec, move |exec: &mut Executor<'static>| class_inversion(exec, outer, inner))
    };
    let fresh: Vec<RunSeen> = orders.iter().map(|&order| run(executor(2, 0.1, 3), order).0).collect();
    assert_eq!(fresh[0].0.kind, OutcomeKind::LockOrder);
    let what = &fresh[0].0.what;
    assert!(what.contains("takes B (class x) while holding M (class y)"), "{what}");
    assert!(fresh[1].0.what.contains("takes B (class y) while holding M (class x)"), "{}", fresh[1].0.what);
    assert_eq!(fresh[2].0.kind, OutcomeKind::Pass, "one class, nested by instance: no inversion");
    // On one engine: the classes of the last run in another order (dead entries that are
    // not this run's next), then in the same order (each new class the next dead entry).
    let store = EngineStore::default();
    for (order, fresh) in orders.iter().zip(&fresh) {
        let (seen, _) = run(Executor::new_in(&store, config(2, 0.1), RandomChooser::new(Seed(3))), *order);
        assert_eq!(&seen, fresh, "classes {order:?}");
    }
}
