//! The focused table of a failing run: only the CPUs and steps the finding is about.

use std::path::Path;

use scenarios::run::{Schedule, run_once};
use scenarios::{load_file, load_str, table};
use sim_core::OutcomeKind;

fn library(file: &str) -> scenarios::schema::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/dpamt").join(file);
    load_file(&path).unwrap_or_else(|error| panic!("{error}"))
}

/// S-D5's AB-BA, with CPU 0 spinning through a step first and CPU 2 spinning throughout.
const AB_BA_BESIDE_A_SPINNER: &str = r#"
name = "table: AB-BA beside unrelated work (cpus=3)"
about = "S-D5 with a finished step on CPU 0 and a spinner on CPU 2, which the focused table leaves out"
[machine]
cpus = 3
memory = "16M"
[host]
dpamt = "per-2m-rwlock"
[pages]
A1 = "0x200000"
A2 = "0x201000"
B1 = "0x400000"
B2 = "0x401000"
C1 = "0x600000"
C2 = "0x601000"
[[task]]
cpu = 0
steps = [{ call = "spin", for = "100ns" }, { call = "tdx_pamt_get", page = "A1", pair = ["B1", "C1"] }]
[[task]]
cpu = 1
start = "100ns"
steps = [{ call = "tdx_pamt_get", page = "B2", pair = ["A2", "C2"] }]
[[task]]
cpu = 2
repeat = 5
steps = [{ call = "spin", for = "50ns" }]
"#;

fn header(table: &str) -> &str {
    table.lines().next().unwrap_or_default()
}

#[test]
fn s_d5_shows_both_cpus_and_the_four_lock_rows() {
    let result = run_once(&library("s-d5-per-2m-rwlock-ab-ba.toml"), &Schedule::Random(0), true);
    assert_eq!(result.outcome.kind, OutcomeKind::Deadlock);
    let table = table::render(&result);
    assert!(
        header(&table).starts_with("deadlock: CPUs 0, 1; steps from cycle 0 taking rw[A], rw[B]"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("| CPU 0                                                | CPU 1")
    );
    for row in
        ["write_lock(rw[A])", "write_lock(rw[B])", "read_lock(rw[A]) ... spins", "read_lock(rw[B]) ... spins"]
    {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
}

#[test]
fn a_deadlock_leaves_out_the_cpu_and_the_steps_it_is_not_about() {
    let scenario = load_str("inline.toml", AB_BA_BESIDE_A_SPINNER).unwrap_or_else(|error| panic!("{error}"));
    let result = run_once(&scenario, &Schedule::Random(0), true);
    assert_eq!(result.outcome.kind, OutcomeKind::Deadlock, "{}", result.outcome);
    let whole = table::render_whole(&result);
    assert!(whole.contains("CPU 2") && whole.contains("== spin(220 cycles)"), "{whole}");

    let table = table::render(&result);
    assert!(header(&table).starts_with("deadlock: CPUs 0, 1; steps from cycle 220"), "{table}");
    assert!(!table.contains("CPU 2"), "CPU 2 only spun:\n{table}");
    assert!(!table.contains("== spin"), "CPU 0's spin ended before any lock was taken:\n{table}");
    assert!(table.contains("read_lock(rw[B]) ... spins") && table.contains("read_lock(rw[A]) ... spins"));
}

#[test]
fn s_d5_prime_walker_shows_the_warn_and_the_seamcall_it_overlapped() {
    let result = run_once(&library("s-d5-prime-unmirrored-walker.toml"), &Schedule::Random(0), true);
    assert_eq!(result.outcome.kind, OutcomeKind::Warn);
    let table = table::render(&result);
    assert!(header(&table).starts_with("warn: CPUs 0, 2; the step with the WARN"), "{table}");
    let warn_row = table.lines().find(|line| line.contains("WARN: tdx_pamt_get")).expect("the WARN row");
    assert!(warn_row.contains("TDX_OPERAN"), "{warn_row}");
    // The walker's PAMT.ADD began before the warning step and is still running: it is why.
    assert!(table.contains("SEAMCALL PAMT.ADD(0x800000"), "{table}");
}

#[test]
fn a_passing_run_shows_whole_without_a_header() {
    let result = run_once(&library("s-d4-dec-and-lock.toml"), &Schedule::Random(0), true);
    assert_eq!(result.outcome.kind, OutcomeKind::Pass);
    let table = table::render(&result);
    assert_eq!(table, table::render_whole(&result));
    assert!(header(&table).trim_start().starts_with("cycle |"), "{}", header(&table));
}
