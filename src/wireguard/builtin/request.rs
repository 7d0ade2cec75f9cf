//! The UAPI `set=1` request (the cross-platform WireGuard configuration protocol) parsed
//! into typed changes. The same text configures the data plane at start (over a pipe)
//! and later through the UAPI socket (`wg set`), so there is one parser for both.

use std::net::SocketAddr;

use super::BuiltinError;
use crate::spec::IpNet;
use crate::wireguard::key::Key;

/// What a `set=1` request asks of the device. Absent fields are left unchanged.
#[derive(Debug, Default)]
pub struct DeviceSet {
    pub private_key: Option<Key>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerSet>,
}

#[derive(Debug)]
pub struct PeerSet {
    pub public_key: Key,
    pub remove: bool,
    pub update_only: bool,
    /// `Some(None)`: remove the preshared key (the wire sends all zeros).
    pub preshared_key: Option<Option<Key>>,
    pub endpoint: Option<SocketAddr>,
    pub keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpNet>,
}

impl PeerSet {
    fn new(public_key: Key) -> PeerSet {
        PeerSet {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// A key name for an error: short identifiers only, so a line that carries a secret in
/// the wrong place is never echoed.
fn shown(key: &str) -> String {
    if key.len() <= 32 && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        format!("{key:?}")
    } else {
        "(not shown)".to_owned()
    }
}

/// Parses the lines after `set=1` up to the blank line (or the end). Errors name the
/// line but never echo a value (keys travel here).
pub fn parse(text: &str) -> Result<DeviceSet, BuiltinError> {
    let mut set = DeviceSet::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |msg: &str| BuiltinError::Request {
            line,
            msg: msg.to_owned(),
        };
        if raw.is_empty() {
            break;
        }
        let (key, value) = raw
            .split_once('=')
            .ok_or_else(|| err("expected key=value"))?;
        let bool_true = |what: &str| match value {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(err(&format!("{what} must be true or false"))),
        };
        if key == "set" && line == 1 {
            if value != "1" {
                return Err(err("expected set=1"));
            }
            continue;
        }
        if key == "public_key" {
            let k = Key::from_hex(value).ok_or_else(|| err("public_key is not 64 hex digits"))?;
            set.peers.push(PeerSet::new(k));
            continue;
        }
        match set.peers.last_mut() {
            None => match key {
                "private_key" => {
                    let k = Key::from_hex(value)
                        .ok_or_else(|| err("private_key is not 64 hex digits"))?;
                    set.private_key = Some(k);
                }
                "listen_port" => {
                    set.listen_port = Some(value.parse().map_err(|_| err("bad listen_port"))?)
                }
                "fwmark" => set.fwmark = Some(value.parse().map_err(|_| err("bad fwmark"))?),
                "replace_peers" => set.replace_peers = bool_true("replace_peers")?,
                _ => return Err(err(&format!("unknown device key {}", shown(key)))),
            },
            Some(p) => match key {
                "remove" => p.remove = bool_true("remove")?,
                "update_only" => p.update_only = bool_true("update_only")?,
                "preshared_key" => {
                    let k = Key::from_hex(value)
                        .ok_or_else(|| err("preshared_key is not 64 hex digits"))?;
                    p.preshared_key = Some((!k.is_zero()).then_some(k));
                }
                "endpoint" => p.endpoint = Some(value.parse().map_err(|_| err("bad endpoint"))?),
                "persistent_keepalive_interval" => {
                    p.keepalive = Some(
                        value
                            .parse()
                            .map_err(|_| err("bad persistent_keepalive_interval"))?,
                    )
                }
                "replace_allowed_ips" => p.replace_allowed_ips = bool_true("replace_allowed_ips")?,
                "allowed_ip" => {
                    let net: IpNet = value.parse().map_err(|_| err("bad allowed_ip"))?;
                    p.allowed_ips.push(net.network());
                }
                "protocol_version" => {
                    if value != "1" {
                        return Err(err("only protocol_version=1 is known"));
                    }
                }
                _ => return Err(err(&format!("unknown peer key {}", shown(key)))),
            },
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::{parse as wgparse, uapi};
    use std::path::Path;

    const K1: &str = "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669";
    const K2: &str = "c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038";

    #[test]
    fn parses_what_up_sends() {
        let text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                    ListenPort = 51820\n\
                    [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
                    PresharedKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                    AllowedIPs = 203.0.113.7/24, fd00::1/64\nPersistentKeepalive = 25\n";
        let cfg = wgparse::parse(Path::new("t.conf"), text).unwrap();
        let ep: SocketAddr = "[2001:db8::2]:51820".parse().unwrap();
        let set = parse(&uapi::set_request(&cfg, &[Some(ep)])).unwrap();
        assert_eq!(set.private_key.unwrap().to_hex(), K1);
        assert_eq!(set.listen_port, Some(51820));
        assert_eq!(set.fwmark, Some(0));
        assert!(set.replace_peers);
        let p = &set.peers[0];
        assert_eq!(p.public_key.to_hex(), K2);
        assert_eq!(p.endpoint, Some(ep));
        assert_eq!(p.keepalive, Some(25));
        assert!(p.replace_allowed_ips);
        assert!(matches!(&p.preshared_key, Some(Some(k)) if k.to_hex() == K1));
        let nets: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["203.0.113.0/24", "fd00::/64"]);
    }

    #[test]
    fn zero_psk_removes_and_flags_parse() {
        let zero = "0".repeat(64);
        let set = parse(&format!(
            "set=1\npublic_key={K2}\npreshared_key={zero}\nremove=true\nupdate_only=true\n\n"
        ))
        .unwrap();
        let p = &set.peers[0];
        assert!(matches!(p.preshared_key, Some(None)));
        assert!(p.remove && p.update_only);
        assert!(!set.replace_peers);
    }

    #[test]
    fn errors_name_the_line_not_the_value() {
        for (text, line) in [
            ("set=1\nprivate_key=zz\n", 2),
            ("set=1\nbogus=1\n", 2),
            ("set=1\npublic_key=".to_owned().leak() as &str, 2),
            ("set=1\nlisten_port=70000\n", 2),
            ("set=2\n", 1),
            ("set=1\nallowed_ip=10.0.0.0/8\n", 2),
            ("set=1\nreplace_peers=yes\n", 2),
            ("set=1\nnovalue\n", 2),
            ("set=1\nzz0123456789abcdef0123456789abcdef=1\n", 2),
        ] {
            match parse(text) {
                Err(BuiltinError::Request { line: l, msg }) => {
                    assert_eq!(l, line, "{text:?}: {msg}");
                    assert!(!msg.contains("zz"));
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
