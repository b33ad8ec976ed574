//! What `tdxsim check` reports for each scenario file, in the three forms it prints: the
//! human result lines, one JSON object per line (`--format json`), and JUnit XML (`--junit`).
//!
//! The JSON keys and the JUnit layout are a contract CI scripts read (docs/cli.md "check
//! --format json"): keys are added, never renamed or removed. Nothing here changes from one
//! run of the same command to the next: no times, no rates (`--timing` adds the rate to the
//! human line only).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use sim_core::{Outcome, OutcomeKind};

use crate::check::CheckSummary;
use crate::error::printable;
use crate::schema::{Scenario, Strategy};
use crate::shell::{replay_bundle_command, replay_seed_command};

/// The first run of a file that did not pass.
#[derive(Clone, Debug, PartialEq)]
pub struct FirstFailing {
    /// The seed (the schedule number for `exhaustive`).
    pub seed: u64,
    pub outcome: Outcome,
    /// Of that run, run again for its bundle.
    pub trace_hash: u64,
}

/// One scenario file's result.
#[derive(Clone, Debug, PartialEq)]
pub struct FileReport {
    pub path: String,
    pub name: String,
    pub strategy: Strategy,
    pub runs: u64,
    /// `exhaustive` only: whether every schedule within the bound was covered.
    pub complete: Option<bool>,
    pub outcomes: BTreeMap<OutcomeKind, u64>,
    /// `[expect]`, or `outcome = "pass"` for a file without it.
    pub expect_outcome: OutcomeKind,
    pub expect_what: Option<String>,
    pub expect_within_runs: Option<u64>,
    /// `Ok` when the expectation held, else why not.
    pub verdict: Result<(), String>,
    pub first_failing: Option<FirstFailing>,
    /// Where the first failing run's bundle was written, or why it could not be.
    pub bundle: Option<Result<PathBuf, String>>,
}

impl FileReport {
    pub fn new(
        scenario: &Scenario,
        summary: &CheckSummary,
        first_failing: Option<FirstFailing>,
        bundle: Option<Result<PathBuf, String>>,
    ) -> FileReport {
        let expect = scenario.expect.as_ref();
        FileReport {
            path: scenario.path.clone(),
            name: scenario.name.clone(),
            strategy: summary.strategy,
            runs: summary.runs,
            complete: summary.complete,
            outcomes: summary.outcomes.clone(),
            expect_outcome: expect.map_or(OutcomeKind::Pass, |expect| expect.outcome),
            expect_what: expect.and_then(|expect| expect.what.clone()),
            expect_within_runs: expect.and_then(|expect| expect.within_runs),
            verdict: summary.verdict.clone(),
            first_failing,
            bundle,
        }
    }

    /// The command that replays the first failing run from the scenario file, as a table.
    pub fn replay(&self) -> Option<String> {
        let first = self.first_failing.as_ref()?;
        Some(replay_seed_command(&self.path, first.seed, self.strategy, true))
    }

    /// The human result: one line, then for a failed file the reason and the replay command,
    /// then the bundle's replay command. `rate` (runs per second) is shown only when given.
    pub fn human_lines(&self, rate: Option<f64>) -> Vec<String> {
        let counts: Vec<String> =
            self.outcomes.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        let first = match &self.first_failing {
            Some(first) => format!("first failing seed {} ({})", first.seed, short(&first.outcome)),
            None => "no failing seed".to_string(),
        };
        let verdict = if self.verdict.is_ok() { "ok  " } else { "FAIL" };
        let coverage = match self.complete {
            Some(true) => " (every schedule within the bound)",
            Some(false) => " (bound not exhausted)",
            None => "",
        };
        let rate = rate.map_or(String::new(), |rate| format!(" | {rate:.0} runs/s"));
        let mut lines = vec![format!(
            "{verdict} {}: {} {} runs{coverage}: {} | {first}{rate}",
            printable(&self.path),
            self.runs,
            self.strategy.name(),
            counts.join(", ")
        )];
        if let Err(why) = &self.verdict {
            lines.push(format!("     {}", printable(why)));
            if let Some(replay) = self.replay() {
                lines.push(format!("     replay: {replay}"));
            }
        }
        if let Some(Ok(bundle)) = &self.bundle {
            lines.push(format!("     replay: {}", replay_bundle_command(bundle)));
        }
        lines
    }

    /// The `--format json` object of this file (docs/cli.md lists every key).
    pub fn json(&self) -> Value {
        let outcomes: serde_json::Map<String, Value> =
            self.outcomes.iter().map(|(kind, count)| (kind.name().to_string(), json!(count))).collect();
        let first_failing = self.first_failing.as_ref().map(|first| {
            json!({
                "seed": first.seed,
                "outcome": first.outcome.kind.name(),
                "what": first.outcome.what,
                "trace_hash": format!("{:016x}", first.trace_hash),
            })
        });
        let (bundle, bundle_error) = match &self.bundle {
            Some(Ok(path)) => (Some(path.to_string_lossy().into_owned()), None),
            Some(Err(why)) => (None, Some(why.clone())),
            None => (None, None),
        };
        json!({
            "type": "file",
            "path": self.path,
            "name": self.name,
            "strategy": self.strategy.name(),
            "runs": self.runs,
            "complete": self.complete,
            "outcomes": outcomes,
            "expect": {
                "outcome": self.expect_outcome.name(),
                "what": self.expect_what,
                "within_runs": self.expect_within_runs,
            },
            "verdict": if self.verdict.is_ok() { "ok" } else { "fail" },
            "reason": self.verdict.as_ref().err(),
            "first_failing": first_failing,
            "replay": self.replay(),
            "bundle": bundle,
            "bundle_error": bundle_error,
        })
    }
}

/// The `--format json` summary object, the last line.
pub fn summary_json(reports: &[FileReport], exit_code: u8) -> Value {
    let failed = reports.iter().filter(|report| report.verdict.is_err()).count();
    json!({
        "type": "summary",
        "files": reports.len(),
        "passed": reports.len() - failed,
        "failed": failed,
        "exit_code": exit_code,
    })
}

/// The `--format json` object of a file that did not load (the command then runs nothing).
pub fn load_error_json(error: &crate::error::ScenarioError) -> Value {
    json!({
        "type": "error",
        "path": error.file,
        "line": error.line,
        "column": error.column,
        "key": error.key,
        "message": error.to_string(),
    })
}

/// JUnit XML: one test suite, `tdxsim check`, with one test case per scenario file (name: the
/// path; classname: the scenario's name). A failed file's `<failure>` has the reason as its
/// message, the first failing outcome's kind as its type, and the finding, the replay command
/// and the bundle's replay command as its text.
pub fn junit(reports: &[FileReport]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("tdxsim check");
    for report in reports {
        let status = match &report.verdict {
            Ok(()) => TestCaseStatus::success(),
            Err(why) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(why.as_str());
                let mut text = Vec::new();
                if let Some(first) = &report.first_failing {
                    status.set_type(first.outcome.kind.name());
                    text.push(format!("first failing seed {}: {}", first.seed, first.outcome));
                }
                if let Some(replay) = report.replay() {
                    text.push(format!("replay: {replay}"));
                }
                if let Some(Ok(bundle)) = &report.bundle {
                    text.push(format!("replay: {}", replay_bundle_command(bundle)));
                }
                status.set_description(text.join("\n"));
                status
            }
        };
        let mut case = TestCase::new(report.path.as_str(), status);
        case.set_classname(report.name.as_str());
        suite.add_test_case(case);
    }
    let mut xml = Report::new("tdxsim");
    xml.add_test_suite(suite);
    xml.to_string().expect("a JUnit report of strings serializes")
}

/// An outcome on one line of at most 100 characters (the reason line has it whole).
fn short(outcome: &Outcome) -> String {
    let text = printable(&outcome.to_string()).into_owned();
    if text.chars().count() > 100 { text.chars().take(97).collect::<String>() + "..." } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> FileReport {
        FileReport {
            path: "lib/x.toml".to_string(),
            name: "x: a case".to_string(),
            strategy: Strategy::Pct,
            runs: 3,
            complete: None,
            outcomes: [(OutcomeKind::Pass, 2), (OutcomeKind::Deadlock, 1)].into_iter().collect(),
            expect_outcome: OutcomeKind::Pass,
            expect_what: None,
            expect_within_runs: None,
            verdict: Err("expected every run to pass; seed 1 ended in deadlock: AB-BA".to_string()),
            first_failing: Some(FirstFailing {
                seed: 1,
                outcome: Outcome::new(
                    OutcomeKind::Deadlock,
                    "AB-BA",
                    sim_core::Cycle(7),
                    sim_core::Finding::None,
                ),
                trace_hash: 0xabc,
            }),
            bundle: Some(Ok(PathBuf::from("out/x-pct-seed1.bundle"))),
        }
    }

    #[test]
    fn json_has_every_documented_key() {
        let value = failed().json();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "bundle",
                "bundle_error",
                "complete",
                "expect",
                "first_failing",
                "name",
                "outcomes",
                "path",
                "reason",
                "replay",
                "runs",
                "strategy",
                "type",
                "verdict"
            ]
        );
        assert_eq!(value["replay"], "tdxsim replay lib/x.toml --seed 1 --strategy pct --table");
        assert_eq!(value["first_failing"]["trace_hash"], "0000000000000abc");
        assert_eq!(value["outcomes"]["deadlock"], 1);
    }

    #[test]
    fn junit_failure_carries_the_finding_and_the_replay() {
        let xml = junit(&[failed()]);
        assert!(xml.contains("<testcase name=\"lib/x.toml\" classname=\"x: a case\">"), "{xml}");
        assert!(xml.contains("type=\"deadlock\""), "{xml}");
        assert!(xml.contains("first failing seed 1: deadlock: AB-BA"), "{xml}");
        assert!(xml.contains("replay: tdxsim replay lib/x.toml --seed 1 --strategy pct --table"), "{xml}");
    }

    #[test]
    fn the_human_line_has_no_rate_unless_asked() {
        let lines = failed().human_lines(None);
        assert!(!lines[0].contains("runs/s"), "{lines:?}");
        assert!(failed().human_lines(Some(12.0))[0].ends_with(" | 12 runs/s"));
        assert_eq!(lines[2], "     replay: tdxsim replay lib/x.toml --seed 1 --strategy pct --table");
        assert_eq!(lines[3], "     replay: tdxsim replay out/x-pct-seed1.bundle");
    }
}
