//! `[[workload]]`: generated load. Each key is checked against its range and against the
//! kind (a key the kind does not use is refused, not ignored), and the workloads together
//! against the machine: their CPUs online, their TDs distinct from each other's and from
//! the TDs steps name, their memory inside `machine.memory`.

use std::collections::BTreeSet;

use host_model::kvm::coalesce;
use host_model::workload::spec::KVM_USER_MEM_SLOTS;
use host_model::workload::{Locality, Workload, WorkloadKind, ZapMode};

use super::*;

/// Defaults of the keys a `[[workload]]` may leave out.
pub mod defaults {
    /// `tds`.
    pub const TDS: u64 = 1;
    /// `vcpus_per_td`.
    pub const VCPUS_PER_TD: u64 = 1;
    /// `memory_per_td`: the example of SCENARIOS.md.
    pub const MEMORY_PER_TD: u64 = 16 << 20;
    /// `initial_memory` (td_boot, td_churn): one 2MB range of firmware image.
    pub const INITIAL_MEMORY: u64 = 2 << 20;
    /// `fault_rate`, faults per second per vCPU: inside calibration.md §2.3's band
    /// (1e4–1e5); reports/calibration/ picks it (docs/model.md "Workloads").
    pub const FAULT_RATE: f64 = 70_000.0;
    /// `locality`: picked by reports/calibration/ (README.md there): the model's guests touch
    /// pages at an even pace, so with a contiguous allocator (1.0) the vCPUs cross 2MB ranges
    /// in lockstep and the v2 boot contends 35-75 times the published figure; one page in a
    /// hundred from elsewhere puts it within 2x of the published 1136 contentions / 4 ms.
    pub const LOCALITY: f64 = 0.99;
    /// `rounds`.
    pub const ROUNDS: u64 = 1;
    /// `zap_size` of a zap_storm: a 2MB conversion (at most the vCPU's part).
    pub const ZAP_SIZE: u64 = 2 << 20;
    /// `zap_size` of a guest_accept_storm: the one page a hostile guest re-ACCEPTs.
    pub const ZAP_SIZE_ACCEPT_STORM: u64 = 4 << 10;
    /// `zap_interval`, in nanoseconds.
    pub const ZAP_INTERVAL_NS: f64 = 100_000.0;
}

/// Keys every kind takes.
const COMMON: &[&str] = &[
    "kind",
    "tds",
    "first_td",
    "vcpus_per_td",
    "memory_per_td",
    "memory_touched",
    "fault_rate",
    "locality",
    "start",
    "first_cpu",
    "cpus",
];

/// The keys `kind` takes besides [`COMMON`].
fn kind_keys(kind: WorkloadKind) -> &'static [&'static str] {
    match kind {
        WorkloadKind::TdBoot => &["initial_memory", "coalesce_faults"],
        WorkloadKind::TdChurn => &["initial_memory", "rounds"],
        WorkloadKind::FaultStorm => &["rounds"],
        WorkloadKind::ZapStorm => &["rounds", "zap_size", "zap"],
        WorkloadKind::GuestAcceptStorm => &["rounds", "zap_size", "zap_interval"],
    }
}

/// What the workloads are checked against.
pub(super) struct WorkloadSpace<'s> {
    pub machine: &'s Machine,
    pub clock: Clock,
    /// TDs the steps name.
    pub step_tds: BTreeSet<u32>,
    /// The file has `[[task]]`s.
    pub has_tasks: bool,
}

impl Loader<'_> {
    pub(super) fn workloads(&self, top: &Table<'_, '_>, space: &WorkloadSpace<'_>) -> Result<Vec<Workload>> {
        let Some(value) = top.get("workload") else {
            return Ok(Vec::new());
        };
        let DeValue::Array(array) = value.get_ref() else {
            return Err(self.invalid(Some(value), "workload", "[[workload]] tables"));
        };
        if array.len() as u64 > max::WORKLOADS {
            let expected = format!("at most {} [[workload]] tables", max::WORKLOADS);
            return Err(self.invalid(Some(value), "workload", &expected));
        }
        let mut workloads: Vec<Workload> = Vec::new();
        let mut used_tds = space.step_tds.clone();
        let (mut threads, mut host_bytes) = (0u64, space.machine.memory_bytes / 256);
        for (index, value) in array.iter().enumerate() {
            let path = format!("workload[{index}]");
            if !value.get_ref().is_table() {
                return Err(self.invalid(Some(value), &path, "a table (a [[workload]])"));
            }
            let table = self.table(path, value, Some(keys::WORKLOAD))?;
            let load = self.workload(&table, space, &used_tds)?;
            used_tds.extend(load.first_td..load.first_td + load.tds);
            threads += u64::from(load.tds) * (u64::from(load.vcpus_per_td) + 2);
            if threads > max::WORKLOAD_THREADS {
                let expected = format!(
                    "workloads with at most {} threads in all (a VMM thread per TD, a thread per vCPU, a host thread per storm TD)",
                    max::WORKLOAD_THREADS
                );
                return Err(self.invalid(table.get("tds").or(Some(value)), &table.key("tds"), &expected));
            }
            host_bytes += load.peak_host_bytes();
            if host_bytes > space.machine.memory_bytes {
                let expected = format!(
                    "workloads whose memory fits machine.memory ({} bytes): their initial and touched memory, \
                     1/256 of it for S-EPT tables, control pages, and 1/256 of machine.memory for PAMT \
                     backing need {host_bytes} bytes up to this one",
                    space.machine.memory_bytes
                );
                let key = if table.get("memory_touched").is_some() { "memory_touched" } else { "tds" };
                return Err(self.invalid(table.get(key).or(Some(value)), &table.key(key), &expected));
            }
            workloads.push(load);
        }
        Ok(workloads)
    }

    /// One `[[workload]]` table, checked against `space` and the TDs named so far.
    fn workload(
        &self,
        table: &Table<'_, '_>,
        space: &WorkloadSpace<'_>,
        used_tds: &BTreeSet<u32>,
    ) -> Result<Workload> {
        let kind = self.workload_kind(table)?;
        let int = |name: &str, min: u64, max: u64, default: u64| -> Result<u64> {
            table.get(name).map_or(Ok(default), |value| self.int(&table.key(name), value, min, max))
        };
        let tds = int("tds", 1, max::WORKLOAD_TDS, defaults::TDS)? as u32;
        let vcpus_per_td = int("vcpus_per_td", 1, max::VCPUS, defaults::VCPUS_PER_TD)? as u32;
        let first_td = self.first_td(table, tds, used_tds)?;
        let memory_per_td = self
            .workload_size(table, "memory_per_td", RANGE_2M, 1, max::MEMORY_BYTES)?
            .unwrap_or(defaults::MEMORY_PER_TD);
        let initial_default = if kind.builds_tds() { defaults::INITIAL_MEMORY.min(memory_per_td) } else { 0 };
        let initial_memory = self
            .workload_size(table, "initial_memory", PAGE_SIZE, 0, memory_per_td)?
            .unwrap_or(initial_default);
        let room = memory_per_td - initial_memory;
        let memory_touched = self.workload_size(table, "memory_touched", PAGE_SIZE, 0, room)?.unwrap_or(room);
        let clock = space.clock;
        let fault_interval = self.rate_interval(table, "fault_rate", clock, defaults::FAULT_RATE)?;
        let locality = self.workload_locality(table)?;
        let rounds = int("rounds", 1, max::ROUNDS, defaults::ROUNDS)? as u32;
        let time = |name: &str, default_ns: f64| -> Result<u64> {
            match table.get(name) {
                Some(value) => self.bounded_time(&table.key(name), value, clock, 1, TIME_EXPECTED),
                None => Ok(clock.ns_to_cycles(default_ns)),
            }
        };
        let start = match table.get("start") {
            Some(value) => self.bounded_time(&table.key("start"), value, clock, 0, TIME_EXPECTED)?,
            None => 0,
        };
        let (first_cpu, cpus) = self.workload_cpus(table, space.machine)?;
        let zap_size = self.zap_size(table, kind, memory_touched)?;
        let zap_interval = time("zap_interval", defaults::ZAP_INTERVAL_NS)?;
        let zap = self.zap_mode(table)?;
        let coalesce_faults = self.coalesce_faults(table, space, vcpus_per_td)?;
        let load = Workload {
            kind,
            first_td,
            tds,
            vcpus_per_td,
            memory_per_td,
            initial_memory,
            memory_touched,
            fault_interval,
            locality: Locality::from_fraction(locality),
            rounds,
            start,
            first_cpu,
            cpus,
            zap_size,
            zap_interval,
            zap,
            coalesce_faults,
        };
        self.check_memslots(table, &load)?;
        Ok(load)
    }

    /// `coalesce_faults` (td_boot): one coalescable fault round in N simulated in full, the
    /// others coalesced (host-model's `kvm::coalesce`); 1, the default, simulates every
    /// round. Above 1 only where no other task can touch the workload's TDs: one vCPU per TD
    /// and no `[[task]]` in the file.
    fn coalesce_faults(
        &self,
        table: &Table<'_, '_>,
        space: &WorkloadSpace<'_>,
        vcpus_per_td: u32,
    ) -> Result<u32> {
        let Some(value) = table.get("coalesce_faults") else { return Ok(1) };
        let key = table.key("coalesce_faults");
        let every = self.int(&key, value, 1, u64::from(coalesce::MAX_EVERY))? as u32;
        if every == 1 {
            return Ok(every);
        }
        let alone = if vcpus_per_td != 1 {
            Some(format!(
                "vcpus_per_td = 1 (here {vcpus_per_td}): a vCPU's rounds are coalesced only while nothing else touches its TD, and its TD's other vCPUs would"
            ))
        } else if space.has_tasks {
            Some("a file without [[task]]s: a step may touch the workload's TDs, which coalesced rounds cannot see".to_owned())
        } else {
            None
        };
        match alone {
            Some(needs) => Err(self.invalid(
                Some(value),
                &key,
                &format!("1 here; coalesce_faults above 1 needs {needs}"),
            )),
            None => Ok(every),
        }
    }

    /// `zap` (zap_storm): what a round does to its hole, if present (default `punch_hole`).
    fn zap_mode(&self, table: &Table<'_, '_>) -> Result<ZapMode> {
        let Some(value) = table.get("zap") else { return Ok(ZapMode::default()) };
        let names: Vec<&str> = ZapMode::ALL.iter().map(|mode| mode.name()).collect();
        let name = self.choice(&table.key("zap"), value, &names)?;
        Ok(ZapMode::from_name(name).expect("choice() returned a listed name"))
    }

    /// A zap_storm that changes memslots has one per hole of each TD: at most
    /// `KVM_USER_MEM_SLOTS` besides the base one.
    fn check_memslots(&self, table: &Table<'_, '_>, load: &Workload) -> Result<()> {
        let slots: u64 = (0..load.vcpus_per_td)
            .map(|vcpu| match load.holes(vcpu) {
                (0, _) => 0,
                (_, places) => places,
            })
            .sum();
        if !load.zap.changes_memslots() || slots < KVM_USER_MEM_SLOTS {
            return Ok(());
        }
        let expected = format!(
            "a zap_size that leaves at most {} memslots per TD (KVM_USER_MEM_SLOTS less the base one): \
             zap = \"{}\" makes a memslot of each hole of each vCPU's part, here {slots}",
            KVM_USER_MEM_SLOTS - 1,
            load.zap.name()
        );
        let key = if table.get("zap_size").is_some() { "zap_size" } else { "zap" };
        Err(self.invalid(table.get(key), &table.key(key), &expected))
    }

    /// `kind`: required, one of the workload kinds; and every key of the table one that
    /// kind takes.
    fn workload_kind(&self, table: &Table<'_, '_>) -> Result<WorkloadKind> {
        let kind = match table.get("kind") {
            Some(value) => {
                let names: Vec<&str> = WorkloadKind::ALL.iter().map(|kind| kind.name()).collect();
                let name = self.choice(&table.key("kind"), value, &names)?;
                WorkloadKind::from_name(name).expect("choice() returned a listed name")
            }
            None => return Err(self.missing(table, "kind", "a workload kind (required)")),
        };
        for (key, _) in &table.entries {
            let name: &str = key.get_ref();
            if !COMMON.contains(&name) && !kind_keys(kind).contains(&name) {
                let mut accepted: Vec<&str> = COMMON.to_vec();
                accepted.extend(kind_keys(kind));
                let expected = format!("one of the keys kind {} takes: {}", kind.name(), accepted.join(", "));
                return Err(self.error(key.span(), &table.key(name), &expected, self.raw(key.span())));
            }
        }
        Ok(kind)
    }

    /// `locality`: a fraction 0..=1, if present (default `defaults::LOCALITY`).
    fn workload_locality(&self, table: &Table<'_, '_>) -> Result<f64> {
        Ok(match table.get("locality") {
            Some(value) => {
                let expected = "a fraction 0..=1 (0: scattered pages, 1: contiguous)";
                self.float(&table.key("locality"), value, expected, |fraction| {
                    (0.0..=1.0).contains(&fraction)
                })?
            }
            None => defaults::LOCALITY,
        })
    }

    /// `zap_size`: a page multiple from a page up to `memory_touched` (at least a page);
    /// by default the kind's zap size, capped at that most.
    fn zap_size(&self, table: &Table<'_, '_>, kind: WorkloadKind, memory_touched: u64) -> Result<u64> {
        let zap_default = match kind {
            WorkloadKind::ZapStorm => defaults::ZAP_SIZE,
            WorkloadKind::GuestAcceptStorm => defaults::ZAP_SIZE_ACCEPT_STORM,
            WorkloadKind::TdBoot | WorkloadKind::TdChurn | WorkloadKind::FaultStorm => 0,
        };
        let most = memory_touched.max(PAGE_SIZE);
        Ok(self
            .workload_size(table, "zap_size", PAGE_SIZE, PAGE_SIZE, most)?
            .unwrap_or(zap_default.min(most)))
    }

    /// `first_td`: given, or the first number above every TD named so far (steps', earlier
    /// workloads'), from 1. Its TDs must be new.
    fn first_td(&self, table: &Table<'_, '_>, tds: u32, used: &BTreeSet<u32>) -> Result<u32> {
        let last_allowed = u64::from(u32::MAX) - u64::from(tds) + 1;
        let first = match table.get("first_td") {
            Some(value) => self.int(&table.key("first_td"), value, 0, last_allowed)? as u32,
            None => used.last().map_or(1, |last| last.saturating_add(1)).max(1),
        };
        let key = if table.get("first_td").is_some() { "first_td" } else { "tds" };
        if u64::from(first) > last_allowed {
            let expected = format!("TD numbers that fit in 32 bits ({tds} TDs from {first})");
            return Err(self.invalid(table.get(key), &table.key(key), &expected));
        }
        if let Some(taken) = used.range(first..first + tds).next() {
            let expected = format!(
                "TDs {first}..={} of their own, but TD {taken} is named by a step or an earlier workload",
                first + tds - 1
            );
            return Err(self.invalid(table.get(key), &table.key(key), &expected));
        }
        Ok(first)
    }

    /// A size key: a multiple of `align` in `min..=max` bytes, if present.
    fn workload_size(
        &self,
        table: &Table<'_, '_>,
        name: &str,
        align: u64,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>> {
        let Some(value) = table.get(name) else { return Ok(None) };
        let key = table.key(name);
        let unit = if align == RANGE_2M { "2M" } else { "4K" };
        let expected = format!("a size that is a multiple of {unit}, {min}..={max} bytes, like \"16M\"");
        let bytes = self.size(&key, value, &expected)?;
        if !bytes.is_multiple_of(align) || !(min..=max).contains(&bytes) {
            return Err(self.invalid(Some(value), &key, &expected));
        }
        Ok(Some(bytes))
    }

    /// A rate per second of simulated time, as the cycles between two events at `clock`.
    fn rate_interval(&self, table: &Table<'_, '_>, name: &str, clock: Clock, default: f64) -> Result<u64> {
        let rate = match table.get(name) {
            Some(value) => {
                let expected = format!("a rate per second, above 0 and at most {}", max::RATE_PER_SECOND);
                self.float(&table.key(name), value, &expected, |rate| {
                    rate > 0.0 && rate <= max::RATE_PER_SECOND
                })?
            }
            None => default,
        };
        Ok(clock.ns_to_cycles(1e9 / rate).max(1))
    }

    /// `first_cpu` and `cpus`: CPUs online at start.
    fn workload_cpus(&self, table: &Table<'_, '_>, machine: &Machine) -> Result<(u32, u32)> {
        let online = u64::from(machine.cpus);
        let first = match table.get("first_cpu") {
            Some(value) => {
                let expected = format!("an integer 0..={} (a CPU online at start)", online - 1);
                self.int(&table.key("first_cpu"), value, 0, online - 1)
                    .map_err(|error| ScenarioError { expected, ..error })?
            }
            None => 0,
        };
        let cpus = match table.get("cpus") {
            Some(value) => {
                let expected =
                    format!("an integer 1..={} (CPUs online at start from first_cpu)", online - first);
                self.int(&table.key("cpus"), value, 1, online - first)
                    .map_err(|error| ScenarioError { expected, ..error })?
            }
            None => online - first,
        };
        Ok((first as u32, cpus as u32))
    }
}
