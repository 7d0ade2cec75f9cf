//! Runtime state under `/run/vpn-ns`: one JSON record and one lock file per connection.
//! The record is what lets `down` undo exactly what `up` did, and what tells a
//! namespace vpn-ns created from one it merely reused.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::procs::ProcId;
use crate::spec::{Address, DnsSpec, NetnsName, Route};

pub const RUN_DIR: &str = "/run/vpn-ns";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] crate::owned::OwnedError),
    #[error("{path} is corrupt (remove it after checking `ip netns list`)")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError + use<> {
    let path = path.to_owned();
    move |source| StateError::Io { op, path, source }
}

/// Who brought the connection up; decides how `down` and `status` treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    OpenvpnHook,
    /// `vpn-ns adopt`: a device configured by someone else; down restores it in the host.
    Adopt,
    /// `vpn-ns up` of a WireGuard connection: vpn-ns created the device.
    Wireguard,
    /// wg-quick's PostUp hook: wg-quick owns the device.
    WgQuickHook,
    /// `vpn-ns up` of a `type = "macvlan"` connection: a direct uplink, no tunnel.
    Macvlan,
    /// `vpn-ns up` of a `type = "routed"` connection: a direct uplink, no tunnel.
    Routed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub connection: String,
    pub netns: NetnsName,
    /// vpn-ns created the namespace, so it may delete it. Never true for a reused one.
    pub netns_created: bool,
    pub isolated: bool,
    pub persistent: bool,
    /// False for a persistent namespace kept while its VPN is down.
    pub up: bool,
    pub origin: Origin,
    pub device: Option<String>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub dns: DnsSpec,
    /// The VPN process (OpenVPN's pid for the hook).
    pub vpn_pid: Option<u32>,
    /// Unix time of the last successful up.
    pub since: u64,
    /// An intent record: written before up creates the namespace and replaced by the
    /// full record at the end of up, so a crash in between leaves a namespace whose
    /// owner is known. The next up reuses the namespace; down removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creating: bool,
    /// The VPN process's start time (see `procs::ProcId`): with `vpn_pid`, its identity.
    /// Absent in records written before vpn-ns recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_start: Option<u64>,
    /// The connection's keeper (see `keeper`), once up has started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<ProcId>,
    /// Why a persistent namespace is kept without its VPN, when the keeper took the
    /// connection down because the VPN died ("VPN gone").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_gone: Option<String>,
}

impl State {
    /// The recorded VPN process's identity, when the record has one.
    pub fn vpn(&self) -> Option<ProcId> {
        Some(ProcId {
            pid: self.vpn_pid?,
            start: self.vpn_start?,
        })
    }

    /// Whether the recorded VPN process still runs (`None`: no process recorded). A
    /// zombie is dead; a record without a start time is judged by its pid's state.
    pub fn vpn_alive(&self) -> Option<bool> {
        let pid = self.vpn_pid?;
        Some(match self.vpn() {
            Some(id) => id.alive(),
            None => crate::procs::stat(pid).is_some_and(|s| !s.is_dead()),
        })
    }

    /// Whether the recorded keeper still runs.
    pub fn keeper_alive(&self) -> bool {
        self.keeper.is_some_and(|k| k.alive())
    }
}

pub fn run_dir() -> PathBuf {
    PathBuf::from(RUN_DIR)
}

/// Creates `/run/vpn-ns` if needed and checks that it is root's alone.
pub fn ensure_dir() -> Result<PathBuf, StateError> {
    let d = run_dir();
    crate::owned::ensure_dir(&d, 0o755)?;
    Ok(d)
}

pub fn state_path(conn: &str) -> PathBuf {
    run_dir().join(format!("{conn}.json"))
}

/// An exclusive flock on `/run/vpn-ns/<conn>.lock`, held until dropped, so concurrent
/// hook calls for one connection run one after the other. The lock file is never
/// removed: unlinking a lock file lets two holders lock different inodes.
pub struct Lock {
    _flock: Flock<File>,
}

pub fn lock(conn: &str) -> Result<Lock, StateError> {
    let p = ensure_dir()?.join(format!("{conn}.lock"));
    let f = crate::owned::open_write(&p, 0o600, false)?;
    let flock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err("cannot lock", &p)(io::Error::from(e)))?;
    Ok(Lock { _flock: flock })
}

pub fn load(conn: &str) -> Result<Option<State>, StateError> {
    let p = state_path(conn);
    // A record in a directory others can write to may be planted.
    crate::owned::check_dir_if_exists(&run_dir())?;
    let read = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .and_then(|mut f| {
            let mut v = Vec::new();
            io::Read::read_to_end(&mut f, &mut v).map(|_| v)
        });
    match read {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path: p, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("cannot read", &p)(e)),
    }
}

/// Every state record, for `status`/`list`.
pub fn load_all() -> Result<Vec<State>, StateError> {
    let d = run_dir();
    let rd = match fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot read", &d)(e)),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if let Some(s) = load(&n)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Writes atomically (temp file + rename) so a crash never leaves half a record.
pub fn save(state: &State) -> Result<(), StateError> {
    let body = serde_json::to_vec_pretty(state).expect("state serializes");
    write_atomic(&state_path(&state.connection), &body)
}

/// Writes `path` under `/run/vpn-ns` atomically: an exclusive temp file (never through
/// a symlink), synced, renamed over `path`. A crash leaves the old file or the new one.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StateError> {
    ensure_dir()?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = crate::owned::create_temp(&tmp, 0o644)?;
    f.write_all(body)
        .and_then(|()| f.sync_all())
        .map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))
}

/// Reads a record file under `/run/vpn-ns` (never through a symlink); `None` if absent.
pub fn read_record(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    crate::owned::check_dir_if_exists(&run_dir())?;
    let read = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| {
            let mut v = Vec::new();
            io::Read::read_to_end(&mut f, &mut v).map(|_| v)
        });
    match read {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("cannot read", path)(e)),
    }
}

/// Removes a file under `/run/vpn-ns`; absent is fine.
pub fn remove_file(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", path)(e)),
    }
}

pub fn remove(conn: &str) -> Result<(), StateError> {
    let p = state_path(conn);
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", &p)(e)),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
