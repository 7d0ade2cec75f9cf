//! Per-peer status of a running WireGuard device (latest handshake, bytes, endpoint),
//! for `status` and `verify`: over the UAPI socket (`get=1`) for userspace devices (the
//! built-in data plane, wireguard-go), over generic netlink (`WG_CMD_GET_DEVICE`) for
//! the kernel's.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use netlink_packet_wireguard::{
    WireguardAllowedIpAttr, WireguardAttribute, WireguardMessage, WireguardPeerAttribute,
};
use serde::Serialize;

use super::key::Key;
use super::{kernel, uapi};

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error(transparent)]
    Uapi(#[from] uapi::UapiError),
    #[error("{} answered get=1 with errno {errno}", .path.display())]
    Refused { path: PathBuf, errno: i32 },
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// base64, as `wg show` prints it.
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Unix seconds of the latest completed handshake; None: never.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
}

impl PeerInfo {
    fn new(public_key: String) -> PeerInfo {
        PeerInfo {
            public_key,
            endpoint: None,
            latest_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            allowed_ips: Vec::new(),
            persistent_keepalive: 0,
        }
    }
}

/// Parses a `get=1` answer. Unknown keys are skipped (implementations add some);
/// private and preshared keys are never kept.
pub fn parse_uapi_get(text: &str) -> Vec<PeerInfo> {
    let mut peers: Vec<PeerInfo> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k == "public_key" {
            let shown = Key::from_hex(v).map_or_else(|| v.to_owned(), |k| k.to_base64());
            peers.push(PeerInfo::new(shown));
            continue;
        }
        let Some(p) = peers.last_mut() else {
            continue;
        };
        match k {
            "endpoint" => p.endpoint = Some(v.to_owned()),
            "last_handshake_time_sec" => {
                p.latest_handshake = v.parse().ok().filter(|s: &u64| *s != 0)
            }
            "rx_bytes" => p.rx_bytes = v.parse().unwrap_or(0),
            "tx_bytes" => p.tx_bytes = v.parse().unwrap_or(0),
            "persistent_keepalive_interval" => p.persistent_keepalive = v.parse().unwrap_or(0),
            "allowed_ip" => p.allowed_ips.push(v.to_owned()),
            _ => {}
        }
    }
    peers
}

/// The peers of a `WG_CMD_GET_DEVICE` dump (a device with many peers comes in several
/// messages, a peer's AllowedIPs possibly split across them).
pub fn from_kernel(msgs: &[WireguardMessage]) -> Vec<PeerInfo> {
    let mut peers: Vec<PeerInfo> = Vec::new();
    for a in msgs.iter().flat_map(|m| &m.attributes) {
        let WireguardAttribute::Peers(list) = a else {
            continue;
        };
        for p in list {
            let key = p.iter().find_map(|a| match a {
                WireguardPeerAttribute::PublicKey(k) => Some(Key::from_bytes(*k).to_base64()),
                _ => None,
            });
            let Some(key) = key else { continue };
            if peers.last().is_none_or(|l| l.public_key != key) {
                peers.push(PeerInfo::new(key));
            }
            let info = peers.last_mut().expect("just pushed");
            for a in p.iter() {
                match a {
                    WireguardPeerAttribute::Endpoint(e) => info.endpoint = Some(e.to_string()),
                    WireguardPeerAttribute::LastHandshake(t) => {
                        info.latest_handshake = u64::try_from(t.seconds).ok().filter(|s| *s != 0);
                    }
                    WireguardPeerAttribute::RxBytes(n) => info.rx_bytes = *n,
                    WireguardPeerAttribute::TxBytes(n) => info.tx_bytes = *n,
                    WireguardPeerAttribute::PersistentKeepalive(n) => {
                        info.persistent_keepalive = *n
                    }
                    WireguardPeerAttribute::AllowedIps(ips) => {
                        for ip in ips {
                            let addr = ip.iter().find_map(|x| match x {
                                WireguardAllowedIpAttr::IpAddr(a) => Some(*a),
                                _ => None,
                            });
                            let cidr = ip.iter().find_map(|x| match x {
                                WireguardAllowedIpAttr::Cidr(c) => Some(*c),
                                _ => None,
                            });
                            if let (Some(a), Some(c)) = (addr, cidr) {
                                info.allowed_ips.push(format!("{a}/{c}"));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    peers
}

/// The peers of device `dev`: over its UAPI socket when it has one, else from the
/// kernel (the generic-netlink socket opened in `ns`, the device's namespace).
pub fn read(dev: &str, ns: Option<&File>, timeout: Duration) -> Result<Vec<PeerInfo>, PeersError> {
    let sock = uapi::socket_path(dev);
    if sock.exists() {
        let answer = uapi::transact(&sock, "get=1\n\n", timeout)?;
        return match uapi::response_errno(&answer) {
            Some(0) | None => Ok(parse_uapi_get(&answer)),
            Some(errno) => Err(PeersError::Refused { path: sock, errno }),
        };
    }
    Ok(from_kernel(&kernel::get_device(dev, ns)?))
}

/// Whether a peer is one we must have reached: it has an endpoint to send to (a peer
/// without one can only be reached by it, so its silence proves nothing about us).
fn expected(p: &PeerInfo) -> bool {
    p.endpoint.is_some()
}

/// True while some expected peer has no handshake yet: worth reading again before the
/// deadline.
pub fn waiting(peers: &[PeerInfo]) -> bool {
    peers
        .iter()
        .any(|p| expected(p) && p.latest_handshake.is_none())
}

/// The `handshake` check of `vpn-ns verify`: every peer with an endpoint completed a
/// handshake (`up_for` is how long the connection has been up, `timeout` its
/// netns-timeout, which bounds how long verify waited for one).
pub fn handshake_check(
    peers: Result<&[PeerInfo], String>,
    now: u64,
    up_for: Duration,
    timeout: Duration,
) -> crate::verify::CheckResult {
    let result = |ok, detail: String| crate::verify::CheckResult {
        name: crate::verify::HANDSHAKE,
        ok,
        detail,
    };
    let peers = match peers {
        Ok(p) => p,
        Err(e) => return result(false, format!("cannot read the peers: {e}")),
    };
    if peers.is_empty() {
        return result(false, "the device has no peers".to_owned());
    }
    let silent: Vec<String> = peers
        .iter()
        .filter(|p| expected(p) && p.latest_handshake.is_none())
        .map(|p| {
            format!(
                "{} ({})",
                p.public_key,
                p.endpoint.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if !silent.is_empty() {
        return result(
            false,
            format!(
                "no handshake {} s after up (netns-timeout {} s) with: {}",
                up_for.as_secs(),
                timeout.as_secs(),
                silent.join(", ")
            ),
        );
    }
    let newest = peers
        .iter()
        .filter_map(|p| p.latest_handshake)
        .max()
        .map(|t| format!(", latest {} s ago", now.saturating_sub(t)))
        .unwrap_or_default();
    let passive = peers.iter().filter(|p| !expected(p)).count();
    let note = match passive {
        0 => String::new(),
        n => format!("; {n} peer(s) without an endpoint not counted"),
    };
    result(
        true,
        format!("every peer with an endpoint completed a handshake{newest}{note}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(endpoint: Option<&str>, hs: Option<u64>) -> PeerInfo {
        PeerInfo {
            endpoint: endpoint.map(str::to_owned),
            latest_handshake: hs,
            ..PeerInfo::new(PUB.to_owned())
        }
    }

    #[test]
    fn handshake_check_decisions() {
        let t = Duration::from_secs(10);
        let ok = [
            info(Some("198.51.100.2:51820"), Some(995)),
            info(None, None),
        ];
        let r = handshake_check(Ok(&ok), 1000, Duration::from_secs(30), t);
        assert!(r.ok, "{r:?}");
        assert!(r.detail.contains("latest 5 s ago") && r.detail.contains("1 peer(s) without"));
        assert!(!waiting(&ok));

        let silent = [info(Some("198.51.100.2:51820"), None)];
        assert!(waiting(&silent));
        let r = handshake_check(Ok(&silent), 1000, Duration::from_secs(12), t);
        assert!(!r.ok);
        assert_eq!(r.name, "handshake");
        assert!(
            r.detail.contains("no handshake 12 s after up") && r.detail.contains(PUB),
            "{}",
            r.detail
        );

        assert!(!handshake_check(Ok(&[]), 0, t, t).ok);
        let r = handshake_check(Err("socket gone".into()), 0, t, t);
        assert!(!r.ok && r.detail.contains("socket gone"));
    }
    use netlink_packet_wireguard::{
        WireguardAddressFamily, WireguardAllowedIp, WireguardCmd, WireguardPeer, WireguardTimeSpec,
    };

    const PUB_HEX: &str = "c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038";
    const PUB: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn uapi_answer() {
        let text = format!(
            "private_key=00\nlisten_port=51820\npublic_key={PUB_HEX}\npreshared_key=11\n\
             protocol_version=1\nendpoint=[2001:db8::1]:51820\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\n\
             allowed_ip=10.0.0.0/8\nallowed_ip=fd00::/64\n\
             public_key={PUB_HEX}\nlast_handshake_time_sec=0\nerrno=0\n"
        );
        let p = parse_uapi_get(&text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].public_key, PUB);
        assert_eq!(p[0].endpoint.as_deref(), Some("[2001:db8::1]:51820"));
        assert_eq!(p[0].latest_handshake, Some(1_700_000_000));
        assert_eq!((p[0].rx_bytes, p[0].tx_bytes), (20, 10));
        assert_eq!(p[0].allowed_ips, ["10.0.0.0/8", "fd00::/64"]);
        assert_eq!(p[0].persistent_keepalive, 25);
        assert_eq!(p[1].latest_handshake, None, "0 means never");
        assert_eq!(p[1].endpoint, None);
    }

    #[test]
    fn kernel_dump_with_a_peer_split_across_messages() {
        let key = *Key::from_hex(PUB_HEX).unwrap().bytes();
        let ip = |a: &str, c| {
            WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                WireguardAllowedIpAttr::IpAddr(a.parse().unwrap()),
                WireguardAllowedIpAttr::Cidr(c),
            ])
        };
        let first = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(key),
                WireguardPeerAttribute::Endpoint("198.51.100.2:51820".parse().unwrap()),
                WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                    seconds: 1_700_000_000,
                    nano_seconds: 0,
                }),
                WireguardPeerAttribute::RxBytes(7),
                WireguardPeerAttribute::TxBytes(8),
                WireguardPeerAttribute::AllowedIps(vec![ip("10.0.0.0", 8)]),
            ])])],
        };
        let second = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(key),
                WireguardPeerAttribute::AllowedIps(vec![ip("192.0.2.0", 24)]),
            ])])],
        };
        let p = from_kernel(&[first, second]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].public_key, PUB);
        assert_eq!(p[0].latest_handshake, Some(1_700_000_000));
        assert_eq!(p[0].allowed_ips, ["10.0.0.0/8", "192.0.2.0/24"]);
        assert_eq!(p[0].endpoint.as_deref(), Some("198.51.100.2:51820"));
    }
}
