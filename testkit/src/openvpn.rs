//! Real OpenVPN peers inside a sandbox: a server in namespace `srv` behind a veth,
//! with a TCP service on addresses of its `lo`, and clients in the sandbox host namespace.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::pki::pki;
use crate::sandbox::{Proc, Sandbox, tail};
use crate::{count_in_log, sys, wait_for_log};

/// Namespace of the server inside the sandbox.
pub const SERVER_NS: &str = "srv";
/// Sandbox side of the veth.
pub const UPLINK_ADDR: &str = "198.51.100.1";
/// Server side of the veth; OpenVPN listens here.
pub const SERVER_ADDR: &str = "198.51.100.2";
pub const SERVER_PORT: u16 = 1194;
/// "The service behind the VPN": addresses on `lo` of `srv` (this kernel has no
/// `dummy` link type).
pub const SERVICE_V4: &str = "203.0.113.1";
pub const SERVICE_V6: &str = "fd00:203::1";
pub const SERVICE_PORT: u16 = 8080;
pub const SERVICE_REPLY: &str = "hello-from-vpn";
/// Pushed DNS server and search domain.
pub const PUSHED_DNS: &str = "203.0.113.53";
pub const PUSHED_DOMAIN: &str = "vpn.example";
/// The marker OpenVPN logs once the tunnel is up (after the --up script succeeded).
pub const CONNECTED: &str = "Initialization Sequence Completed";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Subnet,
    Net30,
}

impl Topology {
    fn as_str(self) -> &'static str {
        match self {
            Topology::Subnet => "subnet",
            Topology::Net30 => "net30",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub topology: Topology,
    /// `push "..."` lines (without `push` and quotes).
    pub push: Vec<String>,
    /// Extra raw server config lines.
    pub extra: Vec<String>,
    /// `keepalive PING RESTART` (pushed to clients as ping/ping-restart).
    pub keepalive: (u32, u32),
    /// `server-ipv6 fd00:64::/64`.
    pub ipv6: bool,
    /// Start the TCP service (socat on 203.0.113.1 / fd00:203::1 port 8080).
    pub service: bool,
}

/// The pushes of the standard test server.
pub fn default_push() -> Vec<String> {
    vec![
        "route 203.0.113.0 255.255.255.0".into(),
        "route-ipv6 fd00:203::/64".into(),
        format!("dhcp-option DNS {PUSHED_DNS}"),
        format!("dhcp-option DOMAIN {PUSHED_DOMAIN}"),
    ]
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            topology: Topology::Subnet,
            push: default_push(),
            extra: Vec::new(),
            keepalive: (1, 5),
            ipv6: true,
            service: true,
        }
    }
}

/// The OpenVPN server and the service processes. Dropping it kills them.
pub struct VpnServer {
    pub openvpn: Proc,
    pub services: Vec<Proc>,
    pub config: PathBuf,
}

impl VpnServer {
    pub fn log(&self) -> String {
        self.openvpn.log_text()
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// true: the vpn-ns wiring (`ifconfig-noexec`, `route-noexec`, up/down hooks);
    /// false: plain OpenVPN that configures the sandbox host namespace itself.
    pub hooks: bool,
    /// Extra raw client config lines (`persist-tun`, `up-restart`, ...).
    pub extra: Vec<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            hooks: true,
            extra: Vec::new(),
        }
    }
}

/// An OpenVPN client process in the sandbox host namespace.
pub struct OpenVpnClient {
    pub conn: String,
    pub proc: Proc,
    pub config: PathBuf,
}

impl OpenVpnClient {
    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.proc.log
    }

    /// How many times the log says the tunnel came up.
    pub fn connected_count(&self) -> usize {
        count_in_log(&self.proc.log, CONNECTED)
    }

    /// Waits until the log shows `n` "Initialization Sequence Completed" lines;
    /// fails early when OpenVPN exits.
    pub fn wait_connected_n(&mut self, n: usize, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        loop {
            if self.connected_count() >= n {
                return Ok(());
            }
            if let Some(st) = self.proc.try_status() {
                return Err(format!(
                    "OpenVPN client for {} exited ({st}) before connecting (#{n}); its log:\n{}",
                    self.conn,
                    tail(&self.log(), 80)
                ));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "OpenVPN client for {} did not log {CONNECTED:?} (#{n}) within {timeout:?}; its log:\n{}",
                    self.conn,
                    tail(&self.log(), 80)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_connected(&mut self, timeout: Duration) -> Result<(), String> {
        self.wait_connected_n(1, timeout)
    }

    /// Waits for `needle` in this client's log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        wait_for_log(&self.proc.log, needle, timeout)
    }

    /// SIGTERM and wait for OpenVPN to exit (it runs the down script first).
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        self.proc
            .terminate(Duration::from_secs(20))
            .map_err(|e| format!("{e}; client log:\n{}", tail(&self.log(), 60)))
    }

    /// Waits for OpenVPN to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_alive()
    }

    /// SIGUSR1: soft restart.
    pub fn signal_usr1(&mut self) {
        assert!(
            self.proc.signal(sys::SIGUSR1),
            "cannot send SIGUSR1 to the OpenVPN client (exited?)"
        );
    }

    /// The tun device OpenVPN opened ("TUN/TAP device tun0 opened"), the last one.
    pub fn tun_name(&self) -> Option<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("TUN/TAP device ")? + "TUN/TAP device ".len()..];
                let (name, after) = rest.split_once(' ')?;
                after.starts_with("opened").then(|| name.to_owned())
            })
            .next_back()
    }

    /// The value of a pushed option from the last PUSH_REPLY, e.g.
    /// `pushed("ifconfig")` -> "100.64.0.2 255.255.255.0".
    pub fn pushed(&self, key: &str) -> Option<String> {
        let log = self.log();
        let reply = log.lines().rev().find_map(|l| {
            let i = l.find("PUSH_REPLY,")?;
            Some(
                l[i + "PUSH_REPLY,".len()..]
                    .trim_end_matches(['\'', ' '])
                    .to_owned(),
            )
        })?;
        reply.split(',').find_map(|opt| {
            let (k, v) = opt.split_once(' ')?;
            (k == key).then(|| v.to_owned())
        })
    }
}

impl Sandbox {
    /// Builds `srv` (veth + service addresses on its `lo`), starts the OpenVPN server there
    /// and the TCP service, and waits until both are ready.
    pub fn start_server(&self, opts: &ServerOptions) -> VpnServer {
        let p = pki();
        self.must(&format!(
            "set -e
             ip netns add {ns}
             ip link add uplink type veth peer name eth0 netns {ns}
             ip addr add {UPLINK_ADDR}/24 dev uplink
             ip link set uplink up
             ip -n {ns} link set lo up
             ip -n {ns} addr add {SERVER_ADDR}/24 dev eth0
             ip -n {ns} link set eth0 up
             ip -n {ns} addr add {SERVICE_V4}/32 dev lo
             ip -n {ns} -6 addr add {SERVICE_V6}/128 dev lo nodad",
            ns = SERVER_NS
        ));

        let mut conf = String::new();
        let mut line = |s: &str| {
            conf.push_str(s);
            conf.push('\n');
        };
        line("dev tun");
        line("proto udp");
        line(&format!("local {SERVER_ADDR}"));
        line(&format!("port {SERVER_PORT}"));
        line("disable-dco");
        line(&format!("topology {}", opts.topology.as_str()));
        line("server 100.64.0.0 255.255.255.0");
        if opts.ipv6 {
            line("server-ipv6 fd00:64::/64");
        }
        line(&format!("ca {}", p.ca_cert.display()));
        line(&format!("cert {}", p.server_cert.display()));
        line(&format!("key {}", p.server_key.display()));
        line("dh none");
        line(&format!(
            "keepalive {} {}",
            opts.keepalive.0, opts.keepalive.1
        ));
        line(&format!(
            "writepid {}",
            self.dir().join("server.pid").display()
        ));
        line("verb 3");
        for push in &opts.push {
            line(&format!("push \"{push}\""));
        }
        for e in &opts.extra {
            line(e);
        }
        let config = self.dir().join("server.conf");
        std::fs::write(&config, conf).expect("write server.conf");

        let mut cmd = self.ns_cmd(SERVER_NS, "openvpn");
        cmd.arg("--config").arg(&config);
        let mut openvpn = self.spawn("server", cmd);
        let end = Instant::now() + Duration::from_secs(20);
        while count_in_log(&openvpn.log, CONNECTED) == 0 {
            if !openvpn.is_alive() || Instant::now() >= end {
                panic!(
                    "OpenVPN server did not start; its log:\n{}",
                    openvpn.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let mut services = Vec::new();
        if opts.service {
            for (name, listen) in [
                (
                    "service-v4",
                    format!("TCP4-LISTEN:{SERVICE_PORT},bind={SERVICE_V4},reuseaddr,fork"),
                ),
                (
                    "service-v6",
                    format!("TCP6-LISTEN:{SERVICE_PORT},bind=[{SERVICE_V6}],reuseaddr,fork"),
                ),
            ] {
                let mut cmd = self.ns_cmd(SERVER_NS, "socat");
                cmd.arg(listen).arg(format!("SYSTEM:echo {SERVICE_REPLY}"));
                services.push(self.spawn(name, cmd));
            }
            for addr in [SERVICE_V4, SERVICE_V6] {
                let end = Instant::now() + Duration::from_secs(10);
                loop {
                    match self.tcp_get(Some(SERVER_NS), addr, SERVICE_PORT) {
                        Ok(l) if l == SERVICE_REPLY => break,
                        r if Instant::now() >= end => {
                            let mut logs = String::new();
                            for s in &services {
                                let _ = writeln!(logs, "{}: {}", s.name, s.log_text());
                            }
                            panic!("service on {addr} not answering in {SERVER_NS}: {r:?}\n{logs}");
                        }
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
        VpnServer {
            openvpn,
            services,
            config,
        }
    }

    /// Writes a client config for connection `conn` and starts OpenVPN in the sandbox
    /// host namespace (returns at once; use `wait_connected`).
    pub fn start_client(&self, conn: &str, opts: &ClientOptions) -> OpenVpnClient {
        let p = pki();
        let mut conf = String::new();
        let mut line = |s: &str| {
            conf.push_str(s);
            conf.push('\n');
        };
        line("client");
        line("dev tun");
        line(&format!("remote {SERVER_ADDR} {SERVER_PORT} udp"));
        line("nobind");
        line("disable-dco");
        line("remote-cert-tls server");
        line(&format!("ca {}", p.ca_cert.display()));
        line(&format!("cert {}", p.client_cert.display()));
        line(&format!("key {}", p.client_key.display()));
        line("connect-retry 1 1");
        line("verb 3");
        if opts.hooks {
            let hook = hook_command(self, conn);
            line("script-security 2");
            line("ifconfig-noexec");
            line("route-noexec");
            line(&format!("up \"{hook}\""));
            line(&format!("down \"{hook}\""));
        }
        for e in &opts.extra {
            line(e);
        }
        let log = self.new_log(&format!("client-{conn}"));
        let stem = log
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let config = self.dir().join(format!("{stem}.conf"));
        std::fs::write(&config, conf).expect("write client conf");
        let mut cmd = self.cmd("openvpn");
        cmd.arg("--config").arg(&config);
        let proc = self.spawn(&stem, cmd);
        OpenVpnClient {
            conn: conn.to_owned(),
            proc,
            config,
        }
    }
}

/// `<vpn-ns> --config-dir <dir> hook openvpn <conn>` as an OpenVPN script command.
pub fn hook_command(sb: &Sandbox, conn: &str) -> String {
    let bin = crate::vpn_ns_bin();
    let dir = sb.config_dir();
    let dir = dir.display().to_string();
    for part in [&bin, &dir] {
        assert!(
            !part.contains(|c: char| c.is_whitespace() || "\"'\\".contains(c)),
            "path must not need quoting in an OpenVPN script command: {part:?}"
        );
    }
    format!("{bin} --config-dir {dir} hook openvpn {conn}")
}

/// A client config for `vpn-ns up` (native mode) against the sandbox's server, written
/// to `<sandbox>/<name>.conf`: no vpn-ns lines (up adds them).
pub fn client_config(sb: &Sandbox, name: &str) -> PathBuf {
    let p = pki();
    let lines = [
        "client".to_owned(),
        "dev tun".to_owned(),
        format!("remote {SERVER_ADDR} {SERVER_PORT} udp"),
        "nobind".to_owned(),
        "disable-dco".to_owned(),
        "remote-cert-tls server".to_owned(),
        format!("ca {}", p.ca_cert.display()),
        format!("cert {}", p.client_cert.display()),
        format!("key {}", p.client_key.display()),
        "connect-retry 1 1".to_owned(),
        "verb 3".to_owned(),
    ];
    let path = sb.dir().join(format!("{name}.conf"));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write client config");
    path
}
