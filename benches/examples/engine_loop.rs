//! The engine benchmark's two loops without criterion around them, for `perf record` and
//! `valgrind --tool=callgrind`: `engine_loop engine N` runs the engine workload N times,
//! `engine_loop bare N` the bare `BinaryHeap` loop, and prints the events dispatched.
//!
//! Run: `cargo build --release -p benches --example engine_loop` and then
//! `perf record target/release/examples/engine_loop engine 200`.

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "engine".to_owned());
    let runs: u64 = match args.next().map(|arg| arg.parse()) {
        None => 50,
        Some(Ok(runs)) => runs,
        Some(Err(error)) => {
            eprintln!("engine_loop: the run count must be a whole number: {error}");
            std::process::exit(2);
        }
    };
    let events: u64 = match which.as_str() {
        "engine" => (0..runs).map(|_| benches::run_engine().events).sum(),
        "bare" => (0..runs).map(|_| benches::run_bare_heap()).sum(),
        other => {
            eprintln!("engine_loop: expected `engine` or `bare`, not `{other}`");
            std::process::exit(2);
        }
    };
    println!("{events} events");
}
