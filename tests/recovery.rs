//! Recovery and persistent namespaces with real VPNs.
//! - OpenVPN SIGKILLed (its down hook never runs) leaves a stale record: the namespace
//!   stays with a known owner and a dead `vpn_pid`, `status` calls it stale,
//!   `vpn-ns down` cleans everything, and the next OpenVPN start (with or without that
//!   down) works.
//! - netns-persistent, OpenVPN and WireGuard: a process inside survives three
//!   down/up cycles in the same namespace, has no network while the VPN is down and
//!   gets it back after each up.

use vpn_ns_testkit as common;

use std::path::Path;
use std::time::Duration;

use common::reliability::{FakeTun, Prober, assert_owners_known, kill_keeper, state_text};
use common::wireguard::*;
use common::*;

const PROBE: Duration = Duration::from_secs(15);

/// Connects `conn`, SIGKILLs its keeper (so nothing watches it: tests/keeper.rs covers
/// the keeper's own reaction) and then its OpenVPN, and checks the stale record left.
fn connect_and_kill(sb: &Sandbox, conn: &str) -> u64 {
    let mut client = sb.start_client(conn, &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    assert_service_inside(sb, conn);
    let pid = client.proc.pid();
    let st = state_text(sb, conn).expect("state after up");
    assert!(
        st.contains(&format!("\"vpn_pid\": {pid}")),
        "the state must record OpenVPN's pid {pid}: {st}"
    );
    let ino = sb.netns_inode(conn).expect("namespace");
    kill_keeper(sb, conn);

    assert!(client.proc.signal(sys::SIGKILL), "cannot SIGKILL openvpn");
    assert!(
        client.proc.wait_exit(SETTLE).is_some(),
        "openvpn survived SIGKILL"
    );
    // Stale: the record is still there, its VPN process is not, and status says so.
    let st = state_text(sb, conn).expect("the record must outlive the killed OpenVPN");
    assert!(st.contains("\"up\": true"), "{st}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    let o = vpn_ns(sb, &["status", conn]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("STALE") && out.contains(&format!("pid {pid}")),
        "status must call the connection stale, naming the dead OpenVPN:\n{out}"
    );
    assert_owners_known(sb, &[SERVER_NS], "after SIGKILL of openvpn");
    assert!(
        !sb.has_tun(Some(conn)),
        "the tun of the killed OpenVPN must be gone"
    );
    assert_host_untouched(sb);
    ino
}

#[test]
fn openvpn_killed_then_down_cleans_and_up_works() {
    if !require_root("openvpn_killed_then_down_cleans_and_up_works") {
        return;
    }
    let sb = Sandbox::new("rec-down");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    connect_and_kill(&sb, "work");

    assert_success("vpn-ns down work", &vpn_ns(&sb, &["down", "work"]));
    assert_gone(&sb, "work", "work");
    assert_host_untouched(&sb);

    let mut client = sb.start_client("work", &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    assert_service_inside(&sb, "work");
    expect_ok(client.stop());
    assert_gone(&sb, "work", "work");
}

#[test]
fn openvpn_killed_then_next_up_takes_over() {
    if !require_root("openvpn_killed_then_next_up_takes_over") {
        return;
    }
    let sb = Sandbox::new("rec-up");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    let ino = connect_and_kill(&sb, "work");

    // No down in between: the next up reuses the namespace it knows it created...
    let mut client = sb.start_client("work", &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    assert_service_inside(&sb, "work");
    assert_eq!(sb.netns_inode("work"), Some(ino), "namespace replaced");
    let st = state_text(&sb, "work").expect("state");
    assert!(
        st.contains(&format!("\"vpn_pid\": {}", client.proc.pid())),
        "{st}"
    );
    // ...and so still removes it at down.
    expect_ok(client.stop());
    assert_gone(&sb, "work", "work");
}

#[test]
fn openvpn_persistent_namespace_three_reconnects() {
    if !require_root("openvpn_persistent_namespace_three_reconnects") {
        return;
    }
    let sb = Sandbox::new("rec-ovpn-persist");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("keep", "type = \"openvpn\"\nnetns-persistent = true\n");
    let mut client = sb.start_client("keep", &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    let ino = sb.netns_inode("keep").expect("namespace keep");
    let mut probe = Prober::start(&sb, "keep", SERVICE_V4, SERVICE_PORT);
    probe.wait_for("up", 0, PROBE);
    for cycle in 1..=3 {
        let mark = probe.lines();
        expect_ok(client.stop());
        probe.wait_for("down", mark, PROBE);
        probe.assert_in(ino);
        assert_eq!(sb.netns_inode("keep"), Some(ino), "cycle {cycle}");
        assert_eq!(sb.links_in(Some("keep")), sorted(&["lo"]), "cycle {cycle}");
        for addr in [SERVICE_V4, SERVICE_V6] {
            let r = sb.route_get(Some("keep"), addr);
            assert!(r.is_err(), "cycle {cycle}: a route while down: {r:?}");
        }
        assert_host_untouched(&sb);

        let mark = probe.lines();
        client = sb.start_client("keep", &ClientOptions::default());
        expect_ok(client.wait_connected(CONNECT));
        probe.wait_for("up", mark, PROBE);
        probe.assert_in(ino);
        assert_service_inside(&sb, "keep");
        assert_host_untouched(&sb);
    }
    expect_ok(client.stop());
}

#[test]
fn wireguard_persistent_namespace_three_reconnects() {
    if !require_root("wireguard_persistent_namespace_three_reconnects") {
        return;
    }
    let sb = Sandbox::new("rec-wg-persist");
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
    let key = write_secret(
        &sb,
        "wgk0.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0\n",
            client.private, srv.keys.public, srv.endpoint
        ),
    );
    sb.write_conn(
        "wgk",
        &format!(
            "type = \"wireguard\"\nnetns-persistent = true\n[wireguard]\nconfig = \"{}\"\nbackend = \"userspace\"\n",
            key.display()
        ),
    );
    assert_success("vpn-ns up wgk", &vpn_ns(&sb, &["up", "wgk"]));
    let ino = sb.netns_inode("wgk").expect("namespace wgk");
    let mut probe = Prober::start(&sb, "wgk", SERVICE_V4, SERVICE_PORT);
    probe.wait_for("up", 0, PROBE);
    for cycle in 1..=3 {
        let mark = probe.lines();
        assert_success("vpn-ns down wgk", &vpn_ns(&sb, &["down", "wgk"]));
        probe.wait_for("down", mark, PROBE);
        probe.assert_in(ino);
        assert_eq!(sb.netns_inode("wgk"), Some(ino), "cycle {cycle}");
        assert_eq!(sb.links_in(Some("wgk")), sorted(&["lo"]), "cycle {cycle}");
        let r = sb.route_get(Some("wgk"), SERVICE_V4);
        assert!(r.is_err(), "cycle {cycle}: a route while down: {r:?}");
        assert!(
            sb.route_get(None, SERVICE_V4).is_err(),
            "cycle {cycle}: the host routes to the service"
        );

        let mark = probe.lines();
        assert_success("vpn-ns up wgk", &vpn_ns(&sb, &["up", "wgk"]));
        probe.wait_for("up", mark, PROBE);
        probe.assert_in(ino);
        assert!(
            sb.tcp_get(None, SERVICE_V4, SERVICE_PORT).is_err(),
            "cycle {cycle}: the service answers from the host"
        );
    }
    assert_success("vpn-ns down wgk", &vpn_ns(&sb, &["down", "wgk"]));
}

/// A record names the namespace vpn-ns created; an up with another netns-name must not
/// overwrite it (the old namespace would be left without a known owner).
#[test]
fn up_refuses_to_forget_a_recorded_namespace() {
    if !require_root("up_refuses_to_forget_a_recorded_namespace") {
        return;
    }
    let sb = Sandbox::new("rec-rename");
    let t = FakeTun::new(&sb, "ren", "tren", 9, "netns-name = \"first\"\n");
    t.must_hook(&sb, "up");
    sb.write_conn("ren", "type = \"openvpn\"\nnetns-name = \"second\"\n");
    let o = t.run_hook(&sb, "up", None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("recorded with namespace \"first\"") && err.contains("vpn-ns down ren"),
        "{err}"
    );
    assert_eq!(sb.netns_list(), vec!["first".to_owned()]);
    assert_owners_known(&sb, &[], "after the refused up");
    // down follows the record, then the new name works.
    t.must_hook(&sb, "down");
    assert_eq!(sb.netns_list(), Vec::<String>::new());
    t.must_hook(&sb, "up");
    assert_eq!(sb.netns_list(), vec!["second".to_owned()]);
    t.must_hook(&sb, "down");
    assert_gone(&sb, "ren", "second");
}
