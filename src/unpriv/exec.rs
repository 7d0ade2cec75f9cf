//! `vpn-ns exec CONN -- CMD` for a user connection. After entering the keeper's
//! namespaces, a new PID namespace and a private copy of the mount namespace with its
//! own /proc: a program inside runs as the same uid as the user's other processes and
//! as the keeper, and without this it could ptrace one of them (or take the keeper's
//! host-side UDP socket with pidfd_getfd) and act in the host's network namespace.
//! Processes outside have no pid in the new namespace, so nothing can name them.
//!
//! Three processes: vpn-ns (waits, exits with the command's status), an init (pid 1:
//! reaps, ends with the command, and its exit ends everything left in the namespace)
//! and the command, with no capability left.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::{UnprivError, ns};

/// The exit status for a command that ended with `st` (128 + signal, as shells do).
pub fn exit_code(st: WaitStatus) -> u8 {
    match st {
        WaitStatus::Exited(_, c) => u8::try_from(c).unwrap_or(1),
        WaitStatus::Signaled(_, sig, _) => 128u8.saturating_add(sig as u8),
        _ => 1,
    }
}

fn ignore_terminal_signals() {
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: installs SIG_IGN, no handler code runs.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Runs `cmd` inside `h`'s namespaces; returns its exit status.
pub fn run(h: ns::Handles, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().ok();
    h.enter()?;
    drop(h);
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS).map_err(UnprivError::errno(
        "cannot create",
        "a PID namespace for the command",
    ))?;
    // SAFETY: single-threaded (setns into a user namespace has just required it).
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            // Ctrl-C and Ctrl-\ are for the command (same process group), not for us.
            ignore_terminal_signals();
            let st = waitpid(child, None)?;
            Ok(ExitCode::from(exit_code(st)))
        }
        ForkResult::Child => {
            let code = match init(cwd, cmd) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vpn-ns: {e:#}");
                    127
                }
            };
            std::process::exit(i32::from(code))
        }
    }
}

/// Pid 1 of the command's PID namespace.
fn init(cwd: Option<PathBuf>, cmd: &[String]) -> anyhow::Result<u8> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>)
        .map_err(UnprivError::errno("cannot mount", "/proc for the command"))?;
    // Entering a mount namespace moves to its root; the same path is the same place
    // (the keeper's mounts only cover /etc files and socket directories).
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
    // SAFETY: single-threaded; the child only drops capabilities and execs.
    let command = match unsafe { fork() }? {
        ForkResult::Child => {
            let err = match ns::drop_capabilities() {
                Ok(()) => Command::new(&cmd[0]).args(&cmd[1..]).exec(),
                Err(e) => std::io::Error::other(e),
            };
            eprintln!("vpn-ns: cannot run {}: {err}", cmd[0]);
            std::process::exit(127)
        }
        ForkResult::Parent { child } => child,
    };
    ignore_terminal_signals();
    reap_until(command)
}

/// Reaps every child (orphans are re-parented to pid 1) until `command` ends.
fn reap_until(command: Pid) -> anyhow::Result<u8> {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(st) if st.pid() == Some(command) => return Ok(exit_code(st)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn exit_status_is_passed_through() {
        let p = Pid::from_raw(2);
        assert_eq!(super::exit_code(WaitStatus::Exited(p, 3)), 3);
        assert_eq!(
            super::exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            137
        );
    }
}
