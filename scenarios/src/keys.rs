//! Every key the loader accepts, table by table, and the largest value of every size.
//!
//! One list for three readers: the loader refuses any key not named here, `tdxsim list keys`
//! prints it, and `tests/docs.rs` fails when docs/scenarios.md leaves one out. A new key goes
//! in here first (and in its table's section of docs/scenarios.md), never as a string literal
//! in `load.rs`.

use seam_model::Leaf;

/// Top-level keys and tables.
pub const TOP: &[&str] =
    &["name", "about", "machine", "module", "host", "pages", "task", "workload", "run", "expect"];
/// `[machine]`.
pub const MACHINE: &[&str] = &["cpus", "possible_cpus", "memory", "ghz", "packages"];
/// `[module]`.
pub const MODULE: &[&str] = &[
    "dpamt",
    "host_priority",
    "jitter",
    "costs",
    "initialized",
    "seamret_erratum",
    "compat_sensitive",
    "leaf_locks",
];
/// `[host]`.
pub const HOST: &[&str] = &["dpamt", "sept_busy", "update", "enable", "hint_aug_retries", "sept_retries"];
/// `[[task]]`.
pub const TASK: &[&str] = &["cpu", "start", "repeat", "steps"];
/// Keys every step takes, whatever its call.
pub const STEP: &[&str] = &["call", "at", "returns"];
/// `[[workload]]` (each kind takes a subset; docs/scenarios.md says which).
pub const WORKLOAD: &[&str] = &[
    "kind",
    "tds",
    "first_td",
    "vcpus_per_td",
    "memory_per_td",
    "initial_memory",
    "memory_touched",
    "fault_rate",
    "locality",
    "rounds",
    "start",
    "first_cpu",
    "cpus",
    "zap_size",
    "zap_interval",
    "zap",
    "coalesce_faults",
];
/// `[run]`.
pub const RUN: &[&str] = &[
    "runs",
    "seed",
    "strategy",
    "pct_depth",
    "exhaustive_bound",
    "max_time",
    "watchdog",
    "max_stall",
    "hung_task",
    "max_events",
];
/// `[expect]`.
pub const EXPECT: &[&str] = &["outcome", "what", "within_runs", "metrics"];

/// The arguments of each call a step may name, besides [`STEP`]. `seamcall` takes `leaf` and
/// then the operands [`raw_operands`] gives for that leaf.
pub const CALL_ARGUMENTS: &[(&str, &[&str])] = &[
    ("seamcall", &["leaf", "hpa", "pair", "td", "gpa", "page"]),
    ("tdx_pamt_get", &["page", "pair"]),
    ("tdx_pamt_put", &["page", "pair"]),
    ("tdx_cpu_enable", &[]),
    ("tdx_enable", &[]),
    ("cpu_up", &["target"]),
    ("cpu_down", &["target"]),
    ("seamldr_install_module", &["fail_step"]),
    ("td_create", &["td", "vcpus", "build", "init_vcpus", "finalize"]),
    ("vcpu_init", &["td", "vcpu"]),
    ("init_mem_region", &["td", "vcpu", "gpa", "count", "page"]),
    ("td_finalize", &["td"]),
    ("vcpu_run", &["td", "vcpu", "gpa", "count", "accept", "interval", "rounds", "hostile", "for"]),
    ("guest_accept", &["td", "vcpu", "gpa", "count", "interval", "hostile", "for"]),
    ("memslot_delete", &["td", "gpa", "count"]),
    ("td_destroy", &["td"]),
    ("tdp_fault", &["td", "gpa", "count", "page"]),
    ("zap", &["td", "gpa", "count"]),
    ("sleep", &["for"]),
    ("spin", &["for"]),
];

/// The arguments of `call` (see [`CALL_ARGUMENTS`]), or `None` for a call this version does not run.
pub fn call_arguments(call: &str) -> Option<&'static [&'static str]> {
    CALL_ARGUMENTS.iter().find(|(name, _)| *name == call).map(|(_, arguments)| *arguments)
}

/// The operands a raw `seamcall` step takes for `leaf`, or `None` if a raw step cannot
/// issue it (SYS.RD reads `module_hv`; leaves the model runs only inside host algorithms).
pub fn raw_operands(leaf: Leaf) -> Option<&'static [&'static str]> {
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

/// Every key as a dotted path, in document order, as `tdxsim list keys` prints it. Tables
/// whose keys are names the file chooses are shown with a placeholder: `pages.<name>`,
/// `module.costs.<leaf>`, `expect.metrics.<metric>_max`. Step keys are `step.<key>` and
/// `step.<call>.<argument>`.
pub fn all() -> Vec<String> {
    let mut keys = Vec::new();
    let mut table = |table: &str, names: &[&str]| {
        for name in names {
            keys.push(if table.is_empty() { (*name).to_owned() } else { format!("{table}.{name}") });
        }
    };
    table("", &["name", "about"]);
    table("machine", MACHINE);
    table("module", MODULE);
    table("module.costs", &["<leaf>"]);
    table("host", HOST);
    table("pages", &["<name>"]);
    table("task", TASK);
    table("step", STEP);
    for (call, arguments) in CALL_ARGUMENTS {
        table(&format!("step.{call}"), arguments);
    }
    table("workload", WORKLOAD);
    table("run", RUN);
    table("expect", EXPECT);
    table("expect.metrics", &["<metric>_max", "<metric>_min"]);
    keys
}

/// Maximums of what a file can write, checked at load time; docs/scenarios.md "Limits"
/// lists them from [`limits`].
pub mod max {
    /// `machine.cpus`, `machine.possible_cpus`.
    pub const CPUS: u64 = 4096;
    /// `td_create`'s `vcpus`.
    pub const VCPUS: u64 = 256;
    /// `machine.memory`: the PAMT model keeps about 0.7 byte per 4K page and 56 bytes per 2M
    /// range, allocated anew for each run, so 1T reserves about 200 MB per run in flight (the
    /// OS backs only what a run touches: a 1T run of one step peaks at 20 MB). The module
    /// model itself takes up to `seam_model::MAX_MEMORY_BYTES`.
    pub const MEMORY_BYTES: u64 = 1 << 40;
    const _: () = assert!(MEMORY_BYTES <= seam_model::MAX_MEMORY_BYTES);
    /// `machine.ghz`, both ends: below 0.1 the defaults of microseconds round to few cycles;
    /// above 10 no CPU runs.
    pub const GHZ_MIN: f64 = 0.1;
    pub const GHZ: f64 = 10.0;
    /// Every time in a file (`start`, `at`, `for`, `build`, `run.max_time`, `run.watchdog`,
    /// `run.max_stall`, `module.costs`), in nanoseconds of simulated time: one hour.
    pub const TIME_NS: u64 = 3_600_000_000_000;
    /// `run.runs`.
    pub const RUNS: u64 = 10_000_000;
    /// `run.pct_depth`: PCT's bug depth; published uses stay below 10.
    pub const PCT_DEPTH: u64 = 100;
    /// `run.exhaustive_bound`.
    pub const EXHAUSTIVE_BOUND: u64 = 64;
    /// `run.max_events`: about twenty minutes of one core at today's engine speed.
    pub const EVENTS: u64 = 10_000_000_000;
    /// `[[task]]` `repeat`.
    pub const REPEAT: u64 = 1_000_000;
    /// `[[workload]]` tables in one file.
    pub const WORKLOADS: u64 = 64;
    /// `workload.tds`: TDs of one workload (the module's PAMT owner slots go to 65535).
    pub const WORKLOAD_TDS: u64 = 1024;
    /// Threads all workloads of a file spawn (a VMM thread per TD, a thread per vCPU, a
    /// host thread per storm TD): each is a task of a few hundred bytes.
    pub const WORKLOAD_THREADS: u64 = 1 << 18;
    /// `workload.rounds`.
    pub const ROUNDS: u64 = 1_000_000;
    /// `workload.fault_rate`, per second of simulated time: one fault a nanosecond.
    pub const RATE_PER_SECOND: f64 = 1e9;
    /// Bytes of a scenario file.
    pub const SCENARIO_BYTES: u64 = 1 << 20;
    /// Bytes of a repro bundle (the scenario text and one decision per choice of the run).
    pub const BUNDLE_BYTES: u64 = 1 << 30;
}

/// (what, maximum as docs/scenarios.md writes it), for the document's "Limits" table.
pub fn limits() -> Vec<(&'static str, String)> {
    let time = format!("{}s", max::TIME_NS / 1_000_000_000);
    vec![
        ("machine.cpus", max::CPUS.to_string()),
        ("machine.possible_cpus", max::CPUS.to_string()),
        ("machine.packages", "machine.possible_cpus".to_owned()),
        ("machine.memory", format!("{}T", max::MEMORY_BYTES >> 40)),
        ("machine.ghz", format!("{} (at least {})", max::GHZ, max::GHZ_MIN)),
        ("module.jitter", "0.5".to_owned()),
        ("module.costs.<leaf>", time.clone()),
        ("task.start", time.clone()),
        ("task.repeat", max::REPEAT.to_string()),
        ("step.at", time.clone()),
        ("step.sleep.for", time.clone()),
        ("step.spin.for", time.clone()),
        ("step.td_create.build", time.clone()),
        ("step.td_create.vcpus", max::VCPUS.to_string()),
        (
            "step.vcpu_run.vcpu",
            format!("{} (below td_create's vcpus for a TD a step builds)", max::VCPUS - 1),
        ),
        ("step.vcpu_run.count", "machine.memory / 4K".to_owned()),
        ("step.vcpu_run.interval", time.clone()),
        ("step.vcpu_run.rounds", max::REPEAT.to_string()),
        ("step.vcpu_run.for", time.clone()),
        ("step.guest_accept.count", "machine.memory / 4K".to_owned()),
        ("step.guest_accept.for", time.clone()),
        ("step.init_mem_region.count", "machine.memory / 4K".to_owned()),
        ("step.memslot_delete.count", "machine.memory / 4K".to_owned()),
        ("step.tdp_fault.count", "machine.memory / 4K".to_owned()),
        ("step.zap.count", "machine.memory / 4K".to_owned()),
        ("workload tables", format!("{} in a file", max::WORKLOADS)),
        ("workload.tds", max::WORKLOAD_TDS.to_string()),
        ("workload.vcpus_per_td", max::VCPUS.to_string()),
        ("workload.memory_per_td", format!("{}T", max::MEMORY_BYTES >> 40)),
        ("workload.initial_memory", "workload.memory_per_td".to_owned()),
        ("workload.memory_touched", "workload.memory_per_td - workload.initial_memory".to_owned()),
        ("workload.fault_rate", format!("{} per second", max::RATE_PER_SECOND)),
        ("workload.rounds", max::ROUNDS.to_string()),
        ("workload.start", time.clone()),
        ("workload.zap_size", "workload.memory_touched".to_owned()),
        ("workload.zap_interval", time.clone()),
        ("workload threads", format!("{} in a file", max::WORKLOAD_THREADS)),
        ("workload memory", "machine.memory".to_owned()),
        ("host.hint_aug_retries", crate::schema::HINT_AUG_RETRIES_MAX.to_string()),
        ("host.sept_retries", crate::schema::SEPT_RETRIES_MAX.to_string()),
        ("run.runs", max::RUNS.to_string()),
        ("run.pct_depth", max::PCT_DEPTH.to_string()),
        ("run.exhaustive_bound", max::EXHAUSTIVE_BOUND.to_string()),
        ("run.max_time", time.clone()),
        ("run.watchdog", "run.max_time".to_owned()),
        ("run.max_stall", "run.max_time".to_owned()),
        ("run.hung_task", "run.max_time".to_owned()),
        ("run.max_events", max::EVENTS.to_string()),
        ("expect.within_runs", "run.runs".to_owned()),
        ("scenario file", format!("{} bytes", max::SCENARIO_BYTES)),
        ("repro bundle", format!("{} bytes", max::BUNDLE_BYTES)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_operands_are_seamcall_arguments() {
        let arguments = call_arguments("seamcall").unwrap();
        for leaf in Leaf::ALL {
            for operand in raw_operands(*leaf).unwrap_or(&[]) {
                assert!(arguments.contains(operand), "{leaf:?} {operand}");
            }
        }
    }

    #[test]
    fn every_call_has_its_arguments_and_every_limit_names_a_key() {
        for (name, _, _) in crate::schema::CALLS {
            assert!(call_arguments(name).is_some(), "{name}");
        }
        let keys = all();
        for (what, _) in limits() {
            assert!(keys.iter().any(|key| key == what) || what.contains(' '), "{what}");
        }
    }
}
