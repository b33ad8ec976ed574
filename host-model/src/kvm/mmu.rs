//! Group 3: removal of private pages under `mmu_lock` held for write — TDH.MEM.RANGE.BLOCK,
//! TDH.MEM.TRACK, TDH.MEM.PAGE.REMOVE through `tdh_do_no_vcpus()`, then
//! TDH.PHYMEM.PAGE.WBINVD and the DPAMT put (arch/x86/kvm/vmx/tdx.c, mmu/tdp_mmu.c).
//!
//! These cannot fail: KVM's zap paths have no error path. A BUSY answer sets
//! `wait_for_sept_zap`, kicks every vCPU out of the guest and retries exactly once; after
//! that no vCPU of the TD can be inside the module, so a second BUSY is KVM_BUG_ON.

use seam_model::{Gpa, Hpa, LeafCall, LeafOutput, PAGE_SIZE, TdId};
use sim_core::Span;

use super::tdx_fault::{note_busy_streak, sept_seamcall};
use super::vm::{KvmTd, TdState, kvm_make_all_cpus_request, kvm_td, kvm_vm_bugged, request};
use crate::kernel::Errno;
use crate::kernel::cpu::{Cpu, mark};
use crate::kernel::lockdep::{
    lockdep_assert_held, lockdep_assert_held_write, lockdep_assert_preemption_disabled, might_sleep,
};
use crate::kernel::page_alloc::free_page;
use crate::kernel::rwlock::{cond_resched_rwlock_write, write_lock, write_unlock};
use crate::tdx::dpamt::{DpamtDesign, tdx_pamt_put};
use crate::tdx::seamcall::seamcall;

/// One removal SEAMCALL that must not fail. In the kick-and-block designs: on BUSY, keep
/// every vCPU out of the guest (`wait_for_sept_zap`), kick them all out and wait for the
/// acknowledgements, then retry exactly once. Under K0: the in-place retry with its bound.
///
/// Kernel: `tdh_do_no_vcpus()`, arch/x86/kvm/vmx/tdx.c (Sean Christopherson's rework of
/// Yan Zhao's patch 4, 2025-10).
pub async fn tdh_do_no_vcpus(cpu: &Cpu, kvm: &KvmTd, call: LeafCall) -> LeafOutput {
    lockdep_assert_held_write(cpu, kvm.mmu_lock.resource, "tdh_do_no_vcpus");
    lockdep_assert_preemption_disabled(cpu, "tdh_do_no_vcpus");
    if !cpu.host().config.sept_busy.kick_and_block() {
        return sept_seamcall(cpu, call).await;
    }
    let output = seamcall(cpu, call).await;
    if !output.status.is_operand_busy() {
        return output;
    }
    cpu.host().stats.borrow_mut().sept_zap_kicks += 1;
    kvm.wait_for_sept_zap.set(true);
    kvm.zap_blocked_since.set(Some(cpu.sim.now()));
    cpu.mark(Span::Begin, mark::KVM, 1, 0, || "wait_for_sept_zap = true; kick all vCPUs".to_string());
    kvm_make_all_cpus_request(cpu, kvm, request::OUTSIDE_GUEST_MODE).await;
    cpu.host().observer.sept_zap_retrying(cpu, kvm.td, &call);
    let retried = seamcall(cpu, call).await;
    kvm.wait_for_sept_zap.set(false);
    if let Some(since) = kvm.zap_blocked_since.take() {
        cpu.host().stats.borrow_mut().sept_zap_stall_cycles += cpu.sim.now().since(since);
    }
    cpu.mark(Span::End, mark::KVM, 1, 0, || "wait_for_sept_zap = false".to_string());
    note_busy_streak(cpu, if retried.status.is_operand_busy() { 2 } else { 1 });
    retried
}

/// `KVM_BUG_ON(err, kvm)` for a removal SEAMCALL: the WARN, and the VM is dead.
async fn removal_failed(cpu: &Cpu, kvm: &KvmTd, function: &str, call: LeafCall, output: LeafOutput) {
    let after = match cpu.host().config.sept_busy.kick_and_block() {
        true if output.status.is_operand_busy() => " (BUSY again after the kick and its one retry)",
        false if output.status.is_operand_busy() => " (BUSY after host.sept_retries in-place retries)",
        true | false => "",
    };
    cpu.warn(function, format!("KVM_BUG_ON: {call} failed: {}{after}", output.status));
    kvm_vm_bugged(cpu, kvm).await;
}

/// TDH.MEM.TRACK through `tdh_do_no_vcpus()`, then always a kick: every vCPU still running
/// in the old epoch exits, so the epoch retires and the TLBs are flushed at the next entry.
///
/// Kernel: `tdx_track()`, arch/x86/kvm/vmx/tdx.c.
async fn tdx_track(cpu: &Cpu, kvm: &KvmTd) -> Result<(), Errno> {
    // Before the TD is finalised no vCPU has run.
    if kvm.state.get() != TdState::Runnable {
        return Ok(());
    }
    lockdep_assert_held_write(cpu, kvm.mmu_lock.resource, "tdx_track");
    let call = LeafCall::Track { td: kvm.td };
    let output = tdh_do_no_vcpus(cpu, kvm, call).await;
    if !output.status.is_success() {
        removal_failed(cpu, kvm, "tdx_track", call, output).await;
        return Err(Errno::EIO);
    }
    kvm_make_all_cpus_request(cpu, kvm, request::OUTSIDE_GUEST_MODE).await;
    Ok(())
}

/// Removes the private page `page` at `gfn` of the TD, with `mmu_lock` held for write:
/// BLOCK, TRACK, PAGE.REMOVE, WBINVD, then the DPAMT put (D1: the hint-driven REMOVE). Once
/// the HKID is released (teardown) the page is reclaimed instead.
///
/// Kernel: `tdx_sept_remove_private_spte()`, arch/x86/kvm/vmx/tdx.c (6.19).
async fn tdx_sept_remove_private_spte(cpu: &Cpu, kvm: &KvmTd, gfn: u64, page: Hpa) -> Result<(), Errno> {
    lockdep_assert_held(cpu, kvm.mmu_lock.resource, "tdx_sept_remove_private_spte");
    if !kvm.hkid_assigned.get() {
        return super::teardown::tdx_reclaim_page(cpu, page).await;
    }
    let td = kvm.td;
    let gpa = Gpa(gfn * PAGE_SIZE);
    let block = LeafCall::RangeBlock { td, gpa };
    let output = tdh_do_no_vcpus(cpu, kvm, block).await;
    // GPA_RANGE_ALREADY_BLOCKED is informational (class 0): the entry is blocked.
    if !output.status.is_success() && output.status.class() != 0 {
        removal_failed(cpu, kvm, "tdx_sept_remove_private_spte", block, output).await;
        return Err(Errno::EIO);
    }
    tdx_track(cpu, kvm).await?;
    let remove = LeafCall::PageRemove { td, gpa };
    let output = tdh_do_no_vcpus(cpu, kvm, remove).await;
    if !output.status.is_success() {
        removal_failed(cpu, kvm, "tdx_sept_remove_private_spte", remove, output).await;
        return Err(Errno::EIO);
    }
    let wbinvd = LeafCall::PageWbinvd { page };
    let flushed = seamcall(cpu, wbinvd).await;
    if !flushed.status.is_success() {
        removal_failed(cpu, kvm, "tdx_sept_remove_private_spte", wbinvd, flushed).await;
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

/// The TDP MMU's zap of the private leaves for GFNs `[start, end)`, with `mmu_lock` held for
/// write: each mapped leaf goes through the TDX removal hook. With `can_yield` it gives
/// `mmu_lock` and the CPU up after a leaf when a fault waits for the lock or a task for the
/// CPU (`tdp_mmu_iter_cond_resched()`), and carries on after the last GFN it zapped.
///
/// Kernel: `kvm_tdp_mmu_unmap_gfn_range()` -> `tdp_mmu_zap_leafs()` ->
/// `remove_external_spte()`, mmu/tdp_mmu.c.
pub async fn tdp_mmu_zap_leafs(
    cpu: &Cpu,
    kvm: &KvmTd,
    start: u64,
    end: u64,
    can_yield: bool,
) -> Result<(), Errno> {
    lockdep_assert_held_write(cpu, kvm.mmu_lock.resource, "tdp_mmu_zap_leafs");
    let mut from = start;
    loop {
        let next = kvm.mirror.borrow().leaves.first_in(from..end);
        let Some((gfn, entry)) = next else { return Ok(()) };
        debug_assert!(!entry.frozen, "no fault holds a frozen SPTE under mmu_lock held for write");
        tdx_sept_remove_private_spte(cpu, kvm, gfn, entry.page).await?;
        kvm.mirror.borrow_mut().leaves.remove(gfn);
        cpu.progress();
        from = gfn + 1;
        if can_yield {
            cond_resched_rwlock_write(cpu, kvm.mmu_lock).await;
        }
    }
}

/// guest_memfd gives back the pages of GFNs `[start, end)` it allocated (the truncate after
/// a punch-hole's zap), outside `mmu_lock`.
pub async fn kvm_gmem_truncate(cpu: &Cpu, kvm: &KvmTd, start: u64, end: u64) {
    might_sleep(cpu, "kvm_gmem_punch_hole");
    let gone: Vec<(u64, (Hpa, bool))> = kvm.gmem.borrow().range(start..end).collect();
    for (gfn, (page, allocated)) in gone {
        // A page the fault path mapped and the zap did not reach stays.
        if kvm.mirror.borrow().leaves.contains_key(gfn) {
            continue;
        }
        kvm.gmem.borrow_mut().remove(gfn);
        if allocated {
            free_page(cpu, page).await;
        }
    }
}

/// Removal of `count` private pages from `gpa` of `td`: a guest_memfd punch-hole (or
/// conversion to shared) invalidates the range under `mmu_lock` held for write, then frees
/// the pages; faults that looked a page up meanwhile retry.
///
/// Kernel: `kvm_gmem_punch_hole()` -> `kvm_gmem_invalidate_begin()` ->
/// `kvm_mmu_unmap_gfn_range()`, virt/kvm/guest_memfd.c.
pub async fn zap(cpu: &Cpu, td: TdId, gpa: u64, count: u32) -> Result<(), Errno> {
    might_sleep(cpu, "kvm_gmem_punch_hole");
    let kvm = kvm_td(cpu, td);
    let start = gpa / PAGE_SIZE;
    let end = start + u64::from(count);
    // kvm_gmem_invalidate_begin(): faults on the range that looked their page up before
    // now retry (mmu_invalidate_retry_gfn()).
    write_lock(cpu, kvm.mmu_lock).await;
    kvm.mmu_invalidate_in_progress.set(kvm.mmu_invalidate_in_progress.get() + 1);
    kvm.mmu_invalidate_range.set((start, end));
    let ret = tdp_mmu_zap_leafs(cpu, kvm, start, end, true).await;
    write_unlock(cpu, kvm.mmu_lock);
    kvm_gmem_truncate(cpu, kvm, start, end).await;
    // kvm_gmem_invalidate_end().
    write_lock(cpu, kvm.mmu_lock).await;
    kvm.mmu_invalidate_seq.set(kvm.mmu_invalidate_seq.get() + 1);
    kvm.mmu_invalidate_in_progress.set(kvm.mmu_invalidate_in_progress.get() - 1);
    write_unlock(cpu, kvm.mmu_lock);
    ret
}
