//! Schedules as the fuzzer holds them.
//!
//! The engine replays a dense decision vector, answering option 0 (the default choice:
//! events in time-then-creation order, costs at the fast end of their band, no stall) past
//! its end (sim-core `PrefixChooser`). The shrinker and the mutators hold a *sparse* list of
//! deviations from that default instead, so that shrinking a schedule means removing
//! deviations and lowering their values (shorter stalls, earlier same-cycle picks), and the
//! schedule a human reads is "the default, except here".

/// The default choice everywhere except at these decisions: (decision index, option).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deviations {
    /// invariant: sorted by index, one entry per index, every option > 0.
    list: Vec<(u32, u32)>,
}

impl Deviations {
    /// From any list: sorted, the last of equal indices kept, zeros dropped.
    pub fn new(mut list: Vec<(u32, u32)>) -> Deviations {
        list.sort_by_key(|&(index, _)| index);
        let mut kept: Vec<(u32, u32)> = Vec::with_capacity(list.len());
        for (index, option) in list {
            match kept.last_mut() {
                Some(last) if last.0 == index => last.1 = option,
                _ => kept.push((index, option)),
            }
        }
        kept.retain(|&(_, option)| option != 0);
        Deviations { list: kept }
    }

    /// The deviations of a recorded decision vector.
    pub fn from_decisions(decisions: &[u32]) -> Deviations {
        let list = decisions
            .iter()
            .enumerate()
            .filter(|&(_, &option)| option != 0)
            .map(|(index, &option)| (index as u32, option))
            .collect();
        Deviations { list }
    }

    /// The dense vector the engine replays (past its end: the default).
    pub fn to_decisions(&self) -> Vec<u32> {
        let Some(&(last, _)) = self.list.last() else { return Vec::new() };
        let mut dense = vec![0; last as usize + 1];
        for &(index, option) in &self.list {
            dense[index as usize] = option;
        }
        dense
    }

    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.list
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Without the entries at positions `from..to` of the list.
    pub fn without(&self, from: usize, to: usize) -> Deviations {
        let list = self.list[..from].iter().chain(&self.list[to..]).copied().collect();
        Deviations { list }
    }

    /// With entry `position` of the list set to `option` (0 removes it).
    pub fn with_option(&self, position: usize, option: u32) -> Deviations {
        let mut list = self.list.clone();
        list[position].1 = option;
        Deviations::new(list)
    }
}

/// How one run is scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every decision drawn from this seed (`run.strategy = "random"`).
    Random(u64),
    /// PCT from this seed with `depth - 1` change points (`run.strategy = "pct"`); the
    /// runner takes the horizon from the scenario's default schedule.
    Pct { seed: u64, depth: u32 },
    /// The default choice except at these decisions.
    Deviations(Deviations),
}

impl Schedule {
    /// The default schedule: no deviation anywhere.
    pub fn default_choices() -> Schedule {
        Schedule::Deviations(Deviations::default())
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Random(seed) => write!(f, "random seed {seed}"),
            Schedule::Pct { seed, depth } => write!(f, "pct seed {seed} depth {depth}"),
            Schedule::Deviations(deviations) if deviations.is_empty() => f.write_str("the default schedule"),
            Schedule::Deviations(deviations) => {
                let parts: Vec<String> = deviations
                    .as_slice()
                    .iter()
                    .map(|(index, option)| format!("#{index}={option}"))
                    .collect();
                write!(f, "the default schedule except {}", parts.join(" "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_and_dense_agree() {
        let dense = vec![0, 3, 0, 0, 1, 0];
        let deviations = Deviations::from_decisions(&dense);
        assert_eq!(deviations.as_slice(), &[(1, 3), (4, 1)]);
        // Trailing defaults are implied: the dense form stops at the last deviation.
        assert_eq!(deviations.to_decisions(), vec![0, 3, 0, 0, 1]);
        assert_eq!(Deviations::new(vec![(4, 1), (1, 2), (1, 3), (7, 0)]), deviations);
        assert_eq!(deviations.without(0, 1).as_slice(), &[(4, 1)]);
        assert_eq!(deviations.with_option(1, 0).as_slice(), &[(1, 3)]);
        assert!(Deviations::default().to_decisions().is_empty());
    }
}
