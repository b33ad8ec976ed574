//! Parse and validate a scenario file into a [`Scenario`].
//!
//! The text is parsed with toml's spanned `DeTable`, then walked by hand: serde's derive
//! would lose positions and stop at "invalid type" without the key path. Everything is
//! checked before anything runs, and the first error wins. "First" is in dependency
//! order: top-level keys, `name`, `[machine]` (times and pages depend on it), `[module]`,
//! `[host]`, `[pages]`, `[[task]]`, `[[workload]]`, `[run]`, `[expect]`; inside a table,
//! in file order.

use std::ops::Range;
use std::path::Path;

use host_model::tdx::dpamt::DpamtDesign;
use indexmap::IndexMap;
use seam_model::{Gpa, Hpa, Leaf, LeafCall, PAGE_SIZE, RANGE_2M, TdId};
use sim_core::{Clock, Cycle, OutcomeKind};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::error::{ErrorKind, ScenarioError, line_column, shortened};
use crate::keys::{self, max, raw_operands};
use crate::schema::{
    Bound, CALLS, CALLS_NOT_AVAILABLE, Call, EnableDesign, Expect, FailStep, HostCfg, Machine, MetricBound,
    ModuleCfg, Returns, RunCfg, STRATEGY_NAMES, Scenario, SeptBusyDesign, Step, Strategy, Task, UpdateDesign,
};
use crate::units::{parse_address, parse_size, parse_time};

mod errors;
mod kvm;
mod sections;
mod steps;
mod values;
mod workloads;
use seam_model::LeafLocks;
pub use workloads::defaults as workload_defaults;

/// Reads and loads a scenario file; the error names `path` as given.
pub fn load_file(path: &Path) -> std::result::Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let bytes = crate::files::read_regular(path, max::SCENARIO_BYTES)
        .map_err(|error| ScenarioError::io(&file, &error))?;
    match String::from_utf8(bytes) {
        Ok(text) => load_str(&file, &text),
        Err(error) => {
            let offset = error.utf8_error().valid_up_to();
            let bytes = error.as_bytes();
            let (line, column) = line_column(bytes, offset);
            Err(ScenarioError {
                kind: ErrorKind::Syntax,
                file,
                line,
                column,
                key: String::new(),
                expected: "UTF-8 text".to_owned(),
                found: format!("the byte {:#04x}", bytes[offset]),
            })
        }
    }
}

/// Loads a scenario from `text`; `path_for_messages` is what errors and `Scenario::path` say.
pub fn load_str(path_for_messages: &str, text: &str) -> std::result::Result<Scenario, ScenarioError> {
    let loader = Loader { file: path_for_messages, text, line_starts: std::cell::OnceCell::new() };
    let root = DeTable::parse(text).map_err(|error| loader.syntax_error(&error))?;
    loader.scenario(root.get_ref())
}

/// `machine.ghz` when the file does not say: the clock the calibration's cycle counts were
/// taken at (TDH.SYS.TDMR.INIT, 7 us = 15,400 cycles at 2.2 GHz; docs/model.md "Clock"), so
/// a time written in a file and a default cost in cycles mean the same wall time.
pub const GHZ_DEFAULT: f64 = 2.2;
/// A `found` longer than this is cut, so one message stays one line.
const FOUND_CHARS_MAX: usize = 40;
/// A key path longer than this is cut (a 1 MB key makes no message readable).
const KEY_CHARS_MAX: usize = 80;
/// toml's parser refuses a dotted key of this many parts, without saying where.
const TOML_KEY_PARTS_MAX: usize = 80;

type Value<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<DeString<'i>>;
type Result<T> = std::result::Result<T, ScenarioError>;

struct Loader<'t> {
    file: &'t str,
    text: &'t str,
    /// Where each line starts, for the position every task and step records: found by
    /// binary search rather than by counting from the start of the file each time (a
    /// scenario with a thousand steps is loaded once per sweep point).
    line_starts: std::cell::OnceCell<Vec<usize>>,
}

impl Loader<'_> {
    /// 1-based line and column (in characters) of byte `offset`, as `line_column` counts them.
    fn position(&self, offset: usize) -> (usize, usize) {
        let bytes = self.text.as_bytes();
        let starts = self.line_starts.get_or_init(|| {
            let after_newlines = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1);
            std::iter::once(0).chain(after_newlines).collect()
        });
        let offset = offset.min(bytes.len());
        let line = starts.partition_point(|&start| start <= offset);
        let line_start = starts[line - 1];
        let column = 1 + bytes[line_start..offset].iter().filter(|&&b| b & 0xC0 != 0x80).count();
        (line, column)
    }
}

/// A TOML table being read: its entries in file order, and where to point when a
/// required key is missing.
struct Table<'a, 'i> {
    /// Dotted path for messages, "" at top level.
    path: String,
    span: Range<usize>,
    entries: Vec<(&'a Key<'i>, &'a Value<'i>)>,
}

impl<'a, 'i> Table<'a, 'i> {
    fn get(&self, name: &str) -> Option<&'a Value<'i>> {
        self.entries.iter().find(|(key, _)| key.get_ref() == name).map(|(_, value)| *value)
    }

    /// Dotted path of `name` in this table.
    fn key(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_owned() } else { format!("{}.{name}", self.path) }
    }
}

/// What page- and CPU-valued step arguments are checked against.
struct StepSpace<'s> {
    pages: &'s IndexMap<String, u64>,
    memory_bytes: u64,
    possible_cpus: u32,
}

impl<'t> Loader<'t> {
    fn scenario(&self, root: &DeTable<'_>) -> Result<Scenario> {
        let top = self.table_entries(String::new(), 0..0, root, keys::TOP)?;
        let name = match top.get("name") {
            Some(value) => self.string(&top.key("name"), value, "a non-empty string")?,
            None => return Err(self.missing(&top, "name", "a string (required)")),
        };
        if name.trim().is_empty() {
            return Err(self.invalid(top.get("name"), "name", "a non-empty string"));
        }
        let about = top.get("about").map(|value| self.string("about", value, "a string")).transpose()?;
        let machine = self.machine(&top)?;
        let clock = Clock { ghz: machine.ghz };
        let module = self.module(&top, clock)?;
        let host = self.host(&top)?;
        let pages = self.pages(&top, &machine)?;
        let space = StepSpace {
            pages: &pages,
            memory_bytes: machine.memory_bytes,
            possible_cpus: machine.possible_cpus,
        };
        let tasks = self.tasks(&top, &machine, &space, clock)?;
        let workload_space = workloads::WorkloadSpace {
            machine: &machine,
            clock,
            step_tds: step_tds(&tasks),
            has_tasks: !tasks.is_empty(),
        };
        let workloads = self.workloads(&top, &workload_space)?;
        let run = self.run(&top, clock)?;
        let expect = self.expect(&top, &run)?;
        // Last, so a file being written shows its other mistakes first.
        if tasks.is_empty() && workloads.is_empty() {
            let expected = "at least one [[task]] or [[workload]] (a file with neither has nothing to run)";
            return Err(match top.get("task") {
                Some(value) => self.invalid(Some(value), "task", expected),
                None => self.missing(&top, "task", expected),
            });
        }
        Ok(Scenario {
            path: self.file.to_owned(),
            text: self.text.to_owned(),
            name: name.to_owned(),
            about: about.map(str::to_owned),
            machine,
            module,
            host,
            pages,
            tasks,
            workloads,
            run,
            expect,
        })
    }
}

/// The TD numbers the steps name.
fn step_tds(tasks: &[Task]) -> std::collections::BTreeSet<u32> {
    tasks
        .iter()
        .flat_map(|task| &task.steps)
        .filter_map(|step| match &step.call {
            Call::TdCreate { td, .. }
            | Call::VcpuInit { td, .. }
            | Call::InitMemRegion { td, .. }
            | Call::TdFinalize { td }
            | Call::VcpuRun { td, .. }
            | Call::MemslotDelete { td, .. }
            | Call::TdDestroy { td }
            | Call::TdpFault { td, .. }
            | Call::Zap { td, .. } => Some(*td),
            Call::Seamcall(
                LeafCall::PageAug { td, .. }
                | LeafCall::PageRemove { td, .. }
                | LeafCall::RangeBlock { td, .. }
                | LeafCall::Track { td },
            ) => Some(td.0),
            _ => None,
        })
        .collect()
}

pub(super) const TIME_EXPECTED: &str =
    "a time: an integer of cycles or a string like \"50us\" (ns, us, ms, s)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_by_line_index_agree_with_counting_from_the_start() {
        let text = "name = \"é\"\n\n[[task]]\ncpu = 0 # ü\nsteps = [{ call = \"spin\" }]\n";
        let loader = Loader { file: "x.toml", text, line_starts: std::cell::OnceCell::new() };
        for offset in 0..=text.len() + 3 {
            assert_eq!(loader.position(offset), line_column(text.as_bytes(), offset), "offset {offset}");
        }
    }
}
