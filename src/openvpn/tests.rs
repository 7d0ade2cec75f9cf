use super::*;
use crate::spec::{DnsSpec, DomainName};

// DNS from foreign options and the --dns variables.
mod dns;
// Values a hostile server may push, and how errors show them.
mod hostile;

/// The variable an error is about.
fn var(err: &EnvError) -> &str {
    match err {
        EnvError::Missing { variable, .. }
        | EnvError::Invalid { variable, .. }
        | EnvError::TooMany { variable, .. } => variable,
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What OpenVPN 2.6 exports at `up` for a `topology subnet` server with IPv6.
fn subnet_env() -> BTreeMap<String, String> {
    env(&[
        ("script_type", "up"),
        ("script_context", "init"),
        ("dev", "tun0"),
        ("dev_type", "tun"),
        ("tun_mtu", "1500"),
        ("ifconfig_local", "100.64.0.2"),
        ("ifconfig_netmask", "255.255.255.0"),
        ("route_vpn_gateway", "100.64.0.1"),
        ("route_net_gateway", "192.168.1.1"),
        ("route_network_1", "203.0.113.0"),
        ("route_netmask_1", "255.255.255.0"),
        ("route_gateway_1", "100.64.0.1"),
        ("ifconfig_ipv6_local", "fd00:64::1000"),
        ("ifconfig_ipv6_netbits", "64"),
        ("ifconfig_ipv6_remote", "fd00:64::1"),
        ("route_ipv6_network_1", "fd00:203::/64"),
        ("route_ipv6_gateway_1", "fd00:64::1"),
        ("foreign_option_1", "dhcp-option DNS 203.0.113.53"),
        ("foreign_option_2", "dhcp-option DOMAIN vpn.example"),
        ("config", "/etc/openvpn/client/work.conf"),
        ("common_name", "vpn.example"),
        ("trusted_ip", "198.51.100.7"),
        ("link_mtu", "0"),
    ])
}

fn with(
    mut base: BTreeMap<String, String>,
    changes: &[(&str, Option<&str>)],
) -> BTreeMap<String, String> {
    for (k, v) in changes {
        match v {
            Some(v) => base.insert(k.to_string(), v.to_string()),
            None => base.remove(*k),
        };
    }
    base
}

fn spec(env: &BTreeMap<String, String>) -> NetworkSpec {
    parse_env(env).unwrap().spec.unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(list: &[&str]) -> Vec<DomainName> {
    list.iter().map(|d| d.parse().unwrap()).collect()
}

#[test]
fn subnet_topology() {
    let ev = parse_env(&subnet_env()).unwrap();
    assert_eq!(ev.phase, Phase::Up);
    assert_eq!(ev.context, Context::Init);
    assert_eq!(ev.dev_type, DevType::Tun);
    assert_eq!(ev.signal, None);
    let want = NetworkSpec {
        device: "tun0".parse().unwrap(),
        mtu: Some(1500),
        addresses: vec![
            Address {
                local: net("100.64.0.2/24"),
                peer: None,
            },
            Address {
                local: net("fd00:64::1000/64"),
                peer: None,
            },
        ],
        routes: vec![
            Route {
                dest: net("203.0.113.0/24"),
                gateway: Some(ip("100.64.0.1")),
                metric: None,
            },
            Route {
                dest: net("fd00:203::/64"),
                gateway: Some(ip("fd00:64::1")),
                metric: None,
            },
        ],
        gateway_v4: Some("100.64.0.1".parse().unwrap()),
        gateway_v6: Some("fd00:64::1".parse().unwrap()),
        dns: DnsSpec {
            servers: vec![ip("203.0.113.53")],
            search: names(&["vpn.example"]),
        },
    };
    assert_eq!(ev.spec, Some(want));
}

#[test]
fn net30_topology() {
    let e = env(&[
        ("script_type", "up"),
        ("dev", "tun1"),
        ("tun_mtu", "1400"),
        ("ifconfig_local", "10.8.0.6"),
        ("ifconfig_remote", "10.8.0.5"),
        ("route_network_1", "10.8.0.1"),
        ("route_netmask_1", "255.255.255.255"),
        ("route_gateway_1", "10.8.0.5"),
        ("route_metric_1", "100"),
    ]);
    let ev = parse_env(&e).unwrap();
    assert_eq!(
        ev.context,
        Context::Init,
        "missing script_context means init"
    );
    let s = ev.spec.unwrap();
    assert_eq!(
        s.addresses,
        vec![Address {
            local: net("10.8.0.6/32"),
            peer: Some(ip("10.8.0.5"))
        }]
    );
    assert_eq!(
        s.gateway_v4,
        Some("10.8.0.5".parse().unwrap()),
        "falls back to ifconfig_remote"
    );
    assert_eq!(s.gateway_v6, None);
    assert_eq!(
        s.routes,
        vec![Route {
            dest: net("10.8.0.1/32"),
            gateway: Some(ip("10.8.0.5")),
            metric: Some(100)
        }]
    );
    assert_eq!(s.dns, DnsSpec::default());
}

#[test]
fn netmask_wins_over_remote_and_tap_needs_netmask() {
    let s = spec(&with(
        subnet_env(),
        &[("ifconfig_remote", Some("100.64.0.1"))],
    ));
    assert_eq!(
        s.addresses[0],
        Address {
            local: net("100.64.0.2/24"),
            peer: None
        }
    );
    // Still validated although unused.
    let e = with(subnet_env(), &[("ifconfig_remote", Some("fd00::1"))]);
    assert_eq!(var(&parse_env(&e).unwrap_err()), "ifconfig_remote");

    let tap = with(
        subnet_env(),
        &[("dev", Some("tap0")), ("dev_type", Some("tap"))],
    );
    let ev = parse_env(&tap).unwrap();
    assert_eq!(ev.dev_type, DevType::Tap);
    assert_eq!(ev.spec.unwrap().addresses[0].local, net("100.64.0.2/24"));
    let tap_p2p = with(
        tap,
        &[
            ("ifconfig_netmask", None),
            ("ifconfig_remote", Some("100.64.0.1")),
        ],
    );
    assert_eq!(var(&parse_env(&tap_p2p).unwrap_err()), "ifconfig_netmask");
}

#[test]
fn address_requirements() {
    let none = with(
        subnet_env(),
        &[
            ("ifconfig_local", None),
            ("ifconfig_netmask", None),
            ("ifconfig_ipv6_local", None),
            ("ifconfig_ipv6_netbits", None),
            ("ifconfig_ipv6_remote", None),
        ],
    );
    let err = parse_env(&none).unwrap_err();
    assert_eq!(var(&err), "ifconfig_local");
    assert!(matches!(err, EnvError::Missing { .. }));

    let v6_only = with(
        subnet_env(),
        &[("ifconfig_local", None), ("ifconfig_netmask", None)],
    );
    let s = spec(&v6_only);
    assert_eq!(
        s.addresses,
        vec![Address {
            local: net("fd00:64::1000/64"),
            peer: None
        }]
    );
    assert_eq!(s.gateway_v4, Some("100.64.0.1".parse().unwrap()));

    let v4_only = with(
        subnet_env(),
        &[
            ("ifconfig_ipv6_local", None),
            ("ifconfig_ipv6_netbits", None),
            ("ifconfig_ipv6_remote", None),
        ],
    );
    assert_eq!(spec(&v4_only).gateway_v6, None);

    for (changes, want) in [
        (vec![("ifconfig_local", None)], "ifconfig_local"),
        (vec![("ifconfig_netmask", None)], "ifconfig_netmask"),
        (
            vec![("ifconfig_ipv6_netbits", None)],
            "ifconfig_ipv6_netbits",
        ),
        (vec![("ifconfig_ipv6_local", None)], "ifconfig_ipv6_local"),
    ] {
        let err = parse_env(&with(subnet_env(), &changes)).unwrap_err();
        assert_eq!(var(&err), want, "{err}");
    }
}

#[test]
fn unspecified_gateways_mean_none() {
    let s = spec(&with(
        subnet_env(),
        &[
            ("route_gateway_1", Some("0.0.0.0")),
            ("route_ipv6_gateway_1", Some("::")),
            ("ifconfig_ipv6_remote", Some("::")),
            ("route_ipv6_metric_1", Some("0")),
            ("route_vpn_gateway", None),
            ("tun_mtu", None),
        ],
    ));
    assert_eq!(s.routes[0].gateway, None);
    assert_eq!(
        s.routes[1],
        Route {
            dest: net("fd00:203::/64"),
            gateway: None,
            metric: Some(0)
        }
    );
    assert_eq!(s.gateway_v6, None);
    assert_eq!(
        s.gateway_v4, None,
        "subnet topology has no peer to fall back to"
    );
    assert_eq!(s.mtu, None);
}

#[test]
fn default_route_pieces_are_skipped_and_gaps_allowed() {
    let s = spec(&with(
        subnet_env(),
        &[
            ("route_network_2", Some("0.0.0.0")),
            ("route_netmask_2", Some("128.0.0.0")),
            ("route_network_3", Some("128.0.0.0")),
            ("route_netmask_3", Some("128.0.0.0")),
            ("route_network_4", Some("0.0.0.0")),
            ("route_netmask_4", Some("0.0.0.0")),
            ("route_network_9", Some("198.51.100.0")),
            ("route_netmask_9", Some("255.255.255.128")),
            ("route_network_10", Some("203.0.113.0")), // duplicate of route 1
            ("route_netmask_10", Some("255.255.255.0")),
            ("route_gateway_10", Some("100.64.0.1")),
            ("route_ipv6_network_2", Some("::/0")),
            ("route_ipv6_network_3", Some("::/1")),
            ("route_ipv6_network_4", Some("8000::/1")),
            ("route_ipv6_network_5", Some("2000::/3")),
            ("route_ipv6_network_6", Some("2001:db8::/32")),
        ],
    ));
    let dests: Vec<String> = s.routes.iter().map(|r| r.dest.to_string()).collect();
    assert_eq!(
        dests,
        [
            "203.0.113.0/24",
            "198.51.100.0/25",
            "fd00:203::/64",
            "2001:db8::/32"
        ]
    );
}

#[test]
fn route_limit() {
    let mut e = subnet_env();
    for n in 2..=1024 {
        e.insert(
            format!("route_network_{n}"),
            format!("10.{}.{}.0", n / 256, n % 256),
        );
        e.insert(format!("route_netmask_{n}"), "255.255.255.0".into());
    }
    // 1024 IPv4 routes + 1 IPv6 route.
    let err = parse_env(&e).unwrap_err();
    assert_eq!(var(&err), "route_ipv6_network_1");
    assert!(err.to_string().contains("1024"), "{err}");

    e.remove("route_ipv6_network_1");
    e.remove("route_ipv6_gateway_1");
    assert_eq!(spec(&e).routes.len(), 1024);
    e.insert("route_network_1025".into(), "10.200.0.0".into());
    e.insert("route_netmask_1025".into(), "255.255.255.0".into());
    let err = parse_env(&e).unwrap_err();
    assert_eq!(
        err,
        EnvError::TooMany {
            variable: "route_network_1025".into(),
            limit: 1024,
            what: "routes"
        }
    );
}

#[test]
fn teardown_phases_do_not_read_the_network_config() {
    let e = env(&[
        ("script_type", "down"),
        ("script_context", "restart"),
        ("dev", "tun0"),
        ("signal", "sigusr1"),
        ("route_network_1", "garbage"),
        ("ifconfig_local", "not an address"),
    ]);
    let ev = parse_env(&e).unwrap();
    assert_eq!(
        ev,
        HookEvent {
            phase: Phase::Down,
            context: Context::Restart,
            device: "tun0".parse().unwrap(),
            dev_type: DevType::Tun,
            signal: Some("sigusr1".into()),
            spec: None,
        }
    );
    for (t, phase) in [
        ("route-up", Phase::RouteUp),
        ("route-pre-down", Phase::RoutePreDown),
    ] {
        let ev = parse_env(&with(e.clone(), &[("script_type", Some(t))])).unwrap();
        assert_eq!((ev.phase, ev.spec), (phase, None));
    }
    // Internal OpenVPN reasons are longer than the documented ones.
    let ev = parse_env(&with(
        e.clone(),
        &[("signal", Some("server-pushed-connection-reset"))],
    ));
    assert_eq!(
        ev.unwrap().signal.as_deref(),
        Some("server-pushed-connection-reset")
    );
    // Identity is still validated.
    let err = parse_env(&with(e, &[("dev", Some("../x"))])).unwrap_err();
    assert_eq!(var(&err), "dev");
}

#[test]
fn missing_identity() {
    let err = parse_env(&BTreeMap::new()).unwrap_err();
    assert_eq!(var(&err), "script_type");
    assert!(err.to_string().contains("--up/--down script"), "{err}");
    let err = parse_env(&env(&[("script_type", "down")])).unwrap_err();
    assert_eq!(
        err,
        EnvError::Missing {
            variable: "dev".into(),
            hint: String::new()
        }
    );
}

#[test]
fn process_env_keeps_utf8_variables() {
    let env = from_process_env();
    for (k, v) in std::env::vars_os() {
        if let (Some(k), Some(v)) = (k.to_str(), v.to_str()) {
            assert_eq!(env.get(k).map(String::as_str), Some(v));
        }
    }
}
