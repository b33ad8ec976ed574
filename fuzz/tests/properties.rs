//! The properties of issue 11 §1, each a `proptest!` over generated scenarios and schedules,
//! run through the scenario loader and runner (`scenarios::fuzzing::ScenarioRunner`).
//!
//! Each runs from a fixed seed with a bounded number of cases, so `cargo test -p fuzz` is
//! the same every time and fits CI; failures are kept in `fuzz/proptest-regressions/` and
//! replayed first. The known-bad designs are properties too: "a campaign from scratch finds
//! the bug, and shrinks it to the published interleaving", over base seeds.

use fuzz::campaign::{CampaignConfig, SearchStrategy, run_campaign};
use fuzz::print::{Document, to_toml};
use fuzz::spec::{Designs, Op, ScenarioSpec, WalkerMode};
use fuzz::strategy::{GenConfig, Menu, scenarios, schedules};
use fuzz::{Property, Runner, Schedule, ShrinkConfig};
use host_model::DpamtDesign;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use scenarios::fuzzing::ScenarioRunner;
use sim_core::OutcomeKind;

/// Where proptest keeps failing cases of this file (relative to the fuzz crate, which is
/// where `cargo test` runs it).
const REGRESSIONS: &str = "proptest-regressions/properties.txt";

fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

fn print(spec: &ScenarioSpec) -> String {
    to_toml(spec, &Document { name: "fuzz: property case".to_string(), ..Document::default() })
}

/// Runs one case; a scenario the generator made that does not load fails the property.
fn check(property: Property, spec: &ScenarioSpec, schedule: &Schedule) -> Result<(), TestCaseError> {
    let text = print(spec);
    let verdict = ScenarioRunner
        .run(&text, schedule, false)
        .map_err(|why| TestCaseError::fail(format!("the generated scenario does not load: {why}\n{text}")))?;
    if let Some(violation) = property.check(&verdict) {
        return Err(TestCaseError::fail(format!(
            "{} broken ({:?}) under {schedule}: {}\n{text}",
            property.name(),
            violation.outcome,
            verdict.outcome
        )));
    }
    Ok(())
}

/// The steps a property's tasks take: DPAMT get/put, walkers, KVM faults and zaps and spins,
/// with CPU hotplug and TD creation, or with a runtime update.
fn menu(walkers: WalkerMode, hotplug: bool, update: bool) -> Menu {
    // FIXME: TD creation beside an update shows two things to settle first (tests/found.rs):
    // a stopper taking an interrupted rwlock holder's CPU, and KEY.CONFIG in the update window.
    Menu {
        get_put: true,
        walkers: Some(walkers),
        faults: true,
        hotplug,
        update,
        td_create: !update,
        spin: true,
    }
}

fn generation(designs: &[DpamtDesign], menu: Menu) -> GenConfig {
    let mut config = GenConfig::new(designs.iter().map(|&dpamt| Designs::dpamt(dpamt)).collect());
    config.menu = menu;
    config
}

/// Scenarios of `designs` with hotplug or with an update, never both: an update while a CPU
/// is offline loses the TDs in today's design too, a known finding of the library
/// (S-U5, `update/s-u5-lp-offline.toml`), not a property of the lock designs.
fn scenarios_of(designs: &[DpamtDesign], walkers: WalkerMode) -> impl Strategy<Value = ScenarioSpec> {
    prop_oneof![
        scenarios(&generation(designs, menu(walkers, true, false))),
        scenarios(&generation(designs, menu(walkers, false, true))),
    ]
}

/// The designs the library calls correct today: DPAMT `global-lock` and `dec-and-lock`,
/// with today's enable (`boot-cpuhp`) and update (`stop-machine`), which `Designs::dpamt`
/// keeps at their defaults.
const CORRECT: &[DpamtDesign] = &[DpamtDesign::GlobalLock, DpamtDesign::DecAndLock];

proptest! {
    #![proptest_config(config(200, 11))]

    /// No deadlock, livelock, hung task, lock-order inversion, broken invariant, WARN or
    /// simulator error, whatever the tasks do (get/put, bracketed walkers, KVM faults and
    /// zaps, hotplug or an update, TD creation) and however they are scheduled.
    #[test]
    fn designs_the_library_calls_correct_never_fail(
        spec in scenarios_of(CORRECT, WalkerMode::Bracketed),
        schedule in schedules(),
    ) {
        check(Property::NoFinding, &spec, &schedule)?;
    }
}

proptest! {
    #![proptest_config(config(200, 12))]

    /// PFN-ordered per-2MB rwlocks never deadlock and never take two in opposite orders,
    /// even beside walkers the kernel does not mirror (their BUSY is a known WARN, not this
    /// property).
    #[test]
    fn pfn_ordered_rwlocks_never_deadlock_or_invert(
        spec in scenarios_of(&[DpamtDesign::Per2mRwlockPfnOrder], WalkerMode::Unmirrored),
        schedule in schedules(),
    ) {
        check(Property::NoDeadlockOrInversion, &spec, &schedule)?;
    }
}

proptest! {
    #![proptest_config(config(200, 13))]

    /// Host refcounts and the module's PAMT agree whenever no get/put is in flight: as each
    /// range's last get/put returns (the run's checker) and at the end of every run.
    #[test]
    fn refcounts_agree_with_the_module_when_quiescent(
        spec in scenarios_of(
            &[DpamtDesign::GlobalLock, DpamtDesign::DecAndLock, DpamtDesign::Per2mRwlockPfnOrder],
            WalkerMode::Bracketed,
        ),
        schedule in schedules(),
    ) {
        check(Property::RefcountsAgree, &spec, &schedule)?;
    }
}

/// The configuration of a campaign property: `cases` base seeds, none shrunk (a seed has
/// no smaller form that means anything; the campaign shrinks its own finding).
fn campaign_config(cases: u32, seed: u64) -> Config {
    Config { max_shrink_iters: 0, ..config(cases, seed) }
}

/// How a known-bad design's campaign searches.
struct Search {
    strategy: SearchStrategy,
    cases: u64,
    /// The steps tasks take (`None`: the design's default menu).
    menu: Option<Menu>,
    shrink_runs: u64,
}

/// A campaign from scratch for `design`, looking for a run that breaks `property`.
fn campaign(design: DpamtDesign, property: Property, seed: u64, search: Search) -> fuzz::CampaignReport {
    let mut generate = GenConfig::new(vec![Designs::dpamt(design)]);
    if let Some(menu) = search.menu {
        generate.menu = menu;
    }
    let config = CampaignConfig {
        seed,
        strategy: search.strategy,
        cases: Some(search.cases),
        time: None,
        jobs: 1,
        generate,
        property,
        pct_depth: 3,
        shrink: ShrinkConfig { runs_max: search.shrink_runs, random_tries: 4 },
    };
    run_campaign(&ScenarioRunner, &print, &config, &|_| {}).expect("generated scenarios load")
}

fn random(cases: u64) -> Search {
    Search { strategy: SearchStrategy::Random, cases, menu: None, shrink_runs: 5_000 }
}

proptest! {
    #![proptest_config(campaign_config(2, 21))]

    /// `per-2m-rwlock` deadlocks, and the deadlock shrinks to Yan Zhao's AB-BA: two CPUs,
    /// two ranges, one get each, under the default schedule.
    #[test]
    fn per_2m_rwlock_deadlocks_and_shrinks_to_yans_ab_ba(seed in any::<u64>()) {
        let report = campaign(DpamtDesign::Per2mRwlock, Property::NeverDeadlocks, seed, random(400));
        let shrunk = report.shrunk.expect("a deadlock within 400 cases");
        let size = shrunk.spec.size();
        prop_assert_eq!(shrunk.verdict.outcome.kind, OutcomeKind::Deadlock);
        prop_assert_eq!((size.cpus, size.tasks, size.steps, size.ranges), (2, 2, 2, 2), "{}", print(&shrunk.spec));
        let one_get_each = shrunk.spec.tasks.iter().all(|task| matches!(task.ops[..], [Op::Get { pair: Some(_), .. }]));
        prop_assert!(one_get_each, "{}", print(&shrunk.spec));
        prop_assert!(shrunk.schedule.is_empty(), "{}", Schedule::Deviations(shrunk.schedule.clone()));
    }
}

proptest! {
    #![proptest_config(campaign_config(2, 22))]

    /// `global-lock-fastpath` removes twice (S-D2), found from scratch and shrunk to at
    /// most three CPUs on one range.
    #[test]
    fn global_lock_fastpath_removes_twice(seed in any::<u64>()) {
        let report = campaign(DpamtDesign::GlobalLockFastpath, Property::NeverRemovesTwice, seed, random(6_000));
        let shrunk = report.shrunk.expect("a double remove within 6000 cases");
        let size = shrunk.spec.size();
        prop_assert!(size.cpus <= 3 && size.ranges == 1, "{size}\n{}", print(&shrunk.spec));
        prop_assert!(Property::NeverRemovesTwice.check(&shrunk.verdict).is_some());
    }
}

proptest! {
    #![proptest_config(campaign_config(1, 23))]

    /// `hint` misses its pair (S-D1): a fault's AUG finds the range unbacked after its ADD
    /// said it was backed, found from scratch by coverage-guided search over KVM faults and
    /// zaps (the path D1 assigns pages on), which needs a few hundred cases where random
    /// search needs about 1,500 (too slow for a debug test); the shrink is cut short, the
    /// property holds on whatever it reached.
    #[test]
    fn hint_misses_its_pair(seed in any::<u64>()) {
        let faults = Menu {
            get_put: false,
            walkers: None,
            faults: true,
            hotplug: false,
            update: false,
            td_create: false,
            spin: false,
        };
        let search = Search { strategy: SearchStrategy::Coverage, cases: 3_000, menu: Some(faults), shrink_runs: 300 };
        let report = campaign(DpamtDesign::Hint, Property::NeverMissesPair, seed, search);
        let shrunk = report.shrunk.expect("a missed pair within 3000 cases");
        prop_assert!(Property::NeverMissesPair.check(&shrunk.verdict).is_some());
        prop_assert!(shrunk.spec.size() <= shrunk.original);
    }
}
