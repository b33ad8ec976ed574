//! The typed, validated scenario: what `load` returns once every check of
//! docs/scenarios.md has passed. Units are converted (bytes, cycles), page names
//! resolved to addresses, defaults filled in; nothing here needs checking again.

use std::collections::BTreeMap;

use host_model::Errno;
use host_model::tdx::dpamt::DpamtDesign;
use indexmap::IndexMap;
use seam_model::{Leaf, LeafCall, TdxStatus};
use sim_core::{Clock, Cycle, OutcomeKind};

/// One scenario file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The path as the caller named it.
    pub path: String,
    /// The exact file text; repro bundles embed it.
    pub text: String,
    pub name: String,
    pub about: Option<String>,
    pub machine: Machine,
    pub module: ModuleCfg,
    pub host: HostCfg,
    /// Page name -> 4K-aligned address inside `machine.memory`, in file order.
    pub pages: IndexMap<String, u64>,
    pub tasks: Vec<Task>,
    /// `[[workload]]`s, in file order.
    pub workloads: Vec<Workload>,
    pub run: RunCfg,
    pub expect: Option<Expect>,
}

impl Scenario {
    /// The clock every time in the file was converted with.
    pub fn clock(&self) -> Clock {
        Clock { ghz: self.machine.ghz }
    }
}

/// `[machine]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// CPUs online at start, 1..=4096 (default 1).
    pub cpus: u32,
    /// invariant: cpus <= possible_cpus <= 4096 (default = cpus).
    pub possible_cpus: u32,
    /// `machine.packages`: physical packages (sockets) the possible CPUs are spread over, for
    /// what is per package (SYS.KEY.CONFIG, refusing to offline a package's last CPU while a
    /// HKID is allocated); invariant: 1..=possible_cpus (default 1). It need not divide
    /// possible_cpus.
    pub packages: u32,
    /// `machine.memory`: one TDMR from 0; invariant: a positive multiple of 2M, at most
    /// `keys::max::MEMORY_BYTES` (default 64M).
    pub memory_bytes: u64,
    /// Clock rate used to convert time units; invariant: finite and > 0 (default 2.0).
    pub ghz: f64,
}

/// `[module]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleCfg {
    /// Dynamic PAMT (default true).
    pub dpamt: bool,
    /// Host-priority try-locks (default true; older modules: false).
    pub host_priority: bool,
    /// Each cost varies by up to +-jitter; invariant: 0.0..=0.5 (default 0.10).
    pub jitter: f64,
    /// invariant: every `Leaf` is a key; each cost >= 1 cycle.
    pub costs: BTreeMap<Leaf, u64>,
    /// `module.initialized`: TDX was enabled at boot on every online CPU (SYS.INIT, LP.INIT,
    /// SYS.CONFIG, KEY.CONFIG, TDMR.INIT done; default true, what every file before this key
    /// meant). false: the module is loaded but not initialised, as before `tdx_enable()`.
    pub initialized: bool,
    /// `module.seamret_erratum`: the CPU has the SEAMRET erratum (SEAMRET clears the VMCS
    /// when IA32_VMX_BASIC bit 60 is clear), so the kernel offers no runtime update
    /// (host-algorithms.md §2.1.1, §5.1; default false).
    pub seamret_erratum: bool,
    /// `module.compat_sensitive`: the module supports TDH.SYS.SHUTDOWN's AVOID_COMPAT_SENSITIVE
    /// (bit 16): a shutdown during a compatibility-sensitive operation fails with
    /// TDX_UPDATE_COMPAT_SENSITIVE instead of going ahead (default true; false: an older module).
    pub compat_sensitive: bool,
    /// `module.leaf_locks`: a leaf's try-locks are separate attempts a try-lock cost apart
    /// (`interleaved`, the default, what the hardware does) or one atomic set (`atomic`).
    pub leaf_locks: seam_model::LeafLocks,
}

/// `[host]`: one design per algorithm.
#[derive(Clone, Debug, PartialEq)]
pub struct HostCfg {
    pub dpamt: DpamtDesign,
    /// `host.sept_busy`: KVM's S-EPT SEAMCALL retry policy, by kernel (default
    /// `kick-and-block`, today's).
    pub sept_busy: SeptBusyDesign,
    /// `host.sept_retries`: under `blind-retry`, how many times one BUSY S-EPT SEAMCALL is
    /// retried in place (default [`SEPT_RETRIES_DEFAULT`]; invariant: <= SEPT_RETRIES_MAX).
    pub sept_retries: u32,
    /// `host.update`: how `seamldr_install_module` runs a runtime update (default `stop-machine`).
    pub update: UpdateDesign,
    /// `host.enable`: how TDX is enabled and how CPU hotplug keeps CPUs TDX-capable
    /// (default `boot-cpuhp`).
    pub enable: EnableDesign,
    /// `host.hint_aug_retries`: with `host.dpamt = "hint"`, how many times one fault may see
    /// PAGE.AUG fail with MISSING_PAMT_PAGE_PAIR after its PAMT.ADD said the range was backed
    /// before the unbounded retry is reported (default 1; invariant: <= HINT_AUG_RETRIES_MAX).
    pub hint_aug_retries: u32,
}

/// The largest `host.hint_aug_retries`.
pub const HINT_AUG_RETRIES_MAX: u64 = 1_000_000;

/// Values of `host.sept_busy`; the first is the default.
pub const SEPT_BUSY_DESIGNS: &[&str] =
    &["kick-and-block", "blind-retry", "no-invalid-memslot-exit", "no-td-state-guard"];

pub use host_model::kvm::design::{SEPT_RETRIES_DEFAULT, SEPT_RETRIES_MAX, SeptBusyDesign};

pub use host_model::seamldr::update::UpdateDesign;
pub use host_model::tdx::enable::EnableDesign;
pub use host_model::workload::{Workload, WorkloadKind};

/// `[[task]]`: a kernel thread pinned to one CPU, running its steps in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// invariant: < machine.possible_cpus. A task on a CPU that is offline at start
    /// (>= machine.cpus) starts when a `cpu_up` brings that CPU online, not before `start`.
    pub cpu: u32,
    /// Earliest start (default 0).
    pub start: Cycle,
    /// Run the steps this many times (default 1); invariant: >= 1.
    pub repeat: u32,
    /// invariant: not empty.
    pub steps: Vec<Step>,
    /// Line of the `[[task]]` header, for messages.
    pub line: usize,
}

/// One entry of a task's `steps`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub call: Call,
    /// Do not start before this time.
    pub at: Option<Cycle>,
    /// `returns`: what the call must return (a host call's "0" or errno like "-EBUSY", a raw
    /// SEAMCALL's status name like "TDX_SUCCESS"); checked at load against what the call can
    /// return; anything else at run time ends the run in `warn`.
    pub returns: Option<Returns>,
    /// Position of the step's `{`, for messages.
    pub line: usize,
    pub column: usize,
}

/// What a step runs. Page operands are resolved addresses (4K-aligned, inside
/// `machine.memory`).
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `seamcall`: one raw SEAMCALL, no host logic.
    Seamcall(LeafCall),
    /// `tdx_pamt_get`: take a PAMT reference on `page`'s 2MB range in the `host.dpamt` design;
    /// `pair` is the page pair to install if the range needs one (absent: allocated by the host).
    TdxPamtGet { page: u64, pair: Option<[u64; 2]> },
    /// `tdx_pamt_put`: drop a PAMT reference on `page`'s 2MB range. `pair` (docs/scenarios.md
    /// lists it for both calls) names the pages PAMT.REMOVE is expected to hand back; the put
    /// itself takes them from PAMT.REMOVE, so the pair only keeps the page allocator off them.
    TdxPamtPut { page: u64, pair: Option<[u64; 2]> },
    /// `tdx_enable`: `tdx_enable()` in the `host.enable` design: SYS.INIT and LP.INIT on every
    /// online CPU, then the module's initialisation (host-algorithms.md §2.1.6).
    TdxEnable,
    /// `tdx_cpu_enable`: `tdx_cpu_enable()` on the task's CPU: SYS.INIT once, then LP.INIT
    /// (§2.1.3).
    TdxCpuEnable,
    /// `cpu_up`: bring CPU `target` online through the cpuhp callbacks of the `host.enable`
    /// design; invariant: target < machine.possible_cpus.
    CpuUp { target: u32 },
    /// `cpu_down`: take CPU `target` offline through the cpuhp teardown callbacks (§2.1.5);
    /// invariant: target < machine.possible_cpus.
    CpuDown { target: u32 },
    /// `seamldr_install_module`: a runtime module update in the `host.update` design (§5);
    /// `fail_step` makes that step of the update's state machine fail (absent: none is made to).
    SeamldrInstallModule { fail_step: Option<FailStep> },
    /// `td_create`: TD number `td` with `vcpus` vCPUs (default 1; invariant: 1..=256) and its
    /// control pages; `init_vcpus` (default true): KVM_TDX_INIT_VCPU for each; `finalize`
    /// (default true): KVM_TDX_FINALIZE_VM after `build_cycles`.
    TdCreate { td: u32, vcpus: u32, build_cycles: u64, init_vcpus: bool, finalize: bool },
    /// `vcpu_init`: KVM_TDX_INIT_VCPU on vCPU `vcpu` of `td` (VP.CREATE, VP.ADDCX, VP.INIT).
    VcpuInit { td: u32, vcpu: u32 },
    /// `init_mem_region`: KVM_TDX_INIT_MEM_REGION of `count` pages from `gpa` on vCPU `vcpu`
    /// (PAGE.ADD each); `page` backs the first GPA (absent: guest_memfd allocates).
    InitMemRegion { td: u32, vcpu: u32, gpa: u64, count: u32, page: Option<u64> },
    /// `td_finalize`: KVM_TDX_FINALIZE_VM (TDH.MR.FINALIZE).
    TdFinalize { td: u32 },
    /// `vcpu_run` (and `guest_accept`, which names the same run for ACCEPT-minded files):
    /// KVM_RUN on vCPU `vcpu` of `td` with `guest` running; `run_cycles` (key `for`): the VMM
    /// stops it then (absent: when the guest's program is done).
    VcpuRun {
        td: u32,
        vcpu: u32,
        guest: host_model::guest::GuestProgram,
        run_cycles: Option<u64>,
        accept_step: bool,
    },
    /// `memslot_delete`: the memslot of `count` pages at `gpa` of `td` is deleted.
    MemslotDelete { td: u32, gpa: u64, count: u32 },
    /// `td_destroy`: `kvm_destroy_vm()` of `td`: HKID release and page reclaim.
    TdDestroy { td: u32 },
    /// `tdp_fault`: EPT violations on `count` private 4K pages from `gpa`; `page` backs the
    /// first GPA and the following GPAs take the following pages (absent: allocated by the host).
    TdpFault { td: u32, gpa: u64, count: u32, page: Option<u64> },
    /// `zap`: removal of `count` private pages from `gpa` under mmu_lock write.
    Zap { td: u32, gpa: u64, count: u32 },
    /// `sleep`: the task sleeps (key `for`).
    Sleep { cycles: u64 },
    /// `spin`: the CPU busy-waits with preemption off (key `for`).
    Spin { cycles: u64 },
}

impl Call {
    /// The `call` name as written in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Seamcall(_) => "seamcall",
            Call::TdxPamtGet { .. } => "tdx_pamt_get",
            Call::TdxPamtPut { .. } => "tdx_pamt_put",
            Call::TdxEnable => "tdx_enable",
            Call::TdxCpuEnable => "tdx_cpu_enable",
            Call::CpuUp { .. } => "cpu_up",
            Call::CpuDown { .. } => "cpu_down",
            Call::SeamldrInstallModule { .. } => "seamldr_install_module",
            Call::TdCreate { .. } => "td_create",
            Call::VcpuInit { .. } => "vcpu_init",
            Call::InitMemRegion { .. } => "init_mem_region",
            Call::TdFinalize { .. } => "td_finalize",
            Call::VcpuRun { accept_step: false, .. } => "vcpu_run",
            Call::VcpuRun { accept_step: true, .. } => "guest_accept",
            Call::MemslotDelete { .. } => "memslot_delete",
            Call::TdDestroy { .. } => "td_destroy",
            Call::TdpFault { .. } => "tdp_fault",
            Call::Zap { .. } => "zap",
            Call::Sleep { .. } => "sleep",
            Call::Spin { .. } => "spin",
        }
    }
}

/// What a step returned: a host function's result, or a raw SEAMCALL's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepResult {
    Errno(Result<(), Errno>),
    Status(TdxStatus),
}

impl std::fmt::Display for StepResult {
    /// `0`, `-EBUSY`, `TDX_OPERAND_BUSY|RCX`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepResult::Errno(Ok(())) => f.write_str("0"),
            StepResult::Errno(Err(errno)) => write!(f, "-{errno}"),
            StepResult::Status(status) => write!(f, "{status}"),
        }
    }
}

/// A step's `returns`: what it must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returns {
    /// `"0"` (`None`) or an errno (`"-EBUSY"`).
    Errno(Option<Errno>),
    /// A status by name; the operand detail is not compared (`"TDX_OPERAND_BUSY"`).
    Status(TdxStatus),
}

impl Returns {
    /// `"0"`, `"-EIO"`, or a status name.
    pub fn parse(text: &str) -> Option<Returns> {
        if text == "0" {
            return Some(Returns::Errno(None));
        }
        if let Some(name) = text.strip_prefix('-') {
            return ERRNOS
                .iter()
                .find(|errno| errno.to_string() == name)
                .map(|errno| Returns::Errno(Some(*errno)));
        }
        TdxStatus::from_name(text).map(Returns::Status)
    }

    pub fn matches(self, result: StepResult) -> bool {
        match (self, result) {
            (Returns::Errno(expected), StepResult::Errno(got)) => got.err() == expected,
            (Returns::Status(expected), StepResult::Status(got)) => got.without_operand() == expected,
            (Returns::Errno(_), StepResult::Status(_)) | (Returns::Status(_), StepResult::Errno(_)) => false,
        }
    }
}

impl std::fmt::Display for Returns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Returns::Errno(None) => f.write_str("0"),
            Returns::Errno(Some(errno)) => write!(f, "-{errno}"),
            Returns::Status(status) => f.write_str(status.name()),
        }
    }
}

/// Every errno a host call returns.
pub const ERRNOS: &[Errno] = &[
    Errno::EBUSY,
    Errno::EIO,
    Errno::ENOMEM,
    Errno::ENODEV,
    Errno::EINVAL,
    Errno::EACCES,
    Errno::EFAULT,
    Errno::EINTR,
    Errno::EAGAIN,
];

impl Call {
    /// What this call can return, as `returns` names it: for a raw SEAMCALL every status
    /// name; for a host function "0" and the errnos it returns.
    pub fn possible_returns(&self) -> Vec<String> {
        use Errno::{EACCES, EAGAIN, EBUSY, EFAULT, EINVAL, EIO, ENODEV, ENOMEM};
        let errnos: &[Errno] = match self {
            Call::Seamcall(_) => {
                return seam_model::status::NAMED_STATUSES
                    .iter()
                    .chain(seam_model::status::seamldr::NAMED_SEAMLDR_STATUSES)
                    .map(|(name, _)| name.to_string())
                    .collect();
            }
            Call::TdxPamtGet { .. } => &[ENOMEM, EIO],
            Call::TdxPamtPut { .. } | Call::Sleep { .. } | Call::Spin { .. } => &[],
            Call::TdxEnable => &[EBUSY, EIO, ENODEV, EINVAL, EACCES, ENOMEM],
            Call::TdxCpuEnable => &[EIO, ENODEV, EACCES],
            Call::CpuUp { .. } => &[EBUSY, EINVAL, EIO, ENODEV, EACCES],
            Call::CpuDown { .. } => &[EBUSY, EINVAL],
            Call::SeamldrInstallModule { .. } => &[EBUSY, EIO, ENODEV, EINVAL, EACCES],
            Call::TdCreate { .. } => &[EBUSY, EIO, ENODEV, ENOMEM, EACCES, EINVAL],
            Call::VcpuInit { .. } => &[EINVAL, EIO, ENOMEM],
            Call::InitMemRegion { .. } => &[EBUSY, EINVAL, EIO, ENOMEM, EAGAIN, EFAULT],
            Call::TdFinalize { .. } => &[EINVAL, EIO],
            Call::VcpuRun { .. } => &[EINVAL, EIO, EFAULT, ENOMEM],
            Call::MemslotDelete { .. } | Call::TdDestroy { .. } => &[EINVAL],
            Call::TdpFault { .. } => &[ENOMEM, EIO, EAGAIN, EFAULT],
            Call::Zap { .. } => &[EIO],
        };
        std::iter::once("0".to_string()).chain(errnos.iter().map(|errno| format!("-{errno}"))).collect()
    }
}

/// Every call this version runs: (name, arguments, what it runs), for `tdxsim list calls`.
pub const CALLS: &[(&str, &str, &str)] = &[
    (
        "seamcall",
        "leaf, then its operands: TDH.PHYMEM.PAMT.ADD hpa, pair; TDH.PHYMEM.PAMT.REMOVE hpa; \
         TDH.MEM.PAGE.AUG td, gpa, page; TDH.MEM.PAGE.REMOVE td, gpa; TDH.MEM.RANGE.BLOCK td, gpa; \
         TDH.MEM.TRACK td; TDH.PHYMEM.PAGE.WBINVD page",
        "one raw SEAMCALL, no host logic",
    ),
    ("tdx_pamt_get", "page, pair (optional)", "DPAMT get in the host.dpamt design"),
    ("tdx_pamt_put", "page, pair (optional)", "DPAMT put in the host.dpamt design"),
    ("tdx_cpu_enable", "", "tdx_cpu_enable() on this CPU: SYS.INIT once, then LP.INIT"),
    ("tdx_enable", "", "tdx_enable() in the host.enable design: every online CPU, then module init"),
    ("cpu_up", "target", "CPU hotplug: target comes online through the cpuhp callbacks"),
    ("cpu_down", "target", "CPU hotplug: target goes offline through the cpuhp callbacks"),
    (
        "seamldr_install_module",
        "fail_step (optional: SHUTDOWN, CPU_INSTALL, CPU_INIT, RUN_UPDATE)",
        "a runtime module update in the host.update design",
    ),
    (
        "td_create",
        "td, vcpus (default 1), build, init_vcpus (default true), finalize (default true)",
        "a TD and its control pages: KVM_CREATE_VM, KVM_TDX_INIT_VM, INIT_VCPU each, FINALIZE_VM",
    ),
    ("vcpu_init", "td, vcpu", "KVM_TDX_INIT_VCPU: VP.CREATE, VP.ADDCX, VP.INIT"),
    (
        "init_mem_region",
        "td, vcpu (default 0), gpa, count (default 1), page (optional)",
        "KVM_TDX_INIT_MEM_REGION: PAGE.ADD of initial memory; BUSY is -EBUSY",
    ),
    ("td_finalize", "td", "KVM_TDX_FINALIZE_VM: TDH.MR.FINALIZE"),
    (
        "vcpu_run",
        "td, vcpu (default 0), gpa, count, accept, interval, rounds, hostile, for",
        "KVM_RUN: a vCPU entering and leaving its guest, which uses count pages from gpa",
    ),
    (
        "guest_accept",
        "td, vcpu (default 0), gpa, count (default 1), interval, hostile, for",
        "KVM_RUN of a guest that ACCEPTs count pages from gpa (hostile: then re-ACCEPTs gpa in a loop)",
    ),
    ("memslot_delete", "td, gpa, count", "a memslot deletion: invalidate, synchronize_srcu, zap, delete"),
    ("td_destroy", "td", "kvm_destroy_vm(): HKID release and reclaim of every page"),
    ("tdp_fault", "td, gpa, count (default 1), page (optional)", "EPT violations on private memory"),
    ("zap", "td, gpa, count (default 1)", "removal of private pages under mmu_lock write"),
    ("sleep", "for", "the task sleeps"),
    ("spin", "for", "the CPU busy-waits with preemption off"),
];

/// Calls docs/scenarios.md documents that this version does not run yet; the loader refuses
/// them with "not available in this version" rather than "unknown call". None today.
pub const CALLS_NOT_AVAILABLE: &[&str] = &[];

pub use crate::faults::FailStep;

/// `[run]`: how runs are explored.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCfg {
    /// Runs `tdxsim check` explores; invariant: >= 1 (default 100).
    pub runs: u64,
    /// Run i uses seed + i (default 0).
    pub seed: u64,
    pub strategy: Strategy,
    /// invariant: >= 1 (default 3).
    pub pct_depth: u32,
    /// `exhaustive`: how many decisions may differ from the default schedule (default 2).
    /// A key this version adds to the original format.
    pub exhaustive_bound: u32,
    /// Simulated time per run; past it the outcome is `limit` (default 1s).
    pub max_time: Cycle,
    /// No progress for this long: `livelock` (default 20ms).
    pub watchdog: Cycle,
    /// Longest interrupt/preemption the chooser may inject (default 50us).
    pub max_stall: Cycle,
    /// `run.hung_task`: a task asleep on a sleeping lock or completion this long without
    /// progress ends the run in `hung` (default HUNG_TASK_FACTOR x watchdog).
    pub hung_task: Cycle,
    /// Events a run may dispatch; past it the outcome is `limit` (default [`MAX_EVENTS_DEFAULT`]).
    pub max_events: u64,
}

/// `run.hung_task` when the file does not say, in watchdog periods: the kernel's hung-task
/// detector waits longer (120 s) than its soft-lockup detector (20 s); scaled as the
/// watchdog is.
pub const HUNG_TASK_FACTOR: u64 = 5;

/// `run.max_events` when the file does not say.
pub const MAX_EVENTS_DEFAULT: u64 = 200_000_000;

/// `run.strategy`: how `tdxsim check` explores a scenario's schedules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Every decision drawn from the run's seed.
    #[default]
    Random,
    /// Probabilistic concurrency testing with `run.pct_depth`: random CPU priorities order
    /// same-cycle events and jitter, with depth - 1 priority change points that stall a CPU.
    Pct,
    /// Depth-first enumeration of decision vectors, at most `run.exhaustive_bound` decisions
    /// away from the default schedule, up to `run.runs` schedules.
    Exhaustive,
    /// Coverage-guided: the default schedule, random ones, then mutations of the runs that
    /// covered a lock-order or wait-for edge, a SEAMCALL status or a near miss no earlier run
    /// did (scenarios/src/coverage.rs, fuzz/src/corpus.rs). A value this version adds.
    Coverage,
}

impl Strategy {
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Pct => "pct",
            Strategy::Exhaustive => "exhaustive",
            Strategy::Coverage => "coverage",
        }
    }
}

/// Every documented `run.strategy` value, available or not.
pub const STRATEGY_NAMES: &[&str] = &["random", "pct", "exhaustive", "coverage"];

/// `[expect]`: what must hold over the explored runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// Never `Error` (a simulator bug is never expected; the loader refuses it).
    pub outcome: OutcomeKind,
    /// A substring the finding must contain.
    pub what: Option<String>,
    /// The outcome must be found within this many runs; invariant: 1..=run.runs.
    pub within_runs: Option<u64>,
    /// `[expect.metrics]`, in file order.
    pub metrics: Vec<MetricBound>,
}

/// One `<metric>_max` or `<metric>_min` line of `[expect.metrics]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricBound {
    /// A name from [`METRICS`].
    pub metric: String,
    pub bound: Bound,
    pub value: u64,
    /// Line of the key, for messages.
    pub line: usize,
}

/// Which side a [`MetricBound`] limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `<metric>_max`: the metric over all runs is at most the value.
    Max,
    /// `<metric>_min`: the metric over all runs is at least the value.
    Min,
}

/// Metrics `[expect.metrics]` may bound: (name, meaning). A bound holds over all explored
/// runs combined: counts and totals summed, maxima the largest, averages and percentiles over
/// all runs' values together (`metrics` says exactly; `lock_*` and `seamcall_busy` also take
/// a lock or a leaf: `lock_contended[pamt_lock]`).
pub const METRICS: &[(&str, &str)] = &[
    ("seamcalls", "SEAMCALLs made"),
    (
        "seamcall_busy",
        "SEAMCALLs that returned a BUSY status (TDX_OPERAND_BUSY and friends); per leaf \
         seamcall_busy[LEAF], per leaf and operand seamcall_busy[LEAF|OPERAND]",
    ),
    ("seamcall_errors", "SEAMCALLs that returned an error status other than BUSY"),
    (
        "lock_acquisitions",
        "host lock acquisitions (spinlocks, rwlocks, mutexes, rwsems); every lock_* metric also \
         exists per lock class or instance: lock_acquisitions[mmu_lock], lock_contended[rw[A]]",
    ),
    ("lock_contended", "host lock acquisitions that had to wait (lockstat's contentions)"),
    ("lock_wait_cycles", "cycles spent waiting for host locks, in total"),
    ("lock_wait_max_cycles", "the longest wait for a host lock (the largest over runs)"),
    ("lock_wait_avg_cycles", "lock_wait_cycles / lock_contended, over all runs' waits"),
    (
        "lock_wait_p99_cycles",
        "99th percentile of the waits of contended acquisitions, over all runs' waits (within 12.5%)",
    ),
    ("lock_hold_cycles", "cycles host locks were held, in total (holds that ended in a release)"),
    ("lock_hold_max_cycles", "the longest hold of a host lock (the largest over runs)"),
    ("faults", "private-page faults resolved (tdp_fault), each from its handling's start to the page mapped"),
    ("fault_latency_cycles", "the resolved faults' latencies, in total"),
    ("fault_latency_p50_cycles", "median fault latency, over all runs' faults (within 12.5%)"),
    ("fault_latency_p99_cycles", "99th percentile of fault latency, over all runs' faults (within 12.5%)"),
    ("fault_latency_max_cycles", "the longest fault latency (the largest over runs)"),
    ("sim_cycles", "simulated cycles until the run ended (the largest over runs)"),
    ("status_hpa_range_not_free", "SEAMCALLs that returned TDX_HPA_RANGE_NOT_FREE"),
    ("status_no_pamt_page_pair", "SEAMCALLs that returned TDX_NO_PAMT_PAGE_PAIR"),
    ("status_pamt_page_not_empty", "SEAMCALLs that returned TDX_PAMT_PAGE_NOT_EMPTY"),
    ("status_missing_pamt_page_pair", "SEAMCALLs that returned TDX_MISSING_PAMT_PAGE_PAIR"),
    ("status_operand_busy", "SEAMCALLs that returned TDX_OPERAND_BUSY"),
    ("vcpu_entries", "TDH.VP.ENTER calls"),
    ("ept_violations", "EPT-violation exits KVM handled"),
    ("local_retries", "rounds of tdx_handle_ept_violation()'s local retry after the first"),
    ("kicks", "kvm_make_all_cpus_request() calls (KVM_REQ_OUTSIDE_GUEST_MODE, KVM_REQ_VM_DEAD)"),
    (
        "sept_zap_kicks",
        "removal SEAMCALLs that were BUSY and went through tdh_do_no_vcpus()'s kick and retry",
    ),
    (
        "sept_zap_stall_cycles",
        "cycles wait_for_sept_zap kept every vCPU of a TD out of the guest (the TD-wide entry stall)",
    ),
    ("vcpu_entries_blocked", "guest entries tdx_vcpu_run() skipped because wait_for_sept_zap was set"),
    (
        "sept_busy_streak_peak",
        "the most BUSY answers in a row one S-EPT SEAMCALL got (a peak: the largest of any run, not a sum)",
    ),
    (
        "coalesced_faults",
        "faults of coalesce_faults workloads that were coalesced rather than simulated event by event",
    ),
];

/// Metrics of [`METRICS`] that are peaks: over runs they combine by maximum, not by sum.
pub const PEAK_METRICS: &[&str] = &["sept_busy_streak_peak"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sept_busy_names_are_the_designs() {
        let names: Vec<&str> = SeptBusyDesign::ALL.iter().map(|design| design.name()).collect();
        assert_eq!(names, SEPT_BUSY_DESIGNS);
    }

    #[test]
    fn status_metrics_name_real_statuses() {
        for (metric, _) in METRICS {
            if let Some(status) = metric.strip_prefix("status_") {
                let name = format!("TDX_{}", status.to_uppercase());
                assert!(seam_model::TdxStatus::from_name(&name).is_some(), "{metric}");
            }
        }
    }
}
