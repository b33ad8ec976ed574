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

use crate::error::{ErrorKind, ScenarioError, line_column};
use crate::schema::{
    Bound, CALLS, CALLS_NOT_AVAILABLE, Call, EnableDesign, Expect, FailStep, HostCfg, METRICS, Machine,
    MetricBound, ModuleCfg, Returns, RunCfg, SEPT_BUSY_DESIGNS, STRATEGY_NAMES, Scenario, Step, Strategy,
    Task, UpdateDesign,
};
use crate::units::{parse_address, parse_size, parse_time};
use seam_model::LeafLocks;

/// Reads and loads a scenario file; the error names `path` as given.
pub fn load_file(path: &Path) -> std::result::Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| ScenarioError::io(&file, &error))?;
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
    let loader = Loader { file: path_for_messages, text };
    let root = DeTable::parse(text).map_err(|error| loader.syntax_error(&error))?;
    loader.scenario(root.get_ref())
}

const TOP_KEYS: &[&str] =
    &["name", "about", "machine", "module", "host", "pages", "task", "workload", "run", "expect"];
const MACHINE_KEYS: &[&str] = &["cpus", "possible_cpus", "memory", "ghz", "packages"];
const MODULE_KEYS: &[&str] = &[
    "dpamt",
    "host_priority",
    "jitter",
    "costs",
    "initialized",
    "seamret_erratum",
    "compat_sensitive",
    "leaf_locks",
];
const HOST_KEYS: &[&str] = &["dpamt", "sept_busy", "update", "enable", "hint_aug_retries"];
const TASK_KEYS: &[&str] = &["cpu", "start", "repeat", "steps"];
/// The operands a raw `seamcall` step takes for `leaf`, or `None` if a raw step cannot
/// issue it (SYS.RD reads `module_hv`).
fn raw_operands(leaf: Leaf) -> Option<&'static [&'static str]> {
    Some(match leaf {
        Leaf::PhymemPamtAdd => &["hpa", "pair"],
        Leaf::PhymemPamtRemove => &["hpa"],
        Leaf::MemPageAug => &["td", "gpa", "page"],
        Leaf::MemPageRemove | Leaf::MemRangeBlock => &["td", "gpa"],
        Leaf::MemTrack => &["td"],
        Leaf::PhymemPageWbinvd => &["page"],
        Leaf::SysRd | Leaf::SysInit | Leaf::SysLpInit | Leaf::SeamldrInfo => &[],
        _ => return None,
    })
}

const RUN_KEYS: &[&str] = &[
    "runs",
    "seed",
    "strategy",
    "pct_depth",
    "exhaustive_bound",
    "max_time",
    "watchdog",
    "max_stall",
    "hung_task",
];
const EXPECT_KEYS: &[&str] = &["outcome", "what", "within_runs", "metrics"];
/// Largest `machine.cpus` / `machine.possible_cpus`.
const MAX_CPUS: u64 = 4096;
/// Largest `td_create` `vcpus`.
const MAX_VCPUS: u64 = 256;
/// A `found` longer than this is cut, so one message stays one line.
const FOUND_CHARS_MAX: usize = 40;

type Value<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<DeString<'i>>;
type Result<T> = std::result::Result<T, ScenarioError>;

struct Loader<'t> {
    file: &'t str,
    text: &'t str,
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
        let top = self.table_entries(String::new(), 0..0, root, TOP_KEYS)?;
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
        if let Some(value) = top.get("workload") {
            return Err(self.error(
                value.span(),
                "workload",
                "no [[workload]] tables (generated workloads are not available in this version)",
                self.found(value),
            ));
        }
        let run = self.run(&top, clock)?;
        let expect = self.expect(&top, &run)?;
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
            run,
            expect,
        })
    }

    fn machine(&self, top: &Table<'_, '_>) -> Result<Machine> {
        let Some(table) = self.subtable(top, "machine", MACHINE_KEYS)? else {
            return Ok(Machine { cpus: 1, possible_cpus: 1, packages: 1, memory_bytes: 64 << 20, ghz: 2.0 });
        };
        let cpus = match table.get("cpus") {
            Some(value) => self.int(&table.key("cpus"), value, 1, MAX_CPUS)?,
            None => 1,
        };
        let possible_cpus = match table.get("possible_cpus") {
            Some(value) => self.int(&table.key("possible_cpus"), value, cpus, MAX_CPUS)?,
            None => cpus,
        };
        let packages = match table.get("packages") {
            Some(value) => {
                self.int(&table.key("packages"), value, 1, possible_cpus).map_err(|error| ScenarioError {
                    expected: format!("an integer 1..={possible_cpus} (at most machine.possible_cpus)"),
                    ..error
                })?
            }
            None => 1,
        };
        let memory_bytes = match table.get("memory") {
            Some(value) => {
                let key = table.key("memory");
                let expected = "a size that is a positive multiple of 2M, like \"64M\"";
                let bytes = self.size(&key, value, expected)?;
                if bytes == 0 || !bytes.is_multiple_of(RANGE_2M) {
                    return Err(self.invalid(Some(value), &key, expected));
                }
                bytes
            }
            None => 64 << 20,
        };
        let ghz = match table.get("ghz") {
            Some(value) => self.float(&table.key("ghz"), value, "a number > 0", |ghz| ghz > 0.0)?,
            None => 2.0,
        };
        Ok(Machine {
            cpus: cpus as u32,
            possible_cpus: possible_cpus as u32,
            packages: packages as u32,
            memory_bytes,
            ghz,
        })
    }

    fn module(&self, top: &Table<'_, '_>, clock: Clock) -> Result<ModuleCfg> {
        let mut module = ModuleCfg {
            dpamt: true,
            host_priority: true,
            jitter: 0.10,
            costs: Leaf::ALL.iter().map(|leaf| (*leaf, leaf.default_cost_cycles())).collect(),
            initialized: true,
            seamret_erratum: false,
            compat_sensitive: true,
            leaf_locks: LeafLocks::default(),
        };
        let Some(table) = self.subtable(top, "module", MODULE_KEYS)? else {
            return Ok(module);
        };
        if let Some(value) = table.get("dpamt") {
            module.dpamt = self.boolean(&table.key("dpamt"), value)?;
        }
        if let Some(value) = table.get("host_priority") {
            module.host_priority = self.boolean(&table.key("host_priority"), value)?;
        }
        for (name, field) in [
            ("initialized", &mut module.initialized),
            ("seamret_erratum", &mut module.seamret_erratum),
            ("compat_sensitive", &mut module.compat_sensitive),
        ] {
            if let Some(value) = table.get(name) {
                *field = self.boolean(&table.key(name), value)?;
            }
        }
        if let Some(value) = table.get("leaf_locks") {
            let names: Vec<&str> = LeafLocks::ALL.iter().map(|locks| locks.name()).collect();
            let name = self.choice(&table.key("leaf_locks"), value, &names)?;
            module.leaf_locks = LeafLocks::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("jitter") {
            let in_range = |jitter: f64| (0.0..=0.5).contains(&jitter);
            module.jitter = self.float(&table.key("jitter"), value, "a number 0.0..=0.5", in_range)?;
        }
        if let Some(costs) = table.get("costs") {
            let costs = self.table(table.key("costs"), costs, None)?;
            for (key, value) in &costs.entries {
                let Some(leaf) = Leaf::from_name(key.get_ref()) else {
                    return Err(self.error(
                        key.span(),
                        &costs.key(key.get_ref()),
                        "a leaf name as in spec/constants.md, like \"TDH.PHYMEM.PAMT.ADD\"",
                        self.raw(key.span()),
                    ));
                };
                let cost_key = costs.key(key.get_ref());
                let expected = "a cost: an integer of cycles >= 1 or a time like \"5us\"";
                let cycles = self.time(&cost_key, value, clock, expected)?;
                if cycles == 0 {
                    return Err(self.invalid(Some(value), &cost_key, expected));
                }
                module.costs.insert(leaf, cycles);
            }
        }
        Ok(module)
    }

    fn host(&self, top: &Table<'_, '_>) -> Result<HostCfg> {
        let mut host = HostCfg {
            dpamt: DpamtDesign::default(),
            sept_busy: SEPT_BUSY_DESIGNS[0].to_owned(),
            update: UpdateDesign::default(),
            enable: EnableDesign::default(),
            hint_aug_retries: host_model::kvm::mmu::HINT_AUG_RETRIES_DEFAULT,
        };
        let Some(table) = self.subtable(top, "host", HOST_KEYS)? else {
            return Ok(host);
        };
        if let Some(value) = table.get("dpamt") {
            let names: Vec<&str> = DpamtDesign::ALL.iter().map(|design| design.name()).collect();
            let name = self.choice(&table.key("dpamt"), value, &names)?;
            host.dpamt = DpamtDesign::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("sept_busy") {
            host.sept_busy = self.choice(&table.key("sept_busy"), value, SEPT_BUSY_DESIGNS)?.to_owned();
        }
        if let Some(value) = table.get("update") {
            let names: Vec<&str> = UpdateDesign::ALL.iter().map(|design| design.name()).collect();
            let name = self.choice(&table.key("update"), value, &names)?;
            host.update = UpdateDesign::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("enable") {
            let names: Vec<&str> = EnableDesign::ALL.iter().map(|design| design.name()).collect();
            let name = self.choice(&table.key("enable"), value, &names)?;
            host.enable = EnableDesign::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("hint_aug_retries") {
            let key = table.key("hint_aug_retries");
            host.hint_aug_retries = self.int(&key, value, 0, crate::schema::HINT_AUG_RETRIES_MAX)? as u32;
        }
        Ok(host)
    }

    fn pages(&self, top: &Table<'_, '_>, machine: &Machine) -> Result<IndexMap<String, u64>> {
        let mut pages = IndexMap::new();
        let Some(value) = top.get("pages") else {
            return Ok(pages);
        };
        let table = self.table("pages".to_owned(), value, None)?;
        for (key, value) in &table.entries {
            let page_key = table.key(key.get_ref());
            if parse_address(key.get_ref()).is_some() {
                return Err(self.error(
                    key.span(),
                    &page_key,
                    "a page name that is not itself an address",
                    self.raw(key.span()),
                ));
            }
            let address = self.address(&page_key, value)?;
            self.check_page(&page_key, value, address, 1, machine.memory_bytes)?;
            pages.insert(key.get_ref().to_string(), address);
        }
        Ok(pages)
    }

    fn tasks(
        &self,
        top: &Table<'_, '_>,
        machine: &Machine,
        space: &StepSpace<'_>,
        clock: Clock,
    ) -> Result<Vec<Task>> {
        let Some(value) = top.get("task") else {
            return Ok(Vec::new());
        };
        let expected = "[[task]] tables";
        let DeValue::Array(array) = value.get_ref() else {
            return Err(self.invalid(Some(value), "task", expected));
        };
        let mut tasks = Vec::new();
        for (index, value) in array.iter().enumerate() {
            let path = format!("task[{index}]");
            if !value.get_ref().is_table() {
                return Err(self.invalid(Some(value), &path, "a table (a [[task]])"));
            }
            let table = self.table(path, value, Some(TASK_KEYS))?;
            tasks.push(self.task(&table, machine, space, clock)?);
        }
        Ok(tasks)
    }

    fn task(
        &self,
        table: &Table<'_, '_>,
        machine: &Machine,
        space: &StepSpace<'_>,
        clock: Clock,
    ) -> Result<Task> {
        let Some(cpu_value) = table.get("cpu") else {
            return Err(self.missing(table, "cpu", "an integer (the task's CPU, required)"));
        };
        let cpu = self.cpu(&table.key("cpu"), cpu_value, machine.possible_cpus)?;
        let start = match table.get("start") {
            Some(value) => self.time(&table.key("start"), value, clock, TIME_EXPECTED)?,
            None => 0,
        };
        let repeat = match table.get("repeat") {
            Some(value) => self.int(&table.key("repeat"), value, 1, u64::from(u32::MAX))?,
            None => 1,
        };
        let Some(steps_value) = table.get("steps") else {
            return Err(self.missing(table, "steps", "an array of steps (required)"));
        };
        let steps_key = table.key("steps");
        let expected = "a non-empty array of steps like [{ call = \"sleep\", for = \"1us\" }]";
        let DeValue::Array(array) = steps_value.get_ref() else {
            return Err(self.invalid(Some(steps_value), &steps_key, expected));
        };
        if array.is_empty() {
            return Err(self.invalid(Some(steps_value), &steps_key, expected));
        }
        let mut steps = Vec::new();
        for (index, value) in array.iter().enumerate() {
            steps.push(self.step(&format!("{steps_key}[{index}]"), value, space, clock)?);
        }
        let (line, _) = line_column(self.text.as_bytes(), table.span.start);
        Ok(Task { cpu, start: Cycle(start), repeat: repeat as u32, steps, line })
    }

    fn step(&self, path: &str, value: &Value<'_>, space: &StepSpace<'_>, clock: Clock) -> Result<Step> {
        let expected = "a step: an inline table like { call = \"sleep\", for = \"1us\" }";
        if !value.get_ref().is_table() {
            return Err(self.invalid(Some(value), path, expected));
        }
        let table = self.table(path.to_owned(), value, None)?;
        let Some(call_value) = table.get("call") else {
            return Err(self.missing(&table, "call", &format!("a call name ({})", call_names())));
        };
        let call_key = table.key("call");
        let name = self.string(&call_key, call_value, &format!("a call name ({})", call_names()))?;
        let call = match name {
            "seamcall" => self.seamcall(&table, space)?,
            "tdx_pamt_get" => {
                self.check_keys(&table, &["call", "page", "pair", "at", "returns"])?;
                let page = self.required_page(&table, "page", 1, space)?;
                let pair = match table.get("pair") {
                    Some(value) => Some(self.pair(&table.key("pair"), value, space)?),
                    None => None,
                };
                Call::TdxPamtGet { page, pair }
            }
            "tdx_pamt_put" => {
                self.check_keys(&table, &["call", "page", "pair", "at", "returns"])?;
                let page = self.required_page(&table, "page", 1, space)?;
                let pair = match table.get("pair") {
                    Some(value) => Some(self.pair(&table.key("pair"), value, space)?),
                    None => None,
                };
                Call::TdxPamtPut { page, pair }
            }
            "tdp_fault" => {
                self.check_keys(&table, &["call", "td", "gpa", "count", "page", "at", "returns"])?;
                let td = self.required_td(&table)?;
                let count = self.count(&table)?;
                let gpa = self.gpa(&table, count)?;
                let page = match table.get("page") {
                    Some(value) => Some(self.page(&table.key("page"), value, count, space)?),
                    None => None,
                };
                Call::TdpFault { td, gpa, count, page }
            }
            "zap" => {
                self.check_keys(&table, &["call", "td", "gpa", "count", "at", "returns"])?;
                let td = self.required_td(&table)?;
                let count = self.count(&table)?;
                Call::Zap { td, gpa: self.gpa(&table, count)?, count }
            }
            "tdx_enable" | "tdx_cpu_enable" => {
                self.check_keys(&table, &["call", "at", "returns"])?;
                if name == "tdx_enable" { Call::TdxEnable } else { Call::TdxCpuEnable }
            }
            "cpu_up" | "cpu_down" => {
                self.check_keys(&table, &["call", "target", "at", "returns"])?;
                let Some(target_value) = table.get("target") else {
                    let expected = format!(
                        "a CPU 0..={} (below machine.possible_cpus, required)",
                        space.possible_cpus - 1
                    );
                    return Err(self.missing(&table, "target", &expected));
                };
                let target = self.cpu(&table.key("target"), target_value, space.possible_cpus)?;
                if name == "cpu_up" { Call::CpuUp { target } } else { Call::CpuDown { target } }
            }
            "seamldr_install_module" => {
                self.check_keys(&table, &["call", "fail_step", "at", "returns"])?;
                let fail_step = match table.get("fail_step") {
                    Some(value) => {
                        let names: Vec<&str> = FailStep::ALL.iter().map(|step| step.name()).collect();
                        let name = self.choice(&table.key("fail_step"), value, &names)?;
                        Some(FailStep::from_name(name).expect("choice() returned a listed name"))
                    }
                    None => None,
                };
                Call::SeamldrInstallModule { fail_step }
            }
            "td_create" => {
                self.check_keys(&table, &["call", "td", "vcpus", "build", "at", "returns"])?;
                let td = self.required_td(&table)?;
                let vcpus = match table.get("vcpus") {
                    Some(value) => self.int(&table.key("vcpus"), value, 1, MAX_VCPUS)? as u32,
                    None => 1,
                };
                let build_cycles = match table.get("build") {
                    Some(value) => self.time(&table.key("build"), value, clock, TIME_EXPECTED)?,
                    None => 0,
                };
                Call::TdCreate { td, vcpus, build_cycles }
            }
            "sleep" | "spin" => {
                self.check_keys(&table, &["call", "for", "at", "returns"])?;
                let Some(for_value) = table.get("for") else {
                    return Err(self.missing(&table, "for", "a time (required)"));
                };
                let cycles = self.time(&table.key("for"), for_value, clock, TIME_EXPECTED)?;
                if name == "sleep" { Call::Sleep { cycles } } else { Call::Spin { cycles } }
            }
            _ if CALLS_NOT_AVAILABLE.contains(&name) => {
                let expected = format!(
                    "a call this version runs ({}); {name} is not available in this version",
                    call_names()
                );
                return Err(self.invalid(Some(call_value), &call_key, &expected));
            }
            _ => {
                let expected = format!("a known call ({})", call_names());
                return Err(self.invalid(Some(call_value), &call_key, &expected));
            }
        };
        let at = match table.get("at") {
            Some(value) => Some(Cycle(self.time(&table.key("at"), value, clock, TIME_EXPECTED)?)),
            None => None,
        };
        let returns = match table.get("returns") {
            Some(value) => {
                let key = table.key("returns");
                let possible = call.possible_returns();
                let names: Vec<&str> = possible.iter().map(String::as_str).collect();
                let name = self.choice(&key, value, &names)?;
                Some(Returns::parse(name).expect("possible_returns() lists parseable values"))
            }
            None => None,
        };
        let (line, column) = line_column(self.text.as_bytes(), value.span().start);
        Ok(Step { call, at, returns, line, column })
    }

    /// `{ call = "seamcall", leaf = ..., operands }` -> the typed `LeafCall`. Operands are
    /// kept as given (PAMT.ADD's `hpa` is not rounded to 2MB: the module checks that).
    fn seamcall(&self, table: &Table<'_, '_>, space: &StepSpace<'_>) -> Result<Call> {
        let modelled: Vec<&str> = Leaf::ALL
            .iter()
            .filter(|leaf| leaf.is_modelled() && raw_operands(**leaf).is_some())
            .map(|leaf| leaf.name())
            .collect();
        let modelled = modelled.join(", ");
        let Some(leaf_value) = table.get("leaf") else {
            return Err(self.missing(table, "leaf", &format!("a leaf name ({modelled})")));
        };
        let leaf_key = table.key("leaf");
        let leaf_name = self.string(&leaf_key, leaf_value, &format!("a leaf name ({modelled})"))?;
        let Some(leaf) = Leaf::from_name(leaf_name) else {
            let expected = format!("a SEAMCALL leaf name ({modelled})");
            return Err(self.invalid(Some(leaf_value), &leaf_key, &expected));
        };
        let not_modelled = || {
            let expected = format!("a leaf this version models ({modelled})");
            self.invalid(Some(leaf_value), &leaf_key, &expected)
        };
        if !leaf.is_modelled() {
            return Err(not_modelled());
        }
        let Some(operands) = raw_operands(leaf) else {
            return Err(not_modelled());
        };
        let allowed: Vec<&str> =
            ["call", "leaf"].into_iter().chain(operands.iter().copied()).chain(["at", "returns"]).collect();
        self.check_keys(table, &allowed)?;
        let td = || self.required_td(table).map(TdId);
        let gpa = || self.gpa(table, 1).map(Gpa);
        let page = |name| self.required_page(table, name, 1, space).map(Hpa);
        let call = match leaf {
            Leaf::PhymemPamtAdd => {
                let hpa = page("hpa")?;
                let Some(pair_value) = table.get("pair") else {
                    return Err(self.missing(table, "pair", "two pages (required)"));
                };
                let pair = self.pair(&table.key("pair"), pair_value, space)?;
                LeafCall::PamtAdd { hpa, pair: [Hpa(pair[0]), Hpa(pair[1])] }
            }
            Leaf::PhymemPamtRemove => LeafCall::PamtRemove { hpa: page("hpa")? },
            Leaf::MemPageAug => LeafCall::PageAug { td: td()?, gpa: gpa()?, page: page("page")? },
            Leaf::MemPageRemove => LeafCall::PageRemove { td: td()?, gpa: gpa()? },
            Leaf::MemRangeBlock => LeafCall::RangeBlock { td: td()?, gpa: gpa()? },
            Leaf::MemTrack => LeafCall::Track { td: td()? },
            Leaf::PhymemPageWbinvd => LeafCall::PageWbinvd { page: page("page")? },
            Leaf::SysRd => LeafCall::SysRd { field: seam_model::call::metadata::FIELD_MODULE_HV },
            Leaf::SysInit => LeafCall::SysInit,
            Leaf::SysLpInit => LeafCall::SysLpInit,
            Leaf::SeamldrInfo => LeafCall::SeamldrInfo,
            _ => return Err(not_modelled()),
        };
        Ok(Call::Seamcall(call))
    }

    fn run(&self, top: &Table<'_, '_>, clock: Clock) -> Result<RunCfg> {
        let mut run = RunCfg {
            runs: 100,
            seed: 0,
            strategy: Strategy::Random,
            pct_depth: 3,
            exhaustive_bound: 2,
            max_time: Cycle(clock.ns_to_cycles(1e9)),
            watchdog: Cycle(clock.ns_to_cycles(20e6)),
            hung_task: Cycle(0),
            max_stall: Cycle(clock.ns_to_cycles(50e3)),
            max_events: crate::schema::MAX_EVENTS_DEFAULT,
        };
        let Some(table) = self.subtable(top, "run", RUN_KEYS)? else {
            run.hung_task = Cycle(run.watchdog.0.saturating_mul(crate::schema::HUNG_TASK_FACTOR));
            return Ok(run);
        };
        if let Some(value) = table.get("runs") {
            run.runs = self.int(&table.key("runs"), value, 1, u64::MAX)?;
        }
        if let Some(value) = table.get("seed") {
            run.seed = self.int(&table.key("seed"), value, 0, u64::MAX)?;
        }
        if let Some(value) = table.get("strategy") {
            let key = table.key("strategy");
            run.strategy = match self.choice(&key, value, STRATEGY_NAMES)? {
                "pct" => Strategy::Pct,
                "exhaustive" => Strategy::Exhaustive,
                "coverage" => Strategy::Coverage,
                _ => Strategy::Random,
            };
        }
        if let Some(value) = table.get("pct_depth") {
            run.pct_depth = self.int(&table.key("pct_depth"), value, 1, u64::from(u32::MAX))? as u32;
        }
        if let Some(value) = table.get("exhaustive_bound") {
            let key = table.key("exhaustive_bound");
            run.exhaustive_bound = self.int(&key, value, 0, u64::from(u32::MAX))? as u32;
        }
        for (name, field, minimum) in [
            ("max_time", &mut run.max_time, 1),
            ("watchdog", &mut run.watchdog, 1),
            ("max_stall", &mut run.max_stall, 0),
            ("hung_task", &mut run.hung_task, 1),
        ] {
            if let Some(value) = table.get(name) {
                let key = table.key(name);
                let cycles = self.time(&key, value, clock, TIME_EXPECTED)?;
                if cycles < minimum {
                    return Err(self.invalid(Some(value), &key, "a time > 0"));
                }
                *field = Cycle(cycles);
            }
        }
        if run.hung_task == Cycle(0) {
            run.hung_task = Cycle(run.watchdog.0.saturating_mul(crate::schema::HUNG_TASK_FACTOR));
        }
        Ok(run)
    }

    fn expect(&self, top: &Table<'_, '_>, run: &RunCfg) -> Result<Option<Expect>> {
        let Some(table) = self.subtable(top, "expect", EXPECT_KEYS)? else {
            return Ok(None);
        };
        let expectable: Vec<&str> = OutcomeKind::ALL
            .iter()
            .filter(|outcome| **outcome != OutcomeKind::Error)
            .map(|outcome| outcome.name())
            .collect();
        let Some(outcome_value) = table.get("outcome") else {
            let expected = format!("one of {} (required in [expect])", expectable.join(" | "));
            return Err(self.missing(&table, "outcome", &expected));
        };
        let outcome = self.choice(&table.key("outcome"), outcome_value, &expectable)?;
        let outcome = OutcomeKind::from_name(outcome).expect("choice() returned a listed name");
        let what = match table.get("what") {
            Some(value) => Some(self.string(&table.key("what"), value, "a string")?.to_owned()),
            None => None,
        };
        let within_runs = match table.get("within_runs") {
            Some(value) => {
                Some(self.int(&table.key("within_runs"), value, 1, run.runs).map_err(|error| {
                    ScenarioError {
                        expected: format!("an integer 1..={} (at most run.runs)", run.runs),
                        ..error
                    }
                })?)
            }
            None => None,
        };
        let mut metrics = Vec::new();
        if let Some(value) = table.get("metrics") {
            let bounds = self.table(table.key("metrics"), value, None)?;
            for (key, value) in &bounds.entries {
                let name = key.get_ref().as_ref();
                let parsed =
                    [("_max", Bound::Max), ("_min", Bound::Min)].into_iter().find_map(|(suffix, bound)| {
                        let metric = name.strip_suffix(suffix)?;
                        METRICS.iter().any(|(known, _)| *known == metric).then_some((metric, bound))
                    });
                let Some((metric, bound)) = parsed else {
                    let names: Vec<&str> = METRICS.iter().map(|(metric, _)| *metric).collect();
                    let expected =
                        format!("<metric>_max or <metric>_min, metric one of {}", names.join(", "));
                    return Err(self.error(key.span(), &bounds.key(name), &expected, self.raw(key.span())));
                };
                let bound_value = self.int(&bounds.key(name), value, 0, u64::MAX)?;
                let (line, _) = line_column(self.text.as_bytes(), key.span().start);
                metrics.push(MetricBound { metric: metric.to_owned(), bound, value: bound_value, line });
            }
        }
        Ok(Some(Expect { outcome, what, within_runs, metrics }))
    }
}

const TIME_EXPECTED: &str = "a time: an integer of cycles or a string like \"50us\" (ns, us, ms, s)";

fn call_names() -> String {
    CALLS.iter().map(|(name, _, _)| *name).collect::<Vec<_>>().join(", ")
}

/// Step arguments: CPUs, td, gpa, count, pages.
impl Loader<'_> {
    /// A CPU number below `possible_cpus`: a task's `cpu`, `cpu_up`'s and `cpu_down`'s `target`.
    fn cpu(&self, key: &str, value: &Value<'_>, possible_cpus: u32) -> Result<u32> {
        let last = u64::from(possible_cpus) - 1;
        let expected = format!("an integer 0..={last} (below machine.possible_cpus)");
        let cpu = self.int(key, value, 0, last).map_err(|error| ScenarioError { expected, ..error })?;
        Ok(cpu as u32)
    }

    fn required_td(&self, table: &Table<'_, '_>) -> Result<u32> {
        let Some(value) = table.get("td") else {
            return Err(self.missing(table, "td", "a TD number (required)"));
        };
        Ok(self.int(&table.key("td"), value, 0, u64::from(u32::MAX))? as u32)
    }

    fn count(&self, table: &Table<'_, '_>) -> Result<u32> {
        match table.get("count") {
            Some(value) => Ok(self.int(&table.key("count"), value, 1, u64::from(u32::MAX))? as u32),
            None => Ok(1),
        }
    }

    /// A 4K-aligned guest address with room for `count` pages after it.
    fn gpa(&self, table: &Table<'_, '_>, count: u32) -> Result<u64> {
        let Some(value) = table.get("gpa") else {
            return Err(self.missing(table, "gpa", "a guest physical address (required)"));
        };
        let key = table.key("gpa");
        let gpa = self.address(&key, value)?;
        let fits = u64::from(count).checked_mul(PAGE_SIZE).and_then(|bytes| gpa.checked_add(bytes));
        if !gpa.is_multiple_of(PAGE_SIZE) || fits.is_none() {
            return Err(self.invalid(Some(value), &key, "a 4K-aligned guest physical address"));
        }
        Ok(gpa)
    }

    fn required_page(
        &self,
        table: &Table<'_, '_>,
        name: &str,
        count: u32,
        space: &StepSpace<'_>,
    ) -> Result<u64> {
        let Some(value) = table.get(name) else {
            return Err(self.missing(table, name, "a page: a name from [pages] or an address (required)"));
        };
        self.page(&table.key(name), value, count, space)
    }

    /// `[P1, P2]`: exactly two pages.
    fn pair(&self, key: &str, value: &Value<'_>, space: &StepSpace<'_>) -> Result<[u64; 2]> {
        let expected = "two pages, like [\"B1\", \"0x600000\"]";
        match value.get_ref() {
            DeValue::Array(items) if items.len() == 2 => Ok([
                self.page(&format!("{key}[0]"), &items[0], 1, space)?,
                self.page(&format!("{key}[1]"), &items[1], 1, space)?,
            ]),
            _ => Err(self.invalid(Some(value), key, expected)),
        }
    }

    /// A page name from `[pages]`, an integer or an address string, checked to start
    /// `count` 4K pages that all lie inside `machine.memory`.
    fn page(&self, key: &str, value: &Value<'_>, count: u32, space: &StepSpace<'_>) -> Result<u64> {
        let names: Vec<&str> = space.pages.keys().map(String::as_str).collect();
        let names = if names.is_empty() { "none defined".to_owned() } else { names.join(", ") };
        let expected = format!("a page: a name from [pages] ({names}) or an address like \"0x200000\"");
        let address = match value.get_ref() {
            DeValue::String(text) => match (parse_address(text), space.pages.get(text.as_ref())) {
                (Some(address), _) => address,
                // Named pages were checked where [pages] defines them.
                (None, Some(address)) if count == 1 => return Ok(*address),
                (None, Some(address)) => *address,
                (None, None) => return Err(self.invalid(Some(value), key, &expected)),
            },
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX)?,
            _ => return Err(self.invalid(Some(value), key, &expected)),
        };
        self.check_page(key, value, address, count, space.memory_bytes)?;
        Ok(address)
    }

    fn check_page(
        &self,
        key: &str,
        value: &Value<'_>,
        address: u64,
        count: u32,
        memory_bytes: u64,
    ) -> Result<()> {
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(self.invalid(Some(value), key, "a 4K-aligned address"));
        }
        let end = u64::from(count).checked_mul(PAGE_SIZE).and_then(|bytes| address.checked_add(bytes));
        if end.is_none_or(|end| end > memory_bytes) {
            let expected = if count == 1 {
                format!("an address inside machine.memory (below {memory_bytes:#x})")
            } else {
                format!("an address with {count} pages inside machine.memory (below {memory_bytes:#x})")
            };
            return Err(self.invalid(Some(value), key, &expected));
        }
        Ok(())
    }
}

/// Tables and scalar values.
impl<'t> Loader<'t> {
    /// `top[name]` as a table whose keys must be in `allowed`, if present.
    fn subtable<'a, 'i>(
        &self,
        top: &Table<'a, 'i>,
        name: &str,
        allowed: &[&str],
    ) -> Result<Option<Table<'a, 'i>>> {
        top.get(name).map(|value| self.table(top.key(name), value, Some(allowed))).transpose()
    }

    /// `value` as a table; with `allowed`, an unknown key is an error.
    fn table<'a, 'i>(
        &self,
        path: String,
        value: &'a Value<'i>,
        allowed: Option<&[&str]>,
    ) -> Result<Table<'a, 'i>> {
        let DeValue::Table(table) = value.get_ref() else {
            let expected = match allowed {
                Some(allowed) => format!("a table with keys {}", allowed.join(", ")),
                None => "a table".to_owned(),
            };
            return Err(self.invalid(Some(value), &path, &expected));
        };
        let table = Self::entries(path, value.span(), table);
        if let Some(allowed) = allowed {
            self.check_keys(&table, allowed)?;
        }
        Ok(table)
    }

    fn table_entries<'a, 'i>(
        &self,
        path: String,
        span: Range<usize>,
        table: &'a DeTable<'i>,
        allowed: &[&str],
    ) -> Result<Table<'a, 'i>> {
        let table = Self::entries(path, span, table);
        self.check_keys(&table, allowed)?;
        Ok(table)
    }

    /// The entries in file order: toml's map is sorted by key, which would make "the
    /// first error" depend on spelling rather than position.
    fn entries<'a, 'i>(path: String, span: Range<usize>, table: &'a DeTable<'i>) -> Table<'a, 'i> {
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        Table { path, span, entries }
    }

    fn check_keys(&self, table: &Table<'_, '_>, allowed: &[&str]) -> Result<()> {
        for (key, _) in &table.entries {
            if !allowed.contains(&key.get_ref().as_ref()) {
                let expected = format!("one of the keys {}", allowed.join(", "));
                return Err(self.error(
                    key.span(),
                    &table.key(key.get_ref()),
                    &expected,
                    self.raw(key.span()),
                ));
            }
        }
        Ok(())
    }

    /// An integer `min..=max`; floats, strings, negatives and huge values are refused
    /// with the same expectation.
    fn int(&self, key: &str, value: &Value<'_>, min: u64, max: u64) -> Result<u64> {
        let expected = match (min, max) {
            (0, u64::MAX) => "a non-negative integer".to_owned(),
            (min, u64::MAX) => format!("an integer >= {min}"),
            (min, max) => format!("an integer {min}..={max}"),
        };
        let DeValue::Integer(integer) = value.get_ref() else {
            return Err(self.invalid(Some(value), key, &expected));
        };
        let digits: String = integer.as_str().chars().filter(|&c| c != '_').collect();
        let digits = digits.strip_prefix('+').unwrap_or(&digits);
        match u64::from_str_radix(digits, integer.radix()) {
            Ok(number) if (min..=max).contains(&number) => Ok(number),
            _ => Err(self.invalid(Some(value), key, &expected)),
        }
    }

    /// A finite number (an integer is accepted: `ghz = 2`) for which `valid` holds.
    fn float(
        &self,
        key: &str,
        value: &Value<'_>,
        expected: &str,
        valid: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        let number = match value.get_ref() {
            DeValue::Float(float) => float.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(integer) if integer.radix() == 10 => {
                integer.as_str().replace('_', "").parse::<i64>().ok().map(|number| number as f64)
            }
            _ => None,
        };
        match number {
            Some(number) if number.is_finite() && valid(number) => Ok(number),
            _ => Err(self.invalid(Some(value), key, expected)),
        }
    }

    fn boolean(&self, key: &str, value: &Value<'_>) -> Result<bool> {
        value.get_ref().as_bool().ok_or_else(|| self.invalid(Some(value), key, "true or false"))
    }

    fn string<'v>(&self, key: &str, value: &'v Value<'_>, expected: &str) -> Result<&'v str> {
        value.get_ref().as_str().ok_or_else(|| self.invalid(Some(value), key, expected))
    }

    /// A string from `choices`; the error lists them all.
    fn choice<'c>(&self, key: &str, value: &Value<'_>, choices: &[&'c str]) -> Result<&'c str> {
        let text = value.get_ref().as_str();
        choices.iter().copied().find(|choice| Some(*choice) == text).ok_or_else(|| {
            let expected = format!("one of {}", choices.join(" | "));
            self.invalid(Some(value), key, &expected)
        })
    }

    /// Bytes: an integer, or a string with a K/M/G/T suffix.
    fn size(&self, key: &str, value: &Value<'_>, expected: &str) -> Result<u64> {
        let bytes = match value.get_ref() {
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX).ok(),
            DeValue::String(text) => parse_size(text),
            _ => None,
        };
        bytes.ok_or_else(|| self.invalid(Some(value), key, expected))
    }

    /// Cycles: an integer, or a string with a ns/us/ms/s suffix converted at `clock`.
    fn time(&self, key: &str, value: &Value<'_>, clock: Clock, expected: &str) -> Result<u64> {
        let cycles = match value.get_ref() {
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX).ok(),
            DeValue::String(text) => parse_time(text, clock),
            _ => None,
        };
        cycles.ok_or_else(|| self.invalid(Some(value), key, expected))
    }

    /// An address: an integer or a string like "0x200000".
    fn address(&self, key: &str, value: &Value<'_>) -> Result<u64> {
        let address = match value.get_ref() {
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX).ok(),
            DeValue::String(text) => parse_address(text),
            _ => None,
        };
        address.ok_or_else(|| {
            self.invalid(Some(value), key, "an address: an integer or a string like \"0x200000\"")
        })
    }
}

/// Building errors.
impl Loader<'_> {
    fn error(&self, span: Range<usize>, key: &str, expected: &str, found: String) -> ScenarioError {
        let (line, column) = line_column(self.text.as_bytes(), span.start);
        ScenarioError {
            kind: ErrorKind::Invalid,
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            expected: expected.to_owned(),
            found,
        }
    }

    /// `value` (as written) is not what `key` takes.
    fn invalid(&self, value: Option<&Value<'_>>, key: &str, expected: &str) -> ScenarioError {
        match value {
            Some(value) => self.error(value.span(), key, expected, self.found(value)),
            None => self.error(0..0, key, expected, "nothing".to_owned()),
        }
    }

    /// A required key is absent: point at the table that should hold it.
    fn missing(&self, table: &Table<'_, '_>, name: &str, expected: &str) -> ScenarioError {
        self.error(table.span.clone(), &table.key(name), expected, "nothing".to_owned())
    }

    fn found(&self, value: &Value<'_>) -> String {
        self.raw(value.span())
    }

    /// The source text of `span` on one line, cut to `FOUND_CHARS_MAX` characters.
    fn raw(&self, span: Range<usize>) -> String {
        let text = self.text.get(span).unwrap_or("");
        // Fold a multi-line value (an array of steps) onto one line; keep spaces inside a
        // line as written, so `"  "` is not shown as `" "`.
        let one_line = text.lines().map(str::trim).filter(|line| !line.is_empty());
        let one_line = one_line.collect::<Vec<_>>().join(" ");
        if one_line.is_empty() {
            return "nothing".to_owned();
        }
        if one_line.chars().count() <= FOUND_CHARS_MAX {
            return one_line;
        }
        let cut: String = one_line.chars().take(FOUND_CHARS_MAX).collect();
        format!("{cut}…")
    }

    /// A TOML syntax error, positioned, with the key it is nearest to.
    fn syntax_error(&self, error: &toml::de::Error) -> ScenarioError {
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = line_column(self.text.as_bytes(), offset);
        ScenarioError {
            kind: ErrorKind::Syntax,
            file: self.file.to_owned(),
            line,
            column,
            key: nearest_key(self.text, offset),
            expected: "valid TOML".to_owned(),
            found: error.message().split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }
}

/// A best guess at the key a syntax error at `offset` belongs to: the last table header
/// before it and the `key =` on its line, e.g. `machine.cpus`; "" when there is neither.
fn nearest_key(text: &str, offset: usize) -> String {
    let bytes = text.as_bytes();
    let offset = offset.min(bytes.len());
    let line_start = bytes[..offset].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line_end = bytes[offset..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| offset + i);
    let is_bare_key = |key: &str| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let header = String::from_utf8_lossy(&bytes[..line_start])
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|line| line.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        .filter(|header| is_bare_key(header));
    let line = String::from_utf8_lossy(&bytes[line_start..line_end]).into_owned();
    let key = line.split_once('=').map(|(key, _)| key.trim().to_owned()).filter(|key| is_bare_key(key));
    match (header, key) {
        (Some(header), Some(key)) => format!("{header}.{key}"),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => String::new(),
    }
}
