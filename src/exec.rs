//! `vpn-ns exec`: run a command inside a connection's namespace as the invoking user.
//!
//! Everything that needs the host's view (password/group databases, policy, state) is
//! resolved first; then, on the process's only thread: setns, private mounts, the
//! private runtime directory (and session-bus proxy), a new PID namespace whose init
//! drops privileges and starts the command on a new pseudo-terminal (or in a session
//! without one). vpn-ns stays as the parent: it relays the terminal, forwards signals
//! and exits with the command's status.

mod browser;
mod enter;
mod env;
mod identity;
mod init;
mod policy;
mod relay;
mod seal;
mod wait;

/// Also masked in a user connection's mount namespace (unprivileged mode).
pub use enter::HOST_SOCKET_DIRS;
pub use seal::allowed_entry;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::Context as _;
use nix::errno::Errno;

use crate::config::{Connection, SessionBus};
use crate::error::UsageError;
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

/// Why the command could not be started (in the command's process, which prints it
/// and exits with the shell's code).
struct NotStarted {
    code: u8,
    message: String,
}

/// Enters, runs the command and returns its exit status (127/126 when it could not be
/// executed, 128 + N when signal N ended it).
pub fn run(req: &Request) -> anyhow::Result<u8> {
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
    let exec_cfg = conn.exec.as_ref();
    let bus = exec_cfg.map(|e| e.session_bus).unwrap_or_default();
    if bus == SessionBus::Filtered {
        seal::proxy_path()?;
    }
    let (env, warnings) = env::build(std::env::vars_os(), &target, bus, |p| p.exists());
    for w in warnings {
        tracing::warn!("{w}");
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let xauthority = env
        .iter()
        .find(|(k, _)| k == "XAUTHORITY")
        .map(|(_, v)| PathBuf::from(v));
    let argv = cstrings(req.cmd.iter().map(|s| s.as_bytes().to_vec()))?;
    let envp = cstrings(env.into_iter().map(|(k, v)| {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        kv
    }))?;
    let hostname = exec_cfg.and_then(|e| e.hostname.as_ref());
    let pty = relay::open()?;
    let signals = relay::block_signals()?;
    enter::enter(&ns_file, &ns, hostname)?;
    drop(ns_file);
    let _sealed = seal::seal(&target, gid, &groups, bus, xauthority.as_deref())?;
    enter::new_pid_namespace()?;
    let program = init::Program {
        argv: &argv,
        envp: &envp,
        path_var: &path_var,
        target: &target,
        gid,
        groups: &groups,
        slave: pty.as_ref().map(|p| (&p.slave, p.ttys)),
    };
    // SAFETY: single-threaded (enter checked); the child runs init::run, which never
    // returns.
    let child = match unsafe { nix::unistd::fork() }.context("cannot fork the exec init")? {
        nix::unistd::ForkResult::Child => init::run(&program),
        nix::unistd::ForkResult::Parent { child } => child,
    };
    relay::run(pty, signals, child)
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
