//! What the host shows whoever checks a run: the points a checker observes. Host
//! algorithms call no invariant code; the infrastructure they run on (the SEAMCALL
//! instruction, the page allocator, the DPAMT get/put bracket, the update's entry point)
//! reports here, and a checker (scenarios' `StateChecker`) decides what holds.

use seam_model::{Gpa, Hpa, LeafCall, LeafOutput, PageRound, TdId};

use crate::kernel::cpu::Cpu;

/// Observation points of a run. Every method has a default that ignores the event.
pub trait Observer {
    /// A SEAMCALL returned `output` to `cpu` (after the module answered).
    fn seamcall_returned(&self, _cpu: &Cpu, _call: &LeafCall, _output: &LeafOutput) {}

    /// Page rounds of `vcpu` (its TD, its TDVPR) made at once (`kvm::coalesce`): for each of
    /// `rounds` (next GPA, page), TDH.VP.ENTER returned `round.vp_enter` with its TD exit at
    /// that GPA, then TDH.MEM.PAGE.AUG of the page there returned `round.aug`. The module
    /// made them all before this is told. By default, each return is told as it would have
    /// been one by one.
    fn page_rounds_returned(&self, cpu: &Cpu, vcpu: (TdId, Hpa), rounds: &[(Gpa, Hpa)], round: &PageRound) {
        let (td, tdvpr) = vcpu;
        for &(next, page) in rounds {
            self.seamcall_returned(cpu, &LeafCall::VpEnter { td, tdvpr }, &round.vp_enter_exiting_at(next));
            self.seamcall_returned(cpu, &LeafCall::PageAug { td, gpa: next, page }, &round.aug);
        }
    }

    /// The last `tdx_pamt_get`/`tdx_pamt_put` in flight on 2MB range `range_index` returned.
    fn pamt_range_quiet(&self, _cpu: &Cpu, _range_index: usize) {}

    /// A DPAMT refcount moved from `old` to `new` on range `range_index` while `in_flight`
    /// get/puts of the range were between entry and return.
    fn pamt_refcount_changed(&self, _cpu: &Cpu, _range_index: usize, _old: i32, _new: i32, _in_flight: u32) {}

    /// `__free_page(page)`; `was_allocated` is false for a page the allocator did not hand
    /// out or already got back (a double free).
    fn page_freed(&self, _cpu: &Cpu, _page: Hpa, _was_allocated: bool) {}

    /// `seamldr_install_module()` starts.
    fn update_started(&self, _cpu: &Cpu) {}

    /// `seamldr_install_module()` returns, its state machine stopped in `state`.
    fn update_returned(&self, _cpu: &Cpu, _state: &'static str) {}

    /// `kvm_destroy_vm()` of TD `td` returned: KVM has reclaimed what it could.
    fn td_destroyed(&self, _cpu: &Cpu, _td: TdId) {}

    /// VMXON (`on`) or VMXOFF ran on `cpu`; `refused` when VMXON found VMX already on. A
    /// transition of per-CPU hardware state that other CPUs' IPIs and this CPU's own tasks
    /// both drive.
    fn vmx_transition(&self, _cpu: &Cpu, _on: bool, _refused: bool) {}

    /// `tdh_do_no_vcpus()` on TD `td` kicked every vCPU out and is about to retry `call`.
    fn sept_zap_retrying(&self, _cpu: &Cpu, _td: TdId, _call: &LeafCall) {}
}

/// Observes nothing (host-model's own tests).
pub struct NoObserver;

impl Observer for NoObserver {}
