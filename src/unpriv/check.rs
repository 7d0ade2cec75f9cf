//! `vpn-ns check` for a normal user: can this host run a user connection? The sysctls
//! that forbid user namespaces are read and explained, then a forked child tries what
//! the keeper does (user namespace, network namespace, tun) and says which step failed;
//! then the user's connection files are loaded as `up` would.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use super::conf;

/// The host settings that decide whether an unprivileged user namespace is allowed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sysctls {
    /// kernel.unprivileged_userns_clone (Debian/Ubuntu kernels only).
    pub userns_clone: Option<u64>,
    /// user.max_user_namespaces.
    pub max_user_namespaces: Option<u64>,
    /// kernel.apparmor_restrict_unprivileged_userns (Ubuntu 23.10 and later).
    pub apparmor_restrict: Option<u64>,
}

fn read_num(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Sysctls {
    pub fn read() -> Sysctls {
        Sysctls {
            userns_clone: read_num("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read_num("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: read_num("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

/// What forbids user connections here, with the change that allows them.
pub fn problems(s: &Sysctls) -> Vec<String> {
    let mut out = Vec::new();
    if s.userns_clone == Some(0) {
        out.push(
            "kernel.unprivileged_userns_clone = 0: unprivileged user namespaces are disabled; \
             as root: sysctl -w kernel.unprivileged_userns_clone=1 (and set it in \
             /etc/sysctl.d/ to keep it)"
                .to_owned(),
        );
    }
    if s.max_user_namespaces == Some(0) {
        out.push(
            "user.max_user_namespaces = 0: no user namespace may be created; as root: \
             sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/)"
                .to_owned(),
        );
    }
    if s.apparmor_restrict == Some(1) {
        out.push(
            "kernel.apparmor_restrict_unprivileged_userns = 1 (AppArmor, as on recent Ubuntu): \
             a user namespace is created without capabilities unless the program has an \
             AppArmor profile with `userns,`; as root either install a profile for \
             /usr/bin/vpn-ns (abi <abi/4.0>, profile vpn-ns /usr/bin/vpn-ns flags=(unconfined) \
             { userns, } in /etc/apparmor.d/vpn-ns, then apparmor_parser -r) or \
             sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
                .to_owned(),
        );
    }
    out
}

/// The probe's steps, numbered as its exit code reports the first that failed.
const STEPS: [&str; 4] = [
    "create a user namespace",
    "map the user into it",
    "create a network namespace in it",
    "create a tun device in it",
];

fn probe_child() -> i32 {
    use nix::sched::{CloneFlags, unshare};
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    if unshare(CloneFlags::CLONE_NEWUSER).is_err() {
        return 10;
    }
    let map = [
        ("setgroups", "deny".to_owned()),
        ("uid_map", super::ns::self_map(uid)),
        ("gid_map", super::ns::self_map(gid)),
    ];
    if map
        .iter()
        .any(|(f, t)| std::fs::write(format!("/proc/self/{f}"), t).is_err())
    {
        return 11;
    }
    if unshare(CloneFlags::CLONE_NEWNET).is_err() {
        return 12;
    }
    match crate::wireguard::builtin::tun::create(None, "vpnnsprobe0") {
        Ok(_) => 0,
        Err(_) => 13,
    }
}

/// Forks a child that tries each step; the first failing step, if any.
fn probe() -> Result<Option<&'static str>, String> {
    // SAFETY: the CLI is single-threaded here.
    match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            let code = probe_child();
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(None),
            Ok(WaitStatus::Exited(_, c)) if (10..14).contains(&c) => {
                Ok(Some(STEPS[(c - 10) as usize]))
            }
            other => Err(format!("the probe ended oddly: {other:?}")),
        },
    }
}

/// Host first (exit 1 when it cannot run a user connection), then the user's
/// connection files, or only `only`: a file that would not load is a problem (exit 2,
/// as root's `check`), a `[[publish]]` or `[[host-access]]` entry that exposes more than
/// loopback is a warning. The host is checked even when the config directory cannot
/// be found (`config_dir` is asked only afterwards).
pub fn run(
    config_dir: impl FnOnce() -> anyhow::Result<PathBuf>,
    only: Option<&str>,
) -> anyhow::Result<ExitCode> {
    if !host_ok() {
        return Ok(ExitCode::FAILURE);
    }
    let dir = config_dir()?;
    let dir = dir.as_path();
    let names = match only {
        Some(n) => vec![n.to_owned()],
        None => connection_names(dir),
    };
    let mut problems = 0;
    for name in &names {
        match conf::load(dir, name) {
            Ok(u) => {
                let warnings = u
                    .conn
                    .forwards
                    .iter()
                    .flat_map(|r| [r.exposure_warning(), r.bypass_warning()])
                    .flatten();
                for w in warnings {
                    println!("{name}: warning: {w}");
                }
            }
            Err(e) => {
                problems += 1;
                println!("{name}: {e}");
            }
        }
    }
    if problems > 0 {
        return Ok(ExitCode::from(2));
    }
    println!(
        "ok: {} connection(s) in {} checked, no problem found",
        names.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The `.toml` files of the user's config directory (none when it does not exist).
pub fn connection_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn host_ok() -> bool {
    let s = Sysctls::read();
    let found = problems(&s);
    let failed = probe();
    match (&failed, found.is_empty()) {
        (Ok(None), _) => {
            println!(
                "ok: user connections work here (user, network namespace and tun as uid {})",
                nix::unistd::getuid()
            );
            true
        }
        (res, _) => {
            match res {
                Ok(Some(step)) => println!("FAIL: cannot {step} as uid {}", nix::unistd::getuid()),
                Err(e) => println!("FAIL: {e}"),
                Ok(None) => {}
            }
            for p in &found {
                println!("  because {p}");
            }
            if found.is_empty() {
                println!(
                    "  no sysctl forbids it: a security module (AppArmor, SELinux) or a seccomp \
                     filter of the session may; see docs/unprivileged.md"
                );
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_forbidding_setting_is_explained_with_its_fix() {
        assert!(problems(&Sysctls::default()).is_empty());
        let allowed = Sysctls {
            userns_clone: Some(1),
            max_user_namespaces: Some(100),
            apparmor_restrict: Some(0),
        };
        assert!(problems(&allowed).is_empty());
        let p = problems(&Sysctls {
            userns_clone: Some(0),
            ..allowed
        });
        assert!(p.len() == 1 && p[0].contains("unprivileged_userns_clone=1"));
        let p = problems(&Sysctls {
            max_user_namespaces: Some(0),
            ..allowed
        });
        assert!(p.len() == 1 && p[0].contains("max_user_namespaces=15000"));
        let p = problems(&Sysctls {
            apparmor_restrict: Some(1),
            ..allowed
        });
        assert!(p.len() == 1 && p[0].contains("userns,"));
    }
}
