//! Which connection file a NetworkManager connection is: two connections with one id
//! (told apart by uuid), and an id that is the name of a vpn-ns OpenVPN connection.

use super::*;

fn dup_cn() -> ServerOptions {
    ServerOptions {
        extra: vec!["duplicate-cn".into()],
        ..ServerOptions::default()
    }
}

/// Two NetworkManager connections with the same id: the file keyed by the id names the
/// uuid it is for, so only that one is adopted; the other is left alone on up and, on
/// its vpn-down, does not take the first one down. Keyed by its uuid, the second gets
/// its own namespace (netns-name = "uuid").
#[test]
fn two_networkmanager_connections_with_the_same_id() {
    if !require_root("two_networkmanager_connections_with_the_same_id") {
        return;
    }
    let l = lab("nm-sameid", Wiring::PreUp, &dup_cn());
    let a = l.nm.import_openvpn(&l.sb, "work");
    let b = l.nm.import_openvpn(&l.sb, "work");
    assert_ne!(a.uuid, b.uuid);
    device_conn(&l.sb, "work", &format!("uuid = \"{}\"\n", a.uuid));
    nm_up(&l, &a);
    assert_isolated(&l, "work", "tun0");

    nm_up(&l, &b);
    let log = l.nm.hook_log_text();
    assert!(
        log.contains(&format!("is for NetworkManager connection {}", a.uuid)),
        "b must be left alone, saying why:\n{log}"
    );
    assert_eq!(l.nm.hook_codes("vpn-pre-up", &b.uuid), [0]);
    nm_down(&l, &b);
    assert_sealed(&l.sb, "work", "tun0");
    assert_service_inside(&l.sb, "work");

    // Keyed by its uuid, b is a connection of its own, in a namespace named by its uuid.
    l.sb.write_conn(
        &b.uuid,
        &format!(
            "type = \"device\"\nuuid = \"{}\"\nnetns-name = \"uuid\"\n",
            b.uuid
        ),
    );
    nm_up(&l, &b);
    // tun0 left the host, so b's device got that name too.
    assert_sealed(&l.sb, &b.uuid, "tun0");
    assert_service_inside(&l.sb, &b.uuid);
    assert_sealed(&l.sb, "work", "tun0");
    nm_down(&l, &b);
    assert_gone(&l.sb, &b.uuid, &b.uuid);
    assert_sealed(&l.sb, "work", "tun0");
    assert_service_inside(&l.sb, "work");
    nm_down(&l, &a);
    assert_gone(&l.sb, "work", "work");
    assert_host_untouched(&l.sb);
}

/// Defect 5: an NetworkManager connection whose id is the name of a vpn-ns OpenVPN
/// connection: its vpn-up is refused, and its vpn-down leaves vpn-ns's OpenVPN running.
#[test]
fn an_nm_id_equal_to_a_vpn_ns_openvpn_connection_is_not_touched() {
    if !require_root("an_nm_id_equal_to_a_vpn_ns_openvpn_connection_is_not_touched") {
        return;
    }
    let l = lab("nm-notmine", Wiring::PreUp, &dup_cn());
    l.sb.write_conn(
        "corp",
        "type = \"openvpn\"\n[openvpn]\nconfig = \"/nonexistent/hook-mode.conf\"\n",
    );
    let mut ours = l.sb.start_client("corp", &ClientOptions::default());
    expect_ok(ours.wait_connected(CONNECT));
    let tun = ours.tun_name().expect("tun of vpn-ns's OpenVPN");
    assert_sealed(&l.sb, "corp", &tun);

    let c = l.nm.import_openvpn(&l.sb, "corp");
    nm_up(&l, &c);
    nm_down(&l, &c);
    assert!(ours.is_running(), "vpn-ns's own OpenVPN must keep running");
    assert_sealed(&l.sb, "corp", &tun);
    assert_service_inside(&l.sb, "corp");
    // Refused on the way up (exit 2, saying why), left alone on the way down.
    assert_eq!(l.nm.hook_codes("vpn-pre-up", &c.uuid), [2]);
    assert!(l.nm.hook_log_text().contains("which vpn-ns runs itself"));
    assert_eq!(l.nm.hook_codes("vpn-down", &c.uuid), [0]);
    expect_ok(ours.stop().map(|_| ()));
    assert_gone(&l.sb, "corp", "corp");
}
