//! Engine events per second on one core, next to a bare `BinaryHeap` event loop over the
//! same events; after criterion's figures, one line with the ratio engine/bare.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-shared cargo bench -p benches --bench engine -- --quick`

use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::{EVENTS, run_bare_heap, run_engine};
use criterion::{Criterion, Throughput, criterion_group};
use sim_core::OutcomeKind;

/// What the ratio line asks of the engine: half of the bare loop's rate (issue 7).
const RATIO_TARGET: f64 = 0.5;

/// Runs of each loop for the ratio line; the best counts, as the least disturbed.
const RATIO_RUNS: usize = 5;

fn engine_events(c: &mut Criterion) {
    // The benchmark measures what it claims only if the run dispatches all its events.
    let report = run_engine();
    assert!(
        matches!(report.outcome.kind, OutcomeKind::Pass | OutcomeKind::Limit),
        "engine workload ended in {}",
        report.outcome
    );
    assert_eq!(report.events, EVENTS, "engine workload dispatched the wrong number of events");
    assert_eq!(run_bare_heap(), EVENTS, "bare loop processed the wrong number of events");

    let mut group = c.benchmark_group("engine_events");
    group.throughput(Throughput::Elements(EVENTS));
    // One iteration is a few milliseconds; ten samples keep `--quick` well under a minute.
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("sim_core_executor", |b| b.iter(|| black_box(run_engine().events)));
    group.bench_function("bare_binary_heap", |b| b.iter(|| black_box(run_bare_heap())));
    group.finish();
}

/// The shortest of `RATIO_RUNS` timings of `run`.
fn best_time<R>(run: impl Fn() -> R) -> Duration {
    (0..RATIO_RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(run());
            start.elapsed()
        })
        .min()
        .expect("RATIO_RUNS > 0")
}

fn print_ratio() {
    let mevents_per_s = |time: Duration| EVENTS as f64 / time.as_secs_f64() / 1e6;
    let engine = mevents_per_s(best_time(run_engine));
    let bare = mevents_per_s(best_time(run_bare_heap));
    println!(
        "engine: {engine:.2} Mevents/s, bare BinaryHeap loop: {bare:.2} Mevents/s, \
         ratio engine/bare = {:.3} (target >= {RATIO_TARGET})",
        engine / bare
    );
}

criterion_group!(benches, engine_events);

fn main() {
    benches();
    // Only when benchmarking: not under `cargo test --benches`, nor when listing.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--list") {
        print_ratio();
    }
    Criterion::default().configure_from_args().final_summary();
}
