//! `vpn-ns up|down` for WireGuard connections (vpn-ns creates and configures the
//! device itself) and `vpn-ns hook wg-quick up|down` (wg-quick does, vpn-ns moves it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cli::{GlobalArgs, WgAction};
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, Connection, Kind, WireGuardSection};
use crate::lifecycle::{self, UpReport};
use crate::netlink::Netlink;
use crate::spec::InterfaceName;
use crate::state::{self, Origin};
use crate::wireguard::steps::{self, STOP_TIMEOUT};
use crate::wireguard::{self, WgConfig, device};

/// The connection and its `[wireguard]` section (the defaults when the file has none).
fn load_wg_conn(
    g: &GlobalArgs,
    conn_name: &str,
    what: &str,
) -> anyhow::Result<(Connection, WireGuardSection)> {
    let conn = config::load(&config_dir(g)?, conn_name)?;
    let Kind::WireGuard(section) = &conn.kind else {
        return Err(UsageError(format!(
            "{}: connection {conn_name} has type {}; `{what}` needs type = \"wireguard\"",
            conn.path.display(),
            conn.kind
        ))
        .into());
    };
    let section = section.clone();
    Ok((conn, section))
}

fn load_wg_file(path: &Path) -> anyhow::Result<WgConfig> {
    let cfg = wireguard::parse::load(path).map_err(|e| UsageError(e.to_string()))?;
    if let Some(w) = wireguard::permission_warning(path) {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// wg-quick names the interface after the file: `/etc/wireguard/wg0.conf` -> `wg0`.
fn iface_from_path(path: &Path) -> Result<InterfaceName, UsageError> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            UsageError(format!(
                "{}: the file name must be <interface>.conf with a valid interface name (at most 15 characters, no '/', ':' or spaces)",
                path.display()
            ))
        })
}

pub fn up(g: &GlobalArgs, conn_name: &str, foreground: bool) -> anyhow::Result<ExitCode> {
    let (conn, section) = load_wg_conn(g, conn_name, "up")?;
    let path = section
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/etc/wireguard/{conn_name}.conf")));
    let iface = iface_from_path(&path)?;
    let cfg = load_wg_file(&path)?;
    for w in wireguard::native_warnings(&cfg) {
        tracing::warn!("{w}");
    }
    // Blocked before anything starts, so a SIGTERM or Ctrl-C during up is acted on once
    // up is done (a rollback-free death would leave wireguard-go behind); children get a
    // clean mask (`procs::unblock_signals_in_child`).
    let mut s = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        s.add(sig);
    }
    if foreground {
        s.add(Signal::SIGCHLD);
    }
    s.thread_block().context("cannot block signals")?;
    let signals = foreground.then_some(s);

    let rt = runtime()?;
    let lock = state::lock(&conn.name)?;
    device::stop_leftover(&conn.name, STOP_TIMEOUT);
    // The userspace program died since the last up (crash, kill): the tunnel is gone, so
    // clean up what is left and start afresh.
    if let Some(st) = state::load(&conn.name)?
        && st.up
        && st.origin == Origin::Wireguard
        && let (Some(pid), Some(dev)) = (st.vpn_pid, st.device.as_deref())
        && (st.vpn_alive() == Some(false) || !device::is_userspace_process(pid, dev))
    {
        tracing::warn!(
            "{conn_name}: the userspace WireGuard of {dev} (pid {pid}) is gone; cleaning up before up"
        );
        rt.block_on(native_down(&conn))
            .with_context(|| format!("connection {conn_name}: cleaning up failed"))?;
    }
    if let Some(st) = state::load(&conn.name)?
        && st.up
    {
        let dev = st.device.as_deref().unwrap_or("?");
        if st.origin != Origin::Wireguard || foreground {
            return Err(UsageError(format!(
                "connection {conn_name} is already up ({dev} in namespace {}, brought up by {}); take it down first",
                st.netns,
                origin_name(st.origin)
            ))
            .into());
        }
        // restore takes the lock itself (a second flock of ours would wait forever).
        drop(lock);
        crate::keeper::restore(&conn).with_context(|| format!("connection {conn_name}"))?;
        tracing::info!("{conn_name}: already up ({dev} in namespace {})", st.netns);
        return Ok(ExitCode::SUCCESS);
    }
    let endpoints = wireguard::resolve_endpoints(&cfg)
        .with_context(|| format!("connection {conn_name}: cannot resolve the peers"))?;
    let report = rt
        .block_on(native_up(&conn, &section, &cfg, &iface, &endpoints))
        .with_context(|| format!("connection {conn_name}: up failed, changes rolled back"))?;
    report.log(conn_name);
    if !foreground && let Some(sig) = pending_stop() {
        tracing::warn!("{conn_name}: {sig} during up: taking the connection down again");
        rt.block_on(native_down(&conn))
            .with_context(|| format!("connection {conn_name}: down after {sig} failed"))?;
        return Ok(ExitCode::from(128 + sig as u8));
    }
    drop(lock);

    let Some(signals) = signals else {
        return Ok(ExitCode::SUCCESS);
    };
    // Our child (wireguard-go, the built-in data plane), reaped here when it exits.
    let mut child = report.vpn.map(|v| Pid::from_raw(v.pid as i32));
    loop {
        let sig = signals.wait().context("cannot wait for signals")?;
        if sig != Signal::SIGCHLD {
            tracing::info!("{conn_name}: {sig}, taking the connection down");
            break;
        }
        if let Some(pid) = child
            && let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG))
            && status != WaitStatus::StillAlive
        {
            tracing::warn!(
                "{conn_name}: the WireGuard process exited ({}); taking the connection down",
                exit_text(status)
            );
            child = None;
            break;
        }
    }
    let _lock = state::lock(&conn.name)?;
    let r = rt.block_on(native_down(&conn));
    if let Some(pid) = child {
        let _ = waitpid(pid, None);
    }
    r.with_context(|| format!("connection {conn_name}: down failed"))?;
    Ok(ExitCode::SUCCESS)
}

/// As std's `ExitStatus` prints it.
fn exit_text(s: WaitStatus) -> String {
    match s {
        WaitStatus::Exited(_, code) => format!("exit status: {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("signal: {} ({sig})", sig as i32),
        other => format!("{other:?}"),
    }
}

/// A stop signal that arrived (blocked) while up ran.
fn pending_stop() -> Option<Signal> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by sigpending above.
    let set = unsafe { set.assume_init() };
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
        .into_iter()
        // SAFETY: sigismember reads the initialised set.
        .find(|s| unsafe { libc::sigismember(&set, *s as i32) } == 1)
}

fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::OpenvpnHook => "the OpenVPN hook",
        Origin::Wireguard => "vpn-ns up",
        Origin::WgQuickHook => "wg-quick",
        Origin::Adopt => "vpn-ns adopt",
        Origin::Macvlan | Origin::Routed => "vpn-ns up",
    }
}

/// Checks that the device does not exist yet, works out the MTU and the spec, then
/// brings the connection up through the lifecycle, which makes the device.
async fn native_up(
    conn: &Connection,
    section: &WireGuardSection,
    cfg: &WgConfig,
    iface: &InterfaceName,
    endpoints: &[Option<std::net::SocketAddr>],
) -> anyhow::Result<UpReport> {
    let host = Netlink::connect(None)?;
    if host.link(iface.as_str()).await?.is_some() {
        bail!(
            "{iface} already exists in the host namespace (another tunnel, or wg-quick?); nothing was changed"
        );
    }
    if conn.netns_isolate && crate::netns::exists(&conn.netns) {
        let ns_file = crate::netns::open(&conn.netns)?;
        if Netlink::connect(Some(&ns_file))?
            .link(iface.as_str())
            .await?
            .is_some()
        {
            bail!(
                "{iface} already exists in namespace {} (left by a crashed run?); delete it with `ip -n {} link del {iface}`",
                conn.netns,
                conn.netns
            );
        }
    }
    let mtu = match cfg.interface.mtu {
        Some(_) => None,
        None => Some(wireguard::default_mtu(
            &endpoints.iter().flatten().copied().collect::<Vec<_>>(),
            &host.routes().await?,
            &host.links().await?,
        )),
    };
    let spec = wireguard::spec(cfg, iface, mtu, conn.default_route && conn.netns_isolate);
    // Default routes are in the spec already, per family, only where AllowedIPs ask.
    let mut c = conn.clone();
    c.default_route = false;
    let devices = steps::Devices {
        cfg,
        endpoints,
        program: &section.userspace,
    };
    let system = crate::keeper::system().with_wireguard(&devices);
    let res = lifecycle::up_wireguard(&system, &c, &spec, section.backend).await;
    // Recorded in the state now, or stopped by the rollback.
    device::clear_starting(&conn.name);
    Ok(res?)
}

pub fn down(g: &GlobalArgs, conn_name: &str) -> anyhow::Result<ExitCode> {
    let (conn, _) = load_wg_conn(g, conn_name, "down")?;
    let rt = runtime()?;
    let _lock = state::lock(&conn.name)?;
    if let Some(st) = state::load(&conn.name)?
        && st.up
        && st.origin == Origin::WgQuickHook
    {
        return Err(UsageError(format!(
            "connection {conn_name} was brought up by wg-quick: run `wg-quick down {}`",
            st.device.as_deref().unwrap_or("<interface>")
        ))
        .into());
    }
    rt.block_on(native_down(&conn))
        .with_context(|| format!("connection {conn_name}: down failed"))?;
    Ok(ExitCode::SUCCESS)
}

/// Down through the lifecycle, which stops the device's process or deletes its kernel
/// link (`steps::Teardown`), then the namespace and state go.
pub(crate) async fn native_down(conn: &Connection) -> anyhow::Result<()> {
    let name = &conn.name;
    // A process an interrupted up started before its record could name it.
    device::stop_leftover(name, STOP_TIMEOUT);
    let Some(st) = state::load(name)? else {
        tracing::info!("{name}: was not up, nothing to do");
        return Ok(());
    };
    let system = crate::keeper::system().with_wireguard(&steps::Teardown);
    let report = lifecycle::down(&system, conn).await?;
    if let Some(dev) = &st.device {
        // The UAPI socket of a process that was gone before down (a stop removes its own).
        device::remove_socket(dev);
    }
    match (&report.netns, report.removed_netns) {
        (Some(ns), true) => tracing::info!("{name}: down, namespace {ns} removed"),
        (Some(ns), false) if st.persistent || conn.netns_persistent => {
            tracing::info!("{name}: down, namespace {ns} kept (netns-persistent)")
        }
        _ => tracing::info!("{name}: down"),
    }
    Ok(())
}

pub fn hook(
    g: &GlobalArgs,
    action: WgAction,
    conn_name: &str,
    iface: &str,
) -> anyhow::Result<ExitCode> {
    let (conn, section) = load_wg_conn(g, conn_name, "hook wg-quick")?;
    let iface: InterfaceName = iface
        .parse()
        .map_err(|e| UsageError(format!("interface {iface:?}: {e}")))?;
    let rt = runtime()?;
    let _lock = state::lock(&conn.name)?;
    match action {
        WgAction::Up => {
            let path = hook_config_path(&section, &iface);
            let cfg = load_wg_file(&path)?;
            if !cfg.interface.dns.servers.is_empty() || !cfg.interface.dns.search.is_empty() {
                tracing::warn!(
                    "{}: wg-quick also hands DNS = to resolvconf on the host; put the servers in [dns] of {} instead",
                    path.display(),
                    conn.path.display()
                );
            }
            if !cfg
                .interface
                .table
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("off"))
            {
                tracing::warn!(
                    "{}: without `Table = off` wg-quick routes AllowedIPs on the host before vpn-ns moves {iface}",
                    path.display()
                );
            }
            // wg-quick has set the MTU already; the move keeps it.
            let spec =
                wireguard::spec(&cfg, &iface, None, conn.default_route && conn.netns_isolate);
            let mut c = conn.clone();
            c.default_route = false;
            let report = rt
                .block_on(lifecycle::up(
                    &crate::keeper::system(),
                    &c,
                    &spec,
                    Origin::WgQuickHook,
                    None,
                ))
                .with_context(|| {
                    format!("connection {conn_name}: up failed, changes rolled back")
                })?;
            report.log(conn_name);
        }
        WgAction::Down => {
            // Hands the device back to the host namespace, where wg-quick deletes it.
            let report = rt
                .block_on(lifecycle::down(&crate::keeper::system(), &conn))
                .with_context(|| format!("connection {conn_name}: down failed"))?;
            if report.was_up {
                tracing::info!("{conn_name}: {iface} handed back to wg-quick");
            } else {
                tracing::info!("{conn_name}: was not up, nothing to do");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `[wireguard] config`, else `$CONFIG_FILE` when the hook line exports it, else the
/// file the calling wg-quick was given (wg-quick's `$CONFIG_FILE` is a shell variable,
/// not exported, so it is read from the parent's command line), else
/// `/etc/wireguard/<IFACE>.conf`.
fn hook_config_path(section: &WireGuardSection, iface: &InterfaceName) -> PathBuf {
    section
        .config
        .clone()
        .or_else(|| {
            std::env::var_os("CONFIG_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            let ppid = std::os::unix::process::parent_id();
            let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let cwd = std::fs::read_link(format!("/proc/{ppid}/cwd")).ok()?;
            wireguard::wg_quick_config_arg(&args, iface.as_str(), &cwd)
        })
        .unwrap_or_else(|| PathBuf::from(format!("/etc/wireguard/{iface}.conf")))
}
