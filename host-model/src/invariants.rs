//! Named invariants the host model checks as a run goes, and at its end. A broken one ends
//! the run in `invariant` with its name (`tdxsim list invariants`).
//!
//! Each pairs with an assertion elsewhere (STYLE.md "pair assertions"): the module refuses
//! a page-assigning leaf on an unbacked range, and the checker here confirms no page ever
//! ended up in use there; the designs claim refcount and backing move together, and the
//! checker holds them to it whenever nobody is between the two.

use seam_model::{Dpamt2M, Hpa, Leaf, PageType};
use sim_core::{Outcome, OutcomeKind};

use crate::host::Host;
use crate::kernel::cpu::Cpu;
use crate::tdx::dpamt::DpamtDesign;

pub const DPAMT_REFCOUNT_MATCHES_MODULE: &str = "dpamt-refcount-matches-module";
pub const NO_PAGE_IN_UNBACKED_RANGE: &str = "no-page-in-unbacked-range";
pub const PAMT_PAGES_NOT_DOUBLE_FREED: &str = "pamt-pages-not-double-freed";
pub const PAMT_PAGES_NOT_LEAKED: &str = "pamt-pages-not-leaked";
pub const LP_INIT_BEFORE_SEAMCALL: &str = "lp-init-before-seamcall";
pub const NO_SEAMCALL_IN_UPDATE_WINDOW: &str = "no-seamcall-in-update-window";
pub const TDS_SURVIVE_UPDATE: &str = "tds-survive-update";

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
        "after every SEAMCALL, on the ranges it names",
    ),
    (
        PAMT_PAGES_NOT_DOUBLE_FREED,
        "no page is freed that the page allocator did not hand out (or already got back)",
        "at every __free_page()",
    ),
    (
        LP_INIT_BEFORE_SEAMCALL,
        "every online CPU has done TDH.SYS.LP.INIT (on the current module image) before any other SEAMCALL runs on it",
        "at every SEAMCALL, once TDX is enabled",
    ),
    (
        NO_SEAMCALL_IN_UPDATE_WINDOW,
        "no SEAMCALL other than the update's own runs between TDH.SYS.SHUTDOWN and the end of the update",
        "at every SEAMCALL",
    ),
    (
        TDS_SURVIVE_UPDATE,
        "the TDs that existed before a module update exist after it; lost TDs are named",
        "when seamldr_install_module() returns",
    ),
    (
        PAMT_PAGES_NOT_LEAKED,
        "every page the host allocated is, at the end, freed, a PAMT backing page, in use by the module, or a mapped guest page",
        "at the end of a run that would otherwise pass",
    ),
];

/// Ends the run with a broken invariant.
pub fn broken(cpu: &Cpu, name: &str, detail: String) {
    let what = format!("{name}: {detail}");
    cpu.sim.with(|engine| engine.stop(Outcome::new(OutcomeKind::Invariant, what, vec![cpu.task])));
}

fn uses_refcount(host: &Host) -> bool {
    host.config.dpamt && host.config.dpamt_design != DpamtDesign::Hint
}

/// `dpamt-refcount-matches-module` for range `index`, or what breaks it.
pub fn refcount_matches_module(host: &Host, index: usize) -> Result<(), String> {
    if !uses_refcount(host) {
        return Ok(());
    }
    let refcount = host.pamt_refcount[index].get();
    let backed = matches!(host.module.borrow().dpamt(index), Dpamt2M::Backed { .. });
    if (refcount > 0) == backed {
        return Ok(());
    }
    Err(format!(
        "pamt_refcount[{}] = {refcount} but the module has the range {}",
        host.range_label(index),
        if backed { "backed" } else { "unbacked" }
    ))
}

/// `no-page-in-unbacked-range` for the range holding `page`.
pub fn no_page_in_unbacked_range(host: &Host, page: Hpa) -> Result<(), String> {
    let module = host.module.borrow();
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

/// The checks of a run's end: refcounts against the module, and leaks.
pub fn check_at_end(host: &Host) -> Option<(&'static str, String)> {
    for index in 0..host.pamt_refcount.len() {
        if let Err(detail) = refcount_matches_module(host, index) {
            return Some((DPAMT_REFCOUNT_MATCHES_MODULE, detail));
        }
    }
    let module = host.module.borrow();
    let mapped: Vec<Hpa> = host
        .kvm_tds
        .values()
        .flat_map(|td| td.mirror.borrow().values().map(|entry| entry.page).collect::<Vec<_>>())
        .collect();
    let leaked: Vec<Hpa> = host
        .pages
        .borrow()
        .allocated()
        .filter(|page| {
            // Backing pages, TD control pages and mapped guest pages are in use, not leaked.
            !module.is_pamt_backing_page(*page)
                && module.page_type(*page) == PageType::Nda
                && !mapped.contains(page)
        })
        .collect();
    if let Some(first) = leaked.first() {
        return Some((
            PAMT_PAGES_NOT_LEAKED,
            format!("{} pages allocated and never freed, first {first}", leaked.len()),
        ));
    }
    None
}

/// Leaves the update itself issues (and the host's metadata reads around it).
fn is_update_leaf(leaf: Leaf) -> bool {
    matches!(
        leaf,
        Leaf::SysRd
            | Leaf::SysShutdown
            | Leaf::SysInit
            | Leaf::SysLpInit
            | Leaf::SysUpdate
            | Leaf::SeamldrInstall
    ) || leaf.is_seamldr()
}

/// `lp-init-before-seamcall` and `no-seamcall-in-update-window`, as a SEAMCALL starts.
pub fn check_seamcall_allowed(cpu: &Cpu, leaf: Leaf) {
    let host = cpu.host();
    if host.tdx.update_in_progress.get() && !is_update_leaf(leaf) {
        broken(
            cpu,
            NO_SEAMCALL_IN_UPDATE_WINDOW,
            format!("{} issues {leaf} during the module update", cpu.id),
        );
        return;
    }
    // The update's own state changes are its business: it re-initialises the LPs itself.
    let update_step = matches!(leaf, Leaf::SysShutdown | Leaf::SysUpdate) || leaf.is_seamldr();
    if update_step || leaf.is_allowed_before_lp_init() || host.tdx.update_in_progress.get() {
        return;
    }
    let enabled = host.tdx.module_initialized.get();
    if enabled && !host.module.borrow().lp_is_init(cpu.id) {
        broken(
            cpu,
            LP_INIT_BEFORE_SEAMCALL,
            format!("{} issues {leaf} but has not done TDH.SYS.LP.INIT", cpu.id),
        );
    }
}

/// `tds-survive-update`: the TDs of before an update are there after it; a failed update
/// that lost some names them and the step it failed in.
pub fn tds_survive_update(
    cpu: &Cpu,
    before: &[seam_model::TdId],
    state: crate::seamldr::update::UpdateState,
) {
    let after = cpu.host().module.borrow().td_names();
    let lost = crate::seamldr::update::lost_tds(before, &after);
    if lost.is_empty() {
        return;
    }
    let names: Vec<String> = lost.iter().map(|td| td.to_string()).collect();
    broken(cpu, TDS_SURVIVE_UPDATE, format!("the update stopped in {state:?} and lost {}", names.join(", ")));
}
