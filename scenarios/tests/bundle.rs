//! Repro bundles: written, read back, replayed, and refused when damaged; the CLI around them.

use std::path::{Path, PathBuf};

use scenarios::bundle::{self, Bundle, BundleError};
use scenarios::load_str;
use scenarios::run::{Schedule, run_once};

const S_D5: &str = "library/dpamt/s-d5-per-2m-rwlock-ab-ba.toml";

fn library_text(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

/// A fresh directory under the system temp dir, per test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tdxsim-bundle-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bundle of `file` run from `seed`.
fn bundle_of(file: &str, seed: u64) -> Bundle {
    let text = library_text(file);
    let scenario = load_str(file, &text).unwrap_or_else(|error| panic!("{error}"));
    let result = run_once(&scenario, &Schedule::Random(seed), false);
    Bundle::new(&scenario, &text, seed, &result)
}

#[test]
fn write_then_read_gives_the_same_bundle() {
    let dir = temp_dir("round-trip").join("created/by/write");
    let bundle = bundle_of(S_D5, 3);
    let path = bundle::write(&dir, &bundle).unwrap();
    assert_eq!(path, dir.join("s-d5-per-2m-rwlock-ab-ba-seed3.bundle"));
    assert_eq!(bundle::read(&path).unwrap(), bundle);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary file is left behind: {names:?}");
}

#[test]
fn replaying_a_bundle_gives_the_recorded_run() {
    let bundle = bundle_of(S_D5, 3);
    assert!(bundle.outcome.starts_with("deadlock"), "{}", bundle.outcome);
    let read = bundle::decode(&bundle::encode(&bundle)).unwrap();
    let (_, result) = read.replay(false).unwrap();
    assert_eq!(result.trace_hash, bundle.trace_hash);
    assert_eq!(result.outcome.to_string(), bundle.outcome);
    assert!(read.mismatches(&result).is_empty());
    assert!(!result.diverged);
}

#[test]
fn a_replay_that_differs_is_named() {
    let mut bundle = bundle_of(S_D5, 3);
    bundle.trace_hash ^= 1;
    let (_, result) = bundle.replay(false).unwrap();
    let mismatches = bundle.mismatches(&result);
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert!(mismatches[0].starts_with("trace hash"), "{mismatches:?}");
}

#[test]
fn a_truncated_bundle_is_refused_at_every_length() {
    let bytes = bundle::encode(&bundle_of(S_D5, 3));
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
    let bytes = bundle::encode(&bundle_of(S_D5, 3));
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
    let mut bytes = bundle::encode(&bundle_of(S_D5, 3));
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
