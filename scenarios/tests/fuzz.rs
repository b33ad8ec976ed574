//! `tdxsim fuzz` and `--strategy coverage`: what they write, and that they are the same for
//! any number of threads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;
use scenarios::check::{CheckOptions, check_with};
use scenarios::run::{Schedule, run_once};
use scenarios::schema::Strategy;

fn tdxsim(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tdxsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tdxsim runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A scratch directory whose `out` (not created yet) a test's `tdxsim fuzz --out` writes.
fn out_dir(test: &str) -> (Scratch, PathBuf) {
    let scratch = Scratch::new(&format!("fuzz-{test}"));
    let out = scratch.join("out");
    (scratch, out)
}

/// The output without what depends on the wall clock (`(0.1 s)`).
fn without_times(text: &str) -> String {
    text.lines()
        .map(|line| match (line.find(" ("), line.find(" s)")) {
            (Some(start), Some(end)) if start < end && line[start..end].contains('.') => {
                format!("{}{}", &line[..start], &line[end + 3..])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn fuzz_finds_yans_ab_ba_from_scratch_and_writes_what_check_and_replay_run() {
    let (_scratch, dir) = out_dir("ab-ba");
    let out = dir.to_string_lossy().into_owned();
    let (code, stdout, stderr) =
        tdxsim(&["fuzz", "--design", "dpamt=per-2m-rwlock", "--cases", "64", "--jobs", "1", "--out", &out]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("shrunk in "), "{stdout}");
    assert!(stdout.contains(": 2 CPUs, 2 tasks, 2 steps, 2 ranges (from "), "{stdout}");
    assert!(stdout.contains("schedule: the default schedule (0 deviations)"), "{stdout}");
    assert!(stdout.contains("shrunk outcome: deadlock: wait cycle"), "{stdout}");
    assert!(stdout.contains("(tdxsim check meets the finding)"), "{stdout}");
    // The table of the two CPUs, each taking its range for write, then the other's for read.
    assert!(stdout.contains("cycle | CPU 0"), "{stdout}");
    assert!(stdout.contains("| CPU 1"), "{stdout}");
    assert!(stdout.contains("read_lock(rw[") && stdout.contains("... spins"), "{stdout}");
    let scenario = dir.join("fuzz-per-2m-rwlock.toml");
    // The default schedule deadlocks: exhaustive's first schedule is the run bundled.
    let bundle = dir.join("fuzz-per-2m-rwlock-exhaustive-seed0.bundle");
    let table = std::fs::read_to_string(dir.join("fuzz-per-2m-rwlock.table.txt")).unwrap();
    assert!(table.starts_with("deadlock: CPUs 0, 1;"), "{table}");
    let text = std::fs::read_to_string(&scenario).unwrap();
    assert!(text.contains("dpamt = \"per-2m-rwlock\""), "{text}");
    assert!(text.contains("[expect]\noutcome = \"deadlock\""), "{text}");
    let (code, checked, _) = tdxsim(&["check", &scenario.to_string_lossy()]);
    assert_eq!(code, 0, "{checked}");
    assert!(checked.contains("1 passed, 0 failed"), "{checked}");
    let (code, replayed, _) = tdxsim(&["replay", &bundle.to_string_lossy()]);
    assert_eq!(code, 0, "{replayed}");
    assert!(replayed.contains("bundle: reproduced"), "{replayed}");
    assert!(stdout.contains(&format!("replay: tdxsim replay {} --table", bundle.display())), "{stdout}");
    assert!(text.contains("strategy = \"exhaustive\"") && text.contains("runs = 1\n"), "{text}");
}

#[test]
fn fuzz_is_the_same_for_any_number_of_threads() {
    let run = |jobs: &str| {
        let (_scratch, dir) = out_dir(&format!("jobs{jobs}"));
        let out = dir.to_string_lossy().into_owned();
        let args = [
            "fuzz",
            "--design",
            "dpamt=per-2m-rwlock",
            "--cases",
            "96",
            "--seed",
            "7",
            "--jobs",
            jobs,
            "--out",
            &out,
        ];
        let (code, stdout, _) = tdxsim(&args);
        let written = std::fs::read_to_string(dir.join("fuzz-per-2m-rwlock.toml")).unwrap();
        (code, without_times(&stdout).replace(&out, "OUT"), written)
    };
    let one = run("1");
    assert_eq!(one.0, 1, "{}", one.1);
    assert_eq!(one, run("2"));
}

#[test]
fn fuzz_of_a_correct_design_finds_nothing_and_exits_0() {
    let (_scratch, dir) = out_dir("correct");
    let out = dir.to_string_lossy().into_owned();
    let (code, stdout, stderr) =
        tdxsim(&["fuzz", "--design", "dpamt=dec-and-lock", "--cases", "64", "--jobs", "1", "--out", &out]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("no finding in 64 cases"), "{stdout}");
    assert!(!Path::new(&dir).exists(), "nothing is written without a finding");
}

#[test]
fn fuzz_refuses_a_design_that_does_not_exist() {
    let (code, stdout, stderr) = tdxsim(&["fuzz", "--design", "dpamt=per-4k-lock", "--cases", "1"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.contains("--design dpamt=per-4k-lock: not a DPAMT design; one of hint, "), "{stderr}");
    let (code, _, stderr) = tdxsim(&["fuzz", "--design", "dpamt", "--cases", "1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("expected KEY=VALUE"), "{stderr}");
    let (code, _, stderr) = tdxsim(&["fuzz", "--time", "soon"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--time \"soon\": expected a duration"), "{stderr}");
}

#[test]
fn fuzz_around_a_template_keeps_its_machine_and_designs() {
    let (_scratch, dir) = out_dir("template");
    let out = dir.to_string_lossy().into_owned();
    let (code, stdout, _) = tdxsim(&[
        "fuzz",
        "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml",
        "--cases",
        "64",
        "--jobs",
        "1",
        "--out",
        &out,
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("around library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml"), "{stdout}");
    let text = std::fs::read_to_string(dir.join("fuzz-per-2m-rwlock.toml")).unwrap();
    assert!(text.contains("[machine]\ncpus = 2\nmemory = \"16M\""), "{text}");
}

#[test]
fn check_with_coverage_is_the_same_for_any_number_of_threads_and_run_replays_its_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("library/update/s-u3b-nested-cpus-read-lock-from-zero.toml");
    let mut scenario = scenarios::load_file(&path).unwrap();
    scenario.run.runs = 40;
    let summary =
        |jobs| check_with(&scenario, CheckOptions { jobs, strategy: Some(Strategy::Coverage) }, &|| {});
    let (one, two) = (summary(1), summary(2));
    assert_eq!(one.outcomes, two.outcomes);
    assert_eq!(one.first_failing, two.first_failing);
    assert!(one.verdict.is_ok(), "{:?}", one.verdict);
    // `--seed N` of the coverage strategy is run N of the exploration: the same outcome.
    let (index, outcome) = one.first_failing.expect("coverage meets the deadlock within 40 runs");
    let again = run_once(&scenario, &Schedule::for_seed(&scenario, Some(Strategy::Coverage), index), false);
    assert_eq!(again.outcome, outcome);
}
