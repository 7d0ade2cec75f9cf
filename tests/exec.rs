//! Acceptance tests of `vpn-ns exec` over a real OpenVPN connection in a per-test
//! sandbox: identity and environment of the started command, DNS inside the
//! namespace (no leak to the host's resolver), a real headless browser fetching a page
//! that exists only behind the VPN, the `[exec]` policy, and `--wait`.
//! Needs root and /dev/net/tun (skipped loudly otherwise; under CI they must run).

use vpn_ns_testkit as common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::sandbox::Proc;
use common::*;

const CONNECT: Duration = Duration::from_secs(40);
/// Where `vpn-ns exec` reads connection files when invoked through sudo: the sandbox's
/// config directory is bind-mounted here, inside the sandbox only.
const SYSTEM_CONF: &str = "/etc/vpn-ns";
/// The DNS server behind the VPN (pushed by the test server) and the host's resolver.
const HOST_DNS: &str = UPLINK_ADDR;
const INSIDE_NAME: &str = "inside.vpn.example";
const OUTSIDE_NAME: &str = "outside.example";
const OUTSIDE_ADDR: &str = "192.0.2.99";
const PAGE_PORT: u16 = 8081;

static USERS: AtomicU32 = AtomicU32::new(0);

/// A user (and a supplementary group) made for one test, removed on drop.
struct TestUser {
    name: String,
    group: String,
    uid: u32,
    gid: u32,
    group_gid: u32,
}

fn host(cmd: &str, args: &[&str]) -> Result<String, String> {
    sandbox::run(Command::new(cmd).args(args))
}

impl TestUser {
    fn new() -> TestUser {
        let n = format!(
            "{}-{}",
            std::process::id() % 100_000,
            USERS.fetch_add(1, Ordering::SeqCst)
        );
        let (name, group) = (format!("vpnns-test-{n}"), format!("vpnns-tg-{n}"));
        host("groupadd", &[&group]).unwrap_or_else(|e| panic!("{e}"));
        // Constructed before useradd, so a failing useradd still removes the group.
        let mut u = TestUser {
            name: name.clone(),
            group: group.clone(),
            uid: 0,
            gid: 0,
            group_gid: 0,
        };
        host(
            "useradd",
            &["-m", "-U", "-s", "/bin/sh", "-G", &group, &name],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let id = |flag: &str, who: &str| -> u32 {
            host("id", &[flag, who])
                .unwrap_or_else(|e| panic!("{e}"))
                .trim()
                .parse()
                .expect("numeric id")
        };
        u.uid = id("-u", &name);
        u.gid = id("-g", &name);
        u.group_gid = host("getent", &["group", &group])
            .unwrap_or_else(|e| panic!("{e}"))
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("gid of the supplementary group");
        u
    }

    fn home(&self) -> PathBuf {
        PathBuf::from(format!("/home/{}", self.name))
    }

    /// A directory the user owns inside the sandbox's directory.
    fn owned_dir(&self, sb: &Sandbox, name: &str) -> PathBuf {
        let d = sb.dir().join(name);
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(self.uid), Some(self.gid)).unwrap();
        fs::set_permissions(sb.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        d
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Err(e) = host("userdel", &["-r", "-f", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = host("groupdel", &[&self.group]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Makes the sandbox's config directory the system one (inside the sandbox only):
/// through sudo, vpn-ns refuses --config-dir.
fn use_system_conf(sb: &Sandbox) {
    fs::create_dir_all(SYSTEM_CONF).expect("create the /etc/vpn-ns mount point");
    sb.must(&format!(
        "mount --bind {} {SYSTEM_CONF}",
        sb.config_dir().display()
    ));
}

/// `vpn-ns exec ARGS` in the sandbox host ns; `as_user` simulates `sudo` by that user,
/// None is a real root shell (with --config-dir).
fn exec_cmd(sb: &Sandbox, as_user: Option<&TestUser>, args: &[&str]) -> Command {
    let mut c = sb.vpn_ns();
    for v in [
        "SUDO_UID",
        "SUDO_GID",
        "SUDO_USER",
        "PKEXEC_UID",
        "DOAS_USER",
        "VPN_NS_CONFIG_DIR",
    ] {
        c.env_remove(v);
    }
    match as_user {
        Some(u) => {
            c.env("SUDO_UID", u.uid.to_string())
                .env("SUDO_GID", u.gid.to_string())
                .env("SUDO_USER", &u.name);
        }
        None => {
            c.arg("--config-dir").arg(sb.config_dir());
        }
    }
    c.arg("exec").args(args);
    c
}

fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&c)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and requires success; returns stdout.
fn ok(c: Command) -> String {
    let d = describe(&c);
    let o = output(c);
    assert!(
        o.status.success(),
        "`{d}` failed ({}): {}{}",
        o.status,
        text(&o.stderr),
        text(&o.stdout)
    );
    text(&o.stdout)
}

/// A sandbox with the server up and connection `work` connected through the hook.
fn connected(name: &str, conn_toml: &str) -> (Sandbox, VpnServer, OpenVpnClient) {
    let sb = Sandbox::new(name);
    let srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", conn_toml);
    let mut client = sb.start_client("work", &ClientOptions::default());
    client
        .wait_connected(CONNECT)
        .unwrap_or_else(|e| panic!("{e}"));
    (sb, srv, client)
}

fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn exec_runs_as_the_invoking_user_with_the_session_environment() {
    if !require_root("exec_runs_as_the_invoking_user_with_the_session_environment") {
        return;
    }
    let u = TestUser::new();
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
        grep -E '^(Uid|Gid|CapPrm|CapEff|CapAmb):' /proc/self/status | tr -s '\\t ' ' ' | sed 's/: /=/'; \
        echo regain=$(perl -MPOSIX -e 'print POSIX::setuid(0) ? q(yes) : q(no)'); \
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
        (
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path=/run/user/{}/bus", u.uid),
        ),
        ("PULSE_SERVER", "unix:/tmp/pulse-test".to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
        ("LC_TIME", "C".to_owned()),
        ("TERM", "xterm-test".to_owned()),
    ] {
        assert_eq!(value(&out, k), Some(v.as_str()), "{k} must be kept: {out}");
    }
    for k in ["LD_LIBRARY_PATH", "SECRET_TOKEN", "SUDO_UID", "SUDO_USER"] {
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

/// A directory on the real host that a test needs as a mount point; removed on drop
/// when the test created it.
struct MountPoint(Option<PathBuf>);

impl MountPoint {
    fn new(p: &str) -> MountPoint {
        let p = Path::new(p);
        if p.exists() {
            return MountPoint(None);
        }
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        MountPoint(Some(p.to_owned()))
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_dir(p);
        }
    }
}

#[test]
fn exec_resolves_only_through_the_vpn() {
    if !require_root("exec_resolves_only_through_the_vpn") {
        return;
    }
    let u = TestUser::new();
    let (sb, _srv, _client) = connected("exec-dns", "type = \"openvpn\"\n");
    // The VPN's DNS server, reachable only through the tunnel.
    sb.must(&format!(
        "ip -n {SERVER_NS} addr add {PUSHED_DNS}/32 dev lo"
    ));
    let pid = |n: &str| sb.dir().join(format!("{n}.pid")).display().to_string();
    let mut vpn_dns = sb.ns_cmd(SERVER_NS, "dnsmasq");
    vpn_dns.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--user=root",
        "--log-queries",
        "--log-facility=-",
        &format!("--pid-file={}", pid("dns-vpn")),
        &format!("--listen-address={PUSHED_DNS}"),
        &format!("--address=/{INSIDE_NAME}/{SERVICE_V4}"),
    ]);
    let _vpn_dns = sb.spawn("dnsmasq-vpn", vpn_dns);
    // The host's resolver, answering a name the VPN does not know.
    let mut host_dns = sb.cmd("dnsmasq");
    host_dns.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--user=root",
        "--log-queries",
        "--log-facility=-",
        &format!("--pid-file={}", pid("dns-host")),
        &format!("--listen-address={HOST_DNS}"),
        &format!("--address=/{OUTSIDE_NAME}/{OUTSIDE_ADDR}"),
    ]);
    let _host_dns = sb.spawn("dnsmasq-host", host_dns);
    let resolv = sb.dir().join("host-resolv.conf");
    fs::write(&resolv, format!("nameserver {HOST_DNS}\n")).unwrap();
    sb.must(&format!(
        "mount --bind {} /etc/resolv.conf",
        resolv.display()
    ));
    // A host resolver socket that must be hidden inside (nscd's place).
    let _nscd = MountPoint::new("/run/nscd");
    sb.must("mount -t tmpfs -o size=64k test-nscd /run/nscd && touch /run/nscd/socket");

    // The host resolver is live: the host finds the outside name.
    let host_answer = wait_until(Duration::from_secs(10), || {
        sandbox::run(sb.cmd("getent").args(["hosts", OUTSIDE_NAME]))
    })
    .unwrap_or_else(|e| panic!("the host-side resolver does not answer: {e}"));
    assert!(host_answer.contains(OUTSIDE_ADDR), "{host_answer}");

    let script = format!(
        "echo inside=$(getent hosts {INSIDE_NAME}); \
         getent hosts {OUTSIDE_NAME}; echo outside_rc=$?; \
         test -e /run/nscd/socket; echo nscd_socket_rc=$?; \
         touch /run/nscd/x 2>/dev/null; echo nscd_write_rc=$?"
    );
    let out = ok(exec_cmd(
        &sb,
        None,
        &["-u", &u.name, "work", "--", "sh", "-c", &script],
    ));
    assert!(
        value(&out, "inside").is_some_and(|v| v.starts_with(SERVICE_V4)),
        "{INSIDE_NAME} must resolve through the VPN's DNS: {out}"
    );
    assert_eq!(
        value(&out, "outside_rc"),
        Some("2"),
        "{OUTSIDE_NAME} must not resolve inside: {out}"
    );
    assert_eq!(
        value(&out, "nscd_socket_rc"),
        Some("1"),
        "/run/nscd must be hidden: {out}"
    );
    assert_ne!(
        value(&out, "nscd_write_rc"),
        Some("0"),
        "the mask must be read-only: {out}"
    );
    // Inside, /etc/resolv.conf and /etc/nsswitch.conf are the namespace's files.
    for f in ["resolv.conf", "nsswitch.conf"] {
        let inside = ok(exec_cmd(
            &sb,
            None,
            &["work", "--", "cat", &format!("/etc/{f}")],
        ));
        let expected = sb.read(&format!("/etc/netns/work/{f}")).expect(f);
        assert_eq!(inside, expected, "/etc/{f} inside");
    }
    assert!(
        sb.read("/etc/netns/work/resolv.conf")
            .unwrap()
            .contains(&format!("nameserver {PUSHED_DNS}"))
    );
    assert!(
        sb.read("/etc/netns/work/nsswitch.conf")
            .unwrap()
            .contains("hosts: files dns\n")
    );
    // The host's view is unchanged.
    assert_eq!(
        sb.must("cat /etc/resolv.conf"),
        format!("nameserver {HOST_DNS}\n")
    );
}

/// An HTTP server behind the VPN that logs each request line with the peer address.
fn start_page_server(sb: &Sandbox) -> (Proc, PathBuf) {
    let log = sb.dir().join("page-requests.txt");
    let script = sb.dir().join("page.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nread -r line\necho \"$line from $SOCAT_PEERADDR\" >> {log}\n\
             while read -r h; do case \"$h\" in ''|\"$(printf '\\r')\") break;; esac; done\n\
             printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/html\\r\\nConnection: close\\r\\n\\r\\n'\n\
             printf '<html><body><h1>only behind the VPN</h1></body></html>\\n'\n",
            log = log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = sb.ns_cmd(SERVER_NS, "socat");
    c.arg(format!(
        "TCP4-LISTEN:{PAGE_PORT},bind={SERVICE_V4},reuseaddr,fork"
    ))
    .arg(format!("EXEC:{}", script.display()));
    let p = sb.spawn("page-server", c);
    wait_until(Duration::from_secs(10), || {
        sandbox::run(sb.ns_cmd(SERVER_NS, "curl").args([
            "-sS",
            "--max-time",
            "2",
            &format!("http://{SERVICE_V4}:{PAGE_PORT}/probe"),
        ]))
    })
    .unwrap_or_else(|e| panic!("page server not answering: {e}"));
    (p, log)
}

#[test]
fn headless_browser_fetches_a_page_only_behind_the_vpn() {
    if !require_root("headless_browser_fetches_a_page_only_behind_the_vpn") {
        return;
    }
    let u = TestUser::new();
    let (sb, _srv, _client) = connected("exec-browser", "type = \"openvpn\"\n");
    let (_page, log) = start_page_server(&sb);
    let url = format!(
        "http://{SERVICE_V4}:{PAGE_PORT}/vpn-page-{}",
        std::process::id()
    );
    let work = u.owned_dir(&sb, "browser");
    let profile = work.join("profile");
    let shot = work.join("shot.png");
    fs::create_dir_all(&profile).unwrap();
    std::os::unix::fs::chown(&profile, Some(u.uid), Some(u.gid)).unwrap();
    let (profile_s, shot_s) = (profile.display().to_string(), shot.display().to_string());
    let c = exec_cmd(
        &sb,
        None,
        &[
            "-u",
            &u.name,
            "work",
            "--",
            "firefox-esr",
            "--headless",
            "--no-remote",
            "--profile",
            &profile_s,
            "--screenshot",
            &shot_s,
            &url,
        ],
    );
    let mut browser = sb.spawn("firefox", c);
    let status = browser
        .wait_exit(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("firefox did not finish in 180 s: {}", browser.log_text()));
    assert!(
        status.success(),
        "firefox failed ({status}): {}",
        browser.log_text()
    );
    let png = fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot {shot_s}: {e}; {}", browser.log_text()));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {shot_s}");
    assert_eq!(
        fs::metadata(&shot).unwrap().uid(),
        u.uid,
        "the screenshot is written as the user"
    );
    let path = url
        .split(&format!(":{PAGE_PORT}"))
        .nth(1)
        .unwrap()
        .to_owned();
    let requests = fs::read_to_string(&log).unwrap_or_default();
    let fetched: Vec<&str> = requests
        .lines()
        .filter(|l| l.contains(&format!("GET {path} ")))
        .collect();
    assert_eq!(
        fetched.len(),
        1,
        "the browser must fetch the page once: {requests}"
    );
    assert!(
        fetched[0].contains("from 100.64.0."),
        "fetched through the tunnel: {requests}"
    );
    // The same URL from the host namespace: no route, nothing reaches the server.
    let host = output({
        let mut c = sb.cmd("curl");
        c.args(["-sS", "--max-time", "5", &url]);
        c
    });
    assert!(
        !host.status.success(),
        "the page must not be reachable from the host namespace"
    );
    let after = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        after
            .lines()
            .filter(|l| l.contains(&format!("GET {path} ")))
            .count(),
        1,
        "{after}"
    );
}

#[test]
fn exec_policy_refuses_users_not_listed() {
    if !require_root("exec_policy_refuses_users_not_listed") {
        return;
    }
    let u = TestUser::new();
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
    let u = TestUser::new();
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
