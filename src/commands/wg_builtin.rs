//! `vpn-ns up` with the built-in data plane (the tun is born in the connection's
//! namespace, no move), and the hidden `vpn-ns wg-builtin` process that hosts it until
//! the per-connection keeper does.

use std::cell::RefCell;
use std::process::{Child, ExitCode};
use std::rc::Rc;

use anyhow::Context as _;

use crate::commands::UsageError;
use crate::config::Connection;
use crate::lifecycle::{self, MakeDevice, UpReport};
use crate::spec::{InterfaceName, NetnsName, NetworkSpec};
use crate::state::Origin;
use crate::wireguard::builtin::process::{self, Ended};
use crate::wireguard::{WgConfig, device, uapi};

/// Brings `conn` up over the built-in data plane: the lifecycle creates the namespace,
/// the data-plane process creates the tun inside it and is configured over a pipe, then
/// addresses, routes and DNS as for every connection. The process is stopped again when
/// a later step fails.
pub(super) async fn up(
    conn: &Connection,
    cfg: &WgConfig,
    iface: &InterfaceName,
    endpoints: &[Option<std::net::SocketAddr>],
    spec: &NetworkSpec,
) -> anyhow::Result<(UpReport, Child)> {
    device::ensure_log_dir()?;
    let log = device::log_path(&conn.name);
    let request = uapi::set_request(cfg, endpoints);
    let netns = conn.netns_isolate.then(|| conn.netns.clone());
    let started: Rc<RefCell<Option<Child>>> = Rc::default();
    let slot = Rc::clone(&started);
    let timeout = conn.netns_timeout;
    let make: MakeDevice<'_> = Box::new(move |_ns| {
        Box::pin(async move {
            let child = process::start(netns.as_ref(), iface, &request, &log, timeout)?;
            let pid = child.id();
            tracing::debug!("built-in WireGuard (pid {pid}) serves {iface}");
            *slot.borrow_mut() = Some(child);
            Ok(Some(pid))
        })
    });
    let res = lifecycle::up_in_place(conn, spec, Origin::Wireguard, make).await;
    let child = started.borrow_mut().take();
    match (res, child) {
        (Ok(report), Some(child)) => Ok((report, child)),
        (Ok(_), None) => unreachable!("up_in_place succeeded without making the device"),
        (Err(e), child) => {
            if let Some(mut c) = child {
                device::stop_userspace(c.id(), iface.as_str(), super::wg::STOP_TIMEOUT);
                let _ = c.wait();
            }
            Err(e.into())
        }
    }
}

/// The hidden subcommand: runs the data plane until a signal, the namespace's deletion,
/// or a failure of its loops (exit 1).
pub fn serve(netns: Option<&str>, iface: &str) -> anyhow::Result<ExitCode> {
    let iface: InterfaceName = iface
        .parse()
        .map_err(|e| UsageError(format!("interface {iface:?}: {e}")))?;
    let netns: Option<NetnsName> = netns
        .map(|n| {
            n.parse()
                .map_err(|e| UsageError(format!("namespace {n:?}: {e}")))
        })
        .transpose()?;
    let ended = process::serve(netns.as_ref(), &iface)
        .with_context(|| format!("built-in WireGuard for {iface}"))?;
    match ended {
        Ended::Signal(s) => {
            tracing::info!("{iface}: {s}, stopping");
            Ok(ExitCode::SUCCESS)
        }
        Ended::NetnsDeleted => {
            tracing::info!("{iface}: its namespace was deleted, stopping");
            Ok(ExitCode::SUCCESS)
        }
        Ended::LoopFailed(why) => {
            tracing::error!("{iface}: data plane stopped: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}
