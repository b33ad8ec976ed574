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
    let columns: Vec<&str> = table.lines().nth(1).unwrap().split('|').map(str::trim).collect();
    assert_eq!(columns, ["cycle", "CPU 0", "CPU 1"], "{table}");
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
    let warn_row = table.lines().position(|line| line.contains("WARN: tdx_pamt_get")).expect("the WARN row");
    // The finding is whole, wrapped onto the lines below.
    let rest: String = table.lines().skip(warn_row).take(3).collect::<Vec<_>>().join(" ");
    assert!(rest.contains("TDX_OPERAND_BUSY|RCX"), "{table}");
    // The walker's PAMT.ADD began before the warning step and is still running: it is why.
    assert!(table.contains("SEAMCALL TDH.PHYMEM.PAMT.ADD(0x800000"), "{table}");
}

#[test]
fn a_passing_run_shows_whole_without_a_header() {
    let result = run_once(&library("s-d4-dec-and-lock.toml"), &Schedule::Random(0), true);
    assert_eq!(result.outcome.kind, OutcomeKind::Pass);
    let table = table::render(&result);
    assert_eq!(table, table::render_whole(&result));
    assert!(header(&table).trim_start().starts_with("cycle |"), "{}", header(&table));
}

/// The table a kernel developer would paste: the file's first failing seed (as `check` finds
/// it; its first seed if every run passes), its pages' addresses, 100 wide.
fn mail_table(file: &str) -> (scenarios::schema::Scenario, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library").join(file);
    let scenario = load_file(&path).unwrap_or_else(|error| panic!("{error}"));
    let first_failing = (0..scenario.run.runs)
        .map(|index| scenario.run.seed + index)
        .find(|&seed| {
            run_once(&scenario, &Schedule::for_seed(&scenario, None, seed), false).outcome.kind
                != OutcomeKind::Pass
        })
        .unwrap_or(scenario.run.seed);
    let result = run_once(&scenario, &Schedule::for_seed(&scenario, None, first_failing), true);
    let options = table::TableOptions { width: table::DEFAULT_WIDTH, pages: Some(&scenario.pages) };
    let table = table::render_with(&result, &options);
    (scenario, table)
}

#[test]
fn five_library_findings_as_they_go_into_mail() {
    for (name, file) in [
        ("s_d5_ab_ba_deadlock", "dpamt/s-d5-per-2m-rwlock-ab-ba.toml"),
        ("s_d1_hint_warn", "dpamt/s-d1-hint-missing-pamt-page-pair.toml"),
        ("s_d5_prime_unmirrored_walker_warn", "dpamt/s-d5-prime-unmirrored-walker.toml"),
        ("s_u3_nested_cpus_read_lock_deadlock", "update/s-u3-nested-cpus-read-lock.toml"),
        ("s_u6_update_rwsem_hung", "update/s-u6-update-rwsem.toml"),
    ] {
        let (_, table) = mail_table(file);
        insta::assert_snapshot!(name, table);
    }
}

#[test]
fn library_tables_of_two_cpus_fit_100_columns_and_cut_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("library");
    for file in scenarios::files::scenario_files(std::slice::from_ref(&root)).unwrap() {
        let name = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        // calibration/: full-scale boots of a billion events, checked on their own (.ci/run).
        if name.starts_with("calibration/") {
            continue;
        }
        let (_, table) = mail_table(&name);
        let header = table.lines().find(|line| line.trim_start().starts_with("cycle |")).unwrap();
        if header.matches('|').count() > 2 {
            continue;
        }
        for line in table.lines() {
            assert!(line.chars().count() <= 100, "{name}: {} columns: {line}", line.chars().count());
        }
        let without_waits =
            table.replace(" ... spins", "").replace(" ... blocks", "").replace(table::LEGEND, "");
        assert!(!without_waits.contains("..."), "{name}: nothing is cut:\n{table}");
        assert!(table.ends_with(&format!("{}\n", table::LEGEND)), "{name}");
    }
}

#[test]
fn a_task_stuck_on_a_lock_shows_who_holds_it() {
    let (_, table) = mail_table("update/s-u6-update-rwsem.toml");
    let header = table.lines().take(2).collect::<Vec<_>>().join(" ");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/update/s-u6-update-rwsem.toml");
    let scenario = load_file(&path).unwrap();
    let result = run_once(&scenario, &Schedule::Random(scenario.run.seed), true);
    let table = table::render_with(&result, &table::TableOptions { width: 400, pages: None });
    assert!(
        header.contains("update_rwsem (write) that CPU 1 waits for is held by CPU 0 (task 0)"),
        "{table}"
    );
    assert!(header.contains("in step td_create(TD 1, 1 vCPUs)"), "{table}");
    assert!(
        table.contains("down_read(update_rwsem)") && table.contains("down_write(update_rwsem) ... blocks")
    );
}

#[test]
fn sleeping_locks_block_spinning_ones_spin_and_raw_locks_are_named_as_the_kernel_does() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/update/s-u3-nested-cpus-read-lock.toml");
    let scenario = load_file(&path).unwrap();
    let result = run_once(&scenario, &Schedule::Random(scenario.run.seed), true);
    let u3 = table::render_with(&result, &table::TableOptions { width: 400, pages: None });
    assert!(u3.contains("cpus_write_lock(cpu_hotplug_lock) ... blocks"), "{u3}");
    let (_, d5) = mail_table("dpamt/s-d5-per-2m-rwlock-ab-ba.toml");
    assert!(d5.contains("read_lock(rw[B]) ... spins"), "{d5}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/update/s-u0-update-preserves-tds.toml");
    let scenario = load_file(&path).unwrap();
    let result = run_once(&scenario, &Schedule::Random(0), true);
    let wide = table::TableOptions { width: 400, pages: None };
    let whole = table::render_with(&result, &wide);
    assert!(whole.contains("raw_spin_lock_irqsave(update_ctrl.lock)"), "{whole}");
    assert!(whole.contains("raw_spin_unlock_irqrestore(update_ctrl.lock)"), "{whole}");
}
