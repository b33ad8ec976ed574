//! Coverage-guided exploration of one scenario's schedules: `tdxsim check --strategy
//! coverage` and `run`/`replay --strategy coverage --seed N` (run number N of it).
//!
//! Run 0 is the default schedule (every CPU at its fastest), runs 1 to 7 fresh random ones
//! (the seeds `random` would run), unless a run came nearer at a nearness site (two tasks'
//! events on the same state) or took a BUSY count higher than the runs before it, whose aims
//! go first; after them, mutations of the corpus (corpus.rs), aimed ones first, and fresh
//! random runs in the share their record earns against the mutations' (a quarter to three
//! quarters). Batches of runs (`BATCH`; the first 24 one at a time) are
//! planned from the corpus as it stood, run in parallel, and absorbed in order: the sequence
//! of runs is a function of the seed alone.

use rayon::prelude::*;

use crate::corpus::{BATCH, Explorer};
use crate::runner::Verdict;
use crate::schedule::Schedule;

/// The first runs are fresh ones: the default schedule, then fresh random ones, so that the
/// corpus mutation starts from holds runs at the timelines jitter gives, not only at the
/// fastest one. Only the aims of a run that came nearer at a nearness site or took a count
/// higher than the runs before (sim-core's `FeatureTag::Nearness`, `HitCount`) go before
/// them. There is no run at the nominal timeline (every cost mid-band): random draws centre
/// on it and also cover the spread around it, and without it every known-bad case of
/// docs/exploration.md needed as many runs or fewer, on 60 base seeds. They are forced
/// only while the fresh draws cover something the default run did not (`fresh_first`).
const FIRST_FRESH: u64 = 8;

/// Sizes of the batches the first runs are planned in: one at a time for the first 24, so
/// that what a run found (a window seen within reach, sim-core's `Engine::cover_window`; a
/// pair that came nearer; a count taken higher) is followed up by the very next run, while
/// the corpus is young and each find is a step towards the next (S-K0's climb of its BUSY
/// count is a step a run, S-H3's IPI is held inside the callback's window one run after a
/// fresh draw brought it within reach). After them, batches of `BATCH` keep more cores busy.
const FIRST_BATCHES: [usize; 24] = [1; 24];

/// The `k`-th fresh schedule of an exploration seeded `seed`: the default, then the random
/// schedules `seed`, `seed + 1`, … (the ones `random` would run).
pub fn fresh_schedule(seed: u64, k: u64) -> Schedule {
    match k {
        0 => Schedule::default_choices(),
        k => Schedule::Random(seed.wrapping_add(k - 1)),
    }
}

/// Runs `runs` schedules of one scenario, coverage-guided from `seed`, on `jobs` threads
/// (0: one per core); `run` runs one schedule with coverage recorded and says what to keep
/// of it. Returns every run's schedule and what was kept, in run order.
pub fn explore_schedules<T: Send>(
    seed: u64,
    runs: u64,
    jobs: usize,
    run: &(dyn Fn(&Schedule) -> (Verdict, T) + Sync),
    on_run: &(dyn Fn() + Sync),
) -> Vec<(Schedule, T)> {
    explore_schedules_until(seed, runs, jobs, run, on_run, &|_| false)
}

/// `explore_schedules`, stopping after the batch in which `stop` held for a run (the runs
/// returned are the same as without it, up to that batch).
pub fn explore_schedules_until<T: Send>(
    seed: u64,
    runs: u64,
    jobs: usize,
    run: &(dyn Fn(&Schedule) -> (Verdict, T) + Sync),
    on_run: &(dyn Fn() + Sync),
    stop: &dyn Fn(&T) -> bool,
) -> Vec<(Schedule, T)> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build().expect("a rayon thread pool");
    let mut explorer: Explorer<()> = Explorer::new(seed).fresh_first(FIRST_FRESH);
    let mut explored = Vec::with_capacity(runs as usize);
    while (explored.len() as u64) < runs {
        let mut batch = BATCH;
        let mut start = 0;
        for size in FIRST_BATCHES {
            if explored.len() == start {
                batch = size;
            }
            start += size;
        }
        let count = (runs - explored.len() as u64).min(batch as u64) as usize;
        let mut fresh = |k| ((), fresh_schedule(seed, k));
        let planned = explorer.plan(count, &mut fresh, &mut |_, _| None);
        let results: Vec<(Verdict, T)> = pool.install(|| {
            planned
                .par_iter()
                .map(|(_, schedule)| {
                    let result = run(schedule);
                    on_run();
                    result
                })
                .collect()
        });
        let mut stopped = false;
        for ((_, schedule), (verdict, kept)) in planned.into_iter().zip(results) {
            explorer.absorb(&(), &verdict);
            stopped |= stop(&kept);
            explored.push((schedule, kept));
        }
        if stopped {
            break;
        }
    }
    explored
}
