use super::*;
use crate::commands::probe::{command_line, effective_uid};
use crate::commands::status_view::{ago, bytes, render_list, render_status};
use crate::config::ConnectionType;
use crate::publish::Direction;
use crate::state::Origin;

fn state(up: bool) -> State {
    State {
        connection: "work".into(),
        netns: "work".parse().unwrap(),
        netns_created: true,
        isolated: true,
        persistent: false,
        up,
        origin: Origin::OpenvpnHook,
        device: Some("tun0".into()),
        addresses: vec![],
        routes: vec![],
        dns: Default::default(),
        vpn_pid: Some(4242),
        since: 0,
        creating: false,
        vpn_start: None,
        keeper: None,
        vpn_gone: None,
    }
}

const ALIVE: Liveness = Liveness {
    netns_exists: true,
    vpn_alive: Some(true),
    device_present: Some(true),
};

#[test]
fn classify_up_down_kept() {
    assert_eq!(classify(None, ALIVE), (StateKind::Down, None));
    assert_eq!(classify(Some(&state(true)), ALIVE), (StateKind::Up, None));
    let no_pid = Liveness {
        vpn_alive: None,
        ..ALIVE
    };
    assert_eq!(classify(Some(&state(true)), no_pid).0, StateKind::Up);
    // Not root: the namespace was not entered, so a missing device is not a verdict.
    let unknown = Liveness {
        device_present: None,
        ..ALIVE
    };
    assert_eq!(classify(Some(&state(true)), unknown).0, StateKind::Up);
    // Kept: the persistent namespace stays while the VPN is down, whatever else.
    let gone = Liveness {
        netns_exists: true,
        vpn_alive: Some(false),
        device_present: Some(false),
    };
    assert_eq!(classify(Some(&state(false)), gone), (StateKind::Kept, None));
}

#[test]
fn classify_interrupted_up_as_stale() {
    let mut st = state(false);
    st.creating = true;
    let (k, why) = classify(Some(&st), ALIVE);
    assert_eq!(k, StateKind::Stale);
    let why = why.expect("a reason");
    assert!(why.contains("did not finish"), "{why}");
}

#[test]
fn classify_stale_names_the_reason() {
    for (live, want) in [
        (
            Liveness {
                netns_exists: false,
                ..ALIVE
            },
            "namespace work is gone",
        ),
        (
            Liveness {
                vpn_alive: Some(false),
                ..ALIVE
            },
            "pid 4242",
        ),
        (
            Liveness {
                device_present: Some(false),
                ..ALIVE
            },
            "device tun0 is no longer in namespace work",
        ),
    ] {
        let (k, why) = classify(Some(&state(true)), live);
        assert_eq!(k, StateKind::Stale);
        let why = why.unwrap();
        assert!(why.contains(want), "{why}");
    }
    let mut host = state(true);
    host.isolated = false;
    let (k, _) = classify(
        Some(&host),
        Liveness {
            netns_exists: false,
            ..ALIVE
        },
    );
    assert_eq!(
        k,
        StateKind::Up,
        "a host-namespace connection has no namespace"
    );
}

#[test]
fn rfc3339_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_795_960_204), "2026-11-29T13:50:04Z");
    assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
}

#[test]
fn proc_fields() {
    let status = "Name:\tsleep\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
    assert_eq!(effective_uid(status), Some(0));
    assert_eq!(effective_uid("Name: x\n"), None);
    assert_eq!(
        command_line(b"sleep\x00100\x00").as_deref(),
        Some("sleep 100")
    );
    assert_eq!(command_line(b""), None);
}

#[test]
fn human_units() {
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    assert_eq!(ago(59), "59s");
    assert_eq!(ago(3725), "1h 2m");
    assert_eq!(ago(90_000), "1d 1h");
}

fn conn(name: &str, st: StateKind) -> ConnStatus {
    ConnStatus {
        name: name.into(),
        kind: Some(ConnectionType::OpenVpn),
        uuid: None,
        state: st,
        stale_reason: None,
        netns: Some(name.into()),
        netns_exists: st != StateKind::Down,
        device: (st != StateKind::Down).then(|| "tun0".into()),
        device_present: Some(st == StateKind::Up),
        mtu: Some(1500),
        addresses: vec![AddrOut {
            local: "100.64.0.2/24".into(),
            peer: None,
        }],
        routes: vec![RouteOut {
            dest: "0.0.0.0/0".into(),
            gateway: Some("100.64.0.1".parse().unwrap()),
            metric: None,
            dev: Some("tun0".into()),
        }],
        dns: DnsOut {
            servers: vec!["203.0.113.53".into()],
            search: vec!["vpn.example".into()],
        },
        processes: vec![ProcOut {
            pid: 77,
            user: "root".into(),
            command: "sleep 1000".into(),
        }],
        rx_bytes: Some(2048),
        tx_bytes: Some(100),
        up_since: Some(rfc3339(1000)),
        since: Some(1000),
        wireguard_peers: None,
        vpn_pid: Some(4242),
        persistent: false,
        isolated: true,
        keeper: None,
        vpn_gone: None,
    }
}

#[test]
fn published_relays_are_listed_with_counts() {
    use crate::forward::parse_spec;
    use crate::publish::RelayStatus;
    let relay = |spec: &str, d, active, error: Option<&str>| RelayStatus {
        rule: parse_spec(spec, d).unwrap(),
        active,
        total: active + 3,
        error: error.map(str::to_owned),
    };
    let mut c = conn("work", StateKind::Up);
    c.keeper = Some(KeeperOut {
        pid: 99,
        running: true,
        rss_kib: Some(2100),
        watching: vec![],
        lease_expires: None,
        lease_expired: false,
        published: vec![
            relay("9091", Direction::Publish, 2, None),
            relay("1143/udp", Direction::HostAccess, 1, None),
            relay("8080", Direction::Publish, 0, Some("Address in use")),
        ],
    });
    let r = Report {
        connections: vec![c],
    };
    let s = render_status(&r, 1060);
    for want in [
        "  published  [[publish]] listen 127.0.0.1:9091/tcp -> target 127.0.0.1:9091 (2 open, 5 total)\n",
        "             [[host-access]] listen 127.0.0.1:1143/udp -> target 127.0.0.1:1143 (1 open, 4 total)\n",
        "[[publish]] listen 127.0.0.1:8080/tcp -> target 127.0.0.1:8080: NOT LISTENING: Address in use\n",
    ] {
        assert!(s.contains(want), "{want:?} in\n{s}");
    }
    let json = serde_json::to_value(&r).unwrap();
    let p = &json["connections"][0]["keeper"]["published"];
    assert_eq!(
        p[0],
        serde_json::json!({"direction": "publish", "proto": "tcp", "listen": "127.0.0.1:9091",
                           "target": "127.0.0.1:9091", "active": 2, "total": 5})
    );
    assert_eq!(p[2]["error"], "Address in use");
}

#[test]
fn keeper_rows_say_what_it_watches_or_that_nobody_does() {
    let mut up = conn("work", StateKind::Up);
    up.keeper = Some(KeeperOut {
        pid: 99,
        running: true,
        rss_kib: Some(1800),
        watching: vec![
            "openvpn (pid 4242) by pidfd".into(),
            "tun0 by netlink".into(),
        ],
        lease_expires: Some(rfc3339(2000)),
        lease_expired: false,
        published: vec![],
    });
    let s = render_status(
        &Report {
            connections: vec![up],
        },
        1060,
    );
    assert!(
        s.contains(
            "  keeper     pid 99, RSS 1800 KiB
"
        ),
        "{s}"
    );
    assert!(
        s.contains("  watching   openvpn (pid 4242) by pidfd\n             tun0 by netlink\n"),
        "{s}"
    );
    assert!(
        s.contains("  lease      expires 1970-01-01T00:33:20Z\n"),
        "{s}"
    );

    let mut gone = conn("work", StateKind::Up);
    gone.keeper = Some(KeeperOut {
        pid: 99,
        running: false,
        rss_kib: None,
        watching: vec![],
        lease_expires: Some(rfc3339(2000)),
        lease_expired: true,
        published: vec![],
    });
    let s = render_status(
        &Report {
            connections: vec![gone],
        },
        1060,
    );
    assert!(
        s.contains("keeper     none: UNATTENDED (keeper pid 99 is gone"),
        "{s}"
    );
    assert!(s.contains("`vpn-ns up work` starts a new keeper"), "{s}");
    assert!(s.contains("(EXPIRED: address removed)"), "{s}");

    let mut kept = conn("work", StateKind::Kept);
    kept.vpn_gone = Some("the VPN process openvpn (pid 4242) exited".into());
    let s = render_status(
        &Report {
            connections: vec![kept],
        },
        1060,
    );
    assert!(
        s.contains("  vpn gone   the VPN process openvpn (pid 4242) exited\n"),
        "{s}"
    );
}

#[test]
fn status_block_and_list_table() {
    let mut stale = conn("old", StateKind::Stale);
    stale.stale_reason = Some("namespace old is gone".into());
    let r = Report {
        connections: vec![conn("work", StateKind::Up), stale],
    };
    let s = render_status(&r, 1060);
    assert!(s.contains("work (openvpn): up\n"), "{s}");
    assert!(
        s.contains("  routes     default via 100.64.0.1 dev tun0\n"),
        "{s}"
    );
    assert!(
        s.contains("  dns        203.0.113.53; search vpn.example\n"),
        "{s}"
    );
    assert!(s.contains("  processes  77 root sleep 1000\n"), "{s}");
    assert!(s.contains("  traffic    rx 2.0 KiB, tx 100 B\n"), "{s}");
    assert!(s.contains("(1m 0s ago)"), "{s}");
    assert!(
        s.contains(
            "old (openvpn): STALE: namespace old is gone\n  clean up with: vpn-ns down old\n"
        ),
        "{s}"
    );

    let r = Report {
        connections: vec![conn("work", StateKind::Up), conn("home", StateKind::Down)],
    };
    let t = render_list(&r, 1060);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert!(lines[0].starts_with("NAME  TYPE     STATE"), "{t}");
    assert!(lines[1].starts_with("work  openvpn  up "), "{t}");
    assert!(lines[2].starts_with("home  openvpn  down "), "{t}");
    assert_eq!(
        render_status(
            &Report {
                connections: vec![]
            },
            0
        ),
        "no connection is up\n"
    );
}

#[test]
fn json_schema_field_names() {
    let v = serde_json::to_value(Report {
        connections: vec![conn("work", StateKind::Up)],
    })
    .unwrap();
    let c = &v["connections"][0];
    for k in [
        "name",
        "type",
        "uuid",
        "state",
        "stale_reason",
        "netns",
        "netns_exists",
        "device",
        "device_present",
        "mtu",
        "addresses",
        "routes",
        "dns",
        "processes",
        "rx_bytes",
        "tx_bytes",
        "up_since",
        "vpn_pid",
        "persistent",
        "isolated",
    ] {
        assert!(c.get(k).is_some(), "missing {k} in {c}");
    }
    assert!(c.get("since").is_none());
    assert_eq!(c["type"], "openvpn");
    assert_eq!(c["state"], "up");
    assert_eq!(c["routes"][0]["dest"], "0.0.0.0/0");
    assert_eq!(c["processes"][0]["pid"], 77);
    assert_eq!(c["up_since"], "1970-01-01T00:16:40Z");
}

#[test]
fn wireguard_peers_in_human_and_json_output() {
    let mut c = conn("home", StateKind::Up);
    let peer = |hs: Option<u64>| PeerOut {
        public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
        endpoint: Some("198.51.100.2:51820".into()),
        latest_handshake: hs.map(rfc3339),
        latest_handshake_age: hs.map(|t| 1060 - t),
        rx_bytes: 2048,
        tx_bytes: 10,
        allowed_ips: vec!["10.0.0.0/8".into()],
        persistent_keepalive: 25,
    };
    c.wireguard_peers = Some(vec![peer(Some(1055)), peer(None)]);
    let r = Report {
        connections: vec![c],
    };
    let s = render_status(&r, 1060);
    assert!(
        s.contains("peer       xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg= 198.51.100.2:51820, handshake 5s ago, rx 2.0 KiB, tx 10 B"),
        "{s}"
    );
    assert!(s.contains("no handshake yet"), "{s}");
    let j: serde_json::Value = serde_json::to_value(&r).unwrap();
    let p = &j["connections"][0]["wireguard_peers"];
    assert_eq!(p[0]["latest_handshake_age"], 5);
    assert_eq!(p[0]["latest_handshake"], rfc3339(1055));
    assert!(p[1]["latest_handshake"].is_null());
    assert_eq!(p[0]["rx_bytes"], 2048);
    assert_eq!(p[0]["endpoint"], "198.51.100.2:51820");
}
