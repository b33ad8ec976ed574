//! One run of the boot benchmark's scenario (1 TD x 1 GiB, or the TD size given as the first
//! argument, e.g. `4G`), for `perf` and `heaptrack` (the system allocator, unlike the tdxsim
//! binary's mimalloc): prints events, decisions and faults.

fn main() {
    let text = match std::env::args().nth(1) {
        Some(size) => benches::BOOT_1G
            .replace("memory_per_td = \"1G\"", &format!("memory_per_td = \"{size}\""))
            .replace("memory = \"2G\"", "memory = \"64G\""),
        None => benches::BOOT_1G.to_string(),
    };
    let scenario = scenarios::load_str("boot.toml", &text).expect("the boot scenario loads");
    let result = benches::run_boot(&scenario);
    println!(
        "{}: {} events, {} decisions, {} faults",
        result.outcome.kind,
        result.events,
        result.decisions_made,
        result.metrics.faults.faults()
    );
}
