//! The library under `scenarios/library/` is the main test: every file's `[expect]` holds,
//! and the findings are the published ones.

use std::path::Path;

use scenarios::check::check;
use scenarios::load_file;
use sim_core::OutcomeKind;

fn library(file: &str) -> scenarios::schema::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/dpamt").join(file);
    load_file(&path).unwrap_or_else(|error| panic!("{error}"))
}

/// Every `*.toml` under `library/`, in every folder, in sorted order, but `calibration/`:
/// its full-scale boots (about a billion events a run) are checked by `.ci/run`'s release
/// `tdxsim check` alone, never in a debug test.
fn library_files() -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.ends_with("calibration") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "toml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("library"), &mut files);
    files
}

#[test]
fn every_library_file_holds() {
    let files = library_files();
    for folder in ["dpamt", "enable", "kvm", "update"] {
        assert!(
            files.iter().any(|file| file.parent().unwrap().ends_with(folder)),
            "library/{folder} is walked"
        );
    }
    for file in files {
        let scenario = load_file(&file).unwrap_or_else(|error| panic!("{error}"));
        let summary = check(&scenario);
        assert_eq!(summary.verdict, Ok(()), "{}", file.display());
    }
}

#[test]
fn s_d5_deadlocks_on_both_rwlocks_or_reports_the_inversion() {
    let summary = check(&library("s-d5-per-2m-rwlock-ab-ba.toml"));
    // A run where a stall let one CPU finish first does not deadlock, but lockdep still
    // sees the two orders.
    let deadlocks = summary.outcomes.get(&OutcomeKind::Deadlock).copied().unwrap_or(0);
    let inversions = summary.outcomes.get(&OutcomeKind::LockOrder).copied().unwrap_or(0);
    assert_eq!(deadlocks + inversions, summary.runs);
    assert!(deadlocks > summary.runs / 2, "{deadlocks}");
    let (_, outcome) = summary.first_failing.unwrap();
    assert!(outcome.what.contains("holds rw[A] and spins on rw[B] (read)"), "{}", outcome.what);
    assert!(outcome.what.contains("holds rw[B] and spins on rw[A] (read)"), "{}", outcome.what);
}

#[test]
fn s_d4_passes_with_contention_and_no_failed_seamcall() {
    let summary = check(&library("s-d4-dec-and-lock.toml"));
    assert_eq!(summary.outcomes.get(&OutcomeKind::Pass), Some(&summary.runs));
    assert!(summary.metrics.get("lock_contended").unwrap() > 0);
    assert_eq!(summary.metrics.get("seamcall_errors"), Some(0));
    assert!(summary.metrics.get("status_hpa_range_not_free") == Some(0));
}

#[test]
fn s_d2b_takes_the_hpa_range_not_free_branch_and_passes() {
    let summary = check(&library("s-d2b-pending-put-race.toml"));
    assert_eq!(summary.outcomes.get(&OutcomeKind::Pass), Some(&summary.runs));
    assert!(summary.metrics.get("status_hpa_range_not_free").unwrap() >= 1);
}

#[test]
fn s_d1_is_the_unbounded_add_aug_retry_of_the_hint_design() {
    let summary = check(&library("s-d1-hint-missing-pamt-page-pair.toml"));
    let (_, outcome) = summary.first_failing.unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Livelock);
    assert!(outcome.what.starts_with("unbounded retry: "), "{}", outcome.what);
    assert!(outcome.what.contains("PAGE.AUG"), "{}", outcome.what);
    assert!(outcome.what.contains("TDX_MISSING_PAMT_PAGE_PAIR"), "{}", outcome.what);
    // The normal path, AUG first and ADD on MISSING_PAMT_PAGE_PAIR, is what most runs take.
    assert!(summary.outcomes[&OutcomeKind::Pass] > summary.runs / 2);
    assert!(summary.metrics.get("status_missing_pamt_page_pair").unwrap() > summary.runs);
    assert!(summary.metrics.get("status_hpa_range_not_free").unwrap() > 0, "ADD says 'already backed'");
}

#[test]
fn pct_finds_what_needs_no_stall_at_least_as_often_as_random() {
    // The three-CPU ring deadlocks whenever every CPU takes its first lock before any takes
    // its second: PCT's change points must not take that away.
    use scenarios::check::{CheckOptions, check_with};
    use scenarios::schema::Strategy;
    let mut scenario = library("s-d5-ring-three-cpus.toml");
    scenario.run.runs = 600;
    let deadlocks = |strategy| {
        let summary = check_with(&scenario, CheckOptions { jobs: 0, strategy: Some(strategy) }, &|| {});
        summary.outcomes.get(&OutcomeKind::Deadlock).copied().unwrap_or(0)
    };
    let (random, pct) = (deadlocks(Strategy::Random), deadlocks(Strategy::Pct));
    assert!(random > 300, "{random}");
    assert!(pct >= random, "pct {pct} < random {random} of 600");
}

#[test]
fn s_d5m_livelocks_only_when_leaf_try_locks_interleave() {
    let interleaved = check(&library("s-d5m-module-try-locks.toml"));
    let (_, outcome) = interleaved.first_failing.unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Livelock);
    assert!(outcome.what.contains("TDH.PHYMEM.PAMT.ADD -> TDX_OPERAND_BUSY"), "{}", outcome.what);
    let atomic = check(&library("s-d5m-atomic-leaves.toml"));
    assert_eq!(atomic.outcomes.get(&OutcomeKind::Pass), Some(&atomic.runs));
    assert!(atomic.metrics.get("status_operand_busy").unwrap() >= atomic.runs);
}

#[test]
fn an_expectation_that_does_not_hold_is_reported() {
    // S-D5's file, but claiming every run passes: check must say no.
    let mut scenario = library("s-d5-per-2m-rwlock-ab-ba.toml");
    scenario.expect = None;
    scenario.run.runs = 5;
    let summary = check(&scenario);
    let why = summary.verdict.unwrap_err();
    assert!(why.starts_with("expected every run to pass; seed 0 ended in deadlock"), "{why}");
}

#[test]
fn check_gives_the_same_result_for_any_number_of_threads() {
    use scenarios::check::{CheckOptions, check_with};
    let scenario = library("s-d2-double-remove.toml");
    let with = |jobs| check_with(&scenario, CheckOptions { jobs, strategy: None }, &|| {});
    let (one, two) = (with(1), with(2));
    assert_eq!(one.outcomes, two.outcomes);
    assert_eq!(one.first_failing, two.first_failing);
    assert_eq!(one.metrics, two.metrics);
    assert_eq!(one.events, two.events);
}

#[test]
fn s_d2_is_found_by_exploration_under_random_and_pct() {
    use scenarios::check::{CheckOptions, check_with};
    use scenarios::schema::Strategy;
    let scenario = library("s-d2-double-remove.toml");
    for strategy in [Strategy::Random, Strategy::Pct] {
        let summary = check_with(&scenario, CheckOptions { jobs: 0, strategy: Some(strategy) }, &|| {});
        assert_eq!(summary.verdict, Ok(()), "{strategy:?}");
        let (_, outcome) = summary.first_failing.unwrap();
        assert!(outcome.what.contains("TDX_NO_PAMT_PAGE_PAIR"), "{strategy:?}: {}", outcome.what);
    }
}

#[test]
fn exhaustive_covers_every_schedule_of_the_ab_ba_litmus_within_its_bound() {
    use scenarios::check::{CheckOptions, check_with};
    use scenarios::schema::Strategy;
    let mut scenario = library("s-d5-per-2m-rwlock-ab-ba.toml");
    scenario.module.jitter = 0.0;
    scenario.run.max_stall = sim_core::Cycle(0);
    scenario.run.exhaustive_bound = 3;
    scenario.run.runs = 10_000;
    let summary =
        check_with(&scenario, CheckOptions { jobs: 0, strategy: Some(Strategy::Exhaustive) }, &|| {});
    assert_eq!(summary.complete, Some(true), "{} schedules", summary.runs);
    assert!(summary.runs > 1);
    // Every schedule of the two crossed gets either deadlocks or shows the inversion.
    assert_eq!(summary.outcomes.get(&OutcomeKind::Pass), None, "{:?}", summary.outcomes);
    assert!(summary.outcomes.contains_key(&OutcomeKind::Deadlock));
}

/// `check` with one job pools each run's lock figures from the engine on its own thread
/// (`Runner::explore_pooled`); with more, from each run's copied list in seed order. The
/// summaries, lock figures and all, are the same. In the D5' litmus the runs list their
/// range locks in the order they were first taken, so the pool also restarts mid-way.
#[test]
fn one_job_and_three_give_the_same_summary_and_lock_figures() {
    use scenarios::check::{CheckOptions, check_with};
    for file in ["s-d5-prime-pfn-order.toml", "s-d2-double-remove.toml"] {
        let scenario = library(file);
        let summary = |jobs| check_with(&scenario, CheckOptions { jobs, strategy: None }, &|| {});
        let (one, three) = (summary(1), summary(3));
        assert_eq!(one.runs, three.runs, "{file}");
        assert_eq!(one.outcomes, three.outcomes, "{file}");
        assert_eq!(one.first_failing, three.first_failing, "{file}");
        assert_eq!(one.events, three.events, "{file}");
        assert_eq!(one.verdict, three.verdict, "{file}");
        assert_eq!(one.metrics, three.metrics, "{file}");
        let instances = one.metrics.lock_instances();
        assert!(instances.len() >= 2, "{file}: {instances:?}");
        assert!(one.metrics.locks.acquisitions > one.runs, "{file}: the runs' locks were pooled");
    }
}
