//! `vpn-ns exec`: run a command inside a connection's namespace as the invoking user.
//!
//! Everything that needs the host's view (password/group databases, policy, state) is
//! resolved first; then, on the process's only thread: setns, private mounts, privilege
//! drop, and execve in place, so the command's exit status is vpn-ns's own.

mod browser;
mod enter;
mod env;
mod identity;
mod policy;
mod wait;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;

use anyhow::Context as _;
use nix::errno::Errno;

use crate::commands::UsageError;
use crate::config::Connection;
use crate::netns;
use crate::spec::NetnsName;

use self::env::Account;
use self::policy::{Invoker, TargetSpec, Who};

pub struct Request<'a> {
    pub conn: &'a Connection,
    pub user: Option<&'a str>,
    pub wait: bool,
    pub cmd: &'a [String],
}

/// Why the command could not be started, after the point of no return; the caller
/// prints it and exits with the shell's code.
pub struct NotStarted {
    pub code: u8,
    pub message: String,
}

/// Enters and execs. Returns only when the command could not be executed.
pub fn run(req: &Request) -> anyhow::Result<NotStarted> {
    let conn = req.conn;
    if !conn.netns_isolate {
        return Err(UsageError(format!(
            "{}: connection {} has netns-isolate = false: there is no namespace to exec in",
            conn.path.display(),
            conn.name
        ))
        .into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(UsageError(
            "vpn-ns exec needs root to enter a namespace: run it through sudo, pkexec or doas"
                .into(),
        )
        .into());
    }
    let (target, gid, groups) = identity_for(conn, req.user)?;
    let ns = live_netns(conn, req.wait)?;
    let ns_file = netns::open(&ns)?;
    warn_browser(req.cmd, target.uid, &ns_file);
    let (env, warnings) = env::build(std::env::vars_os(), &target, |p| p.exists());
    for w in warnings {
        tracing::warn!("{w}");
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let argv = cstrings(req.cmd.iter().map(|s| s.as_bytes().to_vec()))?;
    let envp = cstrings(env.into_iter().map(|(k, v)| {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        kv
    }))?;
    let hostname = conn.exec.as_ref().and_then(|e| e.hostname.as_ref());
    enter::enter(&ns_file, &ns, hostname)?;
    drop(ns_file);
    identity::drop_to(&target, gid, &groups)?;
    if let Err(e) = nix::unistd::chdir(&target.home) {
        tracing::debug!("cannot chdir to {}: {e}; using /", target.home.display());
        nix::unistd::chdir("/").context("cannot chdir to /")?;
    }
    // Rust ignores SIGPIPE for itself; an ignored signal would stay ignored across exec.
    // SAFETY: restoring the default disposition installs no handler.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .context("cannot restore SIGPIPE")?;
    Ok(exec_search(&argv, &envp, &path_var))
}

/// The account to run as, its primary gid and groups, once `[exec]` allowed the
/// invoker. All lookups happen here, while NSS still reads the host's files.
fn identity_for(conn: &Connection, user: Option<&str>) -> anyhow::Result<(Account, u32, Vec<u32>)> {
    let ruid = nix::unistd::getuid().as_raw();
    let inv = policy::invoker(ruid, |k| std::env::var(k).ok()).map_err(UsageError)?;
    let spec = policy::target(&inv, user).map_err(UsageError)?;
    let (inv_account, inv_gid) = invoker_account(&inv)?;
    let inv_groups = identity::groups(&inv_account, inv_gid)?;
    policy::allowed(
        &conn.path,
        &conn.name,
        conn.exec.as_ref(),
        &inv,
        &inv_account.name,
        &inv_groups,
        identity::group_gid,
    )
    .map_err(UsageError)?;
    match spec {
        TargetSpec::Invoker => Ok((inv_account, inv_gid, inv_groups)),
        TargetSpec::Named(name) => {
            let a = identity::by_name(&name)?
                .ok_or_else(|| UsageError(format!("-u {name}: no such user")))?;
            let (gid, groups) = (a.gid, identity::groups(&a, a.gid)?);
            Ok((a, gid, groups))
        }
    }
}

/// The connection's namespace once it is up: now, or (with `--wait`) within netns-timeout.
fn live_netns(conn: &Connection, wait: bool) -> anyhow::Result<NetnsName> {
    if let Some(ns) = wait::up_netns(&conn.name)? {
        return Ok(ns);
    }
    if !wait {
        anyhow::bail!(
            "connection {} is not up (namespace {} has no live tunnel); bring it up first \
             (start its VPN client, or `vpn-ns up {}`), or pass --wait to wait for it",
            conn.name,
            conn.netns,
            conn.name
        );
    }
    wait::until_up(&conn.name, conn.netns_timeout)?.with_context(|| {
        format!(
            "connection {} did not come up within {} ms (netns-timeout in {})",
            conn.name,
            conn.netns_timeout.as_millis(),
            conn.path.display()
        )
    })
}

/// The invoker's account and the gid to run with (sudo's SUDO_GID if given).
fn invoker_account(inv: &Invoker) -> anyhow::Result<(Account, u32)> {
    let (via, who, gid) = match inv {
        Invoker::Root => ("root", &Who::Uid(0), None),
        Invoker::User { via, who, gid } => (*via, who, *gid),
    };
    let found = match who {
        Who::Uid(u) => identity::by_uid(*u)?,
        Who::Name(n) => identity::by_name(n)?,
    };
    let a = found.ok_or_else(|| {
        UsageError(format!(
            "{via} names the invoking user {who:?}, which the password database does not know"
        ))
    })?;
    let gid = gid.unwrap_or(a.gid);
    Ok((a, gid))
}

fn warn_browser(cmd: &[String], uid: u32, ns_file: &std::fs::File) {
    let Some(b) = cmd.first().and_then(|c| browser::detect(c)) else {
        return;
    };
    if browser::separate_instance(&cmd[1..]) {
        return;
    }
    let Ok(meta) = ns_file.metadata() else {
        return;
    };
    if let Some(pid) = browser::running_elsewhere(b, uid, meta.ino()) {
        tracing::warn!(
            "{} is already running outside this namespace (pid {pid}); it may open the window \
             there, outside the VPN. Start a separate instance: add {}",
            cmd[0],
            b.hint()
        );
    }
}

fn cstrings(items: impl Iterator<Item = Vec<u8>>) -> anyhow::Result<Vec<CString>> {
    items
        .map(|b| {
            CString::new(b).map_err(|_| {
                UsageError("an argument or variable contains a NUL byte".into()).into()
            })
        })
        .collect()
}

/// execve over the target's PATH (execvp semantics, but with the new environment's PATH
/// rather than root's). Returns only on failure: 127 not found, 126 not executable.
fn exec_search(argv: &[CString], envp: &[CString], path: &OsString) -> NotStarted {
    let prog = argv[0].as_bytes();
    let name = String::from_utf8_lossy(prog).into_owned();
    let candidates: Vec<Vec<u8>> = if prog.contains(&b'/') {
        vec![prog.to_vec()]
    } else {
        path.as_bytes()
            .split(|&b| b == b':')
            .map(|d| {
                let d = if d.is_empty() { b".".as_slice() } else { d };
                let mut p = d.to_vec();
                p.push(b'/');
                p.extend_from_slice(prog);
                p
            })
            .collect()
    };
    let mut denied = None;
    for c in candidates {
        let Ok(c) = CString::new(c) else { continue };
        let Err(err) = nix::unistd::execve(&c, argv, envp);
        match err {
            Errno::ENOENT | Errno::ENOTDIR => continue,
            Errno::EACCES => denied = Some(c),
            e => {
                return NotStarted {
                    code: 126,
                    message: format!("{}: {}", String::from_utf8_lossy(c.as_bytes()), e.desc()),
                };
            }
        }
    }
    match denied {
        Some(c) => NotStarted {
            code: 126,
            message: format!(
                "{}: Permission denied",
                String::from_utf8_lossy(c.as_bytes())
            ),
        },
        None => NotStarted {
            code: 127,
            message: format!("{name}: command not found"),
        },
    }
}
