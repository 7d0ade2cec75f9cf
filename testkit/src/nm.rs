//! A real NetworkManager inside a sandbox: a private `dbus-daemon --system`,
//! `NetworkManager --no-daemon`, its D-Bus-activated dispatcher running the repository's
//! `hooks/networkmanager/90-vpn-ns`, and OpenVPN connections imported with `nmcli`
//! against the sandbox's test server. Nothing of the host's D-Bus or NetworkManager is
//! used: every path they touch is a tmpfs of the sandbox's mount namespace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pki::pki;
use crate::sandbox::{Proc, Sandbox, run, tail};
use crate::{SERVER_ADDR, SERVER_PORT};

/// Directories NetworkManager and the system bus write to; each gets a private tmpfs.
pub const NM_DIRS: [&str; 4] = [
    "/run/dbus",
    "/run/NetworkManager",
    "/var/lib/NetworkManager",
    "/etc/NetworkManager",
];

/// The uplink NetworkManager activates VPNs over (no default route: `ifname` is needed).
pub const UPLINK: &str = "uplink";

/// `dns=none`, `rc-manager=unmanaged`, `hostname-mode=none`: NetworkManager must not
/// write /etc/resolv.conf or the hostname, which are the real host's.
const NM_CONF: &str = "[main]\nplugins=keyfile\ndns=none\nrc-manager=unmanaged\n\
hostname-mode=none\nauth-polkit=false\n[logging]\nlevel=INFO\n";

/// Where the hook is wired in NetworkManager's dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wiring {
    /// `dispatcher.d/90-vpn-ns` only: vpn-up / vpn-down.
    UpOnly,
    /// Also `dispatcher.d/pre-up.d/90-vpn-ns`: the blocking vpn-pre-up moves the device
    /// before NetworkManager reports the VPN activated.
    PreUp,
}

pub struct NetworkManager {
    pub dbus: Proc,
    pub nm: Proc,
    /// stderr of every hook run plus one `done ACTION ID UUID rc=N` line per run.
    pub hook_log: PathBuf,
    sandbox_pid: u32,
}

/// An NetworkManager VPN connection imported from an .ovpn file.
#[derive(Clone, Debug)]
pub struct NmConnection {
    pub id: String,
    pub uuid: String,
}

impl NetworkManager {
    fn nmcli(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.sandbox_pid.to_string())
            .args(["--net", "--mount", "--", "nmcli"]);
        c
    }

    /// `nmcli ARGS...`: stdout, or the error with stderr and NetworkManager's last log lines.
    pub fn nmcli_run(&self, args: &[&str]) -> Result<String, String> {
        run(self.nmcli().args(args)).map_err(|e| {
            format!(
                "{e}\nNetworkManager log:\n{}",
                tail(&self.nm.log_text(), 40)
            )
        })
    }

    /// Imports an OpenVPN client connection named `id` against the sandbox's test server.
    pub fn import_openvpn(&self, sb: &Sandbox, id: &str) -> NmConnection {
        let p = pki();
        let dir = unique_dir(&sb.dir().join(format!("ovpn-{id}")));
        let file = dir.join(format!("{id}.ovpn"));
        let conf = format!(
            "client\ndev tun\nremote {SERVER_ADDR} {SERVER_PORT} udp\nnobind\nremote-cert-tls server\n\
             ca {}\ncert {}\nkey {}\n",
            p.ca_cert.display(),
            p.client_cert.display(),
            p.client_key.display()
        );
        fs::write(&file, conf).expect("write .ovpn");
        let out = self
            .nmcli_run(&[
                "connection",
                "import",
                "type",
                "openvpn",
                "file",
                &file.display().to_string(),
            ])
            .unwrap_or_else(|e| panic!("nmcli import: {e}"));
        // "Connection 'ID' (UUID) successfully added."
        let uuid = out
            .split_once('(')
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(u, _)| u.to_owned())
            .unwrap_or_else(|| panic!("no uuid in nmcli's answer: {out}"));
        NmConnection {
            id: id.to_owned(),
            uuid,
        }
    }

    /// `nmcli connection up uuid U ifname uplink` (waits until NetworkManager says
    /// activated or failed).
    pub fn up(&self, c: &NmConnection) -> Result<String, String> {
        self.nmcli_run(&[
            "--wait",
            "30",
            "connection",
            "up",
            "uuid",
            &c.uuid,
            "ifname",
            UPLINK,
        ])
    }

    pub fn down(&self, c: &NmConnection) -> Result<String, String> {
        self.nmcli_run(&["--wait", "30", "connection", "down", "uuid", &c.uuid])
    }

    /// The state NetworkManager reports for an active connection (`activated`, ...),
    /// None when it is not active.
    pub fn active_state(&self, c: &NmConnection) -> Option<String> {
        let out = self
            .nmcli_run(&["-t", "-f", "UUID,STATE", "connection", "show", "--active"])
            .ok()?;
        out.lines().find_map(|l| {
            let (u, s) = l.split_once(':')?;
            (u == c.uuid).then(|| s.to_owned())
        })
    }

    /// How many hook runs for `action` and connection `uuid` have finished.
    pub fn hook_runs(&self, action: &str, uuid: &str) -> usize {
        fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() >= 4 && f[0] == "done" && f[1] == action && f[3] == uuid
            })
            .count()
    }

    /// The exit codes of the finished hook runs for `action` and `uuid`.
    pub fn hook_codes(&self, action: &str, uuid: &str) -> Vec<i32> {
        fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() >= 5 && f[0] == "done" && f[1] == action && f[3] == uuid)
                    .then(|| f[4].strip_prefix("rc=")?.parse().ok())
                    .flatten()
            })
            .collect()
    }

    /// Waits until `n` hook runs for `action`/`uuid` finished.
    pub fn wait_hook(
        &self,
        action: &str,
        uuid: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let end = Instant::now() + timeout;
        while self.hook_runs(action, uuid) < n {
            if Instant::now() >= end {
                return Err(format!(
                    "hook {action} for {uuid} did not finish {n} time(s) within {timeout:?}; hook log:\n{}\nNetworkManager log:\n{}",
                    tail(&fs::read_to_string(&self.hook_log).unwrap_or_default(), 40),
                    tail(&self.nm.log_text(), 60)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn hook_log_text(&self) -> String {
        fs::read_to_string(&self.hook_log).unwrap_or_default()
    }
}

fn unique_dir(base: &Path) -> PathBuf {
    for n in 0.. {
        let d = PathBuf::from(format!("{}-{n}", base.display()));
        if fs::create_dir(&d).is_ok() {
            return d;
        }
    }
    unreachable!()
}

/// Pids of processes named `comm` whose network namespace is the sandbox's host one.
pub fn sandbox_pids(sb: &Sandbox, comm: &str) -> Vec<u32> {
    let Ok(mine) = fs::read_link(format!("/proc/{}/ns/net", sb.pid())) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let same_ns = fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l == mine);
        let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
        if same_ns && name.trim() == comm && !zombie {
            v.push(pid);
        }
    }
    v
}

impl Sandbox {
    /// Starts the system bus and NetworkManager in the sandbox's host namespace, with the
    /// repository's dispatcher hook wired as `wiring` says. Call `start_server` first:
    /// the uplink must exist when NetworkManager starts.
    pub fn start_network_manager(&self, wiring: Wiring) -> NetworkManager {
        // A read-only sysfs of the sandbox's own namespace: with a writable one and no
        // udev, NetworkManager leaves devices unmanaged.
        let mut script = String::from("set -e\n");
        for d in NM_DIRS {
            script.push_str(&format!(
                "mkdir -p {d}; mount -t tmpfs -o mode=0755,size=16m vpn-ns-nm {d}\n"
            ));
        }
        script.push_str(
            "umount -l /sys\nmount -t sysfs -o ro sysfs /sys\n\
             mkdir -p /etc/NetworkManager/system-connections /etc/NetworkManager/conf.d \
             /etc/NetworkManager/dispatcher.d/pre-up.d /etc/NetworkManager/dispatcher.d/no-wait.d \
             /etc/NetworkManager/dispatcher.d/pre-down.d\n",
        );
        self.must(&script);
        fs::write(
            self.path("/etc/NetworkManager/NetworkManager.conf"),
            NM_CONF,
        )
        .expect("write NetworkManager.conf");

        let hook_log = self.dir().join("nm-hook.log");
        // $VPN_NS_NM_HOOK: another version of the script (to show a test failing
        // against an older vpn-ns, with VPN_NS_BIN).
        let repo_hook = match std::env::var("VPN_NS_NM_HOOK") {
            Ok(h) if !h.is_empty() => PathBuf::from(h),
            _ => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../hooks/networkmanager/90-vpn-ns")
                .canonicalize()
                .expect("hooks/networkmanager/90-vpn-ns in the repository"),
        };
        // The dispatcher gives scripts no PATH; the wrapper only says where vpn-ns and
        // the test's connection files are, and records each run's exit code.
        let wrapper = format!(
            "#!/bin/sh\nexport VPN_NS={bin} VPN_NS_CONFIG_DIR={dir}\n\
             case \"$2\" in vpn-*) env | grep '^VPN_IP' | sed \"s/^/env $2 /\" >>{log};; esac\n\
             {hook} \"$@\" 2>>{log}\nrc=$?\n\
             echo \"done $2 ${{CONNECTION_ID:-}} ${{CONNECTION_UUID:-}} rc=$rc\" >>{log}\nexit $rc\n",
            bin = crate::vpn_ns_bin(),
            dir = self.config_dir().display(),
            hook = repo_hook.display(),
            log = hook_log.display(),
        );
        let mut targets = vec!["/etc/NetworkManager/dispatcher.d/90-vpn-ns"];
        if wiring == Wiring::PreUp {
            targets.push("/etc/NetworkManager/dispatcher.d/pre-up.d/90-vpn-ns");
        }
        for t in targets {
            let p = self.path(t);
            fs::write(&p, &wrapper).expect("write dispatcher wrapper");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
        }

        let mut c = self.cmd("dbus-daemon");
        c.args(["--system", "--nofork", "--nopidfile"]);
        let mut dbus = self.spawn("dbus", c);
        let end = Instant::now() + Duration::from_secs(10);
        while !self.exists("/run/dbus/system_bus_socket") {
            assert!(
                dbus.is_alive() && Instant::now() < end,
                "private system bus did not start: {}",
                dbus.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut c = self.cmd("NetworkManager");
        c.args(["--no-daemon", "--debug"]);
        let nm = self.spawn("NetworkManager", c);
        let mgr = NetworkManager {
            dbus,
            nm,
            hook_log,
            sandbox_pid: self.pid(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let st = mgr.nmcli_run(&["-t", "-f", "DEVICE,STATE", "device"]);
            if st.as_deref().is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with(&format!("{UPLINK}:connected")))
            }) {
                break;
            }
            assert!(
                Instant::now() < end,
                "NetworkManager did not take over {UPLINK}: {st:?}\nits log:\n{}",
                tail(&mgr.nm.log_text(), 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        mgr
    }
}
