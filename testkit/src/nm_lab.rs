//! Building blocks of tests/networkmanager.rs: a sandbox with the test server and a
//! NetworkManager, NetworkManager up/down that wait for the hook, and what those tests
//! measure (default routes, the host window, NetworkManager's OpenVPN).

use std::time::Duration;

use crate::nm::{NetworkManager, NmConnection, Wiring, sandbox_pids};
use crate::sandbox::{Proc, Sandbox};
use crate::{PUSHED_DNS, SERVER_NS, SERVICE_V4, ServerOptions, VpnServer, expect_ok};

/// Bound for a dispatcher hook run to finish.
pub const HOOK: Duration = Duration::from_secs(30);

/// A sandbox with the test OpenVPN server and a NetworkManager wired to vpn-ns.
pub struct Lab {
    pub nm: NetworkManager,
    pub server: VpnServer,
    pub sb: Sandbox,
}

pub fn lab(name: &str, wiring: Wiring, server: &ServerOptions) -> Lab {
    let sb = Sandbox::new(name);
    let srv = sb.start_server(server);
    let nm = sb.start_network_manager(wiring);
    Lab {
        nm,
        server: srv,
        sb,
    }
}

/// Writes `<name>.toml` with `type = "device"` and `extra` lines.
pub fn device_conn(sb: &Sandbox, name: &str, extra: &str) {
    sb.write_conn(name, &format!("type = \"device\"\n{extra}"));
}

/// Brings `c` up through NetworkManager and waits for the hook's vpn-up run.
pub fn nm_up(l: &Lab, c: &NmConnection) {
    let n = l.nm.hook_runs("vpn-up", &c.uuid);
    expect_ok(l.nm.up(c));
    expect_ok(l.nm.wait_hook("vpn-up", &c.uuid, n + 1, HOOK));
}

/// Takes `c` down through NetworkManager and waits for the hook's vpn-down run.
pub fn nm_down(l: &Lab, c: &NmConnection) {
    let n = l.nm.hook_runs("vpn-down", &c.uuid);
    expect_ok(l.nm.down(c));
    expect_ok(l.nm.wait_hook("vpn-down", &c.uuid, n + 1, HOOK));
}

/// `ip route show default` lines in `ns` (None: the sandbox host).
pub fn default_routes(sb: &Sandbox, ns: Option<&str>, family: &str) -> Vec<String> {
    expect_ok(sb.ip(ns, &[family, "route", "show", "default"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn assert_one_default_route(sb: &Sandbox, ns: &str) {
    for fam in ["-4", "-6"] {
        let d = default_routes(sb, Some(ns), fam);
        assert_eq!(
            d.len(),
            1,
            "exactly one {fam} default route inside {ns}: {d:?}"
        );
    }
}

pub const INSIDE_NAME: &str = "inside.vpn.example";
pub const PUSHED_DNS6: &str = "fd00:203::53";

/// dnsmasq behind the VPN on the pushed DNS addresses (v4 and v6, on `lo` of srv),
/// knowing only INSIDE_NAME.
pub fn resolver_behind_the_vpn(sb: &Sandbox) -> Proc {
    sb.must(&format!(
        "ip -n {SERVER_NS} addr add {PUSHED_DNS}/32 dev lo && \
         ip -n {SERVER_NS} -6 addr add {PUSHED_DNS6}/128 dev lo nodad"
    ));
    crate::user_session::dnsmasq(
        sb,
        sb.ns_cmd(SERVER_NS, "dnsmasq"),
        "dnsmasq-vpn",
        &format!("{PUSHED_DNS},{PUSHED_DNS6}"),
        &[format!("/{INSIDE_NAME}/{SERVICE_V4}")],
    )
}

/// The OpenVPN that NetworkManager started (the server's lives in namespace srv).
pub fn nm_openvpn(sb: &Sandbox) -> u32 {
    let pids = sandbox_pids(sb, "openvpn");
    assert_eq!(
        pids.len(),
        1,
        "exactly one OpenVPN of NetworkManager: {pids:?}"
    );
    pids[0]
}

/// Milliseconds from the first route via `dev` in the host namespace (`ip -ts monitor`
/// output) to the first one removed, or `dev` leaving.
pub fn exposure_ms(monitor: &str, dev: &str) -> Option<f64> {
    let ts = |l: &str| -> Option<f64> {
        // "[2026-12-02T11:17:30.123456] ..." -> seconds within the day
        let t = l.strip_prefix('[')?.split(']').next()?.split('T').nth(1)?;
        let mut p = t.split(':');
        let (h, m, s): (f64, f64, f64) = (
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
        );
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let on = format!("dev {dev}");
    let start = monitor
        .lines()
        .find(|l| l.contains(&on) && !l.contains("Deleted") && l.contains(" via "))
        .and_then(ts)?;
    // The first route via the device removed, or the device gone.
    let end = monitor
        .lines()
        .find(|l| {
            l.contains("Deleted")
                && ((l.contains(&on) && l.contains(" via ")) || l.contains(&format!(": {dev}:")))
        })
        .and_then(ts)?;
    Some((end - start) * 1000.0)
}
