//! Repro bundles: everything needed to repeat one run, in one file.
//!
//! A failing run writes its bundle before anything else is printed (DESIGN.md "Scenarios,
//! runs and outcomes"), so the run can be repeated even if what comes after goes wrong, and
//! on another machine without the scenario file.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! offset  size  field
//! 0       8     magic b"TDXSIMRB"
//! 8       4     format version (FORMAT_VERSION)
//! 12      8     payload length N
//! 20      N     payload: `Bundle` in postcard
//! 20+N    8     FNV-1a 64 over bytes 0 .. 20+N
//! ```
//!
//! The version comes right after the magic and is checked before anything else is read:
//! a later version may lay the rest out differently. The length field lets a cut-off file
//! be told apart from a corrupted one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::keys::max;

use serde::{Deserialize, Serialize};
use sim_core::Outcome;

use crate::error::ScenarioError;
use crate::load_str;
use crate::run::{RunResult, Schedule, run_once};
use crate::schema::{Scenario, Strategy};

/// The first bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"TDXSIMRB";
/// The bundle format this tdxsim writes and reads; bump it when `Bundle` or the layout changes.
pub const FORMAT_VERSION: u32 = 2;
/// File name extension of bundles.
pub const EXTENSION: &str = "bundle";

const VERSION_END: usize = 12;
const HEADER_LEN: usize = 20;
const CHECKSUM_LEN: usize = 8;

/// One run, replayable without its scenario file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Equal to the header's version; invariant: == FORMAT_VERSION once read.
    pub format_version: u32,
    /// The tdxsim that wrote it (`CARGO_PKG_VERSION`).
    pub tool_version: String,
    /// Where the scenario came from; used for names and error positions only.
    pub scenario_path: String,
    /// The scenario file's text as it was run.
    pub scenario_text: String,
    pub seed: u64,
    /// `run.strategy` of the run (`random`).
    pub strategy: String,
    /// Every Chooser answer of the run: `Schedule::Replay(decisions)` repeats it.
    pub decisions: Vec<u32>,
    pub trace_hash: u64,
    /// The run's outcome as data: its kind, sentence and typed finding (format version 2;
    /// version 1 kept the sentence only).
    pub outcome: Outcome,
}

/// Why a file was refused as a bundle. Nothing is ever half-read: any of these means no `Bundle`.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The first bytes are not `TDXSIMRB`.
    #[error("not a tdxsim bundle (bad magic)")]
    NotABundle,
    /// Written by another bundle format.
    #[error("written by bundle format version {found} (this tdxsim reads version {supported})")]
    Version { found: u32, supported: u32 },
    /// The file ends early.
    #[error("truncated: {len} bytes, shorter than its {part}")]
    Truncated { len: usize, part: &'static str },
    /// The bytes are all there but wrong.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

impl Bundle {
    /// The bundle of `result`, a run of `scenario` (whose file text is `scenario_text`) from `seed`.
    pub fn new(
        scenario: &Scenario,
        scenario_text: &str,
        strategy: Strategy,
        seed: u64,
        result: &RunResult,
    ) -> Bundle {
        Bundle {
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            scenario_path: scenario.path.clone(),
            scenario_text: scenario_text.to_string(),
            seed,
            strategy: strategy.name().to_string(),
            decisions: result.decisions.clone(),
            trace_hash: result.trace_hash,
            outcome: result.outcome.clone(),
        }
    }

    /// `<scenario-file-stem>-seed<N>.bundle` for a random run, `<stem>-<strategy>-seed<N>.bundle`
    /// for the others (schedule number N for `exhaustive`), so two strategies' runs of one
    /// seed do not share a name.
    pub fn file_name(&self) -> String {
        let stem = Path::new(&self.scenario_path)
            .file_stem()
            .map_or_else(|| "scenario".to_string(), |stem| stem.to_string_lossy().into_owned());
        match self.strategy.as_str() {
            "random" => format!("{stem}-seed{}.{EXTENSION}", self.seed),
            strategy => format!("{stem}-{strategy}-seed{}.{EXTENSION}", self.seed),
        }
    }

    /// The recorded strategy; `decode` refused any other string.
    pub fn strategy(&self) -> Strategy {
        strategy_from_name(&self.strategy).expect("decode checked the strategy")
    }

    /// Loads the embedded scenario and runs the recorded decisions; a bundle that records
    /// none (its run made too many to keep, `sim_core::MAX_RECORDED_DECISIONS`, or none at
    /// all) runs its seed, which makes the same ones.
    pub fn replay(&self, record_trace: bool) -> Result<(Scenario, RunResult), ScenarioError> {
        let scenario = load_str(&self.scenario_path, &self.scenario_text)?;
        let schedule = if self.decisions.is_empty() {
            Schedule::for_seed(&scenario, Some(self.strategy()), self.seed)
        } else {
            Schedule::Replay(self.decisions.clone())
        };
        let result = run_once(&scenario, &schedule, record_trace);
        Ok((scenario, result))
    }

    /// Whether the bundle's seed and strategy make the decisions it recorded (a bundle whose
    /// seed was edited would otherwise replay fine and report a run it did not come from):
    /// empty when they do, else why not.
    pub fn seed_mismatches(&self, scenario: &Scenario) -> Vec<String> {
        if self.decisions.is_empty() {
            // Replayed from the seed itself: the trace hash is the check.
            return Vec::new();
        }
        let schedule = Schedule::for_seed(scenario, Some(self.strategy()), self.seed);
        let from_seed = run_once(scenario, &schedule, false).decisions;
        if from_seed == self.decisions {
            return Vec::new();
        }
        let first = from_seed.iter().zip(&self.decisions).position(|(a, b)| a != b);
        let at = first.unwrap_or(from_seed.len().min(self.decisions.len()));
        vec![format!(
            "seed {} with strategy {} makes {} decisions that differ from the {} recorded from decision #{at} on",
            self.seed,
            self.strategy,
            from_seed.len(),
            self.decisions.len()
        )]
    }

    /// How a replay differs from the recorded run, in words; empty when it reproduced it.
    pub fn mismatches(&self, result: &RunResult) -> Vec<String> {
        let mut mismatches = Vec::new();
        if result.diverged {
            mismatches
                .push("the recorded decisions do not fit this scenario (the replay diverged)".to_string());
        }
        if result.decisions.len() < self.decisions.len() {
            mismatches.push(format!(
                "the run ended after {} of the {} recorded decisions; the rest were not used",
                result.decisions.len(),
                self.decisions.len()
            ));
        }
        if result.trace_hash != self.trace_hash {
            mismatches.push(format!(
                "trace hash {:016x}, the bundle recorded {:016x}",
                result.trace_hash, self.trace_hash
            ));
        }
        if result.outcome != self.outcome {
            let (now, then) = (result.outcome.to_string(), self.outcome.to_string());
            mismatches.push(format!("outcome {now:?}, the bundle recorded {then:?}"));
        }
        mismatches
    }
}

/// The bytes of `bundle`'s file.
pub fn encode(bundle: &Bundle) -> Vec<u8> {
    let payload = postcard::to_stdvec(bundle).expect("a Bundle always serializes");
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let checksum = fnv1a64(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Reads a bundle from bytes; refuses anything that is not exactly a bundle this tdxsim wrote.
pub fn decode(bytes: &[u8]) -> Result<Bundle, BundleError> {
    let len = bytes.len();
    let magic_len = len.min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(BundleError::NotABundle);
    }
    if len < VERSION_END {
        return Err(BundleError::Truncated { len, part: "header" });
    }
    let found = u32::from_le_bytes(le_array(&bytes[8..VERSION_END]));
    if found != FORMAT_VERSION {
        return Err(BundleError::Version { found, supported: FORMAT_VERSION });
    }
    if len < HEADER_LEN {
        return Err(BundleError::Truncated { len, part: "header" });
    }
    let payload_len = u64::from_le_bytes(le_array(&bytes[VERSION_END..HEADER_LEN]));
    let available = (len - HEADER_LEN) as u64;
    if available < payload_len {
        return Err(BundleError::Truncated { len, part: "payload" });
    }
    let payload_end = HEADER_LEN + payload_len as usize;
    let rest = len - payload_end;
    if rest < CHECKSUM_LEN {
        return Err(BundleError::Truncated { len, part: "checksum" });
    }
    if rest > CHECKSUM_LEN {
        return Err(BundleError::Corrupt(format!("{} bytes after the checksum", rest - CHECKSUM_LEN)));
    }
    let recorded = u64::from_le_bytes(le_array(&bytes[payload_end..]));
    let computed = fnv1a64(&bytes[..payload_end]);
    if recorded != computed {
        return Err(BundleError::Corrupt(format!(
            "checksum mismatch (recorded {recorded:016x}, computed {computed:016x})"
        )));
    }
    let bundle: Bundle = postcard::from_bytes(&bytes[HEADER_LEN..payload_end])
        .map_err(|error| BundleError::Corrupt(format!("payload does not decode: {error}")))?;
    if bundle.format_version != FORMAT_VERSION {
        return Err(BundleError::Corrupt(format!(
            "the payload says format version {}, the header {FORMAT_VERSION}",
            bundle.format_version
        )));
    }
    if strategy_from_name(&bundle.strategy).is_none() {
        return Err(BundleError::Corrupt(format!(
            "strategy {:?} is none of {}",
            crate::error::shortened(&bundle.strategy, 40),
            crate::schema::STRATEGY_NAMES.join(", ")
        )));
    }
    Ok(bundle)
}

fn strategy_from_name(name: &str) -> Option<Strategy> {
    [Strategy::Random, Strategy::Pct, Strategy::Exhaustive, Strategy::Coverage]
        .into_iter()
        .find(|strategy| strategy.name() == name)
}

/// Reads the bundle at `path`: a regular file of at most [`max::BUNDLE_BYTES`].
pub fn read(path: &Path) -> Result<Bundle, BundleError> {
    decode(&crate::files::read_regular(path, max::BUNDLE_BYTES)?)
}

/// Whether `path` names a bundle: its name ends in `.bundle` or it starts with the magic.
/// (A file that only claims to be one is then refused by `read`, with the reason.)
pub fn looks_like_bundle(path: &Path) -> bool {
    if path.extension().is_some_and(|extension| extension == EXTENSION) {
        return true;
    }
    let mut magic = [0u8; MAGIC.len()];
    std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
        .is_ok_and(|()| magic == MAGIC)
}

/// Writes `bundle` into `dir` (created if need be) and returns its path: `dir/<file_name>`,
/// or `<file_name>` with `-2`, `-3`… before the extension when that name holds something else
/// than an earlier bundle of the same run (another scenario with the same file stem, a file
/// that is not a bundle). Safe against what else is in `dir`: the bytes go to a temporary
/// file created new (never through an existing name or a symlink) and synced, which is then
/// renamed into place, so a reader never sees half a bundle.
pub fn write(dir: &Path, bundle: &Bundle) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut temporary = tempfile::Builder::new().prefix(".tdxsim-bundle-").tempfile_in(dir)?;
    temporary.write_all(&encode(bundle))?;
    temporary.as_file().sync_all()?;
    let name = bundle.file_name();
    let stem = name.strip_suffix(&format!(".{EXTENSION}")).unwrap_or(&name);
    for attempt in 1..=NAME_ATTEMPTS {
        let path = match attempt {
            1 => dir.join(&name),
            n => dir.join(format!("{stem}-{n}.{EXTENSION}")),
        };
        match std::fs::symlink_metadata(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                match temporary.persist_noclobber(&path) {
                    Ok(_) => return Ok(path),
                    // Someone took the name meanwhile: try the next one.
                    Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {
                        temporary = error.file;
                    }
                    Err(error) => return Err(error.error),
                }
            }
            Err(error) => return Err(error),
            Ok(metadata) if metadata.is_file() && is_same_run(&path, bundle) => {
                // The same run written again: replace it (rename replaces the name itself).
                temporary.persist(&path).map_err(|error| error.error)?;
                return Ok(path);
            }
            Ok(_) => {}
        }
    }
    Err(std::io::Error::other(format!(
        "{NAME_ATTEMPTS} names for {name} in {} are all taken by other files",
        dir.display()
    )))
}

/// Names `write` tries before giving up.
const NAME_ATTEMPTS: u32 = 100;

/// Whether the file at `path` is a bundle of the same run as `bundle`: same scenario (path
/// and text), seed and strategy.
fn is_same_run(path: &Path, bundle: &Bundle) -> bool {
    read(path).is_ok_and(|existing| {
        existing.scenario_path == bundle.scenario_path
            && existing.scenario_text == bundle.scenario_text
            && existing.seed == bundle.seed
            && existing.strategy == bundle.strategy
    })
}

/// FNV-1a, 64 bits: the checksum, as sim-core's trace hash.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `slice` as an array; callers have checked its length.
fn le_array<const N: usize>(slice: &[u8]) -> [u8; N] {
    slice.try_into().expect("length checked by the caller")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        Bundle {
            format_version: FORMAT_VERSION,
            tool_version: "0.1.0".to_string(),
            scenario_path: "library/dpamt/x.toml".to_string(),
            scenario_text: "name = \"x\"\n".to_string(),
            seed: 7,
            strategy: "random".to_string(),
            decisions: vec![0, 1, 2, 70000],
            trace_hash: 0x1234,
            outcome: Outcome::pass(),
        }
    }

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn encode_decode_round_trips_and_the_layout_is_as_documented() {
        let bytes = encode(&sample());
        assert_eq!(&bytes[..8], b"TDXSIMRB");
        assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
        let payload_len = u64::from_le_bytes(le_array(&bytes[12..20])) as usize;
        assert_eq!(bytes.len(), HEADER_LEN + payload_len + CHECKSUM_LEN);
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn trailing_bytes_are_corrupt() {
        let mut bytes = encode(&sample());
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(BundleError::Corrupt(_))));
    }

    #[test]
    fn file_name_is_stem_and_seed() {
        assert_eq!(sample().file_name(), "x-seed7.bundle");
    }
}
