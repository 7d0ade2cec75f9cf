//! The built-in WireGuard data plane over time and in other set-ups: supervision by
//! `up --foreground`, rekey after the key lifetime, `netns-isolate = false`. Helpers in
//! tests/common/.

mod common;

use common::*;
use vpn_ns_testkit::sandbox::run;
use vpn_ns_testkit::wireguard::*;
use vpn_ns_testkit::*;

/// `up --foreground` supervises the data-plane process: when it dies (SIGKILL, no
/// chance to clean up), the foreground vpn-ns takes the connection down and leaves
/// nothing, socket included.
#[test]
fn foreground_supervises_the_builtin_process() {
    if !require_root("foreground_supervises_the_builtin_process") {
        return;
    }
    let sb = Sandbox::new("wgb-fg");
    let client = genkeys();
    let s1 = start_wg_server(
        &sb,
        &WgServerSpec {
            n: 1,
            tunnel_v4: "100.64.0.1",
            tunnel_v6: None,
            services: &[(SERVICE_V4, "hello-fg")],
            psk: None,
            builtin: false,
        },
        &client.public,
    );
    let file = write_wg_file(
        &sb,
        "wgbf0",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0\n",
            client.private, s1.keys.public, s1.endpoint
        ),
    );
    builtin_conn(&sb, "wgbf", &file);
    let mut cmd = sb.vpn_ns();
    cmd.arg("--config-dir")
        .arg(sb.config_dir())
        .args(["up", "wgbf", "--foreground"]);
    let mut fg = sb.spawn("vpn-ns-foreground", cmd);
    answers(&sb, "wgbf", SERVICE_V4, "hello-fg");
    let pids = builtin_pids("wgbf0");
    assert_eq!(pids.len(), 1, "{pids:?}");
    // Its own session: a signal to vpn-ns's process group does not reach it.
    let sid = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        sid(pids[0]),
        pids[0].to_string(),
        "wg-builtin leads its own session"
    );
    // SAFETY: kill with a pid we just read and a valid signal.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    let status = fg.wait_exit(WG_SETTLE).expect("--foreground ended");
    assert!(status.success(), "{status}: {}", fg.log_text());
    assert!(
        fg.log_text().contains("taking the connection down"),
        "{}",
        fg.log_text()
    );
    assert_nothing_left(&sb, "wgbf", "wgbf0");
}

/// Rekey after the key lifetime, by boringtun's own timers (REKEY_AFTER_TIME = 120 s;
/// the library has no knob to shorten it, so this test takes about two minutes, most
/// of it waiting): the session with wireguard-go is renewed and traffic goes on.
#[test]
fn builtin_rekeys_after_the_key_lifetime() {
    if !require_root("builtin_rekeys_after_the_key_lifetime") {
        return;
    }
    let sb = Sandbox::new("wgb-rekey");
    let client = genkeys();
    let s1 = start_wg_server(
        &sb,
        &WgServerSpec {
            n: 1,
            tunnel_v4: "100.64.0.1",
            tunnel_v6: None,
            services: &[(SERVICE_V4, "hello-rekey")],
            psk: None,
            builtin: false,
        },
        &client.public,
    );
    let file = write_wg_file(
        &sb,
        "wgr0",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 203.0.113.0/25\n\
             PersistentKeepalive = 1\n",
            client.private, s1.keys.public, s1.endpoint
        ),
    );
    builtin_conn(&sb, "wgr", &file);
    assert_success("vpn-ns up wgr", &vpn_ns(&sb, &["up", "wgr"]));
    answers(&sb, "wgr", SERVICE_V4, "hello-rekey");
    let handshake = || -> u64 {
        run(sb
            .ns_cmd("srv1", "wg")
            .args(["show", "wgs1", "latest-handshakes"]))
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
    };
    let first = handshake();
    assert!(first > 0, "no first handshake");
    // A session is renewed when data is sent on a key older than the lifetime
    // (keepalives alone do not count): keep requests going while waiting.
    let renewed = wait_until(std::time::Duration::from_secs(160), || {
        let _ = sb.tcp_get(Some("wgr"), SERVICE_V4, SERVICE_PORT);
        let now = handshake();
        if now > first {
            Ok(now)
        } else {
            Err(format!("still {first}"))
        }
    });
    let next = renewed.expect("no new handshake within 160 s");
    assert!(
        next - first >= 115,
        "rekeyed after {} s, not after the key lifetime",
        next - first
    );
    answers(&sb, "wgr", SERVICE_V4, "hello-rekey");
    assert_success("vpn-ns down wgr", &vpn_ns(&sb, &["down", "wgr"]));
    assert_nothing_left(&sb, "wgr", "wgr0");
}

/// `netns-isolate = false`: the built-in tun is created in the host namespace (no
/// namespace at all), carries traffic there, and goes at down.
#[test]
fn builtin_without_isolation() {
    if !require_root("builtin_without_isolation") {
        return;
    }
    let sb = Sandbox::new("wgb-host");
    let client = genkeys();
    let s1 = start_wg_server(
        &sb,
        &WgServerSpec {
            n: 1,
            tunnel_v4: "100.64.0.1",
            tunnel_v6: None,
            services: &[(SERVICE_V4, "hello-host")],
            psk: None,
            builtin: false,
        },
        &client.public,
    );
    let file = write_wg_file(
        &sb,
        "wgh0",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/24\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 203.0.113.0/25\n",
            client.private, s1.keys.public, s1.endpoint
        ),
    );
    sb.write_conn(
        "wgh",
        &format!(
            "type = \"wireguard\"\nnetns-isolate = false\n[wireguard]\nconfig = \"{}\"\nbackend = \"builtin\"\n",
            file.display()
        ),
    );
    assert_success("vpn-ns up wgh", &vpn_ns(&sb, &["up", "wgh"]));
    assert!(sb.links_in(None).contains(&"wgh0".to_owned()));
    let got = wait_until(WG_SETTLE, || sb.tcp_get(None, SERVICE_V4, SERVICE_PORT));
    assert_eq!(got.as_deref(), Ok("hello-host"), "{}", sb.diagnostics());
    assert_success("vpn-ns down wgh", &vpn_ns(&sb, &["down", "wgh"]));
    assert_nothing_left(&sb, "wgh", "wgh0");
}
