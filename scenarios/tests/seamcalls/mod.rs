//! SEAMCALL counts of a run, for the test files that check them.

/// How many of a run's SEAMCALLs of `leaf` succeeded.
pub fn successes(result: &scenarios::run::RunResult, leaf: seam_model::Leaf) -> u64 {
    result
        .metrics
        .seamcalls
        .iter()
        .filter(|((l, status), _)| *l == leaf && status.is_success())
        .map(|(_, n)| n)
        .sum()
}
