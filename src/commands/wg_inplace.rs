//! The hidden `vpn-ns wg-builtin` process that hosts the built-in WireGuard data plane
//! (started by the lifecycle's WireGuard step, `wireguard::steps`).

use std::process::ExitCode;

use anyhow::Context as _;

use crate::commands::UsageError;
use crate::spec::{InterfaceName, NetnsName};
use crate::wireguard::builtin::process::{self, Ended};

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
