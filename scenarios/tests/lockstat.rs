//! Lock statistics (lockstat / `perf lock contention` figures), BUSY by leaf and operand, and
//! fault latency: as metrics, as `[expect.metrics]` bounds, and in `run --lock-stat`.

mod common;

use std::process::Command;

use scenarios::check::check;
use scenarios::load_str;
use scenarios::run::{Schedule, run_once};

/// Two one-vCPU TDs on two CPUs fault a page in each of the same two 2MB ranges, then zap
/// them: every first fault of a range races the other CPU for the DPAMT lock.
fn faults(design: &str, expect: &str) -> String {
    format!(
        r#"name = "faults on shared ranges"
[machine]
cpus = 2
memory = "16M"
[host]
dpamt = "{design}"
[[task]]
cpu = 0
repeat = 3
steps = [{{ call = "tdp_fault", td = 1, gpa = "0x0", page = "0x200000" }},
         {{ call = "tdp_fault", td = 1, gpa = "0x1000", page = "0x400000" }},
         {{ call = "zap", td = 1, gpa = "0x0", count = 2 }}]
[[task]]
cpu = 1
repeat = 3
steps = [{{ call = "tdp_fault", td = 2, gpa = "0x0", page = "0x201000" }},
         {{ call = "tdp_fault", td = 2, gpa = "0x1000", page = "0x401000" }},
         {{ call = "zap", td = 2, gpa = "0x0", count = 2 }}]
[run]
runs = 20
{expect}"#
    )
}

#[test]
fn a_run_reports_lockstat_figures_per_class_and_instance() {
    let scenario = load_str("f.toml", &faults("global-lock", "")).unwrap();
    let result = run_once(&scenario, &Schedule::Random(0), false);
    let metrics = &result.metrics;
    assert_eq!(metrics.get("faults"), Some(12), "two CPUs x three rounds x two pages");
    // Every D3 get and put takes dpamt_lock: 12 gets and 12 puts.
    assert_eq!(metrics.get("lock_acquisitions[dpamt_lock]"), Some(24));
    let class = &metrics.lock_classes()["mmu_lock"];
    assert_eq!((class.kind.as_str(), class.instances), ("rwlock", 2), "mmu_lock[TD 1] and mmu_lock[TD 2]");
    let per_instance: u64 = ["mmu_lock[TD 1]", "mmu_lock[TD 2]"]
        .iter()
        .map(|lock| metrics.get(&format!("lock_acquisitions[{lock}]")).unwrap())
        .sum();
    assert_eq!(metrics.get("lock_acquisitions[mmu_lock]"), Some(per_instance));
    // Figures agree with each other as lockstat's do.
    let figure = |name: &str| metrics.get(name).unwrap();
    assert!(figure("lock_wait_max_cycles") <= figure("lock_wait_cycles"));
    assert!(figure("lock_wait_p99_cycles") <= figure("lock_wait_max_cycles"));
    assert!(figure("lock_hold_max_cycles") <= figure("lock_hold_cycles"));
    assert!(figure("lock_hold_cycles") > 0);
    assert!(figure("fault_latency_p50_cycles") <= figure("fault_latency_p99_cycles"));
    assert!(figure("fault_latency_p99_cycles") <= figure("fault_latency_max_cycles"));
    assert!(figure("fault_latency_max_cycles") <= figure("fault_latency_cycles"));
    assert_eq!(figure("sim_cycles"), result.end.0);
}

#[test]
fn contention_shows_up_in_some_run_and_its_waits_are_counted() {
    let scenario = load_str("f.toml", &faults("global-lock", "")).unwrap();
    let summary = check(&scenario);
    let figure = |name: &str| summary.metrics.get(name).unwrap();
    assert!(figure("lock_contended[dpamt_lock]") > 0, "two CPUs race for dpamt_lock in 20 runs");
    let classes = summary.metrics.lock_classes();
    let waits = &classes["dpamt_lock"].stats;
    assert_eq!(waits.wait_histogram.count(), waits.contended, "one wait per contention");
    assert_eq!(
        figure("lock_wait_avg_cycles[dpamt_lock]"),
        figure("lock_wait_cycles[dpamt_lock]") / figure("lock_contended[dpamt_lock]")
    );
    assert_eq!(figure("faults"), 20 * 12, "faults add over runs");
}

#[test]
fn expect_metrics_bound_class_figures() {
    let holds = "[expect]\noutcome = \"pass\"\n[expect.metrics]\n\"lock_acquisitions[dpamt_lock]_min\" = 480\n\
                 \"lock_acquisitions[dpamt_lock]_max\" = 480\nfaults_min = 240\n";
    assert_eq!(check(&load_str("f.toml", &faults("global-lock", holds)).unwrap()).verdict, Ok(()));
    let fails = "[expect]\noutcome = \"pass\"\n[expect.metrics]\n\"lock_acquisitions[pamt_lock]_min\" = 1\n";
    let verdict = check(&load_str("f.toml", &faults("global-lock", fails)).unwrap()).verdict;
    assert_eq!(
        verdict,
        Err("expect.metrics.lock_acquisitions[pamt_lock]_min = 1 does not hold: lock_acquisitions[pamt_lock] over all runs is 0".to_string()),
        "D3 has no pamt_lock (that is D2's name)"
    );
}

#[test]
fn busy_is_counted_by_leaf_and_operand() {
    // S-D6's crossed PAMT.ADDs meet BUSY on the pair's range under the read lock.
    let scenario = scenarios::load_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/library/dpamt/s-d6-global-rwlock-fallback.toml"
    )))
    .unwrap();
    let summary = check(&scenario);
    let busy = summary.metrics.get("seamcall_busy").unwrap();
    assert!(summary.metrics.get("seamcall_busy[TDH.PHYMEM.PAMT.ADD]").unwrap() > 0);
    let values = summary.metrics.named_values();
    let sum = |keep: &dyn Fn(&str) -> bool| -> u64 {
        values.iter().filter(|(name, _)| keep(name)).map(|(_, value)| value).sum()
    };
    let per_leaf = |name: &str| name.starts_with("seamcall_busy[") && !name.contains('|');
    assert_eq!(sum(&per_leaf), busy, "BUSY per leaf adds up to all BUSY");
    for (name, count) in values.iter().filter(|(name, _)| per_leaf(name)) {
        let leaf = name.trim_end_matches(']');
        let operands = sum(&|other: &str| other.starts_with(&format!("{leaf}|")));
        assert_eq!(operands, *count, "{name}: its operands add up to it");
        for operand in values.iter().filter(|(other, _)| other.starts_with(&format!("{leaf}|"))) {
            assert_eq!(summary.metrics.get(&operand.0), Some(operand.1), "{} reads back", operand.0);
        }
    }
}

#[test]
fn run_lock_stat_prints_classes_by_total_wait() {
    let dir = common::Scratch::new("lockstat");
    let file = dir.join("f.toml");
    std::fs::write(&file, faults("global-lock", "")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tdxsim"))
        .args(["run", file.to_str().unwrap(), "--lock-stat", "--seed", "1", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let classes: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("lock classes, by total wait:"))
        .skip(1)
        .take_while(|line| !line.starts_with("lock instances"))
        .collect();
    assert!(classes[0].contains("total wait") && classes[0].contains("p99 wait"), "{stdout}");
    let names: Vec<&str> = classes[1..].iter().map(|line| line.split_whitespace().next().unwrap()).collect();
    assert_eq!(names, ["dpamt_lock", "mmu_lock"], "dpamt_lock waits, mmu_lock (all readers) does not");
    assert!(stdout.contains("mmu_lock[TD 1]"), "instances are listed too");
    assert!(stdout.contains("faults: 12 resolved; latency p50 "), "{stdout}");
}
