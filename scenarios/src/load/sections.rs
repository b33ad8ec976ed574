//! The sections of a scenario file: `[machine]`, `[module]`, `[host]`, `[pages]`, `[[task]]`,
//! `[run]`, `[expect]`.

use super::*;

impl Loader<'_> {
    pub(super) fn machine(&self, top: &Table<'_, '_>) -> Result<Machine> {
        let Some(table) = self.subtable(top, "machine", keys::MACHINE)? else {
            return Ok(Machine {
                cpus: 1,
                possible_cpus: 1,
                packages: 1,
                memory_bytes: 64 << 20,
                ghz: GHZ_DEFAULT,
            });
        };
        let cpus = match table.get("cpus") {
            Some(value) => self.int(&table.key("cpus"), value, 1, max::CPUS)?,
            None => 1,
        };
        let possible_cpus = match table.get("possible_cpus") {
            Some(value) => self.int(&table.key("possible_cpus"), value, cpus, max::CPUS)?,
            None => cpus,
        };
        let packages = match table.get("packages") {
            Some(value) => {
                self.int(&table.key("packages"), value, 1, possible_cpus).map_err(|error| ScenarioError {
                    expected: format!("an integer 1..={possible_cpus} (at most machine.possible_cpus)"),
                    ..error
                })?
            }
            None => 1,
        };
        let memory_bytes = match table.get("memory") {
            Some(value) => {
                let key = table.key("memory");
                let expected = format!(
                    "a size that is a positive multiple of 2M, at most {}T, like \"64M\"",
                    max::MEMORY_BYTES >> 40
                );
                let bytes = self.size(&key, value, &expected)?;
                if bytes == 0 || !bytes.is_multiple_of(RANGE_2M) || bytes > max::MEMORY_BYTES {
                    return Err(self.invalid(Some(value), &key, &expected));
                }
                bytes
            }
            None => 64 << 20,
        };
        let ghz = match table.get("ghz") {
            Some(value) => {
                let expected = format!(
                    "a clock rate in GHz, {}..={} (times in the file are converted with it)",
                    max::GHZ_MIN,
                    max::GHZ
                );
                self.float(&table.key("ghz"), value, &expected, |ghz| {
                    (max::GHZ_MIN..=max::GHZ).contains(&ghz)
                })?
            }
            None => GHZ_DEFAULT,
        };
        Ok(Machine {
            cpus: cpus as u32,
            possible_cpus: possible_cpus as u32,
            packages: packages as u32,
            memory_bytes,
            ghz,
        })
    }

    pub(super) fn module(&self, top: &Table<'_, '_>, clock: Clock) -> Result<ModuleCfg> {
        let mut module = ModuleCfg {
            dpamt: true,
            host_priority: true,
            jitter: 0.10,
            costs: Leaf::ALL.iter().map(|leaf| (*leaf, leaf.default_cost_cycles())).collect(),
            initialized: true,
            seamret_erratum: false,
            compat_sensitive: true,
            leaf_locks: LeafLocks::default(),
        };
        let Some(table) = self.subtable(top, "module", keys::MODULE)? else {
            return Ok(module);
        };
        if let Some(value) = table.get("dpamt") {
            module.dpamt = self.boolean(&table.key("dpamt"), value)?;
        }
        if let Some(value) = table.get("host_priority") {
            module.host_priority = self.boolean(&table.key("host_priority"), value)?;
        }
        for (name, field) in [
            ("initialized", &mut module.initialized),
            ("seamret_erratum", &mut module.seamret_erratum),
            ("compat_sensitive", &mut module.compat_sensitive),
        ] {
            if let Some(value) = table.get(name) {
                *field = self.boolean(&table.key(name), value)?;
            }
        }
        if let Some(value) = table.get("leaf_locks") {
            let names: Vec<&str> = LeafLocks::ALL.iter().map(|locks| locks.name()).collect();
            let name = self.choice(&table.key("leaf_locks"), value, &names)?;
            module.leaf_locks = LeafLocks::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("jitter") {
            let in_range = |jitter: f64| (0.0..=0.5).contains(&jitter);
            module.jitter = self.float(&table.key("jitter"), value, "a number 0.0..=0.5", in_range)?;
        }
        if let Some(costs) = table.get("costs") {
            let costs = self.table(table.key("costs"), costs, None)?;
            for (key, value) in &costs.entries {
                let Some(leaf) = Leaf::from_name(key.get_ref()) else {
                    return Err(self.error(
                        key.span(),
                        &costs.key(key.get_ref()),
                        "a leaf name (tdxsim list leaves), like \"TDH.PHYMEM.PAMT.ADD\"",
                        self.raw(key.span()),
                    ));
                };
                let cost_key = costs.key(key.get_ref());
                let expected = "a cost: an integer of cycles or a time like \"5us\"";
                let cycles = self.bounded_time(&cost_key, value, clock, 1, expected)?;
                module.costs.insert(leaf, cycles);
            }
        }
        Ok(module)
    }

    pub(super) fn host(&self, top: &Table<'_, '_>) -> Result<HostCfg> {
        let mut host = HostCfg {
            dpamt: DpamtDesign::default(),
            sept_busy: SeptBusyDesign::default(),
            sept_retries: crate::schema::SEPT_RETRIES_DEFAULT,
            update: UpdateDesign::default(),
            enable: EnableDesign::default(),
            hint_aug_retries: host_model::kvm::tdx_fault::HINT_AUG_RETRIES_DEFAULT,
        };
        let Some(table) = self.subtable(top, "host", keys::HOST)? else {
            return Ok(host);
        };
        if let Some(value) = table.get("dpamt") {
            let names: Vec<&str> = DpamtDesign::ALL.iter().map(|design| design.name()).collect();
            let name = self.choice(&table.key("dpamt"), value, &names)?;
            host.dpamt = DpamtDesign::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("sept_busy") {
            let names: Vec<&str> = SeptBusyDesign::ALL.iter().map(|design| design.name()).collect();
            let name = self.choice(&table.key("sept_busy"), value, &names)?;
            host.sept_busy = SeptBusyDesign::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("sept_retries") {
            let key = table.key("sept_retries");
            host.sept_retries = self.int(&key, value, 0, u64::from(crate::schema::SEPT_RETRIES_MAX))? as u32;
        }
        if let Some(value) = table.get("update") {
            let names: Vec<&str> = UpdateDesign::ALL.iter().map(|design| design.name()).collect();
            let name = self.choice(&table.key("update"), value, &names)?;
            host.update = UpdateDesign::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("enable") {
            let names: Vec<&str> = EnableDesign::ALL.iter().map(|design| design.name()).collect();
            let name = self.choice(&table.key("enable"), value, &names)?;
            host.enable = EnableDesign::from_name(name).expect("choice() returned a listed name");
        }
        if let Some(value) = table.get("hint_aug_retries") {
            let key = table.key("hint_aug_retries");
            host.hint_aug_retries = self.int(&key, value, 0, crate::schema::HINT_AUG_RETRIES_MAX)? as u32;
        }
        Ok(host)
    }

    pub(super) fn pages(&self, top: &Table<'_, '_>, machine: &Machine) -> Result<IndexMap<String, u64>> {
        let mut pages = IndexMap::new();
        let Some(value) = top.get("pages") else {
            return Ok(pages);
        };
        let table = self.table("pages".to_owned(), value, None)?;
        for (key, value) in &table.entries {
            let page_key = table.key(key.get_ref());
            if parse_address(key.get_ref()).is_some() {
                return Err(self.error(
                    key.span(),
                    &page_key,
                    "a page name that is not itself an address",
                    self.raw(key.span()),
                ));
            }
            let address = self.address(&page_key, value)?;
            self.check_page(&page_key, value, address, 1, machine.memory_bytes)?;
            pages.insert(key.get_ref().to_string(), address);
        }
        Ok(pages)
    }

    pub(super) fn tasks(
        &self,
        top: &Table<'_, '_>,
        machine: &Machine,
        space: &StepSpace<'_>,
        clock: Clock,
    ) -> Result<Vec<Task>> {
        let Some(value) = top.get("task") else {
            return Ok(Vec::new());
        };
        let expected = "[[task]] tables";
        let DeValue::Array(array) = value.get_ref() else {
            return Err(self.invalid(Some(value), "task", expected));
        };
        let mut tasks = Vec::new();
        let values: Vec<&Value<'_>> = array.iter().collect();
        for (index, value) in array.iter().enumerate() {
            let path = format!("task[{index}]");
            if !value.get_ref().is_table() {
                return Err(self.invalid(Some(value), &path, "a table (a [[task]])"));
            }
            let table = self.table(path, value, Some(keys::TASK))?;
            tasks.push((self.task(&table, machine, space, clock)?, table.get("cpu")));
        }
        // A task on a CPU that is offline at start waits for a cpu_up of that CPU; without
        // one it would never run, and the run would pass having done nothing.
        let brought_up: Vec<u32> = tasks
            .iter()
            .flat_map(|(task, _)| &task.steps)
            .filter_map(|step| match step.call {
                Call::CpuUp { target } => Some(target),
                _ => None,
            })
            .collect();
        for (index, (task, cpu_value)) in tasks.iter().enumerate() {
            if task.cpu >= machine.cpus && !brought_up.contains(&task.cpu) {
                let expected = format!(
                    "a CPU online at start (0..={}) or one a cpu_up step brings online; CPU {} never is",
                    machine.cpus - 1,
                    task.cpu
                );
                return Err(self.invalid(*cpu_value, &format!("task[{index}].cpu"), &expected));
            }
        }
        let tasks: Vec<Task> = tasks.into_iter().map(|(task, _)| task).collect();
        self.check_kvm_steps(&tasks, &values)?;
        Ok(tasks)
    }

    pub(super) fn task(
        &self,
        table: &Table<'_, '_>,
        machine: &Machine,
        space: &StepSpace<'_>,
        clock: Clock,
    ) -> Result<Task> {
        let Some(cpu_value) = table.get("cpu") else {
            return Err(self.missing(table, "cpu", "an integer (the task's CPU, required)"));
        };
        let cpu = self.cpu(&table.key("cpu"), cpu_value, machine.possible_cpus)?;
        let start = match table.get("start") {
            Some(value) => self.bounded_time(&table.key("start"), value, clock, 0, TIME_EXPECTED)?,
            None => 0,
        };
        let repeat = match table.get("repeat") {
            Some(value) => self.int(&table.key("repeat"), value, 1, max::REPEAT)?,
            None => 1,
        };
        let Some(steps_value) = table.get("steps") else {
            return Err(self.missing(table, "steps", "an array of steps (required)"));
        };
        let steps_key = table.key("steps");
        let expected = "a non-empty array of steps like [{ call = \"sleep\", for = \"1us\" }]";
        let DeValue::Array(array) = steps_value.get_ref() else {
            return Err(self.invalid(Some(steps_value), &steps_key, expected));
        };
        if array.is_empty() {
            return Err(self.invalid(Some(steps_value), &steps_key, expected));
        }
        let mut steps = Vec::new();
        for (index, value) in array.iter().enumerate() {
            steps.push(self.step(&format!("{steps_key}[{index}]"), value, space, clock)?);
        }
        let (line, _) = self.position(table.span.start);
        Ok(Task { cpu, start: Cycle(start), repeat: repeat as u32, steps, line })
    }

    pub(super) fn run(&self, top: &Table<'_, '_>, clock: Clock) -> Result<RunCfg> {
        let mut run = RunCfg {
            runs: 100,
            seed: 0,
            strategy: Strategy::Random,
            pct_depth: 3,
            exhaustive_bound: 2,
            max_time: Cycle(clock.ns_to_cycles(1e9)),
            watchdog: Cycle(clock.ns_to_cycles(20e6)),
            hung_task: Cycle(0),
            max_stall: Cycle(clock.ns_to_cycles(50e3)),
            max_events: crate::schema::MAX_EVENTS_DEFAULT,
        };
        let Some(table) = self.subtable(top, "run", keys::RUN)? else {
            run.hung_task = Cycle(run.watchdog.0.saturating_mul(crate::schema::HUNG_TASK_FACTOR));
            return Ok(run);
        };
        if let Some(value) = table.get("runs") {
            run.runs = self.int(&table.key("runs"), value, 1, max::RUNS)?;
        }
        if let Some(value) = table.get("seed") {
            run.seed = self.int(&table.key("seed"), value, 0, u64::MAX)?;
        }
        if let Some(value) = table.get("strategy") {
            let key = table.key("strategy");
            run.strategy = match self.choice(&key, value, STRATEGY_NAMES)? {
                "pct" => Strategy::Pct,
                "exhaustive" => Strategy::Exhaustive,
                "coverage" => Strategy::Coverage,
                _ => Strategy::Random,
            };
        }
        if let Some(value) = table.get("pct_depth") {
            run.pct_depth = self.int(&table.key("pct_depth"), value, 1, max::PCT_DEPTH)? as u32;
        }
        if let Some(value) = table.get("exhaustive_bound") {
            let key = table.key("exhaustive_bound");
            run.exhaustive_bound = self.int(&key, value, 0, max::EXHAUSTIVE_BOUND)? as u32;
        }
        self.run_times(&table, clock, &mut run)?;
        if let Some(value) = table.get("max_events") {
            run.max_events = self.int(&table.key("max_events"), value, 1, max::EVENTS)?;
        }
        if run.hung_task == Cycle(0) {
            run.hung_task = Cycle(run.watchdog.0.saturating_mul(crate::schema::HUNG_TASK_FACTOR));
        }
        Ok(run)
    }

    /// `[run]`'s times: each bounded, and none longer than the run itself.
    fn run_times(&self, table: &Table<'_, '_>, clock: Clock, run: &mut RunCfg) -> Result<()> {
        for (name, field, minimum) in [
            ("max_time", &mut run.max_time, 1),
            ("watchdog", &mut run.watchdog, 1),
            ("max_stall", &mut run.max_stall, 0),
            ("hung_task", &mut run.hung_task, 1),
        ] {
            if let Some(value) = table.get(name) {
                let key = table.key(name);
                *field = Cycle(self.bounded_time(&key, value, clock, minimum, TIME_EXPECTED)?);
            }
        }
        // A watchdog or a stall longer than the whole run could never act: the file means
        // something else than it says.
        for (name, cycles, what) in [
            ("watchdog", run.watchdog, "the watchdog could never fire"),
            ("max_stall", run.max_stall, "a stall that long could not end inside the run"),
            ("hung_task", run.hung_task, "the hung-task detector could never fire"),
        ] {
            if let Some(value) = table.get(name)
                && cycles > run.max_time
            {
                let expected = format!("a time at most run.max_time ({} cycles): {what}", run.max_time.0);
                return Err(self.invalid(Some(value), &table.key(name), &expected));
            }
        }
        Ok(())
    }

    pub(super) fn expect(&self, top: &Table<'_, '_>, run: &RunCfg) -> Result<Option<Expect>> {
        let Some(table) = self.subtable(top, "expect", keys::EXPECT)? else {
            return Ok(None);
        };
        let expectable: Vec<&str> = OutcomeKind::ALL
            .iter()
            .filter(|outcome| **outcome != OutcomeKind::Error)
            .map(|outcome| outcome.name())
            .collect();
        let Some(outcome_value) = table.get("outcome") else {
            let expected = format!("one of {} (required in [expect])", expectable.join(" | "));
            return Err(self.missing(&table, "outcome", &expected));
        };
        let outcome = self.choice(&table.key("outcome"), outcome_value, &expectable)?;
        let outcome = OutcomeKind::from_name(outcome).expect("choice() returned a listed name");
        let what = match table.get("what") {
            Some(value) => Some(self.string(&table.key("what"), value, "a string")?.to_owned()),
            None => None,
        };
        let within_runs = match table.get("within_runs") {
            Some(value) => {
                Some(self.int(&table.key("within_runs"), value, 1, run.runs).map_err(|error| {
                    ScenarioError {
                        expected: format!("an integer 1..={} (at most run.runs)", run.runs),
                        ..error
                    }
                })?)
            }
            None => None,
        };
        let mut metrics = Vec::new();
        if let Some(value) = table.get("metrics") {
            let bounds = self.table(table.key("metrics"), value, None)?;
            for (key, value) in &bounds.entries {
                let name = key.get_ref().as_ref();
                let parsed =
                    [("_max", Bound::Max), ("_min", Bound::Min)].into_iter().find_map(|(suffix, bound)| {
                        let metric = name.strip_suffix(suffix)?;
                        crate::metrics::MetricName::parse(metric).map(|_| (metric, bound))
                    });
                let Some((metric, bound)) = parsed else {
                    let expected = crate::metrics::expected_metric();
                    return Err(self.error(key.span(), &bounds.key(name), &expected, self.raw(key.span())));
                };
                let bound_value = self.int(&bounds.key(name), value, 0, u64::MAX)?;
                let (line, _) = line_column(self.text.as_bytes(), key.span().start);
                metrics.push(MetricBound { metric: metric.to_owned(), bound, value: bound_value, line });
            }
        }
        Ok(Some(Expect { outcome, what, within_runs, metrics }))
    }
}
