//! Every `replay: …` line that `run` and `check` print reproduces the run it describes: each
//! line is run through `sh` as a user would paste it, and its trace hash compared, for each
//! strategy, from a path that needs quoting.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;

const S_D5: &str = "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml";
const STRATEGIES: [&str; 3] = ["random", "pct", "exhaustive"];

/// A directory whose name a shell must quote, holding a copy of S-D5 (with `expect` made
/// to fail when `failing`, so `check` prints its replay lines).
fn scenario_copy(test: &str, failing: bool) -> (Scratch, PathBuf) {
    let dir = Scratch::new(&format!("replay lines {test}"));
    let mut text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(S_D5)).unwrap();
    if failing {
        text = text
            .replace("outcome = \"deadlock\"\nwhat = \"rw[A]\"", "outcome = \"pass\"")
            .replace("runs = 200", "runs = 6");
    }
    let file = dir.join("it's s-d5.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

/// Runs `line` (`tdxsim …`) with `sh -c`, tdxsim on the PATH; returns stdout.
fn shell(line: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_tdxsim")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("sh").arg("-c").arg(line).env("PATH", path).output().expect("sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{line}: {:?}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn tdxsim(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tdxsim")).args(args).output().expect("tdxsim runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn trace_hash(stdout: &str) -> String {
    let line =
        stdout.lines().find(|line| line.starts_with("trace hash: ")).unwrap_or_else(|| panic!("{stdout}"));
    line["trace hash: ".len()..][..16].to_string()
}

fn replay_lines(stdout: &str) -> Vec<String> {
    stdout.lines().filter_map(|line| line.trim_start().strip_prefix("replay: ")).map(str::to_string).collect()
}

#[test]
fn run_prints_replay_lines_that_reproduce_it_for_every_strategy() {
    let (dir, file) = scenario_copy("run", false);
    for strategy in STRATEGIES {
        for seed in ["1", "5"] {
            let out = dir.join(format!("out-{strategy}"));
            let stdout = tdxsim(&[
                "run",
                &file.to_string_lossy(),
                "--strategy",
                strategy,
                "--seed",
                seed,
                "--out",
                &out.to_string_lossy(),
            ]);
            let lines = replay_lines(&stdout);
            assert_eq!(lines.len(), 2, "a seed line and a bundle line: {stdout}");
            assert!(lines[0].contains(&format!("--strategy {strategy}")), "{}", lines[0]);
            for line in &lines {
                let replayed = shell(line);
                assert_eq!(trace_hash(&replayed), trace_hash(&stdout), "{line}\n{replayed}");
            }
        }
    }
}

#[test]
fn check_prints_replay_lines_that_reproduce_its_first_failing_run_for_every_strategy() {
    let (dir, file) = scenario_copy("check", true);
    for strategy in STRATEGIES {
        let out = dir.join(format!("out-{strategy}"));
        let args =
            ["check", &file.to_string_lossy(), "--strategy", strategy, "--out", &out.to_string_lossy()];
        let stdout = tdxsim(&args);
        let lines = replay_lines(&stdout);
        assert_eq!(lines.len(), 2, "a seed line and a bundle line: {stdout}");
        // The hash of the run check found, as its JSON says.
        let json = tdxsim(&[&args[..], &["--format", "json"]].concat());
        let file_object: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        let found = file_object["first_failing"]["trace_hash"].as_str().unwrap().to_string();
        assert_eq!(file_object["replay"].as_str(), Some(lines[0].as_str()), "{json}");
        for line in &lines {
            let replayed = shell(line);
            assert_eq!(trace_hash(&replayed), found, "{strategy}: {line}\n{replayed}");
        }
    }
}
