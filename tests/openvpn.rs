//! Acceptance tests of the OpenVPN integration: a real OpenVPN 2.6 server and client
//! in a per-test sandbox (own network + mount namespace), with vpn-ns as the client's
//! --up/--down hook. Needs root and /dev/net/tun (skipped loudly otherwise; under CI
//! they must run). On failure the sandbox prints its state and every log.

use vpn_ns_testkit as common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

/// A sandbox with the standard server running.
fn setup(name: &str, opts: &ServerOptions) -> (Sandbox, VpnServer) {
    let sb = Sandbox::new(name);
    let srv = sb.start_server(opts);
    (sb, srv)
}

/// Starts a hooked client for `conn` and waits until it is connected; returns it and
/// the name of its tun device.
fn connect(sb: &Sandbox, conn: &str, opts: &ClientOptions) -> (OpenVpnClient, String) {
    let mut client = sb.start_client(conn, opts);
    expect_ok(client.wait_connected(CONNECT));
    let tun = client
        .tun_name()
        .unwrap_or_else(|| panic!("no 'TUN/TAP device ... opened' in the client log"));
    (client, tun)
}

/// "100.64.0.2 255.255.255.0" -> "100.64.0.2/24"
fn with_prefix(addr_mask: &str) -> String {
    let (addr, mask) = addr_mask.split_once(' ').expect("address and netmask");
    let mask: std::net::Ipv4Addr = mask.parse().expect("netmask");
    format!("{addr}/{}", u32::from(mask).count_ones())
}

fn pushed(client: &OpenVpnClient, key: &str) -> String {
    client
        .pushed(key)
        .unwrap_or_else(|| panic!("no `{key}` in the PUSH_REPLY of the client log"))
}

/// Runs the hook the way OpenVPN would for an `up` of device `dev`, without OpenVPN.
fn run_hook_directly(sb: &Sandbox, conn: &str, dev: &str) -> (Output, Duration) {
    let mut cmd = sb.vpn_ns();
    cmd.arg("--config-dir")
        .arg(sb.config_dir())
        .args(["hook", "openvpn", conn])
        .args([dev, "1500", "0", "100.64.0.2", "255.255.255.0", "init"])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("script_type", "up")
        .env("script_context", "init")
        .env("dev", dev)
        .env("dev_type", "tun")
        .env("ifconfig_local", "100.64.0.2")
        .env("ifconfig_netmask", "255.255.255.0")
        .env("tun_mtu", "1500")
        .stdin(std::process::Stdio::null());
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(&cmd)));
    (out, start.elapsed())
}

/// Harness check, independent of vpn-ns: plain OpenVPN (no hooks) configures the
/// sandbox host namespace itself and the service answers there. Proves the PKI
/// (including `remote-cert-tls server`), server, client, service and sandbox work,
/// and that the helpers used to prove isolation do see a tunnel when there is one.
#[test]
fn harness_plain_openvpn() {
    if !require_root("harness_plain_openvpn") {
        return;
    }
    let (sb, _srv) = setup("plain", &ServerOptions::default());
    assert!(
        sb.tcp_get(None, SERVICE_V4, SERVICE_PORT).is_err(),
        "service reachable before the VPN is up"
    );
    let plain = ClientOptions {
        hooks: false,
        ..Default::default()
    };
    let (mut client, tun) = connect(&sb, "plain", &plain);
    let log = client.log();
    assert!(
        log.contains("VERIFY KU OK") && log.contains("VERIFY EKU OK"),
        "remote-cert-tls server did not verify the test server certificate:\n{}",
        tail(&log, 40)
    );
    assert!(sb.links_in(None).contains(&tun));
    assert!(sb.has_tun(None));
    assert!(sb.route_get(None, SERVICE_V4).is_ok());
    for addr in [SERVICE_V4, SERVICE_V6] {
        assert_eq!(
            sb.tcp_get(None, addr, SERVICE_PORT).as_deref(),
            Ok(SERVICE_REPLY)
        );
    }
    expect_ok(client.stop());
    assert!(!sb.has_tun(None), "OpenVPN left its tun device behind");
}

/// Harness check: dropping a sandbox kills what runs in it, also processes in its
/// named namespaces that the test started without tracking them.
#[test]
fn harness_sandbox_cleans_up() {
    if !require_root("harness_sandbox_cleans_up") {
        return;
    }
    let sb = Sandbox::new("cleanup");
    sb.must("ip netns add other");
    let mut untracked = sb
        .ns_cmd("other", "sleep")
        .arg("300")
        .spawn()
        .expect("spawn sleep");
    let mut outside = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("spawn host sleep");
    let pid = untracked.id();
    let ino = sb.netns_inode("other").expect("namespace other");
    expect_ok(wait_until(SETTLE, || {
        match std::fs::read_link(format!("/proc/{pid}/ns/net")) {
            Ok(l) if l.to_string_lossy() == format!("net:[{ino}]") => Ok(()),
            r => Err(format!("sleep not in namespace other yet: {r:?}")),
        }
    }));
    drop(sb);
    let status = untracked.try_wait().expect("try_wait").or_else(|| {
        std::thread::sleep(Duration::from_millis(200));
        untracked.try_wait().expect("try_wait")
    });
    // A process outside the sandbox must survive.
    let outside_alive = outside.try_wait().expect("try_wait").is_none();
    for mut p in [untracked, outside] {
        let _ = p.kill();
        let _ = p.wait();
    }
    assert!(
        status.is_some(),
        "pid {pid} in the sandbox's namespace survived the sandbox"
    );
    assert!(outside_alive, "the sandbox killed a process outside it");
}

/// 1. topology subnet: addresses, routes, DNS, sealed namespace, service reachable
///    only from inside.
#[test]
fn subnet_topology_isolates_the_tunnel() {
    if !require_root("subnet_topology_isolates_the_tunnel") {
        return;
    }
    let (sb, _srv) = setup("subnet", &ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    let (client, tun) = connect(&sb, "work", &ClientOptions::default());

    assert_eq!(
        sb.netns_list(),
        sorted(&["srv", "work"]),
        "want namespace work (default netns-name: the connection name)"
    );
    let a = addrs(&sb, "work", &tun);
    let v4 = with_prefix(&pushed(&client, "ifconfig"));
    assert!(v4.starts_with("100.64.0."), "pushed ifconfig {v4}");
    assert!(
        a.contains(&format!("inet {v4} ")),
        "want inet {v4} on {tun}:\n{a}"
    );
    let v6 = pushed(&client, "ifconfig-ipv6");
    let v6 = v6.split(' ').next().unwrap_or_default();
    assert!(v6.starts_with("fd00:64::"), "pushed ifconfig-ipv6 {v6}");
    assert!(
        a.contains(&format!("inet6 {v6} ")),
        "want inet6 {v6} on {tun}:\n{a}"
    );

    assert_routes(&sb, "work", &tun);

    assert_dns_files(&sb, "work");
    assert_sealed(&sb, "work", &tun);
    assert_service_inside(&sb, "work");
    assert_host_untouched(&sb);

    let state = sb
        .read("/run/vpn-ns/work.json")
        .expect("state /run/vpn-ns/work.json missing");
    assert!(
        state.contains("\"work\"") && state.contains(&format!("\"{tun}\"")),
        "state must name the namespace and the device: {state}"
    );
}

/// 2. topology net30: a point-to-point address with its peer, same connectivity.
#[test]
fn net30_topology_works() {
    if !require_root("net30_topology_works") {
        return;
    }
    let opts = ServerOptions {
        topology: Topology::Net30,
        ..Default::default()
    };
    let (sb, _srv) = setup("net30", &opts);
    sb.write_conn("work", "type = \"openvpn\"\n");
    let (client, tun) = connect(&sb, "work", &ClientOptions::default());

    let ifconfig = pushed(&client, "ifconfig");
    let (local, remote) = ifconfig.split_once(' ').expect("ifconfig local remote");
    let a = addrs(&sb, "work", &tun);
    assert!(
        a.contains(&format!("inet {local} peer {remote}/")),
        "want p2p address {local} peer {remote} on {tun}:\n{a}"
    );
    assert_routes(&sb, "work", &tun);
    assert_sealed(&sb, "work", &tun);
    assert_service_inside(&sb, "work");
    assert_host_untouched(&sb);
}

/// 3. stopping OpenVPN removes the namespace, /etc/netns/<ns> and the state.
#[test]
fn stopping_openvpn_removes_everything() {
    if !require_root("stopping_openvpn_removes_everything") {
        return;
    }
    let (sb, _srv) = setup("stop", &ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    let (mut client, _tun) = connect(&sb, "work", &ClientOptions::default());
    assert!(
        sb.netns_list().contains(&"work".to_owned()),
        "namespace work missing while connected: {:?}",
        sb.netns_list()
    );
    assert!(
        sb.exists("/etc/netns/work/resolv.conf"),
        "/etc/netns/work/resolv.conf missing while connected"
    );
    assert!(
        sb.exists("/run/vpn-ns/work.json"),
        "state /run/vpn-ns/work.json missing while connected"
    );
    assert_service_inside(&sb, "work");

    expect_ok(client.stop());
    let log = client.log();
    assert!(
        !log.contains("Failed running command"),
        "a hook failed:\n{}",
        tail(&log, 40)
    );
    assert_gone(&sb, "work", "work");
    assert_eq!(sb.netns_list(), sorted(&["srv"]));
    assert_host_untouched(&sb);
}

/// 4. netns-persistent: the namespace and its processes survive the VPN going down,
///    without any route, and get the network back when it comes up again.
#[test]
fn persistent_namespace_survives_reconnect() {
    if !require_root("persistent_namespace_survives_reconnect") {
        return;
    }
    let (sb, _srv) = setup("persist", &ServerOptions::default());
    sb.write_conn("keep", "type = \"openvpn\"\nnetns-persistent = true\n");
    let (mut client, _tun) = connect(&sb, "keep", &ClientOptions::default());
    assert_service_inside(&sb, "keep");
    let ino = sb.netns_inode("keep").expect("namespace keep");

    let mut sleeper = {
        let mut c = sb.ns_cmd("keep", "sleep");
        c.arg("300");
        sb.spawn("sleeper", c)
    };
    let in_ns = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .map(|l| l.to_string_lossy() == format!("net:[{ino}]"))
            .unwrap_or(false)
    };
    expect_ok(wait_until(SETTLE, || {
        if in_ns(sleeper.pid()) {
            Ok(())
        } else {
            Err("the sleeper is not in namespace keep".into())
        }
    }));

    expect_ok(client.stop());
    assert!(
        sb.netns_list().contains(&"keep".to_owned()),
        "persistent namespace removed at down: {:?}",
        sb.netns_list()
    );
    assert_eq!(sb.netns_inode("keep"), Some(ino), "namespace was replaced");
    assert!(sleeper.is_alive(), "the process inside died with the VPN");
    assert_eq!(sb.links_in(Some("keep")), sorted(&["lo"]));
    let route = sb.route_get(Some("keep"), SERVICE_V4);
    assert!(route.is_err(), "namespace keep still routes: {route:?}");
    let route = sb.route_get(Some("keep"), SERVICE_V6);
    assert!(
        route.is_err(),
        "namespace keep still routes (v6): {route:?}"
    );
    let r = sb.tcp_get(Some("keep"), SERVICE_V4, SERVICE_PORT);
    assert!(r.is_err(), "service reachable with the VPN down: {r:?}");
    assert_host_untouched(&sb);

    let (_client2, tun2) = connect(&sb, "keep", &ClientOptions::default());
    assert_eq!(sb.netns_inode("keep"), Some(ino), "namespace was replaced");
    assert_service_inside(&sb, "keep");
    assert_sealed(&sb, "keep", &tun2);
    assert!(sleeper.is_alive(), "the process inside died at reconnect");
    assert!(
        in_ns(sleeper.pid()),
        "the process is no longer in namespace keep"
    );
    assert_host_untouched(&sb);
}

/// 5. netns-name: "uuid", a literal name, and the default (the connection name).
#[test]
fn namespace_names() {
    if !require_root("namespace_names") {
        return;
    }
    let (sb, _srv) = setup("names", &ServerOptions::default());
    let uuid = "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21";
    let cases = [
        (
            "byuuid",
            format!("type = \"openvpn\"\nuuid = \"{uuid}\"\nnetns-name = \"uuid\"\n"),
            uuid,
        ),
        (
            "literal",
            "type = \"openvpn\"\nnetns-name = \"corp-vpn\"\n".to_owned(),
            "corp-vpn",
        ),
        ("office", "type = \"openvpn\"\n".to_owned(), "office"),
    ];
    for (conn, toml, ns) in &cases {
        sb.write_conn(conn, toml);
        let (mut client, tun) = connect(&sb, conn, &ClientOptions::default());
        assert_eq!(
            sb.netns_list(),
            sorted(&["srv", ns]),
            "connection {conn} must live in namespace {ns}"
        );
        assert!(
            sb.exists(&format!("/run/vpn-ns/{conn}.json")),
            "state of {conn}"
        );
        assert_dns_files(&sb, ns);
        assert_sealed(&sb, ns, &tun);
        assert_service_inside(&sb, ns);
        expect_ok(client.stop());
        assert_gone(&sb, conn, ns);
    }
}

/// 6. persist-tun + up-restart + SIGUSR1: down/up "restart" on the same device inside
///    the namespace; the tunnel works after the restart.
#[test]
fn soft_restart_with_persist_tun() {
    if !require_root("soft_restart_with_persist_tun") {
        return;
    }
    let (sb, _srv) = setup("restart", &ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    let opts = ClientOptions {
        extra: vec!["persist-tun".into(), "up-restart".into()],
        ..Default::default()
    };
    let (mut client, tun) = connect(&sb, "work", &opts);
    assert_service_inside(&sb, "work");
    let ino = sb.netns_inode("work").expect("namespace work");

    client.signal_usr1();
    expect_ok(client.wait_connected_n(2, CONNECT));
    let log = client.log();
    assert!(log.contains("SIGUSR1"), "no SIGUSR1 restart in the log");
    // The scenario under test: OpenVPN kept the device ("down/up restart" on the same
    // tun inside the namespace), it did not close and reopen it.
    let after = &log[log.find("SIGUSR1").unwrap_or(0)..];
    assert!(
        after.contains("Preserving previous TUN/TAP instance")
            && !after.contains("Closing TUN/TAP interface"),
        "OpenVPN did not keep the tun device across the restart:\n{}",
        tail(&log, 60)
    );
    assert!(
        !log.contains("Failed running command"),
        "a hook failed during the restart:\n{}",
        tail(&log, 60)
    );
    assert_eq!(sb.netns_inode("work"), Some(ino), "namespace was replaced");
    assert_sealed(&sb, "work", &tun);
    // At `up ... restart` OpenVPN 2.6 passes no route_* variables: the routes set at
    // init must survive the restart.
    assert_routes(&sb, "work", &tun);
    assert_dns_files(&sb, "work");
    assert_service_inside(&sb, "work");
    assert_host_untouched(&sb);
    assert!(sb.exists("/run/vpn-ns/work.json"), "state lost at restart");
}

/// 7. the up hook fails (a pushed route whose gateway is on no connected network):
///    OpenVPN gives up and nothing is left behind.
#[test]
fn failing_up_hook_rolls_back() {
    if !require_root("failing_up_hook_rolls_back") {
        return;
    }
    let mut push = default_push();
    push[0] = "route 203.0.113.0 255.255.255.0 192.0.2.200".into();
    let opts = ServerOptions {
        push,
        ..Default::default()
    };
    let (sb, _srv) = setup("fail", &opts);
    sb.write_conn("broken", "type = \"openvpn\"\n");
    let mut client = sb.start_client("broken", &ClientOptions::default());
    // Until OpenVPN exits, or (the failure to detect) connects anyway.
    let end = Instant::now() + CONNECT;
    let status = loop {
        let st = client.wait_exit(Duration::from_millis(100));
        if st.is_some() || client.connected_count() > 0 || Instant::now() >= end {
            break st.or_else(|| client.wait_exit(Duration::from_secs(1)));
        }
    };
    let log = client.log();
    assert!(
        status.is_some(),
        "OpenVPN kept running although the up hook must fail:\n{}",
        tail(&log, 60)
    );
    assert!(
        !log.contains(CONNECTED),
        "OpenVPN completed initialization although the up hook must fail:\n{}",
        tail(&log, 60)
    );
    assert!(
        log.contains("Failed running command (--up/--down)")
            && log.contains("Exiting due to fatal error"),
        "the log must show the up script failing and OpenVPN exiting:\n{}",
        tail(&log, 60)
    );
    assert!(
        log.contains("192.0.2.200") || log.contains("203.0.113.0"),
        "vpn-ns's error must name the route it could not add:\n{}",
        tail(&log, 60)
    );
    assert_gone(&sb, "broken", "broken");
    assert_eq!(sb.netns_list(), sorted(&["srv"]));
    assert_eq!(sb.dir_entries("/etc/netns"), Vec::<String>::new());
    assert_host_untouched(&sb);
}

/// 8. the device never appears: the hook waits netns-timeout, then fails cleanly.
#[test]
fn missing_device_times_out() {
    if !require_root("missing_device_times_out") {
        return;
    }
    let sb = Sandbox::new("timeout");
    sb.write_conn("ghost", "type = \"openvpn\"\nnetns-timeout = 300\n");
    let (out, elapsed) = run_hook_directly(&sb, "ghost", "tun9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "want exit 1; stderr:\n{stderr}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "should fail after waiting ~300 ms, took {elapsed:?}; stderr:\n{stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        stderr.contains("tun9")
            && (lower.contains("timed out") || lower.contains("timeout") || lower.contains("300")),
        "stderr must name the device and the timeout:\n{stderr}"
    );
    assert_eq!(
        sb.netns_list(),
        Vec::<String>::new(),
        "namespace left behind"
    );
    assert_eq!(sb.dir_entries("/etc/netns"), Vec::<String>::new());
    assert!(!sb.exists("/run/vpn-ns/ghost.json"), "state left behind");
}

/// 9. a config error (unknown key): exit 2, the file and the key named, nothing made.
#[test]
fn config_error_exits_2() {
    if !require_root("config_error_exits_2") {
        return;
    }
    let sb = Sandbox::new("badconf");
    sb.write_conn("typo", "type = \"openvpn\"\nnetns-persistant = true\n");
    let (out, _) = run_hook_directly(&sb, "typo", "tun0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "want exit 2; stderr:\n{stderr}");
    assert!(
        stderr.contains("typo.toml") && stderr.contains("netns-persistant"),
        "stderr must name the file and the unknown key:\n{stderr}"
    );
    assert_nothing_created(&sb);
}
