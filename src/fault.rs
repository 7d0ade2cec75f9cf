//! Fault injection for the crash-recovery tests (tests/faults.rs).
//!
//! `point("up:after-create-netns")` marks a step of up or down. Built with the
//! `fault-injection` feature, the process SIGKILLs itself there when `$VPN_NS_FAULT`
//! names that point, as a crash or an OOM kill would; without the feature (every
//! release and package build) `point` is empty and compiles to nothing.

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    if std::env::var("VPN_NS_FAULT").as_deref() == Ok(name) {
        // raise(3), not kill(getpid()): nothing in vpn-ns signals by pid number.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // SIGKILL to ourselves is delivered before raise() returns; never go on regardless.
        loop {
            std::thread::park();
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
