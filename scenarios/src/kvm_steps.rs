//! The KVM steps of a run: what each runs in host-model, how a trace names it, and the TDs,
//! vCPUs and memslots the host must know before the run starts.

use std::collections::{BTreeMap, BTreeSet};

use host_model::kvm::memslot::{MemslotChange, kvm_set_memory_region};
use host_model::kvm::tdx_init::{
    TdCreate, kvm_tdx_finalize_vm, kvm_tdx_init_mem_region, kvm_tdx_init_vcpu, td_create,
};
use host_model::kvm::teardown::kvm_destroy_vm;
use host_model::kvm::vcpu::kvm_vcpu_ioctl_run;
use host_model::kvm::vm::KvmTdConfig;
use host_model::{Cpu, Errno};
use seam_model::{Gpa, Hpa, LeafCall, TdId};

use crate::schema::{Call, Scenario};

/// Runs a KVM step (`None` for a call that is not one).
pub async fn run_kvm_step(cpu: &Cpu, call: &Call) -> Option<Result<(), Errno>> {
    Some(match *call {
        Call::TdCreate { td, vcpus: _, build_cycles, init_vcpus, finalize } => {
            td_create(cpu, TdId(td), TdCreate { init_vcpus, build_cycles, finalize }).await
        }
        Call::VcpuInit { td, vcpu } => kvm_tdx_init_vcpu(cpu, TdId(td), vcpu).await,
        Call::InitMemRegion { td, vcpu, gpa, count, page } => {
            kvm_tdx_init_mem_region(cpu, TdId(td), vcpu, gpa, count, page.map(Hpa)).await
        }
        Call::TdFinalize { td } => kvm_tdx_finalize_vm(cpu, TdId(td)).await,
        Call::VcpuRun { td, vcpu, ref guest, run_cycles, .. } => {
            kvm_vcpu_ioctl_run(cpu, TdId(td), vcpu, guest.clone(), run_cycles).await
        }
        Call::MemslotDelete { td, gpa, count } => {
            kvm_set_memory_region(cpu, TdId(td), Gpa(gpa), u64::from(count), MemslotChange::Delete).await
        }
        Call::TdDestroy { td } => kvm_destroy_vm(cpu, TdId(td)).await,
        _ => return None,
    })
}

/// How a trace names a KVM step (`None` for a call that is not one).
pub fn kvm_step_label(call: &Call) -> Option<String> {
    Some(match call {
        Call::TdCreate { td, vcpus, init_vcpus, finalize, .. } => {
            let mut label = format!("td_create(TD {td}, {vcpus} vCPUs");
            if !init_vcpus {
                label += ", vCPUs not initialised";
            }
            if !finalize {
                label += ", not finalised";
            }
            label + ")"
        }
        Call::VcpuInit { td, vcpu } => format!("vcpu_init(TD {td} vCPU {vcpu})"),
        Call::InitMemRegion { td, vcpu, gpa, count, .. } => {
            format!("init_mem_region(TD {td} vCPU {vcpu}, {gpa:#x} x{count})")
        }
        Call::TdFinalize { td } => format!("td_finalize(TD {td})"),
        Call::VcpuRun { td, vcpu, guest, accept_step, .. } => {
            let name = if *accept_step { "guest_accept" } else { "vcpu_run" };
            let hostile = if guest.hostile { ", hostile" } else { "" };
            format!("{name}(TD {td} vCPU {vcpu}, {:#x} x{}{hostile})", guest.gpa, guest.pages)
        }
        Call::MemslotDelete { td, gpa, count } => format!("memslot_delete(TD {td}, {gpa:#x} x{count})"),
        Call::TdDestroy { td } => format!("td_destroy(TD {td})"),
        _ => return None,
    })
}

/// The TDs a scenario's steps name, as the host must know them: their vCPUs, the memslots
/// steps delete, and whether they exist from the start (no `td_create` builds them). Also
/// the TDs that exist from the start, for the module.
pub fn scenario_tds(scenario: &Scenario) -> (Vec<TdId>, Vec<KvmTdConfig>) {
    let steps = || scenario.tasks.iter().flat_map(|task| &task.steps);
    let mut created: BTreeMap<u32, u32> = BTreeMap::new();
    for step in steps() {
        if let Call::TdCreate { td, vcpus, .. } = step.call {
            created.entry(td).or_insert(vcpus);
        }
    }
    let mut named: BTreeSet<u32> = BTreeSet::new();
    let mut vcpus_used: BTreeMap<u32, u32> = BTreeMap::new();
    let mut memslots: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for step in steps() {
        match &step.call {
            Call::TdpFault { td, .. }
            | Call::Zap { td, .. }
            | Call::TdDestroy { td }
            | Call::TdFinalize { td } => {
                named.insert(*td);
            }
            Call::VcpuRun { td, vcpu, .. }
            | Call::VcpuInit { td, vcpu }
            | Call::InitMemRegion { td, vcpu, .. } => {
                named.insert(*td);
                let used = vcpus_used.entry(*td).or_default();
                *used = (*used).max(vcpu + 1);
            }
            Call::MemslotDelete { td, gpa, count } => {
                named.insert(*td);
                let slots = memslots.entry(*td).or_default();
                if !slots.contains(&(*gpa, u64::from(*count))) {
                    slots.push((*gpa, u64::from(*count)));
                }
            }
            Call::Seamcall(
                LeafCall::PageAug { td, .. }
                | LeafCall::PageRemove { td, .. }
                | LeafCall::RangeBlock { td, .. }
                | LeafCall::Track { td },
            ) => {
                named.insert(td.0);
            }
            _ => {}
        }
    }
    named.extend(created.keys().copied());
    let mut configs: Vec<KvmTdConfig> = named
        .iter()
        .map(|&td| KvmTdConfig {
            td: TdId(td),
            vcpus: created.get(&td).copied().unwrap_or_else(|| vcpus_used.get(&td).copied().unwrap_or(0)),
            memslots: memslots.get(&td).cloned().unwrap_or_default(),
            exists: !created.contains_key(&td),
        })
        .collect();
    // A workload's TDs: the loader keeps them apart from the steps' TDs.
    for load in &scenario.workloads {
        configs.extend(load.td_ids().map(|td| KvmTdConfig {
            td,
            vcpus: load.vcpus_per_td,
            memslots: load.memslots(),
            exists: !load.kind.builds_tds(),
        }));
    }
    let existing = configs.iter().filter(|config| config.exists).map(|config| config.td).collect();
    (existing, configs)
}
