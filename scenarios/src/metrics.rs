//! `Metrics`: what a run measured, under the names `[expect.metrics]`, `tdxsim list metrics`
//! and sweep CSV files use, and how the figures of several runs combine.
//!
//! Names come in two forms. A plain name (`lock_contended`, `fault_latency_p99_cycles`) is
//! one of `schema::METRICS`. A qualified name narrows a family to one lock or one leaf:
//! every `lock_*` figure takes a lock class or instance (`lock_contended[pamt_lock]`,
//! `lock_wait_p99_cycles[rw[A]]`), and `seamcall_busy` takes a leaf, optionally with the
//! operand of the BUSY status (`seamcall_busy[TDH.MEM.PAGE.AUG|SEPT]`).
//!
//! A lock's class is its name up to the first `[`: the instances `mmu_lock[TD 1]` and
//! `mmu_lock[TD 2]` are the class `mmu_lock`, as lockdep keys all locks initialised at one
//! place as one class. The engine's own "class" of a resource (spinlock, rwlock, mutex,
//! rwsem, percpu_rwsem) is what `perf lock contention` calls the lock's type.
//!
//! Combining runs (`Metrics::add`, what `check` bounds): counts and totals add; `*_max_*`
//! and `sim_cycles` take the largest; `*_avg_*` is the pooled total over the pooled count;
//! `*_p50_*` / `*_p99_*` are percentiles of all runs' values together (their histograms
//! merged): exact for up to 8 values, else the upper edge of the histogram bucket, so at most
//! 12.5% above the exact value and never above the maximum. A lock that no run created has 0 in every figure.

use std::collections::BTreeMap;
use std::sync::Arc;

use host_model::kvm::fault_stats::FaultLatency;
use seam_model::status::operand;
use seam_model::{Leaf, TdxStatus};
use sim_core::ResourceStats;

use crate::schema::METRICS;

/// The figures of one lock class or instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockFigures {
    /// The lock's type as the engine knows it: `spinlock`, `rwlock`, `mutex`, `rwsem`,
    /// `percpu_rwsem` (a class whose instances differ says `mixed`).
    pub kind: String,
    /// Instances this figure covers (1 for an instance).
    pub instances: u64,
    pub stats: ResourceStats,
}

impl LockFigures {
    fn merge(&mut self, other: &LockFigures) {
        if self.kind.is_empty() {
            self.kind.clone_from(&other.kind);
        } else if self.kind != other.kind {
            self.kind = "mixed".to_string();
        }
        self.instances = self.instances.max(other.instances);
        self.stats.merge(&other.stats);
    }
}

/// One figure of a lock, each a `lock_*` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockFigure {
    Acquisitions,
    Contended,
    WaitCycles,
    WaitMaxCycles,
    WaitAvgCycles,
    WaitP99Cycles,
    HoldCycles,
    HoldMaxCycles,
}

impl LockFigure {
    pub const ALL: &'static [LockFigure] = &[
        LockFigure::Acquisitions,
        LockFigure::Contended,
        LockFigure::WaitCycles,
        LockFigure::WaitMaxCycles,
        LockFigure::WaitAvgCycles,
        LockFigure::WaitP99Cycles,
        LockFigure::HoldCycles,
        LockFigure::HoldMaxCycles,
    ];

    /// The metric name, unqualified.
    pub const fn metric(self) -> &'static str {
        match self {
            LockFigure::Acquisitions => "lock_acquisitions",
            LockFigure::Contended => "lock_contended",
            LockFigure::WaitCycles => "lock_wait_cycles",
            LockFigure::WaitMaxCycles => "lock_wait_max_cycles",
            LockFigure::WaitAvgCycles => "lock_wait_avg_cycles",
            LockFigure::WaitP99Cycles => "lock_wait_p99_cycles",
            LockFigure::HoldCycles => "lock_hold_cycles",
            LockFigure::HoldMaxCycles => "lock_hold_max_cycles",
        }
    }

    fn from_metric(name: &str) -> Option<LockFigure> {
        LockFigure::ALL.iter().copied().find(|figure| figure.metric() == name)
    }

    /// This figure of `stats`. Wait figures are over contended acquisitions; with none, 0.
    pub fn of(self, stats: &ResourceStats) -> u64 {
        match self {
            LockFigure::Acquisitions => stats.acquisitions,
            LockFigure::Contended => stats.contended,
            LockFigure::WaitCycles => stats.wait_cycles,
            LockFigure::WaitMaxCycles => stats.wait_max_cycles,
            LockFigure::WaitAvgCycles => stats.wait_cycles.checked_div(stats.contended).unwrap_or(0),
            LockFigure::WaitP99Cycles => stats.wait_histogram.quantile(0.99),
            LockFigure::HoldCycles => stats.hold_cycles,
            LockFigure::HoldMaxCycles => stats.hold_max_cycles,
        }
    }
}

/// A metric name, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricName<'a> {
    /// One of `schema::METRICS`.
    Plain(&'a str),
    /// `lock_<figure>[LOCK]`: a lock instance if one has that name, else a lock class; several
    /// separated by commas are pooled (`lock_contended[pamt_lock,dpamt_lock]`).
    Lock { figure: LockFigure, lock: &'a str },
    /// `seamcall_busy[LEAF]` or `seamcall_busy[LEAF|OPERAND]`.
    Busy { leaf: Leaf, operand: Option<u32> },
}

/// What a metric name must look like, for error messages.
pub fn expected_metric() -> String {
    let names: Vec<&str> = METRICS.iter().map(|(metric, _)| *metric).collect();
    format!(
        "<metric>_max or <metric>_min, metric one of {} (a lock_* metric may name a lock class or \
         instance, lock_contended[pamt_lock]; seamcall_busy a leaf and operand, \
         seamcall_busy[TDH.MEM.PAGE.AUG|SEPT])",
        names.join(", ")
    )
}

impl<'a> MetricName<'a> {
    /// Parses `name`; `None` when it names no metric.
    pub fn parse(name: &'a str) -> Option<MetricName<'a>> {
        let Some(open) = name.find('[') else {
            return METRICS.iter().any(|(known, _)| *known == name).then_some(MetricName::Plain(name));
        };
        let (family, qualifier) = (&name[..open], name[open + 1..].strip_suffix(']')?);
        if qualifier.is_empty() {
            return None;
        }
        if let Some(figure) = LockFigure::from_metric(family) {
            if qualifier.split(',').any(|lock| lock.trim().is_empty()) {
                return None;
            }
            return Some(MetricName::Lock { figure, lock: qualifier });
        }
        if family != "seamcall_busy" {
            return None;
        }
        let (leaf, operand) = match qualifier.split_once('|') {
            Some((leaf, operand)) => (leaf, Some(parse_operand(operand)?)),
            None => (qualifier, None),
        };
        Some(MetricName::Busy { leaf: Leaf::from_name(leaf)?, operand })
    }
}

/// An operand by name (`SEPT`) or number (`0x92`).
fn parse_operand(text: &str) -> Option<u32> {
    operand::from_name(text).or_else(|| {
        let hex = text.strip_prefix("0x")?;
        u32::from_str_radix(hex, 16).ok()
    })
}

/// How an operand prints in a metric name.
fn operand_label(id: u32) -> String {
    match operand::name(id) {
        Some(name) => name.to_string(),
        None => format!("{id:#x}"),
    }
}

/// Pools one instance's figures into `map[name]`, allocating the key only the first time.
fn pool(map: &mut BTreeMap<String, LockFigures>, name: &str, kind: &str, stats: &ResourceStats) {
    match map.get_mut(name) {
        Some(existing) => {
            if existing.kind != kind {
                existing.kind = "mixed".to_string();
            }
            existing.stats.merge(stats);
        }
        None => {
            map.insert(
                name.to_string(),
                LockFigures { kind: kind.to_string(), instances: 1, stats: stats.clone() },
            );
        }
    }
}

/// The lock instances of many runs pooled by their position in the engine's list while
/// every run lists the same locks in the same order (the runs of one scenario mostly do):
/// one name comparison per lock and run instead of a map search. A run that lists other
/// locks moves what is pooled into the metrics' map and starts over from its own list.
#[derive(Debug, Default)]
pub struct LockPool {
    locks: Vec<(sim_core::Name, &'static str, ResourceStats)>,
}

impl LockPool {
    /// Pools `run`'s locks; `into` receives the pooled figures when the list changes.
    pub fn add(&mut self, run: &[(sim_core::Name, &'static str, ResourceStats)], into: &mut Metrics) {
        self.add_borrowed(run.iter().map(|(name, kind, stats)| (name, *kind, stats)), into);
    }

    /// [`LockPool::add`] of a run's locks read where they are (the engine's list, through
    /// `Engine::resource_figures`): nothing of them is copied unless the list changed.
    pub fn add_borrowed<'r>(
        &mut self,
        run: impl ExactSizeIterator<Item = (&'r sim_core::Name, &'static str, &'r ResourceStats)> + Clone,
        into: &mut Metrics,
    ) {
        let same = self.locks.len() == run.len()
            && self.locks.iter().zip(run.clone()).all(|(mine, (name, kind, _))| {
                // A kind is a static string: the same address answers without its bytes.
                mine.0 == *name && (std::ptr::eq(mine.1, kind) || mine.1 == kind)
            });
        if same {
            for (mine, (_, _, stats)) in self.locks.iter_mut().zip(run) {
                mine.2.merge(stats);
            }
            return;
        }
        self.flush(into);
        self.locks.extend(run.map(|(name, kind, stats)| (name.clone(), kind, stats.clone())));
    }

    /// Moves what is pooled into `into`'s map of lock instances.
    pub fn flush(&mut self, into: &mut Metrics) {
        for (name, kind, stats) in self.locks.drain(..) {
            pool(&mut into.pooled_locks, &name, kind, &stats);
        }
    }
}

/// A lock's class: its name up to the first `[` (`rw[A]` -> `rw`).
pub fn lock_class(instance: &str) -> &str {
    instance.split('[').next().unwrap_or(instance)
}

/// The figures a run reports, that `[expect.metrics]` bounds and sweeps record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// SEAMCALLs by leaf and status (operand dropped).
    pub seamcalls: BTreeMap<(Leaf, TdxStatus), u64>,
    /// BUSY-class returns by leaf and whole status (operand kept).
    pub busy: BTreeMap<(Leaf, TdxStatus), u64>,
    /// Every host lock together.
    pub locks: ResourceStats,
    /// This run's locks as the engine listed them (name, type, figures), shared with
    /// `RunResult::resources` rather than copied: a run builds no map of its locks.
    pub run_locks: Arc<[(sim_core::Name, &'static str, ResourceStats)]>,
    /// The locks of the runs `add`ed, by instance.
    pub pooled_locks: BTreeMap<String, LockFigures>,
    pub faults: FaultLatency,
    /// Simulated cycles until the run ended.
    pub sim_cycles: u64,
    /// KVM's counts (host-model's `HostStats`), in the order of [`KVM_METRICS`]; a peak
    /// (`schema::PEAK_METRICS`) combines by maximum, the others add.
    pub kvm: [u64; KVM_METRICS.len()],
}

/// The metrics of [`Metrics::kvm`].
pub const KVM_METRICS: &[&str] = &[
    "vcpu_entries",
    "ept_violations",
    "local_retries",
    "kicks",
    "sept_zap_kicks",
    "sept_zap_stall_cycles",
    "vcpu_entries_blocked",
    "sept_busy_streak_peak",
    "coalesced_faults",
];

/// KVM's counts of one run, in the order of [`KVM_METRICS`].
pub fn kvm_of(stats: &host_model::HostStats) -> [u64; KVM_METRICS.len()] {
    [
        stats.vcpu_entries,
        stats.ept_violations,
        stats.local_retries,
        stats.kicks,
        stats.sept_zap_kicks,
        stats.sept_zap_stall_cycles,
        stats.vcpu_entries_blocked,
        stats.sept_busy_peak,
        stats.coalesced_faults,
    ]
}

impl Metrics {
    /// This run's locks, from the engine's (name, type, figures) per resource.
    pub fn set_run_locks(&mut self, resources: Arc<[(sim_core::Name, &'static str, ResourceStats)]>) {
        self.add_lock_totals(resources.iter().map(|(_, _, stats)| stats));
        self.run_locks = resources;
    }

    /// Adds locks' figures to `locks`, every host lock together.
    pub fn add_lock_totals<'r>(&mut self, figures: impl Iterator<Item = &'r ResourceStats>) {
        for stats in figures {
            self.locks.merge(stats);
        }
    }

    /// Every lock instance's figures: this run's and those of the runs added.
    pub fn lock_instances(&self) -> BTreeMap<String, LockFigures> {
        let mut instances = self.pooled_locks.clone();
        for (name, kind, stats) in self.run_locks.iter() {
            pool(&mut instances, name, kind, stats);
        }
        instances
    }

    /// The figures of each lock class: its instances pooled.
    pub fn lock_classes(&self) -> BTreeMap<String, LockFigures> {
        let mut classes: BTreeMap<String, LockFigures> = BTreeMap::new();
        for (name, figures) in &self.lock_instances() {
            let class_name = lock_class(name);
            match classes.get_mut(class_name) {
                Some(class) => {
                    class.merge(figures);
                    class.instances += 1;
                }
                None => {
                    classes.insert(class_name.to_string(), figures.clone());
                }
            }
        }
        classes
    }

    /// A metric by its name (see the module doc); `None` when the name is not a metric.
    pub fn get(&self, name: &str) -> Option<u64> {
        Some(match MetricName::parse(name)? {
            MetricName::Plain(name) => self.plain(name)?,
            MetricName::Lock { figure, lock } => figure.of(&self.locks_pooled(lock)),
            MetricName::Busy { leaf, operand } => self
                .busy
                .iter()
                .filter(|((busy_leaf, status), _)| {
                    *busy_leaf == leaf && operand.is_none_or(|operand| status.operand() == operand)
                })
                .map(|(_, count)| count)
                .sum(),
        })
    }

    /// The figures of the lock instance called `lock`, else of the class; `None` when no
    /// lock has that name or class.
    pub fn lock(&self, lock: &str) -> Option<ResourceStats> {
        let all = || {
            let run = self.run_locks.iter().map(|(name, _, stats)| (name.as_str(), stats));
            run.chain(self.pooled_locks.iter().map(|(name, figures)| (name.as_str(), &figures.stats)))
        };
        let is_instance = all().any(|(name, _)| name == lock);
        let mut pooled: Option<ResourceStats> = None;
        for (name, stats) in all() {
            let matches = if is_instance { name == lock } else { lock_class(name) == lock };
            if matches {
                pooled.get_or_insert_with(ResourceStats::default).merge(stats);
            }
        }
        pooled
    }

    /// The figures of `locks`: one lock, or several separated by commas pooled as one
    /// (`pamt_lock,dpamt_lock,dpamt_rwlock,rw`: whichever DPAMT lock a design takes).
    /// Locks that do not exist add nothing.
    pub fn locks_pooled(&self, locks: &str) -> ResourceStats {
        let mut pooled = ResourceStats::default();
        for lock in locks.split(',').map(str::trim) {
            if let Some(figures) = self.lock(lock) {
                pooled.merge(&figures);
            }
        }
        pooled
    }

    fn plain(&self, name: &str) -> Option<u64> {
        let sum = |keep: &dyn Fn(TdxStatus) -> bool| -> u64 {
            self.seamcalls.iter().filter(|((_, status), _)| keep(*status)).map(|(_, count)| count).sum()
        };
        if let Some(figure) = LockFigure::from_metric(name) {
            return Some(figure.of(&self.locks));
        }
        if let Some(index) = KVM_METRICS.iter().position(|kvm| *kvm == name) {
            return Some(self.kvm[index]);
        }
        let faults = &self.faults.histogram;
        Some(match name {
            "seamcalls" => sum(&|_| true),
            "seamcall_busy" => sum(&|status| status.is_busy_class()),
            "seamcall_errors" => sum(&|status| status.0 >> 63 == 1 && status.class() != 0x02),
            "faults" => faults.count(),
            "fault_latency_cycles" => self.faults.total_cycles,
            "fault_latency_p50_cycles" => faults.quantile(0.5),
            "fault_latency_p99_cycles" => faults.quantile(0.99),
            "fault_latency_max_cycles" => faults.max(),
            "sim_cycles" => self.sim_cycles,
            _ => {
                let status_name = format!("TDX_{}", name.strip_prefix("status_")?.to_ascii_uppercase());
                let wanted = TdxStatus::from_name(&status_name)?;
                sum(&|status| status == wanted)
            }
        })
    }

    /// Adds another run (see the module doc for how each figure combines).
    pub fn add(&mut self, other: &Metrics) {
        self.add_counts(other);
        for (name, kind, stats) in other.run_locks.iter() {
            pool(&mut self.pooled_locks, name, kind, stats);
        }
    }

    /// Adds everything of another run but its own lock instances (`run_locks`), which the
    /// caller pools (see `LockPool`).
    pub fn add_counts(&mut self, other: &Metrics) {
        for (key, count) in &other.seamcalls {
            *self.seamcalls.entry(*key).or_default() += count;
        }
        for (key, count) in &other.busy {
            *self.busy.entry(*key).or_default() += count;
        }
        self.locks.merge(&other.locks);
        for (name, figures) in &other.pooled_locks {
            pool(&mut self.pooled_locks, name, &figures.kind, &figures.stats);
        }
        self.faults.total_cycles += other.faults.total_cycles;
        self.faults.histogram.merge(&other.faults.histogram);
        self.sim_cycles = self.sim_cycles.max(other.sim_cycles);
        for ((mine, theirs), name) in self.kvm.iter_mut().zip(other.kvm).zip(KVM_METRICS) {
            *mine =
                if crate::schema::PEAK_METRICS.contains(name) { (*mine).max(theirs) } else { *mine + theirs };
        }
    }

    /// Every figure of this run a sweep records, by name: the plain metrics, the figures of
    /// each lock class the run took (a class never taken, such as another design's lock, is
    /// left out rather than recorded as 0), and BUSY per leaf and per leaf and operand. Lock instances are left
    /// out (a 16 GiB D5 run has 8192 of them); `run --lock-stat` and `[expect.metrics]` have them.
    pub fn named_values(&self) -> Vec<(String, u64)> {
        let mut values: Vec<(String, u64)> = METRICS
            .iter()
            .map(|(name, _)| (name.to_string(), self.plain(name).expect("METRICS names plain metrics")))
            .collect();
        for (class, figures) in
            self.lock_classes().iter().filter(|(_, figures)| figures.stats.acquisitions > 0)
        {
            for figure in LockFigure::ALL {
                values.push((format!("{}[{class}]", figure.metric()), figure.of(&figures.stats)));
            }
        }
        let mut by_leaf: BTreeMap<Leaf, u64> = BTreeMap::new();
        let mut by_operand: BTreeMap<(Leaf, u32), u64> = BTreeMap::new();
        for ((leaf, status), count) in &self.busy {
            *by_leaf.entry(*leaf).or_default() += count;
            *by_operand.entry((*leaf, status.operand())).or_default() += count;
        }
        for (leaf, count) in by_leaf {
            values.push((format!("seamcall_busy[{}]", leaf.name()), count));
        }
        for ((leaf, operand), count) in by_operand {
            values.push((format!("seamcall_busy[{}|{}]", leaf.name(), operand_label(operand)), count));
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_plain_and_qualified() {
        assert_eq!(MetricName::parse("lock_contended"), Some(MetricName::Plain("lock_contended")));
        assert_eq!(
            MetricName::parse("lock_wait_p99_cycles[rw[A]]"),
            Some(MetricName::Lock { figure: LockFigure::WaitP99Cycles, lock: "rw[A]" })
        );
        assert_eq!(
            MetricName::parse("seamcall_busy[TDH.MEM.PAGE.AUG|SEPT]"),
            Some(MetricName::Busy { leaf: Leaf::MemPageAug, operand: Some(operand::SEPT) })
        );
        assert_eq!(
            MetricName::parse("seamcall_busy[TDH.PHYMEM.PAMT.ADD]"),
            Some(MetricName::Busy { leaf: Leaf::PhymemPamtAdd, operand: None })
        );
        for bad in ["busy", "lock_contended[]", "lock_contended[x", "seamcall_busy[TDH.NOPE]", "faults[x]"] {
            assert_eq!(MetricName::parse(bad), None, "{bad}");
        }
        assert_eq!(lock_class("mmu_lock[TD 1]"), "mmu_lock");
        assert_eq!(lock_class("pamt_lock"), "pamt_lock");
    }

    fn stats(acquisitions: u64, waits: &[u64], hold: u64) -> ResourceStats {
        let mut stats = ResourceStats { acquisitions, contended: waits.len() as u64, ..Default::default() };
        for &wait in waits {
            stats.wait_cycles += wait;
            stats.wait_max_cycles = stats.wait_max_cycles.max(wait);
            stats.wait_histogram.record(wait);
        }
        stats.hold_cycles = hold;
        stats.hold_max_cycles = hold;
        stats
    }

    #[test]
    fn classes_pool_their_instances_and_runs_combine_as_documented() {
        let mut run = Metrics::default();
        run.set_run_locks(Arc::from(vec![
            ("rw[A]".into(), "rwlock", stats(10, &[100, 300], 50)),
            ("rw[B]".into(), "rwlock", stats(5, &[700], 80)),
            ("pamt_lock".into(), "spinlock", stats(3, &[], 10)),
        ]));
        run.sim_cycles = 1000;
        assert_eq!(run.get("lock_contended[rw]"), Some(3));
        assert_eq!(run.get("lock_contended[rw[B]]"), Some(1));
        assert_eq!(run.get("lock_wait_max_cycles[rw]"), Some(700));
        assert_eq!(run.get("lock_wait_avg_cycles[rw]"), Some(366));
        assert_eq!(run.get("lock_wait_avg_cycles[pamt_lock]"), Some(0), "no contention: 0, as lockstat");
        assert_eq!(run.get("lock_hold_max_cycles"), Some(80));
        assert_eq!(run.get("lock_acquisitions"), Some(18));
        assert_eq!(run.get("lock_contended[dpamt_lock]"), Some(0), "a lock no run created");
        assert_eq!(run.lock_classes()["rw"].instances, 2);
        assert_eq!(
            run.get("lock_contended[pamt_lock,rw,dpamt_lock]"),
            Some(3),
            "pooled: rw's 3 and pamt_lock's 0"
        );
        assert_eq!(run.get("lock_wait_max_cycles[pamt_lock,rw]"), Some(700));
        assert_eq!(MetricName::parse("lock_contended[a,,b]"), None);
        assert_eq!(run.lock_classes()["rw"].kind, "rwlock");

        let mut other = Metrics::default();
        other.set_run_locks(Arc::from(vec![("rw[A]".into(), "rwlock", stats(1, &[5000], 9))]));
        other.sim_cycles = 400;
        let mut both = run.clone();
        both.add(&other);
        assert_eq!(both.get("lock_contended[rw]"), Some(4), "counts add");
        assert_eq!(both.get("lock_wait_max_cycles[rw]"), Some(5000), "maxima take the larger");
        assert_eq!(both.get("lock_wait_avg_cycles[rw]"), Some(6100 / 4), "pooled total / pooled count");
        assert_eq!(both.get("lock_wait_p99_cycles[rw]"), Some(5000), "p99 of the pooled waits");
        assert_eq!(both.get("sim_cycles"), Some(1000), "the longest run");
    }

    #[test]
    fn named_values_cover_plain_class_and_busy_figures() {
        let mut metrics = Metrics::default();
        metrics.set_run_locks(Arc::from(vec![("pamt_lock".into(), "spinlock", stats(2, &[40], 10))]));
        let busy = seam_model::status::TDX_OPERAND_BUSY;
        metrics.busy.insert((Leaf::PhymemPamtAdd, busy.with_operand(operand::RCX)), 3);
        metrics.busy.insert((Leaf::PhymemPamtAdd, busy.with_operand(operand::RDX)), 1);
        let values: BTreeMap<String, u64> = metrics.named_values().into_iter().collect();
        assert_eq!(values["lock_contended[pamt_lock]"], 1);
        assert_eq!(values["seamcall_busy[TDH.PHYMEM.PAMT.ADD]"], 4);
        assert_eq!(values["seamcall_busy[TDH.PHYMEM.PAMT.ADD|RCX]"], 3);
        for (name, value) in &values {
            assert_eq!(metrics.get(name), Some(*value), "{name} reads back by its name");
        }
        assert!(METRICS.iter().all(|(name, _)| values.contains_key(*name)));
    }
}
