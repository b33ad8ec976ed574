//! KVM's TDX paths that issue SEAMCALLs (arch/x86/kvm/vmx/tdx.c, arch/x86/kvm/mmu/).
//!
//! - `mmu`: the private-page fault and zap paths, with DPAMT get/put around them.
pub mod mmu;
