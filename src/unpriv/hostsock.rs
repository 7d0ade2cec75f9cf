//! The keeper's host-side socket helper. After `unshare(CLONE_NEWUSER)` the keeper has
//! no way back to the host's network namespace, yet publishing needs sockets there
//! created later (an ad hoc `vpn-ns publish`, every connection a `[[host-access]]`
//! relay makes to the host). So before it unshares, the keeper forks this helper:
//! same uid, no privilege, no thread, in the host namespace for good. It makes
//! unbound TCP/UDP sockets on request and passes them back over a socket pair
//! (`crate::publish::remote`); it never binds, connects or moves a byte itself.
//!
//! Its only channel is that pair, which no program inside can reach (they run in a PID
//! namespace of their own and never hold the keeper's descriptors). It ends when the
//! keeper closes its end, or with the keeper's death (`PR_SET_PDEATHSIG`).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use super::UnprivError;
use crate::publish::remote;

pub struct Helper {
    pub channel: OwnedFd,
    pid: Pid,
}

/// Forks the helper. Must run while the process is single-threaded (fork copies only
/// the calling thread; the keeper calls it before any thread exists).
pub fn start() -> Result<Helper, UnprivError> {
    let parent = nix::unistd::getpid();
    let (mine, theirs) =
        remote::channel().map_err(UnprivError::io("cannot create", "the helper's channel"))?;
    // SAFETY: the process is single-threaded here (see above), so the child may run
    // ordinary code; it ends with _exit and never returns into the keeper's code.
    match unsafe { fork() }.map_err(UnprivError::errno("cannot fork", "the host-side helper"))? {
        ForkResult::Parent { child } => {
            drop(theirs);
            Ok(Helper {
                channel: mine,
                pid: child,
            })
        }
        ForkResult::Child => {
            drop(mine);
            let code = helper_main(parent, &theirs);
            // SAFETY: _exit ends the child without running the keeper's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

fn helper_main(parent: Pid, channel: &OwnedFd) -> i32 {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"vpn-ns-hostsock".as_ptr(), 0, 0, 0);
    }
    if nix::unistd::getppid() != parent {
        return 0;
    }
    // Nothing of the keeper's but the channel: not the WireGuard socket, not the
    // readiness pipe to `up` (stdout, which would keep `up` waiting after a keeper
    // death), not the signalfd.
    let fd = channel.as_raw_fd();
    // SAFETY: close_range and dup2 on this process's own descriptors; none of them is
    // used by anything but this thread from here on.
    unsafe {
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3, fd - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, fd + 1, u32::MAX, 0);
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
    match remote::serve(channel) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("host-side socket helper: {e}");
            1
        }
    }
}

impl Helper {
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Closes the keeper's end (the helper then ends) and reaps the helper, so that no
    /// process of the connection outlives the keeper's orderly end.
    pub fn finish(self) {
        // Shut down, not only closed: a duplicate of this end somewhere in the relay
        // code must not keep the helper (and so this wait) alive.
        let _ =
            nix::sys::socket::shutdown(self.channel.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        drop(self.channel);
        let _ = waitpid(self.pid, None);
    }
}
