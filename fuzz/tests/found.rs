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
fn td_creation_may_issue_key_config_once_the_update_made_the_module_ready() {
    // Found as no-seamcall-in-update-window: CPU 1's td_create() ran TDH.MNG.KEY.CONFIG on
    // CPU 0 after CPU 0's update_fn had reached DONE but before seamldr_install_module()
    // returned. Triaged against host-algorithms.md §4.6 and §5.1-5.2: a model (checker) gap,
    // not a kernel hazard. __tdx_td_init() runs KEY.CONFIG through smp_call_on_cpu(), a
    // kworker, which can run on CPU 0 only once its stopper has left multi_cpu_stop; a CPU
    // leaves at DONE, which the state machine reaches only after TDH.SYS.UPDATE succeeded
    // and every CPU acknowledged it, so the key is programmed into a READY module on an
    // LP.INIT-ed CPU. The window the checker enforced ran to the updater's return; it now
    // closes when TDH.SYS.UPDATE succeeds (still at the updater's return when the update
    // fails before that). Without that change this test fails at the found seed.
    let found = 8_321_738_934_388_968_273u64;
    for seed in [found].into_iter().chain(0..200) {
        let verdict = run("key-config-during-update.toml", seed);
        assert!(
            !matches!(&verdict.outcome.finding, Finding::Report { name, .. } if name == "no-seamcall-in-update-window"),
            "seed {seed}: {}",
            verdict.outcome
        );
        assert_eq!(verdict.outcome.kind, OutcomeKind::Pass, "seed {seed}: {}", verdict.outcome);
        // The TD was made: its key is programmed on the one package.
        let key_config =
            verdict.seamcall_count(seam_model::Leaf::MngKeyConfig, seam_model::status::TDX_SUCCESS);
        assert_eq!(key_config, 1, "seed {seed}: {:?}", verdict.seamcalls);
    }
}
