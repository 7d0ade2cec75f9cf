//! Inside the exec's own PID namespace: the first process (pid 1) mounts a private
//! /proc, drops to the target user, starts the command and reaps until it exits.
//! pid 1 exiting ends every process left in the namespace, so nothing the command
//! started outlives it, and /proc shows no process of the host (no
//! `/proc/<pid>/root` path back into the host's mounts).

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::Context as _;
use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::env::Account;
use super::relay::{self, Ttys};

/// Everything the command needs, prepared before the fork.
pub struct Program<'a> {
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub path_var: &'a OsString,
    pub target: &'a Account,
    pub gid: u32,
    pub groups: &'a [u32],
    /// The pty's slave end and which standard descriptors it replaces.
    pub slave: Option<(&'a OwnedFd, Ttys)>,
}

/// Closes every descriptor from 3 up (close_range), so nothing root had open reaches
/// the command, whatever CLOEXEC says.
pub fn close_from_3() {
    // SAFETY: close_range only closes descriptors; this process owns them all.
    unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
}

/// The exec init (pid 1 of the new PID namespace). Never returns.
pub fn run(p: &Program) -> ! {
    let code = match init(p) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vpn-ns: {e:#}");
            1
        }
    };
    // SAFETY: _exit ends the process without running the parent's atexit handlers.
    unsafe { libc::_exit(i32::from(code)) }
}

fn init(p: &Program) -> anyhow::Result<u8> {
    // No controlling terminal for pid 1: the invoker's terminal stays out of reach.
    nix::unistd::setsid().context("setsid")?;
    // A mount namespace of its own, so the private /proc is not vpn-ns's (which stays
    // outside this PID namespace, with the session-bus proxy).
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).context("cannot create a mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("cannot make / a slave mount")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>)
        .context("cannot mount a private /proc")?;
    if let Some((slave, _)) = p.slave {
        // The user's terminal is theirs, as login and sudo's use_pty make it (screen,
        // mesg and the like check).
        nix::unistd::fchown(slave, Some(nix::unistd::Uid::from_raw(p.target.uid)), None)
            .context("cannot hand the pseudo-terminal to the user")?;
    }
    super::identity::drop_to(p.target, p.gid, p.groups)?;
    if let Err(e) = nix::unistd::chdir(&p.target.home) {
        tracing::debug!("cannot chdir to {}: {e}; using /", p.target.home.display());
        nix::unistd::chdir("/").context("cannot chdir to /")?;
    }
    // SAFETY: this process is single-threaded (vpn-ns checked before forking it).
    let prog = match unsafe { nix::unistd::fork() }.context("cannot fork the command")? {
        ForkResult::Child => exec_program(p),
        ForkResult::Parent { child } => child,
    };
    close_from_3();
    let set = relay::handled();
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            if relay::is_forwarded(sig) {
                let _ = kill(prog, sig);
            }
            continue;
        }
        // Reap everything (pid 1 inherits orphans); stop when the command is done.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) if st.pid() == Some(prog) => {
                    if let Some(code) = relay::exit_code(st) {
                        return Ok(code);
                    }
                }
                Ok(_) => {}
            }
        }
    }
}

/// In the command's process: its terminal (or none), no inherited descriptors, default
/// signal handling, then execve. Never returns.
fn exec_program(p: &Program) -> ! {
    relay::default_signals();
    if let Some((slave, ttys)) = p.slave {
        // A session of its own with the new pty as controlling terminal.
        let ok = nix::unistd::setsid().is_ok()
            // SAFETY: TIOCSCTTY takes an int argument; 0 means "do not steal".
            && unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } == 0;
        if !ok {
            eprintln!("vpn-ns: cannot make the new pseudo-terminal the controlling terminal");
            // SAFETY: as in `run`.
            unsafe { libc::_exit(126) }
        }
        for (fd, tty) in ttys.iter().enumerate() {
            if *tty {
                // SAFETY: dup2 onto a standard descriptor.
                unsafe { libc::dup2(slave.as_raw_fd(), fd as i32) };
            }
        }
    }
    close_from_3();
    let failed = super::exec_search(p.argv, p.envp, p.path_var);
    eprintln!("vpn-ns: {}", failed.message);
    // SAFETY: as in `run`.
    unsafe { libc::_exit(i32::from(failed.code)) }
}
