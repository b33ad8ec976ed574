//! What CI systems and shells get from tdxsim: directories walked, JSON and JUnit, output
//! that does not change between runs, help for every argument, exit codes, and no panic when
//! an output goes away.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::Scratch;

const S_D5: &str = "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml";
const S_D4: &str = "library/dpamt/s-d4-dec-and-lock.toml";

fn tdxsim(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tdxsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("tdxsim runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `line` with `sh -c` in the package directory, tdxsim on the PATH.
fn shell(line: &str) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_tdxsim")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("sh")
        .arg("-c")
        .arg(line)
        .env("PATH", path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("sh runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn temp_dir(test: &str) -> Scratch {
    Scratch::new(&format!("ci-{test}"))
}

#[test]
fn check_walks_a_directory_in_sorted_order() {
    let out = temp_dir("walk");
    let (code, stdout, stderr) = tdxsim(&["check", "library/enable", "--out", &out.to_string_lossy()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let files: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("ok   "))
        .map(|line| line.split(':').next().unwrap())
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted);
    let in_folder = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("library/enable"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|ext| ext == "toml"))
        .count();
    assert_eq!(files.len(), in_folder, "{stdout}");
    assert!(stdout.ends_with(&format!("{in_folder} passed, 0 failed\n")), "{stdout}");
    let (code, _, stderr) = tdxsim(&["check", &out.to_string_lossy()]);
    assert_eq!(code, 2, "a directory without scenario files: {stderr}");
}

#[test]
fn two_check_logs_are_byte_identical() {
    let out = temp_dir("diff");
    let args = ["check", S_D5, S_D4, "--out", &out.to_string_lossy()];
    let (_, first, _) = tdxsim(&args);
    let (_, second, _) = tdxsim(&args);
    assert_eq!(first, second);
    assert!(!first.contains("runs/s"), "{first}");
    let (_, timed, _) = tdxsim(&[&args[..], &["--timing"]].concat());
    assert!(timed.lines().next().unwrap().ends_with(" runs/s"), "{timed}");
}

#[test]
fn check_json_is_one_object_per_file_and_a_summary() {
    let out = temp_dir("json");
    let (code, stdout, _) =
        tdxsim(&["check", S_D5, S_D4, "--format", "json", "--out", &out.to_string_lossy()]);
    assert_eq!(code, 0, "{stdout}");
    let objects: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(objects.len(), 3, "{stdout}");
    let d5 = &objects[0];
    assert_eq!(d5["type"], "file");
    assert_eq!(d5["path"], S_D5);
    assert_eq!(d5["verdict"], "ok");
    assert_eq!(d5["expect"]["outcome"], "deadlock");
    assert_eq!(d5["expect"]["what"], "rw[A]");
    assert_eq!(d5["runs"], 200);
    assert_eq!(d5["first_failing"]["seed"], 0);
    assert_eq!(d5["first_failing"]["outcome"], "deadlock");
    assert_eq!(d5["replay"], format!("tdxsim replay {S_D5} --seed 0 --strategy random --table"));
    let bundle = d5["bundle"].as_str().unwrap();
    assert!(Path::new(bundle).is_file(), "{bundle}");
    assert_eq!(objects[1]["first_failing"], serde_json::Value::Null);
    assert_eq!(objects[1]["outcomes"]["pass"], 200);
    assert_eq!(
        objects[2],
        serde_json::json!({"type": "summary", "files": 2, "passed": 2, "failed": 0, "exit_code": 0})
    );
    // A malformed file is a JSON error object too, and nothing runs.
    let dir = temp_dir("json-bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[machine]\ncpus = \"two\"\n").unwrap();
    let (code, stdout, _) = tdxsim(&["check", &bad.to_string_lossy(), "--format", "json"]);
    assert_eq!(code, 2);
    let error: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (error["type"].as_str(), error["line"].as_u64(), error["column"].as_u64()),
        (Some("error"), Some(3), Some(8))
    );
    assert_eq!(error["key"], "machine.cpus");
}

#[test]
fn junit_has_a_testcase_per_file_and_failures_carry_the_finding_and_the_replay() {
    let dir = temp_dir("junit");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(S_D5))
        .unwrap()
        .replace("outcome = \"deadlock\"\nwhat = \"rw[A]\"", "outcome = \"pass\"")
        .replace("runs = 200", "runs = 3");
    let failing = dir.join("failing.toml");
    std::fs::write(&failing, text).unwrap();
    let xml = dir.join("report.xml");
    let (code, stdout, _) = tdxsim(&[
        "check",
        S_D4,
        &failing.to_string_lossy(),
        "--junit",
        &xml.to_string_lossy(),
        "--out",
        &dir.join("out").to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    let xml = std::fs::read_to_string(&xml).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
    assert!(xml.contains(&format!("<testcase name=\"{S_D4}\"")), "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(xml.contains("type=\"deadlock\""), "{xml}");
    assert!(xml.contains("first failing seed 0: deadlock: wait cycle"), "{xml}");
    assert!(
        xml.contains(&format!(
            "replay: tdxsim replay {} --seed 0 --strategy random --table",
            failing.display()
        )),
        "{xml}"
    );
    // A JUnit file that cannot be written is exit 3, after the results.
    let (code, stdout, stderr) = tdxsim(&["check", S_D4, "--junit", "/nonexistent-dir/report.xml"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(stderr.contains("cannot write the JUnit report"), "{stderr}");
}

#[test]
fn every_argument_of_every_subcommand_has_help_and_help_lists_the_exit_codes() {
    for subcommand in ["run", "check", "replay", "list", "completions", "man"] {
        let (code, help, _) = tdxsim(&[subcommand, "--help"]);
        assert_eq!(code, 0, "{subcommand}");
        assert!(help.contains("Exit codes:\n  0  everything expected held"), "{subcommand}: {help}");
        assert!(help.contains("  3  an output could not be written"), "{subcommand}: {help}");
        let mut in_arguments = false;
        for line in help.lines() {
            if line.ends_with(':') && !line.starts_with(' ') {
                in_arguments = matches!(line, "Arguments:" | "Options:");
                continue;
            }
            // An argument line is "  <NAME>  help" or "  -x, --long <V>  help": two spaces
            // or more between the name and its help.
            let entry = line.trim_start();
            if in_arguments && line.starts_with("  ") && (entry.starts_with('<') || entry.starts_with('-')) {
                let described = entry.split_once("  ").is_some_and(|(_, help)| !help.trim().is_empty());
                assert!(described, "{subcommand}: an argument without help: {line:?}\n{help}");
            }
        }
    }
    let (_, top, _) = tdxsim(&["--help"]);
    assert!(top.contains("Exit codes:") && top.contains("docs/cli.md"), "{top}");
    assert!(!top.contains("shared/") && !top.contains("spec/"), "{top}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let (code, bash, _) = tdxsim(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(
        bash.contains("_tdxsim()") && bash.contains("--check-determinism"),
        "{}",
        &bash[..200.min(bash.len())]
    );
    let (code, man, _) = tdxsim(&["man"]);
    assert_eq!(code, 0);
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq") || man.contains(".TH tdxsim 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("replay"), "the subcommands are listed");
    let dir = temp_dir("man");
    let (code, _, _) = tdxsim(&["man", "--out", &dir.to_string_lossy()]);
    assert_eq!(code, 0);
    assert!(dir.join("tdxsim.1").is_file() && dir.join("tdxsim-check.1").is_file());
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_disk_is_an_error_not_a_panic() {
    for command in ["tdxsim list calls | head -1", &format!("tdxsim check {S_D5} {S_D4} | head -1")] {
        let (_, stdout, stderr) = shell(&format!("{command}; echo \"status ${{PIPESTATUS:-}}\""));
        assert_eq!(stdout.lines().count(), 2, "{command}: {stdout}");
        assert!(!stderr.contains("panicked") && stderr.is_empty(), "{command}: {stderr}");
    }
    if Path::new("/dev/full").exists() {
        let (code, _, stderr) = shell("tdxsim list calls > /dev/full");
        assert_eq!(code, 3, "{stderr}");
        assert_eq!(
            stderr.trim(),
            "tdxsim: cannot write to standard output: No space left on device (os error 28)"
        );
        let (code, _, stderr) = shell(&format!("tdxsim check {S_D4} > /dev/full"));
        assert_eq!(code, 3, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_bundle_that_cannot_be_written_is_exit_3_after_the_result() {
    let dir = temp_dir("unwritable");
    let file_not_dir = dir.join("a-file");
    std::fs::write(&file_not_dir, "").unwrap();
    let (code, stdout, stderr) = tdxsim(&["run", S_D5, "--out", &file_not_dir.join("sub").to_string_lossy()]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.starts_with("scenario: "), "the result is printed: {stdout}");
    assert!(stderr.contains("could not write the repro bundle"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn a_fifo_or_a_device_is_refused_not_read() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("scenario.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let (code, _, stderr) = tdxsim(&["check", &fifo.to_string_lossy()]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        format!(
            "{}:1:1: expected a readable scenario file, found not a regular file (a FIFO)",
            fifo.display()
        )
    );
    let (code, _, stderr) = tdxsim(&["replay", "/dev/zero"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = tdxsim(&["run", "/dev/zero"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a regular file (a character device)"), "{stderr}");
}

#[test]
fn a_bundle_from_another_version_says_so_before_anything_else() {
    let dir = temp_dir("version");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(S_D5)).unwrap();
    let scenario = scenarios::load_str(S_D5, &text).unwrap();
    let result = scenarios::run::run_once(&scenario, &scenarios::run::Schedule::Random(3), false);
    let mut bundle = scenarios::bundle::Bundle::new(&scenario, &text, scenario.run.strategy, 3, &result);
    bundle.tool_version = "0.0.1".to_string();
    bundle.outcome = sim_core::Outcome::pass();
    let path = scenarios::bundle::write(&dir, &bundle).unwrap();
    let (code, stdout, _) = tdxsim(&["replay", &path.to_string_lossy()]);
    assert_eq!(code, 1, "{stdout}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("note: ") && first.contains("written by tdxsim 0.0.1, this is tdxsim 0.2.0"),
        "{stdout}"
    );
    assert!(stdout.contains("MISMATCH"), "{stdout}");
}
