//! The subcommands for a user's own connections (real uid != 0).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::state::{self, UserState};
use super::{UnprivError, check, conf, keeper, ns};
use crate::cli::{Cli, Command, GlobalArgs};
use crate::error::UsageError;
use crate::procs::{PidFd, ProcId};
use crate::wireguard::peers::{self, PeerInfo};
use crate::wireguard::uapi;

/// A keeper answers `get=1` at once; this only bounds a stuck one.
const UAPI_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `down` gives programs and the keeper to end on SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// Runs `cli` as a user connection command; `None` for commands that exist only for
/// root (they report their own need for root).
pub fn dispatch(cli: &Cli) -> Option<anyhow::Result<ExitCode>> {
    let g = &cli.global;
    Some(match &cli.command {
        Command::Up { conn, foreground } => up(g, conn, *foreground),
        Command::Down { conn, .. } => down(conn),
        Command::Exec {
            conn,
            user,
            wait,
            cmd,
        } => exec(g, conn, user.as_deref(), *wait, cmd),
        Command::Status { conn } => status(g, conn.as_deref()),
        Command::List => list(g),
        Command::Verify { conn } => super::cmds_verify::verify(g, conn),
        Command::Check { conn } => check::run(|| config_dir(g), conn.as_deref()),
        Command::Wg { conn, args } => super::wg::run(conn, args),
        Command::Publish {
            conn,
            specs,
            host_access,
        } => super::publish::publish(g, conn, specs, *host_access),
        Command::Unpublish {
            conn,
            specs,
            host_access,
        } => super::publish::unpublish(g, conn, specs, *host_access),
        Command::UserKeeper { conn } => {
            config_dir(g).and_then(|d| keeper::run(&d, conn).map(|()| ExitCode::SUCCESS))
        }
        _ => return None,
    })
}

fn usage(e: UnprivError) -> anyhow::Error {
    match e {
        UnprivError::Env { .. } | UnprivError::Unsupported(_) => UsageError(e.to_string()).into(),
        e => e.into(),
    }
}

/// Absolute, so that the keeper (which moves to /) reads the same directory.
pub(super) fn config_dir(g: &GlobalArgs) -> anyhow::Result<PathBuf> {
    let dir = match &g.config_dir {
        Some(d) => d.clone(),
        None => state::config_dir().map_err(usage)?,
    };
    std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

pub(super) fn runtime_dir() -> anyhow::Result<PathBuf> {
    state::runtime_dir().map_err(usage)
}

/// The keeper `st` names, if it is that very process and still the keeper of `conn`.
pub(crate) fn live_keeper(st: &UserState) -> Option<PidFd> {
    let fd = st.keeper.open().ok()??;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", st.keeper.pid)).ok()?;
    is_keeper_of(&cmdline, &st.conn).then_some(fd)
}

/// Whether a `/proc/PID/cmdline` is `<vpn-ns> user-keeper <conn>`.
fn is_keeper_of(cmdline: &[u8], conn: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.len() >= 3 && args[1] == keeper::SUBCOMMAND.as_bytes() && args[2] == conn.as_bytes()
}

fn up(g: &GlobalArgs, conn: &str, foreground: bool) -> anyhow::Result<ExitCode> {
    let run = runtime_dir()?;
    // Blocked before the keeper starts: a stop request during the start is acted on
    // once the connection is up (taken down again), not lost.
    let signals = foreground
        .then(super::foreground::block_signals)
        .transpose()?;
    start(g, &run, conn)?;
    match signals {
        Some(sig) => super::foreground::stay(&sig, &run, conn, || down(conn).map(drop)),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn start(g: &GlobalArgs, run: &std::path::Path, conn: &str) -> anyhow::Result<()> {
    let dir = config_dir(g)?;
    let uc = conf::load(&dir, conn)?;
    let _lock = state::lock(run)?;
    if let Some(st) = state::read(run, conn)? {
        if live_keeper(&st).is_some() {
            return Err(UnprivError::AlreadyUp {
                conn: conn.to_owned(),
                pid: st.keeper.pid,
            }
            .into());
        }
        state::remove_all(run, conn);
    }
    let st = keeper::start(&dir, run, conn, uc.conn.netns_timeout)
        .with_context(|| format!("cannot bring {conn} up"))?;
    println!(
        "{conn}: up ({} in a user namespace, keeper pid {})",
        st.iface, st.keeper.pid
    );
    Ok(())
}

/// This user's processes (other than the keeper) in the connection's network and user
/// namespaces. Both inodes must match: an inode is unique only while its namespace
/// lives, and these stay alive as long as any such process does.
fn inside(st: &UserState) -> Vec<ProcId> {
    let is = |pid: u32, kind: &str, ino: u64| {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .is_ok_and(|l| l.to_string_lossy() == format!("{kind}:[{ino}]"))
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != st.keeper.pid)
        .filter(|&pid| is(pid, "net", st.net_ns) && is(pid, "user", st.user_ns))
        .filter_map(ProcId::of)
        .collect()
}

/// Ends programs inside (SIGTERM, then SIGKILL after `GRACE`): with the keeper gone
/// they would sit in a namespace with no way out, which is safe but is not "down".
fn end_programs(st: &UserState) {
    let procs: Vec<PidFd> = inside(st)
        .iter()
        .filter_map(|p| p.open().ok().flatten())
        .collect();
    for p in &procs {
        let _ = p.signal(libc::SIGTERM);
    }
    for p in &procs {
        if !p.wait_exit(GRACE) {
            let _ = p.signal(libc::SIGKILL);
            p.wait_exit(GRACE);
        }
    }
}

fn down(conn: &str) -> anyhow::Result<ExitCode> {
    let run = runtime_dir()?;
    let _lock = state::lock(&run)?;
    let Some(st) = state::read(&run, conn)? else {
        state::remove_all(&run, conn);
        println!("{conn}: not up");
        return Ok(ExitCode::SUCCESS);
    };
    end_programs(&st);
    if let Some(keeper) = live_keeper(&st) {
        keeper
            .terminate(GRACE)
            .with_context(|| format!("cannot stop the keeper of {conn}"))?;
    }
    state::remove_all(&run, conn);
    println!("{conn}: down");
    Ok(ExitCode::SUCCESS)
}

/// Verified handles on the keeper's namespaces: the recorded process, still alive
/// after the files were opened, with the recorded namespaces.
pub(super) fn keeper_namespaces(conn: &str) -> anyhow::Result<ns::Handles> {
    let run = runtime_dir()?;
    let st = state::read(&run, conn)?.ok_or_else(|| UnprivError::NotUp(conn.to_owned()))?;
    let gone = || UnprivError::KeeperGone {
        conn: conn.to_owned(),
        pid: st.keeper.pid,
    };
    let pidfd = live_keeper(&st).ok_or_else(gone)?;
    let h = ns::Handles::open(st.keeper.pid)?;
    if h.inodes()? != (st.user_ns, st.net_ns, st.mnt_ns) || pidfd.exited() {
        return Err(gone().into());
    }
    Ok(h)
}

fn exec(
    g: &GlobalArgs,
    conn: &str,
    user: Option<&str>,
    wait: bool,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    if let Some(u) = user.filter(|u| !is_me(u)) {
        return Err(UsageError(format!(
            "exec -u {u}: only you enter your own connection {conn}: its namespaces belong \
             to your user namespace, so another account could not enter them, and a program \
             of yours inside cannot run as anyone else (only your uid is mapped); for a \
             connection shared between accounts use root's mode (`sudo vpn-ns exec -u USER`)"
        ))
        .into());
    }
    if wait {
        let timeout = conf::load(&config_dir(g)?, conn)?.conn.netns_timeout;
        let run = runtime_dir()?;
        if !super::foreground::until_up(&run, conn, timeout)? {
            anyhow::bail!(
                "connection {conn} did not come up within {} ms (netns-timeout); `vpn-ns up {conn}` brings it up",
                timeout.as_millis()
            );
        }
    }
    super::exec::run(keeper_namespaces(conn)?, cmd)
}

/// Whether `-u NAME|UID` names the caller's own account (accepted, so that one
/// command line works for root's connections and the user's own).
fn is_me(user: &str) -> bool {
    let me = nix::unistd::getuid();
    match user.parse::<u32>() {
        Ok(uid) => uid == me.as_raw(),
        Err(_) => nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .is_some_and(|u| u.uid == me),
    }
}

#[derive(serde::Serialize)]
struct Row {
    conn: String,
    state: &'static str,
    keeper_pid: Option<u32>,
    iface: Option<String>,
    since: Option<u64>,
    /// From the keeper's UAPI socket (`get=1`); empty when not up.
    peers: Vec<PeerInfo>,
    /// The keeper's relays (`[[publish]]`, `[[host-access]]`, `vpn-ns publish`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    published: Vec<crate::publish::RelayStatus>,
}

/// The peers as the keeper reports them (nothing when it does not answer).
pub(super) fn peers(run: &std::path::Path, conn: &str) -> Vec<PeerInfo> {
    uapi::transact(&state::sock_path(run, conn), "get=1\n\n", UAPI_TIMEOUT)
        .map(|a| peers::parse_uapi_get(&a))
        .unwrap_or_default()
}

/// "handshake 12 s ago" / "no handshake yet" for one peer.
fn handshake_text(p: &PeerInfo, now: u64) -> String {
    match p.latest_handshake {
        Some(t) => format!("handshake {} s ago", now.saturating_sub(t)),
        None => "no handshake yet".to_owned(),
    }
}

fn row(run: &std::path::Path, conn: &str) -> anyhow::Result<Row> {
    let st = state::read(run, conn)?;
    let live = st.as_ref().is_some_and(|s| live_keeper(s).is_some());
    Ok(Row {
        conn: conn.to_owned(),
        state: match (&st, live) {
            (None, _) => "down",
            (Some(_), true) => "up",
            (Some(_), false) => "stale",
        },
        keeper_pid: st.as_ref().map(|s| s.keeper.pid),
        iface: st.as_ref().map(|s| s.iface.clone()),
        since: st.as_ref().map(|s| s.since),
        peers: if live { peers(run, conn) } else { Vec::new() },
        published: if live {
            super::publish::relays(conn)
        } else {
            Vec::new()
        },
    })
}

fn print_rows(g: &GlobalArgs, rows: &[Row]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if g.json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
        return Ok(());
    }
    for r in rows {
        match r.state {
            "down" => writeln!(out, "{}: down", r.conn)?,
            "stale" => writeln!(
                out,
                "{}: stale (its keeper is gone; `vpn-ns down {}` cleans up)",
                r.conn, r.conn
            )?,
            _ => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let hs: Vec<String> = r.peers.iter().map(|p| handshake_text(p, now)).collect();
                writeln!(
                    out,
                    "{}: up, {} in a user namespace, keeper pid {}{}",
                    r.conn,
                    r.iface.as_deref().unwrap_or("?"),
                    r.keeper_pid.unwrap_or(0),
                    match hs.is_empty() {
                        true => String::new(),
                        false => format!(", {}", hs.join(", ")),
                    }
                )?;
                for p in &r.published {
                    writeln!(
                        out,
                        "  published  [[{}]] listen {}/{} -> target {} ({} open, {} total)",
                        p.rule.direction,
                        p.rule.listen,
                        p.rule.proto,
                        p.rule.target,
                        p.active,
                        p.total
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn status(g: &GlobalArgs, conn: Option<&str>) -> anyhow::Result<ExitCode> {
    let run = runtime_dir()?;
    let names = match conn {
        Some(c) => vec![c.to_owned()],
        None => state::recorded(&run),
    };
    let rows = names
        .iter()
        .map(|n| row(&run, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_rows(g, &rows)?;
    Ok(ExitCode::SUCCESS)
}

fn list(g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let run = runtime_dir()?;
    let names = check::connection_names(&dir);
    let rows = names
        .iter()
        .map(|n| row(&run, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_rows(g, &rows)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exec_u_accepts_only_the_callers_own_account() {
        let me = nix::unistd::getuid().as_raw();
        assert!(super::is_me(&me.to_string()));
        if let Ok(Some(u)) = nix::unistd::User::from_uid(me.into()) {
            assert!(super::is_me(&u.name));
        }
        assert!(!super::is_me(&(me + 1).to_string()));
        assert!(!super::is_me("no-such-account-vpn-ns"));
        assert!(!super::is_me(""));
    }

    #[test]
    fn only_the_keeper_of_that_connection_is_recognised() {
        use super::is_keeper_of as k;
        assert!(k(b"/usr/bin/vpn-ns\0user-keeper\0home\0", "home"));
        assert!(!k(b"/usr/bin/vpn-ns\0user-keeper\0work\0", "home"));
        assert!(!k(b"/usr/bin/vpn-ns\0keeper\0home\0", "home"));
        assert!(!k(b"sleep\0user-keeper home\0", "home"));
        assert!(!k(b"", "home"));
    }
}
