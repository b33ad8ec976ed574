//! Simulated faults per second of a TD boot on one core: `td_boot` of one TD of 1 GiB
//! (issue 9 §5), every 4KB page faulted through vCPU EPT violations, the S-EPT fault path,
//! DPAMT v2's get and PAGE.AUG. The full 10 x 16 GiB boot of the calibration library is 160
//! times this run. `td_boot_1x1g_coalesced` is the same boot with `coalesce_faults = 256`, as
//! the library file runs it.
//!
//! Run: `cargo bench -p benches --bench boot -- --quick`

use std::hint::black_box;
use std::time::Duration;

use benches::{BOOT_1G, BOOT_FAULTS, boot_1g_coalesced, run_boot};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sim_core::OutcomeKind;

fn boot_faults(c: &mut Criterion) {
    let coalesced = boot_1g_coalesced();
    for (name, text) in [("td_boot_1x1g", BOOT_1G), ("td_boot_1x1g_coalesced", coalesced.as_str())] {
        let scenario = scenarios::load_str("boot.toml", text).expect("the boot scenario loads");
        // The benchmark measures what it claims only if the run faults every page.
        let result = run_boot(&scenario);
        assert_eq!(result.outcome.kind, OutcomeKind::Pass, "{}", result.outcome.what);
        assert_eq!(result.metrics.faults.faults(), BOOT_FAULTS, "the boot faulted the wrong number of pages");

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(BOOT_FAULTS));
        // One iteration is up to seconds: criterion's minimum of ten samples.
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(20));
        group.bench_function("simulated_faults", |b| b.iter(|| black_box(run_boot(&scenario).events)));
        group.finish();
    }
}

criterion_group!(benches, boot_faults);
criterion_main!(benches);
