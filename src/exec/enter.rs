//! Entering the connection's namespace the way `ip netns exec` does, plus what it leaves
//! out: host daemons' socket directories hidden, only vpn-ns's own files bound over
//! /etc, and an own UTS namespace when a hostname is set.
//! Runs on the process's only thread: `unshare(CLONE_NEWNS)` refuses a process whose
//! filesystem context is shared with other threads.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;

use crate::config::Hostname;
use crate::dns;
use crate::spec::NetnsName;

/// Where host daemons that act on the network for their clients listen: systemd-resolved
/// (nss-resolve, the stub's varlink socket), nscd, the system bus (resolved's
/// ResolveHostname, NetworkManager, avahi over D-Bus), avahi's own socket, and CUPS
/// (network printers). Each is covered by an empty tmpfs.
pub const HOST_SOCKET_DIRS: [&str; 5] = [
    "/run/systemd/resolve",
    "/run/nscd",
    "/run/dbus",
    "/run/avahi-daemon",
    "/run/cups",
];

/// Threads of this process, from /proc/self/status.
fn thread_count() -> Option<usize> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// setns + new mount (and UTS) namespace + the /etc/netns overlay + masked host sockets.
pub fn enter(ns_file: &File, ns: &NetnsName, hostname: Option<&Hostname>) -> anyhow::Result<()> {
    match thread_count() {
        Some(1) => {}
        n => bail!(
            "cannot enter namespace {ns}: vpn-ns must be single-threaded here, has {n:?} threads"
        ),
    }
    nix::sched::setns(ns_file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter network namespace {ns}"))?;
    let mut flags = CloneFlags::CLONE_NEWNS;
    if hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    nix::sched::unshare(flags).context("cannot create a mount namespace (unshare)")?;
    // Our mounts must not propagate back to the host; the host's later mounts (a
    // persistent namespace's new /run/netns entries) may still reach us.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("cannot make / a slave mount")?;
    remount_sys(ns);
    let masked = mask_host_sockets()?;
    bind_etc(ns, &masked)?;
    for dir in &masked {
        let ro = MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(None::<&str>, dir, None::<&str>, ro, None::<&str>)
            .with_context(|| format!("cannot make {} read-only", dir.display()))?;
    }
    if let Some(h) = hostname {
        nix::unistd::sethostname(h.as_str())
            .with_context(|| format!("cannot set hostname {}", h.as_str()))?;
    }
    Ok(())
}

/// A new PID namespace for the next child (the exec init). After the session-bus proxy
/// is started, which must stay outside it.
pub fn new_pid_namespace() -> anyhow::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).context("cannot create a PID namespace")
}

/// A fresh sysfs shows the namespace's own network devices. Failing to remount is not
/// fatal (as in `ip netns exec`): /sys then shows the host's devices, which is cosmetic.
fn remount_sys(ns: &NetnsName) {
    let ro = nix::sys::statvfs::statvfs("/sys")
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false);
    if let Err(e) = umount2("/sys", MntFlags::MNT_DETACH) {
        tracing::debug!("cannot unmount /sys: {e}");
        return;
    }
    let flags = if ro {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if let Err(e) = mount(
        Some(ns.as_str()),
        "/sys",
        Some("sysfs"),
        flags,
        None::<&str>,
    ) {
        tracing::debug!("cannot mount a fresh sysfs on /sys: {e}");
    }
}

/// Covers each existing host socket directory with an empty tmpfs (made read-only
/// after the /etc overlay, which may need to place a file inside one).
fn mask_host_sockets() -> anyhow::Result<Vec<PathBuf>> {
    let mut masked = Vec::new();
    for dir in HOST_SOCKET_DIRS.map(Path::new) {
        if !dir.is_dir() {
            continue;
        }
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        match mount(
            Some("vpn-ns-mask"),
            dir,
            Some("tmpfs"),
            flags,
            Some("mode=0755,size=64k"),
        ) {
            Ok(()) => {}
            // Removed since the check (a resolver stopping): nothing left to hide.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot hide host socket directory {}", dir.display())
                });
            }
        }
        tracing::debug!("hid {}", dir.display());
        masked.push(dir.to_owned());
    }
    Ok(masked)
}

/// Binds the files vpn-ns writes in /etc/netns/<ns>/ (resolv.conf, nsswitch.conf) over
/// /etc, and nothing else there: not a planted passwd or shadow, not a namespace
/// admin's own resolv.conf (kept by `dns::write`). Both directories must be root's
/// alone and each file root-owned, not writable by others, no symlink and starting
/// with vpn-ns's header; the bind is made from the checked descriptor. Nothing is
/// created in the host's /etc.
fn bind_etc(ns: &NetnsName, masked: &[PathBuf]) -> anyhow::Result<()> {
    let dir = dns::etc_dir(ns);
    crate::owned::check_dir_if_exists(&dns::etc_root())?;
    if !crate::owned::check_dir_if_exists(&dir)? {
        tracing::warn!(
            "{} does not exist: the host's resolv.conf applies inside namespace {ns}",
            dir.display()
        );
        return Ok(());
    }
    for name in dns::OWN_FILES {
        let src = dir.join(name);
        match fs::symlink_metadata(&src) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // vpn-ns never writes a symlink there: someone else's, not followed.
            Ok(m) if m.file_type().is_symlink() => {
                tracing::warn!(
                    "{} is a symbolic link, not vpn-ns's file: not bound; the host's {name} \
                     applies inside",
                    src.display()
                );
                continue;
            }
            _ => {}
        }
        let file = crate::owned::open_own_file(&src)?;
        if !dns::starts_with_header(&file) {
            tracing::warn!(
                "{} was not written by vpn-ns: not bound; the host's {name} applies inside",
                src.display()
            );
            continue;
        }
        let dst = Path::new("/etc").join(name);
        let Some(target) = mount_target(&dst, masked)? else {
            continue;
        };
        let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
        mount(
            Some(by_fd.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind {} over {}", src.display(), target.display()))?;
        tracing::debug!("bound {} over {}", src.display(), target.display());
    }
    Ok(())
}

/// Where to bind for `/etc/<name>`: itself (a bind follows a symlink to its target),
/// a file placed in a masked directory for a symlink pointing into one (the usual
/// `/etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf`), or None to skip.
fn mount_target(dst: &Path, masked: &[PathBuf]) -> anyhow::Result<Option<PathBuf>> {
    match fs::symlink_metadata(dst) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                "{} does not exist on this host; not overlaid",
                dst.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", dst.display())),
        Ok(_) => {}
    }
    if dst.exists() {
        return Ok(Some(dst.to_owned()));
    }
    let link = fs::read_link(dst).with_context(|| format!("cannot read link {}", dst.display()))?;
    match into_mask(dst, &link, masked) {
        Some(file) => {
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            Ok(Some(file))
        }
        None => {
            tracing::warn!(
                "{} is a dangling symlink (to {}); cannot overlay it",
                dst.display(),
                link.display()
            );
            Ok(None)
        }
    }
}

/// The absolute, lexically normalised target of `link` (found at `at`) when it lies
/// inside one of the masked directories.
fn into_mask(at: &Path, link: &Path, masked: &[PathBuf]) -> Option<PathBuf> {
    let joined = match link.is_absolute() {
        true => link.to_owned(),
        false => at.parent()?.join(link),
    };
    let mut abs = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(p) => abs.push(p),
            Component::ParentDir => {
                abs.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    masked
        .iter()
        .any(|m| abs.starts_with(m) && abs != *m)
        .then_some(abs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_into_masked_dirs_are_redirected() {
        let masked = vec![PathBuf::from("/run/systemd/resolve")];
        let at = Path::new("/etc/resolv.conf");
        assert_eq!(
            into_mask(
                at,
                Path::new("/run/systemd/resolve/stub-resolv.conf"),
                &masked
            ),
            Some(PathBuf::from("/run/systemd/resolve/stub-resolv.conf"))
        );
        assert_eq!(
            into_mask(at, Path::new("../run/systemd/resolve/resolv.conf"), &masked),
            Some(PathBuf::from("/run/systemd/resolve/resolv.conf"))
        );
        assert_eq!(
            into_mask(at, Path::new("/run/resolvconf/resolv.conf"), &masked),
            None
        );
        assert_eq!(
            into_mask(at, Path::new("/run/systemd/resolve"), &masked),
            None
        );
        assert_eq!(
            into_mask(at, Path::new("/run/systemd/resolve/../../x"), &masked),
            None
        );
    }
}
