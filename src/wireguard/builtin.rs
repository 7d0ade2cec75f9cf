//! The built-in userspace data plane (`backend = "builtin"`): a tun device created
//! inside the connection's namespace (born there, never moved), a UDP socket in the host
//! namespace, and the WireGuard protocol run by boringtun's `noise::Tunn` (no
//! cryptography of ours). A host process drives it through [`Plane`]: `Plane::start`
//! (tun, device, UAPI socket, threads), then it polls `Plane::ended_fd` with its own
//! events and calls `Plane::stop`. The UAPI socket (`/run/wireguard/<iface>.sock`,
//! root only) serves `get=1`/`set=1`, so `wg show` and `vpn-ns status` read its peers.
//!
//! Today the host process is the hidden `vpn-ns wg-builtin` subcommand started by
//! `vpn-ns up` ([`process`]); the per-connection keeper will host the same `Plane`.

pub mod allowed;
pub mod device;
pub mod plane;
pub mod process;
pub mod request;
pub mod server;
pub mod tun;

use std::io;
use std::path::PathBuf;

pub use device::Device;
pub use plane::Plane;

#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error("line {line} of the configuration: {msg}")]
    Request { line: usize, msg: String },
    #[error("{op} {what}: {source}")]
    Io {
        op: &'static str,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter namespace {ns} to create {iface}: {source}")]
    Netns {
        ns: String,
        iface: String,
        #[source]
        source: crate::netns::NetnsError,
    },
    #[error("the built-in WireGuard for {iface} exited before it was ready ({status}); see {}", .log.display())]
    Exited {
        iface: String,
        status: String,
        log: PathBuf,
    },
    #[error("the built-in WireGuard for {iface} was not ready within {} ms (netns-timeout); see {}", .timeout.as_millis(), .log.display())]
    Timeout {
        iface: String,
        timeout: std::time::Duration,
        log: PathBuf,
    },
}

impl BuiltinError {
    fn io(op: &'static str, what: impl Into<String>) -> impl FnOnce(io::Error) -> BuiltinError {
        let what = what.into();
        move |source| BuiltinError::Io { op, what, source }
    }
}
