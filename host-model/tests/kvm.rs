//! KVM's primitives on their own: SRCU grace periods, the kick that makes a running guest
//! exit, `wait_for_sept_zap` keeping vCPUs out, and the local retry's exits.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use host_model::guest::GuestProgram;
use host_model::kernel::srcu::{SrcuStruct, srcu_read_lock, srcu_read_unlock, synchronize_srcu};
use host_model::kvm::vcpu::kvm_vcpu_ioctl_run;
use host_model::kvm::vm::{KvmTdConfig, kvm_make_all_cpus_request, request};
use host_model::{Cpu, DpamtDesign, Errno, Host, HostConfig, HostCosts, SeptBusyDesign};
use seam_model::TdId;
use sim_core::{CpuId, Cycle, EngineConfig, Executor, OutcomeKind, RandomChooser, RunReport, Seed};

struct World {
    exec: Executor<'static>,
    host: Rc<Host>,
}

const TD: TdId = TdId(1);

fn world(cpus: u32, vcpus: u32, design: SeptBusyDesign) -> World {
    let exec = Executor::new(
        EngineConfig {
            cpus,
            max_time: Cycle(200_000_000),
            watchdog_cycles: 50_000_000,
            jitter: 0.0,
            record_trace: false,
            hash_trace: true,
            max_stall_cycles: 0,
            max_events: u64::MAX,
            hung_task_cycles: 150_000_000,
            online_cpus: cpus,
            coverage: false,
            max_recorded_decisions: sim_core::MAX_RECORDED_DECISIONS,
        },
        Box::new(RandomChooser::new(Seed(1))),
    );
    let config = HostConfig {
        memory_bytes: 16 << 20,
        ghz: 2.2,
        dpamt: true,
        host_priority: true,
        possible_cpus: cpus,
        online_cpus: cpus,
        packages: 1,
        tdx_initialized: true,
        seamret_erratum: false,
        compat_sensitive: true,
        leaf_locks: seam_model::LeafLocks::Interleaved,
        hint_aug_retries: 1,
        dpamt_design: DpamtDesign::DecAndLock,
        enable_design: Default::default(),
        update_design: Default::default(),
        sept_busy: design,
        sept_retries: host_model::kvm::design::SEPT_RETRIES_DEFAULT,
        leaf_costs: BTreeMap::new(),
        costs: HostCosts::default(),
        range_labels: BTreeMap::new(),
        range_lock_names: BTreeMap::new(),
        gmem_locality: BTreeMap::new(),
        reserved_ranges: Default::default(),
        tds: vec![TD],
        kvm_tds: vec![KvmTdConfig { td: TD, vcpus, memslots: Vec::new(), exists: true }],
    };
    let module = Rc::new(RefCell::new(config.new_module()));
    let host = Rc::new(Host::new(exec.sim(), config, module, Rc::new(host_model::observe::NoObserver)));
    World { exec, host }
}

impl World {
    fn task<F, Fut>(&mut self, cpu: u32, start: u64, name: &str, body: F)
    where
        F: FnOnce(Cpu) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let host = self.host.clone();
        self.exec.spawn(CpuId(cpu), Cycle(start), name.to_string(), move |ctx| {
            body(Cpu::new(ctx.sim, ctx.cpu, ctx.task, host))
        });
    }

    fn run(mut self) -> RunReport {
        self.exec.run()
    }
}

/// A guest that accepts one page, then twice works `cycles` and touches it.
fn worker(cycles: u64) -> GuestProgram {
    GuestProgram {
        gpa: 0x10_0000,
        pages: 1,
        accept: true,
        interval_cycles: cycles,
        rounds: 2,
        hostile: false,
    }
}

#[test]
fn synchronize_srcu_waits_for_the_readers_inside_and_not_for_later_ones() {
    let mut world = world(3, 0, SeptBusyDesign::KickAndBlock);
    let srcu = Rc::new(SrcuStruct::new("test_srcu", "synchronize_srcu(&test_srcu)"));
    let returned = Rc::new(Cell::new(0u64));
    let (early, late, waiter) = (srcu.clone(), srcu.clone(), srcu.clone());
    world.task(0, 0, "reader", move |cpu| async move {
        let idx = srcu_read_lock(&cpu, &early);
        cpu.sim.delay(500_000).await;
        srcu_read_unlock(&cpu, &early, idx);
    });
    // Enters after the grace period began and never leaves before the run's end: not waited for.
    world.task(1, 100_000, "late reader", move |cpu| async move {
        let idx = srcu_read_lock(&cpu, &late);
        cpu.sim.delay(2_000_000).await;
        srcu_read_unlock(&cpu, &late, idx);
    });
    let at = returned.clone();
    world.task(2, 50_000, "synchronizer", move |cpu| async move {
        synchronize_srcu(&cpu, &waiter).await;
        at.set(cpu.sim.now().0);
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    let at = returned.get();
    assert!(
        (500_000..600_000).contains(&at),
        "returned at {at}: after the first reader, before the late one"
    );
}

#[test]
fn synchronize_srcu_inside_its_own_read_section_is_a_broken_precondition() {
    let mut world = world(1, 0, SeptBusyDesign::KickAndBlock);
    let srcu = Rc::new(SrcuStruct::new("test_srcu", "synchronize_srcu(&test_srcu)"));
    world.task(0, 0, "self", move |cpu| async move {
        let idx = srcu_read_lock(&cpu, &srcu);
        synchronize_srcu(&cpu, &srcu).await;
        srcu_read_unlock(&cpu, &srcu, idx);
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Error);
    assert!(report.outcome.what.contains("it would wait for itself"), "{}", report.outcome);
}

#[test]
fn the_kick_makes_a_running_guest_exit_and_returns_once_it_is_acknowledged() {
    let mut world = world(2, 1, SeptBusyDesign::KickAndBlock);
    let run_result = Rc::new(RefCell::new(None));
    let slot = run_result.clone();
    // The guest works 1 ms (2.2M cycles) between its two touches of the page.
    world.task(0, 0, "vcpu", move |cpu| async move {
        *slot.borrow_mut() = Some(kvm_vcpu_ioctl_run(&cpu, TD, 0, worker(2_200_000), None).await);
    });
    let kicked = Rc::new(Cell::new((0u64, 0u64)));
    let times = kicked.clone();
    world.task(1, 600_000, "kicker", move |cpu| async move {
        let kvm = &cpu.host().kvm_tds[&TD];
        let started = cpu.sim.now().0;
        kvm_make_all_cpus_request(&cpu, kvm, request::OUTSIDE_GUEST_MODE).await;
        times.set((started, cpu.sim.now().0));
    });
    let host = world.host.clone();
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    assert_eq!(*run_result.borrow(), Some(Ok(())));
    let (started, returned) = kicked.get();
    // Not a guest tick (2.2M cycles) later: the IPI made the guest exit at once.
    assert!(returned - started < 50_000, "the kick took {} cycles", returned - started);
    let stats = host.stats.borrow();
    assert_eq!(stats.kicks, 1);
    assert!(
        stats.vcpu_entries >= 3,
        "ACCEPT's violation, the kick's exit, then back in: {}",
        stats.vcpu_entries
    );
}

#[test]
fn wait_for_sept_zap_keeps_every_vcpu_out_of_the_guest_until_it_is_cleared() {
    let mut world = world(2, 1, SeptBusyDesign::KickAndBlock);
    let host = world.host.clone();
    host.kvm_tds[&TD].wait_for_sept_zap.set(true);
    let entries_while_set = Rc::new(Cell::new(u64::MAX));
    world.task(0, 0, "vcpu", move |cpu| async move {
        assert_eq!(kvm_vcpu_ioctl_run(&cpu, TD, 0, worker(10_000), None).await, Ok(()));
    });
    let seen = entries_while_set.clone();
    world.task(1, 300_000, "zapper", move |cpu| async move {
        seen.set(cpu.host().stats.borrow().vcpu_entries);
        cpu.host().kvm_tds[&TD].wait_for_sept_zap.set(false);
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    assert_eq!(entries_while_set.get(), 0, "no TDH.VP.ENTER while the flag was set");
    let stats = host.stats.borrow();
    assert!(stats.vcpu_entries_blocked > 10, "{}", stats.vcpu_entries_blocked);
    assert!(stats.vcpu_entries > 0);
}

#[test]
fn the_vmm_stopping_a_vcpu_ends_kvm_run_and_a_dead_vm_answers_eio() {
    let mut world = world(2, 2, SeptBusyDesign::KickAndBlock);
    let results = Rc::new(RefCell::new(Vec::new()));
    let (stopped, dead) = (results.clone(), results.clone());
    world.task(0, 0, "stopped", move |cpu| async move {
        let hostile = GuestProgram { hostile: true, ..worker(1_000) };
        let result = kvm_vcpu_ioctl_run(&cpu, TD, 0, hostile, Some(300_000)).await;
        stopped.borrow_mut().push(result);
    });
    world.task(1, 0, "killed", move |cpu| async move {
        let kvm = &cpu.host().kvm_tds[&TD];
        kvm.vm_dead.set(true);
        kvm.vcpus[1].make_request(request::VM_DEAD);
        let result = kvm_vcpu_ioctl_run(&cpu, TD, 1, worker(1_000), None).await;
        dead.borrow_mut().push(result);
    });
    let report = world.run();
    assert_eq!(report.outcome.kind, OutcomeKind::Pass, "{}", report.outcome);
    let results = results.borrow();
    assert!(results.contains(&Ok(())) && results.contains(&Err(Errno::EIO)), "{results:?}");
    assert!(report.end.0 >= 300_000, "the hostile guest ran until its VMM stopped it");
}
