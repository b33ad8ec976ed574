//! How near two tasks' transitions of the same per-CPU hardware state came, as coverage
//! data (`--strategy coverage`): the checker's part of the explorer's trail for races that
//! are timing windows, where locks, waits and statuses are the same whether one CPU's IPI
//! missed another task's window by a microsecond or by a millisecond.
//!
//! Each transition (VMXON, a refused VMXON, VMXOFF on a CPU) that follows another task's
//! transition of the same state (the state's reads-from) is a nearness feature (sim-core's
//! `FeatureTag::Nearness`): its site is the pair (the earlier transition and its task's name,
//! this one and its task's name), its distance how long after the earlier one it came, in
//! half-octaves of cycles. The explorer keeps a run that comes nearer at a site than every
//! run before; the feature is placed where the earlier transition was made, since that is
//! the part of the schedule a stall has to move for the two to come nearer still. A first
//! transition, or one after the same task's, is a plain model feature (what it was).
//! Nothing is recorded unless the run records coverage, so other runs' traces do not move.

use std::cell::RefCell;
use std::collections::BTreeMap;

use host_model::kernel::cpu::{Cpu, cover};
use sim_core::{Cycle, TaskId};

/// The per-CPU hardware states watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HwState {
    /// CR4.VMXE: VMXON and VMXOFF.
    Vmx,
}

impl HwState {
    fn word(self) -> u64 {
        match self {
            HwState::Vmx => 1,
        }
    }
}

/// Distance buckets stop here (2^(CAP/2) cycles, about 3.8 ms at 2.2 GHz): farther is far.
const BUCKET_CAP: u64 = 46;

/// The last transition of one state on one CPU.
#[derive(Clone, Copy, Debug)]
struct Transition {
    task: TaskId,
    /// The state, the transition and the task's name, hashed.
    who: u64,
    at: Cycle,
    decision: u32,
}

/// The last transition of each watched state on each CPU.
#[derive(Default)]
pub struct TransitionWatch {
    last: RefCell<BTreeMap<(HwState, u32), Transition>>,
}

/// `cycles` in half-octaves (sim-core's scale), capped at `BUCKET_CAP`.
fn half_octaves(cycles: u64) -> u8 {
    sim_core::half_octaves(cycles).min(BUCKET_CAP as u8)
}

/// FNV-1a of a word and a text: a site word stable across runs.
fn fnv(hash: u64, word: u64, text: &str) -> u64 {
    word.to_le_bytes()
        .into_iter()
        .chain(text.len().to_le_bytes())
        .chain(text.bytes())
        .fold(hash, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl TransitionWatch {
    /// `cpu`'s task made transition `what` (a small code: the operation and its result) of
    /// `state` on its CPU.
    pub fn transition(&self, cpu: &Cpu, state: HwState, what: u64) {
        cpu.sim.with(|engine| {
            if !engine.covering() {
                return;
            }
            let task = engine.current_task();
            // Who made it: the task's name (`ipi/2`, `cpuhp/2`: the same in every run).
            let who = fnv(0xcbf2_9ce4_8422_2325, state.word() | what << 8, engine.task_name(task));
            let now = Transition { task, who, at: engine.now(), decision: engine.covered_decisions() };
            let before = self.last.borrow_mut().insert((state, cpu.id.0), now);
            match before {
                Some(before) if before.task != now.task => {
                    // Another task's transition, this one's reads-from: how near they came.
                    let site = fnv(before.who, now.who, "");
                    let cycles = now.at.0.saturating_sub(before.at.0);
                    // Both on this CPU, whose state it is: holding the earlier task here
                    // for longer than `cycles` swaps them.
                    engine.cover_nearness(site, half_octaves(cycles), before.decision, cpu.id, cycles);
                }
                // The first transition here, or the same task's again: what it was only.
                Some(_) => engine.cover(cover::NEAR_TRANSITION, now.who, 1),
                None => engine.cover(cover::NEAR_TRANSITION, now.who, 0),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_octaves_grow_by_one_every_half_power_of_two() {
        assert_eq!(half_octaves(0), 0);
        assert_eq!(half_octaves(1), 1);
        assert_eq!(half_octaves(2), 2);
        assert_eq!(half_octaves(3), 3);
        assert_eq!(half_octaves(4), 4);
        assert_eq!(half_octaves(6), 5);
        assert_eq!(half_octaves(1 << 20), 40);
        assert_eq!(half_octaves(3 << 19), 41);
        assert_eq!(half_octaves(u64::MAX), BUCKET_CAP as u8);
    }
}
