//! Helpers for the reliability tests (tests/faults.rs, tests/concurrency.rs): the
//! OpenVPN hook run the way OpenVPN runs it, but on a persistent tun device made with
//! `ip tuntap` (so a killed hook leaves the device where it was), and whole-sandbox
//! checks: no namespace without a known owner, nothing of a tunnel on the host.

use std::process::{Command, Output, Stdio};

use crate::checks::expect_ok;
use crate::{Sandbox, describe};

/// A fake tunnel for connection `conn`: persistent tun `dev`, addresses from
/// 100.64.`n`.0/24, a pushed route to 203.0.113.0/24 and a pushed DNS server.
#[derive(Debug, Clone)]
pub struct FakeTun {
    pub conn: String,
    pub dev: String,
    pub n: u8,
}

impl FakeTun {
    /// Writes `<conn>.toml` (`extra` appended) and creates the tun device.
    pub fn new(sb: &Sandbox, conn: &str, dev: &str, n: u8, extra: &str) -> FakeTun {
        sb.write_conn(conn, &format!("type = \"openvpn\"\n{extra}"));
        expect_ok(sb.ip(None, &["tuntap", "add", "dev", dev, "mode", "tun"]));
        FakeTun {
            conn: conn.to_owned(),
            dev: dev.to_owned(),
            n,
        }
    }

    pub fn local(&self) -> String {
        format!("100.64.{}.2", self.n)
    }

    /// `vpn-ns hook openvpn <conn>` with OpenVPN's environment for `phase` ("up" or
    /// "down"); `fault` sets `$VPN_NS_FAULT` (fault-injection builds).
    pub fn hook(&self, sb: &Sandbox, phase: &str, fault: Option<&str>) -> Command {
        let mut cmd = sb.vpn_ns();
        cmd.arg("-q")
            .arg("--config-dir")
            .arg(sb.config_dir())
            .args(["hook", "openvpn", &self.conn])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("script_type", phase)
            .env("script_context", "init")
            .env("dev", &self.dev)
            .env("dev_type", "tun")
            .env("tun_mtu", "1500")
            .env("ifconfig_local", self.local())
            .env("ifconfig_netmask", "255.255.255.0")
            .env("route_vpn_gateway", format!("100.64.{}.1", self.n))
            .env("route_network_1", "203.0.113.0")
            .env("route_netmask_1", "255.255.255.0")
            .env("route_gateway_1", format!("100.64.{}.1", self.n))
            .env("foreign_option_1", "dhcp-option DNS 203.0.113.53")
            .stdin(Stdio::null());
        if let Some(f) = fault {
            cmd.env("VPN_NS_FAULT", f);
        }
        cmd
    }

    /// Runs the hook and returns its output (whatever the exit status).
    pub fn run_hook(&self, sb: &Sandbox, phase: &str, fault: Option<&str>) -> Output {
        let mut cmd = self.hook(sb, phase, fault);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(&cmd)))
    }

    /// Runs the hook and panics unless it exits 0.
    pub fn must_hook(&self, sb: &Sandbox, phase: &str) {
        let out = self.run_hook(sb, phase, None);
        assert!(
            out.status.success(),
            "hook {phase} of {} failed ({}): {}",
            self.conn,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The connection is fully up: namespace, device inside with its address, the
    /// pushed and default routes, DNS files, and a state record saying so.
    pub fn assert_up(&self, sb: &Sandbox) {
        let ns = self.conn.as_str();
        assert!(
            sb.netns_list().iter().any(|n| n == ns),
            "namespace {ns} missing: {:?}",
            sb.netns_list()
        );
        assert!(
            sb.links_in(Some(ns)).contains(&self.dev),
            "{} is not in namespace {ns}: {:?}",
            self.dev,
            sb.links_in(Some(ns))
        );
        let addrs = expect_ok(sb.ip(Some(ns), &["-o", "addr", "show", "dev", &self.dev]));
        assert!(
            addrs.contains(&format!("inet {}/24", self.local())),
            "{} in {ns} lacks {}: {addrs}",
            self.dev,
            self.local()
        );
        let routes = expect_ok(sb.ip(Some(ns), &["route"]));
        assert!(
            routes.contains("203.0.113.0/24") && routes.contains("default"),
            "routes in {ns}: {routes}"
        );
        assert!(
            sb.exists(&format!("/etc/netns/{ns}/resolv.conf")),
            "/etc/netns/{ns}/resolv.conf missing"
        );
        let st = state_text(sb, &self.conn).unwrap_or_else(|| panic!("no state for {ns}"));
        assert!(
            st.contains("\"up\": true") && !st.contains("\"creating\""),
            "state of {ns} is not a finished up: {st}"
        );
    }

    /// Down left nothing: no namespace, DNS files or state; the device is back in the
    /// host namespace with none of the tunnel's addresses.
    pub fn assert_down(&self, sb: &Sandbox) {
        crate::assert_gone(sb, &self.conn, &self.conn);
        assert!(
            sb.links_in(None).contains(&self.dev),
            "{} was not handed back to the host namespace: {:?}",
            self.dev,
            sb.links_in(None)
        );
    }
}

/// `/run/vpn-ns/<conn>.json`, if any.
pub fn state_text(sb: &Sandbox, conn: &str) -> Option<String> {
    sb.read(&format!("/run/vpn-ns/{conn}.json"))
}

/// SIGKILLs the keeper recorded for `conn` and waits until it is dead (exited or a
/// zombie), so the connection is unattended: for tests of what vpn-ns does when nothing
/// watches a connection (the keeper's own reactions are tested in tests/keeper.rs).
pub fn kill_keeper(sb: &Sandbox, conn: &str) {
    let st = state_text(sb, conn).unwrap_or_else(|| panic!("no state for {conn}"));
    // `"keeper": {"pid": N, "start": T}` in the pretty-printed record.
    let pid = st
        .split("\"keeper\"")
        .nth(1)
        .and_then(|k| k.split("\"pid\": ").nth(1))
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no keeper recorded: {st}"));
    assert!(
        crate::sys::send_signal(pid, crate::sys::SIGKILL),
        "cannot SIGKILL keeper {pid}"
    );
    expect_ok(crate::wait_until(
        std::time::Duration::from_secs(5),
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) if !s.contains(") Z ") => Err(format!("keeper {pid} still runs")),
            _ => Ok(()),
        },
    ));
}

/// Nothing of any tunnel reached the sandbox host namespace: no 100.64.x.x address on
/// any device, no route to the pushed network, no default route (the sandbox host has
/// none of its own).
pub fn assert_no_tunnel_on_host(sb: &Sandbox, when: &str) {
    let addrs = expect_ok(sb.ip(None, &["-o", "addr"]));
    assert!(
        !addrs.contains(" 100.64."),
        "{when}: a tunnel address is configured in the host namespace:\n{addrs}"
    );
    for family in ["-4", "-6"] {
        let routes = expect_ok(sb.ip(None, &[family, "route"]));
        assert!(
            !routes.contains("203.0.113.") && !routes.contains("default"),
            "{when}: a tunnel route is in the host namespace ({family}):\n{routes}"
        );
    }
}

/// Every named namespace (including a bare `/run/netns` file) but the test's own
/// (`test_made`, e.g. a server's) has a state record that names it as created by
/// vpn-ns: none is left whose owner is unknown.
pub fn assert_owners_known(sb: &Sandbox, test_made: &[&str], when: &str) {
    let records: Vec<String> = sb
        .dir_entries("/run/vpn-ns")
        .iter()
        .filter(|f| f.ends_with(".json"))
        .filter_map(|f| sb.read(&format!("/run/vpn-ns/{f}")))
        .collect();
    for ns in sb.dir_entries("/run/netns") {
        if test_made.contains(&ns.as_str()) {
            continue;
        }
        let owned = records.iter().any(|r| {
            r.contains(&format!("\"netns\": \"{ns}\"")) && r.contains("\"netns_created\": true")
        });
        assert!(
            owned,
            "{when}: namespace {ns} has no state record naming vpn-ns as its creator; records: {records:?}"
        );
    }
}

/// A process living inside a namespace that probes a TCP service every 200 ms and
/// appends `up` or `down` to its log: the view of an application that stays in a
/// persistent namespace across VPN reconnects.
pub struct Prober {
    pub proc: crate::sandbox::Proc,
}

impl Prober {
    pub fn start(sb: &Sandbox, ns: &str, addr: &str, port: u16) -> Prober {
        let script = format!(
            "while :; do \
               if socat -T1 -u TCP:{addr}:{port},connect-timeout=1 STDOUT >/dev/null 2>&1; \
               then echo up; else echo down; fi; sleep 0.2; \
             done"
        );
        let mut c = sb.ns_cmd(ns, "sh");
        c.args(["-c", &script]);
        Prober {
            proc: sb.spawn(&format!("prober-{ns}"), c),
        }
    }

    /// Lines logged so far.
    pub fn lines(&self) -> usize {
        self.proc.log_text().lines().count()
    }

    /// Waits until a line equal to `want` is logged after line `from`, then checks
    /// that the probe keeps agreeing: the next three lines are `want` too.
    pub fn wait_for(&mut self, want: &str, from: usize, timeout: std::time::Duration) {
        let r = crate::wait_until(timeout, || {
            let text = self.proc.log_text();
            let after: Vec<&str> = text.lines().skip(from).collect();
            match after.iter().position(|l| *l == want) {
                Some(i) if after.len() >= i + 4 && after[i..i + 4].iter().all(|l| *l == want) => {
                    Ok(())
                }
                _ => Err(format!(
                    "the process inside has not seen `{want}` steadily since line {from}: {:?}",
                    after.iter().rev().take(8).collect::<Vec<_>>()
                )),
            }
        });
        expect_ok(r);
        assert!(self.proc.is_alive(), "the process inside died");
    }

    /// The prober still lives in the namespace whose inode is `ino`.
    pub fn assert_in(&mut self, ino: u64) {
        assert!(self.proc.is_alive(), "the process inside died");
        let net = std::fs::read_link(format!("/proc/{}/ns/net", self.proc.pid()))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert_eq!(
            net,
            format!("net:[{ino}]"),
            "the process left the namespace"
        );
    }
}
