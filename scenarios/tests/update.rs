//! The runtime update as a whole: its duration against spec/calibration.md §2.4 check 5.

use scenarios::load_str;
use scenarios::run::{Schedule, run_once};
use sim_core::OutcomeKind;

fn one_update(cpus: u32) -> String {
    format!(
        r#"
name = "update: one update on {cpus} CPUs"
[machine]
cpus = {cpus}
memory = "64M"
[module]
jitter = 0.0
[[task]]
cpu = 0
steps = [{{ call = "seamldr_install_module", returns = "0" }}]
[run]
max_stall = 0
"#
    )
}

#[test]
fn an_update_takes_what_the_calibration_formula_says() {
    for cpus in [8u64, 64] {
        let scenario = load_str("update.toml", &one_update(cpus as u32)).unwrap();
        let result = run_once(&scenario, &Schedule::Random(0), false);
        assert_eq!(result.outcome.kind, OutcomeKind::Pass, "{}", result.outcome);
        // stop_machine start-up + SHUTDOWN + (N-1) serial INSTALLs + the last INSTALL +
        // SYS.INIT once + LP.INIT (concurrent) + UPDATE; the rest (metadata reads, acks,
        // hand-offs) is small change.
        let formula = (20_000 + 2_000 * cpus)
            + 1_000_000
            + (cpus - 1) * 50_000
            + 20_000_000
            + 200_000
            + 50_000
            + 1_000_000;
        let end = result.end.0;
        assert!(
            end >= formula && end < formula + formula / 20,
            "{cpus} CPUs: {end} cycles, formula {formula}"
        );
    }
}
