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
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, Connection, ConnectionType};
use crate::openvpn::conf;
use crate::state::{self, State};
use crate::{lifecycle, procs};

/// Lines of OpenVPN's log shown when it fails.
const LOG_TAIL: usize = 15;
/// How long OpenVPN gets to run its down hook after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

pub fn run(g: &GlobalArgs, name: &str, foreground: bool) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, name)?;
    match conn.kind {
        ConnectionType::OpenVpn => openvpn(g, &conn, foreground),
        ConnectionType::WireGuard => super::wg::up(g, name, foreground),
        ConnectionType::Macvlan | ConnectionType::Routed => super::plain::up(&conn, foreground),
        ConnectionType::Device => Err(UsageError(format!(
            "{}: a type = \"device\" connection is brought up by whatever creates the device; run `vpn-ns adopt {name} <DEVICE>` once it exists",
            conn.path.display()
        ))
        .into()),
    }
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
fn checked_config(conn: &Connection) -> anyhow::Result<PathBuf> {
    let Some(section) = &conn.openvpn else {
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

fn already_up(conn: &Connection) -> anyhow::Result<Option<State>> {
    Ok(state::load(&conn.name)?.filter(|st| st.up && st.vpn_pid.is_some_and(procs::alive)))
}

fn openvpn(g: &GlobalArgs, conn: &Connection, foreground: bool) -> anyhow::Result<ExitCode> {
    let config = checked_config(conn)?;
    if let Some(st) = already_up(conn)? {
        tracing::info!(
            "{}: already up in namespace {} (VPN pid {})",
            conn.name,
            st.netns,
            st.vpn_pid.unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = openvpn_command(g, conn, &config)?;
    if foreground {
        return run_foreground(conn, cmd);
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
    let pidfd = procs::pidfd(pid)?;
    let end = Instant::now() + conn.netns_timeout;
    let state_file = format!("{}.json", conn.name);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds = vec![PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = &pidfd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(anyhow::Error::from(e).context("cannot wait for OpenVPN")),
            Ok(_) => {}
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
    let killed = procs::terminate(pid, STOP_GRACE)?;
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
            .block_on(lifecycle::down(conn))
            .with_context(|| format!("connection {}: cleanup after openvpn failed", conn.name))?;
    }
    Ok(())
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

/// OpenVPN's pid for the signal forwarder; 0 before it starts.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// `--foreground`: OpenVPN as our child with our stdout/stderr (the journal under
/// systemd); signals are passed on so `systemctl stop`/`reload` reach it.
fn run_foreground(conn: &Connection, mut cmd: Command) -> anyhow::Result<ExitCode> {
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler only reads an atomic and calls kill(2).
        unsafe { sigaction(sig, &action) }.context("cannot install a signal handler")?;
    }
    // Its own process group: a terminal's Ctrl-C reaches OpenVPN once, through us.
    let mut child = cmd
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start openvpn (is it installed? `apt install openvpn`)")?;
    let pid = child.id();
    CHILD.store(pid as i32, Ordering::SeqCst);
    tracing::info!(
        "{}: openvpn running in the foreground, pid {pid}",
        conn.name
    );
    let status = child.wait().context("cannot wait for openvpn")?;
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
