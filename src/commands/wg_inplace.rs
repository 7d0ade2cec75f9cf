//! `vpn-ns up` for WireGuard devices born in the connection's namespace (no move): a
//! kernel link created there from the host namespace, or the built-in data plane's tun;
//! and the hidden `vpn-ns wg-builtin` process that hosts the built-in data plane until
//! the per-connection keeper does.

use std::cell::RefCell;
use std::fs::File;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::{Context as _, bail};

use super::wg::Made;
use crate::commands::UsageError;
use crate::config::{Connection, WgBackend};
use crate::lifecycle::{self, MakeDevice, UpReport};
use crate::spec::{InterfaceName, NetnsName, NetworkSpec};
use crate::state::Origin;
use crate::wireguard::builtin::process::{self, Ended};
use crate::wireguard::{WgConfig, device, kernel, uapi};

/// Brings `conn` up with `backend` (kernel, builtin or auto): the lifecycle creates the
/// namespace, the device is made inside it and configured, then addresses, routes and
/// DNS as for every connection. What was made is undone when a later step fails.
pub(super) async fn up(
    conn: &Connection,
    backend: WgBackend,
    cfg: &WgConfig,
    iface: &InterfaceName,
    endpoints: &[Option<SocketAddr>],
    spec: &NetworkSpec,
) -> anyhow::Result<(UpReport, Made)> {
    let made: Rc<RefCell<Option<Made>>> = Rc::default();
    let slot = Rc::clone(&made);
    let make: MakeDevice<'_> = Box::new(move |ns: File| {
        Box::pin(async move {
            if backend != WgBackend::Builtin {
                match kernel::create(iface.as_str(), Some(&ns)).await {
                    Ok(()) => {
                        // Recorded first: a refused configuration is rolled back too.
                        *slot.borrow_mut() = Some(Made::Kernel);
                        kernel::configure(iface.as_str(), Some(&ns), cfg, endpoints)
                            .with_context(|| format!("cannot configure {iface}"))?;
                        return Ok(None);
                    }
                    Err(kernel::KernelError::NoModule) if backend == WgBackend::Auto => {
                        tracing::debug!(
                            "no WireGuard kernel module: using the built-in data plane"
                        );
                    }
                    Err(kernel::KernelError::NoModule) => bail!(
                        "the kernel has no WireGuard module; set backend = \"builtin\" in [wireguard] of {}",
                        conn.path.display()
                    ),
                    Err(e) => return Err(e.into()),
                }
            }
            device::ensure_log_dir()?;
            let netns = conn.netns_isolate.then(|| conn.netns.clone());
            let child = process::start(
                netns.as_ref(),
                iface,
                &uapi::set_request(cfg, endpoints),
                &device::log_path(&conn.name),
                conn.netns_timeout,
            )?;
            let pid = child.id();
            tracing::debug!("built-in WireGuard (pid {pid}) serves {iface}");
            *slot.borrow_mut() = Some(Made::Userspace(child));
            Ok(Some(pid))
        })
    });
    let res = lifecycle::up_in_place(
        &crate::keeper::system(),
        conn,
        spec,
        Origin::Wireguard,
        make,
    )
    .await;
    let made = made.borrow_mut().take();
    match (res, made) {
        (Ok(report), Some(made)) => Ok((report, made)),
        (Ok(_), None) => unreachable!("up_in_place succeeded without making the device"),
        (Err(e), made) => {
            if let Some(m) = made {
                let ns = conn.netns_isolate.then_some(&conn.netns);
                super::wg::destroy(m, iface.as_str(), ns).await;
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
