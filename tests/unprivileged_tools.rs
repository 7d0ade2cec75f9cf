//! Unprivileged mode, the tools around a user connection: root's `status --json` lists
//! it read-only, `vpn-ns wg` shows it in wg's own format, `exec --wait` waits for it,
//! `up --foreground` keeps it (and takes it down on SIGTERM), `exec -u` is refused
//! with the reason. Every vpn-ns call of the user runs with no capability (setpriv).

use std::time::{Duration, Instant};

use vpn_ns_testkit::exec::{MountPoint, TestUser, need};
use vpn_ns_testkit::sandbox::Proc;
use vpn_ns_testkit::user_session::*;
use vpn_ns_testkit::wireguard::*;
use vpn_ns_testkit::*;

fn wait_gone(pid: u32) {
    expect_ok(wait_until(WG_SETTLE, || match gone(pid) {
        true => Ok(()),
        false => Err(format!("pid {pid} still there")),
    }));
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn root_status_json_lists_a_users_connection_read_only() {
    if !require_root("root_status_json_lists_a_users_connection_read_only") {
        return;
    }
    let sb = Sandbox::new("unpriv-rootview");
    let user = TestUser::create();
    // /run/user/<uid>, as logind makes it, where root looks for users' connections.
    let _mp = MountPoint::new("/run/user");
    sb.must("mount -t tmpfs -o mode=0755,size=4m vpn-ns-test /run/user");
    let run = format!("/run/user/{}", user.uid);
    sb.must(&format!(
        "mkdir -m 0700 {run} && chown {}:{} {run}",
        user.uid, user.gid
    ));
    let mut s = Session::new(&sb, &user);
    s.runtime = run.into();
    let _lab = lab(&sb, &s);
    s.ok(s.vpn_ns(&["up", "home"]));
    let keeper = s.keeper_pid();

    let json = sandbox_ok(&sb, &["--json", "status"]);
    for want in [
        "\"user_connections\": [".to_owned(),
        format!("\"user\": \"{}\"", user.name),
        format!("\"uid\": {}", user.uid),
        "\"conn\": \"home\"".to_owned(),
        "\"state\": \"up\"".to_owned(),
        format!("\"keeper_pid\": {keeper}"),
        "\"iface\": \"home\"".to_owned(),
    ] {
        assert!(json.contains(&want), "{want} missing: {json}");
    }
    let text = sandbox_ok(&sb, &["status"]);
    assert!(
        text.contains(&format!("{}/home: up, home in a user namespace", user.name)),
        "{text}"
    );
    // Read-only: root's view changed nothing of the user's.
    assert_eq!(s.keeper_pid(), keeper);

    // Stale once the keeper is gone; nothing listed after down.
    assert!(sys::send_signal(keeper, libc::SIGKILL));
    wait_gone(keeper);
    let json = sandbox_ok(&sb, &["--json", "status"]);
    assert!(json.contains("\"state\": \"stale\""), "{json}");
    s.ok(s.vpn_ns(&["down", "home"]));
    let json = sandbox_ok(&sb, &["--json", "status"]);
    assert!(json.contains("\"user_connections\": []"), "{json}");
}

fn sandbox_ok(sb: &Sandbox, args: &[&str]) -> String {
    let mut c = sb.vpn_ns();
    c.args(args);
    let o = c.output().unwrap();
    assert!(o.status.success(), "vpn-ns {args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn wg_shows_a_users_connection_in_wgs_own_format() {
    if !require_root("wg_shows_a_users_connection_in_wgs_own_format") {
        return;
    }
    need("wg", "wireguard-tools");
    let sb = Sandbox::new("unpriv-wg");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let lab = lab(&sb, &s);
    s.ok(s.vpn_ns(&["up", "home"]));
    // A handshake: verify waits for it.
    s.ok(s.vpn_ns(&["verify", "home"]));

    let show = s.ok(s.vpn_ns(&["wg", "home"]));
    for want in [
        "interface: home".to_owned(),
        "public key: ".to_owned(),
        "listening port: ".to_owned(),
        format!("peer: {}", lab.server.keys.public),
        format!("endpoint: {}", lab.server.endpoint),
        "allowed ips: 0.0.0.0/0, ::/0".to_owned(),
        "latest handshake: ".to_owned(),
        "transfer: ".to_owned(),
    ] {
        assert!(show.contains(&want), "{want} missing: {show}");
    }
    // wg's other views, arguments passed as they are.
    let hs = s.ok(s.vpn_ns(&["wg", "home", "show", "home", "latest-handshakes"]));
    let ts: u64 = hs
        .trim()
        .strip_prefix(&format!("{}\t", lab.server.keys.public))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{hs}"));
    assert!(ts > 0, "{hs}");
    // Plain `wg` cannot see it: that is why the subcommand exists.
    let plain = s.run(s.cmd("wg", &["show", "interfaces"]));
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("home"));
    // Root's connections use wg directly: a usage error, saying so.
    let mut c = sb.vpn_ns();
    c.args(["wg", "home"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("wg show"), "{}", stderr(&o));

    s.ok(s.vpn_ns(&["down", "home"]));
    let after = s.run(s.vpn_ns(&["wg", "home"]));
    assert_eq!(after.status.code(), Some(1), "{}", stderr(&after));
    assert!(stderr(&after).contains("not up"), "{}", stderr(&after));
}

#[test]
fn exec_wait_up_foreground_and_exec_u_for_a_user() {
    if !require_root("exec_wait_up_foreground_and_exec_u_for_a_user") {
        return;
    }
    let sb = Sandbox::new("unpriv-fg");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let _lab = lab(&sb, &s);
    s.write(
        "home.toml",
        "type = \"wireguard\"\nnetns-timeout = 3000\n",
        0o644,
    );

    // Not up: --wait gives up after netns-timeout, exit 1.
    let t = Instant::now();
    let o = s.run(s.vpn_ns(&["exec", "--wait", "home", "--", "true"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        t.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        t.elapsed()
    );
    assert!(
        stderr(&o).contains("did not come up within 3000 ms"),
        "{}",
        stderr(&o)
    );

    // A waiter started before the up runs its command once the connection is up.
    let mut waiter = sb.spawn(
        "waiter",
        s.vpn_ns(&[
            "exec",
            "--wait",
            "home",
            "--",
            "sh",
            "-c",
            "ip -o link | cut -d' ' -f2 | tr -d '\\n'; echo; echo waited",
        ]),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut fg: Proc = sb.spawn("foreground", s.vpn_ns(&["up", "home", "--foreground"]));
    let st = waiter.wait_exit(WG_SETTLE).expect("the waiter did not end");
    assert!(st.success(), "{}", waiter.log_text());
    assert!(
        waiter.log_text().contains("lo:home:\nwaited"),
        "{}",
        waiter.log_text()
    );
    assert!(
        fg.is_alive(),
        "up --foreground must stay: {}",
        fg.log_text()
    );
    let keeper = s.keeper_pid();
    assert_ne!(keeper, fg.pid(), "the keeper is its own process");

    // exec -u: the caller's own account is accepted (by name and uid); any other is
    // refused, saying why.
    for me in [user.name.clone(), user.uid.to_string()] {
        assert_eq!(
            s.ok(s.vpn_ns(&["exec", "-u", &me, "home", "--", "id", "-u"]))
                .trim(),
            user.uid.to_string()
        );
    }
    let o = s.run(s.vpn_ns(&["exec", "-u", "root", "home", "--", "true"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("only you enter your own connection"),
        "{}",
        stderr(&o)
    );

    // SIGTERM (systemctl --user stop): the connection goes down, nothing is left.
    let ns = net_ns_of(keeper);
    let mut sleep = sb.spawn(
        "sleeper",
        s.vpn_ns(&["exec", "home", "--", "sleep", "1000"]),
    );
    expect_ok(wait_until(WG_SETTLE, || {
        match procs_in(&ns).contains(&sleep.pid()) {
            true => Ok(()),
            false => Err("sleeper not inside yet".to_owned()),
        }
    }));
    assert!(fg.signal(libc::SIGTERM));
    let st = fg
        .wait_exit(WG_SETTLE)
        .expect("up --foreground did not end on SIGTERM");
    assert!(st.success(), "{st:?}: {}", fg.log_text());
    assert!(
        sleep.wait_exit(WG_SETTLE).is_some(),
        "programs inside must end"
    );
    wait_gone(keeper);
    assert_eq!(s.run_dir_entries(), Vec::<String>::new());

    // `vpn-ns down` elsewhere: the foreground up ends with 0.
    let mut fg = sb.spawn("foreground2", s.vpn_ns(&["up", "home", "--foreground"]));
    expect_ok(wait_until(WG_SETTLE, || {
        let st = s.run(s.vpn_ns(&["status", "home"]));
        match String::from_utf8_lossy(&st.stdout).contains("home: up") {
            true => Ok(()),
            false => Err("not up yet".to_owned()),
        }
    }));
    s.ok(s.vpn_ns(&["down", "home"]));
    let st = fg
        .wait_exit(WG_SETTLE)
        .expect("up --foreground did not end after down");
    assert!(st.success(), "{st:?}: {}", fg.log_text());

    // The keeper killed: the foreground up cleans up and fails.
    let mut fg = sb.spawn("foreground3", s.vpn_ns(&["up", "home", "--foreground"]));
    expect_ok(wait_until(WG_SETTLE, || {
        let st = s.run(s.vpn_ns(&["status", "home"]));
        match String::from_utf8_lossy(&st.stdout).contains("home: up") {
            true => Ok(()),
            false => Err("not up yet".to_owned()),
        }
    }));
    let keeper = s.keeper_pid();
    assert!(sys::send_signal(keeper, libc::SIGKILL));
    let st = fg
        .wait_exit(WG_SETTLE)
        .expect("up --foreground did not end after its keeper");
    assert_eq!(st.code(), Some(1), "{}", fg.log_text());
    assert!(
        fg.log_text().contains("the keeper ended"),
        "{}",
        fg.log_text()
    );
    assert_eq!(s.run_dir_entries(), Vec::<String>::new());
}

#[test]
fn check_names_a_users_bad_file_and_warns_about_an_exposed_publish() {
    if !require_root("check_names_a_users_bad_file_and_warns_about_an_exposed_publish") {
        return;
    }
    let sb = Sandbox::new("unpriv-check");
    let user = TestUser::create();
    let s = Session::new(&sb, &user);
    let keys = genkeys();
    s.write(
        "home.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.2/32\n",
            keys.private
        ),
        0o600,
    );
    s.write(
        "home.toml",
        "type = \"wireguard\"\n\n[[publish]]\nlisten = \"0.0.0.0:8080\"\n",
        0o644,
    );
    let out = s.ok(s.vpn_ns(&["check"]));
    assert!(
        out.contains("home: warning: [[publish]] listen = \"0.0.0.0:8080\" is not a loopback"),
        "{out}"
    );
    assert!(out.contains("ok: 1 connection(s)"), "{out}");

    s.write(
        "bad.toml",
        "type = \"wireguard\"\nnetns-persistent = true\n",
        0o644,
    );
    let o = s.run(s.vpn_ns(&["check"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("bad: ") && out.contains("netns-persistent") && out.contains("bad.toml"),
        "{out}"
    );
    // Only the named connection.
    let out = s.ok(s.vpn_ns(&["check", "home"]));
    assert!(out.contains("ok: 1 connection(s)"), "{out}");
}
