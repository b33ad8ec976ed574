//! TD teardown (`kvm_destroy_vm()` for a TD, arch/x86/kvm/vmx/tdx.c): the HKID is released
//! under `cpus_read_lock()` + `tdx_lock` (TDH.MNG.VPFLUSHDONE, TDH.PHYMEM.CACHE.WB on one CPU
//! per package resumed while it is interrupted, TDH.MNG.KEY.FREEID), then every page the TD
//! owned is reclaimed (TDH.PHYMEM.PAGE.RECLAIM) and its DPAMT reference put: private pages,
//! the vCPUs' control pages, S-EPT tables, and the TDR last. A failure leaks the HKID or
//! the page, as the kernel does (with its message).

use std::rc::Rc;

use seam_model::status::{TDX_FLUSHVP_NOT_DONE, TDX_INTERRUPTED_RESUMABLE, TDX_NO_HKID_READY_TO_WBCACHE};
use seam_model::{Hpa, LeafCall, TdId, TdxStatus};
use sim_core::CpuId;

use super::main::kvm_put_usage;
use super::mmu::tdp_mmu_zap_leafs;
use super::vcpu::tdx_flush_vp_on_cpu;
use super::vm::{KvmTd, TdState, kvm_td, kvm_vm_bugged};
use crate::kernel::Errno;
use crate::kernel::completion::{OnCpu, smp_call_function_many};
use crate::kernel::cpu::Cpu;
use crate::kernel::lockdep::{lockdep_assert_cpus_held, might_sleep};
use crate::kernel::mutex::{down_read, mutex_lock, mutex_unlock, up_read};
use crate::kernel::page_alloc::free_page;
use crate::kernel::rwlock::{write_lock, write_unlock};
use crate::tdx::dpamt::tdx_pamt_put;
use crate::tdx::enable::first_online_cpu_of_package;
use crate::tdx::seamcall::seamcall;

/// `TDX_SEAMCALL_RETRIES`: how many TDH.PHYMEM.CACHE.WB calls one CPU makes at most.
pub const TDX_SEAMCALL_RETRIES: u32 = 10_000;

/// Destroys TD `td` once the VMM has closed its fds: waits for every vCPU thread to leave
/// KVM_RUN, releases the HKID, reclaims the TD's pages and drops the VM's usage count.
/// -EINVAL for a TD KVM has not created (or already destroyed).
///
/// Kernel: `kvm_destroy_vm()`: `kvm_arch_pre_destroy_vm()` -> `tdx_mmu_release_hkid()`;
/// the MMU notifier's zap of everything; `kvm_arch_destroy_vm()` -> `tdx_vcpu_free()`,
/// `kvm_mmu_uninit_vm()`, `tdx_vm_destroy()`.
pub async fn kvm_destroy_vm(cpu: &Cpu, td: TdId) -> Result<(), Errno> {
    might_sleep(cpu, "kvm_destroy_vm");
    let kvm = kvm_td(cpu, td);
    if !kvm.created.get() {
        return Err(Errno::EINVAL);
    }
    // The last reference goes with the last vCPU fd: every KVM_RUN has returned.
    for vcpu in &kvm.vcpus {
        mutex_lock(cpu, vcpu.mutex).await;
        mutex_unlock(cpu, vcpu.mutex);
    }
    kvm.created.set(false);
    tdx_mmu_release_hkid(cpu, kvm).await;
    kvm_flush_shadow_all(cpu, kvm).await;
    for vcpu in &kvm.vcpus {
        tdx_vcpu_free(cpu, kvm, vcpu).await;
    }
    tdx_free_sept_tables(cpu, kvm).await;
    kvm_gmem_release(cpu, kvm).await;
    tdx_reclaim_td_control_pages(cpu, kvm).await;
    kvm_put_usage(cpu).await;
    cpu.host().observer.td_destroyed(cpu, td);
    Ok(())
}

/// Releases the TD's HKID: every vCPU flushed from its CPU, TDH.MNG.VPFLUSHDONE, the cache
/// write-back on one online CPU of each package, TDH.MNG.KEY.FREEID — under
/// `cpus_read_lock()` so the packages' CPUs stay as chosen, and `tdx_lock` because these
/// leaves take module-global locks. A failure leaks the HKID.
///
/// Kernel: `tdx_mmu_release_hkid()`, arch/x86/kvm/vmx/tdx.c.
async fn tdx_mmu_release_hkid(cpu: &Cpu, kvm: &KvmTd) {
    if !kvm.hkid_assigned.get() {
        return;
    }
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    let global = &cpu.host().kvm;
    down_read(cpu, hotplug_lock).await;
    for vcpu in &kvm.vcpus {
        if let Some(associated) = vcpu.associated_cpu.get() {
            tdx_flush_vp_on_cpu(cpu, vcpu, associated).await;
        }
    }
    mutex_lock(cpu, global.tdx_lock).await;
    let td = kvm.td;
    let flushed = seamcall(cpu, LeafCall::MngVpflushdone { td }).await;
    if flushed.status.without_operand() == TDX_FLUSHVP_NOT_DONE || !flushed.status.is_success() {
        if flushed.status.without_operand() != TDX_FLUSHVP_NOT_DONE {
            cpu.warn(
                "tdx_mmu_release_hkid",
                format!("KVM_BUG_ON: TDH.MNG.VPFLUSHDONE failed: {}", flushed.status),
            );
            kvm_vm_bugged(cpu, kvm).await;
        }
        cpu.printk("pr_err", "tdh_mng_vpflushdone() failed. HKID is leaked.");
        mutex_unlock(cpu, global.tdx_lock);
        up_read(cpu, hotplug_lock);
        return;
    }
    lockdep_assert_cpus_held(cpu, "tdx_mmu_release_hkid");
    let targets: Vec<CpuId> = (0..cpu.host().config.packages)
        .filter_map(|package| first_online_cpu_of_package(cpu, package))
        .collect();
    on_each_cpu_mask(cpu, &targets).await;
    // A failed write-back makes KEY.FREEID fail.
    let freed = seamcall(cpu, LeafCall::MngKeyFreeid { td }).await;
    if freed.status.is_success() {
        kvm.hkid_assigned.set(false);
        global.hkids_allocated.set(global.hkids_allocated.get().saturating_sub(1));
    } else {
        cpu.warn("tdx_mmu_release_hkid", format!("KVM_BUG_ON: TDH.MNG.KEY.FREEID failed: {}", freed.status));
        cpu.printk("pr_err", "tdh_mng_key_freeid() failed. HKID is leaked.");
        kvm_vm_bugged(cpu, kvm).await;
    }
    mutex_unlock(cpu, global.tdx_lock);
    up_read(cpu, hotplug_lock);
}

/// `on_each_cpu_mask(targets, smp_func_do_phymem_cache_wb, NULL, true)`: the write-back on
/// each target CPU with IRQs off, this CPU's own in place.
async fn on_each_cpu_mask(cpu: &Cpu, targets: &[CpuId]) {
    let others: Vec<CpuId> = targets.iter().copied().filter(|&target| target != cpu.id).collect();
    let function: OnCpu<()> =
        Rc::new(|on: Cpu| Box::pin(async move { smp_func_do_phymem_cache_wb(&on).await }));
    if targets.contains(&cpu.id) {
        cpu.preempt_disable();
        let flags = cpu.local_irq_save();
        smp_func_do_phymem_cache_wb(cpu).await;
        cpu.local_irq_restore(flags);
        cpu.preempt_enable();
    }
    if !others.is_empty() {
        smp_call_function_many(cpu, &others, function, true).await;
    }
}

/// TDH.PHYMEM.CACHE.WB on this CPU's package, resumed while it answers
/// TDX_INTERRUPTED_RESUMABLE, at most `TDX_SEAMCALL_RETRIES` calls; NO_HKID_READY_TO_WBCACHE
/// means another CPU did it. Anything else is WARN_ON_ONCE.
///
/// Kernel: `smp_func_do_phymem_cache_wb()`, arch/x86/kvm/vmx/tdx.c.
async fn smp_func_do_phymem_cache_wb(cpu: &Cpu) {
    let mut err = TdxStatus(0);
    for _ in 0..TDX_SEAMCALL_RETRIES {
        let resume = err.0 != 0;
        err = seamcall(cpu, LeafCall::CacheWb { resume }).await.status;
        match err.without_operand() {
            TDX_INTERRUPTED_RESUMABLE => continue,
            TDX_NO_HKID_READY_TO_WBCACHE => {
                err = TdxStatus(0);
                break;
            }
            _ => break,
        }
    }
    if !err.is_success() {
        cpu.warn("smp_func_do_phymem_cache_wb", format!("WARN_ON_ONCE: TDH.PHYMEM.CACHE.WB failed: {err}"));
    }
}

/// `tdx_reclaim_page()`: TDH.PHYMEM.PAGE.RECLAIM of a page of a TD whose HKID is released,
/// the page cleared, then its DPAMT reference put. A failure leaks the page (-EIO).
pub async fn tdx_reclaim_page(cpu: &Cpu, page: Hpa) -> Result<(), Errno> {
    let output = seamcall(cpu, LeafCall::PageReclaim { page }).await;
    if !output.status.is_success() {
        cpu.warn(
            "tdx_reclaim_page",
            format!("TDH.PHYMEM.PAGE.RECLAIM({page}) failed: {}; the page is leaked", output.status),
        );
        return Err(Errno::EIO);
    }
    // tdx_quirk_reset_page(): the page is cleared before it goes back.
    cpu.work(cpu.host().costs.free_page).await;
    tdx_pamt_put(cpu, page).await;
    Ok(())
}

/// The MMU notifier's release: every private leaf zapped, which after the HKID release
/// reclaims each page (`kvm_flush_shadow_all()` -> `kvm_mmu_zap_all()`).
async fn kvm_flush_shadow_all(cpu: &Cpu, kvm: &KvmTd) {
    if kvm.hkid_assigned.get() {
        // The HKID leaked: the pages cannot be reclaimed and stay with the module.
        return;
    }
    write_lock(cpu, kvm.mmu_lock).await;
    let _ = tdp_mmu_zap_leafs(cpu, kvm, 0, u64::MAX, true).await;
    write_unlock(cpu, kvm.mmu_lock);
}

/// `tdx_vcpu_free()`: the TDCX pages and the TDVPR reclaimed and freed, and the vCPU's MMU
/// caches emptied (`kvm_mmu_free_memory_caches()`).
async fn tdx_vcpu_free(cpu: &Cpu, kvm: &KvmTd, vcpu: &super::vm::KvmVcpu) {
    let cached: Vec<Hpa> =
        vcpu.pamt_cache.borrow_mut().drain(..).chain(vcpu.spt_cache.borrow_mut().drain(..)).collect();
    for page in cached {
        free_page(cpu, page).await;
    }
    if kvm.hkid_assigned.get() {
        return;
    }
    let tdcx: Vec<Hpa> = vcpu.tdcx.borrow_mut().drain(..).collect();
    for page in tdcx {
        tdx_reclaim_control_page(cpu, page).await;
    }
    if vcpu.tdvpr_allocated.get()
        && let Some(tdvpr) = vcpu.tdvpr.take()
    {
        tdx_reclaim_control_page(cpu, tdvpr).await;
        vcpu.tdvpr_allocated.set(false);
    }
}

/// `tdx_reclaim_control_page()`: reclaim, then free (leaked on failure).
async fn tdx_reclaim_control_page(cpu: &Cpu, page: Hpa) {
    if tdx_reclaim_page(cpu, page).await.is_ok() {
        free_page(cpu, page).await;
    }
}

/// The S-EPT tables KVM linked, reclaimed and freed as the TDP MMU frees the mirror root
/// (`tdx_sept_free_private_spt()`).
async fn tdx_free_sept_tables(cpu: &Cpu, kvm: &KvmTd) {
    if kvm.hkid_assigned.get() {
        return;
    }
    let tables: Vec<Hpa> =
        std::mem::take(&mut kvm.mirror.borrow_mut().tables).into_values().map(|table| table.page).collect();
    for page in tables {
        tdx_reclaim_control_page(cpu, page).await;
        cpu.progress();
    }
}

/// guest_memfd's file is released: the pages it allocated go back.
async fn kvm_gmem_release(cpu: &Cpu, kvm: &KvmTd) {
    let pages = std::mem::take(&mut *kvm.gmem.borrow_mut());
    for (gfn, (page, allocated)) in pages.iter() {
        // A page the zap could not reclaim stays with the module (its leaf stays mapped).
        if allocated && !kvm.mirror.borrow().leaves.contains_key(gfn) {
            free_page(cpu, page).await;
        }
        // A truncate of millions of pages moves on page by page (its cond_resched()).
        cpu.progress();
    }
}

/// `tdx_reclaim_td_control_pages()`: the TDR last (it needs every other page of the TD
/// reclaimed), then TDH.PHYMEM.PAGE.WBINVD of it, its DPAMT put and the free.
async fn tdx_reclaim_td_control_pages(cpu: &Cpu, kvm: &KvmTd) {
    if kvm.hkid_assigned.get() {
        return;
    }
    let Some(tdr) = kvm.tdr.take() else { return };
    let output = seamcall(cpu, LeafCall::PageReclaim { page: tdr }).await;
    if !output.status.is_success() {
        cpu.warn(
            "tdx_reclaim_td_control_pages",
            format!("TDH.PHYMEM.PAGE.RECLAIM of the TDR failed: {}", output.status),
        );
        return;
    }
    let flushed = seamcall(cpu, LeafCall::PageWbinvd { page: tdr }).await;
    if !flushed.status.is_success() {
        cpu.warn(
            "tdx_reclaim_td_control_pages",
            format!("TDH.PHYMEM.PAGE.WBINVD of the TDR failed: {}", flushed.status),
        );
        return;
    }
    tdx_pamt_put(cpu, tdr).await;
    free_page(cpu, tdr).await;
    kvm.state.set(TdState::Uninitialized);
}
