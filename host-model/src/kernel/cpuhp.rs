//! CPU hotplug: the online mask, `cpu_up()` / `cpu_down()`, and dynamic cpuhp states whose
//! callbacks run on the CPU concerned and can refuse the transition.
//!
//! Kernel: kernel/cpu.c (`cpuhp_setup_state()`, `_cpu_up()`, `_cpu_down()`).

use std::rc::Rc;

use sim_core::{CpuId, TaskPriority};

use super::Errno;
use super::completion::{Completion, OnCpu, spawn_on_cpu};
use super::cpu::Cpu;
use super::lockdep::{lockdep_assert_cpus_held, might_sleep};
use super::mutex::{down_read, down_write, up_read, up_write};

/// A startup or teardown callback; it runs on the CPU coming up or going down.
pub type CpuhpCallback = OnCpu<Result<(), Errno>>;

/// One dynamic state (`CPUHP_AP_ONLINE_DYN`), e.g. "virt/tdx:online".
#[derive(Clone)]
pub struct CpuhpState {
    pub name: &'static str,
    pub startup: CpuhpCallback,
    pub teardown: Option<CpuhpCallback>,
}

/// Runs `callback` in the hotplug thread of `target` and waits for it.
async fn run_on(cpu: &Cpu, target: CpuId, callback: &CpuhpCallback) -> Result<(), Errno> {
    // The hotplug core holds cpu_hotplug_lock (for read or write) around every callback.
    lockdep_assert_cpus_held(cpu, "cpuhp_invoke_callback");
    let done = Rc::new(Completion::new(cpu));
    let name = format!("cpuhp/{}", target.0);
    let result = spawn_on_cpu(cpu, target, TaskPriority::Normal, name, callback.clone(), done.clone());
    done.wait(cpu, "a cpuhp callback").await;
    result.borrow_mut().take().expect("the completion fires after the result is stored")
}

async fn teardown_on(cpu: &Cpu, targets: &[CpuId], state: &CpuhpState) {
    if let Some(teardown) = &state.teardown {
        for &target in targets.iter().rev() {
            // Teardown during a rollback cannot refuse; its result is not looked at.
            let _ = run_on(cpu, target, teardown).await;
        }
    }
}

/// `cpuhp_setup_state_cpuslocked()`: runs the startup callback on every online CPU; if one
/// fails, tears down where it succeeded and installs nothing. The caller holds
/// `cpus_read_lock()`.
pub async fn cpuhp_setup_state_cpuslocked(cpu: &Cpu, state: CpuhpState) -> Result<(), Errno> {
    lockdep_assert_cpus_held(cpu, "cpuhp_setup_state_cpuslocked");
    let online = cpu.sim.with(|engine| engine.online_cpus());
    for (index, &target) in online.iter().enumerate() {
        if let Err(errno) = run_on(cpu, target, &state.startup).await {
            teardown_on(cpu, &online[..index], &state).await;
            return Err(errno);
        }
    }
    cpu.host().cpuhp_states.borrow_mut().push(state);
    Ok(())
}

/// `cpuhp_setup_state()`: the same under `cpus_read_lock()`.
pub async fn cpuhp_setup_state(cpu: &Cpu, state: CpuhpState) -> Result<(), Errno> {
    might_sleep(cpu, "cpuhp_setup_state");
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    down_read(cpu, hotplug_lock).await;
    let result = cpuhp_setup_state_cpuslocked(cpu, state).await;
    up_read(cpu, hotplug_lock);
    result
}

/// `cpuhp_remove_state()`: tears the state down on every online CPU and forgets it.
pub async fn cpuhp_remove_state(cpu: &Cpu, name: &'static str) {
    might_sleep(cpu, "cpuhp_remove_state");
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    down_read(cpu, hotplug_lock).await;
    let state = {
        let mut states = cpu.host().cpuhp_states.borrow_mut();
        let position = states.iter().position(|state| state.name == name);
        position.map(|position| states.remove(position))
    };
    if let Some(state) = state {
        let online = cpu.sim.with(|engine| engine.online_cpus());
        teardown_on(cpu, &online, &state).await;
    }
    up_read(cpu, hotplug_lock);
}

/// `cpu_up()`: brings `target` online under `cpus_write_lock()` and runs every installed
/// state's startup callback on it; a failing callback rolls the CPU back offline.
pub async fn cpu_up(cpu: &Cpu, target: CpuId) -> Result<(), Errno> {
    might_sleep(cpu, "cpu_up");
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    down_write(cpu, hotplug_lock, cpu.host().costs.cpus_write_lock).await;
    let result = cpu_up_locked(cpu, target).await;
    up_write(cpu, hotplug_lock);
    result
}

async fn cpu_up_locked(cpu: &Cpu, target: CpuId) -> Result<(), Errno> {
    lockdep_assert_cpus_held(cpu, "_cpu_up");
    if cpu.sim.with(|engine| engine.cpu(target).online) {
        return Err(Errno::EINVAL);
    }
    cpu.work(cpu.host().costs.cpu_bringup).await;
    cpu.sim.with(|engine| engine.set_cpu_online(target, true));
    let states = cpu.host().cpuhp_states.borrow().clone();
    for (index, state) in states.iter().enumerate() {
        if let Err(errno) = run_on(cpu, target, &state.startup).await {
            for done in states[..index].iter().rev() {
                teardown_on(cpu, &[target], done).await;
            }
            cpu.sim.with(|engine| engine.set_cpu_online(target, false));
            return Err(errno);
        }
    }
    Ok(())
}

/// `cpu_down()`: runs the teardown callbacks on `target` under `cpus_write_lock()`; one
/// that refuses (-EBUSY) rolls the others back and `target` stays online.
pub async fn cpu_down(cpu: &Cpu, target: CpuId) -> Result<(), Errno> {
    might_sleep(cpu, "cpu_down");
    let hotplug_lock = cpu.host().cpu_hotplug_lock;
    down_write(cpu, hotplug_lock, cpu.host().costs.cpus_write_lock).await;
    let result = cpu_down_locked(cpu, target).await;
    up_write(cpu, hotplug_lock);
    result
}

async fn cpu_down_locked(cpu: &Cpu, target: CpuId) -> Result<(), Errno> {
    lockdep_assert_cpus_held(cpu, "_cpu_down");
    if !cpu.sim.with(|engine| engine.cpu(target).online) {
        return Err(Errno::EINVAL);
    }
    let states = cpu.host().cpuhp_states.borrow().clone();
    for (index, state) in states.iter().enumerate().rev() {
        let Some(teardown) = &state.teardown else { continue };
        if let Err(errno) = run_on(cpu, target, teardown).await {
            for undone in &states[index + 1..] {
                let _ = run_on(cpu, target, &undone.startup).await;
            }
            return Err(errno);
        }
    }
    cpu.sim.with(|engine| engine.set_cpu_online(target, false));
    crate::tdx::enable::tdx_cpu_went_offline(cpu, target);
    super::arch::reset_lp(cpu, target);
    Ok(())
}
