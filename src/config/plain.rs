//! `[macvlan]` and `[routed]`: connections with a direct uplink instead of a tunnel.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::{ConfigError, DnsOverride, FromStrVisitor, Ip, Kind, locate::Document};
use crate::spec::{InterfaceName, InvalidValue, IpNet};

/// The macvlan modes of `ip link add ... type macvlan mode MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MacvlanMode {
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
}

keywords!(MacvlanMode, "macvlan mode", "\"bridge\", \"private\", \"vepa\" or \"passthru\"", {
    Bridge = "bridge", Private = "private", Vepa = "vepa", Passthru = "passthru"
});

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacvlanSection {
    pub parent: InterfaceName,
    #[serde(default)]
    pub dhcp: bool,
    #[serde(default, deserialize_with = "opt_v4_net")]
    pub address: Option<IpNet>,
    #[serde(default, deserialize_with = "opt_v4")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub mode: MacvlanMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutedSection {
    pub uplink: InterfaceName,
    /// `None`: derived from the connection name at up (see docs/plain.md).
    #[serde(default, deserialize_with = "opt_transfer")]
    pub transfer: Option<IpNet>,
}

/// An IPv4 address with its prefix, as an interface address.
struct V4Net(IpNet);

impl FromStr for V4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<IpNet>() {
            Ok(n) if n.is_ipv4() && s.contains('/') && n.prefix() <= 30 => Ok(Self(n)),
            Ok(_) => Err(format!(
                "{s:?} is not an IPv4 address with a prefix length of at most /30 (like 192.0.2.10/24)"
            )),
            Err(InvalidValue(e)) => Err(e),
        }
    }
}

/// A transfer network: IPv4, /30 or larger, given as its network address.
struct Transfer(IpNet);

impl FromStr for Transfer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = V4Net::from_str(s)
            .map_err(|_| {
                format!("{s:?} is not an IPv4 network of at most /30 (like 100.64.77.0/30)")
            })?
            .0;
        match n.network() == n {
            true => Ok(Self(n)),
            false => Err(format!(
                "{s:?} has host bits set; the network is {}",
                n.network()
            )),
        }
    }
}

deserialize_via_from_str! {
    V4Net => "an IPv4 address/prefix string",
    Transfer => "an IPv4 network string",
}

fn opt_v4_net<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
    Ok(Some(V4Net::deserialize(d)?.0))
}

fn opt_transfer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
    Ok(Some(Transfer::deserialize(d)?.0))
}

fn opt_v4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
    match Ip::deserialize(d)?.0 {
        IpAddr::V4(a) => Ok(Some(a)),
        IpAddr::V6(a) => Err(serde::de::Error::custom(format!(
            "{a} is not an IPv4 address"
        ))),
    }
}

/// Checks that only make sense across keys: static addressing versus DHCP, where DNS
/// comes from.
pub(super) fn check(
    doc: &Document<'_>,
    kind: &Kind,
    dns: Option<&DnsOverride>,
) -> Result<(), ConfigError> {
    let has_dns = dns.is_some_and(|d| d.servers.as_ref().is_some_and(|s| !s.is_empty()));
    let no_dns = |why: &str| {
        let message =
            format!("type = \"{kind}\"{why} needs DNS servers: add [dns] with servers = [\"...\"]");
        Err(doc.key_error("dns", &message))
    };
    match kind {
        Kind::Macvlan(m) => match (m.dhcp, m.address) {
            (true, Some(_)) => {
                return Err(doc.key_error(
                    "macvlan.address",
                    "conflicts with dhcp = true (DHCP assigns the address)",
                ));
            }
            (true, None) if m.gateway.is_some() => {
                return Err(doc.key_error(
                    "macvlan.gateway",
                    "conflicts with dhcp = true (DHCP assigns the gateway)",
                ));
            }
            (true, None) => {}
            (false, None) => {
                return Err(doc.key_error(
                    "macvlan",
                    "needs address = \"<ip>/<prefix>\" (or dhcp = true)",
                ));
            }
            (false, Some(a)) => {
                if let Some(g) = m.gateway
                    && (!a.contains(IpAddr::V4(g)) || a.addr() == IpAddr::V4(g))
                {
                    return Err(doc.key_error(
                        "macvlan.gateway",
                        &format!("{g} is not another host in {}", a.network()),
                    ));
                }
                if !has_dns {
                    return no_dns(" with a static address");
                }
            }
        },
        Kind::Routed(_) if !has_dns => return no_dns(""),
        _ => {}
    }
    Ok(())
}
