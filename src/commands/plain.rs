//! `vpn-ns up` / `vpn-ns down` for the connection types without a VPN
//! (`macvlan`, `routed`); `up.rs`/`down.rs` dispatch here by type.

use std::process::ExitCode;

use anyhow::Context as _;
use nix::sys::signal::{SigSet, Signal};

use crate::commands::runtime;
use crate::config::Connection;
use crate::lifecycle;
use crate::{keeper, state};

pub fn up(conn: &Connection, foreground: bool) -> anyhow::Result<ExitCode> {
    let name = &conn.name;
    // Blocked before anything changes, so a signal during up is handled after it, by down.
    let signals = foreground.then(block_stop_signals).transpose()?;
    let rt = runtime()?;
    let already_up = {
        let _lock = state::lock(&conn.name)?;
        let r = rt
            .block_on(lifecycle::up_plain(&keeper::system(), conn))
            .with_context(|| format!("connection {name}: up failed, changes rolled back"))?;
        match r.already_up {
            true => tracing::info!("{name}: already up in namespace {}", r.netns),
            false => tracing::info!(
                "{name}: {} in namespace {}: {}{}, {} DNS server(s){}",
                r.device,
                r.netns,
                r.address,
                r.gateway.map(|g| format!(" via {g}")).unwrap_or_default(),
                r.dns_servers,
                r.lease_secs
                    .map(|s| format!(", DHCP lease {s} s (not renewed)"))
                    .unwrap_or_default()
            ),
        }
        r.already_up
    };
    if already_up {
        keeper::restore(conn).with_context(|| format!("connection {name}"))?;
    }
    if let Some(set) = signals {
        let sig = set.wait().context("cannot wait for a signal")?;
        tracing::info!("{name}: {sig}, taking the connection down");
        return down_loaded(conn, &rt);
    }
    Ok(ExitCode::SUCCESS)
}

fn block_stop_signals() -> anyhow::Result<SigSet> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("cannot block SIGINT/SIGTERM")?;
    Ok(set)
}

pub fn down(conn: &Connection) -> anyhow::Result<ExitCode> {
    down_loaded(conn, &runtime()?)
}

fn down_loaded(conn: &Connection, rt: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let name = &conn.name;
    let _lock = state::lock(name)?;
    let r = rt
        .block_on(lifecycle::down(&keeper::system(), conn))
        .with_context(|| format!("connection {name}: down failed"))?;
    if let Some(v) = &r.restored_forwarding {
        tracing::info!("{name}: last routed connection down, net.ipv4.ip_forward restored to {v}");
    }
    match (&r.netns, r.removed_netns, r.was_up) {
        (None, _, _) => tracing::info!("{name}: was not up, nothing to do"),
        (Some(ns), true, _) => tracing::info!("{name}: down, namespace {ns} removed"),
        (Some(ns), false, _) if conn.netns_persistent => {
            tracing::info!("{name}: down, namespace {ns} kept (netns-persistent)")
        }
        _ => tracing::info!("{name}: down"),
    }
    Ok(ExitCode::SUCCESS)
}
