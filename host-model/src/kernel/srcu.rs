//! Sleepable RCU: `srcu_read_lock()` / `srcu_read_unlock()` and `synchronize_srcu()`, as
//! KVM uses `kvm->srcu` to protect its memslots.
//!
//! A grace period waits for the readers that were inside a read section when it began,
//! not for readers that enter afterwards (SRCU's two-counter flip). The waiter parks on a
//! wait object whose parties are those readers, so a reader that never leaves its section
//! because it waits for the synchronizer is a cycle of the engine's wait-for graph, named
//! like any other deadlock.

use std::cell::RefCell;

use sim_core::{TaskId, WaitId, WaitKind};

use super::cpu::Cpu;
use super::lockdep::might_sleep;

/// A `struct srcu_struct`.
pub struct SrcuStruct {
    /// How reports name it (`kvm->srcu`).
    name: &'static str,
    /// What a waiter in `synchronize_srcu()` waits for, as the deadlock report says it.
    what: &'static str,
    /// Tasks inside a read section, with their nesting depth. invariant: every depth > 0.
    readers: RefCell<Vec<(TaskId, u32)>>,
    /// Grace periods in progress.
    grace_periods: RefCell<Vec<GracePeriod>>,
}

/// One `synchronize_srcu()` in progress.
struct GracePeriod {
    wait: WaitId,
    waiter: TaskId,
    /// The readers it waits for, with their party index. invariant: each is still a reader.
    pending: Vec<(TaskId, usize)>,
}

/// What `srcu_read_lock()` returns and `srcu_read_unlock()` takes.
#[must_use = "an SRCU read section ends with srcu_read_unlock()"]
#[derive(Debug)]
pub struct SrcuIdx(());

impl SrcuStruct {
    /// `init_srcu_struct()`. `what` is how a waiter's report names the wait
    /// (`"synchronize_srcu(&kvm->srcu)"`).
    pub fn new(name: &'static str, what: &'static str) -> SrcuStruct {
        SrcuStruct { name, what, readers: RefCell::new(Vec::new()), grace_periods: RefCell::new(Vec::new()) }
    }

    /// Whether `task` is inside a read section.
    pub fn is_reader(&self, task: TaskId) -> bool {
        self.readers.borrow().iter().any(|(reader, _)| *reader == task)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// `srcu_read_lock_held()`, or `lockdep_is_held(alternative)`, in `function`: what an
/// `srcu_dereference_check()` asserts before reading what `srcu` protects.
pub fn srcu_dereference_check(
    cpu: &Cpu,
    srcu: &SrcuStruct,
    alternative: sim_core::ResourceId,
    function: &str,
) {
    let holds = cpu.sim.with(|engine| engine.holds(alternative, cpu.task).is_some());
    if !holds && !srcu.is_reader(cpu.task) {
        let name = cpu.sim.with(|engine| engine.resource_name(alternative).to_string());
        cpu.precondition_failed(
            function,
            format!("suspicious RCU usage: neither in a read section of {} nor holding {name}", srcu.name),
        );
    }
}

/// `srcu_read_lock()`: enters a read section (per-CPU counter, no wait).
pub fn srcu_read_lock(cpu: &Cpu, srcu: &SrcuStruct) -> SrcuIdx {
    let mut readers = srcu.readers.borrow_mut();
    match readers.iter_mut().find(|(reader, _)| *reader == cpu.task) {
        Some((_, depth)) => *depth += 1,
        None => readers.push((cpu.task, 1)),
    }
    SrcuIdx(())
}

/// `srcu_read_unlock()`: leaves the read section; a grace period that waited only for this
/// reader ends.
pub fn srcu_read_unlock(cpu: &Cpu, srcu: &SrcuStruct, idx: SrcuIdx) {
    let SrcuIdx(()) = idx;
    let left = {
        let mut readers = srcu.readers.borrow_mut();
        let Some(position) = readers.iter().position(|(reader, _)| *reader == cpu.task) else {
            drop(readers);
            cpu.precondition_failed(
                "srcu_read_unlock",
                format!("not inside a read section of {}", srcu.name),
            );
            return;
        };
        readers[position].1 -= 1;
        let left = readers[position].1 == 0;
        if left {
            readers.swap_remove(position);
        }
        left
    };
    if !left {
        return;
    }
    let handoff = cpu.host().costs.spin_handoff;
    let mut grace_periods = srcu.grace_periods.borrow_mut();
    for grace_period in grace_periods.iter_mut() {
        let Some(index) = grace_period.pending.iter().position(|(reader, _)| *reader == cpu.task) else {
            continue;
        };
        let (_, party) = grace_period.pending.swap_remove(index);
        cpu.sim.with(|engine| engine.wait_party_done(grace_period.wait, party));
        if grace_period.pending.is_empty() {
            cpu.sim.with(|engine| engine.unpark(grace_period.waiter, handoff));
        }
    }
    grace_periods.retain(|grace_period| !grace_period.pending.is_empty());
}

/// `synchronize_srcu()` / `synchronize_srcu_expedited()`: sleeps until every reader that
/// was inside a read section when it was called has left it. Calling it from inside a read
/// section of the same `srcu_struct` is a self-deadlock, which lockdep reports.
pub async fn synchronize_srcu(cpu: &Cpu, srcu: &SrcuStruct) {
    might_sleep(cpu, "synchronize_srcu");
    if srcu.is_reader(cpu.task) {
        cpu.precondition_failed(
            "synchronize_srcu",
            format!("called inside a read section of {}: it would wait for itself", srcu.name),
        );
        return;
    }
    cpu.work(cpu.host().costs.synchronize_srcu).await;
    let readers: Vec<TaskId> = srcu.readers.borrow().iter().map(|(reader, _)| *reader).collect();
    if readers.is_empty() {
        return;
    }
    let wait = cpu.sim.with(|engine| engine.new_wait());
    let pending = readers
        .into_iter()
        .map(|reader| (reader, cpu.sim.with(|engine| engine.wait_add_party(wait, reader))))
        .collect();
    srcu.grace_periods.borrow_mut().push(GracePeriod { wait, waiter: cpu.task, pending });
    while srcu.grace_periods.borrow().iter().any(|grace_period| grace_period.wait == wait) {
        cpu.sim.park_on(WaitKind::Sleep, srcu.what, wait).await;
    }
}
