//! The interleaving as the two-column `CPU 0 | CPU 1` table kernel developers paste into
//! mail: one column per CPU that did something, one row per event, in time order.
//!
//! A passing run shows whole. A failing run shows only what the finding is about, under a
//! line that says what was kept: the deadlocked CPUs from the steps that took the named
//! locks, the step that WARNed with what overlapped it, or the CPUs an invariant names; a
//! task stuck on a lock brings in the CPU and the step that hold it.
//!
//! Made to be pasted into mail as it is: nothing is cut, a long cell wraps inside its column,
//! the table fits `TableOptions::width`, named pages show their address where they first
//! appear, and one line under the table says what `==`, `->` and `...` mean. Locks are taken
//! with the calls the kernel names (`raw_spin_lock_irqsave`, `down_write`, `cpus_read_lock`),
//! and a waiter "spins" on a spinning lock and "blocks" on a sleeping one.

use std::collections::{BTreeMap, BTreeSet};

use host_model::kernel::cpu::mark;
use indexmap::IndexMap;
use sim_core::{
    Blocked, CpuId, Finding, Mode, OutcomeKind, ResourceId, Span, Subject, TaskId, TraceEvent, TraceKind,
    WaitsFor,
};

use crate::run::RunResult;

/// How wide a table is when nothing says otherwise (`--width`, a terminal).
pub const DEFAULT_WIDTH: usize = 100;
/// Narrowest a CPU column gets; a table that cannot fit its width with columns this wide is
/// wider than asked rather than unreadable.
const COLUMN_WIDTH_MIN: usize = 16;

/// How to render.
#[derive(Clone, Copy, Debug)]
pub struct TableOptions<'a> {
    /// Columns the whole table may take.
    pub width: usize,
    /// The scenario's named pages: each name gets its address where it first appears.
    pub pages: Option<&'a IndexMap<String, u64>>,
}

impl Default for TableOptions<'_> {
    fn default() -> Self {
        TableOptions { width: DEFAULT_WIDTH, pages: None }
    }
}

/// The line under every table.
pub const LEGEND: &str =
    "== scenario step (at its end: what it returned)   -> SEAMCALL status   ... waiting: spins or blocks";

/// What a waiter on a lock of `class` does: sleeping locks block, spinning ones spin.
fn waits_by(class: &str) -> &'static str {
    match class {
        "mutex" | "rwsem" | "percpu_rwsem" | "completion" => "blocks",
        _ => "spins",
    }
}

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
            ("raw_spinlock_irqsave", _, false) => "raw_spin_lock_irqsave",
            ("raw_spinlock_irqsave", _, true) => "raw_spin_unlock_irqrestore",
            (_, _, false) => "spin_lock",
            (_, _, true) => "spin_unlock",
        }
    };
    Some(match &event.kind {
        TraceKind::TaskStart | TraceKind::TaskEnd => return None,
        TraceKind::Wait { resource, mode } => {
            let (name, class, _) = name_of(*resource);
            format!("{}({name}) ... {}", verb(class, *mode, false), waits_by(class))
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

/// Renders the run's trace (it must have been recorded) as the table, [`DEFAULT_WIDTH`] wide
/// and without page addresses; see [`render_with`].
pub fn render(result: &RunResult) -> String {
    render_with(result, &TableOptions::default())
}

/// Renders the run's trace (it must have been recorded) as the table: the whole run when
/// it passed, otherwise the part of it the finding is about under a line naming that part;
/// the legend last.
pub fn render_with(result: &RunResult, options: &TableOptions<'_>) -> String {
    if result.outcome.kind == OutcomeKind::Pass {
        return render_whole_with(result, options);
    }
    let focus = focus(result);
    let rows = rows(result, &focus.keep, options);
    let cpus: Vec<String> = columns(&rows).iter().map(|cpu| cpu.0.to_string()).collect();
    let header = format!("{}: CPUs {}; {}", result.outcome.kind, cpus.join(", "), focus.shown);
    let mut out = String::new();
    for line in wrap(&header, options.width.max(COLUMN_WIDTH_MIN)) {
        out += &line;
        out.push('\n');
    }
    out + &render_rows(rows, options.width)
}

/// Renders the whole run, whatever its outcome.
pub fn render_whole(result: &RunResult) -> String {
    render_whole_with(result, &TableOptions::default())
}

fn render_whole_with(result: &RunResult, options: &TableOptions<'_>) -> String {
    render_rows(rows(result, &vec![true; result.trace.len()], options), options.width)
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
        // A liveness report a model made (a retry loop past its bound) reads like a WARN:
        // the step it was made in, and what overlapped it.
        OutcomeKind::Livelock if matches!(result.outcome.finding, sim_core::Finding::Report { .. }) => {
            focus_warn(result, &involved)
        }
        _ => None,
    };
    let mut focus = focused.unwrap_or_else(|| focus_cpus(result, &involved));
    if result.outcome.kind != OutcomeKind::Deadlock {
        add_holders(result, &mut focus);
    }
    focus
}

/// A lock a task of the finding waits for, and who holds it.
struct Stuck {
    waiter: TaskId,
    resource: ResourceId,
    mode: Mode,
    /// (holder, the trace index of its acquire) for each blocker that holds the lock.
    holders: Vec<(TaskId, usize)>,
}

/// The finding's tasks that wait for a lock (typed: `Finding::NoProgress` and
/// `Finding::Stuck`; a wait cycle names both sides itself), with the blockers that hold it,
/// found in the trace by their unreleased acquire.
fn stuck_on_locks(result: &RunResult) -> Vec<Stuck> {
    let blocked: Vec<&Blocked> = match &result.outcome.finding {
        Finding::NoProgress { blocked, .. } => vec![blocked],
        Finding::Stuck(blocked) => blocked.iter().collect(),
        _ => Vec::new(),
    };
    blocked
        .into_iter()
        .filter_map(|blocked| match &blocked.waits {
            Some(WaitsFor::Resource { resource, mode, blockers, .. }) => Some(Stuck {
                waiter: blocked.task,
                resource: *resource,
                mode: *mode,
                holders: blockers
                    .iter()
                    .filter_map(|blocker| Some((*blocker, held_since(result, *blocker, *resource)?)))
                    .collect(),
            }),
            _ => None,
        })
        .collect()
}

/// The trace index of `task`'s acquire of `resource` that it still holds at the end, if any.
fn held_since(result: &RunResult, task: TaskId, resource: ResourceId) -> Option<usize> {
    let mut held = Vec::new();
    for (index, event) in result.trace.iter().enumerate().filter(|(_, event)| event.task == task) {
        match &event.kind {
            TraceKind::Acquire { resource: taken, .. } if *taken == resource => held.push(index),
            TraceKind::Release { resource: released } if *released == resource => {
                held.pop();
            }
            _ => {}
        }
    }
    held.first().copied()
}

/// Brings the CPUs that hold what a stuck task waits for into the table, from the step in
/// which they took it, and says so in the header.
fn add_holders(result: &RunResult, focus: &mut Focus) {
    let spans = mark_spans(&result.trace);
    for stuck in stuck_on_locks(result) {
        let (name, _, _) = &result.resources[stuck.resource.0 as usize];
        let waiter_cpu = result.task_cpus[stuck.waiter.0 as usize];
        if stuck.holders.is_empty() {
            focus.shown += &format!("; {name} ({}) that {waiter_cpu} waits for is free", stuck.mode.name());
            continue;
        }
        let mut held_by = Vec::new();
        for (holder, acquired) in &stuck.holders {
            let holder_cpu = result.task_cpus[holder.0 as usize];
            // The holder's outermost step still open at its acquire: where the lock was taken.
            let step = spans
                .iter()
                .filter(|span| span.code == mark::STEP && span.task == *holder)
                .find(|span| span.begin < *acquired && span.end.is_none_or(|end| *acquired < end));
            let from = step.map_or(*acquired, |step| step.begin);
            for (index, event) in result.trace.iter().enumerate().skip(from) {
                if event.task == *holder {
                    focus.keep[index] = true;
                }
            }
            let in_step = match step.map(|step| &result.trace[step.begin].kind) {
                Some(TraceKind::Mark { text, .. }) => format!(" in step {}", text.trim_start_matches("== ")),
                _ => String::new(),
            };
            held_by.push(format!(
                "{holder_cpu} ({}), taken at cycle {}{in_step}",
                holder_name(*holder),
                result.trace[*acquired].cycle.0
            ));
        }
        focus.shown += &format!(
            "; {name} ({}) that {waiter_cpu} waits for is held by {}",
            stuck.mode.name(),
            held_by.join(" and ")
        );
    }
}

fn holder_name(task: TaskId) -> String {
    format!("task {}", task.0)
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

fn rows(result: &RunResult, keep: &[bool], options: &TableOptions<'_>) -> Vec<(u64, CpuId, String)> {
    let mut held = BTreeMap::new();
    let mut rows: Vec<(u64, CpuId, String)> = Vec::new();
    let mut unnamed: Vec<(&str, u64)> = options
        .pages
        .map(|pages| pages.iter().map(|(name, address)| (name.as_str(), *address)).collect())
        .unwrap_or_default();
    // Longest first, so `A10` is not taken for `A1`.
    unnamed.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (event, kept) in result.trace.iter().zip(keep) {
        // Every event goes through `cell`, so a release shows its mode even when its
        // acquire was left out.
        if let Some(text) = cell(result, event, &mut held)
            && *kept
        {
            let text = crate::error::printable(&text).into_owned();
            rows.push((event.cycle.0, event.cpu, first_use_addresses(text, &mut unnamed)));
        }
    }
    rows
}

/// `text` with the first mention of each page in `unnamed` followed by its address
/// (`A1=0x200000`); those pages are then taken off `unnamed`.
fn first_use_addresses(mut text: String, unnamed: &mut Vec<(&str, u64)>) -> String {
    let mut index = 0;
    while index < unnamed.len() {
        let (name, address) = unnamed[index];
        match word_at(&text, name) {
            Some(at) => {
                text.insert_str(at + name.len(), &format!("={address:#x}"));
                unnamed.remove(index);
            }
            None => index += 1,
        }
    }
    text
}

/// Where `text` mentions `name` as a whole word (not inside `A10` or `rw[A1]`'s brackets' neighbours).
fn word_at(text: &str, name: &str) -> Option<usize> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(|c| is_word(c) || c == '[')
            && !after.is_some_and(|c| is_word(c) || c == '=' || c == '[')
    })
}

fn columns(rows: &[(u64, CpuId, String)]) -> Vec<CpuId> {
    let mut columns: Vec<CpuId> = rows.iter().map(|(_, cpu, _)| *cpu).collect();
    columns.sort();
    columns.dedup();
    columns
}

/// The rows as the table: a cycle column and one column per CPU, each at most as wide as
/// its longest cell and together within `width`; a longer cell wraps onto more lines (the
/// continuation indented), never cut. The legend follows.
fn render_rows(rows: Vec<(u64, CpuId, String)>, width: usize) -> String {
    let columns = columns(&rows);
    let cycle_width = rows.iter().map(|(cycle, _, _)| cycle.to_string().len()).max().unwrap_or(0).max(5);
    let headers: Vec<String> = columns.iter().map(|cpu| cpu.to_string()).collect();
    let mut natural: Vec<usize> = headers.iter().map(|header| header.chars().count()).collect();
    for (_, cpu, text) in &rows {
        let column = columns.binary_search(cpu).expect("column of a row");
        natural[column] = natural[column].max(text.chars().count());
    }
    let available = width.saturating_sub(cycle_width + 3 * columns.len());
    let widths = fit_columns(&natural, available);
    let line = |out: &mut String, cycle: &str, cells: &[&str]| {
        let mut text = format!("{cycle:>cycle_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            text += &format!(" | {cell:<width$}");
        }
        *out += text.trim_end();
        out.push('\n');
    };
    let mut out = String::new();
    let header_cells: Vec<&str> = headers.iter().map(String::as_str).collect();
    line(&mut out, "cycle", &header_cells);
    out += &"-".repeat(cycle_width);
    for width in &widths {
        out += &format!("-+-{}", "-".repeat(*width));
    }
    out.push('\n');
    for (cycle, cpu, text) in rows {
        let column = columns.binary_search(&cpu).expect("column of a row");
        let wrapped = wrap_cell(&text, widths[column]);
        for (index, part) in wrapped.iter().enumerate() {
            let cells: Vec<&str> =
                (0..columns.len()).map(|other| if other == column { part.as_str() } else { "" }).collect();
            let cycle = if index == 0 { cycle.to_string() } else { String::new() };
            line(&mut out, &cycle, &cells);
        }
    }
    out += LEGEND;
    out.push('\n');
    out
}

/// Column widths within `available`: every column its natural width if they all fit; else
/// the narrow ones keep theirs and the rest share what is left equally (never below
/// [`COLUMN_WIDTH_MIN`]).
fn fit_columns(natural: &[usize], available: usize) -> Vec<usize> {
    if natural.iter().sum::<usize>() <= available {
        return natural.to_vec();
    }
    let mut widths: Vec<Option<usize>> = vec![None; natural.len()];
    let mut left = available;
    loop {
        let open: Vec<usize> = (0..natural.len()).filter(|&index| widths[index].is_none()).collect();
        if open.is_empty() {
            break;
        }
        let share = (left / open.len()).max(COLUMN_WIDTH_MIN);
        let narrow: Vec<usize> = open.iter().copied().filter(|&index| natural[index] <= share).collect();
        if narrow.is_empty() {
            for index in open {
                widths[index] = Some(share);
            }
            break;
        }
        for index in narrow {
            widths[index] = Some(natural[index]);
            left = left.saturating_sub(natural[index]);
        }
    }
    widths.into_iter().map(|width| width.expect("every column sized")).collect()
}

/// A cell's text on lines of at most `width` characters, continuation lines indented by two.
fn wrap_cell(text: &str, width: usize) -> Vec<String> {
    let mut lines = wrap_widths(text, width, width.saturating_sub(2));
    for line in lines.iter_mut().skip(1) {
        line.insert_str(0, "  ");
    }
    lines
}

/// `text` on lines of at most `width` characters, broken at spaces or after a `(`; a word
/// longer than a line is broken where the line ends. Nothing is left out.
fn wrap(text: &str, width: usize) -> Vec<String> {
    wrap_widths(text, width, width)
}

/// [`wrap`] with the first line `first` wide and the others `rest` wide.
fn wrap_widths(text: &str, first: usize, rest: usize) -> Vec<String> {
    let (first, rest) = (first.max(1), rest.max(1));
    // (piece, whether a space separates it from the piece before)
    let mut pieces: Vec<(String, bool)> = Vec::new();
    for word in text.split(' ') {
        let mut space = true;
        for piece in word.split_inclusive('(') {
            pieces.push((piece.to_string(), space));
            space = false;
        }
        if word.is_empty() {
            pieces.push((String::new(), true));
        }
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for (mut piece, space) in pieces {
        loop {
            let width = if lines.is_empty() { first } else { rest };
            let line_len = line.chars().count();
            let piece_len = piece.chars().count();
            let gap = usize::from(space && !line.is_empty());
            if line_len + gap + piece_len <= width {
                if gap == 1 {
                    line.push(' ');
                }
                line += &piece;
                break;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A piece longer than a whole line.
            let head: String = piece.chars().take(width).collect();
            piece = piece.chars().skip(width).collect();
            lines.push(head);
            if piece.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_keeps_everything_and_breaks_long_words() {
        assert_eq!(wrap("read_lock(rw[B]) ... spins", 16), ["read_lock(rw[B])", "... spins"]);
        assert_eq!(
            wrap("cpus_write_lock(cpu_hotplug_lock) ... blocks", 28),
            ["cpus_write_lock(", "cpu_hotplug_lock) ... blocks"]
        );
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        let text = "WARN: KVM_BUG_ON: TDH.MEM.PAGE.AUG(0x200000) failed: TDX_MISSING_PAMT_PAGE_PAIR|R8";
        let lines = wrap_cell(text, 30);
        assert!(lines.iter().all(|line| line.chars().count() <= 30), "{lines:?}");
        let letters = |text: &str| text.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(letters(&lines.concat()), letters(text), "nothing is left out");
    }

    #[test]
    fn columns_fit_the_width_narrow_ones_first() {
        assert_eq!(fit_columns(&[10, 20], 40), [10, 20]);
        assert_eq!(fit_columns(&[10, 80], 60), [10, 50]);
        assert_eq!(fit_columns(&[70, 80], 60), [30, 30]);
        assert_eq!(fit_columns(&[70, 80], 10), [COLUMN_WIDTH_MIN, COLUMN_WIDTH_MIN]);
    }

    #[test]
    fn named_pages_get_their_address_once() {
        let mut unnamed = vec![("A10", 0x20a000), ("A1", 0x201000)];
        let first = first_use_addresses("tdx_pamt_get(A1, pair A10 B1)".to_string(), &mut unnamed);
        assert_eq!(first, "tdx_pamt_get(A1=0x201000, pair A10=0x20a000 B1)");
        assert!(unnamed.is_empty());
        assert_eq!(first_use_addresses("rw[A1]".to_string(), &mut vec![("A1", 1)]), "rw[A1]");
    }
}
