//! The checker's nearness features (scenarios/src/near_miss.rs): recorded only under
//! coverage, without moving a run's trace, and nearer exactly when the two transitions are.

use std::path::Path;

use scenarios::run::{Schedule, run_once, run_once_with};
use sim_core::{FeatureTag, nearness};

fn s_h3() -> scenarios::schema::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("library/enable/s-h3-cpuhp-unlocked-usage.toml");
    scenarios::load_file(&path).unwrap()
}

/// The nearness features of a run: site -> distance (the least when one repeats).
fn distances(schedule: &Schedule) -> std::collections::BTreeMap<u64, u8> {
    let result = run_once_with(&s_h3(), schedule, false, true);
    let mut sites = std::collections::BTreeMap::new();
    for &feature in &result.coverage.expect("a coverage run reports its coverage").features {
        if let Some((site, distance)) = nearness(feature) {
            let best = sites.entry(site).or_insert(distance);
            *best = (*best).min(distance);
        }
    }
    sites
}

#[test]
fn nearness_is_coverage_data_only_and_the_same_pairs_meet_in_every_run() {
    let scenario = s_h3();
    for schedule in
        [Schedule::Random(3), Schedule::Nominal, Schedule::Pct { seed: 5, depth: 3, horizon: 400 }]
    {
        let plain = run_once(&scenario, &schedule, false);
        let covered = run_once_with(&scenario, &schedule, false, true);
        assert_eq!(plain.trace_hash, covered.trace_hash, "{schedule:?}: coverage moved the trace");
        assert!(plain.coverage.is_none());
        let features = covered.coverage.unwrap().features;
        assert!(features.iter().any(|&f| FeatureTag::of(f) == Some(FeatureTag::Nearness)), "{schedule:?}");
    }
    // The default run and the nominal one meet at the same pairs of tasks (the sites are
    // task names and transitions, not times); their distances differ.
    let fastest = distances(&Schedule::Replay(Vec::new()));
    let nominal = distances(&Schedule::Nominal);
    assert_eq!(fastest.keys().collect::<Vec<_>>(), nominal.keys().collect::<Vec<_>>());
    assert_ne!(fastest, nominal);
}
