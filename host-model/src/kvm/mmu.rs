//! The S-EPT paths for private 4KB pages: a fault maps a page (PAGE.AUG), a zap removes it
//! (RANGE.BLOCK, TRACK, PAGE.REMOVE, PAGE.WBINVD), with DPAMT get/put around them.
//!
//! What this version leaves out, and why: S-EPT page tables (SEPT.ADD) are taken as
//! present, so a fault needs one leaf; no vCPU runs, so the kick of
//! `kvm_make_all_cpus_request()` costs its base and stops nobody; the zero-step and
//! guest-ACCEPT contenders come with the S-EPT retry-policy work.

use std::cell::RefCell;
use std::collections::BTreeMap;

use seam_model::status::TDX_MISSING_PAMT_PAGE_PAIR;
use seam_model::{Gpa, Hpa, LeafCall, LeafOutput, TdId};
use sim_core::{OutcomeKind, Span, Subject};

use crate::kernel::Errno;
use crate::kernel::cpu::{Cpu, mark};
use crate::kernel::lockdep::{lockdep_assert_held, lockdep_assert_preemption_disabled, might_sleep};
use crate::kernel::page_alloc::{alloc_gmem_page, alloc_page, alloc_page_atomic, free_page};
use crate::kernel::rwlock::{RwLock, read_lock, read_unlock, write_lock, write_unlock};
use crate::kvm::fault_stats::FaultTimer;
use crate::tdx::dpamt::{DpamtDesign, PairSource, PamtCache, tdx_pamt_add_hint, tdx_pamt_get, tdx_pamt_put};
use crate::tdx::seamcall::seamcall;

/// KVM's per-VM state that these paths use.
pub struct KvmTd {
    pub td: TdId,
    /// `kvm->mmu_lock`: read for faults, write for zaps.
    pub mmu_lock: RwLock,
    /// The mirror S-EPT: which page each private GPA maps. Protected by `mmu_lock`.
    pub mirror: RefCell<BTreeMap<u64, MirrorEntry>>,
}

#[derive(Clone, Copy, Debug)]
pub struct MirrorEntry {
    pub page: Hpa,
    /// The page came from `alloc_page()` and goes back to it on zap.
    pub allocated: bool,
}

impl KvmTd {
    pub fn new(sim: &sim_core::Sim, td: TdId, handoff_cycles: u64) -> KvmTd {
        let name = format!("mmu_lock[TD {}]", td.0);
        KvmTd { td, mmu_lock: RwLock::new(sim, name, handoff_cycles), mirror: RefCell::new(BTreeMap::new()) }
    }
}

fn kvm_td(cpu: &Cpu, td: TdId) -> &KvmTd {
    cpu.host().kvm_tds.get(&td).expect("the scenario loader only names TDs the host created")
}

/// `tdh_mem_page_aug()`.
async fn tdh_mem_page_aug(cpu: &Cpu, td: TdId, gpa: Gpa, page: Hpa) -> LeafOutput {
    lockdep_assert_held(cpu, kvm_td(cpu, td).mmu_lock.resource, "tdh_mem_page_aug");
    seamcall(cpu, LeafCall::PageAug { td, gpa, page }).await
}

/// Maps `page` at private `gpa` of `td`, called with `mmu_lock` held for read.
///
/// Kernel: `tdx_sept_set_private_spte()` -> `tdx_mem_page_aug()`, arch/x86/kvm/vmx/tdx.c
/// (6.19 with DPAMT v6: `tdx_pamt_get()` from the vCPU cache before PAGE.AUG, put on failure).
/// D1 has no refcount and no get: PAGE.AUG first; on MISSING_PAMT_PAGE_PAIR it adds the
/// backing ("already backed" counts as done) and goes back to PAGE.AUG (RFC v1, 2025-05-02).
async fn tdx_sept_set_private_spte(
    cpu: &Cpu,
    td: TdId,
    gpa: Gpa,
    page: Hpa,
    cache: &PamtCache,
) -> Result<(), Errno> {
    lockdep_assert_held(cpu, kvm_td(cpu, td).mmu_lock.resource, "tdx_sept_set_private_spte");
    match cpu.host().config.dpamt_design {
        DpamtDesign::Hint => return tdx_mem_page_aug_hint(cpu, td, gpa, page, cache).await,
        DpamtDesign::GlobalLockFastpath
        | DpamtDesign::GlobalLock
        | DpamtDesign::DecAndLock
        | DpamtDesign::Per2mRwlock
        | DpamtDesign::Per2mRwlockPfnOrder
        | DpamtDesign::GlobalRwlockFallback => {}
    }
    tdx_pamt_get(cpu, page, PairSource::Cache(cache)).await?;
    let output = tdh_mem_page_aug(cpu, td, gpa, page).await;
    let result = aug_result(cpu, output, page);
    if result.is_err() {
        tdx_pamt_put(cpu, page).await;
    }
    result
}

/// How many times one D1 fault may see PAGE.AUG answer MISSING_PAMT_PAGE_PAIR after its
/// PAMT.ADD reported the range backed (success or HPA_RANGE_NOT_FREE) — the published race —
/// before the model reports the unbounded retry. The RFC's loop has no bound; this one is
/// the model's (`host.hint_aug_retries`). The default, 0, reports the first race: from there
/// nothing bounds the loop, each further round needs only the same race again. [I]
pub const HINT_AUG_RETRIES_DEFAULT: u32 = 0;

/// D1's fault: PAGE.AUG; on MISSING_PAMT_PAGE_PAIR give the range its backing and AUG again.
async fn tdx_mem_page_aug_hint(
    cpu: &Cpu,
    td: TdId,
    gpa: Gpa,
    page: Hpa,
    cache: &PamtCache,
) -> Result<(), Errno> {
    let mut added = false;
    let mut races = 0;
    loop {
        let output = tdh_mem_page_aug(cpu, td, gpa, page).await;
        if output.status.without_operand() != TDX_MISSING_PAMT_PAGE_PAIR {
            return aug_result(cpu, output, page);
        }
        if added {
            // The range was backed when PAMT.ADD returned; a REMOVE took it since.
            races += 1;
            if races > cpu.host().config.hint_aug_retries {
                report_unbounded_retry(cpu, page, races);
                return Err(Errno::EIO);
            }
        }
        if cpu.host().config.dpamt {
            refill_pamt_cache_atomic(cpu, cache).await?;
            tdx_pamt_add_hint(cpu, page, PairSource::Cache(cache)).await?;
        }
        added = true;
    }
}

/// The liveness finding of D1's fault loop: the race that the retry cannot outrun.
fn report_unbounded_retry(cpu: &Cpu, page: Hpa, races: u32) {
    let range = cpu.host().range_label(page.range_index());
    let detail = format!(
        "{}: tdx_sept_set_private_spte: PAGE.AUG({page}) answered TDX_MISSING_PAMT_PAGE_PAIR {races} \
         time(s) after PAMT.ADD({range}) said the range was backed: a PAGE.REMOVE hint removed the \
         backing in between, and the hint design retries without bound (DPAMT v3 cover letter, 2025-09-18)",
        cpu.id
    );
    cpu.sim.with(|engine| {
        engine.mark(Span::Instant, mark::WARN, 2, 0, || {
            "(unbounded retry: the ADD/AUG race again; reported, not retried)".to_string()
        });
        let outcome = engine.report_here(OutcomeKind::Livelock, "unbounded retry", detail, Vec::new());
        engine.stop(outcome);
    });
}

fn aug_result(cpu: &Cpu, output: LeafOutput, page: Hpa) -> Result<(), Errno> {
    if output.status.is_success() {
        return Ok(());
    }
    if output.status.is_operand_busy() {
        // The TDP MMU restores the SPTE and the fault returns RET_PF_RETRY.
        return Err(Errno::EBUSY);
    }
    let subjects = vec![Subject::Marked(mark::ATOMIC, page.range_index() as u64)];
    cpu.warn_about(
        "tdx_mem_page_aug",
        format!("KVM_BUG_ON: TDH.MEM.PAGE.AUG({page}) failed: {}", output.status),
        subjects,
    );
    Err(Errno::EIO)
}

/// D1 inside `mmu_lock`: a further round's pair cannot come from a sleeping allocation, so
/// it is taken with GFP_ATOMIC. [I] The RFC's fault path is not published in that detail.
async fn refill_pamt_cache_atomic(cpu: &Cpu, cache: &PamtCache) -> Result<(), Errno> {
    // Inside mmu_lock: an rwlock, so preemption is off and only GFP_ATOMIC will do.
    lockdep_assert_preemption_disabled(cpu, "refill_pamt_cache_atomic");
    while cache.borrow().len() < 2 {
        let Some(page) = alloc_page_atomic(cpu).await else { return Err(Errno::ENOMEM) };
        cache.borrow_mut().push(page);
    }
    Ok(())
}

/// Tops the per-vCPU DPAMT cache up to one pair (`tdx_topup_pamt_cache()`), before mmu_lock.
async fn refill_pamt_cache(cpu: &Cpu, cache: &PamtCache) -> Result<(), Errno> {
    might_sleep(cpu, "tdx_topup_pamt_cache");
    while cache.borrow().len() < 2 {
        let Some(page) = alloc_page(cpu).await else { return Err(Errno::ENOMEM) };
        cache.borrow_mut().push(page);
    }
    Ok(())
}

/// EPT violations on `count` private pages from `gpa`, each mapped to the next page from
/// `first_page` (or an allocated one). Each fault retries locally on RET_PF_RETRY without
/// re-entering the guest.
///
/// Kernel: `tdx_handle_ept_violation()` -> `__vmx_handle_ept_violation()` ->
/// `kvm_tdp_map_page()`, arch/x86/kvm/vmx/tdx.c and mmu/tdp_mmu.c (6.18 local retry).
pub async fn tdp_fault(
    cpu: &Cpu,
    td: TdId,
    gpa: u64,
    count: u32,
    first_page: Option<Hpa>,
) -> Result<(), Errno> {
    let kvm = kvm_td(cpu, td);
    let cache = PamtCache::default();
    for index in 0..u64::from(count) {
        let fault_gpa = Gpa(gpa + index * seam_model::PAGE_SIZE);
        if kvm.mirror.borrow().contains_key(&fault_gpa.0) {
            continue; // Already mapped: a spurious fault.
        }
        let timer = FaultTimer::start(cpu);
        let (page, allocated) = match first_page {
            Some(first) => (Hpa(first.0 + index * seam_model::PAGE_SIZE), false),
            None => match alloc_gmem_page(cpu, td).await {
                Some(page) => (page, true),
                None => return Err(Errno::ENOMEM),
            },
        };
        loop {
            refill_pamt_cache(cpu, &cache).await?;
            read_lock(cpu, kvm.mmu_lock).await;
            let result = tdx_sept_set_private_spte(cpu, td, fault_gpa, page, &cache).await;
            if result.is_ok() {
                kvm.mirror.borrow_mut().insert(fault_gpa.0, MirrorEntry { page, allocated });
            }
            read_unlock(cpu, kvm.mmu_lock);
            match result {
                Ok(()) => {
                    timer.resolved(cpu);
                    break;
                }
                Err(Errno::EBUSY) => cpu.cond_resched().await,
                Err(errno) => return Err(errno),
            }
        }
        // One fault handled: progress, as a vCPU that moves on to its next instruction.
        cpu.progress();
    }
    // Pages left in the cache go back to the allocator (`tdx_free_pamt_cache()`).
    let leftover: Vec<Hpa> = cache.borrow_mut().drain(..).collect();
    for page in leftover {
        free_page(cpu, page).await;
    }
    Ok(())
}

/// One removal SEAMCALL through `tdh_do_no_vcpus()`: on BUSY, keep vCPUs out of the guest,
/// kick them all, and retry exactly once.
async fn tdh_do_no_vcpus(cpu: &Cpu, call: LeafCall) -> LeafOutput {
    let output = seamcall(cpu, call).await;
    lockdep_assert_preemption_disabled(cpu, "tdh_do_no_vcpus");
    if !output.status.is_operand_busy() {
        return output;
    }
    // wait_for_sept_zap = true; kvm_make_all_cpus_request(KVM_REQ_OUTSIDE_GUEST_MODE)
    cpu.work(cpu.host().costs.kick_all_vcpus).await;
    seamcall(cpu, call).await
}

/// Removes the private page at `gpa` of `td`, called with `mmu_lock` held for write.
///
/// Kernel: `tdx_sept_remove_private_spte()` with `tdx_track()`, arch/x86/kvm/vmx/tdx.c (6.19);
/// then `tdx_pamt_put()` (DPAMT v6), or in D1 the hint-driven PAMT.REMOVE.
async fn tdx_sept_remove_private_spte(cpu: &Cpu, td: TdId, gpa: Gpa, page: Hpa) -> Result<(), Errno> {
    lockdep_assert_held(cpu, kvm_td(cpu, td).mmu_lock.resource, "tdx_sept_remove_private_spte");
    for call in [LeafCall::RangeBlock { td, gpa }, LeafCall::Track { td }] {
        let output = tdh_do_no_vcpus(cpu, call).await;
        if !output.status.is_success() && output.status.class() != 0 {
            cpu.warn("tdx_sept_remove_private_spte", format!("KVM_BUG_ON: {call} failed: {}", output.status));
            return Err(Errno::EIO);
        }
    }
    // tdx_track() kicks every vCPU after TRACK so the old epoch retires.
    cpu.work(cpu.host().costs.kick_all_vcpus).await;
    let output = tdh_do_no_vcpus(cpu, LeafCall::PageRemove { td, gpa }).await;
    if !output.status.is_success() {
        cpu.warn(
            "tdx_sept_remove_private_spte",
            format!("KVM_BUG_ON: TDH.MEM.PAGE.REMOVE({gpa}) failed: {}", output.status),
        );
        return Err(Errno::EIO);
    }
    let wbinvd = seamcall(cpu, LeafCall::PageWbinvd { page }).await;
    if !wbinvd.status.is_success() {
        cpu.warn(
            "tdx_sept_remove_private_spte",
            format!("KVM_BUG_ON: TDH.PHYMEM.PAGE.WBINVD({page}) failed: {}", wbinvd.status),
        );
        return Err(Errno::EIO);
    }
    match cpu.host().config.dpamt_design {
        DpamtDesign::Hint => {
            if output.removal_hint {
                crate::tdx::dpamt::tdx_pamt_remove_hint(cpu, page).await;
            }
        }
        DpamtDesign::GlobalLockFastpath
        | DpamtDesign::GlobalLock
        | DpamtDesign::DecAndLock
        | DpamtDesign::Per2mRwlock
        | DpamtDesign::Per2mRwlockPfnOrder
        | DpamtDesign::GlobalRwlockFallback => tdx_pamt_put(cpu, page).await,
    }
    Ok(())
}

/// Zaps `count` private pages from `gpa` under `mmu_lock` held for write.
///
/// Kernel: the TDP MMU zap (`tdp_mmu_zap_leafs()` -> `remove_external_spte()`).
pub async fn zap(cpu: &Cpu, td: TdId, gpa: u64, count: u32) -> Result<(), Errno> {
    might_sleep(cpu, "kvm_tdp_mmu_zap_leafs");
    let kvm = kvm_td(cpu, td);
    write_lock(cpu, kvm.mmu_lock).await;
    let mut freed = Vec::new();
    for index in 0..u64::from(count) {
        let zap_gpa = Gpa(gpa + index * seam_model::PAGE_SIZE);
        let Some(entry) = kvm.mirror.borrow().get(&zap_gpa.0).copied() else { continue };
        if let Err(errno) = tdx_sept_remove_private_spte(cpu, td, zap_gpa, entry.page).await {
            write_unlock(cpu, kvm.mmu_lock);
            return Err(errno);
        }
        kvm.mirror.borrow_mut().remove(&zap_gpa.0);
        if entry.allocated {
            freed.push(entry.page);
        }
        cpu.progress();
    }
    write_unlock(cpu, kvm.mmu_lock);
    // guest_memfd frees the pages after the zap, outside mmu_lock.
    for page in freed {
        free_page(cpu, page).await;
    }
    Ok(())
}
