//! Coverage-guided exploration: a corpus of runs that covered something new, and the
//! mutations that make new runs from them.
//!
//! In the spirit of reads-from-guided fuzzing (RFF, ASPLOS 2024), adapted from reads-from
//! pairs to what tdxsim records (sim-core coverage.rs): lock-order and wait-for edges,
//! contended lock pairs, (leaf, status, operand) triples of SEAMCALLs, and DPAMT near misses.
//! A run that covers a feature no earlier run did joins the corpus, together with where in
//! its schedule the new features appeared. Entries whose features are rare are picked more
//! often; a pick is mutated near where its new features appeared, mostly: a same-cycle
//! order flipped, a stall inserted, lengthened, shortened, moved or dropped, a stretch of
//! cost jitter redrawn, or the schedule redrawn from some point on. A mutated schedule keeps
//! every decision before its first change, so the run it gives follows its parent up to the
//! point the mutation aims at.
//!
//! Everything is a function of the seed: candidates for a batch are drawn in order from one
//! ChaCha8 stream before the batch runs, and results are absorbed in candidate order.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use sim_core::DecisionKind;

use crate::runner::Verdict;
use crate::schedule::{Deviations, Schedule};

/// Runs an explorer plans and absorbs together: fixed, so results do not depend on how many
/// threads run a batch.
pub const BATCH: usize = 8;

/// One in this many candidates is a fresh draw rather than a mutation.
const FRESH_ONE_IN: u32 = 4;

/// Decisions before a new feature's first appearance that mutations aim at.
const HOTSPOT_WINDOW: u32 = 96;

/// A uniform draw in `0..bound` (`bound` > 0).
pub fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    debug_assert!(bound > 0);
    ((u128::from(rng.next_u64()) * u128::from(bound)) >> 64) as u64
}

/// A run kept for what it covered first.
#[derive(Clone, Debug)]
pub struct Entry<S> {
    pub subject: S,
    pub decisions: Vec<u32>,
    pub options: Vec<u32>,
    pub kinds: Vec<DecisionKind>,
    pub features: Vec<u64>,
    /// Decision counts at which its new features first appeared.
    pub hotspots: Vec<u32>,
    picks: u32,
}

/// The runs that covered something new, and how often each feature was covered.
#[derive(Clone, Debug)]
pub struct Corpus<S> {
    entries: Vec<Entry<S>>,
    /// Feature -> runs that covered it.
    hits: BTreeMap<u64, u32>,
}

impl<S> Default for Corpus<S> {
    fn default() -> Corpus<S> {
        Corpus { entries: Vec::new(), hits: BTreeMap::new() }
    }
}

impl<S: Clone> Corpus<S> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct features covered so far.
    pub fn features(&self) -> usize {
        self.hits.len()
    }

    /// Counts `verdict`'s features and keeps it when it covered a new one; returns how many
    /// were new.
    pub fn absorb(&mut self, subject: &S, verdict: &Verdict) -> usize {
        let mut hotspots = Vec::new();
        for (position, &feature) in verdict.features.iter().enumerate() {
            let hits = self.hits.entry(feature).or_default();
            if *hits == 0 {
                hotspots.push(verdict.feature_first_at.get(position).copied().unwrap_or(0));
            }
            *hits += 1;
        }
        let new = hotspots.len();
        if new > 0 && !verdict.decision_kinds.is_empty() {
            hotspots.sort_unstable();
            hotspots.dedup();
            self.entries.push(Entry {
                subject: subject.clone(),
                decisions: verdict.decisions.clone(),
                options: verdict.decision_options.clone(),
                kinds: verdict.decision_kinds.clone(),
                features: verdict.features.clone(),
                hotspots,
                picks: 0,
            });
        }
        new
    }

    /// Weights for picking: the rarer an entry's features, the heavier; each pick makes it
    /// lighter. Integer arithmetic, so the same on every machine.
    fn weights(&self) -> Vec<u64> {
        self.entries
            .iter()
            .map(|entry| {
                let rarity: u64 = entry
                    .features
                    .iter()
                    .map(|feature| 1_000_000 / u64::from(self.hits.get(feature).copied().unwrap_or(1).max(1)))
                    .sum();
                (rarity / (1 + u64::from(entry.picks) / 2)).max(1)
            })
            .collect()
    }

    /// Picks `count` entries (indices), by weight.
    fn pick(&mut self, rng: &mut ChaCha8Rng, count: usize) -> Vec<usize> {
        let weights = self.weights();
        let total: u64 = weights.iter().sum();
        let mut picked = Vec::with_capacity(count);
        for _ in 0..count {
            let mut target = below(rng, total.max(1));
            let mut chosen = weights.len() - 1;
            for (index, &weight) in weights.iter().enumerate() {
                if target < weight {
                    chosen = index;
                    break;
                }
                target -= weight;
            }
            self.entries[chosen].picks += 1;
            picked.push(chosen);
        }
        picked
    }

    pub fn entry(&self, index: usize) -> &Entry<S> {
        &self.entries[index]
    }
}

/// What the explorer does to an entry's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    FlipOrder,
    InsertStall,
    LengthenStall,
    ShortenStall,
    MoveStall,
    DropStall,
    RedrawJitter,
    RedrawTail,
}

const MUTATIONS: &[(Mutation, u64)] = &[
    (Mutation::FlipOrder, 3),
    (Mutation::InsertStall, 4),
    (Mutation::LengthenStall, 3),
    (Mutation::ShortenStall, 1),
    (Mutation::MoveStall, 2),
    (Mutation::DropStall, 1),
    (Mutation::RedrawJitter, 1),
    (Mutation::RedrawTail, 1),
];

/// Indices of `kinds` matching `wanted` (and `keep` on the current option), inside the
/// window before `hotspot` when one is given and holds any.
fn indices_of<S>(
    entry: &Entry<S>,
    decisions: &[u32],
    hotspot: Option<u32>,
    wanted: &dyn Fn(DecisionKind, u32) -> bool,
) -> Vec<usize> {
    let all = || (0..decisions.len()).filter(|&i| wanted(entry.kinds[i], decisions[i]));
    if let Some(hotspot) = hotspot {
        let low = hotspot.saturating_sub(HOTSPOT_WINDOW) as usize;
        let near: Vec<usize> = all().filter(|&i| i >= low && i <= hotspot as usize).collect();
        if !near.is_empty() {
            return near;
        }
    }
    all().collect()
}

fn choose(rng: &mut ChaCha8Rng, indices: &[usize]) -> Option<usize> {
    (!indices.is_empty()).then(|| indices[below(rng, indices.len() as u64) as usize])
}

/// A random stall option the way `RandomChooser` draws one: one point in 32, any length.
fn random_option(rng: &mut ChaCha8Rng, kind: DecisionKind, options: u32) -> u32 {
    if kind == DecisionKind::Stall && below(rng, 32) != 0 {
        return 0;
    }
    below(rng, u64::from(options)) as u32
}

/// One to three mutations of `entry`'s schedule, as a dense decision vector.
pub fn mutate_schedule<S>(entry: &Entry<S>, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut decisions = entry.decisions.clone();
    let len = decisions.len().min(entry.kinds.len()).min(entry.options.len());
    decisions.truncate(len);
    if len == 0 {
        return decisions;
    }
    let rounds = 1 + below(rng, 3);
    for _ in 0..rounds {
        let hotspot = if below(rng, 4) != 0 && !entry.hotspots.is_empty() {
            Some(entry.hotspots[below(rng, entry.hotspots.len() as u64) as usize])
        } else {
            None
        };
        let total: u64 = MUTATIONS.iter().map(|(_, weight)| weight).sum();
        let mut target = below(rng, total);
        let mut mutation = MUTATIONS[0].0;
        for &(candidate, weight) in MUTATIONS {
            if target < weight {
                mutation = candidate;
                break;
            }
            target -= weight;
        }
        apply(entry, &mut decisions, hotspot, mutation, rng);
    }
    decisions
}

fn apply<S>(
    entry: &Entry<S>,
    decisions: &mut [u32],
    hotspot: Option<u32>,
    mutation: Mutation,
    rng: &mut ChaCha8Rng,
) {
    let stall = |kind: DecisionKind| kind == DecisionKind::Stall;
    let max_option = |index: usize| entry.options[index].saturating_sub(1);
    match mutation {
        Mutation::FlipOrder => {
            let orders = indices_of(entry, decisions, hotspot, &|kind, _| {
                matches!(kind, DecisionKind::SameCycleOrder | DecisionKind::WaiterWins)
            });
            if let Some(index) = choose(rng, &orders) {
                let options = u64::from(entry.options[index]);
                decisions[index] =
                    ((u64::from(decisions[index]) + 1 + below(rng, options - 1)) % options) as u32;
            }
        }
        Mutation::InsertStall => {
            let free = indices_of(entry, decisions, hotspot, &|kind, option| stall(kind) && option == 0);
            if let Some(index) = choose(rng, &free) {
                decisions[index] = 1 + below(rng, u64::from(max_option(index).max(1))) as u32;
            }
        }
        Mutation::LengthenStall | Mutation::ShortenStall | Mutation::DropStall | Mutation::MoveStall => {
            let stalled = indices_of(entry, decisions, hotspot, &|kind, option| stall(kind) && option != 0);
            let Some(index) = choose(rng, &stalled) else {
                // Nothing to change: insert one instead.
                return apply(entry, decisions, hotspot, Mutation::InsertStall, rng);
            };
            let option = decisions[index];
            match mutation {
                Mutation::LengthenStall => {
                    decisions[index] =
                        (option + 1 + below(rng, u64::from(option)) as u32).min(max_option(index));
                }
                Mutation::ShortenStall => decisions[index] = (option / 2).max(1),
                Mutation::DropStall => decisions[index] = 0,
                _ => {
                    // Move it to another stall point within a few of this one.
                    let points: Vec<usize> =
                        (0..decisions.len()).filter(|&i| stall(entry.kinds[i])).collect();
                    let here = points.binary_search(&index).unwrap_or(0);
                    let offset = 1 + below(rng, 8) as usize;
                    let there = if below(rng, 2) == 0 { here.saturating_sub(offset) } else { here + offset };
                    if let Some(&target) = points.get(there) {
                        decisions[index] = 0;
                        decisions[target] = option.min(max_option(target));
                    }
                }
            }
        }
        Mutation::RedrawJitter => {
            let start = match hotspot {
                Some(hotspot) => (hotspot.saturating_sub(HOTSPOT_WINDOW) as usize).min(decisions.len() - 1),
                None => below(rng, decisions.len() as u64) as usize,
            };
            let stretch = 1 + below(rng, 32) as usize;
            for index in start..(start + stretch).min(decisions.len()) {
                if entry.kinds[index] == DecisionKind::CostJitter {
                    decisions[index] = below(rng, u64::from(entry.options[index])) as u32;
                }
            }
        }
        Mutation::RedrawTail => {
            let start = match hotspot {
                Some(hotspot) => (hotspot as usize).min(decisions.len() - 1),
                None => below(rng, decisions.len() as u64) as usize,
            };
            for (index, option) in decisions.iter_mut().enumerate().skip(start) {
                *option = random_option(rng, entry.kinds[index], entry.options[index]);
            }
        }
    }
}

/// The coverage-guided search state: a corpus, the seeded stream mutations draw from, and
/// how many fresh cases it has asked for.
pub struct Explorer<S> {
    pub corpus: Corpus<S>,
    rng: ChaCha8Rng,
    fresh: u64,
}

impl<S: Clone> Explorer<S> {
    pub fn new(seed: u64) -> Explorer<S> {
        Explorer {
            corpus: Corpus::default(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x636f_7665_7261_6765),
            fresh: 0,
        }
    }

    /// The next `count` cases: fresh ones from `fresh(k)` (k = 0, 1, … over the whole
    /// exploration) while the corpus is empty and one in `FRESH_ONE_IN` after; the rest
    /// mutate corpus entries: their schedule, or (when `mutate_subject` gives one) their
    /// subject, run under the parent's schedule or a fresh one.
    pub fn plan(
        &mut self,
        count: usize,
        fresh: &mut dyn FnMut(u64) -> (S, Schedule),
        mutate_subject: &mut dyn FnMut(&S, &mut ChaCha8Rng) -> Option<S>,
    ) -> Vec<(S, Schedule)> {
        let mut planned = Vec::with_capacity(count);
        for _ in 0..count {
            if self.corpus.is_empty() || below(&mut self.rng, u64::from(FRESH_ONE_IN)) == 0 {
                planned.push(fresh(self.fresh));
                self.fresh += 1;
                continue;
            }
            let index = self.corpus.pick(&mut self.rng, 1)[0];
            let entry = self.corpus.entry(index).clone();
            if below(&mut self.rng, 4) == 0
                && let Some(subject) = mutate_subject(&entry.subject, &mut self.rng)
            {
                let schedule = if below(&mut self.rng, 2) == 0 {
                    Schedule::Deviations(Deviations::from_decisions(&entry.decisions))
                } else {
                    let (_, schedule) = fresh(self.fresh);
                    self.fresh += 1;
                    schedule
                };
                planned.push((subject, schedule));
                continue;
            }
            let decisions = mutate_schedule(&entry, &mut self.rng);
            planned
                .push((entry.subject.clone(), Schedule::Deviations(Deviations::from_decisions(&decisions))));
        }
        planned
    }

    /// Takes in one run's coverage (in candidate order); returns how many features were new.
    pub fn absorb(&mut self, subject: &S, verdict: &Verdict) -> usize {
        self.corpus.absorb(subject, verdict)
    }
}

#[cfg(test)]
mod tests {
    use sim_core::{CpuId, Outcome};

    use super::*;

    fn verdict(features: Vec<u64>, kinds: Vec<DecisionKind>) -> Verdict {
        Verdict {
            outcome: Outcome::pass(),
            decisions: vec![0; kinds.len()],
            decision_options: vec![17; kinds.len()],
            decision_cpus: vec![CpuId(0); kinds.len()],
            feature_first_at: (0..features.len() as u32).collect(),
            decision_kinds: kinds,
            features,
            seamcalls: Default::default(),
            pamt_end: Vec::new(),
            events: 0,
        }
    }

    #[test]
    fn only_runs_with_new_features_join_and_rare_ones_weigh_more() {
        let kinds = vec![DecisionKind::Stall; 4];
        let mut corpus: Corpus<()> = Corpus::default();
        assert_eq!(corpus.absorb(&(), &verdict(vec![1, 2], kinds.clone())), 2);
        assert_eq!(corpus.absorb(&(), &verdict(vec![1, 2], kinds.clone())), 0);
        assert_eq!(corpus.absorb(&(), &verdict(vec![1, 3], kinds.clone())), 1);
        assert_eq!(corpus.len(), 2);
        assert_eq!(corpus.features(), 3);
        let weights = corpus.weights();
        assert!(weights[1] > weights[0], "feature 3 is rarer than 2: {weights:?}");
    }

    #[test]
    fn mutations_change_only_what_they_aim_at_and_stay_in_range() {
        use DecisionKind::{CostJitter, SameCycleOrder, Stall};
        let kinds: Vec<DecisionKind> =
            (0..200).map(|i| [Stall, CostJitter, SameCycleOrder, Stall][i % 4]).collect();
        let mut corpus: Corpus<()> = Corpus::default();
        let mut run = verdict(vec![7], kinds.clone());
        run.decision_options =
            kinds.iter().map(|kind| if *kind == SameCycleOrder { 2 } else { 17 }).collect();
        corpus.absorb(&(), &run);
        let entry = corpus.entry(0).clone();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut changed = 0;
        for _ in 0..200 {
            let mutated = mutate_schedule(&entry, &mut rng);
            assert_eq!(mutated.len(), 200);
            for (index, &option) in mutated.iter().enumerate() {
                assert!(option < entry.options[index], "{index}: {option}");
            }
            changed += usize::from(mutated != entry.decisions);
        }
        assert!(changed > 150, "{changed} of 200 mutations changed something");
    }

    #[test]
    fn plans_are_a_function_of_the_seed() {
        let plan = |seed| {
            let mut explorer: Explorer<u64> = Explorer::new(seed);
            let kinds = vec![DecisionKind::Stall; 50];
            explorer.absorb(&0, &verdict(vec![1], kinds.clone()));
            explorer.absorb(&1, &verdict(vec![2], kinds));
            let mut fresh = |k| (100 + k, Schedule::Random(k));
            explorer.plan(16, &mut fresh, &mut |subject, _| Some(subject + 10))
        };
        assert_eq!(plan(5), plan(5));
        assert_ne!(plan(5), plan(6));
    }
}
