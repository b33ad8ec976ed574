//! `StateChecker`: the one checker that observes a run and owns every named invariant,
//! apart from the models (as TigerBeetle's state checker is apart from its replicas).
//!
//! It sees SEAMCALL returns, the end of each range's DPAMT get/put, page frees, the start
//! and end of a module update, and the end of the run (host-model's `Observer`); it reads
//! the host's state and the module's. A broken invariant is recorded, not stopped on: the
//! run goes on so the table shows what the host did next, and the finding decides the
//! outcome (`invariant`). Invariants pair with the models' own assertions: the module
//! refuses a page-assigning leaf on an unbacked range, and the checker confirms no page
//! ended up in use there; the designs claim refcount and backing move together, and the
//! checker holds them to it whenever nobody is between the two.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use host_model::Host;
use host_model::kernel::cpu::{Cpu, mark};
use host_model::observe::Observer;
use seam_model::{
    Dpamt2M, Gpa, Hpa, Leaf, LeafCall, LeafOutput, Module, PageRound, PageType, SysState, TdId,
};
use sim_core::{Outcome, OutcomeKind, Subject};
use smallvec::{SmallVec, smallvec};

use crate::near_miss::{HwState, TransitionWatch};

pub const DPAMT_REFCOUNT_MATCHES_MODULE: &str = "dpamt-refcount-matches-module";
pub const NO_PAGE_IN_UNBACKED_RANGE: &str = "no-page-in-unbacked-range";
pub const PAMT_PAGES_NOT_DOUBLE_FREED: &str = "pamt-pages-not-double-freed";
pub const PAMT_PAGES_NOT_LEAKED: &str = "pamt-pages-not-leaked";
pub const LP_INIT_BEFORE_SEAMCALL: &str = "lp-init-before-seamcall";
pub const NO_SEAMCALL_IN_UPDATE_WINDOW: &str = "no-seamcall-in-update-window";
pub const TDS_SURVIVE_UPDATE: &str = "tds-survive-update";
pub const TD_DESTROY_RECLAIMS_EVERY_PAGE: &str = "td-destroy-reclaims-every-page";
pub const NO_VCPU_IN_GUEST_AT_ZAP_RETRY: &str = "no-vcpu-in-guest-at-zap-retry";

/// Every invariant: (name, what it says, when it is checked).
pub const INVARIANTS: &[(&str, &str, &str)] = &[
    (
        DPAMT_REFCOUNT_MATCHES_MODULE,
        "pamt_refcount[X] > 0 exactly when the module has range X backed (refcount designs)",
        "whenever the last tdx_pamt_get/put of X returns, and at the end of a run",
    ),
    (
        NO_PAGE_IN_UNBACKED_RANGE,
        "no 4KB page of an unbacked 2MB range is in use by the module",
        "when a SEAMCALL returns, on the ranges it names",
    ),
    (
        PAMT_PAGES_NOT_DOUBLE_FREED,
        "no page is freed that the page allocator did not hand out (or already got back)",
        "at every __free_page()",
    ),
    (
        LP_INIT_BEFORE_SEAMCALL,
        "every online CPU has done TDH.SYS.LP.INIT (on the current module image) before any other SEAMCALL runs on it",
        "when a SEAMCALL returns, once TDX is enabled (the module's answer and the host's reaction are seen)",
    ),
    (
        NO_SEAMCALL_IN_UPDATE_WINDOW,
        "no SEAMCALL other than the update's own runs between TDH.SYS.SHUTDOWN and the TDH.SYS.UPDATE that makes the new module READY (the end of the update when it fails before)",
        "when a SEAMCALL returns",
    ),
    (
        TDS_SURVIVE_UPDATE,
        "the TDs that existed before a module update exist after it; lost TDs are named",
        "when seamldr_install_module() returns",
    ),
    (
        TD_DESTROY_RECLAIMS_EVERY_PAGE,
        "once td_destroy() returns, the module owns no page for the TD among the pages the host allocated (KVM reclaimed them all)",
        "when td_destroy() returns",
    ),
    (
        NO_VCPU_IN_GUEST_AT_ZAP_RETRY,
        "when tdh_do_no_vcpus() retries after its kick, no vCPU of the TD runs its guest (so the retry cannot meet VP.ENTER's locks)",
        "at each retry of tdh_do_no_vcpus()",
    ),
    (
        PAMT_PAGES_NOT_LEAKED,
        "every page the host allocated is, at the end, freed, a PAMT backing page, in use by the module, or a mapped guest page",
        "at the end of a run that would otherwise pass",
    ),
];

/// The checker of one run.
pub struct StateChecker {
    module: Rc<RefCell<Module>>,
    /// Between a successful TDH.SYS.SHUTDOWN and the successful TDH.SYS.UPDATE that makes
    /// the new module READY (or, when the update fails before that, its return).
    update_window: Cell<bool>,
    /// The module's TDs when the update started.
    tds_before_update: RefCell<Vec<TdId>>,
    /// How near transitions of per-CPU hardware state came (coverage data only).
    transitions: TransitionWatch,
}

impl StateChecker {
    pub fn new(module: Rc<RefCell<Module>>) -> StateChecker {
        StateChecker {
            module,
            update_window: Cell::new(false),
            tds_before_update: RefCell::new(Vec::new()),
            transitions: TransitionWatch::default(),
        }
    }

    fn broken(&self, cpu: &Cpu, name: &'static str, detail: String, subjects: Vec<Subject>) {
        cpu.sim.with(|engine| {
            let outcome = engine.report_here(OutcomeKind::Invariant, name, detail, subjects);
            engine.record(outcome);
        });
    }

    /// `dpamt-refcount-matches-module` for range `index`, or what breaks it.
    fn refcount_matches_module(&self, host: &Host, index: usize) -> Result<(), String> {
        if !checks_refcounts(host) {
            return Ok(());
        }
        refcount_matches(host, &self.module.borrow(), index)
    }

    /// `no-page-in-unbacked-range` for the range holding `page`.
    fn no_page_in_unbacked_range(&self, host: &Host, page: Hpa) -> Result<(), String> {
        let module = self.module.borrow();
        let index = page.range_index();
        if !host.config.dpamt || index >= module.num_ranges() || module.dpamt(index) != Dpamt2M::Unbacked {
            return Ok(());
        }
        match module.first_page_in_use(index) {
            None => Ok(()),
            Some(page_index) => Err(format!(
                "page {page_index} of range {} is in use but the range has no PAMT backing",
                host.range_label(index)
            )),
        }
    }

    /// `lp-init-before-seamcall` and `no-seamcall-in-update-window` for a returned call.
    fn check_seamcall_context(&self, cpu: &Cpu, call: &LeafCall, output: &LeafOutput) {
        let leaf = call.leaf();
        // The window opens when SYS.SHUTDOWN takes effect in the module, before it returns.
        let shut_down = self.module.borrow().sys_state() == SysState::SysShutdown;
        if shut_down {
            self.update_window.set(true);
        }
        if self.update_window.get() && !is_update_leaf(leaf) {
            let detail =
                format!("{} issued {leaf} during the module update; it returned {}", cpu.id, output.status);
            self.broken(cpu, NO_SEAMCALL_IN_UPDATE_WINDOW, detail, Vec::new());
            return;
        }
        // The window closes when TDH.SYS.UPDATE succeeds: every CPU has installed and
        // LP.INIT-ed the new image (the state machine reached RUN_UPDATE only after all of them
        // acknowledged CPU_INIT) and the module is READY again, so a kworker that runs once its
        // CPU's stopper leaves multi_cpu_stop (DONE) meets a whole module, though the updater
        // has not returned yet.
        if leaf == Leaf::SysUpdate && output.status.is_success() {
            self.update_window.set(false);
        }
        // The update's own state changes are its business: it re-initialises the LPs itself.
        let update_step = matches!(leaf, Leaf::SysShutdown | Leaf::SysUpdate) || leaf.is_seamldr();
        if update_step || leaf.is_allowed_before_lp_init() || self.update_window.get() {
            return;
        }
        let enabled = cpu.host().tdx.module_initialized.get();
        if enabled && !self.module.borrow().lp_is_init(cpu.id) {
            let detail = format!(
                "{} issued {leaf} but has not done TDH.SYS.LP.INIT; it returned {}",
                cpu.id, output.status
            );
            self.broken(cpu, LP_INIT_BEFORE_SEAMCALL, detail, Vec::new());
        }
    }

    /// The checks that hold once every task has finished: the module holds no lock (else
    /// the simulator has a bug), refcounts against the module, and leaks.
    pub fn check_at_end(&self, host: &Host) -> Option<Outcome> {
        let at = (sim_core::Cycle::ZERO, None, None);
        let held = self.module.borrow().held_lock_count();
        if held != 0 {
            let detail = format!("simulator bug: the module still holds {held} locks after the run");
            return Some(Outcome::report(OutcomeKind::Error, "", detail, at, Vec::new()));
        }
        if checks_refcounts(host) {
            // The design asked and the module borrowed once for every range.
            let module = self.module.borrow();
            for index in 0..host.pamt_refcount.len() {
                if let Err(detail) = refcount_matches(host, &module, index) {
                    let subjects = vec![Subject::Marked(mark::ATOMIC, index as u64)];
                    return Some(Outcome::report(
                        OutcomeKind::Invariant,
                        DPAMT_REFCOUNT_MATCHES_MODULE,
                        detail,
                        at,
                        subjects,
                    ));
                }
            }
        }
        let leaked = self.leaked_pages(host);
        let first = leaked.first()?;
        let detail = format!("{} pages allocated and never freed, first {first}", leaked.len());
        let subjects = vec![Subject::Marked(mark::PAGE, 1)];
        Some(Outcome::report(OutcomeKind::Invariant, PAMT_PAGES_NOT_LEAKED, detail, at, subjects))
    }

    fn leaked_pages(&self, host: &Host) -> Vec<Hpa> {
        if host.pages.borrow().allocated_count() == 0 {
            return Vec::new(); // nothing handed out: no pass over the allocator's bitmap
        }
        let module = self.module.borrow();
        // Backing pages, TD control pages and mapped guest pages are in use, not leaked. The
        // module's view first: after a boot of millions of pages, only the few it does not
        // account for are looked up in KVM's mirrors.
        let mut unaccounted: std::collections::BTreeSet<Hpa> = host
            .pages
            .borrow()
            .allocated()
            .filter(|page| !module.is_pamt_backing_page(*page) && module.page_type(*page) == PageType::Nda)
            .collect();
        if unaccounted.is_empty() {
            return Vec::new();
        }
        for td in host.kvm_tds.values() {
            td.for_each_held_page(|page| {
                unaccounted.remove(&page);
            });
        }
        unaccounted.into_iter().collect()
    }
}

impl Observer for StateChecker {
    fn vmx_transition(&self, cpu: &Cpu, on: bool, refused: bool) {
        let what = match (on, refused) {
            (true, false) => 1,
            (true, true) => 2,
            (false, _) => 3,
        };
        self.transitions.transition(cpu, HwState::Vmx, what);
    }

    fn seamcall_returned(&self, cpu: &Cpu, call: &LeafCall, output: &LeafOutput) {
        self.check_seamcall_context(cpu, call, output);
        for page in pages_named(call) {
            if let Err(detail) = self.no_page_in_unbacked_range(cpu.host(), page) {
                let subjects = vec![Subject::Marked(mark::ATOMIC, page.range_index() as u64)];
                self.broken(cpu, NO_PAGE_IN_UNBACKED_RANGE, detail, subjects);
            }
        }
    }

    /// What telling each return would check, once: the calls' context is the same for every
    /// round (one CPU, and nothing between the rounds changes the module's state or the
    /// update window), and a range a round put a page in cannot become unbacked in a later
    /// one, so each range the pages fall in is looked at once, in the state they all left.
    fn page_rounds_returned(&self, cpu: &Cpu, vcpu: (TdId, Hpa), rounds: &[(Gpa, Hpa)], round: &PageRound) {
        let (td, tdvpr) = vcpu;
        let Some(&(first_next, first_page)) = rounds.first() else { return };
        let vp_enter = round.vp_enter_exiting_at(first_next);
        self.check_seamcall_context(cpu, &LeafCall::VpEnter { td, tdvpr }, &vp_enter);
        let aug = LeafCall::PageAug { td, gpa: first_next, page: first_page };
        self.check_seamcall_context(cpu, &aug, &round.aug);
        let mut last_range = None;
        for &(_, page) in rounds {
            let range = page.range_index();
            if last_range == Some(range) {
                continue;
            }
            last_range = Some(range);
            if let Err(detail) = self.no_page_in_unbacked_range(cpu.host(), page) {
                let subjects = vec![Subject::Marked(mark::ATOMIC, range as u64)];
                self.broken(cpu, NO_PAGE_IN_UNBACKED_RANGE, detail, subjects);
            }
        }
    }

    fn pamt_range_quiet(&self, cpu: &Cpu, range_index: usize) {
        if let Err(detail) = self.refcount_matches_module(cpu.host(), range_index) {
            let subjects = vec![Subject::Marked(mark::ATOMIC, range_index as u64)];
            self.broken(cpu, DPAMT_REFCOUNT_MATCHES_MODULE, detail, subjects);
        }
    }

    fn page_freed(&self, cpu: &Cpu, page: Hpa, was_allocated: bool) {
        if !was_allocated {
            let detail = format!("{} frees {page}, which the page allocator did not hand out", cpu.id);
            let subjects = vec![Subject::Marked(mark::PAGE, 2)];
            self.broken(cpu, PAMT_PAGES_NOT_DOUBLE_FREED, detail, subjects);
        }
    }

    fn td_destroyed(&self, cpu: &Cpu, td: TdId) {
        let module = self.module.borrow();
        let kept: Vec<Hpa> = cpu
            .host()
            .pages
            .borrow()
            .allocated()
            .filter(|page| module.page_owner(*page) == Some(td))
            .collect();
        drop(module);
        if let Some(first) = kept.first() {
            let detail = format!(
                "{td} was destroyed but the module still owns {} of its pages, first {first}",
                kept.len()
            );
            self.broken(cpu, TD_DESTROY_RECLAIMS_EVERY_PAGE, detail, Vec::new());
        }
    }

    fn sept_zap_retrying(&self, cpu: &Cpu, td: TdId, call: &LeafCall) {
        let module = self.module.borrow();
        let running: Vec<String> = (0..module.config().num_lps)
            .map(sim_core::CpuId)
            .filter(|&lp| module.running_vcpu(lp).is_some_and(|(running_td, _)| running_td == td))
            .map(|lp| lp.to_string())
            .collect();
        drop(module);
        if !running.is_empty() {
            let detail = format!(
                "{} retries {call} after the kick, but {td}'s guest still runs on {}",
                cpu.id,
                running.join(", ")
            );
            self.broken(cpu, NO_VCPU_IN_GUEST_AT_ZAP_RETRY, detail, Vec::new());
        }
    }

    fn update_started(&self, _cpu: &Cpu) {
        *self.tds_before_update.borrow_mut() = self.module.borrow().td_names();
    }

    fn update_returned(&self, cpu: &Cpu, state: &'static str) {
        self.update_window.set(false);
        let after = self.module.borrow().td_names();
        let lost: Vec<String> = self
            .tds_before_update
            .borrow()
            .iter()
            .filter(|td| !after.contains(td))
            .map(|td| td.to_string())
            .collect();
        if !lost.is_empty() {
            let detail = format!("the update stopped in {state} and lost {}", lost.join(", "));
            self.broken(cpu, TDS_SURVIVE_UPDATE, detail, Vec::new());
        }
    }
}

/// Leaves the update itself issues (and the host's metadata reads around it).
fn is_update_leaf(leaf: Leaf) -> bool {
    matches!(leaf, Leaf::SysRd | Leaf::SysShutdown | Leaf::SysInit | Leaf::SysLpInit | Leaf::SysUpdate)
        || leaf.is_seamldr()
}

/// The physical pages a call names, whose ranges it may have changed.
fn pages_named(call: &LeafCall) -> SmallVec<[Hpa; 3]> {
    match *call {
        LeafCall::PamtAdd { hpa, pair } => smallvec![hpa, pair[0], pair[1]],
        LeafCall::PamtRemove { hpa } | LeafCall::PageWbinvd { page: hpa } => smallvec![hpa],
        LeafCall::PageAug { page, .. } => smallvec![page],
        LeafCall::MngCreate { tdr: page, .. } | LeafCall::VpCreate { tdvpr: page, .. } => smallvec![page],
        LeafCall::VpAddcx { tdcx: page, .. }
        | LeafCall::SeptAdd { page, .. }
        | LeafCall::PageAdd { page, .. }
        | LeafCall::PageReclaim { page } => smallvec![page],
        LeafCall::PageRemove { .. }
        | LeafCall::VpInit { .. }
        | LeafCall::VpEnter { .. }
        | LeafCall::VpFlush { .. }
        | LeafCall::MngVpflushdone { .. }
        | LeafCall::CacheWb { .. }
        | LeafCall::MngKeyFreeid { .. }
        | LeafCall::RangeBlock { .. }
        | LeafCall::Track { .. }
        | LeafCall::MngKeyConfig { .. }
        | LeafCall::MngInit { .. }
        | LeafCall::MrFinalize { .. }
        | LeafCall::SysInit
        | LeafCall::SysLpInit
        | LeafCall::SysConfig { .. }
        | LeafCall::SysKeyConfig
        | LeafCall::SysTdmrInit
        | LeafCall::SysRd { .. }
        | LeafCall::SysShutdown { .. }
        | LeafCall::SysUpdate
        | LeafCall::SeamldrInfo
        | LeafCall::SeamldrInstall => SmallVec::new(),
    }
}

/// Whether `dpamt-refcount-matches-module` applies: DPAMT on, and a design that keeps a
/// refcount per 2MB range.
#[inline]
fn checks_refcounts(host: &Host) -> bool {
    host.config.dpamt && host.config.dpamt_design.uses_refcount()
}

/// `dpamt-refcount-matches-module` for range `index` against `module`, or what breaks it.
/// Inline: the end-of-run check asks it of every range, and a range mostly agrees; what
/// breaks it is told out of line.
#[inline]
fn refcount_matches(host: &Host, module: &Module, index: usize) -> Result<(), String> {
    let refcount = host.pamt_refcount[index].get();
    let backed = matches!(module.dpamt(index), Dpamt2M::Backed { .. });
    if (refcount > 0) == backed {
        return Ok(());
    }
    Err(refcount_mismatch(host, index, refcount, backed))
}

#[cold]
fn refcount_mismatch(host: &Host, index: usize, refcount: i32, backed: bool) -> String {
    format!(
        "pamt_refcount[{}] = {refcount} but the module has the range {}",
        host.range_label(index),
        if backed { "backed" } else { "unbacked" }
    )
}
