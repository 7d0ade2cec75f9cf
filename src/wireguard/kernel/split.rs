//! `WG_CMD_SET_DEVICE` as typed messages (netlink-packet-wireguard), split the way
//! wg(8) does so that no message exceeds `MAX_MESSAGE`: the first carries the device
//! (private key, port, fwmark, REPLACE_PEERS) and as many peers as fit; later ones name
//! the device and continue with more peers, without REPLACE_PEERS; a peer whose
//! AllowedIPs do not fit continues in the next message as its public key and more
//! AllowedIPs, without REPLACE_ALLOWEDIPS (so the kernel adds to what it already got).

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{Emitable, Nla};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};

use crate::spec::IpNet;
use crate::wireguard::parse::WgConfig;

/// wg(8)'s buffer: MNL_SOCKET_BUFFER_SIZE, one 4 KiB page.
pub const MAX_MESSAGE: usize = 4096;
/// nlmsghdr + genlmsghdr.
const HEADERS: usize = 16 + 4;
/// A nested attribute's own header (the Peers list, one peer, its AllowedIPs list).
const NEST: usize = 4;

fn allowed_ip(net: &IpNet) -> WireguardAllowedIp {
    let net = net.network();
    let family = match net.addr() {
        IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
        IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.addr()),
        WireguardAllowedIpAttr::Cidr(net.prefix()),
    ])
}

fn attrs_len<T: Nla>(attrs: &[T]) -> usize {
    attrs.iter().map(|a| a.buffer_len()).sum()
}

/// One message under construction: device attributes, then peers (each a head of
/// attributes and its AllowedIPs).
struct Draft {
    device: Vec<WireguardAttribute>,
    peers: Vec<(Vec<WireguardPeerAttribute>, Vec<WireguardAllowedIp>)>,
    len: usize,
}

impl Draft {
    fn new(device: Vec<WireguardAttribute>) -> Draft {
        let len = HEADERS + attrs_len(&device);
        Draft {
            device,
            peers: Vec::new(),
            len,
        }
    }

    /// What adding a peer with `head` (and an AllowedIPs nest when `with_ips`) costs.
    fn peer_cost(&self, head: &[WireguardPeerAttribute], with_ips: bool) -> usize {
        let list = if self.peers.is_empty() { NEST } else { 0 };
        list + NEST + attrs_len(head) + if with_ips { NEST } else { 0 }
    }

    fn push_peer(&mut self, head: Vec<WireguardPeerAttribute>, with_ips: bool) {
        self.len += self.peer_cost(&head, with_ips);
        self.peers.push((head, Vec::new()));
    }

    fn push_ip(&mut self, ip: WireguardAllowedIp) {
        self.len += ip.buffer_len();
        self.peers
            .last_mut()
            .expect("an allowed IP follows its peer")
            .1
            .push(ip);
    }

    fn finish(self) -> WireguardMessage {
        let mut attributes = self.device;
        if !self.peers.is_empty() {
            let peers = self
                .peers
                .into_iter()
                .map(|(mut head, ips)| {
                    if !ips.is_empty() {
                        head.push(WireguardPeerAttribute::AllowedIps(ips));
                    }
                    WireguardPeer(head)
                })
                .collect();
            attributes.push(WireguardAttribute::Peers(peers));
        }
        WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes,
        }
    }
}

/// The messages that make the device `iface` match `cfg` exactly (`wg setconf`), each
/// at most `limit` bytes on the wire. `endpoints[i]` is peer i's resolved endpoint.
pub fn set_device(
    iface: &str,
    cfg: &WgConfig,
    endpoints: &[Option<SocketAddr>],
    limit: usize,
) -> Vec<WireguardMessage> {
    let i = &cfg.interface;
    let mut first = vec![
        WireguardAttribute::IfName(iface.to_owned()),
        WireguardAttribute::PrivateKey(*i.private_key.bytes()),
        WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
    ];
    if let Some(p) = i.listen_port {
        first.push(WireguardAttribute::ListenPort(p));
    }
    first.push(WireguardAttribute::Fwmark(i.fwmark.unwrap_or(0)));
    let continued = || vec![WireguardAttribute::IfName(iface.to_owned())];

    let mut done = Vec::new();
    let mut cur = Draft::new(first);
    for (n, p) in cfg.peers.iter().enumerate() {
        let mut head = vec![WireguardPeerAttribute::PublicKey(*p.public_key.bytes())];
        if let Some(psk) = &p.preshared_key {
            head.push(WireguardPeerAttribute::PresharedKey(*psk.bytes()));
        }
        head.push(WireguardPeerAttribute::Flags(
            WireguardPeerFlags::ReplaceAllowedIps,
        ));
        if let Some(Some(ep)) = endpoints.get(n) {
            head.push(WireguardPeerAttribute::Endpoint(*ep));
        }
        head.push(WireguardPeerAttribute::PersistentKeepalive(
            p.persistent_keepalive.unwrap_or(0),
        ));
        let ips: Vec<WireguardAllowedIp> = p.allowed_ips.iter().map(allowed_ip).collect();
        let first_ip = ips.first().map_or(0, |ip| ip.buffer_len());
        let has_ips = !ips.is_empty();
        // The peer starts where its head and first AllowedIP fit.
        if !cur.peers.is_empty() && cur.len + cur.peer_cost(&head, has_ips) + first_ip > limit {
            done.push(std::mem::replace(&mut cur, Draft::new(continued())).finish());
        }
        cur.push_peer(head, has_ips);
        for ip in ips {
            if cur.len + ip.buffer_len() > limit {
                done.push(std::mem::replace(&mut cur, Draft::new(continued())).finish());
                let key = vec![WireguardPeerAttribute::PublicKey(*p.public_key.bytes())];
                cur.push_peer(key, true);
            }
            cur.push_ip(ip);
        }
    }
    done.push(cur.finish());
    done
}

/// The wire size of `m` (headers included).
pub fn wire_len(m: &WireguardMessage) -> usize {
    HEADERS + m.buffer_len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::parse;
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::path::Path;

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_generic::GenlMessage;

    const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    fn key(n: usize) -> String {
        // Distinct valid keys: 32 bytes whose first two carry `n`, base64 of them.
        let mut b = [7u8; 32];
        b[0] = (n >> 8) as u8;
        b[1] = n as u8;
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let v = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..=c.len() {
                s.push(char::from(A[((v >> (18 - 6 * k)) & 63) as usize]));
            }
        }
        s.push('=');
        s
    }

    /// Serialises `m` as the transport does and parses it back with the crates.
    fn roundtrip(m: &WireguardMessage) -> (usize, WireguardMessage) {
        let mut genl = GenlMessage::from_payload(m.clone());
        genl.set_resolved_family_id(0x20);
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(genl));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        let back = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&buf).unwrap();
        match back.payload {
            NetlinkPayload::InnerMessage(g) => (buf.len(), g.payload),
            other => panic!("{other:?}"),
        }
    }

    /// Checks every message and returns, per peer key, its AllowedIPs in order.
    fn check(cfg: &WgConfig, msgs: &[WireguardMessage]) -> HashMap<[u8; 32], Vec<String>> {
        let mut seen: HashMap<[u8; 32], Vec<String>> = HashMap::new();
        let mut order: Vec<[u8; 32]> = Vec::new();
        for (n, m) in msgs.iter().enumerate() {
            let (len, back) = roundtrip(m);
            assert!(len <= MAX_MESSAGE, "message {n}: {len} bytes");
            assert_eq!(len, wire_len(m), "message {n}: computed size");
            assert_eq!(&back, m, "message {n} parses back");
            assert!(matches!(&back.attributes[0], WireguardAttribute::IfName(i) if i == "wg0"));
            let flags: Vec<_> = back
                .attributes
                .iter()
                .filter_map(|a| match a {
                    WireguardAttribute::Flags(f) => Some(*f),
                    _ => None,
                })
                .collect();
            let has_key = back
                .attributes
                .iter()
                .any(|a| matches!(a, WireguardAttribute::PrivateKey(_)));
            if n == 0 {
                assert_eq!(flags, [WireguardDeviceFlags::ReplacePeers]);
                assert!(has_key);
            } else {
                assert!(flags.is_empty(), "message {n}: REPLACE_PEERS again");
                assert!(!has_key, "message {n}: private key again");
            }
            for a in &back.attributes {
                let WireguardAttribute::Peers(peers) = a else {
                    continue;
                };
                for p in peers {
                    let pk = p
                        .iter()
                        .find_map(|a| match a {
                            WireguardPeerAttribute::PublicKey(k) => Some(*k),
                            _ => None,
                        })
                        .expect("every peer names its key");
                    let replace = p.iter().any(|a| {
                        matches!(a, WireguardPeerAttribute::Flags(f) if f.contains(WireguardPeerFlags::ReplaceAllowedIps))
                    });
                    let first_time = !seen.contains_key(&pk);
                    assert_eq!(
                        replace, first_time,
                        "message {n}: REPLACE_ALLOWEDIPS only on a peer's first part"
                    );
                    if first_time {
                        order.push(pk);
                    } else {
                        assert_eq!(
                            order.last(),
                            Some(&pk),
                            "a continued peer continues the last one"
                        );
                        assert_eq!(p.len(), 2, "a continuation is key + AllowedIPs only");
                    }
                    let ips = seen.entry(pk).or_default();
                    for a in p.iter() {
                        if let WireguardPeerAttribute::AllowedIps(list) = a {
                            for ip in list {
                                let addr = ip.iter().find_map(|x| match x {
                                    WireguardAllowedIpAttr::IpAddr(a) => Some(*a),
                                    _ => None,
                                });
                                let cidr = ip.iter().find_map(|x| match x {
                                    WireguardAllowedIpAttr::Cidr(c) => Some(*c),
                                    _ => None,
                                });
                                ips.push(format!("{}/{}", addr.unwrap(), cidr.unwrap()));
                            }
                        }
                    }
                }
            }
        }
        let want: Vec<[u8; 32]> = cfg.peers.iter().map(|p| *p.public_key.bytes()).collect();
        assert_eq!(order, want, "every peer once, in order");
        for p in &cfg.peers {
            let want: Vec<String> = p
                .allowed_ips
                .iter()
                .map(|n| n.network().to_string())
                .collect();
            assert_eq!(
                seen[p.public_key.bytes()],
                want,
                "every AllowedIP exactly once"
            );
        }
        seen
    }

    #[test]
    fn ten_thousand_allowed_ips_of_one_peer() {
        let mut text = format!(
            "[Interface]\nPrivateKey = {PRIV}\nListenPort = 51820\n[Peer]\nPublicKey = {}\nPresharedKey = {PRIV}\nEndpoint = 198.51.100.2:51820\n",
            key(1)
        );
        for i in 0..10_000u32 {
            if i % 3 == 0 {
                writeln!(text, "AllowedIPs = fd00:{:x}::/64", i).unwrap();
            } else {
                writeln!(text, "AllowedIPs = 10.{}.{}.0/24", i / 256, i % 256).unwrap();
            }
        }
        let cfg = parse::parse(Path::new("t.conf"), &text).unwrap();
        let ep: SocketAddr = "198.51.100.2:51820".parse().unwrap();
        let msgs = set_device("wg0", &cfg, &[Some(ep)], MAX_MESSAGE);
        assert!(msgs.len() > 50, "{} messages", msgs.len());
        let seen = check(&cfg, &msgs);
        assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 10_000);
    }

    #[test]
    fn a_thousand_peers() {
        let mut text = format!("[Interface]\nPrivateKey = {PRIV}\n");
        for n in 0..1000 {
            writeln!(
                text,
                "[Peer]\nPublicKey = {}\nAllowedIPs = 100.{}.{}.0/24, fd00:{n:x}::/48\nPersistentKeepalive = 25",
                key(n + 2),
                64 + n / 256,
                n % 256
            )
            .unwrap();
        }
        let cfg = parse::parse(Path::new("t.conf"), &text).unwrap();
        let msgs = set_device("wg0", &cfg, &vec![None; 1000], MAX_MESSAGE);
        assert!(msgs.len() > 10, "{} messages", msgs.len());
        check(&cfg, &msgs);
    }

    #[test]
    fn small_config_is_one_message_and_no_peers_still_replaces() {
        let text = format!(
            "[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {}\n",
            key(3)
        );
        let cfg = parse::parse(Path::new("t.conf"), &text).unwrap();
        let msgs = set_device("wg0", &cfg, &[None], MAX_MESSAGE);
        assert_eq!(msgs.len(), 1);
        check(&cfg, &msgs);
        let none = parse::parse(
            Path::new("t.conf"),
            &format!("[Interface]\nPrivateKey = {PRIV}\n"),
        )
        .unwrap();
        let msgs = set_device("wg0", &none, &[], MAX_MESSAGE);
        assert_eq!(msgs.len(), 1);
        check(&none, &msgs);
    }
}
