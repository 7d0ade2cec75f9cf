//! Helpers for the `vpn-ns exec` tests: throwaway users, running exec as if through
//! sudo, and a connected sandbox.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::CONNECT;
use crate::openvpn::{ClientOptions, OpenVpnClient, ServerOptions, VpnServer};
use crate::sandbox::{self, Sandbox, describe};

/// Where `vpn-ns exec` reads connection files when invoked through sudo: the sandbox's
/// config directory is bind-mounted here, inside the sandbox only.
pub const SYSTEM_CONF: &str = "/etc/vpn-ns";

static USERS: AtomicU32 = AtomicU32::new(0);
/// Tests run in parallel threads: useradd/groupadd/userdel take /etc's account locks
/// and fail rather than wait when another holds them, and their transient lock files
/// break a concurrent copy of /etc. Everything that touches the account files holds this.
static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds off account changes by other tests of this process (see `ACCOUNTS`).
pub fn accounts_lock() -> std::sync::MutexGuard<'static, ()> {
    ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A user (and a supplementary group) made for one test, removed on drop.
pub struct TestUser {
    pub name: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    pub group_gid: u32,
}

/// Runs a program on the real host (user and group administration), not in a sandbox.
pub fn host(cmd: &str, args: &[&str]) -> Result<String, String> {
    sandbox::run(Command::new(cmd).args(args))
}

impl TestUser {
    pub fn create() -> TestUser {
        let n = format!(
            "{}-{}",
            std::process::id() % 100_000,
            USERS.fetch_add(1, Ordering::SeqCst)
        );
        let (name, group) = (format!("vpnns-test-{n}"), format!("vpnns-tg-{n}"));
        let _accounts = accounts_lock();
        host("groupadd", &[&group]).unwrap_or_else(|e| panic!("{e}"));
        // Constructed before useradd, so a failing useradd still removes the group.
        let mut u = TestUser {
            name: name.clone(),
            group: group.clone(),
            uid: 0,
            gid: 0,
            group_gid: 0,
        };
        host(
            "useradd",
            &["-m", "-U", "-s", "/bin/sh", "-G", &group, &name],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let id = |flag: &str, who: &str| -> u32 {
            host("id", &[flag, who])
                .unwrap_or_else(|e| panic!("{e}"))
                .trim()
                .parse()
                .expect("numeric id")
        };
        u.uid = id("-u", &name);
        u.gid = id("-g", &name);
        u.group_gid = host("getent", &["group", &group])
            .unwrap_or_else(|e| panic!("{e}"))
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("gid of the supplementary group");
        u
    }

    pub fn home(&self) -> PathBuf {
        PathBuf::from(format!("/home/{}", self.name))
    }

    /// A directory the user owns inside the sandbox's directory.
    pub fn owned_dir(&self, sb: &Sandbox, name: &str) -> PathBuf {
        let d = sb.dir().join(name);
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(self.uid), Some(self.gid)).unwrap();
        fs::set_permissions(sb.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        d
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _accounts = accounts_lock();
        if let Err(e) = host("userdel", &["-r", "-f", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = host("groupdel", &[&self.group]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Makes the sandbox's config directory the system one (inside the sandbox only):
/// through sudo, vpn-ns refuses --config-dir.
pub fn use_system_conf(sb: &Sandbox) {
    fs::create_dir_all(SYSTEM_CONF).expect("create the /etc/vpn-ns mount point");
    sb.must(&format!(
        "mount --bind {} {SYSTEM_CONF}",
        sb.config_dir().display()
    ));
}

/// `vpn-ns exec ARGS` in the sandbox host ns; `as_user` simulates `sudo` by that user,
/// None is a real root shell (with --config-dir).
pub fn exec_cmd(sb: &Sandbox, as_user: Option<&TestUser>, args: &[&str]) -> Command {
    let mut c = sb.vpn_ns();
    for v in [
        "SUDO_UID",
        "SUDO_GID",
        "SUDO_USER",
        "PKEXEC_UID",
        "DOAS_USER",
        "VPN_NS_CONFIG_DIR",
    ] {
        c.env_remove(v);
    }
    match as_user {
        Some(u) => {
            c.env("SUDO_UID", u.uid.to_string())
                .env("SUDO_GID", u.gid.to_string())
                .env("SUDO_USER", &u.name);
        }
        None => {
            c.arg("--config-dir").arg(sb.config_dir());
        }
    }
    c.arg("exec").args(args);
    c
}

pub fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&c)))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and requires success; returns stdout.
pub fn ok(c: Command) -> String {
    let d = describe(&c);
    let o = output(c);
    assert!(
        o.status.success(),
        "`{d}` failed ({}): {}{}",
        o.status,
        text(&o.stderr),
        text(&o.stdout)
    );
    text(&o.stdout)
}

/// A sandbox with the server up and connection `work` connected through the hook.
pub fn connected(name: &str, conn_toml: &str) -> (Sandbox, VpnServer, OpenVpnClient) {
    let sb = Sandbox::new(name);
    let srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", conn_toml);
    let mut client = sb.start_client("work", &ClientOptions::default());
    client
        .wait_connected(CONNECT)
        .unwrap_or_else(|e| panic!("{e}"));
    (sb, srv, client)
}

pub fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A directory on the real host that a test needs as a mount point (it mounts over it
/// inside its sandbox only); the directories it had to create are removed on drop.
pub struct MountPoint(Vec<PathBuf>);

impl MountPoint {
    pub fn new(p: &str) -> MountPoint {
        let mut created = Vec::new();
        let mut cur = Some(Path::new(p));
        while let Some(d) = cur.filter(|d| !d.exists()) {
            created.push(d.to_owned());
            cur = d.parent();
        }
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("cannot create {p}: {e}"));
        MountPoint(created)
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        // Deepest first; a directory something else started using stays.
        for d in &self.0 {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Fails the test with the package to install when `prog` is not on PATH.
pub fn need(prog: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{prog} is not installed; this test needs it: apt-get install -y {package}"
    );
}
