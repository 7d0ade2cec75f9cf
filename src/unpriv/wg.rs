//! `vpn-ns wg CONN [WG_ARGS...]`: WireGuard's own `wg` tool on a user connection.
//! `wg` looks for userspace devices only in `/run/wireguard` (a compile-time path a
//! user cannot write), so this runs it in a private mount namespace of the user's own
//! (a user namespace mapping the user to themselves: no privilege anywhere else) where
//! `/run/wireguard/<iface>.sock` is the keeper's UAPI socket, bind-mounted from
//! `$XDG_RUNTIME_DIR/vpn-ns/<conn>.sock`. Everything `wg` does then works with its own
//! output format: `show`, `show IFACE latest-handshakes`, `showconf`, `set`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use super::{UnprivError, ns, state};

/// Runs `wg ARGS` (default `show IFACE`) with the connection's device visible to it.
pub fn run(conn: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let run = super::cmds::runtime_dir()?;
    let st = state::read(&run, conn)?.ok_or_else(|| UnprivError::NotUp(conn.to_owned()))?;
    if super::cmds::live_keeper(&st).is_none() {
        return Err(UnprivError::KeeperGone {
            conn: conn.to_owned(),
            pid: st.keeper.pid,
        }
        .into());
    }
    let sock = state::sock_path(&run, conn);
    ns::own_user_ns()?;
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(UnprivError::errno("cannot create", "a mount namespace"))?;
    ns::make_private()?;
    // Opened once, without following a link, and checked: the mount below binds this
    // very inode, whatever the path names by then. Opened in the new mount namespace:
    // a bind mount's source must be a mount of the caller's own namespace.
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&sock)
        .map_err(UnprivError::io("cannot open", sock.display().to_string()))?;
    let md = f.metadata().map_err(UnprivError::io(
        "cannot inspect",
        sock.display().to_string(),
    ))?;
    if !md.file_type().is_socket() || md.uid() != nix::unistd::getuid().as_raw() {
        return Err(UnprivError::Io {
            op: "refusing",
            what: sock.display().to_string(),
            source: std::io::Error::other("not a socket of yours"),
        }
        .into());
    }
    expose(&f, &st.iface)?;
    drop(f);
    ns::drop_capabilities()?;
    let args: Vec<String> = match args.is_empty() {
        true => vec!["show".to_owned(), st.iface.clone()],
        false => args.to_vec(),
    };
    let err = std::process::Command::new("wg").args(&args).exec();
    Err(anyhow::anyhow!(
        "cannot run wg (from wireguard-tools): {err}"
    ))
}

/// A tmpfs at `/run/wireguard` (or at `/run` when that directory does not exist: a user
/// cannot create it) holding `<iface>.sock`, the socket `sock` bound over it.
fn expose(sock: &File, iface: &str) -> Result<(), UnprivError> {
    let dir = Path::new("/run/wireguard");
    let tmpfs = |at: &Path| {
        mount(
            Some("vpn-ns"),
            at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700,size=64k"),
        )
        .map_err(UnprivError::errno(
            "cannot mount a tmpfs on",
            at.display().to_string(),
        ))
    };
    if dir.is_dir() {
        tmpfs(dir)?;
    } else {
        tmpfs(Path::new("/run"))?;
        std::fs::create_dir(dir).map_err(UnprivError::io("cannot create", "/run/wireguard"))?;
    }
    let target = dir.join(format!("{iface}.sock"));
    state::write_new(&target, b"")?;
    // The magic link names the inode opened above.
    let src = format!("/proc/self/fd/{}", sock.as_raw_fd());
    ns::bind_file(Path::new(&src), &target)
}
