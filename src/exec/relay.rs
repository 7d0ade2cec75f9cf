//! vpn-ns's side of a running exec: the pseudo-terminal that stands between the
//! invoker's terminal and the command (as sudo's `use_pty`), signal forwarding, and the
//! command's exit status. One thread, one poll loop: nothing else runs in this process.
//!
//! The command never gets a descriptor of the invoker's terminal, so it can neither
//! push input into it (TIOCSTI) nor keep it after exec returns.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{Winsize, openpty};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals vpn-ns passes on to the command (through its init) rather than dying of them.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals that vpn-ns and the exec init take through signalfd/sigwait. Blocked
/// before the first fork, so none arrives between fork and the loop that handles it.
pub fn handled() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(sig);
    }
    s.add(Signal::SIGCHLD);
    s.add(Signal::SIGWINCH);
    // `fg` continues a job with SIGCONT: the moment to take the terminal over.
    s.add(Signal::SIGCONT);
    s
}

pub fn is_forwarded(sig: Signal) -> bool {
    FORWARDED.contains(&sig)
}

/// Blocks `handled()` and returns a signalfd for it. Also ignores SIGTTOU and SIGTTIN:
/// started in the background (`vpn-ns exec work firefox &`), vpn-ns must not be
/// stopped for writing the command's output or restoring the terminal.
pub fn block_signals() -> anyhow::Result<SignalFd> {
    let set = handled();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("cannot block signals")?;
    for sig in [Signal::SIGTTOU, Signal::SIGTTIN] {
        // SAFETY: installs SIG_IGN, no handler code.
        unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }
            .context("cannot ignore terminal stop signals")?;
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot create a signalfd")
}

/// Which of stdin, stdout and stderr are terminals.
pub type Ttys = [bool; 3];

/// A new pseudo-terminal for the command, sized and set up like the invoker's.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub ttys: Ttys,
}

fn std_fd(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: 0, 1 and 2 stay open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn winsize(fd: BorrowedFd) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize into `ws`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

fn set_winsize(fd: BorrowedFd, ws: &Winsize) {
    // SAFETY: TIOCSWINSZ reads one struct winsize.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws) };
}

fn cloexec(fd: &OwnedFd) -> anyhow::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("cannot set FD_CLOEXEC")?;
    Ok(())
}

/// A pty when any standard descriptor is a terminal, else None (the command then runs
/// in a new session without a controlling terminal).
pub fn open() -> anyhow::Result<Option<Pty>> {
    let ttys: Ttys = [0, 1, 2].map(|fd| nix::unistd::isatty(std_fd(fd)).unwrap_or(false));
    let Some(src) = ttys.iter().position(|t| *t) else {
        return Ok(None);
    };
    let src = std_fd(src as i32);
    let modes = termios::tcgetattr(src).ok();
    let ws = winsize(src);
    let p = openpty(ws.as_ref(), modes.as_ref()).context("cannot allocate a pseudo-terminal")?;
    cloexec(&p.master)?;
    cloexec(&p.slave)?;
    Ok(Some(Pty {
        master: p.master,
        slave: p.slave,
        ttys,
    }))
}

/// Signal handling as a fresh program expects it: nothing blocked, SIGPIPE (which Rust
/// ignores) and the terminal stop signals (ignored above) back to their defaults. An
/// ignored signal would stay ignored across exec.
pub fn default_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in [Signal::SIGPIPE, Signal::SIGTTOU, Signal::SIGTTIN] {
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
    }
}

/// Whether vpn-ns's process group owns the terminal on stdin (not a background job).
fn foreground() -> bool {
    nix::unistd::tcgetpgrp(std_fd(0)).is_ok_and(|p| p == nix::unistd::getpgrp())
}

/// The invoker's terminal (stdin) in raw mode while vpn-ns is in the foreground: every
/// key goes to the command's terminal, which does its own line editing and signal
/// generation. A background vpn-ns leaves the terminal alone and reads nothing from
/// it. Restores the saved modes on drop.
pub struct RawMode {
    saved: Option<Termios>,
    active: bool,
}

impl RawMode {
    pub fn new(ttys: Ttys) -> RawMode {
        let saved = ttys[0]
            .then(|| termios::tcgetattr(std_fd(0)).ok())
            .flatten();
        RawMode {
            saved,
            active: false,
        }
    }

    /// Enters raw mode when vpn-ns has come to the foreground; returns whether it is
    /// there (and so may read the terminal).
    pub fn update(&mut self) -> bool {
        let Some(saved) = &self.saved else {
            return false;
        };
        let fg = foreground();
        if fg && !self.active {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            self.active = termios::tcsetattr(std_fd(0), SetArg::TCSADRAIN, &raw).is_ok();
        }
        fg
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let (Some(saved), true) = (&self.saved, self.active) {
            let _ = termios::tcsetattr(std_fd(0), SetArg::TCSADRAIN, saved);
        }
    }
}

/// A shell's exit status for a wait status: the code, or 128 + the signal.
pub fn exit_code(st: WaitStatus) -> Option<u8> {
    match st {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, sig, _) => Some(128u8.wrapping_add(sig as u8)),
        _ => None,
    }
}

fn write_all(fd: BorrowedFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(_) => return,
        }
    }
}

/// Relays between the invoker's terminal and the pty until `child` (the exec init) has
/// exited and the pty has no more output; returns the command's exit status.
pub fn run(pty: Option<Pty>, signals: SignalFd, child: Pid) -> anyhow::Result<u8> {
    let (master, ttys) = match pty {
        Some(p) => {
            drop(p.slave);
            (Some(p.master), p.ttys)
        }
        None => (None, [false; 3]),
    };
    if let Some(m) = &master {
        fcntl(m, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("cannot set O_NONBLOCK")?;
    }
    let mut raw = RawMode::new(ttys);
    let out = std_fd(if ttys[1] { 1 } else { 2 });
    let winsize_src = ttys.iter().position(|t| *t).map(|i| std_fd(i as i32));
    let mut stdin_open = master.is_some() && ttys[0];
    let mut master_open = master.is_some();
    let mut pending: Vec<u8> = Vec::new();
    let mut status: Option<u8> = None;
    let mut buf = [0u8; 16384];
    loop {
        if status.is_some() && !master_open {
            break;
        }
        let in_front = raw.update();
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let mi = master.as_ref().filter(|_| master_open).map(|m| {
            let mut ev = PollFlags::POLLIN;
            if !pending.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(m.as_fd(), ev));
            fds.len() - 1
        });
        let si = (in_front && stdin_open && pending.len() < buf.len()).then(|| {
            fds.push(PollFd::new(std_fd(0), PollFlags::POLLIN));
            fds.len() - 1
        });
        // Once the command is gone, its pty closes with its namespace; do not wait on
        // output forever if something else still holds it.
        let timeout = match status {
            Some(_) => PollTimeout::from(500u16),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let ready = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let (sig_ready, m_ready, s_ready) = (
            !ready(0).is_empty(),
            mi.map(ready).unwrap_or(PollFlags::empty()),
            si.map(ready).unwrap_or(PollFlags::empty()),
        );
        drop(fds);
        if sig_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match sig {
                    Signal::SIGCHLD => {
                        if let Ok(st) = waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                            status = status.or(exit_code(st));
                        }
                    }
                    Signal::SIGWINCH => {
                        if let (Some(src), Some(m)) = (winsize_src, &master)
                            && let Some(ws) = winsize(src)
                        {
                            set_winsize(m.as_fd(), &ws);
                        }
                    }
                    s if is_forwarded(s) => {
                        let _ = kill(child, s);
                    }
                    _ => {}
                }
            }
        }
        if let Some(m) = &master {
            if m_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                match nix::unistd::read(m, &mut buf) {
                    Ok(0) | Err(Errno::EIO) => master_open = false,
                    Ok(n) => write_all(out, &buf[..n]),
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(_) => master_open = false,
                }
            }
            if m_ready.contains(PollFlags::POLLOUT) {
                match nix::unistd::write(m, &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(_) => pending.clear(),
                }
            }
        }
        if !s_ready.is_empty() {
            let room = buf.len() - pending.len();
            match nix::unistd::read(std_fd(0), &mut buf[..room]) {
                Ok(0) => stdin_open = false,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
    match status {
        Some(code) => Ok(code),
        // The pty closed first; the init is exiting: collect its status.
        None => loop {
            match waitpid(child, None) {
                Ok(st) => {
                    if let Some(code) = exit_code(st) {
                        return Ok(code);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("cannot wait for the command"),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_a_shells() {
        let p = Pid::from_raw(5);
        assert_eq!(exit_code(WaitStatus::Exited(p, 0)), Some(0));
        assert_eq!(exit_code(WaitStatus::Exited(p, 127)), Some(127));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, false)),
            Some(143)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn only_job_signals_are_forwarded() {
        assert!(is_forwarded(Signal::SIGTERM) && is_forwarded(Signal::SIGINT));
        assert!(!is_forwarded(Signal::SIGCHLD) && !is_forwarded(Signal::SIGKILL));
        assert!(handled().contains(Signal::SIGCHLD) && handled().contains(Signal::SIGWINCH));
    }
}
