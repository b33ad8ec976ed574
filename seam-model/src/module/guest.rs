//! TDH.VP.ENTER's guest run, the zero-step filter, and the guest's TDG.MEM.PAGE.ACCEPT.
//!
//! TDH.VP.ENTER "runs the guest until an exit", which the host side times. The API splits it:
//!
//! 1. `Module::begin` / `step` take VP.ENTER's lock set (module/vcpu_leaves.rs) as for any
//!    leaf: `Done` is a BUSY (KVM's fastpath re-enters), `Held` a ticket;
//! 2. after the entry's cost, [`Module::enter_guest`] makes VP.ENTER's checks and the
//!    zero-step filter, and either returns at once (a failed check, or the filter's
//!    emulated EPT-violation exit) or enters the guest: [`Entered::Running`] with a
//!    [`GuestRun`], which holds what VP.ENTER keeps while the guest runs — the TDVPR and the
//!    TDR shared, the vCPU's count in its epoch, and in zero-step mode
//!    ([`crate::ZeroStepSeptHold::WhileRunning`]) `secure_ept_lock` exclusive. The TDCS lock
//!    is released at entry. The LP stays busy (`lp_is_busy`) and cannot issue SEAMCALLs;
//! 3. while it runs, the guest may call [`Module::guest_accept`] (a TDCALL, not a SEAMCALL);
//! 4. the host ends the run with [`Module::exit_guest`] and the exit's reason and guest RIP:
//!    the zero-step detector counts, everything is released, and VP.ENTER returns.
//!
//! **Zero-step** (spec §6.10, the module's `td_exit_epf_stepping_log` and
//! `td_entry_stepping_filter` [V-mod]): an exit at a guest RIP other than the last exit's
//! resets the detector. EPT-violation exits at one RIP are counted up to
//! [`crate::td::ZERO_STEP_EPF_THRESHOLD`] (6); each further one logs its GPA. While GPAs are
//! logged, VP.ENTER takes `secure_ept_lock` exclusive and, if a logged GPA would still fault
//! (FREE, BLOCKED, or no table above it), emulates that EPT-violation exit without entering
//! the guest. So the seventh consecutive EPT violation on one instruction arms the SEPT
//! lock for the next entry; the TDX module counts six as what one instruction may
//! legitimately cause (2 instruction fetches + 2 × 2 operands).

use sim_core::CpuId;

use super::sept_leaves::{check_page_aug_target_of, map_private_page_of};
use super::{Module, ModuleLock, Ticket, ZeroStepSeptHold, check_gpa, check_page_of};
use crate::call::{TdExit, TdExitReason};
use crate::lock::Caller;
use crate::pamt::Pamt;
use crate::sept::{LEVEL_4K, Sept, SeptState, Walk};
use crate::status::{TDX_PAGE_ALREADY_ACCEPTED, TDX_SUCCESS, TdxStatus, operand};
use crate::td::{EPF_GPA_LIST_SIZE, VcpuState, ZERO_STEP_EPF_THRESHOLD};
use crate::{Gpa, HeldLock, Hpa, LeafCall, LeafOutput, TdId};

/// A vCPU's guest running inside TDH.VP.ENTER: it holds what VP.ENTER keeps while the guest
/// runs until [`Module::exit_guest`] consumes it.
#[must_use = "a running guest holds module locks until Module::exit_guest"]
#[derive(Debug)]
pub struct GuestRun {
    lp: CpuId,
    td: TdId,
    tdvpr: Hpa,
    /// invariant: held by this run, in acquisition order.
    held: smallvec::SmallVec<[HeldLock; 8]>,
}

impl GuestRun {
    pub fn lp(&self) -> CpuId {
        self.lp
    }

    pub fn td(&self) -> TdId {
        self.td
    }

    pub fn tdvpr(&self) -> Hpa {
        self.tdvpr
    }

    /// What the run holds: the TDVPR and TDR shared, the epoch count, and in zero-step mode
    /// `secure_ept_lock` exclusive.
    pub fn locks(&self) -> &[HeldLock] {
        &self.held
    }

    /// The run holds the TD's `secure_ept_lock` exclusive (zero-step, `WhileRunning`).
    pub fn holds_sept_tree(&self) -> bool {
        self.held.iter().any(|held| matches!(held.lock, ModuleLock::SeptTree(_)))
    }
}

/// What [`Module::enter_guest`] answers.
#[derive(Debug)]
pub enum Entered {
    /// The guest runs.
    Running(GuestRun),
    /// VP.ENTER returned without running the guest: a failed check (TD state, vCPU state,
    /// association), or the zero-step filter's emulated EPT-violation exit (`exit` set).
    Returned(LeafOutput),
}

/// A guest's TDG.MEM.PAGE.ACCEPT that holds its SEPT entry's lock: while it initialises a
/// PENDING page, or for the moment it reads an entry already MAPPED.
/// [`Module::finish_accept`] completes it.
#[must_use = "an ACCEPT holds its SEPT entry's lock until Module::finish_accept"]
#[derive(Debug)]
pub struct AcceptTicket {
    run: GuestRun,
    gpa: Gpa,
    /// The entry was PENDING: the ACCEPT zeroes the page and maps it.
    accepts: bool,
}

impl AcceptTicket {
    pub fn gpa(&self) -> Gpa {
        self.gpa
    }

    pub fn run(&self) -> &GuestRun {
        &self.run
    }

    /// True when the ACCEPT initialises the page (the entry is PENDING), so it holds the lock
    /// for the time that takes; false when it finds the page already accepted and only reads
    /// the entry (the host side holds it for a try-lock cost).
    pub fn accepts(&self) -> bool {
        self.accepts
    }
}

/// What [`Module::guest_accept`] answers.
#[derive(Debug)]
pub enum GuestAccept {
    /// The guest holds the entry's lock (a guest lock, spec §2.3): call `finish_accept`
    /// after the ACCEPT's cost ([`AcceptTicket::accepts`]). Meanwhile a host leaf on the
    /// entry gets BUSY and claims host priority.
    Locked(AcceptTicket),
    /// ACCEPT returned this status to the guest at once, which keeps running:
    /// TDX_OPERAND_BUSY|RCX (another holds the entry), TDX_OPERAND_BUSY_HOST_PRIORITY|RCX (a
    /// host claimed it) or TDX_OPERAND_INVALID|RCX.
    Returned { run: GuestRun, status: TdxStatus },
    /// The entry is neither PENDING nor MAPPED (FREE, BLOCKED, or a table above it is
    /// missing): the module turns the ACCEPT into an EPT-violation TD exit, and VP.ENTER
    /// has returned this.
    Exited(LeafOutput),
}

impl Module {
    /// Step 2 of the VP.ENTER API (module docs above): `ticket` is VP.ENTER's, `Held`.
    pub fn enter_guest(&mut self, mut ticket: Ticket) -> Entered {
        let LeafCall::VpEnter { td, tdvpr } = ticket.call else {
            panic!("enter_guest: {} is not TDH.VP.ENTER", ticket.call);
        };
        for held in ticket.locks() {
            assert!(self.is_held(*held), "enter_guest: {held} of {} is not held", ticket.call);
        }
        let lp = ticket.lp;
        if let Err(status) = self.checked(&ticket) {
            return Entered::Returned(self.end_vp_enter(lp, &ticket.list.held, LeafOutput::status(status)));
        }
        if let Some(gpa) = self.zero_step_fault(td, tdvpr) {
            // The filter's emulated exit: the guest does not run, the vCPU stays READY,
            // and the detector is left as it is.
            let output = exit_output(TdExitReason::EptViolation { gpa: Gpa(gpa) });
            return Entered::Returned(self.end_vp_enter(lp, &ticket.list.held, output));
        }
        let release_sept = self.zero_step_hold() == ZeroStepSeptHold::EntryOnly;
        let mut held = std::mem::take(&mut ticket.list.held);
        let mut index = 0;
        while index < held.len() {
            let released_at_entry = match held[index].lock {
                ModuleLock::Tdcs(_) => true,
                ModuleLock::SeptTree(_) => release_sept,
                _ => false,
            };
            if released_at_entry {
                let lock = held.remove(index);
                self.release_all(&[lock]);
            } else {
                index += 1;
            }
        }
        self.td_mut(td).vcpu_mut(tdvpr).state = VcpuState::Active;
        self.lp_mut(lp).running = Some((td, tdvpr));
        Entered::Running(GuestRun { lp, td, tdvpr, held })
    }

    /// Step 4: the TD exits for `exit.reason` at `exit.guest_rip`. Counts the exit in the
    /// zero-step detector, releases what the run held, and returns VP.ENTER's output:
    /// TDX_SUCCESS with the VMX exit reason in the low bits, and `exit` set.
    pub fn exit_guest(&mut self, run: GuestRun, exit: TdExit) -> LeafOutput {
        let vcpu = self.td_mut(run.td).vcpu_mut(run.tdvpr);
        log_exit_for_zero_step(vcpu, exit);
        self.leave_guest(run, exit_output(exit.reason))
    }

    /// The guest on `run` issues TDG.MEM.PAGE.ACCEPT for the 4KB page at `gpa` (spec §6:
    /// "SEPT entry **guest** lock"; the module's `tdg_mem_page_accept` [V-mod]): no SEPT
    /// tree lock, the entry's TDEL bit as a guest (so BUSY_HOST_PRIORITY once a host
    /// claimed it), then PENDING -> MAPPED. Only 4KB ACCEPT is modelled.
    pub fn guest_accept(&mut self, run: GuestRun, gpa: Gpa) -> GuestAccept {
        assert!(self.is_running(&run), "guest_accept: the run is not this LP's guest");
        if let Err(status) = check_gpa(gpa) {
            return GuestAccept::Returned { run, status };
        }
        let td = run.td;
        if self.tds[&td].sept.walk(gpa.0, LEVEL_4K) == Walk::Failed {
            return GuestAccept::Exited(self.accept_violation(run, gpa));
        }
        if let Err(busy) = self.td_mut(td).sept.try_lock_entry(gpa.0, Caller::Guest) {
            return GuestAccept::Returned { run, status: busy.status().with_operand(operand::RCX) };
        }
        match self.tds[&td].sept.state(gpa.0) {
            SeptState::Pending => GuestAccept::Locked(AcceptTicket { run, gpa, accepts: true }),
            SeptState::Mapped => GuestAccept::Locked(AcceptTicket { run, gpa, accepts: false }),
            SeptState::Free | SeptState::Blocked => {
                self.td_mut(td).sept.release_entry(gpa.0);
                GuestAccept::Exited(self.accept_violation(run, gpa))
            }
        }
    }

    /// The ACCEPT ends: a PENDING entry becomes MAPPED (TDX_SUCCESS); one already MAPPED
    /// answers TDX_PAGE_ALREADY_ACCEPTED (informational; the detail is the level of the
    /// entry found, 4KB). The entry's lock is released; an HP bit a host set meanwhile
    /// stays. Returns the run and the guest's status.
    pub fn finish_accept(&mut self, ticket: AcceptTicket) -> (GuestRun, TdxStatus) {
        let AcceptTicket { run, gpa, accepts } = ticket;
        let td = self.td_mut(run.td);
        let entry = td.sept.entry(gpa.0);
        assert!(entry.locked, "finish_accept: the guest holds the entry's lock");
        let expected = if accepts { SeptState::Pending } else { SeptState::Mapped };
        assert_eq!(entry.state, expected, "finish_accept: the locked entry kept its state");
        let status = if accepts {
            let td_epoch = td.td_epoch;
            td.sept.set_state(gpa.0, SeptState::Mapped, td_epoch);
            TDX_SUCCESS
        } else {
            TDX_PAGE_ALREADY_ACCEPTED.with_operand(u32::from(LEVEL_4K))
        };
        td.sept.release_entry(gpa.0);
        (run, status)
    }

    /// The vCPU whose guest runs on `lp` right now, if any.
    pub fn running_vcpu(&self, lp: CpuId) -> Option<(TdId, Hpa)> {
        self.lp(lp).running
    }

    /// The first logged GPA that would fault again, when zero-step is suspected (the
    /// module's `is_epf_expected`: a PENDING page is not one, it raises #VE in the guest).
    fn zero_step_fault(&self, td: TdId, tdvpr: Hpa) -> Option<u64> {
        let state = &self.tds[&td];
        state.vcpus[&tdvpr].epf_gpas.iter().copied().find(|&gpa| {
            state.sept.walk(gpa, LEVEL_4K) == Walk::Failed
                || matches!(state.sept.state(gpa), SeptState::Free | SeptState::Blocked)
        })
    }

    /// An ACCEPT that cannot accept becomes an EPT-violation TD exit. [V-mod] This exit is
    /// not counted by the zero-step detector.
    fn accept_violation(&mut self, run: GuestRun, gpa: Gpa) -> LeafOutput {
        self.leave_guest(run, exit_output(TdExitReason::EptViolation { gpa }))
    }

    /// The TD exit proper: the vCPU is READY again, everything the run held is released,
    /// and the LP leaves the module.
    fn leave_guest(&mut self, run: GuestRun, output: LeafOutput) -> LeafOutput {
        assert!(self.is_running(&run), "exit_guest: the run is not this LP's guest");
        for held in &run.held {
            assert!(self.is_held(*held), "exit_guest: {held} of the run is not held");
        }
        self.td_mut(run.td).vcpu_mut(run.tdvpr).state = VcpuState::Ready;
        self.lp_mut(run.lp).running = None;
        self.end_vp_enter(run.lp, &run.held, output)
    }

    /// VP.ENTER returns: its locks released, the LP no longer busy.
    fn end_vp_enter(&mut self, lp: CpuId, held: &[HeldLock], output: LeafOutput) -> LeafOutput {
        self.release_all(held);
        self.leave_module(lp);
        output
    }

    fn is_running(&self, run: &GuestRun) -> bool {
        self.lp(run.lp).running == Some((run.td, run.tdvpr))
    }
}

/// VP.ENTER's output for a TD exit.
fn exit_output(reason: TdExitReason) -> LeafOutput {
    LeafOutput {
        exit: Some(reason),
        ..LeafOutput::status(TDX_SUCCESS.with_operand(reason.vmx_exit_reason()))
    }
}

/// The zero-step detector's view of an exit (`vmexit_stepping_filter` resets on progress,
/// `td_exit_epf_stepping_log` counts EPT violations).
fn log_exit_for_zero_step(vcpu: &mut crate::td::Vcpu, exit: TdExit) {
    if exit.guest_rip != vcpu.guest_rip {
        vcpu.epf_streak = 0;
        vcpu.epf_gpas.clear();
    }
    vcpu.guest_rip = exit.guest_rip;
    let TdExitReason::EptViolation { gpa } = exit.reason else {
        return;
    };
    if vcpu.epf_streak < ZERO_STEP_EPF_THRESHOLD {
        vcpu.epf_streak += 1;
    } else if vcpu.epf_gpas.len() < EPF_GPA_LIST_SIZE && !vcpu.epf_gpas.contains(&gpa.0) {
        vcpu.epf_gpas.push(gpa.0);
    }
}

/// What [`Module::page_round_at_once`] answers: the round's outputs, as the calls one by
/// one would have returned them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRound {
    /// TDH.VP.ENTER's output: the TD exit on the EPT violation at the next page.
    pub vp_enter: LeafOutput,
    /// TDH.MEM.PAGE.AUG's output.
    pub aug: LeafOutput,
}

impl PageRound {
    /// TDH.VP.ENTER's output in a round like this one whose TD exit is at `next`: the rounds
    /// of a run answer alike but for the exit's GPA.
    pub fn vp_enter_exiting_at(&self, next: Gpa) -> LeafOutput {
        LeafOutput { exit: Some(TdExitReason::EptViolation { gpa: next }), ..self.vp_enter }
    }
}

impl Module {
    /// A booting guest's page round made at once, for a simulator that coalesces such rounds
    /// (host-model's `kvm::coalesce`): TDH.VP.ENTER of `tdvpr` on `lp`; the guest's ACCEPT
    /// of `accepted`, which is PENDING, so it becomes MAPPED; the guest's ACCEPT of `next`,
    /// which is FREE, so the TD exits on the EPT violation; then TDH.MEM.PAGE.AUG of `page`
    /// at `next`. The state it leaves is the state those calls leave when each of them
    /// takes every lock at its first attempt and succeeds (seam-model/tests/page_round.rs
    /// compares the two).
    ///
    /// `None`, with nothing changed, unless the round would go that way: an injected
    /// fault, a check of any of the calls that would fail, the LP busy, zero-step
    /// suspected, any lock the calls take held by anyone or carrying a host-priority claim
    /// (a host's success would clear it).
    pub fn page_round_at_once(
        &mut self,
        lp: CpuId,
        td: TdId,
        tdvpr: Hpa,
        accepted: Gpa,
        next: Gpa,
        page: Hpa,
    ) -> Option<PageRound> {
        match self.page_rounds_at_once(lp, (td, tdvpr), accepted, &[(next, page)]) {
            (1, round) => round,
            _ => None,
        }
    }

    /// Page rounds one after another, each as [`Module::page_round_at_once`] makes one: round
    /// `k` ACCEPTs the page of round `k - 1` (the first, `accepted`), exits on `rounds[k].0`
    /// and AUGs `rounds[k].1` there. The TD-wide conditions (the LP, injected faults, the
    /// TD's and the vCPU's state and locks, zero-step) are checked once: only these rounds
    /// change the module in between, and they leave every one of them as it was. Returns how
    /// many rounds were made, from the first (the first refused and those after it are not),
    /// and what each answered.
    pub fn page_rounds_at_once(
        &mut self,
        lp: CpuId,
        (td, tdvpr): (TdId, Hpa),
        accepted: Gpa,
        rounds: &[(Gpa, Hpa)],
    ) -> (usize, Option<PageRound>) {
        let Some(&(first_next, first_page)) = rounds.first() else { return (0, None) };
        let enter = LeafCall::VpEnter { td, tdvpr };
        if !self.page_rounds_admitted(
            lp,
            &enter,
            &LeafCall::PageAug { td, gpa: first_next, page: first_page },
        ) {
            return (0, None);
        }
        if !page_round_pages_ready(&self.pamt, &self.tds[&td].sept, accepted, first_next, first_page) {
            return (0, None);
        }
        // TDH.VP.ENTER: the association and the epoch joined (its count taken and given back
        // at the exit). The first round's entry makes both; every later one finds them made,
        // as no round changes the TD's epoch.
        self.associate(lp, td, tdvpr);
        let state = self.td_mut(td);
        let td_epoch = state.td_epoch;
        state.vcpu_mut(tdvpr).vcpu_epoch = td_epoch;
        let mut answered = None;
        let mut accepted = accepted;
        // The TD looked up once for the run: its S-EPT and the PAMT are all a round touches.
        let (pamt, state) = (&mut self.pamt, self.tds.get_mut(&td).expect("module: the TD was checked"));
        for (made, &(next, page)) in rounds.iter().enumerate() {
            if made > 0 && !page_round_pages_ready(pamt, &state.sept, accepted, next, page) {
                return (made, answered);
            }
            // The guest's ACCEPT of the PENDING page; its ACCEPT of the FREE one is the exit.
            state.sept.set_state(accepted.0, SeptState::Mapped, td_epoch);
            let vp_enter = exit_output(TdExitReason::EptViolation { gpa: next });
            // TDH.MEM.PAGE.AUG, whose checks the round's passed: its effect.
            let aug = map_private_page_of(pamt, state, next, page, SeptState::Pending);
            answered = Some(PageRound { vp_enter, aug });
            accepted = next;
        }
        (rounds.len(), answered)
    }

    /// The TD-wide half of whether the calls of a page round would each take every lock at
    /// its first attempt and pass its checks: what no round changes.
    fn page_rounds_admitted(&self, lp: CpuId, enter: &LeafCall, aug: &LeafCall) -> bool {
        let LeafCall::VpEnter { td, tdvpr } = *enter else {
            unreachable!("page_rounds_admitted: {enter} is not a VP.ENTER");
        };
        let lp_state = self.lp(lp);
        if !self.injected.is_empty() || lp_state.running.is_some() || lp_state.busy_calls != 0 {
            return false;
        }
        let dispatched =
            |call: &LeafCall| self.check_dispatch(lp, call.leaf()).is_ok() && call.leaf().is_modelled();
        if !dispatched(enter) || !dispatched(aug) || self.check_operands(enter).is_err() {
            return false;
        }
        // VP.ENTER's checks, and no zero-step filter; PAGE.AUG's of the TD.
        let Some(state) = self.tds.get(&td) else { return false };
        let Some(vcpu) = state.vcpus.get(&tdvpr) else { return false };
        if self.check_leaf(lp, enter).is_err()
            || vcpu.zero_step_suspected()
            || self.zero_step_fault(td, tdvpr).is_some()
            || self.check_td_state(td, super::sept_leaves::BUILT_OR_RUNNABLE).is_err()
        {
            return false;
        }
        // Every TD lock the calls take: free and unclaimed.
        let idle = |lock: &crate::lock::SharexHp| lock.holders() == 0 && !lock.host_priority();
        [&vcpu.tdvpr_lock, &state.tdr_lock, &state.tdcs_lock, &state.epoch_lock, &state.sept_lock]
            .into_iter()
            .all(idle)
    }
}

/// The other half of whether a page round would go straight through (the TD-wide one is
/// `Module::page_rounds_admitted`), for one round's pages: the ACCEPTs' entries (the
/// accepted one PENDING, so its walk reaches it, the next FREE under its tables, neither
/// locked nor claimed), PAGE.AUG's operands and checks of its GPA and page, and its PAMT walk
/// (the 1GB and 2MB entries not held exclusive, the page's own entry free).
fn page_round_pages_ready(pamt: &Pamt, sept: &Sept, accepted: Gpa, next: Gpa, page: Hpa) -> bool {
    check_gpa(accepted).is_ok()
        && check_gpa(next).is_ok()
        && check_page_of(pamt, page, operand::R8).is_ok()
        && sept.state(accepted.0) == SeptState::Pending
        && sept.entry_is_idle(accepted.0)
        && sept.entry_is_idle(next.0)
        && check_page_aug_target_of(pamt, sept, next, page).is_ok()
        && pamt.page_walk_is_free(page)
}
