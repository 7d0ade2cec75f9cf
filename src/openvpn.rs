//! The environment OpenVPN 2.6 gives its `--up`/`--down`/`--route-up`/`--route-pre-down`
//! scripts, turned into a validated [`HookEvent`].
//!
//! Most of these values are pushed by the VPN server, which may be hostile: everything is
//! parsed strictly (no surrounding whitespace, no control or non-ASCII characters, no
//! signs or leading zeros in numbers, the right address family in every field), and every
//! error names the variable and shows the offending value, escaped and shortened.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod conf;
mod dns;
mod vars;
use vars::{
    Env, Var, bad_name, check, domain, index, invalid, invalid_var, ip, ipv4, ipv6, missing,
    missing_with, number, shorten, too_many,
};

use crate::spec::{Address, InterfaceName, IpNet, NetworkSpec, Route, netmask_to_prefix};

/// Routes (IPv4 and IPv6 together) accepted from one push.
const MAX_ROUTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Up,
    Down,
    RouteUp,
    RoutePreDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Init,
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    Tun,
    Tap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub phase: Phase,
    pub context: Context,
    pub device: InterfaceName,
    pub dev_type: DevType,
    /// Why OpenVPN is going down or restarting (`sigterm`, `ping-restart`, ...).
    pub signal: Option<String>,
    /// Only for [`Phase::Up`]: the full network configuration.
    pub spec: Option<NetworkSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("OpenVPN variable {variable} is missing{hint}")]
    Missing { variable: String, hint: String },
    #[error("OpenVPN variable {variable}={value:?}: {reason}")]
    Invalid {
        variable: String,
        /// Shortened to about 80 characters.
        value: String,
        reason: String,
    },
    #[error("OpenVPN variable {variable}: more than {limit} {what}")]
    TooMany {
        variable: String,
        limit: usize,
        what: &'static str,
    },
}

/// The process environment for [`parse_env`]. Variables whose *name* is not UTF-8 cannot be
/// OpenVPN's and are skipped. Non-UTF-8 *values* are kept, converted lossily: U+FFFD is not
/// ASCII, which every check here refuses, so such a value fails with an error naming its
/// variable instead of silently disappearing (which would turn an optional value, such as a
/// route gateway, into "absent").
pub fn from_process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .collect()
}

/// Parses the environment of one OpenVPN script call. Only `up` carries a [`NetworkSpec`];
/// the other phases validate just what identifies the event.
pub fn parse_env(env: &BTreeMap<String, String>) -> Result<HookEvent, EnvError> {
    let env = Env(env);
    let phase = match env.get("script_type")? {
        None => {
            return Err(missing(
                "script_type",
                " (vpn-ns hook openvpn must be run by OpenVPN as --up/--down script)",
            ));
        }
        Some("up") => Phase::Up,
        Some("down") => Phase::Down,
        Some("route-up") => Phase::RouteUp,
        Some("route-pre-down") => Phase::RoutePreDown,
        Some(v) => {
            return Err(invalid(
                "script_type",
                v,
                "expected up, down, route-up or route-pre-down",
            ));
        }
    };
    let dev = env.require("dev")?;
    // Stricter than the kernel (which would take `$(reboot)`): the name ends up in logs,
    // state files and commands users copy, and real OpenVPN devices never need more.
    let device = Some(dev)
        .filter(|d| {
            d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        })
        .and_then(|d| d.parse::<InterfaceName>().ok())
        .ok_or_else(|| {
            invalid(
                "dev",
                dev,
                "not an interface name (1-15 of A-Z a-z 0-9 _ . -, not '.' or '..')",
            )
        })?;
    let dev_type = match env.get("dev_type")? {
        None | Some("tun") => DevType::Tun,
        Some("tap") => DevType::Tap,
        Some(v) => return Err(invalid("dev_type", v, "expected tun or tap")),
    };
    let context = match env.get("script_context")? {
        None | Some("init") => Context::Init,
        Some("restart") => Context::Restart,
        Some(v) => return Err(invalid("script_context", v, "expected init or restart")),
    };
    // OpenVPN's signal texts go beyond the documented `sigterm`/`ping-restart`: it also
    // passes internal reasons such as `exit-with-notification` or
    // `server-pushed-connection-reset`. Refusing one would break teardown, so accept any
    // short identifier.
    let signal = match env.get("signal")? {
        Some(v)
            if v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(v.to_owned())
        }
        Some(v) => return Err(invalid("signal", v, "expected up to 64 of [A-Za-z0-9_-]")),
        None => None,
    };
    let spec = match phase {
        Phase::Up => Some(parse_spec(&env, &device, dev_type)?),
        _ => None,
    };
    Ok(HookEvent {
        phase,
        context,
        device,
        dev_type,
        signal,
        spec,
    })
}

fn parse_spec(
    env: &Env,
    device: &InterfaceName,
    dev_type: DevType,
) -> Result<NetworkSpec, EnvError> {
    let mtu = match env.var("tun_mtu") {
        Some(v) => Some(number(v, 68, 65535)? as u32),
        None => None,
    };
    let (v4, p2p_peer) = ipv4_address(env, dev_type)?;
    let (v6, gateway_v6) = ipv6_address(env)?;
    if v4.is_none() && v6.is_none() {
        return Err(missing(
            "ifconfig_local",
            " (no IPv4 or IPv6 address was configured: the server pushed no ifconfig/ifconfig-ipv6)",
        ));
    }
    let gateway_v4 = match env.var("route_vpn_gateway") {
        Some(v) => Some(ipv4(v)?).filter(|g| !g.is_unspecified()),
        None => p2p_peer,
    };
    Ok(NetworkSpec {
        device: device.clone(),
        mtu,
        addresses: v4.into_iter().chain(v6).collect(),
        routes: routes(env)?,
        gateway_v4,
        gateway_v6,
        dns: dns::parse(env)?,
    })
}

/// The IPv4 address and, for p2p/net30 topology, the peer.
fn ipv4_address(
    env: &Env,
    dev_type: DevType,
) -> Result<(Option<Address>, Option<Ipv4Addr>), EnvError> {
    let netmask = env.var("ifconfig_netmask");
    let remote = env.var("ifconfig_remote");
    let Some(local_var) = env.var("ifconfig_local") else {
        if let Some(other) = netmask.or(remote) {
            return Err(missing(
                "ifconfig_local",
                &format!(" ({} is set)", other.name),
            ));
        }
        return Ok((None, None));
    };
    let local = ipv4(local_var)?;
    if local.is_unspecified() || local.is_loopback() || local.is_multicast() || local.is_broadcast()
    {
        return Err(invalid_var(local_var, "not usable as an interface address"));
    }
    // OpenVPN exports exactly one of the two (netmask for topology subnet and tap, remote for
    // p2p/net30). Both can only come from a stale or forged environment; the netmask form is
    // what OpenVPN itself passes to the up script for subnet, and it adds no peer route, so
    // it wins. The remote is still validated.
    let remote = remote
        .map(|v| Ok::<_, EnvError>((v, ipv4(v)?)))
        .transpose()?;
    if let Some(mask_var) = netmask {
        let prefix = netmask_to_prefix(ipv4(mask_var)?).map_err(|e| invalid_var(mask_var, e.0))?;
        let net = IpNet::new(IpAddr::V4(local), prefix).map_err(|e| invalid_var(mask_var, e.0))?;
        if is_default_piece(&net.network()) {
            return Err(invalid_var(
                mask_var,
                "the interface route would cover the default route (decided by vpn-ns default-route)",
            ));
        }
        return Ok((
            Some(Address {
                local: net,
                peer: None,
            }),
            None,
        ));
    }
    let Some((remote_var, remote)) = remote else {
        return Err(missing(
            "ifconfig_netmask",
            " (ifconfig_local is set but neither ifconfig_netmask nor ifconfig_remote)",
        ));
    };
    if dev_type == DevType::Tap {
        return Err(missing(
            "ifconfig_netmask",
            " (a tap device needs a netmask; ifconfig_remote is only for tun p2p)",
        ));
    }
    if remote == local || remote.is_unspecified() || remote.is_multicast() || remote.is_broadcast()
    {
        return Err(invalid_var(remote_var, "not usable as the peer address"));
    }
    let local = IpNet::new(IpAddr::V4(local), 32).map_err(|e| invalid_var(local_var, e.0))?;
    Ok((
        Some(Address {
            local,
            peer: Some(IpAddr::V4(remote)),
        }),
        Some(remote),
    ))
}

/// The IPv6 address and the IPv6 gateway (`ifconfig_ipv6_remote`).
fn ipv6_address(env: &Env) -> Result<(Option<Address>, Option<Ipv6Addr>), EnvError> {
    let netbits = env.var("ifconfig_ipv6_netbits");
    let remote = env.var("ifconfig_ipv6_remote");
    let Some(local_var) = env.var("ifconfig_ipv6_local") else {
        if let Some(other) = netbits.or(remote) {
            return Err(missing(
                "ifconfig_ipv6_local",
                &format!(" ({} is set)", other.name),
            ));
        }
        return Ok((None, None));
    };
    let local = ipv6(local_var)?;
    if local.is_unspecified() || local.is_loopback() || local.is_multicast() {
        return Err(invalid_var(local_var, "not usable as an interface address"));
    }
    let Some(bits_var) = netbits else {
        return Err(missing(
            "ifconfig_ipv6_netbits",
            " (ifconfig_ipv6_local is set)",
        ));
    };
    let bits = number(bits_var, 0, 128)? as u8;
    let net = IpNet::new(IpAddr::V6(local), bits).map_err(|e| invalid_var(bits_var, e.0))?;
    if is_default_piece(&net.network()) {
        return Err(invalid_var(
            bits_var,
            "the interface route would cover the default route (decided by vpn-ns default-route)",
        ));
    }
    // OpenVPN prints `::` when no remote was given.
    let gateway = match remote {
        Some(v) => Some(ipv6(v)?).filter(|g| !g.is_unspecified()),
        None => None,
    };
    Ok((
        Some(Address {
            local: net,
            peer: None,
        }),
        gateway,
    ))
}

/// Pushed routes, IPv4 then IPv6, each in index order. Gaps in the numbering are fine (a
/// forged environment may have them); a half-defined route is not.
fn routes(env: &Env) -> Result<Vec<Route>, EnvError> {
    let v4 = env.group([
        "route_network_",
        "route_netmask_",
        "route_gateway_",
        "route_metric_",
    ])?;
    let v6 = env.group([
        "route_ipv6_network_",
        "route_ipv6_gateway_",
        "route_ipv6_metric_",
    ])?;
    // Named by the first variable of the route past the limit.
    fn first<'a>(vars: &[Option<Var<'a>>]) -> &'a str {
        vars.iter().flatten().next().map_or("", |v| v.name)
    }
    let mut names = v4
        .values()
        .map(|v| first(v))
        .chain(v6.values().map(|v| first(v)));
    if let Some(variable) = names.nth(MAX_ROUTES) {
        return Err(too_many(variable, MAX_ROUTES, "routes"));
    }
    let mut routes: Vec<Route> = Vec::new();
    for (n, [network, netmask, gateway, metric]) in &v4 {
        let Some(network) = *network else {
            return Err(missing_with(
                &format!("route_network_{n}"),
                [*netmask, *gateway, *metric],
            ));
        };
        let Some(netmask) = *netmask else {
            return Err(missing_with(&format!("route_netmask_{n}"), [Some(network)]));
        };
        let addr = ipv4(network)?;
        let prefix = netmask_to_prefix(ipv4(netmask)?).map_err(|e| invalid_var(netmask, e.0))?;
        let dest = IpNet::new(IpAddr::V4(addr), prefix).map_err(|e| invalid_var(netmask, e.0))?;
        let gateway = match *gateway {
            Some(g) => Some(ipv4(g)?)
                .filter(|g| !g.is_unspecified())
                .map(IpAddr::V4),
            None => None,
        };
        push_route(&mut routes, network, dest, gateway, *metric)?;
    }
    for (n, [network, gateway, metric]) in &v6 {
        let Some(network) = *network else {
            return Err(missing_with(
                &format!("route_ipv6_network_{n}"),
                [*gateway, *metric],
            ));
        };
        let text = check(network)?;
        let dest: IpNet = match text.parse::<IpNet>() {
            Ok(d) if d.is_ipv4() => {
                return Err(invalid_var(network, "an IPv4 network, expected IPv6"));
            }
            Ok(d) if text.contains('/') => d,
            _ => {
                return Err(invalid_var(
                    network,
                    "expected an IPv6 network in CIDR form (fd00:1::/64)",
                ));
            }
        };
        // `::` is what OpenVPN prints for "no gateway".
        let gateway = match *gateway {
            Some(g) => Some(ipv6(g)?)
                .filter(|g| !g.is_unspecified())
                .map(IpAddr::V6),
            None => None,
        };
        push_route(&mut routes, network, dest, gateway, *metric)?;
    }
    Ok(routes)
}

fn push_route(
    routes: &mut Vec<Route>,
    network: Var,
    dest: IpNet,
    gateway: Option<IpAddr>,
    metric: Option<Var>,
) -> Result<(), EnvError> {
    // OpenVPN refuses (IPv4) or clears (IPv6) host bits before exporting a route, so a value
    // with host bits did not come from OpenVPN's own checks.
    if dest.network() != dest {
        return Err(invalid_var(
            network,
            "host bits are set for this prefix length",
        ));
    }
    let metric = match metric {
        Some(m) => Some(number(m, 0, u64::from(u32::MAX))? as u32),
        None => None,
    };
    if is_default_piece(&dest) {
        tracing::debug!(
            "ignoring pushed route {dest} ({}): default routing is set by vpn-ns",
            network.name
        );
        return Ok(());
    }
    let route = Route {
        dest,
        gateway,
        metric,
    };
    if !routes.contains(&route) {
        routes.push(route);
    }
    Ok(())
}

/// 0.0.0.0/0 and the `redirect-gateway def1` halves, ::/0 and the `redirect-gateway ipv6`
/// pieces (::/1, 8000::/1, 2000::/3). `net` must have its host bits cleared.
fn is_default_piece(net: &IpNet) -> bool {
    match net.addr() {
        IpAddr::V4(_) => net.prefix() <= 1,
        IpAddr::V6(a) => net.prefix() <= 1 || (net.prefix() == 3 && a.segments()[0] == 0x2000),
    }
}

#[cfg(test)]
mod tests;
