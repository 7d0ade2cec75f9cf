//! WireGuard's device step (native up). wireguard-go is started before the namespace
//! exists: its tun is made in the host namespace and moved in like any VPN's. A kernel
//! link or the built-in data plane's tun is born inside (a move costs 20-45 ms in the
//! kernel), with the UDP socket left in the host namespace. Every device and process
//! made goes into the journal before it is configured, so a refused configuration is
//! undone too.

use super::edges::{At, Edges};
use super::journal::{Journal, Undo};
use super::up::Device;
use super::{LifecycleError, UpReport};
use crate::config::{Connection, WgBackend};
use crate::procs::ProcId;
use crate::spec::NetworkSpec;
use crate::state::Origin;

/// Brings a WireGuard connection up with `backend`; the peers' configuration is the
/// `WgDevices` side of `e`. The caller holds the connection's lock.
pub async fn up_wireguard<E: Edges>(
    e: &E,
    conn: &Connection,
    spec: &NetworkSpec,
    backend: WgBackend,
) -> Result<UpReport, LifecycleError> {
    let device = Device::WireGuard(backend);
    Ok(
        super::up::run(e, conn, spec, Origin::Wireguard, None, device)
            .await?
            .report,
    )
}

/// wireguard-go: started and configured in the host namespace; the device is then
/// waited for and moved in as a VPN's.
pub(super) fn start_userspace<E: Edges>(
    e: &E,
    conn: &Connection,
    iface: &str,
    j: &mut Journal,
) -> Result<ProcId, LifecycleError> {
    let id = e
        .start_userspace(conn, iface)
        .map_err(LifecycleError::WireGuard)?;
    j.push(Undo::Process(id, iface.to_owned()));
    e.configure_userspace(conn, iface)
        .map_err(LifecycleError::WireGuard)?;
    Ok(id)
}

/// A kernel link (kernel, or auto when the module exists), else the built-in data plane,
/// born in `at`. Returns the process serving the device, if any.
pub(super) async fn make_inside<E: Edges>(
    e: &E,
    conn: &Connection,
    backend: WgBackend,
    at: At<'_>,
    iface: &str,
    j: &mut Journal,
) -> Result<Option<ProcId>, LifecycleError> {
    let err = |source| LifecycleError::MakeDevice {
        device: iface.to_owned(),
        ns: match at {
            At::Host => "host".to_owned(),
            At::Ns(n) => n.to_string(),
        },
        source,
    };
    if backend != WgBackend::Builtin {
        match e.create_kernel(at, iface).await.map_err(err)? {
            true => {
                j.push(Undo::KernelLink {
                    iface: iface.to_owned(),
                    host: at == At::Host,
                });
                e.configure_kernel(at, iface).map_err(err)?;
                return Ok(None);
            }
            false if backend == WgBackend::Auto => {
                tracing::debug!("no WireGuard kernel module: using the built-in data plane");
            }
            false => {
                return Err(err(anyhow::anyhow!(
                    "the kernel has no WireGuard module; set backend = \"builtin\" in [wireguard] of {}",
                    conn.path.display()
                )));
            }
        }
    }
    let id = e.start_builtin(conn, at, iface).map_err(err)?;
    tracing::debug!("built-in WireGuard (pid {}) serves {iface}", id.pid);
    j.push(Undo::Process(id, iface.to_owned()));
    Ok(Some(id))
}
