//! Assertions on real state shared by the integration tests: what is inside a
//! connection's namespace, what is (not) in the sandbox host namespace, what is left
//! after down. Each looks at the system (ip, files, TCP answers), never at vpn-ns's
//! own account of it.

use std::time::Duration;

use crate::openvpn::{
    PUSHED_DNS, PUSHED_DOMAIN, SERVICE_PORT, SERVICE_REPLY, SERVICE_V4, SERVICE_V6,
};
use crate::{Sandbox, wait_until};

/// Bound for a client to connect (TLS handshake + up hook), generous for a loaded CI.
pub const CONNECT: Duration = Duration::from_secs(40);
/// Bound for answers that should already be there.
pub const SETTLE: Duration = Duration::from_secs(5);

pub fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

pub fn expect_ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The service answers from inside `ns`, over IPv4 and IPv6.
pub fn assert_service_inside(sb: &Sandbox, ns: &str) {
    for addr in [SERVICE_V4, SERVICE_V6] {
        let line = wait_until(SETTLE, || {
            sb.tcp_get(Some(ns), addr, SERVICE_PORT).and_then(|l| {
                if l == SERVICE_REPLY {
                    Ok(l)
                } else {
                    Err(format!("unexpected answer {l:?}"))
                }
            })
        });
        assert_eq!(
            line.as_deref(),
            Ok(SERVICE_REPLY),
            "the service at [{addr}]:{SERVICE_PORT} must answer from inside namespace {ns}"
        );
    }
}

/// Nothing of the VPN is visible in the sandbox host namespace: no tun device, no
/// route to the service, no answer from it.
pub fn assert_host_untouched(sb: &Sandbox) {
    assert!(
        !sb.has_tun(None),
        "a tun device is left in the host namespace: {:?}",
        sb.links_in(None)
    );
    for addr in [SERVICE_V4, SERVICE_V6] {
        let route = sb.route_get(None, addr);
        assert!(
            route.is_err(),
            "the host namespace has a route to {addr}: {route:?}"
        );
        let r = sb.tcp_get(None, addr, SERVICE_PORT);
        assert!(
            r.is_err(),
            "the service at {addr} answered from the host namespace: {r:?}"
        );
    }
}

/// Only `lo` and the tunnel in `ns`, and every route there goes through one of them.
pub fn assert_sealed(sb: &Sandbox, ns: &str, tun: &str) {
    assert_eq!(
        sb.links_in(Some(ns)),
        sorted(&["lo", tun]),
        "namespace {ns} must contain exactly lo and the tunnel"
    );
    for family in ["-4", "-6"] {
        let routes = expect_ok(sb.ip(Some(ns), &[family, "route", "show", "table", "all"]));
        for r in routes.lines() {
            assert!(
                r.contains(&format!(" dev {tun}")) || r.contains(" dev lo"),
                "route in {ns} not through {tun}: {r}\nall routes:\n{routes}"
            );
        }
    }
}

/// The pushed routes (203.0.113.0/24, fd00:203::/64) and the default route
/// (default-route defaults to true) are on the tunnel inside `ns`. The pushed routes
/// are checked by themselves: the default route alone would also reach the service.
pub fn assert_routes(sb: &Sandbox, ns: &str, tun: &str) {
    let dev = format!(" dev {tun}");
    let r4 = expect_ok(sb.ip(Some(ns), &["-4", "route", "show"]));
    assert!(
        r4.lines()
            .any(|l| l.starts_with("203.0.113.0/24 ") && l.contains(&dev)),
        "pushed route 203.0.113.0/24 missing in namespace {ns}:\n{r4}"
    );
    assert!(
        r4.lines()
            .any(|l| l.starts_with("default ") && l.contains(&dev)),
        "default route via {tun} missing in namespace {ns}:\n{r4}"
    );
    let r6 = expect_ok(sb.ip(Some(ns), &["-6", "route", "show"]));
    assert!(
        r6.lines()
            .any(|l| l.starts_with("fd00:203::/64 ") && l.contains(&dev)),
        "pushed route fd00:203::/64 missing in namespace {ns}:\n{r6}"
    );
}

/// resolv.conf (only the pushed server, the pushed domain) and nsswitch.conf.
pub fn assert_dns_files(sb: &Sandbox, ns: &str) {
    let path = format!("/etc/netns/{ns}/resolv.conf");
    let resolv = sb
        .read(&path)
        .unwrap_or_else(|| panic!("{path} is missing"));
    let nameservers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    assert_eq!(
        nameservers,
        vec![PUSHED_DNS],
        "{path} must name exactly the pushed DNS server:\n{resolv}"
    );
    assert!(
        resolv.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("search") && w.any(|d| d == PUSHED_DOMAIN)
        }),
        "{path} must have `search {PUSHED_DOMAIN}`:\n{resolv}"
    );
    let path = format!("/etc/netns/{ns}/nsswitch.conf");
    let nss = sb
        .read(&path)
        .unwrap_or_else(|| panic!("{path} is missing"));
    assert!(
        nss.lines()
            .any(|l| l.split_whitespace().eq(["hosts:", "files", "dns"])),
        "{path} must contain `hosts: files dns`:\n{nss}"
    );
}

/// No trace of connection `conn` / namespace `ns` is left.
pub fn assert_gone(sb: &Sandbox, conn: &str, ns: &str) {
    assert!(
        !sb.netns_list().iter().any(|n| n == ns),
        "namespace {ns} is still there: {:?}",
        sb.netns_list()
    );
    assert!(
        !sb.exists(&format!("/run/netns/{ns}")),
        "/run/netns/{ns} is still there"
    );
    assert!(
        !sb.exists(&format!("/etc/netns/{ns}")),
        "/etc/netns/{ns} is still there: {:?}",
        sb.dir_entries(&format!("/etc/netns/{ns}"))
    );
    assert!(
        !sb.exists(&format!("/run/vpn-ns/{conn}.json")),
        "state /run/vpn-ns/{conn}.json is still there"
    );
}

/// `ip -n ns -o addr show dev tun`
pub fn addrs(sb: &Sandbox, ns: &str, tun: &str) -> String {
    expect_ok(sb.ip(Some(ns), &["-o", "addr", "show", "dev", tun]))
}

/// Nothing at all was created by vpn-ns in the sandbox.
pub fn assert_nothing_created(sb: &Sandbox) {
    assert_eq!(sb.netns_list(), Vec::<String>::new(), "namespaces created");
    for d in ["/run/netns", "/etc/netns", "/run/vpn-ns"] {
        assert_eq!(
            sb.dir_entries(d),
            Vec::<String>::new(),
            "{d} must stay empty"
        );
    }
    assert!(
        !sb.has_tun(None),
        "tun device created in the host namespace"
    );
}
