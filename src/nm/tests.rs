use std::collections::HashMap;

use super::*;

const U: &str = "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21";

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn up_env(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let mut v = vec![
        ("CONNECTION_ID", "work"),
        ("CONNECTION_UUID", U),
        ("VPN_IP_IFACE", "tun0"),
    ];
    v.extend_from_slice(extra);
    env(&v)
}

#[test]
fn other_actions_are_ignored_without_looking_at_anything() {
    for a in [
        "up",
        "down",
        "pre-up",
        "hostname",
        "connectivity-change",
        "vpn-pre-down",
        "",
    ] {
        assert_eq!(parse_event(a, &env(&[])), Ok(None), "{a}");
    }
}

#[test]
fn vpn_up_needs_uuid_and_interface() {
    let ev = parse_event("vpn-up", &up_env(&[])).unwrap().unwrap();
    assert_eq!(ev.action, Action::Up);
    assert_eq!(ev.id, "work");
    assert_eq!(ev.uuid.as_str(), U);
    assert_eq!(ev.iface.unwrap().as_str(), "tun0");
    let moved = parse_event("vpn-up", &env(&[("CONNECTION_UUID", U)]))
        .unwrap()
        .unwrap();
    assert_eq!(moved.iface, None);
    assert_eq!(
        parse_event("vpn-down", &env(&[("CONNECTION_ID", "x")])),
        Err(NmError::Missing {
            variable: "CONNECTION_UUID"
        })
    );
    let down = parse_event("vpn-down", &env(&[("CONNECTION_UUID", U)]))
        .unwrap()
        .unwrap();
    assert_eq!(down.iface, None);
}

#[test]
fn bad_values_name_the_variable() {
    for (var, val) in [
        ("VPN_IP_IFACE", "tun0/../x"),
        ("VPN_IP_IFACE", "a-name-longer-than-15"),
        ("CONNECTION_UUID", "not-a-uuid"),
        ("CONNECTION_UUID", "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d2;"),
    ] {
        let e = parse_event("vpn-pre-up", &up_env(&[(var, val)])).unwrap_err();
        assert!(
            matches!(&e, NmError::Invalid { variable, .. } if *variable == var),
            "{var}={val}: {e}"
        );
        assert!(e.to_string().contains(var), "{e}");
    }
}

#[test]
fn dns_v4_v6_and_domains_in_order_without_duplicates() {
    let e = env(&[
        (
            "VPN_IP4_NAMESERVERS",
            "203.0.113.53 203.0.113.54 203.0.113.53",
        ),
        ("VPN_IP6_NAMESERVERS", "fd00:203::53"),
        ("VPN_IP4_DOMAINS", "vpn.example corp.example"),
        ("VPN_IP6_DOMAINS", "vpn.example v6.example"),
    ]);
    let d = parse_dns(&e).unwrap();
    let servers: Vec<String> = d.servers.iter().map(|s| s.to_string()).collect();
    assert_eq!(servers, ["203.0.113.53", "203.0.113.54", "fd00:203::53"]);
    let search: Vec<&str> = d.search.iter().map(|s| s.as_str()).collect();
    assert_eq!(search, ["vpn.example", "corp.example", "v6.example"]);
    assert_eq!(parse_dns(&env(&[])).unwrap(), DnsSpec::default());
}

#[test]
fn hostile_dns_values_are_refused_naming_the_variable() {
    for (var, val) in [
        ("VPN_IP4_NAMESERVERS", "203.0.113.53\nnameserver 8.8.8.8"),
        ("VPN_IP4_NAMESERVERS", "fd00::53"),
        ("VPN_IP6_NAMESERVERS", "203.0.113.53"),
        ("VPN_IP4_NAMESERVERS", "0.0.0.0"),
        ("VPN_IP4_NAMESERVERS", "224.0.0.1"),
        ("VPN_IP4_NAMESERVERS", "nameserver"),
        ("VPN_IP4_DOMAINS", "a.example;options"),
        ("VPN_IP6_DOMAINS", "bad..example"),
    ] {
        let e = parse_dns(&env(&[(var, val)])).unwrap_err();
        assert!(
            matches!(&e, NmError::Invalid { variable, .. } if *variable == var),
            "{var}={val:?}: {e}"
        );
    }
    let many = (0..40)
        .map(|i| format!("203.0.113.{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(parse_dns(&env(&[("VPN_IP4_NAMESERVERS", &many)])).is_err());
    let huge = "a".repeat(MAX_VALUE + 1);
    assert!(parse_dns(&env(&[("VPN_IP4_DOMAINS", &huge)])).is_err());
}

#[test]
fn candidates_prefer_the_uuid_and_skip_unusable_ids() {
    let ev = parse_event("vpn-up", &up_env(&[])).unwrap().unwrap();
    assert_eq!(candidates(&ev), [U, "work"]);
    for id in ["My VPN", "../etc", "", ".", "a/b"] {
        let ev = parse_event("vpn-up", &up_env(&[("CONNECTION_ID", id)]))
            .unwrap()
            .unwrap();
        assert_eq!(candidates(&ev), [U], "{id:?}");
    }
}

fn event(action: &str) -> Event {
    parse_event(action, &up_env(&[])).unwrap().unwrap()
}

#[test]
fn a_file_for_another_uuid_or_of_another_type_is_not_this_connection() {
    let up = event("vpn-up");
    let down = event("vpn-down");
    let mine: Uuid = U.parse().unwrap();
    let other: Uuid = "11111111-2222-3333-4444-555555555555".parse().unwrap();
    for ev in [&up, &down] {
        assert_eq!(
            decide_file(ConnectionType::Device, None, ev),
            FileDecision::Act
        );
        assert_eq!(
            decide_file(ConnectionType::Device, Some(&mine), ev),
            FileDecision::Act
        );
        assert!(matches!(
            decide_file(ConnectionType::Device, Some(&other), ev),
            FileDecision::LeaveAlone(w) if w.contains("11111111-2222")
        ));
    }
    for kind in [
        ConnectionType::OpenVpn,
        ConnectionType::WireGuard,
        ConnectionType::Macvlan,
        ConnectionType::Routed,
    ] {
        assert!(matches!(
            decide_file(kind, None, &up),
            FileDecision::Refuse(_)
        ));
        assert!(matches!(
            decide_file(kind, None, &event("vpn-pre-up")),
            FileDecision::Refuse(_)
        ));
        assert!(matches!(
            decide_file(kind, None, &down),
            FileDecision::LeaveAlone(_)
        ));
    }
}

#[test]
fn vpn_down_releases_only_what_this_connection_owns() {
    let ev = event("vpn-down");
    let me = Owner::of(&ev);
    let other = Owner {
        uuid: "11111111-2222-3333-4444-555555555555".into(),
        id: "work".into(),
    };
    assert_eq!(
        decide_down(true, Origin::Adopt, Some(&me), &ev),
        DownDecision::Release
    );
    for (up, origin, owner) in [
        (true, Origin::Adopt, Some(&other)),
        (true, Origin::Adopt, None),
        (true, Origin::OpenvpnHook, Some(&me)),
        (true, Origin::OpenvpnHook, None),
        (true, Origin::Wireguard, None),
        (false, Origin::Adopt, Some(&me)),
    ] {
        assert!(
            matches!(
                decide_down(up, origin, owner, &ev),
                DownDecision::LeaveAlone(_)
            ),
            "{up} {origin:?} {owner:?}"
        );
    }
}
