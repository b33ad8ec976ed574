//! `Host`: the state of the simulated kernel shared by every host task of a run.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use seam_model::{Hpa, Leaf, LeafLocks, Module, ModuleConfig, TdId, TdxStatus};
use sim_core::Sim;
use smallvec::SmallVec;

use crate::observe::Observer;
use crate::tdx::dpamt::RacedRead;

use crate::kernel::cpuhp::CpuhpState;
use crate::kernel::mutex::RwSem;
use crate::kernel::page_alloc::PageAllocator;
use crate::kernel::rwlock::RwLock;
use crate::kernel::spinlock::Spinlock;
use crate::kvm::design::SeptBusyDesign;
use crate::kvm::fault_stats::FaultLatency;
use crate::kvm::main::KvmGlobal;
use crate::kvm::vm::{KvmTd, KvmTdConfig, shortcut_tdvpr};
use crate::seamldr::update::UpdateDesign;
use crate::tdx::dpamt::DpamtDesign;
use crate::tdx::enable::{EnableDesign, TdxState};

/// Host-side costs in cycles (spec/calibration.md §2.2; all assumptions to be swept).
#[derive(Clone, Debug)]
pub struct HostCosts {
    pub spin_lock: u64,
    pub spin_handoff: u64,
    pub atomic: u64,
    pub rwlock: u64,
    pub alloc_page: u64,
    pub free_page: u64,
    pub cpu_relax: u64,
    pub cond_resched: u64,
    /// `kvm_make_all_cpus_request()` with no vCPU in the guest.
    pub kick_all_vcpus: u64,
    pub cpus_read_lock: u64,
    /// `cpus_write_lock()` for CPU hotplug, synchronize_rcu included.
    pub cpus_write_lock: u64,
    /// Bringing one CPU up, apart from the cpuhp callbacks.
    pub cpu_bringup: u64,
    pub smp_call_on_cpu: u64,
    /// VMXON or VMXOFF on one CPU.
    pub vmxon: u64,
    /// stop_machine start-up: this, plus `stop_machine_per_cpu` per CPU.
    pub stop_machine_base: u64,
    pub stop_machine_per_cpu: u64,
    /// `synchronize_srcu_expedited()` with no reader in the way.
    pub synchronize_srcu: u64,
    /// An IPI handler's own work (the kick's `ack_kick()`, a VP.FLUSH call).
    pub ipi_handler: u64,
    /// One round of KVM's vCPU run loop outside the guest: requests, the entry's setup,
    /// the exit's dispatch.
    pub vcpu_run_loop: u64,
    /// The TDP MMU's fault work besides the SEAMCALLs: the walk, guest_memfd's lookup, the
    /// SPTE's atomic exchange.
    pub mmu_page_fault: u64,
    /// The guest's TDCALL into the module and back (guest side), without the lock hold.
    pub tdcall: u64,
    /// TDG.MEM.PAGE.ACCEPT of a PENDING 4KB page: zeroing it, the entry's lock held.
    pub accept_page: u64,
    /// TDG.MEM.PAGE.ACCEPT of a page already accepted: the entry's lock held while the
    /// module re-reads the entry and checks its state.
    pub accept_check: u64,
    /// A guest load or store that the S-EPT maps.
    pub guest_touch: u64,
    /// The host's timer tick: a guest runs at most this long before an external-interrupt
    /// exit (HZ=1000 at 2.2 GHz).
    pub guest_tick: u64,
}

impl Default for HostCosts {
    fn default() -> HostCosts {
        HostCosts {
            spin_lock: 40,
            spin_handoff: 200,
            atomic: 30,
            rwlock: 50,
            alloc_page: 1_000,
            free_page: 500,
            cpu_relax: 20,
            cond_resched: 100,
            kick_all_vcpus: 5_000,
            cpus_read_lock: 50,
            cpus_write_lock: 1_000_000,
            cpu_bringup: 1_000_000,
            smp_call_on_cpu: 20_000,
            vmxon: 2_000,
            stop_machine_base: 20_000,
            stop_machine_per_cpu: 2_000,
            synchronize_srcu: 20_000,
            ipi_handler: 200,
            vcpu_run_loop: 1_000,
            mmu_page_fault: 500,
            tdcall: 1_000,
            accept_page: 4_000,
            accept_check: 300,
            guest_touch: 20,
            guest_tick: 2_200_000,
        }
    }
}

/// How the host is built for a run.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub memory_bytes: u64,
    /// The clock rate, for printing cycles as time.
    pub ghz: f64,
    pub dpamt: bool,
    pub host_priority: bool,
    /// All platform LPs (possible CPUs), and how many start online.
    pub possible_cpus: u32,
    pub online_cpus: u32,
    pub packages: u32,
    /// TDX was enabled at boot: the module is READY and every online CPU did LP.INIT.
    pub tdx_initialized: bool,
    pub seamret_erratum: bool,
    pub compat_sensitive: bool,
    /// How the module's leaves take their try-locks (`module.leaf_locks`).
    pub leaf_locks: LeafLocks,
    /// D1: MISSING_PAMT_PAGE_PAIR answers after an ADD said "backed" that one fault
    /// tolerates before the unbounded retry is reported (`host.hint_aug_retries`).
    pub hint_aug_retries: u32,
    pub dpamt_design: DpamtDesign,
    pub enable_design: EnableDesign,
    pub update_design: UpdateDesign,
    /// KVM's S-EPT SEAMCALL retry policy (`host.sept_busy`).
    pub sept_busy: SeptBusyDesign,
    /// K0: in-place retries of one BUSY S-EPT SEAMCALL before it counts as failed
    /// (`host.sept_retries`).
    pub sept_retries: u32,
    /// Cost of each leaf that gets past its locks (cycles).
    pub leaf_costs: BTreeMap<Leaf, u64>,
    pub costs: HostCosts,
    /// Names for 2MB ranges (by index) in traces and lock names; others print as hex.
    pub range_labels: BTreeMap<usize, String>,
    /// D5's `rw[X]` lock name of each labelled range, made once from `range_labels`
    /// (`HostConfig::lock_names_of`) so a run names its locks without formatting.
    pub range_lock_names: BTreeMap<usize, Arc<str>>,
    /// 2MB ranges the page allocator must not hand out (they hold scenario-named pages);
    /// every run's allocator shares them.
    pub reserved_ranges: Arc<BTreeSet<usize>>,
    /// TDs that exist (runnable) in the module when the run starts.
    pub tds: Vec<TdId>,
    /// TDs KVM knows about (those above and those a step creates): their vCPUs and memslots.
    pub kvm_tds: Vec<KvmTdConfig>,
    /// TDs whose guest_memfd allocates with a locality (a workload's): in 1/65536ths
    /// (`kernel::page_alloc`); the others allocate as `alloc_page()` does.
    pub gmem_locality: BTreeMap<TdId, u32>,
}

impl HostConfig {
    /// `rw[X]` for every labelled range: the names `Host::pamt_range_lock` gives its locks.
    pub fn lock_names_of(range_labels: &BTreeMap<usize, String>) -> BTreeMap<usize, Arc<str>> {
        range_labels.iter().map(|(&index, label)| (index, Arc::from(format!("rw[{label}]")))).collect()
    }

    /// The module this host runs on: the platform's LPs and packages, how it was brought up.
    pub fn module_config(&self) -> ModuleConfig {
        ModuleConfig {
            num_lps: self.possible_cpus,
            packages: self.packages,
            initialized: self.tdx_initialized,
            seamret_erratum: self.seamret_erratum,
            compat_sensitive_supported: self.compat_sensitive,
            leaf_locks: self.leaf_locks,
            ..ModuleConfig::new(self.memory_bytes, self.dpamt, self.host_priority)
        }
    }

    /// The module of a run: `module_config()`, with the TDs that exist from the start.
    pub fn new_module(&self) -> Module {
        let mut module = Module::new(self.module_config());
        self.create_tds(&mut module);
        module
    }

    /// Makes `module` what `new_module` makes, keeping its storage (`Module::reset`).
    pub fn reset_module(&self, module: &mut Module) {
        module.reset(self.module_config());
        self.create_tds(module);
    }

    /// The TDs that exist from the start, with their vCPUs, in a module that has none.
    fn create_tds(&self, module: &mut Module) {
        for &td in &self.tds {
            module.create_td(td);
            let vcpus = self.kvm_tds.iter().find(|config| config.td == td).map_or(0, |config| config.vcpus);
            for index in 0..vcpus {
                module.create_vcpu(td, shortcut_tdvpr(index));
            }
        }
    }
}

/// One CPU's SEAMCALL statuses since its last progress, with how often each came back.
pub type SinceProgress = SmallVec<[((Leaf, TdxStatus), u64); 4]>;

/// SEAMCALLs by leaf and status, and other host-side counts.
#[derive(Clone, Debug, Default)]
pub struct HostStats {
    pub seamcalls: BTreeMap<(Leaf, TdxStatus), u64>,
    /// Per CPU (by index), the SEAMCALL statuses since its task last made progress, in
    /// first-seen order: what a livelock report shows of a retry loop. A few entries each,
    /// inline, cleared at every progress.
    pub since_progress: Vec<SinceProgress>,
    /// `kvm_make_all_cpus_request()` calls.
    pub kicks: u64,
    /// Group-3 SEAMCALLs that were BUSY and went through `tdh_do_no_vcpus()`'s kick.
    pub sept_zap_kicks: u64,
    /// Cycles `wait_for_sept_zap` was set, summed over TDs: the TD-wide entry stall.
    pub sept_zap_stall_cycles: u64,
    /// Entries `tdx_vcpu_run()` skipped because `wait_for_sept_zap` was set.
    pub vcpu_entries_blocked: u64,
    /// TDH.VP.ENTER calls.
    pub vcpu_entries: u64,
    /// EPT-violation exits KVM handled.
    pub ept_violations: u64,
    /// Rounds of `tdx_handle_ept_violation()`'s local retry after the first.
    pub local_retries: u64,
    /// The most BUSY answers one S-EPT SEAMCALL got in a row before another answer.
    pub sept_busy_peak: u64,
    /// SEAMCALLs that returned a BUSY-class status, by leaf and the whole status (its
    /// operand id kept): which lock of which leaf was contended.
    pub busy: BTreeMap<(Leaf, TdxStatus), u64>,
    /// Private-page fault latencies (`kvm::fault_stats`).
    pub faults: FaultLatency,
    /// Fault rounds coalesced (`kvm::coalesce`), of the `faults`.
    pub coalesced_faults: u64,
}

/// All kernel state of one run.
pub struct Host {
    pub costs: HostCosts,
    /// Shared by every run of a scenario: building a run's host copies a pointer.
    pub config: Arc<HostConfig>,
    /// The module, reached only by `tdx::seamcall` (the SEAMCALL instruction) and
    /// `kernel::arch` (VMXON/VMXOFF, LP reset, topology).
    pub(crate) module: Rc<RefCell<Module>>,
    /// Whoever checks the run (scenarios' state checker).
    pub observer: Rc<dyn Observer>,
    /// DPAMT refcounts, one per 2MB range (`pamt_refcount` / `dpamt_refcount`).
    // invariant: with a refcount design, > 0 exactly when the module has the range backed,
    // whenever no get/put of that range is in flight.
    pub pamt_refcount: Vec<Cell<i32>>,
    /// How many `tdx_pamt_get`/`tdx_pamt_put` of each range are between entry and return.
    pub pamt_in_flight: Vec<Cell<u32>>,
    /// The global DPAMT spinlock: `pamt_lock` (v1–v4) or `dpamt_lock` (v6).
    pub dpamt_lock: Spinlock,
    /// D6's global reader/writer lock.
    pub dpamt_rwlock: RwLock,
    /// D5's per-2MB rwlocks, created on first use.
    pub pamt_range_locks: RefCell<BTreeMap<usize, RwLock>>,
    pub pages: RefCell<PageAllocator>,
    pub kvm_tds: BTreeMap<TdId, KvmTd>,
    /// `cpu_hotplug_lock`, taken by `cpus_read_lock()` / `cpus_write_lock()`.
    pub cpu_hotplug_lock: RwSem,
    /// Installed dynamic cpuhp states, in the order their startups run.
    pub cpuhp_states: RefCell<Vec<CpuhpState>>,
    /// TDX enabling and update state (arch/x86/virt/vmx/tdx, seamldr.c).
    pub tdx: TdxState,
    /// KVM's global state that enabling and TD creation use.
    pub kvm: KvmGlobal,
    pub stats: RefCell<HostStats>,
    /// Coverage only: the CPU that last changed each `atomic_t` (name, index).
    pub atomic_writers: RefCell<BTreeMap<(&'static str, usize), u32>>,
    /// Coverage only: per 2MB range, the last put's read under the lock that found the
    /// count raised again (`tdx/dpamt.rs`, the double remove's window).
    pub(crate) raced_reads: RefCell<BTreeMap<usize, RacedRead>>,
    sim: Sim,
}

impl Host {
    /// The host of a run on `module`, observed by `observer`.
    pub fn new(
        sim: &Sim,
        config: impl Into<Arc<HostConfig>>,
        module: Rc<RefCell<Module>>,
        observer: Rc<dyn Observer>,
    ) -> Host {
        let config: Arc<HostConfig> = config.into();
        let ranges = (config.memory_bytes / seam_model::RANGE_2M) as usize;
        let costs = config.costs.clone();
        let lock_name = config.dpamt_design.lock_name();
        let kvm_tds = config
            .kvm_tds
            .iter()
            .map(|td_config| (td_config.td, KvmTd::new(sim, td_config, costs.spin_handoff)))
            .collect();
        // TDX enabled at boot in today's design: its cpuhp state is installed.
        let cpuhp_states = if config.tdx_initialized && config.enable_design == EnableDesign::BootCpuhp {
            vec![crate::tdx::enable::tdx_cpuhp_state()]
        } else {
            Vec::new()
        };
        Host {
            dpamt_lock: Spinlock::new(sim, lock_name, costs.spin_handoff),
            dpamt_rwlock: RwLock::new(sim, "dpamt_rwlock", costs.spin_handoff),
            pamt_range_locks: RefCell::new(BTreeMap::new()),
            pamt_refcount: (0..ranges).map(|_| Cell::new(0)).collect(),
            pamt_in_flight: (0..ranges).map(|_| Cell::new(0)).collect(),
            pages: RefCell::new(PageAllocator::with_gmem_streams(
                config.memory_bytes,
                config.reserved_ranges.clone(),
                &config.gmem_locality,
            )),
            module,
            observer,
            kvm_tds,
            cpu_hotplug_lock: RwSem::new(sim, "cpu_hotplug_lock", true),
            cpuhp_states: RefCell::new(cpuhp_states),
            tdx: TdxState::new(sim, &config),
            kvm: KvmGlobal::new(sim),
            stats: RefCell::new(HostStats::default()),
            atomic_writers: RefCell::new(BTreeMap::new()),
            raced_reads: RefCell::new(BTreeMap::new()),
            costs,
            config,
            sim: sim.clone(),
        }
    }

    /// How traces and lock names call 2MB range `index`: the scenario's name, or its base.
    pub fn range_label(&self, index: usize) -> String {
        match self.config.range_labels.get(&index) {
            Some(label) => label.clone(),
            None => format!("{:#x}", index as u64 * seam_model::RANGE_2M),
        }
    }

    /// D5's `rw[X]` for the 2MB range holding `page`.
    pub fn pamt_range_lock(&self, page: Hpa) -> RwLock {
        let index = page.range_index();
        *self.pamt_range_locks.borrow_mut().entry(index).or_insert_with(|| {
            let name: sim_core::Name = match self.config.range_lock_names.get(&index) {
                Some(name) => name.clone().into(),
                None => format!("rw[{}]", self.range_label(index)).into(),
            };
            RwLock::new(&self.sim, name, self.costs.spin_handoff)
        })
    }

    /// `cycles` in microseconds at the machine's clock.
    pub fn cycles_to_us(&self, cycles: u64) -> f64 {
        cycles as f64 / self.config.ghz / 1000.0
    }

    /// A stall's length as tables print it: microseconds, or cycles when under 0.1 us.
    pub fn stall_length(&self, cycles: u64) -> String {
        let us = self.cycles_to_us(cycles);
        if us < 0.1 { format!("{cycles} cycles") } else { format!("{us:.1} us") }
    }

    pub fn leaf_cost(&self, leaf: Leaf) -> u64 {
        self.config.leaf_costs.get(&leaf).copied().unwrap_or_else(|| leaf.default_cost_cycles())
    }
}
