//! Generated workloads (`[[workload]]`): host tasks built from the KVM and TDX algorithms,
//! parameterised by the scenario, as a VMM would drive them — a thread per TD that creates,
//! builds and destroys it, a thread per vCPU that runs its guest.
//!
//! The work is generated lazily: a thread knows where it is in its loop, never a list of
//! what is left, and the guest's pages are a range and a cursor. A boot of 10 TDs of
//! 16 GiB (about 42 million faults) holds 10 VMM threads and a thread per vCPU, whatever
//! its length; what grows with the memory touched is the models' per-page state (a few
//! bits to a few bytes a page: seam-model's footprint test, the page allocator's bitmap).
//!
//! - `spec`: `Workload`, what the loader validated.
//! - `ops`: the KVM ioctls a VMM thread issues (create and build, KVM_RUN, punch-hole,
//!   destroy), each on the host function that models it.
//! - this file: the threads of each kind.

pub mod ops;
pub mod spec;

use std::rc::Rc;

use seam_model::{PAGE_SIZE, TdId};
use sim_core::{CpuId, Cycle, Executor, Span, TaskPriority};

use crate::host::Host;
use crate::kernel::Errno;
use crate::kernel::completion::{Completion, OnCpu, spawn_on_cpu};
use crate::kernel::cpu::Cpu;
use crate::kernel::random::get_random_u32_below;
use crate::kvm::vcpu::vmm_signal_vcpu;
pub use spec::{Locality, Workload, WorkloadKind, ZapMode};

/// Trace mark code of a workload's own events (a TD's life starting and ending); `a` is
/// the TD, `b` the round.
pub const MARK_WORKLOAD: u32 = 11;

/// Spawns the threads of every workload: one VMM thread per TD, starting at the workload's
/// `start`; the VMM threads spawn the vCPU threads (and a storm's host thread) themselves.
pub fn spawn_workloads(executor: &mut Executor, host: &Rc<Host>, workloads: &[Workload]) {
    for load in workloads {
        let load = Rc::new(load.clone());
        for (index, td) in load.td_ids().enumerate() {
            let cpu_id = CpuId(load.cpu_of(index as u64));
            let host = host.clone();
            let load = load.clone();
            let name = format!("vmm/TD {}", td.0);
            executor.spawn(cpu_id, Cycle(load.start), name, move |ctx| async move {
                let cpu = Cpu::new(ctx.sim.clone(), ctx.cpu, ctx.task, host);
                vmm_thread(&cpu, &load, td, index as u64).await;
            });
        }
    }
}

/// The VMM's main thread of TD `td` (the `index`-th of its workload).
async fn vmm_thread(cpu: &Cpu, load: &Rc<Workload>, td: TdId, index: u64) {
    let result = match load.kind {
        WorkloadKind::TdBoot => td_life(cpu, load, td, index, 0).await,
        WorkloadKind::TdChurn => {
            let mut result = Ok(());
            for round in 0..load.rounds {
                result = td_life(cpu, load, td, index, round).await;
                if result.is_err() {
                    break;
                }
                result = ops::destroy_td(cpu, td).await;
                if result.is_err() {
                    break;
                }
                cpu.progress();
            }
            result
        }
        WorkloadKind::FaultStorm | WorkloadKind::ZapStorm | WorkloadKind::GuestAcceptStorm => {
            run_vcpus(cpu, load, td, index).await
        }
    };
    if let Err(errno) = result {
        cpu.warn(load.kind.name(), format!("TD {}: the VMM's ioctl returned -{errno}", td.0));
    }
}

/// One life of a TD: create and build it (PAGE.ADD of the initial image), then run its
/// vCPUs until their guests are done.
async fn td_life(cpu: &Cpu, load: &Rc<Workload>, td: TdId, index: u64, round: u32) -> Result<(), Errno> {
    cpu.mark(Span::Begin, MARK_WORKLOAD, u64::from(td.0), u64::from(round), || {
        format!("{} TD {} (round {round})", load.kind.name(), td.0)
    });
    ops::build_td(cpu, load, td).await?;
    cpu.progress();
    let result = run_vcpus(cpu, load, td, index).await;
    cpu.mark(Span::End, MARK_WORKLOAD, u64::from(td.0), u64::from(round), || {
        format!("{} TD {} booted", load.kind.name(), td.0)
    });
    result
}

/// Spawns a thread per vCPU of `td` (and, for an ACCEPT storm, the host thread that
/// removes pages), and waits for all of them (`pthread_join()`); the first error wins.
async fn run_vcpus(cpu: &Cpu, load: &Rc<Workload>, td: TdId, index: u64) -> Result<(), Errno> {
    let mut threads = Vec::new();
    // An ACCEPT storm's host thread starts removing once every guest is hostile.
    let hostile: Rc<[Completion]> = match load.kind {
        WorkloadKind::GuestAcceptStorm => (0..load.vcpus_per_td).map(|_| Completion::new(cpu)).collect(),
        WorkloadKind::TdBoot | WorkloadKind::TdChurn | WorkloadKind::FaultStorm | WorkloadKind::ZapStorm => {
            Rc::new([])
        }
    };
    for vcpu in 0..load.vcpus_per_td {
        let target = CpuId(load.cpu_of(index * u64::from(load.vcpus_per_td) + u64::from(vcpu)));
        let load = load.clone();
        let hostile = hostile.clone();
        let body: OnCpu<Result<(), Errno>> = Rc::new(move |on: Cpu| {
            let load = load.clone();
            let hostile = hostile.clone();
            Box::pin(async move { vcpu_thread(&on, &load, td, vcpu, &hostile).await })
        });
        threads.push(spawn_thread(cpu, target, format!("vcpu/TD {}/{vcpu}", td.0), body));
    }
    match load.kind {
        WorkloadKind::GuestAcceptStorm => {
            // On the CPU after the TD's vCPUs, so it is not queued behind one of them.
            let target = CpuId(load.cpu_of((index + 1) * u64::from(load.vcpus_per_td)));
            let load = load.clone();
            let body: OnCpu<Result<(), Errno>> = Rc::new(move |on: Cpu| {
                let load = load.clone();
                let hostile = hostile.clone();
                Box::pin(async move { remover_thread(&on, &load, td, &hostile).await })
            });
            threads.push(spawn_thread(cpu, target, format!("remove/TD {}", td.0), body));
        }
        WorkloadKind::TdBoot | WorkloadKind::TdChurn | WorkloadKind::FaultStorm | WorkloadKind::ZapStorm => {}
    }
    let mut result = Ok(());
    for thread in &threads {
        let ret = join(cpu, thread).await;
        result = result.and(ret);
    }
    result
}

/// A thread of the VMM: its result, and the completion its join waits for.
type Thread = (Rc<std::cell::RefCell<Option<Result<(), Errno>>>>, Rc<Completion>);

/// `pthread_create()` of a VMM thread on `target` running `body`.
fn spawn_thread(cpu: &Cpu, target: CpuId, name: String, body: OnCpu<Result<(), Errno>>) -> Thread {
    let done = Rc::new(Completion::new(cpu));
    (spawn_on_cpu(cpu, target, TaskPriority::Normal, name, body, done.clone()), done)
}

/// `pthread_join()`: waits until the thread returns; its result.
async fn join(cpu: &Cpu, thread: &Thread) -> Result<(), Errno> {
    thread.1.wait(cpu, "a VMM thread (pthread_join)").await;
    // Joined: the VMM moves on (its wait was the thread's progress, not a stall).
    cpu.progress();
    thread.0.borrow_mut().take().expect("a joined thread stored its result")
}

/// vCPU `vcpu`'s thread: KVM_RUN with the guest of the workload's kind, and what the VMM
/// does on this thread when the guest asks (a conversion's punch-hole).
/// In an ACCEPT storm, `hostile[vcpu]` completes when this guest has touched its part, and
/// the guests turn hostile together (the VMM's barrier across its vCPU threads).
async fn vcpu_thread(
    cpu: &Cpu,
    load: &Workload,
    td: TdId,
    vcpu: u32,
    hostile: &[Completion],
) -> Result<(), Errno> {
    let share = load.vcpu_share(vcpu);
    if let Some(done) = hostile.get(vcpu as usize) {
        done.expect_completer(cpu, cpu.task);
    }
    if load.coalesce_faults > 1
        && let Ok(state) = crate::kvm::vm::kvm_get_vcpu(crate::kvm::vm::kvm_td(cpu, td), vcpu)
    {
        crate::kvm::coalesce::enable(&state, load.coalesce_faults);
    }
    let touched = ops::run_guest(cpu, load, td, vcpu, share, true).await;
    if let Some(done) = hostile.get(vcpu as usize) {
        done.complete(cpu);
        for other in hostile {
            other.wait(cpu, "the other vCPUs' guests to turn hostile").await;
        }
        cpu.progress();
    }
    touched?;
    match load.kind {
        WorkloadKind::TdBoot | WorkloadKind::TdChurn => Ok(()),
        WorkloadKind::FaultStorm => {
            for _ in 1..load.rounds {
                // The guest converts its memory to shared and back (KVM_HC_MAP_GPA_RANGE,
                // handled by the VMM on this thread): punch-hole, then accept it again.
                ops::punch_hole(cpu, td, share.0, share.1).await?;
                ops::run_guest(cpu, load, td, vcpu, share, true).await?;
            }
            Ok(())
        }
        WorkloadKind::ZapStorm => {
            let (hole_pages, places) = load.holes(vcpu);
            for _ in 0..load.rounds {
                if hole_pages == 0 {
                    break;
                }
                let place = u64::from(get_random_u32_below(cpu, u32::try_from(places).unwrap_or(u32::MAX)));
                let hole = load.hole(vcpu, place);
                let memslot = match load.zap {
                    ZapMode::PunchHole => false,
                    ZapMode::Memslot => true,
                    ZapMode::Mixed => get_random_u32_below(cpu, 2) == 1,
                };
                if memslot {
                    // The VMM deletes the hole's memslot and creates it again, while the
                    // other vCPUs fault (SRCU readers, mmu_lock read against the zap).
                    ops::memslot_change(cpu, td, hole.0, hole.1).await?;
                } else {
                    // The guest converts the hole to shared and back.
                    ops::punch_hole(cpu, td, hole.0, hole.1).await?;
                }
                ops::run_guest(cpu, load, td, vcpu, hole, true).await?;
            }
            Ok(())
        }
        WorkloadKind::GuestAcceptStorm => {
            // Hostile from here: re-ACCEPT the first page until the host thread, done,
            // signals this thread.
            ops::run_hostile_guest(cpu, load, td, vcpu, share.0).await
        }
    }
}

/// An ACCEPT storm's host thread: once every guest is hostile, every `zap_interval` removes
/// `zap_size` of memory at the GPA one hostile guest re-ACCEPTs (the vCPUs in turn), `rounds`
/// times: PAGE.REMOVE against the guests' host-priority ACCEPTs.
/// One `zap_interval` after its last removal (or its error), it signals the vCPU threads,
/// which stops the guests.
async fn remover_thread(cpu: &Cpu, load: &Workload, td: TdId, hostile: &[Completion]) -> Result<(), Errno> {
    for guest in hostile {
        guest.wait(cpu, "the guests to turn hostile").await;
    }
    cpu.progress();
    let result = remove_rounds(cpu, load, td).await;
    cpu.sim.sleep(load.zap_interval).await;
    for vcpu in 0..load.vcpus_per_td {
        vmm_signal_vcpu(cpu, td, vcpu).await;
    }
    result
}

/// The remover's `rounds` removals, a `zap_interval` before each.
async fn remove_rounds(cpu: &Cpu, load: &Workload, td: TdId) -> Result<(), Errno> {
    for round in 0..load.rounds {
        cpu.sim.sleep(load.zap_interval).await;
        let (gpa, pages) = load.vcpu_share(round % load.vcpus_per_td);
        ops::punch_hole(cpu, td, gpa, (load.zap_size / PAGE_SIZE).min(pages)).await?;
        cpu.progress();
    }
    Ok(())
}
