//! The keeper's DHCP task against a real dnsmasq with its minimum lease time (2
//! minutes), proven on the wire with tcpdump in the LAN server's namespace: renewals
//! unicast to the server at T1, DHCPRELEASE at down; without a server the lease runs
//! out and the address goes (fail closed). Needs root. Each test takes about 2 minutes.

use vpn_ns_testkit as common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const LANHOST: &str = "lanhost";
const LAN_SERVER: &str = "192.0.2.1";
/// dnsmasq's minimum lease time, and the lease every test gets.
const LEASE: Duration = Duration::from_secs(120);

fn must_vpn_ns(sb: &Sandbox, args: &[&str]) -> String {
    let out = vpn_ns(sb, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "vpn-ns {args:?} failed ({}): {text}",
        out.status
    );
    text
}

fn setup_lan(sb: &Sandbox) {
    sb.must(&format!(
        "set -e
         ip netns add {LANHOST}
         ip link add lan0 type veth peer name eth0 netns {LANHOST}
         ip link set lan0 up
         ip -n {LANHOST} link set lo up
         ip -n {LANHOST} addr add {LAN_SERVER}/24 dev eth0
         ip -n {LANHOST} link set eth0 up"
    ));
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
        "--log-dhcp",
        "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,2m",
        "--dhcp-option=option:router,192.0.2.1",
        "--dhcp-option=option:dns-server,192.0.2.53",
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

/// tcpdump on the LAN server's side of the wire, DHCP only, written to a pcap file.
fn capture(sb: &Sandbox) -> (sandbox::Proc, PathBuf) {
    let pcap = sb.dir().join("dhcp.pcap");
    let mut c = sb.ns_cmd(LANHOST, "tcpdump");
    c.args(["-i", "eth0", "-n", "-U", "-w"])
        .arg(&pcap)
        .args(["udp", "port", "67", "or", "udp", "port", "68"]);
    let p = sb.spawn("tcpdump", c);
    expect_ok(wait_until(SETTLE, || {
        match p.log_text().contains("listening on") {
            true => Ok(()),
            false => Err(format!("tcpdump not ready: {}", p.log_text())),
        }
    }));
    (p, pcap)
}

/// One decoded packet: its capture time, first line (addresses), DHCP message type.
#[derive(Debug)]
struct Packet {
    time: f64,
    head: String,
    kind: String,
    client_ip: Option<String>,
    /// Option 58 (T1), when the server sent it.
    t1: Option<f64>,
}

fn packets(sb: &Sandbox, pcap: &PathBuf) -> Vec<Packet> {
    let mut c = sb.cmd("tcpdump");
    c.args(["-r"]).arg(pcap).args(["-n", "-v", "-tt"]);
    let text = expect_ok(sandbox::run(&mut c));
    let mut out: Vec<Packet> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            out.push(Packet {
                time: line
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0.0),
                head: String::new(),
                kind: String::new(),
                client_ip: None,
                t1: None,
            });
        }
        let Some(p) = out.last_mut() else { continue };
        let t = line.trim();
        if t.contains(" > ") {
            p.head = t.to_owned();
        }
        if let Some(k) = t.split("DHCP-Message (53), length 1: ").nth(1) {
            p.kind = k.trim().to_owned();
        }
        if let Some(v) = t.strip_prefix("RN (58), length 4: ") {
            p.t1 = v.trim().parse().ok();
        }
        if let Some(ip) = t.strip_prefix("Client-IP ") {
            p.client_ip = Some(ip.trim().to_owned());
        }
    }
    out
}

fn addr_of(sb: &Sandbox, ns: &str, dev: &str) -> Option<String> {
    let out = sb
        .ip(Some(ns), &["-4", "-o", "addr", "show", "dev", dev])
        .ok()?;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
}

fn keeper_log(sb: &Sandbox) -> String {
    sb.read("/run/vpn-ns/lan.keeper.log").unwrap_or_default()
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool, ctx: impl Fn() -> String) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what} within {limit:?}:\n{}", ctx());
}

#[test]
fn dhcp_lease_is_renewed_at_t1_on_the_wire_and_released_at_down() {
    if !require_root("dhcp_lease_is_renewed_at_t1_on_the_wire_and_released_at_down") {
        return;
    }
    let sb = Sandbox::new("keeper-dhcp");
    setup_lan(&sb);
    let dhcp = dnsmasq(&sb);
    let (_tcpdump, pcap) = capture(&sb);
    sb.write_conn(
        "lan",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\ndhcp = true\n",
    );
    let started = Instant::now();
    must_vpn_ns(&sb, &["up", "lan"]);
    let leased = addr_of(&sb, "lan", "lan0").expect("leased address");
    // Up does not wait for its keeper; its control socket says it is ready.
    wait_for(
        Duration::from_secs(10),
        "the keeper's control socket",
        || sb.exists("/run/vpn-ns/lan.keeper.sock"),
        || keeper_log(&sb),
    );

    let s = must_vpn_ns(&sb, &["status", "lan"]);
    assert!(s.contains("lease") && s.contains("expires"), "{s}");
    assert!(
        s.contains(&format!("DHCP lease of {leased} from {LAN_SERVER}")),
        "{s}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&must_vpn_ns(&sb, &["--json", "status", "lan"])).unwrap();
    let expires = j["connections"][0]["keeper"]["lease_expires"].clone();
    assert!(expires.is_string(), "{j}");

    // T1 is half the lease: two renewals by 2 minutes and a bit.
    wait_for(
        LEASE + Duration::from_secs(30),
        "two renewals in the keeper's log",
        || keeper_log(&sb).matches("renewed by").count() >= 2,
        || {
            format!(
                "keeper log:\n{}\ndnsmasq:\n{}",
                keeper_log(&sb),
                dhcp.log_text()
            )
        },
    );
    eprintln!("two renewals after {:?}", started.elapsed());
    // Still the same address, still working, and the lease moved on.
    assert_eq!(
        addr_of(&sb, "lan", "lan0").as_deref(),
        Some(leased.as_str())
    );
    let j: serde_json::Value =
        serde_json::from_str(&must_vpn_ns(&sb, &["--json", "status", "lan"])).unwrap();
    assert_ne!(
        j["connections"][0]["keeper"]["lease_expires"], expires,
        "{j}"
    );
    let v = must_vpn_ns(&sb, &["verify", "lan"]);
    assert!(
        v.contains("expires"),
        "verify must show the lease's expiry:\n{v}"
    );

    must_vpn_ns(&sb, &["down", "lan"]);
    wait_for(
        Duration::from_secs(5),
        "a DHCPRELEASE on the wire",
        || packets(&sb, &pcap).iter().any(|p| p.kind == "Release"),
        || format!("{:#?}", packets(&sb, &pcap)),
    );
    let all = packets(&sb, &pcap);
    let renewals: Vec<&Packet> = all
        .iter()
        .filter(|p| {
            p.kind == "Request"
                && p.client_ip.as_deref() == Some(leased.as_str())
                && p.head.contains(&format!("{leased}.68 > {LAN_SERVER}.67"))
        })
        .collect();
    assert!(
        renewals.len() >= 2,
        "at least two renewals unicast from {leased} to {LAN_SERVER} with ciaddr set: {all:#?}"
    );
    let acks: Vec<&Packet> = all.iter().filter(|p| p.kind == "ACK").collect();
    assert!(
        acks.len() >= 3,
        "the first ACK and two renewal ACKs: {all:#?}"
    );
    // At T1: the renewal time the ACK before it set (dnsmasq sends option 58, and
    // shortens it on renewals; half the lease when absent).
    for (i, r) in renewals.iter().take(2).enumerate() {
        let since = r.time - acks[i].time;
        let t1 = acks[i].t1.unwrap_or(LEASE.as_secs_f64() / 2.0);
        assert!(
            (since - t1).abs() <= 1.5,
            "renewal {} came {since:.1} s after the ACK before it, not at its T1 ({t1} s): {all:#?}",
            i + 1
        );
        eprintln!(
            "renewal {}: {since:.2} s after the ACK before it (T1 {t1} s)",
            i + 1
        );
    }
    let release = all.iter().find(|p| p.kind == "Release").unwrap();
    assert_eq!(
        release.client_ip.as_deref(),
        Some(leased.as_str()),
        "{release:?}"
    );
    // dnsmasq forgets a released lease at once.
    wait_for(
        Duration::from_secs(5),
        "dnsmasq dropping the released lease",
        || {
            !std::fs::read_to_string(sb.dir().join("dnsmasq.leases"))
                .unwrap_or_default()
                .contains(&leased)
        },
        || dhcp.log_text(),
    );
}

#[test]
fn dhcp_lease_without_a_server_expires_and_the_address_goes() {
    if !require_root("dhcp_lease_without_a_server_expires_and_the_address_goes") {
        return;
    }
    let sb = Sandbox::new("keeper-dhcp-expiry");
    setup_lan(&sb);
    let mut dhcp = dnsmasq(&sb);
    sb.write_conn(
        "lan",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\ndhcp = true\n",
    );
    let started = Instant::now();
    must_vpn_ns(&sb, &["up", "lan"]);
    let leased = addr_of(&sb, "lan", "lan0").expect("leased address");
    // The server goes away: neither the renewal nor the rebinding is answered.
    let _ = dhcp.terminate(Duration::from_secs(5));
    wait_for(
        LEASE + Duration::from_secs(30),
        "the address removed at the lease's end",
        || addr_of(&sb, "lan", "lan0").is_none(),
        || keeper_log(&sb),
    );
    assert!(
        started.elapsed() >= LEASE - Duration::from_secs(2),
        "removed before the lease ran out ({:?})",
        started.elapsed()
    );
    let log = keeper_log(&sb);
    assert!(log.contains("asking to renew"), "{log}");
    assert!(log.contains("broadcast"), "a rebinding at T2: {log}");
    assert!(
        log.contains(&format!("DHCP lease of {leased} lost")),
        "{log}"
    );
    // Fail closed: no route out at all.
    assert!(sb.route_get(Some("lan"), LAN_SERVER).is_err());
    assert!(sb.route_get(Some("lan"), "203.0.113.99").is_err());
    let s = must_vpn_ns(&sb, &["status", "lan"]);
    assert!(s.contains("EXPIRED"), "{s}");
    must_vpn_ns(&sb, &["down", "lan"]);
    assert!(sb.netns_list().iter().all(|n| n != "lan"));
}
