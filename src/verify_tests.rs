use super::*;

fn link(index: u32, name: &str) -> Link {
    Link {
        index,
        name: name.to_owned(),
        kind: None,
        mtu: Some(1500),
        up: true,
        rx_bytes: 0,
        tx_bytes: 0,
    }
}

fn addr(index: u32, cidr: &str) -> AddrInfo {
    AddrInfo {
        index,
        local: cidr.parse().unwrap(),
        peer: None,
    }
}

fn route(dest: &str, oif: Option<u32>) -> RouteInfo {
    RouteInfo {
        dest: dest.parse().unwrap(),
        gateway: None,
        oif,
        metric: None,
        scope_link_or_host: false,
    }
}

const LO: u32 = 1;
const TUN: u32 = 7;
const VETH: u32 = 9;

/// What a namespace looks like right after a dual-stack OpenVPN up.
fn sealed() -> Snapshot {
    Snapshot {
        recorded: Some(Recorded {
            up: true,
            isolated: true,
            netns: "work".to_owned(),
            device: Some("tun0".to_owned()),
            vpn_alive: Some(true),
        }),
        live: Some(Live {
            links: vec![link(LO, "lo"), link(TUN, "tun0")],
            addresses: vec![
                addr(LO, "127.0.0.1/8"),
                addr(LO, "::1/128"),
                addr(TUN, "100.64.0.2/24"),
                addr(TUN, "fd00:64::1000/64"),
                addr(TUN, "fe80::1234/64"),
            ],
            routes: vec![
                route("0.0.0.0/0", Some(TUN)),
                route("100.64.0.0/24", Some(TUN)),
                route("203.0.113.0/24", Some(TUN)),
                route("::1/128", Some(LO)),
                route("fd00:64::/64", Some(TUN)),
                route("fd00:203::/64", Some(TUN)),
                route("fe80::/64", Some(TUN)),
                route("::/0", Some(TUN)),
            ],
            resolv_conf: Some("# vpn-ns\nnameserver 203.0.113.53\nsearch vpn.example\n".into()),
            nsswitch: Some("passwd: files\nhosts: files dns\n".into()),
        }),
    }
}

fn live(s: &mut Snapshot) -> &mut Live {
    s.live.as_mut().unwrap()
}

fn result<'a>(r: &'a [CheckResult], name: &str) -> &'a CheckResult {
    r.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {r:?}"))
}

/// Only the named checks fail.
fn failing(s: &Snapshot) -> Vec<&'static str> {
    run_checks(s)
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect()
}

#[test]
fn sealed_namespace_passes_every_check() {
    let r = run_checks(&sealed());
    let names: Vec<&str> = r.iter().map(|c| c.name).collect();
    assert_eq!(names, [STATE, LINKS, ROUTES, IPV6, DNS, NSSWITCH]);
    assert!(r.iter().all(|c| c.ok), "{r:?}");
    assert!(result(&r, IPV6).detail.contains("tunnelled"));
}

#[test]
fn no_state_or_no_namespace_fails_state_only() {
    let r = run_checks(&Snapshot::default());
    assert_eq!(r.len(), 1);
    assert!(!r[0].ok && r[0].name == STATE && r[0].detail.contains("not up"));

    let mut s = sealed();
    s.live = None;
    let r = run_checks(&s);
    assert_eq!(failing(&s), [STATE]);
    assert!(r[0].detail.contains("does not exist"), "{r:?}");
}

#[test]
fn state_fails_when_down_not_isolated_or_vpn_gone() {
    for (edit, want) in [
        (
            (|r: &mut Recorded| r.up = false) as fn(&mut Recorded),
            "down",
        ),
        (|r: &mut Recorded| r.isolated = false, "not isolated"),
        (|r: &mut Recorded| r.vpn_alive = Some(false), "gone"),
    ] {
        let mut s = sealed();
        edit(s.recorded.as_mut().unwrap());
        let c = check_state(&s);
        assert!(!c.ok && c.detail.contains(want), "{c:?}");
    }
    let mut s = sealed();
    s.recorded.as_mut().unwrap().vpn_alive = None;
    assert!(check_state(&s).ok, "no recorded pid is not a failure");
}

#[test]
fn extra_link_fails_links() {
    let mut s = sealed();
    live(&mut s).links.push(link(VETH, "v1"));
    assert_eq!(failing(&s), [LINKS]);
    assert!(result(&run_checks(&s), LINKS).detail.contains("v1"));
}

#[test]
fn missing_tunnel_fails_links() {
    let mut s = sealed();
    live(&mut s).links.retain(|l| l.name == "lo");
    let r = run_checks(&s);
    let c = result(&r, LINKS);
    assert!(!c.ok && c.detail.contains("tun0 is missing"), "{c:?}");
    let mut s = sealed();
    s.recorded.as_mut().unwrap().device = None;
    assert!(!result(&run_checks(&s), LINKS).ok);
}

#[test]
fn route_out_another_device_fails_routes() {
    let mut s = sealed();
    let l = live(&mut s);
    l.links.push(link(VETH, "v1"));
    l.routes.push(route("192.0.2.0/24", Some(VETH)));
    let r = run_checks(&s);
    let c = result(&r, ROUTES);
    assert!(!c.ok && c.detail.contains("192.0.2.0/24 dev v1"), "{c:?}");
    assert!(result(&r, IPV6).ok, "an IPv4 leak is not an IPv6 one");
}

#[test]
fn route_without_device_is_not_trusted() {
    let mut s = sealed();
    let mut r = route("198.51.100.0/24", None);
    r.gateway = Some("198.51.100.1".parse().unwrap());
    live(&mut s).routes.push(r);
    let c = result(&run_checks(&s), ROUTES).clone();
    assert!(!c.ok && c.detail.contains("no output device"), "{c:?}");
}

#[test]
fn ipv6_route_outside_fails_ipv6_and_routes() {
    let mut s = sealed();
    let l = live(&mut s);
    l.links.push(link(VETH, "v1"));
    l.routes.push(route("fd00:99::/64", Some(VETH)));
    let f = failing(&s);
    assert!(f.contains(&IPV6) && f.contains(&ROUTES), "{f:?}");
}

#[test]
fn ipv6_absent_passes() {
    let mut s = sealed();
    let l = live(&mut s);
    l.addresses.retain(|a| a.local.is_ipv4() || a.index == LO);
    l.routes
        .retain(|r| r.dest.is_ipv4() || r.oif == Some(LO) || r.dest.to_string() == "fe80::/64");
    let r = run_checks(&s);
    let c = result(&r, IPV6);
    assert!(c.ok && c.detail.contains("no IPv6 route outside"), "{c:?}");
}

#[test]
fn dns_server_not_via_tunnel_fails() {
    let mut s = sealed();
    let l = live(&mut s);
    l.links.push(link(VETH, "v1"));
    l.routes.push(route("203.0.113.53/32", Some(VETH)));
    let r = run_checks(&s);
    let c = result(&r, DNS);
    assert!(!c.ok && c.detail.contains("dev v1"), "{c:?}");
}

#[test]
fn dns_longest_prefix_wins_over_default() {
    // A server covered only by the default route is still tunnelled.
    let mut s = sealed();
    live(&mut s).resolv_conf = Some("nameserver 198.51.100.53\n".into());
    assert!(result(&run_checks(&s), DNS).ok);
    // Without a default route it has no route at all.
    live(&mut s).routes.retain(|r| !r.dest.is_default());
    let c = result(&run_checks(&s), DNS).clone();
    assert!(!c.ok && c.detail.contains("no route"), "{c:?}");
}

#[test]
fn dns_loopback_local_or_garbage_fails() {
    for (conf, want) in [
        ("nameserver 127.0.0.53\n", "loopback"),
        ("nameserver ::1\n", "loopback"),
        ("nameserver 100.64.0.2\n", "address of the namespace"),
        ("nameserver fe80::1%eth0\n", "not an IP address"),
    ] {
        let mut s = sealed();
        live(&mut s).resolv_conf = Some(conf.into());
        let c = result(&run_checks(&s), DNS).clone();
        assert!(!c.ok && c.detail.contains(want), "{conf}: {c:?}");
    }
}

#[test]
fn dns_missing_file_fails_and_empty_file_fails_closed() {
    let mut s = sealed();
    live(&mut s).resolv_conf = None;
    assert_eq!(failing(&s), [DNS]);
    live(&mut s).resolv_conf = Some("# nothing pushed\n".into());
    let c = result(&run_checks(&s), DNS).clone();
    assert!(c.ok && c.detail.contains("fail closed"), "{c:?}");
}

#[test]
fn nsswitch_rules() {
    for (text, ok) in [
        (Some("hosts: files dns\n"), true),
        (
            Some("hosts:\tfiles [NOTFOUND=return] dns # comment resolve\n"),
            true,
        ),
        (
            Some("hosts: files mdns4_minimal [NOTFOUND=return] dns\n"),
            false,
        ),
        (Some("hosts: files resolve [!UNAVAIL=return] dns\n"), false),
        (Some("hosts: files dns myhostname\n"), false),
        (Some("# hosts: files dns\npasswd: files\n"), false),
        (None, false),
    ] {
        let mut s = sealed();
        live(&mut s).nsswitch = text.map(str::to_owned);
        let c = result(&run_checks(&s), NSSWITCH).clone();
        assert_eq!(c.ok, ok, "{text:?}: {c:?}");
    }
}

#[test]
fn resolv_conf_parser() {
    let r = parse_resolv_conf(
        "; c\n# nameserver 192.0.2.9\nnameserver 192.0.2.1\nnameserver  fd00::53\ndomain a.example\nsearch b.example c.example\nnameserver bogus\noptions ndots:2\n",
    );
    assert_eq!(
        r.servers,
        vec![
            Ok("192.0.2.1".parse().unwrap()),
            Ok("fd00::53".parse().unwrap()),
            Err("bogus".to_owned())
        ]
    );
    assert_eq!(r.search, ["b.example", "c.example"]);
}

#[test]
fn lookup_prefers_longest_prefix_then_metric() {
    let mut a = route("192.0.2.0/24", Some(1));
    a.metric = Some(10);
    let mut b = route("192.0.2.0/24", Some(2));
    b.metric = Some(5);
    let c = route("192.0.2.128/25", Some(3));
    let d = route("0.0.0.0/0", Some(4));
    let routes = vec![a, b, c, d];
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(lookup(&routes, ip("192.0.2.200")).unwrap().oif, Some(3));
    assert_eq!(lookup(&routes, ip("192.0.2.1")).unwrap().oif, Some(2));
    assert_eq!(lookup(&routes, ip("198.51.100.1")).unwrap().oif, Some(4));
    assert!(lookup(&routes, ip("fd00::1")).is_none());
}
