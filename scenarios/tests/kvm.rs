//! The KVM cases of the library (S-K0, S-K2, S-K3, S-K4 and their twins) find what their
//! sources say, with the finding's parts where they belong; and the KVM paths keep the
//! project's rules (determinism, typed findings, checked invariants).

use std::path::Path;

use scenarios::check::check;
use scenarios::load_str;
use scenarios::run::{Schedule, check_determinism, run_once};
use sim_core::{Finding, OutcomeKind, WaitsFor};

fn library(file: &str) -> scenarios::schema::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/kvm").join(file);
    scenarios::load_file(&path).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn s_k3_is_a_named_wait_cycle_through_srcu_and_the_invalid_memslot() {
    let summary = check(&library("s-k3-memslot-delete-srcu-deadlock.toml"));
    assert_eq!(summary.verdict, Ok(()));
    let (seed, outcome) = summary.first_failing.unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Deadlock);
    assert!(seed < 20, "found within 20 runs: seed {seed}");
    let Finding::WaitCycle(cycle) = &outcome.finding else { panic!("{:?}", outcome.finding) };
    assert_eq!(cycle.len(), 2, "the vCPU and the deleter: {}", outcome.what);
    let whats: Vec<&str> = cycle
        .iter()
        .map(|blocked| match &blocked.waits {
            Some(WaitsFor::Event { what, .. }) => what.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(whats.contains(&"synchronize_srcu(&kvm->srcu)"), "{whats:?}");
    assert!(whats.iter().any(|what| what.contains("KVM_MEMSLOT_INVALID")), "{whats:?}");
    // Each waits for the other.
    let blockers = |index: usize| match &cycle[index].waits {
        Some(WaitsFor::Event { blockers, .. }) => blockers.clone(),
        _ => unreachable!(),
    };
    assert_eq!(blockers(0), vec![cycle[1].task]);
    assert_eq!(blockers(1), vec![cycle[0].task]);
    // The deleter holds kvm->slots_lock; the vCPU its vcpu->mutex.
    assert!(outcome.what.contains("holds kvm->slots_lock[TD 1]"), "{}", outcome.what);
    assert!(outcome.what.contains("holds vcpu->mutex[TD 1 vCPU 0]"), "{}", outcome.what);
    // Not every run deadlocks: the window is a fault in flight when the slot turns invalid.
    assert!(summary.outcomes.get(&OutcomeKind::Pass).copied().unwrap_or(0) > 0);
}

#[test]
fn s_k3b_the_invalid_memslot_exit_lets_the_deletion_finish() {
    let summary = check(&library("s-k3b-invalid-memslot-exit.toml"));
    assert_eq!(summary.verdict, Ok(()));
    assert_eq!(summary.outcomes.get(&OutcomeKind::Pass), Some(&summary.runs));
    // The vCPU kept faulting on the slot while it was being deleted, leaving the loop each
    // time: more EPT violations than faults resolved.
    assert!(summary.metrics.get("ept_violations").unwrap() > summary.metrics.get("faults").unwrap());
}

#[test]
fn s_k2_kicks_and_never_loses_twice_and_measures_the_stall() {
    let summary = check(&library("s-k2-kick-and-block-zero-step.toml"));
    assert_eq!(summary.verdict, Ok(()));
    let metric = |name| summary.metrics.get(name).unwrap();
    assert!(metric("sept_zap_kicks") >= summary.runs, "a kick in every run: {}", metric("sept_zap_kicks"));
    assert_eq!(metric("sept_busy_streak_peak"), 1, "the retry after the kick always wins");
    assert!(metric("sept_zap_stall_cycles") > 0 && metric("vcpu_entries_blocked") > 0);
    // The BUSY the kick resolves is the S-EPT tree that zero-step entries hold.
    assert!(summary.metrics.get("seamcall_busy[TDH.MEM.RANGE.BLOCK|SEPT]").unwrap() > 0);
    assert!(summary.metrics.get("seamcall_busy[TDH.VP.ENTER]").unwrap() > 0);
}

#[test]
fn s_k2b_without_the_kick_the_zap_runs_out_of_retries() {
    let summary = check(&library("s-k2b-blind-retry-zero-step.toml"));
    assert_eq!(summary.verdict, Ok(()));
    let (_, outcome) = summary.first_failing.unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Warn);
    assert!(outcome.what.contains("TDX_OPERAND_BUSY|SEPT"), "{}", outcome.what);
    assert!(summary.metrics.get("sept_busy_streak_peak").unwrap() > 16);
    assert_eq!(summary.metrics.get("sept_zap_kicks"), Some(0), "K0 never kicks");
}

#[test]
fn s_k0_starves_block_without_host_priority_and_ends_in_two_rounds_with_it() {
    let without = check(&library("s-k0-blind-retry-accept-storm.toml"));
    assert_eq!(without.verdict, Ok(()));
    let (_, outcome) = without.first_failing.unwrap();
    assert!(outcome.what.contains("TDH.MEM.RANGE.BLOCK"), "{}", outcome.what);
    assert_eq!(without.metrics.get("sept_busy_streak_peak"), Some(17), "the bound, 16, and one more");
    let with = check(&library("s-k0b-host-priority-ends-in-two-rounds.toml"));
    assert_eq!(with.verdict, Ok(()));
    assert_eq!(with.metrics.get("sept_busy_streak_peak"), Some(1));
    assert!(with.metrics.get("seamcall_busy").unwrap() >= with.runs / 2);
}

#[test]
fn s_k4_is_a_build_seamcall_busy_on_the_tdr_and_the_guard_removes_it() {
    let without = check(&library("s-k4-td-ioctls-without-guard.toml"));
    assert_eq!(without.verdict, Ok(()));
    let (_, outcome) = without.first_failing.unwrap();
    assert!(outcome.what.contains("TDX_OPERAND_BUSY|TDR"), "{}", outcome.what);
    assert!(outcome.what.contains("KVM_BUG_ON"), "{}", outcome.what);
    let with = check(&library("s-k4b-td-state-guard.toml"));
    assert_eq!(with.verdict, Ok(()));
    assert_eq!(with.metrics.get("seamcall_busy"), Some(0));
    // The TD was destroyed: every page reclaimed (32 added, 3 S-EPT tables, two vCPUs of 6
    // pages, the TDR) and the one DPAMT range it used released.
    let result = run_once(&library("s-k4b-td-state-guard.toml"), &Schedule::Random(0), false);
    let count = |leaf, wanted: &str| {
        result
            .metrics
            .seamcalls
            .iter()
            .filter(|((called, status), _)| *called == leaf && status.name() == wanted)
            .map(|(_, count)| count)
            .sum::<u64>()
    };
    assert_eq!(count(seam_model::Leaf::PhymemPageReclaim, "TDX_SUCCESS"), 32 + 3 + 12 + 1);
    assert_eq!(count(seam_model::Leaf::PhymemPamtRemove, "TDX_SUCCESS"), 1);
    assert_eq!(count(seam_model::Leaf::PhymemCacheWb, "TDX_INTERRUPTED_RESUMABLE"), 3, "resumed");
}

/// A small TD's whole life on one CPU: build, a vCPU that faults its pages in, teardown.
const LIFE: &str = r#"
name = "t"
[machine]
cpus = 2
packages = 2
memory = "16M"
[[task]]
cpu = 0
steps = [{ call = "td_create", td = 1, vcpus = 1, returns = "0" },
         { call = "vcpu_run", td = 1, gpa = "0x200000", count = 8, interval = "1us", returns = "0" },
         { call = "td_destroy", td = 1, returns = "0" }]
[run]
runs = 10
"#;

#[test]
fn a_td_boots_runs_and_is_destroyed_without_a_page_left() {
    let scenario = load_str("x.toml", LIFE).unwrap();
    let result = run_once(&scenario, &Schedule::Random(0), false);
    assert_eq!(result.outcome.kind, OutcomeKind::Pass, "{}", result.outcome.what);
    let reclaims = result
        .metrics
        .seamcalls
        .iter()
        .filter(|((leaf, status), _)| *leaf == seam_model::Leaf::PhymemPageReclaim && status.is_success())
        .map(|(_, count)| count)
        .sum::<u64>();
    // 8 private pages, 3 S-EPT tables, the TDVPR and its 5 TDCX pages, the TDR.
    assert_eq!(reclaims, 8 + 3 + 6 + 1);
    assert_eq!(result.metrics.get("ept_violations"), Some(8), "one ACCEPT violation per page");
    assert_eq!(result.metrics.get("faults"), Some(8));
    let summary = check(&scenario);
    assert_eq!(summary.outcomes.get(&OutcomeKind::Pass), Some(&10));
}

#[test]
fn a_vcpu_run_replays_bit_for_bit() {
    let scenario = library("s-k2-kick-and-block-zero-step.toml");
    let hash = check_determinism(&scenario, &Schedule::Random(3)).unwrap_or_else(|error| panic!("{error:?}"));
    assert_eq!(hash, run_once(&scenario, &Schedule::Random(3), false).trace_hash);
}

#[test]
fn a_guest_touching_pages_it_never_accepted_kills_the_vm() {
    let text = LIFE.replace("count = 8, interval = \"1us\", returns = \"0\"", "count = 8, accept = false");
    let scenario = load_str("x.toml", &text).unwrap();
    let result = run_once(&scenario, &Schedule::Random(0), true);
    // KVM_RUN returns -EIO ("Guest access before accepting"); the teardown still reclaims.
    assert_eq!(result.outcome.kind, OutcomeKind::Pass, "{}", result.outcome.what);
    let ended = result.trace.iter().any(|event| {
        matches!(&event.kind, sim_core::TraceKind::Mark { text, .. } if text.as_ref() == "vcpu_run = -EIO")
    });
    assert!(ended, "vcpu_run returned -EIO");
}
