//! The `Chooser`: every nondeterministic decision of a run goes through it, so the vector
//! of its answers is a complete record of the schedule.
//!
//! A trait, not an enum: strategies are an open set (random, replay today; PCT,
//! exhaustive and proptest-driven vectors build on the same one call).

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::Seed;

/// What a decision is about; strategies may treat kinds differently (PCT does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionKind {
    /// Which of several events due on the same cycle runs first.
    SameCycleOrder,
    /// Where in its jitter band a cost lands.
    CostJitter,
    /// Which waiter gets a lock that does not queue its waiters.
    WaiterWins,
}

/// Makes every nondeterministic decision of a run.
pub trait Chooser {
    /// Picks one of `options` (at least 2) for a decision of `kind`; the answer is `< options`.
    fn choose(&mut self, kind: DecisionKind, options: u32) -> u32;

    /// A replaying chooser says here whether the recorded vector no longer fitted the run
    /// (an answer out of range, or the vector ran out).
    fn diverged(&self) -> bool {
        false
    }
}

/// Uniform choices from ChaCha8 seeded with the run's seed: the default strategy.
pub struct RandomChooser {
    rng: ChaCha8Rng,
}

impl RandomChooser {
    pub fn new(seed: Seed) -> RandomChooser {
        RandomChooser { rng: ChaCha8Rng::seed_from_u64(seed.0) }
    }
}

impl Chooser for RandomChooser {
    fn choose(&mut self, _kind: DecisionKind, options: u32) -> u32 {
        debug_assert!(options >= 2);
        // Lemire's multiply-shift: uniform enough for scheduling, and branch-free.
        ((u64::from(self.rng.next_u32()) * u64::from(options)) >> 32) as u32
    }
}

/// Replays a recorded decision vector. Past its end it answers 0, so a vector that a
/// shrinker cut short still describes a run (the first option everywhere after).
pub struct ReplayChooser {
    decisions: Vec<u32>,
    next: usize,
    diverged: bool,
}

impl ReplayChooser {
    pub fn new(decisions: Vec<u32>) -> ReplayChooser {
        ReplayChooser { decisions, next: 0, diverged: false }
    }
}

impl Chooser for ReplayChooser {
    fn choose(&mut self, _kind: DecisionKind, options: u32) -> u32 {
        let Some(&recorded) = self.decisions.get(self.next) else {
            self.diverged = true;
            return 0;
        };
        self.next += 1;
        if recorded >= options {
            self.diverged = true;
            return options - 1;
        }
        recorded
    }

    fn diverged(&self) -> bool {
        self.diverged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_a_function_of_the_seed() {
        let picks = |seed| {
            let mut chooser = RandomChooser::new(Seed(seed));
            (0..64).map(|_| chooser.choose(DecisionKind::CostJitter, 7)).collect::<Vec<_>>()
        };
        assert_eq!(picks(1), picks(1));
        assert_ne!(picks(1), picks(2));
        assert!(picks(3).iter().all(|&pick| pick < 7));
        // All options are reachable.
        let mut seen = [false; 7];
        for pick in picks(4).into_iter().chain(picks(5)) {
            seen[pick as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn replay_answers_the_vector_then_zero() {
        let mut chooser = ReplayChooser::new(vec![1, 0, 5]);
        assert_eq!(chooser.choose(DecisionKind::SameCycleOrder, 2), 1);
        assert_eq!(chooser.choose(DecisionKind::SameCycleOrder, 2), 0);
        assert!(!chooser.diverged());
        assert_eq!(chooser.choose(DecisionKind::SameCycleOrder, 3), 2, "clamped");
        assert!(chooser.diverged());
        assert_eq!(chooser.choose(DecisionKind::SameCycleOrder, 3), 0, "past the end");
    }
}
