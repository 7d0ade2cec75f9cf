//! A normal user's side of the unprivileged-mode tests (tests/unprivileged.rs): their
//! config and runtime directories, running commands as them with no capability, and a
//! lab with a WireGuard peer, a DNS server behind it and a host resolver with a decoy.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::exec::{TestUser, need};
use crate::sandbox::{self, Proc, Sandbox};
use crate::wireguard::*;
use crate::{vpn_ns_bin, wait_until};

pub const SERVICE_4: &str = "10.99.0.1";
pub const SERVICE_6: &str = "fd00:99::1";
pub const TUNNEL_DNS: &str = "100.64.0.1";
pub const INSIDE_NAME: &str = "www.vpn.test";
pub const OUTSIDE_NAME: &str = "outside.example";
/// What the host's resolver would answer for INSIDE_NAME: a lookup that leaks shows it.
pub const DECOY: &str = "192.0.2.66";
pub const PAGE_PORT: u16 = 8081;

/// One user's side of the test: config dir, runtime dir, and how to run as them.
pub struct Session<'a> {
    pub sb: &'a Sandbox,
    pub user: &'a TestUser,
    pub config_home: PathBuf,
    pub runtime: PathBuf,
}

impl<'a> Session<'a> {
    pub fn new(sb: &'a Sandbox, user: &'a TestUser) -> Session<'a> {
        let base = user.owned_dir(sb, &user.name);
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).unwrap();
        let config_home = base.join("config");
        let runtime = base.join("run");
        for d in [&config_home, &config_home.join("vpn-ns"), &runtime] {
            fs::create_dir_all(d).unwrap();
            std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
        }
        Session {
            sb,
            user,
            config_home,
            runtime,
        }
    }

    /// `prog args` as the user in the sandbox host namespace: real and effective uid
    /// the user's, no capability in any set, no_new_privs, a login-like environment.
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = self.sb.cmd("setpriv");
        c.args([
            &format!("--reuid={}", self.user.uid),
            &format!("--regid={}", self.user.gid),
            "--init-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
            "env",
            "-i",
            // nsenter leaves the process at / of the mount namespace it entered.
            "-C",
        ])
        .arg(self.sb.dir())
        .arg(format!("HOME={}", self.user.home().display()))
        .arg(format!("USER={}", self.user.name))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .arg(format!("XDG_RUNTIME_DIR={}", self.runtime.display()))
        .arg(format!("XDG_CONFIG_HOME={}", self.config_home.display()))
        .arg(prog)
        .args(args)
        .stdin(Stdio::null());
        c
    }

    pub fn vpn_ns(&self, args: &[&str]) -> Command {
        self.cmd(&vpn_ns_bin(), args)
    }

    pub fn run(&self, mut c: Command) -> Output {
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", sandbox::describe(&c)))
    }

    pub fn ok(&self, c: Command) -> String {
        let d = sandbox::describe(&c);
        let o = self.run(c);
        assert!(
            o.status.success(),
            "{d} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A file the user owns, mode `mode`, in their config dir.
    pub fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.config_home.join("vpn-ns").join(name);
        fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(self.user.uid), Some(self.user.gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    pub fn run_dir_entries(&self) -> Vec<String> {
        fs::read_dir(self.runtime.join("vpn-ns"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn keeper_pid(&self) -> u32 {
        let out = self.ok(self.vpn_ns(&["status", "--json", "home"]));
        let n = out
            .split("\"keeper_pid\":")
            .nth(1)
            .and_then(|r| r.trim().split([',', '\n']).next())
            .and_then(|v| v.trim().parse().ok());
        n.unwrap_or_else(|| panic!("no keeper pid in {out}"))
    }
}

/// The peer (wireguard-go in srv1 with services on v4 and v6), a DNS server behind it
/// and a host resolver (the sandbox's /etc/resolv.conf) answering a decoy.
pub struct Lab {
    pub server: WgServer,
    pub dns: Vec<Proc>,
    pub host_dns_log: PathBuf,
}

/// A dnsmasq answering only `answers` (`--address` values) on `listen`, logging every
/// query to its stdout (the sandbox log), run by `cmd` (in whichever namespace).
pub fn dnsmasq(
    sb: &Sandbox,
    mut cmd: Command,
    name: &str,
    listen: &str,
    answers: &[String],
) -> Proc {
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--user=root",
        "--log-queries",
        "--log-facility=-",
    ])
    .arg(format!(
        "--pid-file={}",
        sb.dir().join(format!("{name}.pid")).display()
    ))
    .arg(format!("--listen-address={listen}"));
    for a in answers {
        cmd.arg(format!("--address={a}"));
    }
    sb.spawn(name, cmd)
}

pub fn lab(sb: &Sandbox, s: &Session) -> Lab {
    need("dnsmasq", "dnsmasq-base");
    need("setpriv", "util-linux");
    let client = genkeys();
    let server = start_wg_server(
        sb,
        &WgServerSpec {
            n: 1,
            tunnel_v4: TUNNEL_DNS,
            tunnel_v6: Some("fd00:64::1"),
            services: &[(SERVICE_4, "v4-ok"), (SERVICE_6, "v6-ok")],
            psk: None,
            builtin: false,
        },
        &client.public,
    );
    let vpn_dns = dnsmasq(
        sb,
        sb.ns_cmd("srv1", "dnsmasq"),
        "dnsmasq-vpn",
        TUNNEL_DNS,
        &[format!("/{INSIDE_NAME}/{SERVICE_4}")],
    );
    let host_resolv = sb.dir().join("host-resolv.conf");
    fs::write(&host_resolv, "nameserver 198.51.100.1\n").unwrap();
    fs::set_permissions(&host_resolv, fs::Permissions::from_mode(0o644)).unwrap();
    sb.must(&format!(
        "mount --bind {} /etc/resolv.conf",
        host_resolv.display()
    ));
    let host_dns = dnsmasq(
        sb,
        sb.cmd("dnsmasq"),
        "dnsmasq-host",
        "198.51.100.1",
        &[
            format!("/{INSIDE_NAME}/{DECOY}"),
            format!("/{OUTSIDE_NAME}/192.0.2.99"),
        ],
    );
    let answer = wait_until(Duration::from_secs(10), || {
        sandbox::run(sb.cmd("getent").args(["hosts", OUTSIDE_NAME]))
    });
    assert!(
        answer.as_deref().is_ok_and(|a| a.contains("192.0.2.99")),
        "the host resolver must work: {answer:?}"
    );
    s.write(
        "home.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/32, {CLIENT_V6}/128\nDNS = {TUNNEL_DNS}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0, ::/0\n",
            client.private, server.keys.public, server.endpoint
        ),
        0o600,
    );
    s.write("home.toml", "type = \"wireguard\"\n", 0o644);
    Lab {
        server,
        dns: vec![vpn_dns, host_dns],
        host_dns_log: sb.dir().join("dnsmasq-host.log"),
    }
}

/// What must not change on the host: routes, links, resolv.conf.
pub fn host_view(sb: &Sandbox) -> String {
    sb.must("ip -4 route; ip -6 route; ip -o link | cut -d' ' -f2; cat /etc/resolv.conf")
}

/// Processes (any user) whose network namespace is `ns` ("net:[N]").
pub fn procs_in(ns: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_link(format!("/proc/{p}/ns/net")).is_ok_and(|l| l.to_string_lossy() == ns)
        })
        .collect()
}

/// Not running: no such process, or one that exited and awaits its reaper (the keeper
/// is reparented when `up` exits).
pub fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X"),
    }
}

pub fn net_ns_of(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// An HTTP server on SERVICE_4 in srv1 that logs each request line.
pub fn page_server(sb: &Sandbox) -> (Proc, PathBuf) {
    let log = sb.dir().join("page-requests.txt");
    let script = sb.dir().join("page.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nread -r line\necho \"$line from $SOCAT_PEERADDR\" >> {log}\n\
             while read -r h; do case \"$h\" in ''|\"$(printf '\\r')\") break;; esac; done\n\
             printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/html\\r\\nConnection: close\\r\\n\\r\\n'\n\
             printf '<html><body><h1>only behind the tunnel</h1></body></html>\\n'\n",
            log = log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = sb.ns_cmd("srv1", "socat");
    c.arg(format!(
        "TCP4-LISTEN:{PAGE_PORT},bind={SERVICE_4},reuseaddr,fork"
    ))
    .arg(format!("EXEC:{}", script.display()));
    (sb.spawn("page-server", c), log)
}
