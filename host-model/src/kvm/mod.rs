//! KVM's TDX paths that issue SEAMCALLs (arch/x86/kvm/vmx/tdx.c, arch/x86/kvm/mmu/).
//!
//! - `fault_stats`: `FaultTimer`, the latency of each resolved private-page fault.
//! - `main`: KVM's usage count, hardware enable, and TD creation.
//! - `mmu`: the private-page fault and zap paths, with DPAMT get/put around them.
pub mod fault_stats;
pub mod main;
pub mod mmu;
