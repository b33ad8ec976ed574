//! The `Chooser`: every nondeterministic decision of a run goes through it, so the vector
//! of its answers is a complete record of the schedule.
//!
//! A trait, not an enum: strategies are an open set (random, PCT, replay and the exhaustive
//! enumerator today; proptest-driven vectors build on the same one call).

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{CpuId, Seed};

/// What a decision is about; strategies treat kinds differently (PCT does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionKind {
    /// Which of several events due on the same cycle runs first.
    SameCycleOrder,
    /// Where in its jitter band a cost lands.
    CostJitter,
    /// Which waiter gets a lock that does not queue its waiters.
    WaiterWins,
    /// Whether an interrupt or preemption stalls a CPU at a point where its code can be
    /// interrupted, and for how long: 0 is no stall, `k` is the `k`-th of the engine's stall
    /// lengths (log-spaced up to `run.max_stall`, shortest first).
    Stall,
    /// At a point where preemption is on too, whether a stall is an interrupt (0: the task
    /// keeps its CPU) or a preemption (1: another task may run there meanwhile).
    StallKind,
    /// A random value the simulated system itself draws (the kernel's `get_random_u32_below()`:
    /// where the page allocator finds a page, where a workload punches a hole). Not a
    /// schedule: PCT draws it uniformly as random does.
    Draw,
}

/// One decision: its kind, how many options, and the CPU each option belongs to (for
/// same-cycle order and waiters, one per option; for jitter and stalls, the one CPU). A
/// same-cycle order's may be empty for a chooser whose `reads_cpus` is false.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'a> {
    pub kind: DecisionKind,
    pub options: u32,
    pub cpus: &'a [CpuId],
}

/// Makes every nondeterministic decision of a run.
pub trait Chooser {
    /// Picks one of `decision.options` (at least 2); the answer is `< options`.
    fn choose(&mut self, decision: &Decision<'_>) -> u32;

    /// A replaying chooser says here whether the recorded vector no longer fitted the run
    /// (an answer out of range, or the vector ran out).
    fn diverged(&self) -> bool {
        false
    }

    /// Whether its answers depend on `Decision::cpus`. One that says no is given them empty
    /// where gathering them costs a pass (a pick among events due on one cycle).
    fn reads_cpus(&self) -> bool {
        true
    }
}

/// The chooser a run's engine asks: the random strategy called without dynamic dispatch
/// (it makes the decisions of most runs explored), any other through its trait.
pub enum RunChooser {
    Random(Box<RandomChooser>),
    Other(Box<dyn Chooser>),
}

impl RunChooser {
    #[inline]
    pub fn choose(&mut self, decision: &Decision<'_>) -> u32 {
        match self {
            RunChooser::Random(random) => random.choose(decision),
            RunChooser::Other(other) => other.choose(decision),
        }
    }

    pub fn diverged(&self) -> bool {
        match self {
            RunChooser::Random(random) => random.diverged(),
            RunChooser::Other(other) => other.diverged(),
        }
    }

    #[inline]
    pub fn reads_cpus(&self) -> bool {
        match self {
            RunChooser::Random(random) => random.reads_cpus(),
            RunChooser::Other(other) => other.reads_cpus(),
        }
    }
}

impl From<RandomChooser> for RunChooser {
    fn from(random: RandomChooser) -> RunChooser {
        RunChooser::Random(Box::new(random))
    }
}

impl From<Box<dyn Chooser>> for RunChooser {
    fn from(other: Box<dyn Chooser>) -> RunChooser {
        RunChooser::Other(other)
    }
}

/// Any boxed chooser, as the trait object it was before `RunChooser`.
impl<C: Chooser + 'static> From<Box<C>> for RunChooser {
    fn from(other: Box<C>) -> RunChooser {
        RunChooser::Other(other)
    }
}

/// Swarm testing for stalls (Groce et al., ISSTA 2012): each random run draws its own stall
/// rate, one interruptible point in `2^k` for `k` uniform in `0..=STALL_RATE_LOG2_MAX` (from
/// every point to one in 1024), so a run with a few well-placed stalls is as likely as a run
/// with many.
pub const STALL_RATE_LOG2_MAX: u32 = 10;

fn uniform(rng: &mut ChaCha8Rng, options: u32) -> u32 {
    // Lemire's multiply-shift: uniform enough for scheduling, and branch-free.
    ((u64::from(rng.next_u32()) * u64::from(options)) >> 32) as u32
}

/// Uniform choices from ChaCha8 seeded with the run's seed: the default strategy. Stalls
/// come at the run's own rate (swarm testing) and their lengths are uniform over the
/// engine's log-spaced steps, so short and long windows are both hit often.
pub struct RandomChooser {
    rng: ChaCha8Rng,
    /// This run's stall rate: one interruptible point in `2^stall_rate_log2` stalls.
    stall_rate_log2: u32,
}

impl RandomChooser {
    pub fn new(seed: Seed) -> RandomChooser {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.0);
        let stall_rate_log2 = uniform(&mut rng, STALL_RATE_LOG2_MAX + 1);
        RandomChooser { rng, stall_rate_log2 }
    }

    /// This run's stall rate as `log2(1 / rate)`.
    pub fn stall_rate_log2(&self) -> u32 {
        self.stall_rate_log2
    }
}

impl Chooser for RandomChooser {
    #[inline]
    fn choose(&mut self, decision: &Decision<'_>) -> u32 {
        debug_assert!(decision.options >= 2);
        if decision.kind == DecisionKind::Stall {
            let mask = (1u32 << self.stall_rate_log2) - 1;
            if self.rng.next_u32() & mask != 0 {
                return 0;
            }
            return 1 + uniform(&mut self.rng, decision.options - 1);
        }
        uniform(&mut self.rng, decision.options)
    }

    /// Its draws depend on the options' number and kind only.
    fn reads_cpus(&self) -> bool {
        false
    }
}

/// Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010) adapted to timed
/// events. Each CPU gets a random priority; same-cycle events run in priority order, and a
/// CPU's costs land at the fast end of their jitter band the higher its priority. Up to
/// `depth - 1` change points (how many is drawn per run, none included, so the undisturbed
/// parallel schedule is among those explored) are drawn among the first `horizon`
/// interruptible points of the run: at a change point the CPU there drops to the lowest
/// priority — PCT's "preempt the running thread at a random step", which in a timed model
/// means it now loses same-cycle races and runs at the slow end of its band.
///
/// A run with change points also takes the interrupts its environment would (the random
/// strategy's swarm rates), so windows that need an interrupt inside preempt-off code stay
/// reachable. A run without change points is PCT's depth-1 run: the priority schedule alone,
/// undisturbed, so what the undisturbed parallel schedule reaches is found at least as often
/// as under random.
pub struct PctChooser {
    rng: ChaCha8Rng,
    /// Rank of each CPU: lower runs first. invariant: a permutation of 0..cpus, then
    /// demoted CPUs get ranks past it.
    rank: Vec<u32>,
    next_low_rank: u32,
    /// Interruptible-point indices at which to demote and stall, ascending.
    change_points: Vec<u64>,
    /// The next change point not yet reached.
    next_change: usize,
    stall_points_seen: u64,
    /// The run's background interrupt rate, one point in `2^log2`; `None` in a run without
    /// change points.
    stall_rate_log2: Option<u32>,
}

impl PctChooser {
    pub fn new(seed: Seed, cpus: u32, depth: u32, horizon: u64) -> PctChooser {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.0);
        let mut rank: Vec<u32> = (0..cpus).collect();
        // Fisher-Yates: a random priority order.
        for index in (1..rank.len()).rev() {
            let other = uniform(&mut rng, index as u32 + 1) as usize;
            rank.swap(index, other);
        }
        let horizon = horizon.max(1);
        let changes = uniform(&mut rng, depth.max(1));
        let mut change_points: Vec<u64> = (0..changes)
            .map(|_| (u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32())) % horizon)
            .collect();
        change_points.sort_unstable();
        let stall_rate_log2 = (changes > 0).then(|| uniform(&mut rng, STALL_RATE_LOG2_MAX + 1));
        PctChooser {
            rng,
            rank,
            next_low_rank: cpus,
            change_points,
            next_change: 0,
            stall_points_seen: 0,
            stall_rate_log2,
        }
    }

    fn rank_of(&self, cpu: CpuId) -> u32 {
        self.rank.get(cpu.0 as usize).copied().unwrap_or(u32::MAX)
    }

    /// Whether interruptible point `index` is a change point (it may be drawn twice).
    fn is_change_point(&mut self, index: u64) -> bool {
        let mut hit = false;
        while self.change_points.get(self.next_change) == Some(&index) {
            self.next_change += 1;
            hit = true;
        }
        hit
    }
}

impl Chooser for PctChooser {
    fn choose(&mut self, decision: &Decision<'_>) -> u32 {
        match decision.kind {
            DecisionKind::SameCycleOrder | DecisionKind::WaiterWins => {
                let best = (0..decision.options).min_by_key(|&option| {
                    decision.cpus.get(option as usize).map_or(u32::MAX, |&cpu| self.rank_of(cpu))
                });
                best.unwrap_or(0)
            }
            DecisionKind::CostJitter => {
                // Rank 0 runs at the fast end; the lowest rank at the slow end.
                let Some(&cpu) = decision.cpus.first() else { return decision.options / 2 };
                let cpus = self.rank.len().max(2) as u64;
                let rank = u64::from(self.rank_of(cpu).min(cpus as u32 - 1));
                ((u64::from(decision.options - 1) * rank) / (cpus - 1)) as u32
            }
            DecisionKind::StallKind | DecisionKind::Draw => uniform(&mut self.rng, decision.options),
            DecisionKind::Stall => {
                let index = self.stall_points_seen;
                self.stall_points_seen += 1;
                // At a change point the CPU loses its place (same-cycle order, the slow end
                // of its band); whether it is also interrupted here is the environment's call.
                if self.is_change_point(index)
                    && let Some(&cpu) = decision.cpus.first()
                    && let Some(rank) = self.rank.get_mut(cpu.0 as usize)
                {
                    *rank = self.next_low_rank;
                    self.next_low_rank += 1;
                }
                let Some(log2) = self.stall_rate_log2 else { return 0 };
                let mask = (1u32 << log2) - 1;
                if self.rng.next_u32() & mask != 0 {
                    return 0;
                }
                1 + uniform(&mut self.rng, decision.options - 1)
            }
        }
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
    fn choose(&mut self, decision: &Decision<'_>) -> u32 {
        let Some(&recorded) = self.decisions.get(self.next) else {
            self.diverged = true;
            return 0;
        };
        self.next += 1;
        if recorded >= decision.options {
            self.diverged = true;
            return decision.options - 1;
        }
        recorded
    }

    fn diverged(&self) -> bool {
        self.diverged
    }
}

/// One schedule of a depth-first enumeration: follows `prefix`, then takes option 0 (the
/// default: event order by time then creation, the middle of no band, no stall) everywhere.
/// The enumerator (`Exhaustive`) reads the run's decisions and options back from the report.
pub struct PrefixChooser {
    prefix: Vec<u32>,
    next: usize,
}

impl PrefixChooser {
    pub fn new(prefix: Vec<u32>) -> PrefixChooser {
        PrefixChooser { prefix, next: 0 }
    }
}

impl Chooser for PrefixChooser {
    fn choose(&mut self, decision: &Decision<'_>) -> u32 {
        let pick = self.prefix.get(self.next).copied().unwrap_or(0).min(decision.options - 1);
        self.next += 1;
        pick
    }
}

/// The nominal schedule: every cost at the middle of its jitter band, events in time then
/// creation order, no stall, the first waiter wins, every drawn value mid-range. Where the default schedule (option 0
/// everywhere) runs every CPU at its fastest, this one runs the timeline a scenario's times
/// were written against; coverage-guided exploration starts from both.
pub struct NominalChooser;

impl Chooser for NominalChooser {
    fn choose(&mut self, decision: &Decision<'_>) -> u32 {
        match decision.kind {
            // A value the system draws lands mid-range too, as a cost does.
            DecisionKind::CostJitter | DecisionKind::Draw => decision.options / 2,
            DecisionKind::SameCycleOrder
            | DecisionKind::WaiterWins
            | DecisionKind::Stall
            | DecisionKind::StallKind => 0,
        }
    }
}

/// Depth-first enumeration of decision vectors (loom-style) with a bound on how many
/// decisions may differ from the default. Drive it with `next_prefix` after each run.
pub struct Exhaustive {
    bound: u32,
}

impl Exhaustive {
    pub fn new(bound: u32) -> Exhaustive {
        Exhaustive { bound }
    }

    /// The prefix of the next schedule after a run that made `decisions` with `options`,
    /// or `None` when every schedule within the bound has been covered.
    pub fn next_prefix(&self, decisions: &[u32], options: &[u32]) -> Option<Vec<u32>> {
        debug_assert_eq!(decisions.len(), options.len());
        let deviations = |upto: usize| decisions[..upto].iter().filter(|&&pick| pick != 0).count() as u32;
        for index in (0..decisions.len()).rev() {
            let next = decisions[index] + 1;
            if next >= options[index] {
                continue;
            }
            // Moving this decision off 0 costs one deviation; moving it further costs none more.
            let extra = u32::from(decisions[index] == 0);
            if deviations(index) + extra > self.bound {
                continue;
            }
            let mut prefix = decisions[..index].to_vec();
            prefix.push(next);
            return Some(prefix);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(kind: DecisionKind, options: u32, cpus: &[CpuId]) -> Decision<'_> {
        Decision { kind, options, cpus }
    }

    #[test]
    fn random_is_a_function_of_the_seed() {
        let picks = |seed| {
            let mut chooser = RandomChooser::new(Seed(seed));
            (0..64).map(|_| chooser.choose(&decision(DecisionKind::CostJitter, 7, &[]))).collect::<Vec<_>>()
        };
        assert_eq!(picks(1), picks(1));
        assert_ne!(picks(1), picks(2));
        assert!(picks(3).iter().all(|&pick| pick < 7));
        let mut seen = [false; 7];
        for pick in picks(4).into_iter().chain(picks(5)) {
            seen[pick as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn random_stall_rates_vary_from_run_to_run_and_match_each_runs_rate() {
        let mut rates = std::collections::BTreeSet::new();
        for seed in 0..60 {
            let mut chooser = RandomChooser::new(Seed(seed));
            let log2 = chooser.stall_rate_log2();
            assert!(log2 <= STALL_RATE_LOG2_MAX);
            rates.insert(log2);
            let points = 1u32 << (log2 + 7);
            let stalls = (0..points)
                .filter(|_| chooser.choose(&decision(DecisionKind::Stall, 33, &[CpuId(0)])) != 0)
                .count() as f64;
            let expected = f64::from(points) / f64::from(1u32 << log2);
            assert!(
                (stalls - expected).abs() < 5.0 * expected.sqrt() + 3.0,
                "seed {seed}: {stalls} vs {expected}"
            );
        }
        assert_eq!(rates.len() as u32, STALL_RATE_LOG2_MAX + 1, "every rate is drawn");
    }

    #[test]
    fn random_stall_lengths_cover_every_step() {
        let mut chooser = RandomChooser::new(Seed(1));
        let mut seen = [0u32; 33];
        for _ in 0..40_000 {
            seen[chooser.choose(&decision(DecisionKind::Stall, 33, &[CpuId(0)])) as usize] += 1;
        }
        assert!(seen[1..].iter().all(|&count| count > 0), "{seen:?}");
    }

    #[test]
    fn replay_answers_the_vector_then_zero() {
        let mut chooser = ReplayChooser::new(vec![1, 0, 5]);
        let two = decision(DecisionKind::SameCycleOrder, 2, &[]);
        let three = decision(DecisionKind::SameCycleOrder, 3, &[]);
        assert_eq!(chooser.choose(&two), 1);
        assert_eq!(chooser.choose(&two), 0);
        assert!(!chooser.diverged());
        assert_eq!(chooser.choose(&three), 2, "clamped");
        assert!(chooser.diverged());
        assert_eq!(chooser.choose(&three), 0, "past the end");
    }

    #[test]
    fn pct_orders_by_priority_and_demotes_at_change_points() {
        let cpus = [CpuId(0), CpuId(1), CpuId(2)];
        let mut counts = [0u32; 2];
        for seed in 0..64 {
            let mut chooser = PctChooser::new(Seed(seed), 3, 2, 4);
            let change_points = chooser.change_points.clone();
            assert!(change_points.len() <= 1, "at most depth - 1 change points");
            counts[change_points.len()] += 1;
            let first = chooser.choose(&decision(DecisionKind::SameCycleOrder, 3, &cpus));
            // The same CPU wins every time until a change point, and runs at the fast end.
            assert_eq!(chooser.choose(&decision(DecisionKind::SameCycleOrder, 3, &cpus)), first);
            let winner = cpus[first as usize];
            assert_eq!(chooser.choose(&decision(DecisionKind::CostJitter, 11, &[winner])), 0);
            let stalls: Vec<u32> =
                (0..4).map(|_| chooser.choose(&decision(DecisionKind::Stall, 17, &[winner]))).collect();
            if change_points.is_empty() {
                assert_eq!(stalls, [0; 4], "seed {seed}: a run without change points is undisturbed");
            }
            let after = chooser.choose(&decision(DecisionKind::SameCycleOrder, 3, &cpus));
            if change_points.is_empty() {
                assert_eq!(after, first, "seed {seed}: no change point, no change");
            } else {
                // The stalled CPU dropped to the lowest priority.
                assert_ne!(cpus[after as usize], winner, "seed {seed}");
                assert_eq!(chooser.choose(&decision(DecisionKind::CostJitter, 11, &[winner])), 10);
            }
        }
        assert!(counts[0] > 10 && counts[1] > 10, "runs with and without a change point: {counts:?}");
    }

    #[test]
    fn nominal_is_the_middle_of_every_band_and_nothing_else() {
        let mut chooser = NominalChooser;
        assert_eq!(chooser.choose(&decision(DecisionKind::CostJitter, 11, &[CpuId(0)])), 5);
        assert_eq!(chooser.choose(&decision(DecisionKind::Stall, 17, &[CpuId(0)])), 0);
        assert_eq!(chooser.choose(&decision(DecisionKind::SameCycleOrder, 3, &[CpuId(0), CpuId(1)])), 0);
    }

    #[test]
    fn exhaustive_walks_every_vector_within_the_bound() {
        // Three binary decisions, bound 1: 000, 001, 010, 100.
        let enumerator = Exhaustive::new(1);
        let options = [2, 2, 2];
        let mut runs = vec![vec![0, 0, 0]];
        let mut current = vec![0, 0, 0];
        while let Some(prefix) = enumerator.next_prefix(&current, &options) {
            let mut run = prefix.clone();
            run.resize(3, 0);
            runs.push(run.clone());
            current = run;
        }
        assert_eq!(runs, vec![vec![0, 0, 0], vec![0, 0, 1], vec![0, 1, 0], vec![1, 0, 0]]);
        // Bound 3 covers all eight.
        let enumerator = Exhaustive::new(3);
        let mut count = 1;
        let mut current = vec![0, 0, 0];
        while let Some(prefix) = enumerator.next_prefix(&current, &options) {
            current = prefix;
            current.resize(3, 0);
            count += 1;
        }
        assert_eq!(count, 8);
    }
}
