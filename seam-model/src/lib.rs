//! The TDX module and the P-SEAMLDR, as a sans-IO state machine.
//!
//! A leaf is two calls: [`Module::begin`] takes the leaf's try-locks in the module's order
//! and answers BUSY (or an early failure) or a [`Ticket`] holding the locks;
//! [`Module::finish`] applies the effect and releases. The host sleeps for the leaf's cost
//! in between, so SEAMCALLs on other CPUs that overlap in time meet the held locks.
//! This crate never awaits and never reads a clock.
//!
//! Modules:
//! - `status`: `TdxStatus` and the real status values and operand ids.
//! - `leaf`: leaf numbers, names and default costs.
//! - `call`: `LeafCall` (typed operands) and `LeafOutput`.
//! - `lock`: the module's `sharex` and `sharex_hp` try-locks.
//! - `pamt`: the PAMT tree, per-2MB DPAMT state, the backing bitmap, 4KB page types, and
//!   per-2MB pages in use and owners.
//! - `sept`: one TD's secure EPT: its tables and its packed 4KB leaf entries.
//! - `td`: the TD state the modelled leaves need (locks, key life cycle, epoch, op_state,
//!   vCPUs).
//! - `module`: `Module`, its config, and the leaves by family (PAMT, S-EPT, TD build, vCPU,
//!   the guest run of VP.ENTER and the guest's ACCEPT, teardown).
//! - `module/lifecycle`: SEAMCALL dispatch, per-LP state, the SYS.* leaves (boot init and
//!   the TD-preserving update) and the P-SEAMLDR.

pub mod call;
#[cfg(test)]
mod footprint;
pub mod leaf;
pub mod lock;
pub mod module;
pub mod pamt;
pub mod sept;
pub mod status;
pub mod td;

pub use call::{LeafCall, LeafOutput, TdExit, TdExitReason};
pub use leaf::Leaf;
pub use lock::{Caller, HpBusy, LockMode, Sharex, SharexHp};
pub use module::{
    AcceptTicket, Begin, Entered, GuestAccept, GuestRun, Handoff, HeldLock, LeafLocks, MAX_CACHE_WB_CALLS,
    MAX_MEMORY_BYTES, Module, ModuleConfig, ModuleLock, PageRound, SysState, Ticket, ZeroStepSeptHold,
};
pub use pamt::{Dpamt2M, PageType};
pub use sept::{SeptEntry, SeptState};
pub use status::TdxStatus;
pub use td::{Lifecycle, OpState, Td, Vcpu, VcpuState};

use serde::{Deserialize, Serialize};

pub const PAGE_SIZE: u64 = 4096;
pub const RANGE_2M: u64 = 2 << 20;
pub const RANGE_1G: u64 = 1 << 30;
/// 4KB pages per 2MB range.
pub const PAGES_PER_2M: u64 = 512;

/// A host physical address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hpa(pub u64);

impl Hpa {
    /// The index of the 2MB range holding this address (`pfn >> 9`).
    pub const fn range_index(self) -> usize {
        (self.0 / RANGE_2M) as usize
    }

    /// The 2MB-aligned base of the range holding this address.
    pub const fn range_base(self) -> Hpa {
        Hpa(self.0 & !(RANGE_2M - 1))
    }

    pub const fn pfn(self) -> u64 {
        self.0 / PAGE_SIZE
    }
}

impl std::fmt::Display for Hpa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A guest physical address in a TD's private space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Gpa(pub u64);

impl std::fmt::Display for Gpa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gpa {:#x}", self.0)
    }
}

/// A trust domain, named by the scenario.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TdId(pub u32);

impl std::fmt::Display for TdId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TD {}", self.0)
    }
}
