//! "Is the connection up", and waiting for it without polling: inotify on /run/vpn-ns,
//! where `state::save` renames the finished record into place after a successful up.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::netns;
use crate::spec::NetnsName;
use crate::state;

/// The namespace of `conn` when the connection is up and its namespace is live.
pub fn up_netns(conn: &str) -> anyhow::Result<Option<NetnsName>> {
    Ok(state::load(conn)?
        .filter(|s| s.up && s.isolated && netns::exists(&s.netns))
        .map(|s| s.netns))
}

/// Waits up to `timeout` for `conn` to come up. Watches first, checks second, so an up
/// that completes in between is not missed.
pub fn until_up(conn: &str, timeout: Duration) -> anyhow::Result<Option<NetnsName>> {
    let dir = state::run_dir();
    match fs::DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .context("cannot create an inotify instance")?;
    let mask =
        AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_CLOSE_WRITE;
    ino.add_watch(&dir, mask)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    let end = Instant::now() + timeout;
    loop {
        if let Some(ns) = up_netns(conn)? {
            return Ok(Some(ns));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        crate::wait::until(&[ino.as_fd()], Some(end)).context("cannot wait for inotify events")?;
        match ino.read_events() {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e).context("cannot read inotify events"),
        }
    }
}
