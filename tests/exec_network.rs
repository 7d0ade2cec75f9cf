//! Acceptance tests of `vpn-ns exec` and the network: DNS inside the namespace goes
//! only to the VPN's server (no leak to the host's resolver or its sockets), and a real
//! headless browser reaches a page that exists only behind the VPN.
//! Needs root and /dev/net/tun (skipped loudly otherwise; under CI they must run).

use vpn_ns_testkit as common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::exec::*;
use common::sandbox::{self, Proc};
use common::*;

/// The DNS server behind the VPN (pushed by the test server) and the host's resolver.
const HOST_DNS: &str = UPLINK_ADDR;
const INSIDE_NAME: &str = "inside.vpn.example";
const OUTSIDE_NAME: &str = "outside.example";
const OUTSIDE_ADDR: &str = "192.0.2.99";
const PAGE_PORT: u16 = 8081;

/// The two resolvers: dnsmasq behind the VPN (on the pushed DNS address, which lives
/// on `lo` of the server namespace) knowing only INSIDE_NAME, and dnsmasq on the sandbox
/// host knowing only OUTSIDE_NAME.
struct Resolvers {
    _vpn: Proc,
    _host: Proc,
}

fn start_resolvers(sb: &Sandbox) -> Resolvers {
    sb.must(&format!(
        "ip -n {SERVER_NS} addr add {PUSHED_DNS}/32 dev lo"
    ));
    let vpn = common::user_session::dnsmasq(
        sb,
        sb.ns_cmd(SERVER_NS, "dnsmasq"),
        "dnsmasq-vpn",
        PUSHED_DNS,
        &[format!("/{INSIDE_NAME}/{SERVICE_V4}")],
    );
    let host = common::user_session::dnsmasq(
        sb,
        sb.cmd("dnsmasq"),
        "dnsmasq-host",
        HOST_DNS,
        &[format!("/{OUTSIDE_NAME}/{OUTSIDE_ADDR}")],
    );
    Resolvers {
        _vpn: vpn,
        _host: host,
    }
}

/// The host resolver is live: the sandbox host finds the outside name.
fn assert_host_resolves(sb: &Sandbox) {
    let answer = wait_until(Duration::from_secs(10), || {
        sandbox::run(sb.cmd("getent").args(["hosts", OUTSIDE_NAME]))
    })
    .unwrap_or_else(|e| panic!("the host-side resolver does not answer: {e}"));
    assert!(answer.contains(OUTSIDE_ADDR), "{answer}");
}

/// Lookups and the resolver directory `mask` as seen by `vpn-ns exec -u USER`; returns
/// the script's output and vpn-ns's stderr.
fn dns_inside(sb: &Sandbox, u: &TestUser, mask: &str) -> (String, String) {
    let script = format!(
        "echo inside=$(getent hosts {INSIDE_NAME}); \
         getent hosts {OUTSIDE_NAME}; echo outside_rc=$?; \
         echo mask=$(ls -A {mask}); \
         touch {mask}/x 2>/dev/null; echo mask_write_rc=$?"
    );
    let o = output(exec_cmd(
        sb,
        None,
        &["-u", &u.name, "work", "--", "sh", "-c", &script],
    ));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "exec failed ({}): {err}{out}", o.status);
    assert!(
        value(&out, "inside").is_some_and(|v| v.starts_with(SERVICE_V4)),
        "{INSIDE_NAME} must resolve through the VPN's DNS: {out}"
    );
    assert_eq!(
        value(&out, "outside_rc"),
        Some("2"),
        "{OUTSIDE_NAME} must not resolve inside: {out}"
    );
    assert_ne!(
        value(&out, "mask_write_rc"),
        Some("0"),
        "{mask} must be read-only inside: {out}"
    );
    (out, err)
}

/// Inside, /etc/resolv.conf and /etc/nsswitch.conf are the namespace's files.
fn assert_etc_overlaid(sb: &Sandbox) {
    for f in ["resolv.conf", "nsswitch.conf"] {
        let inside = ok(exec_cmd(
            sb,
            None,
            &["work", "--", "cat", &format!("/etc/{f}")],
        ));
        let expected = sb.read(&format!("/etc/netns/work/{f}")).expect(f);
        assert_eq!(inside, expected, "/etc/{f} inside");
    }
    let resolv = sb.read("/etc/netns/work/resolv.conf").unwrap();
    assert!(
        resolv.contains(&format!("nameserver {PUSHED_DNS}")),
        "{resolv}"
    );
    let nss = sb.read("/etc/netns/work/nsswitch.conf").unwrap();
    assert!(nss.contains("hosts: files dns\n"), "{nss}");
}

#[test]
fn exec_resolves_only_through_the_vpn() {
    if !require_root("exec_resolves_only_through_the_vpn") {
        return;
    }
    let u = TestUser::create();
    let (sb, _srv, _client) = connected("exec-dns", "type = \"openvpn\"\n");
    let _dns = start_resolvers(&sb);
    let resolv = sb.dir().join("host-resolv.conf");
    fs::write(&resolv, format!("nameserver {HOST_DNS}\n")).unwrap();
    sb.must(&format!(
        "mount --bind {} /etc/resolv.conf",
        resolv.display()
    ));
    // A host resolver socket that must be hidden inside (nscd's place).
    let _nscd = MountPoint::new("/run/nscd");
    sb.must("mount -t tmpfs -o size=64k test-nscd /run/nscd && touch /run/nscd/socket");
    assert_host_resolves(&sb);

    let (out, _) = dns_inside(&sb, &u, "/run/nscd");
    assert_eq!(
        value(&out, "mask"),
        Some(""),
        "/run/nscd must be hidden: {out}"
    );
    assert_etc_overlaid(&sb);
    // The host's view is unchanged.
    assert_eq!(
        sb.must("cat /etc/resolv.conf"),
        format!("nameserver {HOST_DNS}\n")
    );
}

/// The common desktop layout: /etc/resolv.conf is a symlink to systemd-resolved's stub
/// file, whose directory also holds resolved's socket. Inside, the link must lead to the
/// VPN's resolv.conf and the socket must be gone.
#[test]
fn exec_overlays_a_resolv_conf_symlinked_into_systemd_resolved() {
    if !require_root("exec_overlays_a_resolv_conf_symlinked_into_systemd_resolved") {
        return;
    }
    let u = TestUser::create();
    let _resolved = MountPoint::new("/run/systemd/resolve");
    let sb = Sandbox::new("exec-resolved");
    // Inside the sandbox only: /etc becomes a copy with resolved's symlink (and a fresh
    // tmpfs on /etc/netns again), and resolved's directory holds a stub file pointing
    // to the host resolver and a stand-in for its socket.
    let accounts = accounts_lock();
    sb.must(&format!(
        "set -e
         cp -a /etc {d}/etc
         ln -sfn /run/systemd/resolve/stub-resolv.conf {d}/etc/resolv.conf
         mount --bind {d}/etc /etc
         mount -t tmpfs -o mode=0755,size=16m vpn-ns-test /etc/netns
         mount -t tmpfs -o mode=0755,size=64k test-resolved /run/systemd/resolve
         echo 'nameserver {HOST_DNS}' > /run/systemd/resolve/stub-resolv.conf
         touch /run/systemd/resolve/io.systemd.Resolve",
        d = sb.dir().display()
    ));
    drop(accounts);
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    let mut client = sb.start_client("work", &ClientOptions::default());
    client
        .wait_connected(CONNECT)
        .unwrap_or_else(|e| panic!("{e}"));
    let _dns = start_resolvers(&sb);
    assert_host_resolves(&sb);

    let (out, err) = dns_inside(&sb, &u, "/run/systemd/resolve");
    assert_eq!(
        value(&out, "mask"),
        Some("stub-resolv.conf"),
        "only the overlaid stub file may be visible in resolved's directory: {out}"
    );
    assert!(!err.contains("dangling"), "{err}");
    assert_etc_overlaid(&sb);
    let link = ok(exec_cmd(
        &sb,
        None,
        &["work", "--", "readlink", "/etc/resolv.conf"],
    ));
    assert_eq!(link.trim(), "/run/systemd/resolve/stub-resolv.conf");
    // The sandbox host still resolves through resolved's stub file.
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
    need("firefox-esr", "firefox-esr");
    need("curl", "curl");
    let u = TestUser::create();
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
