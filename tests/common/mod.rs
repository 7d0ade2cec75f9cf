//! Helpers shared by the built-in WireGuard tests (tests/wireguard_builtin*.rs).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vpn_ns_testkit::wireguard::*;
use vpn_ns_testkit::*;

pub fn answers(sb: &Sandbox, ns: &str, addr: &str, reply: &str) {
    let got = wait_until(WG_SETTLE, || {
        sb.tcp_get(Some(ns), addr, SERVICE_PORT).and_then(|l| {
            if l == reply {
                Ok(l)
            } else {
                Err(format!("unexpected answer {l:?}"))
            }
        })
    });
    assert_eq!(
        got.as_deref(),
        Ok(reply),
        "[{addr}]:{SERVICE_PORT} must answer from inside {ns}\n{}",
        sb.diagnostics()
    );
}

pub fn write_wg_file(sb: &Sandbox, name: &str, text: &str) -> PathBuf {
    let p = sb.dir().join(format!("{name}.conf"));
    std::fs::write(&p, text).expect("write wg file");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

pub fn builtin_conn(sb: &Sandbox, conn: &str, wg_file: &Path) {
    sb.write_conn(
        conn,
        &format!(
            "type = \"wireguard\"\n[wireguard]\nconfig = \"{}\"\nbackend = \"builtin\"\n",
            wg_file.display()
        ),
    );
}

/// A service inside the client's namespace on its tunnel addresses, for traffic from
/// the server side into the tunnel.
/// `wg show DEV endpoints` in `ns` (None: sandbox host): the peer's endpoint.
/// IPv6 on the veth to srv1 (2001:db8:51::1 here, ::2 there), for an IPv6 endpoint.
/// The client moves to a new source address (as a laptop changing networks): the
/// sandbox host's route to srv1 gets source 198.51.100.9 (or 2001:db8:51::9), srv1
/// routes it back. Returns the new address as an endpoint prefix.
/// Nothing of the client is left: no data-plane process, device, socket, namespace,
/// state.
pub fn assert_nothing_left(sb: &Sandbox, conn: &str, dev: &str) {
    let gone = wait_until(WG_SETTLE, || {
        let p = builtin_pids(dev);
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("wg-builtin for {dev} still running: {p:?}"))
        }
    });
    assert_eq!(gone, Ok(()));
    assert!(
        !sb.links_in(None).contains(&dev.to_owned()),
        "{dev} in the host namespace"
    );
    assert!(
        !sb.exists(&format!("/run/wireguard/{dev}.sock")),
        "socket left"
    );
    assert!(
        !sb.exists(&format!("/run/vpn-ns/{conn}.json")),
        "state left"
    );
    assert!(
        !sb.netns_list().contains(&conn.to_owned()),
        "namespace left"
    );
    assert!(
        !sb.exists(&format!("/etc/netns/{conn}")),
        "/etc/netns/{conn} left"
    );
}
