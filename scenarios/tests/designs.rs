//! Every DPAMT design under the same contention: get/put on shared 2MB ranges from four
//! CPUs with allocated page pairs. The refcount designs must keep the host's counts equal
//! to the module's backing; none may deadlock, WARN or leave a lock held.

use scenarios::check::check;
use scenarios::load_str;
use sim_core::OutcomeKind;

fn contention(design: &str) -> String {
    format!(
        r#"
name = "dpamt: {design} under get/put contention (cpus=4)"
[machine]
cpus = 4
memory = "32M"
[host]
dpamt = "{design}"
[pages]
A1 = "0x200000"
A2 = "0x201000"
A3 = "0x202000"
B1 = "0x400000"
B2 = "0x401000"
[[task]]
cpu = 0
repeat = 8
steps = [{{ call = "tdx_pamt_get", page = "A1" }}, {{ call = "tdx_pamt_put", page = "A1" }}]
[[task]]
cpu = 1
repeat = 8
steps = [{{ call = "tdx_pamt_get", page = "A2" }}, {{ call = "tdx_pamt_get", page = "B1" }},
         {{ call = "tdx_pamt_put", page = "B1" }}, {{ call = "tdx_pamt_put", page = "A2" }}]
[[task]]
cpu = 2
repeat = 8
steps = [{{ call = "tdx_pamt_get", page = "B2" }}, {{ call = "tdx_pamt_put", page = "B2" }}]
[[task]]
cpu = 3
repeat = 8
steps = [{{ call = "tdx_pamt_get", page = "A3" }}, {{ call = "spin", for = "500ns" }}, {{ call = "tdx_pamt_put", page = "A3" }}]
[run]
runs = 60
"#
    )
}

#[test]
fn refcount_designs_stay_consistent_under_contention() {
    // Not global-lock-fastpath: with stalls it removes twice (S-D2, the next test).
    for design in
        ["global-lock", "dec-and-lock", "per-2m-rwlock", "per-2m-rwlock-pfn-order", "global-rwlock-fallback"]
    {
        let scenario = load_str("contention.toml", &contention(design)).unwrap();
        let summary = check(&scenario);
        assert_eq!(summary.verdict, Ok(()), "{design}: {:?}", summary.first_failing);
        assert!(summary.metrics.get("seamcalls").unwrap() > 0, "{design}");
        assert_eq!(summary.metrics.get("seamcall_errors"), Some(0), "{design}");
    }
}

#[test]
fn the_v2_v4_design_removes_twice_under_the_same_contention() {
    // The put's decrement outside pamt_lock: an interrupt between it and spin_lock() lets
    // another CPU get and put the range meanwhile; the late put then removes again.
    // The checker sees the stale refcount at the late put's return, after its
    // REMOVE's WARN; the WARN is the first finding.
    let summary = check(&load_str("contention.toml", &contention("global-lock-fastpath")).unwrap());
    let (_, outcome) = summary.first_failing.expect("exploration finds the double REMOVE");
    assert_eq!(outcome.kind, OutcomeKind::Warn, "{outcome}");
    assert!(
        outcome.what.contains("PAMT.REMOVE") && outcome.what.contains("TDX_NO_PAMT_PAGE_PAIR"),
        "{}",
        outcome.what
    );
}

#[test]
fn the_hint_design_meets_busy_and_not_free_but_finishes() {
    // D1 has no refcount: concurrent gets on one range race their PAMT.ADDs, and the
    // losers see BUSY (retried) or HPA_RANGE_NOT_FREE (taken as done).
    let scenario = load_str("contention.toml", &contention("hint")).unwrap();
    let summary = check(&scenario);
    assert_eq!(summary.outcomes.get(&OutcomeKind::Pass), Some(&summary.runs), "{:?}", summary.first_failing);
    assert!(summary.metrics.get("status_hpa_range_not_free").unwrap() > 0);
}

#[test]
fn the_fully_locked_design_allocates_on_every_get() {
    // D3 (v6 05/11) allocates a pair even when the range is backed; D4 does not.
    let d3 = check(&load_str("c.toml", &contention("global-lock")).unwrap());
    let d4 = check(&load_str("c.toml", &contention("dec-and-lock")).unwrap());
    let adds = |summary: &scenarios::check::CheckSummary| summary.metrics.get("seamcalls").unwrap();
    assert!(
        d3.metrics.locks.acquisitions > d4.metrics.locks.acquisitions,
        "every D3 get and put takes dpamt_lock"
    );
    assert!(adds(&d3) > 0 && adds(&d4) > 0);
}
