//! One run of the boot benchmark's scenario (1 TD x 1 GiB), for `perf` and `heaptrack`
//! (the system allocator, unlike the tdxsim binary's mimalloc): prints events and faults.

fn main() {
    let scenario = scenarios::load_str("boot.toml", benches::BOOT_1G).expect("the boot scenario loads");
    let result = benches::run_boot(&scenario);
    println!(
        "{}: {} events, {} decisions, {} faults",
        result.outcome.kind,
        result.events,
        result.decisions.len(),
        result.metrics.faults.faults()
    );
}
