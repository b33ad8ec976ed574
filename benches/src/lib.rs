//! Workloads for the criterion benchmarks in `benches/benches/`.
//!
//! They live here, not in the bench file, so `cargo test -p benches` checks that each one
//! does the work its benchmark claims (the same number of events in both loops).
//!
//! Items:
//! - `run_engine`: `TASKS` tasks on their own CPUs, each a loop of busy delays, on `sim-core`.
//! - `run_bare_heap`: the same event times through a bare `BinaryHeap`, the floor any
//!   discrete-event loop pays; the engine's throughput is read against it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;

use sim_core::{CpuId, Cycle, EngineConfig, Executor, RandomChooser, RunReport, Seed};

/// Tasks, one per CPU, so no task ever queues for its CPU: the benchmark measures dispatch.
pub const TASKS: u32 = 8;

/// Events each task causes: its start, then one per `delay(...).await`.
pub const EVENTS_PER_TASK: u64 = 25_000;

/// Events of one run, in either loop.
pub const EVENTS: u64 = TASKS as u64 * EVENTS_PER_TASK;

/// Cycles of each task's delay. Distinct primes: two tasks' events fall on the same cycle
/// only at common multiples (cycle 0, then every `p * q`): about 6% of events share a
/// cycle (5,888 chooser decisions in a run), so the engine's same-cycle path is exercised
/// but does not dominate.
pub const DELAY_CYCLES: [u64; TASKS as usize] = [97, 101, 103, 107, 109, 113, 127, 131];

/// Fixed, like every benchmark seed: the run and its same-cycle choices repeat exactly.
pub const SEED: Seed = Seed(1);

/// Far beyond the run's last cycle (about `EVENTS_PER_TASK * 131`), so the watchdog's
/// periodic scan never fires and never ends the run.
const WATCHDOG_CYCLES: u64 = 1 << 40;

/// Runs the engine workload: `EVENTS` events, no trace kept, no jitter.
pub fn run_engine() -> RunReport {
    let config = EngineConfig {
        cpus: TASKS,
        max_time: Cycle::MAX,
        watchdog_cycles: WATCHDOG_CYCLES,
        jitter: 0.0,
        record_trace: false,
        hash_trace: true,
        max_stall_cycles: 0,
        coverage: false,
        max_recorded_decisions: sim_core::MAX_RECORDED_DECISIONS,
        max_events: u64::MAX,
        hung_task_cycles: u64::MAX,
        online_cpus: u32::MAX,
    };
    let mut executor = Executor::new(config, Box::new(RandomChooser::new(SEED)));
    for task in 0..TASKS {
        let delay_cycles = DELAY_CYCLES[task as usize];
        executor.spawn(CpuId(task), Cycle::ZERO, format!("bench-{task}"), move |ctx| async move {
            // The start is the task's first event; each delay is one more.
            for _ in 1..EVENTS_PER_TASK {
                ctx.sim.delay(delay_cycles).await;
                ctx.sim.with(|engine| engine.progress());
            }
        });
    }
    executor.run()
}

/// The same event times as `run_engine`, through a bare `BinaryHeap` ordered by
/// `(cycle, seq)`: pop, compute the task's next time, push. Returns the events popped.
pub fn run_bare_heap() -> u64 {
    // Hidden from the optimiser, as the engine's costs are behind its futures.
    let delay_cycles = black_box(DELAY_CYCLES);
    let mut queue: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::with_capacity(64);
    let mut events_left = [EVENTS_PER_TASK; TASKS as usize];
    let mut seq = 0u64;
    for task in 0..TASKS {
        seq += 1;
        queue.push(Reverse((0, seq, task)));
    }
    let mut events = 0u64;
    while let Some(Reverse((at, _, task))) = queue.pop() {
        events += 1;
        let left = &mut events_left[task as usize];
        *left -= 1;
        if *left > 0 {
            seq += 1;
            queue.push(Reverse((at + delay_cycles[task as usize], seq, task)));
        }
    }
    events
}

/// The boot benchmark's scenario: one TD of 1 GiB booted by a `td_boot` workload under the
/// v2 DPAMT design (`global-lock-fastpath`), every 4KB page after the 2MB image faulted in
/// by its one vCPU: `BOOT_FAULTS` faults.
pub const BOOT_1G: &str = r#"
name = "bench: td_boot, 1 TD x 1 GiB"
[machine]
cpus = 2
memory = "2G"
[host]
dpamt = "global-lock-fastpath"
[[workload]]
kind = "td_boot"
tds = 1
vcpus_per_td = 1
memory_per_td = "1G"
[run]
max_time = "60s"
"#;

/// [`BOOT_1G`] with its fault rounds coalesced as the calibration library's full-scale boot
/// has them (`coalesce_faults = 256`).
pub fn boot_1g_coalesced() -> String {
    BOOT_1G.replace("memory_per_td = \"1G\"\n", "memory_per_td = \"1G\"\ncoalesce_faults = 256\n")
}

/// Faults of one boot: 1 GiB less the 2MB image, in 4KB pages.
pub const BOOT_FAULTS: u64 = ((1 << 30) - (2 << 20)) / 4096;

/// Runs the boot benchmark's scenario once (seed 1): its result.
pub fn run_boot(scenario: &scenarios::schema::Scenario) -> scenarios::run::RunResult {
    scenarios::run::run_once(scenario, &scenarios::run::Schedule::Random(1), false)
}

#[cfg(test)]
mod tests {
    use sim_core::OutcomeKind;

    use super::*;

    #[test]
    fn both_loops_dispatch_the_same_events() {
        let report = run_engine();
        assert_eq!(report.outcome.kind, OutcomeKind::Pass, "engine run: {}", report.outcome);
        assert_eq!(report.events, EVENTS, "engine events");
        assert_eq!(run_bare_heap(), EVENTS, "bare loop events");
    }

    #[test]
    fn same_cycle_events_are_rare_but_present() {
        // With no jitter every chooser decision is a same-cycle order.
        let decisions = run_engine().decisions.len() as u64;
        assert!(decisions > 0, "no same-cycle events: the chooser path is not measured");
        assert!(decisions * 20 < EVENTS, "{decisions} same-cycle decisions in {EVENTS} events");
    }
}
