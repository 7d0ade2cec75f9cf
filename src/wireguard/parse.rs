//! The wg-quick file format: `[Interface]` and `[Peer]` sections of `Key = Value`
//! lines, keys and section names case-insensitive, `#` starting a comment, list values
//! comma-separated and list keys repeatable. Errors name the file and line and never
//! echo a key.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::key::Key;
use crate::spec::{DnsSpec, DomainName, IpNet};

#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {msg}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

/// A parsed wg-quick file.
#[derive(Debug)]
pub struct WgConfig {
    pub path: PathBuf,
    pub interface: Interface,
    pub peers: Vec<Peer>,
}

#[derive(Debug)]
pub struct Interface {
    pub private_key: Key,
    pub addresses: Vec<IpNet>,
    /// `DNS =`: IP addresses are servers, anything else a search domain.
    pub dns: DnsSpec,
    pub mtu: Option<u32>,
    pub listen_port: Option<u16>,
    /// `None` for absent, `0` or `off`.
    pub fwmark: Option<u32>,
    pub table: Option<String>,
    /// wg-quick-only keys present (PreUp, PostDown, SaveConfig, ...) with their lines;
    /// the native path ignores them and says so.
    pub wg_quick_only: Vec<(String, usize)>,
}

#[derive(Debug)]
pub struct Peer {
    /// Line of the `[Peer]` header.
    pub line: usize,
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<Endpoint>,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<u16>,
}

/// `host:port` or `[v6]:port` as written; resolved later, in the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub line: usize,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub fn load(path: &Path) -> Result<WgConfig, WgError> {
    let text = std::fs::read_to_string(path).map_err(|source| WgError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

#[derive(Default)]
struct RawInterface {
    line: usize,
    private_key: Option<(Key, usize)>,
    addresses: Vec<IpNet>,
    dns: DnsSpec,
    mtu: Option<(u32, usize)>,
    listen_port: Option<(u16, usize)>,
    fwmark: Option<(Option<u32>, usize)>,
    table: Option<(String, usize)>,
    wg_quick_only: Vec<(String, usize)>,
}

#[derive(Default)]
struct RawPeer {
    line: usize,
    public_key: Option<(Key, usize)>,
    preshared_key: Option<(Key, usize)>,
    endpoint: Option<(Endpoint, usize)>,
    allowed_ips: Vec<IpNet>,
    persistent_keepalive: Option<(Option<u16>, usize)>,
}

enum Section {
    None,
    Interface,
    Peer,
}

pub fn parse(path: &Path, text: &str) -> Result<WgConfig, WgError> {
    let err = |line: usize, msg: String| WgError::Syntax {
        path: path.to_owned(),
        line,
        msg,
    };
    let mut iface: Option<RawInterface> = None;
    let mut peers: Vec<RawPeer> = Vec::new();
    let mut section = Section::None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            match line.to_ascii_lowercase().as_str() {
                "[interface]" => {
                    if let Some(first) = &iface {
                        return Err(err(
                            n,
                            format!("second [Interface] section (first on line {})", first.line),
                        ));
                    }
                    iface = Some(RawInterface {
                        line: n,
                        ..Default::default()
                    });
                    section = Section::Interface;
                }
                "[peer]" => {
                    peers.push(RawPeer {
                        line: n,
                        ..Default::default()
                    });
                    section = Section::Peer;
                }
                _ => {
                    return Err(err(
                        n,
                        format!("unknown section {line}; expected [Interface] or [Peer]"),
                    ));
                }
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(err(n, format!("expected `Key = Value`, found {line:?}")));
        };
        let (key, value) = (k.trim().to_ascii_lowercase(), v.trim());
        if key.is_empty() {
            return Err(err(n, "missing key before `=`".to_owned()));
        }
        let res = match section {
            Section::None => Err(format!("{} outside of a section", k.trim())),
            Section::Interface => interface_key(iface.as_mut().expect("set"), &key, value, n),
            Section::Peer => peer_key(peers.last_mut().expect("set"), &key, value, n),
        };
        res.map_err(|m| err(n, m))?;
    }

    let Some(raw) = iface else {
        return Err(err(1, "no [Interface] section".to_owned()));
    };
    let Some((private_key, _)) = raw.private_key else {
        return Err(err(raw.line, "[Interface] has no PrivateKey".to_owned()));
    };
    let mut out_peers: Vec<Peer> = Vec::new();
    for p in peers {
        let Some((public_key, key_line)) = p.public_key else {
            return Err(err(p.line, "[Peer] has no PublicKey".to_owned()));
        };
        if let Some(other) = out_peers.iter().find(|o| o.public_key == public_key) {
            return Err(err(
                key_line,
                format!("the same PublicKey as the peer on line {}", other.line),
            ));
        }
        out_peers.push(Peer {
            line: p.line,
            public_key,
            preshared_key: p.preshared_key.map(|(k, _)| k),
            endpoint: p.endpoint.map(|(e, _)| e),
            allowed_ips: p.allowed_ips,
            persistent_keepalive: p.persistent_keepalive.and_then(|(k, _)| k),
        });
    }
    Ok(WgConfig {
        path: path.to_owned(),
        interface: Interface {
            private_key,
            addresses: raw.addresses,
            dns: raw.dns,
            mtu: raw.mtu.map(|(m, _)| m),
            listen_port: raw.listen_port.map(|(p, _)| p),
            fwmark: raw.fwmark.and_then(|(m, _)| m),
            table: raw.table.map(|(t, _)| t),
            wg_quick_only: raw.wg_quick_only,
        },
        peers: out_peers,
    })
}

/// Sets a single-valued key, refusing a second occurrence.
fn once<T>(slot: &mut Option<(T, usize)>, name: &str, v: T, n: usize) -> Result<(), String> {
    if let Some((_, first)) = slot {
        return Err(format!("duplicate {name} (first on line {first})"));
    }
    *slot = Some((v, n));
    Ok(())
}

fn interface_key(r: &mut RawInterface, key: &str, v: &str, n: usize) -> Result<(), String> {
    match key {
        "privatekey" => once(
            &mut r.private_key,
            "PrivateKey",
            key_value("PrivateKey", v)?,
            n,
        ),
        "address" => {
            for item in list("Address", v)? {
                r.addresses.push(cidr("Address", item)?);
            }
            Ok(())
        }
        "dns" => {
            for item in list("DNS", v)? {
                match item.parse::<IpAddr>() {
                    Ok(ip) => r.dns.servers.push(ip),
                    Err(_) => r.dns.search.push(item.parse::<DomainName>().map_err(|_| {
                        format!("DNS entry {item:?} is neither an IP address nor a domain name")
                    })?),
                }
            }
            Ok(())
        }
        "mtu" => {
            let m = number::<u32>("MTU", v)?;
            if !(68..=65535).contains(&m) {
                return Err(format!("MTU {m} is out of range (68-65535)"));
            }
            once(&mut r.mtu, "MTU", m, n)
        }
        "listenport" => once(
            &mut r.listen_port,
            "ListenPort",
            number("ListenPort", v)?,
            n,
        ),
        "fwmark" => {
            let m = if v.eq_ignore_ascii_case("off") {
                None
            } else {
                let m = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => v.parse::<u32>().ok(),
                }
                .ok_or_else(|| format!("FwMark {v:?} is not a number or \"off\""))?;
                (m != 0).then_some(m)
            };
            once(&mut r.fwmark, "FwMark", m, n)
        }
        "table" => once(&mut r.table, "Table", nonempty("Table", v)?.to_owned(), n),
        "preup" | "postup" | "predown" | "postdown" => {
            let name = match key {
                "preup" => "PreUp",
                "postup" => "PostUp",
                "predown" => "PreDown",
                _ => "PostDown",
            };
            r.wg_quick_only.push((name.to_owned(), n));
            Ok(())
        }
        "saveconfig" => {
            r.wg_quick_only.push(("SaveConfig".to_owned(), n));
            Ok(())
        }
        _ => Err(unknown("[Interface]", key)),
    }
}

fn peer_key(r: &mut RawPeer, key: &str, v: &str, n: usize) -> Result<(), String> {
    match key {
        "publickey" => once(
            &mut r.public_key,
            "PublicKey",
            key_value("PublicKey", v)?,
            n,
        ),
        "presharedkey" => once(
            &mut r.preshared_key,
            "PresharedKey",
            key_value("PresharedKey", v)?,
            n,
        ),
        "endpoint" => once(&mut r.endpoint, "Endpoint", endpoint(v, n)?, n),
        "allowedips" => {
            for item in list("AllowedIPs", v)? {
                r.allowed_ips.push(cidr("AllowedIPs", item)?);
            }
            Ok(())
        }
        "persistentkeepalive" => {
            let k = if v.eq_ignore_ascii_case("off") {
                None
            } else {
                let k = number::<u16>("PersistentKeepalive", v)?;
                (k != 0).then_some(k)
            };
            once(&mut r.persistent_keepalive, "PersistentKeepalive", k, n)
        }
        _ => Err(unknown("[Peer]", key)),
    }
}

fn unknown(section: &str, key: &str) -> String {
    format!("unknown key {key:?} in {section}")
}

fn nonempty<'a>(name: &str, v: &'a str) -> Result<&'a str, String> {
    if v.is_empty() {
        Err(format!("{name} has no value"))
    } else {
        Ok(v)
    }
}

fn list<'a>(name: &str, v: &'a str) -> Result<Vec<&'a str>, String> {
    nonempty(name, v)?
        .split(',')
        .map(str::trim)
        .map(|s| {
            if s.is_empty() {
                Err(format!("{name} has an empty entry"))
            } else {
                Ok(s)
            }
        })
        .collect()
}

fn key_value(name: &str, v: &str) -> Result<Key, String> {
    Key::from_base64(nonempty(name, v)?)
        .ok_or_else(|| format!("{name} is not a base64-encoded 32-byte key"))
}

fn cidr(name: &str, v: &str) -> Result<IpNet, String> {
    v.parse::<IpNet>()
        .map_err(|e| format!("{name} entry {v:?} is not an IP network: {e}"))
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name} {v:?} is not a number"));
    }
    v.parse::<T>()
        .map_err(|_| format!("{name} {v:?} is out of range"))
}

fn endpoint(v: &str, line: usize) -> Result<Endpoint, String> {
    let bad = || format!("Endpoint {v:?} is not host:port or [IPv6]:port");
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (h, p)
    } else {
        let (h, p) = v.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(bad());
        }
        if h.parse::<IpAddr>().is_err() {
            h.parse::<DomainName>().map_err(|_| bad())?;
        }
        (h, p)
    };
    let port = number::<u16>("Endpoint port", port)?;
    if port == 0 {
        return Err(format!("Endpoint {v:?} has port 0"));
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        line,
    })
}
