//! What `status` and `list` report: the model that `status` fills in (from records,
//! config and probes), `status_view` renders for humans and serde for `--json`
//! (docs/status-json.md; field names are a stable interface).

use std::net::IpAddr;

use serde::Serialize;

use crate::config::ConnectionType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    Up,
    Down,
    /// Recorded as up, but the namespace, the VPN process or the device is gone.
    Stale,
    /// A persistent namespace kept (with its processes) while the VPN is down.
    Kept,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Up => "up",
            StateKind::Down => "down",
            StateKind::Stale => "stale",
            StateKind::Kept => "kept",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub connections: Vec<ConnStatus>,
}

#[derive(Debug, Serialize)]
pub struct ConnStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<ConnectionType>,
    /// The connection file's `uuid` (what `netns-name = "uuid"` names the namespace after).
    pub uuid: Option<String>,
    pub state: StateKind,
    pub stale_reason: Option<String>,
    pub netns: Option<String>,
    pub netns_exists: bool,
    pub device: Option<String>,
    /// `None`: unknown (the namespace could not be read, e.g. without root).
    pub device_present: Option<bool>,
    pub mtu: Option<u32>,
    pub addresses: Vec<AddrOut>,
    pub routes: Vec<RouteOut>,
    pub dns: DnsOut,
    pub processes: Vec<ProcOut>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub up_since: Option<String>,
    /// `up_since` as unix seconds, for "5m ago" in the human output.
    #[serde(skip)]
    pub since: Option<u64>,
    pub vpn_pid: Option<u32>,
    pub persistent: bool,
    pub isolated: bool,
    /// WireGuard connections brought up by vpn-ns or wg-quick: one entry per peer;
    /// null for other types, or when the device could not be read.
    pub wireguard_peers: Option<Vec<PeerOut>>,
    /// The connection's keeper; `None` when the record names none (down, kept).
    pub keeper: Option<KeeperOut>,
    /// Why a kept namespace has no VPN: the keeper took the connection down.
    pub vpn_gone: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerOut {
    pub public_key: String,
    pub endpoint: Option<String>,
    /// RFC 3339; null: no handshake ever completed.
    pub latest_handshake: Option<String>,
    /// Seconds since the latest handshake; null: never.
    pub latest_handshake_age: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
}

/// The keeper of an up connection, as `status` sees it.
#[derive(Debug, Serialize)]
pub struct KeeperOut {
    pub pid: u32,
    /// False: the keeper is gone and the connection is unattended (it still works;
    /// `vpn-ns up CONN` starts a new keeper).
    pub running: bool,
    pub rss_kib: Option<u64>,
    /// What it watches, as it says itself over its control socket.
    pub watching: Vec<String>,
    /// DHCP: when the lease expires (RFC 3339), and whether it has.
    pub lease_expires: Option<String>,
    pub lease_expired: bool,
    /// Ports it relays across the namespace boundary, with live connection counts.
    pub published: Vec<crate::publish::RelayStatus>,
}

#[derive(Debug, Serialize)]
pub struct AddrOut {
    pub local: String,
    pub peer: Option<IpAddr>,
}

#[derive(Debug, Serialize)]
pub struct RouteOut {
    pub dest: String,
    pub gateway: Option<IpAddr>,
    pub metric: Option<u32>,
    pub dev: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct DnsOut {
    pub servers: Vec<String>,
    pub search: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcOut {
    pub pid: u32,
    pub user: String,
    pub command: String,
}
