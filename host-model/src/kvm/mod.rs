//! KVM's TDX paths that issue SEAMCALLs (arch/x86/kvm/vmx/tdx.c, arch/x86/kvm/mmu/).
//!
//! - `main`: KVM's usage count, hardware enable, and TD creation.
//! - `mmu`: the private-page fault and zap paths, with DPAMT get/put around them.
pub mod main;
pub mod mmu;
