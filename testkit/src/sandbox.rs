//! An isolated "host" per test: a holder process in a fresh network + mount namespace
//! with tmpfs over the directories vpn-ns writes to. Every command of a test runs
//! inside it through `nsenter`; dropping the sandbox kills everything that lives in it.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// Directories that get a private tmpfs inside every sandbox.
pub const PRIVATE_DIRS: [&str; 4] = ["/run/netns", "/run/vpn-ns", "/run/wireguard", "/etc/netns"];

/// The directory whose tmpfs identifies "a process of this sandbox" (see `kill_all`).
const MARKER_DIR: &str = "/run/vpn-ns";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, returning stdout on success, else a message with the status and stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`{}` failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!(" [stdout: {}]", stdout.trim())
            }
        ))
    }
}

/// A background process started by a test. Dropping it kills (SIGKILL) and reaps it.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited (reaps it when it has).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn signal(&mut self, sig: i32) -> bool {
        self.is_alive() && sys::send_signal(self.pid(), sig)
    }

    /// Waits (polling) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL. Err when it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(st) = self.try_status() {
            return Ok(st);
        }
        sys::send_signal(self.pid(), sys::SIGTERM);
        if let Some(st) = self.wait_exit(timeout) {
            return Ok(st);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(format!(
            "{} (pid {}) did not exit within {timeout:?} after SIGTERM; killed it",
            self.name,
            self.pid()
        ))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Sandbox {
    name: String,
    holder: Child,
    pid: u32,
    dir: PathBuf,
    /// `major:minor` of the sandbox's tmpfs on MARKER_DIR.
    marker: String,
    logs: AtomicU32,
}

impl Sandbox {
    /// Starts a sandbox. Panics when it cannot (run `require_root()` first).
    pub fn new(name: &str) -> Sandbox {
        for d in PRIVATE_DIRS {
            // Mount points for the tmpfs mounts inside; empty directories on the host.
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("cannot create {d}: {e}"));
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("vpn-ns-test-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("conf")).expect("create sandbox dir");

        let script = format!(
            "set -e\n\
             for d in {dirs}; do mount -t tmpfs -o mode=0755,size=16m vpn-ns-test \"$d\"; done\n\
             ip link set lo up\n\
             echo ready\n\
             exec sleep infinity >/dev/null 2>&1 </dev/null\n",
            dirs = PRIVATE_DIRS.join(" ")
        );
        let err_path = dir.join("holder.stderr");
        let mut holder = Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&err_path).expect("holder stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `unshare` (util-linux): {e}"));
        let mut line = String::new();
        let mut out = BufReader::new(holder.stdout.take().expect("holder stdout"));
        let _ = out.read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!(
                "sandbox {name}: the namespace holder did not start: {}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        let pid = holder.id();
        let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let marker = mountinfo
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 4 && f[4] == MARKER_DIR)
            .map(|f| f[2].to_owned())
            .expect("sandbox tmpfs on /run/vpn-ns missing from mountinfo");
        Sandbox {
            name: name.to_owned(),
            holder,
            pid,
            dir,
            marker,
            logs: AtomicU32::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pid of the holder process (its namespaces are the sandbox's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The test's private temporary directory (configs, logs), on the real filesystem
    /// (visible inside the sandbox at the same path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `--config-dir` for vpn-ns.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// Writes `<config_dir>/<name>.toml`.
    pub fn write_conn(&self, name: &str, toml: &str) -> PathBuf {
        crate::write_conn(&self.config_dir(), name, toml)
    }

    /// A fresh log file path `<dir>/<stem>.log` (`<stem>-N.log` when taken).
    pub fn new_log(&self, stem: &str) -> PathBuf {
        let p = self.dir.join(format!("{stem}.log"));
        if !p.exists() {
            return p;
        }
        loop {
            let n = self.logs.fetch_add(1, Ordering::SeqCst) + 2;
            let p = self.dir.join(format!("{stem}-{n}.log"));
            if !p.exists() {
                return p;
            }
        }
    }

    /// `prog` to be run in the sandbox's host namespace (net + mount).
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.pid.to_string())
            .args(["--net", "--mount", "--"])
            .arg(prog);
        c
    }

    /// `prog` run inside the named namespace `ns` of the sandbox (`ip netns exec`).
    pub fn ns_cmd(&self, ns: &str, prog: &str) -> Command {
        let mut c = self.cmd("ip");
        c.args(["netns", "exec", ns, prog]);
        c
    }

    /// `cmd` for `None` (the sandbox host ns) or `ns_cmd` for `Some(ns)`.
    pub fn cmd_in(&self, ns: Option<&str>, prog: &str) -> Command {
        match ns {
            None => self.cmd(prog),
            Some(ns) => self.ns_cmd(ns, prog),
        }
    }

    /// The vpn-ns binary under test, run in the sandbox host ns.
    pub fn vpn_ns(&self) -> Command {
        self.cmd(&crate::vpn_ns_bin())
    }

    /// `sh -c script` in the sandbox host ns.
    pub fn sh(&self, script: &str) -> Result<String, String> {
        run(self.cmd("sh").args(["-c", script]))
    }

    /// Like `sh`, panicking on failure.
    pub fn must(&self, script: &str) -> String {
        self.sh(script)
            .unwrap_or_else(|e| panic!("sandbox {}: {e}", self.name))
    }

    /// Starts `cmd` in the background with stdout and stderr appended to a fresh
    /// `<dir>/<name>.log`.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Proc {
        let log = self.new_log(name);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup log"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));
        Proc {
            name: name.to_owned(),
            log,
            child,
        }
    }

    /// `ip [-n ns] ARGS...`
    pub fn ip(&self, ns: Option<&str>, args: &[&str]) -> Result<String, String> {
        let mut c = self.cmd("ip");
        if let Some(ns) = ns {
            c.args(["-n", ns]);
        }
        run(c.args(args))
    }

    /// Interface names in `ns` (None: the sandbox host ns), from `ip -o link`.
    pub fn links_in(&self, ns: Option<&str>) -> Vec<String> {
        let out = self
            .ip(ns, &["-o", "link", "show"])
            .unwrap_or_else(|e| panic!("{e}"));
        parse_link_names(&out)
    }

    /// True when a TUN device exists in `ns` (None: sandbox host ns), whatever its name.
    pub fn has_tun(&self, ns: Option<&str>) -> bool {
        let out = self
            .ip(ns, &["-d", "-o", "link", "show"])
            .unwrap_or_else(|e| panic!("{e}"));
        out.lines().any(|l| l.contains(" tun type "))
    }

    /// Named namespaces of the sandbox (`ip netns list`), sorted.
    pub fn netns_list(&self) -> Vec<String> {
        let out = self
            .ip(None, &["netns", "list"])
            .unwrap_or_else(|e| panic!("{e}"));
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// `ip [-n ns] route get ADDR`: Ok(route) or Err (e.g. "Network is unreachable").
    pub fn route_get(&self, ns: Option<&str>, addr: &str) -> Result<String, String> {
        self.ip(ns, &["route", "get", addr])
    }

    /// A path as seen inside the sandbox's mount namespace, readable from the test.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid))
    }

    pub fn exists(&self, p: &str) -> bool {
        self.path(p).exists()
    }

    pub fn read(&self, p: &str) -> Option<String> {
        fs::read_to_string(self.path(p)).ok()
    }

    /// Entries of a directory inside the sandbox (empty when absent), sorted.
    pub fn dir_entries(&self, p: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(p))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The inode of namespace `ns` (as in `/proc/PID/ns/net` = `net:[INODE]`).
    pub fn netns_inode(&self, ns: &str) -> Option<u64> {
        fs::metadata(self.path(&format!("/run/netns/{ns}")))
            .ok()
            .map(|m| m.ino())
    }

    /// Connects to `addr:port` over TCP from `ns` (None: the sandbox host ns) and
    /// returns the first line the peer sent, or the error.
    pub fn tcp_get(&self, ns: Option<&str>, addr: &str, port: u16) -> Result<String, String> {
        let target = if addr.contains(':') {
            format!("TCP:[{addr}]:{port},connect-timeout=2")
        } else {
            format!("TCP:{addr}:{port},connect-timeout=2")
        };
        // -u: only peer -> stdout, so the answer is not raced by our stdin's EOF.
        let mut c = self.cmd_in(ns, "socat");
        c.args(["-T2", "-u", &target, "STDOUT"]);
        let out = run(&mut c)?;
        match out.lines().next() {
            Some(l) if !l.is_empty() => Ok(l.to_owned()),
            _ => Err(format!("`{}` returned no line", describe(&c))),
        }
    }

    /// Everything useful to see when a test failed: namespaces, links, addresses,
    /// routes, and every log of the test.
    pub fn diagnostics(&self) -> String {
        let mut s = format!(
            "===== sandbox {} (holder pid {}, dir {}) =====\n",
            self.name,
            self.pid,
            self.dir.display()
        );
        let mut show = |title: &str, r: Result<String, String>| {
            s.push_str(&format!("--- {title}\n"));
            match r {
                Ok(o) => s.push_str(&o),
                Err(e) => s.push_str(&format!("(error: {e})\n")),
            }
        };
        show("[host] ip addr", self.ip(None, &["addr"]));
        show("[host] ip route", self.ip(None, &["route"]));
        show("[host] ip -6 route", self.ip(None, &["-6", "route"]));
        let nss = self.ip(None, &["netns", "list"]);
        let names: Vec<String> = nss
            .as_deref()
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        show("ip netns list", nss);
        for ns in &names {
            show(
                &format!("[{ns}] ip -d addr"),
                self.ip(Some(ns), &["-d", "addr"]),
            );
            show(&format!("[{ns}] ip route"), self.ip(Some(ns), &["route"]));
            show(
                &format!("[{ns}] ip -6 route"),
                self.ip(Some(ns), &["-6", "route"]),
            );
        }
        for d in ["/run/vpn-ns", "/etc/netns"] {
            show(
                &format!("find {d}"),
                self.sh(&format!("find {d} -exec ls -ld {{}} +")),
            );
        }
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.extend(
            fs::read_dir(self.config_dir())
                .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        files.sort();
        for f in files {
            let name = f.to_string_lossy();
            let wanted = [".log", ".conf", ".toml", ".stderr"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if wanted && f.is_file() {
                s.push_str(&format!("--- {name}\n"));
                s.push_str(&tail(&fs::read_to_string(&f).unwrap_or_default(), 200));
            }
        }
        s.push_str("===== end of sandbox diagnostics =====\n");
        s
    }

    /// Network-namespace identities that belong to the sandbox.
    fn namespaces(&self) -> HashSet<String> {
        let mut set = HashSet::new();
        if let Ok(l) = fs::read_link(format!("/proc/{}/ns/net", self.pid)) {
            set.insert(l.to_string_lossy().into_owned());
        }
        for ns in self.dir_entries("/run/netns") {
            if let Some(ino) = self.netns_inode(&ns) {
                set.insert(format!("net:[{ino}]"));
            }
        }
        set
    }

    /// Pids (other than the holder and us) that live in one of the sandbox's network
    /// namespaces or in a mount namespace derived from the sandbox's.
    fn members(&self, nets: &HashSet<String>) -> Vec<u32> {
        let me = std::process::id();
        let mut v = Vec::new();
        let Ok(rd) = fs::read_dir("/proc") else {
            return v;
        };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me || pid == self.pid {
                continue;
            }
            let Ok(net) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
                continue; // gone, or a zombie
            };
            let member = nets.contains(net.to_string_lossy().as_ref())
                || fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                    .map(|mi| {
                        mi.lines().any(|l| {
                            let f: Vec<&str> = l.split(' ').collect();
                            f.len() > 4 && f[2] == self.marker && f[4] == MARKER_DIR
                        })
                    })
                    .unwrap_or(false);
            if member {
                v.push(pid);
            }
        }
        v
    }

    /// SIGKILLs every process of the sandbox except the holder, until none is left.
    fn kill_all(&self) {
        let nets = self.namespaces();
        for _ in 0..100 {
            let pids = self.members(&nets);
            if pids.is_empty() {
                return;
            }
            for p in pids {
                sys::send_signal(p, sys::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("sandbox {}: processes survived SIGKILL", self.name);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!("{}", self.diagnostics());
        }
        self.kill_all();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if failed || std::env::var_os("VPN_NS_TEST_KEEP").is_some() {
            eprintln!(
                "sandbox {}: kept its files in {}",
                self.name,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Names from `ip -o link` output ("3: eth0@if2: <...> ...").
pub fn parse_link_names(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
    v.sort();
    v
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut s = String::new();
    if start > 0 {
        s.push_str(&format!("[... {start} earlier lines ...]\n"));
    }
    for l in &lines[start..] {
        s.push_str(l);
        s.push('\n');
    }
    s
}
