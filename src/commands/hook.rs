//! `vpn-ns hook openvpn`: OpenVPN's --up/--down script.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, ConnectionType};
use crate::lifecycle;
use crate::openvpn::{self, Context, Phase};
use crate::state::{self, Origin};

pub fn openvpn(g: &GlobalArgs, conn_name: &str) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, conn_name)?;
    if conn.kind != ConnectionType::OpenVpn {
        return Err(UsageError(format!(
            "{}: connection {conn_name} has type {:?}; `hook openvpn` needs type = \"openvpn\"",
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
            let _lock = state::lock(&conn.name)?;
            // OpenVPN, known by pid and start time: the keeper watches it by pidfd.
            let vpn = crate::procs::ProcId::of(std::os::unix::process::parent_id());
            let report = rt
                .block_on(lifecycle::up(&conn, spec, Origin::OpenvpnHook, vpn))
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
                .block_on(lifecycle::down(&conn))
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
