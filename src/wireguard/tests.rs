//! Tests of the wg-quick parser, the spec built from it and the small decisions
//! around it (MTU, endpoints, wg-quick's config argument).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::parse::{WgError, parse};
use super::*;
use crate::netlink::{Link, RouteInfo};

const K1: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const K2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const K3: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

fn ok(text: &str) -> WgConfig {
    parse(Path::new("/etc/wireguard/wg0.conf"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match parse(Path::new("/etc/wireguard/wg0.conf"), text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            assert!(matches!(e, WgError::Syntax { .. }));
            e.to_string()
        }
    }
}

fn full() -> String {
    format!(
        "# home tunnel\n\
         [Interface]\n\
         PrivateKey = {K1}\n\
         Address = 100.64.0.2/24, fd00:64::2/64 # both families\n\
         address = 100.64.1.2/32\n\
         DNS = 203.0.113.53, fd00:53::1, corp.example\n\
         DNS = lab.example\n\
         MTU = 1380\n\
         ListenPort = 51820\n\
         FwMark = 0x1234\n\
         Table = off\n\
         PostUp = logger up %i\n\
         PreDown = logger down %i\n\
         \n\
         [Peer]\n\
         PublicKey = {K2}\n\
         PresharedKey = {K3}\n\
         Endpoint = vpn.example:51820\n\
         AllowedIPs = 0.0.0.0/0, ::/0\n\
         PersistentKeepalive = 25\n\
         [PEER]\n\
         PUBLICKEY={K3}\n\
         endpoint = [fd00::1]:4500\n\
         allowedips = 203.0.113.77/24\n\
         AllowedIPs = fd00:203::/64\n"
    )
}

#[test]
fn parses_a_full_file() {
    let c = ok(&full());
    let i = &c.interface;
    assert_eq!(i.private_key.to_hex().len(), 64);
    let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs, ["100.64.0.2/24", "fd00:64::2/64", "100.64.1.2/32"]);
    let servers: Vec<String> = i.dns.servers.iter().map(|a| a.to_string()).collect();
    assert_eq!(servers, ["203.0.113.53", "fd00:53::1"]);
    let search: Vec<&str> = i.dns.search.iter().map(|d| d.as_str()).collect();
    assert_eq!(search, ["corp.example", "lab.example"]);
    assert_eq!(i.mtu, Some(1380));
    assert_eq!(i.listen_port, Some(51820));
    assert_eq!(i.fwmark, Some(0x1234));
    assert_eq!(i.table.as_deref(), Some("off"));
    let hooks: Vec<(&str, usize)> = i
        .wg_quick_only
        .iter()
        .map(|(k, l)| (k.as_str(), *l))
        .collect();
    assert_eq!(hooks, [("PostUp", 12), ("PreDown", 13)]);

    assert_eq!(c.peers.len(), 2);
    let p = &c.peers[0];
    assert_eq!(p.line, 15);
    assert!(p.preshared_key.is_some());
    assert_eq!(
        p.endpoint.as_ref().unwrap().to_string(),
        "vpn.example:51820"
    );
    assert_eq!(p.persistent_keepalive, Some(25));
    assert_eq!(p.allowed_ips.len(), 2);
    let q = &c.peers[1];
    assert_eq!(q.endpoint.as_ref().unwrap().to_string(), "[fd00::1]:4500");
    let allowed: Vec<String> = q.allowed_ips.iter().map(|a| a.to_string()).collect();
    assert_eq!(allowed, ["203.0.113.77/24", "fd00:203::/64"]);
    assert_eq!(q.persistent_keepalive, None);
}

#[test]
fn keys_never_appear_in_debug_output() {
    let c = ok(&full());
    let dbg = format!("{c:?}");
    for k in [K1, K2, K3] {
        assert!(!dbg.contains(k));
    }
    assert!(!dbg.contains(&c.interface.private_key.to_hex()));
}

#[test]
fn off_values_and_minimal_file() {
    let c = ok(&format!(
        "[Interface]\nPrivateKey={K1}\nFwMark = off\n[Peer]\nPublicKey={K2}\nPersistentKeepalive = off\n"
    ));
    assert_eq!(c.interface.fwmark, None);
    assert_eq!(c.peers[0].persistent_keepalive, None);
    assert!(c.interface.addresses.is_empty());
    let c = ok(&format!("[Interface]\nPrivateKey = {K1}\nFwMark = 0\n"));
    assert_eq!(c.interface.fwmark, None);
    assert!(c.peers.is_empty());
}

#[test]
fn malformed_files_name_file_and_line() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("[Interface]\nPrivateKey = {K1}\nBogus = 1\n"),
            "/etc/wireguard/wg0.conf:3: unknown key \"bogus\" in [Interface]",
        ),
        (
            "[Interface]\n# comment\nPrivateKey = notbase64!!\n".to_owned(),
            "/etc/wireguard/wg0.conf:3: PrivateKey is not a base64-encoded 32-byte key",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\nAddress = 100.64.0.2/33\n"),
            "/etc/wireguard/wg0.conf:3: Address entry \"100.64.0.2/33\" is not an IP network",
        ),
        (
            format!(
                "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {K2}\nAllowedIPs = 10.0.0.0/8, x/1\n"
            ),
            "/etc/wireguard/wg0.conf:5: AllowedIPs entry \"x/1\" is not an IP network",
        ),
        (
            "\n[Interface]\nAddress = 100.64.0.2/24\n".to_owned(),
            "/etc/wireguard/wg0.conf:2: [Interface] has no PrivateKey",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\n\n[Peer]\nEndpoint = 198.51.100.2:51820\n"),
            "/etc/wireguard/wg0.conf:4: [Peer] has no PublicKey",
        ),
        (
            format!("PrivateKey = {K1}\n"),
            "/etc/wireguard/wg0.conf:1: PrivateKey outside of a section",
        ),
        (
            "[Interfaces]\n".to_owned(),
            "/etc/wireguard/wg0.conf:1: unknown section [Interfaces]",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\nPrivateKey = {K1}\n"),
            "/etc/wireguard/wg0.conf:3: duplicate PrivateKey (first on line 2)",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\nMTU = 20\n"),
            "/etc/wireguard/wg0.conf:3: MTU 20 is out of range",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\nListenPort = 70000\n"),
            "/etc/wireguard/wg0.conf:3: ListenPort \"70000\" is out of range",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\nDNS = 203.0.113.53, bad name\n"),
            "/etc/wireguard/wg0.conf:3: DNS entry \"bad name\" is neither",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\nAddress = 100.64.0.2/24,,\n"),
            "/etc/wireguard/wg0.conf:3: Address has an empty entry",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\nnothing here\n"),
            "/etc/wireguard/wg0.conf:3: expected `Key = Value`",
        ),
        (
            format!(
                "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {K2}\nEndpoint = fd00::1:51820\n"
            ),
            "/etc/wireguard/wg0.conf:5: Endpoint \"fd00::1:51820\" is not host:port",
        ),
        (
            format!(
                "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {K2}\nEndpoint = host:0\n"
            ),
            "/etc/wireguard/wg0.conf:5: Endpoint \"host:0\" has port 0",
        ),
        (
            format!(
                "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {K2}\n[Peer]\nPublicKey = {K2}\n"
            ),
            "/etc/wireguard/wg0.conf:6: the same PublicKey as the peer on line 3",
        ),
        (
            format!("[Interface]\nPrivateKey = {K1}\n[Interface]\n"),
            "/etc/wireguard/wg0.conf:3: second [Interface] section (first on line 1)",
        ),
        (
            String::new(),
            "/etc/wireguard/wg0.conf:1: no [Interface] section",
        ),
        (
            format!(
                "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {K2}\nPersistentKeepalive = -1\n"
            ),
            "/etc/wireguard/wg0.conf:5: PersistentKeepalive \"-1\" is not a number",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.starts_with(want), "got {e:?}\nwant {want:?}");
    }
}

#[test]
fn bad_keys_are_not_echoed() {
    let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0=";
    let e = err(&format!("[Interface]\nPrivateKey = {secret}\n"));
    assert!(!e.contains(secret), "{e}");
    let e = err(&format!(
        "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {K2}\nPresharedKey = {secret}\n"
    ));
    assert!(!e.contains(secret), "{e}");
}

fn wg0() -> InterfaceName {
    "wg0".parse().unwrap()
}

#[test]
fn spec_from_file() {
    let c = ok(&full());
    let s = spec(&c, &wg0(), Some(1420), true);
    // The file's MTU wins over the default.
    assert_eq!(s.mtu, Some(1380));
    assert_eq!(s.addresses.len(), 3);
    assert!(s.addresses.iter().all(|a| a.peer.is_none()));
    let routes: Vec<String> = s.routes.iter().map(|r| r.dest.to_string()).collect();
    assert_eq!(
        routes,
        ["0.0.0.0/0", "::/0", "203.0.113.0/24", "fd00:203::/64"]
    );
    assert!(s.routes.iter().all(|r| r.gateway.is_none()));
    assert_eq!(s.dns.servers.len(), 2);
    assert_eq!(s.gateway_v4, None);

    // No default routes outside an isolated namespace or without default-route.
    let s = spec(&c, &wg0(), None, false);
    let routes: Vec<String> = s.routes.iter().map(|r| r.dest.to_string()).collect();
    assert_eq!(routes, ["203.0.113.0/24", "fd00:203::/64"]);
}

#[test]
fn spec_default_mtu_and_duplicate_routes() {
    let c = ok(&format!(
        "[Interface]\nPrivateKey = {K1}\nAddress = 100.64.0.2/24\n\
         [Peer]\nPublicKey = {K2}\nAllowedIPs = 203.0.113.0/25, 100.64.0.1/32\n\
         [Peer]\nPublicKey = {K3}\nAllowedIPs = 203.0.113.5/25, 203.0.113.128/25\n"
    ));
    let s = spec(&c, &wg0(), Some(1420), true);
    assert_eq!(s.mtu, Some(1420));
    let routes: Vec<String> = s.routes.iter().map(|r| r.dest.to_string()).collect();
    assert_eq!(
        routes,
        ["203.0.113.0/25", "100.64.0.1/32", "203.0.113.128/25"]
    );
}

fn link(index: u32, mtu: u32) -> Link {
    Link {
        index,
        name: format!("eth{index}"),
        kind: None,
        mtu: Some(mtu),
        up: true,
        rx_bytes: 0,
        tx_bytes: 0,
    }
}

fn route(dest: &str, oif: u32) -> RouteInfo {
    RouteInfo {
        dest: dest.parse().unwrap(),
        gateway: None,
        oif: Some(oif),
        metric: None,
        scope_link_or_host: false,
    }
}

#[test]
fn default_mtu_follows_wg_quick() {
    let links = [link(1, 1500), link(2, 9000), link(3, 1400)];
    let routes = [
        route("0.0.0.0/0", 3),
        route("198.51.100.0/24", 1),
        route("198.51.100.0/28", 2),
    ];
    let ep = |s: &str| s.parse::<SocketAddr>().unwrap();
    // Longest prefix wins: /28 via the 9000 link.
    assert_eq!(default_mtu(&[ep("198.51.100.2:1")], &routes, &links), 8920);
    assert_eq!(default_mtu(&[ep("198.51.100.20:1")], &routes, &links), 1420);
    // The largest over several endpoints.
    assert_eq!(
        default_mtu(&[ep("192.0.2.1:1"), ep("198.51.100.20:1")], &routes, &links),
        1420
    );
    // No endpoint: the default route's link.
    assert_eq!(default_mtu(&[], &routes, &links), 1320);
    // Nothing at all: 1500 - 80.
    assert_eq!(default_mtu(&[], &[], &[]), 1420);
}

#[test]
fn endpoints_with_ip_literals_need_no_lookup() {
    let c = ok(&format!(
        "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {K2}\nEndpoint = [fd00::1]:4500\n\
         [Peer]\nPublicKey = {K3}\n"
    ));
    let eps = resolve_endpoints(&c).unwrap();
    assert_eq!(eps, [Some("[fd00::1]:4500".parse().unwrap()), None]);
}

#[test]
fn warnings_for_wg_quick_only_keys() {
    let c = ok(&full());
    let w = native_warnings(&c);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains(":12: PostUp is a wg-quick option"));
    let c = ok(&format!("[Interface]\nPrivateKey = {K1}\nTable = 1234\n"));
    assert!(native_warnings(&c)[0].contains("Table = 1234 is ignored"));
}

#[test]
fn config_from_wg_quick_command_line() {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cwd = Path::new("/home/a");
    assert_eq!(
        wg_quick_config_arg(
            &args(&["/bin/bash", "/usr/bin/wg-quick", "up", "wg0"]),
            "wg0",
            cwd
        ),
        Some(PathBuf::from("/etc/wireguard/wg0.conf"))
    );
    assert_eq!(
        wg_quick_config_arg(
            &args(&["bash", "wg-quick", "down", "conf/wg0.conf"]),
            "wg0",
            cwd
        ),
        Some(PathBuf::from("/home/a/conf/wg0.conf"))
    );
    assert_eq!(
        wg_quick_config_arg(
            &args(&["bash", "/usr/bin/wg-quick", "up", "/x/wg0.conf"]),
            "wg0",
            cwd
        ),
        Some(PathBuf::from("/x/wg0.conf"))
    );
    // Another interface, another program, no argument: no answer.
    assert_eq!(
        wg_quick_config_arg(
            &args(&["bash", "wg-quick", "up", "/x/wg1.conf"]),
            "wg0",
            cwd
        ),
        None
    );
    assert_eq!(
        wg_quick_config_arg(&args(&["openvpn", "up", "wg0"]), "wg0", cwd),
        None
    );
    assert_eq!(
        wg_quick_config_arg(&args(&["bash", "wg-quick"]), "wg0", cwd),
        None
    );
}

#[test]
fn permission_warning_for_world_readable_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vpn-ns-wg-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("wg0.conf");
    std::fs::write(&p, "[Interface]\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = permission_warning(&p).expect("a warning");
    assert!(
        w.contains("readable by every user") && w.contains("chmod 600"),
        "{w}"
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(permission_warning(&p), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    let toml_path = root.join("home.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    let conn = crate::config::parse("home", &toml_path, &text).unwrap_or_else(|e| panic!("{e}"));
    let crate::config::Kind::WireGuard(section) = conn.kind else {
        panic!("{:?}", conn.kind)
    };
    assert_eq!(
        section.config.as_deref(),
        Some(Path::new("/etc/wireguard/home.conf"))
    );
    for (file, hooks) in [("home.conf", 0), ("home-wg-quick.conf", 2)] {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap()
            .replace("<output of `wg genkey`>", K1)
            .replace("<the server's public key>", K2);
        let c = parse(&root.join(file), &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.interface.wg_quick_only.len(), hooks, "{file}");
        assert_eq!(c.peers.len(), 1, "{file}");
    }
}
