//! Unprivileged mode (issue 18): a normal user created by the test, with no sudo, no
//! setuid file and no capability (setpriv drops the bounding set and sets
//! no_new_privs), runs `vpn-ns up/exec/status/verify/down` for their own WireGuard
//! connection against a real wireguard-go peer inside the test's sandbox.

use std::fs;
use std::time::Duration;

use vpn_ns_testkit::exec::{TestUser, need};
use vpn_ns_testkit::sandbox::{self, Proc};
use vpn_ns_testkit::user_session::*;
use vpn_ns_testkit::wireguard::*;
use vpn_ns_testkit::*;

fn tcp_inside(s: &Session, addr: &str) -> Result<String, String> {
    let target = if addr.contains(':') {
        format!("TCP6:[{addr}]:{SERVICE_PORT}")
    } else {
        format!("TCP4:{addr}:{SERVICE_PORT}")
    };
    sandbox::run(&mut s.vpn_ns(&["exec", "home", "--", "socat", "-T", "3", "-", &target]))
        .map(|o| o.trim().to_owned())
}

/// An `exec`'d `sleep` inside, as the user; returns it once it runs in `ns`.
fn sleeper(sb: &Sandbox, s: &Session, ns: &str) -> Proc {
    let p = sb.spawn(
        "sleeper",
        s.vpn_ns(&["exec", "home", "--", "sleep", "1000"]),
    );
    expect_ok(wait_until(WG_SETTLE, || {
        if procs_in(ns).contains(&p.pid()) {
            Ok(())
        } else {
            Err(format!("pid {} is not in {ns} yet", p.pid()))
        }
    }));
    p
}

#[test]
fn a_normal_user_runs_their_own_wireguard_connection() {
    if !require_root("a_normal_user_runs_their_own_wireguard_connection") {
        return;
    }
    need("tcpdump", "tcpdump");
    let sb = Sandbox::new("unpriv");
    let user = TestUser::create();
    let other = TestUser::create();
    let s = Session::new(&sb, &user);
    let so = Session::new(&sb, &other);
    let lab = lab(&sb, &s);
    let before = host_view(&sb);

    s.ok(s.vpn_ns(&["check"]));
    let capture = sb.dir().join("uplink.pcap");
    let mut tcpdump = sb.spawn("tcpdump", {
        let mut c = sb.cmd("tcpdump");
        c.args([
            "-i",
            "up1",
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&capture);
        c
    });
    expect_ok(wait_until(WG_SETTLE, || {
        let log = tcpdump.log_text();
        if log.contains("listening on") {
            Ok(())
        } else {
            Err(format!("tcpdump not listening: {log}"))
        }
    }));

    // A session bus (a way out: it acts in the host namespace) and a Wayland socket
    // (passed through) in the user's runtime directory.
    let _sockets: Vec<Proc> = ["bus", "wayland-0"]
        .iter()
        .map(|n| {
            let path = s.runtime.join(n);
            let listen = format!("UNIX-LISTEN:{},fork", path.display());
            let p = sb.spawn(n, s.cmd("socat", &[&listen, "/dev/null"]));
            expect_ok(wait_until(WG_SETTLE, || match path.exists() {
                true => Ok(()),
                false => Err(format!("no {}", path.display())),
            }));
            p
        })
        .collect();

    s.ok(s.vpn_ns(&["up", "home"]));
    let keeper = s.keeper_pid();
    let listed = s.ok(s.vpn_ns(&["list"]));
    assert!(
        listed.contains("home: up, home in a user namespace"),
        "{listed}"
    );
    let status = fs::read_to_string(format!("/proc/{keeper}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == user.uid.to_string()),
        "the keeper runs as the user: {uid_line}"
    );
    let ns = net_ns_of(keeper);
    assert_ne!(
        ns,
        net_ns_of(sb.pid()),
        "the keeper has its own network namespace"
    );
    assert_eq!(host_view(&sb), before, "up changed the host");

    // Traffic through the tunnel, v4 and v6.
    for (addr, want) in [(SERVICE_4, "v4-ok"), (SERVICE_6, "v6-ok")] {
        let got = wait_until(WG_SETTLE, || {
            tcp_inside(&s, addr).and_then(|l| if l == want { Ok(l) } else { Err(l) })
        });
        assert_eq!(
            got.as_deref(),
            Ok(want),
            "[{addr}] through the tunnel\n{}",
            sb.diagnostics()
        );
    }

    // The child: the user's uid, no capability, only lo and the tunnel, the
    // connection's resolver files.
    let inside = s.ok(s.vpn_ns(&[
        "exec",
        "home",
        "--",
        "sh",
        "-c",
        "echo uid=$(id -u); grep ^Cap /proc/self/status; ip -o link | cut -d' ' -f2; \
         ip -4 route; ip -6 route; cat /etc/resolv.conf; grep ^hosts: /etc/nsswitch.conf; \
         echo cwd=$(pwd); echo run=$(ls -A $XDG_RUNTIME_DIR); \
         echo pids=$(ls /proc | grep -c '^[0-9]'); echo self=$$",
    ]));
    assert!(inside.contains(&format!("uid={}\n", user.uid)), "{inside}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            inside.contains(&format!("{cap}:\t0000000000000000")),
            "{cap} must be empty inside: {inside}"
        );
    }
    // The tunnel is named after the wg-quick file, home.conf.
    assert!(
        inside.contains("lo:\n") && inside.contains("home:\n"),
        "{inside}"
    );
    assert_eq!(
        inside.matches(":\n").count(),
        2,
        "only lo and the tunnel: {inside}"
    );
    assert!(inside.contains("default dev home"), "{inside}");
    assert!(
        inside.contains(&format!("nameserver {TUNNEL_DNS}")),
        "{inside}"
    );
    assert!(
        !inside.contains("198.51.100.1"),
        "host resolver visible: {inside}"
    );
    assert!(
        inside.contains(&format!("cwd={}", sb.dir().display())),
        "{inside}"
    );
    let verify = s.run(s.vpn_ns(&["verify", "home"]));
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify: {report}");
    for check in ["links", "routes", "dns", "nsswitch", "handshake"] {
        assert!(report.contains(&format!("ok {check}\n")), "{report}");
    }
    let st = s.ok(s.vpn_ns(&["status", "home"]));
    assert!(
        st.contains("home: up") && st.contains(" s ago"),
        "handshake in status: {st}"
    );
    // The session environment is kept.
    let env = s.ok(s.cmd(
        "env",
        &[
            "SESSION_MARK=kept",
            &vpn_ns_bin(),
            "exec",
            "home",
            "--",
            "printenv",
            "SESSION_MARK",
            "HOME",
        ],
    ));
    assert_eq!(env, format!("kept\n{}\n", user.home().display()));
    // The command's exit status is vpn-ns's; a missing program is 127.
    let st = s.run(s.vpn_ns(&["exec", "home", "--", "sh", "-c", "exit 7"]));
    assert_eq!(st.status.code(), Some(7));
    let st = s.run(s.vpn_ns(&["exec", "home", "--", "/nonexistent/program"]));
    assert_eq!(st.status.code(), Some(127));

    // DNS inside goes through the tunnel only: the host resolver sees no new query.
    let host_queries = || {
        fs::read_to_string(&lab.host_dns_log)
            .unwrap_or_default()
            .matches(&format!("] {OUTSIDE_NAME} from"))
            .count()
    };
    let queries_before = host_queries();
    let dns = s.ok(s.vpn_ns(&[
        "exec",
        "home",
        "--",
        "sh",
        "-c",
        &format!(
            "echo inside=$(getent hosts {INSIDE_NAME}); getent hosts {OUTSIDE_NAME}; echo outside_rc=$?"
        ),
    ]));
    assert!(dns.contains(&format!("inside={SERVICE_4}")), "{dns}");
    assert!(dns.contains("outside_rc=2"), "{dns}");
    let host_log = fs::read_to_string(&lab.host_dns_log).unwrap_or_default();
    assert!(
        !host_log.contains(INSIDE_NAME) && host_queries() == queries_before,
        "a lookup from inside reached the host resolver: {host_log}"
    );

    // The uplink carried only WireGuard's UDP (ARP, neighbour discovery and MLD are the
    // veth's own link chatter, sent by the host kernel whatever runs).
    tcpdump.signal(libc::SIGINT);
    tcpdump.wait_exit(WG_SETTLE);
    let all = sandbox::run(sb.cmd("tcpdump").args(["-n", "-r"]).arg(&capture)).unwrap();
    let other_pkts = sandbox::run(
        sb.cmd("tcpdump")
            .args(["-n", "-r"])
            .arg(&capture)
            .arg("not arp and not icmp6 and not ip6 multicast and not (udp port 51820)"),
    )
    .unwrap();
    assert!(
        all.lines().count() > 4,
        "no WireGuard traffic captured: {all}\n{}",
        tcpdump.log_text()
    );
    assert!(
        other_pkts.trim().is_empty(),
        "not WireGuard on the uplink: {other_pkts}"
    );

    // Another user can neither enter nor look at the namespaces.
    let nsenter = so.run(so.cmd("nsenter", &["-t", &keeper.to_string(), "-U", "-n", "true"]));
    assert!(
        !nsenter.status.success(),
        "another user entered the namespaces"
    );
    let look = so.run(so.cmd("readlink", &[&format!("/proc/{keeper}/ns/net")]));
    assert!(
        !look.status.success(),
        "another user sees the namespace: {look:?}"
    );
    let peek = so.run(so.cmd("ls", &[&s.runtime.display().to_string()]));
    assert!(!peek.status.success(), "another user reads the runtime dir");
    let theirs = so.run(so.vpn_ns(&["exec", "home", "--", "true"]));
    assert!(!theirs.status.success(), "another user's exec must fail");

    // down ends programs inside and leaves nothing.
    let mut sleep = sleeper(&sb, &s, &ns);
    s.ok(s.vpn_ns(&["down", "home"]));
    assert!(
        sleep.wait_exit(WG_SETTLE).is_some(),
        "down must end programs inside"
    );
    expect_ok(wait_until(WG_SETTLE, || match procs_in(&ns).as_slice() {
        [] => Ok(()),
        p => Err(format!("processes left in {ns}: {p:?}")),
    }));
    assert!(gone(keeper), "keeper left");
    assert_eq!(
        s.run_dir_entries(),
        Vec::<String>::new(),
        "files left in the runtime dir"
    );
    assert_eq!(host_view(&sb), before, "down changed the host");
}

#[test]
fn a_user_connection_fails_closed_when_its_keeper_dies() {
    if !require_root("a_user_connection_fails_closed_when_its_keeper_dies") {
        return;
    }
    let sb = Sandbox::new("unpriv-drop");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let _lab = lab(&sb, &s);
    s.ok(s.vpn_ns(&["up", "home"]));
    let keeper = s.keeper_pid();
    let ns = net_ns_of(keeper);
    let mut sleep = sleeper(&sb, &s, &ns);
    assert!(sys::send_signal(keeper, libc::SIGKILL));
    expect_ok(wait_until(WG_SETTLE, || match gone(keeper) {
        true => Ok(()),
        false => Err("keeper still there".to_owned()),
    }));
    let t = sleep.pid().to_string();
    let seen = sb.must(&format!(
        "nsenter -t {t} -n ip -o link | cut -d' ' -f2; nsenter -t {t} -n ip -4 route; \
         nsenter -t {t} -n ip -6 route"
    ));
    assert_eq!(
        seen.trim(),
        "lo:",
        "after the drop: only lo and no route: {seen}"
    );
    let st = s.ok(s.vpn_ns(&["status", "home"]));
    assert!(st.contains("stale"), "{st}");
    let v = s.run(s.vpn_ns(&["verify", "home"]));
    assert_eq!(
        v.status.code(),
        Some(1),
        "verify of a dead connection must fail"
    );
    let e = s.run(s.vpn_ns(&["exec", "home", "--", "true"]));
    assert_eq!(
        e.status.code(),
        Some(1),
        "exec into a dead connection must fail"
    );
    s.ok(s.vpn_ns(&["down", "home"]));
    assert!(
        sleep.wait_exit(WG_SETTLE).is_some(),
        "down must end programs inside"
    );
    assert_eq!(s.run_dir_entries(), Vec::<String>::new());
}

#[test]
fn root_only_keys_are_config_errors_for_a_user() {
    if !require_root("root_only_keys_are_config_errors_for_a_user") {
        return;
    }
    need("setpriv", "util-linux");
    let sb = Sandbox::new("unpriv-keys");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    s.write("home.conf", "[Interface]\nPrivateKey = x\n", 0o600);
    for (toml, key) in [
        ("type = \"wireguard\"\nnetns-name = \"vpn\"\n", "netns-name"),
        (
            "type = \"wireguard\"\n[exec]\nusers = [\"root\"]\n",
            "[exec] users",
        ),
        (
            "type = \"wireguard\"\n[wireguard]\nbackend = \"kernel\"\n",
            "[wireguard] backend",
        ),
        ("type = \"openvpn\"\n[openvpn]\nconfig = \"/x\"\n", "type"),
        ("type = \"macvlan\"\n", "type"),
    ] {
        s.write("home.toml", toml, 0o644);
        let o = s.run(s.vpn_ns(&["up", "home"]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{toml}: {err}");
        assert!(
            err.contains(key) && err.contains("home.toml"),
            "{toml}: {err}"
        );
    }
    // FwMark marks the host-side socket: root only.
    s.write("home.toml", "type = \"wireguard\"\n", 0o644);
    let keys = genkeys();
    s.write(
        "home.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nFwMark = 51820\n",
            keys.private
        ),
        0o600,
    );
    let o = s.run(s.vpn_ns(&["up", "home"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("FwMark") && err.contains("home.conf line 3"),
        "{err}"
    );
    // A runtime directory that is not the user's own, closed to others, is refused.
    s.write(
        "home.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.2/32\n",
            keys.private
        ),
        0o600,
    );
    for bad in ["/tmp", "relative/run"] {
        let env = format!("XDG_RUNTIME_DIR={bad}");
        let o = s.run(s.cmd("env", &[&env, &vpn_ns_bin(), "up", "home"]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("XDG_RUNTIME_DIR"), "{bad}: {err}");
    }
    // Someone else's writable file is refused too.
    s.write("home.toml", "type = \"wireguard\"\n", 0o666);
    let o = s.run(s.vpn_ns(&["up", "home"]));
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(s.run_dir_entries().is_empty());
}

#[test]
fn headless_firefox_as_the_user_fetches_a_page_only_behind_the_tunnel() {
    if !require_root("headless_firefox_as_the_user_fetches_a_page_only_behind_the_tunnel") {
        return;
    }
    need("firefox-esr", "firefox-esr");
    let sb = Sandbox::new("unpriv-firefox");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let _lab = lab(&sb, &s);
    let (_page, log) = page_server(&sb);
    let url = format!(
        "http://{SERVICE_4}:{PAGE_PORT}/user-page-{}",
        std::process::id()
    );
    assert!(
        sandbox::run(sb.cmd("curl").args(["-sS", "--max-time", "2", &url])).is_err(),
        "the page must not be reachable from the host"
    );
    s.ok(s.vpn_ns(&["up", "home"]));
    let work = s.config_home.parent().unwrap().join("browser");
    fs::create_dir_all(work.join("profile")).unwrap();
    for d in [&work, &work.join("profile")] {
        std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).unwrap();
    }
    let shot = work.join("shot.png");
    let (profile_s, shot_s) = (
        work.join("profile").display().to_string(),
        shot.display().to_string(),
    );
    let mut browser = sb.spawn(
        "firefox",
        s.vpn_ns(&[
            "exec",
            "home",
            "--",
            "firefox-esr",
            "--headless",
            "--no-remote",
            "--profile",
            &profile_s,
            "--screenshot",
            &shot_s,
            &url,
        ]),
    );
    let status = browser
        .wait_exit(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("firefox did not finish in 180 s: {}", browser.log_text()));
    assert!(
        status.success(),
        "firefox failed ({status}): {}",
        browser.log_text()
    );
    let png =
        fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot: {e}; {}", browser.log_text()));
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(&shot).unwrap()),
        user.uid,
        "written as the user"
    );
    let requests = fs::read_to_string(&log).unwrap_or_default();
    let path = format!("GET /user-page-{} ", std::process::id());
    let fetched: Vec<&str> = requests.lines().filter(|l| l.contains(&path)).collect();
    assert_eq!(fetched.len(), 1, "fetched once: {requests}");
    assert!(
        fetched[0].contains(CLIENT_V4),
        "through the tunnel (from {CLIENT_V4}): {requests}"
    );
    s.ok(s.vpn_ns(&["down", "home"]));
    assert!(s.run_dir_entries().is_empty());
}

/// `check` as a user in a user namespace whose `user.max_user_namespaces` is 0 (the
/// sysctl is per user namespace, so the host's stays as it is): it names the setting,
/// the step that failed and the fix; `up` fails without leaving anything.
#[test]
fn check_explains_a_host_that_forbids_user_namespaces() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    if !require_root("check_explains_a_host_that_forbids_user_namespaces") {
        return;
    }
    need("setpriv", "util-linux");
    // The inner shell is exec'd after the maps exist: only then is it uid 0 with
    // capabilities in its namespace (an exec as an unmapped uid drops them).
    let inner = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces || exit 9; \
         exec setpriv --reuid=4243 --regid=4243 --clear-groups --bounding-set=-all -- \
         env -i PATH=/usr/bin:/bin {} check",
        vpn_ns_bin()
    );
    let mut child = Command::new("unshare")
        .args([
            "--user",
            "--",
            "sh",
            "-c",
            "read go; exec sh -c \"$1\"",
            "sh",
            &inner,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let ns = |pid: String| fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let ours = ns("self".to_owned());
    expect_ok(wait_until(Duration::from_secs(5), || {
        match ns(child.id().to_string()) != ours {
            true => Ok(()),
            false => Err("unshare has not made its user namespace yet".to_owned()),
        }
    }));
    // Root maps the whole lower range into the child namespace (no newuidmap needed).
    for f in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{}/{f}", child.id()), "0 0 65536\n").expect(f);
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("FAIL: cannot create a user namespace"),
        "{out}"
    );
    assert!(out.contains("user.max_user_namespaces = 0"), "{out}");
    assert!(out.contains("sysctl -w user.max_user_namespaces="), "{out}");
}
