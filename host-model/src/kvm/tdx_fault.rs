//! Group 2: the private-page fault. `tdx_handle_ept_violation()` with its local retry, the
//! TDP MMU's fault under `mmu_lock` held for read (S-EPT tables by TDH.MEM.SEPT.ADD, each
//! with its DPAMT get; the page by TDH.MEM.PAGE.AUG), BUSY as RET_PF_RETRY, and the prefault
//! (`kvm_tdp_map_page()`) that `tdp_fault` and the TD build use
//! (arch/x86/kvm/vmx/tdx.c, arch/x86/kvm/mmu/{mmu,tdp_mmu}.c).
//!
//! KVM's TDP MMU freezes a mirror SPTE before it calls the TDX hook, so two vCPUs never
//! issue a SEAMCALL for the same SPTE: a fault that finds one frozen retries.

use std::cell::RefCell;

use seam_model::status::TDX_MISSING_PAMT_PAGE_PAIR;
use seam_model::{Gpa, Hpa, LeafCall, LeafOutput, PAGE_SIZE, TdId};
use sim_core::{OutcomeKind, Span, Subject, WaitId};

use super::vm::{KvmTd, KvmVcpu, MirrorEntry, SlotLookup, TableEntry, kvm_td, request, table_span};
use crate::kernel::Errno;
use crate::kernel::cpu::{Cpu, mark};
use crate::kernel::lockdep::{lockdep_assert_held, lockdep_assert_preemption_disabled, might_sleep};
use crate::kernel::page_alloc::{alloc_gmem_page, alloc_page, alloc_page_atomic, free_page};
use crate::kernel::rwlock::{read_lock, read_unlock};
use crate::kvm::fault_stats::FaultTimer;
use crate::tdx::dpamt::{DpamtDesign, PairSource, PamtCache, tdx_pamt_add_hint, tdx_pamt_get, tdx_pamt_put};
use crate::tdx::seamcall::seamcall;

/// How the MMU's fault ended (`RET_PF_*`), besides an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `RET_PF_FIXED` (or `RET_PF_SPURIOUS`: another vCPU mapped it first).
    Fixed,
    /// `RET_PF_RETRY`, and why.
    Retry(Retry),
}

/// Why a fault returned RET_PF_RETRY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A SEAMCALL answered TDX_OPERAND_BUSY (the TDX hook returned -EBUSY).
    Busy,
    /// Another vCPU froze the SPTE.
    Frozen,
    /// An invalidation of the GFN (a punch-hole's zap) ran or runs since the fault looked
    /// its page up (`is_page_fault_stale()`).
    Stale,
    /// The memslot is being deleted or moved (`KVM_MEMSLOT_INVALID`); `wait`'s party is the
    /// task deleting it.
    InvalidSlot(WaitId),
}

/// What the TDX hook does with a leaf SPTE the TDP MMU sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafOp {
    /// A runtime fault: TDH.MEM.PAGE.AUG (group 2; BUSY is RET_PF_RETRY).
    Aug,
    /// The TD build: TDH.MEM.PAGE.ADD of `source`'s contents (group 1; BUSY is -EBUSY to
    /// userspace).
    Add { source: Hpa },
}

/// What a retry loop spinning on an invalid memslot waits for, as a deadlock report says it.
pub const WAITS_FOR_INVALID_SLOT: &str =
    "its memslot to stop being KVM_MEMSLOT_INVALID (the deletion to finish)";

/// The caches a fault draws pages from, topped up before `mmu_lock`.
#[derive(Clone, Copy)]
pub struct MmuCaches<'a> {
    /// DPAMT page pairs (`tdx_pamt_cache`).
    pub pamt: &'a PamtCache,
    /// Pages for S-EPT tables (`mmu_external_spt_cache`).
    pub spt: &'a RefCell<Vec<Hpa>>,
}

impl KvmVcpu {
    pub fn caches(&self) -> MmuCaches<'_> {
        MmuCaches { pamt: &self.pamt_cache, spt: &self.spt_cache }
    }
}

/// An EPT violation of a TD vCPU. A private GPA is retried locally on RET_PF_RETRY, without
/// re-entering the guest, until it is resolved, events or a signal are pending, the VM is
/// dead, or (6.18) the memslot is invalid. Under K0 there is no local retry: RET_PF_RETRY
/// re-enters the guest.
///
/// Kernel: `tdx_handle_ept_violation()`, arch/x86/kvm/vmx/tdx.c (local retry: Yan Zhao,
/// 2025-01-12, patch 3; invalid-memslot exit: KVM x86 MMU changes for 6.18).
pub async fn tdx_handle_ept_violation(cpu: &Cpu, kvm: &KvmTd, vcpu: &KvmVcpu, gpa: Gpa) -> Result<(), Errno> {
    might_sleep(cpu, "tdx_handle_ept_violation");
    if vcpu.guest.borrow().pending_violation {
        // SEPT_VE_DISABLE: the guest touched a page it never accepted.
        cpu.printk("pr_warn", "Guest access before accepting private memory");
        kvm_vm_dead(kvm);
        return Err(Errno::EIO);
    }
    let design = cpu.host().config.sept_busy;
    let local_retry = design.local_retry();
    let gfn = gpa.0 / PAGE_SIZE;
    let timer = FaultTimer::start(cpu);
    let ret = loop {
        let ret = kvm_mmu_page_fault(cpu, kvm, vcpu.caches(), gfn, None, LeafOp::Aug).await;
        let why = match ret {
            Ok(Fault::Retry(why)) => why,
            Ok(Fault::Fixed) | Err(_) => break ret,
        };
        if !local_retry {
            break ret;
        }
        // kvm_vcpu_has_events() sees no event for a TD in this model (no interrupt is
        // injected into the guest); a signal is the VMM stopping the vCPU.
        if super::vcpu::signal_pending(cpu, vcpu) {
            break ret;
        }
        if vcpu.check_request(request::VM_DEAD) {
            break Err(Errno::EIO);
        }
        let invalid = matches!(kvm.vcpu_gfn_to_memslot(cpu, gfn), SlotLookup::Invalid { .. });
        if design.invalid_memslot_exit() && invalid {
            break ret;
        }
        cpu.host().stats.borrow_mut().local_retries += 1;
        spin_on_invalid_slot(cpu, why);
        cpu.cond_resched().await;
    };
    cpu.sim.with(|engine| engine.set_polling(None));
    if ret == Ok(Fault::Fixed) {
        let latency = timer.resolved(cpu);
        super::coalesce::fault_resolved(vcpu, latency);
    }
    ret.map(|_| ())
}

/// A retry loop that only an invalid memslot keeps going waits for its deletion: the
/// wait-for graph is told, so a cycle through it is a named deadlock.
fn spin_on_invalid_slot(cpu: &Cpu, why: Retry) {
    let polling = match why {
        Retry::InvalidSlot(wait) => Some((WAITS_FOR_INVALID_SLOT, wait)),
        Retry::Busy | Retry::Frozen | Retry::Stale => None,
    };
    cpu.sim.with(|engine| engine.set_polling(polling));
}

/// `kvm_vm_dead()`: the VM is dead; every vCPU gets KVM_REQ_VM_DEAD (no WARN).
fn kvm_vm_dead(kvm: &KvmTd) {
    kvm.vm_dead.set(true);
    for vcpu in &kvm.vcpus {
        vcpu.make_request(request::VM_DEAD);
    }
}

/// One private fault of a TD: caches topped up (may sleep), the memslot and guest_memfd
/// page looked up, then the TDP MMU's map under `mmu_lock` held for read. `page` is the
/// guest_memfd page to use when the scenario names it; else guest_memfd allocates one.
///
/// Kernel: `kvm_mmu_page_fault()` -> `kvm_tdp_page_fault()` -> `kvm_tdp_mmu_map()`,
/// arch/x86/kvm/mmu/{mmu,tdp_mmu}.c.
pub async fn kvm_mmu_page_fault(
    cpu: &Cpu,
    kvm: &KvmTd,
    caches: MmuCaches<'_>,
    gfn: u64,
    page: Option<Hpa>,
    op: LeafOp,
) -> Result<Fault, Errno> {
    mmu_topup_memory_caches(cpu, kvm, &caches, gfn).await?;
    cpu.work(cpu.host().costs.mmu_page_fault).await;
    // kvm_mmu_faultin_pfn(): a fault on an invalid memslot is retried; one with no memslot
    // on private memory goes to userspace (KVM_EXIT_MEMORY_FAULT).
    match kvm.vcpu_gfn_to_memslot(cpu, gfn) {
        SlotLookup::Valid => {}
        SlotLookup::Invalid { wait } => return Ok(Fault::Retry(Retry::InvalidSlot(wait))),
        SlotLookup::None => return Err(Errno::EFAULT),
    }
    let mmu_seq = kvm.mmu_invalidate_seq.get();
    let (page, allocated) = kvm_gmem_get_pfn(cpu, kvm, gfn, page).await?;
    read_lock(cpu, kvm.mmu_lock).await;
    let ret = if kvm.mmu_invalidate_retry_gfn(mmu_seq, gfn) {
        // is_page_fault_stale(): the page looked up may be gone.
        Ok(Fault::Retry(Retry::Stale))
    } else {
        kvm_tdp_mmu_map(cpu, kvm, &caches, gfn, (page, allocated), op).await
    };
    read_unlock(cpu, kvm.mmu_lock);
    ret
}

/// `kvm_gmem_get_pfn()`: the guest_memfd page of `gfn`, allocated on first use (or the page
/// the scenario names). The file holds one page per index: a fault that allocated while
/// another inserted the index's page gives its own back and uses that one.
async fn kvm_gmem_get_pfn(cpu: &Cpu, kvm: &KvmTd, gfn: u64, page: Option<Hpa>) -> Result<(Hpa, bool), Errno> {
    if let Some(entry) = kvm.gmem.borrow().get(gfn) {
        return Ok(entry);
    }
    let entry = match page {
        Some(page) => (page, false),
        None => (alloc_gmem_page(cpu, kvm.td).await.ok_or(Errno::ENOMEM)?, true),
    };
    let existing = kvm.gmem.borrow().get(gfn);
    if let Some(existing) = existing {
        if entry.1 {
            free_page(cpu, entry.0).await;
        }
        return Ok(existing);
    }
    kvm.gmem.borrow_mut().insert(gfn, entry);
    Ok(entry)
}

/// The S-EPT tables above `gfn` that KVM has not linked yet (level 3, 2, 1), none for a TD
/// whose S-EPT the module prebuilt.
pub(super) fn missing_tables(kvm: &KvmTd, gfn: u64) -> u32 {
    let mirror = kvm.mirror.borrow();
    if mirror.prebuilt {
        return 0;
    }
    let gpa = gfn * PAGE_SIZE;
    (1..=3u8).filter(|&level| !mirror.tables.contains_key(&(level, gpa / table_span(level)))).count() as u32
}

/// `mmu_topup_memory_caches()` with TDX's `tdx_topup_pamt_cache()`: pages for the S-EPT
/// tables the fault may add, and a DPAMT pair for each page (tables and the private page)
/// that may need one. Outside `mmu_lock`, so it may sleep.
async fn mmu_topup_memory_caches(
    cpu: &Cpu,
    kvm: &KvmTd,
    caches: &MmuCaches<'_>,
    gfn: u64,
) -> Result<(), Errno> {
    might_sleep(cpu, "mmu_topup_memory_caches");
    let (tables, pamt_pages) = cache_needs(cpu, kvm, gfn);
    while caches.spt.borrow().len() < tables {
        let page = alloc_page(cpu).await.ok_or(Errno::ENOMEM)?;
        caches.spt.borrow_mut().push(page);
    }
    while caches.pamt.borrow().len() < pamt_pages {
        let page = alloc_page(cpu).await.ok_or(Errno::ENOMEM)?;
        caches.pamt.borrow_mut().push(page);
    }
    Ok(())
}

/// What `mmu_topup_memory_caches()` fills the caches to for a fault on `gfn`: (pages for
/// S-EPT tables, DPAMT pair pages).
fn cache_needs(cpu: &Cpu, kvm: &KvmTd, gfn: u64) -> (usize, usize) {
    let tables = missing_tables(kvm, gfn) as usize;
    (tables, pamt_cache_needs(cpu, tables))
}

/// The DPAMT pair pages `mmu_topup_memory_caches()` keeps for a fault that adds `tables`
/// S-EPT tables.
fn pamt_cache_needs(cpu: &Cpu, tables: usize) -> usize {
    if !cpu.host().config.dpamt {
        return 0;
    }
    let pairs = match cpu.host().config.dpamt_design {
        // D1 allocates its pair inside the lock, when AUG asks for it.
        DpamtDesign::Hint => 0,
        DpamtDesign::GlobalLockFastpath
        | DpamtDesign::GlobalLock
        | DpamtDesign::DecAndLock
        | DpamtDesign::Per2mRwlock
        | DpamtDesign::Per2mRwlockPfnOrder
        | DpamtDesign::GlobalRwlockFallback => 1 + tables,
    };
    2 * pairs
}

/// Whether a fault that adds no S-EPT table finds the caches full: its
/// `mmu_topup_memory_caches()` would allocate nothing.
pub(super) fn caches_full_for_a_leaf(cpu: &Cpu, caches: &MmuCaches<'_>) -> bool {
    caches.pamt.borrow().len() >= pamt_cache_needs(cpu, 0)
}

/// The TDP MMU's map of `gfn` to `page` under `mmu_lock` held for read: each missing table
/// is frozen and linked (SEPT.ADD), then the leaf frozen and set (PAGE.AUG). A BUSY
/// SEAMCALL restores the SPTE and the fault returns RET_PF_RETRY.
///
/// Kernel: `kvm_tdp_mmu_map()`, `tdp_mmu_link_sp()` / `tdp_mmu_map_handle_target_level()`
/// -> `tdp_mmu_set_spte_atomic()` -> `set_external_spte_present()`, mmu/tdp_mmu.c.
async fn kvm_tdp_mmu_map(
    cpu: &Cpu,
    kvm: &KvmTd,
    caches: &MmuCaches<'_>,
    gfn: u64,
    (page, allocated): (Hpa, bool),
    op: LeafOp,
) -> Result<Fault, Errno> {
    lockdep_assert_held(cpu, kvm.mmu_lock.resource, "kvm_tdp_mmu_map");
    let gpa = gfn * PAGE_SIZE;
    if !kvm.mirror.borrow().prebuilt {
        for level in (1..=3u8).rev() {
            let key = (level, gpa / table_span(level));
            let existing = kvm.mirror.borrow().tables.get(&key).copied();
            match existing {
                Some(TableEntry { frozen: true, .. }) => return Ok(Fault::Retry(Retry::Frozen)),
                Some(TableEntry { frozen: false, .. }) => continue,
                None => {}
            }
            let Some(table) = caches.spt.borrow_mut().pop() else { return Err(Errno::ENOMEM) };
            if let Err(errno) = tdp_mmu_link_sp(cpu, kvm, caches, gpa, level, table).await {
                // tdp_mmu_free_sp(): the table goes back to the cache.
                caches.spt.borrow_mut().push(table);
                return match errno {
                    Errno::EBUSY => Ok(Fault::Retry(Retry::Busy)),
                    other => Err(other),
                };
            }
        }
    }
    let frozen = kvm.mirror.borrow().leaves.get(gfn).is_some_and(|entry| entry.frozen);
    if frozen {
        return Ok(Fault::Retry(Retry::Frozen));
    }
    tdp_mmu_map_handle_target_level(cpu, kvm, caches, gfn, (page, allocated), op).await
}

/// Links the new page table `table` into the level-`level` SPTE over `gpa`: the SPTE is
/// frozen, the S-EPT page added (SEPT.ADD), then the SPTE set. On failure the parent SPTE is
/// restored and the caller frees `table`.
///
/// Kernel: `tdp_mmu_link_sp()` -> `tdp_mmu_set_spte_atomic()` -> `set_external_spte_present()`,
/// mmu/tdp_mmu.c.
async fn tdp_mmu_link_sp(
    cpu: &Cpu,
    kvm: &KvmTd,
    caches: &MmuCaches<'_>,
    gpa: u64,
    level: u8,
    table: Hpa,
) -> Result<(), Errno> {
    let key = (level, gpa / table_span(level));
    kvm.mirror.borrow_mut().tables.insert(key, TableEntry { page: table, frozen: true });
    let base = Gpa(gpa & !(table_span(level) - 1));
    let linked = tdx_sept_link_private_spt(cpu, kvm.td, base, level, table, caches.pamt).await;
    match linked {
        Ok(()) => {
            kvm.mirror.borrow_mut().tables.insert(key, TableEntry { page: table, frozen: false });
        }
        Err(_) => {
            // The parent SPTE is restored.
            kvm.mirror.borrow_mut().tables.remove(&key);
        }
    }
    linked
}

/// Maps the leaf SPTE of `gfn` to `page`: an SPTE already present is spurious (another vCPU
/// mapped it first); else it is frozen and set by PAGE.AUG, or PAGE.ADD during the build. A
/// failing SEAMCALL restores the SPTE; BUSY retries the fault, except PAGE.ADD's, which goes
/// to userspace.
///
/// Kernel: `tdp_mmu_map_handle_target_level()` -> `tdp_mmu_set_spte_atomic()` ->
/// `set_external_spte_present()`, mmu/tdp_mmu.c.
async fn tdp_mmu_map_handle_target_level(
    cpu: &Cpu,
    kvm: &KvmTd,
    caches: &MmuCaches<'_>,
    gfn: u64,
    (page, allocated): (Hpa, bool),
    op: LeafOp,
) -> Result<Fault, Errno> {
    let gpa = gfn * PAGE_SIZE;
    if kvm.mirror.borrow().leaves.contains_key(gfn) {
        return Ok(Fault::Fixed);
    }
    kvm.mirror.borrow_mut().leaves.insert(gfn, MirrorEntry { page, allocated, frozen: true });
    let result = match op {
        LeafOp::Aug => tdx_sept_set_private_spte(cpu, kvm.td, Gpa(gpa), page, caches.pamt).await,
        LeafOp::Add { source } => {
            let added = tdx_mem_page_add(cpu, kvm.td, Gpa(gpa), page, source, caches.pamt).await;
            if added == Err(Errno::EBUSY) {
                // Group 1: to userspace, not a retry.
                kvm.mirror.borrow_mut().leaves.remove(gfn);
                return Err(Errno::EBUSY);
            }
            added
        }
    };
    match result {
        Ok(()) => {
            kvm.mirror.borrow_mut().leaves.insert(gfn, MirrorEntry { page, allocated, frozen: false });
            Ok(Fault::Fixed)
        }
        Err(errno) => {
            kvm.mirror.borrow_mut().leaves.remove(gfn);
            match errno {
                Errno::EBUSY => Ok(Fault::Retry(Retry::Busy)),
                other => Err(other),
            }
        }
    }
}

/// A SEAMCALL on the S-EPT, as the design issues it: once (every design since Yan Zhao's
/// series), or K0's in-place retry while it answers OPERAND_BUSY on the S-EPT, at most
/// `host.sept_retries` more times. The longest run of BUSY answers is kept for the metrics.
///
/// Kernel: `tdx_seamcall_sept()` of TDX MMU part 2 (2024-11-12) for K0; plain
/// `tdh_mem_*()` after it.
pub async fn sept_seamcall(cpu: &Cpu, call: LeafCall) -> LeafOutput {
    let retries = match cpu.host().config.sept_busy.blind_retry() {
        true => cpu.host().config.sept_retries,
        false => 0,
    };
    let mut busy = 0u64;
    let mut output = seamcall(cpu, call).await;
    while output.status.is_operand_busy() {
        busy += 1;
        if busy > u64::from(retries) {
            break;
        }
        output = seamcall(cpu, call).await;
    }
    note_busy_streak(cpu, busy);
    output
}

/// Keeps the longest run of BUSY answers one S-EPT SEAMCALL got.
pub fn note_busy_streak(cpu: &Cpu, busy: u64) {
    let mut stats = cpu.host().stats.borrow_mut();
    stats.sept_busy_peak = stats.sept_busy_peak.max(busy);
}

/// `tdx_sept_link_private_spt()`: the S-EPT table `table` under the entry of `level` for
/// `gpa`, with its DPAMT reference first (DPAMT v6) and given back on failure.
///
/// Kernel: `tdx_sept_link_private_spt()` -> `tdh_mem_sept_add()`, arch/x86/kvm/vmx/tdx.c.
async fn tdx_sept_link_private_spt(
    cpu: &Cpu,
    td: TdId,
    gpa: Gpa,
    level: u8,
    table: Hpa,
    cache: &PamtCache,
) -> Result<(), Errno> {
    lockdep_assert_held(cpu, kvm_td(cpu, td).mmu_lock.resource, "tdx_sept_link_private_spt");
    tdx_pamt_get(cpu, table, PairSource::Cache(cache)).await?;
    let output = sept_seamcall(cpu, LeafCall::SeptAdd { td, gpa, level, page: table }).await;
    if output.status.is_success() {
        return Ok(());
    }
    tdx_pamt_put(cpu, table).await;
    if output.status.is_operand_busy() {
        return Err(Errno::EBUSY);
    }
    cpu.warn(
        "tdx_sept_link_private_spt",
        format!("KVM_BUG_ON: TDH.MEM.SEPT.ADD({gpa} level {level}) failed: {}", output.status),
    );
    Err(Errno::EIO)
}

/// `tdx_mem_page_add()`: TDH.MEM.PAGE.ADD of `source` into `page` at `gpa` during the TD
/// build, the page's DPAMT reference first; BUSY gives it back and is -EBUSY, any other
/// failure KVM_BUG_ON.
///
/// Kernel: `tdx_mem_page_add()` / `tdx_gmem_post_populate()`, arch/x86/kvm/vmx/tdx.c.
async fn tdx_mem_page_add(
    cpu: &Cpu,
    td: TdId,
    gpa: Gpa,
    page: Hpa,
    source: Hpa,
    cache: &PamtCache,
) -> Result<(), Errno> {
    lockdep_assert_held(cpu, kvm_td(cpu, td).mmu_lock.resource, "tdx_mem_page_add");
    tdx_pamt_get(cpu, page, PairSource::Cache(cache)).await?;
    let output = sept_seamcall(cpu, LeafCall::PageAdd { td, gpa, page, source }).await;
    if output.status.is_success() {
        return Ok(());
    }
    tdx_pamt_put(cpu, page).await;
    if output.status.is_operand_busy() {
        return Err(Errno::EBUSY);
    }
    cpu.warn(
        "tdx_mem_page_add",
        format!("KVM_BUG_ON: TDH.MEM.PAGE.ADD({gpa}, {page}) failed: {}", output.status),
    );
    Err(Errno::EIO)
}

/// `tdh_mem_page_aug()`.
async fn tdh_mem_page_aug(cpu: &Cpu, td: TdId, gpa: Gpa, page: Hpa) -> LeafOutput {
    lockdep_assert_held(cpu, kvm_td(cpu, td).mmu_lock.resource, "tdh_mem_page_aug");
    sept_seamcall(cpu, LeafCall::PageAug { td, gpa, page }).await
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

/// The prefault of one GPA (`KVM_PRE_FAULT_MEMORY`, and the TD build's map before
/// PAGE.ADD): the fault retried in a loop on RET_PF_RETRY, checking for a signal and a dead
/// VM each round. Since 6.18 a memslot being deleted ends it with -EAGAIN; before, the loop
/// waits for the deletion.
///
/// Kernel: `kvm_tdp_map_page()`, arch/x86/kvm/mmu/mmu.c.
pub async fn kvm_tdp_map_page(
    cpu: &Cpu,
    kvm: &KvmTd,
    caches: MmuCaches<'_>,
    gfn: u64,
    page: Option<Hpa>,
) -> Result<(), Errno> {
    kvm_tdp_map_page_op(cpu, kvm, caches, gfn, page, LeafOp::Aug).await
}

/// `kvm_tdp_map_page()` with the TDX hook for the leaf: PAGE.AUG, or PAGE.ADD in the build.
pub async fn kvm_tdp_map_page_op(
    cpu: &Cpu,
    kvm: &KvmTd,
    caches: MmuCaches<'_>,
    gfn: u64,
    page: Option<Hpa>,
    op: LeafOp,
) -> Result<(), Errno> {
    let design = cpu.host().config.sept_busy;
    let ret = loop {
        if kvm.vm_dead.get() {
            break Err(Errno::EIO);
        }
        cpu.cond_resched().await;
        match kvm_mmu_page_fault(cpu, kvm, caches, gfn, page, op).await {
            Ok(Fault::Fixed) => break Ok(()),
            Ok(Fault::Retry(Retry::InvalidSlot(_))) if design.invalid_memslot_exit() => {
                break Err(Errno::EAGAIN);
            }
            Ok(Fault::Retry(why)) => spin_on_invalid_slot(cpu, why),
            Err(errno) => break Err(errno),
        }
    };
    cpu.sim.with(|engine| engine.set_polling(None));
    ret
}

/// Private faults on `count` pages from `gpa` of `td` from a host task (the prefault ioctl
/// on the TD's first vCPU's behalf, caches of its own), each retried until it maps; `first_page`
/// backs the first GPA and the next ones the next pages (else guest_memfd allocates).
///
/// Kernel: `kvm_arch_vcpu_pre_fault_memory()` -> `kvm_tdp_map_page()`.
pub async fn tdp_fault(
    cpu: &Cpu,
    td: TdId,
    gpa: u64,
    count: u32,
    first_page: Option<Hpa>,
) -> Result<(), Errno> {
    might_sleep(cpu, "kvm_arch_vcpu_pre_fault_memory");
    let kvm = kvm_td(cpu, td);
    let pamt = PamtCache::default();
    let spt = RefCell::new(Vec::new());
    let mut ret = Ok(());
    let idx = crate::kernel::srcu::srcu_read_lock(cpu, &kvm.srcu);
    for index in 0..u64::from(count) {
        let gfn = gpa / PAGE_SIZE + index;
        let page = first_page.map(|first| Hpa(first.0 + index * PAGE_SIZE));
        if kvm.mirror.borrow().leaves.contains_key(gfn) {
            continue; // Already mapped: a spurious fault, not counted.
        }
        let timer = FaultTimer::start(cpu);
        ret = kvm_tdp_map_page(cpu, kvm, MmuCaches { pamt: &pamt, spt: &spt }, gfn, page).await;
        if ret.is_err() {
            break;
        }
        let _ = timer.resolved(cpu);
        // One fault handled: progress, as a vCPU that moves on to its next instruction.
        cpu.progress();
    }
    crate::kernel::srcu::srcu_read_unlock(cpu, &kvm.srcu, idx);
    // Pages left in the caches go back to the allocator (`kvm_mmu_free_memory_caches()`).
    let leftover: Vec<Hpa> = pamt.borrow_mut().drain(..).chain(spt.borrow_mut().drain(..)).collect();
    for page in leftover {
        free_page(cpu, page).await;
    }
    ret
}
