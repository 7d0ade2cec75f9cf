//! net.ipv4.ip_forward for routed connections: on while at least one routed connection
//! is up, back to the value it had before the first one once the last is down.
//!
//! Each routed connection that needs forwarding holds a marker file
//! `/run/vpn-ns/@forwarding/<conn>`; the value found before the first marker is kept in
//! `/run/vpn-ns/@forwarding/.saved`. Both change only under one flock, so connections
//! coming up and going down at the same time cannot lose the original value. (`@` cannot
//! start a connection name's state file, which are `<conn>.json`.)

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const SAVED: &str = ".saved";

fn dir() -> PathBuf {
    crate::state::run_dir().join("@forwarding")
}

fn lock(dir: &Path) -> anyhow::Result<Flock<File>> {
    crate::state::ensure_dir()?;
    crate::owned::ensure_dir(dir, 0o755)?;
    let p = dir.join(".lock");
    let f = crate::owned::open_write(&p, 0o600, false)?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| io::Error::from(e))
        .with_context(|| format!("cannot lock {}", p.display()))
}

fn read_forward() -> anyhow::Result<String> {
    Ok(fs::read_to_string(IP_FORWARD)
        .with_context(|| format!("cannot read {IP_FORWARD}"))?
        .trim()
        .to_owned())
}

fn write_forward(v: &str) -> anyhow::Result<()> {
    fs::write(IP_FORWARD, format!("{v}\n"))
        .with_context(|| format!("cannot write {v} to {IP_FORWARD}"))
}

/// Turns forwarding on for `conn`, remembering the original value if it is the first.
pub fn enable(conn: &str) -> anyhow::Result<()> {
    let d = dir();
    let _lock = lock(&d)?;
    let saved = d.join(SAVED);
    let current = read_forward()?;
    if !saved.exists() {
        // Atomic: a crash must not leave an empty value that nothing could restore.
        crate::state::write_atomic(&saved, current.as_bytes())?;
    }
    let marker = d.join(conn);
    crate::owned::open_write(&marker, 0o644, true)?;
    if current != "1" {
        write_forward("1")?;
        tracing::debug!("{IP_FORWARD}: {current} -> 1");
    }
    Ok(())
}

/// Drops `conn`'s claim; the last one out restores the original value.
/// Returns the value restored, if this was the last.
pub fn release(conn: &str) -> anyhow::Result<Option<String>> {
    let d = dir();
    if !d.exists() {
        return Ok(None);
    }
    let _lock = lock(&d)?;
    match fs::remove_file(d.join(conn)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("cannot remove {}", d.join(conn).display())),
    }
    let others = fs::read_dir(&d)
        .with_context(|| format!("cannot read {}", d.display()))?
        .filter_map(|e| e.ok())
        .any(|e| !e.file_name().to_string_lossy().starts_with('.'));
    if others {
        return Ok(None);
    }
    let saved = d.join(SAVED);
    let Ok(original) = fs::read_to_string(&saved) else {
        return Ok(None);
    };
    let original = original.trim().to_owned();
    if matches!(original.as_str(), "0" | "1") {
        write_forward(&original)?;
    }
    fs::remove_file(&saved).with_context(|| format!("cannot remove {}", saved.display()))?;
    Ok(Some(original))
}
