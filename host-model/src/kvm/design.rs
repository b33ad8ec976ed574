//! `host.sept_busy`: KVM's S-EPT SEAMCALL retry policy, by kernel version
//! (spec/host-algorithms.md §4.7, §4.9).
//!
//! Each design is a kernel, not a single switch: the retry policy of the three SEAMCALL
//! groups changed together with the fixes around it. The questions the code asks of a
//! design are the methods below, each an exhaustive match.

/// `host.sept_busy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeptBusyDesign {
    /// Today's kernel (6.19): group 2 retries locally in `tdx_handle_ept_violation()` and
    /// leaves the loop for an invalid memslot (6.18); group 3 goes through
    /// `tdh_do_no_vcpus()` (kick and block, one retry); TD-scoped ioctls take the TD state
    /// guard (6.19).
    #[default]
    KickAndBlock,
    /// K0: the blind retry of TDX MMU part 2 (2024-11-12): each S-EPT SEAMCALL is retried
    /// in place while it answers OPERAND_BUSY on the S-EPT, up to `host.sept_retries`
    /// times; no local retry loop, no kick, no guard.
    BlindRetry,
    /// K3: the merged local retry and kick-and-block before 6.18: the local retry loop
    /// has no invalid-memslot exit (and no TD state guard).
    NoInvalidMemslotExit,
    /// K4: 6.18, before 6.19: the invalid-memslot exit, but no TD state guard, so
    /// concurrent TD-scoped ioctls meet each other's module locks.
    NoTdStateGuard,
}

impl SeptBusyDesign {
    /// Every design, in the order `host.sept_busy`'s error lists them; the first is the
    /// default.
    pub const ALL: &'static [SeptBusyDesign] = &[
        SeptBusyDesign::KickAndBlock,
        SeptBusyDesign::BlindRetry,
        SeptBusyDesign::NoInvalidMemslotExit,
        SeptBusyDesign::NoTdStateGuard,
    ];

    /// The scenario name.
    pub const fn name(self) -> &'static str {
        match self {
            SeptBusyDesign::KickAndBlock => "kick-and-block",
            SeptBusyDesign::BlindRetry => "blind-retry",
            SeptBusyDesign::NoInvalidMemslotExit => "no-invalid-memslot-exit",
            SeptBusyDesign::NoTdStateGuard => "no-td-state-guard",
        }
    }

    pub fn from_name(name: &str) -> Option<SeptBusyDesign> {
        SeptBusyDesign::ALL.iter().copied().find(|design| design.name() == name)
    }

    /// Where the design comes from, for `tdxsim list designs`.
    pub const fn source(self) -> &'static str {
        match self {
            SeptBusyDesign::KickAndBlock => {
                "current (6.19): K2 as merged (local retry, kick-and-block; Yan Zhao, TDX SEPT SEAMCALL retry, 2025-01-12) with the invalid-memslot exit (KVM x86 MMU for 6.18) and the TD state guard (KVM TDX for 6.19)"
            }
            SeptBusyDesign::BlindRetry => {
                "K0: blind retry of BUSY S-EPT SEAMCALLs with a bound, no kick (TDX MMU part 2, 2024-11-12)"
            }
            SeptBusyDesign::NoInvalidMemslotExit => {
                "K3: local retry without the invalid-memslot exit, before 6.18 (KVM x86 MMU changes for 6.18)"
            }
            SeptBusyDesign::NoTdStateGuard => {
                "K4: no TD state guard on TD-scoped ioctls, before 6.19 (KVM TDX changes for 6.19)"
            }
        }
    }

    /// `tdx_handle_ept_violation()` retries a private fault locally on RET_PF_RETRY
    /// instead of re-entering the guest (Yan Zhao's patch 3, 2025-01-12).
    pub const fn local_retry(self) -> bool {
        match self {
            SeptBusyDesign::KickAndBlock
            | SeptBusyDesign::NoInvalidMemslotExit
            | SeptBusyDesign::NoTdStateGuard => true,
            SeptBusyDesign::BlindRetry => false,
        }
    }

    /// Group 3 goes through `tdh_do_no_vcpus()`: on BUSY, set `wait_for_sept_zap`, kick
    /// every vCPU out, retry once; and `tdx_vcpu_run()` does not enter while the flag is
    /// set (patch 4).
    pub const fn kick_and_block(self) -> bool {
        match self {
            SeptBusyDesign::KickAndBlock
            | SeptBusyDesign::NoInvalidMemslotExit
            | SeptBusyDesign::NoTdStateGuard => true,
            SeptBusyDesign::BlindRetry => false,
        }
    }

    /// The local retry loop leaves when the fault's memslot is invalid, and the prefault
    /// (`kvm_tdp_map_page()`) returns -EAGAIN for one (6.18).
    pub const fn invalid_memslot_exit(self) -> bool {
        match self {
            SeptBusyDesign::KickAndBlock | SeptBusyDesign::NoTdStateGuard => true,
            SeptBusyDesign::BlindRetry | SeptBusyDesign::NoInvalidMemslotExit => false,
        }
    }

    /// TD-scoped ioctls take `kvm->lock`, every `vcpu->mutex` and `kvm->slots_lock` (6.19).
    pub const fn td_state_guard(self) -> bool {
        match self {
            SeptBusyDesign::KickAndBlock => true,
            SeptBusyDesign::BlindRetry
            | SeptBusyDesign::NoInvalidMemslotExit
            | SeptBusyDesign::NoTdStateGuard => false,
        }
    }

    /// S-EPT SEAMCALLs are retried in place while BUSY, up to `host.sept_retries` (K0).
    pub const fn blind_retry(self) -> bool {
        match self {
            SeptBusyDesign::BlindRetry => true,
            SeptBusyDesign::KickAndBlock
            | SeptBusyDesign::NoInvalidMemslotExit
            | SeptBusyDesign::NoTdStateGuard => false,
        }
    }
}

/// `host.sept_retries` when the file does not say: K0's bound on in-place retries of one
/// S-EPT SEAMCALL. [I] The posting calls the bound small and arbitrary without a number
/// here; 16 is assumed.
pub const SEPT_RETRIES_DEFAULT: u32 = 16;

/// The largest `host.sept_retries`.
pub const SEPT_RETRIES_MAX: u32 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_default_is_first() {
        assert_eq!(SeptBusyDesign::ALL[0], SeptBusyDesign::default());
        for design in SeptBusyDesign::ALL {
            assert_eq!(SeptBusyDesign::from_name(design.name()), Some(*design));
        }
        assert_eq!(SeptBusyDesign::from_name("blind-retry"), Some(SeptBusyDesign::BlindRetry));
        assert_eq!(SeptBusyDesign::from_name("kick-and-block"), Some(SeptBusyDesign::KickAndBlock));
    }

    #[test]
    fn each_later_kernel_has_what_the_earlier_had() {
        let today = SeptBusyDesign::KickAndBlock;
        assert!(today.local_retry() && today.kick_and_block() && today.invalid_memslot_exit());
        assert!(today.td_state_guard() && !today.blind_retry());
        let k4 = SeptBusyDesign::NoTdStateGuard;
        assert!(k4.invalid_memslot_exit() && !k4.td_state_guard());
        let k3 = SeptBusyDesign::NoInvalidMemslotExit;
        assert!(k3.local_retry() && !k3.invalid_memslot_exit() && !k3.td_state_guard());
        let k0 = SeptBusyDesign::BlindRetry;
        assert!(k0.blind_retry() && !k0.local_retry() && !k0.kick_and_block());
    }
}
