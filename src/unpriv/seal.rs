//! The user's runtime directory inside a user connection: daemons listening there act
//! in the host's network namespace for whoever connects (the session bus starts
//! services and `systemd-run --user` commands outside, agents and keyrings reach the
//! network), so in the connection's mount namespace it is an empty tmpfs holding only
//! what a GUI app needs (Wayland, PipeWire, PulseAudio sockets), the same rule as
//! root's `exec` with `session-bus = "none"`. The host's resolver, nscd and system-bus
//! directories are masked separately (`exec::HOST_SOCKET_DIRS`).

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;

use super::UnprivError;

/// Replaces `dir` (the user's `$XDG_RUNTIME_DIR`) in the current mount namespace.
pub fn runtime_dir(dir: &Path, uid: u32) -> Result<(), UnprivError> {
    let what = dir.display().to_string();
    let real = open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(UnprivError::errno("cannot open", what.clone()))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("vpn-ns-run-user"),
        dir,
        Some("tmpfs"),
        flags,
        Some("mode=0700,size=1m"),
    )
    .map_err(UnprivError::errno("cannot cover", what))?;
    let src_root = PathBuf::from(format!("/proc/self/fd/{}", real.as_raw_fd()));
    for rel in passed(&src_root, uid) {
        bind_socket(&src_root.join(&rel), &dir.join(&rel))?;
    }
    Ok(())
}

fn owned_socket(p: &Path, uid: u32) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket() && m.uid() == uid)
}

/// The allowed entries present in the real directory as the user's own sockets.
fn passed(src_root: &Path, uid: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(src_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.push("pulse/native".to_owned());
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| crate::exec::allowed_entry(n) && owned_socket(&src_root.join(n), uid))
        .collect()
}

fn bind_socket(src: &Path, dst: &Path) -> Result<(), UnprivError> {
    if let Some(parent) = dst.parent() {
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(parent)
            .map_err(UnprivError::io(
                "cannot create",
                parent.display().to_string(),
            ))?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dst)
        .map_err(UnprivError::io("cannot create", dst.display().to_string()))?;
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(UnprivError::errno("cannot pass", dst.display().to_string()))
}

/// gpg's dirmngr fetches keys and URLs for its clients; an old-style socket in the
/// home directory is covered with /dev/null.
pub fn dirmngr(home: &Path) {
    let sock = home.join(".gnupg/S.dirmngr");
    if fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket())
        && let Err(e) = mount(
            Some("/dev/null"),
            &sock,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    {
        tracing::warn!("cannot mask {}: {e}", sock.display());
    }
}
