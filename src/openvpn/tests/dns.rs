//! DNS servers and search domains: `foreign_option_N` and `--dns` variables, limits.

use super::*;

#[test]
fn foreign_options() {
    let e = with(
        subnet_env(),
        &[
            (
                "foreign_option_1",
                Some("dhcp-option DOMAIN-SEARCH lab.example"),
            ),
            ("foreign_option_2", Some("dhcp-option DNS 192.0.2.53")),
            ("foreign_option_3", Some("dhcp-option DNS6 fd00::53")),
            ("foreign_option_4", Some("dhcp-option DOMAIN corp.example")),
            ("foreign_option_5", Some("dhcp-option DNS 192.0.2.53")),
            (
                "foreign_option_6",
                Some("dhcp-option DOMAIN-SEARCH corp.example"),
            ),
            ("foreign_option_7", Some("dhcp-option NTP 192.0.2.123")),
            (
                "foreign_option_8",
                Some("dhcp-option PROXY_HTTP proxy.example 8080"),
            ),
            ("foreign_option_9", Some("dhcp-option DISABLE-NBT")),
            ("foreign_option_10", Some("block-outside-dns")),
            ("foreign_option_11", Some("dhcp-option DNS fd00::54")),
            (
                "foreign_option_12",
                Some("dhcp-option ADAPTER_DOMAIN_SUFFIX x y z"),
            ),
        ],
    );
    let dns = spec(&e).dns;
    assert_eq!(
        dns.servers,
        vec![ip("192.0.2.53"), ip("fd00::53"), ip("fd00::54")]
    );
    assert_eq!(
        dns.search,
        names(&["corp.example", "lab.example"]),
        "DOMAIN first, deduplicated"
    );
}

#[test]
fn dns_option_vars_override_foreign_options() {
    let e = with(
        subnet_env(),
        &[
            (
                "foreign_option_3",
                Some("dhcp-option DOMAIN-SEARCH old.example"),
            ),
            ("foreign_option_4", Some("dhcp-option DNS6 fd00::99")),
            ("dns_server_1_address_1", Some("10.0.0.53")),
            ("dns_server_1_address_2", Some("fd00::53")),
            ("dns_server_1_port_1", Some("53")),
            ("dns_server_1_dnssec", Some("optional")),
            ("dns_server_1_resolve_domain_1", Some("corp.example")),
            ("dns_server_2_address_1", Some("10.0.0.54")),
            ("dns_server_2_port_1", Some("5353")),
            ("dns_server_-1_address_1", Some("10.0.0.52")),
            ("dns_server_3_address_1", Some("10.0.0.53")),
            ("dns_search_domain_2", Some("lab.example")),
            ("dns_search_domain_1", Some("corp.example")),
        ],
    );
    let dns = spec(&e).dns;
    assert_eq!(
        dns.servers,
        vec![ip("10.0.0.52"), ip("10.0.0.53"), ip("fd00::53")]
    );
    assert_eq!(
        dns.search,
        names(&["vpn.example", "corp.example", "lab.example"])
    );

    // Servers from --dns, search domains still from DOMAIN-SEARCH when --dns has none.
    let e = with(
        subnet_env(),
        &[
            (
                "foreign_option_3",
                Some("dhcp-option DOMAIN-SEARCH old.example"),
            ),
            ("dns_server_1_address_1", Some("10.0.0.53")),
        ],
    );
    let dns = spec(&e).dns;
    assert_eq!(dns.servers, vec![ip("10.0.0.53")]);
    assert_eq!(dns.search, names(&["vpn.example", "old.example"]));

    // Only a server on another port: no servers at all, not the foreign fallback.
    let e = with(
        subnet_env(),
        &[
            ("dns_server_1_address_1", Some("10.0.0.53")),
            ("dns_server_1_port_1", Some("853")),
        ],
    );
    assert!(spec(&e).dns.servers.is_empty());
}

#[test]
fn dns_limits() {
    let mut e = subnet_env();
    for n in 1..=33 {
        e.insert(format!("dns_server_{n}_address_1"), format!("10.0.0.{n}"));
    }
    assert_eq!(var(&parse_env(&e).unwrap_err()), "dns_server_33_address_1");
    e.insert("dns_server_33_address_1".into(), "10.0.0.1".into());
    assert_eq!(spec(&e).dns.servers.len(), 32, "duplicates do not count");

    let mut e = subnet_env();
    for n in 3..=1026 {
        e.insert(
            format!("foreign_option_{n}"),
            "dhcp-option NTP 192.0.2.1".into(),
        );
    }
    assert_eq!(var(&parse_env(&e).unwrap_err()), "foreign_option_1025");
}
