//! Integration-test harness: per-test sandboxes (own network + mount namespace),
//! a test PKI, real OpenVPN server/client peers and inspection helpers.
//!
//! A library rather than a `tests/common` module: each integration test uses only part
//! of it, and a library's public items are not dead code.

pub mod checks;
pub mod exec;
pub mod nm;
pub mod nm_lab;
pub mod openvpn;
pub mod pki;
pub mod reliability;
pub mod sandbox;
pub mod sys;
pub mod user_session;
pub mod wireguard;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use checks::*;
pub use openvpn::*;
pub use sandbox::{Sandbox, describe, tail};

/// The vpn-ns binary under test: `$VPN_NS_BIN` (packaging tests point it at
/// /usr/bin/vpn-ns) or the one cargo built next to the test executable
/// (`target/<profile>/deps/<test>-<hash>` -> `target/<profile>/vpn-ns`).
pub fn vpn_ns_bin() -> String {
    match std::env::var("VPN_NS_BIN") {
        Ok(b) if !b.is_empty() => b,
        _ => {
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test executable lives in target/<profile>/deps");
            profile_dir.join("vpn-ns").display().to_string()
        }
    }
}

/// Whether the integration tests can run here (root and /dev/net/tun). When they cannot,
/// the test fails with a message that says what to run instead: a test that did not
/// run must never be reported as passed. Returns true so call sites read
/// `if !require_root(..) { return; }`, which stays correct if this ever returns false.
pub fn require_root(test: &str) -> bool {
    let mut missing = Vec::new();
    if sys::effective_uid() != 0 {
        missing.push("root");
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun");
    }
    if !missing.is_empty() {
        panic!(
            "{test} cannot run here (missing: {}): the integration tests create namespaces \
             and tun devices; run them with `sudo scripts/test.sh`, or `cargo test --lib` \
             for the unit tests alone",
            missing.join(", ")
        );
    }
    true
}

/// Runs `vpn-ns --config-dir <the sandbox's dir> ARGS...` in the sandbox, stdin closed.
pub fn vpn_ns(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut c = sb.vpn_ns();
    c.arg("--config-dir")
        .arg(sb.config_dir())
        .args(args)
        .stdin(std::process::Stdio::null());
    c.output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&c)))
}

/// `vpn_ns`, failing the test with the output unless it succeeded.
pub fn vpn_ns_ok(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let o = vpn_ns(sb, args);
    assert!(o.status.success(), "vpn-ns {args:?} failed:\n{}", out(&o));
    o
}

/// A command's status, stdout and stderr, for an assertion message.
pub fn out(o: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Fails the test with the command's output unless it succeeded.
pub fn assert_success(what: &str, o: &std::process::Output) {
    assert!(o.status.success(), "{what} failed: {}", out(o));
}

/// Writes `<dir>/<name>.toml` and returns its path.
pub fn write_conn(dir: &Path, name: &str, toml_text: &str) -> PathBuf {
    fs::create_dir_all(dir).expect("create config dir");
    let p = dir.join(format!("{name}.toml"));
    fs::write(&p, toml_text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
    p
}

/// How many times `needle` occurs in the file (0 when it does not exist).
pub fn count_in_log(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .map(|t| t.matches(needle).count())
        .unwrap_or(0)
}

/// Polls `path` every 50 ms until it contains `needle`.
pub fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        if count_in_log(path, needle) > 0 {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!(
                "{needle:?} did not appear in {} within {timeout:?}; the log:\n{}",
                path.display(),
                tail(&fs::read_to_string(path).unwrap_or_default(), 80)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 50 ms until it returns Ok, or returns its last error.
pub fn wait_until<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let end = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => {
                return Err(format!("still failing after {timeout:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
