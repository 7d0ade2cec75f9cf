//! Processes vpn-ns starts or stops (OpenVPN, processes left in a namespace): waiting
//! for their exit through a pidfd (an event, not a /proc poll), signals, names.

use std::fs;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A handle that becomes readable when the process exits. `None` when it is already
/// gone (ESRCH).
pub fn pidfd(pid: u32) -> std::io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory
    // is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Waits until `fd` (a pidfd) signals the exit, at most `timeout`. True when it exited.
pub fn wait_fd(fd: &OwnedFd, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let t = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, t) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

pub fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// `/proc/PID/comm`, trimmed; `None` when the process is gone.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

pub fn signal(pid: u32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// SIGTERM, up to `grace` for the exit, then SIGKILL. True when SIGKILL was needed.
pub fn terminate(pid: u32, grace: Duration) -> std::io::Result<bool> {
    let Some(fd) = pidfd(pid)? else {
        return Ok(false);
    };
    signal(pid, Signal::SIGTERM);
    if wait_fd(&fd, grace) {
        return Ok(false);
    }
    signal(pid, Signal::SIGKILL);
    wait_fd(&fd, Duration::from_secs(5));
    Ok(true)
}

/// "1234 (firefox)" for messages.
pub fn describe(pid: u32) -> String {
    match comm(pid) {
        Some(c) => format!("{pid} ({c})"),
        None => pid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_a_child_through_its_pidfd() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let fd = pidfd(child.id()).unwrap().expect("running");
        assert!(!wait_fd(&fd, Duration::from_millis(10)));
        assert!(wait_fd(&fd, Duration::from_secs(5)));
        child.wait().unwrap();
        assert!(pidfd(child.id()).unwrap().is_none() || !alive(child.id()));
    }

    #[test]
    fn terminate_stops_a_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(comm(child.id()).as_deref(), Some("sleep"));
        // A zombie keeps the pidfd readable: the exit is seen before we reap it.
        assert!(!terminate(child.id(), Duration::from_secs(5)).unwrap());
        assert!(!child.wait().unwrap().success());
    }
}
