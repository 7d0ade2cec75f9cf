//! Root's read-only view of users' own connections, for `vpn-ns status`: each login
//! session's runtime directory `/run/user/<uid>/vpn-ns/*.json`. Those files are written
//! by their users, so they are read without following links, only when owned by that
//! uid, size-bounded, and every printed field is re-validated.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::state::UserState;
use crate::spec::{InterfaceName, NetnsName};

const RUN_USER: &str = "/run/user";
const MAX_STATE: u64 = 64 << 10;

/// A user's state file, if it is theirs and well-formed.
fn read_state(path: &Path, uid: u32) -> Option<UserState> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let md = f.metadata().ok()?;
    if !md.is_file() || md.uid() != uid {
        return None;
    }
    let mut text = String::new();
    (&mut f).take(MAX_STATE).read_to_string(&mut text).ok()?;
    let st: UserState = serde_json::from_str(&text).ok()?;
    let valid = st.conn.parse::<NetnsName>().is_ok() && st.iface.parse::<InterfaceName>().is_ok();
    valid.then_some(st)
}

/// Whether the recorded keeper runs, as `uid`.
fn live(st: &UserState, uid: u32) -> bool {
    super::cmds::live_keeper(st).is_some()
        && fs::metadata(format!("/proc/{}", st.keeper.pid)).is_ok_and(|m| m.uid() == uid)
}

/// One user connection as root sees it: only what the user's state file records
/// (validated) and whether its keeper runs. Root does not talk to the user's sockets:
/// a user-made path could point a root client anywhere.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserConnection {
    pub user: String,
    pub uid: u32,
    pub conn: String,
    /// "up" or "stale" (the keeper is gone).
    pub state: &'static str,
    pub keeper_pid: u32,
    pub iface: String,
    /// Unix seconds: when the keeper brought it up (as in the user's own `status --json`).
    pub since: u64,
}

/// "user connections" lines (empty when there are none).
pub fn render() -> String {
    let rows: Vec<String> = collect()
        .iter()
        .map(|c| {
            let what = match c.state {
                "up" => format!(
                    "up, {} in a user namespace, keeper pid {}",
                    c.iface, c.keeper_pid
                ),
                _ => "stale (its keeper is gone)".to_owned(),
            };
            format!("  {}/{}: {what}\n", c.user, c.conn)
        })
        .collect();
    match rows.is_empty() {
        true => String::new(),
        false => format!("user connections (read-only):\n{}", rows.concat()),
    }
}

/// Every user's recorded connections, by uid then name.
pub fn collect() -> Vec<UserConnection> {
    let mut rows = Vec::new();
    let mut uids: Vec<u32> = fs::read_dir(RUN_USER)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    uids.sort_unstable();
    for uid in uids {
        let dir = Path::new(RUN_USER).join(uid.to_string()).join("vpn-ns");
        if super::state::owned_dir(&dir, uid).is_err() {
            continue;
        }
        let who = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        for name in super::state::recorded(&dir) {
            let Some(st) = read_state(&super::state::state_path(&dir, &name), uid) else {
                continue;
            };
            rows.push(UserConnection {
                user: who.clone(),
                uid,
                state: if live(&st, uid) { "up" } else { "stale" },
                keeper_pid: st.keeper.pid,
                iface: st.iface,
                since: st.since,
                conn: st.conn,
            });
        }
    }
    rows
}
