//! `[macvlan]` and `[routed]`: parsing, the cross-key rules, the shipped examples.

use super::*;

#[test]
fn macvlan_static_and_dhcp() {
    let c = parse_work(
        "type = \"macvlan\"\n[macvlan]\nparent = \"eth0\"\naddress = \"192.0.2.10/24\"\n\
         gateway = \"192.0.2.1\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    )
    .unwrap();
    let Kind::Macvlan(m) = c.kind else {
        panic!("{:?}", c.kind)
    };
    assert_eq!(m.parent.as_str(), "eth0");
    assert!(!m.dhcp);
    assert_eq!(m.address.unwrap().to_string(), "192.0.2.10/24");
    assert_eq!(m.gateway, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(m.mode, MacvlanMode::Bridge);

    let d = parse_work(
        "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\ndhcp = true\nmode = \"private\"\n",
    )
    .unwrap();
    let m = d.kind.macvlan().unwrap();
    assert!(m.dhcp && m.address.is_none());
    assert_eq!(m.mode, MacvlanMode::Private);
    assert!(d.kind.routed().is_none());
}

#[test]
fn routed_with_and_without_transfer() {
    let c = parse_work(
        "type = \"routed\"\n[routed]\nuplink = \"wlan0\"\ntransfer = \"100.64.77.0/30\"\n\
         [dns]\nservers = [\"192.0.2.53\"]\n",
    )
    .unwrap();
    let Kind::Routed(r) = c.kind else {
        panic!("{:?}", c.kind)
    };
    assert_eq!(r.uplink.as_str(), "wlan0");
    assert_eq!(r.transfer.unwrap().to_string(), "100.64.77.0/30");
    let d = parse_work(
        "type = \"routed\"\n[routed]\nuplink = \"wlan0\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    )
    .unwrap();
    assert!(d.kind.routed().unwrap().transfer.is_none());
    assert_eq!(
        serde_json::to_string(&ConnectionType::Routed).unwrap(),
        "\"routed\""
    );
}

#[test]
fn plain_types_bad_files() {
    let dns = "[dns]\nservers = [\"192.0.2.53\"]\n";
    // (file text, line (None: no line), what the message must contain)
    let cases: Vec<(String, Option<usize>, &[&str])> = vec![
        (
            "type = \"macvlan\"\n".into(),
            None,
            &["needs a [macvlan] section"],
        ),
        (
            "type = \"routed\"\n".into(),
            None,
            &["needs a [routed] section"],
        ),
        (
            format!("type = \"macvlan\"\n[macvlan]\nparent = \"eth0\"\n{dns}"),
            Some(2),
            &["key \"macvlan\"", "needs address"],
        ),
        (
            format!(
                "type = \"macvlan\"\n[macvlan]\nparent = \"eth0\"\ndhcp = true\naddress = \"192.0.2.10/24\"\n{dns}"
            ),
            Some(5),
            &["key \"macvlan.address\"", "conflicts with dhcp = true"],
        ),
        (
            format!(
                "type = \"macvlan\"\n[macvlan]\nparent = \"eth0\"\naddress = \"192.0.2.10/24\"\ngateway = \"198.51.100.1\"\n{dns}"
            ),
            Some(5),
            &[
                "key \"macvlan.gateway\"",
                "not another host in 192.0.2.0/24",
            ],
        ),
        (
            "type = \"macvlan\"\n[macvlan]\nparent = \"eth0\"\naddress = \"192.0.2.10/24\"\n"
                .into(),
            None,
            &["key \"dns\"", "needs DNS servers"],
        ),
        (
            format!(
                "type = \"macvlan\"\n[macvlan]\nparent = \"eth0\"\naddress = \"192.0.2.10\"\n{dns}"
            ),
            Some(4),
            &["key \"macvlan.address\"", "with a prefix length"],
        ),
        (
            format!(
                "type = \"macvlan\"\n[macvlan]\nparent = \"eth0\"\ndhcp = true\nmode = \"bridged\"\n{dns}"
            ),
            Some(5),
            &["key \"macvlan.mode\"", "unknown macvlan mode \"bridged\""],
        ),
        (
            format!(
                "type = \"macvlan\"\n[macvlan]\nparent = \"a-very-long-interface\"\ndhcp = true\n{dns}"
            ),
            Some(3),
            &["key \"macvlan.parent\"", "longer than 15 bytes"],
        ),
        (
            format!(
                "type = \"routed\"\n[routed]\nuplink = \"wlan0\"\ntransfer = \"100.64.77.1/30\"\n{dns}"
            ),
            Some(4),
            &["key \"routed.transfer\"", "host bits set", "100.64.77.0/30"],
        ),
        (
            format!(
                "type = \"routed\"\n[routed]\nuplink = \"wlan0\"\ntransfer = \"100.64.77.0/31\"\n{dns}"
            ),
            Some(4),
            &["key \"routed.transfer\"", "at most /30"],
        ),
        (
            "type = \"routed\"\n[routed]\nuplink = \"wlan0\"\n".into(),
            None,
            &["key \"dns\"", "type = \"routed\" needs DNS servers"],
        ),
        (
            format!("type = \"routed\"\n[routed]\nuplink = \"wlan0\"\nnat = true\n{dns}"),
            Some(4),
            &["unknown key \"nat\" in [routed]"],
        ),
        (
            format!("type = \"routed\"\n[macvlan]\nparent = \"eth0\"\ndhcp = true\n{dns}"),
            Some(2),
            &["key \"macvlan\"", "only for type = \"macvlan\""],
        ),
        (
            format!("type = \"macvlan\"\n[routed]\nuplink = \"eth0\"\n{dns}"),
            Some(2),
            &["key \"routed\"", "only for type = \"routed\""],
        ),
        (
            "type = \"bridge\"\n".into(),
            Some(1),
            &["\"macvlan\" or \"routed\""],
        ),
    ];
    for (text, line, needles) in &cases {
        let msg = parse_work(text).map(|_| ()).unwrap_err().to_string();
        let prefix = match line {
            Some(l) => format!("{PATH} line {l}: "),
            None => format!("{PATH}: "),
        };
        assert!(
            msg.starts_with(&prefix),
            "want prefix {prefix:?}, got {msg:?}"
        );
        for needle in *needles {
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    }
}

#[test]
fn plain_config_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    for (name, kind) in [
        ("lan", ConnectionType::Macvlan),
        ("lte", ConnectionType::Routed),
    ] {
        let p = root.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&p).unwrap();
        let c = parse(name, &p, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.kind.tag(), kind);
    }
}
