//! `[[workload]]`: the loader's checks (every key's range, keys the kind does not take, TDs
//! and memory against the machine), and what the generated threads do: every page of the
//! touched memory faulted once per round, the allocator's locality seen in how many 2MB
//! ranges need backing, the same run for the same seed.

mod seamcalls;

use scenarios::run::{Schedule, run_once};
use scenarios::schema::WorkloadKind;
use scenarios::{load_str, workload_defaults};
use seam_model::{Leaf, TdId};
use seamcalls::successes as count;

fn error(text: &str) -> String {
    match load_str("x.toml", text) {
        Ok(scenario) => panic!("loaded, expected an error: {:?}", scenario.workloads),
        Err(error) => error.to_string(),
    }
}

/// A machine of 4 CPUs and 512M with one workload of `body` (from line 6).
fn workload(body: &str) -> String {
    format!("name = \"t\"\n[machine]\ncpus = 4\nmemory = \"512M\"\n[[workload]]\n{body}")
}

#[test]
fn a_workload_alone_is_a_scenario_and_its_defaults_are_documented_ones() {
    let scenario = load_str("x.toml", &workload("kind = \"td_boot\"\n")).unwrap();
    assert!(scenario.tasks.is_empty());
    let load = &scenario.workloads[0];
    assert_eq!(load.kind, WorkloadKind::TdBoot);
    assert_eq!((load.first_td, load.tds, load.vcpus_per_td), (1, 1, 1));
    assert_eq!((load.memory_per_td, load.initial_memory, load.memory_touched), (16 << 20, 2 << 20, 14 << 20));
    assert_eq!((load.first_cpu, load.cpus, load.rounds), (0, 4, 1));
    let interval = (2.2e9 / workload_defaults::FAULT_RATE).round() as u64;
    assert_eq!(load.fault_interval, interval, "1/fault_rate at the default 2.2 GHz");
    // Kept in 1/65536ths: the default is the nearest one.
    assert!((load.locality.fraction() - workload_defaults::LOCALITY).abs() <= 0.5 / 65536.0);
    let storm = load_str("x.toml", &workload("kind = \"fault_storm\"\n")).unwrap();
    assert_eq!(storm.workloads[0].initial_memory, 0, "a storm's TDs exist: no initial image");
    assert_eq!(storm.workloads[0].memory_touched, 16 << 20);
}

#[test]
fn workload_tds_follow_the_steps_tds_and_may_not_collide() {
    let text = "name = \"t\"\n[machine]\ncpus = 2\nmemory = \"256M\"\n[[task]]\ncpu = 0\n\
                steps = [{ call = \"tdp_fault\", td = 7, gpa = 0 }]\n\
                [[workload]]\nkind = \"fault_storm\"\ntds = 2\n[[workload]]\nkind = \"td_boot\"\n";
    let scenario = load_str("x.toml", text).unwrap();
    let tds: Vec<Vec<TdId>> = scenario.workloads.iter().map(|load| load.td_ids().collect()).collect();
    assert_eq!(tds, vec![vec![TdId(8), TdId(9)], vec![TdId(10)]]);
    let clash = text.replace("tds = 2\n", "tds = 2\nfirst_td = 6\n");
    assert_eq!(
        error(&clash),
        "x.toml:11:12: workload[0].first_td: expected TDs 6..=7 of their own, but TD 7 is named by a step or an earlier workload, found 6"
    );
}

#[test]
fn every_key_is_checked_against_its_range_and_its_kind() {
    let cases = [
        ("", "x.toml:5:1: workload[0].kind: expected a workload kind (required), found nothing"),
        (
            "kind = \"td_reboot\"\n",
            "x.toml:6:8: workload[0].kind: expected one of td_boot | td_churn | fault_storm | zap_storm | guest_accept_storm, found \"td_reboot\"",
        ),
        (
            "kind = \"td_boot\"\nzap_size = \"4K\"\n",
            "x.toml:7:1: workload[0].zap_size: expected one of the keys kind td_boot takes: kind, tds, first_td, vcpus_per_td, memory_per_td, memory_touched, fault_rate, locality, start, first_cpu, cpus, initial_memory, coalesce_faults, found zap_size",
        ),
        (
            "kind = \"td_boot\"\nspeed = 1\n",
            "x.toml:7:1: workload[0].speed: expected one of the keys kind, tds, first_td, vcpus_per_td, memory_per_td, initial_memory, memory_touched, fault_rate, locality, rounds, start, first_cpu, cpus, zap_size, zap_interval, zap, coalesce_faults, found speed",
        ),
        (
            "kind = \"td_boot\"\ntds = 0\n",
            "x.toml:7:7: workload[0].tds: expected an integer 1..=1024, found 0",
        ),
        (
            "kind = \"td_boot\"\nvcpus_per_td = 257\n",
            "x.toml:7:16: workload[0].vcpus_per_td: expected an integer 1..=256, found 257",
        ),
        (
            "kind = \"td_boot\"\nmemory_per_td = \"3M\"\n",
            "x.toml:7:17: workload[0].memory_per_td: expected a size that is a multiple of 2M, 1..=1099511627776 bytes, like \"16M\", found \"3M\"",
        ),
        (
            "kind = \"td_boot\"\ninitial_memory = \"6K\"\n",
            "x.toml:7:18: workload[0].initial_memory: expected a size that is a multiple of 4K, 0..=16777216 bytes, like \"16M\", found \"6K\"",
        ),
        (
            "kind = \"td_boot\"\nmemory_touched = \"15M\"\n",
            "x.toml:7:18: workload[0].memory_touched: expected a size that is a multiple of 4K, 0..=14680064 bytes, like \"16M\", found \"15M\"",
        ),
        (
            "kind = \"td_boot\"\nfault_rate = 0\n",
            "x.toml:7:14: workload[0].fault_rate: expected a rate per second, above 0 and at most 1000000000, found 0",
        ),
        (
            "kind = \"td_boot\"\nlocality = 1.5\n",
            "x.toml:7:12: workload[0].locality: expected a fraction 0..=1 (0: scattered pages, 1: contiguous), found 1.5",
        ),
        (
            "kind = \"td_churn\"\nrounds = 0\n",
            "x.toml:7:10: workload[0].rounds: expected an integer 1..=1000000, found 0",
        ),
        (
            "kind = \"td_boot\"\nfirst_cpu = 4\n",
            "x.toml:7:13: workload[0].first_cpu: expected an integer 0..=3 (a CPU online at start), found 4",
        ),
        (
            "kind = \"td_boot\"\nfirst_cpu = 1\ncpus = 4\n",
            "x.toml:8:8: workload[0].cpus: expected an integer 1..=3 (CPUs online at start from first_cpu), found 4",
        ),
        (
            "kind = \"zap_storm\"\nmemory_touched = \"8K\"\nzap_size = \"12K\"\n",
            "x.toml:8:12: workload[0].zap_size: expected a size that is a multiple of 4K, 4096..=8192 bytes, like \"16M\", found \"12K\"",
        ),
        (
            "kind = \"fault_storm\"\nzap = \"memslot\"\n",
            "x.toml:7:1: workload[0].zap: expected one of the keys kind fault_storm takes: kind, tds, first_td, vcpus_per_td, memory_per_td, memory_touched, fault_rate, locality, start, first_cpu, cpus, rounds, found zap",
        ),
        (
            "kind = \"zap_storm\"\nzap = \"memslots\"\n",
            "x.toml:7:7: workload[0].zap: expected one of punch_hole | memslot | mixed, found \"memslots\"",
        ),
        (
            "kind = \"zap_storm\"\nmemory_per_td = \"256M\"\nzap_size = \"4K\"\nzap = \"memslot\"\n",
            "x.toml:8:12: workload[0].zap_size: expected a zap_size that leaves at most 32763 memslots per TD (KVM_USER_MEM_SLOTS less the base one): zap = \"memslot\" makes a memslot of each hole of each vCPU's part, here 65536, found \"4K\"",
        ),
        (
            "kind = \"guest_accept_storm\"\nzap_interval = 0\n",
            "x.toml:7:16: workload[0].zap_interval: expected a time of at least 1 cycle, found 0",
        ),
        (
            "kind = \"guest_accept_storm\"\nzap_interval = \"2h\"\n",
            "x.toml:7:16: workload[0].zap_interval: expected a time: an integer of cycles or a string like \"50us\" (ns, us, ms, s), found \"2h\"",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(error(&workload(body)), expected, "{body}");
    }
}

#[test]
fn workloads_must_fit_the_machine() {
    assert_eq!(
        error(&workload("kind = \"td_boot\"\ntds = 40\n")),
        "x.toml:7:7: workload[0].tds: expected workloads whose memory fits machine.memory (536870912 bytes): their initial and touched memory, 1/256 of it for S-EPT tables, control pages, and 1/256 of machine.memory for PAMT backing need 681050112 bytes up to this one, found 40"
    );
    let threads = "kind = \"fault_storm\"\ntds = 1024\nvcpus_per_td = 256\nmemory_per_td = \"2M\"\nmemory_touched = 0\n";
    assert!(error(&workload(threads)).contains("at most 262144 threads in all"));
    let many: String =
        (0..65).map(|_| "[[workload]]\nkind = \"td_boot\"\nmemory_per_td = \"2M\"\n").collect();
    let text = format!("name = \"t\"\n[machine]\nmemory = \"1G\"\n{many}");
    assert_eq!(
        error(&text),
        "x.toml:4:1: workload: expected at most 64 [[workload]] tables, found [[workload]]"
    );
}

/// A fault storm on 4 CPUs: 2 TDs of 8M, 2 vCPUs each, `rounds` passes, at `locality`.
fn storm(locality: f64, rounds: u32) -> scenarios::schema::Scenario {
    let text = format!(
        "name = \"t\"\n[machine]\ncpus = 4\nmemory = \"256M\"\n[host]\ndpamt = \"global-lock-fastpath\"\n\
         [[workload]]\nkind = \"fault_storm\"\ntds = 2\nvcpus_per_td = 2\nmemory_per_td = \"8M\"\n\
         locality = {locality:?}\nrounds = {rounds}\nfault_rate = 200000\n[run]\nmax_time = \"10s\"\n"
    );
    load_str("x.toml", &text).unwrap()
}

#[test]
fn a_fault_storm_faults_every_page_of_every_round_and_punches_all_but_the_last_out() {
    let scenario = storm(1.0, 3);
    let result = run_once(&scenario, &Schedule::Random(1), false);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    let pages = 2 * (8 << 20) / 4096;
    assert_eq!(count(&result, Leaf::MemPageAug), 3 * pages);
    assert_eq!(count(&result, Leaf::MemPageRemove), 2 * pages);
    assert_eq!(result.metrics.faults.faults(), 3 * pages);
    // Contiguous: each TD's 8M takes 4 ranges (5 when its stream starts inside one another
    // stream began); at the end only the last round's pages keep ranges backed.
    let (adds, removes) = (count(&result, Leaf::PhymemPamtAdd), count(&result, Leaf::PhymemPamtRemove));
    assert!((8..=10).contains(&(adds - removes)), "{adds} ADDs, {removes} REMOVEs");
    assert!(removes >= 8, "a range both vCPUs emptied is removed: {removes}");
    let again = run_once(&scenario, &Schedule::Random(1), false);
    assert_eq!(again.trace_hash, result.trace_hash, "the same seed is the same run");
    assert_ne!(run_once(&scenario, &Schedule::Random(2), false).trace_hash, result.trace_hash);
}

#[test]
fn scattered_pages_need_a_backing_for_many_more_ranges_than_contiguous_ones() {
    let contiguous = run_once(&storm(1.0, 1), &Schedule::Random(3), false);
    let scattered = run_once(&storm(0.0, 1), &Schedule::Random(3), false);
    let half = run_once(&storm(0.5, 1), &Schedule::Random(3), false);
    let adds = |result: &scenarios::run::RunResult| count(result, Leaf::PhymemPamtAdd);
    assert!((8..=10).contains(&adds(&contiguous)), "{}", adds(&contiguous));
    // 4096 pages drawn from 128 ranges: every range is hit (each misses with (127/128)^4096).
    assert_eq!(adds(&scattered), 128);
    assert!(adds(&half) > adds(&contiguous) && adds(&half) <= adds(&scattered), "{}", adds(&half));
}

/// `kind` on 4 CPUs: 2 TDs of 16M with 2 vCPUs each (2M initial image), `extra` keys.
fn generated(kind: &str, extra: &str) -> scenarios::schema::Scenario {
    let text = format!(
        "name = \"t\"\n[machine]\ncpus = 4\nmemory = \"512M\"\n[host]\ndpamt = \"global-lock-fastpath\"\n\
         [[workload]]\nkind = \"{kind}\"\ntds = 2\nvcpus_per_td = 2\nmemory_per_td = \"16M\"\n\
         fault_rate = 200000\n{extra}[run]\nmax_time = \"10s\"\n"
    );
    load_str("x.toml", &text).unwrap()
}

#[test]
fn a_td_boot_adds_the_image_then_faults_in_every_touched_page_through_the_vcpus() {
    let scenario = generated("td_boot", "memory_touched = \"8M\"\n");
    let result = run_once(&scenario, &Schedule::Random(1), false);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    let (image, touched) = (512, (8 << 20) / 4096);
    assert_eq!(count(&result, Leaf::MngCreate), 2);
    assert_eq!(count(&result, Leaf::VpCreate), 4, "a vCPU each");
    assert_eq!(count(&result, Leaf::MemPageAdd), 2 * image, "the image by PAGE.ADD");
    assert_eq!(count(&result, Leaf::MrFinalize), 2);
    assert_eq!(count(&result, Leaf::MemPageAug), 2 * touched, "each touched page faulted once");
    assert_eq!(result.metrics.faults.faults(), 2 * touched);
    assert!(count(&result, Leaf::VpEnter) > 2 * touched, "an entry after every fault");
    // Nothing is torn down: every touched range stays backed.
    assert!(result.pamt_end.iter().filter(|(refs, backed)| *refs > 0 && *backed).count() >= 2 * 5);
    let again = run_once(&scenario, &Schedule::Random(1), false);
    assert_eq!(again.trace_hash, result.trace_hash, "the same seed is the same run");
    assert_ne!(run_once(&scenario, &Schedule::Random(2), false).trace_hash, result.trace_hash);
}

#[test]
fn a_td_churn_destroys_every_td_it_made_and_the_host_gets_every_page_back() {
    let scenario = generated("td_churn", "rounds = 3\nmemory_touched = \"4M\"\n");
    let result = run_once(&scenario, &Schedule::Random(4), false);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    let lives = 2 * 3;
    assert_eq!(count(&result, Leaf::MngCreate), lives);
    assert_eq!(count(&result, Leaf::MngKeyFreeid), lives, "every TD's HKID released");
    let private = lives * (512 + (4 << 20) / 4096);
    assert_eq!(count(&result, Leaf::MemPageAdd) + count(&result, Leaf::MemPageAug), private);
    // Every private page, S-EPT page and control page goes back through PAGE.RECLAIM.
    let control = lives * 2 + 2 * lives * 2; // at least TDR + TDCS per TD, TDVPR + TDCX per vCPU
    assert!(count(&result, Leaf::PhymemPageReclaim) >= private + control);
    // Every PAMT backing the boots added is removed again, and no refcount is left.
    assert_eq!(count(&result, Leaf::PhymemPamtAdd), count(&result, Leaf::PhymemPamtRemove));
    assert!(result.pamt_end.iter().all(|&(refs, backed)| refs == 0 && !backed), "{:?}", result.pamt_end);
    assert_eq!(run_once(&scenario, &Schedule::Random(4), false).trace_hash, result.trace_hash);
}

#[test]
fn a_scattered_fault_storm_contends_on_the_global_pamt_lock_and_still_faults_every_page() {
    // Scattered pages under the v2 global lock: PAMT.ADDs contend on pamt_lock.
    let scenario = generated("fault_storm", "locality = 0.0\n");
    let result = run_once(&scenario, &Schedule::Random(5), false);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    assert_eq!(count(&result, Leaf::MemPageAug), 2 * (16 << 20) / 4096);
    let pamt_lock =
        result.resources.iter().find(|(name, _, _)| name.as_str() == "pamt_lock").expect("pamt_lock");
    assert!(pamt_lock.2.contended > 0, "{:?}", pamt_lock.2);
}

#[test]
fn a_zap_storm_punches_each_hole_out_and_faults_it_in_again() {
    let scenario = generated("zap_storm", "rounds = 4\nzap_size = \"256K\"\n");
    let result = run_once(&scenario, &Schedule::Random(1), false);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    let (touched, holes) = (2 * (16 << 20) / 4096, 2 * 2 * 4 * 64);
    assert_eq!(count(&result, Leaf::MemPageAug), touched + holes, "each hole faulted in again");
    assert_eq!(count(&result, Leaf::MemRangeBlock), holes);
    assert_eq!(count(&result, Leaf::MemPageRemove), holes);
    assert_eq!(count(&result, Leaf::MemTrack), holes, "a TLB track per zapped page");
    // The holes' zaps hold mmu_lock for write while the other vCPU faults.
    let mmu_lock = result.resources.iter().filter(|(name, _, _)| name.as_str().starts_with("mmu_lock"));
    assert!(mmu_lock.map(|(_, _, stats)| stats.contended).sum::<u64>() > 0);
    assert_eq!(run_once(&scenario, &Schedule::Random(1), false).trace_hash, result.trace_hash);
}

/// The memslot marks of a run, in order: (task, what, GPA), `what` being 2 (the slot made
/// `KVM_MEMSLOT_INVALID`), 3 (deleted) or 4 (created again).
fn memslot_marks(result: &scenarios::run::RunResult) -> Vec<(sim_core::TaskId, u64, u64)> {
    use host_model::kernel::cpu::mark;
    result
        .trace
        .iter()
        .filter_map(|event| match event.kind {
            sim_core::TraceKind::Mark { code: mark::KVM, a, b, .. } if (2..=4).contains(&a) => {
                Some((event.task, a, b))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_memslot_zap_storm_deletes_each_holes_memslot_creates_it_again_and_faults_it_in_again() {
    let scenario = generated("zap_storm", "rounds = 4\nzap_size = \"256K\"\nzap = \"memslot\"\n");
    // Each vCPU's part (8M) is cut into memslots of 256K: 32 a vCPU, 64 a TD.
    let load = &scenario.workloads[0];
    assert_eq!(load.memslots().len(), 64);
    let result = run_once(&scenario, &Schedule::Random(1), true);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    let (touched, holes, changes) = (2 * (16 << 20) / 4096, 2 * 2 * 4 * 64, 2 * 2 * 4);
    // The deletion zaps the hole's private pages; the guest faults and accepts them again.
    assert_eq!(count(&result, Leaf::MemPageAug), touched + holes, "each hole faulted in again");
    assert_eq!(count(&result, Leaf::MemPageRemove), holes);
    assert_eq!(count(&result, Leaf::MemRangeBlock), holes);
    // Every change is invalid -> deleted -> created, on one vCPU thread, on a hole's GPA.
    let marks = memslot_marks(&result);
    assert_eq!(marks.len(), 3 * changes, "{marks:?}");
    let mut open: Vec<(sim_core::TaskId, u64, u64)> = Vec::new();
    for &(task, what, gpa) in &marks {
        assert!(load.memslots().iter().any(|&(slot, _)| slot == gpa), "a hole's memslot: {gpa:#x}");
        match what {
            2 => open.push((task, 2, gpa)),
            3 | 4 => {
                let at =
                    open.iter().position(|&(t, _, g)| t == task && g == gpa).expect("after its invalidation");
                assert_eq!(open[at].1, what - 1, "invalid, then deleted, then created");
                if what == 4 {
                    open.remove(at);
                } else {
                    open[at].1 = 3;
                }
            }
            _ => unreachable!(),
        }
    }
    assert!(open.is_empty(), "every slot created again: {open:?}");
    // The deletions' synchronize_srcu() and zaps meet the other vCPUs: the two vCPUs'
    // changes queue on slots_lock, the zaps and faults on mmu_lock.
    let contended = |prefix: &str| -> u64 {
        let locks = result.resources.iter().filter(|(name, _, _)| name.as_str().starts_with(prefix));
        locks.map(|(_, _, stats)| stats.contended).sum()
    };
    assert!(contended("kvm->slots_lock") > 0 && contended("mmu_lock") > 0);
    assert_eq!(run_once(&scenario, &Schedule::Random(1), false).trace_hash, result.trace_hash);
}

#[test]
fn a_mixed_zap_storm_does_both_and_the_default_zap_is_punch_hole() {
    let mixed = generated("zap_storm", "rounds = 4\nzap_size = \"256K\"\nzap = \"mixed\"\n");
    let result = run_once(&mixed, &Schedule::Random(2), true);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    let holes = 2 * 2 * 4 * 64;
    assert_eq!(count(&result, Leaf::MemPageAug), 2 * (16 << 20) / 4096 + holes);
    assert_eq!(count(&result, Leaf::MemPageRemove), holes);
    let changes = memslot_marks(&result).iter().filter(|mark| mark.1 == 4).count();
    assert!((1..16).contains(&changes), "some rounds change memslots, the others punch holes: {changes}");
    // Left out, zap is punch_hole: the same runs as before the key existed.
    let default = generated("zap_storm", "rounds = 4\nzap_size = \"256K\"\n");
    let punch = generated("zap_storm", "rounds = 4\nzap_size = \"256K\"\nzap = \"punch_hole\"\n");
    assert!(default.workloads[0].memslots().is_empty());
    let hash = |scenario| run_once(scenario, &Schedule::Random(1), false).trace_hash;
    assert_eq!(hash(&default), hash(&punch));
}

#[test]
fn an_accept_storm_makes_every_removal_meet_the_hostile_guests() {
    // Six CPUs: each TD's remover has a CPU of its own. A removal kicks the TD's vCPUs
    // (TRACK's kvm_make_all_cpus_request) and waits for their acknowledgement; a guest in its
    // ACCEPT loop exits at the next instruction boundary, not at its next timer tick (1 ms),
    // and the guests storm until the remover, done, signals their threads. So each of the
    // 400 removals finds the hostile page mapped again. When the kick waited for the tick
    // and the guests stopped after (rounds + 1) x zap_interval of their own, 10 did.
    let text = "name = \"t\"\n[machine]\ncpus = 6\nmemory = \"512M\"\n[host]\ndpamt = \"global-lock-fastpath\"\n\
                [[workload]]\nkind = \"guest_accept_storm\"\ntds = 2\nvcpus_per_td = 2\nmemory_per_td = \"16M\"\n\
                fault_rate = 200000\nrounds = 200\nzap_interval = \"20us\"\n[run]\nmax_time = \"10s\"\n";
    let scenario = load_str("x.toml", text).unwrap();
    let result = run_once(&scenario, &Schedule::Random(0), false);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    assert_eq!(count(&result, Leaf::MemPageRemove), 2 * 200, "every removal found the hostile page mapped");
    assert!(result.metrics.busy.values().sum::<u64>() > 0, "removals and entries meet the guests' locks");
    assert_eq!(run_once(&scenario, &Schedule::Random(0), false).trace_hash, result.trace_hash);
}

#[test]
fn a_bundle_of_a_run_that_kept_no_decisions_replays_from_its_seed() {
    // A run past sim_core::MAX_RECORDED_DECISIONS keeps no vector (the engine's test shows
    // it); its bundle records none and replays the seed.
    let text = "name = \"t\"\n[machine]\ncpus = 2\nmemory = \"64M\"\n[[workload]]\nkind = \"fault_storm\"\n\
                memory_per_td = \"2M\"\nfault_rate = 1000000\n";
    let scenario = load_str("x.toml", text).unwrap();
    let mut result = run_once(&scenario, &Schedule::Random(3), false);
    assert_eq!(result.outcome.kind, sim_core::OutcomeKind::Pass, "{}", result.outcome.what);
    assert!(!result.decisions_dropped && result.decisions_made == result.decisions.len() as u64);
    (result.decisions, result.decisions_dropped) = (Vec::new(), true);
    let bundle =
        scenarios::bundle::Bundle::new(&scenario, text, scenarios::schema::Strategy::Random, 3, &result);
    assert!(bundle.seed_mismatches(&scenario).is_empty());
    let (_, replayed) = bundle.replay(false).unwrap();
    assert!(bundle.mismatches(&replayed).is_empty(), "{:?}", bundle.mismatches(&replayed));
    assert_eq!((replayed.trace_hash, replayed.decisions_made), (result.trace_hash, result.decisions_made));
    // The same bundle with the seed edited replays another run, and says so.
    let edited = scenarios::bundle::Bundle { seed: 4, ..bundle };
    let (_, other) = edited.replay(false).unwrap();
    assert!(!edited.mismatches(&other).is_empty());
}
