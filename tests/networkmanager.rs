//! Acceptance tests of the NetworkManager integration against a real NetworkManager
//! (Debian's network-manager + network-manager-openvpn): a private system bus,
//! `NetworkManager --no-daemon`, its dispatcher running hooks/networkmanager/90-vpn-ns,
//! and OpenVPN connections imported with nmcli against the sandbox's OpenVPN server,
//! all inside the test's sandbox. Needs root and /dev/net/tun.

use vpn_ns_testkit as common;

use std::time::Duration;

use common::nm::{UPLINK, Wiring};
use common::nm_lab::*;
use common::sandbox;
use common::*;

// Which file is which NetworkManager connection: ids, uuids, vpn-ns's own names.
#[path = "networkmanager/identity.rs"]
mod identity;

/// Everything a VPN that NetworkManager brought up must look like once vpn-ns has it.
fn assert_isolated(l: &Lab, ns: &str, tun: &str) {
    let sb = &l.sb;
    assert_sealed(sb, ns, tun);
    assert_routes(sb, ns, tun);
    assert_service_inside(sb, ns);
    assert_host_untouched(sb);
    assert_dns_files(sb, ns);
    assert_one_default_route(sb, ns);
}

/// Defect 1: the DNS NetworkManager got from the VPN (v4 and v6 servers, the domain)
/// is the namespace's, and a name only the VPN's resolver knows resolves inside.
#[test]
fn up_down_isolates_dns_v4_v6_and_leaves_the_host_alone() {
    if !require_root("up_down_isolates_dns_v4_v6_and_leaves_the_host_alone") {
        return;
    }
    let mut server = ServerOptions::default();
    server.push.push(format!("dhcp-option DNS {PUSHED_DNS6}"));
    let l = lab("nm-updown", Wiring::PreUp, &server);
    let _dns = resolver_behind_the_vpn(&l.sb);
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    nm_up(&l, &c);
    let resolv = l.sb.read("/etc/netns/work/resolv.conf").unwrap_or_default();
    let servers: Vec<&str> = resolv
        .lines()
        .filter_map(|x| x.strip_prefix("nameserver "))
        .map(str::trim)
        .collect();
    assert_eq!(servers, [PUSHED_DNS, PUSHED_DNS6], "resolv.conf:\n{resolv}");
    assert!(resolv.contains(PUSHED_DOMAIN), "resolv.conf:\n{resolv}");
    let answer = wait_until(SETTLE, || {
        sandbox::run(l.sb.ns_cmd("work", "getent").args(["hosts", INSIDE_NAME]))
    });
    assert!(
        answer.as_deref().is_ok_and(|a| a.contains(SERVICE_V4)),
        "{INSIDE_NAME} must resolve inside through the VPN's resolver: {answer:?}"
    );
    assert_sealed(&l.sb, "work", "tun0");
    assert_routes(&l.sb, "work", "tun0");
    assert_service_inside(&l.sb, "work");
    assert_host_untouched(&l.sb);
    assert_eq!(l.nm.active_state(&c).as_deref(), Some("activated"));
    nm_down(&l, &c);
    assert_gone(&l.sb, "work", "work");
    assert_host_untouched(&l.sb);
}

/// Defect 6: NetworkManager's default route is not copied next to vpn-ns's;
/// `default-route` and `[dns]` work as for every connection.
#[test]
fn one_default_route_per_family_inside() {
    if !require_root("one_default_route_per_family_inside") {
        return;
    }
    let l = lab("nm-default", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    nm_up(&l, &c);
    assert_one_default_route(&l.sb, "work");
    nm_down(&l, &c);
    // default-route = false: none at all inside, NetworkManager's neither. And `[dns]`
    // overrides key by key: the search domain is the file's, the server NetworkManager's.
    device_conn(
        &l.sb,
        "work",
        "default-route = false\n[dns]\nsearch = [\"override.example\"]\n",
    );
    nm_up(&l, &c);
    for fam in ["-4", "-6"] {
        let d = default_routes(&l.sb, Some("work"), fam);
        assert!(d.is_empty(), "default-route = false, yet {fam}: {d:?}");
    }
    assert_service_inside(&l.sb, "work");
    let resolv = l.sb.read("/etc/netns/work/resolv.conf").unwrap_or_default();
    assert!(
        resolv.contains(&format!("nameserver {PUSHED_DNS}"))
            && resolv.contains("override.example")
            && !resolv.contains(PUSHED_DOMAIN),
        "[dns] search must replace the pushed domain, and only it:\n{resolv}"
    );
    nm_down(&l, &c);
}

/// Defect 2: at vpn-down NetworkManager has already removed the VPN's routes; nothing
/// of the VPN may reappear on the host (watched with `ip monitor` through the down).
#[test]
fn vpn_down_puts_nothing_back_on_the_host() {
    if !require_root("vpn_down_puts_nothing_back_on_the_host") {
        return;
    }
    let l = lab("nm-nothingback", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    nm_up(&l, &c);
    let monitor = l.sb.spawn("monitor", {
        let mut m = l.sb.cmd("ip");
        m.args(["monitor", "route", "link", "address"]);
        m
    });
    std::thread::sleep(Duration::from_millis(200));
    // NetworkManager's OpenVPN stopped, so its tun is still there when vpn-down runs
    // (a race NetworkManager can lose on its own: the plugin closes the tun while the
    // dispatcher already runs).
    let openvpn = nm_openvpn(&l.sb);
    assert!(sys::send_signal(openvpn, sys::SIGSTOP));
    nm_down(&l, &c);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sys::send_signal(openvpn, sys::SIGCONT));
    let seen = monitor.log_text();
    let readded: Vec<&str> = seen
        .lines()
        .filter(|x| x.contains("tun0") && !x.starts_with("Deleted"))
        .collect();
    assert!(
        readded.is_empty(),
        "vpn-down put tun0 or its routes back on the host:\n{seen}"
    );
    assert_gone(&l.sb, "work", "work");
    assert!(
        !l.sb.has_tun(None),
        "a tun device is on the host after vpn-down"
    );
    assert!(default_routes(&l.sb, None, "-4").is_empty());
}

/// `vpn-ns --config-dir <sandbox conf> ARGS...` in the sandbox host namespace.
fn vpn_ns(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    sb.vpn_ns()
        .arg("--config-dir")
        .arg(sb.config_dir())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run vpn-ns")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Defect 3: with CONN's tun0 inside its namespace, a *different* tun0 on the host is
/// not "already in namespace": adopt refuses it (exit 1) and says why.
#[test]
fn adopt_tells_devices_apart_by_identity() {
    if !require_root("adopt_tells_devices_apart_by_identity") {
        return;
    }
    let l = lab("nm-identity", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    nm_up(&l, &c);
    expect_ok(l.sb.ip(None, &["tuntap", "add", "tun0", "mode", "tun"]));
    let out = vpn_ns(&l.sb, &["adopt", "work", "tun0"]);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "adopt of another tun0 must fail: {err}"
    );
    assert!(
        err.contains("another device") && err.contains("already up"),
        "the error must say the host's tun0 is another device: {err}"
    );
    assert!(
        l.sb.links_in(None).contains(&"tun0".to_owned()),
        "the host's tun0 must stay"
    );
    assert_sealed(&l.sb, "work", "tun0");
    // The adopted device itself, named again: a repeated event, not an error.
    expect_ok(l.sb.ip(None, &["link", "del", "tun0"]));
    let out = vpn_ns(&l.sb, &["adopt", "work", "tun0"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "vpn-ns adopt (no NetworkManager owner) must not claim NetworkManager's device: {}",
        text(&out.stderr)
    );
    nm_down(&l, &c);
    assert_gone(&l.sb, "work", "work");
}

/// Defect 4: a host tunnel that takes the freed name never blocks down, and the next
/// up isolates the new device.
#[test]
fn a_host_tunnel_taking_the_freed_name_never_blocks_down() {
    if !require_root("a_host_tunnel_taking_the_freed_name_never_blocks_down") {
        return;
    }
    let l = lab("nm-collision", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    nm_up(&l, &c);
    expect_ok(l.sb.ip(None, &["tuntap", "add", "tun0", "mode", "tun"]));
    let host_tun0 = expect_ok(l.sb.ip(None, &["-o", "link", "show", "tun0"]));

    // `vpn-ns down` returns the adopted device under a free name, with its configuration.
    let out = vpn_ns(&l.sb, &["down", "work"]);
    assert!(out.status.success(), "down failed: {}", text(&out.stderr));
    assert_gone(&l.sb, "work", "work");
    let back = expect_ok(l.sb.ip(None, &["-o", "addr", "show", "dev", "tun1"]));
    assert!(
        back.contains("100.64.0."),
        "tun0 came back as tun1 with its address: {back}"
    );
    assert_eq!(
        expect_ok(l.sb.ip(None, &["-o", "link", "show", "tun0"])),
        host_tun0,
        "the host's own tun0 must be untouched"
    );
    nm_down(&l, &c);

    // NetworkManager again: its new device is tun1 (tun0 is the host's), and is isolated.
    nm_up(&l, &c);
    assert_sealed(&l.sb, "work", "tun1");
    assert_service_inside(&l.sb, "work");
    assert_eq!(l.nm.hook_codes("vpn-pre-up", &c.uuid), [0, 0]);
    // vpn-down while the host holds tun0: nothing comes back, nothing blocks.
    nm_down(&l, &c);
    assert_gone(&l.sb, "work", "work");
    assert_eq!(l.nm.hook_codes("vpn-down", &c.uuid), [0, 0]);
    assert_eq!(l.sb.links_in(None), sorted(&["lo", "tun0", UPLINK]));
}

/// Defect 6 (second half): the dispatcher runs vpn-ns as root; a connection file (or
/// its directory) others can write is refused, with one line naming it.
#[test]
fn world_or_group_writable_connection_files_are_refused() {
    if !require_root("world_or_group_writable_connection_files_are_refused") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let l = lab("nm-trust", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    let file = l.sb.config_dir().join("work.toml");
    for (path, mode) in [
        (file.clone(), 0o666),
        (file.clone(), 0o620),
        (l.sb.config_dir(), 0o777),
    ] {
        let old = std::fs::metadata(&path).unwrap().permissions().mode();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let n = l.nm.hook_runs("vpn-pre-up", &c.uuid);
        expect_ok(l.nm.up(&c));
        expect_ok(l.nm.wait_hook("vpn-pre-up", &c.uuid, n + 1, HOOK));
        assert_eq!(
            l.nm.hook_codes("vpn-pre-up", &c.uuid).last(),
            Some(&2),
            "mode {mode:o}"
        );
        let log = l.nm.hook_log_text();
        assert!(
            log.contains(&format!("refusing {}", path.display())) && log.contains("writable"),
            "the refusal must name {}:\n{log}",
            path.display()
        );
        assert_eq!(
            l.sb.netns_list(),
            ["srv"],
            "nothing created for mode {mode:o}"
        );
        nm_down(&l, &c);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(old)).unwrap();
    }
    nm_up(&l, &c);
    assert_sealed(&l.sb, "work", "tun0");
    nm_down(&l, &c);
}

/// kill -9 of NetworkManager's OpenVPN: the tunnel dies inside the namespace (no route
/// left there), NetworkManager reports the VPN down, and the hook removes the namespace.
#[test]
fn kill_9_of_networkmanagers_openvpn_fails_closed_and_cleans_up() {
    if !require_root("kill_9_of_networkmanagers_openvpn_fails_closed_and_cleans_up") {
        return;
    }
    let l = lab("nm-kill9", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    // A literal netns-name, as NetworkManager's own netns-name allows.
    device_conn(&l.sb, "work", "netns-name = \"corp-ns\"\n");
    nm_up(&l, &c);
    assert_service_inside(&l.sb, "corp-ns");
    let pid = nm_openvpn(&l.sb);
    assert!(sys::send_signal(pid, sys::SIGKILL));
    expect_ok(l.nm.wait_hook("vpn-down", &c.uuid, 1, HOOK));
    assert_eq!(l.nm.hook_codes("vpn-down", &c.uuid), [0]);
    assert_gone(&l.sb, "work", "corp-ns");
    assert_host_untouched(&l.sb);
    assert!(default_routes(&l.sb, None, "-4").is_empty());
    assert_ne!(l.nm.active_state(&c).as_deref(), Some("activated"));
}

/// netns-persistent: the namespace and the processes in it survive NetworkManager's
/// down (with no network at all), and the next up brings the VPN back into the same one.
#[test]
fn a_persistent_namespace_survives_networkmanager_down_and_up() {
    if !require_root("a_persistent_namespace_survives_networkmanager_down_and_up") {
        return;
    }
    let l = lab("nm-persist", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "netns-persistent = true\n");
    nm_up(&l, &c);
    let ino = l.sb.netns_inode("work");
    let mut app = l.sb.spawn("app", {
        let mut a = l.sb.ns_cmd("work", "sleep");
        a.arg("600");
        a
    });
    nm_down(&l, &c);
    assert_eq!(l.sb.netns_inode("work"), ino, "the namespace must be kept");
    assert!(app.is_alive(), "the app inside must survive the VPN's down");
    assert_eq!(l.sb.links_in(Some("work")), ["lo"]);
    for fam in ["-4", "-6"] {
        let r = expect_ok(l.sb.ip(Some("work"), &[fam, "route", "show", "table", "main"]));
        assert!(r.trim().is_empty(), "routes left in work: {r}");
    }
    assert_host_untouched(&l.sb);
    nm_up(&l, &c);
    assert_eq!(
        l.sb.netns_inode("work"),
        ino,
        "up must reuse the kept namespace"
    );
    assert_isolated(&l, "work", "tun0");
    assert!(app.is_alive());
    nm_down(&l, &c);
    assert_eq!(l.sb.netns_inode("work"), ino);
}

/// NetworkManager reconnecting: OpenVPN restarting under it (SIGUSR1, as on a
/// ping-restart; NetworkManager's OpenVPN keeps its tun, inside the namespace), then
/// `nmcli connection down` and `up` at once (NetworkManager refuses to `up` an active
/// VPN). Either way the VPN ends up isolated and nothing reaches the host.
#[test]
fn networkmanager_reconnect_stays_isolated() {
    if !require_root("networkmanager_reconnect_stays_isolated") {
        return;
    }
    let l = lab("nm-reconnect", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    nm_up(&l, &c);
    let server_log = l.sb.dir().join("server.log");
    let replies = count_in_log(&server_log, "PUSH_REPLY");
    assert!(sys::send_signal(nm_openvpn(&l.sb), sys::SIGUSR1));
    expect_ok(wait_until(CONNECT, || {
        if count_in_log(&server_log, "PUSH_REPLY") > replies {
            Ok(())
        } else {
            Err("OpenVPN did not reconnect".to_owned())
        }
    }));
    assert_isolated(&l, "work", "tun0");
    assert_eq!(l.nm.active_state(&c).as_deref(), Some("activated"));

    // Down and straight up again: the new activation's vpn-pre-up may run before the
    // old one's vpn-down.
    let (pre, down) = (
        l.nm.hook_runs("vpn-pre-up", &c.uuid),
        l.nm.hook_runs("vpn-down", &c.uuid),
    );
    expect_ok(l.nm.down(&c));
    expect_ok(l.nm.up(&c));
    expect_ok(l.nm.wait_hook("vpn-down", &c.uuid, down + 1, HOOK));
    expect_ok(l.nm.wait_hook("vpn-pre-up", &c.uuid, pre + 1, HOOK));
    expect_ok(l.nm.wait_hook("vpn-up", &c.uuid, 2, HOOK));
    assert_isolated(&l, "work", "tun0");
    assert!(
        l.nm.hook_codes("vpn-pre-up", &c.uuid)
            .iter()
            .all(|&c| c == 0)
            && l.nm.hook_codes("vpn-down", &c.uuid).iter().all(|&c| c == 0),
        "hook log:\n{}",
        l.nm.hook_log_text()
    );
    nm_down(&l, &c);
    assert_gone(&l.sb, "work", "work");
}

/// A record whose adopted device vanished without a down (its VPN closed it before the
/// vpn-down arrived) owns nothing: the next adopt releases it instead of refusing. And a
/// released device still in a kept namespace does not pass for the next one.
#[test]
fn adopt_releases_a_record_whose_device_is_gone() {
    if !require_root("adopt_releases_a_record_whose_device_is_gone") {
        return;
    }
    let sb = Sandbox::new("nm-stale");
    device_conn(&sb, "work", "");
    let tun = |cmd: &str| {
        expect_ok(sb.sh(&format!(
            "{cmd} && ip addr add 100.64.9.2/24 dev tun7 && ip link set tun7 up"
        )))
    };
    tun("ip tuntap add tun7 mode tun");
    let out = vpn_ns(&sb, &["adopt", "work", "tun7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    expect_ok(sb.ip(Some("work"), &["link", "del", "tun7"]));
    tun("ip tuntap add tun7 mode tun");
    let out = vpn_ns(&sb, &["adopt", "work", "tun7"]);
    assert!(
        out.status.success(),
        "a stale record must not block: {}",
        text(&out.stderr)
    );
    assert_eq!(sb.links_in(Some("work")), sorted(&["lo", "tun7"]));
    assert!(addrs(&sb, "work", "tun7").contains("100.64.9.2/24"));
    assert!(!sb.links_in(None).contains(&"tun7".to_owned()));
    let out = vpn_ns(&sb, &["down", "work"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_gone(&sb, "work", "work");

    expect_ok(sb.ip(None, &["link", "del", "tun7"]));

    // A kept namespace still holding a released device of that name (its VPN has not
    // closed it): the new device comes in, the old one is set aside under another name.
    device_conn(&sb, "work", "netns-persistent = true\n");
    let dispatch = |action: &str| {
        let o = sb
            .vpn_ns()
            .arg("--config-dir")
            .arg(sb.config_dir())
            .args(["hook", "networkmanager", "tun7", action])
            .env("CONNECTION_ID", "work")
            .env("CONNECTION_UUID", "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21")
            .env("VPN_IP_IFACE", "tun7")
            .output()
            .expect("run vpn-ns");
        assert!(o.status.success(), "{action}: {}", text(&o.stderr));
    };
    tun("ip tuntap add tun7 mode tun");
    dispatch("vpn-pre-up");
    dispatch("vpn-down");
    assert_eq!(
        sb.links_in(Some("work")),
        sorted(&["lo", "tun7"]),
        "released, still there"
    );
    tun("ip tuntap add tun7 mode tun");
    dispatch("vpn-pre-up");
    assert!(
        !sb.links_in(None).contains(&"tun7".to_owned()),
        "the new tun7 must move in"
    );
    assert!(addrs(&sb, "work", "tun7").contains("100.64.9.2/24"));
    assert_eq!(
        sb.links_in(Some("work")).len(),
        3,
        "{:?}",
        sb.links_in(Some("work"))
    );
    dispatch("vpn-down");
}

/// The window in which NetworkManager's configuration of the VPN is live in the host
/// namespace, measured (`ip -ts monitor`): from its first route via the tunnel to the
/// device leaving. With the pre-up.d link the device is gone before NetworkManager
/// reports the VPN activated; with vpn-up alone it is still on the host then.
#[test]
fn the_host_window_with_and_without_pre_up() {
    if !require_root("the_host_window_with_and_without_pre_up") {
        return;
    }
    for wiring in [Wiring::PreUp, Wiring::UpOnly] {
        let l = lab(
            &format!("nm-window-{wiring:?}"),
            wiring,
            &ServerOptions::default(),
        );
        let c = l.nm.import_openvpn(&l.sb, "work");
        device_conn(&l.sb, "work", "");
        let monitor = l.sb.spawn("window", {
            let mut m = l.sb.cmd("ip");
            m.args(["-ts", "monitor", "link", "route"]);
            m
        });
        std::thread::sleep(Duration::from_millis(200));
        expect_ok(l.nm.up(&c));
        let on_host_when_activated = l.sb.has_tun(None);
        expect_ok(l.nm.wait_hook("vpn-up", &c.uuid, 1, HOOK));
        assert_isolated(&l, "work", "tun0");
        std::thread::sleep(Duration::from_millis(200));
        let ms = exposure_ms(&monitor.log_text(), "tun0").unwrap_or_else(|| {
            panic!(
                "no window found in the monitor output:\n{}",
                monitor.log_text()
            )
        });
        eprintln!(
            "{wiring:?}: VPN routes live on the host for {ms:.1} ms; tun on the host when NetworkManager said activated: {on_host_when_activated}"
        );
        assert!(ms < 5000.0, "{wiring:?}: {ms} ms");
        if wiring == Wiring::PreUp {
            assert!(
                !on_host_when_activated,
                "with pre-up the device must be gone before NetworkManager reports activated"
            );
        }
        nm_down(&l, &c);
    }
}
