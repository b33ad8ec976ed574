//! KVM's TDX paths (arch/x86/kvm/vmx/tdx.c, arch/x86/kvm/mmu/, virt/kvm/), one function per
//! kernel function.
//!
//! - `design`: `host.sept_busy`, the S-EPT SEAMCALL retry policy by kernel version.
//! - `vm`: per-TD and per-vCPU state, the mirror S-EPT, memslots, requests, the kick, the
//!   6.19 TD state guard.
//! - `gfn_map`: `GfnMap`, 4 bytes of state per GFN for the mirror leaves and guest_memfd.
//! - `fault_stats`: `FaultTimer`, the latency of each resolved private-page fault.
//! - `main`: KVM's usage count, hardware enable, `tdx_lock`, control pages.
//! - `tdx_init`: building a TD through its ioctls (group 1: PAGE.ADD).
//! - `vcpu`: KVM_RUN: the run loop, guest entry, TDH.VP.ENTER, exits.
//! - `tdx_fault`: group 2: the EPT-violation handler and its local retry, the TDP MMU fault
//!   (SEPT.ADD, PAGE.AUG), the prefault.
//! - `mmu`: group 3: zaps through `tdh_do_no_vcpus()`, `tdx_track()`, the punch-hole zap.
//! - `memslot`: memslot deletion with its SRCU synchronisation.
//! - `teardown`: TD destruction: HKID release and page reclaim.
//! - `coalesce`: not kernel code: coalesced fault rounds of a booting guest
//!   (`coalesce_faults`), the simulator's approximation for boots of millions of faults.
pub mod coalesce;
pub mod design;
pub mod fault_stats;
pub mod gfn_map;
pub mod main;
pub mod memslot;
pub mod mmu;
pub mod tdx_fault;
pub mod tdx_init;
pub mod teardown;
pub mod vcpu;
pub mod vm;
