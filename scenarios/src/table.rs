//! The interleaving as the two-column `CPU 0 | CPU 1` table kernel developers paste into
//! mail: one column per CPU that did something, one row per event, in time order.

use std::collections::BTreeMap;

use host_model::kernel::cpu::mark;
use sim_core::{CpuId, Mode, TraceEvent, TraceKind};

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
            (_, _, false) => "spin_lock",
            (_, _, true) => "spin_unlock",
        }
    };
    Some(match &event.kind {
        TraceKind::TaskStart | TraceKind::TaskEnd => return None,
        TraceKind::Wait { resource, mode } => {
            let (name, class, _) = name_of(*resource);
            format!("{}({name}) ... spins", verb(class, *mode, false))
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

/// Renders the run's trace (it must have been recorded) as the table.
pub fn render(result: &RunResult) -> String {
    let mut held = BTreeMap::new();
    let mut rows: Vec<(u64, CpuId, String)> = Vec::new();
    for event in &result.trace {
        if let Some(text) = cell(result, event, &mut held) {
            rows.push((event.cycle.0, event.cpu, text));
        }
    }
    let mut columns: Vec<CpuId> = rows.iter().map(|(_, cpu, _)| *cpu).collect();
    columns.sort();
    columns.dedup();
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
