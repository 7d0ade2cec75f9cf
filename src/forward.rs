//! What is published: a forwarding rule (listen address, target address, protocol,
//! direction), from a connection file or from `vpn-ns publish`'s command line.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::spec::InvalidValue;

/// An address written without one means loopback: nothing is exposed by default.
pub const DEFAULT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(InvalidValue(format!(
                "unknown protocol {s:?} (expected \"tcp\" or \"udp\")"
            ))),
        }
    }
}

/// Which way a rule carries connections across the namespace boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// `[[publish]]`: listens on the host, connects inside the namespace.
    Publish,
    /// `[[host-access]]`: listens inside the namespace, connects on the host.
    HostAccess,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::HostAccess => "host-access",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ADDR:PORT`, `[V6ADDR]:PORT` or a bare `PORT` (on 127.0.0.1). Port 0 is refused:
/// a listener on a kernel-chosen port could not be found, a target cannot be port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Endpoint(pub SocketAddr);

impl FromStr for Endpoint {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let addr = match s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
            true => s
                .parse::<u16>()
                .ok()
                .map(|p| SocketAddr::new(DEFAULT_ADDR, p)),
            false => s.parse::<SocketAddr>().ok(),
        };
        match addr {
            Some(a) if a.port() != 0 => Ok(Self(a)),
            Some(_) => Err(InvalidValue(format!("{s:?}: port 0 is not allowed"))),
            None => Err(InvalidValue(format!(
                "{s:?} is not an address and port (expected PORT, ADDR:PORT or [IPV6]:PORT, \
                 like 9091, 127.0.0.1:9091 or [::1]:9091)"
            ))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One forwarding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub direction: Direction,
    pub proto: Proto,
    pub listen: Endpoint,
    pub target: Endpoint,
}

impl Rule {
    /// Where the listening socket lives, for messages.
    pub fn listen_side(&self) -> &'static str {
        match self.direction {
            Direction::Publish => "on the host",
            Direction::HostAccess => "inside the namespace",
        }
    }

    /// Listening beyond loopback exposes the target to a network: for `publish` the
    /// LAN, for `host-access` the VPN's network (the peers behind the tunnel).
    pub fn exposure_warning(&self) -> Option<String> {
        let ip = self.listen.0.ip();
        if ip.is_loopback() {
            return None;
        }
        Some(match self.direction {
            Direction::Publish => format!(
                "[[publish]] listen = \"{}\" is not a loopback address: {} inside the \
                 namespace is reachable from your LAN",
                self.listen, self.target
            ),
            Direction::HostAccess => format!(
                "[[host-access]] listen = \"{}\" is not a loopback address: the host's {} \
                 is reachable from the VPN's network",
                self.listen, self.target
            ),
        })
    }

    /// A host-access target off the host's loopback sends the namespace's traffic out
    /// of the host's own interfaces, around the tunnel.
    pub fn bypass_warning(&self) -> Option<String> {
        let ip = self.target.0.ip();
        (self.direction == Direction::HostAccess && !ip.is_loopback()).then(|| {
            format!(
                "[[host-access]] target = \"{}\" is not a loopback address: connections from \
                 inside to {} leave through the host's network, not the VPN",
                self.target, self.listen
            )
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[[{}]] listen {}/{} -> target {}",
            self.direction, self.listen, self.proto, self.target
        )
    }
}

/// The specs of one `publish`/`unpublish` command line, all checked before any is used
/// (`host_access`: the `--host-access` direction).
pub fn parse_specs(specs: &[String], host_access: bool) -> Result<Vec<Rule>, InvalidValue> {
    let direction = match host_access {
        true => Direction::HostAccess,
        false => Direction::Publish,
    };
    specs.iter().map(|s| parse_spec(s, direction)).collect()
}

/// `vpn-ns publish`'s short form: `[ADDR:]PORT[:TARGETPORT][/udp]`. The target is
/// always 127.0.0.1 on the other side; an IPv6 listen address is written in brackets.
pub fn parse_spec(s: &str, direction: Direction) -> Result<Rule, InvalidValue> {
    let bad = |why: &str| {
        InvalidValue(format!(
            "{s:?} {why} (expected [ADDR:]PORT[:TARGETPORT][/udp], like 9091, \
             127.0.0.1:8080:80 or [::1]:53/udp)"
        ))
    };
    let (body, proto) = match s.rsplit_once('/') {
        Some((b, p)) => (b, p.parse::<Proto>().map_err(|e| bad(&e.0))?),
        None => (s, Proto::Tcp),
    };
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(bad(&format!("has {p:?} where a port (1-65535) belongs"))),
    };
    let (addr, rest) = match body.strip_prefix('[') {
        Some(v6) => {
            let (a, rest) = v6
                .split_once("]:")
                .ok_or_else(|| bad("has an unclosed '['"))?;
            let a: IpAddr = a.parse().map_err(|_| bad("has a bad IPv6 address"))?;
            (Some(a), rest)
        }
        None => {
            let parts: Vec<&str> = body.split(':').collect();
            match parts.as_slice() {
                [_] | [_, _] if parts[0].bytes().all(|b| b.is_ascii_digit()) => (None, body),
                [a, _, ..] => {
                    let a: IpAddr = a
                        .parse()
                        .map_err(|_| bad(&format!("has {a:?} where an address belongs")))?;
                    (Some(a), &body[parts[0].len() + 1..])
                }
                _ => return Err(bad("has no port")),
            }
        }
    };
    let (listen_port, target_port) = match rest.split_once(':') {
        Some((l, t)) => (port(l)?, port(t)?),
        None => (port(rest)?, port(rest)?),
    };
    Ok(Rule {
        direction,
        proto,
        listen: Endpoint(SocketAddr::new(addr.unwrap_or(DEFAULT_ADDR), listen_port)),
        target: Endpoint(SocketAddr::new(DEFAULT_ADDR, target_port)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint(s.parse().unwrap())
    }

    #[test]
    fn endpoints_default_to_loopback_and_refuse_port_zero() {
        assert_eq!("9091".parse::<Endpoint>().unwrap(), ep("127.0.0.1:9091"));
        assert_eq!("[::1]:53".parse::<Endpoint>().unwrap(), ep("[::1]:53"));
        assert_eq!("0.0.0.0:80".parse::<Endpoint>().unwrap(), ep("0.0.0.0:80"));
        for bad in [
            "",
            "0",
            "1.2.3.4:0",
            "65536",
            "localhost:80",
            "::1:53",
            "1.2.3.4",
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err().0;
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn short_specs() {
        let r = |s| parse_spec(s, Direction::Publish).unwrap();
        let p = r("9091");
        assert_eq!(
            (p.listen, p.target, p.proto),
            (ep("127.0.0.1:9091"), ep("127.0.0.1:9091"), Proto::Tcp)
        );
        let p = r("8080:80");
        assert_eq!(
            (p.listen, p.target),
            (ep("127.0.0.1:8080"), ep("127.0.0.1:80"))
        );
        let p = r("192.0.2.1:8080");
        assert_eq!(
            (p.listen, p.target),
            (ep("192.0.2.1:8080"), ep("127.0.0.1:8080"))
        );
        let p = r("0.0.0.0:8080:80/tcp");
        assert_eq!(
            (p.listen, p.target),
            (ep("0.0.0.0:8080"), ep("127.0.0.1:80"))
        );
        let p = r("[::1]:5353:53/udp");
        assert_eq!(
            (p.listen, p.target, p.proto),
            (ep("[::1]:5353"), ep("127.0.0.1:53"), Proto::Udp)
        );
        let p = r("53/udp");
        assert_eq!((p.listen, p.proto), (ep("127.0.0.1:53"), Proto::Udp));
        for bad in [
            "",
            "0",
            "80/sctp",
            "host:80",
            "[::1:80",
            "1.2.3.4",
            "80:0",
            "80:x",
            "1:2:3",
            "[::1]:80:",
        ] {
            assert!(parse_spec(bad, Direction::Publish).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn warnings_for_exposure_and_bypass() {
        let rule = |d, l: &str, t: &str| Rule {
            direction: d,
            proto: Proto::Tcp,
            listen: ep(l),
            target: ep(t),
        };
        assert!(
            rule(Direction::Publish, "127.0.0.1:1", "127.0.0.1:1")
                .exposure_warning()
                .is_none()
        );
        assert!(
            rule(Direction::Publish, "[::1]:1", "127.0.0.1:1")
                .exposure_warning()
                .is_none()
        );
        let w = rule(Direction::Publish, "0.0.0.0:1", "127.0.0.1:1")
            .exposure_warning()
            .unwrap();
        assert!(w.contains("reachable from your LAN"), "{w}");
        let w = rule(Direction::HostAccess, "10.8.0.2:1", "127.0.0.1:1")
            .exposure_warning()
            .unwrap();
        assert!(w.contains("VPN's network"), "{w}");
        assert!(
            rule(Direction::Publish, "127.0.0.1:1", "10.0.0.1:1")
                .bypass_warning()
                .is_none()
        );
        let w = rule(Direction::HostAccess, "127.0.0.1:1", "192.168.1.5:1")
            .bypass_warning()
            .unwrap();
        assert!(w.contains("not the VPN"), "{w}");
    }
}
