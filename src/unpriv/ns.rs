//! The namespaces of a user connection: made by its keeper (user namespace first, the
//! user mapped to themselves, then network + mount namespaces owned by it), entered by
//! `exec` through the keeper's `/proc/PID/ns/*` (user first, then net and mnt).
//! unshare/setns of a user namespace require a single-threaded process: both run before
//! any thread starts.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use super::UnprivError;

/// `/proc/self/uid_map` and `gid_map` lines mapping `id` to itself.
pub fn self_map(id: u32) -> String {
    format!("{id} {id} 1\n")
}

fn write_proc(file: &str, text: &str) -> Result<(), UnprivError> {
    let path = format!("/proc/self/{file}");
    std::fs::write(&path, text).map_err(UnprivError::io("cannot write", path))
}

/// Moves this (single-threaded) process into a new user namespace mapping its uid and
/// gid to themselves, then into new network and mount namespaces owned by it. Mount
/// events stay inside (private propagation).
pub fn create() -> Result<(), UnprivError> {
    own_user_ns()?;
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).map_err(UnprivError::errno(
        "cannot create",
        "network and mount namespaces",
    ))?;
    make_private()
}

/// `/` and everything under it private: no mount event propagates out.
pub fn make_private() -> Result<(), UnprivError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(UnprivError::errno(
        "cannot make private",
        "the mount namespace",
    ))
}

/// Moves this (single-threaded) process into a new user namespace mapping its uid and
/// gid to themselves.
pub fn own_user_ns() -> Result<(), UnprivError> {
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    unshare(CloneFlags::CLONE_NEWUSER).map_err(UnprivError::errno(
        "cannot create",
        "a user namespace (see `vpn-ns check`)",
    ))?;
    // Without CAP_SETGID in the parent namespace, gid_map may only be written once
    // setgroups is denied (no dropping supplementary groups to escape a deny rule).
    write_proc("setgroups", "deny")?;
    write_proc("uid_map", &self_map(uid))?;
    write_proc("gid_map", &self_map(gid))
}

/// Binds `src` over `target` (following a symlink at `target`, so a
/// `/etc/resolv.conf -> /run/...` link has its target covered).
pub fn bind_file(src: &Path, target: &Path) -> Result<(), UnprivError> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(UnprivError::errno(
        "cannot bind-mount over",
        target.display().to_string(),
    ))
}

/// Covers a host directory that serves resolver or D-Bus sockets with an empty tmpfs;
/// a directory that does not exist needs nothing.
pub fn mask_dir(dir: &Path) -> Result<(), UnprivError> {
    if !dir.is_dir() {
        return Ok(());
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("vpn-ns-mask"),
        dir,
        Some("tmpfs"),
        flags,
        Some("mode=0755,size=4k"),
    )
    .map_err(UnprivError::errno("cannot mask", dir.display().to_string()))
}

/// The inode of a namespace file (what `readlink /proc/PID/ns/X` shows in brackets).
pub fn inode(f: &File) -> Result<u64, UnprivError> {
    f.metadata()
        .map(|m| m.ino())
        .map_err(UnprivError::io("cannot inspect", "a namespace file"))
}

/// The keeper's three namespaces, opened through its `/proc` entry.
pub struct Handles {
    pub user: File,
    pub net: File,
    pub mnt: File,
}

impl Handles {
    /// Opens `/proc/PID/ns/{user,net,mnt}` of `pid`. The caller checks the inodes and
    /// that the process is still the recorded one afterwards (then these files are its).
    pub fn open(pid: u32) -> Result<Handles, UnprivError> {
        let open = |kind: &str| {
            let p = format!("/proc/{pid}/ns/{kind}");
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&p)
                .map_err(UnprivError::io("cannot open", p))
        };
        Ok(Handles {
            user: open("user")?,
            net: open("net")?,
            mnt: open("mnt")?,
        })
    }

    pub fn inodes(&self) -> Result<(u64, u64, u64), UnprivError> {
        Ok((inode(&self.user)?, inode(&self.net)?, inode(&self.mnt)?))
    }

    /// Joins the namespaces: user first (it grants the capabilities the other two
    /// need), then network, then mount. Single-threaded callers only.
    pub fn enter(&self) -> Result<(), UnprivError> {
        setns(self.user.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(UnprivError::errno(
            "cannot enter",
            "the connection's user namespace",
        ))?;
        setns(self.net.as_fd(), CloneFlags::CLONE_NEWNET).map_err(UnprivError::errno(
            "cannot enter",
            "the connection's network namespace",
        ))?;
        setns(self.mnt.as_fd(), CloneFlags::CLONE_NEWNS).map_err(UnprivError::errno(
            "cannot enter",
            "the connection's mount namespace",
        ))
    }
}

/// Leaves no capability behind for what this process execs: every capability out of
/// the bounding set (so file capabilities grant nothing), ambient and inheritable
/// cleared, no_new_privs set, then the effective and permitted sets emptied.
pub fn drop_capabilities() -> Result<(), UnprivError> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(40);
    let prctl = |op: libc::c_int, arg: libc::c_ulong, what: &'static str| {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(op, arg, 0, 0, 0) };
        if r < 0 {
            Err(UnprivError::io("cannot drop", what)(
                std::io::Error::last_os_error(),
            ))
        } else {
            Ok(())
        }
    };
    for cap in 0..=last {
        prctl(libc::PR_CAPBSET_DROP, cap, "a bounding capability")?;
    }
    // SAFETY: as above.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(UnprivError::io("cannot clear", "the ambient capabilities")(
            std::io::Error::last_os_error(),
        ));
    }
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "privileges (no_new_privs)")?;
    capset_empty()
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capset_empty() -> Result<(), UnprivError> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data structs, which outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r < 0 {
        return Err(UnprivError::io("cannot clear", "the capability sets")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_self_map_is_one_line_of_the_same_id() {
        assert_eq!(super::self_map(1000), "1000 1000 1\n");
    }
}
