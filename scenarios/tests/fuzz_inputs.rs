//! Hostile input, generated: library scenario files and repro bundles mutated by proptest
//! (bytes deleted, duplicated, flipped; keys, extreme numbers and TOML punctuation inserted).
//! Every mutated file either loads and runs to an outcome, or is refused with a message whose
//! position lies inside the file; no input panics. Every mutated bundle is refused with a
//! reason or decodes to one that replays.
//!
//! The seed is fixed so CI sees the same inputs every time; `PROPTEST_RNG_SEED=N` explores
//! others.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use scenarios::bundle::{self, Bundle};
use scenarios::error::ScenarioError;
use scenarios::run::{Schedule, run_once};
use scenarios::{keys, load_str};
use sim_core::OutcomeKind;

/// Mutated scenario files per CI run.
const SCENARIO_CASES: u32 = 1200;
/// Mutated bundles per CI run.
const BUNDLE_CASES: u32 = 400;
/// Events a loaded mutant may run: enough to start every task, few enough to stay fast.
const EVENTS_PER_RUN: u64 = 20_000;

fn library() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("library");
    let files = scenarios::files::scenario_files(std::slice::from_ref(&root)).unwrap();
    files
        .into_iter()
        .map(|file| {
            let name = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&file).unwrap())
        })
        .collect()
}

/// What a mutation may insert: every key the loader knows, values at and past every
/// limit, and the punctuation that breaks TOML.
fn tokens() -> Vec<String> {
    let mut tokens: Vec<String> = keys::all()
        .into_iter()
        .flat_map(|key| {
            let last = key.rsplit('.').next().unwrap().to_string();
            [key, last]
        })
        .collect();
    for value in [
        "0",
        "-1",
        "1",
        "2",
        "4096",
        "4097",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "99999999999999999999",
        "1e300",
        "-0.0",
        "nan",
        "inf",
        "0.0001",
        "10.5",
        "true",
        "\"\"",
        "\"16383T\"",
        "\"1T\"",
        "\"2M\"",
        "\"3M\"",
        "\"0x200001\"",
        "\"0x7fffffffffff000\"",
        "\"3601s\"",
        "\"0ns\"",
        "\"1ns\"",
        "\"99999999999s\"",
        "\"1.5.5us\"",
        "\"A1\"",
        "\"Z9\"",
        "\"pct\"",
        "\"exhaustive\"",
        "\"deadlock\"",
        "\"error\"",
        "\"\\u001b[2J\"",
        "[",
        "]",
        "{",
        "}",
        "[[",
        "]]",
        "=",
        ".",
        ",",
        "\"",
        "'",
        "\n",
        "#",
        "\n[[task]]\ncpu = 0\n",
        "\n[run]\n",
        "\n[expect]\n",
        "a.b.c.d",
        "{ call = \"cpu_up\", target = 3 }",
        "{ call = \"sleep\", for = \"1s\" }",
        "{ call = \"tdp_fault\", td = 1, gpa = 0, count = 2048 }",
    ] {
        tokens.push(value.to_string());
    }
    tokens.push(vec!["k"; 100].join("."));
    tokens
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Delete `len` bytes at the fraction `at` of the text.
    Delete { at: u16, len: u8 },
    /// Insert token `token` at `at`.
    Insert { at: u16, token: u16 },
    /// Replace `len` bytes at `at` by token `token`.
    Replace { at: u16, len: u8, token: u16 },
    /// Flip bit `bit` of the byte at `at`.
    Flip { at: u16, bit: u8 },
    /// Repeat `len` bytes at `at` right after themselves.
    Duplicate { at: u16, len: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u16>(), 1..40u8).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<u16>(), any::<u16>()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<u16>(), 1..12u8, any::<u16>()).prop_map(|(at, len, token)| Mutation::Replace {
            at,
            len,
            token
        }),
        (any::<u16>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<u16>(), 1..200u8).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

/// `bytes` with `mutation` applied; positions are fractions of the length, so one
/// mutation means the same thing for every file.
fn apply(bytes: &mut Vec<u8>, mutation: &Mutation, tokens: &[String]) {
    let position = |at: u16, len: usize| (usize::from(at) * (len + 1)) >> 16;
    let token = |index: u16| tokens[usize::from(index) % tokens.len()].as_bytes();
    match *mutation {
        Mutation::Delete { at, len } => {
            let start = position(at, bytes.len());
            let end = (start + usize::from(len)).min(bytes.len());
            bytes.drain(start..end);
        }
        Mutation::Insert { at, token: index } => {
            let start = position(at, bytes.len());
            bytes.splice(start..start, token(index).iter().copied());
        }
        Mutation::Replace { at, len, token: index } => {
            let start = position(at, bytes.len());
            let end = (start + usize::from(len)).min(bytes.len());
            bytes.splice(start..end, token(index).iter().copied());
        }
        Mutation::Flip { at, bit } => {
            if !bytes.is_empty() {
                let index = position(at, bytes.len() - 1);
                bytes[index] ^= 1 << bit;
            }
        }
        Mutation::Duplicate { at, len } => {
            let start = position(at, bytes.len());
            let end = (start + usize::from(len)).min(bytes.len());
            let copy: Vec<u8> = bytes[start..end].to_vec();
            bytes.splice(end..end, copy);
        }
    }
}

fn config(cases: u32) -> Config {
    let seed = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(8);
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

/// The error's position is inside `text` and its message starts with it.
fn check_position(error: &ScenarioError, path: &str, text: &str) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    prop_assert!(
        error.line >= 1 && error.line <= lines.len(),
        "line {} of {}: {error}",
        error.line,
        lines.len()
    );
    let line_chars = lines[error.line - 1].chars().count();
    prop_assert!(
        error.column >= 1 && error.column <= line_chars + 1,
        "column {} of {line_chars}: {error}",
        error.column
    );
    let prefix = format!("{path}:{}:{}: ", error.line, error.column);
    prop_assert!(error.to_string().starts_with(&prefix), "{error}");
    prop_assert!(error.to_string().len() < 4096, "a message of {} bytes", error.to_string().len());
    Ok(())
}

#[test]
fn mutated_scenario_files_load_and_run_or_are_refused_with_a_position() {
    let library = library();
    let tokens = tokens();
    let mut runner = TestRunner::new(config(SCENARIO_CASES));
    let case = (0..library.len(), proptest::collection::vec(mutation(), 1..5));
    let loaded = std::cell::Cell::new(0u32);
    runner
        .run(&case, |(file, mutations)| {
            let (name, text) = &library[file];
            let mut bytes = text.clone().into_bytes();
            for mutation in &mutations {
                apply(&mut bytes, mutation, &tokens);
            }
            let Ok(text) = String::from_utf8(bytes) else {
                // load_file's UTF-8 check is covered in load_errors.rs; the loader takes text.
                return Ok(());
            };
            match load_str(name, &text) {
                Err(error) => check_position(&error, name, &text),
                Ok(mut scenario) => {
                    loaded.set(loaded.get() + 1);
                    scenario.run.max_events = scenario.run.max_events.min(EVENTS_PER_RUN);
                    let result = run_once(&scenario, &Schedule::Random(scenario.run.seed), false);
                    prop_assert!(
                        result.outcome.kind != OutcomeKind::Error,
                        "{name}: {}\n{text}",
                        result.outcome
                    );
                    Ok(())
                }
            }
        })
        .unwrap();
    // The mutations must leave enough files valid that the runs are exercised too.
    let loaded = loaded.get();
    eprintln!("{loaded} of {SCENARIO_CASES} mutated files loaded and ran");
    assert!(loaded > SCENARIO_CASES / 20, "only {loaded} of {SCENARIO_CASES} mutants loaded");
}

#[derive(Clone, Debug)]
enum BundleMutation {
    /// A byte mutation of the encoded file (the checksum then almost always refuses it).
    Bytes(Mutation),
    /// Cut the file to the fraction `at`.
    Truncate(u16),
    /// Change a field and encode again, so the checksum is right and the reader must
    /// catch the lie itself.
    Seed(u64),
    Strategy(u16),
    Decisions {
        keep: u16,
        append: Vec<u32>,
    },
    Text(Mutation),
}

fn bundle_mutation() -> impl Strategy<Value = BundleMutation> {
    prop_oneof![
        mutation().prop_map(BundleMutation::Bytes),
        any::<u16>().prop_map(BundleMutation::Truncate),
        any::<u64>().prop_map(BundleMutation::Seed),
        any::<u16>().prop_map(BundleMutation::Strategy),
        (any::<u16>(), proptest::collection::vec(0..4u32, 0..8))
            .prop_map(|(keep, append)| BundleMutation::Decisions { keep, append }),
        mutation().prop_map(BundleMutation::Text),
    ]
}

#[test]
fn mutated_bundles_are_refused_with_a_reason_or_replay() {
    // Small, fast scenarios: a replay of each must stay cheap.
    let sources = [
        "dpamt/s-d5-per-2m-rwlock-ab-ba.toml",
        "dpamt/s-d1-hint-missing-pamt-page-pair.toml",
        "enable/s-h4-lp-init-without-vmxon.toml",
    ];
    let library = library();
    let bundles: Vec<Bundle> = sources
        .iter()
        .map(|source| {
            let (name, text) = library.iter().find(|(name, _)| name == source).unwrap();
            let scenario = load_str(name, text).unwrap();
            let result = run_once(&scenario, &Schedule::Random(1), false);
            Bundle::new(&scenario, text, scenario.run.strategy, 1, &result)
        })
        .collect();
    let tokens = tokens();
    let strategies = ["random", "pct", "exhaustive", "", "PCT", "random ", "\u{1b}"];
    let mut runner = TestRunner::new(config(BUNDLE_CASES));
    let case = (0..bundles.len(), bundle_mutation());
    runner
        .run(&case, |(index, mutation)| {
            let mut edited = bundles[index].clone();
            let bytes = match &mutation {
                BundleMutation::Bytes(mutation) => {
                    let mut bytes = bundle::encode(&edited);
                    apply(&mut bytes, mutation, &tokens);
                    bytes
                }
                BundleMutation::Truncate(at) => {
                    let bytes = bundle::encode(&edited);
                    let len = (usize::from(*at) * bytes.len()) >> 16;
                    bytes[..len].to_vec()
                }
                BundleMutation::Seed(seed) => {
                    edited.seed = *seed;
                    bundle::encode(&edited)
                }
                BundleMutation::Strategy(choice) => {
                    edited.strategy = strategies[usize::from(*choice) % strategies.len()].to_string();
                    bundle::encode(&edited)
                }
                BundleMutation::Decisions { keep, append } => {
                    let keep = (usize::from(*keep) * (edited.decisions.len() + 1)) >> 16;
                    edited.decisions.truncate(keep);
                    edited.decisions.extend(append);
                    bundle::encode(&edited)
                }
                BundleMutation::Text(mutation) => {
                    let mut text = edited.scenario_text.clone().into_bytes();
                    apply(&mut text, mutation, &tokens);
                    edited.scenario_text = String::from_utf8_lossy(&text).into_owned();
                    bundle::encode(&edited)
                }
            };
            let decoded = match bundle::decode(&bytes) {
                Err(error) => {
                    prop_assert!(!error.to_string().is_empty());
                    return Ok(());
                }
                Ok(decoded) => decoded,
            };
            let original = &bundles[index];
            let Ok((scenario, result)) = decoded.replay(false) else {
                return Ok(()); // The embedded text no longer loads: refused, exit 2.
            };
            let mut mismatches = decoded.mismatches(&result);
            mismatches.extend(decoded.seed_mismatches(&scenario));
            // A bundle whose strategy or decisions were changed must not "reproduce". (Another
            // seed may make the same few decisions; then the bundle is right.)
            let changed = decoded.strategy != original.strategy || decoded.decisions != original.decisions;
            let unchanged_scenario = decoded.scenario_text == original.scenario_text;
            if changed && unchanged_scenario {
                prop_assert!(!mismatches.is_empty(), "{mutation:?} replayed as reproduced");
            }
            Ok(())
        })
        .unwrap();
}
