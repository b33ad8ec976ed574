//! Generated scenarios as scenario files (SCENARIOS.md): the same text a user would write,
//! run through the same loader. The runner is the caller's; this module only writes text.

use std::fmt::Write as _;

use crate::spec::{Designs, MachineLimits, Op, PageRef, ScenarioSpec, TaskSpec, named_pages};

/// A scenario file whose machine, module and designs a fuzz campaign keeps, generating its
/// tasks (`tdxsim fuzz FILE`).
#[derive(Clone, Debug)]
pub struct Template {
    /// Where it came from, for names and messages.
    pub path: String,
    /// Its `[machine]`, `[module]` and `[host]` tables, and the `[run]` keys that shape a run
    /// (`max_time`, `watchdog`, `max_stall`, `max_events`, `pct_depth`).
    tables: toml::Table,
    pub limits: MachineLimits,
    pub designs: Designs,
}

/// `[run]` keys of a template that a generated scenario keeps.
const TEMPLATE_RUN_KEYS: &[&str] = &["max_time", "watchdog", "max_stall", "max_events", "pct_depth"];

/// Why a template's text could not be used.
#[derive(Debug)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    /// A template from a scenario file's text, which the caller has already loaded and
    /// validated: `limits` and `designs` are what its loader read from it.
    pub fn new(
        path: &str,
        text: &str,
        limits: MachineLimits,
        designs: Designs,
    ) -> Result<Template, TemplateError> {
        let document: toml::Table =
            text.parse().map_err(|error| TemplateError(format!("{path}: not TOML: {error}")))?;
        let mut tables = toml::Table::new();
        for key in ["machine", "module", "host"] {
            if let Some(value) = document.get(key) {
                tables.insert(key.to_string(), value.clone());
            }
        }
        if let Some(toml::Value::Table(run)) = document.get("run") {
            let kept: toml::Table = run
                .iter()
                .filter(|(key, _)| TEMPLATE_RUN_KEYS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            tables.insert("run".to_string(), toml::Value::Table(kept));
        }
        Ok(Template { path: path.to_string(), tables, limits, designs })
    }

    fn table(&self, key: &str) -> toml::Table {
        match self.tables.get(key) {
            Some(toml::Value::Table(table)) => table.clone(),
            _ => toml::Table::new(),
        }
    }
}

/// What a printed scenario says beyond its spec.
#[derive(Clone, Debug, Default)]
pub struct Document<'a> {
    pub name: String,
    pub about: String,
    pub template: Option<&'a Template>,
    /// `[run]` keys, in order (after the template's).
    pub run: Vec<(String, toml::Value)>,
    /// `[expect]` keys, in order; none: no `[expect]` table.
    pub expect: Vec<(String, toml::Value)>,
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn write_table(out: &mut String, name: &str, table: &toml::Table) {
    if table.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n[{name}]");
    // Nested tables (`[module.costs]`) follow their parent's plain keys, as a user writes them.
    let mut nested = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) => nested.push((key, inner)),
            _ => {
                let _ = writeln!(out, "{} = {value}", quoted_key(key));
            }
        }
    }
    for (key, inner) in nested {
        write_table(out, &format!("{name}.{}", quoted_key(key)), inner);
    }
}

fn quoted_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        quoted(key)
    }
}

/// Memory a generated machine has: range 0, the layout, and two ranges for the host's
/// page allocator (pairs of allocated gets, fault paths' caches, TD control pages).
pub fn memory_bytes(spec: &ScenarioSpec) -> u64 {
    (u64::from(spec.total_ranges()) + 3).max(8) * seam_model::RANGE_2M
}

/// `run.watchdog` of generated scenarios whose steps are all short (DPAMT get/put, walkers,
/// KVM faults and zaps, spins): a tenth of the default, ample for the longest of them (a get
/// behind seven others' PAMT.ADDs, with stalls, is under 0.2 ms), and it makes a run that
/// livelocks end ten times sooner.
pub const QUICK_WATCHDOG: &str = "2ms";

/// Whether the spec has steps that legitimately run for milliseconds (hotplug, an update, TD
/// creation), which keep the default watchdog.
fn has_slow_steps(spec: &ScenarioSpec) -> bool {
    spec.tasks
        .iter()
        .flat_map(|task| &task.ops)
        .any(|op| matches!(op, Op::Hotplug { .. } | Op::Update | Op::TdCreate))
}

/// The spec as a scenario file.
pub fn to_toml(spec: &ScenarioSpec, document: &Document<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "name = {}", quoted(&document.name));
    if !document.about.is_empty() {
        let _ = writeln!(out, "about = {}", quoted(&document.about));
    }
    let (mut machine, module, mut host, mut run) = match document.template {
        Some(template) => (
            template.table("machine"),
            template.table("module"),
            template.table("host"),
            template.table("run"),
        ),
        None => Default::default(),
    };
    if document.template.is_none() {
        machine.insert("cpus".to_string(), toml::Value::Integer(i64::from(spec.cpus)));
        if spec.possible_cpus > spec.cpus {
            machine.insert("possible_cpus".to_string(), toml::Value::Integer(i64::from(spec.possible_cpus)));
        }
        let megabytes = memory_bytes(spec) / (1 << 20);
        machine.insert("memory".to_string(), toml::Value::String(format!("{megabytes}M")));
    }
    // Designs as a user writes them: today's defaults only where a template said so.
    let designs = [
        ("dpamt", spec.designs.dpamt.name(), false),
        ("enable", spec.designs.enable.name(), spec.designs.enable == Default::default()),
        ("update", spec.designs.update.name(), spec.designs.update == Default::default()),
    ];
    for (key, name, is_default) in designs {
        if !is_default || host.contains_key(key) {
            host.insert(key.to_string(), toml::Value::String(name.to_string()));
        }
    }
    write_table(&mut out, "machine", &machine);
    write_table(&mut out, "module", &module);
    write_table(&mut out, "host", &host);
    let pages = named_pages(spec);
    if !pages.is_empty() {
        let _ = writeln!(out, "\n[pages]");
        for page in &pages {
            let _ = writeln!(out, "{} = \"{:#x}\"", page.name(), page.address());
        }
    }
    let mut creates = 0;
    for (index, task) in spec.tasks.iter().enumerate() {
        write_task(&mut out, index, task, &mut creates);
    }
    if document.template.is_none() && !has_slow_steps(spec) {
        run.insert("watchdog".to_string(), toml::Value::String(QUICK_WATCHDOG.to_string()));
    }
    for (key, value) in &document.run {
        run.insert(key.clone(), value.clone());
    }
    write_table(&mut out, "run", &run);
    if !document.expect.is_empty() {
        let expect: toml::Table = document.expect.iter().cloned().collect();
        write_table(&mut out, "expect", &expect);
    }
    out
}

fn write_task(out: &mut String, index: usize, task: &TaskSpec, creates: &mut usize) {
    let _ = writeln!(out, "\n[[task]]\ncpu = {index}");
    if task.start_ns > 0 {
        let _ = writeln!(out, "start = \"{}ns\"", task.start_ns);
    }
    if task.repeat > 1 {
        let _ = writeln!(out, "repeat = {}", task.repeat);
    }
    let td = ScenarioSpec::task_td(index);
    let steps: Vec<String> = task.ops.iter().flat_map(|op| op_steps(op, td, creates)).collect();
    let _ = writeln!(out, "steps = [\n  {},\n]", steps.join(",\n  "));
}

fn pair_text(pair: &[PageRef; 2]) -> String {
    format!("[{}, {}]", quoted(&pair[0].name()), quoted(&pair[1].name()))
}

fn op_steps(op: &Op, td: u32, creates: &mut usize) -> Vec<String> {
    match op {
        Op::Get { page, pair: Some(pair) } => {
            vec![format!(
                "{{ call = \"tdx_pamt_get\", page = {}, pair = {} }}",
                quoted(&page.name()),
                pair_text(pair)
            )]
        }
        Op::Get { page, pair: None } => {
            vec![format!("{{ call = \"tdx_pamt_get\", page = {} }}", quoted(&page.name()))]
        }
        Op::Put { page } => vec![format!("{{ call = \"tdx_pamt_put\", page = {} }}", quoted(&page.name()))],
        Op::Walker { range, pair } => {
            let base = quoted(&PageRef::new(*range, 0).name());
            vec![
                format!(
                    "{{ call = \"seamcall\", leaf = \"TDH.PHYMEM.PAMT.ADD\", hpa = {base}, pair = {} }}",
                    pair_text(pair)
                ),
                format!("{{ call = \"seamcall\", leaf = \"TDH.PHYMEM.PAMT.REMOVE\", hpa = {base} }}"),
            ]
        }
        Op::Fault { slot, page } => vec![format!(
            "{{ call = \"tdp_fault\", td = {td}, gpa = \"{:#x}\", page = {} }}",
            u64::from(*slot) * seam_model::PAGE_SIZE,
            quoted(&page.name())
        )],
        Op::Zap { slot } => {
            vec![format!(
                "{{ call = \"zap\", td = {td}, gpa = \"{:#x}\" }}",
                u64::from(*slot) * seam_model::PAGE_SIZE
            )]
        }
        Op::Hotplug { target } => vec![
            format!("{{ call = \"cpu_down\", target = {target} }}"),
            format!("{{ call = \"cpu_up\", target = {target} }}"),
        ],
        Op::Update => vec!["{ call = \"seamldr_install_module\" }".to_string()],
        Op::TdCreate => {
            let td = ScenarioSpec::created_td(*creates);
            *creates += 1;
            vec![format!("{{ call = \"td_create\", td = {td} }}")]
        }
        Op::Spin { ns } => vec![format!("{{ call = \"spin\", for = \"{ns}ns\" }}")],
    }
}

#[cfg(test)]
mod tests {
    use host_model::DpamtDesign;

    use super::*;
    use crate::spec::WalkerMode;

    #[test]
    fn yan_zhao_ab_ba_prints_as_a_user_would_write_it() {
        let spec = ScenarioSpec {
            designs: Designs::dpamt(DpamtDesign::Per2mRwlock),
            cpus: 2,
            possible_cpus: 2,
            ranges: 2,
            walker_ranges: 0,
            walkers: WalkerMode::Bracketed,
            tasks: vec![
                TaskSpec {
                    start_ns: 0,
                    repeat: 1,
                    ops: vec![Op::Get {
                        page: PageRef::new(0, 0),
                        pair: Some([PageRef::new(1, 0), PageRef::new(1, 1)]),
                    }],
                },
                TaskSpec {
                    start_ns: 0,
                    repeat: 1,
                    ops: vec![Op::Get {
                        page: PageRef::new(1, 2),
                        pair: Some([PageRef::new(0, 1), PageRef::new(0, 2)]),
                    }],
                },
            ],
        };
        let document = Document {
            name: "fuzz: AB-BA".to_string(),
            expect: vec![("outcome".to_string(), toml::Value::String("deadlock".to_string()))],
            ..Document::default()
        };
        let text = to_toml(&spec, &document);
        assert_eq!(
            text,
            r#"name = "fuzz: AB-BA"

[machine]
cpus = 2
memory = "16M"

[host]
dpamt = "per-2m-rwlock"

[pages]
A1 = "0x200000"
A2 = "0x201000"
A3 = "0x202000"
B1 = "0x400000"
B2 = "0x401000"
B3 = "0x402000"

[[task]]
cpu = 0
steps = [
  { call = "tdx_pamt_get", page = "A1", pair = ["B1", "B2"] },
]

[[task]]
cpu = 1
steps = [
  { call = "tdx_pamt_get", page = "B3", pair = ["A2", "A3"] },
]

[run]
watchdog = "2ms"

[expect]
outcome = "deadlock"
"#
        );
    }
}
