//! Latency of private-page faults, as a KVM developer measures it: from the EPT violation's
//! handling starting to the page being mapped, retries included.
//!
//! Every fault path (today `tdp_fault`; the vCPU exit handlers of the S-EPT work next)
//! brackets its handling with [`FaultTimer::start`] and [`FaultTimer::resolved`]; the
//! figures land in `HostStats::faults`. A fault that ends in an error (KVM_BUG_ON, -ENOMEM)
//! is not counted: the VM is dead or the fault is retried from the guest, and its time says
//! nothing about the mapping path.

use sim_core::{Cycle, Histogram};

use crate::kernel::cpu::Cpu;

/// Latency figures of the faults a run resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultLatency {
    /// Sum of every resolved fault's latency (cycles); `histogram.count()` is how many.
    pub total_cycles: u64,
    /// One value per resolved fault.
    pub histogram: Histogram,
}

impl FaultLatency {
    /// Faults resolved.
    pub fn faults(&self) -> u64 {
        self.histogram.count()
    }
}

/// When one fault's handling started.
#[must_use = "a started fault is recorded by `resolved`"]
pub struct FaultTimer {
    started: Cycle,
}

impl FaultTimer {
    /// The fault's handling starts now.
    pub fn start(cpu: &Cpu) -> FaultTimer {
        FaultTimer { started: cpu.sim.now() }
    }

    /// The fault's page is mapped now: record its latency, and return it.
    pub fn resolved(self, cpu: &Cpu) -> u64 {
        let latency = cpu.sim.now().since(self.started);
        record_fault(cpu, latency);
        latency
    }
}

/// One resolved fault of `latency` cycles (a coalesced one's is drawn, `kvm::coalesce`).
pub fn record_fault(cpu: &Cpu, latency: u64) {
    let mut stats = cpu.host().stats.borrow_mut();
    stats.faults.total_cycles += latency;
    stats.faults.histogram.record(latency);
}
