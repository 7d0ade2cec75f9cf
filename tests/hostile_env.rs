//! A hostile OpenVPN environment, end to end: the real binary runs as OpenVPN's `--up`
//! hook with a complete, realistic environment in which exactly one value is malicious
//! (the server pushes most of them). Every row must be refused with exit 1 or 2, an error
//! naming the variable, and nothing left behind: no namespace, nothing in /etc/netns or
//! /run/vpn-ns, the tun device still in the host namespace without an address, and the
//! host's addresses and routes unchanged. The parser's own table test is in
//! src/openvpn/tests.rs; this one proves the binary stops before touching the system.

use std::collections::BTreeMap;
use std::process::Output;

use vpn_ns_testkit as common;

use common::{Sandbox, expect_ok};

const CONN: &str = "hostile";
const TUN: &str = "tun0";

/// What OpenVPN 2.6 exports to an `--up` script for a `topology subnet` client with one
/// pushed IPv4 and one IPv6 route and a pushed DNS server (as in bench/run.sh `hook_env`,
/// plus the IPv6 part).
fn baseline() -> BTreeMap<String, String> {
    [
        ("script_type", "up"),
        ("script_context", "init"),
        ("dev", TUN),
        ("dev_type", "tun"),
        ("tun_mtu", "1500"),
        ("ifconfig_local", "100.64.0.2"),
        ("ifconfig_netmask", "255.255.255.0"),
        ("ifconfig_ipv6_local", "fd00:64::1000"),
        ("ifconfig_ipv6_netbits", "64"),
        ("ifconfig_ipv6_remote", "fd00:64::1"),
        ("route_vpn_gateway", "100.64.0.1"),
        ("route_network_1", "203.0.113.0"),
        ("route_netmask_1", "255.255.255.0"),
        ("route_gateway_1", "100.64.0.1"),
        ("route_ipv6_network_1", "fd00:203::/64"),
        ("route_ipv6_gateway_1", "fd00:64::1"),
        ("foreign_option_1", "dhcp-option DNS 203.0.113.53"),
        ("foreign_option_2", "dhcp-option DOMAIN vpn.example"),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

struct Row {
    label: String,
    /// (variable, value) set over the baseline.
    set: Vec<(String, String)>,
    /// The connection name on the command line.
    conn: &'static str,
    /// What stderr must contain: the variable, as the error names it.
    names: String,
    /// The accepted exit codes.
    exit: &'static [i32],
}

fn row(label: &str, var: &str, value: &str) -> Row {
    Row {
        label: label.to_owned(),
        set: vec![(var.to_owned(), value.to_owned())],
        conn: CONN,
        names: format!("OpenVPN variable {var}="),
        exit: &[1, 2],
    }
}

fn rows() -> Vec<Row> {
    let mut v = vec![
        row("shell metacharacters in dev", "dev", "tun0;reboot"),
        row("command substitution in dev", "dev", "$(id)"),
        row("backticks in dev", "dev", "`id`"),
        row("path traversal in dev", "dev", "../../etc"),
        row("dev `..`", "dev", ".."),
        row("slash in dev", "dev", "tun/0"),
        row("dev over IFNAMSIZ", "dev", "tun0123456789abcd"),
        row("space in dev", "dev", "tun 0"),
        row("empty dev", "dev", ""),
        row("dev_type injection", "dev_type", "tun;id"),
        row("script_context junk", "script_context", "init\nrestart"),
        row("MTU 0", "tun_mtu", "0"),
        row("MTU below IPv4 minimum", "tun_mtu", "67"),
        row("MTU above 65535", "tun_mtu", "65536"),
        row("MTU in exponent form", "tun_mtu", "1e3"),
        row("MTU with a sign", "tun_mtu", "+1500"),
        row("MTU with trailing space", "tun_mtu", "1500 "),
        row("MTU with leading zero", "tun_mtu", "01500"),
        row("MTU overflowing u64", "tun_mtu", "99999999999999999999999"),
        row("non-contiguous netmask", "ifconfig_netmask", "255.0.255.0"),
        row("netmask as a prefix", "ifconfig_netmask", "24"),
        row("IPv6 prefix 129", "ifconfig_ipv6_netbits", "129"),
        row("negative IPv6 prefix", "ifconfig_ipv6_netbits", "-1"),
        row("IPv6 in an IPv4 field", "ifconfig_local", "fd00::1"),
        row(
            "CIDR in an address field",
            "ifconfig_local",
            "100.64.0.2/24",
        ),
        row(
            "loopback as interface address",
            "ifconfig_local",
            "127.0.0.1",
        ),
        row("octal-looking octets", "ifconfig_local", "100.064.000.002"),
        row("IPv4 in an IPv6 field", "ifconfig_ipv6_local", "100.64.0.2"),
        row("IPv6 zone id", "ifconfig_ipv6_local", "fd00:64::1000%eth0"),
        row(
            "IPv6 gateway in IPv4 form",
            "route_vpn_gateway",
            "fd00:64::1",
        ),
        row("IPv6 network in an IPv4 route", "route_network_1", "fd00::"),
        row(
            "route netmask out of range",
            "route_netmask_1",
            "255.255.255.256",
        ),
        row("hex gateway", "route_gateway_1", "0x01020304"),
        row("negative route metric", "route_metric_1", "-1"),
        row(
            "IPv6 route prefix 129",
            "route_ipv6_network_1",
            "fd00:203::/129",
        ),
        row(
            "IPv4 in an IPv6 route",
            "route_ipv6_network_1",
            "203.0.113.0/24",
        ),
        row(
            "newline injecting a nameserver",
            "foreign_option_1",
            "dhcp-option DNS 1.2.3.4\nnameserver 6.6.6.6",
        ),
        row(
            "two nameservers in one option",
            "foreign_option_1",
            "dhcp-option DNS 203.0.113.53 6.6.6.6",
        ),
        row(
            "shell metacharacters in a domain",
            "foreign_option_2",
            "dhcp-option DOMAIN a;b",
        ),
        row(
            "newline in a search domain",
            "foreign_option_2",
            "dhcp-option DOMAIN-SEARCH vpn.example\noptions ndots:15",
        ),
        row(
            "IPv4 in DNS6",
            "foreign_option_1",
            "dhcp-option DNS6 203.0.113.53",
        ),
        row(
            "IPv4 gateway for an IPv6 route",
            "route_ipv6_gateway_1",
            "100.64.0.1",
        ),
        row(
            "IPv6 p2p peer in an IPv4 field",
            "ifconfig_remote",
            "fd00::1",
        ),
        row(
            "--dns server with a command",
            "dns_server_1_address_1",
            "1.2.3.4;rm",
        ),
        row(
            "--dns search domain with an empty label",
            "dns_search_domain_1",
            "a..b",
        ),
        row(
            "signal with shell metacharacters",
            "signal",
            "sigterm;reboot",
        ),
        row(
            "route index with a leading zero",
            "route_network_01",
            "203.0.113.0",
        ),
        row(
            "overlong value",
            "foreign_option_2",
            &format!("dhcp-option DOMAIN {}", "a.".repeat(400)),
        ),
    ];
    // Thousands of routes: well within the kernel's environment limits, beyond vpn-ns's.
    let mut many = Vec::new();
    for n in 1..=5000u32 {
        many.push((
            format!("route_network_{n}"),
            format!("100.{}.{}.0", 64 + n / 256, n % 256),
        ));
        many.push((format!("route_netmask_{n}"), "255.255.255.0".to_owned()));
    }
    v.push(Row {
        label: "5000 pushed routes".to_owned(),
        set: many,
        conn: CONN,
        // The first route past the limit of 1024.
        names: "OpenVPN variable route_network_1025:".to_owned(),
        exit: &[1, 2],
    });
    let mut opts = Vec::new();
    for n in 3..=2000u32 {
        opts.push((
            format!("foreign_option_{n}"),
            "dhcp-option DNS 203.0.113.53".to_owned(),
        ));
    }
    v.push(Row {
        label: "2000 foreign options".to_owned(),
        set: opts,
        conn: CONN,
        names: "OpenVPN variable foreign_option_1025:".to_owned(),
        exit: &[1, 2],
    });
    v.push(Row {
        label: "connection name with path traversal".to_owned(),
        set: Vec::new(),
        conn: "../etc",
        names: "../etc".to_owned(),
        // A bad command line is a usage error.
        exit: &[2],
    });
    v
}

fn hook(sb: &Sandbox, env: &BTreeMap<String, String>, conn: &str) -> Output {
    let mut c = sb.vpn_ns();
    c.env_clear()
        .envs(env)
        .arg("--config-dir")
        .arg(sb.config_dir())
        .args(["hook", "openvpn", conn]);
    c.output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", common::describe(&c)))
}

/// Addresses and routes of the sandbox host namespace, and the tun device's state.
fn host_snapshot(sb: &Sandbox) -> String {
    let mut s = String::new();
    for args in [
        &["-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["-4", "rule", "show"],
        &["-6", "rule", "show"],
    ] {
        s.push_str(&expect_ok(sb.ip(None, args)));
    }
    s
}

/// Everything a refused `up` must leave as it was; Err describes the difference.
fn leftovers(sb: &Sandbox, before: &str) -> Result<(), String> {
    let mut bad = Vec::new();
    let nss = sb.netns_list();
    if !nss.is_empty() {
        bad.push(format!("namespaces: {nss:?}"));
    }
    for d in ["/run/netns", "/etc/netns", "/run/vpn-ns"] {
        let e = sb.dir_entries(d);
        if !e.is_empty() {
            bad.push(format!("{d}: {e:?}"));
        }
    }
    if !sb.links_in(None).iter().any(|l| l == TUN) {
        bad.push(format!("{TUN} left the host namespace"));
    }
    let tun_addrs = expect_ok(sb.ip(None, &["-o", "addr", "show", "dev", TUN]));
    if !tun_addrs.trim().is_empty() {
        bad.push(format!("{TUN} has addresses: {tun_addrs}"));
    }
    let after = host_snapshot(sb);
    if after != before {
        bad.push(format!(
            "host addresses/routes changed:\nbefore:\n{before}after:\n{after}"
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

#[test]
fn hostile_openvpn_environment_is_refused_and_leaves_nothing() {
    if !common::require_root("hostile_openvpn_environment_is_refused_and_leaves_nothing") {
        return;
    }
    let sb = Sandbox::new("hostile-env");
    sb.write_conn(CONN, "type = \"openvpn\"\nnetns-name = \"hostile\"\n");
    sb.must(&format!("ip tuntap add dev {TUN} mode tun"));

    // Control: the baseline itself is accepted and applied, so the refusals below are
    // about the one bad value, not about the test's environment.
    let out = hook(&sb, &baseline(), CONN);
    assert!(
        out.status.success(),
        "the baseline environment must be accepted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sb.netns_list(), vec![CONN.to_owned()]);
    common::assert_routes(&sb, CONN, TUN);
    let mut down = baseline();
    down.insert("script_type".into(), "down".into());
    let out = hook(&sb, &down, CONN);
    assert!(
        out.status.success(),
        "down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The control's lock file stays by design (see src/state.rs); remove it so that the
    // rows below are held to "create nothing at all".
    sb.must(&format!("rm /run/vpn-ns/{CONN}.lock"));
    // Deleting the namespace destroyed the persistent tun; make a fresh one.
    if !sb.links_in(None).iter().any(|l| l == TUN) {
        sb.must(&format!("ip tuntap add dev {TUN} mode tun"));
    }
    let before = host_snapshot(&sb);
    expect_ok(leftovers(&sb, &before));

    let mut failures = Vec::new();
    for r in rows() {
        let mut env = baseline();
        env.extend(r.set.iter().cloned());
        let out = hook(&sb, &env, r.conn);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        // Shown with --nocapture: the messages a user would see.
        eprintln!("{}: exit {code:?}: {}", r.label, stderr.trim());
        let mut why = Vec::new();
        if !code.is_some_and(|c| r.exit.contains(&c)) {
            why.push(format!("exit {code:?}, expected one of {:?}", r.exit));
        }
        if !stderr.contains(&r.names) {
            why.push(format!("stderr does not name {:?}", r.names));
        }
        if stderr.lines().count() != 1 {
            why.push("the error is not one line".to_owned());
        }
        if let Err(e) = leftovers(&sb, &before) {
            why.push(format!("left behind: {e}"));
            // Clean up so that the next rows are judged on their own.
            let _ = sb.sh("ip -all netns delete; rm -rf /etc/netns/* /run/vpn-ns/*");
            if !sb.links_in(None).iter().any(|l| l == TUN) {
                sb.must(&format!("ip tuntap add dev {TUN} mode tun"));
            }
            let _ = sb.sh(&format!("ip addr flush dev {TUN}"));
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                r.label,
                why.join("; "),
                stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} hostile row(s) not handled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
