//! docs/scenarios.md lists everything the loader accepts: every key of every table (from the
//! loader's own lists in `scenarios::keys`), every call and its arguments, every value of
//! every closed set, every limit, every outcome and exit code. And nothing a user reads
//! points outside the repository.

use std::path::Path;

use host_model::DpamtDesign;
use scenarios::keys;
use scenarios::schema::{EnableDesign, FailStep, METRICS, SEPT_BUSY_DESIGNS, STRATEGY_NAMES, UpdateDesign};
use sim_core::OutcomeKind;

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The text of the section whose heading line contains `heading`, up to the next heading of
/// the same or a higher level (a `##` section includes its `###` subsections unless `own`).
fn section<'d>(doc: &'d str, heading: &str, own: bool) -> &'d str {
    let mut starts = vec![0];
    starts.extend(doc.match_indices('\n').map(|(at, _)| at + 1).filter(|&at| at < doc.len()));
    let level = |at: usize| doc[at..].chars().take_while(|&c| c == '#').count();
    let start = starts
        .iter()
        .copied()
        .find(|&at| level(at) >= 2 && doc[at..].lines().next().unwrap().contains(heading))
        .unwrap_or_else(|| panic!("docs/scenarios.md has no section {heading:?}"));
    let own_level = level(start);
    let end = starts
        .iter()
        .copied()
        .filter(|&at| at > start)
        .find(|&at| {
            let found = level(at);
            found >= 2 && (own || found <= own_level)
        })
        .unwrap_or(doc.len());
    &doc[start..end]
}

fn assert_rows(doc: &str, heading: &str, own: bool, keys: &[&str]) {
    let text = section(doc, heading, own);
    for key in keys {
        assert!(text.contains(&format!("\n| `{key}` |")), "docs/scenarios.md {heading}: no row for `{key}`");
    }
}

fn assert_mentions(doc: &str, heading: &str, values: &[&str]) {
    let text = section(doc, heading, false);
    for value in values {
        assert!(
            text.contains(&format!("`{value}`")),
            "docs/scenarios.md {heading}: `{value}` is not mentioned"
        );
    }
}

#[test]
fn every_key_the_loader_accepts_is_documented() {
    let doc = repo_file("docs/scenarios.md");
    assert_rows(&doc, "Top level", false, keys::TOP);
    assert_rows(&doc, "`[machine]`", false, keys::MACHINE);
    assert_rows(&doc, "`[module]`", false, keys::MODULE);
    assert_rows(&doc, "`[module.costs]`", false, &["<leaf>"]);
    assert_rows(&doc, "`[host]`", false, keys::HOST);
    assert_rows(&doc, "`[pages]`", false, &["<name>"]);
    assert_rows(&doc, "`[[task]]`", false, keys::TASK);
    assert_rows(&doc, "## Steps", true, keys::STEP);
    assert_rows(&doc, "`[run]`", false, keys::RUN);
    assert_rows(&doc, "`[expect]`", false, keys::EXPECT);
    assert_rows(&doc, "`[expect.metrics]`", false, &["<metric>_max", "<metric>_min"]);
    for (call, arguments) in keys::CALL_ARGUMENTS {
        assert_rows(&doc, &format!("### `{call}`"), false, arguments);
    }
    // `tdxsim list keys` prints the same list: each of its keys is one of the rows above.
    let listed = keys::all();
    assert!(
        listed.contains(&"run.max_events".to_string())
            && listed.contains(&"step.tdp_fault.count".to_string())
    );
}

#[test]
fn every_value_of_every_closed_set_is_documented() {
    let doc = repo_file("docs/scenarios.md");
    let dpamt: Vec<&str> = DpamtDesign::ALL.iter().map(|design| design.name()).collect();
    let update: Vec<&str> = UpdateDesign::ALL.iter().map(|design| design.name()).collect();
    let enable: Vec<&str> = EnableDesign::ALL.iter().map(|design| design.name()).collect();
    for values in [&dpamt[..], &update, &enable, SEPT_BUSY_DESIGNS] {
        assert_mentions(&doc, "`[host]`", values);
    }
    assert_mentions(&doc, "`[run]`", STRATEGY_NAMES);
    let leaf_locks: Vec<&str> = seam_model::LeafLocks::ALL.iter().map(|locks| locks.name()).collect();
    assert_mentions(&doc, "`[module]`", &leaf_locks);
    let fail_steps: Vec<&str> = FailStep::ALL.iter().map(|step| step.name()).collect();
    assert_mentions(&doc, "### `seamldr_install_module`", &fail_steps);
    let errnos: Vec<String> = std::iter::once("0".to_string())
        .chain(scenarios::schema::ERRNOS.iter().map(|errno| format!("-{errno}")))
        .collect();
    let errnos: Vec<&str> = errnos.iter().map(String::as_str).collect();
    assert_mentions(&doc, "## Steps", &errnos);
    let metrics: Vec<&str> = METRICS.iter().map(|(name, _)| *name).collect();
    assert_rows(&doc, "`[expect.metrics]`", false, &metrics);
    let outcomes: Vec<&str> = OutcomeKind::ALL.iter().map(|kind| kind.name()).collect();
    assert_rows(&doc, "## Outcomes", false, &outcomes);
    for (call, _, _) in scenarios::schema::CALLS {
        section(&doc, &format!("### `{call}`"), false);
    }
    let raw_leaves = seam_model::Leaf::ALL
        .iter()
        .filter(|leaf| leaf.is_modelled() && keys::raw_operands(**leaf).is_some());
    let seamcall = section(&doc, "### `seamcall`", false);
    for leaf in raw_leaves {
        assert!(seamcall.contains(leaf.name()), "### `seamcall` does not name {}", leaf.name());
    }
}

#[test]
fn every_limit_and_exit_code_is_documented() {
    let doc = repo_file("docs/scenarios.md");
    let limits = section(&doc, "## Limits", false);
    for (what, maximum) in keys::limits() {
        let row = if what.contains(' ') {
            format!("| {what} | {maximum} |")
        } else {
            format!("| `{what}` | {maximum} |")
        };
        assert!(limits.contains(&row), "docs/scenarios.md Limits: no row {row:?}");
    }
    for doc in [repo_file("docs/scenarios.md"), repo_file("docs/cli.md")] {
        let codes = section(&doc, "## Exit codes", false);
        for code in 0..=3 {
            assert!(codes.contains(&format!("\n| {code} | ")), "exit code {code}");
        }
    }
}

#[test]
fn the_json_contract_lists_every_key_check_prints() {
    let cli = repo_file("docs/cli.md");
    let json = section(&cli, "## `check --format json`", false);
    let report = scenarios::report::FileReport {
        path: String::new(),
        name: String::new(),
        strategy: scenarios::schema::Strategy::Random,
        runs: 0,
        complete: None,
        outcomes: Default::default(),
        expect_outcome: OutcomeKind::Pass,
        expect_what: None,
        expect_within_runs: None,
        verdict: Ok(()),
        first_failing: None,
        bundle: None,
    };
    let objects = [report.json(), scenarios::report::summary_json(&[report], 0)];
    for object in objects {
        for key in object.as_object().unwrap().keys() {
            assert!(json.contains(&format!("| `{key}` |")), "docs/cli.md does not document JSON key {key}");
        }
    }
}

#[test]
fn nothing_a_user_reads_points_outside_the_repository() {
    let mut texts = vec![
        ("README.md".to_string(), repo_file("README.md")),
        ("docs/scenarios.md".to_string(), repo_file("docs/scenarios.md")),
        ("docs/model.md".to_string(), repo_file("docs/model.md")),
        ("docs/cli.md".to_string(), repo_file("docs/cli.md")),
    ];
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("library");
    for file in scenarios::files::scenario_files(&[library]).unwrap() {
        let scenario = scenarios::load_file(&file).unwrap();
        texts.push((file.display().to_string(), scenario.about.unwrap_or_default()));
    }
    for (name, text) in texts {
        for outside in ["../shared", "shared/", "spec/"] {
            assert!(!text.contains(outside), "{name} points outside the repository: {outside}");
        }
    }
}
