//! WireGuard: wg-quick files -> `NetworkSpec` + device configuration, and the device
//! itself (userspace implementation over the UAPI socket, or a kernel link).

pub mod builtin;
pub mod device;
pub mod kernel;
pub mod key;
pub mod parse;
pub mod peers;
pub mod uapi;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::netlink::{Link, RouteInfo};
use crate::spec::{Address, InterfaceName, NetworkSpec, Route};

pub use parse::{WgConfig, WgError};

/// wg-quick subtracts this from the uplink MTU (IPv6 + UDP + WireGuard overhead).
pub const OVERHEAD: u32 = 80;
/// What wg-quick assumes when it finds no route to any endpoint.
pub const FALLBACK_UPLINK_MTU: u32 = 1500;

/// The spec for `device` from `cfg`. `mtu` is the MTU to set when the file has none
/// (`None`: leave the device's). `default_routes`: install a default route for a family
/// whose AllowedIPs contain `/0` (only inside an isolated namespace; never on the host).
pub fn spec(
    cfg: &WgConfig,
    device: &InterfaceName,
    mtu: Option<u32>,
    default_routes: bool,
) -> NetworkSpec {
    let mut routes: Vec<Route> = Vec::new();
    for ip in cfg.peers.iter().flat_map(|p| &p.allowed_ips) {
        if ip.is_default() && !default_routes {
            continue;
        }
        let dest = ip.network();
        if !routes.iter().any(|r| r.dest == dest) {
            routes.push(Route {
                dest,
                gateway: None,
                metric: None,
            });
        }
    }
    NetworkSpec {
        device: device.clone(),
        mtu: cfg.interface.mtu.or(mtu),
        addresses: cfg
            .interface
            .addresses
            .iter()
            .map(|a| Address {
                local: *a,
                peer: None,
            })
            .collect(),
        routes,
        gateway_v4: None,
        gateway_v6: None,
        dns: cfg.interface.dns.clone(),
    }
}

/// Resolves each peer's endpoint (in the calling thread's namespace: the host's, where
/// the encrypted traffic goes). The first address of a name wins, as with `wg`.
pub fn resolve_endpoints(cfg: &WgConfig) -> Result<Vec<Option<SocketAddr>>, WgError> {
    cfg.peers
        .iter()
        .map(|p| {
            let Some(ep) = &p.endpoint else {
                return Ok(None);
            };
            if let Ok(ip) = ep.host.parse::<IpAddr>() {
                return Ok(Some(SocketAddr::new(ip, ep.port)));
            }
            let syntax = |msg: String| WgError::Syntax {
                path: cfg.path.clone(),
                line: ep.line,
                msg,
            };
            (ep.host.as_str(), ep.port)
                .to_socket_addrs()
                .map_err(|e| syntax(format!("cannot resolve Endpoint {ep}: {e}")))?
                .next()
                .map(Some)
                .ok_or_else(|| syntax(format!("Endpoint {ep} has no address")))
        })
        .collect()
}

/// wg-quick's MTU rule when the file sets none: the largest MTU among the links that
/// route to the endpoints (else the default route's link, else 1500), minus 80.
/// Route `mtu` attributes are not considered; the link's MTU is.
pub fn default_mtu(endpoints: &[SocketAddr], routes: &[RouteInfo], links: &[Link]) -> u32 {
    let link_mtu = |r: &RouteInfo| {
        r.oif
            .and_then(|i| links.iter().find(|l| l.index == i))
            .and_then(|l| l.mtu)
    };
    let best_route = |ip: IpAddr| {
        routes
            .iter()
            .filter(|r| r.dest.contains(ip))
            .max_by_key(|r| (r.dest.prefix(), std::cmp::Reverse(r.metric.unwrap_or(0))))
    };
    let mut mtu = endpoints
        .iter()
        .filter_map(|e| best_route(e.ip()).and_then(link_mtu))
        .max()
        .unwrap_or(0);
    if mtu == 0 {
        mtu = routes
            .iter()
            .filter(|r| r.dest.is_default() && r.dest.is_ipv4())
            .find_map(link_mtu)
            .unwrap_or(0);
    }
    if mtu == 0 {
        mtu = FALLBACK_UPLINK_MTU;
    }
    mtu.saturating_sub(OVERHEAD)
}

/// A warning when the file holding a private key is readable by other users.
pub fn permission_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "{} holds a private key and is readable by every user (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// Warnings about keys the native path does not act on.
pub fn native_warnings(cfg: &WgConfig) -> Vec<String> {
    let mut w: Vec<String> = cfg
        .interface
        .wg_quick_only
        .iter()
        .map(|(k, line)| {
            format!(
                "{}:{line}: {k} is a wg-quick option and is ignored by `vpn-ns up`",
                cfg.path.display()
            )
        })
        .collect();
    if let Some(t) = &cfg.interface.table
        && !t.eq_ignore_ascii_case("off")
        && !t.eq_ignore_ascii_case("auto")
    {
        w.push(format!(
            "{}: Table = {t} is ignored by `vpn-ns up`: routes go to the namespace's main table",
            cfg.path.display()
        ));
    }
    w
}

/// The config file of a `wg-quick up|down CONFIG` command line, as wg-quick resolves it:
/// a path ending in `<iface>.conf` (relative to `cwd`), or a bare interface name for
/// `/etc/wireguard/<iface>.conf`. None unless it names `iface`.
pub fn wg_quick_config_arg(args: &[String], iface: &str, cwd: &Path) -> Option<PathBuf> {
    let at = args
        .iter()
        .position(|a| Path::new(a).file_name().is_some_and(|f| f == "wg-quick"))?;
    let (action, arg) = (args.get(at + 1)?, args.get(at + 2)?);
    if !matches!(action.as_str(), "up" | "down" | "save" | "strip") {
        return None;
    }
    if arg == iface {
        return Some(PathBuf::from(format!("/etc/wireguard/{iface}.conf")));
    }
    let p = Path::new(arg);
    let stem_ok =
        p.extension().is_some_and(|e| e == "conf") && p.file_stem().is_some_and(|s| s == iface);
    stem_ok.then(|| cwd.join(p))
}
