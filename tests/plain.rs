//! Acceptance tests of the connection types without a VPN: `macvlan` (static and DHCP,
//! on a sandbox "LAN") and `routed` (veth + NAT out of a sandbox "uplink"), and their
//! isolation from each other and from an OpenVPN namespace. Needs root (skipped loudly
//! otherwise; under CI they must run).

use vpn_ns_testkit as common;

use common::*;

/// The LAN: `lan0` in the sandbox host namespace, its peer in namespace `lanhost`.
const LANHOST: &str = "lanhost";
const LAN_SERVER: &str = "192.0.2.1";
/// The "internet" behind the routed uplink `wan0`: namespace `isp`.
const ISP: &str = "isp";
const WAN: Wan = Wan {
    host: "198.51.100.1",
    isp: "198.51.100.2",
    far: "203.0.113.1",
};
/// The same next to the OpenVPN server, which has 198.51.100.0/24 and 203.0.113.1.
const WAN2: Wan = Wan {
    host: "100.127.0.1",
    isp: "100.127.0.2",
    far: "100.127.1.1",
};

struct Wan {
    host: &'static str,
    isp: &'static str,
    far: &'static str,
}
/// Every test server answers with the address it sees the client come from.
const PEER_PORT: u16 = 8080;

fn must_vpn_ns(sb: &Sandbox, args: &[&str]) -> String {
    let out = vpn_ns(sb, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "vpn-ns {args:?} failed ({}): {err}",
        out.status
    );
    err
}

/// A TCP server in `ns` on `addr:PEER_PORT` that answers with the client's address.
fn peer_echo(sb: &Sandbox, ns: &str, addr: &str) -> sandbox::Proc {
    let mut c = sb.ns_cmd(ns, "socat");
    c.args([
        &format!("TCP-LISTEN:{PEER_PORT},bind={addr},fork,reuseaddr"),
        "SYSTEM:echo $SOCAT_PEERADDR",
    ]);
    let p = sb.spawn(&format!("echo-{ns}"), c);
    expect_ok(wait_until(SETTLE, || sb.tcp_get(Some(ns), addr, PEER_PORT)));
    p
}

fn setup_lan(sb: &Sandbox) -> sandbox::Proc {
    sb.must(&format!(
        "set -e
         ip netns add {LANHOST}
         ip link add lan0 type veth peer name eth0 netns {LANHOST}
         ip link set lan0 up
         ip -n {LANHOST} link set lo up
         ip -n {LANHOST} addr add {LAN_SERVER}/24 dev eth0
         ip -n {LANHOST} link set eth0 up"
    ));
    peer_echo(sb, LANHOST, LAN_SERVER)
}

/// `wan0` (`w.host`/24, default route) to namespace `isp`, which holds the far
/// server on its `lo` and has NO route to the transfer networks: only traffic
/// masqueraded to `w.host` can be answered.
fn setup_wan(sb: &Sandbox, w: &Wan) -> sandbox::Proc {
    sb.must(&format!(
        "set -e
         ip netns add {ISP}
         ip link add wan0 type veth peer name eth0 netns {ISP}
         ip addr add {host}/24 dev wan0
         ip link set wan0 up
         ip route add default via {isp}
         ip -n {ISP} link set lo up
         ip -n {ISP} addr add {isp}/24 dev eth0
         ip -n {ISP} link set eth0 up
         ip -n {ISP} addr add {far}/32 dev lo",
        host = w.host,
        isp = w.isp,
        far = w.far
    ));
    peer_echo(sb, ISP, w.far)
}

fn dnsmasq(sb: &Sandbox) -> sandbox::Proc {
    let dir = sb.dir().display().to_string();
    let mut c = sb.ns_cmd(LANHOST, "dnsmasq");
    c.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--no-ping",
        "--user=root",
        "--interface=eth0",
        "--bind-interfaces",
        "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
        "--dhcp-option=option:router,192.0.2.1",
        "--dhcp-option=option:dns-server,192.0.2.53",
        "--dhcp-option=option:domain-name,lan.example",
        &format!("--dhcp-leasefile={dir}/dnsmasq.leases"),
        &format!("--pid-file={dir}/dnsmasq.pid"),
    ]);
    let p = sb.spawn("dnsmasq", c);
    expect_ok(wait_until(SETTLE, || {
        match p.log_text().contains("DHCP, IP range") {
            true => Ok(()),
            false => Err(format!("dnsmasq not ready: {}", p.log_text())),
        }
    }));
    p
}

/// The IPv4 address of `dev` in `ns`.
fn addr_of(sb: &Sandbox, ns: &str, dev: &str) -> String {
    let out = expect_ok(sb.ip(Some(ns), &["-4", "-o", "addr", "show", "dev", dev]));
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on {dev} in {ns}: {out}"))
        .to_owned()
}

fn ip_forward(sb: &Sandbox) -> String {
    sb.must("cat /proc/sys/net/ipv4/ip_forward")
        .trim()
        .to_owned()
}

fn nft_ruleset(sb: &Sandbox) -> String {
    sb.must("nft list ruleset")
}

fn resolv(sb: &Sandbox, ns: &str) -> String {
    sb.read(&format!("/etc/netns/{ns}/resolv.conf"))
        .unwrap_or_else(|| panic!("no /etc/netns/{ns}/resolv.conf"))
}

#[test]
fn macvlan_static_reaches_the_lan_with_its_own_address() {
    if !require_root("macvlan_static_reaches_the_lan_with_its_own_address") {
        return;
    }
    let sb = Sandbox::new("macvlan-static");
    let _srv = setup_lan(&sb);
    sb.write_conn(
        "office",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\naddress = \"192.0.2.10/24\"\n\
         gateway = \"192.0.2.1\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    let host_links = sb.links_in(None);
    must_vpn_ns(&sb, &["up", "office"]);

    assert_eq!(sb.links_in(Some("office")), sorted(&["lan0", "lo"]));
    assert_eq!(
        sb.links_in(None),
        host_links,
        "the host namespace gained a link"
    );
    let detail = expect_ok(sb.ip(Some("office"), &["-d", "-o", "link", "show", "lan0"]));
    assert!(detail.contains("macvlan mode bridge"), "{detail}");
    assert_eq!(
        sb.tcp_get(Some("office"), LAN_SERVER, PEER_PORT).as_deref(),
        Ok("192.0.2.10"),
        "the LAN server must see the macvlan's own address"
    );
    let route = expect_ok(sb.route_get(Some("office"), "203.0.113.99"));
    assert!(route.contains("via 192.0.2.1 dev lan0"), "{route}");
    assert!(resolv(&sb, "office").contains("nameserver 192.0.2.53"));
    // The host namespace itself has no address on the LAN and gained none.
    assert!(sb.route_get(None, LAN_SERVER).is_err());

    let verify = vpn_ns(&sb, &["verify", "office"]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify failed: {text}");
    assert!(
        text.contains("a direct uplink, not a tunnel: lan0 is a macvlan"),
        "{text}"
    );

    // up again: a no-op that says so.
    let again = must_vpn_ns(&sb, &["up", "office"]);
    assert!(again.contains("already up"), "{again}");

    must_vpn_ns(&sb, &["down", "office"]);
    assert_gone(&sb, "office", "office");
    assert_eq!(sb.links_in(None), host_links);
    let none = must_vpn_ns(&sb, &["down", "office"]);
    assert!(none.contains("nothing to do"), "{none}");
}

#[test]
fn macvlan_dhcp_takes_its_address_from_the_lan_server() {
    if !require_root("macvlan_dhcp_takes_its_address_from_the_lan_server") {
        return;
    }
    let sb = Sandbox::new("macvlan-dhcp");
    let _srv = setup_lan(&sb);
    let _dhcp = dnsmasq(&sb);
    sb.write_conn(
        "lan",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\ndhcp = true\n",
    );
    must_vpn_ns(&sb, &["up", "lan"]);
    let leased = addr_of(&sb, "lan", "lan0");
    let host: u8 = leased
        .strip_prefix("192.0.2.")
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("leased address {leased} is not in 192.0.2.0/24"));
    assert!((100..=150).contains(&host), "{leased} is outside the range");
    assert_eq!(
        sb.tcp_get(Some("lan"), LAN_SERVER, PEER_PORT).as_deref(),
        Ok(leased.as_str()),
        "the LAN server must see the leased address"
    );
    let leases = std::fs::read_to_string(sb.dir().join("dnsmasq.leases")).unwrap_or_default();
    assert!(
        leases.contains(&leased),
        "dnsmasq has no lease for {leased}: {leases}"
    );
    let route = expect_ok(sb.route_get(Some("lan"), "203.0.113.99"));
    assert!(route.contains("via 192.0.2.1"), "{route}");
    let r = resolv(&sb, "lan");
    assert!(
        r.contains("nameserver 192.0.2.53") && r.contains("lan.example"),
        "{r}"
    );

    // The MAC is derived from the connection name, so the lease survives down/up.
    must_vpn_ns(&sb, &["down", "lan"]);
    assert_gone(&sb, "lan", "lan");
    must_vpn_ns(&sb, &["up", "lan"]);
    assert_eq!(addr_of(&sb, "lan", "lan0"), leased);
    must_vpn_ns(&sb, &["down", "lan"]);
    assert_gone(&sb, "lan", "lan");
}

#[test]
fn macvlan_dhcp_without_a_server_fails_and_rolls_back() {
    if !require_root("macvlan_dhcp_without_a_server_fails_and_rolls_back") {
        return;
    }
    let sb = Sandbox::new("macvlan-nodhcp");
    let _srv = setup_lan(&sb);
    sb.write_conn(
        "lan",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\ndhcp = true\n",
    );
    let out = vpn_ns(&sb, &["up", "lan"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no DHCP OFFER on lan0"), "{err}");
    assert_eq!(sb.netns_list(), [LANHOST]);
    assert_gone(&sb, "lan", "lan");
}

/// vpn-ns killed half way through up (waiting for DHCP, the macvlan already in the
/// namespace): the namespace has a record naming vpn-ns as its creator, and both down
/// and a new up finish the job.
#[test]
fn macvlan_killed_during_dhcp_is_finished_by_down_or_up() {
    if !require_root("macvlan_killed_during_dhcp_is_finished_by_down_or_up") {
        return;
    }
    let sb = Sandbox::new("macvlan-killed");
    let _srv = setup_lan(&sb);
    sb.write_conn(
        "lan",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\ndhcp = true\n",
    );
    for finish in ["down", "up"] {
        let mut c = sb.vpn_ns();
        c.arg("--config-dir")
            .arg(sb.config_dir())
            .args(["up", "lan"]);
        let mut up = sb.spawn("killed-up", c);
        expect_ok(wait_until(SETTLE, || {
            sb.ip(Some("lan"), &["link", "show", "lan0"]).map(|_| ())
        }));
        assert!(up.signal(9), "up ended before the kill");
        up.wait_exit(SETTLE);
        let st = sb
            .read("/run/vpn-ns/lan.json")
            .expect("a record of the killed up");
        assert!(st.contains("\"netns_created\": true"), "{st}");
        if finish == "up" {
            let _dhcp = dnsmasq(&sb);
            must_vpn_ns(&sb, &["up", "lan"]);
            assert_eq!(
                sb.tcp_get(Some("lan"), LAN_SERVER, PEER_PORT).as_deref(),
                Ok(addr_of(&sb, "lan", "lan0").as_str())
            );
        }
        must_vpn_ns(&sb, &["down", "lan"]);
        assert_gone(&sb, "lan", "lan");
        assert!(!sb.exists("/run/vpn-ns/lan.plain"));
    }
}

#[test]
fn routed_masquerades_out_of_the_uplink_and_down_restores_the_host() {
    if !require_root("routed_masquerades_out_of_the_uplink_and_down_restores_the_host") {
        return;
    }
    let sb = Sandbox::new("routed");
    let _far = setup_wan(&sb, &WAN);
    // A firewall of the host's own, which vpn-ns must leave exactly as it is.
    sb.must(
        "nft add table inet hostfw && \
         nft add chain inet hostfw input '{ type filter hook input priority 0; policy accept; }' && \
         nft add rule inet hostfw input tcp dport 22 counter accept",
    );
    sb.write_conn(
        "wifi",
        "type = \"routed\"\n[routed]\nuplink = \"wan0\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    for before in ["0", "1"] {
        sb.must(&format!("echo {before} > /proc/sys/net/ipv4/ip_forward"));
        let ruleset = nft_ruleset(&sb);
        let host_links = sb.links_in(None);
        must_vpn_ns(&sb, &["up", "wifi"]);

        assert_eq!(sb.links_in(Some("wifi")), sorted(&["eth0", "lo"]));
        let inside = addr_of(&sb, "wifi", "eth0");
        assert!(inside.starts_with("100."), "transfer address {inside}");
        assert_eq!(
            sb.tcp_get(Some("wifi"), WAN.far, PEER_PORT).as_deref(),
            Ok(WAN.host),
            "the far server must see the uplink's address (source NAT)"
        );
        assert_eq!(ip_forward(&sb), "1");
        let tables = sb.must("nft list tables");
        assert!(tables.contains("table ip vpn_ns_wifi"), "{tables}");
        assert!(nft_ruleset(&sb).contains("table inet hostfw"));
        assert!(resolv(&sb, "wifi").contains("nameserver 192.0.2.53"));
        let verify = vpn_ns(&sb, &["verify", "wifi"]);
        let text = String::from_utf8_lossy(&verify.stdout);
        assert!(verify.status.success(), "verify failed: {text}");
        assert!(text.contains("masqueraded out of wan0"), "{text}");
        // An app started with `vpn-ns exec` goes out the same way.
        let far = format!("TCP:{}:{PEER_PORT},connect-timeout=2", WAN.far);
        let out = vpn_ns(
            &sb,
            &["exec", "wifi", "--", "socat", "-T2", "-u", &far, "STDOUT"],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            WAN.host,
            "exec: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        must_vpn_ns(&sb, &["down", "wifi"]);
        assert_gone(&sb, "wifi", "wifi");
        assert_eq!(nft_ruleset(&sb), ruleset, "the host's nftables changed");
        assert!(!sb.must("nft list tables").contains("vpn_ns"));
        assert_eq!(ip_forward(&sb), before, "ip_forward not restored");
        assert_eq!(sb.links_in(None), host_links, "a link is left on the host");
    }
}

#[test]
fn routed_with_a_missing_uplink_changes_nothing() {
    if !require_root("routed_with_a_missing_uplink_changes_nothing") {
        return;
    }
    let sb = Sandbox::new("routed-nouplink");
    sb.write_conn(
        "wifi",
        "type = \"routed\"\n[routed]\nuplink = \"wlan9\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    let out = vpn_ns(&sb, &["up", "wifi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("uplink device wlan9 does not exist"), "{err}");
    assert_eq!(sb.netns_list(), Vec::<String>::new());
    assert_eq!(ip_forward(&sb), "0");
    assert!(!sb.must("nft list tables").contains("vpn_ns"));
    let out = vpn_ns(&sb, &["up", "nonesuch"]);
    assert_eq!(out.status.code(), Some(2));

    // `check` says so beforehand, and is content once the device exists.
    let out = vpn_ns(&sb, &["check", "wifi"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("wifi: uplink device wlan9 does not exist"),
        "{text}"
    );
    sb.must("ip link add wlan9 type veth peer name wlan9p");
    let out = vpn_ns(&sb, &["check", "wifi"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
}

#[test]
fn routed_failing_late_rolls_everything_back() {
    if !require_root("routed_failing_late_rolls_everything_back") {
        return;
    }
    let sb = Sandbox::new("routed-rollback");
    let _far = setup_wan(&sb, &WAN);
    sb.write_conn(
        "wifi",
        "type = \"routed\"\n[routed]\nuplink = \"wan0\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    // A file where the namespace's /etc directory must go: the DNS step, after the
    // veth pair, forwarding and NAT are in place, fails.
    sb.must("mkdir -p /etc/netns && touch /etc/netns/wifi");
    let ruleset = nft_ruleset(&sb);
    let host_links = sb.links_in(None);
    let out = vpn_ns(&sb, &["up", "wifi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("changes rolled back") && err.contains("cannot write DNS files"),
        "{err}"
    );
    assert_eq!(sb.netns_list(), [ISP]);
    assert_eq!(sb.links_in(None), host_links, "the veth pair is left");
    assert_eq!(nft_ruleset(&sb), ruleset, "the NAT table is left");
    assert_eq!(ip_forward(&sb), "0");
    assert!(!sb.exists("/run/vpn-ns/wifi.json") && !sb.exists("/run/vpn-ns/wifi.plain"));
    // Once the obstacle is gone, up works.
    sb.must("rm /etc/netns/wifi");
    must_vpn_ns(&sb, &["up", "wifi"]);
    must_vpn_ns(&sb, &["down", "wifi"]);
    assert_gone(&sb, "wifi", "wifi");
}

/// `from` cannot open a TCP connection to `to_ns`'s listener at `addr`.
fn assert_unreachable(sb: &Sandbox, from: &str, to_ns: &str, addr: &str) {
    let r = sb.tcp_get(Some(from), addr, PEER_PORT);
    assert!(r.is_err(), "{from} reaches {to_ns} at {addr}: {r:?}");
}

#[test]
fn plain_and_vpn_namespaces_side_by_side_do_not_see_each_other() {
    if !require_root("plain_and_vpn_namespaces_side_by_side_do_not_see_each_other") {
        return;
    }
    let sb = Sandbox::new("side-by-side");
    let _srv = sb.start_server(&ServerOptions::default());
    let _far = setup_wan(&sb, &WAN2);
    let _lan = setup_lan(&sb);
    let dns = "[dns]\nservers = [\"192.0.2.53\"]\n";
    for (conn, net) in [("r1", "100.64.77.0/30"), ("r2", "100.64.78.0/30")] {
        sb.write_conn(
            conn,
            &format!("type = \"routed\"\n[routed]\nuplink = \"wan0\"\ntransfer = \"{net}\"\n{dns}"),
        );
        must_vpn_ns(&sb, &["up", conn]);
    }
    sb.write_conn(
        "m1",
        &format!(
            "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\naddress = \"192.0.2.10/24\"\n{dns}"
        ),
    );
    must_vpn_ns(&sb, &["up", "m1"]);
    sb.write_conn("vpn", "type = \"openvpn\"\n");
    let mut client = sb.start_client("vpn", &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    let tun = client.tun_name().expect("tun name in the client log");

    // Each one has its own way out ...
    for ns in ["r1", "r2"] {
        assert_eq!(
            sb.tcp_get(Some(ns), WAN2.far, PEER_PORT).as_deref(),
            Ok(WAN2.host),
            "{ns} must reach the far server through its uplink"
        );
        assert!(sb.tcp_get(Some(ns), SERVICE_V4, SERVICE_PORT).is_err());
    }
    assert_service_inside(&sb, "vpn");
    assert_eq!(
        sb.tcp_get(Some("m1"), LAN_SERVER, PEER_PORT).as_deref(),
        Ok("192.0.2.10")
    );

    // ... and none reaches another.
    let addrs = [
        ("r1", addr_of(&sb, "r1", "eth0")),
        ("r2", addr_of(&sb, "r2", "eth0")),
        ("m1", addr_of(&sb, "m1", "lan0")),
        ("vpn", addr_of(&sb, "vpn", &tun)),
    ];
    let _listeners: Vec<_> = addrs.iter().map(|(ns, a)| peer_echo(&sb, ns, a)).collect();
    for (from, _) in &addrs {
        for (to, a) in &addrs {
            if from != to {
                assert_unreachable(&sb, from, to, a);
            }
        }
    }

    expect_ok(client.stop());
    must_vpn_ns(&sb, &["down", "r1"]);
    assert_gone(&sb, "r1", "r1");
    // r2 still needs forwarding and its NAT: the first down must not take them.
    assert_eq!(ip_forward(&sb), "1");
    assert_eq!(
        sb.tcp_get(Some("r2"), WAN2.far, PEER_PORT).as_deref(),
        Ok(WAN2.host)
    );
    let tables = sb.must("nft list tables");
    assert!(
        !tables.contains("vpn_ns_r1") && tables.contains("vpn_ns_r2"),
        "{tables}"
    );
    for conn in ["r2", "m1"] {
        must_vpn_ns(&sb, &["down", conn]);
        assert_gone(&sb, conn, conn);
    }
    assert_gone(&sb, "vpn", "vpn");
    assert_eq!(ip_forward(&sb), "0");
    assert!(!sb.must("nft list tables").contains("vpn_ns"));
}
