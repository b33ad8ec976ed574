//! The TDX host code of arch/x86/virt/vmx/tdx.
pub mod dpamt;
pub mod enable;
pub mod seamcall;
