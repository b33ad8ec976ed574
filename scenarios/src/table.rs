//! The interleaving as the two-column `CPU 0 | CPU 1` table kernel developers paste into
//! mail: one column per CPU that did something, one row per event, in time order.
//!
//! A passing run shows whole. A failing run shows only what the finding is about, under a
//! line that says what was kept: the deadlocked CPUs from the steps that took the named
//! locks, the step that WARNed with what overlapped it, or the CPUs an invariant names.

use std::collections::{BTreeMap, BTreeSet};

use host_model::kernel::cpu::mark;
use sim_core::{CpuId, Finding, Mode, OutcomeKind, Span, Subject, TaskId, TraceEvent, TraceKind};

use crate::run::RunResult;

const CELL_WIDTH_MAX: usize = 64;

/// What an event shows in its CPU's column, or `None` for events tables leave out
/// (task start/end, page allocations).
fn cell(result: &RunResult, event: &TraceEvent, held: &mut BTreeMap<(u32, u32), Mode>) -> Option<String> {
    let name_of = |resource: sim_core::ResourceId| &result.resources[resource.0 as usize];
    let verb = |class: &str, mode: Mode, unlock: bool| -> &'static str {
        match (class, mode, unlock) {
            ("rwlock", Mode::Shared, false) => "read_lock",
            ("rwlock", Mode::Shared, true) => "read_unlock",
            ("rwlock", Mode::Exclusive, false) => "write_lock",
            ("rwlock", Mode::Exclusive, true) => "write_unlock",
            ("mutex", _, false) => "mutex_lock",
            ("mutex", _, true) => "mutex_unlock",
            ("percpu_rwsem", Mode::Shared, false) => "cpus_read_lock",
            ("percpu_rwsem", Mode::Shared, true) => "cpus_read_unlock",
            ("percpu_rwsem", Mode::Exclusive, false) => "cpus_write_lock",
            ("percpu_rwsem", Mode::Exclusive, true) => "cpus_write_unlock",
            ("rwsem", Mode::Shared, false) => "down_read",
            ("rwsem", Mode::Shared, true) => "up_read",
            ("rwsem", Mode::Exclusive, false) => "down_write",
            ("rwsem", Mode::Exclusive, true) => "up_write",
            ("raw_spinlock", _, false) => "raw_spin_lock",
            ("raw_spinlock", _, true) => "raw_spin_unlock",
            (_, _, false) => "spin_lock",
            (_, _, true) => "spin_unlock",
        }
    };
    Some(match &event.kind {
        TraceKind::TaskStart | TraceKind::TaskEnd => return None,
        TraceKind::Wait { resource, mode } => {
            let (name, class, _) = name_of(*resource);
            let waits = match class.as_str() {
                "mutex" | "rwsem" | "percpu_rwsem" => "blocks",
                _ => "spins",
            };
            format!("{}({name}) ... {waits}", verb(class, *mode, false))
        }
        TraceKind::Acquire { resource, mode, waited_cycles } => {
            held.insert((resource.0, event.task.0), *mode);
            let (name, class, _) = name_of(*resource);
            if *waited_cycles > 0 {
                format!("{}({name}) got it after {waited_cycles} cycles", verb(class, *mode, false))
            } else {
                format!("{}({name})", verb(class, *mode, false))
            }
        }
        TraceKind::Release { resource } => {
            let mode = held.remove(&(resource.0, event.task.0)).unwrap_or(Mode::Exclusive);
            let (name, class, _) = name_of(*resource);
            format!("{}({name})", verb(class, mode, true))
        }
        TraceKind::Mark { code, .. } if *code == mark::PAGE => return None,
        TraceKind::Mark { code, span, text, .. } => match (*code, span) {
            (mark::STEP, sim_core::Span::Begin) => format!("== {text}"),
            (mark::STEP, _) => format!("== {text}"),
            (mark::SEAMCALL, sim_core::Span::Begin) => format!("SEAMCALL {text}"),
            (mark::SEAMCALL, _) => format!("  -> {text}"),
            _ => text.to_string(),
        },
    })
}

/// Renders the run's trace (it must have been recorded) as the table: the whole run when
/// it passed, otherwise the part of it the finding is about under a line naming that part.
pub fn render(result: &RunResult) -> String {
    if result.outcome.kind == OutcomeKind::Pass {
        return render_whole(result);
    }
    let focus = focus(result);
    let rows = rows(result, &focus.keep);
    let cpus: Vec<String> = columns(&rows).iter().map(|cpu| cpu.0.to_string()).collect();
    format!("{}: CPUs {}; {}\n{}", result.outcome.kind, cpus.join(", "), focus.shown, render_rows(rows))
}

/// Renders the whole run, whatever its outcome.
pub fn render_whole(result: &RunResult) -> String {
    render_rows(rows(result, &vec![true; result.trace.len()]))
}

/// The events a failing run's table keeps (`keep[i]` for `trace[i]`), and what they are.
struct Focus {
    keep: Vec<bool>,
    shown: String,
}

fn focus(result: &RunResult) -> Focus {
    let involved: BTreeSet<TaskId> = result.outcome.tasks().into_iter().collect();
    let focused = match result.outcome.kind {
        OutcomeKind::Deadlock => focus_deadlock(result, &involved),
        OutcomeKind::Warn => focus_warn(result, &involved),
        _ => None,
    };
    focused.unwrap_or_else(|| focus_cpus(result, &involved))
}

/// Every event of the CPUs the finding names: those of its tasks, and those that touched a
/// lock or a marked subject (a range's refcount) the finding names; all when it names none.
fn focus_cpus(result: &RunResult, involved: &BTreeSet<TaskId>) -> Focus {
    let mut cpus: BTreeSet<CpuId> = involved.iter().map(|task| result.task_cpus[task.0 as usize]).collect();
    let named = named_resources(result);
    let subjects = match &result.outcome.finding {
        Finding::Report { subjects, .. } => subjects.clone(),
        _ => Vec::new(),
    };
    let touched = result.trace.iter().filter(|event| match &event.kind {
        TraceKind::Wait { resource, .. }
        | TraceKind::Acquire { resource, .. }
        | TraceKind::Release { resource } => named.contains(&resource.0),
        TraceKind::Mark { code, a, .. } => subjects.contains(&Subject::Marked(*code, *a)),
        _ => false,
    });
    cpus.extend(touched.map(|event| event.cpu));
    let keep = result.trace.iter().map(|event| cpus.is_empty() || cpus.contains(&event.cpu)).collect();
    Focus { keep, shown: "whole run".to_string() }
}

/// The deadlocked tasks' CPUs from the first step of theirs still running when one of them
/// first waited for or took a lock the cycle names; their steps that ended before are left out.
fn focus_deadlock(result: &RunResult, involved: &BTreeSet<TaskId>) -> Option<Focus> {
    let named = named_resources(result);
    let first_named = result.trace.iter().position(|event| {
        involved.contains(&event.task)
            && matches!(&event.kind,
                TraceKind::Wait { resource, .. } | TraceKind::Acquire { resource, .. }
                    if named.contains(&resource.0))
    })?;
    let steps: Vec<MarkSpan> = mark_spans(&result.trace)
        .into_iter()
        .filter(|span| span.code == mark::STEP && involved.contains(&span.task))
        .collect();
    let is_dropped = |span: &MarkSpan| span.end.is_some_and(|end| end < first_named);
    let start =
        steps.iter().filter(|span| !is_dropped(span)).map(|span| span.begin).min().unwrap_or(first_named);
    let start = start.min(first_named);
    let cpus: BTreeSet<CpuId> = involved.iter().map(|task| result.task_cpus[task.0 as usize]).collect();
    let mut keep: Vec<bool> = result
        .trace
        .iter()
        .enumerate()
        .map(|(index, event)| index >= start && cpus.contains(&event.cpu))
        .collect();
    for span in steps.iter().filter(|span| is_dropped(span)) {
        for kept in &mut keep[span.begin..=span.end.expect("a dropped step ended")] {
            *kept = false;
        }
    }
    let mut lock_names: Vec<&str> =
        named.iter().map(|id| result.resources[*id as usize].0.as_str()).collect();
    lock_names.sort();
    let shown = format!(
        "steps from cycle {} taking {} (first at cycle {})",
        result.trace[start].cycle.0,
        lock_names.join(", "),
        result.trace[first_named].cycle.0
    );
    Some(Focus { keep, shown })
}

/// The warning task's steps that hold a WARN, and what the other tasks did meanwhile:
/// their events in that time, and the steps and SEAMCALLs they were already inside.
fn focus_warn(result: &RunResult, involved: &BTreeSet<TaskId>) -> Option<Focus> {
    let trace = &result.trace;
    let warns: Vec<usize> = (0..trace.len())
        .filter(|&index| {
            involved.contains(&trace[index].task)
                && matches!(trace[index].kind, TraceKind::Mark { code: mark::WARN, .. })
        })
        .collect();
    let spans = mark_spans(trace);
    let warning_steps: Vec<&MarkSpan> = spans
        .iter()
        .filter(|span| span.code == mark::STEP && involved.contains(&span.task))
        .filter(|span| warns.iter().any(|&warn| span.begin < warn && span.end.is_none_or(|end| warn < end)))
        .collect();
    let begin = warning_steps.iter().map(|span| span.begin).min()?;
    let end = warning_steps.iter().map(|span| span.end.unwrap_or(trace.len() - 1)).max()?;
    let (begin_cycle, end_cycle) = (trace[begin].cycle, trace[end].cycle.max(result.end));
    let mut keep: Vec<bool> = trace
        .iter()
        .enumerate()
        .map(|(index, event)| {
            if involved.contains(&event.task) {
                (begin..=end).contains(&index)
            } else {
                (begin_cycle..=end_cycle).contains(&event.cycle)
            }
        })
        .collect();
    let already_inside = spans.iter().filter(|span| {
        !involved.contains(&span.task)
            && trace[span.begin].cycle < begin_cycle
            && span.end.is_none_or(|end| trace[end].cycle >= begin_cycle)
    });
    for span in already_inside {
        keep[span.begin] = true;
    }
    let shown =
        format!("the step with the WARN, cycles {}..{}, and what overlaps it", begin_cycle.0, end_cycle.0);
    Some(Focus { keep, shown })
}

/// A Begin mark and its End (`None`: still open when the run ended), by trace index.
struct MarkSpan {
    task: TaskId,
    code: u32,
    begin: usize,
    end: Option<usize>,
}

/// Pairs each task's Begin and End marks, innermost first as they nest.
fn mark_spans(trace: &[TraceEvent]) -> Vec<MarkSpan> {
    let mut spans = Vec::new();
    let mut open: BTreeMap<TaskId, Vec<usize>> = BTreeMap::new();
    for (index, event) in trace.iter().enumerate() {
        let TraceKind::Mark { span, code, .. } = &event.kind else { continue };
        match span {
            Span::Begin => {
                open.entry(event.task).or_default().push(spans.len());
                spans.push(MarkSpan { task: event.task, code: *code, begin: index, end: None });
            }
            Span::End => {
                if let Some(opened) = open.get_mut(&event.task).and_then(Vec::pop) {
                    spans[opened].end = Some(index);
                }
            }
            Span::Instant => {}
        }
    }
    spans
}

/// Ids of the locks the finding names.
fn named_resources(result: &RunResult) -> BTreeSet<u32> {
    result.outcome.resources().iter().map(|resource| resource.0).collect()
}

fn rows(result: &RunResult, keep: &[bool]) -> Vec<(u64, CpuId, String)> {
    let mut held = BTreeMap::new();
    let mut rows: Vec<(u64, CpuId, String)> = Vec::new();
    for (event, kept) in result.trace.iter().zip(keep) {
        // Every event goes through `cell`, so a release shows its mode even when its
        // acquire was left out.
        if let Some(text) = cell(result, event, &mut held)
            && *kept
        {
            rows.push((event.cycle.0, event.cpu, text));
        }
    }
    rows
}

fn columns(rows: &[(u64, CpuId, String)]) -> Vec<CpuId> {
    let mut columns: Vec<CpuId> = rows.iter().map(|(_, cpu, _)| *cpu).collect();
    columns.sort();
    columns.dedup();
    columns
}

fn render_rows(rows: Vec<(u64, CpuId, String)>) -> String {
    let columns = columns(&rows);
    let mut widths: Vec<usize> = columns.iter().map(|cpu| cpu.to_string().len()).collect();
    for (_, cpu, text) in &rows {
        let column = columns.binary_search(cpu).expect("column of a row");
        widths[column] = widths[column].max(text.chars().count().min(CELL_WIDTH_MAX));
    }
    let cycle_width = rows.iter().map(|(cycle, _, _)| cycle.to_string().len()).max().unwrap_or(0).max(5);
    let line = |out: &mut String, cycle: &str, cells: &[String]| {
        let mut text = format!("{cycle:>cycle_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            text += &format!(" | {cell:<width$}");
        }
        *out += text.trim_end();
        out.push('\n');
    };
    let mut out = String::new();
    let header: Vec<String> = columns.iter().map(|cpu| cpu.to_string()).collect();
    line(&mut out, "cycle", &header);
    out += &"-".repeat(cycle_width);
    for width in &widths {
        out += &format!("-+-{}", "-".repeat(*width));
    }
    out.push('\n');
    for (cycle, cpu, text) in rows {
        let mut text = text;
        if text.chars().count() > CELL_WIDTH_MAX {
            text = text.chars().take(CELL_WIDTH_MAX - 3).collect::<String>() + "...";
        }
        let cells: Vec<String> =
            columns.iter().map(|column| if *column == cpu { text.clone() } else { String::new() }).collect();
        line(&mut out, &cycle.to_string(), &cells);
    }
    out
}
