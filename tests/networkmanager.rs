//! Acceptance tests of the NetworkManager integration against a real NetworkManager
//! (Debian's network-manager + network-manager-openvpn): a private system bus,
//! `NetworkManager --no-daemon`, its dispatcher running hooks/networkmanager/90-vpn-ns,
//! and OpenVPN connections imported with nmcli against the sandbox's OpenVPN server,
//! all inside the test's sandbox. Needs root and /dev/net/tun.

use vpn_ns_testkit as common;

use std::time::Duration;

use common::nm::{NetworkManager, NmConnection, UPLINK, Wiring, sandbox_pids};
use common::*;

const HOOK: Duration = Duration::from_secs(30);

struct Lab {
    nm: NetworkManager,
    _srv: VpnServer,
    sb: Sandbox,
}

fn lab(name: &str, wiring: Wiring, server: &ServerOptions) -> Lab {
    let sb = Sandbox::new(name);
    let srv = sb.start_server(server);
    let nm = sb.start_network_manager(wiring);
    Lab { nm, _srv: srv, sb }
}

fn device_conn(sb: &Sandbox, name: &str, extra: &str) {
    sb.write_conn(name, &format!("type = \"device\"\n{extra}"));
}

/// Brings `c` up through NetworkManager and waits for the hook's vpn-up run.
fn nm_up(l: &Lab, c: &NmConnection) {
    let n = l.nm.hook_runs("vpn-up", &c.uuid);
    expect_ok(l.nm.up(c));
    expect_ok(l.nm.wait_hook("vpn-up", &c.uuid, n + 1, HOOK));
}

fn nm_down(l: &Lab, c: &NmConnection) {
    let n = l.nm.hook_runs("vpn-down", &c.uuid);
    expect_ok(l.nm.down(c));
    expect_ok(l.nm.wait_hook("vpn-down", &c.uuid, n + 1, HOOK));
}

fn default_routes(sb: &Sandbox, ns: Option<&str>, family: &str) -> Vec<String> {
    expect_ok(sb.ip(ns, &[family, "route", "show", "default"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Everything a VPN that NetworkManager brought up must look like once vpn-ns has it.
fn assert_isolated(l: &Lab, ns: &str, tun: &str) {
    let sb = &l.sb;
    assert_sealed(sb, ns, tun);
    assert_routes(sb, ns, tun);
    assert_service_inside(sb, ns);
    assert_host_untouched(sb);
    for fam in ["-4", "-6"] {
        let d = default_routes(sb, Some(ns), fam);
        assert_eq!(
            d.len(),
            1,
            "exactly one {fam} default route inside {ns}: {d:?}"
        );
    }
    assert_dns_files(sb, ns);
}

#[test]
fn up_down_isolates_dns_v4_v6_and_leaves_the_host_alone() {
    if !require_root("up_down_isolates_dns_v4_v6_and_leaves_the_host_alone") {
        return;
    }
    let l = lab("nm-updown", Wiring::PreUp, &ServerOptions::default());
    let c = l.nm.import_openvpn(&l.sb, "work");
    device_conn(&l.sb, "work", "");
    nm_up(&l, &c);
    assert_isolated(&l, "work", "tun0");
    assert_eq!(l.nm.active_state(&c).as_deref(), Some("activated"));

    // Every route change on the host from here to the end of vpn-down.
    let monitor = l.sb.spawn("monitor", {
        let mut m = l.sb.cmd("ip");
        m.args(["monitor", "route", "link"]);
        m
    });
    std::thread::sleep(Duration::from_millis(200));
    nm_down(&l, &c);
    std::thread::sleep(Duration::from_millis(500));
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
    assert!(
        default_routes(&l.sb, None, "-4").is_empty(),
        "a default route on the host after vpn-down"
    );
    let _ = UPLINK;
    let _ = sandbox_pids;
}
