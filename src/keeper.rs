//! The keeper: one small resident process per connection that is up. Up starts it once
//! the namespace is ready and records its identity; down ends it. While it lives it
//! owns the connection: it watches the VPN process (pidfd) and the tunnel device
//! (netlink link events in the namespace) and takes the connection down when the VPN
//! dies without its down; it renews a DHCP lease; it answers `status` on a root-only
//! control socket. It does nothing on a timer: when nothing happens it does not wake.
//!
//! Extension point: everything it does is a *task* in one event loop (`run`), and
//! requests arrive as JSON lines on `/run/vpn-ns/<conn>.keeper.sock` (`control`).
//! Port publishing and a userspace WireGuard data plane are further tasks and requests.
//!
//! If the keeper dies, the connection keeps working ("unattended" in `status`) and the
//! next `vpn-ns up CONN` starts a new one (`restore`).

pub mod control;
mod dhcp;
mod links;
mod run;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::Connection;
use crate::procs::ProcId;
use crate::state::{self, State, StateError};

pub use run::{TakeDown, run};

/// How long a keeper gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("cannot start the keeper of {conn}")]
    Spawn {
        conn: String,
        #[source]
        source: io::Error,
    },
    #[error("{op} {}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("keeper of {conn}: {what}")]
    Watch {
        conn: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("keeper of {conn}: taking the connection down failed: {message}")]
    TakeDown { conn: String, message: String },
    #[error("the keeper of {conn} did not answer: {source}")]
    Query {
        conn: String,
        #[source]
        source: io::Error,
    },
}

pub fn socket_path(conn: &str) -> PathBuf {
    state::run_dir().join(format!("{conn}.keeper.sock"))
}

pub fn log_path(conn: &str) -> PathBuf {
    state::run_dir().join(format!("{conn}.keeper.log"))
}

/// Starts the keeper of `conn` in its own session (it outlives the terminal and the
/// command that ran up; under systemd it stays in the unit's cgroup). It starts by
/// taking the connection's lock, so it begins work only once this up has saved the
/// record naming it; a keeper not named by the record exits at once.
pub fn spawn(conn: &Connection) -> Result<ProcId, KeeperError> {
    let spawn_err = |source| KeeperError::Spawn {
        conn: conn.name.clone(),
        source,
    };
    let exe = std::env::current_exe().map_err(spawn_err)?;
    let log = log_path(&conn.name);
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log)
        .map_err(|source| KeeperError::Io {
            op: "cannot open",
            path: log.clone(),
            source,
        })?;
    let err = out.try_clone().map_err(spawn_err)?;
    let mut cmd = Command::new(exe);
    if let Some(dir) = conn.path.parent() {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        cmd.arg("--config-dir").arg(dir);
    }
    cmd.arg("keeper")
        .arg(&conn.name)
        // A clean environment: nothing of the caller's (SUDO_*, OpenVPN's variables)
        // reaches a process that lives as long as the connection.
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Ok(v) = std::env::var("VPN_NS_LOG") {
        cmd.env("VPN_NS_LOG", v);
    }
    // SAFETY: setsid and close_range are async-signal-safe system calls. The keeper
    // must not hold any descriptor of whoever started it: an inherited tun fd (the
    // hook runs as OpenVPN's child) would keep a dead VPN's device alive. Marked
    // close-on-exec rather than closed, so std's exec-status pipe still reports a
    // failed exec (and spawn returns only once the keeper's exec has happened).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            let cloexec = libc::CLOSE_RANGE_CLOEXEC;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, cloexec) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Until it has read its record, a stop request must end the keeper at once.
    crate::procs::unblock_signals_in_child(&mut cmd);
    let child = cmd.spawn().map_err(spawn_err)?;
    let pid = child.id();
    // Not waited for: the keeper outlives this command. Its identity is read before it
    // can exit (it blocks on the lock the caller holds).
    drop(child);
    let id = ProcId::of(pid).ok_or_else(|| spawn_err(io::Error::from_raw_os_error(libc::ESRCH)))?;
    tracing::debug!("{}: keeper started, pid {pid}", conn.name);
    Ok(id)
}

/// Ends the keeper recorded in `st`, unless that keeper is the calling process (it is
/// taking the connection down itself, and its log, saying why, stays). Called by every
/// down: an orderly down leaves no keeper file behind.
pub fn stop(st: &State) {
    let Some(k) = st.keeper else {
        return;
    };
    if k == ProcId::current() {
        return;
    }
    discard(&st.connection, k);
}

/// Ends keeper `k` of `conn` (if it still runs) and removes its control socket.
pub fn stop_id(conn: &str, k: ProcId) {
    match k.open() {
        Ok(Some(fd)) => match fd.terminate(STOP_GRACE) {
            Ok(false) => tracing::debug!("{conn}: keeper (pid {}) stopped", k.pid),
            Ok(true) => tracing::warn!("{conn}: keeper (pid {}) killed", k.pid),
            Err(e) => tracing::warn!("{conn}: cannot stop the keeper (pid {}): {e}", k.pid),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!("{conn}: cannot open the keeper (pid {}): {e}", k.pid),
    }
    let sock = socket_path(conn);
    if let Err(e) = std::fs::remove_file(&sock)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", sock.display());
    }
}

/// Ends keeper `k` and removes its socket and log (a rolled-back up, an orderly down).
pub fn discard(conn: &str, k: ProcId) {
    stop_id(conn, k);
    let log = log_path(conn);
    if let Err(e) = std::fs::remove_file(&log)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", log.display());
    }
}

/// The keeper as the lifecycle's supervisor: relays checked, then the keeper spawned.
pub struct Keepers;

static KEEPERS: Keepers = Keepers;

/// The real system edges for the lifecycle, with this module's keeper.
pub fn system() -> crate::lifecycle::System<'static> {
    crate::lifecycle::System::new(&KEEPERS)
}

impl crate::lifecycle::Supervisor for Keepers {
    fn start(
        &self,
        conn: &Connection,
        ns: Option<&std::fs::File>,
    ) -> Result<ProcId, crate::lifecycle::SupervisorError> {
        crate::publish::preflight(conn, ns)?;
        Ok(spawn(conn)?)
    }
    fn stop(&self, st: &State) {
        stop(st)
    }
    fn stop_id(&self, conn: &str, k: ProcId) {
        stop_id(conn, k)
    }
    fn discard(&self, conn: &str, k: ProcId) {
        discard(conn, k)
    }
}

/// `vpn-ns up` of a connection that is already up: if its keeper is gone (killed),
/// start a new one; the network is not touched. Returns the new keeper, if one was
/// started. Takes the connection's lock.
pub fn restore(conn: &Connection) -> Result<Option<ProcId>, KeeperError> {
    let _lock = state::lock(&conn.name)?;
    let Some(mut st) = state::load(&conn.name)? else {
        return Ok(None);
    };
    if !st.up || st.keeper_alive() {
        return Ok(None);
    }
    let old = st.keeper;
    let k = spawn(conn)?;
    st.keeper = Some(k);
    if let Err(e) = state::save(&st) {
        stop_id(&conn.name, k);
        return Err(e.into());
    }
    match old {
        Some(o) => tracing::info!(
            "{}: the keeper (pid {}) was gone; started a new one (pid {})",
            conn.name,
            o.pid,
            k.pid
        ),
        None => tracing::info!("{}: started a keeper (pid {})", conn.name, k.pid),
    }
    Ok(Some(k))
}
