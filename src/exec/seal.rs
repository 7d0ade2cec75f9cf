//! Host-served Unix sockets are ways out of the namespace: the daemon behind them runs
//! in the host's network namespace and acts for its client there (a session bus starts
//! services, dirmngr fetches URLs). In the exec's mount namespace the user's runtime
//! directory is replaced by a private one holding only what a GUI app needs (display
//! and audio sockets), and the session bus is absent, filtered through xdg-dbus-proxy,
//! or (on request) the real one. See docs/security.md for the full list.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;

use super::env::Account;
use crate::config::SessionBus;

const RUN_USER: &str = "/run/user";
/// Where Debian installs xdg-dbus-proxy (package xdg-dbus-proxy). Not searched in PATH:
/// root runs it, and PATH is the caller's.
const PROXY: [&str; 2] = ["/usr/bin/xdg-dbus-proxy", "/usr/local/bin/xdg-dbus-proxy"];
/// The filtered bus: the bus driver itself and desktop notifications, nothing that
/// starts programs, opens URIs or mounts network shares on the host.
const PROXY_POLICY: [&str; 2] = ["--filter", "--talk=org.freedesktop.Notifications"];
const PROXY_READY: Duration = Duration::from_secs(5);

/// The xdg-dbus-proxy binary, checked before anything is entered.
pub fn proxy_path() -> anyhow::Result<&'static str> {
    PROXY
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "[exec] session-bus = \"filtered\" needs xdg-dbus-proxy, which is not installed \
             (apt-get install xdg-dbus-proxy), or set session-bus = \"none\""
            )
        })
}

/// Runtime-directory entries a GUI app needs: Wayland display sockets, PipeWire and
/// PulseAudio. Relative to `/run/user/<uid>`.
pub fn allowed_entry(rel: &str) -> bool {
    let wayland = rel
        .strip_prefix("wayland-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    wayland || rel == "pipewire-0" || rel == "pulse/native"
}

/// A path below the runtime directory named by XAUTHORITY (GNOME's Xwayland cookie
/// lives there), as a relative path without `..`.
pub fn xauthority_entry(run_user: &Path, xauthority: Option<&Path>) -> Option<PathBuf> {
    let rel = xauthority?.strip_prefix(run_user).ok()?;
    let plain = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && rel.components().count() > 0).then(|| rel.to_owned())
}

/// What stays alive with vpn-ns while the command runs: the proxy, which stops when
/// its readiness pipe is closed. Dropping this closes the pipe and reaps the proxy, so
/// no orphan is left for a PID 1 that may not reap (as on these VMs).
pub struct Sealed {
    _proxy: Option<Proxy>,
}

struct Proxy {
    pipe: Option<OwnedFd>,
    pid: nix::unistd::Pid,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        drop(self.pipe.take());
        // Our own unreaped child: its pid cannot have been reused.
        if let Ok(Some(fd)) = crate::procs::PidFd::open_pid(self.pid.as_raw() as u32)
            && !fd.wait_exit(PROXY_READY)
        {
            let _ = fd.signal(libc::SIGKILL);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Replaces `/run/user` in the current (exec) mount namespace and masks the user's
/// dirmngr socket. Runs as root, before the PID namespace.
pub fn seal(
    t: &Account,
    gid: u32,
    groups: &[u32],
    bus: SessionBus,
    xauthority: Option<&Path>,
) -> anyhow::Result<Sealed> {
    mask_dirmngr(&t.home);
    let run_user = Path::new(RUN_USER);
    if !run_user.is_dir() {
        return Ok(Sealed { _proxy: None });
    }
    let real_path = run_user.join(t.uid.to_string());
    // The user's real runtime directory, reachable through this descriptor only.
    let real = open(
        &real_path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .filter(|fd| nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_uid == t.uid));
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("vpn-ns-run-user"),
        run_user,
        Some("tmpfs"),
        flags,
        Some("mode=0755,size=16m"),
    )
    .with_context(|| format!("cannot mount a private {RUN_USER}"))?;
    let Some(real) = real else {
        return Ok(Sealed { _proxy: None });
    };
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&real_path)
        .with_context(|| format!("cannot create {}", real_path.display()))?;
    std::os::unix::fs::chown(&real_path, Some(t.uid), Some(gid))
        .with_context(|| format!("cannot chown {}", real_path.display()))?;
    let src_root = PathBuf::from(format!("/proc/self/fd/{}", real.as_raw_fd()));
    let mut entries = listed(&src_root, t.uid);
    entries.extend(xauthority_entry(&real_path, xauthority));
    if bus == SessionBus::Full {
        entries.push(PathBuf::from("bus"));
    }
    for rel in entries {
        bind_entry(&src_root, &real_path, &rel, t.uid, gid)?;
    }
    let proxy = match bus {
        SessionBus::Filtered if owned_socket(&src_root.join("bus"), t.uid) => Some(
            start_proxy(t, gid, groups, &real, &real_path.join("bus"))
                .context("cannot start the session-bus proxy (xdg-dbus-proxy)")?,
        ),
        SessionBus::Filtered => {
            tracing::warn!(
                "no session bus at {}/bus: the command runs without one",
                real_path.display()
            );
            None
        }
        _ => None,
    };
    Ok(Sealed { _proxy: proxy })
}

fn owned_socket(p: &Path, uid: u32) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket() && m.uid() == uid)
}

/// The allowed entries that exist in the real runtime directory as the user's sockets.
fn listed(src_root: &Path, uid: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(src_root) else {
        return out;
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.push("pulse/native".into());
    names.sort();
    names.dedup();
    for n in names {
        if allowed_entry(&n) && owned_socket(&src_root.join(&n), uid) {
            out.push(PathBuf::from(n));
        }
    }
    out
}

/// Binds `src_root/rel` over a new empty file at `dst_root/rel`.
fn bind_entry(
    src_root: &Path,
    dst_root: &Path,
    rel: &Path,
    uid: u32,
    gid: u32,
) -> anyhow::Result<()> {
    let src = src_root.join(rel);
    let meta = match fs::symlink_metadata(&src) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", src.display())),
    };
    if meta.file_type().is_symlink() || meta.is_dir() || meta.uid() != uid {
        tracing::debug!(
            "not passing {}: not the user's file or socket",
            rel.display()
        );
        return Ok(());
    }
    let dst = dst_root.join(rel);
    if let Some(parent) = dst.parent().filter(|p| *p != dst_root) {
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        std::os::unix::fs::chown(parent, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", parent.display()))?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&dst)
        .with_context(|| format!("cannot create {}", dst.display()))?;
    mount(
        Some(&src),
        &dst,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "cannot bind {} into the private runtime directory",
            rel.display()
        )
    })?;
    tracing::debug!("passed {}", dst.display());
    Ok(())
}

/// gpg's dirmngr fetches URLs for its clients; without a runtime directory its socket
/// lives in ~/.gnupg. /dev/null bound over it refuses connections.
fn mask_dirmngr(home: &Path) {
    let sock = home.join(".gnupg/S.dirmngr");
    let Ok(m) = fs::symlink_metadata(&sock) else {
        return;
    };
    if !m.file_type().is_socket() {
        return;
    }
    if let Err(e) = mount(
        Some("/dev/null"),
        &sock,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        tracing::warn!("cannot mask {}: {e}", sock.display());
    }
}

/// Starts xdg-dbus-proxy as the user, outside the command's PID namespace (so the
/// command cannot reach the real bus through the proxy's /proc entries), listening at
/// `listen` and talking to the real bus through the descriptor `real`.
fn start_proxy(
    t: &Account,
    gid: u32,
    groups: &[u32],
    real: &OwnedFd,
    listen: &Path,
) -> anyhow::Result<Proxy> {
    let proxy = proxy_path()?;
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let (real_fd, wr_fd) = (real.as_raw_fd(), wr.as_raw_fd());
    let args: Vec<std::ffi::CString> = [
        proxy.to_owned(),
        format!("--fd={wr_fd}"),
        format!("unix:path=/proc/self/fd/{real_fd}/bus"),
        listen.display().to_string(),
    ]
    .into_iter()
    .chain(PROXY_POLICY.map(str::to_owned))
    .map(|a| std::ffi::CString::new(a).context("NUL in a proxy argument"))
    .collect::<anyhow::Result<_>>()?;
    let env = [c"PATH=/usr/bin:/bin"];
    // SAFETY: single-threaded (checked by enter); the child only execs or exits.
    let pid = match unsafe { nix::unistd::fork() }.context("cannot fork the proxy")? {
        ForkResult::Child => {
            super::relay::default_signals();
            let keep = [real_fd, wr_fd];
            for fd in keep {
                // SAFETY: clears FD_CLOEXEC on a descriptor this process owns.
                unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            }
            close_except(&keep);
            if super::identity::drop_to(t, gid, groups).is_ok() {
                let _ = nix::unistd::execve(&args[0], &args, &env);
            }
            // SAFETY: the forked child ends without running the parent's handlers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(wr);
    // From here on an early return still ends and reaps the proxy.
    let mut proxy = Proxy { pipe: None, pid };
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&rd),
        PollFlags::POLLIN,
    )];
    let ms = u16::try_from(PROXY_READY.as_millis()).unwrap_or(u16::MAX);
    let n = poll(&mut fds, PollTimeout::from(ms)).context("poll")?;
    let mut b = [0u8; 1];
    if n == 0 || nix::unistd::read(&rd, &mut b).unwrap_or(0) == 0 {
        bail!("xdg-dbus-proxy did not report ready within {PROXY_READY:?}");
    }
    proxy.pipe = Some(rd);
    Ok(proxy)
}

/// Closes every descriptor from 3 up except `keep`.
fn close_except(keep: &[i32]) {
    let mut keep: Vec<u32> = keep.iter().map(|&k| k as u32).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep {
        if k > from {
            // SAFETY: closes descriptors this process owns.
            unsafe { libc::close_range(from, k - 1, 0) };
        }
        from = from.max(k + 1);
    }
    // SAFETY: as above.
    unsafe { libc::close_range(from, libc::c_uint::MAX, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_display_and_audio_sockets_pass() {
        for ok in ["wayland-0", "wayland-12", "pipewire-0", "pulse/native"] {
            assert!(allowed_entry(ok), "{ok}");
        }
        for no in [
            "bus",
            "gnupg/S.dirmngr",
            "systemd/private",
            "pipewire-0-manager",
            "wayland-",
            "wayland-0.lock",
            "gvfsd",
            "at-spi/bus",
            "keyring/control",
            "doc",
        ] {
            assert!(!allowed_entry(no), "{no}");
        }
    }

    #[test]
    fn xauthority_only_below_the_runtime_dir() {
        let r = Path::new("/run/user/1000");
        assert_eq!(
            xauthority_entry(
                r,
                Some(Path::new("/run/user/1000/.mutter-Xwaylandauth.AB12"))
            ),
            Some(PathBuf::from(".mutter-Xwaylandauth.AB12"))
        );
        assert_eq!(
            xauthority_entry(r, Some(Path::new("/run/user/1000/gdm/Xauthority"))),
            Some(PathBuf::from("gdm/Xauthority"))
        );
        assert_eq!(
            xauthority_entry(r, Some(Path::new("/run/user/1000/../0/x"))),
            None
        );
        assert_eq!(
            xauthority_entry(r, Some(Path::new("/home/al/.Xauthority"))),
            None
        );
        assert_eq!(xauthority_entry(r, Some(Path::new("/run/user/1000"))), None);
        assert_eq!(xauthority_entry(r, None), None);
    }
}
