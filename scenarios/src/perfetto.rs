//! The run as Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) and
//! chrome://tracing open: `tdxsim run FILE --trace run.json`.
//!
//! A process per CPU (`pid` = CPU number). In it, track 0 holds the task's steps and
//! SEAMCALLs as nested `B`/`E` slices, with atomics and WARNs as instants; each lock gets a
//! track of its own (`tid` = 1 + resource id), holding `X` slices for its holds and waits,
//! because holds do not nest (rw[A] taken, rw[B] taken, rw[A] released first) and slices on
//! one track must. What is still open when the run ends (a deadlock's holds and waits, the
//! steps around them) ends at the run's last cycle with `args.unfinished = true`.

use std::collections::BTreeMap;

use host_model::kernel::cpu::mark;
use seam_model::TdxStatus;
use serde_json::{Value, json};
use sim_core::{Clock, CpuId, Mode, OutcomeKind, Span, TaskId, TraceEvent, TraceKind};

use crate::run::RunResult;
use crate::schema::Scenario;

/// The run's trace (it must have been recorded) as `{"traceEvents": [...], "displayTimeUnit": "ns"}`.
pub fn chrome_trace(result: &RunResult, scenario: &Scenario) -> Value {
    let mut writer = Writer::new(result, scenario);
    for event in &result.trace {
        writer.event(event);
    }
    writer.finish()
}

/// A lock hold or wait still open: where it began and what the slice's args will say.
struct Open {
    cycle: u64,
    cpu: CpuId,
    mode: Mode,
    waited_cycles: u64,
}

/// A `B` slice still open on a task's track, so its `E` lands on the same track.
struct OpenSlice {
    pid: u32,
    tid: u32,
}

struct Writer<'a> {
    result: &'a RunResult,
    clock: Clock,
    end_cycle: u64,
    /// (cycle the event sorts at, event); sorted stably before output.
    events: Vec<(u64, Value)>,
    /// Track names by (pid, tid), for the `thread_name` metadata.
    tracks: BTreeMap<(u32, u32), String>,
    /// By (task, resource).
    waits: BTreeMap<(u32, u32), Open>,
    /// By (task, resource): a stack, in case a task takes a shared lock twice.
    holds: BTreeMap<(u32, u32), Vec<Open>>,
    /// By task: its open `B` slices, innermost last.
    slices: BTreeMap<u32, Vec<OpenSlice>>,
}

impl<'a> Writer<'a> {
    fn new(result: &'a RunResult, scenario: &Scenario) -> Writer<'a> {
        let last_cycle = result.trace.last().map_or(0, |event| event.cycle.0);
        Writer {
            result,
            clock: scenario.clock(),
            end_cycle: result.end.0.max(last_cycle),
            events: Vec::new(),
            tracks: BTreeMap::new(),
            waits: BTreeMap::new(),
            holds: BTreeMap::new(),
            slices: BTreeMap::new(),
        }
    }

    /// Microseconds, the unit of `ts` and `dur`.
    fn ts(&self, cycles: u64) -> f64 {
        self.clock.cycles_to_ns(cycles) / 1000.0
    }

    /// Track 0 for the first task of a CPU; another task on the same CPU gets a track of
    /// its own after the lock tracks, as its steps interleave with the first task's.
    fn task_tid(&self, task: TaskId) -> u32 {
        let cpus = &self.result.task_cpus;
        let index = task.0 as usize;
        let first_on_its_cpu = cpus.get(index).is_none_or(|cpu| !cpus[..index].contains(cpu));
        if first_on_its_cpu { 0 } else { 1 + self.result.resources.len() as u32 + task.0 }
    }

    fn lock_track(&mut self, cpu: CpuId, resource: u32) -> (u32, u32) {
        let track = (cpu.0, 1 + resource);
        self.tracks.entry(track).or_insert_with(|| self.result.resources[resource as usize].0.to_string());
        track
    }

    fn task_track(&mut self, cpu: CpuId, task: TaskId) -> (u32, u32) {
        let track = (cpu.0, self.task_tid(task));
        self.tracks.entry(track).or_insert_with(|| format!("task {}: steps and SEAMCALLs", task.0));
        track
    }

    fn event(&mut self, event: &TraceEvent) {
        let cycle = event.cycle.0;
        let key = |resource: sim_core::ResourceId| (event.task.0, resource.0);
        match &event.kind {
            TraceKind::TaskStart | TraceKind::TaskEnd => {}
            TraceKind::Wait { resource, mode } => {
                let open = Open { cycle, cpu: event.cpu, mode: *mode, waited_cycles: 0 };
                self.waits.insert(key(*resource), open);
            }
            TraceKind::Acquire { resource, mode, waited_cycles } => {
                if let Some(wait) = self.waits.remove(&key(*resource)) {
                    let open = Open { waited_cycles: *waited_cycles, ..wait };
                    self.lock_slice("wait", resource.0, &open, cycle, false);
                }
                let open = Open { cycle, cpu: event.cpu, mode: *mode, waited_cycles: *waited_cycles };
                self.holds.entry(key(*resource)).or_default().push(open);
            }
            TraceKind::Release { resource } => {
                if let Some(hold) = self.holds.get_mut(&key(*resource)).and_then(Vec::pop) {
                    self.lock_slice("lock", resource.0, &hold, cycle, false);
                }
            }
            TraceKind::Mark { .. } => self.mark(event),
        }
    }

    /// A hold (`category` "lock") or a wait ("wait") of `resource` as an `X` slice on the
    /// lock's track of the CPU it began on.
    fn lock_slice(&mut self, category: &str, resource: u32, open: &Open, end_cycle: u64, unfinished: bool) {
        let (pid, tid) = self.lock_track(open.cpu, resource);
        let lock_name = &self.result.resources[resource as usize].0;
        let name = if category == "wait" { format!("wait {lock_name}") } else { lock_name.to_string() };
        let mut args = json!({
            "lock": lock_name,
            "mode": match open.mode { Mode::Shared => "shared", Mode::Exclusive => "exclusive" },
            "waited_cycles": open.waited_cycles,
        });
        if unfinished {
            args["unfinished"] = json!(true);
        }
        let event = json!({
            "ph": "X", "cat": category, "name": name, "pid": pid, "tid": tid,
            "ts": self.ts(open.cycle), "dur": self.ts(end_cycle - open.cycle), "args": args,
        });
        self.events.push((open.cycle, event));
    }

    /// A step or SEAMCALL opening or closing on the task's track, or an instant on it.
    fn mark(&mut self, event: &TraceEvent) {
        let TraceKind::Mark { span, code, b, text, .. } = &event.kind else { return };
        let (cpu, task, cycle, code) = (event.cpu, event.task, event.cycle.0, *code);
        let category = match code {
            mark::STEP => "step",
            mark::SEAMCALL => "seamcall",
            mark::ATOMIC => "atomic",
            mark::WARN => "warn",
            mark::PAGE => "page",
            _ => "mark",
        };
        let ts = self.ts(cycle);
        match span {
            Span::Begin => {
                let (pid, tid) = self.task_track(cpu, task);
                self.slices.entry(task.0).or_default().push(OpenSlice { pid, tid });
                let event =
                    json!({ "ph": "B", "cat": category, "name": text, "pid": pid, "tid": tid, "ts": ts });
                self.events.push((cycle, event));
            }
            Span::End => {
                let Some(OpenSlice { pid, tid }) = self.slices.get_mut(&task.0).and_then(Vec::pop) else {
                    return;
                };
                let mut args = json!({ "result": text });
                if code == mark::SEAMCALL {
                    // The End mark of a SEAMCALL carries the status in `b`.
                    args["status"] = json!(TdxStatus(*b).to_string());
                    args["status_raw"] = json!(format!("{b:#018x}"));
                }
                let event = json!({ "ph": "E", "pid": pid, "tid": tid, "ts": ts, "args": args });
                self.events.push((cycle, event));
            }
            Span::Instant => {
                let (pid, tid) = self.task_track(cpu, task);
                let event = json!({
                    "ph": "i", "s": "t", "cat": category, "name": text, "pid": pid, "tid": tid, "ts": ts,
                });
                self.events.push((cycle, event));
            }
        }
    }

    /// Ends what is still open at the run's end, adds the outcome and the track names.
    fn finish(mut self) -> Value {
        let end_cycle = self.end_cycle;
        for ((_, resource), open) in std::mem::take(&mut self.waits) {
            self.lock_slice("wait", resource, &open, end_cycle, true);
        }
        for ((_, resource), stack) in std::mem::take(&mut self.holds) {
            for open in stack {
                self.lock_slice("lock", resource, &open, end_cycle, true);
            }
        }
        let ts = self.ts(end_cycle);
        for (_, stack) in std::mem::take(&mut self.slices) {
            for OpenSlice { pid, tid } in stack.into_iter().rev() {
                let event =
                    json!({ "ph": "E", "pid": pid, "tid": tid, "ts": ts, "args": { "unfinished": true } });
                self.events.push((end_cycle, event));
            }
        }
        let outcome = &self.result.outcome;
        if outcome.kind != OutcomeKind::Pass {
            let event = json!({
                "ph": "i", "s": "g", "cat": "outcome", "name": outcome.kind.name(), "pid": 0, "tid": 0,
                "ts": ts, "args": { "what": outcome.what },
            });
            self.events.push((end_cycle, event));
        }
        // Stable: B/E of one track keep their order, X slices move to where they begin.
        self.events.sort_by_key(|(cycle, _)| *cycle);
        let mut trace_events = self.metadata();
        trace_events.extend(self.events.into_iter().map(|(_, event)| event));
        json!({ "traceEvents": trace_events, "displayTimeUnit": "ns" })
    }

    /// A `process_name` "CPU n" per CPU that did something, a `thread_name` per track.
    fn metadata(&self) -> Vec<Value> {
        let mut cpus: Vec<u32> = self.result.trace.iter().map(|event| event.cpu.0).collect();
        cpus.sort();
        cpus.dedup();
        let mut metadata = Vec::new();
        for cpu in cpus {
            metadata.push(json!({ "ph": "M", "name": "process_name", "pid": cpu, "args": { "name": format!("CPU {cpu}") } }));
            metadata.push(
                json!({ "ph": "M", "name": "process_sort_index", "pid": cpu, "args": { "sort_index": cpu } }),
            );
        }
        for ((pid, tid), name) in &self.tracks {
            metadata.push(
                json!({ "ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": { "name": name } }),
            );
            metadata.push(json!({ "ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": { "sort_index": tid } }));
        }
        metadata
    }
}
