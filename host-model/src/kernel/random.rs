//! The kernel's random numbers, drawn through the run's chooser so a seed (or a recorded
//! decision vector) replays them: nothing in a run uses another source of randomness.

use sim_core::DecisionKind;

use super::cpu::Cpu;

/// A uniform value in `0..ceil` (0 when `ceil` is 0 or 1: nothing to draw).
///
/// Kernel: `get_random_u32_below()`, drivers/char/random.c.
pub fn get_random_u32_below(cpu: &Cpu, ceil: u32) -> u32 {
    cpu.sim.with(|engine| engine.choose(DecisionKind::Draw, ceil, &[cpu.id]))
}
