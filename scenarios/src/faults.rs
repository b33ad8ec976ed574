//! The fault plan a run gives the module: the failures a scenario asks for, injected into
//! the module's next call of a leaf, so the host algorithms read like the kernel and
//! nothing else (the host meets the failure as the status the module answers).

use host_model::seamldr::update::UpdateState;
use seam_model::status::seamldr::SEAMLDR_EBADSIG;
use seam_model::status::{TDX_SYS_BUSY, TDX_SYS_INIT_NOT_PENDING, TDX_SYS_INVALID_HANDOFF};
use seam_model::{Leaf, Module, TdxStatus};

/// `seamldr_install_module`'s `fail_step`: a step of the update's lock-step state machine
/// (host-algorithms.md §5.2), written as the kernel names the states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailStep {
    /// `tdx_module_shutdown()` on the lead CPU (TDH.SYS.SHUTDOWN); recoverable, TDs kept.
    Shutdown,
    /// The per-CPU SEAMLDR INSTALL; destructive, TDs lost.
    CpuInstall,
    /// The per-CPU `tdx_cpu_enable()` against the new image; TDs lost.
    CpuInit,
    /// `tdx_module_run_update()` on the lead CPU (TDH.SYS.UPDATE); TDs lost.
    RunUpdate,
}

impl FailStep {
    /// In the state machine's order.
    pub const ALL: &'static [FailStep] =
        &[FailStep::Shutdown, FailStep::CpuInstall, FailStep::CpuInit, FailStep::RunUpdate];

    /// The name as written in scenario files.
    pub const fn name(self) -> &'static str {
        match self {
            FailStep::Shutdown => "SHUTDOWN",
            FailStep::CpuInstall => "CPU_INSTALL",
            FailStep::CpuInit => "CPU_INIT",
            FailStep::RunUpdate => "RUN_UPDATE",
        }
    }

    pub fn from_name(name: &str) -> Option<FailStep> {
        FailStep::ALL.iter().copied().find(|step| step.name() == name)
    }

    /// The state of the update this step is.
    pub const fn state(self) -> UpdateState {
        match self {
            FailStep::Shutdown => UpdateState::Shutdown,
            FailStep::CpuInstall => UpdateState::CpuInstall,
            FailStep::CpuInit => UpdateState::CpuInit,
            FailStep::RunUpdate => UpdateState::RunUpdate,
        }
    }

    /// The leaf that fails, and the status it fails with: SHUTDOWN is refused as if another
    /// LP were busy (recoverable); INSTALL fails its signature check; SYS.INIT of the new
    /// image is refused; SYS.UPDATE finds the handoff unusable.
    pub const fn injected(self) -> (Leaf, TdxStatus) {
        match self {
            FailStep::Shutdown => (Leaf::SysShutdown, TDX_SYS_BUSY),
            FailStep::CpuInstall => (Leaf::SeamldrInstall, SEAMLDR_EBADSIG),
            FailStep::CpuInit => (Leaf::SysInit, TDX_SYS_INIT_NOT_PENDING),
            FailStep::RunUpdate => (Leaf::SysUpdate, TDX_SYS_INVALID_HANDOFF),
        }
    }

    /// Arms the failure in the module: its next call of the step's leaf fails.
    pub fn arm(self, module: &mut Module) {
        let (leaf, status) = self.injected();
        module.inject_failure(leaf, status);
    }
}
