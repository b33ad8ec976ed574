//! The loader's contract (docs/scenarios.md "Bad input"): every malformed file is
//! refused before any run with `FILE:LINE:COL: KEY: expected …, found …`, and no input
//! panics. One test per class of error, asserting the whole message.

use scenarios::error::ErrorKind;
use scenarios::schema::{Bound, Call, EnableDesign, FailStep, Strategy, UpdateDesign};
use scenarios::{load_file, load_str};
use seam_model::{Gpa, Hpa, Leaf, LeafCall, TdId};
use sim_core::{Cycle, OutcomeKind};

/// The message for `text`, which must not load.
fn error(text: &str) -> String {
    match load_str("x.toml", text) {
        Ok(scenario) => panic!("loaded, expected an error: {scenario:?}"),
        Err(error) => error.to_string(),
    }
}

/// One task on CPU 0, for files that test something else (a file needs a task to load).
const TASK: &str = "\n[[task]]\ncpu = 0\nsteps = [{ call = \"sleep\", for = \"1us\" }]\n";

/// A valid file of one task on CPU 0, with `extra` appended (so it can add tables).
fn with(extra: &str) -> String {
    format!("name = \"t\"\n[[task]]\ncpu = 0\nsteps = [{{ call = \"sleep\", for = \"1us\" }}]\n{extra}")
}

/// A file whose only task runs `step` (line 9, after `steps = [` so its `{` is column
/// 10), with two CPUs, 8M of memory and one named page, A1.
fn step(step: &str) -> String {
    let head = "name = \"t\"\n[machine]\ncpus = 2\nmemory = \"8M\"\n[pages]\nA1 = \"0x200000\"\n";
    format!("{head}[[task]]\ncpu = 0\nsteps = [{step}]\n")
}

// The example the original SCENARIOS.md gave, minus [[workload]] (not available in this version).
const EXAMPLE: &str = r#"name = "dpamt: AB-BA between per-2MB rwlocks (cpus=2)"      # required
about = "Yan Zhao, Dynamic PAMT v3 thread, 2025-09-28"      # where it comes from

[machine]
cpus = 2              # online at start; 1..=4096
possible_cpus = 4     # CPUs that hotplug may bring online later; default = cpus
memory = "64M"        # TDX-usable memory (one TDMR from 0), a multiple of 2M
ghz = 2.0             # clock used to convert time units; default 2.0

[module]
dpamt = true
host_priority = true
jitter = 0.10
[module.costs]
"TDH.PHYMEM.PAMT.ADD" = 12000
"TDH.PHYMEM.PAMT.REMOVE" = "5us"

[host]
dpamt = "per-2m-rwlock"
sept_busy = "kick-and-block"
update = "stop-machine"
enable = "boot-cpuhp"

[pages]
A1 = "0x200000"
A2 = "0x201000"
B1 = "0x400000"
B2 = 0x401000

[[task]]
cpu = 0
start = "0us"
steps = [
  { call = "tdx_pamt_get", page = "A1", pair = ["B1", "0x600000"] },
]

[[task]]
cpu = 1
repeat = 3
steps = [
  { call = "tdx_pamt_get", page = "B2", pair = ["A2", "0x601000"], at = "2us" },
  { call = "tdx_pamt_put", page = 0x401000 },
  { call = "seamcall", leaf = "TDH.PHYMEM.PAMT.ADD", hpa = "A1", pair = ["B1", "B2"] },
  { call = "seamcall", leaf = "TDH.MEM.PAGE.AUG", td = 1, gpa = "0x1000", page = "A2" },
  { call = "seamcall", leaf = "TDH_MEM_TRACK", td = 1 },
  { call = "tdp_fault", td = 1, gpa = 0x10000, count = 4, page = "0x800000" },
  { call = "zap", td = 1, gpa = "0x10000" },
  { call = "spin", for = 100 },
  { call = "sleep", for = "1ms" },
]

[run]
runs = 1000                  # runs `tdxsim check` explores; default 100
seed = 0                     # run i uses seed + i
strategy = "random"          # random | pct | exhaustive
pct_depth = 3
max_time = "1s"              # simulated time per run; past it: outcome `limit`
watchdog = "20ms"            # no progress for this long: outcome `livelock`
max_stall = "50us"           # longest interrupt/preemption the chooser may inject

[expect]
outcome = "deadlock"         # required when [expect] is present
what = "rw[A]"               # optional: a substring the finding must contain
within_runs = 200            # optional: found within this many runs
[expect.metrics]             # optional bounds over all runs
seamcall_busy_max = 0
status_hpa_range_not_free_min = 1
"#;

#[test]
fn the_documented_example_loads_with_units_converted() {
    let scenario = load_str("example.toml", EXAMPLE).unwrap();
    assert_eq!(scenario.path, "example.toml");
    assert_eq!(scenario.text, EXAMPLE);
    assert_eq!(scenario.name, "dpamt: AB-BA between per-2MB rwlocks (cpus=2)");
    assert_eq!(scenario.about.as_deref(), Some("Yan Zhao, Dynamic PAMT v3 thread, 2025-09-28"));
    assert_eq!((scenario.machine.cpus, scenario.machine.possible_cpus), (2, 4));
    assert_eq!(scenario.machine.memory_bytes, 67_108_864);
    assert_eq!(scenario.machine.ghz, 2.0);
    assert_eq!(scenario.module.costs[&Leaf::PhymemPamtAdd], 12_000);
    assert_eq!(scenario.module.costs[&Leaf::PhymemPamtRemove], 10_000);
    assert_eq!(scenario.module.costs[&Leaf::MemPageAug], Leaf::MemPageAug.default_cost_cycles());
    assert_eq!(scenario.module.costs.len(), Leaf::ALL.len());
    assert_eq!(scenario.host.dpamt.name(), "per-2m-rwlock");
    let pages: Vec<(&str, u64)> = scenario.pages.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(pages, [("A1", 0x20_0000), ("A2", 0x20_1000), ("B1", 0x40_0000), ("B2", 0x40_1000)]);

    assert_eq!(scenario.tasks.len(), 2);
    let first = &scenario.tasks[0];
    assert_eq!((first.cpu, first.start, first.repeat, first.line), (0, Cycle(0), 1, 30));
    assert_eq!(first.steps[0].call, Call::TdxPamtGet { page: 0x20_0000, pair: Some([0x40_0000, 0x60_0000]) });
    assert_eq!((first.steps[0].line, first.steps[0].column), (34, 3));
    let second = &scenario.tasks[1];
    assert_eq!((second.cpu, second.repeat), (1, 3));
    let calls: Vec<&Call> = second.steps.iter().map(|step| &step.call).collect();
    assert_eq!(
        calls,
        [
            &Call::TdxPamtGet { page: 0x40_1000, pair: Some([0x20_1000, 0x60_1000]) },
            &Call::TdxPamtPut { page: 0x40_1000, pair: None },
            &Call::Seamcall(LeafCall::PamtAdd {
                hpa: Hpa(0x20_0000),
                pair: [Hpa(0x40_0000), Hpa(0x40_1000)]
            }),
            &Call::Seamcall(LeafCall::PageAug { td: TdId(1), gpa: Gpa(0x1000), page: Hpa(0x20_1000) }),
            &Call::Seamcall(LeafCall::Track { td: TdId(1) }),
            &Call::TdpFault { td: 1, gpa: 0x10000, count: 4, page: Some(0x80_0000) },
            &Call::Zap { td: 1, gpa: 0x10000, count: 1 },
            &Call::Spin { cycles: 100 },
            &Call::Sleep { cycles: 2_000_000 },
        ]
    );
    assert_eq!(second.steps[0].at, Some(Cycle(4_000)));
    assert_eq!(second.steps[1].at, None);

    let run = &scenario.run;
    assert_eq!((run.runs, run.seed, run.strategy, run.pct_depth), (1000, 0, Strategy::Random, 3));
    assert_eq!(run.max_time, Cycle(2_000_000_000));
    assert_eq!(run.watchdog, Cycle(40_000_000));
    assert_eq!(run.max_stall, Cycle(100_000));

    let expect = scenario.expect.as_ref().unwrap();
    assert_eq!(expect.outcome, OutcomeKind::Deadlock);
    assert_eq!(expect.what.as_deref(), Some("rw[A]"));
    assert_eq!(expect.within_runs, Some(200));
    let metrics: Vec<(&str, Bound, u64, usize)> =
        expect.metrics.iter().map(|m| (m.metric.as_str(), m.bound, m.value, m.line)).collect();
    assert_eq!(
        metrics,
        [("seamcall_busy", Bound::Max, 0, 66), ("status_hpa_range_not_free", Bound::Min, 1, 67)]
    );
}

#[test]
fn defaults_fill_everything_optional() {
    let scenario = load_str("x.toml", &format!("name = \"minimal\"{TASK}")).unwrap();
    assert_eq!((scenario.machine.cpus, scenario.machine.possible_cpus), (1, 1));
    assert_eq!(scenario.machine.memory_bytes, 64 << 20);
    // The calibration's clock (docs/model.md "Clock").
    assert_eq!(scenario.machine.ghz, 2.2);
    assert!(scenario.module.dpamt && scenario.module.host_priority);
    assert_eq!(scenario.machine.packages, 1);
    // A file without the keys means what it meant before them: TDX enabled at boot, a
    // module with AVOID_COMPAT_SENSITIVE, no SEAMRET erratum.
    assert!(scenario.module.initialized && scenario.module.compat_sensitive);
    assert!(!scenario.module.seamret_erratum);
    assert_eq!(scenario.module.jitter, 0.10);
    assert_eq!(scenario.module.costs[&Leaf::PhymemPamtAdd], 12_000);
    assert_eq!(scenario.host.dpamt.name(), "dec-and-lock");
    assert_eq!(
        (scenario.host.sept_busy.name(), scenario.host.update, scenario.host.enable),
        ("kick-and-block", UpdateDesign::StopMachine, EnableDesign::BootCpuhp)
    );
    assert!(scenario.pages.is_empty() && scenario.expect.is_none());
    assert_eq!((scenario.tasks[0].start, scenario.tasks[0].repeat), (Cycle(0), 1));
    assert_eq!(scenario.run.max_events, scenarios::schema::MAX_EVENTS_DEFAULT);
    let run = &scenario.run;
    assert_eq!((run.runs, run.seed, run.pct_depth), (100, 0, 3));
    assert_eq!(
        (run.max_time, run.watchdog, run.max_stall),
        (Cycle(2_200_000_000), Cycle(44_000_000), Cycle(110_000))
    );
}

#[test]
fn times_use_machine_ghz() {
    let text = "name = \"t\"\n[machine]\nghz = 3\n[run]\nmax_time = \"1ms\"\nwatchdog = \"1.5us\"\n";
    let scenario = load_str("x.toml", &format!("{text}{TASK}")).unwrap();
    assert_eq!(scenario.run.max_time, Cycle(3_000_000));
    assert_eq!(scenario.run.watchdog, Cycle(4_500));
    assert_eq!(scenario.run.max_stall, Cycle(150_000));
}

// ---- unknown keys ----

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        error("name = \"t\"\nnmae = \"u\"\n"),
        "x.toml:2:1: nmae: expected one of the keys name, about, machine, module, host, pages, task, workload, run, expect, found nmae"
    );
}

#[test]
fn unknown_key_in_a_table() {
    assert_eq!(
        error("name = \"t\"\n[machine]\ncpus = 2\ncpu_count = 2\n"),
        "x.toml:4:1: machine.cpu_count: expected one of the keys cpus, possible_cpus, memory, ghz, packages, found cpu_count"
    );
    assert_eq!(
        error(&with("[run]\nstrategy = \"random\"\nseeds = 3\n")),
        "x.toml:7:1: run.seeds: expected one of the keys runs, seed, strategy, pct_depth, exhaustive_bound, max_time, watchdog, max_stall, hung_task, max_events, found seeds"
    );
}

#[test]
fn unknown_key_in_a_task_and_a_step() {
    assert_eq!(
        error("name = \"t\"\n[[task]]\ncpu = 0\npriority = 1\nsteps = []\n"),
        "x.toml:4:1: task[0].priority: expected one of the keys cpu, start, repeat, steps, found priority"
    );
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_get\", pge = \"A1\" }")),
        "x.toml:9:35: task[0].steps[0].pge: expected one of the keys call, page, pair, at, returns, found pge"
    );
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_put\", page = \"A1\", count = 2 }")),
        "x.toml:9:48: task[0].steps[0].count: expected one of the keys call, page, pair, at, returns, found count"
    );
}

// ---- wrong types ----

#[test]
fn wrong_type() {
    assert_eq!(
        error("name = \"t\"\n[machine]\ncpus = \"two\"\n"),
        "x.toml:3:8: machine.cpus: expected an integer 1..=4096, found \"two\""
    );
    assert_eq!(error("name = 3\n"), "x.toml:1:8: name: expected a non-empty string, found 3");
    assert_eq!(
        error("name = \"t\"\nmachine = 3\n"),
        "x.toml:2:11: machine: expected a table with keys cpus, possible_cpus, memory, ghz, packages, found 3"
    );
    assert_eq!(
        error("name = \"t\"\n[module]\ndpamt = \"yes\"\n"),
        "x.toml:3:9: module.dpamt: expected true or false, found \"yes\""
    );
    assert_eq!(
        error("name = \"t\"\n[task]\ncpu = 0\n"),
        "x.toml:2:1: task: expected [[task]] tables, found [task]"
    );
    assert_eq!(
        error("name = \"t\"\n[[task]]\ncpu = 0\nsteps = \"sleep\"\n"),
        "x.toml:4:9: task[0].steps: expected a non-empty array of steps like [{ call = \"sleep\", for = \"1us\" }], found \"sleep\""
    );
    assert_eq!(
        error(&step("[\"sleep\"]")),
        "x.toml:9:10: task[0].steps[0]: expected a step: an inline table like { call = \"sleep\", for = \"1us\" }, found [\"sleep\"]"
    );
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_get\", page = \"A1\", pair = \"A1\" }")),
        "x.toml:9:55: task[0].steps[0].pair: expected two pages, like [\"B1\", \"0x600000\"], found \"A1\""
    );
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_get\", page = [[\"A1\"]] }")),
        "x.toml:9:42: task[0].steps[0].page: expected a page: a name from [pages] (A1) or an address like \"0x200000\", found [[\"A1\"]]"
    );
}

// ---- machine.packages, module.initialized / seamret_erratum / compat_sensitive ----

#[test]
fn machine_packages() {
    let machine = |lines: &str| format!("name = \"t\"\n[machine]\n{lines}\n{TASK}");
    let scenario = load_str("x.toml", &machine("cpus = 2\npossible_cpus = 6\npackages = 4")).unwrap();
    assert_eq!((scenario.machine.possible_cpus, scenario.machine.packages), (6, 4));
    // Need not divide possible_cpus; may equal it.
    assert_eq!(load_str("x.toml", &machine("cpus = 3\npackages = 2")).unwrap().machine.packages, 2);
    assert_eq!(load_str("x.toml", &machine("cpus = 3\npackages = 3")).unwrap().machine.packages, 3);
    assert_eq!(
        error(&machine("cpus = 2\npossible_cpus = 4\npackages = 5")),
        "x.toml:5:12: machine.packages: expected an integer 1..=4 (at most machine.possible_cpus), found 5"
    );
    assert_eq!(
        error(&machine("packages = 0")),
        "x.toml:3:12: machine.packages: expected an integer 1..=1 (at most machine.possible_cpus), found 0"
    );
    assert_eq!(
        error(&machine("cpus = 4\npackages = \"2\"")),
        "x.toml:4:12: machine.packages: expected an integer 1..=4 (at most machine.possible_cpus), found \"2\""
    );
}

#[test]
fn module_initialized_seamret_erratum_compat_sensitive() {
    let module = |lines: &str| format!("name = \"t\"\n[module]\n{lines}\n{TASK}");
    let scenario =
        load_str("x.toml", &module("initialized = false\nseamret_erratum = true\ncompat_sensitive = false"))
            .unwrap();
    assert!(!scenario.module.initialized);
    assert!(scenario.module.seamret_erratum);
    assert!(!scenario.module.compat_sensitive);
    let scenario = load_str("x.toml", &module("initialized = true\ncompat_sensitive = true")).unwrap();
    assert!(scenario.module.initialized && scenario.module.compat_sensitive);
    assert_eq!(
        error(&module("initialized = \"no\"")),
        "x.toml:3:15: module.initialized: expected true or false, found \"no\""
    );
    assert_eq!(
        error(&module("seamret_erratum = 1")),
        "x.toml:3:19: module.seamret_erratum: expected true or false, found 1"
    );
    assert_eq!(
        error(&module("compat_sensitive = \"true\"")),
        "x.toml:3:20: module.compat_sensitive: expected true or false, found \"true\""
    );
    assert_eq!(
        error(&module("initialised = false")),
        "x.toml:3:1: module.initialised: expected one of the keys dpamt, host_priority, jitter, costs, initialized, seamret_erratum, compat_sensitive, leaf_locks, found initialised"
    );
}

// ---- out-of-range numbers ----

#[test]
fn out_of_range_numbers() {
    let machine = |line: &str| error(&format!("name = \"t\"\n[machine]\n{line}\n"));
    assert_eq!(machine("cpus = 0"), "x.toml:3:8: machine.cpus: expected an integer 1..=4096, found 0");
    assert_eq!(machine("cpus = 4097"), "x.toml:3:8: machine.cpus: expected an integer 1..=4096, found 4097");
    assert_eq!(machine("cpus = -1"), "x.toml:3:8: machine.cpus: expected an integer 1..=4096, found -1");
    assert_eq!(machine("cpus = 2.0"), "x.toml:3:8: machine.cpus: expected an integer 1..=4096, found 2.0");
    assert_eq!(
        machine("cpus = 99999999999999999999999"),
        "x.toml:3:8: machine.cpus: expected an integer 1..=4096, found 99999999999999999999999"
    );
    assert_eq!(
        machine("cpus = 4\npossible_cpus = 2"),
        "x.toml:4:17: machine.possible_cpus: expected an integer 4..=4096, found 2"
    );
    let ghz = "expected a clock rate in GHz, 0.1..=10 (times in the file are converted with it)";
    assert_eq!(machine("ghz = 0.0"), format!("x.toml:3:7: machine.ghz: {ghz}, found 0.0"));
    assert_eq!(machine("ghz = nan"), format!("x.toml:3:7: machine.ghz: {ghz}, found nan"));
    // Out of range blames ghz itself, not the first time it would make overflow.
    assert_eq!(
        machine("ghz = 1e300\n[run]\nmax_time = \"1s\""),
        format!("x.toml:3:7: machine.ghz: {ghz}, found 1e300")
    );
    assert_eq!(machine("ghz = 0.01"), format!("x.toml:3:7: machine.ghz: {ghz}, found 0.01"));
    assert_eq!(
        error("name = \"t\"\n[module]\njitter = 0.6\n"),
        "x.toml:3:10: module.jitter: expected a number 0.0..=0.5, found 0.6"
    );
    assert_eq!(
        error("name = \"t\"\n[run]\nruns = 0\n"),
        "x.toml:3:8: run.runs: expected an integer 1..=10000000, found 0"
    );
    assert_eq!(
        error("name = \"t\"\n[run]\nseed = -3\n"),
        "x.toml:3:8: run.seed: expected a non-negative integer, found -3"
    );
    assert_eq!(
        error("name = \"t\"\n[[task]]\ncpu = 0\nrepeat = 0\nsteps = []\n"),
        "x.toml:4:10: task[0].repeat: expected an integer 1..=1000000, found 0"
    );
    assert_eq!(
        error(&with("[run]\nruns = 10\n[expect]\noutcome = \"pass\"\nwithin_runs = 11\n")),
        "x.toml:9:15: expect.within_runs: expected an integer 1..=10 (at most run.runs), found 11"
    );
    assert_eq!(
        error(&step("{ call = \"zap\", td = 1, gpa = 0, count = 0 }")),
        "x.toml:9:51: task[0].steps[0].count: expected an integer 1..=2048 (at most the 4K pages of machine.memory), found 0"
    );
}

// ---- missing required keys ----

#[test]
fn missing_required_keys() {
    assert_eq!(error(""), "x.toml:1:1: name: expected a string (required), found nothing");
    assert_eq!(
        error("name = \"t\"\n[[task]]\nsteps = []\n"),
        "x.toml:2:1: task[0].cpu: expected an integer (the task's CPU, required), found nothing"
    );
    assert_eq!(
        error("name = \"t\"\n[[task]]\ncpu = 0\n"),
        "x.toml:2:1: task[0].steps: expected an array of steps (required), found nothing"
    );
    assert_eq!(
        error(&step("{ page = \"A1\" }")),
        "x.toml:9:10: task[0].steps[0].call: expected a call name (seamcall, tdx_pamt_get, tdx_pamt_put, tdx_cpu_enable, tdx_enable, cpu_up, cpu_down, seamldr_install_module, td_create, vcpu_init, init_mem_region, td_finalize, vcpu_run, guest_accept, memslot_delete, td_destroy, tdp_fault, zap, sleep, spin), found nothing"
    );
    assert_eq!(
        error(&with("[expect]\nwhat = \"x\"\n")),
        "x.toml:5:1: expect.outcome: expected one of pass | deadlock | livelock | hung | lock-order | invariant | warn | limit (required in [expect]), found nothing"
    );
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_get\" }")),
        "x.toml:9:10: task[0].steps[0].page: expected a page: a name from [pages] or an address (required), found nothing"
    );
    assert_eq!(
        error(&step("{ call = \"sleep\" }")),
        "x.toml:9:10: task[0].steps[0].for: expected a time (required), found nothing"
    );
    assert_eq!(
        error(&step("{ call = \"seamcall\", leaf = \"TDH.PHYMEM.PAMT.ADD\", hpa = \"A1\" }")),
        "x.toml:9:10: task[0].steps[0].pair: expected two pages (required), found nothing"
    );
    assert_eq!(
        error(&step("{ call = \"tdp_fault\", td = 1 }")),
        "x.toml:9:10: task[0].steps[0].gpa: expected a guest physical address (required), found nothing"
    );
    assert_eq!(
        error(&step("{ call = \"name\" }").replace("name = \"t\"\n", "about = \"no name\"\n")),
        "x.toml:1:1: name: expected a string (required), found nothing"
    );
}

#[test]
fn empty_name_and_empty_steps() {
    assert_eq!(error("name = \"  \"\n"), "x.toml:1:8: name: expected a non-empty string, found \"  \"");
    assert_eq!(
        error("name = \"t\"\n[[task]]\ncpu = 0\nsteps = []\n"),
        "x.toml:4:9: task[0].steps: expected a non-empty array of steps like [{ call = \"sleep\", for = \"1us\" }], found []"
    );
}

// ---- pages ----

#[test]
fn page_outside_memory_or_misaligned() {
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_put\", page = \"0x800000\" }")),
        "x.toml:9:42: task[0].steps[0].page: expected an address inside machine.memory (below 0x800000), found \"0x800000\""
    );
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_put\", page = 0x200800 }")),
        "x.toml:9:42: task[0].steps[0].page: expected a 4K-aligned address, found 0x200800"
    );
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_get\", page = \"A1\", pair = [\"A1\", 8388608] }")),
        "x.toml:9:62: task[0].steps[0].pair[1]: expected an address inside machine.memory (below 0x800000), found 8388608"
    );
    assert_eq!(
        error(&step("{ call = \"seamcall\", leaf = \"TDH.PHYMEM.PAGE.WBINVD\", page = -4096 }")),
        "x.toml:9:71: task[0].steps[0].page: expected a non-negative integer, found -4096"
    );
    // The last of `count` pages must fit too.
    assert_eq!(
        error(&step("{ call = \"tdp_fault\", td = 1, gpa = 0, count = 2, page = \"0x7ff000\" }")),
        "x.toml:9:67: task[0].steps[0].page: expected an address with 2 pages inside machine.memory (below 0x800000), found \"0x7ff000\""
    );
    // Checked where [pages] names them.
    assert_eq!(
        error("name = \"t\"\n[machine]\nmemory = \"2M\"\n[pages]\nA1 = \"0x200000\"\n"),
        "x.toml:5:6: pages.A1: expected an address inside machine.memory (below 0x200000), found \"0x200000\""
    );
    assert_eq!(
        error("name = \"t\"\n[pages]\nA1 = \"0x1\"\n"),
        "x.toml:3:6: pages.A1: expected a 4K-aligned address, found \"0x1\""
    );
    assert_eq!(
        error("name = \"t\"\n[pages]\nA1 = \"two megs\"\n"),
        "x.toml:3:6: pages.A1: expected an address: an integer or a string like \"0x200000\", found \"two megs\""
    );
}

#[test]
fn page_name_not_in_pages() {
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_get\", page = \"A2\" }")),
        "x.toml:9:42: task[0].steps[0].page: expected a page: a name from [pages] (A1) or an address like \"0x200000\", found \"A2\""
    );
}

#[test]
fn gpa_must_be_aligned() {
    assert_eq!(
        error(&step("{ call = \"zap\", td = 1, gpa = \"0x1001\" }")),
        "x.toml:9:40: task[0].steps[0].gpa: expected a 4K-aligned guest physical address, found \"0x1001\""
    );
}

// ---- CPUs ----

#[test]
fn task_cpu_beyond_possible_cpus() {
    assert_eq!(
        error("name = \"t\"\n[machine]\ncpus = 2\npossible_cpus = 4\n[[task]]\ncpu = 4\nsteps = []\n"),
        "x.toml:6:7: task[0].cpu: expected an integer 0..=3 (below machine.possible_cpus), found 4"
    );
    assert_eq!(
        error("name = \"t\"\n[[task]]\ncpu = -1\nsteps = []\n"),
        "x.toml:3:7: task[0].cpu: expected an integer 0..=0 (below machine.possible_cpus), found -1"
    );
}

#[test]
fn task_on_a_cpu_offline_at_start_loads() {
    // CPUs cpus..possible_cpus are offline at start; their tasks start once cpu_up brings
    // them online.
    let text = "name = \"t\"\n[machine]\ncpus = 2\npossible_cpus = 4\n[[task]]\ncpu = 3\nstart = 10\nsteps = [{ call = \"spin\", for = 1 }]\n";
    let up = "[[task]]\ncpu = 0\nsteps = [{ call = \"cpu_up\", target = 3 }]\n";
    let scenario = load_str("x.toml", &format!("{text}{up}")).unwrap();
    assert_eq!((scenario.machine.cpus, scenario.tasks[0].cpu, scenario.tasks[0].start), (2, 3, Cycle(10)));
    // Without a cpu_up of CPU 3 the task would never run.
    assert_eq!(
        error(text),
        "x.toml:6:7: task[0].cpu: expected a CPU online at start (0..=1) or one a cpu_up step brings online; CPU 3 never is, found 3"
    );
}

#[test]
fn a_file_with_no_tasks_is_refused_after_its_other_mistakes() {
    assert_eq!(
        error("name = \"t\"\n"),
        "x.toml:1:1: task: expected at least one [[task]] or [[workload]] (a file with neither has nothing to run), found nothing"
    );
    assert_eq!(
        error("name = \"t\"\ntask = []\n"),
        "x.toml:2:8: task: expected at least one [[task]] or [[workload]] (a file with neither has nothing to run), found []"
    );
    assert_eq!(
        error("name = \"t\"\n[run]\nruns = 0\n"),
        "x.toml:3:8: run.runs: expected an integer 1..=10000000, found 0"
    );
}

// ---- unknown values ----

#[test]
fn unknown_designs() {
    assert_eq!(
        error("name = \"t\"\n[host]\ndpamt = \"per-4k-rwlock\"\n"),
        "x.toml:3:9: host.dpamt: expected one of hint | global-lock-fastpath | global-lock | dec-and-lock | per-2m-rwlock | per-2m-rwlock-pfn-order | global-rwlock-fallback, found \"per-4k-rwlock\""
    );
    assert_eq!(
        error("name = \"t\"\n[host]\nsept_busy = \"retry\"\n"),
        "x.toml:3:13: host.sept_busy: expected one of kick-and-block | blind-retry | no-invalid-memslot-exit | no-td-state-guard, found \"retry\""
    );
    assert_eq!(
        error("name = \"t\"\n[host]\nupdate = \"stop_machine\"\n"),
        "x.toml:3:10: host.update: expected one of stop-machine | stop-machine-no-abort | no-stop-machine | nested-cpus-read-lock | update-rwsem, found \"stop_machine\""
    );
    assert_eq!(
        error("name = \"t\"\n[host]\nenable = true\n"),
        "x.toml:3:10: host.enable: expected one of boot-cpuhp | kvm-hardware-enable | cpuhp-unlocked-usage | lp-init-without-vmxon | cpus-read-lock-vt-init, found true"
    );
}

#[test]
fn every_update_and_enable_design_loads_by_name() {
    for design in UpdateDesign::ALL {
        let text = format!("name = \"t\"\n[host]\nupdate = \"{}\"\n{TASK}", design.name());
        assert_eq!(load_str("x.toml", &text).unwrap().host.update, *design);
        assert_eq!(UpdateDesign::from_name(design.name()), Some(*design));
        assert!(!design.source().is_empty());
    }
    for design in EnableDesign::ALL {
        let text = format!("name = \"t\"\n[host]\nenable = \"{}\"\n{TASK}", design.name());
        assert_eq!(load_str("x.toml", &text).unwrap().host.enable, *design);
        assert_eq!(EnableDesign::from_name(design.name()), Some(*design));
        assert!(!design.source().is_empty());
    }
    // The first of each list is the default, as the original example wrote it.
    assert_eq!(UpdateDesign::ALL[0], UpdateDesign::default());
    assert_eq!(EnableDesign::ALL[0], EnableDesign::default());
    let scenario = load_str(
        "x.toml",
        &format!(
            "name = \"t\"\n[host]\nupdate = \"update-rwsem\"\nenable = \"lp-init-without-vmxon\"\n{TASK}"
        ),
    )
    .unwrap();
    assert_eq!(
        (scenario.host.update, scenario.host.enable),
        (UpdateDesign::UpdateRwsem, EnableDesign::LpInitWithoutVmxon)
    );
    assert_eq!(
        error("name = \"t\"\n[host]\nupdate = 6\n"),
        "x.toml:3:10: host.update: expected one of stop-machine | stop-machine-no-abort | no-stop-machine | nested-cpus-read-lock | update-rwsem, found 6"
    );
}

#[test]
fn unknown_strategy_and_the_ones_that_exist() {
    assert_eq!(
        error("name = \"t\"\n[run]\nstrategy = \"dfs\"\n"),
        "x.toml:3:12: run.strategy: expected one of random | pct | exhaustive | coverage, found \"dfs\""
    );
    let coverage = load_str("x.toml", "name = \"t\"\n[[task]]\ncpu = 0\nsteps = [{ call = \"spin\", for = 10 }]\n[run]\nstrategy = \"coverage\"\n").unwrap();
    assert_eq!(coverage.run.strategy, Strategy::Coverage);
    let pct = load_str("x.toml", "name = \"t\"\n[[task]]\ncpu = 0\nsteps = [{ call = \"spin\", for = 10 }]\n[run]\nstrategy = \"pct\"\npct_depth = 4\n").unwrap();
    assert_eq!((pct.run.strategy, pct.run.pct_depth), (Strategy::Pct, 4));
    let exhaustive = load_str("x.toml", "name = \"t\"\n[[task]]\ncpu = 0\nsteps = [{ call = \"spin\", for = 10 }]\n[run]\nstrategy = \"exhaustive\"\nexhaustive_bound = 3\n").unwrap();
    assert_eq!((exhaustive.run.strategy, exhaustive.run.exhaustive_bound), (Strategy::Exhaustive, 3));
    assert_eq!(
        error("name = \"t\"\n[run]\nexhaustive_bound = -1\n"),
        "x.toml:3:20: run.exhaustive_bound: expected an integer 0..=64, found -1"
    );
}

#[test]
fn unknown_or_unexpectable_outcome() {
    let expected =
        "expected one of pass | deadlock | livelock | hung | lock-order | invariant | warn | limit";
    assert_eq!(
        error("name = \"t\"\n[expect]\noutcome = \"hang\"\n"),
        format!("x.toml:3:11: expect.outcome: {expected}, found \"hang\"")
    );
    // `error` is a simulator bug: never expected (docs/scenarios.md "Outcomes").
    assert_eq!(
        error("name = \"t\"\n[expect]\noutcome = \"error\"\n"),
        format!("x.toml:3:11: expect.outcome: {expected}, found \"error\"")
    );
}

#[test]
fn unknown_metric() {
    assert_eq!(
        error("name = \"t\"\n[expect]\noutcome = \"pass\"\n[expect.metrics]\nbusy_max = 0\n"),
        format!(
            "x.toml:5:1: expect.metrics.busy_max: expected {}, found busy_max",
            scenarios::metrics::expected_metric()
        )
    );
    assert!(scenarios::metrics::expected_metric().contains("lock_wait_p99_cycles, "));
    // A qualified name must name a real leaf (and operand); a lock may be any name.
    assert_eq!(
        error(
            "name = \"t\"\n[expect]\noutcome = \"pass\"\n[expect.metrics]\n\"seamcall_busy[TDH.NOPE]_max\" = 0\n"
        ),
        format!(
            "x.toml:5:1: expect.metrics.seamcall_busy[TDH.NOPE]_max: expected {}, found \"seamcall_busy[TDH.NOPE]_max\"",
            scenarios::metrics::expected_metric()
        )
    );
    let ok = "name = \"t\"\n[[task]]\ncpu = 0\nsteps = [{ call = \"spin\", for = 10 }]\n[expect]\noutcome = \"pass\"\n[expect.metrics]\n\"lock_contended[rw[A]]_max\" = 0\n\"seamcall_busy[TDH.MEM.PAGE.AUG|SEPT]_min\" = 1\n";
    let scenario = scenarios::load_str("x.toml", ok).unwrap();
    let names: Vec<&str> =
        scenario.expect.as_ref().unwrap().metrics.iter().map(|m| m.metric.as_str()).collect();
    assert_eq!(names, ["lock_contended[rw[A]]", "seamcall_busy[TDH.MEM.PAGE.AUG|SEPT]"]);
    assert_eq!(
        error("name = \"t\"\n[expect]\noutcome = \"pass\"\n[expect.metrics]\nseamcalls_max = -1\n"),
        "x.toml:5:17: expect.metrics.seamcalls_max: expected a non-negative integer, found -1"
    );
}

// ---- sizes and times ----

#[test]
fn sizes_and_times_that_do_not_parse() {
    let expected_memory = "expected a size that is a positive multiple of 2M, at most 1T, like \"64M\"";
    assert_eq!(
        error("name = \"t\"\n[machine]\nmemory = \"64 MB\"\n"),
        format!("x.toml:3:10: machine.memory: {expected_memory}, found \"64 MB\"")
    );
    assert_eq!(
        error("name = \"t\"\n[machine]\nmemory = \"3M\"\n"),
        format!("x.toml:3:10: machine.memory: {expected_memory}, found \"3M\"")
    );
    assert_eq!(
        error("name = \"t\"\n[machine]\nmemory = 0\n"),
        format!("x.toml:3:10: machine.memory: {expected_memory}, found 0")
    );
    assert_eq!(
        error("name = \"t\"\n[machine]\nmemory = \"32T\"\n"),
        format!("x.toml:3:10: machine.memory: {expected_memory}, found \"32T\"")
    );
    let expected_time = "expected a time: an integer of cycles or a string like \"50us\" (ns, us, ms, s)";
    assert_eq!(
        error("name = \"t\"\n[run]\nwatchdog = \"20 ms\"\n"),
        format!("x.toml:3:12: run.watchdog: {expected_time}, found \"20 ms\"")
    );
    assert_eq!(
        error("name = \"t\"\n[run]\nmax_time = 1.5\n"),
        format!("x.toml:3:12: run.max_time: {expected_time}, found 1.5")
    );
    assert_eq!(
        error("name = \"t\"\n[run]\nmax_time = \"0s\"\n"),
        "x.toml:3:12: run.max_time: expected a time of at least 1 cycle (\"0s\" is 0 cycles at 2.2 GHz), found \"0s\""
    );
    // A clock slow enough that a written time rounds to no cycles says so.
    assert_eq!(
        error("name = \"t\"\n[machine]\nghz = 0.1\n[run]\nwatchdog = \"1ns\"\n"),
        "x.toml:5:12: run.watchdog: expected a time of at least 1 cycle (\"1ns\" is 0 cycles at 0.1 GHz), found \"1ns\""
    );
    assert_eq!(
        error(&step("{ call = \"spin\", for = \"5 minutes\" }")),
        format!("x.toml:9:33: task[0].steps[0].for: {expected_time}, found \"5 minutes\"")
    );
    assert_eq!(
        error(&step("{ call = \"spin\", for = 10, at = \"soon\" }")),
        format!("x.toml:9:42: task[0].steps[0].at: {expected_time}, found \"soon\"")
    );
}

// ---- calls, leaves, costs, workloads ----

#[test]
fn unknown_call() {
    assert_eq!(
        error(&step("{ call = \"tdx_pamt_getx\", page = \"A1\" }")),
        "x.toml:9:19: task[0].steps[0].call: expected a known call (seamcall, tdx_pamt_get, tdx_pamt_put, tdx_cpu_enable, tdx_enable, cpu_up, cpu_down, seamldr_install_module, td_create, vcpu_init, init_mem_region, td_finalize, vcpu_run, guest_accept, memslot_delete, td_destroy, tdp_fault, zap, sleep, spin), found \"tdx_pamt_getx\""
    );
}

#[test]
fn kvm_calls_load_with_their_defaults() {
    let guest = |gpa, pages, accept, hostile| host_model::guest::GuestProgram {
        gpa,
        pages,
        accept,
        interval_cycles: 0,
        rounds: 1,
        hostile,
    };
    assert_eq!(
        call("{ call = \"vcpu_run\", td = 1 }"),
        Call::VcpuRun {
            td: 1,
            vcpu: 0,
            guest: guest(0, 0, true, false),
            run_cycles: None,
            accept_step: false
        }
    );
    assert_eq!(
        call("{ call = \"guest_accept\", td = 1, vcpu = 3, gpa = \"0x1000\", hostile = true, for = 2200 }"),
        Call::VcpuRun {
            td: 1,
            vcpu: 3,
            guest: guest(0x1000, 1, true, true),
            run_cycles: Some(2200),
            accept_step: true
        }
    );
    assert_eq!(
        call("{ call = \"memslot_delete\", td = 1, gpa = \"0x200000\", count = 512 }"),
        Call::MemslotDelete { td: 1, gpa: 0x200000, count: 512 }
    );
    assert_eq!(call("{ call = \"td_destroy\", td = 4 }"), Call::TdDestroy { td: 4 });
}

#[test]
fn kvm_calls_refuse_what_could_never_run() {
    assert_eq!(
        error(&step("{ call = \"vcpu_run\", td = 1, count = 1, hostile = true }")),
        "x.toml:9:60: task[0].steps[0].hostile: expected with hostile = true, a `for` (a hostile guest never stops on its own) and count >= 1, found true"
    );
    assert_eq!(
        error(&step("{ call = \"vcpu_init\", td = 1 }")),
        "x.toml:9:37: task[0].steps[0].td: expected a TD a td_create step builds (TD 1 exists from the start, built and runnable), found 1"
    );
    let two = "{ call = \"td_create\", td = 1, vcpus = 2 }, { call = \"vcpu_run\", td = 1, vcpu = 2 }";
    assert_eq!(
        error(&step(two)),
        "x.toml:9:89: task[0].steps[1].vcpu: expected a vCPU below the vcpus (2) of the td_create step of TD 1, found 2"
    );
    let overlap = "{ call = \"memslot_delete\", td = 1, gpa = 0, count = 4 }, { call = \"memslot_delete\", td = 1, gpa = \"0x1000\", count = 4 }";
    assert_eq!(
        error(&step(overlap)),
        "x.toml:9:108: task[0].steps[1].gpa: expected a memslot that another memslot_delete of the TD names the same or not at all (memslots do not overlap), found \"0x1000\""
    );
    assert_eq!(
        error(
            &step("{ call = \"host\" }")
                .replace("name = \"t\"\n", "name = \"t\"\n[host]\nsept_busy = \"k9\"\n")
        ),
        "x.toml:3:13: host.sept_busy: expected one of kick-and-block | blind-retry | no-invalid-memslot-exit | no-td-state-guard, found \"k9\""
    );
}

/// The call of `step(text)`'s only step, which must load.
fn call(text: &str) -> Call {
    let scenario = load_str("x.toml", &step(text)).unwrap();
    scenario.tasks[0].steps[0].call.clone()
}

#[test]
fn tdx_enable_and_tdx_cpu_enable_take_no_arguments() {
    assert_eq!(call("{ call = \"tdx_enable\" }"), Call::TdxEnable);
    assert_eq!(call("{ call = \"tdx_cpu_enable\", at = \"1us\" }"), Call::TdxCpuEnable);
    assert_eq!(Call::TdxEnable.name(), "tdx_enable");
    assert_eq!(Call::TdxCpuEnable.name(), "tdx_cpu_enable");
    assert_eq!(
        error(&step("{ call = \"tdx_enable\", target = 1 }")),
        "x.toml:9:33: task[0].steps[0].target: expected one of the keys call, at, returns, found target"
    );
    assert_eq!(
        error(&step("{ call = \"tdx_cpu_enable\", cpu = 1 }")),
        "x.toml:9:37: task[0].steps[0].cpu: expected one of the keys call, at, returns, found cpu"
    );
}

#[test]
fn cpu_up_and_cpu_down_take_a_possible_cpu() {
    // step(): cpus = 2, so possible_cpus = 2.
    assert_eq!(call("{ call = \"cpu_up\", target = 1 }"), Call::CpuUp { target: 1 });
    assert_eq!(call("{ call = \"cpu_down\", target = 0 }"), Call::CpuDown { target: 0 });
    // A CPU offline at start is a target, and its task loads too.
    let text = "name = \"t\"\n[machine]\ncpus = 2\npossible_cpus = 4\n[[task]]\ncpu = 0\nsteps = [{ call = \"cpu_up\", target = 3 }]\n[[task]]\ncpu = 3\nsteps = [{ call = \"cpu_down\", target = 3 }]\n";
    let scenario = load_str("x.toml", text).unwrap();
    assert_eq!(scenario.tasks[0].steps[0].call, Call::CpuUp { target: 3 });
    assert_eq!(scenario.tasks[1].steps[0].call, Call::CpuDown { target: 3 });
    assert_eq!(
        error(&step("{ call = \"cpu_up\" }")),
        "x.toml:9:10: task[0].steps[0].target: expected a CPU 0..=1 (below machine.possible_cpus, required), found nothing"
    );
    assert_eq!(
        error(&step("{ call = \"cpu_down\", target = 2 }")),
        "x.toml:9:40: task[0].steps[0].target: expected an integer 0..=1 (below machine.possible_cpus), found 2"
    );
    assert_eq!(
        error(&step("{ call = \"cpu_up\", target = -1 }")),
        "x.toml:9:38: task[0].steps[0].target: expected an integer 0..=1 (below machine.possible_cpus), found -1"
    );
    assert_eq!(
        error(&step("{ call = \"cpu_up\", target = \"1\" }")),
        "x.toml:9:38: task[0].steps[0].target: expected an integer 0..=1 (below machine.possible_cpus), found \"1\""
    );
    assert_eq!(
        error(&step("{ call = \"cpu_up\", cpu = 1 }")),
        "x.toml:9:29: task[0].steps[0].cpu: expected one of the keys call, target, at, returns, found cpu"
    );
}

#[test]
fn seamldr_install_module_takes_an_optional_fail_step() {
    assert_eq!(call("{ call = \"seamldr_install_module\" }"), Call::SeamldrInstallModule { fail_step: None });
    for step_name in ["SHUTDOWN", "CPU_INSTALL", "CPU_INIT", "RUN_UPDATE"] {
        let loaded = call(&format!("{{ call = \"seamldr_install_module\", fail_step = \"{step_name}\" }}"));
        let Call::SeamldrInstallModule { fail_step: Some(fail_step) } = loaded else { panic!("{loaded:?}") };
        assert_eq!(fail_step.name(), step_name);
        assert_eq!(FailStep::from_name(step_name), Some(fail_step));
    }
    assert_eq!(
        call("{ call = \"seamldr_install_module\", fail_step = \"CPU_INIT\" }"),
        Call::SeamldrInstallModule { fail_step: Some(FailStep::CpuInit) }
    );
    assert_eq!(
        error(&step("{ call = \"seamldr_install_module\", fail_step = \"INSTALL\" }")),
        "x.toml:9:57: task[0].steps[0].fail_step: expected one of SHUTDOWN | CPU_INSTALL | CPU_INIT | RUN_UPDATE, found \"INSTALL\""
    );
    assert_eq!(
        error(&step("{ call = \"seamldr_install_module\", fail_step = \"shutdown\" }")),
        "x.toml:9:57: task[0].steps[0].fail_step: expected one of SHUTDOWN | CPU_INSTALL | CPU_INIT | RUN_UPDATE, found \"shutdown\""
    );
    assert_eq!(
        error(&step("{ call = \"seamldr_install_module\", fail_step = 1 }")),
        "x.toml:9:57: task[0].steps[0].fail_step: expected one of SHUTDOWN | CPU_INSTALL | CPU_INIT | RUN_UPDATE, found 1"
    );
}

#[test]
fn td_create() {
    assert_eq!(
        call("{ call = \"td_create\", td = 0 }"),
        Call::TdCreate { td: 0, vcpus: 1, build_cycles: 0, init_vcpus: true, finalize: true }
    );
    assert_eq!(
        call("{ call = \"td_create\", td = 2, vcpus = 256, build = \"1us\" }"),
        Call::TdCreate { td: 2, vcpus: 256, build_cycles: 2_200, init_vcpus: true, finalize: true }
    );
    assert_eq!(
        error(&step("{ call = \"td_create\", td = 1, vcpus = 0 }")),
        "x.toml:9:48: task[0].steps[0].vcpus: expected an integer 1..=256, found 0"
    );
    assert_eq!(
        error(&step("{ call = \"td_create\", td = 1, vcpus = 257 }")),
        "x.toml:9:48: task[0].steps[0].vcpus: expected an integer 1..=256, found 257"
    );
    assert_eq!(
        error(&step("{ call = \"td_create\", vcpus = 2 }")),
        "x.toml:9:10: task[0].steps[0].td: expected a TD number (required), found nothing"
    );
    assert_eq!(
        error(&step("{ call = \"td_create\", td = -1 }")),
        "x.toml:9:37: task[0].steps[0].td: expected an integer 0..=4294967295, found -1"
    );
}

#[test]
fn returns_names_what_the_call_can_return() {
    use scenarios::schema::Returns;
    let scenario =
        load_str("x.toml", &step("{ call = \"cpu_up\", target = 1, returns = \"-EBUSY\" }")).unwrap();
    assert_eq!(scenario.tasks[0].steps[0].returns, Some(Returns::Errno(Some(host_model::Errno::EBUSY))));
    assert_eq!(
        error(&step("{ call = \"cpu_up\", target = 1, returns = \"EBUSY\" }")),
        "x.toml:9:51: task[0].steps[0].returns: expected one of 0 | -EBUSY | -EINVAL | -EIO | -ENODEV | -EACCES, found \"EBUSY\""
    );
    // cpu_down() never returns -ENOMEM, and a host call does not return a status.
    assert_eq!(
        error(&step("{ call = \"cpu_down\", target = 1, returns = \"-ENOMEM\" }")),
        "x.toml:9:53: task[0].steps[0].returns: expected one of 0 | -EBUSY | -EINVAL, found \"-ENOMEM\""
    );
    assert!(
        error(&step("{ call = \"tdx_pamt_put\", page = \"0x200000\", returns = \"TDX_SUCCESS\" }"))
            .contains("task[0].steps[0].returns: expected one of 0, found \"TDX_SUCCESS\"")
    );
    // A raw SEAMCALL returns a status, named as the module names it.
    let raw = "{ call = \"seamcall\", leaf = \"TDH.PHYMEM.PAMT.REMOVE\", hpa = \"0x200000\", returns = \"TDX_NO_PAMT_PAGE_PAIR\" }";
    let scenario = load_str("x.toml", &step(raw)).unwrap();
    assert_eq!(
        scenario.tasks[0].steps[0].returns,
        Some(Returns::Status(seam_model::status::TDX_NO_PAMT_PAGE_PAIR))
    );
    let wrong = raw.replace("TDX_NO_PAMT_PAGE_PAIR", "-EBUSY");
    assert!(error(&step(&wrong)).contains("task[0].steps[0].returns: expected one of TDX_SUCCESS"));
}

#[test]
fn unknown_and_unmodelled_leaves() {
    let modelled = "TDH.MEM.PAGE.AUG, TDH.MEM.RANGE.BLOCK, TDH.MEM.PAGE.REMOVE, TDH.SYS.INIT, TDH.SYS.RD, TDH.SYS.LP.INIT, TDH.MEM.TRACK, TDH.PHYMEM.PAGE.WBINVD, TDH.PHYMEM.PAMT.ADD, TDH.PHYMEM.PAMT.REMOVE, SEAMLDR.INFO";
    assert_eq!(
        error(&step("{ call = \"seamcall\", leaf = \"TDH.PAMT.ADD\" }")),
        format!(
            "x.toml:9:38: task[0].steps[0].leaf: expected a SEAMCALL leaf name ({modelled}), found \"TDH.PAMT.ADD\""
        )
    );
    assert_eq!(
        error(&step("{ call = \"seamcall\", leaf = \"TDH.VP.ENTER\" }")),
        format!(
            "x.toml:9:38: task[0].steps[0].leaf: expected a leaf this version models ({modelled}), found \"TDH.VP.ENTER\""
        )
    );
    assert_eq!(
        error(&step("{ call = \"seamcall\", leaf = \"TDH.MEM.TRACK\", td = 1, gpa = 0 }")),
        "x.toml:9:63: task[0].steps[0].gpa: expected one of the keys call, leaf, td, at, returns, found gpa"
    );
}

#[test]
fn unknown_or_zero_cost() {
    assert_eq!(
        error("name = \"t\"\n[module.costs]\n\"TDH.PAMT.ADD\" = 5\n"),
        "x.toml:3:1: module.costs.TDH.PAMT.ADD: expected a leaf name (tdxsim list leaves), like \"TDH.PHYMEM.PAMT.ADD\", found \"TDH.PAMT.ADD\""
    );
    assert_eq!(
        error("name = \"t\"\n[module.costs]\n\"TDH.MEM.TRACK\" = 0\n"),
        "x.toml:3:19: module.costs.TDH.MEM.TRACK: expected a time of at least 1 cycle, found 0"
    );
}

// ---- syntax, bytes, I/O: positioned, never a panic ----

#[test]
fn toml_syntax_error_names_the_nearest_key() {
    assert_eq!(
        error("name = \"t\"\n[machine]\ncpus = two\n"),
        "x.toml:3:8: machine.cpus: expected valid TOML, found invalid boolean, expected `true`"
    );
    assert_eq!(
        error("name = \"t\"\nname = \"u\"\n"),
        "x.toml:2:1: name: expected valid TOML, found duplicate key"
    );
}

#[test]
fn truncated_toml_is_a_positioned_error() {
    let message = error("name = \"t\"\n[machine\n");
    assert!(message.starts_with("x.toml:2:"), "{message}");
    assert!(message.contains("expected valid TOML, found "), "{message}");
    // Every prefix of the example either loads or fails with a position inside the text.
    for end in (0..=EXAMPLE.len()).filter(|&end| EXAMPLE.is_char_boundary(end)) {
        assert_positioned(&EXAMPLE[..end]);
    }
}

#[test]
fn random_bytes_are_a_positioned_error() {
    // A fixed xorshift stream: deterministic, no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"[]{}=\"',.#\n \t-_0123456789abcxyzAB";
    for round in 0..2_000 {
        let len = (next() % 200) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                let byte = next() as u8;
                if round % 2 == 0 { byte } else { alphabet[byte as usize % alphabet.len()] }
            })
            .collect();
        assert_positioned(&String::from_utf8_lossy(&bytes));
    }
    // Mutations of a valid file: one byte of the example replaced.
    for _ in 0..2_000 {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        let at = next() as usize % bytes.len();
        bytes[at] = alphabet[next() as usize % alphabet.len()];
        assert_positioned(&String::from_utf8_lossy(&bytes));
    }
}

fn assert_positioned(text: &str) {
    if let Err(error) = load_str("x.toml", text) {
        let lines = text.lines().count() + 1;
        assert!((1..=lines).contains(&error.line), "{error} for {text:?}");
        assert!(error.column >= 1, "{error} for {text:?}");
        assert!(!error.expected.is_empty() && !error.found.is_empty(), "{error} for {text:?}");
    }
}

#[test]
fn files_that_are_not_utf8_or_not_there() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("load_errors_not_utf8.toml");
    std::fs::write(&path, b"name = \"t\"\nabout = \"\xff\"\n").unwrap();
    let error = load_file(&path).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Syntax);
    assert_eq!(
        error.to_string(),
        format!("{}:2:10: expected UTF-8 text, found the byte 0xff", path.display())
    );

    let path = dir.join("load_errors_missing.toml");
    let error = load_file(&path).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Io);
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}:1:1: expected a readable scenario file, found ", path.display())),
        "{error}"
    );

    let path = dir.join("load_errors_good.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let scenario = load_file(&path).unwrap();
    assert_eq!(scenario.path, path.display().to_string());
}

#[test]
fn hostile_inputs_are_positioned_errors() {
    let deep_array = format!("name = \"t\"\nsteps = {}\n", "[".repeat(10_000));
    let deep_table = format!("name = \"t\"\nx = {}\n", "{ a = ".repeat(10_000));
    let deep_steps =
        format!("name = \"t\"\n[[task]]\ncpu = 0\nsteps = [{}1{}]\n", "[".repeat(50), "]".repeat(50));
    let huge_time = "name = \"t\"\n[run]\nmax_time = \"99999999999999999999s\"\n".to_owned();
    let nul = "name = \"t\0\"\n".to_owned();
    for text in [deep_array, deep_table, deep_steps, huge_time, nul] {
        assert!(load_str("x.toml", &text).is_err());
        assert_positioned(&text);
    }
}

#[test]
fn the_style_guide_example_loads() {
    let text = r#"# library/dpamt/get-races-put.toml
name = "dpamt: get races put on one 2MB range (cpus=2)"
about = "DPAMT v3 thread, 2025-09-16: the pending-put race that HPA_RANGE_NOT_FREE covers"
[machine]
cpus = 2
memory = "8M"
[host]
dpamt = "global-lock-fastpath"
[[task]]
cpu = 0
steps = [{ call = "tdx_pamt_get", page = "0x200000" }, { call = "tdx_pamt_put", page = "0x200000" }]
[[task]]
cpu = 1
steps = [{ call = "tdx_pamt_get", page = "0x201000" }]
[expect]
outcome = "pass"
"#;
    let scenario = load_str("get-races-put.toml", text).unwrap();
    assert_eq!(scenario.tasks[0].steps[1].call, Call::TdxPamtPut { page: 0x20_0000, pair: None });
    assert_eq!(scenario.expect.unwrap().outcome, OutcomeKind::Pass);
}

#[test]
fn put_takes_the_optional_pair_scenarios_md_lists() {
    let scenario = load_str(
        "x.toml",
        &step("{ call = \"tdx_pamt_put\", page = \"A1\", pair = [\"0x400000\", \"0x401000\"] }"),
    )
    .unwrap();
    assert_eq!(
        scenario.tasks[0].steps[0].call,
        Call::TdxPamtPut { page: 0x20_0000, pair: Some([0x40_0000, 0x40_1000]) }
    );
}

// ---- maximums (docs/scenarios.md "Limits") and hostile text ----

#[test]
fn every_size_has_a_maximum_checked_with_its_position() {
    let machine = |lines: &str| error(&format!("name = \"t\"\n[machine]\n{lines}\n{TASK}"));
    let run = |lines: &str| error(&format!("name = \"t\"\n[run]\n{lines}\n{TASK}"));
    assert_eq!(
        machine("memory = \"16383T\""),
        "x.toml:3:10: machine.memory: expected a size that is a positive multiple of 2M, at most 1T, like \"64M\", found \"16383T\""
    );
    assert_eq!(
        run("runs = 18446744073709551615"),
        "x.toml:3:8: run.runs: expected an integer 1..=10000000, found 18446744073709551615"
    );
    assert_eq!(
        run("runs = 100000000"),
        "x.toml:3:8: run.runs: expected an integer 1..=10000000, found 100000000"
    );
    assert_eq!(
        run("pct_depth = 4294967295"),
        "x.toml:3:13: run.pct_depth: expected an integer 1..=100, found 4294967295"
    );
    assert_eq!(
        run("max_events = 0"),
        "x.toml:3:14: run.max_events: expected an integer 1..=10000000000, found 0"
    );
    assert_eq!(
        run("max_time = \"2h\""),
        "x.toml:3:12: run.max_time: expected a time: an integer of cycles or a string like \"50us\" (ns, us, ms, s), found \"2h\""
    );
    assert_eq!(
        run("max_time = \"3601s\""),
        "x.toml:3:12: run.max_time: expected a time: an integer of cycles or a string like \"50us\" (ns, us, ms, s), at most 3600s (7920000000000 cycles at 2.2 GHz), found \"3601s\""
    );
    assert_eq!(
        run("max_time = \"1ms\"\nwatchdog = \"20ms\""),
        "x.toml:4:12: run.watchdog: expected a time at most run.max_time (2200000 cycles): the watchdog could never fire, found \"20ms\""
    );
    assert_eq!(
        run("max_time = \"10us\"\nmax_stall = \"50us\""),
        "x.toml:4:13: run.max_stall: expected a time at most run.max_time (22000 cycles): a stall that long could not end inside the run, found \"50us\""
    );
    // The defaults need not fit a short max_time: only what the file writes is held to it.
    let short =
        load_str("x.toml", &format!("name = \"t\"\n[run]\nmax_time = \"1ms\"\nmax_events = 5000\n{TASK}"))
            .unwrap();
    assert_eq!((short.run.max_time, short.run.max_events), (Cycle(2_200_000), 5000));
    assert_eq!(
        error(&step("{ call = \"tdp_fault\", td = 1, gpa = 0, count = 4294967295 }")),
        "x.toml:9:57: task[0].steps[0].count: expected an integer 1..=2048 (at most the 4K pages of machine.memory), found 4294967295"
    );
    assert_eq!(
        error(&step("{ call = \"sleep\", for = \"3601s\" }")),
        "x.toml:9:34: task[0].steps[0].for: expected a time: an integer of cycles or a string like \"50us\" (ns, us, ms, s), at most 3600s (7920000000000 cycles at 2.2 GHz), found \"3601s\""
    );
    assert_eq!(
        error(
            "name = \"t\"\n[[task]]\ncpu = 0\nrepeat = 4294967295\nsteps = [{ call = \"sleep\", for = 1 }]\n"
        ),
        "x.toml:4:10: task[0].repeat: expected an integer 1..=1000000, found 4294967295"
    );
}

#[test]
fn hostile_text_gets_a_short_escaped_positioned_message() {
    // A dotted key deeper than toml's parser goes: toml gives no position, the loader finds it.
    let deep = format!("name = \"t\"\n[machine]\n{} = 1\n", vec!["a"; 300].join("."));
    let message = error(&deep);
    assert!(message.starts_with("x.toml:3:1: a.a.a."), "{message}");
    assert!(
        message.ends_with(": expected a key of fewer than 80 dotted parts, found 300 parts"),
        "{message}"
    );
    let header = format!("name = \"t\"\n[{}]\n", vec!["b"; 100].join("."));
    assert!(error(&header).starts_with("x.toml:2:2: b.b."), "{}", error(&header));
    // A 1 MB unknown key is cut in the message.
    let long = format!("name = \"t\"\n[machine]\n{} = 1\n", "k".repeat(1 << 20));
    let message = error(&long);
    assert!(message.len() < 400, "{} bytes", message.len());
    assert!(message.starts_with("x.toml:3:1: machine.kkkk"), "{}", &message[..80]);
    // Control characters and ANSI escapes in names print escaped.
    let ansi = "name = \"t\"\n[pages]\n\"\\u001b[31mA\" = \"0x1001\"\n";
    assert_eq!(
        error(ansi),
        "x.toml:3:17: pages.\\u{1b}[31mA: expected a 4K-aligned address, found \"0x1001\""
    );
}
