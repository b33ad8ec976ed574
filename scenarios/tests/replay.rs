//! Determinism: the same scenario and seed give the same run, a recorded decision vector
//! replays it, and the table of a run is stable.

use std::path::Path;

use scenarios::run::{Schedule, run_once};
use scenarios::{load_file, table};
use sim_core::OutcomeKind;

fn library(file: &str) -> scenarios::schema::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/dpamt").join(file);
    load_file(&path).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn a_seed_gives_the_same_trace_hash_every_time() {
    let scenario = library("s-d4-dec-and-lock.toml");
    for seed in [0, 1, 99] {
        let first = run_once(&scenario, &Schedule::Random(seed), false);
        let again = run_once(&scenario, &Schedule::Random(seed), false);
        assert_eq!(first.trace_hash, again.trace_hash);
        assert_eq!(first.outcome, again.outcome);
        assert_eq!(first.decisions, again.decisions);
    }
    let hashes: std::collections::BTreeSet<u64> =
        (0..10).map(|seed| run_once(&scenario, &Schedule::Random(seed), false).trace_hash).collect();
    assert!(hashes.len() > 5, "different seeds explore different schedules");
}

#[test]
fn recording_the_trace_does_not_change_the_run() {
    let scenario = library("s-d1-hint-missing-pamt-page-pair.toml");
    let quiet = run_once(&scenario, &Schedule::Random(3), false);
    let recorded = run_once(&scenario, &Schedule::Random(3), true);
    assert_eq!(quiet.trace_hash, recorded.trace_hash);
    assert!(quiet.trace.is_empty());
    assert!(!recorded.trace.is_empty());
}

#[test]
fn a_decision_vector_replays_the_run_exactly() {
    for file in [
        "s-d1-hint-missing-pamt-page-pair.toml",
        "s-d5-per-2m-rwlock-ab-ba.toml",
        "s-d2b-pending-put-race.toml",
    ] {
        let scenario = library(file);
        let original = run_once(&scenario, &Schedule::Random(11), false);
        let replayed = run_once(&scenario, &Schedule::Replay(original.decisions.clone()), false);
        assert!(!replayed.diverged, "{file}");
        assert_eq!(replayed.trace_hash, original.trace_hash, "{file}");
        assert_eq!(replayed.outcome, original.outcome, "{file}");
    }
}

#[test]
fn s_d5_table_shows_yans_interleaving() {
    let scenario = library("s-d5-per-2m-rwlock-ab-ba.toml");
    let result = run_once(&scenario, &Schedule::Random(0), true);
    assert_eq!(result.outcome.kind, OutcomeKind::Deadlock);
    insta::assert_snapshot!(table::render(&result));
}
