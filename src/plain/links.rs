//! Devices of plain connections: names and MAC addresses derived from the connection
//! name, the transfer network of a routed connection, and creating/deleting the
//! macvlan and veth links over rtnetlink.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{InfoData, InfoVeth, MacVlanMode};
use rtnetlink::{LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::config::MacvlanMode as Mode;
use crate::netlink::{Netlink, NetlinkError};
use crate::spec::IpNet;

/// The device name inside the namespace of a routed connection.
pub const ROUTED_INSIDE: &str = "eth0";

/// 100.64.0.0/10 (RFC 6598 shared address space), where derived transfer networks live.
const SHARED_BASE: u32 = 0x6440_0000;
const SHARED_BLOCKS_30: u32 = 1 << 20;
/// How many consecutive /30s to try after the hashed one before giving up.
const PROBES: u32 = 256;

/// FNV-1a: stable across builds and platforms, which std's hasher does not promise.
pub fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The host end of a routed connection's veth pair: `vns` + 8 hex digits (11 bytes,
/// under IFNAMSIZ whatever the connection's name).
pub fn host_veth_name(conn: &str) -> String {
    format!("vns{:08x}", fnv1a(conn))
}

/// A stable, locally administered unicast MAC for a connection's macvlan, so that a
/// DHCP server hands out the same lease again after down/up.
pub fn mac_for(conn: &str) -> [u8; 6] {
    let h = fnv1a(conn).to_be_bytes();
    let g = fnv1a(&format!("{conn}/mac")).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], g[0]]
}

/// True when the two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    if a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    let shorter = a.prefix().min(b.prefix());
    let cut = |n: &IpNet| IpNet::new(n.addr(), shorter).map(|x| x.network());
    matches!((cut(a), cut(b)), (Ok(x), Ok(y)) if x == y)
}

/// The transfer network for `conn`: the explicit one, or a /30 in 100.64.0.0/10 picked
/// by hashing the name and stepping past any that overlaps a network in `taken`
/// (the host's addresses and routes). `Err` says why none fits.
pub fn choose_transfer(
    conn: &str,
    explicit: Option<IpNet>,
    taken: &[IpNet],
) -> Result<IpNet, String> {
    if let Some(t) = explicit {
        return match taken.iter().find(|n| overlaps(&t, n)) {
            Some(n) => Err(format!(
                "transfer network {t} overlaps {n}, which the host already uses: choose another `transfer =` in [routed]"
            )),
            None => Ok(t),
        };
    }
    let start = fnv1a(conn) % SHARED_BLOCKS_30;
    (0..PROBES)
        .map(|i| {
            let block = (start + i) % SHARED_BLOCKS_30;
            let net = Ipv4Addr::from(SHARED_BASE + block * 4);
            IpNet::new(IpAddr::V4(net), 30).expect("/30 is valid")
        })
        .find(|t| !taken.iter().any(|n| overlaps(t, n)))
        .ok_or_else(|| {
            "no free /30 in 100.64.0.0/10 near the derived one: set `transfer =` in [routed]"
                .to_owned()
        })
}

/// The host (.1) and namespace (.2) addresses of a transfer network.
pub fn transfer_ends(t: &IpNet) -> (IpNet, IpNet) {
    let base = match t.network().addr() {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => unreachable!("transfer networks are IPv4 (checked in config)"),
    };
    let end = |n: u32| IpNet::new(IpAddr::V4(Ipv4Addr::from(base + n)), t.prefix()).expect("valid");
    (end(1), end(2))
}

fn mode(m: Mode) -> MacVlanMode {
    match m {
        Mode::Bridge => MacVlanMode::Bridge,
        Mode::Private => MacVlanMode::Private,
        Mode::Vepa => MacVlanMode::Vepa,
        Mode::Passthru => MacVlanMode::Passthrough,
    }
}

fn request(op: String) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |error| NetlinkError::Request {
        op,
        error: Box::new(error),
    }
}

/// Creates a macvlan of `parent_index` (a host device) directly inside `ns`.
pub async fn create_macvlan(
    host: &Netlink,
    name: &str,
    parent: (u32, &str),
    m: Mode,
    mac: [u8; 6],
    ns: &File,
) -> Result<(), NetlinkError> {
    let msg = LinkMacVlan::new(name, parent.0, mode(m))
        .address(mac.to_vec())
        .setns_by_fd(ns.as_raw_fd())
        .build();
    host.handle()
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(request(format!(
            "cannot create macvlan {name} on {}",
            parent.1
        )))
}

/// Creates a veth pair: `host_name` in the host namespace, `peer` inside `ns`.
pub async fn create_veth(
    host: &Netlink,
    host_name: &str,
    peer: &str,
    ns: &File,
) -> Result<(), NetlinkError> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_owned())
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let msg = LinkVeth::new(host_name, peer)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    host.handle()
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(request(format!(
            "cannot create veth pair {host_name}/{peer}"
        )))
}

/// Deletes a link by name; `Ok(false)` when there is none.
pub async fn delete_link(nl: &Netlink, name: &str) -> Result<bool, NetlinkError> {
    let Some(l) = nl.link(name).await? else {
        return Ok(false);
    };
    nl.handle()
        .link()
        .del(l.index)
        .execute()
        .await
        .map_err(request(format!("cannot delete {name}")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn names_and_macs_are_stable_and_valid() {
        assert_eq!(host_veth_name("work"), host_veth_name("work"));
        assert_ne!(host_veth_name("work"), host_veth_name("home"));
        assert_eq!(host_veth_name(&"x".repeat(64)).len(), 11);
        let mac = mac_for("work");
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(mac, mac_for("home"));
        // FNV-1a reference values.
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
    }

    #[test]
    fn overlap() {
        assert!(overlaps(&net("100.64.0.0/10"), &net("100.64.77.0/30")));
        assert!(overlaps(&net("100.64.77.0/30"), &net("100.64.77.2/32")));
        assert!(!overlaps(&net("100.64.77.0/30"), &net("100.64.77.4/30")));
        assert!(overlaps(&net("0.0.0.0/0"), &net("192.0.2.0/24")));
        assert!(!overlaps(&net("fd00::/8"), &net("100.64.0.0/10")));
    }

    #[test]
    fn derived_transfer_is_in_shared_space_and_avoids_taken() {
        let t = choose_transfer("work", None, &[]).unwrap();
        assert_eq!(t.prefix(), 30);
        assert!(overlaps(&t, &net("100.64.0.0/10")));
        assert_eq!(t, choose_transfer("work", None, &[]).unwrap());
        let next = choose_transfer("work", None, &[t]).unwrap();
        assert_ne!(next, t);
        assert!(!overlaps(&next, &t));
        // A host using all of 100.64.0.0/10 (e.g. Tailscale) leaves nothing to derive.
        let err = choose_transfer("work", None, &[net("100.64.0.0/10")]).unwrap_err();
        assert!(err.contains("set `transfer =`"), "{err}");
    }

    #[test]
    fn explicit_transfer_is_checked_not_moved() {
        let t = net("100.64.77.0/30");
        assert_eq!(choose_transfer("w", Some(t), &[net("192.0.2.0/24")]), Ok(t));
        let err = choose_transfer("w", Some(t), &[net("100.64.77.1/32")]).unwrap_err();
        assert!(err.contains("overlaps 100.64.77.1/32"), "{err}");
        let (h, i) = transfer_ends(&t);
        assert_eq!(
            (h.to_string().as_str(), i.to_string().as_str()),
            ("100.64.77.1/30", "100.64.77.2/30")
        );
    }
}
