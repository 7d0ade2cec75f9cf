//! Acceptance tests of `vpn-ns exec` over a real OpenVPN connection in a per-test
//! sandbox: identity and environment of the started command, the `[exec]` policy, the
//! browser warning and `--wait`. DNS and a real browser: tests/exec_network.rs.
//! Needs root and /dev/net/tun (skipped loudly otherwise; under CI they must run).

use vpn_ns_testkit as common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::exec::*;
use common::*;

#[test]
fn exec_runs_as_the_invoking_user_with_the_session_environment() {
    if !require_root("exec_runs_as_the_invoking_user_with_the_session_environment") {
        return;
    }
    let u = TestUser::create();
    let (sb, _srv, _client) = connected(
        "exec-identity",
        &format!(
            "type = \"openvpn\"\n[exec]\nusers = [\"{}\"]\nhostname = \"work-vm\"\n",
            u.name
        ),
    );
    use_system_conf(&sb);
    let script = "printf 'uid=%s\\ngid=%s\\ngroups=%s\\n' \"$(id -u)\" \"$(id -g)\" \"$(id -G)\"; \
        echo netns=$(readlink /proc/self/ns/net); echo pwd=$(pwd); echo hostname=$(hostname); \
        grep -E '^(Uid|Gid|CapPrm|CapEff|CapAmb|SigIgn):' /proc/self/status | tr -s '\\t ' ' ' | sed 's/: /=/'; \
        echo regain=$(perl -MPOSIX -e 'print POSIX::setuid(0) ? q(yes) : q(no)'); \
        echo sysnet=$(ls /sys/class/net); \
        echo service=$(socat -T2 -u TCP:203.0.113.1:8080,connect-timeout=2 STDOUT); env";
    let mut c = exec_cmd(&sb, Some(&u), &["work", "--", "sh", "-c", script]);
    c.env("DISPLAY", ":7")
        .env("WAYLAND_DISPLAY", "wayland-7")
        .env("XAUTHORITY", "/tmp/xauth-test")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path=/run/user/{}/bus", u.uid),
        )
        .env("PULSE_SERVER", "unix:/tmp/pulse-test")
        .env("LANG", "C.UTF-8")
        .env("LC_TIME", "C")
        .env("TERM", "xterm-test")
        .env("HOME", "/root")
        .env("LD_LIBRARY_PATH", "/tmp/must-not-pass")
        .env("SECRET_TOKEN", "must-not-pass");
    let out = ok(c);
    let ino = sb.netns_inode("work").expect("namespace work");
    let (uid, gid) = (u.uid.to_string(), u.gid.to_string());
    assert_eq!(value(&out, "uid"), Some(uid.as_str()), "{out}");
    assert_eq!(value(&out, "gid"), Some(gid.as_str()), "{out}");
    let mut groups: Vec<u32> = value(&out, "groups")
        .unwrap()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort();
    let mut want = vec![u.gid, u.group_gid];
    want.sort();
    assert_eq!(groups, want, "supplementary groups: {out}");
    // Real, effective, saved and filesystem ids are the user's; no capabilities left.
    assert_eq!(
        value(&out, "Uid"),
        Some(format!("{uid} {uid} {uid} {uid}").as_str()),
        "{out}"
    );
    assert_eq!(
        value(&out, "Gid"),
        Some(format!("{gid} {gid} {gid} {gid}").as_str()),
        "{out}"
    );
    for cap in ["CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(value(&out, cap), Some("0000000000000000"), "{cap}: {out}");
    }
    // vpn-ns (Rust) ignores SIGPIPE; the command must get the default back (bit 13-1).
    let ignored = u64::from_str_radix(value(&out, "SigIgn").expect("SigIgn"), 16).unwrap();
    assert_eq!(
        ignored & (1 << 12),
        0,
        "SIGPIPE is ignored in the command: {out}"
    );
    assert_eq!(
        value(&out, "regain"),
        Some("no"),
        "setuid(0) must fail: {out}"
    );
    assert_eq!(
        value(&out, "netns"),
        Some(format!("net:[{ino}]").as_str()),
        "{out}"
    );
    assert_eq!(value(&out, "service"), Some(SERVICE_REPLY), "{out}");
    // A fresh sysfs: the namespace's devices, not the host's.
    let sysnet: Vec<&str> = value(&out, "sysnet").unwrap().split_whitespace().collect();
    assert!(
        sysnet.contains(&"lo") && sysnet.len() == 2,
        "/sys/class/net: {out}"
    );
    assert!(
        !sysnet.contains(&"uplink"),
        "/sys/class/net shows the host: {out}"
    );
    let home = u.home().display().to_string();
    assert_eq!(value(&out, "pwd"), Some(home.as_str()), "{out}");
    assert_eq!(value(&out, "HOME"), Some(home.as_str()), "{out}");
    assert_eq!(value(&out, "USER"), Some(u.name.as_str()), "{out}");
    assert_eq!(value(&out, "LOGNAME"), Some(u.name.as_str()), "{out}");
    assert_eq!(value(&out, "SHELL"), Some("/bin/sh"), "{out}");
    assert_eq!(
        value(&out, "PATH"),
        Some("/usr/local/bin:/usr/bin:/bin"),
        "{out}"
    );
    for (k, v) in [
        ("DISPLAY", ":7".to_owned()),
        ("WAYLAND_DISPLAY", "wayland-7".to_owned()),
        ("XAUTHORITY", "/tmp/xauth-test".to_owned()),
        ("PULSE_SERVER", "unix:/tmp/pulse-test".to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
        ("LC_TIME", "C".to_owned()),
        ("TERM", "xterm-test".to_owned()),
    ] {
        assert_eq!(value(&out, k), Some(v.as_str()), "{k} must be kept: {out}");
    }
    // The session bus is a way out (its services run in the host namespace): not passed
    // unless [exec] session-bus says so (tests/exec_seal.rs).
    for k in [
        "LD_LIBRARY_PATH",
        "SECRET_TOKEN",
        "SUDO_UID",
        "SUDO_USER",
        "DBUS_SESSION_BUS_ADDRESS",
    ] {
        assert_eq!(
            value(&out, k),
            None,
            "{k} must not reach the command: {out}"
        );
    }
    // [exec] hostname: own UTS namespace inside, the host's name untouched.
    assert_eq!(value(&out, "hostname"), Some("work-vm"), "{out}");
    assert_ne!(sb.must("hostname").trim(), "work-vm");

    // The command's exit status is vpn-ns's; a missing command is 127, as in a shell.
    let o = output(exec_cmd(
        &sb,
        Some(&u),
        &["work", "--", "sh", "-c", "exit 7"],
    ));
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    let o = output(exec_cmd(
        &sb,
        Some(&u),
        &["work", "--", "no-such-command-xyz"],
    ));
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("vpn-ns: no-such-command-xyz: command not found"),
        "{}",
        text(&o.stderr)
    );
    // Root may pick the user with -u; the user may not pick anyone.
    let out = ok(exec_cmd(
        &sb,
        None,
        &["-u", &u.name, "work", "--", "id", "-u"],
    ));
    assert_eq!(out.trim(), uid);
    let o = output(exec_cmd(
        &sb,
        Some(&u),
        &["-u", "root", "work", "--", "id", "-u"],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("only for root"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn exec_policy_refuses_users_not_listed() {
    if !require_root("exec_policy_refuses_users_not_listed") {
        return;
    }
    let u = TestUser::create();
    let (sb, _srv, _client) = connected(
        "exec-policy",
        "type = \"openvpn\"\n[exec]\nusers = [\"someone-else\"]\n",
    );
    use_system_conf(&sb);
    let o = output(exec_cmd(&sb, Some(&u), &["work", "--", "id", "-u"]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/etc/vpn-ns/work.toml: [exec] does not allow user") && err.contains(&u.name),
        "the refusal must name the file, [exec] and the user: {err}"
    );
    // The lists come from a root-only file: not shown to the refused user.
    assert!(
        !err.contains("someone-else"),
        "the refusal must name only the refused user: {err}"
    );
    assert!(o.stdout.is_empty(), "nothing may run: {}", text(&o.stdout));
    // A real root shell is always allowed.
    assert_eq!(
        ok(exec_cmd(&sb, None, &["work", "--", "id", "-u"])).trim(),
        "0"
    );
    // Membership of a listed group is enough.
    sb.write_conn(
        "work",
        &format!(
            "type = \"openvpn\"\n[exec]\nusers = [\"someone-else\"]\ngroups = [\"{}\"]\n",
            u.group
        ),
    );
    assert_eq!(
        ok(exec_cmd(&sb, Some(&u), &["work", "--", "id", "-u"])).trim(),
        u.uid.to_string()
    );
    // No [exec]: sudo decided.
    sb.write_conn("work", "type = \"openvpn\"\n");
    assert_eq!(
        ok(exec_cmd(&sb, Some(&u), &["work", "--", "id", "-u"])).trim(),
        u.uid.to_string()
    );
}

#[test]
fn exec_warns_about_a_browser_running_outside() {
    if !require_root("exec_warns_about_a_browser_running_outside") {
        return;
    }
    let u = TestUser::create();
    let (sb, _srv, _client) = connected("exec-warn", "type = \"openvpn\"\n");
    // A process called "chromium" of the user, in the host namespace.
    let fake = u.owned_dir(&sb, "fake").join("chromium");
    fs::copy("/bin/sleep", &fake).unwrap();
    let mut c = sb.cmd("setpriv");
    c.args([
        &format!("--reuid={}", u.uid),
        &format!("--regid={}", u.gid),
        "--clear-groups",
        "--",
    ])
    .arg(&fake)
    .arg("300");
    let _chromium = sb.spawn("fake-chromium", c);
    wait_until(Duration::from_secs(5), || {
        sandbox::run(Command::new("pgrep").args(["-u", &u.name, "-x", "chromium"]))
    })
    .unwrap_or_else(|e| panic!("fake chromium not running: {e}"));
    // The absolute path does not exist: the warning comes before exec, then 127.
    let o = output(exec_cmd(
        &sb,
        None,
        &[
            "-u",
            &u.name,
            "work",
            "--",
            "/nonexistent/chromium",
            "https://example.org/",
        ],
    ));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(127), "{err}");
    assert!(
        err.contains("already running outside this namespace") && err.contains("--user-data-dir"),
        "{err}"
    );
    let o = output(exec_cmd(
        &sb,
        None,
        &[
            "-u",
            &u.name,
            "work",
            "--",
            "/nonexistent/chromium",
            "--user-data-dir=/tmp/x",
        ],
    ));
    assert!(
        !text(&o.stderr).contains("already running"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn exec_wait_returns_when_the_connection_comes_up_and_times_out_otherwise() {
    if !require_root("exec_wait_returns_when_the_connection_comes_up_and_times_out_otherwise") {
        return;
    }
    let sb = Sandbox::new("exec-wait");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\nnetns-timeout = 30000\n");
    sb.write_conn("late", "type = \"openvpn\"\nnetns-timeout = 1500\n");

    // Without --wait: at once, with a message that says what to do.
    let t = Instant::now();
    let o = output(exec_cmd(&sb, None, &["work", "--", "true"]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("connection work is not up") && err.contains("--wait"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));

    // --wait with nothing coming: the bound is netns-timeout.
    let t = Instant::now();
    let o = output(exec_cmd(&sb, None, &["--wait", "late", "--", "true"]));
    let (err, took) = (text(&o.stderr), t.elapsed());
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("connection late did not come up within 1500 ms"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // --wait while the VPN connects: returns right after the state is recorded.
    let mut waiter = sb.spawn(
        "exec-wait",
        exec_cmd(
            &sb,
            None,
            &["--wait", "work", "--", "readlink", "/proc/self/ns/net"],
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiter.is_alive(),
        "exec --wait must wait: {}",
        waiter.log_text()
    );
    let mut client = sb.start_client("work", &ClientOptions::default());
    let up_at = wait_until(CONNECT, || {
        if sb.exists("/run/vpn-ns/work.json") {
            Ok(Instant::now())
        } else {
            Err("no state yet".into())
        }
    })
    .unwrap_or_else(|e| panic!("{e}; client log:\n{}", client.log()));
    let status = waiter
        .wait_exit(Duration::from_secs(10))
        .expect("exec --wait did not return");
    let lag = up_at.elapsed();
    assert!(status.success(), "{}", waiter.log_text());
    assert!(
        lag < Duration::from_millis(750),
        "returned {lag:?} after the connection came up"
    );
    let ino = sb.netns_inode("work").expect("namespace work");
    assert!(
        waiter.log_text().contains(&format!("net:[{ino}]")),
        "{}",
        waiter.log_text()
    );
    client.stop().unwrap_or_else(|e| panic!("{e}"));
}
