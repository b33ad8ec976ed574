//! The kernel's context assertions, executable: `lockdep_assert_held()`,
//! `lockdep_assert_irqs_disabled()`, `lockdep_assert_cpus_held()`, `might_sleep()` and the
//! like. A broken one is a bug in the kernel model (or a design that breaks the kernel's
//! rules), not a finding about the design: the run ends in `error` naming the function.

use sim_core::ResourceId;

use super::cpu::Cpu;

/// `lockdep_assert_held(lock)` in `function`: this task holds `lock` (in any mode).
pub fn lockdep_assert_held(cpu: &Cpu, lock: ResourceId, function: &str) {
    let held = cpu.sim.with(|engine| engine.holds(lock, cpu.task).is_some());
    if !held {
        let name = cpu.sim.with(|engine| engine.resource_name(lock).to_string());
        cpu.precondition_failed(function, format!("lockdep_assert_held({name}) failed"));
    }
}

/// `lockdep_assert_held_write(lock)` in `function`: this task holds `lock` exclusively.
pub fn lockdep_assert_held_write(cpu: &Cpu, lock: ResourceId, function: &str) {
    let mode = cpu.sim.with(|engine| engine.holds(lock, cpu.task));
    if mode != Some(sim_core::Mode::Exclusive) {
        let name = cpu.sim.with(|engine| engine.resource_name(lock).to_string());
        cpu.precondition_failed(function, format!("lockdep_assert_held_write({name}) failed"));
    }
}

/// `lockdep_assert_irqs_disabled()` in `function`.
pub fn lockdep_assert_irqs_disabled(cpu: &Cpu, function: &str) {
    if !cpu.irqs_disabled() {
        cpu.precondition_failed(function, "lockdep_assert_irqs_disabled() failed: IRQs are on");
    }
}

/// `lockdep_assert_irqs_enabled()` in `function`.
pub fn lockdep_assert_irqs_enabled(cpu: &Cpu, function: &str) {
    if cpu.irqs_disabled() {
        cpu.precondition_failed(function, "lockdep_assert_irqs_enabled() failed: IRQs are off");
    }
}

/// `lockdep_assert_preemption_disabled()` in `function` (also true with IRQs off).
pub fn lockdep_assert_preemption_disabled(cpu: &Cpu, function: &str) {
    if cpu.preempt_count() == 0 && !cpu.irqs_disabled() {
        cpu.precondition_failed(function, "lockdep_assert_preemption_disabled() failed: preemptible");
    }
}

/// `lockdep_assert_cpus_held()` in `function`: this task holds `cpu_hotplug_lock`.
pub fn lockdep_assert_cpus_held(cpu: &Cpu, function: &str) {
    let lock = cpu.host().cpu_hotplug_lock.resource;
    if cpu.sim.with(|engine| engine.holds(lock, cpu.task).is_none()) {
        cpu.precondition_failed(function, "lockdep_assert_cpus_held() failed: cpu_hotplug_lock is not held");
    }
}

/// `function` must not run in interrupt context (an IPI handler): the DPAMT spinlock is a
/// plain `spin_lock()`, never taken from IRQ context (spec host-algorithms §6, item 6).
pub fn lockdep_assert_not_in_irq(cpu: &Cpu, function: &str) {
    let priority = cpu.sim.with(|engine| engine.task_priority(cpu.task));
    if priority == sim_core::TaskPriority::Irq {
        cpu.precondition_failed(function, "called from interrupt context (an IPI handler)");
    }
}

/// `might_sleep()` in `function`: "BUG: sleeping function called from invalid context"
/// when preemption or IRQs are off.
pub fn might_sleep(cpu: &Cpu, function: &str) {
    let preempt_count = cpu.preempt_count();
    if preempt_count > 0 || cpu.irqs_disabled() {
        cpu.precondition_failed(
            function,
            format!(
                "sleeping function called from invalid context (preempt_count {preempt_count}, irqs_disabled {})",
                cpu.irqs_disabled()
            ),
        );
    }
}

/// A "cannot fail" of `function` that failed: the kernel's comment says this does not
/// happen, so the model asserts it.
pub fn cannot_fail(cpu: &Cpu, holds: bool, function: &str, what: impl FnOnce() -> String) {
    if !holds {
        cpu.precondition_failed(function, format!("cannot fail, but {}", what()));
    }
}
