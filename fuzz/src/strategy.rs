//! proptest strategies: generated scenarios and schedules.
//!
//! Scenario values are raw draws passed through `ScenarioSpec::normalize`, so proptest's
//! shrinking (fewer tasks and steps, smaller indices, earlier starts) stays inside the valid
//! scenarios. `tdxsim fuzz` draws from the same strategies with a seeded `TestRunner`.

use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::schedule::{Deviations, Schedule};
use crate::spec::{
    Designs, MachineLimits, OPS_PER_TASK_MAX, Op, PAGES_PER_RANGE, PageRef, RANGES_MAX, REPEAT_MAX,
    SPIN_NS_MAX, START_NS_MAX, ScenarioSpec, TaskSpec, WALKER_RANGES_MAX, WalkerMode,
};

/// Which steps generated tasks take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Menu {
    /// `tdx_pamt_get` / `tdx_pamt_put`.
    pub get_put: bool,
    /// Raw PAMT.ADD/REMOVE walkers, and where they may put their pairs.
    pub walkers: Option<WalkerMode>,
    /// KVM `tdp_fault` / `zap` on the task's own TD.
    pub faults: bool,
    /// `cpu_down` + `cpu_up` of a CPU that runs no generated task.
    pub hotplug: bool,
    /// `seamldr_install_module`.
    pub update: bool,
    /// `td_create`.
    pub td_create: bool,
    /// `spin` with preemption off.
    pub spin: bool,
}

impl Menu {
    /// What tasks do for `designs`: DPAMT get/put, bracketed walkers, KVM faults and
    /// spins always; hotplug and TD creation when an enable design other than today's is
    /// among them, and runtime updates when an update design other than today's is.
    pub fn for_designs(designs: &[Designs]) -> Menu {
        let enable = designs.iter().any(|d| d.enable != Default::default());
        let update = designs.iter().any(|d| d.update != Default::default());
        Menu {
            get_put: true,
            walkers: Some(WalkerMode::Bracketed),
            faults: true,
            hotplug: enable || update,
            update,
            td_create: enable,
            spin: true,
        }
    }
}

/// What the scenario strategy draws from.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// The designs a scenario runs: one of these per scenario. invariant: not empty.
    pub designs: Vec<Designs>,
    pub limits: MachineLimits,
    pub menu: Menu,
}

impl GenConfig {
    pub fn new(designs: Vec<Designs>) -> GenConfig {
        assert!(!designs.is_empty(), "GenConfig: no design to generate for");
        let menu = Menu::for_designs(&designs);
        GenConfig { designs, limits: MachineLimits::default(), menu }
    }
}

fn page_ref() -> impl Strategy<Value = PageRef> {
    (0..RANGES_MAX, 0..PAGES_PER_RANGE).prop_map(|(range, page)| PageRef::new(range, page))
}

fn get_op() -> BoxedStrategy<Op> {
    (page_ref(), proptest::option::weighted(0.75, [page_ref(), page_ref()]))
        .prop_map(|(page, pair)| Op::Get { page, pair })
        .boxed()
}

/// One step, drawn from the menu.
pub fn op(menu: Menu) -> BoxedStrategy<Op> {
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = Vec::new();
    if menu.get_put {
        arms.push((4, get_op()));
        arms.push((3, page_ref().prop_map(|page| Op::Put { page }).boxed()));
    }
    if menu.walkers.is_some() {
        arms.push((
            1,
            (0..WALKER_RANGES_MAX, [page_ref(), page_ref()])
                .prop_map(|(range, pair)| Op::Walker { range, pair })
                .boxed(),
        ));
    }
    if menu.faults {
        arms.push((2, (0..4u16, page_ref()).prop_map(|(slot, page)| Op::Fault { slot, page }).boxed()));
        arms.push((2, (0..4u16).prop_map(|slot| Op::Zap { slot }).boxed()));
    }
    if menu.hotplug {
        arms.push((1, (0..8u32).prop_map(|target| Op::Hotplug { target }).boxed()));
    }
    if menu.update {
        arms.push((1, Just(Op::Update).boxed()));
    }
    if menu.td_create {
        arms.push((1, Just(Op::TdCreate).boxed()));
    }
    if menu.spin {
        arms.push((1, (1..=SPIN_NS_MAX).prop_map(|ns| Op::Spin { ns }).boxed()));
    }
    assert!(!arms.is_empty(), "Menu: no step to generate");
    Union::new_weighted(arms).boxed()
}

/// A task's first step: one that normalization keeps whatever came before it.
fn first_op(menu: Menu) -> BoxedStrategy<Op> {
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = Vec::new();
    if menu.get_put {
        arms.push((4, get_op()));
    }
    if menu.faults {
        arms.push((2, (0..4u16, page_ref()).prop_map(|(slot, page)| Op::Fault { slot, page }).boxed()));
    }
    if menu.update {
        arms.push((1, Just(Op::Update).boxed()));
    }
    if menu.hotplug {
        arms.push((1, (0..8u32).prop_map(|target| Op::Hotplug { target }).boxed()));
    }
    if menu.td_create {
        arms.push((1, Just(Op::TdCreate).boxed()));
    }
    if arms.is_empty() {
        return op(menu);
    }
    Union::new_weighted(arms).boxed()
}

fn task(menu: Menu) -> impl Strategy<Value = TaskSpec> {
    let start = prop_oneof![1 => Just(0u32), 1 => 0..=START_NS_MAX];
    let repeat = prop_oneof![3 => Just(1u32), 1 => 1..=REPEAT_MAX];
    (start, repeat, first_op(menu), proptest::collection::vec(op(menu), 0..OPS_PER_TASK_MAX)).prop_map(
        |(start_ns, repeat, first, rest)| TaskSpec {
            start_ns,
            repeat,
            ops: std::iter::once(first).chain(rest).collect(),
        },
    )
}

/// Generated scenarios for `config`, valid by construction.
pub fn scenarios(config: &GenConfig) -> BoxedStrategy<ScenarioSpec> {
    let limits = config.limits.clone();
    let menu = config.menu;
    let walkers = menu.walkers.unwrap_or(WalkerMode::Bracketed);
    let walker_ranges_max = if menu.walkers.is_some() { WALKER_RANGES_MAX } else { 0 };
    let cpus_max = limits.cpus_max as usize;
    let tasks = prop_oneof![
        3 => proptest::collection::vec(task(menu), 1..=cpus_max.min(3)),
        1 => proptest::collection::vec(task(menu), 1..=cpus_max),
    ];
    let designs = proptest::sample::select(config.designs.clone());
    (designs, limits.cpus_min..=limits.cpus_max, 1..=limits.ranges_max.max(1), 0..=walker_ranges_max, tasks)
        .prop_map(move |(designs, cpus, ranges, walker_ranges, tasks)| {
            let mut spec =
                ScenarioSpec { designs, cpus, possible_cpus: cpus, ranges, walker_ranges, walkers, tasks };
            spec.normalize(&limits);
            spec
        })
        .boxed()
}

/// Sparse schedules: a few deviations from the default, at decisions early in a run.
pub fn deviations() -> impl Strategy<Value = Deviations> {
    proptest::collection::vec((0u32..2048, 1u32..=16), 0..=8).prop_map(Deviations::new)
}

/// Schedules: seeded random and PCT runs, and sparse deviations that proptest shrinks.
pub fn schedules() -> BoxedStrategy<Schedule> {
    prop_oneof![
        2 => any::<u64>().prop_map(Schedule::Random),
        1 => (any::<u64>(), 2..=4u32).prop_map(|(seed, depth)| Schedule::Pct { seed, depth }),
        1 => deviations().prop_map(Schedule::Deviations),
    ]
    .boxed()
}

/// A stream of values of `strategy`, a function of `seed` alone (for `tdxsim fuzz`).
pub struct Draws {
    runner: TestRunner,
}

impl Draws {
    pub fn new(seed: u64) -> Draws {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..16].copy_from_slice(&0x7464_7873_696d_6675u64.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        Draws { runner: TestRunner::new_with_rng(Config::default(), rng) }
    }

    pub fn draw<S: Strategy>(&mut self, strategy: &S) -> S::Value {
        strategy.new_tree(&mut self.runner).expect("generated strategies never reject").current()
    }
}

/// `RANGES_MAX` is what `page_ref` draws from; normalization folds it into the layout.
const _: () = assert!(RANGES_MAX as usize >= 1);

#[cfg(test)]
mod tests {
    use host_model::DpamtDesign;

    use super::*;
    use crate::spec::doubly_owned;

    #[test]
    fn draws_are_a_function_of_the_seed_and_valid() {
        let config = GenConfig::new(vec![Designs::dpamt(DpamtDesign::Per2mRwlock)]);
        let strategy = scenarios(&config);
        let specs = |seed| {
            let mut draws = Draws::new(seed);
            (0..50).map(|_| draws.draw(&strategy)).collect::<Vec<_>>()
        };
        assert_eq!(specs(3), specs(3));
        assert_ne!(specs(3), specs(4));
        for spec in specs(5) {
            assert!((2..=8).contains(&spec.cpus));
            assert!(spec.tasks.len() as u32 <= spec.cpus);
            assert!(spec.total_ranges() <= RANGES_MAX);
            assert!(doubly_owned(&spec).is_empty(), "{spec:?}");
            let mut again = spec.clone();
            again.normalize(&config.limits);
            assert_eq!(again, spec, "normalize is idempotent");
        }
    }
}
