//! The real `lifecycle::WgDevices`: of one native up (`Devices`: the peers'
//! configuration, the userspace program and the calls into device.rs, kernel.rs and the
//! built-in process), and of down (`Teardown`: stop and delete need no configuration).

use std::fs::File;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::LocalBoxFuture;

use super::builtin::process;
use super::{WgConfig, device, kernel, uapi};
use crate::config::Connection;
use crate::lifecycle::At;
use crate::lifecycle::WgDevices;
use crate::procs::ProcId;

/// How long a userspace implementation gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What native up makes its device from.
pub struct Devices<'a> {
    pub cfg: &'a WgConfig,
    pub endpoints: &'a [Option<SocketAddr>],
    /// The userspace program (`[wireguard] userspace`).
    pub program: &'a str,
}

fn ns_file(at: At<'_>) -> anyhow::Result<Option<File>> {
    Ok(match at {
        At::Host => None,
        At::Ns(n) => Some(crate::netns::open(n)?),
    })
}

/// Our child's identity; it has not been reaped, so its pid is still its own.
fn child_id(pid: u32) -> anyhow::Result<ProcId> {
    ProcId::of(pid).with_context(|| format!("process {pid} ended as it started"))
}

impl WgDevices for Devices<'_> {
    fn start_userspace(&self, conn: &Connection, iface: &str) -> anyhow::Result<ProcId> {
        device::ensure_log_dir()?;
        let us = device::start_userspace(
            self.program,
            iface,
            &device::log_path(&conn.name),
            conn.netns_timeout,
            &conn.name,
        )?;
        tracing::debug!(
            "{} (pid {}) serves {iface} at {}",
            self.program,
            us.child.id(),
            us.socket.display()
        );
        child_id(us.child.id())
    }
    fn configure_userspace(&self, conn: &Connection, iface: &str) -> anyhow::Result<()> {
        let req = uapi::set_request(self.cfg, self.endpoints);
        uapi::set(&uapi::socket_path(iface), &req, conn.netns_timeout)
            .with_context(|| format!("cannot configure {iface}"))
    }
    fn create_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            match kernel::create(iface, ns_file(at)?.as_ref()).await {
                Ok(()) => Ok(true),
                Err(kernel::KernelError::NoModule) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }
    fn configure_kernel(&self, at: At<'_>, iface: &str) -> anyhow::Result<()> {
        kernel::configure(iface, ns_file(at)?.as_ref(), self.cfg, self.endpoints)
            .with_context(|| format!("cannot configure {iface}"))
    }
    fn delete_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(delete_kernel(at, iface))
    }
    fn start_builtin(&self, conn: &Connection, at: At<'_>, iface: &str) -> anyhow::Result<ProcId> {
        device::ensure_log_dir()?;
        let netns = match at {
            At::Host => None,
            At::Ns(n) => Some(n),
        };
        let child = process::start(
            netns,
            &iface.parse()?,
            &uapi::set_request(self.cfg, self.endpoints),
            &device::log_path(&conn.name),
            conn.netns_timeout,
        )?;
        child_id(child.id())
    }
    fn stop_device(&self, id: ProcId, iface: &str) -> anyhow::Result<()> {
        stop_device(id, iface)
    }
}

async fn delete_kernel(at: At<'_>, iface: &str) -> anyhow::Result<()> {
    kernel::delete(iface, ns_file(at)?.as_ref())
        .await
        .with_context(|| format!("cannot delete {iface}"))
}

fn stop_device(id: ProcId, iface: &str) -> anyhow::Result<()> {
    device::stop_userspace(id, iface, STOP_TIMEOUT);
    // Reaps it when it is our child (the VM's PID 1 reaps no orphans).
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(id.pid as i32),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
    // Another program under a reused pid (a record without a start time) is not ours.
    if id.alive() && device::is_userspace_process(id.pid, iface) {
        anyhow::bail!("process {} serving {iface} did not exit", id.pid);
    }
    Ok(())
}

/// Down's WireGuard devices: a process stopped, a kernel link deleted. Down makes
/// nothing, so the steps of up refuse.
pub struct Teardown;

fn no_config() -> anyhow::Error {
    anyhow::anyhow!("down has no WireGuard configuration to make a device from")
}

impl WgDevices for Teardown {
    fn start_userspace(&self, _: &Connection, _: &str) -> anyhow::Result<ProcId> {
        Err(no_config())
    }
    fn configure_userspace(&self, _: &Connection, _: &str) -> anyhow::Result<()> {
        Err(no_config())
    }
    fn create_kernel<'a>(
        &'a self,
        _: At<'a>,
        _: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(std::future::ready(Err(no_config())))
    }
    fn configure_kernel(&self, _: At<'_>, _: &str) -> anyhow::Result<()> {
        Err(no_config())
    }
    fn delete_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(delete_kernel(at, iface))
    }
    fn start_builtin(&self, _: &Connection, _: At<'_>, _: &str) -> anyhow::Result<ProcId> {
        Err(no_config())
    }
    fn stop_device(&self, id: ProcId, iface: &str) -> anyhow::Result<()> {
        stop_device(id, iface)
    }
}
