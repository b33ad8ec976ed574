//! One run of the engine workload, or (`bare`) of the bare heap loop: for instruction counts
//! (`perf stat -e instructions:u`, `valgrind --tool=callgrind`) that a loaded machine cannot
//! disturb, beside the timed criterion benchmark.
fn main() {
    let bare = std::env::args().nth(1).as_deref() == Some("bare");
    let events = if bare { benches::run_bare_heap() } else { benches::run_engine().events };
    assert_eq!(events, benches::EVENTS);
}
