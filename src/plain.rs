//! Connections with a direct uplink and no VPN: `type = "macvlan"` (a macvlan clone of
//! a LAN device, its own host on the LAN, static or DHCP) and `type = "routed"` (a veth
//! pair to the host, masqueraded out of an uplink): the system-edge parts, below the
//! lifecycle. Their up and down are the lifecycle engine's, with the kind's steps in
//! `lifecycle/plain.rs`.
//!
//! What down needs beyond the common state (host veth, transfer network, lease) is kept
//! in `/run/vpn-ns/<conn>.plain`, written atomically like the state record.

pub mod dhcp;
pub(crate) mod forwarding;
pub mod lease;
pub(crate) mod links;
pub(crate) mod nft;

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::{Connection, Kind};
use crate::netns;
use crate::spec::IpNet;
use crate::state::{self, Origin, State, StateError};

pub use dhcp::Lease;

/// How long a DHCP exchange may take in all (requests are resent every 2 s).
const DHCP_TIMEOUT: Duration = Duration::from_secs(10);

/// What down needs to find again, beyond the common state record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The device inside the namespace.
    pub inside: String,
    /// Routed: the host end of the veth pair, the transfer network, the uplink.
    pub host_veth: Option<String>,
    pub transfer: Option<IpNet>,
    pub uplink: Option<String>,
    /// Routed: whether this connection holds a claim on net.ipv4.ip_forward.
    pub forwarding: bool,
    /// Macvlan with DHCP: the lease, and when it was obtained (Unix time).
    pub lease: Option<Lease>,
    pub lease_obtained: Option<u64>,
    /// The keeper removed the address when the lease ran out or the server refused it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease_expired: bool,
}

fn record_path(conn: &str) -> PathBuf {
    state::run_dir().join(format!("{conn}.plain"))
}

pub fn load_record(conn: &str) -> Result<Option<Record>, StateError> {
    let p = record_path(conn);
    match state::read_record(&p)? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path: p, source }),
        None => Ok(None),
    }
}

pub(crate) fn save_record(conn: &str, r: &Record) -> Result<(), StateError> {
    let body = serde_json::to_vec_pretty(r).expect("record serializes");
    state::write_atomic(&record_path(conn), &body)
}

pub(crate) fn remove_record(conn: &str) -> Result<(), StateError> {
    state::remove_file(&record_path(conn))
}

/// For `verify`/`status`: says that a plain connection's namespace has a direct uplink,
/// not a tunnel, and which. `None` for other connections.
pub fn uplink_note(st: &State) -> Option<String> {
    let rec = load_record(&st.connection).ok().flatten();
    let dev = st.device.as_deref().unwrap_or("?");
    match st.origin {
        Origin::Macvlan => Some(format!(
            "a direct uplink, not a tunnel: {dev} is a macvlan on the host's LAN{}",
            match rec.and_then(|r| r.lease) {
                Some(l) => format!(" (DHCP lease from {})", l.server),
                None => String::new(),
            }
        )),
        Origin::Routed => Some(match rec {
            Some(Record {
                transfer: Some(t),
                uplink: Some(u),
                ..
            }) => format!(
                "a direct uplink, not a tunnel: {dev} is routed through the host (transfer {t}), masqueraded out of {u}"
            ),
            _ => format!("a direct uplink, not a tunnel: {dev} is routed through the host"),
        }),
        _ => None,
    }
}

/// For `check`: the host device a macvlan or routed connection needs, if it is missing
/// from the calling thread's namespace (the host's, for the main thread).
pub fn host_device_problem(conn: &Connection) -> Option<String> {
    let (what, dev) = match &conn.kind {
        Kind::Macvlan(m) => ("parent", m.parent.as_str()),
        Kind::Routed(r) => ("uplink", r.uplink.as_str()),
        _ => return None,
    };
    match nix::net::if_::if_nametoindex(dev) {
        Ok(_) => None,
        Err(_) => Some(format!(
            "{what} device {dev} does not exist in the host namespace (`ip link` lists the devices)"
        )),
    }
}

/// True for the connection types this module brings up.
pub fn handles(kind: &Kind) -> bool {
    matches!(kind, Kind::Macvlan(_) | Kind::Routed(_))
}

/// A DHCP exchange on `dev` inside `ns_file`, with the connection's MAC address.
pub(crate) fn run_dhcp(ns_file: &File, dev: &str, conn: &str) -> anyhow::Result<Lease> {
    let mac = links::mac_for(conn);
    let dev_owned = dev.to_owned();
    // A fresh transaction id per run: a reply to an earlier run must not be taken.
    let xid = links::fnv1a(&format!("{conn}/{:?}", std::time::SystemTime::now()));
    let lease = netns::run_in(ns_file, move || {
        dhcp::acquire(&dev_owned, mac, xid, DHCP_TIMEOUT)
    })?
    .with_context(|| format!("DHCP on {dev} failed"))?;
    tracing::info!(
        "DHCP: {}/{} from {} (lease {})",
        lease.address,
        lease.prefix,
        lease.server,
        lease
            .lease_secs
            .map_or("infinite".to_owned(), |s| format!("{s} s"))
    );
    Ok(lease)
}
