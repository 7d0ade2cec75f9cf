//! Hosting the data plane in its own process until the per-connection keeper does:
//! `vpn-ns up` starts `vpn-ns wg-builtin [--netns NS] IFACE` in its own session, feeds
//! it the `set=1` configuration over a pipe (keys never touch a file), and waits for
//! "ready" on another pipe, watching the child through a pidfd (an early death is
//! reported at once, with the log). The child ends on SIGTERM/SIGINT/SIGHUP (`down`
//! sends SIGTERM through a pidfd), when its namespace is deleted, or when a data-plane
//! loop fails (its tun went away).

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::plane::Plane;
use super::{BuiltinError, request};
use crate::procs::PidFd;
use crate::spec::{InterfaceName, NetnsName};

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "wg-builtin";
const READY: &[u8] = b"ready\n";
/// The configuration is a `set=1` request; 10,000 AllowedIPs are ~300 KiB.
const MAX_CONFIG: u64 = 16 << 20;

/// Why the data plane ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Signal(String),
    NetnsDeleted,
    LoopFailed(String),
}

fn block_signals() -> Result<SignalFd, BuiltinError> {
    let mut s = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        s.add(sig);
    }
    let io = |e: nix::errno::Errno| BuiltinError::io("cannot block", "signals")(e.into());
    // Before any thread starts, so every thread inherits the mask and only the
    // signalfd sees them.
    s.thread_block().map_err(io)?;
    SignalFd::with_flags(&s, SfdFlags::SFD_CLOEXEC).map_err(io)
}

/// The child's side: runs the data plane of `iface` until it should end.
pub fn serve(netns: Option<&NetnsName>, iface: &InterfaceName) -> Result<Ended, BuiltinError> {
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let signals = block_signals()?;
    let mut text = String::new();
    io::stdin()
        .take(MAX_CONFIG)
        .read_to_string(&mut text)
        .map_err(BuiltinError::io(
            "cannot read the configuration from",
            "stdin",
        ))?;
    let set = request::parse(&text);
    wipe(text);
    let set = set?;
    let ns_file = match netns {
        Some(ns) => Some(
            crate::netns::open(ns).map_err(|source| BuiltinError::Netns {
                ns: ns.to_string(),
                iface: iface.to_string(),
                source,
            })?,
        ),
        None => None,
    };
    // Watched before anything can delete it, so its deletion cannot be missed.
    let watch = match netns {
        Some(_) => {
            let dir = crate::netns::run_dir();
            let w = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| {
                BuiltinError::io("cannot watch", dir.display().to_string())(e.into())
            })?;
            w.add_watch(
                &dir,
                AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM,
            )
            .map_err(|e| BuiltinError::io("cannot watch", dir.display().to_string())(e.into()))?;
            Some(w)
        }
        None => None,
    };
    let plane = Plane::start(
        ns_file.as_ref().zip(netns.map(|n| n.as_str())),
        iface.as_str(),
        set,
    )?;
    drop(ns_file);

    let mut out = io::stdout();
    out.write_all(READY)
        .and_then(|()| out.flush())
        .map_err(BuiltinError::io("cannot signal readiness on", "stdout"))?;
    // Close the readiness pipe: later output goes to the log with stderr.
    // SAFETY: dup2 of two open fds of this process.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    tracing::info!("{iface}: built-in WireGuard running");

    let ended = wait_for_end(&signals, watch.as_ref(), netns, &plane);
    plane.stop();
    Ok(ended)
}

/// Overwrites a string that held key material before its memory is freed.
pub(crate) fn wipe(text: String) {
    let mut bytes = text.into_bytes();
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned &mut u8; volatile keeps the wipe from being
        // optimised away as a dead store.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

fn wait_for_end(
    signals: &SignalFd,
    watch: Option<&Inotify>,
    netns: Option<&NetnsName>,
    plane: &Plane,
) -> Ended {
    loop {
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(plane.ended_fd(), PollFlags::POLLIN),
        ];
        if let Some(w) = watch {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Ended::LoopFailed(format!("poll: {e}")),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        if ready(0)
            && let Ok(Some(info)) = signals.read_signal()
        {
            let name = Signal::try_from(info.ssi_signo as i32)
                .map(|s| s.to_string())
                .unwrap_or_else(|_| info.ssi_signo.to_string());
            return Ended::Signal(name);
        }
        if ready(1) {
            return Ended::LoopFailed(plane.reason());
        }
        if ready(2)
            && let (Some(w), Some(ns)) = (watch, netns)
            && let Ok(events) = w.read_events()
            && events
                .iter()
                .any(|e| e.name.as_deref().is_some_and(|n| n == ns.as_str()))
        {
            return Ended::NetnsDeleted;
        }
    }
}

/// The parent's side: starts the data plane of `iface` (inside `netns`, or in the host
/// namespace when None) with `config` (a `set=1` request), logging to `log`, and returns
/// once it is ready.
pub fn start(
    netns: Option<&NetnsName>,
    iface: &InterfaceName,
    config: &str,
    log: &Path,
    timeout: Duration,
) -> Result<Child, BuiltinError> {
    let exe = std::env::current_exe()
        .map_err(BuiltinError::io("cannot find", "the vpn-ns executable"))?;
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(log)
        .map_err(BuiltinError::io("cannot open", log.display().to_string()))?;
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND);
    if let Some(ns) = netns {
        cmd.arg("--netns").arg(ns.as_str());
    }
    // The interface goes last: `down` checks a pid's command line ends with it before
    // signalling (see wireguard::device::is_userspace_process).
    cmd.arg(iface.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(out);
    // SAFETY: setsid is async-signal-safe; own session: a Ctrl-C or a hang-up of the
    // terminal that ran `up` does not reach the tunnel.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(BuiltinError::io("cannot start", "the built-in WireGuard"))?;
    let res = handshake(&mut child, config, iface, log, timeout);
    if res.is_err() {
        // std's kill of our own unreaped child, whose pid cannot have been reused.
        let _ = child.kill();
        let _ = child.wait();
    }
    res.map(|()| child)
}

fn handshake(
    child: &mut Child,
    config: &str,
    iface: &InterfaceName,
    log: &Path,
    timeout: Duration,
) -> Result<(), BuiltinError> {
    // The child is ours and not yet reaped, so its pid cannot have been reused.
    let pidfd = PidFd::open_pid(child.id())
        .and_then(|p| p.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH)))
        .map_err(BuiltinError::io("cannot watch", "the built-in WireGuard"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A child that died early closes the pipe: the wait below reports why.
    let _ = stdin.write_all(config.as_bytes());
    drop(stdin);
    let mut stdout = child.stdout.take().expect("piped stdout");
    let exited = |child: &mut Child| BuiltinError::Exited {
        iface: iface.to_string(),
        status: child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string()),
        log: log.to_owned(),
    };
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BuiltinError::Timeout {
                iface: iface.to_string(),
                timeout,
                log: log.to_owned(),
            });
        }
        let mut fds = [
            PollFd::new(stdout.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(BuiltinError::io(
                    "cannot wait for",
                    "the built-in WireGuard",
                )(e.into()));
            }
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let mut buf = [0u8; 64];
            let n = match stdout.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n > 0 {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(READY) {
                    return Ok(());
                }
                continue;
            }
            return Err(exited(child));
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Err(exited(child));
        }
    }
}
