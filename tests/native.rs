//! Acceptance tests of `vpn-ns up`/`down` (vpn-ns starts a real OpenVPN 2.6 itself),
//! `vpn-ns adopt` of a tunnel OpenVPN configured in the host namespace, the
//! NetworkManager dispatcher script, and `vpn-ns check`. Each test runs in its own
//! sandbox (network + mount namespace) against a real OpenVPN server; needs root and
//! /dev/net/tun (skipped loudly otherwise; under CI they must run).

use vpn_ns_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::pki::pki;
use common::*;

/// Bound for `vpn-ns up` (TLS handshake + hook) on a loaded machine; it is also the
/// connections' netns-timeout.
const UP_TIMEOUT_MS: u64 = 30_000;

/// A client config without any vpn-ns wiring (what `vpn-ns up` expects), plus `extra`.
fn client_config(sb: &Sandbox, name: &str, remote: &str, extra: &[&str]) -> PathBuf {
    let p = pki();
    let mut lines = vec![
        "client".to_owned(),
        "dev tun".to_owned(),
        format!("remote {remote} {SERVER_PORT} udp"),
        "nobind".to_owned(),
        "remote-cert-tls server".to_owned(),
        format!("ca {}", p.ca_cert.display()),
        format!("cert {}", p.client_cert.display()),
        format!("key {}", p.client_key.display()),
        "connect-retry 1 1".to_owned(),
        "verb 3".to_owned(),
    ];
    lines.extend(extra.iter().map(|s| s.to_string()));
    let path = sb.dir().join(format!("{name}.conf"));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write client config");
    path
}

fn openvpn_conn(sb: &Sandbox, conn: &str, config: &Path, extra_toml: &str) {
    sb.write_conn(
        conn,
        &format!(
            "type = \"openvpn\"\nnetns-timeout = {UP_TIMEOUT_MS}\n{extra_toml}\n[openvpn]\nconfig = \"{}\"\n",
            config.display()
        ),
    );
}

/// The service answers from inside `ns` over IPv4 and IPv6.
fn assert_service_in(sb: &Sandbox, ns: Option<&str>) {
    for addr in [SERVICE_V4, SERVICE_V6] {
        let r = wait_until(SETTLE, || {
            sb.tcp_get(ns, addr, SERVICE_PORT).and_then(|l| {
                (l == SERVICE_REPLY)
                    .then_some(l.clone())
                    .ok_or(format!("unexpected answer {l:?}"))
            })
        });
        assert!(
            r.is_ok(),
            "the service at [{addr}]:{SERVICE_PORT} must answer from {}: {r:?}",
            ns.unwrap_or("the host namespace")
        );
    }
}

fn assert_no_service_route(sb: &Sandbox, ns: Option<&str>) {
    for addr in [SERVICE_V4, SERVICE_V6] {
        let r = sb.route_get(ns, addr);
        assert!(
            r.is_err(),
            "{} has a route to {addr}: {r:?}",
            ns.unwrap_or("the host namespace")
        );
    }
}

/// Pids of processes whose command line mentions `needle` (a test-unique path).
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

fn state_json(sb: &Sandbox, conn: &str) -> Option<serde_json::Value> {
    sb.read(&format!("/run/vpn-ns/{conn}.json"))
        .map(|t| serde_json::from_str(&t).expect("state is JSON"))
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn up_and_down_of_a_real_openvpn_connection() {
    if !require_root("up_and_down_of_a_real_openvpn_connection") {
        return;
    }
    let sb = Sandbox::new("native-up");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "work", SERVER_ADDR, &["disable-dco"]);
    openvpn_conn(&sb, "work", &config, "");

    let o = vpn_ns_ok(&sb, &["up", "work"]);
    // `up` returned, so the namespace is ready now: no waiting here.
    assert_eq!(sb.netns_list(), vec!["srv", "work"], "{}", out(&o));
    let st = state_json(&sb, "work").expect("state after up");
    assert_eq!(st["up"], true);
    let pid = st["vpn_pid"].as_u64().expect("vpn_pid recorded");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "openvpn"
    );
    let tun = st["device"].as_str().unwrap().to_owned();
    assert_eq!(sb.links_in(Some("work")), vec!["lo".to_owned(), tun]);
    assert!(
        !sb.has_tun(None),
        "a tun device is left in the host namespace"
    );
    assert_service_in(&sb, Some("work"));
    assert_no_service_route(&sb, None);
    let log = sb
        .read("/run/vpn-ns/work.openvpn.log")
        .expect("OpenVPN's log");
    assert!(log.contains(CONNECTED), "log:\n{log}");

    // A second up is a no-op, not a second OpenVPN.
    vpn_ns_ok(&sb, &["up", "work"]);
    assert_eq!(
        processes_with(&config.display().to_string()),
        vec![pid as u32]
    );

    let o = vpn_ns_ok(&sb, &["down", "work"]);
    assert!(!alive(pid), "OpenVPN still runs after down:\n{}", out(&o));
    assert_eq!(sb.netns_list(), vec!["srv"]);
    assert!(state_json(&sb, "work").is_none(), "state left after down");
    assert!(!sb.exists("/etc/netns/work"), "/etc/netns/work left");
    assert!(!sb.has_tun(None));
    assert!(processes_with(&config.display().to_string()).is_empty());

    let o = vpn_ns_ok(&sb, &["down", "work"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not up"),
        "{}",
        out(&o)
    );
}

#[test]
fn up_refuses_a_conflicting_directive_naming_the_line() {
    if !require_root("up_refuses_a_conflicting_directive_naming_the_line") {
        return;
    }
    let sb = Sandbox::new("native-conflict");
    let config = client_config(
        &sb,
        "work",
        SERVER_ADDR,
        &["up /etc/openvpn/update-resolv-conf"],
    );
    let line = std::fs::read_to_string(&config).unwrap().lines().count();
    openvpn_conn(&sb, "work", &config, "");
    let o = vpn_ns(&sb, &["up", "work"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!(
        "{} line {line}: `up` conflicts with vpn-ns (it installs its own --up hook); remove it",
        config.display()
    );
    assert!(err.contains(&want), "want {want:?} in:\n{}", out(&o));
    assert!(processes_with(&config.display().to_string()).is_empty());
    assert!(sb.netns_list().is_empty());
    assert!(state_json(&sb, "work").is_none());
}

#[test]
fn up_of_an_unreachable_server_fails_within_the_timeout_and_leaves_nothing() {
    if !require_root("up_of_an_unreachable_server_fails_within_the_timeout_and_leaves_nothing") {
        return;
    }
    let sb = Sandbox::new("native-unreachable");
    let _srv = sb.start_server(&ServerOptions {
        service: false,
        ..ServerOptions::default()
    });
    // On the server's link, but nobody answers there.
    let config = client_config(&sb, "work", "198.51.100.99", &[]);
    sb.write_conn(
        "work",
        &format!(
            "type = \"openvpn\"\nnetns-timeout = 3000\n[openvpn]\nconfig = \"{}\"\n",
            config.display()
        ),
    );
    let start = Instant::now();
    let o = vpn_ns(&sb, &["up", "work"]);
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        took >= Duration::from_millis(3000) && took < Duration::from_secs(3 + 15),
        "up took {took:?} for netns-timeout = 3000"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not up within 3000 ms (netns-timeout)"),
        "{}",
        out(&o)
    );
    // The tail of OpenVPN's own log is in the message.
    assert!(err.contains("work.openvpn.log:"), "{}", out(&o));
    assert!(err.contains("198.51.100.99"), "{}", out(&o));
    assert!(processes_with(&config.display().to_string()).is_empty());
    assert_eq!(sb.netns_list(), vec!["srv"]);
    assert!(state_json(&sb, "work").is_none());
    assert!(!sb.has_tun(None));
    assert!(!sb.exists("/etc/netns/work"));
}

#[test]
fn up_fails_at_once_when_openvpn_exits() {
    if !require_root("up_fails_at_once_when_openvpn_exits") {
        return;
    }
    let sb = Sandbox::new("native-exits");
    let config = client_config(&sb, "work", SERVER_ADDR, &["ca /nonexistent/ca.crt"]);
    openvpn_conn(&sb, "work", &config, "");
    let start = Instant::now();
    let o = vpn_ns(&sb, &["up", "work"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        start.elapsed() < Duration::from_millis(UP_TIMEOUT_MS / 2),
        "up waited for the timeout although OpenVPN exited"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("openvpn exited"), "{}", out(&o));
    assert!(err.contains("/nonexistent/ca.crt"), "{}", out(&o));
    assert!(sb.netns_list().is_empty());
    assert!(state_json(&sb, "work").is_none());
}

#[test]
fn purge_refuses_while_processes_run_inside_unless_kill() {
    if !require_root("purge_refuses_while_processes_run_inside_unless_kill") {
        return;
    }
    let sb = Sandbox::new("native-purge");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "work", SERVER_ADDR, &[]);
    openvpn_conn(&sb, "work", &config, "netns-persistent = true");
    vpn_ns_ok(&sb, &["up", "work"]);
    let mut app = sb.spawn("app", {
        let mut c = sb.ns_cmd("work", "sleep");
        c.arg("600");
        c
    });
    // Until `ip netns exec` has become `sleep` inside the namespace.
    expect_ok(wait_until(SETTLE, || {
        let o = expect_ok(sb.ip(None, &["netns", "pids", "work"]));
        o.split_whitespace()
            .any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .then_some(())
            .ok_or(format!("no sleep among {o:?} yet"))
    }));

    let o = vpn_ns(&sb, &["down", "work", "--purge"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("processes still run inside") && err.contains("(sleep)"),
        "{}",
        out(&o)
    );
    // Refused means nothing changed: the VPN is still up.
    assert_service_in(&sb, Some("work"));

    vpn_ns_ok(&sb, &["down", "work"]);
    assert_eq!(
        sb.netns_list(),
        vec!["srv", "work"],
        "persistent namespace kept"
    );
    assert!(app.is_alive());
    assert_no_service_route(&sb, Some("work"));
    let o = vpn_ns(&sb, &["down", "work", "--purge"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    vpn_ns_ok(&sb, &["down", "work", "--purge", "--kill"]);
    assert!(app.wait_exit(SETTLE).is_some(), "the app inside still runs");
    assert_eq!(sb.netns_list(), vec!["srv"]);
    assert!(state_json(&sb, "work").is_none());
    assert!(!sb.exists("/etc/netns/work"));
}

#[test]
fn foreground_up_forwards_sigterm_and_cleans_up() {
    if !require_root("foreground_up_forwards_sigterm_and_cleans_up") {
        return;
    }
    let sb = Sandbox::new("native-fg");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "work", SERVER_ADDR, &[]);
    openvpn_conn(&sb, "work", &config, "");
    let mut cmd = sb.vpn_ns();
    cmd.arg("--config-dir")
        .arg(sb.config_dir())
        .args(["up", "work", "--foreground"]);
    let mut fg = sb.spawn("foreground", cmd);
    expect_ok(wait_for_log(
        &fg.log,
        CONNECTED,
        Duration::from_millis(UP_TIMEOUT_MS),
    ));
    assert_service_in(&sb, Some("work"));
    let st = state_json(&sb, "work").expect("state");
    let pid = st["vpn_pid"].as_u64().unwrap();

    assert!(fg.signal(common::sys::SIGTERM));
    let status = fg.wait_exit(Duration::from_secs(20)).expect("vpn-ns exits");
    assert!(status.success(), "{status}: {}", fg.log_text());
    assert!(!alive(pid));
    assert_eq!(sb.netns_list(), vec!["srv"]);
    assert!(state_json(&sb, "work").is_none());
}

/// A plain OpenVPN client (no vpn-ns wiring) that configured its tunnel in the
/// sandbox host namespace itself, and a `type = "device"` connection for it.
fn host_configured_tunnel(sb: &Sandbox, conn: &str) -> (OpenVpnClient, String) {
    let mut client = sb.start_client(
        conn,
        &ClientOptions {
            hooks: false,
            extra: Vec::new(),
        },
    );
    expect_ok(client.wait_connected(Duration::from_millis(UP_TIMEOUT_MS)));
    let tun = client.tun_name().expect("tun name in the client log");
    assert_service_in(sb, None);
    sb.write_conn(
        conn,
        "type = \"device\"\n[dns]\nservers = [\"203.0.113.53\"]\nsearch = [\"corp.example\"]\n",
    );
    (client, tun)
}

/// The routes through `tun` in the sandbox host namespace, sorted, without the
/// `proto` word: vpn-ns restores destination, gateway and metric, and its routes carry
/// the iproute2 default protocol (boot) where OpenVPN's said `static`.
fn host_routes(sb: &Sandbox, tun: &str) -> (String, String) {
    let dev = format!(" dev {tun}");
    let keep = |o: String| {
        let mut v: Vec<String> = o
            .lines()
            .filter(|l| l.contains(&dev))
            .map(|l| l.replace(" proto static", "").replace(" proto boot", ""))
            .collect();
        v.sort();
        v.join("\n")
    };
    (
        keep(expect_ok(sb.ip(None, &["-4", "route"]))),
        keep(expect_ok(sb.ip(None, &["-6", "route"]))),
    )
}

fn assert_adopted(sb: &Sandbox, conn: &str, tun: &str) {
    assert_eq!(
        sb.links_in(Some(conn)),
        vec!["lo".to_owned(), tun.to_owned()]
    );
    assert!(!sb.has_tun(None));
    assert_service_in(sb, Some(conn));
    assert_no_service_route(sb, None);
    let resolv = sb
        .read(&format!("/etc/netns/{conn}/resolv.conf"))
        .expect("resolv.conf");
    assert!(resolv.contains("nameserver 203.0.113.53"), "{resolv}");
    let r4 = expect_ok(sb.ip(Some(conn), &["-4", "route"]));
    assert!(
        r4.lines()
            .any(|l| l.starts_with("default ") && l.contains(&format!(" dev {tun}"))),
        "{r4}"
    );
}

fn assert_given_back(sb: &Sandbox, conn: &str, tun: &str, before: &(String, String)) {
    assert!(!sb.netns_list().contains(&conn.to_owned()));
    assert!(sb.links_in(None).contains(&tun.to_owned()));
    assert_eq!(&host_routes(sb, tun), before, "host routes not restored");
    assert_service_in(sb, None);
    assert!(state_json(sb, conn).is_none());
    assert!(!sb.exists(&format!("/run/vpn-ns/{conn}.adopted")));
}

#[test]
fn adopt_moves_a_tunnel_openvpn_configured_itself() {
    if !require_root("adopt_moves_a_tunnel_openvpn_configured_itself") {
        return;
    }
    let sb = Sandbox::new("native-adopt");
    let _srv = sb.start_server(&ServerOptions::default());
    let (mut client, tun) = host_configured_tunnel(&sb, "nm");
    let before = host_routes(&sb, &tun);
    assert!(before.0.contains("203.0.113.0/24"), "{before:?}");

    vpn_ns_ok(&sb, &["adopt", "nm", &tun]);
    assert_adopted(&sb, "nm", &tun);
    let st = state_json(&sb, "nm").unwrap();
    assert_eq!(st["origin"], "adopt");

    vpn_ns_ok(&sb, &["down", "nm"]);
    assert_given_back(&sb, "nm", &tun, &before);
    assert!(client.is_running(), "OpenVPN must survive adopt and down");

    let o = vpn_ns(&sb, &["adopt", "nm", "nosuchdev0"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no device nosuchdev0"),
        "{}",
        out(&o)
    );
    assert_eq!(sb.netns_list(), vec!["srv"]);
}

fn dispatcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/networkmanager/90-vpn-ns")
}

/// Runs the dispatcher script like NetworkManager does: `<script> <iface> <action>`.
fn dispatch(sb: &Sandbox, id: &str, iface: &str, action: &str) -> Output {
    let mut c: Command = sb.cmd("env");
    c.args(["-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        .arg(format!("CONNECTION_ID={id}"))
        .arg("CONNECTION_UUID=0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21")
        .arg(format!("VPN_IP_IFACE={iface}"))
        .arg(format!("DEVICE_IFACE={iface}"))
        .arg(format!("NM_DISPATCHER_ACTION={action}"))
        .arg(format!("VPN_NS={}", vpn_ns_bin()))
        .arg(format!("VPN_NS_CONFIG_DIR={}", sb.config_dir().display()))
        .arg(dispatcher())
        .args([iface, action]);
    c.output().expect("run the dispatcher script")
}

#[test]
fn networkmanager_dispatcher_adopts_on_vpn_up_and_downs_on_vpn_down() {
    if !require_root("networkmanager_dispatcher_adopts_on_vpn_up_and_downs_on_vpn_down") {
        return;
    }
    let sb = Sandbox::new("native-nm");
    let _srv = sb.start_server(&ServerOptions::default());
    let (client, tun) = host_configured_tunnel(&sb, "office");
    let before = host_routes(&sb, &tun);

    // Other actions and connections without a vpn-ns file are left alone.
    for (id, action) in [
        ("office", "up"),
        ("office", "pre-down"),
        ("elsewhere", "vpn-up"),
    ] {
        let o = dispatch(&sb, id, &tun, action);
        assert!(o.status.success(), "{id} {action}: {}", out(&o));
        assert!(sb.has_tun(None), "{id} {action} touched the tunnel");
    }
    assert_eq!(sb.netns_list(), vec!["srv"]);

    let o = dispatch(&sb, "office", &tun, "vpn-up");
    assert!(o.status.success(), "vpn-up: {}", out(&o));
    assert_adopted(&sb, "office", &tun);

    // NetworkManager has deconfigured the VPN by vpn-down: nothing is put back on the
    // host (the device goes away with the namespace; tests/networkmanager.rs has the
    // real NetworkManager).
    let o = dispatch(&sb, "office", &tun, "vpn-down");
    assert!(o.status.success(), "vpn-down: {}", out(&o));
    assert!(!sb.netns_list().contains(&"office".to_owned()));
    assert!(
        !sb.has_tun(None),
        "vpn-down put the device back on the host"
    );
    assert_no_service_route(&sb, None);
    assert!(state_json(&sb, "office").is_none());
    assert!(!sb.exists("/run/vpn-ns/office.adopted"));
    drop((client, before));
}

#[test]
fn check_reports_each_problem_on_one_line() {
    let dir = std::env::temp_dir().join(format!("vpn-ns-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.conf");
    std::fs::write(&good, "client\nremote 192.0.2.1 1194\ndev tun\n").unwrap();
    let bad = dir.join("bad.conf");
    std::fs::write(
        &bad,
        "client\nremote 192.0.2.1 1194\n# hooks\nroute-up /bin/true\n",
    )
    .unwrap();
    let conf = dir.join("conf");
    let conn = |name: &str, cfg: &Path| {
        write_conn(
            &conf,
            name,
            &format!(
                "type = \"openvpn\"\n[openvpn]\nconfig = \"{}\"\n",
                cfg.display()
            ),
        )
    };
    conn("good", &good);
    let run = |args: &[&str]| {
        Command::new(vpn_ns_bin())
            .arg("--config-dir")
            .arg(&conf)
            .arg("check")
            .args(args)
            .output()
            .unwrap()
    };
    let host_ok = Path::new("/dev/net/tun").exists();

    let o = run(&["good"]);
    if host_ok {
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with("ok:"),
            "{}",
            out(&o)
        );
    }

    conn("bad", &bad);
    let writable = write_conn(&conf, "loose", "type = \"device\"\n");
    std::fs::set_permissions(
        &writable,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    write_conn(&conf, "typo", "type = \"openvpm\"\n");
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let want = [
        format!(
            "bad: {} line 4: `route-up` conflicts with vpn-ns",
            bad.display()
        ),
        format!(
            "loose: {} is writable by group or others",
            writable.display()
        ),
        "typo: ".to_owned(),
    ];
    for w in &want {
        assert!(
            stdout.lines().any(|l| l.starts_with(w.as_str())),
            "want a line starting with {w:?}:\n{}",
            out(&o)
        );
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("good:")),
        "{}",
        out(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
