//! The KVM steps' arguments (`vcpu_run`, `guest_accept`, `vcpu_init`, `init_mem_region`,
//! `td_finalize`, `memslot_delete`, `td_destroy`, `td_create`) and the checks across steps:
//! a vCPU a TD has, build steps on TDs a `td_create` builds, memslots that do not overlap.

use std::collections::BTreeMap;

use host_model::guest::GuestProgram;
use seam_model::sept::GPA_LIMIT;

use super::*;

/// A step's TD and vCPU, and where the step is, for the checks across steps.
struct VcpuUse {
    td: u32,
    vcpu: u32,
    /// `vcpu_init`, `init_mem_region`, `td_finalize`: only on a TD a step builds.
    build: bool,
    task: usize,
    step: usize,
}

impl Loader<'_> {
    /// The calls of this file, by name; `None` for another call.
    pub(super) fn kvm_call(
        &self,
        name: &str,
        table: &Table<'_, '_>,
        space: &StepSpace<'_>,
        clock: Clock,
    ) -> Result<Option<Call>> {
        Ok(Some(match name {
            "td_create" => self.td_create_call(table, clock)?,
            "vcpu_init" => Call::VcpuInit { td: self.required_td(table)?, vcpu: self.vcpu_index(table)? },
            "td_finalize" => Call::TdFinalize { td: self.required_td(table)? },
            "td_destroy" => Call::TdDestroy { td: self.required_td(table)? },
            "init_mem_region" => {
                let td = self.required_td(table)?;
                let vcpu = self.vcpu_index(table)?;
                let count = self.count(table, space)?;
                let gpa = self.private_gpa(table, count)?;
                let page = match table.get("page") {
                    Some(value) => Some(self.page(&table.key("page"), value, count, space)?),
                    None => None,
                };
                Call::InitMemRegion { td, vcpu, gpa, count, page }
            }
            "memslot_delete" => {
                let td = self.required_td(table)?;
                let count = self.count(table, space)?;
                Call::MemslotDelete { td, gpa: self.private_gpa(table, count)?, count }
            }
            "vcpu_run" | "guest_accept" => self.vcpu_run_call(name, table, space, clock)?,
            _ => return Ok(None),
        }))
    }

    /// `td_create`: the TD, its vCPUs, how long building it takes, and which ioctls it makes.
    fn td_create_call(&self, table: &Table<'_, '_>, clock: Clock) -> Result<Call> {
        let td = self.required_td(table)?;
        let vcpus = match table.get("vcpus") {
            Some(value) => self.int(&table.key("vcpus"), value, 1, max::VCPUS)? as u32,
            None => 1,
        };
        let build_cycles = match table.get("build") {
            Some(value) => self.bounded_time(&table.key("build"), value, clock, 0, TIME_EXPECTED)?,
            None => 0,
        };
        let flag = |name: &str| match table.get(name) {
            Some(value) => self.boolean(&table.key(name), value),
            None => Ok(true),
        };
        let init_vcpus = flag("init_vcpus")?;
        let finalize = flag("finalize")?;
        Ok(Call::TdCreate { td, vcpus, build_cycles, init_vcpus, finalize })
    }

    /// `vcpu`: a vCPU index below [`max::VCPUS`] (default 0).
    fn vcpu_index(&self, table: &Table<'_, '_>) -> Result<u32> {
        match table.get("vcpu") {
            Some(value) => Ok(self.int(&table.key("vcpu"), value, 0, max::VCPUS - 1)? as u32),
            None => Ok(0),
        }
    }

    /// A 4K-aligned private GPA with room for `count` pages below the shared bit.
    fn private_gpa(&self, table: &Table<'_, '_>, count: u32) -> Result<u64> {
        let gpa = self.gpa(table, count)?;
        if gpa + u64::from(count) * PAGE_SIZE > GPA_LIMIT {
            let expected =
                format!("a private guest physical address: the pages below {GPA_LIMIT:#x} (the shared bit)");
            return Err(self.invalid(table.get("gpa"), &table.key("gpa"), &expected));
        }
        Ok(gpa)
    }

    /// `vcpu_run` and `guest_accept`: the vCPU, the guest's program, and how long it runs.
    fn vcpu_run_call(
        &self,
        name: &str,
        table: &Table<'_, '_>,
        space: &StepSpace<'_>,
        clock: Clock,
    ) -> Result<Call> {
        let td = self.required_td(table)?;
        let vcpu = self.vcpu_index(table)?;
        let accept_step = name == "guest_accept";
        let pages_max = space.memory_bytes / PAGE_SIZE;
        let count = match table.get("count") {
            Some(value) => {
                let expected = format!("an integer 0..={pages_max} (at most the 4K pages of machine.memory)");
                self.int(&table.key("count"), value, 0, pages_max)
                    .map_err(|error| ScenarioError { expected, ..error })? as u32
            }
            None => u32::from(accept_step),
        };
        let gpa = match table.get("gpa") {
            Some(_) => self.private_gpa(table, count)?,
            None => 0,
        };
        let flag = |name: &str, default: bool| match table.get(name) {
            Some(value) => self.boolean(&table.key(name), value),
            None => Ok(default),
        };
        let accept = accept_step || flag("accept", true)?;
        let hostile = flag("hostile", false)?;
        let interval_cycles = match table.get("interval") {
            Some(value) => self.bounded_time(&table.key("interval"), value, clock, 0, TIME_EXPECTED)?,
            None => 0,
        };
        let rounds = match table.get("rounds") {
            Some(value) => self.int(&table.key("rounds"), value, 1, max::REPEAT)? as u32,
            None => 1,
        };
        let run_cycles = match table.get("for") {
            Some(value) => Some(self.bounded_time(&table.key("for"), value, clock, 1, TIME_EXPECTED)?),
            None => None,
        };
        if hostile && (run_cycles.is_none() || count == 0) {
            let expected =
                "with hostile = true, a `for` (a hostile guest never stops on its own) and count >= 1";
            return Err(self.invalid(table.get("hostile"), &table.key("hostile"), expected));
        }
        let guest = GuestProgram { gpa, pages: count, accept, interval_cycles, rounds, hostile };
        Ok(Call::VcpuRun { td, vcpu, guest, run_cycles, accept_step })
    }

    /// The checks across steps: every vCPU a step names exists (below `td_create`'s
    /// `vcpus` for a TD a step builds), the build steps name TDs a step builds, and the
    /// memslots `memslot_delete` steps name on a TD are equal or apart.
    pub(super) fn check_kvm_steps(&self, tasks: &[Task], task_values: &[&Value<'_>]) -> Result<()> {
        let mut created: BTreeMap<u32, u32> = BTreeMap::new();
        let mut uses = Vec::new();
        let mut slots: BTreeMap<u32, Vec<(u64, u64, usize, usize)>> = BTreeMap::new();
        for (task_index, task) in tasks.iter().enumerate() {
            for (step_index, step) in task.steps.iter().enumerate() {
                let at = (task_index, step_index);
                match step.call {
                    Call::TdCreate { td, vcpus, .. } => {
                        created.entry(td).or_insert(vcpus);
                    }
                    Call::VcpuRun { td, vcpu, .. } => {
                        uses.push(VcpuUse { td, vcpu, build: false, task: at.0, step: at.1 })
                    }
                    Call::VcpuInit { td, vcpu } | Call::InitMemRegion { td, vcpu, .. } => {
                        uses.push(VcpuUse { td, vcpu, build: true, task: at.0, step: at.1 })
                    }
                    Call::TdFinalize { td } => {
                        uses.push(VcpuUse { td, vcpu: 0, build: true, task: at.0, step: at.1 })
                    }
                    Call::MemslotDelete { td, gpa, count } => {
                        slots.entry(td).or_default().push((gpa, u64::from(count), at.0, at.1));
                    }
                    _ => {}
                }
            }
        }
        for used in &uses {
            let value = |key| self.step_value(task_values[used.task], used.step, key);
            let key = format!("task[{}].steps[{}]", used.task, used.step);
            match created.get(&used.td) {
                Some(&vcpus) if used.vcpu >= vcpus => {
                    let expected =
                        format!("a vCPU below the vcpus ({vcpus}) of the td_create step of TD {}", used.td);
                    return Err(self.invalid(value("vcpu"), &format!("{key}.vcpu"), &expected));
                }
                None if used.build => {
                    let expected = format!(
                        "a TD a td_create step builds (TD {} exists from the start, built and runnable)",
                        used.td
                    );
                    return Err(self.invalid(value("td"), &format!("{key}.td"), &expected));
                }
                Some(_) | None => {}
            }
        }
        for ranges in slots.values() {
            for (index, &(gpa, pages, task, step)) in ranges.iter().enumerate() {
                let overlaps = ranges[..index].iter().any(|&(other, other_pages, _, _)| {
                    (gpa, pages) != (other, other_pages)
                        && gpa < other + other_pages * PAGE_SIZE
                        && other < gpa + pages * PAGE_SIZE
                });
                if overlaps {
                    let value = self.step_value(task_values[task], step, "gpa");
                    let expected = "a memslot that another memslot_delete of the TD names the same or not at all (memslots do not overlap)";
                    return Err(self.invalid(value, &format!("task[{task}].steps[{step}].gpa"), expected));
                }
            }
        }
        Ok(())
    }

    /// The value of `key` in step `step` of the task table `task` (the step itself when it
    /// has no such key), to point an error at.
    fn step_value<'v, 'i>(&self, task: &'v Value<'i>, step: usize, key: &str) -> Option<&'v Value<'i>> {
        let DeValue::Table(table) = task.get_ref() else { return None };
        let steps = table.iter().find(|(name, _)| name.get_ref() == "steps").map(|(_, value)| value)?;
        let DeValue::Array(items) = steps.get_ref() else { return None };
        let step = items.get(step)?;
        let DeValue::Table(arguments) = step.get_ref() else { return Some(step) };
        Some(arguments.iter().find(|(name, _)| name.get_ref() == key).map_or(step, |(_, value)| value))
    }
}
