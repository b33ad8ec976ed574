//! `tdxsim run --lock-stat`: a run's lock figures as kernel developers read them in
//! /proc/lock_stat and `perf lock contention` — per lock class, then per instance, sorted by
//! total wait as perf sorts — with BUSY returns by leaf and operand, and fault latency.

use std::fmt::Write;

use sim_core::{Clock, ResourceStats};

use crate::metrics::{LockFigure, LockFigures, Metrics};

/// The lock-stat text of one run's (or several runs') metrics; times in units of `clock`.
pub fn render(metrics: &Metrics, clock: Clock) -> String {
    let mut out = String::new();
    let time = |cycles: u64| human_time(clock.cycles_to_ns(cycles));
    out += "lock classes, by total wait:\n";
    let classes = metrics.lock_classes();
    table(&mut out, "class", &sorted(classes.iter()), &time);
    out += "lock instances, by total wait:\n";
    let instances = metrics.lock_instances();
    table(&mut out, "instance", &sorted(instances.iter()), &time);
    out += "BUSY returns by leaf and status:\n";
    if metrics.busy.is_empty() {
        out += "  (none)\n";
    }
    let mut busy: Vec<_> = metrics.busy.iter().collect();
    busy.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for ((leaf, status), count) in busy {
        let _ = writeln!(out, "  {:<28} {:<40} {count:>10}", leaf.name(), status.to_string());
    }
    let faults = &metrics.faults.histogram;
    if faults.count() == 0 {
        out += "faults: none resolved\n";
    } else {
        let _ = writeln!(
            out,
            "faults: {} resolved; latency p50 {}, p99 {}, max {}, total {}",
            faults.count(),
            time(faults.quantile(0.5)),
            time(faults.quantile(0.99)),
            time(faults.max()),
            time(metrics.faults.total_cycles)
        );
        let coalesced = metrics.get("coalesced_faults").unwrap_or(0);
        if coalesced > 0 {
            let _ = writeln!(
                out,
                "  of which {coalesced} coalesced: their latencies drawn from rounds simulated in full"
            );
        }
    }
    out
}

/// The locks ever taken, by total wait, then contentions, then acquisitions (all
/// descending), then name. As in /proc/lock_stat, a lock never taken is not listed.
fn sorted<'a>(locks: impl Iterator<Item = (&'a String, &'a LockFigures)>) -> Vec<(&'a str, &'a LockFigures)> {
    let mut locks: Vec<(&str, &LockFigures)> = locks
        .filter(|(_, figures)| figures.stats.acquisitions > 0)
        .map(|(name, figures)| (name.as_str(), figures))
        .collect();
    let key = |stats: &ResourceStats| (stats.wait_cycles, stats.contended, stats.acquisitions);
    locks.sort_by(|a, b| key(&b.1.stats).cmp(&key(&a.1.stats)).then(a.0.cmp(b.0)));
    locks
}

fn table(out: &mut String, what: &str, locks: &[(&str, &LockFigures)], time: &dyn Fn(u64) -> String) {
    if locks.is_empty() {
        *out += "  (no lock was taken)\n";
        return;
    }
    let _ = writeln!(
        out,
        "  {what:<24} {:<13} {:>10} {:>10} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "type",
        "acquired",
        "contended",
        "total wait",
        "max wait",
        "avg wait",
        "p99 wait",
        "total hold",
        "max hold"
    );
    for (name, figures) in locks {
        let stats = &figures.stats;
        let figure = |figure: LockFigure| figure.of(stats);
        let kind = if figures.instances > 1 {
            format!("{} x{}", figures.kind, figures.instances)
        } else {
            figures.kind.clone()
        };
        let _ = writeln!(
            out,
            "  {name:<24} {kind:<13} {:>10} {:>10} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            stats.acquisitions,
            stats.contended,
            time(figure(LockFigure::WaitCycles)),
            time(figure(LockFigure::WaitMaxCycles)),
            time(figure(LockFigure::WaitAvgCycles)),
            time(figure(LockFigure::WaitP99Cycles)),
            time(figure(LockFigure::HoldCycles)),
            time(figure(LockFigure::HoldMaxCycles)),
        );
    }
}

/// `perf`-style time: ns below 1 us, then us, ms, s with two decimals.
pub fn human_time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} us", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.2} s", ns / 1_000_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_time_picks_perf_units() {
        assert_eq!(human_time(0.0), "0 ns");
        assert_eq!(human_time(999.0), "999 ns");
        assert_eq!(human_time(1_500.0), "1.50 us");
        assert_eq!(human_time(4_000_000.0), "4.00 ms");
        assert_eq!(human_time(60e9), "60.00 s");
    }

    #[test]
    fn classes_sort_by_total_wait_then_contentions() {
        let mut metrics = Metrics::default();
        let stats = |contended: u64, wait_cycles: u64| ResourceStats {
            acquisitions: 10,
            contended,
            wait_cycles,
            ..Default::default()
        };
        metrics.set_run_locks(std::sync::Arc::from(vec![
            ("a_lock".into(), "spinlock", stats(1, 100)),
            ("b_lock".into(), "spinlock", stats(5, 900)),
            ("c_lock".into(), "mutex", stats(9, 100)),
        ]));
        let text = render(&metrics, Clock { ghz: 1.0 });
        let order: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.starts_with("lock classes"))
            .skip(2)
            .take(3)
            .map(|line| line.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(order, ["b_lock", "c_lock", "a_lock"]);
    }
}
