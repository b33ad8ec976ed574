//! Runs the fuzz properties found that the library does not yet explain, kept as scenario
//! files in `tests/found/` with the schedule that shows them. Each test encodes what the
//! model does today; its FIXME says what is wrong, and the test is to change when the
//! model does (STYLE.md: no `#[ignore]`).

use fuzz::{Runner, Schedule};
use scenarios::fuzzing::ScenarioRunner;
use sim_core::{Finding, OutcomeKind};

fn run(file: &str, seed: u64) -> fuzz::Verdict {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/found").join(file);
    let text = std::fs::read_to_string(&path).expect("the found scenario is there");
    ScenarioRunner.run(&text, &Schedule::Random(seed), false).expect("the found scenario loads")
}

#[test]
fn an_interrupted_rwlock_holder_gets_its_cpu_back_before_a_stopper() {
    // Found as a wait cycle through migration/0: the engine gave CPU 0 to its queued
    // stopper when an IPI returned, though the interrupted task held rw[B] with preemption
    // off. The interrupt now returns to that task (sim-core's engine test of the same), so
    // the found schedule and its neighbours end without a deadlock.
    for seed in [12_299_345_834_689_212_072].into_iter().chain(0..300) {
        let verdict = run("ipi-then-stopper-preempts-a-rwlock-holder.toml", seed);
        assert_ne!(verdict.outcome.kind, OutcomeKind::Deadlock, "seed {seed}: {}", verdict.outcome);
        assert_ne!(verdict.outcome.kind, OutcomeKind::LockOrder, "seed {seed}: {}", verdict.outcome);
    }
}

#[test]
fn td_creation_issues_key_config_inside_the_update_window() {
    let verdict = run("key-config-during-update.toml", 8_321_738_934_388_968_273);
    // FIXME(triage): today's designs should keep TD creation's SEAMCALLs out of the update
    // window, or the model lets an IPI into multi_cpu_stop's IRQs-off stretch.
    assert_eq!(verdict.outcome.kind, OutcomeKind::Invariant, "{}", verdict.outcome);
    assert!(
        matches!(&verdict.outcome.finding, Finding::Report { name, .. } if name == "no-seamcall-in-update-window"),
        "{}",
        verdict.outcome
    );
}
