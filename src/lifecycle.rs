//! The one lifecycle engine: up and down of every connection kind, over the system
//! edges of `edges.rs`. Up records every change in a `Journal` (journal.rs); if a later
//! step fails, the journal is replayed backwards so the system is left as it was before
//! the call. Down (down.rs) undoes what the record says, going on past failures.
//!
//! What differs between kinds is how the device comes to be in the namespace
//! (`Device`): a VPN's device waited for in the host and moved in, WireGuard's devices
//! that native up makes (wg.rs), or the uplink kinds' macvlan/veth (plain.rs).

use std::net::IpAddr;

use crate::config::Connection;
use crate::dns;
use crate::netlink::NetlinkError;
use crate::netns::NetnsError;
use crate::plain::nft::NftError;
use crate::procs::ProcId;
use crate::spec::{DnsSpec, IpNet, NetnsName, NetworkSpec, Route};
use crate::state::{Origin, StateError};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot create namespace \"{ns}\"")]
    CreateNetns {
        ns: NetnsName,
        #[source]
        source: NetnsError,
    },
    #[error("cannot open namespace \"{ns}\"")]
    OpenNetns {
        ns: NetnsName,
        #[source]
        source: NetnsError,
    },
    #[error("cannot delete namespace \"{ns}\"")]
    DeleteNetns {
        ns: NetnsName,
        #[source]
        source: NetnsError,
    },
    #[error("{device} did not appear in the host namespace within {} ms (netns-timeout); is the VPN running and is `dev` right?", .timeout_ms)]
    DeviceMissing { device: String, timeout_ms: u128 },
    #[error(
        "{device} is an OpenVPN data-channel-offload device ({kind}), which cannot work after a move to another namespace: add `disable-dco` to the OpenVPN config"
    )]
    Dco { device: String, kind: String },
    #[error("cannot move {device} into namespace \"{ns}\"")]
    Move {
        device: String,
        ns: NetnsName,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot configure {device} in namespace \"{ns}\"")]
    Configure {
        device: String,
        ns: String,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot create {device} in namespace \"{ns}\"")]
    MakeDevice {
        device: String,
        ns: String,
        #[source]
        source: anyhow::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A WireGuard device or the process serving it (the errors live above this layer).
    #[error(transparent)]
    WireGuard(anyhow::Error),
    #[error("cannot write DNS files for namespace \"{ns}\"")]
    Dns {
        ns: NetnsName,
        #[source]
        source: dns::DnsError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    /// The keeper or its relays could not start (their errors live above this layer).
    #[error(transparent)]
    Keeper(SupervisorError),
    /// Host plumbing of an uplink kind: IP forwarding, DHCP.
    #[error(transparent)]
    Uplink(anyhow::Error),
    #[error("cannot set up NAT of {transfer} out of {uplink}")]
    Nat {
        transfer: IpNet,
        uplink: String,
        #[source]
        source: NftError,
    },
    #[error("cannot remove the NAT table")]
    NatDelete {
        #[source]
        source: NftError,
    },
    /// A precondition of the connection's kind that does not hold.
    #[error("{0}")]
    Refused(String),
    /// Several steps of a teardown failed.
    #[error("{0}")]
    Errors(ErrorList),
    /// Up failed, and undoing it failed too: what is left is still recorded.
    #[error(
        "{error}; the rollback was incomplete (the record keeps what is left for `vpn-ns down`): {left}"
    )]
    RollbackIncomplete {
        error: Box<LifecycleError>,
        left: ErrorList,
    },
    #[error(
        "connection {conn} is recorded with namespace \"{recorded}\", which vpn-ns created and which still exists, not \"{ns}\" (netns-name changed?): run `vpn-ns down {conn}` first"
    )]
    OtherNetns {
        conn: String,
        recorded: NetnsName,
        ns: NetnsName,
    },
}

/// What a successful up did, for the one-line report.
#[derive(Debug)]
pub struct UpReport {
    pub netns: Option<NetnsName>,
    pub device: String,
    pub addresses: usize,
    pub routes: usize,
    pub dns_servers: usize,
    pub reused: bool,
    /// The process serving the device, when up started one (WireGuard).
    pub vpn: Option<ProcId>,
}

impl UpReport {
    /// The one line every up prints (OpenVPN captures it in its log).
    pub fn log(&self, conn_name: &str) {
        match &self.netns {
            Some(ns) => tracing::info!(
                "{conn_name}: {} in namespace {ns}{}: {} address(es), {} route(s), {} DNS server(s)",
                self.device,
                if self.reused { " (reused)" } else { "" },
                self.addresses,
                self.routes,
                self.dns_servers
            ),
            None => tracing::info!(
                "{conn_name}: {} configured in the host namespace (netns-isolate = false)",
                self.device
            ),
        }
    }
}

/// The DNS the namespace gets: `[dns]` replaces what the VPN pushed, key by key.
pub fn effective_dns(conn: &Connection, pushed: &DnsSpec) -> DnsSpec {
    DnsSpec {
        servers: conn
            .dns
            .servers
            .clone()
            .unwrap_or_else(|| pushed.servers.clone()),
        search: conn
            .dns
            .search
            .clone()
            .unwrap_or_else(|| pushed.search.clone()),
    }
}

/// The routes to install inside the namespace: pushed ones, plus default routes when
/// `default-route` is on (one per address family that has an address, so a family
/// without a tunnel address has no route at all and fails closed).
pub fn routes_for(spec: &NetworkSpec, default_route: bool) -> Vec<Route> {
    let mut routes: Vec<Route> = spec.routes.clone();
    if default_route {
        if spec.addresses.iter().any(|a| a.local.is_ipv4()) {
            routes.push(Route {
                dest: IpNet::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0).expect("/0"),
                gateway: spec.gateway_v4.map(IpAddr::V4),
                metric: None,
            });
        }
        if spec.addresses.iter().any(|a| !a.local.is_ipv4()) {
            routes.push(Route {
                dest: IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0).expect("/0"),
                gateway: None,
                metric: None,
            });
        }
    }
    routes
}

/// Brings `conn` up with `spec`: waits for the VPN's device in the host namespace and
/// moves it in. The caller holds the connection's lock.
pub async fn up<E: Edges>(
    e: &E,
    conn: &Connection,
    spec: &NetworkSpec,
    origin: Origin,
    vpn: Option<ProcId>,
) -> Result<UpReport, LifecycleError> {
    Ok(up::run(e, conn, spec, origin, vpn, Device::Move)
        .await?
        .report)
}

mod down;
pub mod edges;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod fake_wg;
mod handback;
pub mod journal;
mod plain;
mod up;
mod wg;

pub use down::{DownReport, Handback, down, down_with};
pub use edges::{At, Edges, Supervisor, SupervisorError, System, WgDevices};
pub use handback::restore_adopted;
pub use journal::ErrorList;
pub use plain::{PlainUpReport, up_plain};
use up::Device;
pub use wg::up_wireguard;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_down;
#[cfg(test)]
mod tests_rollback;
#[cfg(test)]
mod tests_wg;
#[cfg(test)]
mod tests_wg_down;
