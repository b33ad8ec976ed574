//! KVM's per-VM and per-vCPU state for a TD (`struct kvm` + `struct kvm_tdx`, `struct
//! kvm_vcpu` + `struct vcpu_tdx`), the mirror S-EPT, memslots, requests and the kick
//! (`kvm_make_all_cpus_request()`), and the 6.19 TD state guard.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use seam_model::{Gpa, Hpa, PAGE_SIZE, TdId};
use sim_core::{CpuId, Cycle, TaskId, WaitId};

use super::gfn_map::{FLAG_0, FLAG_1, GfnMap, Packed, pack_pfn, unpack_pfn};
use crate::kernel::Errno;
use crate::kernel::completion::{OnCpu, smp_call_function_many};
use crate::kernel::cpu::Cpu;
use crate::kernel::mutex::{Mutex, mutex_lock, mutex_unlock};
use crate::kernel::rwlock::RwLock;
use crate::kernel::srcu::SrcuStruct;
use crate::tdx::dpamt::PamtCache;

/// What the host knows of a TD before the run: its vCPUs and the memslots steps delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmTdConfig {
    pub td: TdId,
    /// vCPUs KVM creates for it (0..vcpus).
    pub vcpus: u32,
    /// Memslots the VMM registered before the run, as (first GPA, 4KB pages); GPAs outside
    /// every one are in a base memslot no step deletes. invariant: no two overlap.
    pub memslots: Vec<(u64, u64)>,
    /// The TD exists in the module from the start (the module's `create_td` shortcut, its
    /// vCPUs READY from `create_vcpu`): no step builds it.
    pub exists: bool,
}

/// The TDVPR page the module's `create_vcpu` shortcut gives vCPU `index` of a TD that exists
/// from the start. Such pages occupy no simulated memory; they only name the vCPU.
pub fn shortcut_tdvpr(index: u32) -> Hpa {
    Hpa(u64::from(index) * PAGE_SIZE)
}

/// `kvm_tdx->state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdState {
    #[doc(alias = "TD_STATE_UNINITIALIZED")]
    Uninitialized,
    #[doc(alias = "TD_STATE_INITIALIZED")]
    Initialized,
    #[doc(alias = "TD_STATE_RUNNABLE")]
    Runnable,
}

/// `vcpu->mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuMode {
    #[doc(alias = "OUTSIDE_GUEST_MODE")]
    OutsideGuestMode,
    #[doc(alias = "IN_GUEST_MODE")]
    InGuestMode,
    #[doc(alias = "EXITING_GUEST_MODE")]
    ExitingGuestMode,
}

/// `vcpu->requests` bits.
pub mod request {
    /// `KVM_REQ_OUTSIDE_GUEST_MODE`: no work; forces a VM exit and an acknowledgement.
    pub const OUTSIDE_GUEST_MODE: u32 = 1 << 0;
    /// `KVM_REQ_VM_DEAD`: the VM is dead (`kvm_vm_dead()`); KVM_RUN answers -EIO.
    pub const VM_DEAD: u32 = 1 << 1;
}

/// `vcpu_tdx->state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuTdState {
    #[doc(alias = "VCPU_TD_STATE_UNINITIALIZED")]
    Uninitialized,
    #[doc(alias = "VCPU_TD_STATE_INITIALIZED")]
    Initialized,
}

/// One vCPU of a TD.
pub struct KvmVcpu {
    pub td: TdId,
    pub index: u32,
    /// `vcpu->mutex`: held by every vCPU ioctl (KVM_RUN included).
    pub mutex: Mutex,
    /// `vcpu->mode`: written by the vCPU's thread; the kick reads it.
    pub mode: Cell<VcpuMode>,
    /// `vcpu->requests`.
    pub requests: Cell<u32>,
    /// `vcpu_tdx->state`.
    pub state: Cell<VcpuTdState>,
    /// The vCPU's TDVPR page (`tdx->vp.tdvpr_page`) once TDH.VP.CREATE made it.
    pub tdvpr: Cell<Option<Hpa>>,
    /// The TDVPR came from the page allocator (not the module's shortcut).
    pub tdvpr_allocated: Cell<bool>,
    /// Its TDCX pages (`tdx->vp.tdcx_pages`), added by TDH.VP.ADDCX.
    pub tdcx: RefCell<Vec<Hpa>>,
    /// `tdx->cpu`: the CPU the vCPU is associated with in the module (VP.INIT or its last
    /// VP.ENTER), until TDH.VP.FLUSH there. `None`: associated nowhere.
    pub associated_cpu: Cell<Option<CpuId>>,
    /// `vcpu->cpu`: the CPU its thread runs it on, while loaded.
    pub loaded_cpu: Cell<Option<CpuId>>,
    /// The task running KVM_RUN, while it does.
    pub task: Cell<Option<TaskId>>,
    /// `signal_pending(current)` for the thread running it: the VMM asked it to stop.
    pub signal_pending: Cell<bool>,
    /// The per-vCPU DPAMT page cache (`tdx_pamt_cache`), topped up outside `mmu_lock`.
    pub pamt_cache: PamtCache,
    /// The MMU's cache of pages for S-EPT tables (`mmu_external_spt_cache`).
    pub spt_cache: RefCell<Vec<Hpa>>,
    /// What the guest is doing (the guest model's program and where it is).
    pub guest: RefCell<crate::guest::Guest>,
    /// The simulator's coalescing of its fault rounds, when on (`kvm::coalesce`).
    pub coalescing: super::coalesce::CoalescingSlot,
}

impl KvmVcpu {
    fn new(sim: &sim_core::Sim, td: TdId, index: u32) -> KvmVcpu {
        KvmVcpu {
            td,
            index,
            mutex: Mutex::with_class(sim, format!("vcpu->mutex[TD {} vCPU {index}]", td.0), "vcpu->mutex"),
            mode: Cell::new(VcpuMode::OutsideGuestMode),
            requests: Cell::new(0),
            state: Cell::new(VcpuTdState::Uninitialized),
            tdvpr: Cell::new(None),
            tdvpr_allocated: Cell::new(false),
            tdcx: RefCell::new(Vec::new()),
            associated_cpu: Cell::new(None),
            loaded_cpu: Cell::new(None),
            task: Cell::new(None),
            signal_pending: Cell::new(false),
            pamt_cache: PamtCache::default(),
            spt_cache: RefCell::new(Vec::new()),
            guest: RefCell::new(crate::guest::Guest::idle()),
            coalescing: RefCell::new(None),
        }
    }

    /// `kvm_make_request()`.
    pub fn make_request(&self, bit: u32) {
        self.requests.set(self.requests.get() | bit);
    }

    /// `kvm_check_request()`: tests and clears.
    pub fn check_request(&self, bit: u32) -> bool {
        let pending = self.requests.get() & bit != 0;
        self.requests.set(self.requests.get() & !bit);
        pending
    }

    /// `kvm_request_pending()`.
    pub fn request_pending(&self) -> bool {
        self.requests.get() != 0
    }

    /// `kvm_test_request()`: tests without clearing.
    pub fn test_request(&self, bit: u32) -> bool {
        self.requests.get() & bit != 0
    }
}

/// A private leaf SPTE of the mirror page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorEntry {
    /// The guest_memfd page the GPA maps.
    pub page: Hpa,
    /// The page came from `alloc_page()` and goes back to it when the GPA is zapped.
    pub allocated: bool,
    /// Frozen (`FROZEN_SPTE`): a vCPU is installing it, so the TDX hook is running; others
    /// retry the fault.
    pub frozen: bool,
}

impl Packed for MirrorEntry {
    fn pack(self) -> u32 {
        pack_pfn(self.page) | if self.allocated { FLAG_0 } else { 0 } | if self.frozen { FLAG_1 } else { 0 }
    }

    fn unpack(bits: u32) -> Self {
        MirrorEntry { page: unpack_pfn(bits), allocated: bits & FLAG_0 != 0, frozen: bits & FLAG_1 != 0 }
    }
}

/// A non-leaf mirror SPTE: an S-EPT table KVM linked with TDH.MEM.SEPT.ADD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry {
    pub page: Hpa,
    /// Frozen while the TDX hook (SEPT.ADD) runs for it.
    pub frozen: bool,
}

/// The mirror page table of a TD's private GPAs (the TDP MMU's `mirror_root`).
#[derive(Debug, Default)]
pub struct Mirror {
    /// Leaf SPTEs by GFN.
    pub leaves: GfnMap<MirrorEntry>,
    /// Non-leaf SPTEs by (S-EPT level of the table's parent entry, index of the range the
    /// table covers at that level): level 1 is a 2MB range's table of 4KB entries, level 2
    /// a 1GB range's, level 3 a 512GB range's.
    pub tables: BTreeMap<(u8, u64), TableEntry>,
    /// The module built every table already (a TD that exists from the start): no
    /// SEPT.ADD is needed, and none are KVM's to free.
    pub prebuilt: bool,
}

/// The span of the range the table under an entry of `level` covers (level 1: 2MB).
pub const fn table_span(level: u8) -> u64 {
    PAGE_SIZE << (9 * level as u32)
}

/// A memslot the VMM registered.
pub struct Memslot {
    pub base_gfn: u64,
    pub npages: u64,
    pub state: Cell<MemslotState>,
}

/// Where a memslot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemslotState {
    Valid,
    /// `KVM_MEMSLOT_INVALID`: being deleted or moved; faults on it return RET_PF_RETRY.
    /// `wait`'s party is the task deleting it: a fault retrying on it waits for that task.
    Invalid {
        wait: WaitId,
    },
    Deleted,
}

/// What `kvm_vcpu_gfn_to_memslot()` finds for a GFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLookup {
    Valid,
    Invalid {
        wait: WaitId,
    },
    /// No memslot: the slot was deleted.
    None,
}

/// KVM's state of one TD.
pub struct KvmTd {
    pub td: TdId,
    /// `kvm->lock`.
    pub lock: Mutex,
    /// `kvm->slots_lock`.
    pub slots_lock: Mutex,
    /// `kvm->srcu`: protects the memslots; vCPUs read-hold it outside the guest.
    pub srcu: SrcuStruct,
    /// `kvm->mmu_lock`: read for faults, write for zaps.
    pub mmu_lock: RwLock,
    /// The mirror S-EPT. Protected by `mmu_lock` (leaves and tables change under it held
    /// for read with the SPTE frozen, or held for write).
    pub mirror: RefCell<Mirror>,
    /// guest_memfd's pages by GFN: (page, it came from `alloc_page()`). A page stays here
    /// from its first fault until a zap punches it out or the TD is destroyed.
    pub gmem: RefCell<GfnMap<(Hpa, bool)>>,
    /// In GFN order; invariant: no two overlap.
    pub memslots: Vec<Memslot>,
    /// `kvm->mmu_invalidate_seq`: bumped when an invalidation ends. Protected by `mmu_lock`
    /// (written with it held for write).
    pub mmu_invalidate_seq: Cell<u64>,
    /// `kvm->mmu_invalidate_in_progress` and the GFN range it covers.
    pub mmu_invalidate_in_progress: Cell<u32>,
    pub mmu_invalidate_range: Cell<(u64, u64)>,
    /// `kvm_tdx->wait_for_sept_zap`: while set, no vCPU enters the guest.
    pub wait_for_sept_zap: Cell<bool>,
    /// When `wait_for_sept_zap` was last set, for the TD-wide entry stall.
    pub zap_blocked_since: Cell<Option<Cycle>>,
    /// `kvm_tdx->state`.
    pub state: Cell<TdState>,
    /// The TD's HKID is assigned (`is_hkid_assigned()`).
    pub hkid_assigned: Cell<bool>,
    /// The TDR page, for a TD KVM built (`kvm_tdx->td.tdr_page`).
    pub tdr: Cell<Option<Hpa>>,
    /// `kvm->vm_bugged` / `kvm->vm_dead`.
    pub vm_dead: Cell<bool>,
    /// The VM exists in KVM (created by a step, or from the start).
    pub created: Cell<bool>,
    /// Its vCPUs, by index.
    pub vcpus: Vec<Rc<KvmVcpu>>,
}

impl KvmTd {
    pub fn new(sim: &sim_core::Sim, config: &KvmTdConfig, handoff_cycles: u64) -> KvmTd {
        let td = config.td;
        let vcpus: Vec<Rc<KvmVcpu>> =
            (0..config.vcpus).map(|index| Rc::new(KvmVcpu::new(sim, td, index))).collect();
        if config.exists {
            for vcpu in &vcpus {
                vcpu.tdvpr.set(Some(shortcut_tdvpr(vcpu.index)));
                vcpu.state.set(VcpuTdState::Initialized);
            }
        }
        let mut memslots: Vec<Memslot> = config
            .memslots
            .iter()
            .map(|&(gpa, pages)| Memslot {
                base_gfn: gpa / PAGE_SIZE,
                npages: pages,
                state: Cell::new(MemslotState::Valid),
            })
            .collect();
        // In GFN order, as KVM's gfn tree keeps them, for the lookup by GFN.
        memslots.sort_by_key(|slot| slot.base_gfn);
        KvmTd {
            td,
            lock: Mutex::with_class(sim, format!("kvm->lock[TD {}]", td.0), "kvm->lock"),
            slots_lock: Mutex::with_class(sim, format!("kvm->slots_lock[TD {}]", td.0), "kvm->slots_lock"),
            srcu: SrcuStruct::new("kvm->srcu", "synchronize_srcu(&kvm->srcu)"),
            mmu_lock: RwLock::new(sim, format!("mmu_lock[TD {}]", td.0), handoff_cycles),
            mirror: RefCell::new(Mirror { prebuilt: config.exists, ..Mirror::default() }),
            gmem: RefCell::new(GfnMap::default()),
            memslots,
            mmu_invalidate_seq: Cell::new(0),
            mmu_invalidate_in_progress: Cell::new(0),
            mmu_invalidate_range: Cell::new((0, 0)),
            wait_for_sept_zap: Cell::new(false),
            zap_blocked_since: Cell::new(None),
            state: Cell::new(if config.exists { TdState::Runnable } else { TdState::Uninitialized }),
            hkid_assigned: Cell::new(config.exists),
            tdr: Cell::new(None),
            vm_dead: Cell::new(false),
            created: Cell::new(config.exists),
            vcpus,
        }
    }

    pub fn vcpu(&self, index: u32) -> Option<&Rc<KvmVcpu>> {
        self.vcpus.get(index as usize)
    }

    /// A VM of this number created again after `kvm_destroy_vm()` (a VMM's next TD): the
    /// `struct kvm` and its vCPUs start over as `kvm_create_vm()` allocates them, with the
    /// same locks (their lockdep classes and statistics go on, as one lock class would).
    /// The destroyed VM left no page mapped and no vCPU loaded.
    pub fn recreate(&self) {
        debug_assert!(!self.created.get(), "recreate: the VM is still alive");
        *self.mirror.borrow_mut() = Mirror::default();
        self.gmem.borrow_mut().clear();
        for slot in &self.memslots {
            slot.state.set(MemslotState::Valid);
        }
        self.mmu_invalidate_seq.set(0);
        self.mmu_invalidate_in_progress.set(0);
        self.mmu_invalidate_range.set((0, 0));
        self.wait_for_sept_zap.set(false);
        self.zap_blocked_since.set(None);
        self.state.set(TdState::Uninitialized);
        self.hkid_assigned.set(false);
        self.tdr.set(None);
        self.vm_dead.set(false);
        for vcpu in &self.vcpus {
            vcpu.mode.set(VcpuMode::OutsideGuestMode);
            vcpu.requests.set(0);
            vcpu.state.set(VcpuTdState::Uninitialized);
            vcpu.tdvpr.set(None);
            vcpu.tdvpr_allocated.set(false);
            vcpu.tdcx.borrow_mut().clear();
            vcpu.associated_cpu.set(None);
            vcpu.signal_pending.set(false);
            *vcpu.guest.borrow_mut() = crate::guest::Guest::idle();
        }
    }

    /// `kvm_vcpu_gfn_to_memslot()` as the fault path calls it: inside `kvm->srcu` (or with
    /// `kvm->slots_lock`), as `srcu_dereference_check()` asserts.
    pub fn vcpu_gfn_to_memslot(&self, cpu: &Cpu, gfn: u64) -> SlotLookup {
        crate::kernel::srcu::srcu_dereference_check(
            cpu,
            &self.srcu,
            self.slots_lock.resource,
            "kvm_vcpu_gfn_to_memslot",
        );
        self.gfn_to_memslot(gfn)
    }

    /// The memslot of `gfn`, read without the checks.
    pub fn gfn_to_memslot(&self, gfn: u64) -> SlotLookup {
        // The first slot ending above `gfn` (they do not overlap and are in GFN order).
        let at = self.memslots.partition_point(|slot| slot.base_gfn + slot.npages <= gfn);
        let slot = self.memslots.get(at).filter(|slot| slot.base_gfn <= gfn);
        match slot.map(|slot| slot.state.get()) {
            None | Some(MemslotState::Valid) => SlotLookup::Valid,
            Some(MemslotState::Invalid { wait }) => SlotLookup::Invalid { wait },
            Some(MemslotState::Deleted) => SlotLookup::None,
        }
    }

    /// `mmu_invalidate_retry_gfn()`: a fault that read `mmu_seq` before looking up its page
    /// must retry if an invalidation of `gfn` is in progress or one ended since.
    pub fn mmu_invalidate_retry_gfn(&self, mmu_seq: u64, gfn: u64) -> bool {
        let (start, end) = self.mmu_invalidate_range.get();
        if self.mmu_invalidate_in_progress.get() > 0 && (start..end).contains(&gfn) {
            return true;
        }
        self.mmu_invalidate_seq.get() != mmu_seq
    }

    /// The memslot starting at `gpa` with `pages` pages, as the scenario registered it.
    pub fn memslot(&self, gpa: Gpa, pages: u64) -> Option<&Memslot> {
        let gfn = gpa.0 / PAGE_SIZE;
        let at = self.memslots.binary_search_by_key(&gfn, |slot| slot.base_gfn).ok()?;
        self.memslots.get(at).filter(|slot| slot.npages == pages)
    }

    /// The pages KVM holds for this TD: guest_memfd's, the S-EPT tables', the vCPUs' caches
    /// and control pages, the TDR. For the checker's leak accounting.
    /// Each page once or more, to `held`: a TD of millions of pages is walked, never
    /// collected.
    pub fn for_each_held_page(&self, mut held: impl FnMut(Hpa)) {
        self.gmem.borrow().iter().for_each(|(_, (page, _))| held(page));
        self.mirror.borrow().leaves.iter().for_each(|(_, entry)| held(entry.page));
        self.mirror.borrow().tables.values().for_each(|table| held(table.page));
        for vcpu in &self.vcpus {
            vcpu.pamt_cache.borrow().iter().copied().for_each(&mut held);
            vcpu.spt_cache.borrow().iter().copied().for_each(&mut held);
            vcpu.tdcx.borrow().iter().copied().for_each(&mut held);
            vcpu.tdvpr.get().filter(|_| vcpu.tdvpr_allocated.get()).into_iter().for_each(&mut held);
        }
        self.tdr.get().into_iter().for_each(held);
    }
}

/// The KVM state of `td`. The loader names only TDs the host knows.
pub fn kvm_td(cpu: &Cpu, td: TdId) -> &KvmTd {
    cpu.host().kvm_tds.get(&td).expect("the scenario loader only names TDs the host knows")
}

/// `kvm_vm_bugged()` after a `KVM_BUG_ON()`: the VM is dead, every vCPU gets
/// KVM_REQ_VM_DEAD and is kicked out of the guest. The WARN itself is the caller's.
pub async fn kvm_vm_bugged(cpu: &Cpu, kvm: &KvmTd) {
    kvm.vm_dead.set(true);
    kvm_make_all_cpus_request(cpu, kvm, request::VM_DEAD).await;
}

/// `kvm_make_all_cpus_request(kvm, req)` with `KVM_REQUEST_WAIT`: sets `req` on every vCPU;
/// a vCPU in guest mode is moved to EXITING_GUEST_MODE and its CPU sent an IPI, which makes
/// the guest exit; waits until each of those CPUs ran the (empty) handler, which a vCPU's
/// CPU does once the vCPU re-enables IRQs after its VM exit.
///
/// Kernel: `kvm_make_all_cpus_request()` -> `kvm_make_vcpus_request_mask()`,
/// virt/kvm/kvm_main.c. May be called with `mmu_lock` held for write: the sender spins in
/// `csd_lock_wait()`.
pub async fn kvm_make_all_cpus_request(cpu: &Cpu, kvm: &KvmTd, req: u32) {
    cpu.work(cpu.host().costs.kick_all_vcpus).await;
    let mut targets = Vec::new();
    for vcpu in &kvm.vcpus {
        vcpu.make_request(req);
        if let Some(target) = kvm_vcpu_exiting_guest_mode(cpu, vcpu)
            && !targets.contains(&target)
        {
            targets.push(target);
        }
    }
    cpu.host().stats.borrow_mut().kicks += 1;
    if targets.is_empty() {
        return;
    }
    let ack: OnCpu<()> = Rc::new(|on: Cpu| Box::pin(async move { ack_kick(&on).await }));
    smp_call_function_many(cpu, &targets, ack, true).await;
}

/// `kvm_request_needs_ipi()` / `kvm_vcpu_exiting_guest_mode()`: a vCPU in guest mode moves
/// to EXITING_GUEST_MODE; the CPU to send the IPI that makes its guest exit, unless it is
/// the sender's own.
pub(crate) fn kvm_vcpu_exiting_guest_mode(cpu: &Cpu, vcpu: &KvmVcpu) -> Option<CpuId> {
    if vcpu.mode.get() != VcpuMode::InGuestMode {
        return None;
    }
    vcpu.mode.set(VcpuMode::ExitingGuestMode);
    vcpu.loaded_cpu.get().filter(|&target| target != cpu.id)
}

/// `ack_kick()`: the kick's IPI handler, empty; running it is the acknowledgement.
pub(crate) async fn ack_kick(cpu: &Cpu) {
    cpu.busy(cpu.host().costs.ipi_handler).await;
}

/// The 6.19 TD state guard, held: `kvm->lock`, every `vcpu->mutex`, `kvm->slots_lock`.
#[must_use = "the guard is released with tdx_td_guard_unlock()"]
pub struct TdGuard(());

/// Takes the TD state guard (KVM TDX changes for 6.19): TD-scoped ioctls serialise with each
/// other and with every vCPU ioctl, KVM_RUN included.
///
/// Kernel: `kvm_lock_all_vcpus()` between `mutex_lock(&kvm->lock)` and
/// `mutex_lock(&kvm->slots_lock)`, arch/x86/kvm/vmx/tdx.c (6.19).
pub async fn tdx_td_guard_lock(cpu: &Cpu, kvm: &KvmTd) -> TdGuard {
    mutex_lock(cpu, kvm.lock).await;
    for vcpu in &kvm.vcpus {
        mutex_lock(cpu, vcpu.mutex).await;
    }
    mutex_lock(cpu, kvm.slots_lock).await;
    TdGuard(())
}

/// Releases the TD state guard.
pub fn tdx_td_guard_unlock(cpu: &Cpu, kvm: &KvmTd, guard: TdGuard) {
    let TdGuard(()) = guard;
    mutex_unlock(cpu, kvm.slots_lock);
    for vcpu in kvm.vcpus.iter().rev() {
        mutex_unlock(cpu, vcpu.mutex);
    }
    mutex_unlock(cpu, kvm.lock);
}

/// The vCPU `index` of `kvm`, or -EINVAL when the TD has no such vCPU or KVM has not
/// created the VM yet (the ioctl's fd does not exist).
pub fn kvm_get_vcpu(kvm: &KvmTd, index: u32) -> Result<Rc<KvmVcpu>, Errno> {
    if !kvm.created.get() {
        return Err(Errno::EINVAL);
    }
    kvm.vcpu(index).cloned().ok_or(Errno::EINVAL)
}
