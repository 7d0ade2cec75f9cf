use super::*;

// type = "macvlan" and type = "routed".
mod plain;

const PATH: &str = "/etc/vpn-ns/work.toml";

/// DESIGN.md §2 verbatim: it shows every section for reference, including one
/// (`[wireguard]`) that does not belong to its `type = "openvpn"`.
const DESIGN_EXAMPLE: &str = r#"type = "openvpn"            # "openvpn" | "wireguard" | "device"
uuid = "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21"   # needed when netns-name = "uuid"
netns-isolate = true        # false: no namespace; addresses + pushed routes in the host ns
                            # (never a default route there; host DNS untouched)
netns-persistent = false    # true: keep the namespace (and its apps) across VPN down/up
netns-name = "name"         # "uuid" -> the uuid; "name" -> the connection name; else literal
netns-timeout = 5000        # ms to wait for the device to appear (host ns and target ns)
default-route = true        # default route via the tunnel inside the namespace

[openvpn]                   # for `vpn-ns up` (hook mode needs no section)
config = "/etc/openvpn/client/work.conf"

[wireguard]                 # wg-quick format file
config = "/etc/wireguard/home.conf"
backend = "auto"            # "kernel" | "builtin" | "wireguard-go" | "auto" (kernel if the module exists, else builtin)
userspace = "wireguard-go"  # program for backend = "wireguard-go" (UAPI socket)

[dns]                       # optional; default: what the VPN pushed
servers = ["192.0.2.53"]    # replace pushed servers
search = ["corp.example"]

[exec]                      # absent: whoever reached vpn-ns as root (sudo/pkexec decided) may exec
users = ["alice"]           # present: only these users/groups (and a real root shell) may exec
groups = ["vpn"]
hostname = "work-vm"        # optional: own UTS namespace with this hostname for exec'd apps
session-bus = "filtered"    # "none" (default) | "filtered" (xdg-dbus-proxy) | "full" (a way out)
"#;

fn parse_work(text: &str) -> Result<Connection, ConfigError> {
    parse("work", Path::new(PATH), text)
}

fn without_wireguard_section(text: &str) -> String {
    let start = text.find("[wireguard]").unwrap();
    let end = text.find("[dns]").unwrap();
    format!("{}{}", &text[..start], &text[end..])
}

#[test]
fn design_example_parses_once_sections_match_type() {
    let c = parse_work(&without_wireguard_section(DESIGN_EXAMPLE)).unwrap();
    assert_eq!(c.name, "work");
    assert_eq!(c.path, Path::new(PATH));
    assert_eq!(c.kind.tag(), ConnectionType::OpenVpn);
    assert_eq!(
        c.uuid.as_ref().unwrap().as_str(),
        "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21"
    );
    assert!(c.netns_isolate && !c.netns_persistent && c.default_route);
    assert_eq!(c.netns.as_str(), "work");
    assert_eq!(c.netns_timeout, Duration::from_millis(5000));
    let Kind::OpenVpn(Some(section)) = &c.kind else {
        panic!("{:?}", c.kind)
    };
    assert_eq!(section.config, Path::new("/etc/openvpn/client/work.conf"));
    assert_eq!(
        c.dns.servers,
        Some(vec!["192.0.2.53".parse::<IpAddr>().unwrap()])
    );
    assert_eq!(c.dns.search.unwrap()[0].as_str(), "corp.example");
    let exec = c.exec.unwrap();
    assert_eq!(exec.users, ["alice"]);
    assert_eq!(exec.groups, ["vpn"]);
    assert_eq!(exec.hostname.unwrap().as_str(), "work-vm");

    let err = parse_work(DESIGN_EXAMPLE).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{PATH} line 13: key \"wireguard\"")),
        "{err}"
    );
}

fn wireguard(c: Connection) -> WireGuardSection {
    match c.kind {
        Kind::WireGuard(w) => w,
        k => panic!("{k:?}"),
    }
}

#[test]
fn wireguard_section() {
    let text = "type = \"wireguard\"\n[wireguard]\nconfig = \"/etc/wireguard/home.conf\"\n\
                backend = \"userspace\"\nuserspace = \"/usr/local/bin/boringtun\"\n";
    let wg = wireguard(parse_work(text).unwrap());
    assert_eq!(
        wg.config.as_deref(),
        Some(Path::new("/etc/wireguard/home.conf"))
    );
    assert_eq!(wg.backend, WgBackend::Userspace);
    assert_eq!(wg.userspace, "/usr/local/bin/boringtun");

    let wg = wireguard(parse_work("type = \"wireguard\"\n[wireguard]\n").unwrap());
    assert_eq!(
        wireguard(parse_work("type = \"wireguard\"\n").unwrap()),
        WireGuardSection::default()
    );
    assert_eq!(wg, WireGuardSection::default());
    for (kw, want) in [
        ("builtin", WgBackend::Builtin),
        ("wireguard-go", WgBackend::Userspace),
        ("kernel", WgBackend::Kernel),
        ("auto", WgBackend::Auto),
    ] {
        let text = format!("type = \"wireguard\"\n[wireguard]\nbackend = \"{kw}\"\n");
        assert_eq!(wireguard(parse_work(&text).unwrap()).backend, want);
    }
    assert_eq!(WgBackend::Userspace.to_string(), "wireguard-go");
    assert_eq!(
        (wg.backend, wg.userspace.as_str()),
        (WgBackend::Auto, "wireguard-go")
    );
}

#[test]
fn defaults() {
    let c = parse_work("type = \"device\"").unwrap();
    assert_eq!(c.kind, Kind::Device);
    assert!(c.uuid.is_none());
    assert!(c.netns_isolate);
    assert!(!c.netns_persistent);
    assert_eq!(c.netns.as_str(), "work");
    assert_eq!(c.netns_timeout, Duration::from_millis(5000));
    assert!(c.default_route);
    assert!(c.exec.is_none());
    assert_eq!(c.dns, DnsOverride::default());

    let c = parse_work("type = \"openvpn\"\n[exec]\n").unwrap();
    assert_eq!(c.kind, Kind::OpenVpn(None));
    let exec = c.exec.unwrap();
    assert!(exec.users.is_empty() && exec.groups.is_empty() && exec.hostname.is_none());
    assert_eq!(exec.session_bus, crate::config::SessionBus::None);
    for (v, want) in [
        ("none", crate::config::SessionBus::None),
        ("filtered", crate::config::SessionBus::Filtered),
        ("full", crate::config::SessionBus::Full),
    ] {
        let c = parse_work(&format!(
            "type = \"device\"\n[exec]\nsession-bus = \"{v}\"\n"
        ));
        assert_eq!(c.unwrap().exec.unwrap().session_bus, want);
    }
}

#[test]
fn netns_name_choices() {
    let uuid = "uuid = \"0F5C6A3E-8C1B-4C43-A8F5-3B1B0C6F9D21\"\n";
    let c = parse_work(&format!("type = \"device\"\n{uuid}netns-name = \"uuid\"\n")).unwrap();
    assert_eq!(c.netns.as_str(), "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21");
    assert_eq!(
        c.uuid.unwrap().to_string(),
        "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21"
    );
    let c = parse_work(&format!("type = \"device\"\n{uuid}netns-name = \"name\"\n")).unwrap();
    assert_eq!(c.netns.as_str(), "work");
    let c = parse_work("type = \"device\"\nnetns-name = \"vpn.work-2\"\n").unwrap();
    assert_eq!(c.netns.as_str(), "vpn.work-2");
}

#[test]
fn timeout_range_and_serialized_type() {
    let c = parse_work("type = \"device\"\nnetns-timeout = 600000").unwrap();
    assert_eq!(c.netns_timeout, Duration::from_secs(600));
    assert_eq!(
        parse_work("type = \"device\"\nnetns-timeout = 1")
            .unwrap()
            .netns_timeout
            .as_millis(),
        1
    );
    assert!(parse_work("type = \"device\"\nnetns-timeout = 600001").is_err());
    assert_eq!(
        serde_json::to_string(&ConnectionType::WireGuard).unwrap(),
        "\"wireguard\""
    );
    assert_eq!(
        serde_json::to_string(&ConnectionType::OpenVpn).unwrap(),
        "\"openvpn\""
    );
}

#[test]
fn bad_files_name_path_line_and_key() {
    let long = "a".repeat(65);
    let long_name = format!("type = \"device\"\nnetns-name = \"{long}\"\n");
    // (file text, line, what the message must contain)
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "type = \"device\"\nnetns-nam = \"x\"\n",
            2,
            &["unknown key \"netns-nam\"", "expected one of: type, uuid"],
        ),
        (
            "type = \"device\"\n\n[dns]\nserver = [\"192.0.2.1\"]\n",
            4,
            &["unknown key \"server\" in [dns]", "servers, search"],
        ),
        (
            "type = \"device\"\nnetns-timeout = \"5s\"\n",
            2,
            &[
                "key \"netns-timeout\"",
                "expected an integer (milliseconds), found a string",
            ],
        ),
        (
            "type = \"device\"\nnetns-timeout = 0\n",
            2,
            &["key \"netns-timeout\"", "out of range"],
        ),
        (
            "type = \"device\"\nnetns-timeout = -5\n",
            2,
            &["key \"netns-timeout\"", "out of range"],
        ),
        (
            "type = \"device\"\nnetns-timeout = 5.5\n",
            2,
            &["key \"netns-timeout\"", "found a float"],
        ),
        (
            "type = \"device\"\nnetns-isolate = \"yes\"\n",
            2,
            &[
                "key \"netns-isolate\"",
                "expected a boolean, found a string \"yes\"",
            ],
        ),
        (
            "type = \"device\"\nuuid = \"0f5c6a3e-8c1b\"\n",
            2,
            &["key \"uuid\"", "not a UUID", "13 characters"],
        ),
        (
            "type = \"device\"\nuuid = \"0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9dzz\"\n",
            2,
            &["key \"uuid\"", "'z' is not a hex digit"],
        ),
        (
            "type = \"device\"\nuuid = \"0f5c6a3e8c1b4c43a8f53b1b0c6f9d21abcd\"\n",
            2,
            &["key \"uuid\"", "position 9 should be '-'"],
        ),
        (
            "type = \"device\"\n# comment\nnetns-name = \"uuid\"\n",
            3,
            &["key \"netns-name\"", "needs a `uuid"],
        ),
        (
            "type = \"device\"\nnetns-name = \"../x\"\n",
            2,
            &[
                "key \"netns-name\"",
                "contains '/'; only A-Z a-z 0-9 _ . - are allowed",
            ],
        ),
        (
            "type = \"device\"\nnetns-name = \"..\"\n",
            2,
            &["key \"netns-name\"", "not a valid namespace name"],
        ),
        (&long_name, 2, &["key \"netns-name\"", "1 to 64 characters"]),
        (
            "type = \"device\"\nnetns-name = \"my vpn\"\n",
            2,
            &["key \"netns-name\"", "contains ' '"],
        ),
        (
            "\n\ntype = \"vpn\"\n",
            3,
            &["key \"type\"", "unknown connection type \"vpn\""],
        ),
        (
            "type = 1\n",
            1,
            &[
                "key \"type\"",
                "expected \"openvpn\", \"wireguard\", \"device\", \"macvlan\" or \"routed\", found an integer 1",
            ],
        ),
        (
            "type = \"openvpn\"\n[openvpn]\nconfig = \"work.conf\"\n",
            3,
            &["key \"openvpn.config\"", "not an absolute path"],
        ),
        (
            "type = \"openvpn\"\n[openvpn]\n",
            2,
            &["missing key \"config\" in [openvpn]"],
        ),
        (
            "type = \"wireguard\"\n[openvpn]\nconfig = \"/x\"\n",
            2,
            &["key \"openvpn\"", "this connection is \"wireguard\""],
        ),
        (
            "type = \"wireguard\"\n[wireguard]\nbackend = \"kernal\"\n",
            3,
            &[
                "key \"wireguard.backend\"",
                "\"kernel\", \"builtin\", \"wireguard-go\" (or \"userspace\") or \"auto\"",
            ],
        ),
        (
            "type = \"device\"\n[dns]\nservers = [\n  \"192.0.2.1\",\n  \"dns.example\",\n]\n",
            5,
            &[
                "key \"dns.servers\"",
                "\"dns.example\" is not an IP address",
            ],
        ),
        (
            "type = \"device\"\ndns.servers = [53]\n",
            2,
            &[
                "key \"dns.servers\"",
                "expected an IP address string, found an integer 53",
            ],
        ),
        (
            "type = \"device\"\n[dns]\nsearch = [\"corp example\"]\n",
            3,
            &["key \"dns.search\"", "not a valid domain name"],
        ),
        (
            "type = \"device\"\n[exec]\nhostname = \"work_vm\"\n",
            3,
            &["key \"exec.hostname\"", "contains '_'"],
        ),
        (
            "type = \"device\"\n[exec]\nsession-bus = \"yes\"\n",
            3,
            &["key \"exec.session-bus\"", "unknown variant"],
        ),
        (
            "type = \"device\"\n[exec]\nusers = [\"alice bob\"]\n",
            3,
            &["key \"exec.users\"", "not a valid user or group name"],
        ),
        (
            "type = \"device\"\nexec = { groups = \"vpn\" }\n",
            2,
            &["key \"exec.groups\"", "expected an array, found a string"],
        ),
        (
            "type = \"openvpn\"\nopenvpn = 5\n",
            2,
            &["key \"openvpn\"", "expected a table, found an integer 5"],
        ),
        (
            "type = \"device\"\ntype = \"device\"\n",
            2,
            &["key \"type\"", "duplicate key"],
        ),
        (
            "type = \"device\"\n[dns]\nservers = [\"192.0.2.1\"\n",
            3,
            &["key \"dns.servers\"", "unclosed array"],
        ),
    ];
    for (text, line, needles) in cases {
        let err = parse_work(text).map(|_| ()).unwrap_err();
        assert_eq!(err.path(), Path::new(PATH));
        let msg = err.to_string();
        let prefix = format!("{PATH} line {line}: ");
        assert!(
            msg.starts_with(&prefix),
            "want prefix {prefix:?}, got {msg:?}"
        );
        assert!(!msg.contains('\n'), "multi-line: {msg:?}");
        for needle in *needles {
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    }
}

#[test]
fn missing_type_names_the_key() {
    let msg = parse_work("uuid = \"0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!("{PATH}: missing required key \"type\"")),
        "{msg}"
    );
}

#[test]
fn bad_connection_names() {
    for name in ["../x", "a/b", "", "..", "a b"] {
        let path = Path::new("/etc/vpn-ns").join(format!("{name}.toml"));
        let err = parse(name, &path, "type = \"device\"").unwrap_err();
        assert!(
            matches!(err, ConfigError::BadName { .. }),
            "{name:?}: {err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let err = load(Path::new("/nonexistent-vpn-ns"), name).unwrap_err();
        assert!(
            matches!(err, ConfigError::BadName { .. }),
            "{name:?}: {err}"
        );
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vpn-ns-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_from_dir() {
    let dir = TempDir::new("load");
    dir.write("home.toml", "type = \"wireguard\"\n");
    let c = load(&dir.0, "home").unwrap();
    assert_eq!(
        (c.name.as_str(), c.kind.tag()),
        ("home", ConnectionType::WireGuard)
    );
    assert_eq!(c.path, dir.0.join("home.toml"));

    let err = load(&dir.0, "work").unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    let msg = err.to_string();
    let want = dir.0.join("work.toml").display().to_string();
    assert!(
        msg.starts_with(&want) && msg.contains(&format!("create {want}")),
        "{msg}"
    );
    assert!(msg.contains(&format!("ls {}", dir.0.display())), "{msg}");
}

#[test]
fn load_all_sorted_and_filtered() {
    let dir = TempDir::new("all");
    dir.write("work.toml", "type = \"openvpn\"\n");
    dir.write("alpha.toml", "type = \"device\"\n");
    dir.write("home.toml", "type = \"wireguard\"\n");
    dir.write("notes.txt", "not a connection");
    dir.write("work.toml~", "editor backup");
    std::fs::create_dir(dir.0.join("sub.toml")).unwrap();
    let names: Vec<String> = load_all(&dir.0)
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["alpha", "home", "work"]);

    dir.write("broken.toml", "type = \"device\"\nbogus = 1\n");
    let msg = load_all(&dir.0).unwrap_err().to_string();
    assert!(
        msg.contains("broken.toml line 2: unknown key \"bogus\""),
        "{msg}"
    );

    assert!(load_all(&dir.0.join("missing")).unwrap().is_empty());
}

#[test]
fn host_routes_min_prefix_range() {
    assert_eq!(
        parse_work("type = \"device\"")
            .unwrap()
            .host_routes_min_prefix,
        8
    );
    let c = parse_work("type = \"device\"\nhost-routes-min-prefix = 16").unwrap();
    assert_eq!(c.host_routes_min_prefix, 16);
    for bad in ["0", "33", "-1", "\"8\""] {
        let e = parse_work(&format!(
            "type = \"device\"\nhost-routes-min-prefix = {bad}"
        ))
        .err()
        .unwrap_or_else(|| panic!("{bad} accepted"))
        .to_string();
        assert!(e.contains("host-routes-min-prefix"), "{bad}: {e}");
    }
}

/// A section belongs to one type: any other type's file with it is refused at the
/// section's line, naming both types.
#[test]
fn sections_of_another_type() {
    let cases = [
        (
            "device",
            "[openvpn]\nconfig = \"/etc/o.conf\"\n",
            2,
            "openvpn",
        ),
        ("openvpn", "[wireguard]\n", 2, "wireguard"),
        ("wireguard", "[macvlan]\nparent = \"eth0\"\n", 2, "macvlan"),
        ("macvlan", "[routed]\nuplink = \"eth0\"\n", 2, "routed"),
        (
            "routed",
            "[openvpn]\nconfig = \"/etc/o.conf\"\n",
            2,
            "openvpn",
        ),
        (
            "device",
            "[dns]\nservers = [\"192.0.2.1\"]\n[wireguard]\n",
            4,
            "wireguard",
        ),
    ];
    for (ty, rest, line, section) in cases {
        let text = format!("type = \"{ty}\"\n{rest}");
        let err = parse_work(&text).unwrap_err().to_string();
        let want = format!(
            "{PATH} line {line}: key \"{section}\": [{section}] is only for type = \"{section}\", this connection is \"{ty}\""
        );
        assert!(err.starts_with(&want), "{text}: {err}");
    }
}
