//! Privilege: a non-root user who reaches vpn-ns through sudo, pkexec or doas cannot
//! steer it with files they control. `--config-dir`/`VPN_NS_CONFIG_DIR` are refused,
//! and a connection file, the VPN config it names or their directory that is not
//! root-owned or is group/world-writable is refused with exit 2, naming the file and
//! the fix, before anything is changed. (`exec -u` being root-only and the `[exec]`
//! policy are covered in tests/exec.rs.) The elevation is simulated with the variables
//! sudo/pkexec/doas set; vpn-ns trusts them only to refuse more, never to allow more.

use vpn_ns_testkit as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::exec::use_system_conf;
use common::*;

const ELEVATION_VARS: [&str; 6] = [
    "SUDO_UID",
    "SUDO_GID",
    "SUDO_USER",
    "PKEXEC_UID",
    "DOAS_USER",
    "VPN_NS_CONFIG_DIR",
];

/// A uid that is not root; it needs no account for chown or for the check.
const USER_UID: u32 = 4242;

/// vpn-ns in the sandbox as if run by `tool` ("sudo", "pkexec", "doas", or "root" for
/// a root shell).
fn vpn_ns_as(sb: &Sandbox, tool: &str, args: &[&str]) -> Command {
    let mut c = sb.vpn_ns();
    for v in ELEVATION_VARS {
        c.env_remove(v);
    }
    let uid = USER_UID.to_string();
    match tool {
        "sudo" => {
            c.env("SUDO_UID", &uid)
                .env("SUDO_GID", &uid)
                .env("SUDO_USER", "someone");
        }
        "pkexec" => {
            c.env("PKEXEC_UID", &uid);
        }
        "doas" => {
            c.env("DOAS_USER", "someone");
        }
        "root" => {}
        other => panic!("unknown tool {other}"),
    }
    c.args(args).stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(&c)))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_refused(o: &Output, needles: &[&str], what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: expected exit 2: {err}");
    for n in needles {
        assert!(err.contains(n), "{what}: the message lacks {n:?}: {err}");
    }
}

fn assert_accepted(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: expected success ({}): {}",
        o.status,
        stderr(o)
    );
}

fn set_owner_mode(p: &Path, uid: u32, mode: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(0)).expect("chown");
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn elevated_user_cannot_override_the_config_dir() {
    if !require_root("elevated_user_cannot_override_the_config_dir") {
        return;
    }
    let sb = Sandbox::new("priv-dir");
    sb.write_conn("w", "type = \"openvpn\"\n");
    let dir = sb.config_dir().display().to_string();
    for tool in ["sudo", "pkexec", "doas"] {
        let o = run(vpn_ns_as(&sb, tool, &["--config-dir", &dir, "down", "w"]));
        assert_refused(&o, &["--config-dir", "refused", tool], tool);
        let mut c = vpn_ns_as(&sb, tool, &["down", "w"]);
        c.env("VPN_NS_CONFIG_DIR", &dir);
        assert_refused(&run(c), &["VPN_NS_CONFIG_DIR", "refused"], tool);
    }
    // root running sudo (SUDO_UID=0) and a root shell may point anywhere.
    let mut c = vpn_ns_as(&sb, "root", &["--config-dir", &dir, "down", "w"]);
    c.env("SUDO_UID", "0");
    assert_accepted(&run(c), "sudo by root");
    let o = run(vpn_ns_as(&sb, "root", &["--config-dir", &dir, "down", "w"]));
    assert_accepted(&o, "root shell");
}

#[test]
fn elevated_user_cannot_use_files_others_control() {
    if !require_root("elevated_user_cannot_use_files_others_control") {
        return;
    }
    let sb = Sandbox::new("priv-files");
    use_system_conf(&sb);
    let toml = sb.write_conn(
        "w",
        "type = \"openvpn\"\n[openvpn]\nconfig = \"/etc/vpn-ns/w.ovpn\"\n",
    );
    let ovpn = sb.config_dir().join("w.ovpn");
    fs::write(&ovpn, "client\n").expect("write w.ovpn");
    set_owner_mode(&ovpn, 0, 0o600);
    let shown = "/etc/vpn-ns/w.toml";
    let fix = "chown root: /etc/vpn-ns/w.toml; chmod go-w /etc/vpn-ns/w.toml";

    // Every command that reads the file refuses it, before changing anything.
    set_owner_mode(&toml, USER_UID, 0o644);
    for args in [
        &["down", "w"][..],
        &["up", "w"],
        &["exec", "w", "--", "true"],
        &["hook", "openvpn", "w"],
    ] {
        for tool in ["sudo", "pkexec", "doas"] {
            let o = run(vpn_ns_as(&sb, tool, args));
            let what = format!("{tool} vpn-ns {}", args.join(" "));
            assert_refused(&o, &[shown, "uid 4242", fix, tool], &what);
        }
    }
    // `check` reports it as a finding of the connection.
    let o = run(vpn_ns_as(&sb, "sudo", &["check", "w"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && out.contains(shown) && out.contains(fix),
        "check must report the untrusted file ({}): {out}{}",
        o.status,
        stderr(&o)
    );
    assert_nothing_created(&sb);
    // A root shell trusts itself.
    assert_accepted(&run(vpn_ns_as(&sb, "root", &["down", "w"])), "root shell");

    set_owner_mode(&toml, 0, 0o664);
    let o = run(vpn_ns_as(&sb, "sudo", &["down", "w"]));
    assert_refused(&o, &[shown, "writable by its group", "0664", fix], "g+w");
    set_owner_mode(&toml, 0, 0o646);
    let o = run(vpn_ns_as(&sb, "sudo", &["down", "w"]));
    assert_refused(&o, &[shown, "writable by everyone", fix], "o+w");

    set_owner_mode(&toml, 0, 0o644);
    assert_accepted(
        &run(vpn_ns_as(&sb, "sudo", &["down", "w"])),
        "root-owned 0644",
    );

    // The OpenVPN config the connection names runs as root too.
    set_owner_mode(&ovpn, USER_UID, 0o600);
    let o = run(vpn_ns_as(&sb, "sudo", &["up", "w"]));
    assert_refused(
        &o,
        &[
            "/etc/vpn-ns/w.ovpn",
            "uid 4242",
            "chown root: /etc/vpn-ns/w.ovpn",
        ],
        "user-owned OpenVPN config",
    );
    set_owner_mode(&ovpn, 0, 0o600);

    // A directory others can write lets them swap the file after the check.
    let conf = sb.config_dir();
    let before = fs::metadata(&conf).expect("conf dir").permissions();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o777)).expect("chmod dir");
    let o = run(vpn_ns_as(&sb, "sudo", &["down", "w"]));
    fs::set_permissions(&conf, before).expect("restore dir mode");
    assert_refused(
        &o,
        &[
            "directory /etc/vpn-ns",
            "writable by everyone",
            "chmod go-w /etc/vpn-ns",
        ],
        "world-writable directory",
    );
    assert_accepted(&run(vpn_ns_as(&sb, "sudo", &["down", "w"])), "restored");
    assert_nothing_created(&sb);
}
