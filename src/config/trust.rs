//! Who may control the files vpn-ns acts on as root.
//!
//! A non-root user who reached vpn-ns through sudo/pkexec/doas must not be able to
//! steer it through files they can write: a connection file names the VPN config that
//! runs as root, the namespace to enter, the `[exec]` policy. So in that case every
//! connection file, the VPN config it names and their directories must be owned by
//! root and writable by nobody else. A root shell is trusted with whatever it reads.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use super::ConfigError;

/// The elevation tool a non-root user came through, once `require_root_owned` ran.
static ELEVATED_BY: OnceLock<&'static str> = OnceLock::new();

/// From now on, refuse files a non-root user could have written. Called once at
/// startup when the invoker came through `who` (sudo, pkexec, doas).
pub fn require_root_owned(who: &'static str) {
    let _ = ELEVATED_BY.set(who);
}

/// Why a file or directory with owner `uid` and `mode` is not trusted, if it is not.
pub fn problem(uid: u32, mode: u32) -> Option<String> {
    if uid != 0 {
        Some(format!("is owned by uid {uid}, not root"))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "is writable by {} (mode {:04o})",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o7777
        ))
    } else {
        None
    }
}

fn refuse(path: &Path, what: &str, why: &str, who: &str, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        line: None,
        message: format!(
            "refusing {what} that {why}: run through {who} by a non-root user, vpn-ns only reads files that root owns and only root can write; fix: {fix}"
        ),
    }
}

/// Checks `meta` (fstat of the file as opened, so it is the file that gets read) and
/// its directory, when the invoker came through sudo/pkexec/doas.
pub fn check_opened(path: &Path, meta: &Metadata) -> Result<(), ConfigError> {
    let Some(who) = ELEVATED_BY.get() else {
        return Ok(());
    };
    if let Some(why) = problem(meta.uid(), meta.mode()) {
        let p = path.display();
        return Err(refuse(
            path,
            "a file",
            &why,
            who,
            &format!("chown root: {p}; chmod go-w {p}"),
        ));
    }
    check_dir(path, who)
}

/// Checks a file that a connection names (a VPN config vpn-ns hands to a program
/// running as root). A missing file is left to the command that needs it.
pub fn check_named(path: &Path) -> Result<(), ConfigError> {
    let Some(who) = ELEVATED_BY.get() else {
        return Ok(());
    };
    match std::fs::metadata(path) {
        Ok(meta) => check_opened(path, &meta),
        Err(_) => check_dir(path, who),
    }
}

/// A directory others can write lets them replace the file after any check.
fn check_dir(path: &Path, who: &str) -> Result<(), ConfigError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    match problem(meta.uid(), meta.mode()) {
        None => Ok(()),
        Some(why) => {
            let d = dir.display();
            Err(refuse(
                path,
                &format!("a file whose directory {d}"),
                &why,
                who,
                &format!("chown root: {d}; chmod go-w {d}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_owned_and_not_writable_by_others_is_trusted() {
        assert_eq!(problem(0, 0o100644), None);
        assert_eq!(problem(0, 0o100600), None);
        assert_eq!(problem(0, 0o040755), None);
        assert_eq!(problem(0, 0o100444), None);
    }

    #[test]
    fn another_owner_is_refused_whatever_the_mode() {
        let why = problem(1000, 0o100600).expect("refused");
        assert!(why.contains("uid 1000"), "{why}");
        assert!(problem(1000, 0o100400).is_some());
    }

    #[test]
    fn group_or_world_writable_is_refused() {
        let g = problem(0, 0o100664).expect("group-writable refused");
        assert!(g.contains("its group") && g.contains("0664"), "{g}");
        let w = problem(0, 0o100646).expect("world-writable refused");
        assert!(w.contains("everyone") && w.contains("0646"), "{w}");
        assert!(problem(0, 0o041777).is_some(), "sticky /tmp-like directory");
    }

    #[test]
    fn refusal_names_the_file_and_the_fix() {
        let e = refuse(
            Path::new("/etc/vpn-ns/w.toml"),
            "a file",
            "is owned by uid 1000, not root",
            "sudo",
            "chown root: /etc/vpn-ns/w.toml; chmod go-w /etc/vpn-ns/w.toml",
        )
        .to_string();
        assert!(e.starts_with("/etc/vpn-ns/w.toml: refusing a file"), "{e}");
        assert!(e.contains("through sudo"), "{e}");
        assert!(
            e.contains("chown root: /etc/vpn-ns/w.toml; chmod go-w /etc/vpn-ns/w.toml"),
            "{e}"
        );
    }
}
