//! Publishing for a user's own connection (issue 18 with issue 15's features): as a
//! normal user created by the test, with no capability (setpriv), `[[publish]]`,
//! `[[host-access]]` and ad hoc `vpn-ns publish`/`unpublish` relay across the boundary
//! of the user's namespace through the keeper and its host-side socket helper, against
//! a real wireguard-go peer in the test's sandbox.

use std::time::Duration;

use vpn_ns_testkit::exec::TestUser;
use vpn_ns_testkit::sandbox::{self, Proc};
use vpn_ns_testkit::user_session::*;
use vpn_ns_testkit::wireguard::*;
use vpn_ns_testkit::*;

const PUB: u16 = 18080;
const ADHOC: u16 = 18081;
const HOST_SVC: u16 = 11143;
const HOST_OTHER: u16 = 11144;
const UDP: u16 = 15353;

/// A TCP service answering `word` on 127.0.0.1:`port` of the sandbox's host namespace.
fn host_service(sb: &Sandbox, port: u16, word: &str) -> Proc {
    let mut c = sb.cmd("socat");
    c.arg(format!("TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg(format!("SYSTEM:echo {word}"));
    let p = sb.spawn(&format!("host-{port}"), c);
    expect_ok(wait_until(WG_SETTLE, || {
        sb.tcp_get(None, "127.0.0.1", port)
    }));
    p
}

/// The first line a program inside gets from 127.0.0.1:`port` (inside's loopback).
fn from_inside(s: &Session, port: u16) -> Result<String, String> {
    let target = format!("TCP4:127.0.0.1:{port},connect-timeout=2");
    sandbox::run(&mut s.vpn_ns(&[
        "exec", "home", "--", "socat", "-T2", "-u", &target, "STDOUT",
    ]))
    .map(|o| o.trim().to_owned())
    .and_then(|o| {
        if o.is_empty() {
            Err("no answer".into())
        } else {
            Ok(o)
        }
    })
}

/// Processes of `uid` (any namespace), as "pid comm".
fn procs_of(uid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|st| {
                st.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    == Some(uid.to_string().as_str())
            }) && !gone(*p)
        })
        .map(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            format!("{p} {}", comm.trim())
        })
        .collect()
}

fn conn_file(s: &Session) {
    s.write(
        "home.toml",
        &format!(
            "type = \"wireguard\"\n\n[[publish]]\nlisten = \"127.0.0.1:{PUB}\"\n\n\
             [[host-access]]\nlisten = {HOST_SVC}\ntarget = {HOST_SVC}\n"
        ),
        0o644,
    );
}

#[test]
fn a_user_publishes_ports_both_ways_without_privilege() {
    if !require_root("a_user_publishes_ports_both_ways_without_privilege") {
        return;
    }
    let sb = Sandbox::new("unpriv-pub");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let _lab = lab(&sb, &s);
    conn_file(&s);
    let _svc = host_service(&sb, HOST_SVC, "host-ok");
    let _other = host_service(&sb, HOST_OTHER, "other-ok");

    s.ok(s.vpn_ns(&["up", "home"]));
    let keeper = s.keeper_pid();
    let ns = net_ns_of(keeper);
    // The keeper's helper: the user's, in the host namespace, nothing else.
    let helpers: Vec<String> = procs_of(user.uid)
        .into_iter()
        .filter(|p| p.ends_with(" vpn-ns-hostsock"))
        .collect();
    assert_eq!(helpers.len(), 1, "one host-side helper: {helpers:?}");
    let helper: u32 = helpers[0].split(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        net_ns_of(helper),
        net_ns_of(sb.pid()),
        "helper in the host namespace"
    );

    // A service inside (on the namespace's own loopback), fetched from the host through
    // the file's [[publish]].
    let _inside = sb.spawn(
        "inside-svc",
        s.vpn_ns(&[
            "exec",
            "home",
            "--",
            "socat",
            &format!("TCP4-LISTEN:{PUB},bind=127.0.0.1,reuseaddr,fork"),
            "SYSTEM:echo inside-ok",
        ]),
    );
    let got = wait_until(WG_SETTLE, || sb.tcp_get(None, "127.0.0.1", PUB));
    assert_eq!(got.as_deref(), Ok("inside-ok"), "{}", sb.diagnostics());

    // A program inside reaches the host's service through [[host-access]], and only it:
    // the host's other service on its loopback is out of reach.
    assert_eq!(from_inside(&s, HOST_SVC).as_deref(), Ok("host-ok"));
    assert!(
        from_inside(&s, HOST_OTHER).is_err(),
        "an unpublished host port answered"
    );

    // Ad hoc, both ways.
    let out = s.ok(s.vpn_ns(&["publish", "home", &format!("{ADHOC}:{PUB}")]));
    assert!(out.contains("published"), "{out}");
    assert_eq!(
        sb.tcp_get(None, "127.0.0.1", ADHOC).as_deref(),
        Ok("inside-ok")
    );
    s.ok(s.vpn_ns(&["publish", "--host-access", "home", &HOST_OTHER.to_string()]));
    assert_eq!(from_inside(&s, HOST_OTHER).as_deref(), Ok("other-ok"));
    // UDP: a datagram service inside, published on the host's ::1 (the target is always
    // 127.0.0.1 on the other side).
    let _udp = sb.spawn(
        "inside-udp",
        s.vpn_ns(&[
            "exec",
            "home",
            "--",
            "socat",
            &format!("UDP4-RECVFROM:{UDP},bind=127.0.0.1,fork"),
            "SYSTEM:echo udp-ok",
        ]),
    );
    s.ok(s.vpn_ns(&["publish", "home", &format!("[::1]:{UDP}:{UDP}/udp")]));
    let got = wait_until(WG_SETTLE, || {
        sandbox::run(
            sb.cmd("sh")
                .args(["-c", &format!("echo ping | socat -T2 - UDP6:[::1]:{UDP}")]),
        )
        .map(|o| o.trim().to_owned())
        .and_then(|o| if o == "udp-ok" { Ok(o) } else { Err(o) })
    });
    assert_eq!(got.as_deref(), Ok("udp-ok"), "{}", sb.diagnostics());
    s.ok(s.vpn_ns(&["unpublish", "home", &format!("[::1]:{UDP}/udp")]));

    let st = s.ok(s.vpn_ns(&["status", "home"]));
    for want in [
        format!("[[publish]] listen 127.0.0.1:{PUB}/tcp -> target 127.0.0.1:{PUB}"),
        format!("[[publish]] listen 127.0.0.1:{ADHOC}/tcp -> target 127.0.0.1:{PUB}"),
        format!("[[host-access]] listen 127.0.0.1:{HOST_OTHER}/tcp"),
        format!("[[host-access]] listen 127.0.0.1:{HOST_SVC}/tcp"),
    ] {
        assert!(st.contains(&want), "{want} missing in status: {st}");
    }
    let json = s.ok(s.vpn_ns(&["--json", "status", "home"]));
    assert!(
        json.contains("\"published\"") && json.contains("\"host-access\""),
        "{json}"
    );

    // Unpublish removes the listeners.
    s.ok(s.vpn_ns(&["unpublish", "home", &ADHOC.to_string()]));
    s.ok(s.vpn_ns(&[
        "unpublish",
        "--host-access",
        "home",
        &HOST_OTHER.to_string(),
    ]));
    assert!(
        sb.tcp_get(None, "127.0.0.1", ADHOC).is_err(),
        "unpublished port answered"
    );
    assert!(
        from_inside(&s, HOST_OTHER).is_err(),
        "unpublished host-access answered"
    );
    let st = s.ok(s.vpn_ns(&["status", "home"]));
    assert!(!st.contains(&format!(":{ADHOC}/")), "{st}");

    // Errors: a taken host address, a privileged port (no CAP_NET_BIND_SERVICE on
    // the host), nothing published there, a bad spec.
    let taken = s.run(s.vpn_ns(&["publish", "home", &HOST_SVC.to_string()]));
    assert_eq!(taken.status.code(), Some(1), "{taken:?}");
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("in use"),
        "{taken:?}"
    );
    let low = s.run(s.vpn_ns(&["publish", "home", "80"]));
    assert_eq!(low.status.code(), Some(1), "{low:?}");
    assert!(
        String::from_utf8_lossy(&low.stderr).contains("denied"),
        "{low:?}"
    );
    let none = s.run(s.vpn_ns(&["unpublish", "home", "9999"]));
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    let bad = s.run(s.vpn_ns(&["publish", "home", "host:80"]));
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");

    // Down: no listener, no process of the user, nothing in the runtime directory.
    s.ok(s.vpn_ns(&["down", "home"]));
    expect_ok(wait_until(WG_SETTLE, || {
        match procs_of(user.uid).as_slice() {
            [] => Ok(()),
            p => Err(format!("processes of the user left: {p:?}")),
        }
    }));
    assert!(procs_in(&ns).is_empty());
    assert!(
        sb.tcp_get(None, "127.0.0.1", PUB).is_err(),
        "published port left"
    );
    assert_eq!(s.run_dir_entries(), Vec::<String>::new());
    let after = s.run(s.vpn_ns(&["publish", "home", &ADHOC.to_string()]));
    assert_eq!(
        after.status.code(),
        Some(1),
        "publish on a down connection: {after:?}"
    );
}

#[test]
fn a_dropped_user_connection_closes_its_relays() {
    if !require_root("a_dropped_user_connection_closes_its_relays") {
        return;
    }
    let sb = Sandbox::new("unpriv-pub-drop");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let _lab = lab(&sb, &s);
    conn_file(&s);
    let _svc = host_service(&sb, HOST_SVC, "host-ok");
    s.ok(s.vpn_ns(&["up", "home"]));
    let keeper = s.keeper_pid();
    let _inside = sb.spawn(
        "inside-svc",
        s.vpn_ns(&[
            "exec",
            "home",
            "--",
            "socat",
            &format!("TCP4-LISTEN:{PUB},bind=127.0.0.1,reuseaddr,fork"),
            "SYSTEM:echo inside-ok",
        ]),
    );
    expect_ok(wait_until(WG_SETTLE, || sb.tcp_get(None, "127.0.0.1", PUB)));
    assert!(sys::send_signal(keeper, libc::SIGKILL));
    expect_ok(wait_until(WG_SETTLE, || match gone(keeper) {
        true => Ok(()),
        false => Err("keeper still there".to_owned()),
    }));
    // The helper dies with the keeper; the published port and host-access are gone
    // while the program inside still runs.
    expect_ok(wait_until(Duration::from_secs(3), || {
        match procs_of(user.uid)
            .iter()
            .find(|p| p.ends_with(" vpn-ns-hostsock"))
        {
            None => Ok(()),
            Some(p) => Err(format!("helper left: {p}")),
        }
    }));
    assert!(
        sb.tcp_get(None, "127.0.0.1", PUB).is_err(),
        "published port outlived the keeper"
    );
    s.ok(s.vpn_ns(&["down", "home"]));
    assert_eq!(s.run_dir_entries(), Vec::<String>::new());
}

#[test]
fn a_taken_published_address_fails_the_users_up() {
    if !require_root("a_taken_published_address_fails_the_users_up") {
        return;
    }
    let sb = Sandbox::new("unpriv-pub-taken");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let _lab = lab(&sb, &s);
    conn_file(&s);
    let _squatter = host_service(&sb, PUB, "squatter");
    let up = s.run(s.vpn_ns(&["up", "home"]));
    let err = String::from_utf8_lossy(&up.stderr);
    assert_eq!(up.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("[[publish]] listen 127.0.0.1:{PUB}/tcp")) && err.contains("in use"),
        "{err}"
    );
    expect_ok(wait_until(WG_SETTLE, || {
        match procs_of(user.uid).as_slice() {
            [] => Ok(()),
            p => Err(format!("processes of the user left: {p:?}")),
        }
    }));
    let left: Vec<String> = s
        .run_dir_entries()
        .into_iter()
        .filter(|e| !e.ends_with(".log"))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "only the log stays after a failed up"
    );
}
