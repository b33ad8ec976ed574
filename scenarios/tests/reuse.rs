//! A run's engine and module are reset for the next run on its thread rather than rebuilt
//! (`sim_core::EngineStore`, `Module::reset`). A run on a reused engine and module must be
//! the run a fresh one gives: same trace hash, outcome, events, metrics and the module's
//! PAMT at the end, whichever scenario ran on them before.

use std::path::Path;

use scenarios::load_file;
use scenarios::metrics::Metrics;
use scenarios::run::{Runner, Schedule};
use sim_core::Outcome;

const FILES: &[&str] = &[
    "dpamt/s-d5-prime-pfn-order.toml",
    "dpamt/s-d5-per-2m-rwlock-ab-ba.toml",
    "dpamt/s-d2b-pending-put-race.toml",
    // No jitter: the runs around it have some, so a reset engine's kept jitter bands
    // must not be used for it.
    "dpamt/s-d5m-module-try-locks.toml",
    "enable/s-e0-enable-then-hotplug.toml",
    "kvm/s-k2-kick-and-block-zero-step.toml",
    "kvm/s-k3-memslot-delete-srcu-deadlock.toml",
    "update/s-u3-nested-cpus-read-lock.toml",
];

/// What a run is compared on: its trace hash, outcome, events, metrics, and per 2MB range
/// the host's refcount and whether the module has it backed.
type Seen = (u64, Outcome, u64, Metrics, Vec<(i32, bool)>);

fn seen(file: &str, schedule: &Schedule) -> Seen {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library").join(file);
    let scenario = load_file(&path).unwrap_or_else(|error| panic!("{error}"));
    let result = Runner::new(&scenario).run(schedule, false);
    (result.trace_hash, result.outcome, result.events, result.metrics, result.pamt_end)
}

fn schedules() -> Vec<Schedule> {
    let mut schedules: Vec<Schedule> = (0..4).map(Schedule::Random).collect();
    schedules.push(Schedule::Pct { seed: 1, depth: 3, horizon: 200 });
    schedules.push(Schedule::Nominal);
    schedules
}

#[test]
fn a_run_on_a_reused_engine_and_module_is_the_run_on_fresh_ones() {
    let cases: Vec<(&str, Schedule)> = FILES
        .iter()
        .flat_map(|file| schedules().into_iter().map(move |schedule| (*file, schedule)))
        .collect();
    // Each on a thread of its own: the first run of a thread builds a new engine and module.
    let fresh: Vec<Seen> = cases
        .iter()
        .map(|(file, schedule)| {
            let (file, schedule) = (file.to_string(), schedule.clone());
            std::thread::spawn(move || seen(&file, &schedule)).join().expect("the run panicked")
        })
        .collect();
    // Some run comes right after one of more locks: its engine then keeps dead lock entries
    // past its own, which no lock row may show.
    let locks = |seen: &Seen| seen.3.run_locks.len();
    assert!(
        fresh.windows(2).any(|pair| locks(&pair[0]) > locks(&pair[1])),
        "a run of fewer locks follows one of more"
    );
    // All on this thread, twice over in different orders: every run after the first is
    // built into the engine and module of a run of another scenario or seed (another
    // memory size, TDs, an update's handoff, a module not yet initialised).
    for (index, (file, schedule)) in cases.iter().enumerate() {
        assert_eq!(seen(file, schedule), fresh[index], "{file} {schedule:?}, in order");
    }
    for (index, (file, schedule)) in cases.iter().enumerate().rev() {
        assert_eq!(seen(file, schedule), fresh[index], "{file} {schedule:?}, in reverse order");
    }
}

/// `check`'s exploration runs (`Runner::explore`) hash no trace and collect less of the
/// run's end, but what they hand the verdict (outcome, metrics, events) is the full run's.
#[test]
fn an_exploration_run_gives_the_verdict_what_a_full_run_gives() {
    for file in FILES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library").join(file);
        let scenario = load_file(&path).unwrap_or_else(|error| panic!("{error}"));
        let runner = Runner::new(&scenario);
        for schedule in schedules() {
            let explored = runner.explore(&schedule);
            let full = runner.run(&schedule, false);
            assert_eq!(
                (explored.outcome, explored.events, explored.metrics),
                (full.outcome, full.events, full.metrics),
                "{file} {schedule:?}"
            );
            assert!(!full.pamt_end.is_empty(), "{file}: a full run collects the PAMT end state");
        }
    }
}
