//! No leaks, seen on the wire: a capture on the sandbox host's uplink (the only way out of
//! the "machine") while programs inside the connection's namespace send TCP, UDP, ICMP and
//! DNS to many IPv4 and IPv6 destinations, with the VPN up, while it goes down, while it is
//! down (netns-persistent keeps the namespace and the programs) and after it is back. The
//! only packets allowed are OpenVPN's own (UDP between the uplink and the server's port
//! 1194) and the link's own housekeeping (ARP between the two ends, link-local IPv6
//! neighbour discovery and multicast listener reports).
//!
//! The host namespace gets default routes to the wire (IPv4 and IPv6, via the server's
//! side of the veth), like a real machine: anything that escaped the namespace into the
//! host would be routed out and captured, whatever its destination.

use std::time::Duration;

use vpn_ns_testkit as common;

use common::{
    CONNECT, ClientOptions, SERVER_ADDR, SERVER_NS, SERVER_PORT, SERVICE_PORT, SERVICE_REPLY,
    SERVICE_V4, SERVICE_V6, Sandbox, ServerOptions, UPLINK_ADDR, expect_ok, wait_until,
};

const CONN: &str = "leak";
/// IPv6 on the uplink, so that IPv6 leaks have a route out of the host too.
const UPLINK_V6: &str = "fd00:198::1";
const SERVER_V6: &str = "fd00:198::2";

/// Destinations of the traffic generator: behind the VPN, unrouted anywhere, the VPN
/// server's own addresses (must go through the tunnel, never directly), the uplink's
/// subnet, the VPN's own subnet.
const DESTS_V4: [&str; 6] = [
    SERVICE_V4,
    "192.0.2.1",
    SERVER_ADDR,
    "198.51.100.3",
    "100.64.0.1",
    "203.0.113.53",
];
const DESTS_V6: [&str; 5] = [
    SERVICE_V6,
    "fd00::1",
    "2001:db8::1",
    SERVER_V6,
    "fd00:64::1",
];

/// A shell loop run inside the namespace until `stop` exists. Every destination gets a
/// TCP connect to the service port, a UDP datagram to port 53, and an ICMP echo request
/// (a raw IP socket: socat, as iputils-ping is not installed everywhere); then two name
/// lookups through the namespace's resolv.conf. Every round appends a line to `rounds`.
fn generator(stop: &str, rounds: &str) -> String {
    let mut s = format!("while [ ! -e {stop} ]; do\n");
    for d in DESTS_V4 {
        s.push_str(&format!(
            "  socat -T1 -u TCP4:{d}:{SERVICE_PORT},connect-timeout=0.3 STDOUT >/dev/null 2>&1\n\
             \x20 echo leak | socat -u - UDP4-SENDTO:{d}:53 >/dev/null 2>&1\n\
             \x20 printf '\\010\\000\\367\\377\\000\\000\\000\\000' | socat -u - IP4-SENDTO:{d}:1 >/dev/null 2>&1\n"
        ));
    }
    for d in DESTS_V6 {
        s.push_str(&format!(
            "  socat -T1 -u TCP6:[{d}]:{SERVICE_PORT},connect-timeout=0.3 STDOUT >/dev/null 2>&1\n\
             \x20 echo leak | socat -u - UDP6-SENDTO:[{d}]:53 >/dev/null 2>&1\n\
             \x20 printf '\\200\\000\\000\\000\\000\\000\\000\\000' | socat -u - IP6-SENDTO:[{d}]:58 >/dev/null 2>&1\n"
        ));
    }
    s.push_str(&format!(
        "  timeout 2 getent hosts leak-test.example >/dev/null 2>&1\n\
         \x20 timeout 2 getent ahosts www >/dev/null 2>&1\n\
         \x20 echo round >> {rounds}\n\
         \x20 sleep 0.1\n\
         done\n"
    ));
    s
}

/// Why a `tcpdump -n -r` line is not allowed, or None when it is.
fn offending(line: &str) -> Option<&'static str> {
    // "12:00:00.000000 IP 198.51.100.1.40000 > 198.51.100.2.1194: UDP, length 54"
    let mut w = line.split_whitespace();
    let _time = w.next()?;
    let proto = w.next().unwrap_or("");
    let rest: Vec<&str> = w.collect();
    let openvpn = format!("{SERVER_ADDR}.{SERVER_PORT}");
    match proto {
        "IP" => {
            let (src, dst) = (rest.first()?, rest.get(2)?.trim_end_matches(':'));
            let udp = rest.get(3) == Some(&"UDP,");
            // The client's side: the uplink address and any port (OpenVPN uses `nobind`).
            let ours = |a: &str| {
                a.strip_prefix(UPLINK_ADDR)
                    .and_then(|p| p.strip_prefix('.'))
                    .is_some_and(|p| p.parse::<u16>().is_ok())
            };
            // After the client exits, a packet the server still sends to the client's old
            // port gets the host kernel's "port unreachable": an error about OpenVPN's own
            // flow (it quotes only headers of the server's encrypted packet).
            let unreachable = *src == UPLINK_ADDR
                && dst == SERVER_ADDR
                && rest.len() == 11
                && rest[3..7] == ["ICMP", UPLINK_ADDR, "udp", "port"]
                && rest[7].parse::<u16>().is_ok()
                && rest[8] == "unreachable,";
            let tunnel = udp && ((ours(src) && dst == openvpn) || (*src == openvpn && ours(dst)));
            if tunnel || unreachable {
                None
            } else {
                Some("IPv4 packet other than OpenVPN's UDP to/from the server endpoint")
            }
        }
        "ARP," => {
            // Only the two ends of the veth asking for each other.
            let addrs: Vec<&str> = rest
                .iter()
                .map(|t| t.trim_end_matches(','))
                .filter(|t| t.parse::<std::net::Ipv4Addr>().is_ok())
                .collect();
            if !addrs.is_empty() && addrs.iter().all(|a| *a == UPLINK_ADDR || *a == SERVER_ADDR) {
                None
            } else {
                Some("ARP for an address other than the two ends of the uplink")
            }
        }
        "IP6" => {
            let src = rest.first()?;
            let text = rest.join(" ");
            let housekeeping = [
                "router solicitation",
                "router advertisement",
                "multicast listener",
            ]
            .iter()
            .any(|k| text.contains(k))
                // Neighbour discovery only about link-local addresses.
                || text.contains("neighbor solicitation, who has fe80:")
                || text.contains("neighbor advertisement, tgt is fe80:");
            if (src.starts_with("fe80:") || *src == "::") && text.contains("ICMP6") && housekeeping
            {
                None
            } else {
                Some("IPv6 packet other than link-local neighbour discovery / MLD")
            }
        }
        _ => Some("unexpected protocol"),
    }
}

/// The TCP service answers from inside the namespace (IPv4 and IPv6): the tunnel carries
/// traffic, so an empty capture cannot pass for "no leak".
fn service_answers(sb: &Sandbox) {
    for addr in [SERVICE_V4, SERVICE_V6] {
        expect_ok(wait_until(Duration::from_secs(10), || {
            match sb.tcp_get(Some(CONN), addr, SERVICE_PORT) {
                Ok(l) if l == SERVICE_REPLY => Ok(()),
                r => Err(format!("service at {addr} from inside {CONN}: {r:?}")),
            }
        }));
    }
}

fn rounds(sb: &Sandbox) -> usize {
    common::count_in_log(&sb.dir().join("rounds"), "round")
}

/// Lets the generator run at least `n` more rounds.
fn let_traffic_flow(sb: &Sandbox, n: usize) {
    let start = rounds(sb);
    expect_ok(wait_until(Duration::from_secs(60), || {
        let now = rounds(sb);
        if now >= start + n {
            Ok(())
        } else {
            Err(format!(
                "the traffic generator did only {} round(s)",
                now - start
            ))
        }
    }));
}

#[test]
fn no_packet_leaves_but_openvpn_s_before_during_and_after_a_drop() {
    if !common::require_root("no_packet_leaves_but_openvpn_s_before_during_and_after_a_drop") {
        return;
    }
    let sb = Sandbox::new("leaks");
    let _server = sb.start_server(&ServerOptions::default());
    sb.must(&format!(
        "set -e
         ip -6 addr add {UPLINK_V6}/64 dev uplink nodad
         ip -n {SERVER_NS} -6 addr add {SERVER_V6}/64 dev eth0 nodad
         ip route add default via {SERVER_ADDR}
         ip -6 route add default via {SERVER_V6}"
    ));
    sb.write_conn(
        CONN,
        "type = \"openvpn\"\nnetns-persistent = true\nnetns-timeout = 10000\n",
    );

    // The capture starts before the VPN, and is running once tcpdump says so.
    let pcap = sb.dir().join("uplink.pcap");
    let mut tcpdump = sb.cmd("tcpdump");
    tcpdump
        .args(["-i", "uplink", "-n", "-U", "-Z", "root", "-w"])
        .arg(&pcap);
    let mut capture = sb.spawn("tcpdump", tcpdump);
    expect_ok(common::wait_for_log(
        &capture.log,
        "listening on",
        Duration::from_secs(10),
    ));

    // Up: the programs inside start sending, and the tunnel works.
    let mut client = sb.start_client(CONN, &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    service_answers(&sb);
    let stop = sb.dir().join("stop");
    let script = generator(
        &stop.display().to_string(),
        &sb.dir().join("rounds").display().to_string(),
    );
    let mut gen_cmd = sb.ns_cmd(CONN, "sh");
    gen_cmd.args(["-c", &script]);
    let mut traffic = sb.spawn("traffic", gen_cmd);
    let_traffic_flow(&sb, 3);

    // The VPN drops (OpenVPN exits, its down hook runs); the namespace and the
    // programs in it stay, sending on.
    expect_ok(client.stop());
    assert_eq!(
        sb.links_in(Some(CONN)),
        vec!["lo".to_owned()],
        "while the VPN is down, namespace {CONN} must hold only lo"
    );
    assert!(
        traffic.is_alive(),
        "the traffic generator died with the VPN"
    );
    let_traffic_flow(&sb, 5);
    assert!(
        sb.tcp_get(Some(CONN), SERVICE_V4, SERVICE_PORT).is_err(),
        "the service answered from inside {CONN} while the VPN was down"
    );

    // Back up, in the same namespace, under the same traffic.
    let mut client = sb.start_client(CONN, &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    service_answers(&sb);
    let_traffic_flow(&sb, 3);

    std::fs::write(&stop, "").expect("write stop file");
    assert!(
        traffic.wait_exit(Duration::from_secs(30)).is_some(),
        "the traffic generator did not stop"
    );
    expect_ok(client.stop());
    // The capture covers the final down as well.
    std::thread::sleep(Duration::from_millis(500));
    expect_ok(capture.terminate(Duration::from_secs(10)).map(|_| ()));

    let text = expect_ok(common::sandbox::run(
        sb.cmd("tcpdump").args(["-n", "-r"]).arg(&pcap),
    ));
    let lines: Vec<&str> = text.lines().collect();
    let bad: Vec<String> = lines
        .iter()
        .filter_map(|l| offending(l).map(|why| format!("{why}: {l}")))
        .collect();
    let openvpn_packets = lines.iter().filter(|l| offending(l).is_none()).count();
    assert!(
        bad.is_empty(),
        "{} of {} captured packets are not OpenVPN's (first 40):\n{}",
        bad.len(),
        lines.len(),
        bad.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    let tunnel = lines
        .iter()
        .filter(|l| l.contains(&format!("> {SERVER_ADDR}.{SERVER_PORT}: UDP")))
        .count();
    assert!(
        tunnel >= 20,
        "expected the encrypted traffic to the server on the uplink, found {tunnel} packets \
         ({openvpn_packets} allowed in all)"
    );
    eprintln!(
        "capture: {} packets, all OpenVPN's or link housekeeping; {tunnel} to the server; \
         {} generator rounds",
        lines.len(),
        rounds(&sb)
    );
}

#[test]
fn the_leak_filter_flags_what_it_must() {
    let flagged = [
        "12:00:00.000001 IP 198.51.100.1 > 192.0.2.1: ICMP echo request, id 0, seq 0, length 8",
        "12:00:00.000001 IP 198.51.100.1.40000 > 198.51.100.2.53: UDP, length 5",
        "12:00:00.000001 IP 198.51.100.1.40000 > 198.51.100.2.8080: Flags [S], seq 1, length 0",
        "12:00:00.000001 IP 198.51.100.1.40000 > 203.0.113.1.1194: UDP, length 5",
        "12:00:00.000001 ARP, Request who-has 198.51.100.3 tell 198.51.100.1, length 28",
        "12:00:00.000001 IP6 fd00:198::1.40000 > 2001:db8::1.53: UDP, length 5",
        "12:00:00.000001 IP 198.51.100.1 > 198.51.100.2: ICMP 192.0.2.1 udp port 53 unreachable, length 76",
        "12:00:00.000001 IP 198.51.100.1 > 198.51.100.2: ICMP echo request, id 1, seq 1, length 8",
        "12:00:00.000001 IP6 fd00:198::1 > fd00:198::2: ICMP6, echo request, id 0, seq 0, length 8",
        "12:00:00.000001 IP6 fd00:198::1 > ff02::1:ff00:2: ICMP6, neighbor solicitation, who has fd00:198::2, length 32",
        "12:00:00.000001 IP6 fe80::1 > ff02::1:ff00:2: ICMP6, neighbor solicitation, who has fd00:198::2, length 32",
    ];
    for l in flagged {
        assert!(offending(l).is_some(), "must be flagged: {l}");
    }
    let allowed = [
        "12:00:00.000001 IP 198.51.100.1.40000 > 198.51.100.2.1194: UDP, length 54",
        "12:00:00.000001 IP 198.51.100.2.1194 > 198.51.100.1.40000: UDP, length 54",
        "12:00:00.000001 ARP, Request who-has 198.51.100.2 tell 198.51.100.1, length 28",
        "12:00:00.000001 ARP, Reply 198.51.100.2 is-at 02:00:00:00:00:02, length 28",
        "12:00:00.000001 IP6 fe80::1 > ff02::2: ICMP6, router solicitation, length 16",
        "12:00:00.000001 IP6 fe80::1 > ff02::16: HBH ICMP6, multicast listener report v2, 2 group record(s), length 48",
        "12:00:00.000001 IP6 fe80::1 > fe80::2: ICMP6, neighbor solicitation, who has fe80::2, length 32",
        "12:00:00.000001 IP 198.51.100.1 > 198.51.100.2: ICMP 198.51.100.1 udp port 54469 unreachable, length 76",
    ];
    for l in allowed {
        assert_eq!(offending(l), None, "must be allowed: {l}");
    }
}
