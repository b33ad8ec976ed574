//! `perfetto::chrome_trace` and `tdxsim run --trace`: Chrome trace-event JSON Perfetto opens.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use scenarios::load_file;
use scenarios::perfetto::chrome_trace;
use scenarios::run::{Schedule, run_once};
use serde_json::Value;
use sim_core::OutcomeKind;

fn library(file: &str) -> scenarios::schema::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/dpamt").join(file);
    load_file(&path).unwrap_or_else(|error| panic!("{error}"))
}

/// The trace of one run, through text and back, as Perfetto reads it.
fn trace_events(file: &str, seed: u64, expected: OutcomeKind) -> Vec<Value> {
    let scenario = library(file);
    let result = run_once(&scenario, &Schedule::Random(seed), true);
    assert_eq!(result.outcome.kind, expected, "{}", result.outcome);
    let text = serde_json::to_string(&chrome_trace(&result, &scenario)).unwrap();
    let json: Value = serde_json::from_str(&text).expect("the trace parses");
    assert_eq!(json["displayTimeUnit"], "ns");
    json["traceEvents"].as_array().expect("traceEvents").clone()
}

fn phase<'a>(events: &'a [Value], ph: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |event| event["ph"] == ph)
}

fn track(event: &Value) -> (u64, u64) {
    (event["pid"].as_u64().unwrap(), event["tid"].as_u64().unwrap())
}

/// Every `B` has its `E` on the same track, in order, never going back in time.
fn assert_slices_nest(events: &[Value]) {
    let mut depth: BTreeMap<(u64, u64), (i64, f64)> = BTreeMap::new();
    for event in events.iter().filter(|event| event["ph"] == "B" || event["ph"] == "E") {
        let (open, last_ts) = depth.entry(track(event)).or_insert((0, 0.0));
        let ts = event["ts"].as_f64().unwrap();
        assert!(ts >= *last_ts, "ts goes back on {:?}: {event}", track(event));
        *last_ts = ts;
        *open += if event["ph"] == "B" { 1 } else { -1 };
        assert!(*open >= 0, "an E without its B on {:?}", track(event));
    }
    for (track, (open, _)) in depth {
        assert_eq!(open, 0, "B and E counts differ on {track:?}");
    }
}

#[test]
fn s_d5_gives_a_process_per_cpu_and_a_track_per_lock() {
    let events = trace_events("s-d5-per-2m-rwlock-ab-ba.toml", 0, OutcomeKind::Deadlock);
    let processes: Vec<&Value> = phase(&events, "M")
        .filter(|event| event["name"] == "process_name")
        .map(|event| &event["args"]["name"])
        .collect();
    assert_eq!(processes, ["CPU 0", "CPU 1"]);

    let hold = |lock: &str| {
        phase(&events, "X")
            .find(|event| event["cat"] == "lock" && event["name"] == lock)
            .unwrap_or_else(|| panic!("{lock} hold"))
    };
    let (hold_a, hold_b) = (hold("rw[A]"), hold("rw[B]"));
    assert_ne!(hold_a["tid"], hold_b["tid"], "each lock has its own track");
    assert_ne!(hold_a["tid"], 0, "locks stay off the steps track");
    for hold in [hold_a, hold_b] {
        assert_eq!(hold["args"]["mode"], "exclusive");
        assert_eq!(hold["args"]["unfinished"], true, "a deadlock's holds last to the end: {hold}");
    }
    let waits: Vec<&Value> = phase(&events, "X").filter(|event| event["cat"] == "wait").collect();
    assert_eq!(waits.len(), 2);
    assert!(waits.iter().all(|wait| wait["args"]["unfinished"] == true));
    assert!(waits.iter().any(|wait| wait["name"] == "wait rw[A]" && wait["tid"] == hold_a["tid"]));

    let thread_names: Vec<&Value> = phase(&events, "M")
        .filter(|event| event["name"] == "thread_name")
        .map(|event| &event["args"]["name"])
        .collect();
    assert!(thread_names.contains(&&Value::from("rw[A]")) && thread_names.contains(&&Value::from("rw[B]")));
    assert_slices_nest(&events);
    assert_eq!(phase(&events, "B").count(), 2, "one step per CPU");
}

#[test]
fn s_d4_has_seamcall_slices_with_their_status() {
    let events = trace_events("s-d4-dec-and-lock.toml", 0, OutcomeKind::Pass);
    assert_slices_nest(&events);
    let seamcalls = phase(&events, "B").filter(|event| event["cat"] == "seamcall").count();
    assert!(seamcalls > 0);
    // An E carries the args of its slice: a SEAMCALL's has the status, a step's the result.
    let statuses: Vec<&str> =
        phase(&events, "E").filter_map(|event| event["args"]["status"].as_str()).collect();
    assert_eq!(statuses.len(), seamcalls);
    assert!(statuses.contains(&"TDX_SUCCESS"), "{statuses:?}");
    assert!(phase(&events, "i").any(|event| event["cat"] == "atomic"));
    assert!(
        events.iter().all(|event| event["args"]["unfinished"].is_null()),
        "a passing run leaves nothing open"
    );
}

#[test]
fn s_d5_prime_walker_marks_the_warn() {
    let events = trace_events("s-d5-prime-unmirrored-walker.toml", 0, OutcomeKind::Warn);
    assert_slices_nest(&events);
    let warn = phase(&events, "i").find(|event| event["cat"] == "warn").expect("the WARN instant");
    assert_eq!(track(warn), (0, 0));
    assert!(warn["name"].as_str().unwrap().contains("TDX_OPERAND_BUSY"));
}

#[test]
fn tdxsim_run_trace_writes_the_json() {
    let dir = common::Scratch::new("perfetto");
    let file = dir.join("s-d5.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tdxsim"))
        .args(["replay", "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml", "--seed", "0", "--trace"])
        .arg(&file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tdxsim runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(json["traceEvents"].as_array().is_some_and(|events| !events.is_empty()));
}
