//! `atomic_t` operations as awaited steps: each costs an atomic RMW, and takes effect at
//! its end, so another CPU's operation in the meantime is ordered by the event queue
//! (and, on the same cycle, by the chooser).

use std::cell::Cell;

use sim_core::Span;

use super::cpu::{Cpu, cover, mark};

/// One `atomic_t` and how the trace names it.
#[derive(Clone, Copy)]
pub struct Atomic<'a> {
    pub value: &'a Cell<i32>,
    /// e.g. `pamt_refcount`; the index says which element.
    pub name: &'static str,
    pub index: usize,
    /// A DPAMT refcount, whose changes the checker observes.
    pub pamt_refcount: bool,
}

impl<'a> Atomic<'a> {
    /// `pamt_refcount[index]`, the DPAMT refcount of 2MB range `index`.
    pub fn pamt_refcount(value: &'a Cell<i32>, index: usize) -> Atomic<'a> {
        Atomic { value, name: "pamt_refcount", index, pamt_refcount: true }
    }
}

async fn rmw<R>(cpu: &Cpu, atomic: Atomic<'_>, op: &'static str, apply: impl FnOnce(i32) -> (i32, R)) -> R
where
    R: std::fmt::Debug,
{
    cpu.work(cpu.host().costs.atomic).await;
    let (old, new, result) = rmw_effect(cpu, atomic, op, apply);
    cpu.mark(
        Span::Instant,
        mark::ATOMIC,
        atomic.index as u64,
        (old as u32 as u64) << 32 | new as u32 as u64,
        || {
            let label = cpu.host().range_label(atomic.index);
            let result = format!("{result:?}");
            let result = if result == "()" { String::new() } else { format!(" = {result}") };
            format!("{op}({}[{label}]){result} ({old}->{new})", atomic.name)
        },
    );
    result
}

/// The operation's effect, observed: the value changed, coverage and the checker told.
fn rmw_effect<R>(
    cpu: &Cpu,
    atomic: Atomic<'_>,
    op: &'static str,
    apply: impl FnOnce(i32) -> (i32, R),
) -> (i32, i32, R) {
    let old = atomic.value.get();
    let (new, result) = apply(old);
    atomic.value.set(new);
    cover_reads_from(cpu, atomic, op, old, new);
    if atomic.pamt_refcount && new != old {
        let in_flight = cpu.host().pamt_in_flight[atomic.index].get();
        cpu.host().observer.pamt_refcount_changed(cpu, atomic.index, old, new, in_flight);
    }
    (old, new, result)
}

/// `atomic_inc_not_zero()` at once, for a coalesced fault round (`kvm::coalesce`, which
/// accounts its time): the same effect and observation, no cost and no trace mark.
pub fn atomic_inc_not_zero_at_once(cpu: &Cpu, atomic: Atomic<'_>) -> bool {
    rmw_effect(cpu, atomic, "atomic_inc_not_zero", |v| if v != 0 { (v + 1, true) } else { (v, false) }).2
}

/// Coverage: what the operation found (bucketed) and who wrote it last (nobody, this CPU,
/// another): the atomic's reads-from, which RFF-style exploration steers by.
fn cover_reads_from(cpu: &Cpu, atomic: Atomic<'_>, op: &'static str, old: i32, new: i32) {
    if !cpu.sim.with(|engine| engine.covering()) {
        return;
    }
    let key = (atomic.name, atomic.index);
    let mut writers = cpu.host().atomic_writers.borrow_mut();
    let from: u64 = match writers.get(&key) {
        None => 0,
        Some(&writer) if writer == cpu.id.0 => 1,
        Some(_) => 2,
    };
    if new != old {
        writers.insert(key, cpu.id.0);
    }
    drop(writers);
    // FNV-1a of the atomic's and the operation's names: the same word in every run.
    let site =
        atomic.name.bytes().chain([0]).chain(op.bytes()).fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let bucket = |value: i32| (value.clamp(-1, 3) + 1) as u64;
    cpu.cover(cover::ATOMIC, site, bucket(old) | bucket(new) << 4 | from << 8);
}

/// `atomic_read()`.
pub async fn atomic_read(cpu: &Cpu, atomic: Atomic<'_>) -> i32 {
    rmw(cpu, atomic, "atomic_read", |v| (v, v)).await
}

/// `atomic_set()`.
pub async fn atomic_set(cpu: &Cpu, atomic: Atomic<'_>, value: i32) {
    rmw(cpu, atomic, "atomic_set", |_| (value, ())).await
}

/// `atomic_inc()`.
pub async fn atomic_inc(cpu: &Cpu, atomic: Atomic<'_>) {
    rmw(cpu, atomic, "atomic_inc", |v| (v + 1, ())).await
}

/// `atomic_dec()`.
pub async fn atomic_dec(cpu: &Cpu, atomic: Atomic<'_>) {
    rmw(cpu, atomic, "atomic_dec", |v| (v - 1, ())).await
}

/// `atomic_inc_not_zero()`: increments unless the value is 0; true if it incremented.
pub async fn atomic_inc_not_zero(cpu: &Cpu, atomic: Atomic<'_>) -> bool {
    rmw(cpu, atomic, "atomic_inc_not_zero", |v| if v != 0 { (v + 1, true) } else { (v, false) }).await
}

/// `atomic_dec_and_test()`: decrements; true if the result is 0.
pub async fn atomic_dec_and_test(cpu: &Cpu, atomic: Atomic<'_>) -> bool {
    rmw(cpu, atomic, "atomic_dec_and_test", |v| (v - 1, v - 1 == 0)).await
}

/// `atomic_add_unless(v, a, u)`: adds `a` unless the value is `u`; true if it added.
pub async fn atomic_add_unless(cpu: &Cpu, atomic: Atomic<'_>, add: i32, unless: i32) -> bool {
    rmw(cpu, atomic, "atomic_add_unless", |v| if v != unless { (v + add, true) } else { (v, false) }).await
}

/// `atomic_cmpxchg()`: sets `new` if the value is `old`; returns the value it found.
pub async fn atomic_cmpxchg(cpu: &Cpu, atomic: Atomic<'_>, old: i32, new: i32) -> i32 {
    rmw(cpu, atomic, "atomic_cmpxchg", |v| if v == old { (new, v) } else { (v, v) }).await
}
