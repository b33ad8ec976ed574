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
fn a_stopper_takes_the_cpu_of_an_interrupted_rwlock_holder() {
    let verdict = run("ipi-then-stopper-preempts-a-rwlock-holder.toml", 12_299_345_834_689_212_072);
    // FIXME(engine): when an interrupt returns to a task with preemption off, that task must
    // run next; today the CPU's queued stopper does, which makes this wait cycle.
    assert_eq!(verdict.outcome.kind, OutcomeKind::Deadlock, "{}", verdict.outcome);
    assert!(matches!(verdict.outcome.finding, Finding::WaitCycle(_)), "{}", verdict.outcome);
    assert!(verdict.outcome.what.contains("migration/0"), "{}", verdict.outcome);
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
