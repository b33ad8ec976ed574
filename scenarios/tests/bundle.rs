//! Repro bundles: written, read back, replayed, and refused when damaged; the CLI around them.

mod common;

use std::path::Path;
use std::process::Command;

use common::Scratch;
use scenarios::bundle::{self, Bundle, BundleError};
use scenarios::load_str;
use scenarios::run::{Schedule, run_once};

const S_D5: &str = "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml";
const S_D4: &str = "library/dpamt/s-d4-dec-and-lock.toml";

fn library_text(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

/// A fresh directory under the system temp dir, per test, removed when it is dropped.
fn temp_dir(test: &str) -> Scratch {
    Scratch::new(&format!("bundle-{test}"))
}

/// The bundle of `file` run from `seed`.
fn bundle_of(file: &str, seed: u64) -> Bundle {
    let text = library_text(file);
    let scenario = load_str(file, &text).unwrap_or_else(|error| panic!("{error}"));
    let result = run_once(&scenario, &Schedule::Random(seed), false);
    Bundle::new(&scenario, &text, scenario.run.strategy, seed, &result)
}

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

fn line_starting<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|line| line.starts_with(prefix))
}

#[test]
fn write_then_read_gives_the_same_bundle() {
    let scratch = temp_dir("round-trip");
    let dir = scratch.join("created/by/write");
    let bundle = bundle_of(S_D5, 4);
    let path = bundle::write(&dir, &bundle).unwrap();
    assert_eq!(path, dir.join("s-d5-per-2m-rwlock-ab-ba-seed4.bundle"));
    assert_eq!(bundle::read(&path).unwrap(), bundle);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary file is left behind: {names:?}");
}

#[test]
fn replaying_a_bundle_gives_the_recorded_run() {
    let bundle = bundle_of(S_D5, 4);
    assert_eq!(bundle.outcome.kind, sim_core::OutcomeKind::Deadlock, "{}", bundle.outcome);
    assert!(matches!(bundle.outcome.finding, sim_core::Finding::WaitCycle(_)), "the finding, typed");
    let read = bundle::decode(&bundle::encode(&bundle)).unwrap();
    let (_, result) = read.replay(false).unwrap();
    assert_eq!(result.trace_hash, bundle.trace_hash);
    assert_eq!(result.outcome, bundle.outcome);
    assert!(read.mismatches(&result).is_empty());
    assert!(!result.diverged);
}

#[test]
fn a_replay_that_differs_is_named() {
    let mut bundle = bundle_of(S_D5, 4);
    bundle.trace_hash ^= 1;
    let (_, result) = bundle.replay(false).unwrap();
    let mismatches = bundle.mismatches(&result);
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert!(mismatches[0].starts_with("trace hash"), "{mismatches:?}");
}

#[test]
fn a_truncated_bundle_is_refused_at_every_length() {
    let bytes = bundle::encode(&bundle_of(S_D5, 4));
    for len in 0..bytes.len() {
        match bundle::decode(&bytes[..len]) {
            Err(error @ BundleError::Truncated { .. }) => {
                assert!(error.to_string().starts_with("truncated: "), "{error}");
            }
            Err(BundleError::NotABundle) => {
                panic!("{len} bytes: a prefix of the magic is a truncated bundle")
            }
            other => panic!("{len} of {} bytes: {other:?}", bytes.len()),
        }
    }
    let error = bundle::decode(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(error.to_string().contains("shorter than its checksum"), "{error}");
    let error = bundle::decode(&bytes[..30]).unwrap_err();
    assert!(error.to_string().contains("shorter than its payload"), "{error}");
    let error = bundle::decode(&bytes[..5]).unwrap_err();
    assert!(error.to_string().contains("shorter than its header"), "{error}");
}

#[test]
fn other_files_are_not_bundles() {
    let error = bundle::decode(&library_text(S_D5).into_bytes()).unwrap_err();
    assert_eq!(error.to_string(), "not a tdxsim bundle (bad magic)");
    assert!(matches!(bundle::decode(b"X"), Err(BundleError::NotABundle)));
}

#[test]
fn a_flipped_byte_is_corrupt() {
    let bytes = bundle::encode(&bundle_of(S_D5, 4));
    // Every byte of the payload and of the checksum.
    for index in 20..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x10;
        let error = bundle::decode(&damaged).unwrap_err();
        assert!(matches!(error, BundleError::Corrupt(_)), "byte {index}: {error}");
        assert!(error.to_string().starts_with("corrupt: checksum mismatch"), "{error}");
    }
}

#[test]
fn a_bundle_from_another_format_version_names_both_versions() {
    let mut bytes = bundle::encode(&bundle_of(S_D5, 4));
    bytes[8..12].copy_from_slice(&999u32.to_le_bytes());
    let error = bundle::decode(&bytes).unwrap_err();
    assert!(matches!(error, BundleError::Version { found: 999, supported: bundle::FORMAT_VERSION }));
    assert_eq!(
        error.to_string(),
        format!(
            "written by bundle format version 999 (this tdxsim reads version {})",
            bundle::FORMAT_VERSION
        )
    );
}

/// The bundle path of a `replay: tdxsim replay PATH.bundle` line.
fn bundle_path(stdout: &str) -> String {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("replay: tdxsim replay ") && line.ends_with(".bundle"))
        .unwrap_or_else(|| panic!("no bundle replay line: {stdout}"));
    line["replay: tdxsim replay ".len()..].to_string()
}

#[test]
fn check_writes_the_bundle_of_a_failed_file_and_its_line_replays_seed_0() {
    let dir = temp_dir("check");
    let text = library_text(S_D5)
        .replace("outcome = \"deadlock\"\nwhat = \"rw[A]\"", "outcome = \"pass\"")
        .replace("runs = 200", "runs = 3");
    let file = dir.join("wrong-expectation.toml");
    std::fs::write(&file, text).unwrap();
    let file = file.to_string_lossy().into_owned();
    let out = dir.join("D");
    let (code, stdout, stderr) = tdxsim(&["check", "--out", &out.to_string_lossy(), &file]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let path = bundle_path(&stdout);
    assert_eq!(Path::new(&path), out.join("wrong-expectation-seed0.bundle"));
    assert!(Path::new(&path).is_file());

    let (code, from_bundle, stderr) = tdxsim(&["replay", &path]);
    assert_eq!(code, 1, "the file still expects a pass: {from_bundle}{stderr}");
    assert!(from_bundle.contains("bundle: reproduced"), "{from_bundle}");
    let (_, from_seed, _) = tdxsim(&["replay", &file, "--seed", "0"]);
    let outcome = line_starting(&from_seed, "seed 0: deadlock").expect("seed 0 deadlocks");
    assert_eq!(line_starting(&from_bundle, "seed 0:"), Some(outcome));
    assert!(line_starting(&from_seed, "trace hash:").is_some());
    assert_eq!(line_starting(&from_bundle, "trace hash:"), line_starting(&from_seed, "trace hash:"));
}

#[test]
fn check_writes_no_bundle_for_an_expected_finding_unless_out_is_given() {
    let dir = temp_dir("check-ok");
    let (code, stdout, _) = tdxsim(&["check", S_D5]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains(".bundle"), "{stdout}");
    let (code, stdout, _) = tdxsim(&["check", "--out", &dir.to_string_lossy(), S_D5]);
    assert_eq!(code, 0, "{stdout}");
    assert!(Path::new(&bundle_path(&stdout)).is_file(), "{stdout}");
}

#[test]
fn run_writes_the_bundle_of_a_run_that_does_not_pass() {
    let dir = temp_dir("run");
    let (code, stdout, _) = tdxsim(&["run", S_D5, "--seed", "4", "--out", &dir.to_string_lossy()]);
    assert_eq!(code, 0, "a deadlock is what this file expects: {stdout}");
    let path = bundle_path(&stdout);
    assert_eq!(Path::new(&path), dir.join("s-d5-per-2m-rwlock-ab-ba-seed4.bundle"));
    assert_eq!(bundle::read(Path::new(&path)).unwrap(), bundle_of(S_D5, 4));
}

#[test]
fn replaying_a_bundle_that_does_not_reproduce_says_so_and_exits_1() {
    let dir = temp_dir("mismatch");
    let mut recorded = bundle_of(S_D5, 4);
    recorded.outcome = sim_core::Outcome::pass();
    let path = bundle::write(&dir, &recorded).unwrap();
    let (code, stdout, _) = tdxsim(&["replay", &path.to_string_lossy()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("MISMATCH: this replay does not reproduce"), "{stdout}");
    assert!(stdout.contains("the bundle recorded \"pass\""), "{stdout}");
}

#[test]
fn replay_refuses_a_damaged_bundle_with_the_reason() {
    let dir = temp_dir("damaged");
    let path = dir.join("cut.bundle");
    std::fs::write(&path, &bundle::encode(&bundle_of(S_D5, 4))[..40]).unwrap();
    let (code, stdout, stderr) = tdxsim(&["replay", &path.to_string_lossy()]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.trim(), format!("{}: truncated: 40 bytes, shorter than its payload", path.display()));
}

#[test]
fn check_determinism_prints_the_same_hash_line() {
    let (code, stdout, stderr) = tdxsim(&["run", S_D4, "--check-determinism"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let hash = line_starting(&stdout, "trace hash: ").unwrap()["trace hash: ".len()..][..16].to_string();
    assert_eq!(
        line_starting(&stdout, "determinism:"),
        Some(format!("determinism: 2 runs, same trace hash {hash}").as_str())
    );
}

#[cfg(unix)]
#[test]
fn a_planted_symlink_does_not_redirect_the_bundle() {
    let dir = temp_dir("symlink");
    let outside_dir = temp_dir("symlink-outside");
    let outside = outside_dir.join("victim");
    std::fs::write(&outside, "precious").unwrap();
    let bundle = bundle_of(S_D5, 3);
    std::os::unix::fs::symlink(&outside, dir.join(bundle.file_name())).unwrap();
    let path = bundle::write(&dir, &bundle).unwrap();
    assert_eq!(path, dir.join("s-d5-per-2m-rwlock-ab-ba-seed3-2.bundle"));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert_eq!(bundle::read(&path).unwrap(), bundle);
}

#[test]
fn another_scenario_with_the_same_stem_gets_its_own_name_and_the_same_run_replaces_its_own() {
    let dir = temp_dir("same-stem");
    let first = bundle_of(S_D5, 3);
    let mut other = first.clone();
    other.scenario_path = "elsewhere/s-d5-per-2m-rwlock-ab-ba.toml".to_string();
    let first_path = bundle::write(&dir, &first).unwrap();
    let other_path = bundle::write(&dir, &other).unwrap();
    assert_ne!(first_path, other_path);
    assert_eq!(other_path, dir.join("s-d5-per-2m-rwlock-ab-ba-seed3-2.bundle"));
    assert_eq!(bundle::read(&first_path).unwrap(), first, "not silently replaced");
    // Written again, the same run takes its own name back.
    assert_eq!(bundle::write(&dir, &first).unwrap(), first_path);
    assert_eq!(bundle::write(&dir, &other).unwrap(), other_path);
    let entries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, 2, "no temporary file is left behind");
}

#[test]
fn a_pct_bundle_is_named_after_its_strategy() {
    let mut bundle = bundle_of(S_D5, 3);
    bundle.strategy = "pct".to_string();
    assert_eq!(bundle.file_name(), "s-d5-per-2m-rwlock-ab-ba-pct-seed3.bundle");
}

#[test]
fn an_edited_seed_a_garbage_strategy_and_unused_decisions_are_caught() {
    let recorded = bundle_of(S_D5, 3);
    let (scenario, result) = recorded.replay(false).unwrap();
    assert!(recorded.mismatches(&result).is_empty());
    assert!(recorded.seed_mismatches(&scenario).is_empty());

    // Another seed, checksum recomputed by encode: the decisions still replay, the seed does not make them.
    let mut edited = recorded.clone();
    edited.seed = 4;
    let edited = bundle::decode(&bundle::encode(&edited)).unwrap();
    let why = edited.seed_mismatches(&scenario);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].starts_with("seed 4 with strategy random makes "), "{why:?}");

    let mut garbage = recorded.clone();
    garbage.strategy = "\u{1b}[2Jchaos".to_string();
    let error = bundle::decode(&bundle::encode(&garbage)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "corrupt: strategy \"\\u{1b}[2Jchaos\" is none of random, pct, exhaustive, coverage"
    );

    let mut longer = recorded.clone();
    longer.decisions.extend([0, 0, 0]);
    let (_, result) = longer.replay(false).unwrap();
    let why = longer.mismatches(&result);
    assert!(why.iter().any(|why| why.contains("the rest were not used")), "{why:?}");
}
