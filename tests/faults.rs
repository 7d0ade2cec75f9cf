//! Crash recovery: vpn-ns SIGKILLed at every step of up and down (fault-injection
//! points, `$VPN_NS_FAULT`; this file is built only with `--features fault-injection`),
//! then a retry. After every kill: nothing of the tunnel is configured in the host
//! namespace and every namespace has a known owner; the retry then succeeds and leaves
//! a fully up or fully clean system. The hook runs with OpenVPN's environment on a
//! persistent tun, so a killed call leaves the device where it was (as with
//! `persist-tun`), the hardest case for the next call. The uplink kinds (routed,
//! macvlan) go through the same engine and are killed at the same steps, plus their
//! own (after the device pair, after NAT), with the host-side state they leave (veth,
//! NAT table, ip_forward) checked too.

use vpn_ns_testkit as common;

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use common::reliability::{FakeTun, assert_no_tunnel_on_host, assert_owners_known, state_text};
use common::*;

const UP_POINTS: [&str; 8] = [
    "up:after-lock",
    "up:netns-file-created",
    "up:after-create-netns",
    "up:after-move-device",
    "up:after-addresses",
    "up:after-routes",
    "up:after-dns",
    "up:before-state-save",
];

const DOWN_POINTS: [&str; 3] = [
    "down:after-device-strip",
    "down:after-netns-delete",
    "down:before-state-remove",
];

/// The call died of SIGKILL at `point` (not an ordinary failure or success, which
/// would mean the point was never reached).
fn assert_killed(out: &Output, point: &str) {
    assert_eq!(
        out.status.signal(),
        Some(9),
        "VPN_NS_FAULT={point}: expected death by SIGKILL at the point, got {} (stderr: {})",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Nothing of the tunnel on the host, every namespace owned, and `status` calls a
/// record left behind stale (pointing at `vpn-ns down`).
fn after_kill(sb: &Sandbox, t: &FakeTun, point: &str) {
    let when = format!("after SIGKILL at {point}");
    assert_no_tunnel_on_host(sb, &when);
    assert_owners_known(sb, &[], &when);
    // An up that died (intent record), or a down that died after the device left
    // (the record still says up). A kept persistent record stays "kept".
    if let Some(st) = state_text(sb, &t.conn)
        && (st.contains("\"creating\": true") || st.contains("\"up\": true"))
    {
        assert_status(sb, t, "STALE", &when);
    }
}

fn assert_status(sb: &Sandbox, t: &FakeTun, want: &str, when: &str) {
    let o = sb
        .vpn_ns()
        .arg("--config-dir")
        .arg(sb.config_dir())
        .args(["status", &t.conn])
        .output()
        .expect("run vpn-ns status");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(want) && out.contains(&format!("vpn-ns down {}", t.conn)),
        "{when}: `vpn-ns status {}` must say {want} and how to clean up ({}):\n{out}{}",
        t.conn,
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Killed during up, then up again (OpenVPN's next attempt): the retry completes.
#[test]
fn killed_up_then_up_again() {
    if !require_root("killed_up_then_up_again") {
        return;
    }
    let sb = Sandbox::new("fault-up-up");
    let t = FakeTun::new(&sb, "fa", "tfa", 1, "");
    for point in UP_POINTS {
        assert_killed(&t.run_hook(&sb, "up", Some(point)), point);
        after_kill(&sb, &t, point);
        t.must_hook(&sb, "up");
        t.assert_up(&sb);
        assert_no_tunnel_on_host(&sb, &format!("retry after {point}"));
        t.must_hook(&sb, "down");
        t.assert_down(&sb);
    }
}

/// Killed during up, then down (OpenVPN gave up): down removes everything up made.
#[test]
fn killed_up_then_down() {
    if !require_root("killed_up_then_down") {
        return;
    }
    let sb = Sandbox::new("fault-up-down");
    let t = FakeTun::new(&sb, "fb", "tfb", 2, "");
    for point in UP_POINTS {
        assert_killed(&t.run_hook(&sb, "up", Some(point)), point);
        after_kill(&sb, &t, point);
        t.must_hook(&sb, "down");
        t.assert_down(&sb);
        assert_no_tunnel_on_host(&sb, &format!("down after {point}"));
    }
}

/// Killed during down, then down again: clean; and the next up works.
#[test]
fn killed_down_then_down_again() {
    if !require_root("killed_down_then_down_again") {
        return;
    }
    let sb = Sandbox::new("fault-down");
    let t = FakeTun::new(&sb, "fc", "tfc", 3, "");
    for point in DOWN_POINTS {
        t.must_hook(&sb, "up");
        assert_killed(&t.run_hook(&sb, "down", Some(point)), point);
        after_kill(&sb, &t, point);
        t.must_hook(&sb, "down");
        t.assert_down(&sb);
        t.must_hook(&sb, "up");
        t.assert_up(&sb);
        t.must_hook(&sb, "down");
        t.assert_down(&sb);
    }
}

/// netns-persistent: killed during up or down, the namespace (and a process inside)
/// survive, the owner stays known, and the next up brings the network back.
#[test]
fn killed_with_persistent_namespace() {
    if !require_root("killed_with_persistent_namespace") {
        return;
    }
    let sb = Sandbox::new("fault-persist");
    let t = FakeTun::new(&sb, "fd", "tfd", 4, "netns-persistent = true\n");
    t.must_hook(&sb, "up");
    let ino = sb.netns_inode("fd").expect("namespace fd");
    let mut sleeper = {
        let mut c = sb.ns_cmd("fd", "sleep");
        c.arg("600");
        sb.spawn("sleeper", c)
    };
    // The kept namespace exists at every up: up never reaches the creation points.
    let creating = ["up:netns-file-created", "up:after-create-netns"];
    // Down keeps the namespace and its record: it never reaches the deleting points.
    let points = ["down:after-device-strip", "down:before-state-keep"]
        .iter()
        .chain(UP_POINTS.iter().filter(|p| !creating.contains(p)));
    for point in points {
        if point.starts_with("up:") {
            assert_killed(&t.run_hook(&sb, "up", Some(point)), point);
        } else {
            t.must_hook(&sb, "up");
            assert_killed(&t.run_hook(&sb, "down", Some(point)), point);
        }
        after_kill(&sb, &t, point);
        t.must_hook(&sb, "up");
        t.assert_up(&sb);
        assert_eq!(
            sb.netns_inode("fd"),
            Some(ino),
            "{point}: namespace replaced"
        );
        t.must_hook(&sb, "down");
        assert_eq!(
            sb.netns_inode("fd"),
            Some(ino),
            "{point}: namespace replaced"
        );
        let st = state_text(&sb, "fd").expect("kept state");
        assert!(st.contains("\"up\": false"), "{point}: kept state: {st}");
        assert!(sleeper.is_alive(), "{point}: the process inside died");
        assert_no_tunnel_on_host(&sb, &format!("after the cycle for {point}"));
    }
}

/// `vpn-ns up` of an OpenVPN connection whose hook is killed half-way: OpenVPN treats
/// the failed --up as fatal and exits, and `vpn-ns up` removes what the hook made
/// (the intent record tells it the namespace is the connection's).
#[test]
fn native_up_cleans_up_after_a_killed_hook() {
    if !require_root("native_up_cleans_up_after_a_killed_hook") {
        return;
    }
    let sb = Sandbox::new("fault-native");
    let _srv = sb.start_server(&ServerOptions::default());
    let p = common::pki::pki();
    for point in [
        "up:after-create-netns",
        "up:after-move-device",
        "up:before-state-save",
    ] {
        let config = sb.dir().join("work.conf");
        let lines = [
            "client".to_owned(),
            "dev tun".to_owned(),
            format!("remote {SERVER_ADDR} {SERVER_PORT} udp"),
            "nobind".to_owned(),
            "remote-cert-tls server".to_owned(),
            format!("ca {}", p.ca_cert.display()),
            format!("cert {}", p.client_cert.display()),
            format!("key {}", p.client_key.display()),
            "disable-dco".to_owned(),
            // OpenVPN passes it to its --up script, the hook.
            format!("setenv VPN_NS_FAULT {point}"),
        ];
        std::fs::write(&config, lines.join("\n") + "\n").expect("client config");
        sb.write_conn(
            "work",
            &format!(
                "type = \"openvpn\"\nnetns-timeout = 30000\n[openvpn]\nconfig = \"{}\"\n",
                config.display()
            ),
        );
        let o = sb
            .vpn_ns()
            .arg("--config-dir")
            .arg(sb.config_dir())
            .args(["up", "work"])
            .output()
            .expect("run vpn-ns up");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{point}: {err}");
        assert!(err.contains("openvpn exited"), "{point}: {err}");
        assert_gone(&sb, "work", "work");
        assert_eq!(sb.netns_list(), vec![SERVER_NS.to_owned()], "{point}");
        assert_host_untouched(&sb);
    }
}

/// Points a routed connection passes; a macvlan one passes all but `up:after-nat`.
const PLAIN_UP_POINTS: [&str; 9] = [
    "up:after-lock",
    "up:netns-file-created",
    "up:after-create-netns",
    "up:after-uplink-device",
    "up:after-nat",
    "up:after-addresses",
    "up:after-routes",
    "up:after-dns",
    "up:before-state-save",
];

const PLAIN_DOWN_POINTS: [&str; 4] = [
    "down:after-nat-delete",
    "down:after-device-strip",
    "down:after-netns-delete",
    "down:before-state-remove",
];

/// The uplink connections: `wifi` (routed out of `wan0`), `lan` (macvlan on `lan0`).
fn plain_sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.must(
        "ip link add wan0 type veth peer name wan0p && ip link set wan0 up && \
         ip link add lan0 type veth peer name lan0p && ip link set lan0 up",
    );
    sb.write_conn(
        "wifi",
        "type = \"routed\"\n[routed]\nuplink = \"wan0\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    sb.write_conn(
        "lan",
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\naddress = \"192.0.2.10/24\"\n\
         gateway = \"192.0.2.1\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    sb
}

fn plain_points<'a>(conn: &str, points: &'a [&'a str]) -> Vec<&'a str> {
    points
        .iter()
        .copied()
        .filter(|p| conn == "wifi" || !p.contains("nat"))
        .collect()
}

fn plain_call(sb: &Sandbox, args: &[&str], fault: Option<&str>) -> Output {
    let mut c = sb.vpn_ns();
    c.arg("--config-dir").arg(sb.config_dir()).args(args);
    if let Some(p) = fault {
        c.env("VPN_NS_FAULT", p);
    }
    c.stdin(std::process::Stdio::null())
        .output()
        .expect("run vpn-ns")
}

fn plain_must(sb: &Sandbox, args: &[&str], when: &str) {
    let o = plain_call(sb, args, None);
    assert!(
        o.status.success(),
        "{when}: vpn-ns {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// After a kill: every namespace has a known owner, and host-side leftovers (the veth,
/// the NAT table, the forwarding claim) have a record that lets down find them.
fn plain_after_kill(sb: &Sandbox, conn: &str, host_links: &[String], when: &str) {
    assert_owners_known(sb, &[], when);
    let leftovers = sb.links_in(None) != host_links
        || sb.must("nft list tables").contains("vpn_ns")
        || sb.exists("/run/vpn-ns/@forwarding/wifi");
    if leftovers {
        assert!(
            sb.exists(&format!("/run/vpn-ns/{conn}.plain")),
            "{when}: host-side leftovers without a record"
        );
    }
}

fn plain_assert_up(sb: &Sandbox, conn: &str, when: &str) {
    assert_eq!(sb.netns_list(), [conn], "{when}");
    let st = state_text(sb, conn).unwrap_or_default();
    assert!(st.contains("\"up\": true"), "{when}: {st}");
    let inside = if conn == "wifi" { "eth0" } else { "lan0" };
    assert_eq!(sb.links_in(Some(conn)), sorted(&[inside, "lo"]), "{when}");
}

fn plain_assert_clean(sb: &Sandbox, conn: &str, host_links: &[String], when: &str) {
    assert!(sb.netns_list().is_empty(), "{when}: {:?}", sb.netns_list());
    assert_eq!(sb.links_in(None), host_links, "{when}: a link is left");
    assert!(!sb.must("nft list tables").contains("vpn_ns"), "{when}");
    assert_eq!(
        sb.must("cat /proc/sys/net/ipv4/ip_forward").trim(),
        "0",
        "{when}: ip_forward"
    );
    for f in [
        format!("/run/vpn-ns/{conn}.json"),
        format!("/run/vpn-ns/{conn}.plain"),
    ] {
        assert!(!sb.exists(&f), "{when}: {f} left");
    }
    assert!(!sb.exists(&format!("/etc/netns/{conn}")), "{when}");
}

/// Uplink kinds killed during up, then up again: the retry completes, and down leaves
/// the host as it was.
#[test]
fn plain_killed_up_then_up_again() {
    if !require_root("plain_killed_up_then_up_again") {
        return;
    }
    let sb = plain_sandbox("fault-plain-up");
    let host_links = sb.links_in(None);
    for conn in ["wifi", "lan"] {
        for point in plain_points(conn, &PLAIN_UP_POINTS) {
            let when = format!("{conn}, after SIGKILL at {point}");
            assert_killed(&plain_call(&sb, &["up", conn], Some(point)), point);
            plain_after_kill(&sb, conn, &host_links, &when);
            plain_must(&sb, &["up", conn], &when);
            plain_assert_up(&sb, conn, &when);
            plain_must(&sb, &["down", conn], &when);
            plain_assert_clean(&sb, conn, &host_links, &when);
        }
    }
}

/// Uplink kinds killed during up, then down: down removes everything up made.
#[test]
fn plain_killed_up_then_down() {
    if !require_root("plain_killed_up_then_down") {
        return;
    }
    let sb = plain_sandbox("fault-plain-updown");
    let host_links = sb.links_in(None);
    for conn in ["wifi", "lan"] {
        for point in plain_points(conn, &PLAIN_UP_POINTS) {
            let when = format!("{conn}, down after SIGKILL at {point}");
            assert_killed(&plain_call(&sb, &["up", conn], Some(point)), point);
            plain_after_kill(&sb, conn, &host_links, &when);
            plain_must(&sb, &["down", conn], &when);
            plain_assert_clean(&sb, conn, &host_links, &when);
        }
    }
}

/// Uplink kinds killed during down, then down again: clean; and the next up works.
#[test]
fn plain_killed_down_then_down_again() {
    if !require_root("plain_killed_down_then_down_again") {
        return;
    }
    let sb = plain_sandbox("fault-plain-down");
    let host_links = sb.links_in(None);
    for conn in ["wifi", "lan"] {
        for point in plain_points(conn, &PLAIN_DOWN_POINTS) {
            let when = format!("{conn}, after SIGKILL at {point}");
            plain_must(&sb, &["up", conn], &when);
            assert_killed(&plain_call(&sb, &["down", conn], Some(point)), point);
            plain_after_kill(&sb, conn, &host_links, &when);
            plain_must(&sb, &["down", conn], &when);
            plain_assert_clean(&sb, conn, &host_links, &when);
            plain_must(&sb, &["up", conn], &when);
            plain_assert_up(&sb, conn, &when);
            plain_must(&sb, &["down", conn], &when);
            plain_assert_clean(&sb, conn, &host_links, &when);
        }
    }
}
