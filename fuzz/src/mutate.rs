//! Mutations of generated scenarios, for coverage-guided fuzzing: a task or a step from a
//! fresh draw spliced in, a step dropped or moved, a task started at another time. Every
//! mutant is normalized, so it stays a valid scenario.

use proptest::strategy::BoxedStrategy;
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use crate::corpus::below;
use crate::spec::{MachineLimits, START_NS_MAX, ScenarioSpec};
use crate::strategy::Draws;

/// A mutant of `spec`, or `None` when the mutation drawn changed nothing. `donors` is the
/// scenario strategy fresh material comes from.
pub fn mutate_scenario(
    spec: &ScenarioSpec,
    donors: &BoxedStrategy<ScenarioSpec>,
    limits: &MachineLimits,
    rng: &mut ChaCha8Rng,
) -> Option<ScenarioSpec> {
    let mut mutant = spec.clone();
    let donor = Draws::new(rng.next_u64()).draw(donors);
    if mutant.tasks.is_empty() || donor.tasks.is_empty() {
        return None;
    }
    let task = below(rng, mutant.tasks.len() as u64) as usize;
    match below(rng, 6) {
        0 => mutant.tasks[task] = donor.tasks[0].clone(),
        1 => {
            if (mutant.tasks.len() as u32) < limits.cpus_max {
                mutant.tasks.push(donor.tasks[0].clone());
                mutant.cpus = mutant.cpus.max(mutant.tasks.len() as u32);
            }
        }
        2 => {
            let ops = &mut mutant.tasks[task].ops;
            let at = below(rng, ops.len() as u64 + 1) as usize;
            ops.insert(at, donor.tasks[0].ops[0].clone());
        }
        3 => {
            let ops = &mut mutant.tasks[task].ops;
            if ops.len() > 1 {
                ops.remove(below(rng, ops.len() as u64) as usize);
            }
        }
        4 => mutant.tasks[task].start_ns = below(rng, u64::from(START_NS_MAX) + 1) as u32,
        _ => {
            let ops = &mut mutant.tasks[task].ops;
            if ops.len() > 1 {
                let a = below(rng, ops.len() as u64) as usize;
                let b = below(rng, ops.len() as u64) as usize;
                ops.swap(a, b);
            }
        }
    }
    mutant.normalize(limits);
    (mutant != *spec && !mutant.tasks.is_empty()).then_some(mutant)
}
