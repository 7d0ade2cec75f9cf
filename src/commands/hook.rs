//! `vpn-ns hook openvpn`: OpenVPN's --up/--down script.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, Kind};
use crate::cover::{self, TooWide};
use crate::lifecycle;
use crate::openvpn::{self, Context, Phase};
use crate::spec::IpNet;
use crate::state::{self, Origin};

pub fn openvpn(g: &GlobalArgs, conn_name: &str) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, conn_name)?;
    if !matches!(conn.kind, Kind::OpenVpn(_)) {
        return Err(UsageError(format!(
            "{}: connection {conn_name} has type {}; `hook openvpn` needs type = \"openvpn\"",
            conn.path.display(),
            conn.kind
        ))
        .into());
    }
    let env = openvpn::from_process_env();
    let event = openvpn::parse_env(&env)
        .with_context(|| format!("connection {conn_name}: refusing OpenVPN's environment"))?;
    let rt = runtime()?;
    match (event.phase, event.context) {
        (Phase::Up, _) => {
            let spec = event
                .spec
                .as_ref()
                .context("OpenVPN gave no network configuration")?;
            if !conn.netns_isolate {
                refuse_wide_routes(conn_name, conn.host_routes_min_prefix, &env, spec)?;
            }
            let _lock = state::lock(&conn.name)?;
            // OpenVPN, known by pid and start time: the keeper watches it by pidfd.
            let vpn = crate::procs::ProcId::of(std::os::unix::process::parent_id());
            let report = rt
                .block_on(lifecycle::up(
                    &crate::keeper::system(),
                    &conn,
                    spec,
                    Origin::OpenvpnHook,
                    vpn,
                ))
                .with_context(|| {
                    format!("connection {conn_name}: up failed, changes rolled back")
                })?;
            report.log(conn_name);
        }
        // --persist-tun --up-restart: the device stays where it is, inside the namespace.
        (Phase::Down, Context::Restart) => {
            tracing::info!(
                "{conn_name}: OpenVPN restart, keeping {} in place",
                event.device
            );
        }
        (Phase::Down, Context::Init) => {
            let _lock = state::lock(&conn.name)?;
            let report = rt
                .block_on(lifecycle::down(&crate::keeper::system(), &conn))
                .with_context(|| format!("connection {conn_name}: down failed"))?;
            match (&report.netns, report.removed_netns, report.was_up) {
                (None, _, false) => tracing::info!("{conn_name}: was not up, nothing to do"),
                (Some(ns), true, _) => tracing::info!("{conn_name}: namespace {ns} removed"),
                (Some(ns), false, _) if conn.netns_persistent => {
                    tracing::info!("{conn_name}: down, namespace {ns} kept (netns-persistent)")
                }
                _ => tracing::info!("{conn_name}: down"),
            }
        }
        (Phase::RouteUp | Phase::RoutePreDown, _) => {
            tracing::debug!("{conn_name}: nothing to do at {:?}", event.phase);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// netns-isolate = false: the pushed routes go into the host's table, so a set that
/// would take over the host's routing is refused, naming the variables that pushed it.
fn refuse_wide_routes(
    conn_name: &str,
    min_prefix: u8,
    env: &BTreeMap<String, String>,
    spec: &crate::spec::NetworkSpec,
) -> anyhow::Result<()> {
    let dests: Vec<IpNet> = spec.routes.iter().map(|r| r.dest).collect();
    let wide = cover::too_wide(&dests, min_prefix);
    if wide.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = wide
        .iter()
        .map(|w| match w {
            TooWide::Prefix(n) => format!(
                "{} ({n}) is shorter than /{}",
                route_var(env, n),
                min_prefix
            ),
            TooWide::Union { half, parts } => {
                let vars: Vec<String> = parts.iter().map(|p| route_var(env, p)).collect();
                format!("{} together cover {half}", vars.join(", "))
            }
        })
        .collect();
    anyhow::bail!(
        "connection {conn_name}: refusing OpenVPN's environment: with netns-isolate = false \
         the pushed routes would take over the host's routing: {}",
        reasons.join("; ")
    )
}

/// The OpenVPN variable that pushed the route to `dest` (the destination itself if none
/// matches, which cannot happen for routes parsed from `env`).
fn route_var(env: &BTreeMap<String, String>, dest: &IpNet) -> String {
    for (k, v) in env {
        if let Some(n) = k.strip_prefix("route_network_") {
            let prefix = env
                .get(&format!("route_netmask_{n}"))
                .and_then(|m| m.parse::<Ipv4Addr>().ok())
                .map(|m| u32::from(m).count_ones() as u8);
            if v.parse().ok() == Some(dest.addr()) && prefix == Some(dest.prefix()) {
                return k.clone();
            }
        }
        if k.starts_with("route_ipv6_network_")
            && v.parse::<IpNet>().ok().map(|n| n.network()) == Some(dest.network())
        {
            return k.clone();
        }
    }
    dest.to_string()
}
