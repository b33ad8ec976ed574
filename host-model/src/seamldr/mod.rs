//! The P-SEAMLDR side of the host (arch/x86/virt/vmx/tdx/seamldr.c).
pub mod update;
