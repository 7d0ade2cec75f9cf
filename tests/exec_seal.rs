//! Security of `vpn-ns exec` (issue 19): the command gets its own pseudo-terminal (or
//! none), no descriptor of root's, a PID namespace with a private /proc, and no host
//! socket that acts on the network for it (session bus, system bus, dirmngr). The
//! setuid refusal is in tests/trust.rs. Every test drives the real binary in a sandbox; the
//! connection is brought up through the OpenVPN hook with a realistic environment (the
//! tunnel's traffic is covered by tests/exec.rs and tests/exec_network.rs).

use vpn_ns_testkit as common;

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::exec::*;
use common::*;

const TUN: &str = "tun0";

/// What OpenVPN exports to `--up` for a subnet client (as in tests/hostile_env.rs).
fn hook_env(script_type: &str) -> BTreeMap<String, String> {
    [
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
    .collect()
}

/// A sandbox with connection `work` up (namespace `work`, tun0 inside) via the hook.
fn up_sandbox(name: &str, toml: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.write_conn("work", toml);
    sb.must(&format!("ip tuntap add dev {TUN} mode tun"));
    let mut c = sb.vpn_ns();
    c.env_clear()
        .envs(hook_env("up"))
        .arg("--config-dir")
        .arg(sb.config_dir())
        .args(["hook", "openvpn", "work"]);
    let o = output(c);
    assert!(o.status.success(), "hook up: {}", text(&o.stderr));
    sb
}

fn cloexec(fd: &OwnedFd) {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .unwrap();
}

struct PtyRun {
    status: ExitStatus,
    /// What the command wrote to the (outer) terminal.
    output: String,
    /// Input waiting in the terminal after vpn-ns returned: what root's shell would run.
    injected: String,
    /// Local modes of the terminal before and after.
    lflag: (u64, u64),
}

/// Runs `cmd` as if from root's interactive shell: a real pty, its slave as stdin,
/// stdout, stderr and controlling terminal, and `fd7` open as descriptor 7.
fn run_on_pty(mut cmd: Command, fd7: &fs::File) -> PtyRun {
    let p = nix::pty::openpty(None, None).expect("openpty");
    cloexec(&p.master);
    cloexec(&p.slave);
    let lflag = |fd: &OwnedFd| nix::sys::termios::tcgetattr(fd).unwrap().local_flags.bits() as u64;
    let before = lflag(&p.slave);
    let (slave, f7) = (p.slave.as_raw_fd(), fd7.as_raw_fd());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(slave, libc::TIOCSCTTY, 0);
            for fd in 0..3 {
                libc::dup2(slave, fd);
            }
            libc::dup2(f7, 7);
            Ok(())
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let master = p.master;
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match nix::unistd::read(&master, &mut buf) {
                    Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(&cmd)));
    let status = child.wait().unwrap();
    // A background job of the command gets time to act after vpn-ns returned.
    std::thread::sleep(Duration::from_millis(2500));
    nix::fcntl::fcntl(
        &p.slave,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut injected = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = nix::unistd::read(p.slave.as_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        injected.extend_from_slice(&buf[..n]);
    }
    let after = lflag(&p.slave);
    stop.store(true, Ordering::SeqCst);
    PtyRun {
        status,
        output: reader.join().unwrap(),
        injected: String::from_utf8_lossy(&injected).into_owned(),
        lflag: (before, after),
    }
}

/// TIOCSTI from perl (0x5412), into `fh`: foreground on stdin, and a background job
/// on /dev/tty one second after the command returned.
const INJECT: &str = "perl -e 'ioctl(STDIN, 0x5412, $_) for split //, qq(echo PWNED-FG\\n)'; \
    echo fg-inject=$?; \
    (sleep 1; perl -e 'open(T, q(+<), q(/dev/tty)) or exit 3; \
      ioctl(T, 0x5412, $_) for split //, qq(echo PWNED-BG\\n)') >/dev/null 2>&1 & \
    if cat <&7; then echo fd7=open; else echo fd7=closed; fi; \
    echo fds=$(ls /proc/self/fd | tr '\\n' ' '); echo tty=$(tty); \
    echo ttyowner=$(stat -c %u $(tty))";

#[test]
fn exec_runs_on_its_own_terminal_without_roots_descriptors() {
    if !require_root("exec_runs_on_its_own_terminal_without_roots_descriptors") {
        return;
    }
    let u = TestUser::create();
    let sb = up_sandbox("seal-pty", "type = \"openvpn\"\n");
    let secret = sb.dir().join("root-only");
    fs::write(&secret, "root-secret-7\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let f7 = fs::File::open(&secret).unwrap();

    let run = run_on_pty(
        exec_cmd(
            &sb,
            None,
            &["-u", &u.name, "work", "--", "sh", "-c", INJECT],
        ),
        &f7,
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.output);
    assert!(
        !run.injected.contains("PWNED"),
        "the command pushed input into root's terminal: {:?} (output: {})",
        run.injected,
        run.output
    );
    assert!(run.output.contains("fg-inject=0"), "{}", run.output);
    assert!(run.output.contains("fd7=closed"), "{}", run.output);
    assert!(!run.output.contains("root-secret-7"), "{}", run.output);
    let fds = run
        .output
        .lines()
        .find_map(|l| l.strip_prefix("fds="))
        .unwrap();
    // 0, 1, 2 and the one `ls` opened for /proc/self/fd.
    assert!(fds.split_whitespace().count() <= 4, "descriptors: {fds}");
    assert!(run.output.contains("tty=/dev/pts/"), "{}", run.output);
    let owner = format!("ttyowner={}", u.uid);
    assert!(run.output.contains(&owner), "{}", run.output);
    assert_eq!(run.lflag.0, run.lflag.1, "terminal modes not restored");

    // Through sudo (the user's own request) the same holds.
    use_system_conf(&sb);
    let run = run_on_pty(
        exec_cmd(&sb, Some(&u), &["work", "--", "sh", "-c", INJECT]),
        &f7,
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.output);
    assert!(!run.injected.contains("PWNED"), "{:?}", run.injected);
    assert!(run.output.contains("fd7=closed"), "{}", run.output);

    // Started as a background job (timeout(1) runs it in a process group of its own, not
    // the terminal's foreground group): vpn-ns must not stop on SIGTTOU/SIGTTIN.
    let bg = format!(
        "timeout -s KILL 20 nsenter --target {} --net --mount -- {} --config-dir {} \
         exec -u {} work -- echo bg-ran; echo bg-status=$?",
        sb.pid(),
        vpn_ns_bin(),
        sb.config_dir().display(),
        u.name
    );
    let mut c = Command::new("sh");
    c.args(["-c", &bg]);
    let run = run_on_pty(c, &f7);
    assert!(run.output.contains("bg-ran"), "{}", run.output);
    assert!(run.output.contains("bg-status=0"), "{}", run.output);
    assert_eq!(run.lflag.0, run.lflag.1, "terminal modes changed");

    // No terminal on stdin/stdout/stderr: a new session without a controlling terminal,
    // although vpn-ns itself has one.
    let p = nix::pty::openpty(None, None).unwrap();
    cloexec(&p.master);
    cloexec(&p.slave);
    let slave = p.slave.as_raw_fd();
    let mut c = exec_cmd(
        &sb,
        None,
        &[
            "-u",
            &u.name,
            "work",
            "--",
            "sh",
            "-c",
            "if (exec 3</dev/tty) 2>/dev/null; then echo ctty=yes; else echo ctty=no; fi",
        ],
    );
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::setsid();
            libc::ioctl(slave, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let out = ok(c);
    assert_eq!(value(&out, "ctty"), Some("no"), "{out}");
}

#[test]
fn exec_forwards_signals_and_returns_the_commands_status() {
    if !require_root("exec_forwards_signals_and_returns_the_commands_status") {
        return;
    }
    let u = TestUser::create();
    let sb = up_sandbox("seal-signals", "type = \"openvpn\"\n");
    let o = output(exec_cmd(
        &sb,
        None,
        &["-u", &u.name, "work", "--", "sh", "-c", "kill -TERM $$"],
    ));
    assert_eq!(o.status.code(), Some(143), "{}", text(&o.stderr));
    let o = output(exec_cmd(&sb, None, &["work", "--", "/nonexistent/x"]));
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    let mut p = sb.spawn(
        "trap",
        exec_cmd(
            &sb,
            None,
            &[
                "-u",
                &u.name,
                "work",
                "--",
                "sh",
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo ready; sleep 30 & wait",
            ],
        ),
    );
    wait_for_log(&p.log, "ready", Duration::from_secs(10)).unwrap();
    assert!(p.signal(libc::SIGTERM));
    let st = p
        .wait_exit(Duration::from_secs(10))
        .expect("exec did not end");
    assert_eq!(st.code(), Some(42), "{}", p.log_text());
    assert!(p.log_text().contains("got-term"), "{}", p.log_text());
}

/// Mounts a tmpfs over `dir` inside the sandbox (the host keeps its own).
fn private_dir(sb: &Sandbox, dir: &str) -> MountPoint {
    let mp = MountPoint::new(dir);
    sb.must(&format!(
        "mount -t tmpfs -o mode=0755,size=4m vpn-ns-test {dir}"
    ));
    mp
}

/// `/run/user/<uid>` for `u` in the sandbox, as systemd-logind makes it.
fn runtime_dir(sb: &Sandbox, u: &TestUser) -> (MountPoint, String) {
    let mp = private_dir(sb, "/run/user");
    let d = format!("/run/user/{}", u.uid);
    sb.must(&format!(
        "mkdir -m 0700 {d} && chown {}:{} {d}",
        u.uid, u.gid
    ));
    (mp, d)
}

/// `prog args` as `u` in the sandbox's host namespace, with the session's variables.
fn as_user(sb: &Sandbox, u: &TestUser, prog: &str) -> Command {
    let mut c = sb.cmd("setpriv");
    c.args([
        &format!("--reuid={}", u.uid),
        &format!("--regid={}", u.gid),
        "--init-groups",
        "--",
        prog,
    ])
    .env_clear()
    .env("HOME", u.home())
    .env("XDG_RUNTIME_DIR", format!("/run/user/{}", u.uid))
    .env("PATH", "/usr/bin:/bin");
    c
}

fn wait_path(sb: &Sandbox, p: &str) {
    wait_until(Duration::from_secs(10), || match sb.exists(p) {
        true => Ok(()),
        false => Err(format!("{p} did not appear")),
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn exec_is_sealed_from_host_processes_and_the_system_bus() {
    if !require_root("exec_is_sealed_from_host_processes_and_the_system_bus") {
        return;
    }
    let u = TestUser::create();
    let sb = up_sandbox("seal-proc", "type = \"openvpn\"\n");
    // A system bus stand-in that answers anyone who connects.
    let _dbus = private_dir(&sb, "/run/dbus");
    let mut c = sb.cmd("socat");
    c.args([
        "UNIX-LISTEN:/run/dbus/system_bus_socket,mode=666,fork",
        "SYSTEM:echo system-bus-reached",
    ]);
    let _bus = sb.spawn("system-bus", c);
    wait_path(&sb, "/run/dbus/system_bus_socket");
    // One of the user's processes outside: its /proc entry is a path into the host.
    let mut outside = as_user(&sb, &u, "sleep");
    outside.arg("300");
    let outside = sb.spawn("outside", outside);
    let script = format!(
        "echo pid=$$; echo procs=$(ls /proc | grep -c '^[0-9]'); \
         if [ -e /proc/{p} ]; then echo outside=visible; else echo outside=hidden; fi; \
         echo sysbus=$(socat -T2 -u UNIX-CONNECT:/run/dbus/system_bus_socket STDOUT 2>&1 | head -c 40)",
        p = outside.pid()
    );
    let out = ok(exec_cmd(
        &sb,
        None,
        &["-u", &u.name, "work", "--", "sh", "-c", &script],
    ));
    assert_eq!(value(&out, "outside"), Some("hidden"), "{out}");
    let procs: u32 = value(&out, "procs").unwrap().parse().unwrap();
    assert!(
        procs <= 6,
        "a private /proc shows only the exec's processes: {out}"
    );
    assert!(
        value(&out, "pid").unwrap().parse::<u32>().unwrap() < 10,
        "{out}"
    );
    assert!(
        !value(&out, "sysbus")
            .unwrap_or("")
            .contains("system-bus-reached"),
        "the system bus is reachable inside: {out}"
    );
}

/// The user's session bus (a real dbus-daemon in the sandbox's host namespace) with a
/// service directory the user can write to, as on every desktop.
fn session_bus(sb: &Sandbox, u: &TestUser, rt: &str) -> common::sandbox::Proc {
    let services = u.home().join(".local/share/dbus-1/services");
    fs::create_dir_all(&services).unwrap();
    sb.must(&format!(
        "chown -R {}:{} {}/.local",
        u.uid,
        u.gid,
        u.home().display()
    ));
    let mut c = as_user(sb, u, "dbus-daemon");
    c.args(["--session", "--nofork", "--nopidfile"])
        .arg(format!("--address=unix:path={rt}/bus"));
    let p = sb.spawn("session-bus", c);
    wait_path(sb, &format!("{rt}/bus"));
    p
}

/// Inside: writes a service file and asks the bus to start it. The service records
/// the network namespace it runs in.
fn escape_script(u: &TestUser) -> String {
    let home = u.home().display().to_string();
    format!(
        "printf '[D-BUS Service]\\nName=org.vpnns.Escape\\nExec=/bin/sh -c \"readlink /proc/self/ns/net > {home}/escaped\"\\n' \
           > {home}/.local/share/dbus-1/services/org.vpnns.Escape.service; \
         dbus-send --session --reply-timeout=3000 --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.ListNames >/dev/null 2>&1; \
         echo list=$?; \
         dbus-send --session --reply-timeout=3000 --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
           org.freedesktop.DBus.StartServiceByName string:org.vpnns.Escape uint32:0 2>&1 | head -c 300; \
         sleep 1; echo; echo bus=${{DBUS_SESSION_BUS_ADDRESS:-none}}; \
         echo rt=$(ls -A $XDG_RUNTIME_DIR | tr '\\n' ' ')"
    )
}

#[test]
fn session_bus_cannot_start_services_outside_the_namespace() {
    if !require_root("session_bus_cannot_start_services_outside_the_namespace") {
        return;
    }
    need("dbus-daemon", "dbus-daemon");
    need("dbus-send", "dbus-bin");
    need("xdg-dbus-proxy", "xdg-dbus-proxy");
    let u = TestUser::create();
    let sb = up_sandbox("seal-dbus", "type = \"openvpn\"\n");
    let (_rt_mount, rt) = runtime_dir(&sb, &u);
    let _bus = session_bus(&sb, &u, &rt);
    // What a desktop session also has in the runtime directory.
    sb.must(&format!(
        "touch {rt}/wayland-0 {rt}/pipewire-0-manager && mkdir -p {rt}/gnupg {rt}/systemd && \
         chown -R {}:{} {rt}",
        u.uid, u.gid
    ));
    let _wl = {
        let mut c = as_user(&sb, &u, "socat");
        c.args([
            &format!("UNIX-LISTEN:{rt}/wayland-1,fork"),
            "SYSTEM:echo wayland",
        ]);
        sb.spawn("wayland", c)
    };
    wait_path(&sb, &format!("{rt}/wayland-1"));
    use_system_conf(&sb);
    let escaped = u.home().join("escaped");
    let host_ns = sb.must("readlink /proc/self/ns/net");
    let run = |toml: &str| {
        let _ = fs::remove_file(&escaped);
        sb.write_conn("work", toml);
        let mut c = exec_cmd(
            &sb,
            Some(&u),
            &["work", "--", "sh", "-c", &escape_script(&u)],
        );
        c.env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={rt}/bus"))
            .env("XDG_RUNTIME_DIR", &rt);
        let o = output(c);
        assert!(o.status.success(), "{}", text(&o.stderr));
        std::thread::sleep(Duration::from_millis(500));
        (
            text(&o.stdout),
            text(&o.stderr),
            fs::read_to_string(&escaped).ok(),
        )
    };

    // Default ("none"): no bus at all; only the display socket in the runtime dir.
    let (out, _, esc) = run("type = \"openvpn\"\n");
    assert_eq!(esc, None, "a service was started outside: {out}");
    assert_eq!(value(&out, "bus"), Some("none"), "{out}");
    assert_ne!(value(&out, "list"), Some("0"), "{out}");
    assert_eq!(value(&out, "rt"), Some("wayland-1"), "{out}");

    // "filtered": the proxy answers the bus driver, refuses starting a service.
    let users = format!("users = [\"{}\"]\n", u.name);
    let (out, _, esc) = run(&format!(
        "type = \"openvpn\"\n[exec]\n{users}session-bus = \"filtered\"\n"
    ));
    assert_eq!(esc, None, "a service was started outside: {out}");
    assert_eq!(value(&out, "list"), Some("0"), "the proxy must work: {out}");
    assert!(value(&out, "rt").unwrap().contains("bus"), "{out}");
    // The proxy ends with vpn-ns.
    wait_until(Duration::from_secs(5), || {
        match sandbox::run(Command::new("pgrep").args(["-u", &u.name, "-x", "xdg-dbus-proxy"])) {
            Ok(pids) => Err(format!("xdg-dbus-proxy still running: {pids}")),
            Err(_) => Ok(()),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // "full": the way out is real and is warned about (what the default prevents).
    let (out, err, esc) = run(&format!(
        "type = \"openvpn\"\n[exec]\n{users}session-bus = \"full\"\n"
    ));
    assert!(err.contains("way around the VPN"), "{err}");
    let started = wait_until(Duration::from_secs(5), || {
        fs::read_to_string(&escaped).map_err(|e| e.to_string())
    })
    .ok()
    .or(esc);
    assert_eq!(
        started.as_deref().map(str::trim),
        Some(host_ns.trim()),
        "with the real bus the service runs in the host namespace: {out}"
    );
}

#[test]
fn dirmngr_outside_cannot_fetch_for_the_command() {
    if !require_root("dirmngr_outside_cannot_fetch_for_the_command") {
        return;
    }
    need("dirmngr", "dirmngr");
    need("gpg-connect-agent", "gnupg");
    let u = TestUser::create();
    let sb = up_sandbox("seal-dirmngr", "type = \"openvpn\"\n");
    let (_rt_mount, rt) = runtime_dir(&sb, &u);
    // A page only the host namespace reaches.
    let http = sb.dir().join("http.sh");
    fs::write(
        &http,
        "#!/bin/sh\nwhile IFS= read -r l; do [ \"$l\" = \"$(printf '\\r')\" ] && break; \
         [ -z \"$l\" ] && break; done\n\
         printf 'HTTP/1.0 200 OK\\r\\nContent-Length: 12\\r\\n\\r\\nhost-secret\\n'\n",
    )
    .unwrap();
    fs::set_permissions(&http, fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = sb.cmd("socat");
    c.arg("TCP-LISTEN:18931,bind=127.0.0.1,reuseaddr,fork")
        .arg(format!("EXEC:{}", http.display()));
    let _web = sb.spawn("host-web", c);
    let gnupg = u.home().join(".gnupg");
    fs::create_dir_all(&gnupg).unwrap();
    fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).unwrap();
    sb.must(&format!("chown {}:{} {}", u.uid, u.gid, gnupg.display()));
    let mut c = as_user(&sb, &u, "gpgconf");
    c.arg("--create-socketdir");
    sandbox::run(&mut c).unwrap_or_else(|e| panic!("{e}"));
    let mut c = as_user(&sb, &u, "dirmngr");
    c.args(["--daemon"]);
    sandbox::run(&mut c).unwrap_or_else(|e| panic!("{e}"));
    wait_path(&sb, &format!("{rt}/gnupg/S.dirmngr"));
    let fetch = "gpg-connect-agent --no-autostart --dirmngr \
        'KS_FETCH http://127.0.0.1:18931/x' /bye 2>&1";
    // Control: the user's dirmngr fetches the page.
    let mut c = as_user(&sb, &u, "sh");
    c.args(["-c", fetch]);
    let outside = sandbox::run(&mut c).unwrap_or_default();
    assert!(outside.contains("host-secret"), "control: {outside}");

    let mut c = exec_cmd(&sb, None, &["-u", &u.name, "work", "--", "sh", "-c", fetch]);
    c.env("XDG_RUNTIME_DIR", &rt);
    let o = output(c);
    let inside = text(&o.stdout);
    assert!(
        !inside.contains("host-secret"),
        "dirmngr fetched a host-only page for the command: {inside}"
    );
    let mut c = as_user(&sb, &u, "gpgconf");
    c.args(["--kill", "dirmngr"]);
    let _ = sandbox::run(&mut c);
    // Let the kill land before the user is removed.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) && sb.exists(&format!("{rt}/gnupg/S.dirmngr")) {
        std::thread::sleep(Duration::from_millis(100));
    }
}
