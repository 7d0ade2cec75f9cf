//! Where a user connection lives: the config directory
//! (`$XDG_CONFIG_HOME/vpn-ns`, default `~/.config/vpn-ns`) and the runtime directory
//! (`$XDG_RUNTIME_DIR/vpn-ns`, which must be the user's own, mode 0700), and the state
//! record the keeper writes there once the connection is up.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::UnprivError;
use crate::procs::ProcId;

/// What `up` recorded: enough for exec/down/status to find and verify the keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub conn: String,
    pub keeper: ProcId,
    pub iface: String,
    /// Inode numbers of the keeper's namespaces (`/proc/PID/ns/*`), checked on entry.
    pub user_ns: u64,
    pub net_ns: u64,
    pub mnt_ns: u64,
    /// Seconds since the epoch.
    pub since: u64,
}

fn env_path(var: &'static str) -> Result<Option<PathBuf>, UnprivError> {
    match std::env::var_os(var) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            let p = PathBuf::from(v);
            if !p.is_absolute() {
                return Err(UnprivError::Env {
                    var,
                    why: format!("is {:?}, not an absolute path", p.display()),
                });
            }
            Ok(Some(p))
        }
    }
}

/// `$XDG_CONFIG_HOME/vpn-ns`, else `$HOME/.config/vpn-ns`.
pub fn config_dir() -> Result<PathBuf, UnprivError> {
    if let Some(p) = env_path("XDG_CONFIG_HOME")? {
        return Ok(p.join("vpn-ns"));
    }
    match env_path("HOME")? {
        Some(h) => Ok(h.join(".config").join("vpn-ns")),
        None => Err(UnprivError::Env {
            var: "HOME",
            why: "is not set (nor XDG_CONFIG_HOME): cannot find the connection files".to_owned(),
        }),
    }
}

/// `$XDG_RUNTIME_DIR/vpn-ns`, created (mode 0700) if missing. The runtime directory
/// must be the user's own and closed to others: state and DNS files live there and are
/// bind-mounted into the connection.
pub fn runtime_dir() -> Result<PathBuf, UnprivError> {
    const VAR: &str = "XDG_RUNTIME_DIR";
    let base = env_path(VAR)?.ok_or(UnprivError::Env {
        var: VAR,
        why: "is not set: a user connection keeps its state there (a login session sets it)"
            .to_owned(),
    })?;
    let uid = nix::unistd::getuid().as_raw();
    let md = fs::symlink_metadata(&base).map_err(|e| UnprivError::Env {
        var: VAR,
        why: format!("({}): {e}", base.display()),
    })?;
    if !md.is_dir() || md.uid() != uid || md.mode() & 0o077 != 0 {
        return Err(UnprivError::Env {
            var: VAR,
            why: format!(
                "({}) must be a directory owned by uid {uid} with mode 0700",
                base.display()
            ),
        });
    }
    let dir = base.join("vpn-ns");
    crate::owned::create_dir(&dir, 0o700)
        .map_err(UnprivError::io("cannot create", dir.display().to_string()))?;
    owned_dir(&dir, uid)?;
    Ok(dir)
}

/// Refuses a path that is not a real directory of `uid` closed to others.
pub fn owned_dir(dir: &Path, uid: u32) -> Result<(), UnprivError> {
    let md = fs::symlink_metadata(dir)
        .map_err(UnprivError::io("cannot inspect", dir.display().to_string()))?;
    if md.is_dir() && md.uid() == uid && md.mode() & 0o077 == 0 {
        return Ok(());
    }
    Err(UnprivError::Io {
        op: "refusing",
        what: dir.display().to_string(),
        source: std::io::Error::other(format!("not a directory owned by uid {uid} with mode 0700")),
    })
}

/// An exclusive lock on the runtime directory itself, held by `up` and `down` for
/// their whole run: two of them for one user never interleave, and no lock file is
/// left behind.
pub struct Lock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

pub fn lock(run: &Path) -> Result<Lock, UnprivError> {
    let what = run.display().to_string();
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(run)
        .map_err(UnprivError::io("cannot open", what.clone()))?;
    nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
        .map(|held| Lock { _held: held })
        .map_err(|(_, e)| UnprivError::errno("cannot lock", what)(e))
}

pub fn state_path(run: &Path, conn: &str) -> PathBuf {
    run.join(format!("{conn}.json"))
}

/// The keeper's UAPI socket (`get=1` for status and verify; mode 0600).
pub fn sock_path(run: &Path, conn: &str) -> PathBuf {
    run.join(format!("{conn}.sock"))
}

/// The keeper's control socket (publish, unpublish, status; mode 0600).
pub fn control_path(run: &Path, conn: &str) -> PathBuf {
    run.join(format!("{conn}.keeper.sock"))
}

pub fn log_path(run: &Path, conn: &str) -> PathBuf {
    run.join(format!("{conn}.log"))
}

/// The per-connection directory holding resolv.conf and nsswitch.conf.
pub fn files_dir(run: &Path, conn: &str) -> PathBuf {
    run.join(conn)
}

/// Creates `path` exclusively (never following a link), mode 0600, with `data`.
pub fn write_new(path: &Path, data: &[u8]) -> Result<(), UnprivError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(UnprivError::io("cannot create", path.display().to_string()))?;
    f.write_all(data)
        .map_err(UnprivError::io("cannot write", path.display().to_string()))
}

/// Writes the state through an exclusive temporary file renamed into place.
pub fn write(run: &Path, st: &UserState) -> Result<(), UnprivError> {
    let path = state_path(run, &st.conn);
    let tmp = run.join(format!(".{}.json.{}", st.conn, std::process::id()));
    let _ = fs::remove_file(&tmp);
    let json = serde_json::to_vec_pretty(st).expect("state serializes");
    write_new(&tmp, &json)?;
    fs::rename(&tmp, &path).map_err(UnprivError::io("cannot rename", path.display().to_string()))
}

/// The recorded state, `None` when the connection was never brought up (or is down).
pub fn read(run: &Path, conn: &str) -> Result<Option<UserState>, UnprivError> {
    let path = state_path(run, conn);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(UnprivError::io("cannot read", path.display().to_string())(
                e,
            ));
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| UnprivError::Io {
            op: "cannot parse",
            what: path.display().to_string(),
            source: std::io::Error::other(e),
        })
}

/// Every connection with a state file, sorted.
pub fn recorded(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (!n.starts_with('.')).then(|| n.strip_suffix(".json").map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

/// Removes everything `conn` left in the runtime directory.
pub fn remove_all(run: &Path, conn: &str) {
    let _ = fs::remove_file(state_path(run, conn));
    let _ = fs::remove_file(log_path(run, conn));
    let _ = fs::remove_file(sock_path(run, conn));
    let _ = fs::remove_file(control_path(run, conn));
    let _ = fs::remove_dir_all(files_dir(run, conn));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_lists() {
        let d = std::env::temp_dir().join(format!("vpn-ns-ustate-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let st = UserState {
            conn: "home".into(),
            keeper: ProcId { pid: 7, start: 9 },
            iface: "wg0".into(),
            user_ns: 1,
            net_ns: 2,
            mnt_ns: 3,
            since: 4,
        };
        write(&d, &st).unwrap();
        assert_eq!(read(&d, "home").unwrap(), Some(st));
        assert_eq!(read(&d, "work").unwrap(), None);
        fs::write(d.join("home.log"), "x").unwrap();
        fs::write(d.join("home.keeper.sock"), "x").unwrap();
        assert_eq!(recorded(&d), ["home"]);
        remove_all(&d, "home");
        assert!(fs::read_dir(&d).unwrap().next().is_none());
        fs::remove_dir_all(&d).unwrap();
    }
}
