//! `vpn-ns up <CONN>`: start the connection's VPN program so that vpn-ns itself sets up
//! the namespace. For OpenVPN that means starting `openvpn` with the hook flags and
//! waiting, on inotify and a pidfd rather than by polling, until the hook has recorded
//! the connection as up.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, Connection, Kind, OpenVpnSection};
use crate::openvpn::conf;
use crate::procs::{self, PidFd};
use crate::state::{self, State};
use crate::wait::{self, Wake};
use crate::{keeper, lifecycle};

/// Lines of OpenVPN's log shown when it fails.
const LOG_TAIL: usize = 15;
/// How long OpenVPN gets to run its down hook after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

pub fn run(g: &GlobalArgs, name: &str, foreground: bool) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, name)?;
    let code = match &conn.kind {
        Kind::OpenVpn(section) => openvpn(g, &conn, section.as_ref(), foreground),
        Kind::WireGuard(_) => super::wg::up(g, name, foreground),
        Kind::Macvlan(_) | Kind::Routed(_) => super::plain::up(&conn, foreground),
        Kind::Device if restore_keeper(&conn)? => Ok(ExitCode::SUCCESS),
        Kind::Device => Err(UsageError(format!(
            "{}: a type = \"device\" connection is brought up by whatever creates the device; run `vpn-ns adopt {name} <DEVICE>` once it exists",
            conn.path.display()
        ))
        .into()),
    }?;
    // The keeper binds the relays just after up has released the connection: a script
    // that runs `vpn-ns up CONN && curl ...` must find them listening.
    if !foreground {
        super::publish::wait_listening(&conn);
    }
    Ok(code)
}

pub fn log_path(conn: &str) -> PathBuf {
    state::run_dir().join(format!("{conn}.openvpn.log"))
}

/// The `--up`/`--down` command: this binary, as OpenVPN will split it into words.
fn hook_command(g: &GlobalArgs, conn: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the vpn-ns executable")?;
    let mut parts = vec![exe.display().to_string()];
    if let Some(d) = &g.config_dir {
        // OpenVPN runs the hook from the config's directory (--cd).
        let d = std::path::absolute(d).unwrap_or_else(|_| d.clone());
        parts.push("--config-dir".into());
        parts.push(d.display().to_string());
    }
    parts.extend(["hook".into(), "openvpn".into(), conn.to_owned()]);
    script_command(&parts)
}

/// Joins words into an OpenVPN script command. OpenVPN splits it again on whitespace
/// and interprets quotes and backslashes, so a word with those cannot pass reliably.
fn script_command(parts: &[String]) -> anyhow::Result<String> {
    let resplit = |c: char| c.is_whitespace() || "\"'\\#;".contains(c);
    if let Some(bad) = parts.iter().find(|p| p.is_empty() || p.contains(resplit)) {
        return Err(UsageError(format!(
            "cannot pass {bad:?} to OpenVPN as part of its --up command: it is empty or contains whitespace, a quote, a backslash, `#` or `;`"
        ))
        .into());
    }
    Ok(parts.join(" "))
}

/// Reads the OpenVPN config and refuses it when a directive conflicts with vpn-ns.
fn checked_config(conn: &Connection, section: Option<&OpenVpnSection>) -> anyhow::Result<PathBuf> {
    let Some(section) = section else {
        return Err(UsageError(format!(
            "{}: `vpn-ns up` needs an [openvpn] section with config = \"/etc/openvpn/client/{}.conf\"",
            conn.path.display(),
            conn.name
        ))
        .into());
    };
    let path = std::path::absolute(&section.config).unwrap_or_else(|_| section.config.clone());
    let directives = conf::read(&path).map_err(|e| UsageError(e.to_string()))?;
    let conflicts = conf::conflicts(&directives);
    if !conflicts.is_empty() {
        let msgs: Vec<String> = conflicts
            .iter()
            .map(|c| conf::conflict_message(&path, c))
            .collect();
        return Err(UsageError(msgs.join("; ")).into());
    }
    Ok(path)
}

fn openvpn_command(g: &GlobalArgs, conn: &Connection, config: &Path) -> anyhow::Result<Command> {
    let hook = hook_command(g, &conn.name)?;
    let mut cmd = Command::new("openvpn");
    // --cd first, so relative paths in the user's config (ca, cert, ...) resolve next
    // to it; our flags after --config, so they win over the file.
    if let Some(dir) = config.parent() {
        cmd.arg("--cd").arg(dir);
    }
    cmd.arg("--config").arg(config);
    cmd.args([
        "--ifconfig-noexec",
        "--route-noexec",
        "--script-security",
        "2",
        "--disable-dco",
        "--up",
        &hook,
        "--down",
        &hook,
    ]);
    Ok(cmd)
}

/// An up connection that is already up (adopted device, ...): start a new keeper if
/// its keeper is gone. True when the connection is up.
pub fn restore_keeper(conn: &Connection) -> anyhow::Result<bool> {
    let up = state::load(&conn.name)?.is_some_and(|st| st.up && st.vpn_alive() != Some(false));
    if up {
        keeper::restore(conn).with_context(|| format!("connection {}", conn.name))?;
        tracing::info!("{}: already up", conn.name);
    }
    Ok(up)
}

/// The stop signals `--foreground` passes on to OpenVPN, plus SIGCHLD for its exit.
fn foreground_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
    ] {
        s.add(sig);
    }
    s
}

fn openvpn(
    g: &GlobalArgs,
    conn: &Connection,
    section: Option<&OpenVpnSection>,
    foreground: bool,
) -> anyhow::Result<ExitCode> {
    // Blocked before anything starts, so a SIGTERM during start-up waits for the
    // forwarding loop instead of being lost (OpenVPN gets a clean mask at spawn).
    let signals = foreground.then(foreground_signals);
    if let Some(s) = &signals {
        s.thread_block().context("cannot block signals")?;
    }
    let config = checked_config(conn, section)?;
    if let Some(st) = state::load(&conn.name)?
        && st.up
    {
        match st.vpn_alive() {
            Some(true) if !foreground => {
                keeper::restore(conn).with_context(|| format!("connection {}", conn.name))?;
                tracing::info!(
                    "{}: already up in namespace {} (VPN pid {})",
                    conn.name,
                    st.netns,
                    st.vpn_pid.unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Some(true) => {
                return Err(UsageError(format!(
                    "connection {} is already up (VPN pid {}); take it down first",
                    conn.name,
                    st.vpn_pid.unwrap_or_default()
                ))
                .into());
            }
            Some(false) => clean_dead(conn)?,
            None => {}
        }
    }
    let mut cmd = openvpn_command(g, conn, &config)?;
    if let Some(s) = signals {
        return run_foreground(conn, cmd, s);
    }
    // Creates /run/vpn-ns (for the log and the watch), after any up/down of this
    // connection in progress.
    drop(state::lock(&conn.name)?);
    let log = log_path(&conn.name);
    let log_file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log)
        .with_context(|| format!("cannot create {}", log.display()))?;
    // Watch before starting OpenVPN, so the hook's state write cannot be missed.
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .context("cannot create an inotify instance")?;
    inotify
        .add_watch(
            &state::run_dir(),
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .with_context(|| format!("cannot watch {}", state::RUN_DIR))?;
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: setsid is async-signal-safe; it detaches OpenVPN from our terminal and
    // session so it outlives this command.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
    }
    let child = cmd
        .spawn()
        .context("cannot start openvpn (is it installed? `apt install openvpn`)")?;
    let pid = child.id();
    tracing::debug!("{}: started openvpn, pid {pid}", conn.name);
    let st = wait_ready(conn, child, &inotify, &log)?;
    tracing::info!(
        "{}: up in namespace {} ({}, OpenVPN pid {pid}, log {})",
        conn.name,
        st.netns,
        st.device.as_deref().unwrap_or("?"),
        log.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits until the state says up with OpenVPN's pid; on exit or timeout cleans up and
/// fails with the log's tail.
fn wait_ready(
    conn: &Connection,
    mut child: Child,
    inotify: &Inotify,
    log: &Path,
) -> anyhow::Result<State> {
    let pid = child.id();
    // Our unreaped child: its pid cannot be reused while we hold it.
    let pidfd = PidFd::open_pid(pid)?.context("openvpn exited at once")?;
    let end = Instant::now() + conn.netns_timeout;
    let state_file = format!("{}.json", conn.name);
    loop {
        match wait::until(&[inotify.as_fd(), pidfd.as_fd()], Some(end))
            .context("cannot wait for OpenVPN")?
        {
            Wake::Deadline => break,
            Wake::Ready(_) => {}
        }
        let touched = match inotify.read_events() {
            Ok(evs) => evs
                .iter()
                .any(|e| e.name.as_deref() == Some(state_file.as_ref())),
            Err(nix::errno::Errno::EAGAIN) => false,
            Err(e) => return Err(anyhow::Error::from(e).context("cannot read inotify events")),
        };
        if touched
            && let Some(st) = state::load(&conn.name)?
            && st.up
            && st.vpn_pid == Some(pid)
        {
            return Ok(st);
        }
        if let Some(status) = child.try_wait()? {
            cleanup(conn, pid)?;
            show_tail(log);
            return Err(anyhow::anyhow!(
                "connection {}: openvpn exited ({}) before the tunnel was up; see {}",
                conn.name,
                describe_status(status),
                log.display()
            ));
        }
    }
    let killed = pidfd.terminate(STOP_GRACE)?;
    let _ = child.wait();
    cleanup(conn, pid)?;
    show_tail(log);
    Err(anyhow::anyhow!(
        "connection {}: the tunnel was not up within {} ms (netns-timeout); stopped openvpn{}; nothing is left configured; see {}",
        conn.name,
        conn.netns_timeout.as_millis(),
        if killed { " with SIGKILL" } else { "" },
        log.display()
    ))
}

/// After OpenVPN `pid` is gone: if its down hook did not run, take the connection down.
fn cleanup(conn: &Connection, pid: u32) -> anyhow::Result<()> {
    let _lock = state::lock(&conn.name)?;
    if state::load(&conn.name)?.is_some_and(|st| (st.up || st.creating) && st.vpn_pid == Some(pid))
    {
        runtime()?
            .block_on(lifecycle::down(&crate::keeper::system(), conn))
            .with_context(|| format!("connection {}: cleanup after openvpn failed", conn.name))?;
    }
    Ok(())
}

/// The record says up but its VPN process is dead (a zombie counts: where nothing
/// reaps orphans, a killed OpenVPN stays one): take the connection down, so the new
/// OpenVPN starts from a clean record (a persistent namespace stays and is reused).
fn clean_dead(conn: &Connection) -> anyhow::Result<()> {
    let _lock = state::lock(&conn.name)?;
    let Some(st) = state::load(&conn.name)? else {
        return Ok(());
    };
    if !st.up || st.vpn_alive() != Some(false) {
        return Ok(());
    }
    let pid = st.vpn_pid.unwrap_or_default();
    let zombie = procs::stat(pid).is_some_and(|s| s.state == 'Z');
    tracing::warn!(
        "{}: the recorded VPN process (pid {pid}) is {}; cleaning up and starting a new one",
        conn.name,
        if zombie {
            "a zombie (it exited and nothing reaped it)"
        } else {
            "gone"
        }
    );
    runtime()?
        .block_on(lifecycle::down(&crate::keeper::system(), conn))
        .with_context(|| format!("connection {}: cleanup of the dead VPN failed", conn.name))?;
    Ok(())
}

/// sigtimedwait: a signal of `set` (blocked) within `timeout`, or `None`.
fn timed_wait(set: &SigSet, timeout: Duration) -> anyhow::Result<Option<Signal>> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    loop {
        // SAFETY: the set and timespec outlive the call; no siginfo is requested.
        let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
        if r >= 0 {
            return Ok(Signal::try_from(r).ok());
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            Some(libc::EINTR) => continue,
            _ => return Err(std::io::Error::last_os_error()).context("cannot wait for signals"),
        }
    }
}

fn show_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL);
    eprintln!(
        "vpn-ns: last {} line(s) of {}:",
        lines.len() - start,
        log.display()
    );
    for l in &lines[start..] {
        eprintln!("  {l}");
    }
}

fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => s.to_string(),
    }
}

/// `--foreground`: OpenVPN as our child with our stdout/stderr (the journal under
/// systemd). The stop signals were blocked before anything started; here they are
/// taken one by one and passed on through a pidfd, so `systemctl stop`/`reload` reach
/// OpenVPN however early they come.
fn run_foreground(
    conn: &Connection,
    mut cmd: Command,
    signals: SigSet,
) -> anyhow::Result<ExitCode> {
    procs::unblock_signals_in_child(&mut cmd);
    // Its own process group: a terminal's Ctrl-C reaches OpenVPN once, through us.
    let mut child = cmd
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start openvpn (is it installed? `apt install openvpn`)")?;
    let pid = child.id();
    let pidfd = PidFd::open_pid(pid)?.context("openvpn exited at once")?;
    tracing::info!(
        "{}: openvpn running in the foreground, pid {pid}",
        conn.name
    );
    // A stop passed on is repeated every second until OpenVPN is gone (one that has only
    // just started may not act on it yet), and after STOP_GRACE becomes SIGKILL.
    let mut stopping: Option<(Signal, Instant)> = None;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for openvpn")? {
            break status;
        }
        let sig = match stopping {
            None => Some(signals.wait().context("cannot wait for signals")?),
            Some(_) => timed_wait(&signals, Duration::from_secs(1))?,
        };
        let (sig, first) = match (sig, stopping) {
            (Some(Signal::SIGCHLD), _) => continue,
            (Some(s), _) => (s, true),
            (None, Some((s, since))) if since.elapsed() >= STOP_GRACE => {
                tracing::warn!(
                    "{}: openvpn ignored {s} for {} s; killing it",
                    conn.name,
                    STOP_GRACE.as_secs()
                );
                (Signal::SIGKILL, false)
            }
            (None, Some((s, _))) => (s, false),
            (None, None) => continue,
        };
        if first && matches!(sig, Signal::SIGTERM | Signal::SIGINT) && stopping.is_none() {
            stopping = Some((sig, Instant::now()));
        }
        pidfd
            .signal(sig as i32)
            .with_context(|| format!("cannot pass {sig} on to openvpn"))?;
    };
    cleanup(conn, pid)?;
    tracing::info!(
        "{}: openvpn exited ({})",
        conn.name,
        describe_status(status)
    );
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn script_command_joins_plain_words() {
        let c = script_command(&words(&["/usr/bin/vpn-ns", "hook", "openvpn", "work"])).unwrap();
        assert_eq!(c, "/usr/bin/vpn-ns hook openvpn work");
    }

    #[test]
    fn script_command_refuses_words_openvpn_would_resplit() {
        for bad in [
            "/opt/my dir/vpn-ns",
            "a\"b",
            "it's",
            "a\\b",
            "x#y",
            "x;y",
            "",
        ] {
            let e = script_command(&words(&[bad, "hook"])).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{bad:?}: {e}");
        }
    }
}
