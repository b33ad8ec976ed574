//! The SEAMCALL wrappers of arch/x86/virt/vmx/tdx/seamcall_internal.h.

use seam_model::leaf::{SEAMCALL_TRANSITION_CYCLES, TRY_LOCK_CYCLES};
use seam_model::status::TDX_RND_NO_ENTROPY;
use seam_model::{Begin, LeafCall, LeafOutput};
use sim_core::Span;

use crate::kernel::cpu::{Cpu, cover, mark};

/// `RDRAND_RETRY_LOOPS`: attempts on TDX_RND_NO_ENTROPY.
const RDRAND_RETRY_LOOPS: u32 = 10;

/// One SEAMCALL instruction. The module takes the leaf's try-locks once SEAM entry is done,
/// holds them for the leaf's work, and releases them before SEAM exit: a leaf of cost C holds
/// its locks for C minus the transition; one that fails its state checks holds them for its
/// try-locks only, and a BUSY return costs the transition plus the
/// try-locks it attempted. So a CPU issuing two SEAMCALLs back to back leaves the module's
/// locks free for an exit and an entry in between, as on hardware.
async fn seamcall_once(cpu: &Cpu, call: &LeafCall) -> LeafOutput {
    let leaf = call.leaf();
    let seam_entry = SEAMCALL_TRANSITION_CYCLES / 2;
    let seam_exit = SEAMCALL_TRANSITION_CYCLES - seam_entry;
    cpu.mark(Span::Begin, mark::SEAMCALL, leaf.rax(), 0, || call.to_string());
    crate::invariants::check_seamcall_allowed(cpu, leaf);
    cpu.work(seam_entry).await;
    let begin = cpu.host().module.borrow_mut().begin(cpu.id, call);
    let output = match begin {
        Begin::Done { output, try_locks } => {
            cpu.work(u64::from(try_locks) * TRY_LOCK_CYCLES).await;
            output
        }
        Begin::Held(ticket) => {
            let fails = cpu.host().module.borrow().will_fail(&ticket);
            let hold_cycles = if fails {
                u64::from(ticket.try_locks()) * TRY_LOCK_CYCLES
            } else {
                // The last LP's SEAMLDR.INSTALL verifies and loads the image: its own cost.
                let cost = ticket.cost_override().unwrap_or_else(|| cpu.host().leaf_cost(leaf));
                cost.saturating_sub(SEAMCALL_TRANSITION_CYCLES)
            };
            cpu.work(hold_cycles).await;
            cpu.host().module.borrow_mut().finish(ticket)
        }
    };
    cpu.work(seam_exit).await;
    cpu.mark(Span::End, mark::SEAMCALL, leaf.rax(), output.status.0, || {
        let hint = if output.removal_hint { " +hint" } else { "" };
        format!("{} = {}{hint}", leaf.name().trim_start_matches("TDH."), output.status)
    });
    cpu.cover(cover::SEAMCALL, leaf.rax(), output.status.0);
    for page in pages_named(call) {
        if let Err(detail) = crate::invariants::no_page_in_unbacked_range(cpu.host(), page) {
            crate::invariants::broken(cpu, crate::invariants::NO_PAGE_IN_UNBACKED_RANGE, detail);
        }
    }
    let mut stats = cpu.host().stats.borrow_mut();
    *stats.seamcalls.entry((leaf, output.status.masked())).or_default() += 1;
    *stats.since_progress.entry(cpu.id.0).or_default().entry((leaf, output.status.masked())).or_default() +=
        1;
    drop(stats);
    output
}

/// `seamcall()` / `seamcall_ret()`: preemption off around each attempt; retried only on
/// TDX_RND_NO_ENTROPY. Every other status, BUSY included, goes back to the caller.
///
/// Kernel: `sc_retry()` in arch/x86/virt/vmx/tdx/seamcall_internal.h.
pub async fn seamcall(cpu: &Cpu, call: LeafCall) -> LeafOutput {
    let mut retries = RDRAND_RETRY_LOOPS;
    loop {
        cpu.maybe_stall().await;
        cpu.preempt_disable();
        let output = seamcall_once(cpu, &call).await;
        cpu.preempt_enable();
        if output.status.masked() != TDX_RND_NO_ENTROPY || retries == 0 {
            return output;
        }
        retries -= 1;
    }
}

/// The physical pages a call names, whose ranges it may have changed.
fn pages_named(call: &LeafCall) -> Vec<seam_model::Hpa> {
    match *call {
        LeafCall::PamtAdd { hpa, pair } => vec![hpa, pair[0], pair[1]],
        LeafCall::PamtRemove { hpa } | LeafCall::PageWbinvd { page: hpa } => vec![hpa],
        LeafCall::PageAug { page, .. } => vec![page],
        LeafCall::MngCreate { tdr: page, .. } | LeafCall::VpCreate { tdvpr: page, .. } => vec![page],
        _ => Vec::new(),
    }
}
