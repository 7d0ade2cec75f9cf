//! Acceptance tests of published ports (docs/publish.md) with a real OpenVPN
//! connection in a sandbox: a web service inside fetched from the host, a host service
//! on 127.0.0.1 reached from inside by a normal user through `vpn-ns exec`, DNS over
//! UDP both ways (dnsmasq on each side), `verify` passing and the uplink carrying
//! nothing but the VPN's packets while published, ad hoc publish/unpublish, a taken
//! address failing the up (rolled back), a dropped VPN closing the ports, down
//! removing them; OpenVPN's hook mode and native WireGuard (IPv6) too. Needs root and
//! /dev/net/tun.

use vpn_ns_testkit as common;

use std::time::Duration;

use common::exec::{TestUser, exec_cmd, output};
use common::sandbox::{self, Proc};
use common::*;

const UP_TIMEOUT_MS: u64 = 30_000;
/// An answer the relay cannot make up: a name only the resolver on the other side knows.
const HOST_NAME: &str = "host-side.test";
const HOST_ADDR_HEX: &str = "c0 00 02 4d"; // 192.0.2.77
const INSIDE_NAME: &str = "inside.test";
const INSIDE_ADDR_HEX: &str = "c0 00 02 58"; // 192.0.2.88

/// A native OpenVPN connection with `entries` ([[publish]]/[[host-access]] tables).
fn openvpn_conn(sb: &Sandbox, conn: &str, extra: &str, entries: &str) {
    let config = client_config(sb, conn);
    sb.write_conn(
        conn,
        &format!(
            "type = \"openvpn\"\nnetns-timeout = {UP_TIMEOUT_MS}\n{extra}\n\
             [openvpn]\nconfig = \"{}\"\n\n{entries}",
            config.display()
        ),
    );
}

fn dnsmasq(
    sb: &Sandbox,
    mut cmd: std::process::Command,
    name: &str,
    port: u16,
    answer: &str,
) -> Proc {
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--user=root",
        "--listen-address=127.0.0.1",
    ])
    .arg(format!(
        "--pid-file={}",
        sb.dir().join(format!("{name}.pid")).display()
    ))
    .arg(format!("--port={port}"))
    .arg(format!("--address={answer}"));
    sb.spawn(name, cmd)
}

/// A one-line HTTP server (socat forks one answer per connection) on 127.0.0.1:port.
fn web(sb: &Sandbox, ns: Option<&str>, port: u16, body: &str) -> Proc {
    web_on(
        sb,
        ns,
        &format!("TCP-LISTEN:{port},bind=127.0.0.1"),
        port,
        body,
    )
}

fn web_on(sb: &Sandbox, ns: Option<&str>, listen: &str, port: u16, body: &str) -> Proc {
    let script = sb.dir().join(format!("web-{port}-{body}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf 'HTTP/1.0 200 OK\\r\\nContent-Length: {}\\r\\n\\r\\n{body}'\n",
            body.len()
        ),
    )
    .unwrap();
    let mut c = sb.cmd_in(ns, "socat");
    c.arg(format!("{listen},fork,reuseaddr"))
        .arg(format!("SYSTEM:sh {}", script.display()));
    sb.spawn(&format!("web-{port}"), c)
}

/// A DNS query for `name` (type A) through socat, answered bytes in hex.
fn dns_query_script(name: &str, port: u16) -> String {
    let mut q = String::from("\\022\\064\\001\\000\\000\\001\\000\\000\\000\\000\\000\\000");
    for label in name.split('.') {
        q.push_str(&format!("\\{:03o}{label}", label.len()));
    }
    q.push_str("\\000\\000\\001\\000\\001");
    format!("printf '{q}' | socat -T3 - UDP:127.0.0.1:{port} | od -An -tx1 | tr -s ' \\n' '  '")
}

fn curl(sb: &Sandbox, port: u16) -> Result<String, String> {
    sandbox::run(
        sb.cmd("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/")),
    )
}

/// The keeper's relays as `status --json` shows them.
fn published(sb: &Sandbox, conn: &str) -> Vec<serde_json::Value> {
    let o = vpn_ns_ok(sb, &["--json", "status", conn]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    v["connections"][0]["keeper"]["published"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Up returns once the namespace is ready; the keeper binds a moment later.
fn wait_published(sb: &Sandbox, conn: &str, n: usize) {
    let r = wait_until(Duration::from_secs(10), || {
        let p = published(sb, conn);
        if p.len() == n && p.iter().all(|r| r.get("error").is_none()) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    if let Err(e) = r {
        let log = sb
            .read(&format!("/run/vpn-ns/{conn}.keeper.log"))
            .unwrap_or_default();
        panic!("relays not up: {e}\nkeeper log:\n{log}");
    }
}

/// Why a `tcpdump -n -r` line of the uplink is not the VPN's own traffic.
fn not_the_vpn(line: &str) -> Option<String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let openvpn = format!("{SERVER_ADDR}.{SERVER_PORT}");
    let ours = |a: &str| {
        a.strip_prefix(&format!("{UPLINK_ADDR}."))
            .is_some_and(|p| p.parse::<u16>().is_ok())
    };
    match w.get(1).copied() {
        Some("IP") if w.len() > 4 => {
            let (src, dst) = (w[2], w[4].trim_end_matches(':'));
            let udp = w.get(5) == Some(&"UDP,");
            let tunnel = udp && ((ours(src) && dst == openvpn) || (src == openvpn && ours(dst)));
            (!tunnel).then(|| line.to_owned())
        }
        Some("ARP,") => None,
        // Link-local IPv6 housekeeping of the veth itself.
        Some("IP6")
            if ["solicitation", "advertisement", "multicast listener"]
                .iter()
                .any(|k| line.contains(k)) =>
        {
            None
        }
        _ => Some(line.to_owned()),
    }
}

#[test]
fn openvpn_namespace_publishes_both_ways_and_stays_sealed() {
    if !require_root("openvpn_namespace_publishes_both_ways_and_stays_sealed") {
        return;
    }
    let sb = Sandbox::new("publish-e2e");
    let _srv = sb.start_server(&ServerOptions::default());
    openvpn_conn(
        &sb,
        "pb",
        "",
        "[[publish]]\nlisten = \"127.0.0.1:9091\"\n\n\
         [[publish]]\nlisten = 5300\ntarget = \"127.0.0.1:5354\"\nproto = \"udp\"\n\n\
         [[host-access]]\nlisten = \"127.0.0.1:1143\"\ntarget = \"127.0.0.1:1143\"\nproto = \"tcp\"\n\n\
         [[host-access]]\nlisten = \"127.0.0.1:53\"\ntarget = \"127.0.0.1:5353\"\nproto = \"udp\"\n",
    );
    // The host side's services, on its loopback only.
    let _host_web = web(&sb, None, 1143, "host-service");
    let _host_dns = dnsmasq(
        &sb,
        sb.cmd("dnsmasq"),
        "dnsmasq-host",
        5353,
        &format!("/{HOST_NAME}/192.0.2.77"),
    );

    vpn_ns_ok(&sb, &["up", "pb"]);
    // Up returns once the keeper listens: no waiting here.
    let p = published(&sb, "pb");
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p.iter().all(|r| r.get("error").is_none()), "{p:?}");
    let _inside_web = web(&sb, Some("pb"), 9091, "web-inside");
    let _inside_dns = dnsmasq(
        &sb,
        sb.ns_cmd("pb", "dnsmasq"),
        "dnsmasq-inside",
        5354,
        &format!("/{INSIDE_NAME}/192.0.2.88"),
    );

    // The capture of the uplink covers all the relayed traffic below.
    let pcap = sb.dir().join("uplink.pcap");
    let mut tcpdump = sb.cmd("tcpdump");
    tcpdump
        .args(["-i", "uplink", "-n", "-U", "-Z", "root", "-w"])
        .arg(&pcap);
    let mut capture = sb.spawn("tcpdump", tcpdump);
    wait_for_log(&capture.log, "listening on", Duration::from_secs(10)).unwrap();

    // Host -> a web service inside the namespace.
    let page = wait_until(Duration::from_secs(10), || curl(&sb, 9091)).unwrap();
    assert_eq!(page, "web-inside");
    // Inside -> a host service on 127.0.0.1, as a normal user through `vpn-ns exec`.
    let u = TestUser::create();
    let script = format!(
        "id -u; socat -T3 -u TCP:127.0.0.1:1143 STDOUT; echo; {}",
        dns_query_script(HOST_NAME, 53)
    );
    let o = output(exec_cmd(
        &sb,
        None,
        &["-u", &u.name, "pb", "--", "sh", "-c", &script],
    ));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", out(&o));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(u.uid.to_string().as_str()), "{text}");
    assert!(text.contains("\r\n\r\nhost-service"), "{text}");
    // UDP, inside -> host: dnsmasq on the host answered the name only it knows.
    assert!(
        text.contains(HOST_ADDR_HEX),
        "DNS answer from the host's dnsmasq:\n{text}"
    );
    // UDP, host -> inside.
    let answer = sb.must(&dns_query_script(INSIDE_NAME, 5300));
    assert!(
        answer.contains(INSIDE_ADDR_HEX),
        "DNS answer from the namespace's dnsmasq: {answer}"
    );
    // The tunnel carries the namespace's own traffic meanwhile.
    assert_eq!(
        sb.tcp_get(Some("pb"), SERVICE_V4, SERVICE_PORT).unwrap(),
        SERVICE_REPLY
    );

    // Sealed while published: verify passes, the namespace holds lo and the tunnel only.
    vpn_ns_ok(&sb, &["verify", "pb"]);
    let mut links = sb.links_in(Some("pb"));
    links.sort();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links.contains(&"lo".to_owned()), "{links:?}");
    capture.terminate(Duration::from_secs(10)).unwrap();
    let dump = sandbox::run(sb.cmd("tcpdump").args(["-n", "-r"]).arg(&pcap)).unwrap();
    let bad: Vec<String> = dump.lines().filter_map(not_the_vpn).collect();
    assert!(
        bad.is_empty(),
        "the uplink carried more than the VPN's packets:\n{}",
        bad.join("\n")
    );
    assert!(
        dump.lines().count() > 0,
        "the capture saw the tunnel's packets"
    );

    // status: what is published, with live counts.
    let p = published(&sb, "pb");
    let find = |dir: &str, listen: &str| {
        p.iter()
            .find(|r| r["direction"] == dir && r["listen"] == listen)
            .unwrap_or_else(|| panic!("{dir} {listen} in {p:?}"))
    };
    assert!(find("publish", "127.0.0.1:9091")["total"].as_u64() >= Some(1));
    assert_eq!(find("publish", "127.0.0.1:5300")["proto"], "udp");
    assert!(find("host-access", "127.0.0.1:1143")["total"].as_u64() >= Some(1));
    assert!(find("host-access", "127.0.0.1:53")["total"].as_u64() >= Some(1));
    let human = String::from_utf8_lossy(&vpn_ns_ok(&sb, &["status", "pb"]).stdout).into_owned();
    assert!(
        human.contains("[[publish]] listen 127.0.0.1:9091/tcp -> target 127.0.0.1:9091"),
        "{human}"
    );

    // Ad hoc, through the running keeper.
    vpn_ns_ok(&sb, &["publish", "pb", "8081:9091"]);
    assert_eq!(curl(&sb, 8081).unwrap(), "web-inside");
    let again = vpn_ns(&sb, &["publish", "pb", "8081:9091"]);
    assert_eq!(again.status.code(), Some(1), "{}", out(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already published"),
        "{}",
        out(&again)
    );
    let bad = vpn_ns(&sb, &["publish", "pb", "host:80"]);
    assert_eq!(bad.status.code(), Some(2), "{}", out(&bad));
    vpn_ns_ok(&sb, &["unpublish", "pb", "8081"]);
    assert!(curl(&sb, 8081).is_err(), "unpublished port still answers");
    // Ad hoc the other way: the host's service on another port inside.
    let o = vpn_ns_ok(&sb, &["publish", "--host-access", "pb", "1144:1143"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("[[host-access]] listen 127.0.0.1:1144/tcp -> target 127.0.0.1:1143"),
        "{}",
        out(&o)
    );
    let inside = |port: u16| {
        sandbox::run(
            sb.ns_cmd("pb", "curl")
                .args(["-sS", "--max-time", "5"])
                .arg(format!("http://127.0.0.1:{port}/")),
        )
    };
    assert_eq!(inside(1144).unwrap(), "host-service");
    vpn_ns_ok(&sb, &["unpublish", "pb", "1144", "--host-access"]);
    assert!(
        inside(1144).is_err(),
        "unpublished host access still answers"
    );
    // Nothing else of the host is reachable from inside: its web service on 9092 below
    // is not published.
    let _other = web(&sb, None, 9092, "not-for-inside");
    wait_until(Duration::from_secs(10), || curl(&sb, 9092)).unwrap();
    assert!(
        inside(9092).is_err(),
        "a host service that is not published answers inside"
    );

    // Down: every listener is gone, on both sides.
    vpn_ns_ok(&sb, &["down", "pb"]);
    assert!(
        curl(&sb, 9091).is_err(),
        "published port still answers after down"
    );
    let listening = sb.must("ss -Hltun");
    for port in [":9091 ", ":5300 "] {
        assert!(
            !listening.contains(port),
            "{port} still bound after down:\n{listening}"
        );
    }
}

#[test]
fn a_taken_host_address_fails_the_up_and_rolls_it_back() {
    if !require_root("a_taken_host_address_fails_the_up_and_rolls_it_back") {
        return;
    }
    let sb = Sandbox::new("publish-taken");
    let _srv = sb.start_server(&ServerOptions::default());
    openvpn_conn(&sb, "pt", "", "[[publish]]\nlisten = \"127.0.0.1:9091\"\n");
    let _squatter = web(&sb, None, 9091, "someone-else");
    wait_until(Duration::from_secs(10), || curl(&sb, 9091)).unwrap();
    let o = vpn_ns(&sb, &["up", "pt"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("[[publish]] listen 127.0.0.1:9091/tcp") && err.contains("in use"),
        "the error must name the entry and why:\n{err}"
    );
    assert!(
        !sb.netns_list().contains(&"pt".to_owned()),
        "namespace left"
    );
    assert!(sb.read("/run/vpn-ns/pt.json").is_none(), "record left");
    assert!(!sb.has_tun(None), "no tun may be left on the host");
    assert_eq!(curl(&sb, 9091).unwrap(), "someone-else");
}

#[test]
fn a_dropped_vpn_closes_published_ports_even_in_a_kept_namespace() {
    if !require_root("a_dropped_vpn_closes_published_ports_even_in_a_kept_namespace") {
        return;
    }
    let sb = Sandbox::new("publish-drop");
    let _srv = sb.start_server(&ServerOptions::default());
    openvpn_conn(
        &sb,
        "pd",
        "netns-persistent = true",
        "[[publish]]\nlisten = 9091\n",
    );
    vpn_ns_ok(&sb, &["up", "pd"]);
    wait_published(&sb, "pd", 1);
    let _inside_web = web(&sb, Some("pd"), 9091, "web-inside");
    assert_eq!(
        wait_until(Duration::from_secs(10), || curl(&sb, 9091)).unwrap(),
        "web-inside"
    );
    let st: serde_json::Value =
        serde_json::from_str(&sb.read("/run/vpn-ns/pd.json").unwrap()).unwrap();
    let vpn = st["vpn_pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) of the recorded OpenVPN: the test plays a crashed VPN.
    assert_eq!(unsafe { libc::kill(vpn, libc::SIGKILL) }, 0);
    wait_until(Duration::from_secs(5), || match curl(&sb, 9091) {
        Err(_) => Ok(()),
        Ok(page) => Err(page),
    })
    .expect("the published port must refuse once the VPN is gone");
    // The service inside still runs in the kept namespace: only the relay is gone.
    assert!(sb.netns_list().contains(&"pd".to_owned()));
    let inside = sandbox::run(sb.ns_cmd("pd", "curl").args([
        "-sS",
        "--max-time",
        "5",
        "http://127.0.0.1:9091/",
    ]));
    assert_eq!(inside.unwrap(), "web-inside");
    vpn_ns_ok(&sb, &["down", "--purge", "--kill", "pd"]);
}

#[test]
fn wireguard_native_publishes_over_ipv6_and_reaches_host_dns() {
    if !require_root("wireguard_native_publishes_over_ipv6_and_reaches_host_dns") {
        return;
    }
    use common::wireguard::*;
    let sb = Sandbox::new("publish-wg");
    let client = genkeys();
    let srv = start_wg_server(
        &sb,
        &WgServerSpec {
            n: 1,
            tunnel_v4: "100.64.0.1",
            tunnel_v6: None,
            services: &[(SERVICE_V4, "hello")],
            psk: None,
            builtin: false,
        },
        &client.public,
    );
    let file = sb.dir().join("wgq0.conf");
    std::fs::write(
        &file,
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0\n",
            client.private, srv.keys.public, srv.endpoint
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    sb.write_conn(
        "wgq",
        &format!(
            "type = \"wireguard\"\n\
             [wireguard]\nconfig = \"{}\"\nbackend = \"userspace\"\n\
             [[publish]]\nlisten = \"[::1]:9092\"\ntarget = \"[::1]:9092\"\n\
             [[host-access]]\nlisten = \"127.0.0.1:53\"\ntarget = 5353\nproto = \"udp\"\n",
            file.display()
        ),
    );
    let _host_dns = dnsmasq(
        &sb,
        sb.cmd("dnsmasq"),
        "dnsmasq-host",
        5353,
        &format!("/{HOST_NAME}/192.0.2.77"),
    );
    vpn_ns_ok(&sb, &["up", "wgq"]);
    let _inside_web = web_on(
        &sb,
        Some("wgq"),
        "TCP6-LISTEN:9092,bind=[::1]",
        9092,
        "web-wg",
    );
    let page = wait_until(Duration::from_secs(10), || {
        sandbox::run(
            sb.cmd("curl")
                .args(["-sSg", "--max-time", "5", "http://[::1]:9092/"]),
        )
    })
    .unwrap();
    assert_eq!(page, "web-wg");
    let answer = sandbox::run(
        sb.ns_cmd("wgq", "sh")
            .args(["-c", &dns_query_script(HOST_NAME, 53)]),
    )
    .unwrap();
    assert!(answer.contains(HOST_ADDR_HEX), "{answer}");
    assert_eq!(
        sb.tcp_get(Some("wgq"), SERVICE_V4, SERVICE_PORT).unwrap(),
        "hello"
    );
    vpn_ns_ok(&sb, &["verify", "wgq"]);
    vpn_ns_ok(&sb, &["down", "wgq"]);
    assert!(
        sandbox::run(
            sb.cmd("curl")
                .args(["-sSg", "--max-time", "2", "http://[::1]:9092/"])
        )
        .is_err()
    );
}

#[test]
fn hook_mode_openvpn_publishes_when_the_namespace_is_ready() {
    if !require_root("hook_mode_openvpn_publishes_when_the_namespace_is_ready") {
        return;
    }
    let sb = Sandbox::new("publish-hook");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn(
        "ph",
        &format!(
            "type = \"openvpn\"\nnetns-timeout = {UP_TIMEOUT_MS}\n\
             [[publish]]\nlisten = 9093\n"
        ),
    );
    let mut client = sb.start_client("ph", &ClientOptions::default());
    client
        .wait_connected(Duration::from_millis(UP_TIMEOUT_MS))
        .expect("client connects");
    wait_published(&sb, "ph", 1);
    let _inside_web = web(&sb, Some("ph"), 9093, "web-hook");
    let page = wait_until(Duration::from_secs(10), || curl(&sb, 9093)).unwrap();
    assert_eq!(page, "web-hook");
    vpn_ns_ok(&sb, &["verify", "ph"]);
    // OpenVPN's own exit runs the down hook: the listener goes with the connection.
    client.stop().unwrap();
    assert!(
        curl(&sb, 9093).is_err(),
        "published port still answers after the VPN's down"
    );
}
