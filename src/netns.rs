//! Named network namespaces, laid out exactly as iproute2 lays them out, so that
//! `ip netns exec` and `ip -n` work on ours and we can work on theirs.
//!
//! `setns`/`unshare` change only the calling thread, so every namespace switch here
//! happens on a short-lived dedicated `std::thread` that ends when the work is done:
//! no thread of the process (and never a tokio worker) is left in another namespace.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::spec::NetnsName;

/// nsfs's magic number (linux/magic.h); a namespace bind mount reports it in statfs.
const NSFS_MAGIC: i64 = 0x6e73_6673;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] crate::owned::OwnedError),
    #[error("namespace \"{0}\" does not exist (no {path})", path = ns_path_display(.0))]
    NotFound(NetnsName),
    #[error("{path} exists but is not a network namespace", path = ns_path_display(.0))]
    NotANamespace(NetnsName),
    #[error("cannot enter the namespace")]
    Enter(#[source] Errno),
    #[error("the namespace worker thread panicked")]
    ThreadPanicked,
}

fn ns_path_display(name: &NetnsName) -> String {
    run_dir().join(name.as_str()).display().to_string()
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetnsError + use<> {
    let path = path.to_owned();
    move |source| NetnsError::Io { op, path, source }
}

fn errno_err(op: &'static str, path: &Path) -> impl FnOnce(Errno) -> NetnsError + use<> {
    let path = path.to_owned();
    move |e| NetnsError::Io {
        op,
        path,
        source: io::Error::from(e),
    }
}

/// `/run/netns`, as iproute2 (NETNS_RUN_DIR).
pub fn run_dir() -> PathBuf {
    PathBuf::from("/run/netns")
}

pub fn path(name: &NetnsName) -> PathBuf {
    run_dir().join(name.as_str())
}

/// True when `/run/netns/<name>` is a live namespace bind mount (not a stale file).
pub fn exists(name: &NetnsName) -> bool {
    is_nsfs(&path(name))
}

fn is_nsfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that namespace
/// mounts made later propagate into mount namespaces created by `ip netns exec`/`vpn-ns exec`.
fn prepare_run_dir() -> Result<(), NetnsError> {
    let dir = run_dir();
    crate::owned::ensure_dir(&dir, 0o755)?;
    let shared = || {
        nix::mount::mount(
            Some("none"),
            &dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then it can be made shared.
        Err(Errno::EINVAL) => {
            nix::mount::mount(
                Some(&dir),
                &dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(errno_err("cannot bind-mount", &dir))?;
            shared().map_err(errno_err("cannot make shared mount", &dir))
        }
        Err(e) => Err(errno_err("cannot make shared mount", &dir)(e)),
    }
}

/// Creates `/run/netns/<name>` holding a fresh network namespace.
/// Fails with `AlreadyExists` (as an `Io` error) when the name is taken.
pub fn create(name: &NetnsName) -> Result<(), NetnsError> {
    prepare_run_dir()?;
    let target = path(name);
    // O_EXCL: two racing creators cannot both believe they made it.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o0)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target)
        .map_err(io_err("cannot create", &target))?;
    crate::fault::point("up:netns-file-created");
    let t = target.clone();
    let res = std::thread::spawn(move || -> Result<(), NetnsError> {
        // The thread's new namespace lives on through the bind mount after it exits.
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Enter)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &t,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno_err("cannot bind-mount namespace onto", &t))
    })
    .join()
    .map_err(|_| NetnsError::ThreadPanicked)
    .and_then(|r| r);
    if res.is_err() {
        let _ = fs::remove_file(&target);
    }
    res
}

/// Opens a named namespace for setns or for moving a link into it.
pub fn open(name: &NetnsName) -> Result<File, NetnsError> {
    let p = path(name);
    crate::owned::check_dir_if_exists(&run_dir())?;
    if !p.exists() {
        return Err(NetnsError::NotFound(name.clone()));
    }
    if !is_nsfs(&p) {
        return Err(NetnsError::NotANamespace(name.clone()));
    }
    File::open(&p).map_err(io_err("cannot open", &p))
}

/// The namespace of the calling thread. Call it from the main thread (which never
/// leaves the host namespace) to get a handle on the host namespace.
pub fn current() -> Result<File, NetnsError> {
    let p = Path::new("/proc/thread-self/ns/net");
    File::open(p).map_err(io_err("cannot open", p))
}

/// Removes the name (the namespace itself lives on while processes are inside it).
pub fn delete(name: &NetnsName) -> Result<(), NetnsError> {
    let p = path(name);
    match nix::mount::umount2(&p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(errno_err("cannot unmount", &p)(e)),
    }
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", &p)(e)),
    }
}

/// Runs `f` on a new thread that has entered the namespace `ns`. The thread ends with
/// `f`, so nothing outlives it in the wrong namespace whatever `f` returns.
pub fn run_in<T, F>(ns: &File, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let fd = ns
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| NetnsError::Io {
            op: "cannot duplicate",
            path: PathBuf::from("namespace fd"),
            source: e,
        })?;
    std::thread::spawn(move || -> Result<T, NetnsError> {
        nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET).map_err(NetnsError::Enter)?;
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::ThreadPanicked)?
}

/// Lists the pids whose network namespace is `ns` (by inode), for status and purge.
pub fn pids_in(ns: &File) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = ns.metadata() else {
        return Vec::new();
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| m.dev() == dev && m.ino() == ino)
                .unwrap_or(false)
        })
        .collect();
    pids.sort_unstable();
    pids
}
