//! A user connection keeper's control socket, `$XDG_RUNTIME_DIR/vpn-ns/<conn>.keeper.sock`
//! (mode 0600 in the user's 0700 runtime directory): the same protocol as root's keeper
//! (`crate::keeper::control`: `status`, `publish`, `unpublish`), answered by one thread
//! of the user's keeper. Programs inside never see it: the keeper bound it before it
//! replaced the runtime directory in its mount namespace with an empty one.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::UnprivError;
use crate::keeper::control::{self, KeeperStatus, Reply, Request};
use crate::publish::Relays;

/// Each client gets this long to send its request, as with root's keeper.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(200);

/// The relays, `None` once the keeper is ending (nothing may be published then).
pub type Shared = Arc<Mutex<Option<Relays>>>;

/// Binds the socket at `path`, replacing a stale one (nobody answering on it).
pub fn bind(path: &Path) -> Result<UnixListener, UnprivError> {
    let what = path.display().to_string();
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(UnprivError::io("refusing to replace", what)(
                io::Error::from(io::ErrorKind::AddrInUse),
            ));
        }
        std::fs::remove_file(path).map_err(UnprivError::io("cannot remove stale", &*what))?;
    }
    let l = UnixListener::bind(path).map_err(UnprivError::io("cannot bind", &*what))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(UnprivError::io("cannot restrict", what))?;
    Ok(l)
}

/// Answers clients one at a time, for the keeper's life.
pub fn serve(listener: UnixListener, relays: Shared, watching: Vec<String>) {
    for s in listener.incoming().flatten() {
        if let Err(e) = answer(&s, &relays, &watching) {
            tracing::debug!("control client: {e}");
        }
    }
}

fn answer(s: &UnixStream, relays: &Shared, watching: &[String]) -> io::Result<()> {
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let line = control::read_line(s)?;
    let reply = match control::parse_request(&line) {
        Ok(req) => handle(req, relays, watching),
        Err(r) => r,
    };
    control::write_line(s, &reply)
}

fn handle(req: Request, relays: &Shared, watching: &[String]) -> Reply {
    let mut guard = relays.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(r) = guard.as_mut() else {
        return Reply::Error {
            message: "the connection is ending".to_owned(),
        };
    };
    let err = |e: crate::publish::PublishError| Reply::Error {
        message: e.to_string(),
    };
    match req {
        Request::Status => Reply::Status(KeeperStatus {
            pid: std::process::id(),
            watching: watching.to_vec(),
            lease_expires: None,
            lease_expired: false,
            published: r.status(),
        }),
        Request::Publish { rule } => match r.publish(rule) {
            Ok(()) => Reply::Published { rule },
            Err(e) => err(e),
        },
        Request::Unpublish {
            direction,
            proto,
            listen,
        } => match r.unpublish(direction, proto, listen) {
            Ok(rule) => Reply::Unpublished { rule },
            Err(e) => err(e),
        },
    }
}
