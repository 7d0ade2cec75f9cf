//! The few libc calls the harness needs, declared directly (libc is linked by std
//! anyway), so the tests need no extra crate.

use std::ffi::c_int;

unsafe extern "C" {
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn geteuid() -> u32;
}

pub const SIGKILL: c_int = 9;
pub const SIGTERM: c_int = 15;
/// SIGUSR1 on x86, x86_64, arm, aarch64, riscv, powerpc, s390 (not mips/sparc/alpha).
pub const SIGUSR1: c_int = 10;
/// SIGSTOP / SIGCONT on the same architectures.
pub const SIGSTOP: c_int = 19;
pub const SIGCONT: c_int = 18;

/// Sends `sig` to `pid`; true when the kernel accepted it.
pub fn send_signal(pid: u32, sig: c_int) -> bool {
    let Ok(pid) = c_int::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false; // never signal a process group or everything
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid, sig) == 0 }
}

pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { geteuid() }
}
