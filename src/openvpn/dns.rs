//! DNS servers and search domains from an OpenVPN 2.6 environment.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{
    Env, EnvError, Var, bad_name, check, domain, index, invalid_var, ip, missing_with, number,
    shorten, too_many,
};
use crate::spec::{DnsSpec, DomainName};

const MAX_FOREIGN_OPTIONS: usize = 1024;
/// resolv.conf only uses 3 nameservers; the DNS writer picks. This only bounds the input.
const MAX_DNS_SERVERS: usize = 32;
const MAX_SEARCH_DOMAINS: usize = 32;

/// DNS from the 2.6 `--dns` variables where present, else from `dhcp-option` foreign
/// options. Like OpenVPN itself (`--dns` "replaces configuration at the places
/// --dhcp-option puts it"), the override is per field: `dns server` replaces `DNS`/`DNS6`,
/// `dns search-domains` replaces `DOMAIN-SEARCH`; a pushed `DOMAIN` stays and comes first.
/// Foreign options are validated even when overridden: a malformed one is an error either way.
pub(super) fn parse(env: &Env) -> Result<DnsSpec, EnvError> {
    let foreign = foreign_dns(env)?;
    let dns_servers = dns_option_servers(env)?;
    let dns_search: Found<DomainName> = env
        .group(["dns_search_domain_"])?
        .into_values()
        .flat_map(|[v]| v)
        .map(|v| Ok((v, domain(v)?)))
        .collect::<Result<_, EnvError>>()?;
    let servers = dns_servers.unwrap_or(foreign.servers);
    let search_tail = if dns_search.is_empty() {
        foreign.domain_search
    } else {
        dns_search
    };

    let mut spec = DnsSpec::default();
    for (var, server) in servers {
        if !spec.servers.contains(&server) {
            if spec.servers.len() == MAX_DNS_SERVERS {
                return Err(too_many(var.name, MAX_DNS_SERVERS, "DNS servers"));
            }
            spec.servers.push(server);
        }
    }
    for (var, name) in foreign.domain.into_iter().chain(search_tail) {
        if !spec.search.contains(&name) {
            if spec.search.len() == MAX_SEARCH_DOMAINS {
                return Err(too_many(var.name, MAX_SEARCH_DOMAINS, "search domains"));
            }
            spec.search.push(name);
        }
    }
    Ok(spec)
}

/// Parsed values with the variable each came from (for errors about limits).
type Found<'a, T> = Vec<(Var<'a>, T)>;

#[derive(Default)]
struct ForeignDns<'a> {
    servers: Found<'a, IpAddr>,
    domain: Found<'a, DomainName>,
    domain_search: Found<'a, DomainName>,
}

/// `foreign_option_N` in N order (OpenVPN does not keep push order, N order is at least
/// deterministic). Only the dhcp-options vpn-ns uses are validated; the rest are skipped
/// unread, so that an exotic but harmless push does not break the connection.
fn foreign_dns<'a>(env: &Env<'a>) -> Result<ForeignDns<'a>, EnvError> {
    let options = env.group(["foreign_option_"])?;
    if let Some((n, _)) = options.iter().nth(MAX_FOREIGN_OPTIONS) {
        return Err(too_many(
            &format!("foreign_option_{n}"),
            MAX_FOREIGN_OPTIONS,
            "foreign options",
        ));
    }
    let mut out = ForeignDns::default();
    for var in options.into_values().flat_map(|[v]| v) {
        let mut words = var.value.split_ascii_whitespace();
        let (Some("dhcp-option"), Some(kind)) = (words.next(), words.next()) else {
            tracing::debug!("ignoring {}={:?}", var.name, shorten(var.value));
            continue;
        };
        if !matches!(kind, "DNS" | "DNS6" | "DOMAIN" | "DOMAIN-SEARCH") {
            tracing::debug!("ignoring {}={:?}", var.name, shorten(var.value));
            continue;
        }
        check(var)?;
        let (Some(arg), None) = (words.next(), words.next()) else {
            return Err(invalid_var(
                var,
                format!("expected `dhcp-option {kind} <one value>`"),
            ));
        };
        let arg_var = Var {
            name: var.name,
            value: arg,
        };
        match kind {
            // OpenVPN documents `DNS` as IPv4 or IPv6; `DNS6` as IPv6 only.
            "DNS" => out.servers.push((var, ip(arg_var, "an IP address")?)),
            "DNS6" => match ip(arg_var, "an IPv6 address")? {
                IpAddr::V6(a) => out.servers.push((var, IpAddr::V6(a))),
                IpAddr::V4(_) => return Err(invalid_var(var, "DNS6 needs an IPv6 address")),
            },
            "DOMAIN" => out.domain.push((var, domain(arg_var)?)),
            _ => out.domain_search.push((var, domain(arg_var)?)),
        }
    }
    Ok(out)
}

/// `dns_server_N_address_M` ordered by (N, M), or None when there is none at all. A server
/// with a `dns_server_N_port_M` other than 53 is skipped: resolv.conf cannot express ports.
fn dns_option_servers<'a>(env: &Env<'a>) -> Result<Option<Found<'a, IpAddr>>, EnvError> {
    let mut addresses: BTreeMap<(i32, u32), Var> = BTreeMap::new();
    let mut ports: BTreeMap<(i32, u32), Var> = BTreeMap::new();
    for var in env.vars_with_prefix("dns_server_") {
        let (n, field) = var.name["dns_server_".len()..]
            .split_once('_')
            .and_then(|(n, field)| Some((priority(n)?, field)))
            .ok_or_else(|| bad_name(var))?;
        let (map, m) = if let Some(m) = field.strip_prefix("address_") {
            (&mut addresses, m)
        } else if let Some(m) = field.strip_prefix("port_") {
            (&mut ports, m)
        } else {
            // resolve_domain_M, dnssec, transport, sni: nothing resolv.conf can express.
            tracing::debug!("ignoring {}={:?}", var.name, shorten(var.value));
            continue;
        };
        map.insert((n, index(m).ok_or_else(|| bad_name(var))?), var);
    }
    if addresses.is_empty() && ports.is_empty() {
        return Ok(None);
    }
    if let Some(((n, m), port)) = ports.iter().find(|(k, _)| !addresses.contains_key(k)) {
        return Err(missing_with(
            &format!("dns_server_{n}_address_{m}"),
            [Some(*port)],
        ));
    }
    let mut servers = Vec::new();
    for (key, var) in addresses {
        let addr = ip(var, "an IP address")?;
        if let Some(port) = ports.get(&key) {
            let p = number(*port, 1, 65535)?;
            if p != 53 {
                tracing::warn!(
                    "skipping DNS server {addr} port {p} ({}): resolv.conf can only use port 53",
                    var.name
                );
                continue;
            }
        }
        servers.push((var, addr));
    }
    Ok(Some(servers))
}

/// A `--dns server` id: an index, or a negative or zero priority as written in a config.
fn priority(s: &str) -> Option<i32> {
    match s.strip_prefix('-') {
        Some(digits) => index(digits).map(|n| -(n as i32)),
        None if s == "0" => Some(0),
        None => index(s).map(|n| n as i32),
    }
}
