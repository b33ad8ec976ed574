//! Memslot deletion (`KVM_SET_USER_MEMORY_REGION2` with size 0): the slot is marked
//! invalid, `synchronize_srcu(&kvm->srcu)` waits for the vCPUs inside read sections, the
//! slot's private pages are zapped, then the slot is removed and SRCU synchronised again;
//! and creation of a deleted slot again (`KVM_SET_USER_MEMORY_REGION2` with the slot's
//! size): bound to its guest_memfd, made visible, SRCU synchronised (virt/kvm/kvm_main.c).
//!
//! The memslots a TD can have are those the scenario registers (`KvmTdConfig::memslots`):
//! a deletion takes one away, a creation gives back one that was deleted.

use seam_model::{Gpa, PAGE_SIZE, TdId};
use sim_core::Span;

use super::mmu::tdp_mmu_zap_leafs;
use super::vm::{KvmTd, Memslot, MemslotState, kvm_td};
use crate::kernel::Errno;
use crate::kernel::cpu::{Cpu, mark};
use crate::kernel::lockdep::{lockdep_assert_held, might_sleep};
use crate::kernel::mutex::{mutex_lock, mutex_unlock};
use crate::kernel::rwlock::{write_lock, write_unlock};
use crate::kernel::srcu::synchronize_srcu;

/// What a `KVM_SET_USER_MEMORY_REGION` does to a memslot (the kernel's `enum
/// kvm_mr_change`, the two changes the workloads make).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemslotChange {
    /// `KVM_MR_DELETE`: -EINVAL if there is no valid slot (already deleted).
    Delete,
    /// `KVM_MR_CREATE` of a slot deleted before: -EEXIST while it still exists (valid, or
    /// invalid with its deletion under way), -EINVAL for a slot the VMM never registered.
    Create,
}

/// Deletes, or creates again, the memslot of `pages` 4KB pages at `gpa` of `td`.
///
/// Kernel: `kvm_set_memory_region()` (under `kvm->slots_lock`) -> `kvm_set_memslot(...,
/// KVM_MR_DELETE)`; for a creation `kvm_gmem_bind()`, then `kvm_set_memslot(kvm, NULL, new,
/// KVM_MR_CREATE)`, virt/kvm/kvm_main.c.
pub async fn kvm_set_memory_region(
    cpu: &Cpu,
    td: TdId,
    gpa: Gpa,
    pages: u64,
    change: MemslotChange,
) -> Result<(), Errno> {
    might_sleep(cpu, "kvm_set_memory_region");
    let kvm = kvm_td(cpu, td);
    mutex_lock(cpu, kvm.slots_lock).await;
    let state = kvm.memslot(gpa, pages).map(|slot| (slot, slot.state.get()));
    let ret = match (change, state) {
        (MemslotChange::Delete, Some((slot, MemslotState::Valid))) => {
            kvm_set_memslot_delete(cpu, kvm, slot).await;
            Ok(())
        }
        (MemslotChange::Delete, Some(_) | None) => Err(Errno::EINVAL),
        (MemslotChange::Create, Some((slot, MemslotState::Deleted))) => {
            kvm_set_memslot_create(cpu, kvm, slot).await;
            Ok(())
        }
        (MemslotChange::Create, Some(_)) => Err(Errno::EEXIST),
        (MemslotChange::Create, None) => Err(Errno::EINVAL),
    };
    mutex_unlock(cpu, kvm.slots_lock);
    ret
}

/// `kvm_set_memslot(kvm, NULL, new, KVM_MR_CREATE)`: `kvm_prepare_memory_region()` (for a
/// TD nothing to allocate: no dirty log, no rmaps for private memory), then
/// `kvm_create_memslot()`: `kvm_replace_memslot()` puts the slot in the inactive set and
/// `kvm_activate_memslot()` swaps it in, `kvm_swap_active_memslots()` waiting out the SRCU
/// readers that still see the old set; then `kvm_commit_memory_region()`. The slot's
/// private pages are not mapped: the guest's next access to each faults (PAGE.AUG) and
/// must be accepted again.
async fn kvm_set_memslot_create(cpu: &Cpu, kvm: &KvmTd, slot: &Memslot) {
    lockdep_assert_held(cpu, kvm.slots_lock.resource, "kvm_set_memslot");
    debug_assert!(
        kvm.mirror.borrow().leaves.first_in(slot.base_gfn..slot.base_gfn + slot.npages).is_none(),
        "the deletion zapped every private leaf of the slot"
    );
    slot.state.set(MemslotState::Valid);
    cpu.mark(Span::Instant, mark::KVM, 4, slot.base_gfn * PAGE_SIZE, || {
        format!("memslot {:#x} x{} created", slot.base_gfn * PAGE_SIZE, slot.npages)
    });
    synchronize_srcu(cpu, &kvm.srcu).await;
}

/// `kvm_set_memslot(kvm, old, NULL, KVM_MR_DELETE)`: invalidate, then delete.
async fn kvm_set_memslot_delete(cpu: &Cpu, kvm: &KvmTd, slot: &Memslot) {
    lockdep_assert_held(cpu, kvm.slots_lock.resource, "kvm_set_memslot");
    kvm_invalidate_memslot(cpu, kvm, slot).await;
    kvm_delete_memslot(cpu, kvm, slot).await;
}

/// `kvm_invalidate_memslot()`: the slot becomes `KVM_MEMSLOT_INVALID` (faults on it return
/// RET_PF_RETRY), `kvm_swap_active_memslots()` waits out every SRCU reader that may still see
/// the valid slot, and `kvm_arch_flush_shadow_memslot()` zaps its private pages.
async fn kvm_invalidate_memslot(cpu: &Cpu, kvm: &KvmTd, slot: &Memslot) {
    // The deletion is what a fault retrying on the invalid slot waits for.
    let wait = cpu.sim.with(|engine| {
        let wait = engine.new_wait();
        engine.wait_add_party(wait, cpu.task);
        wait
    });
    slot.state.set(MemslotState::Invalid { wait });
    cpu.mark(Span::Instant, mark::KVM, 2, slot.base_gfn * PAGE_SIZE, || {
        format!("memslot {:#x} x{} KVM_MEMSLOT_INVALID", slot.base_gfn * PAGE_SIZE, slot.npages)
    });
    // kvm_swap_active_memslots(): the new memslots are visible, then readers drain.
    synchronize_srcu(cpu, &kvm.srcu).await;
    kvm_arch_flush_shadow_memslot(cpu, kvm, slot).await;
}

/// `kvm_arch_flush_shadow_memslot()` for a TD: zap the slot's private leaves under
/// `mmu_lock` held for write. guest_memfd keeps its pages (the file outlives the binding);
/// they go when the TD does.
async fn kvm_arch_flush_shadow_memslot(cpu: &Cpu, kvm: &KvmTd, slot: &Memslot) {
    let (start, end) = (slot.base_gfn, slot.base_gfn + slot.npages);
    write_lock(cpu, kvm.mmu_lock).await;
    // A failed removal is KVM_BUG_ON (already reported); the deletion goes on.
    let _ = tdp_mmu_zap_leafs(cpu, kvm, start, end, true).await;
    write_unlock(cpu, kvm.mmu_lock);
}

/// `kvm_delete_memslot()`: the invalid slot is replaced by nothing; new faults find no
/// memslot (and a fault retrying on the invalid one sees it gone), then SRCU readers drain
/// once more.
async fn kvm_delete_memslot(cpu: &Cpu, kvm: &KvmTd, slot: &Memslot) {
    let MemslotState::Invalid { wait } = slot.state.get() else {
        unreachable!("kvm_delete_memslot: the slot was invalidated first");
    };
    slot.state.set(MemslotState::Deleted);
    cpu.sim.with(|engine| {
        let party = engine.wait_party_of(wait, cpu.task).expect("the deleter is the invalid slot's party");
        engine.wait_party_done(wait, party);
    });
    cpu.mark(Span::Instant, mark::KVM, 3, slot.base_gfn * PAGE_SIZE, || "memslot deleted".to_string());
    synchronize_srcu(cpu, &kvm.srcu).await;
}
