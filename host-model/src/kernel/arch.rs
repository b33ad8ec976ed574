//! The hardware as the kernel reaches it without a SEAMCALL: VMXON and VMXOFF, the reset
//! of an LP taken offline (INIT/SIPI when it comes back), and the package topology (CPUID).
//! With `tdx::seamcall`, the only paths from host-model to the module's state.

use sim_core::CpuId;

use super::Errno;
use super::cpu::Cpu;

/// VMXON on this CPU; fails with -EBUSY if VMX is already on (CR4.VMXE set).
pub async fn cpu_vmxon(cpu: &Cpu) -> Result<(), Errno> {
    cpu.work(cpu.host().costs.vmxon).await;
    let mut module = cpu.host().module.borrow_mut();
    let refused = module.vmx_on(cpu.id);
    if !refused {
        module.set_vmx(cpu.id, true);
    }
    drop(module);
    cpu.host().observer.vmx_transition(cpu, true, refused);
    if refused {
        return Err(Errno::EBUSY);
    }
    Ok(())
}

/// VMXOFF on this CPU.
pub async fn cpu_vmxoff(cpu: &Cpu) {
    cpu.work(cpu.host().costs.vmxon).await;
    cpu.host().module.borrow_mut().set_vmx(cpu.id, false);
    cpu.host().observer.vmx_transition(cpu, false, false);
}

/// CR4.VMXE on this CPU.
pub fn vmx_is_on(cpu: &Cpu) -> bool {
    cpu.host().module.borrow().vmx_on(cpu.id)
}

/// `target` left the online mask: it comes back through INIT/SIPI, which resets its LP
/// (no LP.INIT on the current module image, VMX off).
pub fn reset_lp(cpu: &Cpu, target: CpuId) {
    cpu.host().module.borrow_mut().reset_lp(target);
}

/// `topology_physical_package_id(cpu)`.
pub fn topology_physical_package_id(cpu: &Cpu, of: CpuId) -> u32 {
    cpu.host().module.borrow().package_of(of)
}
