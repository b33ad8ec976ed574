//! Linux as the TDX module sees it: kernel primitives and the host algorithms.
//!
//! host-model reaches the module only through SEAMCALL (`tdx::seamcall`), the named
//! hardware view (`kernel::arch`) and the guest's TDCALLs and memory accesses (`guest`); it
//! checks no invariant: it reports to an `Observer`.
//!
//! Modules:
//! - `host`: `Host`, the kernel state of one run, its config and its costs.
//! - `observe`: `Observer`, the points a checker observes (SEAMCALL returns, frees, ...).
//! - `kernel`: spinlock, rwlock, atomics, page allocator, the `Cpu` handle, `Errno`.
//! - `tdx::enable`: TDX enabling and CPU hotplug in every `host.enable` design.
//! - `seamldr::update`: the runtime module update in every `host.update` design.
//! - `kvm`: KVM's TDX paths: TD build and teardown, KVM_RUN, the S-EPT fault and zap paths
//!   in every `host.sept_busy` design, memslot deletion.
//! - `guest`: the TD's own software as the host sees it: pages touched, ACCEPTs.
//! - `tdx::seamcall`: the SEAMCALL wrapper, TDH.VP.ENTER's split around the guest run.
//! - `tdx::dpamt`: `tdx_pamt_get` / `tdx_pamt_put` in every published design.
//! - `workload`: generated workloads (`[[workload]]`): VMM and vCPU threads of TD boots,
//!   churn, fault, zap and ACCEPT storms.
pub mod guest;
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
pub use kvm::design::SeptBusyDesign;
pub use tdx::dpamt::DpamtDesign;
