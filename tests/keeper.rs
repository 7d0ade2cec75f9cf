//! Acceptance tests of the connection keeper against real peers in per-test sandboxes:
//! VPN death (kill -9 of OpenVPN in hook and native mode, of wireguard-go) takes the
//! connection down within a second (a persistent namespace is kept and marked), a
//! zombie OpenVPN is dead for `up`, a killed keeper leaves the connection working and
//! "unattended" until the next `up` starts a new one. Needs root and /dev/net/tun.

use vpn_ns_testkit as common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::wireguard::*;
use common::*;

const UP_TIMEOUT_MS: u64 = 30_000;
/// The bound for "VPN died -> connection down".
const DOWN_WITHIN: Duration = Duration::from_secs(1);

fn openvpn_conn(sb: &Sandbox, conn: &str, config: Option<&Path>, extra: &str) {
    let section = config
        .map(|c| format!("[openvpn]\nconfig = \"{}\"\n", c.display()))
        .unwrap_or_default();
    sb.write_conn(
        conn,
        &format!("type = \"openvpn\"\nnetns-timeout = {UP_TIMEOUT_MS}\n{extra}\n{section}"),
    );
}

fn state_json(sb: &Sandbox, conn: &str) -> Option<serde_json::Value> {
    sb.read(&format!("/run/vpn-ns/{conn}.json"))
        .map(|t| serde_json::from_str(&t).expect("state is JSON"))
}

/// (state letter, start time) from /proc/PID/stat.
fn stat(pid: u64) -> Option<(char, u64)> {
    let t = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &t[t.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[0].chars().next()?, f[19].parse().ok()?))
}

fn alive(pid: u64) -> bool {
    stat(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X')
}

/// The keeper recorded in the state, checked to be the running `vpn-ns keeper CONN`.
fn keeper_pid(sb: &Sandbox, conn: &str) -> u64 {
    let st = state_json(sb, conn).expect("state");
    let k = &st["keeper"];
    let pid = k["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no keeper in {st}"));
    let (_, start) = stat(pid).expect("keeper runs");
    assert_eq!(Some(start), k["start"].as_u64(), "recorded identity");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!("keeper {conn}")),
        "pid {pid} is not the keeper: {cmdline}; stat {:?}; keeper log:\n{}",
        std::fs::read_to_string(format!("/proc/{pid}/stat")),
        keeper_log(sb, conn)
    );
    pid
}

fn sigkill(pid: u64) {
    // The test kills by pid on purpose: it plays the crash that vpn-ns must notice.
    // SAFETY: kill(2) on a pid the test just read from the record.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

/// Waits until `cond`, polling every 10 ms, and returns how long it took.
fn time_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn status_text(sb: &Sandbox, conn: &str) -> String {
    let o = vpn_ns_ok(sb, &["status", conn]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn keeper_log(sb: &Sandbox, conn: &str) -> String {
    sb.read(&format!("/run/vpn-ns/{conn}.keeper.log"))
        .unwrap_or_default()
}

/// After kill -9 of the VPN: the namespace (or, persistent, the record's "up") goes
/// within a second, and the keeper says why.
/// `up` does not wait for its keeper: its control socket says it is watching.
fn wait_keeper_ready(sb: &Sandbox, conn: &str) {
    let sock = format!("/run/vpn-ns/{conn}.keeper.sock");
    assert!(
        time_until(Duration::from_secs(5), || sb.exists(&sock)).is_some(),
        "the keeper did not open its control socket:\n{}",
        keeper_log(sb, conn)
    );
}

fn assert_taken_down(sb: &Sandbox, conn: &str, vpn_pid: u64, persistent: bool) {
    let keeper = keeper_pid(sb, conn);
    // A VPN dead before the keeper looks is taken down too, logged differently: this
    // test is about a death it watches.
    wait_keeper_ready(sb, conn);
    sigkill(vpn_pid);
    let took = time_until(Duration::from_secs(5), || {
        if persistent {
            state_json(sb, conn).is_some_and(|s| s["up"] == false)
        } else {
            !sb.netns_list().contains(&conn.to_owned())
        }
    });
    let log = keeper_log(sb, conn);
    let took = took.unwrap_or_else(|| panic!("not taken down within 5 s; keeper log:\n{log}"));
    assert!(
        took <= DOWN_WITHIN,
        "taken down after {took:?}, more than {DOWN_WITHIN:?}; keeper log:\n{log}"
    );
    eprintln!("{conn}: connection taken down {took:?} after kill -9 of pid {vpn_pid}");
    assert!(
        log.contains("exited without taking the connection down"),
        "the keeper must log why:\n{log}"
    );
    assert!(
        time_until(Duration::from_secs(2), || !alive(keeper)).is_some(),
        "the keeper must end with the connection"
    );
    if persistent {
        assert!(sb.netns_list().contains(&conn.to_owned()), "kept namespace");
        let st = state_json(sb, conn).expect("kept record");
        assert!(
            st["vpn_gone"]
                .as_str()
                .is_some_and(|w| w.contains("exited")),
            "{st}"
        );
        let s = status_text(sb, conn);
        assert!(s.contains("vpn gone"), "{s}");
        assert!(s.contains(": kept"), "{s}");
        // Cut off: no route at all inside.
        assert!(sb.route_get(Some(conn), SERVICE_V4).is_err());
    } else {
        assert!(state_json(sb, conn).is_none(), "record left");
        assert!(!sb.exists(&format!("/etc/netns/{conn}")));
    }
    assert!(!sb.has_tun(None), "no tun may be left on the host");
}

#[test]
fn native_openvpn_killed_is_taken_down_within_a_second() {
    if !require_root("native_openvpn_killed_is_taken_down_within_a_second") {
        return;
    }
    let sb = Sandbox::new("keeper-native");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "kn");
    openvpn_conn(&sb, "kn", Some(&config), "");
    vpn_ns_ok(&sb, &["up", "kn"]);
    let pid = state_json(&sb, "kn").unwrap()["vpn_pid"].as_u64().unwrap();
    wait_keeper_ready(&sb, "kn");
    let s = status_text(&sb, "kn");
    assert!(
        s.contains(&format!("openvpn (pid {pid}) by pidfd")),
        "status must say what the keeper watches:\n{s}"
    );
    assert!(s.contains("by netlink link events"), "{s}");
    assert_taken_down(&sb, "kn", pid, false);
}

#[test]
fn native_openvpn_killed_keeps_a_persistent_namespace_marked() {
    if !require_root("native_openvpn_killed_keeps_a_persistent_namespace_marked") {
        return;
    }
    let sb = Sandbox::new("keeper-persist");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "kp");
    openvpn_conn(&sb, "kp", Some(&config), "netns-persistent = true");
    vpn_ns_ok(&sb, &["up", "kp"]);
    let pid = state_json(&sb, "kp").unwrap()["vpn_pid"].as_u64().unwrap();
    assert_taken_down(&sb, "kp", pid, true);
    // The next up brings the VPN back into the kept namespace.
    vpn_ns_ok(&sb, &["up", "kp"]);
    let st = state_json(&sb, "kp").unwrap();
    assert_eq!(st["up"], true);
    assert!(st.get("vpn_gone").is_none(), "{st}");
    keeper_pid(&sb, "kp");
    vpn_ns_ok(&sb, &["down", "--purge", "kp"]);
}

#[test]
fn hook_mode_openvpn_killed_is_taken_down_within_a_second() {
    if !require_root("hook_mode_openvpn_killed_is_taken_down_within_a_second") {
        return;
    }
    let sb = Sandbox::new("keeper-hook");
    let _srv = sb.start_server(&ServerOptions::default());
    openvpn_conn(&sb, "kh", None, "");
    let mut client = sb.start_client("kh", &ClientOptions::default());
    client
        .wait_connected(Duration::from_millis(UP_TIMEOUT_MS))
        .expect("client connects");
    let pid = state_json(&sb, "kh").unwrap()["vpn_pid"].as_u64().unwrap();
    assert_taken_down(&sb, "kh", pid, false);
}

#[test]
fn a_zombie_openvpn_is_dead_and_up_starts_a_new_one() {
    if !require_root("a_zombie_openvpn_is_dead_and_up_starts_a_new_one") {
        return;
    }
    // Orphans of this test process come to it and are never reaped: the "PID 1 that
    // does not reap" of a minimal container, whatever this machine's init does.
    // SAFETY: prctl with integer arguments.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let sb = Sandbox::new("keeper-zombie");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "kz");
    openvpn_conn(&sb, "kz", Some(&config), "");
    vpn_ns_ok(&sb, &["up", "kz"]);
    let pid = state_json(&sb, "kz").unwrap()["vpn_pid"].as_u64().unwrap();
    // Without a keeper nothing acts on the death: `up` alone must see it.
    let keeper = keeper_pid(&sb, "kz");
    sigkill(keeper);
    sigkill(pid);
    assert!(
        time_until(Duration::from_secs(5), || stat(pid)
            .is_some_and(|(s, _)| s == 'Z'))
        .is_some(),
        "OpenVPN {pid} must stay a zombie here: {:?}",
        stat(pid)
    );
    let s = status_text(&sb, "kz");
    assert!(s.contains("STALE"), "a zombie VPN is stale:\n{s}");
    let o = vpn_ns_ok(&sb, &["up", "kz"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("zombie"), "{}", out(&o));
    let st = state_json(&sb, "kz").expect("state");
    let new_pid = st["vpn_pid"].as_u64().unwrap();
    assert_ne!(new_pid, pid, "a new OpenVPN must run:\n{}", out(&o));
    assert!(alive(new_pid));
    assert_eq!(st["up"], true);
    keeper_pid(&sb, "kz");
    vpn_ns_ok(&sb, &["down", "kz"]);
    assert!(!alive(new_pid));
    assert!(sb.netns_list().iter().all(|n| n != "kz"));
}

#[test]
fn a_killed_keeper_leaves_the_connection_up_and_up_restores_it() {
    if !require_root("a_killed_keeper_leaves_the_connection_up_and_up_restores_it") {
        return;
    }
    let sb = Sandbox::new("keeper-restore");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "kr");
    openvpn_conn(&sb, "kr", Some(&config), "");
    vpn_ns_ok(&sb, &["up", "kr"]);
    let pid = state_json(&sb, "kr").unwrap()["vpn_pid"].as_u64().unwrap();
    let keeper = keeper_pid(&sb, "kr");
    sigkill(keeper);
    assert!(time_until(Duration::from_secs(2), || !alive(keeper)).is_some());
    // The network does not depend on the keeper.
    let r = wait_until(SETTLE, || sb.tcp_get(Some("kr"), SERVICE_V4, SERVICE_PORT));
    assert_eq!(r.as_deref(), Ok(SERVICE_REPLY));
    let s = status_text(&sb, "kr");
    assert!(s.contains("UNATTENDED"), "{s}");
    assert!(s.contains("kr (openvpn): up"), "{s}");
    let o = vpn_ns_ok(&sb, &["--json", "status", "kr"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["connections"][0]["keeper"]["running"], false, "{j}");

    let o = vpn_ns_ok(&sb, &["up", "kr"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("started a new one"),
        "{}",
        out(&o)
    );
    let st = state_json(&sb, "kr").unwrap();
    assert_eq!(st["vpn_pid"].as_u64(), Some(pid), "the same OpenVPN");
    let keeper2 = keeper_pid(&sb, "kr");
    assert_ne!(keeper2, keeper);
    wait_keeper_ready(&sb, "kr");
    let o = vpn_ns_ok(&sb, &["--json", "status", "kr"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let k = &j["connections"][0]["keeper"];
    assert_eq!(k["running"], true, "{j}");
    assert!(k["rss_kib"].as_u64().is_some_and(|r| r > 0), "{j}");
    assert!(
        k["watching"]
            .as_array()
            .is_some_and(|w| w.iter().any(|x| x.as_str().unwrap().contains("pidfd"))),
        "{j}"
    );
    // The restored keeper does its job.
    assert_taken_down(&sb, "kr", pid, false);
}

/// A WireGuard server `srv1` and the connection `kwg` (device `kwg0`, wireguard-go).
fn wg_setup(sb: &Sandbox) -> WgServer {
    let client = genkeys();
    let s1 = start_wg_server(
        sb,
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
    let file = sb.dir().join("kwg0.conf");
    std::fs::write(
        &file,
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0\n",
            client.private, s1.keys.public, s1.endpoint
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    sb.write_conn(
        "kwg",
        &format!(
            "type = \"wireguard\"\n[wireguard]\nconfig = \"{}\"\nbackend = \"userspace\"\n",
            file.display()
        ),
    );
    s1
}

#[test]
fn wireguard_go_killed_is_taken_down_within_a_second() {
    if !require_root("wireguard_go_killed_is_taken_down_within_a_second") {
        return;
    }
    let sb = Sandbox::new("keeper-wg");
    let _s1 = wg_setup(&sb);
    vpn_ns_ok(&sb, &["up", "kwg"]);
    let pid = state_json(&sb, "kwg").unwrap()["vpn_pid"].as_u64().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "wireguard-go"
    );
    assert_taken_down(&sb, "kwg", pid, false);
    assert!(!sb.exists("/run/wireguard/kwg0.sock"));
}

/// wireguard-go processes serving `kwg0` in this sandbox, not zombies.
fn kwg_wireguard_go(sb: &Sandbox) -> Vec<u32> {
    let ns = std::fs::metadata(format!("/proc/{}/ns/net", sb.pid())).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    wireguard_go_pids("kwg0")
        .into_iter()
        .filter(|p| alive(u64::from(*p)))
        .filter(|p| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/{p}/ns/net"))
                .map(|m| m.ino())
                .ok()
                == ns.as_ref().ok().copied()
        })
        .collect()
}

#[test]
fn an_interrupted_wireguard_up_leaves_no_wireguard_go() {
    if !require_root("an_interrupted_wireguard_up_leaves_no_wireguard_go") {
        return;
    }
    let sb = Sandbox::new("keeper-wg-int");
    let _s1 = wg_setup(&sb);
    for (sig, name) in [(sys::SIGTERM, "SIGTERM"), (sys::SIGKILL, "SIGKILL")] {
        for delay_ms in [5u64, 20, 40, 80, 160] {
            let mut cmd = sb.vpn_ns();
            cmd.arg("--config-dir")
                .arg(sb.config_dir())
                .args(["up", "kwg"]);
            let mut up = sb.spawn("wg-up", cmd);
            std::thread::sleep(Duration::from_millis(delay_ms));
            up.signal(sig);
            let status = up
                .wait_exit(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("{name} after {delay_ms} ms: up did not exit"));
            if status.success() {
                // Up was complete before the signal came: a working connection.
                eprintln!("{name} after {delay_ms} ms: up had finished");
                vpn_ns_ok(&sb, &["down", "kwg"]);
                continue;
            }
            if sig == sys::SIGKILL {
                // Nothing can run in a SIGKILLed process: the next command cleans up.
                vpn_ns_ok(&sb, &["down", "kwg"]);
            }
            let left = time_until(Duration::from_secs(5), || kwg_wireguard_go(&sb).is_empty());
            assert!(
                left.is_some(),
                "{name} after {delay_ms} ms: wireguard-go left running: {:?}\n{}",
                kwg_wireguard_go(&sb),
                up.log_text()
            );
            vpn_ns_ok(&sb, &["down", "kwg"]);
            assert!(
                sb.netns_list().iter().all(|n| n != "kwg"),
                "{name} {delay_ms}"
            );
            assert!(
                !sb.links_in(None).contains(&"kwg0".to_owned()),
                "{name} {delay_ms}"
            );
        }
    }
    // And it still comes up.
    vpn_ns_ok(&sb, &["up", "kwg"]);
    vpn_ns_ok(&sb, &["down", "kwg"]);
}

#[test]
fn foreground_up_acts_on_a_sigterm_that_arrives_during_start_up() {
    if !require_root("foreground_up_acts_on_a_sigterm_that_arrives_during_start_up") {
        return;
    }
    let sb = Sandbox::new("keeper-fg-race");
    let _srv = sb.start_server(&ServerOptions::default());
    let config = client_config(&sb, "kf");
    openvpn_conn(&sb, "kf", Some(&config), "");
    let needle = config.display().to_string();
    // From "before anything started" to "OpenVPN is connecting": each SIGTERM must
    // end the whole thing, with nothing left running or configured.
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 160] {
        let mut cmd = sb.vpn_ns();
        cmd.arg("--config-dir")
            .arg(sb.config_dir())
            .args(["up", "kf", "--foreground"]);
        let mut fg = sb.spawn("foreground", cmd);
        std::thread::sleep(Duration::from_millis(delay_ms));
        assert!(fg.signal(sys::SIGTERM));
        let status = fg.wait_exit(Duration::from_secs(20));
        assert!(
            status.is_some(),
            "delay {delay_ms} ms: vpn-ns --foreground did not exit after SIGTERM: {}",
            fg.log_text()
        );
        let left = time_until(Duration::from_secs(5), || {
            openvpn_with(&needle).is_empty() && !sb.netns_list().contains(&"kf".to_owned())
        });
        assert!(
            left.is_some(),
            "delay {delay_ms} ms: left behind: openvpn {:?}, namespaces {:?}\n{}",
            openvpn_with(&needle),
            sb.netns_list(),
            fg.log_text()
        );
        assert!(state_json(&sb, "kf").is_none_or(|s| s["up"] == false));
    }
}

/// Running (not zombie) OpenVPN processes started with `needle` on their command line.
fn openvpn_with(needle: &str) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with("openvpn") && c.contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_device_that_leaves_the_namespace_is_taken_down_within_a_second() {
    if !require_root("a_device_that_leaves_the_namespace_is_taken_down_within_a_second") {
        return;
    }
    // A connection with no VPN process (a static macvlan): the keeper watches the
    // device by netlink link events inside the namespace.
    let sb = Sandbox::new("keeper-link");
    sb.must(
        "set -e
         ip netns add lanhost
         ip link add lan0 type veth peer name eth0 netns lanhost
         ip link set lan0 up
         ip -n lanhost addr add 192.0.2.1/24 dev eth0
         ip -n lanhost link set eth0 up",
    );
    sb.write_conn(
        "kl",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\naddress = \"192.0.2.77/24\"\ngateway = \"192.0.2.1\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    vpn_ns_ok(&sb, &["up", "kl"]);
    let st = state_json(&sb, "kl").unwrap();
    assert!(st.get("vpn_pid").is_none_or(|p| p.is_null()), "{st}");
    let keeper = keeper_pid(&sb, "kl");
    wait_keeper_ready(&sb, "kl");
    let s = status_text(&sb, "kl");
    assert!(
        s.contains("lan0 in namespace kl by netlink link events"),
        "{s}"
    );
    // Someone deletes the device inside the namespace.
    let start = Instant::now();
    expect_ok(sb.ip(Some("kl"), &["link", "del", "lan0"]));
    let took = time_until(Duration::from_secs(5), || {
        !sb.netns_list().contains(&"kl".to_owned())
    })
    .map(|_| start.elapsed());
    let log = keeper_log(&sb, "kl");
    let took = took.unwrap_or_else(|| panic!("not taken down within 5 s:\n{log}"));
    assert!(took <= DOWN_WITHIN, "taken down after {took:?}:\n{log}");
    eprintln!("kl: taken down {took:?} after the device was deleted");
    assert!(log.contains("device lan0 left namespace kl"), "{log}");
    assert!(state_json(&sb, "kl").is_none());
    assert!(time_until(Duration::from_secs(2), || !alive(keeper)).is_some());
}
