//! Values a hostile server may push: each refused with the variable named and the
//! value shown escaped and shortened.

use super::*;

#[test]
fn error_messages_escape_and_shorten() {
    let long = format!("{}\n", "a".repeat(200));
    let err = parse_env(&with(subnet_env(), &[("dev", Some(&long))])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("OpenVPN variable dev=\"aaaa"), "{msg}");
    assert!(!msg.contains('\n') && msg.len() < 200, "{msg}");

    let err = parse_env(&with(
        subnet_env(),
        &[("ifconfig_local", Some("1.2.3.4\nx"))],
    ))
    .unwrap_err();
    assert!(err.to_string().contains(r#""1.2.3.4\nx""#), "{err}");

    // A non-UTF-8 value, as from_process_env() passes it on.
    let lossy = String::from_utf8_lossy(b"10.0.0.\xff").into_owned();
    let err = parse_env(&with(subnet_env(), &[("route_gateway_1", Some(&lossy))])).unwrap_err();
    assert_eq!(var(&err), "route_gateway_1");
}

#[test]
fn hostile_values() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("dev", Some("tun0;rm -rf /"), "dev"),
        ("dev", Some("$(reboot)"), "dev"),
        ("dev", Some("../../etc"), "dev"),
        ("dev", Some("tun0123456789abc"), "dev"),
        ("dev", Some("tun\0"), "dev"),
        ("dev", Some(""), "dev"),
        ("dev_type", Some("tunnel"), "dev_type"),
        ("tun_mtu", Some("0"), "tun_mtu"),
        ("tun_mtu", Some("67"), "tun_mtu"),
        ("tun_mtu", Some("65536"), "tun_mtu"),
        ("tun_mtu", Some("99999999999"), "tun_mtu"),
        ("tun_mtu", Some("99999999999999999999999"), "tun_mtu"),
        ("tun_mtu", Some("1500 "), "tun_mtu"),
        ("tun_mtu", Some("+1500"), "tun_mtu"),
        ("tun_mtu", Some("-1"), "tun_mtu"),
        ("tun_mtu", Some("01500"), "tun_mtu"),
        ("tun_mtu", Some("1500\n"), "tun_mtu"),
        (
            "ifconfig_ipv6_netbits",
            Some("129"),
            "ifconfig_ipv6_netbits",
        ),
        (
            "ifconfig_ipv6_netbits",
            Some("064"),
            "ifconfig_ipv6_netbits",
        ),
        ("ifconfig_ipv6_netbits", Some("0"), "ifconfig_ipv6_netbits"),
        ("ifconfig_local", Some("fd00::2"), "ifconfig_local"),
        ("ifconfig_local", Some(" 100.64.0.2"), "ifconfig_local"),
        ("ifconfig_local", Some("100.64.0.02"), "ifconfig_local"),
        ("ifconfig_local", Some("127.0.0.1"), "ifconfig_local"),
        (
            "ifconfig_ipv6_local",
            Some("100.64.0.9"),
            "ifconfig_ipv6_local",
        ),
        (
            "ifconfig_ipv6_remote",
            Some("fd00::1%eth0"),
            "ifconfig_ipv6_remote",
        ),
        ("ifconfig_netmask", Some("255.0.255.0"), "ifconfig_netmask"),
        ("ifconfig_netmask", Some("128.0.0.0"), "ifconfig_netmask"),
        (
            "route_vpn_gateway",
            Some("100.64.0.1\n"),
            "route_vpn_gateway",
        ),
        ("route_vpn_gateway", Some("fd00::1"), "route_vpn_gateway"),
        ("route_network_1", Some("203.0.113.7"), "route_network_1"),
        ("route_network_1", Some("fd00::"), "route_network_1"),
        ("route_netmask_7", Some("255.255.255.0"), "route_network_7"),
        ("route_network_01", Some("10.0.0.0"), "route_network_01"),
        ("route_network_x", Some("10.0.0.0"), "route_network_x"),
        ("route_gateway_1", Some("fd00::1"), "route_gateway_1"),
        ("route_metric_1", Some("+5"), "route_metric_1"),
        ("route_metric_1", Some("4294967296"), "route_metric_1"),
        (
            "route_ipv6_network_1",
            Some("fd00:203::"),
            "route_ipv6_network_1",
        ),
        (
            "route_ipv6_network_1",
            Some("fd00:203::1/64"),
            "route_ipv6_network_1",
        ),
        (
            "route_ipv6_network_1",
            Some("10.0.0.0/8"),
            "route_ipv6_network_1",
        ),
        (
            "route_ipv6_gateway_1",
            Some("100.64.0.1"),
            "route_ipv6_gateway_1",
        ),
        (
            "route_ipv6_gateway_9",
            Some("fd00::1"),
            "route_ipv6_network_9",
        ),
        (
            "foreign_option_1",
            Some("dhcp-option DNS 1.2.3.4\nnameserver 6.6.6.6"),
            "foreign_option_1",
        ),
        (
            "foreign_option_2",
            Some("dhcp-option DOMAIN evil.example\nnameserver 6.6.6.6"),
            "foreign_option_2",
        ),
        (
            "foreign_option_2",
            Some("dhcp-option DOMAIN a b"),
            "foreign_option_2",
        ),
        (
            "foreign_option_2",
            Some("dhcp-option DOMAIN"),
            "foreign_option_2",
        ),
        (
            "foreign_option_1",
            Some("dhcp-option DNS 1.2.3.4.5"),
            "foreign_option_1",
        ),
        (
            "foreign_option_1",
            Some("dhcp-option DNS6 192.0.2.1"),
            "foreign_option_1",
        ),
        (
            "foreign_option_3",
            Some("dhcp-option DOMAIN-SEARCH ;evil"),
            "foreign_option_3",
        ),
        (
            "foreign_option_0",
            Some("dhcp-option NTP 192.0.2.1"),
            "foreign_option_0",
        ),
        (
            "dns_server_1_address_1",
            Some("1.2.3.4 "),
            "dns_server_1_address_1",
        ),
        ("dns_server_1_port_1", Some("53"), "dns_server_1_address_1"),
        (
            "dns_server_x_address_1",
            Some("1.2.3.4"),
            "dns_server_x_address_1",
        ),
        ("dns_search_domain_1", Some("a..b"), "dns_search_domain_1"),
        ("script_type", Some("ipchange"), "script_type"),
        ("script_type", Some("up "), "script_type"),
        ("script_context", Some("bogus"), "script_context"),
        ("signal", Some("sigterm; reboot"), "signal"),
    ];
    for (key, value, want) in cases {
        let e = with(subnet_env(), &[(key, *value)]);
        let err = parse_env(&e).expect_err(&format!("{key}={value:?} must be refused"));
        assert_eq!(var(&err), *want, "{key}={value:?}: {err}");
        assert!(err.to_string().contains(want), "{err}");
    }
}
