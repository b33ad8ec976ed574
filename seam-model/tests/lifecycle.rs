//! The module's life cycle through the public API: boot-time initialisation, the
//! TD-preserving update with the P-SEAMLDR, and what each phase of spec §9 refuses, with
//! the exact status.

use seam_model::call::metadata;
use seam_model::leaf::seamldr_install_last_cost_cycles;
use seam_model::status::seamldr::{
    SEAMLDR_EBADCALL, SEAMLDR_EBADHANDOFF, SEAMLDR_EBADPARAM, SEAMLDR_EBADSIG, SEAMLDR_SUCCESS,
};
use seam_model::status::{
    TDX_KEY_CONFIGURED, TDX_KEY_STATE_INCORRECT, TDX_METADATA_FIELD_ID_INCORRECT, TDX_MISSING_PAMT_PAGE_PAIR,
    TDX_OP_STATE_INCORRECT, TDX_OPERAND_BUSY, TDX_OPERAND_INVALID, TDX_PAGE_NOT_FREE, TDX_SEAMCALL_UD,
    TDX_SEAMCALL_VMFAILINVALID, TDX_SUCCESS, TDX_SYS_BUSY, TDX_SYS_CONFIG_NOT_PENDING,
    TDX_SYS_INIT_NOT_PENDING, TDX_SYS_INVALID_HANDOFF, TDX_SYS_KEY_CONFIG_NOT_PENDING, TDX_SYS_LP_INIT_DONE,
    TDX_SYS_LP_INIT_NOT_DONE, TDX_SYS_LP_INIT_NOT_PENDING, TDX_SYS_NOT_READY, TDX_SYS_SHUTDOWN,
    TDX_SYS_STATE_INCORRECT, TDX_TD_KEYS_NOT_CONFIGURED, TDX_UPDATE_COMPAT_SENSITIVE, TdxStatus, operand,
};
use seam_model::{
    Begin, Dpamt2M, Hpa, Leaf, LeafCall, LeafOutput, Module, ModuleConfig, OpState, SysState, TdId, Ticket,
};
use sim_core::CpuId;

const MB: u64 = 1 << 20;
const GB: u64 = 1 << 30;
const MEMORY: u64 = 16 * MB;
const TD: TdId = TdId(1);
const LP0: CpuId = CpuId(0);
const LP1: CpuId = CpuId(1);
const LP2: CpuId = CpuId(2);
const LP3: CpuId = CpuId(3);

/// Begins `call` on `lp` and makes its try-lock attempts back to back, with nothing in
/// between: what the whole lock set gives when no other LP moves meanwhile.
fn settle(module: &mut Module, lp: CpuId, call: &LeafCall) -> Begin {
    let mut answer = module.begin(lp, call);
    while let Begin::Locking(ticket) = answer {
        answer = module.step(ticket);
    }
    answer
}

fn lps(num_lps: u32) -> impl Iterator<Item = CpuId> {
    (0..num_lps).map(CpuId)
}

/// A module the BIOS loaded on `num_lps` LPs in `packages` packages, VMX on everywhere.
fn loaded(num_lps: u32, packages: u32, memory_bytes: u64) -> Module {
    let config = ModuleConfig {
        num_lps,
        packages,
        initialized: false,
        ..ModuleConfig::new(memory_bytes, false, true)
    };
    let mut module = Module::new(config);
    for lp in lps(num_lps) {
        module.set_vmx(lp, true);
    }
    module
}

/// A module initialised at boot on `num_lps` LPs (static PAMT), with one runnable TD.
fn ready(num_lps: u32) -> Module {
    let mut module =
        Module::new(ModuleConfig { num_lps, packages: 1, ..ModuleConfig::new(MEMORY, false, true) });
    module.create_td(TD);
    module
}

fn run(module: &mut Module, lp: CpuId, call: LeafCall) -> LeafOutput {
    match settle(module, lp, &call) {
        Begin::Done { output, .. } => output,
        Begin::Held(ticket) => module.finish(ticket),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

fn status(module: &mut Module, lp: CpuId, call: LeafCall) -> TdxStatus {
    run(module, lp, call).status
}

/// Begins a call that must be let in, and keeps it in flight.
fn held(module: &mut Module, lp: CpuId, call: LeafCall) -> Ticket {
    match settle(module, lp, &call) {
        Begin::Held(ticket) => ticket,
        Begin::Done { output, .. } => panic!("{call} on {lp}: expected to be let in, got {}", output.status),
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

/// Begins a call that must return at once, and gives its status.
fn refused(module: &mut Module, lp: CpuId, call: LeafCall) -> TdxStatus {
    match settle(module, lp, &call) {
        Begin::Done { output, .. } => output.status,
        Begin::Held(ticket) => {
            panic!("{call} on {lp}: expected an immediate return, got a ticket for {:?}", ticket.call())
        }
        Begin::Locking(_) => unreachable!("settle makes every attempt"),
    }
}

fn track(td: TdId) -> LeafCall {
    LeafCall::Track { td }
}

fn shutdown() -> LeafCall {
    LeafCall::SysShutdown { avoid_compat_sensitive: false }
}

/// The boot-time sequence of spec §4.1, as Linux runs it; checks each step's status.
fn boot(module: &mut Module) {
    let num_lps = module.config().num_lps;
    assert_eq!(status(module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    for lp in lps(num_lps) {
        assert_eq!(status(module, lp, LeafCall::SysLpInit), TDX_SUCCESS, "{lp}");
    }
    assert_eq!(status(module, LP0, LeafCall::SysConfig { dpamt: false }), TDX_SUCCESS);
    for package in 0..module.config().packages {
        let lp = lps(num_lps).find(|&lp| module.package_of(lp) == package).expect("an LP per package");
        assert_eq!(status(module, lp, LeafCall::SysKeyConfig), TDX_SUCCESS, "package {package}");
    }
    let memory_bytes = module.config().memory_bytes;
    loop {
        let output = run(module, LP0, LeafCall::SysTdmrInit);
        assert_eq!(output.status, TDX_SUCCESS);
        if output.next.expect("TDMR.INIT gives the next address") >= memory_bytes {
            break;
        }
    }
    assert_eq!(module.sys_state(), SysState::SysReady);
}

/// SYS.SHUTDOWN and SEAMLDR.INSTALL on every LP: the new image is loaded.
fn shutdown_and_install(module: &mut Module) {
    assert_eq!(status(module, LP0, shutdown()), TDX_SUCCESS);
    for lp in lps(module.config().num_lps) {
        assert_eq!(status(module, lp, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS, "{lp}");
    }
}

/// SYS.INIT and LP.INIT on every LP of a freshly installed image.
fn init_new_image(module: &mut Module) {
    assert_eq!(status(module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    for lp in lps(module.config().num_lps) {
        assert_eq!(status(module, lp, LeafCall::SysLpInit), TDX_SUCCESS, "{lp}");
    }
}

// ---- Boot-time initialisation (spec §4.1) ----

#[test]
fn boot_init_over_four_lps_in_two_packages_reaches_ready() {
    // 2GB + 2MB of TDMR: three TDMR.INIT calls.
    let memory_bytes = 2 * GB + 2 * MB;
    let mut module = loaded(4, 2, memory_bytes);
    assert_eq!(lps(4).map(|lp| module.package_of(lp)).collect::<Vec<_>>(), [0, 0, 1, 1]);
    assert_eq!(module.sys_state(), SysState::SysinitPending);
    assert!(lps(4).all(|lp| !module.lp_is_init(lp)));

    assert_eq!(status(&mut module, LP2, LeafCall::SysInit), TDX_SUCCESS);
    assert_eq!(module.sys_state(), SysState::SysinitDone);
    for lp in [LP3, LP0, LP2, LP1] {
        assert_eq!(status(&mut module, lp, LeafCall::SysLpInit), TDX_SUCCESS);
        assert!(module.lp_is_init(lp));
    }
    assert_eq!(module.num_init_lps(), 4);
    assert_eq!(status(&mut module, LP1, LeafCall::SysConfig { dpamt: true }), TDX_SUCCESS);
    assert!(module.dpamt_enabled());

    assert_eq!(status(&mut module, LP1, LeafCall::SysKeyConfig), TDX_SUCCESS);
    assert!(module.pkg_key_configured(0) && !module.pkg_key_configured(1));
    // Once per package: LP0 shares LP1's package.
    assert_eq!(status(&mut module, LP0, LeafCall::SysKeyConfig), TDX_KEY_CONFIGURED);
    assert_eq!(status(&mut module, LP3, LeafCall::SysKeyConfig), TDX_SUCCESS);
    assert!(module.pkg_key_configured(1));
    assert_eq!(module.sys_state(), SysState::SysinitDone, "TDMR init is still to do");

    let mut nexts = Vec::new();
    for _ in 0..3 {
        let output = run(&mut module, LP0, LeafCall::SysTdmrInit);
        assert_eq!(output.status, TDX_SUCCESS);
        nexts.push(output.next.unwrap());
    }
    assert_eq!(nexts, [GB, 2 * GB, memory_bytes]);
    assert_eq!(module.sys_state(), SysState::SysReady);
    // After READY the DPAMT leaves work, on the PAMT SYS.CONFIG chose.
    let pamt_add = LeafCall::PamtAdd { hpa: Hpa(0), pair: [Hpa(4 * MB), Hpa(4 * MB + 4096)] };
    assert_eq!(status(&mut module, LP2, pamt_add), TDX_SUCCESS);
    assert!(matches!(module.dpamt(0), Dpamt2M::Backed { count: 0, .. }));
}

#[test]
fn boot_helper_brings_a_loaded_module_to_ready_and_sys_rd_reads_module_hv() {
    let mut module = loaded(2, 1, MEMORY);
    // SYS.RD is accepted before READY, once the LP is initialised.
    assert_eq!(
        status(&mut module, LP0, LeafCall::SysRd { field: metadata::FIELD_MODULE_HV }),
        TDX_SYS_LP_INIT_NOT_DONE
    );
    boot(&mut module);
    let output = run(&mut module, LP1, LeafCall::SysRd { field: metadata::FIELD_MODULE_HV });
    assert_eq!(output.status, TDX_SUCCESS);
    assert_eq!(output.value, Some(metadata::MODULE_HV));
    let unknown = LeafCall::SysRd { field: 0x1234 };
    assert_eq!(status(&mut module, LP1, unknown), TDX_METADATA_FIELD_ID_INCORRECT.with_operand(operand::RDX));
}

#[test]
fn config_with_an_lp_missing_is_not_pending() {
    let mut module = loaded(4, 2, MEMORY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    for lp in [LP0, LP1, LP2] {
        assert_eq!(status(&mut module, lp, LeafCall::SysLpInit), TDX_SUCCESS);
    }
    // LP3 is offline: it counts in tot_num_lps but never ran LP.INIT.
    assert_eq!(status(&mut module, LP0, LeafCall::SysConfig { dpamt: false }), TDX_SYS_CONFIG_NOT_PENDING);
    assert_eq!(status(&mut module, LP3, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysConfig { dpamt: false }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysConfig { dpamt: false }), TDX_SYS_CONFIG_NOT_PENDING);
}

#[test]
fn key_config_and_tdmr_init_before_config_are_refused() {
    let mut module = loaded(1, 1, MEMORY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysKeyConfig), TDX_SYS_KEY_CONFIG_NOT_PENDING);
    assert_eq!(status(&mut module, LP0, LeafCall::SysTdmrInit), TDX_SYS_STATE_INCORRECT);
}

#[test]
fn an_lp_init_in_flight_makes_sys_config_busy() {
    let mut module = loaded(3, 1, MEMORY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, LeafCall::SysLpInit), TDX_SUCCESS);
    let lp_init = held(&mut module, LP0, LeafCall::SysLpInit);
    // SYS.CONFIG wants global_lock exclusive; LP.INIT holds it shared.
    assert_eq!(refused(&mut module, LP1, LeafCall::SysConfig { dpamt: false }), TDX_SYS_BUSY);
    // LP.INIT on another LP shares it.
    assert_eq!(status(&mut module, LP2, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(module.finish(lp_init).status, TDX_SUCCESS);
    assert_eq!(module.held_lock_count(), 0);
    assert_eq!(status(&mut module, LP1, LeafCall::SysConfig { dpamt: false }), TDX_SUCCESS);
}

// ---- Dispatch (spec §3) and the phase table (spec §9) ----

#[test]
fn vmx_off_is_ud_for_the_module_and_the_p_seamldr() {
    let mut module =
        Module::new(ModuleConfig { initialized: false, ..ModuleConfig::new(MEMORY, false, true) });
    assert!(!module.vmx_on(LP0), "a BIOS-loaded module starts with VMX off");
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SEAMCALL_UD);
    assert_eq!(status(&mut module, LP0, LeafCall::SeamldrInfo), TDX_SEAMCALL_UD);
    module.set_vmx(LP0, true);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);

    let mut module = ready(2);
    module.set_vmx(LP1, false);
    assert_eq!(status(&mut module, LP1, track(TD)), TDX_SEAMCALL_UD);
    assert_eq!(status(&mut module, LP0, track(TD)), TDX_SUCCESS);
}

#[test]
fn lp_init_before_sys_init_is_not_pending() {
    let mut module = loaded(2, 1, MEMORY);
    assert_eq!(status(&mut module, LP1, LeafCall::SysLpInit), TDX_SYS_LP_INIT_NOT_PENDING);
    assert!(!module.lp_is_init(LP1));
}

#[test]
fn sys_init_twice_is_not_pending() {
    let mut module = loaded(2, 1, MEMORY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, LeafCall::SysInit), TDX_SYS_INIT_NOT_PENDING);
    // A module initialised at boot is past SYS.INIT as well.
    assert_eq!(status(&mut ready(1), LP0, LeafCall::SysInit), TDX_SYS_INIT_NOT_PENDING);
}

#[test]
fn lp_init_repeated_on_one_lp_is_done() {
    let mut module = loaded(2, 1, MEMORY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, LeafCall::SysLpInit), TDX_SYS_LP_INIT_DONE);
    assert_eq!(module.num_init_lps(), 1);
    assert_eq!(status(&mut ready(1), LP0, LeafCall::SysLpInit), TDX_SYS_LP_INIT_DONE);
}

#[test]
fn leaves_other_than_sys_init_lp_init_and_info_need_lp_init() {
    let mut module = loaded(2, 1, MEMORY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysLpInit), TDX_SUCCESS);
    for call in [LeafCall::SysConfig { dpamt: false }, LeafCall::SysKeyConfig, LeafCall::SysUpdate] {
        assert_eq!(status(&mut module, LP1, call), TDX_SYS_LP_INIT_NOT_DONE, "{call}");
    }
    assert_eq!(
        status(&mut module, LP1, LeafCall::SysRd { field: metadata::FIELD_MODULE_HV }),
        TDX_SYS_LP_INIT_NOT_DONE
    );
}

#[test]
fn non_sys_leaves_before_ready_are_not_ready() {
    let mut module = loaded(1, 1, MEMORY);
    module.create_td(TD);
    assert_eq!(status(&mut module, LP0, track(TD)), TDX_SYS_NOT_READY);
    assert_eq!(status(&mut module, LP0, LeafCall::MngCreate { td: TdId(2), tdr: Hpa(0) }), TDX_SYS_NOT_READY);
    // SYS_NOT_READY comes before LP_INIT_NOT_DONE (step 6 before 7), and SHUTDOWN is not
    // one of the SYS leaves a module that is not ready accepts.
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SYS_NOT_READY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, track(TD)), TDX_SYS_NOT_READY);
}

#[test]
fn after_shutdown_every_leaf_is_sys_shutdown() {
    let mut module = ready(2);
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
    assert_eq!(module.sys_state(), SysState::SysShutdown);
    assert_eq!(module.handoff().map(|handoff| handoff.td_names()), Some(vec![TD]));
    assert!(module.td_names().is_empty(), "a shut-down module runs no TD");
    let calls = [
        track(TD),
        LeafCall::SysInit,
        LeafCall::SysLpInit,
        LeafCall::SysRd { field: metadata::FIELD_MODULE_HV },
        LeafCall::SysUpdate,
        shutdown(),
    ];
    for call in calls {
        assert_eq!(status(&mut module, LP1, call), TDX_SYS_SHUTDOWN, "{call}");
    }
    // The P-SEAMLDR still answers.
    assert_eq!(status(&mut module, LP1, LeafCall::SeamldrInfo), SEAMLDR_SUCCESS);
}

#[test]
fn a_held_shutdown_already_refuses_other_lps() {
    let mut module = ready(2);
    let ticket = held(&mut module, LP0, shutdown());
    assert_eq!(module.sys_state(), SysState::SysShutdown);
    assert_eq!(refused(&mut module, LP1, track(TD)), TDX_SYS_SHUTDOWN);
    assert_eq!(module.finish(ticket).status, TDX_SUCCESS);
    assert!(module.handoff().is_some());
}

#[test]
fn shutdown_with_another_lp_busy_is_sys_busy_and_stays_ready() {
    let mut module = ready(2);
    let in_flight = held(&mut module, LP1, track(TD));
    assert!(module.lp_is_busy(LP1));
    assert!(!module.lp_is_busy(LP0));
    assert_eq!(refused(&mut module, LP0, shutdown()), TDX_SYS_BUSY);
    assert_eq!(module.sys_state(), SysState::SysReady);
    assert!(module.handoff().is_none());
    assert_eq!(module.held_lock_count(), in_flight.locks().len(), "SHUTDOWN gave global_lock back");
    assert_eq!(module.finish(in_flight).status, TDX_SUCCESS);
    assert!(!module.lp_is_busy(LP1));
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
}

#[test]
fn shutdown_is_not_blocked_by_its_own_lp_or_by_calls_that_returned() {
    let mut module = ready(2);
    // A call that returned at once (here an operand error) leaves its LP not busy.
    assert_eq!(status(&mut module, LP1, track(TdId(77))), TDX_OPERAND_INVALID.with_operand(operand::RCX));
    assert!(!module.lp_is_busy(LP1));
    // Only *other* LPs count: the caller's own call in flight does not.
    let own = held(&mut module, LP0, track(TD));
    let shutdown_ticket = held(&mut module, LP0, shutdown());
    assert_eq!(module.finish(own).status, TDX_SUCCESS);
    assert_eq!(module.finish(shutdown_ticket).status, TDX_SUCCESS);
    assert_eq!(module.sys_state(), SysState::SysShutdown);
}

#[test]
fn compat_sensitive_shutdown_is_refused_during_a_td_build() {
    let mut module = ready(2);
    let building = TdId(2);
    let create = LeafCall::MngCreate { td: building, tdr: Hpa(2 * MB) };
    assert_eq!(status(&mut module, LP0, create), TDX_SUCCESS);
    let avoid = LeafCall::SysShutdown { avoid_compat_sensitive: true };
    // Created but not initialised: not a build in progress yet.
    assert_eq!(status(&mut module.clone(), LP0, avoid), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::MngKeyConfig { td: building }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::MngInit { td: building }), TDX_SUCCESS);
    assert_eq!(module.td(building).unwrap().op_state, OpState::Initialized);

    assert_eq!(status(&mut module, LP0, avoid), TDX_UPDATE_COMPAT_SENSITIVE);
    assert_eq!(module.sys_state(), SysState::SysReady, "no state change");
    assert!(module.handoff().is_none());
    assert_eq!(module.held_lock_count(), 0);
    // Without the flag the host may shut down mid-build.
    assert_eq!(status(&mut module.clone(), LP0, shutdown()), TDX_SUCCESS);

    let vp_create = LeafCall::VpCreate { td: building, tdvpr: Hpa(2 * MB + 4096) };
    assert_eq!(status(&mut module, LP1, vp_create), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, LeafCall::MrFinalize { td: building }), TDX_SUCCESS);
    assert_eq!(module.td(building).unwrap().op_state, OpState::Runnable);
    assert_eq!(status(&mut module, LP0, avoid), TDX_SUCCESS);
}

#[test]
fn compat_sensitive_flag_without_module_support_is_an_operand_error() {
    let config = ModuleConfig { compat_sensitive_supported: false, ..ModuleConfig::new(MEMORY, false, true) };
    let mut module = Module::new(config);
    let avoid = LeafCall::SysShutdown { avoid_compat_sensitive: true };
    assert_eq!(status(&mut module, LP0, avoid), TDX_OPERAND_INVALID.with_operand(operand::RCX));
    assert_eq!(module.sys_state(), SysState::SysReady);
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
}

// ---- TD build leaves ----

#[test]
fn td_build_leaves_assign_pages_and_need_dpamt_backing() {
    let config = ModuleConfig { num_lps: 2, ..ModuleConfig::new(MEMORY, true, true) };
    let mut module = Module::new(config);
    let create = LeafCall::MngCreate { td: TD, tdr: Hpa(2 * MB) };
    assert_eq!(status(&mut module, LP0, create), TDX_MISSING_PAMT_PAGE_PAIR.with_operand(operand::RCX));
    assert_eq!(module.held_lock_count(), 0);
    let pamt_add = LeafCall::PamtAdd { hpa: Hpa(2 * MB), pair: [Hpa(8 * MB), Hpa(8 * MB + 4096)] };
    assert_eq!(status(&mut module, LP0, pamt_add), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, create), TDX_SUCCESS);
    assert_eq!(module.td_names(), [TD]);
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 1, .. }));
    // The same TD id again, and a second TD on the TDR page.
    assert_eq!(status(&mut module, LP0, create), TDX_OPERAND_INVALID.with_operand(operand::RCX));
    let again = LeafCall::MngCreate { td: TdId(9), tdr: Hpa(2 * MB) };
    assert_eq!(status(&mut module, LP0, again), TDX_PAGE_NOT_FREE.with_operand(operand::RCX));

    let vp_create = LeafCall::VpCreate { td: TD, tdvpr: Hpa(2 * MB + 4096) };
    // The key life cycle is checked before op_state, as the module does.
    assert_eq!(status(&mut module, LP0, vp_create), TDX_TD_KEYS_NOT_CONFIGURED, "VP.CREATE needs the key");
    assert_eq!(status(&mut module, LP0, LeafCall::MrFinalize { td: TD }), TDX_TD_KEYS_NOT_CONFIGURED);
    let key_config = LeafCall::MngKeyConfig { td: TD };
    assert_eq!(status(&mut module, LP0, LeafCall::MngInit { td: TD }), TDX_KEY_STATE_INCORRECT, "keys first");
    assert_eq!(status(&mut module, LP0, key_config), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, key_config), TDX_KEY_CONFIGURED, "once per package");
    assert_eq!(status(&mut module, LP0, vp_create), TDX_OP_STATE_INCORRECT, "VP.CREATE needs MNG.INIT");
    assert_eq!(status(&mut module, LP0, LeafCall::MrFinalize { td: TD }), TDX_OP_STATE_INCORRECT);
    assert_eq!(status(&mut module, LP0, LeafCall::MngInit { td: TD }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::MngInit { td: TD }), TDX_OP_STATE_INCORRECT);
    assert_eq!(status(&mut module, LP0, key_config), TDX_KEY_CONFIGURED);
    assert_eq!(status(&mut module, LP0, vp_create), TDX_SUCCESS);
    assert!(matches!(module.dpamt(1), Dpamt2M::Backed { count: 2, .. }));
    assert_eq!(module.td(TD).unwrap().vcpus.keys().copied().collect::<Vec<_>>(), [Hpa(2 * MB + 4096)]);
    assert_eq!(status(&mut module, LP0, LeafCall::MrFinalize { td: TD }), TDX_SUCCESS);
}

#[test]
fn mng_create_holds_kot_exclusive() {
    let mut module = ready(2);
    let first = held(&mut module, LP0, LeafCall::MngCreate { td: TdId(2), tdr: Hpa(2 * MB) });
    let second = LeafCall::MngCreate { td: TdId(3), tdr: Hpa(4 * MB) };
    assert_eq!(refused(&mut module, LP1, second), TDX_OPERAND_BUSY.with_operand(operand::KOT));
    assert_eq!(module.finish(first).status, TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, second), TDX_SUCCESS);
    assert_eq!(module.td_names(), [TD, TdId(2), TdId(3)]);
}

// ---- The TD-preserving update (spec §4.2, §8.4) ----

#[test]
fn full_td_preserving_update_keeps_the_tds() {
    let mut module = ready(4);
    let built = TdId(2);
    assert_eq!(status(&mut module, LP0, LeafCall::MngCreate { td: built, tdr: Hpa(2 * MB) }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::MngKeyConfig { td: built }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::MngInit { td: built }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::MrFinalize { td: built }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, track(TD)), TDX_SUCCESS);
    assert_eq!(module.td_names(), [TD, built]);

    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
    for (index, lp) in [LP2, LP0, LP3, LP1].into_iter().enumerate() {
        let ticket = held(&mut module, lp, LeafCall::SeamldrInstall);
        let last = index == 3;
        assert_eq!(ticket.cost_override(), last.then(seamldr_install_last_cost_cycles), "{lp}");
        assert_eq!(module.seamldr_lp(), Some(lp));
        assert_eq!(module.finish(ticket).status, SEAMLDR_SUCCESS);
        if !last {
            assert!(!module.seam_ready(), "the first call closed the module off");
            assert_eq!(module.install_callers().len(), index + 1);
        }
    }
    assert_eq!(seamldr_install_last_cost_cycles(), 20_000_000);
    assert!(module.seam_ready());
    assert!(module.install_callers().is_empty(), "the session ended");
    assert_eq!(module.sys_state(), SysState::SysinitPending);
    assert!(lps(4).all(|lp| !module.lp_is_init(lp)), "LP.INIT is per image");
    assert!(module.td_names().is_empty());
    assert_eq!(status(&mut module, LP1, track(TD)), TDX_SYS_NOT_READY);
    assert_eq!(status(&mut module, LP1, LeafCall::SysLpInit), TDX_SYS_LP_INIT_NOT_PENDING);

    init_new_image(&mut module);
    assert_eq!(status(&mut module, LP3, LeafCall::SysUpdate), TDX_SUCCESS);
    assert_eq!(module.sys_state(), SysState::SysReady);
    assert!(module.handoff().is_none(), "imported");
    assert_eq!(module.td_names(), [TD, built]);
    assert_eq!(module.td(TD).unwrap().td_epoch, 1, "the TD's state came across");
    assert_eq!(module.td(built).unwrap().op_state, OpState::Runnable);
    assert_eq!(status(&mut module, LP2, track(TD)), TDX_SUCCESS);
    // A second update works the same way.
    shutdown_and_install(&mut module);
    init_new_image(&mut module);
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SUCCESS);
    assert_eq!(module.td_names(), [TD, built]);
}

#[test]
fn update_preserves_the_dpamt_configuration() {
    let config = ModuleConfig { num_lps: 2, ..ModuleConfig::new(MEMORY, true, true) };
    let mut module = Module::new(config);
    let pamt_add = LeafCall::PamtAdd { hpa: Hpa(0), pair: [Hpa(8 * MB), Hpa(8 * MB + 4096)] };
    assert_eq!(status(&mut module, LP0, pamt_add), TDX_SUCCESS);
    shutdown_and_install(&mut module);
    init_new_image(&mut module);
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SUCCESS);
    assert!(module.dpamt_enabled());
    assert!(matches!(module.dpamt(0), Dpamt2M::Backed { .. }), "the PAMT stayed in memory");
    assert_eq!(status(&mut module, LP1, LeafCall::PamtRemove { hpa: Hpa(0) }), TDX_SUCCESS);
}

#[test]
fn sys_update_before_every_lp_init_is_state_incorrect() {
    let mut module = ready(4);
    shutdown_and_install(&mut module);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS);
    // The calling LP's own LP.INIT is checked first (spec §3 step 7).
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SYS_LP_INIT_NOT_DONE);
    for lp in [LP0, LP1, LP2] {
        assert_eq!(status(&mut module, lp, LeafCall::SysLpInit), TDX_SUCCESS);
    }
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SYS_STATE_INCORRECT);
    assert!(module.td_names().is_empty());
    assert_eq!(status(&mut module, LP3, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SUCCESS);
    assert_eq!(module.td_names(), [TD]);
}

#[test]
fn an_injected_failure_returns_once_without_effect() {
    let mut module = ready(1);
    shutdown_and_install(&mut module);
    module.inject_failure(Leaf::SysInit, TDX_SYS_BUSY);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SYS_BUSY, "injected, no effect");
    assert_eq!(module.sys_state(), SysState::SysinitPending);
    assert_eq!(status(&mut module, LP0, LeafCall::SysInit), TDX_SUCCESS, "the injection was used up");
    assert_eq!(status(&mut module, LP0, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SUCCESS);
}

#[test]
fn sys_update_without_a_handoff_is_invalid_handoff() {
    let mut module = loaded(2, 1, MEMORY);
    init_new_image(&mut module);
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SYS_INVALID_HANDOFF);
    // Continuing with the normal path after an update drops the handoff (spec §4.2).
    let mut module = ready(2);
    shutdown_and_install(&mut module);
    init_new_image(&mut module);
    assert_eq!(status(&mut module, LP0, LeafCall::SysConfig { dpamt: false }), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SYS_INVALID_HANDOFF);
    assert_eq!(status(&mut module, LP0, LeafCall::SysKeyConfig), TDX_SUCCESS);
    assert_eq!(run(&mut module, LP0, LeafCall::SysTdmrInit).next, Some(MEMORY));
    assert_eq!(module.sys_state(), SysState::SysReady);
    assert!(module.td_names().is_empty(), "the TDs were lost");
}

#[test]
fn install_before_shutdown_is_destructive_and_ends_in_bad_handoff() {
    let mut module = ready(2);
    // The first call closes the module off even though it was never shut down.
    assert_eq!(status(&mut module, LP0, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    assert!(!module.seam_ready());
    assert_eq!(status(&mut module, LP1, track(TD)), TDX_SEAMCALL_VMFAILINVALID);
    // The last call finds no handoff: no image, no TDs.
    let output = run(&mut module, LP1, LeafCall::SeamldrInstall);
    assert_eq!(output.status, SEAMLDR_EBADHANDOFF);
    assert_eq!(output.value, Some(1), "RDX: unrecoverable");
    assert!(!module.seam_ready());
    assert!(module.td_names().is_empty());
    assert_eq!(status(&mut module, LP0, track(TD)), TDX_SEAMCALL_VMFAILINVALID);
}

#[test]
fn install_twice_on_one_lp_is_bad_call() {
    let mut module = ready(3);
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    assert_eq!(status(&mut module, LP1, LeafCall::SeamldrInstall), SEAMLDR_EBADCALL);
    assert_eq!(module.install_callers(), [LP1]);
    // The session goes on.
    assert_eq!(status(&mut module, LP0, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    assert_eq!(status(&mut module, LP2, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    assert!(module.seam_ready());
}

#[test]
fn two_lps_in_the_p_seamldr_at_once_is_vmfailinvalid() {
    let mut module = ready(2);
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
    let inside = held(&mut module, LP0, LeafCall::SeamldrInstall);
    assert_eq!(refused(&mut module, LP1, LeafCall::SeamldrInstall), TDX_SEAMCALL_VMFAILINVALID);
    assert_eq!(refused(&mut module, LP1, LeafCall::SeamldrInfo), TDX_SEAMCALL_VMFAILINVALID);
    assert_eq!(module.finish(inside).status, SEAMLDR_SUCCESS);
    assert_eq!(module.seamldr_lp(), None);
    // INSTALL in progress: the module itself answers VMfailInvalid.
    assert_eq!(status(&mut module, LP1, LeafCall::SysInit), TDX_SEAMCALL_VMFAILINVALID);
    assert_eq!(status(&mut module, LP1, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
}

#[test]
fn an_offline_lp_that_never_installs_leaves_the_module_never_ready() {
    let mut module = ready(4);
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
    // LP3 is offline: it never calls INSTALL, so the session never reaches its last call.
    for lp in [LP0, LP1, LP2] {
        assert_eq!(status(&mut module, lp, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    }
    assert!(!module.seam_ready());
    let calls = [LeafCall::SysInit, LeafCall::SysLpInit, LeafCall::SysUpdate, track(TD), shutdown()];
    for lp in [LP0, LP1, LP2] {
        for call in calls {
            assert_eq!(status(&mut module, lp, call), TDX_SEAMCALL_VMFAILINVALID, "{call} on {lp}");
        }
    }
    assert!(module.td_names().is_empty());
    let info = run(&mut module, LP0, LeafCall::SeamldrInfo);
    assert_eq!((info.status, info.value), (SEAMLDR_SUCCESS, Some(0)), "INFO reports seam_ready = 0");
}

#[test]
fn a_failed_install_loses_the_tds_and_leaves_the_module_unusable() {
    let mut module = ready(2);
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP0, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    module.inject_failure(Leaf::SeamldrInstall, SEAMLDR_EBADSIG);
    let output = run(&mut module, LP1, LeafCall::SeamldrInstall);
    assert_eq!(output.status, SEAMLDR_EBADSIG);
    assert_eq!(output.value, Some(1), "RDX: unrecoverable");
    assert!(module.td_names().is_empty());
    assert!(module.handoff().is_none());
    assert!(!module.seam_ready());
    assert!(module.install_callers().is_empty(), "the session ended with its last call");
    for call in [LeafCall::SysInit, LeafCall::SysLpInit, LeafCall::SysUpdate, track(TD)] {
        assert_eq!(status(&mut module, LP0, call), TDX_SEAMCALL_VMFAILINVALID, "{call}");
    }
    // Linux does not try another image; a new session could not load one without a handoff.
    for lp in 0..module.config().num_lps - 1 {
        assert_eq!(status(&mut module, CpuId(lp), LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    }
    let last = CpuId(module.config().num_lps - 1);
    assert_eq!(status(&mut module, last, LeafCall::SeamldrInstall), SEAMLDR_EBADHANDOFF);
}

#[test]
fn a_failure_injected_on_a_non_last_install_rejects_that_call_only() {
    let mut module = ready(2);
    assert_eq!(status(&mut module, LP0, shutdown()), TDX_SUCCESS);
    module.inject_failure(Leaf::SeamldrInstall, SEAMLDR_EBADPARAM);
    assert_eq!(status(&mut module, LP0, LeafCall::SeamldrInstall), SEAMLDR_EBADPARAM);
    assert!(module.seam_ready(), "no session started");
    assert_eq!(status(&mut module, LP1, track(TD)), TDX_SYS_SHUTDOWN);
    for lp in [LP0, LP1] {
        assert_eq!(status(&mut module, lp, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS, "{lp}");
    }
    init_new_image(&mut module);
    assert_eq!(status(&mut module, LP0, LeafCall::SysUpdate), TDX_SUCCESS);
    assert_eq!(module.td_names(), [TD]);
}

#[test]
fn the_seamret_erratum_clears_the_current_vmcs() {
    let config = ModuleConfig { num_lps: 2, seamret_erratum: true, ..ModuleConfig::new(MEMORY, false, true) };
    let mut module = Module::new(config);
    assert!(!module.current_vmcs_cleared(LP0));
    assert_eq!(status(&mut module, LP0, track_missing()), TDX_OPERAND_INVALID.with_operand(operand::RCX));
    assert!(!module.current_vmcs_cleared(LP0), "a TDX-module SEAMCALL keeps the VMCS");
    assert_eq!(status(&mut module, LP0, LeafCall::SeamldrInfo), SEAMLDR_SUCCESS);
    assert!(module.current_vmcs_cleared(LP0));
    assert!(!module.current_vmcs_cleared(LP1));
    module.vmptrld(LP0);
    assert!(!module.current_vmcs_cleared(LP0));
    // Any P-SEAMLDR call returns through SEAMRET.
    assert_eq!(status(&mut module, LP1, LeafCall::SeamldrInstall), SEAMLDR_SUCCESS);
    assert!(module.current_vmcs_cleared(LP1));

    let mut module = Module::new(ModuleConfig { num_lps: 2, ..ModuleConfig::new(MEMORY, false, true) });
    assert_eq!(status(&mut module, LP0, LeafCall::SeamldrInfo), SEAMLDR_SUCCESS);
    assert!(!module.current_vmcs_cleared(LP0), "no erratum, nothing cleared");
}

fn track_missing() -> LeafCall {
    track(TdId(77))
}

#[test]
fn statuses_print_by_name() {
    assert_eq!(SEAMLDR_EBADCALL.to_string(), "SEAMLDR_EBADCALL");
    assert_eq!(TDX_UPDATE_COMPAT_SENSITIVE.to_string(), "TDX_UPDATE_COMPAT_SENSITIVE");
    assert_eq!(TDX_SEAMCALL_VMFAILINVALID.to_string(), "TDX_SEAMCALL_VMFAILINVALID");
}

#[test]
fn an_lp_reset_by_offline_needs_lp_init_again() {
    let mut module = ready(2);
    assert!(module.lp_is_init(LP1));
    module.reset_lp(LP1);
    assert!(!module.lp_is_init(LP1));
    assert!(!module.vmx_on(LP1));
    module.set_vmx(LP1, true);
    assert_eq!(status(&mut module, LP1, track(TD)), TDX_SYS_LP_INIT_NOT_DONE);
    assert_eq!(status(&mut module, LP1, LeafCall::SysLpInit), TDX_SUCCESS);
    assert_eq!(status(&mut module, LP1, track(TD)), TDX_SUCCESS);
}
