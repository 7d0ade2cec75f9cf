//! Waiting on a user connection: `exec --wait` (until it is up, bounded) and
//! `up --foreground` (as long as its keeper runs, taking it down on a signal), for
//! scripts and a `systemd --user` unit (packaging/systemd/user/vpn-ns@.service).

use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::state;
use crate::procs::PidFd;

/// The live keeper of `conn`, if the connection is up.
fn up_now(run: &Path, conn: &str) -> anyhow::Result<Option<PidFd>> {
    Ok(state::read(run, conn)?.and_then(|st| super::cmds::live_keeper(&st)))
}

/// SIGTERM/SIGINT/SIGHUP blocked and readable (non-blocking) through the returned fd.
pub fn block_signals() -> anyhow::Result<SignalFd> {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block().context("cannot block signals")?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot create a signalfd")
}

/// Waits up to `timeout` for `conn` to be up (its state recorded, its keeper alive).
/// Watches first, checks second, so an up that completes in between is not missed:
/// the keeper renames its state file into place once it is ready.
pub fn until_up(run: &Path, conn: &str, timeout: Duration) -> anyhow::Result<bool> {
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .context("cannot create an inotify instance")?;
    let mask =
        AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_CLOSE_WRITE;
    ino.add_watch(run, mask)
        .with_context(|| format!("cannot watch {}", run.display()))?;
    let end = Instant::now() + timeout;
    loop {
        if up_now(run, conn)?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= end {
            return Ok(false);
        }
        crate::wait::until(&[ino.as_fd()], Some(end)).context("cannot wait for inotify events")?;
        match ino.read_events() {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e).context("cannot read inotify events"),
        }
    }
}

/// After a successful up: stays until SIGTERM/SIGINT/SIGHUP (then takes the connection
/// down: exit 0) or until the keeper ends (a `vpn-ns down` elsewhere: exit 0; a keeper
/// that died: the connection is cleaned up, exit 1).
pub fn stay(
    signals: &SignalFd,
    run: &Path,
    conn: &str,
    down: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let Some(keeper) = up_now(run, conn)? else {
        anyhow::bail!(
            "connection {conn}: the keeper ended right after up; see `vpn-ns status {conn}`"
        );
    };
    crate::wait::until(&[signals.as_fd(), keeper.as_fd()], None).context("cannot wait")?;
    if let Ok(Some(si)) = signals.read_signal() {
        tracing::info!(
            "{conn}: signal {}: taking the connection down",
            si.ssi_signo
        );
        down()?;
        return Ok(ExitCode::SUCCESS);
    }
    {
        // A `vpn-ns down` elsewhere holds the lock until it has removed the state.
        let _lock = state::lock(run)?;
        if state::read(run, conn)?.is_none() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    tracing::error!("{conn}: the keeper ended; taking the connection down");
    down()?;
    Ok(ExitCode::FAILURE)
}
