//! `tdxsim sweep`: the same bytes for any --jobs, partitions that merge into the whole, a
//! killed sweep that resumes to the same files, bad input refused with the sweep file's
//! position before anything runs, failing runs counted and bundled, and the small sweep's
//! CSV files compared with the committed copies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;
use scenarios::sweep::{self, Partition, Sweep, SweepOptions};

const FILES: &[&str] = &["runs.csv", "points.csv", "manifest.json"];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn library(file: &str) -> String {
    manifest_dir().join("library").join(file).display().to_string()
}

/// A fresh directory for one test, removed when it is dropped.
fn temp(name: &str) -> Scratch {
    Scratch::new(&format!("sweep-{name}"))
}

/// Writes a sweep file into `dir` and loads it.
fn sweep_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("s.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn options(out: PathBuf, jobs: usize, partition: Option<Partition>) -> SweepOptions {
    SweepOptions { out, jobs, partition, commit: Some("test".to_string()) }
}

fn bytes(dir: &Path) -> Vec<Vec<u8>> {
    FILES.iter().map(|file| std::fs::read(dir.join(file)).unwrap()).collect()
}

fn storm(extra_axes: &str) -> String {
    format!(
        "name = \"storm\"\nbase = \"{}\"\nseeds = 2\nrecord = [\"lock_contended[pamt_lock,dpamt_lock]\"]\n[[axis]]\nkey = \"host.dpamt\"\nvalues = [\"global-lock\", \"dec-and-lock\"]\n\
         [[axis]]\nkey = [\"machine.cpus\", \"task.len\"]\nvalues = [1, 2, [4, 4]]\n[[axis]]\nkey = \"task.*.repeat\"\nvalues = [2]\n{extra_axes}",
        library("dpamt/fault-storm-shared-ranges.toml")
    )
}

fn tdxsim(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tdxsim")).args(args).env("CI", "1").output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_files_are_the_same_bytes_for_any_number_of_jobs() {
    let dir = temp("jobs");
    let sweep = Sweep::load(&sweep_file(&dir, &storm(""))).unwrap();
    assert_eq!(sweep.points(), 6);
    let one = sweep::run(&sweep, &options(dir.join("one"), 1, None), &|_| {}).unwrap();
    assert_eq!((one.points, one.runs, one.resumed), (6, 12, 0));
    sweep::run(&sweep, &options(dir.join("two"), 2, None), &|_| {}).unwrap();
    sweep::run(&sweep, &options(dir.join("three"), 3, None), &|_| {}).unwrap();
    assert_eq!(bytes(&dir.join("one")), bytes(&dir.join("two")));
    assert_eq!(bytes(&dir.join("one")), bytes(&dir.join("three")));
    let runs = String::from_utf8(bytes(&dir.join("one"))[0].clone()).unwrap();
    assert_eq!(runs.lines().count(), 1 + 12, "a header and a row per run");
    assert!(
        runs.starts_with(
            "point,host.dpamt,machine.cpus,task.len,task.*.repeat,seed,outcome,finding,seamcalls,"
        )
    );
    // `record` adds the pooled DPAMT lock: global-lock takes dpamt_lock, so it equals that class.
    let table = reports::table::RunsTable::parse(runs.as_bytes()).unwrap();
    let pooled = table.column("lock_contended[pamt_lock,dpamt_lock]").unwrap();
    let class = table.column("lock_contended[dpamt_lock]").unwrap();
    assert!(table.rows.iter().all(|row| row[pooled] == row[class] && !row[class].is_empty()), "{runs}");
}

#[test]
fn the_cpu_axis_scales_a_scripted_scenario_with_task_len() {
    let dir = temp("scale");
    let sweep = Sweep::load(&sweep_file(&dir, &storm(""))).unwrap();
    assert_eq!(
        sweep.point_label(2),
        "host.dpamt = \"global-lock\", machine.cpus = 4, task.len = 4, task.*.repeat = 2"
    );
    let scenario = sweep.derive(2).unwrap();
    assert_eq!((scenario.machine.cpus, scenario.tasks.len()), (4, 4));
    assert!(scenario.tasks.iter().all(|task| task.repeat == 2 && task.cpu < 4));
    assert!(scenario.text.starts_with("# tdxsim sweep "), "a derived scenario says where it comes from");
    sweep::run(&sweep, &options(dir.join("out"), 0, None), &|_| {}).unwrap();
    let points = std::fs::read_to_string(dir.join("out/points.csv")).unwrap();
    let header: Vec<&str> = points.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|name| *name == "faults.mean").unwrap();
    let faults: Vec<&str> = points.lines().skip(1).map(|line| line.split(',').nth(column).unwrap()).collect();
    assert_eq!(faults, ["16", "32", "64", "16", "32", "64"], "8 faults x 2 repeats per CPU");
}

#[test]
fn partitions_merge_into_the_bytes_of_the_whole_sweep() {
    let dir = temp("partitions");
    let sweep = Sweep::load(&sweep_file(&dir, &storm(""))).unwrap();
    sweep::run(&sweep, &options(dir.join("whole"), 2, None), &|_| {}).unwrap();
    let mut parts = Vec::new();
    for index in 1..=4 {
        let part = dir.join(format!("part{index}"));
        let summary =
            sweep::run(&sweep, &options(part.clone(), 1, Some(Partition { index, count: 4 })), &|_| {})
                .unwrap();
        assert_eq!(summary.points, [2, 2, 1, 1][index as usize - 1], "count:{index}/4 of 6 points");
        parts.push(part);
    }
    let manifest = std::fs::read_to_string(dir.join("part2/manifest.json")).unwrap();
    assert!(manifest.contains("\"partition\": \"count:2/4\""));
    let missing = sweep::merge(&parts[..3], &dir.join("incomplete")).unwrap_err().to_string();
    assert!(
        missing.contains("1 of 6 points are in none of the directories (the first is point 3)"),
        "{missing}"
    );
    sweep::merge(&parts, &dir.join("merged")).unwrap();
    assert_eq!(bytes(&dir.join("merged")), bytes(&dir.join("whole")));
    // The merged directory is a finished sweep: running it again runs nothing.
    let again = sweep::run(&sweep, &options(dir.join("merged"), 1, None), &|_| {}).unwrap();
    assert_eq!((again.runs, again.resumed), (0, 6));
    assert_eq!(bytes(&dir.join("merged")), bytes(&dir.join("whole")));
    // Another sweep's directory does not merge in.
    let other_dir = temp("partitions-other");
    let other = Sweep::load(&sweep_file(&other_dir, &storm("# another file\n"))).unwrap();
    sweep::run(&other, &options(dir.join("other"), 1, Some(Partition { index: 4, count: 4 })), &|_| {})
        .unwrap();
    let mixed = [parts[0].clone(), parts[1].clone(), parts[2].clone(), dir.join("other")];
    let refused = sweep::merge(&mixed, &dir.join("mixed")).unwrap_err().to_string();
    assert!(refused.contains("a different sweep"), "{refused}");
}

#[test]
fn a_killed_sweep_resumes_and_ends_with_the_same_files() {
    let dir = temp("kill");
    // 30 points of up to 12 CPUs (milliseconds a run), so the kill lands in the middle.
    let text = format!(
        "name = \"kill\"\nbase = \"{}\"\nseeds = 2\n[[axis]]\nkey = \"host.dpamt\"\nvalues = [\"global-lock\", \"dec-and-lock\"]\n\
         [[axis]]\nkey = [\"machine.cpus\", \"task.len\"]\nvalues = [12, 8, 4]\n\
         [[axis]]\nkey = \"module.jitter\"\nvalues = [0.0, 0.05, 0.1, 0.2, 0.3]\n",
        library("dpamt/fault-storm-shared-ranges.toml")
    );
    let file = sweep_file(&dir, &text);
    let file = file.to_str().unwrap();
    let whole = dir.join("whole");
    let (code, _, stderr) = tdxsim(&["sweep", file, "--out", whole.to_str().unwrap(), "--jobs", "1"]);
    assert_eq!(code, 0, "{stderr}");
    let killed = dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tdxsim"))
        .args(["sweep", file, "--out", killed.to_str().unwrap(), "--jobs", "1"])
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = killed.join("sweep.log");
    let lines = |path: &Path| std::fs::read_to_string(path).map_or(0, |text| text.lines().count());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while lines(&log) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = lines(&log) - 1;
    assert!((3..30).contains(&finished), "killed after {finished} of 30 points");
    // A kill in the middle of an append leaves half a line: it is dropped and rerun.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text += "{\"point\":29,\"values\":[\"dec-";
    std::fs::write(&log, text).unwrap();
    let (code, stdout, stderr) = tdxsim(&["sweep", file, "--out", killed.to_str().unwrap(), "--jobs", "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("{finished} resumed")), "{stdout}");
    assert_eq!(bytes(&killed), bytes(&whole));
    assert_eq!(lines(&log), 31, "the header and every point once");
}

#[test]
fn a_log_written_by_another_sweep_is_refused() {
    let dir = temp("foreign");
    let sweep = Sweep::load(&sweep_file(&dir, &storm(""))).unwrap();
    sweep::run(&sweep, &options(dir.join("out"), 1, Some(Partition { index: 1, count: 2 })), &|_| {})
        .unwrap();
    let error = sweep::run(&sweep, &options(dir.join("out"), 1, None), &|_| {}).unwrap_err().to_string();
    assert!(
        error.contains("sweep.log: it was written with partition Some(\"count:1/2\"), this is None"),
        "{error}"
    );
    let other_dir = temp("foreign-other");
    let other = Sweep::load(&sweep_file(&other_dir, &storm("# changed\n"))).unwrap();
    let error =
        sweep::run(&other, &options(dir.join("out"), 1, Some(Partition { index: 1, count: 2 })), &|_| {})
            .unwrap_err()
            .to_string();
    assert!(error.contains("it is another sweep (the sweep file or its base scenario changed)"), "{error}");
}

/// The error a sweep file gets, with `{base}` replaced by the library's fault storm.
fn refused(text: &str) -> String {
    let dir = temp("refused");
    let text = text.replace("{base}", &library("dpamt/fault-storm-shared-ranges.toml"));
    let path = sweep_file(&dir, &text);
    let out = dir.join("out");
    let (code, stdout, stderr) = tdxsim(&["sweep", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!out.exists(), "nothing ran, nothing was written");
    stderr.trim().replace(&path.display().to_string(), "s.toml")
}

#[test]
fn bad_input_is_refused_with_the_sweep_files_position_before_anything_runs() {
    let head = "name = \"t\"\nbase = \"{base}\"\n";
    assert_eq!(
        refused(&format!("{head}[[axis]]\nkey = \"machine.cpuz\"\nvalues = [2]\n")),
        "s.toml:4:7: machine.cpuz: expected a key that scenario files have, found \"machine.cpuz\" (machine.cpuz: \
         expected one of the keys cpus, possible_cpus, memory, ghz, packages, found cpuz)"
    );
    assert_eq!(
        refused(&format!("{head}[[axis]]\nkey = \"machine.cpus\"\nvalues = [64, 8192]\n")),
        "s.toml:5:15: machine.cpus: expected a value the base scenario accepts, found 8192 (point 1: machine.cpus = 8192): \
         machine.cpus: expected an integer 1..=4096, found 8192"
    );
    // The base's 64 tasks sit on CPUs 0..63: fewer CPUs need task.len too.
    let error = refused(&format!("{head}[[axis]]\nkey = \"machine.cpus\"\nvalues = [64, 8]\n"));
    assert!(error.starts_with("s.toml:5:15: machine.cpus: expected a value the base scenario accepts, found 8 (point 1: machine.cpus = 8): task[8].cpu:"), "{error}");
    assert_eq!(
        refused(&format!("{head}[[axis]]\nkey = \"task.99.repeat\"\nvalues = [2]\n")),
        "s.toml:4:7: task.99.repeat: expected a key of the base scenario (`task` has 64 entries; there is no entry 99), found 2"
    );
    assert_eq!(
        refused(&format!(
            "{head}[[axis]]\nkey = [\"machine.cpus\", \"task.len\"]\nvalues = [[2, 2], [100, 100]]\n"
        )),
        "s.toml:5:19: task.len: expected a key of the base scenario (`task`.len takes an integer 1..=64 (the base has 64)), found [100, 100]"
    );
    assert_eq!(
        refused(&format!(
            "{head}[[axis]]\nkey = \"machine.cpus\"\nrange = {{ from = 1, to = 8, factor = 1 }}\n"
        )),
        "s.toml:5:9: axis[0].range: expected factor > 1 and from > 0, found { from = 1, to = 8, factor = 1 }"
    );
    assert_eq!(
        refused(&format!("{head}seedz = 3\n[[axis]]\nkey = \"machine.cpus\"\nvalues = [2]\n")),
        "s.toml:3:1: seedz: expected one of the keys name, about, base, seeds, seed, record, axis, report, found seedz"
    );
    assert_eq!(
        refused(&format!(
            "{head}[[axis]]\nkey = \"host.dpamt\"\nvalues = [\"dec-and-lock\"]\n[report]\nx = \"machine.cpus\"\n"
        )),
        "s.toml:7:5: report.x: expected one of the axis keys host.dpamt, found \"machine.cpus\""
    );
    assert_eq!(
        refused(&format!(
            "{head}record = [\"seamcalls\", \"lock_bogus[x]\"]\n[[axis]]\nkey = \"machine.cpus\"\nvalues = [64]\n"
        )),
        "s.toml:3:24: record: expected a list of metric names (tdxsim list metrics), like \"lock_contended[pamt_lock,dpamt_lock]\", found \"lock_bogus[x]\""
    );
    let marked = format!(
        "{head}[[axis]]\nkey = \"host.dpamt\"\nvalues = [\"global-lock\", \"dec-and-lock\"]\n[[axis]]\nkey = \"module.leaf_locks\"\nvalues = [\"interleaved\", \"atomic\"]\n[[report.mark]]\nmetric = \"lock_contended\"\ny = 1\nlabel = \"l\"\n"
    );
    assert_eq!(
        refused(&format!("{marked}panel = {{ \"module.leaf_lockz\" = \"atomic\" }}\n")),
        "s.toml:13:33: report.mark[0].panel.module.leaf_lockz: expected an axis key of this sweep (host.dpamt, module.leaf_locks), found \"module.leaf_lockz\""
    );
    assert_eq!(
        refused(&format!("{marked}panel = {{ \"module.leaf_locks\" = \"atomik\" }}\n")),
        "s.toml:13:33: report.mark[0].panel.module.leaf_locks: expected one of the axis's values interleaved, atomic, found \"atomik\""
    );
    let error =
        refused("name = \"t\"\nbase = \"missing.toml\"\n[[axis]]\nkey = \"machine.cpus\"\nvalues = [2]\n");
    assert!(error.starts_with("s.toml:2:8: base: the base scenario is refused: "), "{error}");
    assert!(error.contains("missing.toml:1:1: expected a readable scenario file"), "{error}");
    let base_dir = temp("exhaustive-base");
    let exhaustive = base_dir.join("base.toml");
    std::fs::write(&exhaustive, "name = \"e\"\n[[task]]\ncpu = 0\nsteps = [{ call = \"spin\", for = 10 }]\n[run]\nstrategy = \"exhaustive\"\n").unwrap();
    let error = refused(&format!(
        "name = \"t\"\nbase = \"{}\"\n[[axis]]\nkey = \"machine.cpus\"\nvalues = [2]\n",
        exhaustive.display()
    ));
    assert!(
        error.starts_with("s.toml:2:8: base: expected a base scenario with run.strategy random or pct"),
        "{error}"
    );
}

#[test]
fn failing_runs_are_counted_and_bundled_and_a_point_where_all_fail_is_a_gap() {
    let dir = temp("failing");
    let text = format!(
        "name = \"ab-ba\"\nbase = \"{}\"\nseeds = 4\n[[axis]]\nkey = \"host.dpamt\"\nvalues = [\"per-2m-rwlock\", \"per-2m-rwlock-pfn-order\"]\n",
        library("dpamt/s-d5-per-2m-rwlock-ab-ba.toml")
    );
    let sweep = Sweep::load(&sweep_file(&dir, &text)).unwrap();
    let out = dir.join("out");
    let summary = sweep::run(&sweep, &options(out.clone(), 2, None), &|_| {}).unwrap();
    assert_eq!((summary.failing_runs, summary.failing_points, summary.empty_points), (4, 1, 1));
    assert!(summary.bundle_errors.is_empty());
    let points = std::fs::read_to_string(out.join("points.csv")).unwrap();
    let rows: Vec<Vec<&str>> = points.lines().map(|line| line.split(',').collect()).collect();
    let column = |name: &str| rows[0].iter().position(|column| *column == name).unwrap();
    assert_eq!(rows[1][column("pass")], "0");
    assert_eq!(
        rows[1][column("deadlock")].parse::<u32>().unwrap()
            + rows[1][column("lock-order")].parse::<u32>().unwrap(),
        4
    );
    assert_eq!(rows[1][column("seamcalls.mean")], "", "every run failed: a gap, not a zero");
    assert_eq!(rows[2][column("pass")], "4");
    assert_ne!(rows[2][column("seamcalls.mean")], "");
    // The first failing run's bundle replays to the same outcome.
    let bundles: Vec<PathBuf> =
        std::fs::read_dir(out.join("bundles/point-0")).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(bundles.len(), 1);
    let (code, stdout, _) = tdxsim(&["replay", bundles[0].to_str().unwrap()]);
    assert!(stdout.contains("bundle: reproduced"), "{stdout}");
    assert_eq!(code, 0);
}

#[test]
fn the_small_sweep_regenerates_its_committed_csv_files() {
    regenerates("small");
}

/// The corner of reports/dpamt-contention that CI regenerates: generated workloads
/// (td_boot, td_churn, fault_storm) under two designs.
#[test]
fn the_small_contention_sweep_regenerates_its_committed_csv_files() {
    regenerates("contention-small");
}

/// Runs scenarios/tests/sweeps/NAME.toml and compares its CSV files with NAME/.
fn regenerates(name: &str) {
    let committed = manifest_dir().join("tests/sweeps").join(name);
    let sweep = Sweep::load(&manifest_dir().join(format!("tests/sweeps/{name}.toml"))).unwrap();
    let out = temp(name);
    sweep::run(&sweep, &options(out.to_path_buf(), 0, None), &|_| {}).unwrap();
    for file in ["runs.csv", "points.csv"] {
        let fresh = std::fs::read_to_string(out.join(file)).unwrap();
        if std::env::var_os("TDXSIM_BLESS").is_some() {
            std::fs::create_dir_all(&committed).unwrap();
            std::fs::write(committed.join(file), &fresh).unwrap();
        }
        let expected = std::fs::read_to_string(committed.join(file)).unwrap_or_default();
        assert!(
            fresh == expected,
            "{file} differs from scenarios/tests/sweeps/{name}/{file}; review the change and rerun with \
             TDXSIM_BLESS=1 to update it\n--- committed\n{expected}\n--- now\n{fresh}"
        );
    }
}

#[test]
fn the_library_sweeps_load() {
    let dir = manifest_dir().join("sweeps");
    // sweeps/bases/ holds the base scenarios some sweeps run; `tdxsim check` needs none of them.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let sweep = Sweep::load(&file).unwrap_or_else(|error| panic!("{error}"));
        assert!(sweep.points() > 1, "{}", file.display());
    }
}

#[test]
fn the_commands_work_end_to_end_and_draw_no_progress_bar_off_a_terminal() {
    let dir = temp("cli");
    let file = sweep_file(&dir, &storm(""));
    let file = file.to_str().unwrap();
    let mut parts = Vec::new();
    for index in 1..=2 {
        let out = dir.join(format!("part{index}"));
        // Without CI set: stderr is a pipe, so there is no bar either, only the timing line.
        let output = Command::new(env!("CARGO_BIN_EXE_tdxsim"))
            .args(["sweep", file, "--partition", &format!("count:{index}/2"), "--out", out.to_str().unwrap()])
            .env_remove("CI")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(stderr.ends_with(" runs/s\n") && !stderr.contains('\r'), "{stderr:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            stdout
                .contains(&format!("(partition count:{index}/2): 3 points x 2 seeds; 0 resumed, 6 runs now")),
            "{stdout}"
        );
        parts.push(out.to_str().unwrap().to_string());
    }
    let merged = dir.join("merged");
    let (code, stdout, stderr) =
        tdxsim(&["sweep", "merge", &parts[0], &parts[1], "--out", merged.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("merged 2 directories: 6 points"), "{stdout}");
    let (code, stdout, stderr) = tdxsim(&["report", merged.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("report.html"), "{stdout}");
    let report = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(report.contains("## contended host lock acquisitions"), "default plots: {report}");
    let (code, _, stderr) = tdxsim(&["report", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "not a sweep directory");
    assert!(stderr.contains("manifest.json"), "{stderr}");
    let (code, _, stderr) = tdxsim(&["sweep", file, "--partition", "count:3/2"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("count:K/N with 1 <= K <= N"), "{stderr}");
}

#[test]
fn a_pct_base_sweeps_with_its_strategy_and_finds_its_bug_the_same_for_any_jobs() {
    let dir = temp("pct");
    let text = format!(
        "name = \"pct\"\nbase = \"{}\"\nseeds = 40\n[[axis]]\nkey = \"host.dpamt\"\nvalues = [\"global-lock-fastpath\", \"dec-and-lock\"]\n",
        library("dpamt/s-d2-double-remove.toml")
    );
    let sweep = Sweep::load(&sweep_file(&dir, &text)).unwrap();
    let one = sweep::run(&sweep, &options(dir.join("one"), 1, None), &|_| {}).unwrap();
    sweep::run(&sweep, &options(dir.join("two"), 2, None), &|_| {}).unwrap();
    assert_eq!(bytes(&dir.join("one")), bytes(&dir.join("two")));
    let manifest = std::fs::read_to_string(dir.join("one/manifest.json")).unwrap();
    assert!(manifest.contains("\"strategy\": \"pct\""));
    // D2's double PAMT.REMOVE is found under PCT within 40 seeds; D4 fixes it.
    assert_eq!(one.failing_points, 1, "{one:?}");
    assert!(dir.join("one/bundles/point-0").is_dir());
    assert!(!dir.join("one/bundles/point-1").exists());
}
