//! Processes vpn-ns records, watches or stops (OpenVPN, wireguard-go, the keeper,
//! processes left in a namespace).
//!
//! A recorded pid number alone means nothing: the process may have exited and the
//! number been reused. A process is known by its `ProcId` (pid + start time from
//! `/proc/PID/stat`), and acted on only through a `PidFd` opened and then checked
//! against that identity, so a signal or a wait can never reach another process. A
//! process in state Z (zombie, where nothing reaps it) or X is dead.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::wait::{self, Wake};

/// A process's identity: its pid and its start time (clock ticks after boot, field 22
/// of `/proc/PID/stat`), which together are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

/// What vpn-ns reads from `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub start: u64,
}

impl Stat {
    /// Z (zombie) and X (dead) are exited processes that nothing has reaped yet.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so the fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    // Field 3 is the state; field 22 the start time, 19 fields further on.
    let state = rest.next()?.chars().next()?;
    let start = rest.nth(18)?.parse().ok()?;
    Some(Stat { comm, state, start })
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl ProcId {
    /// The identity of running process `pid` (`None`: gone or already dead).
    pub fn of(pid: u32) -> Option<ProcId> {
        stat(pid).filter(|s| !s.is_dead()).map(|s| ProcId {
            pid,
            start: s.start,
        })
    }

    /// This process.
    pub fn current() -> ProcId {
        ProcId::of(std::process::id()).expect("/proc/self/stat is readable")
    }

    /// Whether this very process still runs (not exited, not a zombie, pid not reused).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| !s.is_dead() && s.start == self.start)
    }

    /// A pidfd for this process if it still runs; `None` when it is gone.
    pub fn open(&self) -> io::Result<Option<PidFd>> {
        let Some(fd) = PidFd::open_pid(self.pid)? else {
            return Ok(None);
        };
        // Checked after opening: if the pid was reused before the open, the start time
        // read now is the new process's and differs; once open, the pidfd keeps
        // referring to the process it was opened for.
        Ok(self.alive().then_some(fd))
    }
}

/// A process referred to by a pidfd: signals and waits cannot hit a reused pid.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// A pidfd for whatever process has `pid` now; `None` when there is none. Use
    /// `ProcId::open` for a recorded pid, and this only for a child we just started.
    pub fn open_pid(pid: u32) -> io::Result<Option<PidFd>> {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return Ok(None);
        };
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no
        // memory is shared with the kernel.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) })))
    }

    /// Sends `sig`; an already exited process is not an error (nothing to signal).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits until the process has exited (a zombie has); false on timeout.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        !matches!(
            wait::until(&[self.as_fd()], Some(Instant::now() + timeout)),
            Ok(Wake::Deadline)
        )
    }

    /// Whether the process has exited, without waiting.
    pub fn exited(&self) -> bool {
        self.wait_exit(Duration::ZERO)
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// SIGTERM, up to `grace` for the exit, then SIGKILL. True when SIGKILL was needed.
    pub fn terminate(&self, grace: Duration) -> io::Result<bool> {
        self.signal(libc::SIGTERM)?;
        if self.wait_exit(grace) {
            return Ok(false);
        }
        self.signal(libc::SIGKILL)?;
        self.wait_exit(Duration::from_secs(5));
        Ok(true)
    }
}

/// Makes `cmd`'s process start with no signal blocked. A child inherits the signal
/// mask across fork and exec, and std's spawn does not reset it: a program started
/// while vpn-ns blocks SIGTERM (to take it from a signalfd or sigwait) would otherwise
/// never see SIGTERM.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sigprocmask is async-signal-safe; nothing is allocated after fork.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(io::Error::from)
        });
    }
}

/// `/proc/PID/comm`, trimmed; `None` when the process is gone.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
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

    const STAT: &str = "4242 (open vpn) (x)) S 1 4242 4242 0 -1 4194560 1253 0 0 0 \
                        3 1 0 0 20 0 1 0 987654 10563584 1420 18446744073709551615";

    #[test]
    fn parses_state_and_start_after_a_tricky_name() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.comm, "open vpn) (x)");
        assert_eq!(s.state, 'S');
        assert_eq!(s.start, 987_654);
        assert!(!s.is_dead());
    }

    #[test]
    fn zombies_and_dead_processes_are_dead() {
        for st in ['Z', 'X', 'x'] {
            let text = STAT.replace(") S ", &format!(") {st} "));
            assert!(parse_stat(&text).unwrap().is_dead(), "{st}");
        }
    }

    #[test]
    fn refuses_truncated_stat() {
        assert_eq!(parse_stat("12 (a) S 1 2 3"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 a S"), None);
    }

    #[test]
    fn identity_follows_the_process_not_the_number() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = ProcId::of(child.id()).expect("running");
        assert!(id.alive());
        let other = ProcId {
            start: id.start + 1,
            ..id
        };
        assert!(!other.alive(), "a different start time is another process");
        assert!(other.open().unwrap().is_none());
        let fd = id.open().unwrap().expect("running");
        assert!(!fd.exited());
        // A zombie (not reaped yet) is dead, and its pidfd reports the exit.
        assert!(!fd.terminate(Duration::from_secs(5)).unwrap());
        assert!(fd.exited());
        assert!(!id.alive(), "a zombie must count as dead");
        assert!(id.open().unwrap().is_none());
        assert!(!child.wait().unwrap().success());
        assert!(!id.alive());
    }

    #[test]
    fn rss_of_this_process() {
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
