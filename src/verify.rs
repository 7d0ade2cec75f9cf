//! The checks behind `vpn-ns verify`: pure functions over a snapshot of one namespace
//! (links, addresses, routes, the resolver files), so every decision is unit-tested
//! without root. Gathering the snapshot is `commands::verify`'s job.
//!
//! Check names are part of the interface (scripts match on them): `state`, `links`,
//! `routes`, `ipv6`, `dns`, `nsswitch`, and `handshake` for WireGuard. See docs/verify.md.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::spec::{AddrInfo, Link, RouteInfo};

pub const STATE: &str = "state";
pub const LINKS: &str = "links";
pub const ROUTES: &str = "routes";
pub const IPV6: &str = "ipv6";
pub const DNS: &str = "dns";
pub const NSSWITCH: &str = "nsswitch";
/// WireGuard connections only (see `wireguard::peers::handshake_check`).
pub const HANDSHAKE: &str = "handshake";

/// The `hosts:` sources that answer only from local files or from the configured
/// nameservers (which the `dns` check proves are tunnelled). Anything else (resolve,
/// mdns*, myhostname, wins, nis, ldap...) may answer from, or ask, outside the tunnel.
const ALLOWED_HOSTS_SOURCES: [&str; 2] = ["files", "dns"];

/// What the record in /run/vpn-ns says, plus whether its VPN process still runs.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub up: bool,
    pub isolated: bool,
    pub netns: String,
    pub device: Option<String>,
    /// `None`: no VPN pid recorded; `Some(false)`: recorded and gone.
    pub vpn_alive: Option<bool>,
}

/// The live namespace as read through netlink and `/etc/netns/<ns>/`.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub links: Vec<Link>,
    pub addresses: Vec<AddrInfo>,
    pub routes: Vec<RouteInfo>,
    /// `None`: the file does not exist.
    pub resolv_conf: Option<String>,
    pub nsswitch: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `None`: no state record, the connection is not up.
    pub recorded: Option<Recorded>,
    /// `None`: the namespace does not exist (or there is none to look at).
    pub live: Option<Live>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn pass(name: &'static str, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name,
        ok: true,
        detail: detail.into(),
    }
}

fn fail(name: &'static str, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name,
        ok: false,
        detail: detail.into(),
    }
}

/// Runs every check that the snapshot allows. Without a live namespace only `state`
/// can be judged (and fails).
pub fn run_checks(s: &Snapshot) -> Vec<CheckResult> {
    let mut out = vec![check_state(s)];
    if let (Some(rec), Some(live)) = (&s.recorded, &s.live) {
        let ctx = Ctx::new(rec, live);
        out.push(check_links(&ctx));
        out.push(check_routes(&ctx));
        out.push(check_ipv6(&ctx));
        out.push(check_dns(&ctx));
        out.push(check_nsswitch(&ctx));
    }
    out
}

pub fn check_state(s: &Snapshot) -> CheckResult {
    let Some(rec) = &s.recorded else {
        return fail(STATE, "the connection is not up (no state record)");
    };
    if !rec.isolated {
        return fail(
            STATE,
            "the connection is not isolated (netns-isolate = false): there is no namespace to verify",
        );
    }
    if !rec.up {
        return fail(
            STATE,
            format!(
                "the VPN is down; namespace {} is kept (netns-persistent) with no tunnel",
                rec.netns
            ),
        );
    }
    if s.live.is_none() {
        return fail(
            STATE,
            format!("namespace {} does not exist (stale state)", rec.netns),
        );
    }
    if rec.vpn_alive == Some(false) {
        return fail(
            STATE,
            "the VPN process recorded in the state is gone (stale state)",
        );
    }
    pass(STATE, format!("up in namespace {}", rec.netns))
}

/// Indexes and names needed by several checks.
struct Ctx<'a> {
    rec: &'a Recorded,
    live: &'a Live,
    tun: Option<u32>,
    lo: Option<u32>,
    names: HashMap<u32, &'a str>,
}

impl<'a> Ctx<'a> {
    fn new(rec: &'a Recorded, live: &'a Live) -> Ctx<'a> {
        let find = |n: &str| live.links.iter().find(|l| l.name == n).map(|l| l.index);
        Ctx {
            rec,
            live,
            tun: rec.device.as_deref().and_then(find),
            lo: find("lo"),
            names: live
                .links
                .iter()
                .map(|l| (l.index, l.name.as_str()))
                .collect(),
        }
    }

    fn dev_name(&self, oif: Option<u32>) -> String {
        match oif {
            None => "no output device".to_owned(),
            Some(i) => match self.names.get(&i) {
                Some(n) => format!("dev {n}"),
                None => format!("ifindex {i}"),
            },
        }
    }

    /// Whether a route keeps traffic inside: out the tunnel, or looped back on `lo`.
    /// A route without an output device (multipath, or a blackhole whose type the dump
    /// does not carry here) cannot be proven to use the tunnel, so it does not count.
    fn contained(&self, r: &RouteInfo) -> bool {
        r.oif.is_some() && (r.oif == self.tun || r.oif == self.lo)
    }

    fn describe(&self, r: &RouteInfo) -> String {
        let mut s = if r.dest.is_default() {
            "default".to_owned()
        } else {
            r.dest.to_string()
        };
        if let Some(g) = r.gateway {
            s.push_str(&format!(" via {g}"));
        }
        s.push(' ');
        s.push_str(&self.dev_name(r.oif));
        s
    }

    fn tun_name(&self) -> &str {
        self.rec.device.as_deref().unwrap_or("(none recorded)")
    }
}

fn check_links(c: &Ctx) -> CheckResult {
    let Some(dev) = c.rec.device.as_deref() else {
        return fail(LINKS, "the state records no tunnel device");
    };
    let extra: Vec<&str> = c
        .live
        .links
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| *n != "lo" && *n != dev)
        .collect();
    if !extra.is_empty() {
        return fail(
            LINKS,
            format!(
                "unexpected link(s) in the namespace: {} (only lo and {dev} belong there)",
                extra.join(", ")
            ),
        );
    }
    if c.tun.is_none() {
        return fail(LINKS, format!("the tunnel device {dev} is missing"));
    }
    pass(LINKS, format!("only lo and {dev}"))
}

fn check_routes(c: &Ctx) -> CheckResult {
    let leaks: Vec<String> = c
        .live
        .routes
        .iter()
        .filter(|r| !c.contained(r))
        .map(|r| c.describe(r))
        .collect();
    if leaks.is_empty() {
        pass(
            ROUTES,
            format!(
                "all {} main-table route(s) go out {} or stay on lo",
                c.live.routes.len(),
                c.tun_name()
            ),
        )
    } else {
        fail(
            ROUTES,
            format!(
                "route(s) not via the tunnel {}: {}",
                c.tun_name(),
                leaks.join("; ")
            ),
        )
    }
}

fn is_v6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn check_ipv6(c: &Ctx) -> CheckResult {
    let v6: Vec<&RouteInfo> = c.live.routes.iter().filter(|r| !r.dest.is_ipv4()).collect();
    let leaks: Vec<String> = v6
        .iter()
        .filter(|r| !c.contained(r))
        .map(|r| c.describe(r))
        .collect();
    if !leaks.is_empty() {
        return fail(
            IPV6,
            format!("IPv6 reaches outside the tunnel: {}", leaks.join("; ")),
        );
    }
    let default_via_tun = v6
        .iter()
        .any(|r| r.dest.is_default() && r.oif.is_some() && r.oif == c.tun);
    let tun_has_v6 =
        c.live.addresses.iter().any(|a| {
            Some(a.index) == c.tun && !a.local.is_ipv4() && !is_v6_link_local(a.local.addr())
        });
    let detail = match (default_via_tun, tun_has_v6) {
        (true, true) => format!(
            "IPv6 tunnelled: address and default route on {}",
            c.tun_name()
        ),
        (true, false) => format!(
            "IPv6 default route on {} (no IPv6 address there, so no IPv6 source outside)",
            c.tun_name()
        ),
        (false, _) => "no IPv6 route outside the tunnel: IPv6 elsewhere is unreachable".to_owned(),
    };
    pass(IPV6, detail)
}

/// Nameservers and search domains of a resolv.conf (unparseable servers kept as text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolv {
    pub servers: Vec<Result<IpAddr, String>>,
    pub search: Vec<String>,
}

/// Reads resolv.conf as glibc does: `nameserver`, then `search`/`domain` (the last one
/// wins); comments start with `#` or `;`.
pub fn parse_resolv_conf(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(w) = words.next() {
                    r.servers
                        .push(w.parse::<IpAddr>().map_err(|_| w.to_owned()));
                }
            }
            Some("search") | Some("domain") => {
                r.search = words.map(str::to_owned).collect();
            }
            _ => {}
        }
    }
    r
}

/// The route the kernel would pick from `routes` (main table): longest prefix, then
/// lowest metric.
pub fn lookup(routes: &[RouteInfo], ip: IpAddr) -> Option<&RouteInfo> {
    routes
        .iter()
        .filter(|r| r.dest.contains(ip))
        .min_by_key(|r| (std::cmp::Reverse(r.dest.prefix()), r.metric.unwrap_or(0)))
}

fn check_dns(c: &Ctx) -> CheckResult {
    let path = format!("/etc/netns/{}/resolv.conf", c.rec.netns);
    let Some(text) = &c.live.resolv_conf else {
        return fail(
            DNS,
            format!("{path} is missing: processes inside would use the host's resolv.conf"),
        );
    };
    let conf = parse_resolv_conf(text);
    if conf.servers.is_empty() {
        return pass(
            DNS,
            "no nameserver listed: lookups fail closed (glibc falls back to 127.0.0.1, where nothing listens inside)",
        );
    }
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for srv in &conf.servers {
        let ip = match srv {
            Ok(ip) => *ip,
            Err(text) => {
                bad.push(format!("nameserver {text:?} is not an IP address"));
                continue;
            }
        };
        if ip.is_loopback() {
            bad.push(format!("nameserver {ip} on loopback inside the namespace"));
        } else if c.live.addresses.iter().any(|a| a.local.addr() == ip) {
            bad.push(format!(
                "nameserver {ip} is an address of the namespace itself"
            ));
        } else {
            match lookup(&c.live.routes, ip) {
                None => bad.push(format!("no route to nameserver {ip}")),
                Some(r) if r.oif.is_some() && r.oif == c.tun => good.push(ip.to_string()),
                Some(r) => bad.push(format!(
                    "nameserver {ip} is routed by {}, not the tunnel",
                    c.describe(r)
                )),
            }
        }
    }
    if bad.is_empty() {
        pass(
            DNS,
            format!(
                "nameserver(s) {} routed via {}",
                good.join(", "),
                c.tun_name()
            ),
        )
    } else {
        fail(DNS, bad.join("; "))
    }
}

/// The sources of the `hosts:` line (`[...]` actions dropped), or `None` without one.
pub fn hosts_sources(nsswitch: &str) -> Option<Vec<String>> {
    nsswitch.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let (key, rest) = line.split_once(':')?;
        (key.trim() == "hosts").then(|| {
            let mut out = Vec::new();
            let mut in_action = false;
            for w in rest.split_whitespace() {
                if w.starts_with('[') {
                    in_action = true;
                }
                if !in_action {
                    out.push(w.to_owned());
                }
                if w.ends_with(']') {
                    in_action = false;
                }
            }
            out
        })
    })
}

fn check_nsswitch(c: &Ctx) -> CheckResult {
    let path = format!("/etc/netns/{}/nsswitch.conf", c.rec.netns);
    let Some(text) = &c.live.nsswitch else {
        return fail(
            NSSWITCH,
            format!(
                "{path} is missing: processes inside would use the host's, which may ask systemd-resolved or mDNS outside the tunnel"
            ),
        );
    };
    let Some(sources) = hosts_sources(text) else {
        return fail(
            NSSWITCH,
            format!("{path} has no hosts: line (want `hosts: files dns`)"),
        );
    };
    let bad: Vec<&str> = sources
        .iter()
        .map(String::as_str)
        .filter(|s| !ALLOWED_HOSTS_SOURCES.contains(s))
        .collect();
    if bad.is_empty() {
        pass(NSSWITCH, format!("hosts: {}", sources.join(" ")))
    } else {
        fail(
            NSSWITCH,
            format!(
                "{path}: hosts: uses {}, which can answer outside the tunnel (want only files and dns)",
                bad.join(", ")
            ),
        )
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
