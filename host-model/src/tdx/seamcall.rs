//! The SEAMCALL wrappers of arch/x86/virt/vmx/tdx/seamcall_internal.h.

use seam_model::leaf::{SEAMCALL_TRANSITION_CYCLES, TRY_LOCK_CYCLES};
use seam_model::status::TDX_RND_NO_ENTROPY;
use seam_model::{Begin, LeafCall, LeafOutput};
use sim_core::Span;

use crate::kernel::cpu::{Cpu, mark};

/// `RDRAND_RETRY_LOOPS`: attempts on TDX_RND_NO_ENTROPY.
const RDRAND_RETRY_LOOPS: u32 = 10;

/// One SEAMCALL instruction: the module takes the leaf's try-locks at entry and holds them
/// for the leaf's cost; a BUSY return costs the transition and the try-locks it attempted.
async fn seamcall_once(cpu: &Cpu, call: &LeafCall) -> LeafOutput {
    let leaf = call.leaf();
    cpu.mark(Span::Begin, mark::SEAMCALL, leaf.rax(), 0, || call.to_string());
    let begin = cpu.host().module.borrow_mut().begin(cpu.id, call);
    let output = match begin {
        Begin::Done { output, try_locks } => {
            cpu.work(SEAMCALL_TRANSITION_CYCLES + u64::from(try_locks) * TRY_LOCK_CYCLES).await;
            output
        }
        Begin::Held(ticket) => {
            cpu.work(cpu.host().leaf_cost(leaf)).await;
            cpu.host().module.borrow_mut().finish(ticket)
        }
    };
    cpu.mark(Span::End, mark::SEAMCALL, leaf.rax(), output.status.0, || {
        let hint = if output.removal_hint { " +hint" } else { "" };
        format!("{} = {}{hint}", leaf.name().trim_start_matches("TDH."), output.status)
    });
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
        cpu.preempt_disable();
        let output = seamcall_once(cpu, &call).await;
        cpu.preempt_enable();
        if output.status.masked() != TDX_RND_NO_ENTROPY || retries == 0 {
            return output;
        }
        retries -= 1;
    }
}
