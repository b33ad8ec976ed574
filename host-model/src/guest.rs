//! The guest: what a TD's vCPU does while TDH.VP.ENTER runs it. Not host code: the TD's
//! own software, as far as the host can see it — the private pages it uses and how fast,
//! its TDG.MEM.PAGE.ACCEPT calls, and a hostile mode that re-ACCEPTs one GPA in a loop.
//!
//! The guest reaches the module the way a TD does: by TDCALL (`tdg_mem_page_accept`) and by
//! touching memory, which the CPU translates through the S-EPT (`guest_access`). These two,
//! with `tdx::seamcall` and `kernel::arch`, are host-model's only paths to the module.
//!
//! A guest runs until it exits: an EPT violation on a page that is not mapped, an external
//! interrupt (the host timer's tick, an IPI such as KVM's kick, the VMM's signal at the end
//! of the run), or a TDVMCALL once its program is done, which KVM hands to userspace.

use seam_model::{Gpa, GuestAccept, GuestRun, LeafOutput, PAGE_SIZE, TdExit, TdExitReason, TdxStatus};
use sim_core::Cycle;

use crate::kernel::cpu::Cpu;

/// What a vCPU's guest does (a `vcpu_run` step's arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestProgram {
    /// The first private GPA it uses; invariant: 4KB aligned.
    pub gpa: u64,
    /// How many consecutive 4KB pages from `gpa` it uses.
    pub pages: u32,
    /// It ACCEPTs each page before using it (a Linux guest's lazy accept); without, it
    /// touches pages KVM mapped but it never accepted, which a TD with SEPT_VE_DISABLE
    /// reports to KVM as an EPT violation on a PENDING page.
    pub accept: bool,
    /// Guest work before each use of a page, in cycles ("how fast").
    pub interval_cycles: u64,
    /// Passes over its pages; ACCEPTs come in the first only. invariant: >= 1.
    pub rounds: u32,
    /// Then re-ACCEPT the first GPA in a loop until the run's end (`for`).
    pub hostile: bool,
}

impl GuestProgram {
    /// A guest that uses no private page and ends at once.
    pub fn idle() -> GuestProgram {
        GuestProgram { gpa: 0, pages: 0, accept: true, interval_cycles: 0, rounds: 1, hostile: false }
    }
}

/// Where a guest is in its program.
#[derive(Clone, Debug)]
pub struct Guest {
    program: GuestProgram,
    round: u32,
    page: u32,
    step: Step,
    /// Work cycles left of the current `Step::Work`.
    work_left: u64,
    /// The VMM stops the vCPU at this time (`vcpu_run`'s `for`).
    pub deadline: Option<Cycle>,
    /// The last exit was an EPT violation on a PENDING entry (SEPT_VE_DISABLE: the guest
    /// touched a page it never accepted).
    pub pending_violation: bool,
}

/// The instruction the guest is at, for one page: work, ACCEPT, then a touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Work,
    Accept,
    Touch,
    /// The hostile loop's ACCEPT of the first GPA.
    Hostile,
    /// The program is over: the guest issues its final TDVMCALL.
    Done,
}

/// Guest RIPs start here; each instruction of the program has its own.
const GUEST_RIP_BASE: u64 = 0xffff_8000_0010_0000;

impl Guest {
    /// A vCPU that has not been run.
    pub fn idle() -> Guest {
        Guest::new(GuestProgram::idle(), None)
    }

    pub fn new(program: GuestProgram, deadline: Option<Cycle>) -> Guest {
        let mut guest = Guest {
            round: 0,
            page: 0,
            step: Step::Work,
            work_left: program.interval_cycles,
            program,
            deadline,
            pending_violation: false,
        };
        if guest.program.pages == 0 {
            guest.step = guest.after_rounds();
        }
        guest
    }

    /// The program finished: its final TDVMCALL is due.
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// The guest RIP of the current instruction: an exit there and a later exit at the same
    /// RIP, with no other exit in between, are the same instruction not making progress.
    pub fn rip(&self) -> u64 {
        let step = match self.step {
            Step::Work => 0,
            Step::Accept => 1,
            Step::Touch => 2,
            Step::Hostile => return GUEST_RIP_BASE - 16,
            Step::Done => return GUEST_RIP_BASE - 32,
        };
        GUEST_RIP_BASE + 16 * (3 * u64::from(self.page) + step)
    }

    /// The page periods a coalescer may run at once (`pass_period`), from where the guest
    /// is: at the ACCEPT of the page KVM just mapped, in the accepting round of a plain
    /// program, with a next page to go on to and no deadline. `(this page, next page, how
    /// many pages follow this one)`: period `k` ACCEPTs `next - 4K + k * 4K` and exits on the
    /// page after it, for `k` below the count.
    pub fn coalescable_periods(&self) -> Option<(Gpa, Gpa, u32)> {
        let plain = self.program.accept && !self.program.hostile && self.program.rounds == 1;
        let next = self.page + 1;
        if !plain || self.step != Step::Accept || self.deadline.is_some() || next >= self.program.pages {
            return None;
        }
        let gpa = |page: u32| Gpa(self.program.gpa + u64::from(page) * PAGE_SIZE);
        Some((gpa(self.page), gpa(next), self.program.pages - next))
    }

    /// The guest's side of a coalesced round (`kvm::coalesce`; the module's side is its
    /// `page_round_at_once`): its ACCEPT of this page succeeded, it touched the page, did
    /// its work, and is at the ACCEPT of the next one, which made the TD exit.
    pub fn pass_period(&mut self) {
        let (_, next, _) = self.coalescable_periods().expect("pass_period: a coalescable period");
        self.advance();
        self.advance();
        self.work_left = 0;
        self.advance();
        debug_assert_eq!((self.step, self.gpa_of_page()), (Step::Accept, next));
    }

    fn gpa_of_page(&self) -> Gpa {
        Gpa(self.program.gpa + u64::from(self.page) * PAGE_SIZE)
    }

    fn after_rounds(&self) -> Step {
        if self.program.hostile && self.program.pages > 0 { Step::Hostile } else { Step::Done }
    }

    /// The current instruction completed: on to the next.
    fn advance(&mut self) {
        self.step = match self.step {
            Step::Work if self.round == 0 && self.program.accept => Step::Accept,
            Step::Work | Step::Accept => Step::Touch,
            Step::Touch => {
                self.page += 1;
                if self.page == self.program.pages {
                    self.page = 0;
                    self.round += 1;
                }
                if self.round == self.program.rounds {
                    self.after_rounds()
                } else {
                    self.work_left = self.program.interval_cycles;
                    Step::Work
                }
            }
            Step::Hostile => Step::Hostile,
            Step::Done => Step::Done,
        };
    }
}

/// How the guest's run ended.
pub enum GuestExit {
    /// The guest exits: the host ends VP.ENTER with this exit (`tdx::seamcall::tdh_vp_exit`).
    Exit(GuestRun, TdExit),
    /// The module turned an ACCEPT into a TD exit itself; VP.ENTER returned this.
    Exited(LeafOutput),
}

/// What a guest memory access finds (the CPU's walk of the S-EPT).
enum Access {
    Hit,
    /// The entry is PENDING: with SEPT_VE_DISABLE, an EPT violation with the pending bit.
    Pending,
    /// Not mapped (FREE or BLOCKED, or no table above it): an EPT violation.
    Violation,
}

/// The guest's load or store to private `gpa`, as the CPU resolves it through the S-EPT.
fn guest_access(cpu: &Cpu, run: &GuestRun, gpa: Gpa) -> Access {
    let module = cpu.host().module.borrow();
    let td = module.td(run.td()).expect("a running guest's TD exists");
    if td.sept.walk(gpa.0, seam_model::sept::LEVEL_4K) == seam_model::sept::Walk::Failed {
        return Access::Violation;
    }
    match td.sept.state(gpa.0) {
        seam_model::SeptState::Mapped => Access::Hit,
        seam_model::SeptState::Pending => Access::Pending,
        seam_model::SeptState::Free | seam_model::SeptState::Blocked => Access::Violation,
    }
}

/// What the guest's TDG.MEM.PAGE.ACCEPT returned.
enum Accepted {
    Returned(GuestRun, TdxStatus),
    Exited(LeafOutput),
}

/// TDG.MEM.PAGE.ACCEPT of the 4KB page at `gpa` (a TDCALL): the module takes the entry's
/// guest lock, holds it while it initialises a PENDING page (or for the check of one already
/// accepted), then returns; on an entry it cannot accept, it makes the TD exit instead.
async fn tdg_mem_page_accept(cpu: &Cpu, run: GuestRun, gpa: Gpa) -> Accepted {
    let costs = &cpu.host().costs;
    let half = costs.tdcall / 2;
    cpu.busy(half).await;
    let answer = cpu.host().module.borrow_mut().guest_accept(run, gpa);
    match answer {
        GuestAccept::Locked(ticket) => {
            let hold = if ticket.accepts() { costs.accept_page } else { costs.accept_check };
            cpu.busy(hold).await;
            let (run, status) = cpu.host().module.borrow_mut().finish_accept(ticket);
            cpu.busy(costs.tdcall - half).await;
            Accepted::Returned(run, status)
        }
        GuestAccept::Returned { run, status } => {
            cpu.busy(costs.tdcall - half).await;
            Accepted::Returned(run, status)
        }
        GuestAccept::Exited(output) => Accepted::Exited(output),
    }
}

/// Runs the guest of `guest` on `run` until it exits. The vCPU's CPU is inside VP.ENTER
/// (IRQs off, in SEAM): an interrupt queued for it ends the guest's work at once, as an
/// external-interrupt exit would.
pub async fn guest_run(cpu: &Cpu, guest: &std::cell::RefCell<Guest>, run: GuestRun) -> GuestExit {
    let tick_end = cpu.sim.now().0 + cpu.host().costs.guest_tick;
    let mut run = run;
    loop {
        let (step, rip) = {
            let guest = guest.borrow();
            (guest.step, guest.rip())
        };
        let interrupt =
            |run| GuestExit::Exit(run, TdExit { reason: TdExitReason::ExternalInterrupt, guest_rip: rip });
        let deadline = guest.borrow().deadline;
        if deadline.is_some_and(|deadline| cpu.sim.now() >= deadline) {
            // The VMM's signal to the vCPU thread: its IPI makes the guest exit.
            return interrupt(run);
        }
        if cpu.sim.with(|engine| engine.interrupt_queued()) {
            // An interrupt for this CPU (a kick, an IPI) came during the last step, a TDCALL
            // or a touch: the guest exits at this instruction boundary, not at its next tick.
            return interrupt(run);
        }
        let next = match step {
            Step::Work => {
                match guest_work(cpu, guest, deadline.map_or(tick_end, |at| at.0.min(tick_end))).await {
                    Worked::GoOn => GuestStep::GoOn(run),
                    Worked::Interrupted => GuestStep::Exit(interrupt(run)),
                }
            }
            Step::Accept | Step::Hostile => guest_accept(cpu, guest, run, step, tick_end).await,
            Step::Touch => guest_touch(cpu, guest, run, rip).await,
            Step::Done => GuestStep::Exit(GuestExit::Exit(
                run,
                TdExit { reason: TdExitReason::Tdvmcall, guest_rip: rip },
            )),
        };
        match next {
            GuestStep::GoOn(back) => run = back,
            GuestStep::Exit(exit) => return exit,
        }
    }
}

/// Where one step of the guest's program leaves it.
enum GuestStep {
    /// The guest goes on with its next step.
    GoOn(GuestRun),
    /// The guest's run ends in this exit.
    Exit(GuestExit),
}

/// How a slice of the guest's own work ended.
enum Worked {
    /// The work is done, or the slice ended with work left before `until`: the next step.
    GoOn,
    /// An interrupt cut it short, or the tick (or the VMM's deadline) `until` came.
    Interrupted,
}

/// The guest works (no memory access the host sees) until its work is done or `until`, in
/// an interruptible period an interrupt queued for the CPU cuts short.
async fn guest_work(cpu: &Cpu, guest: &std::cell::RefCell<Guest>, until: u64) -> Worked {
    let now = cpu.sim.now();
    let work_left = guest.borrow().work_left;
    if work_left == 0 {
        guest.borrow_mut().advance();
        return Worked::GoOn;
    }
    let slice = work_left.min(until.saturating_sub(now.0));
    let cut_short = cpu.sim.interruptible(slice).await;
    let done = cpu.sim.now().0 - now.0;
    if done > 0 {
        // The guest ran: its CPU is not stuck, whatever the host side does.
        cpu.progress();
    }
    let mut state = guest.borrow_mut();
    state.work_left -= done.min(state.work_left);
    if state.work_left == 0 && !cut_short {
        state.advance();
        drop(state);
        cpu.progress();
        return Worked::GoOn;
    }
    drop(state);
    if cut_short || cpu.sim.now().0 >= until { Worked::Interrupted } else { Worked::GoOn }
}

/// The guest's TDG.MEM.PAGE.ACCEPT of its next page (or, hostile, of its one GPA again):
/// BUSY makes it retry; past the tick `tick_end` the timer interrupt makes it exit.
async fn guest_accept(
    cpu: &Cpu,
    guest: &std::cell::RefCell<Guest>,
    run: GuestRun,
    step: Step,
    tick_end: u64,
) -> GuestStep {
    let gpa =
        if step == Step::Hostile { Gpa(guest.borrow().program.gpa) } else { guest.borrow().gpa_of_page() };
    let run = match tdg_mem_page_accept(cpu, run, gpa).await {
        Accepted::Exited(output) => return GuestStep::Exit(GuestExit::Exited(output)),
        Accepted::Returned(back, status) => {
            // SUCCESS or PAGE_ALREADY_ACCEPTED: done; BUSY: the guest retries.
            if !status.is_operand_busy() {
                guest.borrow_mut().advance();
                cpu.progress();
            }
            back
        }
    };
    if cpu.sim.now().0 >= tick_end {
        let rip = guest.borrow().rip();
        return GuestStep::Exit(GuestExit::Exit(
            run,
            TdExit { reason: TdExitReason::ExternalInterrupt, guest_rip: rip },
        ));
    }
    GuestStep::GoOn(run)
}

/// The guest touches its next page: a mapped page costs a touch; an unmapped or pending one
/// is an EPT violation exit at `rip`.
async fn guest_touch(cpu: &Cpu, guest: &std::cell::RefCell<Guest>, run: GuestRun, rip: u64) -> GuestStep {
    let gpa = guest.borrow().gpa_of_page();
    let violation = |run| {
        GuestStep::Exit(GuestExit::Exit(
            run,
            TdExit { reason: TdExitReason::EptViolation { gpa }, guest_rip: rip },
        ))
    };
    match guest_access(cpu, &run, gpa) {
        Access::Hit => {
            cpu.busy(cpu.host().costs.guest_touch).await;
            guest.borrow_mut().advance();
            cpu.progress();
            GuestStep::GoOn(run)
        }
        Access::Pending => {
            guest.borrow_mut().pending_violation = true;
            violation(run)
        }
        Access::Violation => violation(run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(pages: u32, accept: bool, rounds: u32, hostile: bool) -> GuestProgram {
        GuestProgram { gpa: 0x10_0000, pages, accept, interval_cycles: 10, rounds, hostile }
    }

    fn steps(guest: &mut Guest, count: usize) -> Vec<(Step, u64)> {
        (0..count)
            .map(|_| {
                let at = (guest.step, guest.gpa_of_page().0);
                guest.advance();
                at
            })
            .collect()
    }

    #[test]
    fn a_guest_accepts_in_its_first_round_only_then_halts() {
        let mut guest = Guest::new(program(2, true, 2, false), None);
        let seen = steps(&mut guest, 10);
        let expected = [
            (Step::Work, 0x10_0000),
            (Step::Accept, 0x10_0000),
            (Step::Touch, 0x10_0000),
            (Step::Work, 0x10_1000),
            (Step::Accept, 0x10_1000),
            (Step::Touch, 0x10_1000),
            (Step::Work, 0x10_0000),
            (Step::Touch, 0x10_0000),
            (Step::Work, 0x10_1000),
            (Step::Touch, 0x10_1000),
        ];
        assert_eq!(seen, expected);
        assert!(guest.is_done());
    }

    #[test]
    fn a_hostile_guest_stays_on_its_first_gpa_and_instruction() {
        let mut guest = Guest::new(program(1, true, 1, true), None);
        steps(&mut guest, 3);
        assert_eq!(guest.step, Step::Hostile);
        let rip = guest.rip();
        guest.advance();
        assert_eq!((guest.step, guest.rip()), (Step::Hostile, rip));
        assert!(!guest.is_done());
    }

    #[test]
    fn each_instruction_has_its_own_rip_and_an_idle_guest_is_done() {
        let mut guest = Guest::new(program(2, true, 1, false), None);
        let mut rips = Vec::new();
        for _ in 0..6 {
            rips.push(guest.rip());
            guest.advance();
        }
        rips.sort_unstable();
        rips.dedup();
        assert_eq!(rips.len(), 6);
        assert!(Guest::idle().is_done());
    }
}
