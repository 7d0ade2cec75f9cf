//! Unprivileged mode (issue 18): a normal user (real uid != 0, no sudo, no setuid)
//! runs their own WireGuard connections. The connection's keeper creates a user
//! namespace mapping the user to themselves and, owned by it, a network and a mount
//! namespace; the tun is born inside, the UDP socket was bound in the host namespace
//! before unsharing. See docs/unprivileged.md.

pub mod check;
mod cmds;
mod cmds_verify;
pub mod conf;
mod control;
mod exec;
mod foreground;
mod hostsock;
pub mod keeper;
pub mod ns;
mod publish;
pub mod root_view;
mod seal;
pub mod state;
mod wg;

use std::io;
use std::path::PathBuf;

pub use cmds::dispatch;

#[derive(Debug, thiserror::Error)]
pub enum UnprivError {
    #[error("{op} {what}: {source}")]
    Io {
        op: &'static str,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{var} {why}")]
    Env { var: &'static str, why: String },
    #[error("connection {0} is not up (no state in the runtime directory)")]
    NotUp(String),
    #[error("connection {conn} is already up (keeper pid {pid})")]
    AlreadyUp { conn: String, pid: u32 },
    #[error("the keeper of {conn} (pid {pid}) is gone or is not the one recorded")]
    KeeperGone { conn: String, pid: u32 },
    #[error("the keeper of {conn} failed to start: {why}{}", log_tail(.log))]
    Start {
        conn: String,
        why: String,
        log: PathBuf,
    },
    #[error("{0} is not supported for a user's own connection (it needs root)")]
    Unsupported(&'static str),
}

impl UnprivError {
    pub fn io(op: &'static str, what: impl Into<String>) -> impl FnOnce(io::Error) -> UnprivError {
        let what = what.into();
        move |source| UnprivError::Io { op, what, source }
    }

    pub fn errno(
        op: &'static str,
        what: impl Into<String>,
    ) -> impl FnOnce(nix::errno::Errno) -> UnprivError {
        let what = what.into();
        move |e| UnprivError::Io {
            op,
            what,
            source: e.into(),
        }
    }
}

/// The last lines of the keeper's log, for an error message.
fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() {
        format!(" (log {})", log.display())
    } else {
        format!("\n{tail}\n(log {})", log.display())
    }
}

/// Whether this process runs unprivileged: unprivileged mode is chosen by the real uid,
/// so a setuid install (refused earlier in main) could never select it by accident.
pub fn is_user() -> bool {
    !nix::unistd::getuid().is_root()
}
