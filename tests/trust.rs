//! Nothing vpn-ns did not create is trusted (issue 19): directories it writes into or
//! binds from must be root's alone, temp files are never followed through a planted
//! symlink, exec binds only the files vpn-ns writes, a namespace admin's DNS files are
//! kept, with netns-isolate = false a pushed route set that would take over the
//! host's routing is refused, and a setuid-root install (whose caller controls what
//! vpn-ns trusts from root) is refused. The real binary runs as OpenVPN's
//! `--up`/`--down` hook with a realistic environment in a sandbox.

use vpn_ns_testkit as common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::exec::*;
use common::*;

const TUN: &str = "tun0";

fn env(script_type: &str, extra: &[(String, String)]) -> BTreeMap<String, String> {
    let mut e: BTreeMap<String, String> = [
        ("script_type", script_type),
        ("script_context", "init"),
        ("dev", TUN),
        ("dev_type", "tun"),
        ("tun_mtu", "1500"),
        ("ifconfig_local", "100.64.0.2"),
        ("ifconfig_netmask", "255.255.255.0"),
        ("route_vpn_gateway", "100.64.0.1"),
        ("route_network_1", "203.0.113.0"),
        ("route_netmask_1", "255.255.255.0"),
        ("route_gateway_1", "100.64.0.1"),
        ("foreign_option_1", "dhcp-option DNS 203.0.113.53"),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    e.extend(extra.iter().cloned());
    e
}

fn hook(sb: &Sandbox, e: &BTreeMap<String, String>) -> Output {
    let mut c = sb.vpn_ns();
    c.env_clear()
        .envs(e)
        .arg("--config-dir")
        .arg(sb.config_dir())
        .args(["hook", "openvpn", "work"]);
    output(c)
}

fn sandbox(name: &str, toml: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.write_conn("work", toml);
    sb.must(&format!("ip tuntap add dev {TUN} mode tun"));
    sb
}

fn must_succeed(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", text(&o.stderr));
}

#[test]
fn directories_others_can_write_to_are_refused() {
    if !require_root("directories_others_can_write_to_are_refused") {
        return;
    }
    let sb = sandbox("trust-dirs", "type = \"openvpn\"\n");
    // A world-writable /etc/netns (what a tmpfs with default options gives).
    sb.must("chmod 1777 /etc/netns");
    let o = hook(&sb, &env("up", &[]));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "up accepted a 1777 /etc/netns: {err}");
    assert!(err.contains("refusing to use /etc/netns"), "{err}");
    assert!(sb.netns_list().is_empty(), "not rolled back: {err}");
    sb.must("chmod 0755 /etc/netns");

    // A record's temp file planted as a symlink to a root-only file, in a
    // world-writable (not sticky, so fs.protected_symlinks does not help) /run/vpn-ns.
    let victim = sb.dir().join("victim");
    fs::write(&victim, "root-only\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    sb.must("chmod 0777 /run/vpn-ns");
    sb.must(&format!(
        "ln -s {} /run/vpn-ns/work.json.tmp",
        victim.display()
    ));
    let o = hook(&sb, &env("up", &[]));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "up accepted a 0777 /run/vpn-ns: {err}");
    assert!(err.contains("refusing to use /run/vpn-ns"), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root-only\n");

    // The directory fixed, the leftover symlink is replaced, never followed.
    sb.must("chmod 0755 /run/vpn-ns");
    must_succeed(&hook(&sb, &env("up", &[])), "up");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root-only\n");
    assert!(sb.read("/run/vpn-ns/work.json").is_some());

    // exec binds only the files vpn-ns writes: not a passwd or shadow put next to them.
    sb.must(
        "printf 'planted:x:0:0::/root:/bin/sh\\n' > /etc/netns/work/passwd && \
         printf 'planted::1:0:99999:7:::\\n' > /etc/netns/work/shadow",
    );
    let out = ok(exec_cmd(
        &sb,
        None,
        &[
            "work",
            "--",
            "sh",
            "-c",
            "echo passwd=$(grep -c planted /etc/passwd); \
             echo resolv=$(grep nameserver /etc/resolv.conf)",
        ],
    ));
    assert_eq!(value(&out, "passwd"), Some("0"), "{out}");
    assert_eq!(
        value(&out, "resolv"),
        Some("nameserver 203.0.113.53"),
        "{out}"
    );
    // A namespace directory others can write to: exec refuses, naming it.
    sb.must("chmod 0777 /etc/netns/work");
    let o = output(exec_cmd(&sb, None, &["work", "--", "true"]));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("refusing to use /etc/netns/work"), "{err}");
    // A resolv.conf that others may write to is refused, naming it.
    sb.must("chmod 0755 /etc/netns/work && chmod 0666 /etc/netns/work/resolv.conf");
    let o = output(exec_cmd(&sb, None, &["work", "--", "true"]));
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("refusing to use /etc/netns/work/resolv.conf"),
        "{err}"
    );
    // A symlink there is not vpn-ns's file: never followed, never bound.
    sb.must(
        "chmod 0644 /etc/netns/work/resolv.conf && \
         mv /etc/netns/work/resolv.conf /etc/netns/work/r && \
         ln -s r /etc/netns/work/resolv.conf",
    );
    let o = output(exec_cmd(
        &sb,
        None,
        &[
            "work",
            "--",
            "sh",
            "-c",
            "grep -c 203.0.113.53 /etc/resolv.conf",
        ],
    ));
    let err = text(&o.stderr);
    assert_eq!(text(&o.stdout).trim(), "0", "{err}");
    assert!(
        err.contains("/etc/netns/work/resolv.conf is a symbolic link"),
        "{err}"
    );
}

#[test]
fn a_namespace_vpn_ns_did_not_create_keeps_its_dns_files() {
    if !require_root("a_namespace_vpn_ns_did_not_create_keeps_its_dns_files") {
        return;
    }
    let sb = sandbox(
        "trust-foreign",
        "type = \"openvpn\"\nnetns-name = \"admins\"\n",
    );
    sb.must(
        "ip netns add admins && mkdir -p /etc/netns/admins && \
         printf 'nameserver 192.0.2.99\\n' > /etc/netns/admins/resolv.conf && \
         printf 'admin-hosts\\n' > /etc/netns/admins/hosts && \
         ln -s /etc/nsswitch.conf /etc/netns/admins/nsswitch.conf",
    );
    let o = hook(&sb, &env("up", &[]));
    must_succeed(&o, "up");
    assert!(
        text(&o.stderr).contains("was not written by vpn-ns"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        sb.read("/etc/netns/admins/resolv.conf").as_deref(),
        Some("nameserver 192.0.2.99\n"),
        "the admin's resolv.conf was overwritten"
    );
    // exec binds only what vpn-ns wrote: not the admin's resolv.conf, not the link.
    let o = output(exec_cmd(
        &sb,
        None,
        &[
            "work",
            "--",
            "sh",
            "-c",
            "grep -c 192.0.2.99 /etc/resolv.conf",
        ],
    ));
    let err = text(&o.stderr);
    assert_eq!(text(&o.stdout).trim(), "0", "{err}");
    assert!(
        err.contains("/etc/netns/admins/resolv.conf was not written by vpn-ns"),
        "{err}"
    );
    must_succeed(&hook(&sb, &env("down", &[])), "down");
    assert_eq!(
        sb.read("/etc/netns/admins/resolv.conf").as_deref(),
        Some("nameserver 192.0.2.99\n"),
        "the admin's resolv.conf is gone after down"
    );
    assert_eq!(
        sb.read("/etc/netns/admins/hosts").as_deref(),
        Some("admin-hosts\n")
    );
    // The admin's symlink was neither followed nor replaced nor removed.
    assert_eq!(
        sb.must("readlink /etc/netns/admins/nsswitch.conf").trim(),
        "/etc/nsswitch.conf"
    );
    assert!(sb.netns_list().contains(&"admins".to_owned()));
}

fn host_routes(sb: &Sandbox) -> String {
    expect_ok(sb.ip(None, &["-4", "route", "show", "table", "all"]))
}

#[test]
fn without_isolation_routes_that_take_over_the_host_are_refused() {
    if !require_root("without_isolation_routes_that_take_over_the_host_are_refused") {
        return;
    }
    let sb = sandbox("trust-cover", "type = \"openvpn\"\nnetns-isolate = false\n");
    let before = host_routes(&sb);
    let quarters: Vec<(String, String)> = ["0.0.0.0", "64.0.0.0", "128.0.0.0", "192.0.0.0"]
        .iter()
        .enumerate()
        .flat_map(|(i, net)| {
            let n = i + 1;
            [
                (format!("route_network_{n}"), net.to_string()),
                (format!("route_netmask_{n}"), "192.0.0.0".to_owned()),
            ]
        })
        .collect();
    let o = hook(&sb, &env("up", &quarters));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for n in 1..=4 {
        assert!(err.contains(&format!("route_network_{n}")), "{err}");
    }
    assert!(err.contains("shorter than /8"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(host_routes(&sb), before, "the host's routes changed");

    // 128 /8 routes: each one allowed, together half of the address space.
    let halves: Vec<(String, String)> = (0..128u32)
        .flat_map(|i| {
            let n = i + 2;
            [
                (format!("route_network_{n}"), format!("{i}.0.0.0")),
                (format!("route_netmask_{n}"), "255.0.0.0".to_owned()),
            ]
        })
        .collect();
    let o = hook(&sb, &env("up", &halves));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("together cover 0.0.0.0/1"), "{err}");
    assert!(err.contains("route_network_129"), "{err}");
    assert_eq!(host_routes(&sb), before, "the host's routes changed");

    // Control: an ordinary pushed route is installed in the host's table.
    must_succeed(&hook(&sb, &env("up", &[])), "up");
    assert!(
        host_routes(&sb).contains("203.0.113.0/24"),
        "{}",
        host_routes(&sb)
    );
}

#[test]
fn setuid_root_install_is_refused() {
    if !require_root("setuid_root_install_is_refused") {
        return;
    }
    let u = TestUser::create();
    let sb = Sandbox::new("seal-setuid");
    let bin = u.owned_dir(&sb, "bin");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&bin, Some(0), Some(0)).unwrap();
    let copy = bin.join("vpn-ns");
    fs::copy(vpn_ns_bin(), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o4755)).unwrap();
    let conf = u.owned_dir(&sb, "user-conf");
    fs::write(conf.join("work.toml"), "type = \"openvpn\"\n").unwrap();
    let mut c = sb.cmd("setpriv");
    c.args([
        &format!("--reuid={}", u.uid),
        &format!("--regid={}", u.gid),
        "--clear-groups",
        "--",
    ])
    .arg(&copy)
    .arg("--config-dir")
    .arg(&conf)
    .args(["exec", "-u", "root", "work", "--", "id", "-u"])
    .env("SUDO_UID", "0");
    let o = output(c);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    assert!(
        err.contains("setuid") && err.contains("sudo, pkexec or doas"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
