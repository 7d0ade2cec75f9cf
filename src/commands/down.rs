//! `vpn-ns down <CONN> [--purge [--kill]]`: stop the connection's VPN program (its pid
//! is in the state), wait for its down hook, and clean up whatever the hook left.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::GlobalArgs;
use crate::commands::{config_dir, runtime};
use crate::config::{self, Connection, Kind};
use crate::procs::PidFd;
use crate::state::{self, State};
use crate::{dns, lifecycle, netns, procs};

/// A pidfd for `pid` if, once opened, it is still a process of namespace `ns`: a pid
/// reused between the scan and the open is not signalled.
fn member(pid: u32, ns: &std::fs::File) -> Option<PidFd> {
    use std::os::unix::fs::MetadataExt;
    let fd = PidFd::open_pid(pid).ok()??;
    let want = ns.metadata().ok()?;
    let have = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    (have.dev() == want.dev() && have.ino() == want.ino()).then_some(fd)
}

/// OpenVPN runs its down hook before it exits; this bounds the whole teardown.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Processes inside a purged namespace get this long after SIGTERM (with --kill).
const KILL_GRACE: Duration = Duration::from_secs(5);

pub fn run(g: &GlobalArgs, name: &str, purge: bool, kill: bool) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, name)?;
    if let Kind::WireGuard(_) = conn.kind {
        if purge
            && !kill
            && let Some(st) = state::load(&conn.name)?
        {
            refuse_busy_namespace(&st)?;
        }
        let code = super::wg::down(g, name)?;
        if purge {
            purge_namespace(&conn, kill)?;
        }
        return Ok(code);
    }
    if crate::plain::handles(&conn.kind) {
        if purge
            && !kill
            && let Some(st) = state::load(&conn.name)?
        {
            refuse_busy_namespace(&st)?;
        }
        let code = super::plain::down(&conn)?;
        if purge {
            purge_namespace(&conn, kill)?;
        }
        return Ok(code);
    }
    let Some(st) = state::load(&conn.name)? else {
        tracing::info!("{name}: not up, nothing to do");
        return Ok(ExitCode::SUCCESS);
    };
    if purge && !kill {
        refuse_busy_namespace(&st)?;
    }
    match conn.kind {
        Kind::OpenVpn(_) => stop_vpn_process(&conn, &st, "openvpn")?,
        Kind::Device | Kind::WireGuard(_) | Kind::Macvlan(_) | Kind::Routed(_) => {}
    }
    finish_down(&conn, &st)?;
    if purge {
        purge_namespace(&conn, kill)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM to the recorded VPN process when it is still `program`, and wait for it
/// (its down hook runs meanwhile; the hook takes the lock, so we must not hold it).
fn stop_vpn_process(conn: &Connection, st: &State, program: &str) -> anyhow::Result<()> {
    let Some(pid) = st.vpn_pid else {
        return Ok(());
    };
    // The recorded process itself, by identity: never a process that reused its pid.
    let fd = match st.vpn() {
        Some(id) => id.open(),
        None => PidFd::open_pid(pid).map(|f| f.filter(|_| st.vpn_alive() == Some(true))),
    }
    .with_context(|| format!("cannot open {program} (pid {pid})"))?;
    let Some(fd) = fd else {
        tracing::debug!("{}: {program} (pid {pid}) already gone", conn.name);
        return Ok(());
    };
    match procs::comm(pid) {
        Some(c) if c == program => {
            tracing::debug!("{}: stopping {program} (pid {pid})", conn.name);
            if fd
                .terminate(STOP_GRACE)
                .with_context(|| format!("cannot stop {program} (pid {pid})"))?
            {
                tracing::warn!(
                    "{}: {program} (pid {pid}) ignored SIGTERM for {} s; killed it",
                    conn.name,
                    STOP_GRACE.as_secs()
                );
            }
        }
        Some(other) => tracing::warn!(
            "{}: recorded VPN pid {pid} is now {other:?}, not {program}; not signalling it",
            conn.name
        ),
        None => tracing::debug!("{}: {program} (pid {pid}) already gone", conn.name),
    }
    Ok(())
}

/// Whatever the VPN's own down hook did not do (or all of it, for adopted devices).
/// `before`: the record before the VPN was stopped, so the message says the same
/// whether the hook or this call removed the namespace.
fn finish_down(conn: &Connection, before: &State) -> anyhow::Result<()> {
    let _lock = state::lock(&conn.name)?;
    let Some(st) = state::load(&conn.name)? else {
        match before.isolated && before.netns_created && !netns::exists(&before.netns) {
            true => tracing::info!("{}: down, namespace {} removed", conn.name, before.netns),
            false => tracing::info!("{}: down", conn.name),
        }
        return Ok(());
    };
    // An intent record (up died half way) is not a kept namespace: lifecycle::down
    // removes what that up made.
    if !st.up && !st.creating {
        tracing::info!(
            "{}: down, namespace {} kept (netns-persistent)",
            conn.name,
            st.netns
        );
        return Ok(());
    }
    let report = runtime()?
        .block_on(lifecycle::down(&crate::keeper::system(), conn))
        .with_context(|| format!("connection {}: down failed", conn.name))?;
    match (report.netns, report.removed_netns) {
        (Some(ns), true) => tracing::info!("{}: down, namespace {ns} removed", conn.name),
        (Some(ns), false) if st.persistent => {
            tracing::info!(
                "{}: down, namespace {ns} kept (netns-persistent)",
                conn.name
            )
        }
        _ => tracing::info!("{}: down", conn.name),
    }
    Ok(())
}

fn refuse_busy_namespace(st: &State) -> anyhow::Result<()> {
    if !st.netns_created || !netns::exists(&st.netns) {
        return Ok(());
    }
    let ns_file = netns::open(&st.netns)?;
    let pids = netns::pids_in(&ns_file);
    if pids.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = pids.iter().map(|p| procs::describe(*p)).collect();
    Err(anyhow::anyhow!(
        "refusing to purge namespace \"{}\": processes still run inside: {}; stop them or add --kill",
        st.netns,
        list.join(", ")
    ))
}

/// Removes a namespace that down kept (netns-persistent), with its DNS files and state.
fn purge_namespace(conn: &Connection, kill: bool) -> anyhow::Result<()> {
    let _lock = state::lock(&conn.name)?;
    let Some(st) = state::load(&conn.name)? else {
        return Ok(());
    };
    if !st.netns_created {
        tracing::info!(
            "{}: namespace \"{}\" was not created by vpn-ns: leaving it in place",
            conn.name,
            st.netns
        );
    } else if netns::exists(&st.netns) {
        let ns_file = netns::open(&st.netns)?;
        let pids = netns::pids_in(&ns_file);
        if !pids.is_empty() && !kill {
            drop(ns_file);
            return refuse_busy_namespace(&st);
        }
        for pid in pids {
            let name = procs::describe(pid);
            let Some(fd) = member(pid, &ns_file) else {
                continue;
            };
            if fd
                .terminate(KILL_GRACE)
                .with_context(|| format!("cannot stop process {name}"))?
            {
                tracing::warn!("{}: killed {name} (ignored SIGTERM)", conn.name);
            } else {
                tracing::info!("{}: stopped {name}", conn.name);
            }
        }
        netns::delete(&st.netns)
            .with_context(|| format!("cannot delete namespace \"{}\"", st.netns))?;
    }
    dns::remove(&st.netns)?;
    state::remove(&conn.name)?;
    tracing::info!("{}: namespace {} purged", conn.name, st.netns);
    Ok(())
}
