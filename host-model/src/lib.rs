//! Linux as the TDX module sees it: kernel primitives and the host algorithms.
//!
//! host-model reaches the module only through SEAMCALL (`tdx::seamcall`) and the named
//! hardware view (`kernel::arch`); it checks no invariant: it reports to an `Observer`.
//!
//! Modules:
//! - `host`: `Host`, the kernel state of one run, its config and its costs.
//! - `observe`: `Observer`, the points a checker observes (SEAMCALL returns, frees, ...).
//! - `kernel`: spinlock, rwlock, atomics, page allocator, the `Cpu` handle, `Errno`.
//! - `tdx::enable`: TDX enabling and CPU hotplug in every `host.enable` design.
//! - `seamldr::update`: the runtime module update in every `host.update` design.
//! - `kvm::main`: KVM's usage count, hardware enable, TD creation.
//! - `tdx::seamcall`: the SEAMCALL wrapper.
//! - `tdx::dpamt`: `tdx_pamt_get` / `tdx_pamt_put` in every published design.
//! - `kvm::mmu`: the private-page fault and zap paths.
//! - `workload`: generated workloads (`[[workload]]`): VMM and vCPU threads of TD boots,
//!   churn, fault, zap and ACCEPT storms.
pub mod host;
pub mod kernel;
pub mod kvm;
pub mod observe;
pub mod seamldr;
pub mod tdx;
pub mod workload;

pub use host::{Host, HostConfig, HostCosts, HostStats};
pub use kernel::Errno;
pub use kernel::cpu::Cpu;
pub use tdx::dpamt::DpamtDesign;
