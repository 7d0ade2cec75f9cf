//! The built-in WireGuard data plane (`backend = "builtin"`) against real peers:
//! wireguard-go and itself, inside a per-test sandbox. The client is `vpn-ns up`; its
//! tun must be born in the connection's namespace (never in the host's), its UDP
//! socket stays in the host namespace.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::*;
use vpn_ns_testkit::sandbox::{Proc, run};
use vpn_ns_testkit::wireguard::*;
use vpn_ns_testkit::*;

fn client_services(sb: &Sandbox, conn: &str) -> Vec<Proc> {
    let mut procs = Vec::new();
    for (fam, listen) in [
        (
            "v4",
            format!("TCP4-LISTEN:{SERVICE_PORT},bind={CLIENT_V4},reuseaddr,fork"),
        ),
        (
            "v6",
            format!("TCP6-LISTEN:{SERVICE_PORT},bind=[{CLIENT_V6}],reuseaddr,fork"),
        ),
    ] {
        let mut cmd = sb.ns_cmd(conn, "socat");
        cmd.arg(listen).arg(format!("SYSTEM:echo client-{fam}"));
        procs.push(sb.spawn(&format!("client-service-{fam}"), cmd));
    }
    procs
}

fn endpoint_of(sb: &Sandbox, ns: Option<&str>, dev: &str) -> String {
    run(sb.cmd_in(ns, "wg").args(["show", dev, "endpoints"]))
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

fn veth_v6(sb: &Sandbox) {
    sb.must(
        "set -e
         ip addr add 2001:db8:51::1/64 dev up1 nodad
         ip -n srv1 addr add 2001:db8:51::2/64 dev eth0 nodad",
    );
}

fn roam_client(sb: &Sandbox, v6: bool) -> &'static str {
    if v6 {
        sb.must(
            "set -e
             ip addr add 2001:db8:51::9/128 dev up1 nodad
             ip -6 route replace 2001:db8:51::/64 dev up1 src 2001:db8:51::9
             ip -n srv1 -6 route add 2001:db8:51::9/128 dev eth0",
        );
        "[2001:db8:51::9]:"
    } else {
        sb.must(
            "set -e
             ip addr add 198.51.100.9/32 dev up1
             ip route replace 198.51.100.0/30 dev up1 src 198.51.100.9
             ip -n srv1 route add 198.51.100.9/32 dev eth0",
        );
        "198.51.100.9:"
    }
}

fn client_file(sb: &Sandbox, dev: &str, client: &Keys, peer: &str, psk: &str, ep: &str) -> PathBuf {
    write_wg_file(
        sb,
        dev,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24, {CLIENT_V6}/64\n\
             DNS = 203.0.113.53\n\
             [Peer]\nPublicKey = {peer}\nPresharedKey = {psk}\nEndpoint = {ep}\n\
             AllowedIPs = 100.64.0.0/24, 203.0.113.0/25, fd00:64::/64, fd00:203::/64\n\
             PersistentKeepalive = 1\n",
            client.private
        ),
    )
}

/// Up, traffic both ways over IPv4 and IPv6 with a preshared key, `wg show` on the
/// built-in socket, status and verify, roaming, down: against `server_builtin`
/// (vpn-ns's own data plane) or wireguard-go, over an IPv4 or an IPv6 endpoint.
fn round_trip(name: &str, conn: &str, server_builtin: bool, v6_endpoint: bool) {
    let dev = format!("{conn}0");
    let sb = Sandbox::new(name);
    let client = genkeys();
    let psk = wg(&["genpsk"], "");
    let s1 = start_wg_server(
        &sb,
        &WgServerSpec {
            n: 1,
            tunnel_v4: "100.64.0.1",
            tunnel_v6: Some("fd00:64::1"),
            services: &[(SERVICE_V4, "hello-v4"), (SERVICE_V6, "hello-v6")],
            psk: Some(&psk),
            builtin: server_builtin,
        },
        &client.public,
    );
    let endpoint = if v6_endpoint {
        veth_v6(&sb);
        format!("[2001:db8:51::2]:{WG_PORT}")
    } else {
        s1.endpoint.clone()
    };
    let file = client_file(&sb, &dev, &client, &s1.keys.public, &psk, &endpoint);
    builtin_conn(&sb, conn, &file);

    let out = vpn_ns(&sb, &["up", conn]);
    assert_success("vpn-ns up", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains(&client.private) && !err.contains(&psk),
        "keys in output: {err}"
    );
    // Born inside: the device never existed in the host namespace, one process serves it
    // and it runs in the host namespace (its UDP socket is there).
    assert!(sb.links_in(Some(conn)).contains(&dev));
    assert!(!sb.links_in(None).contains(&dev));
    let pids = builtin_pids(&dev);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let st = sb.read(&format!("/run/vpn-ns/{conn}.json")).expect("state");
    assert!(st.contains(&format!("\"vpn_pid\": {}", pids[0])), "{st}");

    answers(&sb, conn, SERVICE_V4, "hello-v4");
    answers(&sb, conn, SERVICE_V6, "hello-v6");
    let _svc = client_services(&sb, conn);
    answers(&sb, "srv1", CLIENT_V4, "client-v4");
    answers(&sb, "srv1", CLIENT_V6, "client-v6");
    assert!(
        sb.tcp_get(None, SERVICE_V4, SERVICE_PORT).is_err(),
        "reachable from the host"
    );

    // `wg show` reads the built-in device over its UAPI socket.
    let show = expect_ok(run(sb.cmd("wg").args(["show", &dev])));
    assert!(show.contains("latest handshake"), "{show}");
    assert!(show.contains("preshared key: (hidden)"), "{show}");
    assert!(show.contains(&format!("endpoint: {endpoint}")), "{show}");
    // status: per-peer handshake, bytes, endpoint; verify: sealed, handshake included.
    let out = vpn_ns(&sb, &["--json", "status", conn]);
    assert_success("vpn-ns status", &out);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let p = &j["connections"][0]["wireguard_peers"][0];
    assert_eq!(p["public_key"], s1.keys.public.as_str(), "{j}");
    assert_eq!(p["endpoint"], endpoint.as_str(), "{j}");
    assert!(
        p["latest_handshake_age"].as_u64().is_some_and(|a| a < 60),
        "{j}"
    );
    assert!(p["rx_bytes"].as_u64().is_some_and(|b| b > 0), "{j}");
    let out = vpn_ns(&sb, &["verify", conn]);
    assert_success("vpn-ns verify", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok   handshake"), "{text}");
    let mode = sb
        .path(&format!("/run/wireguard/{dev}.sock"))
        .metadata()
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "UAPI socket mode {mode:o}");

    // Roaming: the client's packets now come from 198.51.100.9; the server follows
    // (keepalive 1 s keeps packets flowing) and traffic goes on.
    let moved = roam_client(&sb, v6_endpoint);
    let followed = wait_until(WG_SETTLE, || {
        let ep = endpoint_of(&sb, Some("srv1"), "wgs1");
        if ep.starts_with(moved) {
            Ok(ep)
        } else {
            Err(ep)
        }
    });
    assert!(
        followed.is_ok(),
        "the server did not follow the client: {followed:?}"
    );
    answers(&sb, conn, SERVICE_V4, "hello-v4");
    answers(&sb, "srv1", CLIENT_V6, "client-v6");

    assert_success("vpn-ns down", &vpn_ns(&sb, &["down", conn]));
    assert_nothing_left(&sb, conn, &dev);
}

#[test]
fn builtin_against_wireguard_go() {
    if !require_root("builtin_against_wireguard_go") {
        return;
    }
    round_trip("wgb-go", "wgbg", false, false);
}

#[test]
fn builtin_against_builtin() {
    if !require_root("builtin_against_builtin") {
        return;
    }
    round_trip("wgb-self", "wgbs", true, true);
}

/// 2,400 AllowedIPs (the size that made the old kernel path overflow its netlink
/// message) come up and carry traffic; a listening port already taken makes up fail
/// and roll back; deleting the namespace under a running data plane ends it.
#[test]
fn builtin_large_config_rollback_and_namespace_loss() {
    if !require_root("builtin_large_config_rollback_and_namespace_loss") {
        return;
    }
    let sb = Sandbox::new("wgb-large");
    let client = genkeys();
    let psk = wg(&["genpsk"], "");
    let s1 = start_wg_server(
        &sb,
        &WgServerSpec {
            n: 1,
            tunnel_v4: "100.64.0.1",
            tunnel_v6: Some("fd00:64::1"),
            services: &[(SERVICE_V4, "hello-v4")],
            psk: Some(&psk),
            builtin: false,
        },
        &client.public,
    );
    let many: Vec<String> = (0..2400u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let file = write_wg_file(
        &sb,
        "wgl0",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\n\
             [Peer]\nPublicKey = {}\nPresharedKey = {psk}\nEndpoint = {}\n\
             AllowedIPs = 100.64.0.0/24, 203.0.113.0/25\nAllowedIPs = {}\n",
            client.private,
            s1.keys.public,
            s1.endpoint,
            many.join(", ")
        ),
    );
    // The same file over both userspace paths. wireguard-go first: boringtun's
    // handshake timestamps run 27 s ahead of wireguard-go's (TAI64 base with 37 leap
    // seconds instead of 10), so after the built-in one the peer would take
    // wireguard-go's initiations for replays for that long.
    sb.write_conn(
        "wglg",
        &format!(
            "type = \"wireguard\"\n[wireguard]\nconfig = \"{}\"\nbackend = \"wireguard-go\"\n",
            file.display()
        ),
    );
    assert_success("vpn-ns up wglg", &vpn_ns(&sb, &["up", "wglg"]));
    answers(&sb, "wglg", SERVICE_V4, "hello-v4");
    let ips = expect_ok(run(sb.cmd("wg").args(["show", "wgl0", "allowed-ips"])));
    assert_eq!(
        ips.split_whitespace().count(),
        1 + 2402,
        "{}",
        tail(&ips, 3)
    );
    assert_success("vpn-ns down wglg", &vpn_ns(&sb, &["down", "wglg"]));
    assert_nothing_left(&sb, "wglg", "wgl0");

    builtin_conn(&sb, "wgl", &file);
    assert_success("vpn-ns up wgl", &vpn_ns(&sb, &["up", "wgl"]));
    answers(&sb, "wgl", SERVICE_V4, "hello-v4");
    let ips = expect_ok(run(sb.cmd("wg").args(["show", "wgl0", "allowed-ips"])));
    assert_eq!(
        ips.split_whitespace().count(),
        1 + 2402,
        "{}",
        tail(&ips, 3)
    );
    assert_success("vpn-ns down wgl", &vpn_ns(&sb, &["down", "wgl"]));
    assert_nothing_left(&sb, "wgl", "wgl0");
    // The port is taken in the host namespace: the data plane cannot bind, up fails
    // with its log named, and nothing stays.
    let _holder = sb.spawn("port-holder", {
        let mut c = sb.cmd("socat");
        c.args(["-u", "UDP4-RECV:51999", "STDOUT"]);
        c
    });
    expect_ok(wait_until(WG_SETTLE, || {
        sb.sh("ss -Hlun | grep -q ':51999 '").map(|_| ())
    }));
    let clash = write_wg_file(
        &sb,
        "wgc0",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\nListenPort = 51999\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 203.0.113.0/25\n",
            client.private, s1.keys.public, s1.endpoint
        ),
    );
    builtin_conn(&sb, "wgc", &clash);
    let out = vpn_ns(&sb, &["up", "wgc"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exited before it was ready") && err.contains("wgc.wg.log"),
        "{err}"
    );
    let log = sb.read("/run/vpn-ns/wgc.wg.log").unwrap_or_default();
    assert!(log.contains("cannot bind UDP port 51999"), "{log}");
    assert_nothing_left(&sb, "wgc", "wgc0");

    // A peer that never answers: verify waits netns-timeout (1 s) from the up, then
    // fails the named check.
    let silent = write_wg_file(
        &sb,
        "wgn0",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\nDNS = 203.0.113.53\n\
             [Peer]\nPublicKey = {}\nEndpoint = 198.51.100.2:51999\nAllowedIPs = 203.0.113.0/25\n",
            client.private, s1.keys.public
        ),
    );
    sb.write_conn(
        "wgn",
        &format!(
            "type = \"wireguard\"\nnetns-timeout = 1000\n[wireguard]\nconfig = \"{}\"\nbackend = \"builtin\"\n",
            silent.display()
        ),
    );
    assert_success("vpn-ns up wgn", &vpn_ns(&sb, &["up", "wgn"]));
    let out = vpn_ns(&sb, &["verify", "wgn"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL handshake") && text.contains("198.51.100.2:51999"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed check(s): handshake"),
        "{out:?}"
    );
    let out = vpn_ns(&sb, &["--json", "status", "wgn"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(
        j["connections"][0]["wireguard_peers"][0]["latest_handshake"].is_null(),
        "{j}"
    );
    assert_success("vpn-ns down wgn", &vpn_ns(&sb, &["down", "wgn"]));
    assert_nothing_left(&sb, "wgn", "wgn0");

    // Deleting the namespace under a running data plane ends it; down cleans up.
    assert_success("vpn-ns up wgl", &vpn_ns(&sb, &["up", "wgl"]));
    assert_eq!(builtin_pids("wgl0").len(), 1);
    sb.must("ip netns delete wgl");
    let ended = wait_until(WG_SETTLE, || {
        if builtin_pids("wgl0").is_empty() {
            Ok(())
        } else {
            Err("still running".to_owned())
        }
    });
    assert_eq!(ended, Ok(()), "the data plane outlived its namespace");
    assert_success("vpn-ns down wgl", &vpn_ns(&sb, &["down", "wgl"]));
    assert_nothing_left(&sb, "wgl", "wgl0");
}

#[test]
fn builtin_against_wireguard_go_ipv6_endpoint() {
    if !require_root("builtin_against_wireguard_go_ipv6_endpoint") {
        return;
    }
    round_trip("wgb-go6", "wgb6", false, true);
}
