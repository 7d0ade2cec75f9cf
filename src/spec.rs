//! What a tunnel needs once it is inside its namespace, independent of which VPN
//! produced it. Parsers (OpenVPN environment, wg-quick files, device snapshots) build a
//! `NetworkSpec`; the lifecycle applies it. Every type here is validated on
//! construction so that the code applying it never has to re-check.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Error for a value that does not parse into one of the types in this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// A Linux interface name: 1-15 bytes (IFNAMSIZ - 1), none of `/`, `:`, whitespace
/// or control characters, and not `.` or `..` (the kernel's `dev_valid_name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);

impl InterfaceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(invalid("interface name is empty"));
        }
        if s.len() > 15 {
            return Err(invalid(format!(
                "interface name {s:?} is longer than 15 bytes"
            )));
        }
        if s == "." || s == ".." {
            return Err(invalid(format!("{s:?} is not a valid interface name")));
        }
        if let Some(c) = s.chars().find(|c| {
            *c == '/' || *c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii()
        }) {
            return Err(invalid(format!(
                "interface name {s:?} contains the character {c:?}"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<InterfaceName> for String {
    fn from(n: InterfaceName) -> String {
        n.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named network namespace: 1-64 characters of `[A-Za-z0-9_.-]`, not `.` or `..`,
/// so that `/run/netns/<name>` and `/etc/netns/<name>` can never escape their directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetnsName(String);

impl NetnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NetnsName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 64 {
            return Err(invalid(format!(
                "namespace name {s:?} must be 1 to 64 characters long"
            )));
        }
        if s == "." || s == ".." {
            return Err(invalid(format!("{s:?} is not a valid namespace name")));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(invalid(format!(
                "namespace name {s:?} contains {c:?}; only A-Z a-z 0-9 _ . - are allowed"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for NetnsName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<NetnsName> for String {
    fn from(n: NetnsName) -> String {
        n.0
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP network in CIDR form: `ipnet::IpNet` with vpn-ns's stricter parsing (below).
/// The address is kept as given (not masked) so that an interface address like
/// `192.0.2.7/24` round-trips; `network()` masks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, InvalidValue> {
        ipnet::IpNet::new(addr, prefix).map(Self).map_err(|_| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            invalid(format!(
                "prefix length /{prefix} is out of range for {addr} (0-{max})"
            ))
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr().is_ipv4()
    }

    /// The network address (host bits cleared), as routes need it.
    pub fn network(&self) -> IpNet {
        Self(self.0.trunc())
    }

    pub fn is_default(&self) -> bool {
        self.prefix() == 0
    }

    /// True when `ip` lies inside this network (false for the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// True when all of `inner` lies inside this network (false for the other family).
    pub fn covers(&self, inner: &IpNet) -> bool {
        self.0.contains(&inner.0)
    }
}

impl FromStr for IpNet {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| invalid(format!("{a:?} is not an IP address")))?;
        let prefix = match p {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(format!("{p:?} is not a prefix length")));
                }
                p.parse::<u8>()
                    .map_err(|_| invalid(format!("{p:?} is not a prefix length")))?
            }
        };
        IpNet::new(addr, prefix)
    }
}

impl TryFrom<String> for IpNet {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not ipnet's Display, so that the text stays vpn-ns's own format.
        write!(f, "{}/{}", self.addr(), self.prefix())
    }
}

/// Converts a dotted IPv4 netmask to a prefix length, refusing non-contiguous masks.
pub fn netmask_to_prefix(mask: Ipv4Addr) -> Result<u8, InvalidValue> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(invalid(format!("{mask} is not a contiguous netmask")));
    }
    Ok(ones as u8)
}

/// One address on the tunnel device. `peer` is set for point-to-point (OpenVPN net30/p2p)
/// addresses: `local peer remote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub local: IpNet,
    pub peer: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination network, host bits cleared.
    pub dest: IpNet,
    pub gateway: Option<IpAddr>,
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSpec {
    pub servers: Vec<IpAddr>,
    pub search: Vec<DomainName>,
}

/// A DNS name as it may appear in resolv.conf: labels of `[A-Za-z0-9-_]`, 1-63 bytes each,
/// at most 253 bytes in all. Nothing that could break out of a resolv.conf line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DomainName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.strip_suffix('.').unwrap_or(s);
        if t.is_empty() || t.len() > 253 {
            return Err(invalid(format!("{s:?} is not a valid domain name")));
        }
        for label in t.split('.') {
            if label.is_empty()
                || label.len() > 63
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || label.starts_with('-')
            {
                return Err(invalid(format!("{s:?} is not a valid domain name")));
            }
        }
        Ok(Self(t.to_owned()))
    }
}

impl TryFrom<String> for DomainName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DomainName> for String {
    fn from(n: DomainName) -> String {
        n.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything to apply to a tunnel device inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub device: InterfaceName,
    pub mtu: Option<u32>,
    pub addresses: Vec<Address>,
    /// Routes pushed by the VPN (never a default route: that comes from `default-route`).
    pub routes: Vec<Route>,
    /// Gateway for the IPv4 default route, when the VPN names one.
    pub gateway_v4: Option<Ipv4Addr>,
    /// Gateway for the IPv6 default route, when the VPN names one.
    pub gateway_v6: Option<Ipv6Addr>,
    pub dns: DnsSpec,
}

// What the kernel reports, as netlink reads it and verify checks it.

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// An address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrInfo {
    pub index: u32,
    pub local: IpNet,
    pub peer: Option<IpAddr>,
}

/// A main-table route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dest: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    /// Kernel-made routes (prefix routes of addresses, local table entries) are not ours.
    pub scope_link_or_host: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for good in ["tun0", "wg-home", "a", "x23456789012345", "tap.1"] {
            assert!(good.parse::<InterfaceName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "x234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\nb",
            "tün",
        ] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn netns_names() {
        let long = "a".repeat(64);
        for good in [
            "work",
            "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21",
            "a.b_c-d",
            long.as_str(),
        ] {
            assert!(good.parse::<NetnsName>().is_ok(), "{good}");
        }
        let too_long = "a".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a b",
            "a;b",
            "$(x)",
            too_long.as_str(),
            "é",
        ] {
            assert!(bad.parse::<NetnsName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ipnet_parse_and_network() {
        let n: IpNet = "192.0.2.77/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "192.0.2.0/24");
        assert_eq!(
            "fd00::1/64".parse::<IpNet>().unwrap().network().to_string(),
            "fd00::/64"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<IpNet>().unwrap().network().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!("192.0.2.1".parse::<IpNet>().unwrap().prefix(), 32);
        for bad in [
            "192.0.2.0/33",
            "fd00::/129",
            "192.0.2.0/",
            "192.0.2.0/+1",
            "x/24",
            "192.0.2.0/024x",
            "192.0.2.0/1000",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    /// One `contains` (and `covers`) for every caller: the family never matches across
    /// v4 and v6, host bits of the network do not matter, /0 holds its whole family.
    #[test]
    fn ipnet_contains_and_covers() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("192.0.2.7/24", "192.0.2.255", true),
            ("192.0.2.7/24", "192.0.3.0", false),
            ("192.0.2.0/24", "::ffff:192.0.2.1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "192.0.2.1", false),
            ("fd00::1/64", "fd00::ffff", true),
            ("192.0.2.1/32", "192.0.2.1", true),
            ("192.0.2.1/32", "192.0.2.2", false),
        ];
        for (n, a, want) in cases {
            assert_eq!(net(n).contains(ip(a)), want, "{n} contains {a}");
        }
        assert!(net("0.0.0.0/1").covers(&net("10.0.0.0/8")));
        assert!(net("10.0.0.0/8").covers(&net("10.0.0.0/8")));
        assert!(!net("10.0.0.0/8").covers(&net("0.0.0.0/1")));
        assert!(!net("::/0").covers(&net("10.0.0.0/8")));
        assert_eq!(net("192.0.2.7/24").to_string(), "192.0.2.7/24");
        assert_eq!(net("192.0.2.7/24").addr(), ip("192.0.2.7"));
    }

    #[test]
    fn netmasks() {
        assert_eq!(
            netmask_to_prefix("255.255.255.0".parse().unwrap()).unwrap(),
            24
        );
        assert_eq!(
            netmask_to_prefix("255.255.255.252".parse().unwrap()).unwrap(),
            30
        );
        assert_eq!(netmask_to_prefix("0.0.0.0".parse().unwrap()).unwrap(), 0);
        assert_eq!(
            netmask_to_prefix("255.255.255.255".parse().unwrap()).unwrap(),
            32
        );
        assert!(netmask_to_prefix("255.0.255.0".parse().unwrap()).is_err());
    }

    #[test]
    fn domain_names() {
        for good in ["corp.example", "a", "x-y.example.", "_srv.example"] {
            assert!(good.parse::<DomainName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a b",
            "a\nnameserver 1.2.3.4",
            "a;b",
        ] {
            assert!(bad.parse::<DomainName>().is_err(), "{bad:?}");
        }
    }
}
