//! Generated scenarios: what the strategies produce, the shrinker cuts down, the mutators
//! change and the printer turns into a scenario file.
//!
//! A `ScenarioSpec` is valid by construction once `normalize`d: every page lies in the
//! layout, a put follows a get of the same range by the same task, no page serves two
//! owners (two pairs, or a pair and a fault), a walker's range belongs to one task, a hotplug
//! targets a CPU that runs no generated task. Strategies, shrinkers and mutators may produce
//! anything; `normalize` makes it valid, so shrinking never leaves the space of scenarios
//! the kernel could run.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use host_model::DpamtDesign;
use host_model::seamldr::update::UpdateDesign;
use host_model::tdx::enable::EnableDesign;

/// Fewest CPUs a generated machine has.
pub const CPUS_MIN: u32 = 2;
/// Most CPUs a generated machine has.
pub const CPUS_MAX: u32 = 8;
/// Most 2MB ranges in a layout (host ranges and walker ranges together).
pub const RANGES_MAX: u8 = 6;
/// Most ranges reserved for raw walkers.
pub const WALKER_RANGES_MAX: u8 = 2;
/// Pages of a range that generated steps name (`A1` .. `A8`).
pub const PAGES_PER_RANGE: u16 = 8;
/// Most steps a generated task has.
pub const OPS_PER_TASK_MAX: usize = 6;
/// Most times a generated task repeats its steps.
pub const REPEAT_MAX: u32 = 4;
/// Latest start of a generated task, and longest `spin`, in nanoseconds.
pub const START_NS_MAX: u32 = 20_000;
/// Longest `spin` step, in nanoseconds.
pub const SPIN_NS_MAX: u32 = 5_000;
/// GPA slots per task's TD that faults map (`gpa = slot * 4K`).
pub const FAULT_SLOTS: u16 = 4;

/// A 4KB page of the layout: page `page` of range `range` (printed `A1` for range 0 page 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageRef {
    pub range: u8,
    pub page: u16,
}

impl PageRef {
    pub const fn new(range: u8, page: u16) -> PageRef {
        PageRef { range, page }
    }

    /// The page's name in a printed scenario: the range's letter and the page's number.
    pub fn name(self) -> String {
        format!("{}{}", range_letter(self.range), self.page + 1)
    }

    /// Its physical address: range `r` is the 2MB range `r + 1` of memory (range 0 is left
    /// to the host's allocator).
    pub fn address(self) -> u64 {
        (u64::from(self.range) + 1) * seam_model::RANGE_2M + u64::from(self.page) * seam_model::PAGE_SIZE
    }
}

/// How the printed scenario names range `range`.
pub fn range_letter(range: u8) -> char {
    char::from(b'A' + range)
}

/// How raw SEAMCALL walkers may place their pair pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkerMode {
    /// As a kernel caller that brackets its SEAMCALLs: a walker's pair pages lie in its own
    /// range or in ranges its task holds a reference on, and no host pair lies in a walker
    /// range, so a design the library calls correct never meets BUSY from them.
    Bracketed,
    /// Anywhere: walkers the kernel does not mirror (spec/host-algorithms.md §3.5, §3.6),
    /// whose BUSY is a known finding for the designs that rely on mirroring.
    Unmirrored,
}

/// One step of a generated task (some print as two scenario steps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `tdx_pamt_get` of a page of `page.range`; `pair` names the page pair (absent: the
    /// host allocates it).
    Get { page: PageRef, pair: Option<[PageRef; 2]> },
    /// `tdx_pamt_put` of a page of `page.range`, a range the task holds a reference on.
    Put { page: PageRef },
    /// A raw SEAMCALL walker: `TDH.PHYMEM.PAMT.ADD` of walker range `range` with `pair`,
    /// then `TDH.PHYMEM.PAMT.REMOVE` of it.
    Walker { range: u8, pair: [PageRef; 2] },
    /// `tdp_fault`: KVM maps `page` at GPA slot `slot` of the task's TD.
    Fault { slot: u16, page: PageRef },
    /// `zap`: KVM removes GPA slot `slot` of the task's TD (one the task faulted before).
    Zap { slot: u16 },
    /// `cpu_down` then `cpu_up` of CPU `target` (one that runs no generated task).
    Hotplug { target: u32 },
    /// `seamldr_install_module`: a runtime update (at most one per scenario).
    Update,
    /// `td_create` of a TD of its own.
    TdCreate,
    /// `spin`: the CPU busy-waits `ns` nanoseconds with preemption off.
    Spin { ns: u32 },
}

/// A generated kernel thread: pinned to CPU `index` (its place in `ScenarioSpec::tasks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub start_ns: u32,
    /// invariant: 1..=REPEAT_MAX, and 1 when a step creates a TD or updates the module.
    pub repeat: u32,
    /// invariant: not empty, at most OPS_PER_TASK_MAX.
    pub ops: Vec<Op>,
}

/// The host designs a scenario runs (`[host]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Designs {
    pub dpamt: DpamtDesign,
    pub enable: EnableDesign,
    pub update: UpdateDesign,
}

impl Designs {
    pub fn dpamt(dpamt: DpamtDesign) -> Designs {
        Designs { dpamt, ..Designs::default() }
    }

    /// `dpamt=…` plus the enable and update designs that are not today's default.
    pub fn label(&self) -> String {
        let mut parts = vec![format!("dpamt={}", self.dpamt.name())];
        if self.enable != EnableDesign::default() {
            parts.push(format!("enable={}", self.enable.name()));
        }
        if self.update != UpdateDesign::default() {
            parts.push(format!("update={}", self.update.name()));
        }
        parts.join(" ")
    }
}

/// What a generated machine may be: fixed by a template file, or the generator's range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineLimits {
    /// CPUs online at start: `min..=max`.
    pub cpus_min: u32,
    pub cpus_max: u32,
    /// CPUs hotplug may target (>= cpus).
    pub possible_cpus: Option<u32>,
    /// Ranges the layout may use (host and walker ranges together).
    pub ranges_max: u8,
}

impl Default for MachineLimits {
    fn default() -> MachineLimits {
        MachineLimits { cpus_min: CPUS_MIN, cpus_max: CPUS_MAX, possible_cpus: None, ranges_max: RANGES_MAX }
    }
}

impl MachineLimits {
    /// The limits a template's `[machine]` sets: its CPUs exactly, and as many ranges as its
    /// memory holds beside range 0 and one range left to the host's allocator.
    pub fn of_template(cpus: u32, possible_cpus: u32, memory_bytes: u64) -> MachineLimits {
        let ranges = (memory_bytes / seam_model::RANGE_2M).saturating_sub(2).min(u64::from(RANGES_MAX));
        MachineLimits {
            cpus_min: cpus,
            cpus_max: cpus,
            possible_cpus: Some(possible_cpus),
            ranges_max: ranges as u8,
        }
    }
}

/// One generated scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioSpec {
    pub designs: Designs,
    /// invariant: limits.cpus_min..=limits.cpus_max, and >= tasks.len().
    pub cpus: u32,
    /// CPUs hotplug may target: `cpus` unless a template says more.
    pub possible_cpus: u32,
    /// Host ranges (get/put, faults, pairs): `A`, `B`, …; invariant: >= 1.
    pub ranges: u8,
    /// Ranges only raw walkers add and remove, after the host ranges.
    pub walker_ranges: u8,
    pub walkers: WalkerMode,
    /// Task `i` runs on CPU `i`.
    pub tasks: Vec<TaskSpec>,
}

/// How big a scenario is, in the terms shrinking reduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size {
    pub cpus: u32,
    pub tasks: usize,
    /// Steps over all tasks, repeats counted.
    pub steps: usize,
    /// Ranges the steps name.
    pub ranges: usize,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} CPUs, {} tasks, {} steps, {} ranges", self.cpus, self.tasks, self.steps, self.ranges)
    }
}

impl Op {
    /// The pages the op owns (the page a get is for, pair pages, a faulted page): no two
    /// ops may share one.
    fn owned_pages(&self) -> Vec<PageRef> {
        match self {
            Op::Get { page, pair } => std::iter::once(*page).chain(pair.iter().flatten().copied()).collect(),
            Op::Walker { pair, .. } => pair.to_vec(),
            Op::Fault { page, .. } => vec![*page],
            _ => Vec::new(),
        }
    }

    /// Every page the op names.
    pub fn pages(&self) -> Vec<PageRef> {
        match self {
            Op::Get { page, pair } => std::iter::once(*page).chain(pair.iter().flatten().copied()).collect(),
            Op::Put { page } | Op::Fault { page, .. } => vec![*page],
            Op::Walker { range, pair } => std::iter::once(PageRef::new(*range, 0)).chain(*pair).collect(),
            _ => Vec::new(),
        }
    }

    /// Scenario steps it prints as.
    pub fn steps(&self) -> usize {
        match self {
            Op::Walker { .. } | Op::Hotplug { .. } => 2,
            _ => 1,
        }
    }
}

impl ScenarioSpec {
    /// Total ranges of the layout.
    pub fn total_ranges(&self) -> u8 {
        self.ranges + self.walker_ranges
    }

    pub fn size(&self) -> Size {
        let ranges: BTreeSet<u8> = self
            .tasks
            .iter()
            .flat_map(|task| &task.ops)
            .flat_map(|op| op.pages())
            .map(|page| page.range)
            .collect();
        Size {
            cpus: self.cpus,
            tasks: self.tasks.len(),
            steps: self
                .tasks
                .iter()
                .map(|task| task.repeat as usize * task.ops.iter().map(Op::steps).sum::<usize>())
                .sum(),
            ranges: ranges.len(),
        }
    }

    /// Makes the spec valid (see the module doc), keeping as much of it as it can:
    /// references are taken modulo what exists, a page already owned moves to the next free
    /// page of its range, and a step that cannot be made valid is dropped.
    pub fn normalize(&mut self, limits: &MachineLimits) {
        // A step dropped can empty a task, which frees a CPU for hotplug and so on: repeat
        // to the fixed point (two or three rounds; each round only drops or folds).
        for _ in 0..8 {
            let before = self.clone();
            self.normalize_once(limits);
            if *self == before {
                return;
            }
        }
    }

    fn normalize_once(&mut self, limits: &MachineLimits) {
        self.normalize_machine(limits);
        let mut ops = OpNormalizer::new(self);
        for (task_index, task) in self.tasks.iter_mut().enumerate() {
            ops.normalize_task(task_index, task);
        }
        self.tasks.retain(|task| !task.ops.is_empty());
    }

    /// Drops the tasks that do not fit or have no steps, then sizes the machine and the
    /// layout for the tasks left, within `limits`.
    fn normalize_machine(&mut self, limits: &MachineLimits) {
        let ranges_max = limits.ranges_max.max(1);
        self.tasks.truncate(limits.cpus_max as usize);
        self.tasks.retain(|task| !task.ops.is_empty());
        let wants_idle_cpu =
            self.tasks.iter().flat_map(|task| &task.ops).any(|op| matches!(op, Op::Hotplug { .. }));
        let cpus_wanted =
            self.tasks.len() as u32 + u32::from(wants_idle_cpu && limits.possible_cpus.is_none());
        self.cpus = self.cpus.max(cpus_wanted).clamp(limits.cpus_min, limits.cpus_max);
        self.possible_cpus = limits.possible_cpus.unwrap_or(self.cpus).max(self.cpus);
        self.ranges = self.ranges.clamp(1, ranges_max);
        self.walker_ranges = self.walker_ranges.min(WALKER_RANGES_MAX).min(ranges_max - self.ranges);
    }

    /// The TD a task's faults and zaps use.
    pub fn task_td(task_index: usize) -> u32 {
        task_index as u32 + 1
    }

    /// The TD the `ordinal`-th `td_create` of the scenario builds (after the fault TDs).
    pub fn created_td(ordinal: usize) -> u32 {
        100 + ordinal as u32
    }
}

/// One round of step normalization over a spec's tasks, in task order: the layout the
/// steps must fit and what the tasks before this one already own.
struct OpNormalizer {
    ranges: u8,
    walker_ranges: u8,
    total: u8,
    mode: WalkerMode,
    /// The CPUs no generated task runs on: the ones a hotplug may target.
    idle_cpus: Range<u32>,
    /// Pages some step already uses (no page serves two owners).
    owned: BTreeSet<PageRef>,
    /// The task each walker range belongs to.
    walker_owner: BTreeMap<u8, usize>,
    update_seen: bool,
}

/// What one task's steps have done so far, as its later steps see it.
#[derive(Default)]
struct TaskHeld {
    /// Per range, the pages this task got and has not put yet (a put drops the last).
    held: BTreeMap<u8, Vec<PageRef>>,
    /// The GPA slots this task faulted.
    faulted: BTreeSet<u16>,
}

impl OpNormalizer {
    /// A round over `spec`, whose machine and layout are already normalized.
    fn new(spec: &ScenarioSpec) -> Self {
        OpNormalizer {
            ranges: spec.ranges,
            walker_ranges: spec.walker_ranges,
            total: spec.total_ranges(),
            mode: spec.walkers,
            idle_cpus: spec.tasks.len() as u32..spec.possible_cpus,
            owned: BTreeSet::new(),
            walker_owner: BTreeMap::new(),
            update_seen: false,
        }
    }

    /// Clamps task `task_index`'s repeat, start and length, and keeps the steps that can
    /// be made valid, made valid.
    fn normalize_task(&mut self, task_index: usize, task: &mut TaskSpec) {
        task.repeat = task.repeat.clamp(1, REPEAT_MAX);
        task.start_ns = task.start_ns.min(START_NS_MAX);
        task.ops.truncate(OPS_PER_TASK_MAX);
        let mut state = TaskHeld::default();
        let mut kept = Vec::with_capacity(task.ops.len());
        for op in task.ops.drain(..) {
            if let Some(op) = self.normalize_op(task_index, &mut state, op) {
                kept.push(op);
            }
        }
        // A TD is created once and a module updated once: their tasks run once.
        if kept.iter().any(|op| matches!(op, Op::Update | Op::TdCreate)) {
            task.repeat = 1;
        }
        task.ops = kept;
    }

    /// `op` made valid where it stands in task `task_index`, or `None` when it cannot be.
    fn normalize_op(&mut self, task_index: usize, state: &mut TaskHeld, op: Op) -> Option<Op> {
        let op = match op {
            Op::Get { page, pair } => self.normalize_get(state, page, pair)?,
            Op::Put { page } => {
                // The put is of the last page this task got in that range.
                let range = host_page(page, self.ranges).range;
                let page = state.held.get_mut(&range).and_then(Vec::pop)?;
                Op::Put { page }
            }
            Op::Walker { range, pair } => self.normalize_walker(task_index, state, range, pair)?,
            Op::Fault { slot, page } => {
                let slot = slot % FAULT_SLOTS;
                let page = claim(&mut self.owned, host_page(page, self.ranges))?;
                state.faulted.insert(slot);
                Op::Fault { slot, page }
            }
            Op::Zap { slot } => {
                let slot = slot % FAULT_SLOTS;
                if !state.faulted.contains(&slot) {
                    return None;
                }
                Op::Zap { slot }
            }
            Op::Hotplug { target } => {
                let idle_cpus = &self.idle_cpus;
                if idle_cpus.is_empty() {
                    return None;
                }
                let span = idle_cpus.end - idle_cpus.start;
                let target =
                    if idle_cpus.contains(&target) { target } else { idle_cpus.start + target % span };
                Op::Hotplug { target }
            }
            Op::Update => {
                if std::mem::replace(&mut self.update_seen, true) {
                    return None;
                }
                Op::Update
            }
            Op::TdCreate => Op::TdCreate,
            Op::Spin { ns } => Op::Spin { ns: ns.clamp(1, SPIN_NS_MAX) },
        };
        Some(op)
    }

    /// A get of a free host page (and free pair pages, when it names them).
    fn normalize_get(
        &mut self,
        state: &mut TaskHeld,
        page: PageRef,
        pair: Option<[PageRef; 2]>,
    ) -> Option<Op> {
        // The page the reference is for is the caller's own (a TD or control page), so no
        // other step may use it.
        let page = claim(&mut self.owned, host_page(page, self.ranges))?;
        let pair = match pair {
            None => None,
            Some(pair) => {
                // A bracketed layout keeps host pairs out of walker ranges.
                let pair_ranges = if self.mode == WalkerMode::Bracketed { self.ranges } else { self.total };
                let wanted = pair.map(|p| PageRef::new(p.range % pair_ranges, p.page));
                let Some(pair) = claim_pair(&mut self.owned, wanted) else {
                    self.owned.remove(&page);
                    return None;
                };
                Some(pair)
            }
        };
        state.held.entry(page.range).or_default().push(page);
        Some(Op::Get { page, pair })
    }

    /// A walker of a walker range no other task walks, with free pair pages placed as the
    /// walker mode allows.
    fn normalize_walker(
        &mut self,
        task_index: usize,
        state: &TaskHeld,
        range: u8,
        pair: [PageRef; 2],
    ) -> Option<Op> {
        let (ranges, total) = (self.ranges, self.total);
        if self.walker_ranges == 0 {
            return None;
        }
        let range =
            if (ranges..total).contains(&range) { range } else { ranges + range % self.walker_ranges };
        if *self.walker_owner.entry(range).or_insert(task_index) != task_index {
            return None;
        }
        let wanted = pair.map(|p| {
            let p = PageRef::new(p.range % total, p.page);
            let allowed = p.range == range || state.held.get(&p.range).is_some_and(|got| !got.is_empty());
            match self.mode {
                WalkerMode::Bracketed if !allowed => PageRef::new(range, p.page),
                _ => p,
            }
        });
        let pair = claim_pair(&mut self.owned, wanted)?;
        Some(Op::Walker { range, pair })
    }
}

/// `page` with its range inside the host ranges.
fn host_page(page: PageRef, ranges: u8) -> PageRef {
    PageRef::new(page.range % ranges, page.page % PAGES_PER_RANGE)
}

/// `wanted`, or the next page of its range that nobody owns; `None` when the range is full.
fn claim(owned: &mut BTreeSet<PageRef>, wanted: PageRef) -> Option<PageRef> {
    let first = wanted.page % PAGES_PER_RANGE;
    let page = (0..PAGES_PER_RANGE)
        .map(|step| PageRef::new(wanted.range, (first + step) % PAGES_PER_RANGE))
        .find(|page| !owned.contains(page))?;
    owned.insert(page);
    Some(page)
}

fn claim_pair(owned: &mut BTreeSet<PageRef>, wanted: [PageRef; 2]) -> Option<[PageRef; 2]> {
    let first = claim(owned, wanted[0])?;
    match claim(owned, wanted[1]) {
        Some(second) => Some([first, second]),
        None => {
            owned.remove(&first);
            None
        }
    }
}

/// Every page the spec's ops name, for the `[pages]` table.
pub fn named_pages(spec: &ScenarioSpec) -> BTreeSet<PageRef> {
    spec.tasks.iter().flat_map(|task| &task.ops).flat_map(|op| op.pages()).collect()
}

/// Pages owned by two ops (empty for a normalized spec): what `normalize` prevents.
pub fn doubly_owned(spec: &ScenarioSpec) -> Vec<PageRef> {
    let mut seen = BTreeSet::new();
    let mut twice = Vec::new();
    for op in spec.tasks.iter().flat_map(|task| &task.ops) {
        for page in op.owned_pages() {
            if !seen.insert(page) {
                twice.push(page);
            }
        }
    }
    twice
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(range: u8, page: u16, pair: Option<[(u8, u16); 2]>) -> Op {
        Op::Get { page: PageRef::new(range, page), pair: pair.map(|p| p.map(|(r, i)| PageRef::new(r, i))) }
    }

    fn spec(tasks: Vec<Vec<Op>>) -> ScenarioSpec {
        ScenarioSpec {
            designs: Designs::dpamt(DpamtDesign::Per2mRwlock),
            cpus: 2,
            possible_cpus: 2,
            ranges: 2,
            walker_ranges: 0,
            walkers: WalkerMode::Bracketed,
            tasks: tasks.into_iter().map(|ops| TaskSpec { start_ns: 0, repeat: 1, ops }).collect(),
        }
    }

    #[test]
    fn a_put_without_a_get_of_its_range_is_dropped() {
        let mut s = spec(vec![vec![
            Op::Put { page: PageRef::new(0, 0) },
            get(1, 0, None),
            Op::Put { page: PageRef::new(1, 3) },
        ]]);
        s.normalize(&MachineLimits::default());
        // The put names the page its get was for.
        assert_eq!(s.tasks[0].ops, vec![get(1, 0, None), Op::Put { page: PageRef::new(1, 0) }]);
    }

    #[test]
    fn shared_pair_pages_move_to_the_next_free_page() {
        let mut s =
            spec(vec![vec![get(0, 0, Some([(1, 0), (1, 0)]))], vec![get(1, 0, Some([(1, 1), (0, 0)]))]]);
        s.normalize(&MachineLimits::default());
        assert_eq!(s.tasks[0].ops, vec![get(0, 0, Some([(1, 0), (1, 1)]))]);
        // B1 and B2 are taken (a pair), A1 too (the first get's page).
        assert_eq!(s.tasks[1].ops, vec![get(1, 2, Some([(1, 3), (0, 1)]))]);
        assert!(doubly_owned(&s).is_empty());
    }

    #[test]
    fn references_fold_into_the_layout_and_the_machine() {
        let mut s = spec(vec![vec![get(5, 9, Some([(4, 0), (3, 0)]))]; 9]);
        s.ranges = 9;
        s.normalize(&MachineLimits::default());
        assert_eq!(s.tasks.len(), CPUS_MAX as usize);
        assert_eq!(s.cpus, CPUS_MAX);
        assert_eq!(s.ranges, RANGES_MAX);
        assert!(named_pages(&s).iter().all(|page| page.range < s.ranges && page.page < PAGES_PER_RANGE));
    }

    #[test]
    fn bracketed_walkers_keep_their_pairs_in_their_range_or_a_held_one() {
        let mut s = spec(vec![vec![
            get(0, 0, None),
            Op::Walker { range: 0, pair: [PageRef::new(0, 1), PageRef::new(1, 1)] },
        ]]);
        s.walker_ranges = 1;
        s.normalize(&MachineLimits::default());
        // Range 0 is held (the get), range 1 is not: its page moves into the walker range 2.
        assert_eq!(
            s.tasks[0].ops[1],
            Op::Walker { range: 2, pair: [PageRef::new(0, 1), PageRef::new(2, 1)] }
        );
        s.walkers = WalkerMode::Unmirrored;
        s.tasks[0].ops[1] = Op::Walker { range: 0, pair: [PageRef::new(0, 1), PageRef::new(1, 1)] };
        s.normalize(&MachineLimits::default());
        assert_eq!(
            s.tasks[0].ops[1],
            Op::Walker { range: 2, pair: [PageRef::new(0, 1), PageRef::new(1, 1)] }
        );
    }

    #[test]
    fn hotplug_targets_an_idle_cpu_and_one_update_is_kept() {
        let mut s = spec(vec![vec![Op::Hotplug { target: 7 }, Op::Update, Op::Update]]);
        s.cpus = 2;
        s.normalize(&MachineLimits::default());
        assert_eq!(s.tasks[0].ops, vec![Op::Hotplug { target: 1 }, Op::Update]);
    }

    #[test]
    fn page_names_and_addresses() {
        assert_eq!(PageRef::new(0, 0).name(), "A1");
        assert_eq!(PageRef::new(1, 2).name(), "B3");
        assert_eq!(PageRef::new(1, 2).address(), 0x402000);
    }
}
