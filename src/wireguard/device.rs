//! Creating and destroying WireGuard devices in the host namespace: a userspace
//! implementation (wireguard-go) with its UAPI socket, or a kernel link via rtnetlink.
//! Waiting is event-driven: inotify for the socket, a pidfd for the process.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::uapi::{self, SOCKET_DIR};
use crate::procs::{PidFd, ProcId};
use crate::wait;

/// wireguard-go refuses to run on Linux without this (it prefers the kernel module).
pub const USERSPACE_ENV: &str = "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot start {program} for {iface}: {source}")]
    Spawn {
        program: String,
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} for {iface} exited before its UAPI socket appeared ({status}); see {}", .log.display())]
    Exited {
        program: String,
        iface: String,
        status: String,
        log: PathBuf,
    },
    #[error("{program} for {iface} did not open {} within {} ms (netns-timeout); see {}", .socket.display(), .timeout.as_millis(), .log.display())]
    Timeout {
        program: String,
        iface: String,
        socket: PathBuf,
        timeout: Duration,
        log: PathBuf,
    },
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether `pid`'s command line is `<program> ... <iface>` (the pid in a state file may
/// have been reused by now).
pub fn is_userspace_process(pid: u32, iface: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
            args.last() == Some(&iface.as_bytes())
        })
        .unwrap_or(false)
}

/// A started userspace implementation with its UAPI socket ready.
pub struct Userspace {
    pub child: Child,
    pub socket: PathBuf,
}

/// Starts `program -f <iface>` detached from our process group (so a Ctrl-C to vpn-ns
/// does not kill the tunnel), logging to `log`, and waits until its UAPI socket accepts
/// connections.
/// `conn`: the connection the process is recorded for (`record_starting`) the moment
/// it exists, before the wait, so an up killed meanwhile does not lose it.
pub fn start_userspace(
    program: &str,
    iface: &str,
    log: &Path,
    timeout: Duration,
    conn: &str,
) -> Result<Userspace, DeviceError> {
    let dir = Path::new(SOCKET_DIR);
    crate::owned::create_dir(dir, 0o755).map_err(|source| DeviceError::Io {
        op: "cannot create",
        path: dir.to_owned(),
        source,
    })?;
    let socket = uapi::socket_path(iface);
    // Watch before starting, so the socket's creation cannot slip between the two.
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| {
        DeviceError::Io {
            op: "cannot watch",
            path: dir.to_owned(),
            source: e.into(),
        }
    })?;
    inotify
        .add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
        .map_err(|e| DeviceError::Io {
            op: "cannot watch",
            path: dir.to_owned(),
            source: e.into(),
        })?;
    // One log per run: a new `up` truncates the previous one.
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log)
        .map_err(|source| DeviceError::Io {
            op: "cannot open",
            path: log.to_owned(),
            source,
        })?;
    let err = out.try_clone().map_err(|source| DeviceError::Io {
        op: "cannot open",
        path: log.to_owned(),
        source,
    })?;
    let spawn_err = |source| DeviceError::Spawn {
        program: program.to_owned(),
        iface: iface.to_owned(),
        source,
    };
    let mut cmd = Command::new(program);
    crate::procs::unblock_signals_in_child(&mut cmd);
    record_in_child(&mut cmd, conn, iface)?;
    let mut child = cmd
        .arg("-f")
        .arg(iface)
        .env(USERSPACE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    // A child that already exited (a zombie until we reap it) leaves nothing to clean
    // up after a crash: nothing to record, and the wait below reports how it ended.
    let recorded = match ProcId::of(child.id()) {
        Some(id) => record_starting(conn, id, iface),
        None => Ok(()),
    };
    // Our unreaped child: its pid cannot be reused while we hold it.
    let pidfd = match PidFd::open_pid(child.id()).and_then(|p| match recorded {
        Ok(()) => Ok(p),
        Err(e) => Err(io::Error::other(e)),
    }) {
        Ok(Some(p)) => p,
        r => {
            // No pidfd (out of descriptors?): std's kill of our own unreaped child,
            // whose pid cannot have been reused.
            let _ = child.kill();
            let _ = child.wait();
            let e = r
                .err()
                .unwrap_or_else(|| io::Error::from_raw_os_error(libc::ESRCH));
            return Err(spawn_err(e));
        }
    };
    let end = Instant::now() + timeout;
    loop {
        match UnixStream::connect(&socket) {
            Ok(_) => {
                return Ok(Userspace { child, socket });
            }
            // Absent: not created yet. Refused: bound but not yet listening.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(source) => {
                stop_child(&mut child, &pidfd);
                return Err(DeviceError::Io {
                    op: "cannot connect to",
                    path: socket,
                    source,
                });
            }
        }
        let now = Instant::now();
        if now >= end {
            stop_child(&mut child, &pidfd);
            return Err(DeviceError::Timeout {
                program: program.to_owned(),
                iface: iface.to_owned(),
                socket,
                timeout,
                log: log.to_owned(),
            });
        }
        // A refused connect means the file exists already, so no inotify event will
        // come: re-check shortly instead of waiting for one.
        let wait = if socket.exists() {
            Duration::from_millis(10)
        } else {
            end - now
        };
        let woke = match wait::until(
            &[inotify.as_fd(), pidfd.as_fd()],
            Some(now + wait.min(end - now)),
        ) {
            Ok(w) => w,
            Err(source) => {
                stop_child(&mut child, &pidfd);
                return Err(DeviceError::Io {
                    op: "cannot wait for",
                    path: socket,
                    source,
                });
            }
        };
        if woke.is(1) {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            return Err(DeviceError::Exited {
                program: program.to_owned(),
                iface: iface.to_owned(),
                status,
                log: log.to_owned(),
            });
        }
        // Drain the events; what matters is whether the socket accepts now.
        let _ = inotify.read_events();
    }
}

fn stop_child(child: &mut Child, pidfd: &PidFd) {
    let _ = pidfd.signal(libc::SIGTERM);
    if !pidfd.wait_exit(Duration::from_secs(2)) {
        let _ = pidfd.signal(libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Stops the userspace implementation `id` serving `iface` (if it still is that
/// process): SIGTERM, wait up to `timeout`, then SIGKILL; removes a socket it left.
/// Returns whether a process was stopped.
pub fn stop_userspace(id: ProcId, iface: &str, timeout: Duration) -> bool {
    let mut stopped = false;
    let pid = id.pid;
    if let Ok(Some(pidfd)) = id.open()
        && is_userspace_process(pid, iface)
    {
        stopped = true;
        let _ = pidfd.signal(libc::SIGTERM);
        if !pidfd.wait_exit(timeout) {
            tracing::warn!("userspace WireGuard (pid {pid}) ignored SIGTERM; killing it");
            let _ = pidfd.signal(libc::SIGKILL);
            pidfd.wait_exit(Duration::from_secs(2));
        }
    }
    remove_socket(iface);
    stopped
}

/// Removes `/run/wireguard/<iface>.sock` if nothing serves it any more.
pub fn remove_socket(iface: &str) {
    let s = uapi::socket_path(iface);
    if s.exists() && UnixStream::connect(&s).is_err() {
        match fs::remove_file(&s) {
            Ok(()) => tracing::debug!("removed stale {}", s.display()),
            Err(e) => tracing::warn!("cannot remove stale {}: {e}", s.display()),
        }
    }
}

/// The file a userspace implementation logs to.
pub fn log_path(conn: &str) -> PathBuf {
    crate::state::run_dir().join(format!("{conn}.wg.log"))
}

/// Creates /run/vpn-ns for the log when no state exists yet.
pub fn ensure_log_dir() -> Result<(), DeviceError> {
    let d = crate::state::run_dir();
    match crate::owned::ensure_dir(&d, 0o755) {
        Ok(_) => Ok(()),
        Err(e) => Err(DeviceError::Io {
            op: "cannot use",
            path: d,
            source: io::Error::other(e.to_string()),
        }),
    }
}

/// A userspace implementation started by an up that has not finished yet:
/// `/run/vpn-ns/<conn>.wg.starting` names it until the up records it in the state (or
/// rolls back), so an up killed half way (SIGKILL, a crash) does not leave it running
/// unknown to everyone: the next up or down stops it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Starting {
    process: ProcId,
    iface: String,
}

fn starting_path(conn: &str) -> PathBuf {
    crate::state::run_dir().join(format!("{conn}.wg.starting"))
}

pub fn record_starting(conn: &str, process: ProcId, iface: &str) -> Result<(), DeviceError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let p = starting_path(conn);
    let body = serde_json::to_vec(&Starting {
        process,
        iface: iface.to_owned(),
    })
    .expect("serializes");
    let io = |op| {
        let path = p.clone();
        move |source| DeviceError::Io { op, path, source }
    };
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .map_err(io("cannot write"))?;
    f.write_all(&body).map_err(io("cannot write"))
}

pub fn clear_starting(conn: &str) {
    let p = starting_path(conn);
    if let Err(e) = fs::remove_file(&p)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", p.display());
    }
}

/// Stops what an interrupted up left running (see `Starting`). True when it did.
pub fn stop_leftover(conn: &str, timeout: Duration) -> bool {
    let p = starting_path(conn);
    let Ok(text) = fs::read(&p) else {
        return false;
    };
    let stopped = match serde_json::from_slice::<Starting>(&text) {
        Ok(s) => {
            let stopped = stop_userspace(s.process, &s.iface, timeout);
            if stopped {
                tracing::warn!(
                    "{conn}: stopped the userspace WireGuard of {} (pid {}) left by an interrupted up",
                    s.iface,
                    s.process.pid
                );
            }
            stopped
        }
        Err(e) => {
            tracing::warn!("{} is corrupt ({e}); removing it", p.display());
            false
        }
    };
    clear_starting(conn);
    stopped
}

/// Makes the child write its own `Starting` record before it execs the program: a
/// SIGKILL of the up at any instant after the fork then still leaves the process named
/// (the parent rewrites the same record once spawn returns).
fn record_in_child(cmd: &mut Command, conn: &str, iface: &str) -> Result<(), DeviceError> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = starting_path(conn);
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| DeviceError::Io {
            op: "cannot use",
            path: path.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    let iface = iface.as_bytes().to_vec();
    // SAFETY: the closure only makes system calls (open, read, write, close, getpid)
    // on buffers allocated before the fork, and formats into stack arrays.
    unsafe {
        cmd.pre_exec(move || write_starting_raw(&c_path, &iface));
    }
    Ok(())
}

/// The async-signal-safe half of `record_in_child`: no allocation, no lock.
fn write_starting_raw(path: &std::ffi::CStr, iface: &[u8]) -> io::Result<()> {
    let mut stat = [0u8; 1024];
    // SAFETY: plain system calls on a stack buffer and a NUL-terminated literal.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
        libc::close(fd);
        n
    };
    let stat = stat.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
    let start = stat_start_raw(stat).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let mut out = [0u8; 256];
    let len = starting_json_raw(&mut out, pid, start, iface)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path prepared before the fork; a stack buffer.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let w = libc::write(fd, out.as_ptr().cast(), len);
        libc::close(fd);
        if w != len as isize {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
    }
    Ok(())
}

/// Field 22 (start time) of a `/proc/PID/stat` text, without allocating.
fn stat_start_raw(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let mut fields = stat[close + 1..]
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty());
    let f = fields.nth(19)?;
    let mut v: u64 = 0;
    for d in f.iter().take_while(|d| d.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// `{"process":{"pid":P,"start":S},"iface":"I"}` into `out`; its length. The interface
/// name was validated (no quote, no backslash), so it needs no escaping.
fn starting_json_raw(out: &mut [u8], pid: u64, start: u64, iface: &[u8]) -> Option<usize> {
    let mut len = 0;
    let mut put = |b: &[u8]| -> Option<()> {
        out.get_mut(len..len + b.len())?.copy_from_slice(b);
        len += b.len();
        Some(())
    };
    let digits = |v: u64, put: &mut dyn FnMut(&[u8]) -> Option<()>| -> Option<()> {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut v = v;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        put(&buf[i..])
    };
    if iface.iter().any(|b| matches!(b, b'"' | b'\\') || *b < 0x20) {
        return None;
    }
    put(b"{\"process\":{\"pid\":")?;
    digits(pid, &mut put)?;
    put(b",\"start\":")?;
    digits(start, &mut put)?;
    put(b"},\"iface\":\"")?;
    put(iface)?;
    put(b"\"}")?;
    Some(len)
}

#[cfg(test)]
mod starting_tests {
    use super::*;

    #[test]
    fn the_childs_record_is_the_parents_format() {
        let stat = b"77 (wireguard-go) S 1 77 77 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 5555 1 2";
        assert_eq!(stat_start_raw(stat), Some(5555));
        assert_eq!(stat_start_raw(b"77 (x) S 1"), None);
        let mut out = [0u8; 256];
        let n = starting_json_raw(&mut out, 77, 5555, b"wg0").unwrap();
        let s: Starting = serde_json::from_slice(&out[..n]).unwrap();
        assert_eq!(
            s.process,
            ProcId {
                pid: 77,
                start: 5555
            }
        );
        assert_eq!(s.iface, "wg0");
        assert_eq!(starting_json_raw(&mut out, 1, 2, b"a\"b"), None);
        assert_eq!(starting_json_raw(&mut [0u8; 10], 1, 2, b"wg0"), None);
        // The same start time as the parent reads for this very process.
        let own = std::fs::read("/proc/self/stat").unwrap();
        assert_eq!(stat_start_raw(&own), Some(ProcId::current().start));
    }
}
