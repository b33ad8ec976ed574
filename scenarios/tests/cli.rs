//! The `tdxsim` binary: exit codes, and what it prints for people.

mod common;

use std::path::Path;
use std::process::Command;

use common::Scratch;

/// Runs tdxsim; failing runs write their bundles to a temp dir, not the source tree.
fn tdxsim(args: &[&str]) -> (i32, String, String) {
    let scratch = Scratch::new("cli-out");
    let mut args: Vec<&str> = args.to_vec();
    let out = scratch.to_string_lossy().into_owned();
    if matches!(args.first(), Some(&"run") | Some(&"check")) {
        args.extend(["--out", &out]);
    }
    let output = Command::new(env!("CARGO_BIN_EXE_tdxsim"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tdxsim runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `text` in a file `name` of a scratch directory (which goes with the first value).
fn temp_file(name: &str, text: &str) -> (Scratch, String) {
    let dir = Scratch::new("cli");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

#[test]
fn check_passes_the_library_and_says_so_per_file() {
    let (code, stdout, _) = tdxsim(&[
        "check",
        "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml",
        "library/dpamt/s-d4-dec-and-lock.toml",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("ok   library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml: 200 random runs: deadlock "),
        "{stdout}"
    );
    assert!(stdout.contains("| first failing seed 0 (deadlock: wait cycle"), "{stdout}");
    assert!(!stdout.contains("runs/s"), "nothing that changes from run to run: {stdout}");
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
}

#[test]
fn check_exits_1_when_an_expectation_fails_and_prints_the_replay() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml"),
    )
    .unwrap()
    .replace("outcome = \"deadlock\"\nwhat = \"rw[A]\"", "outcome = \"pass\"")
    .replace("runs = 200", "runs = 3");
    let (_dir, file) = temp_file("wrong-expectation.toml", &text);
    let (code, stdout, _) = tdxsim(&["check", &file]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains(&format!("replay: tdxsim replay {file} --seed 0 --strategy random --table")),
        "{stdout}"
    );
}

#[test]
fn bad_input_exits_2_with_a_positioned_message_and_runs_nothing() {
    let (_dir, file) = temp_file("bad.toml", "name = \"x\"\n[machine]\ncpus = \"two\"\n");
    let (code, stdout, stderr) = tdxsim(&["check", &file]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim(),
        format!("{file}:3:8: machine.cpus: expected an integer 1..=4096, found \"two\"")
    );
}

#[test]
fn run_and_replay_print_the_same_outcome_and_hash() {
    let file = "library/dpamt/s-d1-hint-missing-pamt-page-pair.toml";
    let (_, run, _) = tdxsim(&["run", file, "--seed", "4"]);
    let (_, replay, _) = tdxsim(&["replay", file, "--seed", "4"]);
    let hash = |text: &str| text.lines().find(|line| line.starts_with("trace hash:")).map(str::to_string);
    assert!(hash(&run).is_some(), "{run}");
    assert_eq!(hash(&run), hash(&replay));
    assert_eq!(run.lines().nth(1), replay.lines().nth(1), "the outcome line");
}

#[test]
fn run_table_has_a_column_per_cpu() {
    let (code, stdout, _) = tdxsim(&["run", "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml", "--table"]);
    assert_eq!(code, 0, "a deadlock is what this file expects");
    let header = stdout.lines().find(|line| line.starts_with("cycle")).unwrap();
    assert_eq!(header.split('|').map(str::trim).collect::<Vec<_>>(), ["cycle", "CPU 0", "CPU 1"]);
    assert!(stdout.contains("read_lock(rw[B]) ... spins"), "{stdout}");
}

#[test]
fn list_prints_the_catalogues() {
    let (_, designs, _) = tdxsim(&["list", "designs"]);
    for name in [
        "hint",
        "global-lock-fastpath",
        "global-lock",
        "dec-and-lock",
        "per-2m-rwlock",
        "per-2m-rwlock-pfn-order",
        "global-rwlock-fallback",
    ] {
        assert!(designs.contains(&format!("host.dpamt  = {name} ")), "{name}: {designs}");
    }
    let (_, leaves, _) = tdxsim(&["list", "leaves"]);
    assert!(leaves.contains("TDH.PHYMEM.PAMT.ADD") && leaves.contains("modelled"), "{leaves}");
    let (_, calls, _) = tdxsim(&["list", "calls"]);
    assert!(calls.contains("tdx_pamt_get"), "{calls}");
}

#[test]
fn list_invariants_names_every_registered_check() {
    let (_, stdout, _) = tdxsim(&["list", "invariants"]);
    for name in [
        "dpamt-refcount-matches-module",
        "no-page-in-unbacked-range",
        "pamt-pages-not-double-freed",
        "pamt-pages-not-leaked",
        "lock-order",
    ] {
        assert!(stdout.contains(name), "{name}: {stdout}");
    }
}
