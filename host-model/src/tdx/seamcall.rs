//! The SEAMCALL instruction and the wrappers of arch/x86/virt/vmx/tdx/seamcall_internal.h.

use seam_model::leaf::{SEAMCALL_TRANSITION_CYCLES, TRY_LOCK_CYCLES};
use seam_model::status::TDX_RND_NO_ENTROPY;
use seam_model::{Begin, Entered, GuestRun, Leaf, LeafCall, LeafOutput, TdExit, Ticket};
use sim_core::Span;

use crate::kernel::cpu::{Cpu, cover, mark};
use crate::kernel::lockdep::lockdep_assert_preemption_disabled;

/// `RDRAND_RETRY_LOOPS`: attempts on TDX_RND_NO_ENTROPY.
const RDRAND_RETRY_LOOPS: u32 = 10;

/// One SEAMCALL instruction: for the host a single instruction, so nothing lands on this
/// CPU between SEAM entry and exit (no interrupt, IPI or preemption: they wait for it).
///
/// The module takes the leaf's try-locks once SEAM entry is done, one attempt a try-lock
/// cost apart (or all at once, `module.leaf_locks = "atomic"`), holds them for the leaf's
/// work, and releases them before SEAM exit. A leaf of cost C takes C in all; one that fails
/// its state checks holds its locks for its try-locks only; a BUSY return costs the
/// transition plus the try-locks it attempted. So a CPU issuing two SEAMCALLs back to back
/// leaves the module's locks free for an exit and an entry in between, as on hardware.
async fn seamcall_once(cpu: &Cpu, call: &LeafCall) -> LeafOutput {
    assert!(!matches!(call, LeafCall::VpEnter { .. }), "seamcall: TDH.VP.ENTER goes through tdh_vp_enter");
    let answer = seam_entry(cpu, call).await;
    let output = match answer {
        Begin::Done { output, try_locks } => {
            if !interleaved(cpu) {
                cpu.busy(u64::from(try_locks) * TRY_LOCK_CYCLES).await;
            }
            output
        }
        Begin::Held(ticket) => {
            cpu.busy(hold_cycles(cpu, &ticket)).await;
            cpu.host().module.borrow_mut().finish(ticket)
        }
        Begin::Locking(_) => unreachable!("seamcall: seam_entry steps every attempt"),
    };
    seam_exit(cpu, call, output).await
}

/// SEAM entry and the module's try-lock attempts, a try-lock cost apart.
async fn seam_entry(cpu: &Cpu, call: &LeafCall) -> Begin {
    let leaf = call.leaf();
    cpu.mark(Span::Begin, mark::SEAMCALL, leaf.rax(), 0, || call.to_string());
    cpu.sim.with(|engine| engine.cpu_mut(cpu.id).in_seam = true);
    cpu.busy(SEAMCALL_TRANSITION_CYCLES / 2).await;
    let mut answer = cpu.host().module.borrow_mut().begin(cpu.id, call);
    while let Begin::Locking(ticket) = answer {
        cpu.busy(TRY_LOCK_CYCLES).await;
        answer = cpu.host().module.borrow_mut().step(ticket);
    }
    answer
}

/// SEAM exit: the rest of the transition, the counts, and the checker told.
async fn seam_exit(cpu: &Cpu, call: &LeafCall, output: LeafOutput) -> LeafOutput {
    let leaf = call.leaf();
    cpu.busy(SEAMCALL_TRANSITION_CYCLES - SEAMCALL_TRANSITION_CYCLES / 2).await;
    cpu.sim.with(|engine| engine.cpu_mut(cpu.id).in_seam = false);
    cpu.mark(Span::End, mark::SEAMCALL, leaf.rax(), output.status.0, || {
        let hint = if output.removal_hint { " +hint" } else { "" };
        format!("{} = {}{hint}", leaf.name(), output.status)
    });
    seamcall_returned(cpu, call, &output);
    output
}

/// What a SEAMCALL's return leaves behind, besides the trace: coverage, the counts by leaf
/// and status, and the checker told.
fn seamcall_returned(cpu: &Cpu, call: &LeafCall, output: &LeafOutput) {
    count_returns(cpu, call.leaf(), output, 1);
    let key = (call.leaf(), output.status.without_operand());
    let cpu_index = cpu.id.0 as usize;
    let mut stats = cpu.host().stats.borrow_mut();
    if stats.since_progress.len() <= cpu_index {
        stats.since_progress.resize_with(cpu_index + 1, Default::default);
    }
    let since_progress = &mut stats.since_progress[cpu_index];
    match since_progress.iter_mut().find(|(seen, _)| *seen == key) {
        Some((_, count)) => *count += 1,
        None => since_progress.push((key, 1)),
    }
    drop(stats);
    cpu.host().observer.seamcall_returned(cpu, call, output);
}

/// `times` returns of `leaf` with `output`: coverage and the counts by leaf and status.
fn count_returns(cpu: &Cpu, leaf: Leaf, output: &LeafOutput, times: u64) {
    if output.status.is_busy_class() {
        // Contention: how many such answers a run gets is what the explorer climbs, towards
        // a retry bound running out.
        cpu.cover_counted(cover::SEAMCALL, leaf.rax(), output.status.0);
    } else {
        cpu.cover(cover::SEAMCALL, leaf.rax(), output.status.0);
    }
    let key = (leaf, output.status.without_operand());
    let mut stats = cpu.host().stats.borrow_mut();
    *stats.seamcalls.entry(key).or_default() += times;
    // Class 0x02, "busy / contention", as the `seamcall_busy` metric counts it.
    if output.status.is_busy_class() {
        *stats.busy.entry((leaf, output.status)).or_default() += times;
    }
}

/// What TDH.VP.ENTER gives back once the module has its locks and made its checks.
pub enum VpEnter {
    /// VP.ENTER returned without running the guest: BUSY, a failed check, or the zero-step
    /// filter's emulated EPT-violation exit. SEAM exit is done.
    Returned(LeafOutput),
    /// The guest runs on this CPU (still inside SEAM) until `tdh_vp_exit` or the module's
    /// own TD exit (`tdh_vp_exited`).
    Running(GuestRun),
}

/// The module's share of a VP.ENTER that enters the guest: half of its cost before the
/// guest runs, half after the TD exit.
fn vp_enter_half(cpu: &Cpu) -> u64 {
    cpu.host().leaf_cost(Leaf::VpEnter).saturating_sub(SEAMCALL_TRANSITION_CYCLES) / 2
}

/// TDH.VP.ENTER up to the guest run: SEAM entry, the lock set, the entry's work and the
/// module's checks (`Module::enter_guest`). Called with IRQs off. Nothing lands on this CPU
/// from here to SEAM exit but an interrupt, which makes a running guest exit.
///
/// Kernel: `tdh_vp_enter()`, arch/x86/virt/vmx/tdx/tdx.c (no retry, no preemption toggle:
/// the caller has IRQs off).
pub async fn tdh_vp_enter(cpu: &Cpu, call: LeafCall) -> VpEnter {
    assert!(matches!(call, LeafCall::VpEnter { .. }), "tdh_vp_enter: {call} is not TDH.VP.ENTER");
    crate::kernel::lockdep::lockdep_assert_irqs_disabled(cpu, "tdh_vp_enter");
    match seam_entry(cpu, &call).await {
        Begin::Done { output, try_locks } => {
            if !interleaved(cpu) {
                cpu.busy(u64::from(try_locks) * TRY_LOCK_CYCLES).await;
            }
            VpEnter::Returned(seam_exit(cpu, &call, output).await)
        }
        Begin::Held(ticket) => {
            let failing = cpu.host().module.borrow().will_fail(&ticket);
            let entry = if failing { hold_cycles(cpu, &ticket) } else { vp_enter_half(cpu) };
            cpu.busy(entry).await;
            let entered = cpu.host().module.borrow_mut().enter_guest(ticket);
            match entered {
                Entered::Running(run) => {
                    cpu.mark(Span::Instant, mark::GUEST, 0, 1, || "(guest runs)".to_string());
                    VpEnter::Running(run)
                }
                Entered::Returned(output) => VpEnter::Returned(seam_exit(cpu, &call, output).await),
            }
        }
        Begin::Locking(_) => unreachable!("tdh_vp_enter: seam_entry steps every attempt"),
    }
}

/// The TD exit the host's guest model decided on: the module counts it for zero-step and
/// releases what the run held; then the exit's work and SEAM exit. VP.ENTER returns.
pub async fn tdh_vp_exit(cpu: &Cpu, call: LeafCall, run: GuestRun, exit: TdExit) -> LeafOutput {
    let output = cpu.host().module.borrow_mut().exit_guest(run, exit);
    cpu.busy(vp_enter_half(cpu)).await;
    seam_exit(cpu, &call, output).await
}

/// A TD exit the module made on its own (an ACCEPT it turned into an EPT violation): the
/// exit's work and SEAM exit. VP.ENTER returns `output`.
pub async fn tdh_vp_exited(cpu: &Cpu, call: LeafCall, output: LeafOutput) -> LeafOutput {
    cpu.busy(vp_enter_half(cpu)).await;
    seam_exit(cpu, &call, output).await
}

/// Booting guest's page rounds made at once, for coalesced fault rounds (`kvm::coalesce`,
/// which accounts their time): each TDH.VP.ENTER, the guest's ACCEPT of the page KVM just
/// mapped and of the next (the TD exits on its EPT violation), then TDH.MEM.PAGE.AUG of the
/// next page — the module's `page_rounds_at_once` — with the checker told of every return,
/// but no time and no trace mark; `count_page_rounds` counts them. How many of `rounds`
/// (next GPA, page) were made, from the first, and what each answered: the module stops at
/// the first whose calls would not go straight through.
pub fn page_rounds_at_once(
    cpu: &Cpu,
    (td, tdvpr): (seam_model::TdId, seam_model::Hpa),
    accepted: seam_model::Gpa,
    rounds: &[(seam_model::Gpa, seam_model::Hpa)],
) -> (usize, Option<seam_model::PageRound>) {
    let (made, answered) =
        cpu.host().module.borrow_mut().page_rounds_at_once(cpu.id, (td, tdvpr), accepted, rounds);
    if let Some(round) = answered {
        cpu.host().observer.page_rounds_returned(cpu, (td, tdvpr), &rounds[..made], &round);
    }
    (made, answered)
}

/// The counts by leaf and status (and coverage) of `rounds` page rounds made at once that
/// answered as `round` did. The statuses since the CPU's last progress are not kept: the
/// run of rounds ends in progress, which clears them.
pub fn count_page_rounds(cpu: &Cpu, round: &seam_model::PageRound, rounds: u64) {
    count_returns(cpu, Leaf::VpEnter, &round.vp_enter, rounds);
    count_returns(cpu, Leaf::MemPageAug, &round.aug, rounds);
}

fn interleaved(cpu: &Cpu) -> bool {
    match cpu.host().config.leaf_locks {
        seam_model::LeafLocks::Interleaved => true,
        seam_model::LeafLocks::Atomic => false,
    }
}

/// How long a leaf that got its locks holds them before `finish`: the rest of its cost
/// (less what its attempts took when they were a try-lock cost apart), or, when it will
/// fail its checks, one try-lock cost per attempt (atomic) or one for the check.
fn hold_cycles(cpu: &Cpu, ticket: &Ticket) -> u64 {
    let attempts_elapsed =
        if interleaved(cpu) { u64::from(ticket.try_locks().saturating_sub(1)) * TRY_LOCK_CYCLES } else { 0 };
    if cpu.host().module.borrow().will_fail(ticket) {
        return match interleaved(cpu) {
            true => TRY_LOCK_CYCLES,
            false => u64::from(ticket.try_locks()) * TRY_LOCK_CYCLES,
        };
    }
    // The last LP's SEAMLDR.INSTALL verifies and loads the image: its own cost.
    let leaf = ticket.call().leaf();
    let cost = ticket.cost_override().unwrap_or_else(|| cpu.host().leaf_cost(leaf));
    cost.saturating_sub(SEAMCALL_TRANSITION_CYCLES).saturating_sub(attempts_elapsed)
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
        lockdep_assert_preemption_disabled(cpu, "__seamcall");
        let output = seamcall_once(cpu, &call).await;
        cpu.preempt_enable();
        if output.status.without_operand() != TDX_RND_NO_ENTROPY || retries == 0 {
            return output;
        }
        retries -= 1;
    }
}
