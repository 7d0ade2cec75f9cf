//! The keeper of a user connection (`vpn-ns user-keeper CONN`, started by `up` in its
//! own session). Single-threaded until its namespaces exist: it binds the WireGuard UDP
//! socket in the host namespace, unshares (user, then net + mnt), replaces
//! resolv.conf/nsswitch.conf and masks host resolver sockets in its mount namespace,
//! creates the tun inside (born there), starts the data plane, configures the tun over
//! rtnetlink (CAP_NET_ADMIN in its own user namespace), records its state and says
//! "ready" on stdout. Its death takes the tun, so the routes, with it: fail closed.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::conf::{self, UserConn};
use super::state::{self, UserState};
use super::{UnprivError, ns};
use crate::netlink::Netlink;
use crate::procs::ProcId;
use crate::spec::NetworkSpec;
use crate::wireguard::builtin::server::Server;
use crate::wireguard::builtin::{Device, device, process, request, tun};
use crate::{dns, lifecycle, wireguard};

pub const SUBCOMMAND: &str = "user-keeper";
const READY: &str = "ready";

/// Starts the keeper of `conn` and waits (up to `timeout`) for it to be ready.
pub fn start(
    config_dir: &Path,
    run: &Path,
    conn: &str,
    timeout: Duration,
) -> Result<UserState, UnprivError> {
    let log = state::log_path(run, conn);
    let _ = fs::remove_file(&log);
    let log_file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&log)
        .map_err(UnprivError::io("cannot create", log.display().to_string()))?;
    let exe = std::env::current_exe().map_err(UnprivError::io("cannot find", "vpn-ns itself"))?;
    let mut cmd = Command::new(exe);
    cmd.args([SUBCOMMAND, conn])
        .env("VPN_NS_CONFIG_DIR", config_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    // A foreground `up` blocks SIGTERM for its signalfd; the keeper starts clean (it
    // blocks what it handles itself).
    crate::procs::unblock_signals_in_child(&mut cmd);
    // SAFETY: setsid is async-signal-safe; its own session keeps the keeper out of the
    // terminal's job control (a Ctrl-C to a later command does not reach it).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(UnprivError::io("cannot start", "the keeper"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let fail = |why: String| {
        // What the keeper wrote stays only in the log.
        let _ = fs::remove_file(state::state_path(run, conn));
        let _ = fs::remove_file(state::sock_path(run, conn));
        let _ = fs::remove_file(state::control_path(run, conn));
        let _ = fs::remove_dir_all(state::files_dir(run, conn));
        UnprivError::Start {
            conn: conn.to_owned(),
            why,
            log: log.clone(),
        }
    };
    match read_ready(&mut out, timeout) {
        Ok(true) => {}
        Ok(false) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(fail(format!("it exited ({status})")));
        }
        Err(why) => {
            // An unreaped child: its pid cannot have been reused.
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(why));
        }
    }
    state::read(run, conn)?.ok_or_else(|| fail("it recorded no state".to_owned()))
}

/// True on "ready", false on EOF (the keeper died), Err on timeout.
fn read_ready(out: &mut std::process::ChildStdout, timeout: Duration) -> Result<bool, String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if left.is_zero() {
            return Err(format!(
                "not ready within {} ms (netns-timeout)",
                timeout.as_millis()
            ));
        }
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
        let mut buf = [0u8; 64];
        match out.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read its readiness: {e}")),
        }
        if got.contains(&b'\n') {
            return Ok(String::from_utf8_lossy(&got).trim() == READY);
        }
    }
}

/// The keeper's side. Returns when the connection should end.
pub fn run(config_dir: &Path, conn_name: &str) -> anyhow::Result<()> {
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    // It lives long: it must not keep the caller's directory (or its mount) busy.
    std::env::set_current_dir("/")?;
    let run = state::runtime_dir()?;
    // First, while single-threaded and before any key is read: the helper that makes
    // host sockets for the relays (docs/publish.md, "User connections") never holds a
    // copy of the private key.
    let helper = super::hostsock::start()?;
    let uc = conf::load(config_dir, conn_name)?;
    let endpoints = wireguard::resolve_endpoints(&uc.wg)?;
    let spec = host_side_spec(&uc, &endpoints)?;
    let text = wireguard::uapi::set_request(&uc.wg, &endpoints);
    let set = request::parse(&text);
    process::wipe(text);
    let set = set?;
    let signals = block_signals()?;
    let (udp, dual) = device::bind_udp(set.listen_port.unwrap_or(0), set.fwmark.unwrap_or(0))?;
    let files = write_dns_files(&run, &uc, &spec)?;

    ns::create()?;
    seal_mounts(&files)?;
    let tun = tun::create(None, uc.iface.as_str())?;
    let dev = Device::with_socket(uc.iface.as_str(), tun, udp, dual, set)?;
    let done = start_loops(&dev)?;
    configure(&spec).with_context(|| format!("cannot configure {} inside", uc.iface))?;
    // Bound before the runtime directory is sealed below: the socket lives in the real
    // one, where status and verify (in the host's mount namespace) find it.
    let server = Arc::new(Server::bind_at(state::sock_path(&run, conn_name))?);
    let (d, srv) = (Arc::clone(&dev), Arc::clone(&server));
    std::thread::Builder::new()
        .name("wg-uapi".to_owned())
        .spawn(move || srv.serve(&d))?;
    let relays = start_relays(&run, &uc, &helper)?;

    let ns_inode = |k: &str| -> anyhow::Result<u64> {
        Ok(ns::inode(&File::open(format!("/proc/self/ns/{k}"))?)?)
    };
    let st = UserState {
        conn: conn_name.to_owned(),
        keeper: ProcId::current(),
        iface: uc.iface.to_string(),
        user_ns: ns_inode("user")?,
        net_ns: ns_inode("net")?,
        mnt_ns: ns_inode("mnt")?,
        since: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    state::write(&run, &st)?;
    // Last: from here on the runtime directory seen by the keeper is the sealed one.
    if let Some(base) = run.parent() {
        super::seal::runtime_dir(base, nix::unistd::getuid().as_raw())?;
    }
    if let Some(home) = std::env::var_os("HOME") {
        super::seal::dirmngr(Path::new(&home));
    }
    let mut out = std::io::stdout();
    writeln!(out, "{READY}").and_then(|()| out.flush())?;
    // SAFETY: dup2 of two open fds of this process: later output goes to the log.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    tracing::info!("{conn_name}: up as uid {}", nix::unistd::getuid());
    let why = wait_for_end(&signals, &done);
    tracing::info!("{conn_name}: ending ({why})");
    // The relays close first: a published port refuses connections from the moment
    // the tunnel is gone (no fallback), and nothing can be published any more.
    drop(
        relays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(),
    );
    helper.finish();
    dev.stop();
    drop(server);
    Ok(())
}

/// The connection file's `[[publish]]`/`[[host-access]]` relays, then the control
/// socket serving `publish`/`unpublish`/`status` on a thread. An entry that cannot
/// listen fails the keeper, so the up fails naming it (a user's up has no earlier
/// check of the addresses, unlike root's).
fn start_relays(
    run: &Path,
    uc: &UserConn,
    helper: &super::hostsock::Helper,
) -> anyhow::Result<super::control::Shared> {
    let channel = helper
        .channel
        .try_clone()
        .context("cannot share the helper's channel")?;
    let relays = crate::publish::Relays::start_user(&uc.conn, channel);
    let failed: Vec<String> = relays
        .status()
        .into_iter()
        .filter_map(|r| r.error)
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    let shared: super::control::Shared = Arc::new(std::sync::Mutex::new(Some(relays)));
    let listener = super::control::bind(&state::control_path(run, &uc.conn.name))?;
    let watching = vec![
        format!("{} data plane (built-in WireGuard)", uc.iface),
        format!("host-side socket helper pid {}", helper.pid()),
    ];
    let s = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("control".to_owned())
        .spawn(move || super::control::serve(listener, s, watching))?;
    Ok(shared)
}

/// The tun's spec, with wg-quick's MTU rule applied from the host's routes (read here,
/// before the keeper leaves the host namespace).
fn host_side_spec(
    uc: &UserConn,
    endpoints: &[Option<std::net::SocketAddr>],
) -> anyhow::Result<NetworkSpec> {
    let mtu = match uc.wg.interface.mtu {
        Some(m) => m,
        None => {
            // A current-thread runtime starts no thread: the unshare below needs a
            // single-threaded process.
            let rt = crate::netlink::runtime()?;
            let eps: Vec<_> = endpoints.iter().flatten().copied().collect();
            rt.block_on(async {
                let nl = Netlink::connect(None)?;
                let (routes, links) = (nl.routes().await?, nl.links().await?);
                anyhow::Ok(wireguard::default_mtu(&eps, &routes, &links))
            })?
        }
    };
    Ok(wireguard::spec(
        &uc.wg,
        &uc.iface,
        Some(mtu),
        uc.conn.default_route,
    ))
}

struct DnsFiles {
    resolv: PathBuf,
    nsswitch: PathBuf,
}

fn write_dns_files(run: &Path, uc: &UserConn, spec: &NetworkSpec) -> anyhow::Result<DnsFiles> {
    let dir = state::files_dir(run, &uc.conn.name);
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let files = DnsFiles {
        resolv: dir.join("resolv.conf"),
        nsswitch: dir.join("nsswitch.conf"),
    };
    let dns_spec = lifecycle::effective_dns(&uc.conn, &spec.dns);
    state::write_new(
        &files.resolv,
        dns::resolv_conf(&uc.conn.name, &dns_spec).as_bytes(),
    )?;
    let host = fs::read_to_string("/etc/nsswitch.conf").ok();
    state::write_new(
        &files.nsswitch,
        dns::nsswitch_conf(host.as_deref()).as_bytes(),
    )?;
    Ok(files)
}

/// In the new mount namespace: host resolver/bus socket directories covered, then the
/// connection's resolv.conf and nsswitch.conf bound over the host's.
fn seal_mounts(files: &DnsFiles) -> Result<(), UnprivError> {
    for d in crate::exec::HOST_SOCKET_DIRS {
        ns::mask_dir(Path::new(d))?;
    }
    for (src, target) in [
        (&files.resolv, Path::new("/etc/resolv.conf")),
        (&files.nsswitch, Path::new("/etc/nsswitch.conf")),
    ] {
        // Without an nsswitch.conf glibc asks files and dns only: nothing to cover.
        if target.ends_with("nsswitch.conf") && fs::symlink_metadata(target).is_err() {
            continue;
        }
        // A link into a directory masked above (resolved's stub) now dangles: give
        // the bind mount a file to cover in the (private, empty) tmpfs.
        if let Ok(to) = fs::read_link(target) {
            let abs = target.parent().unwrap_or(Path::new("/")).join(to);
            if !abs.exists() {
                state::write_new(&abs, b"")?;
            }
        }
        ns::bind_file(src, target)?;
    }
    Ok(())
}

fn block_signals() -> Result<SignalFd, UnprivError> {
    let mut s = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        s.add(sig);
    }
    // Before any thread starts, so that every thread inherits the mask.
    s.thread_block()
        .map_err(UnprivError::errno("cannot block", "signals"))?;
    SignalFd::with_flags(&s, SfdFlags::SFD_CLOEXEC)
        .map_err(UnprivError::errno("cannot create", "a signalfd"))
}

/// The data-plane loops on plain threads; the returned pipe becomes readable when one
/// of them ends.
fn start_loops(dev: &Arc<Device>) -> Result<File, UnprivError> {
    let (done_rx, done_tx) =
        nix::unistd::pipe().map_err(UnprivError::errno("cannot create", "a pipe"))?;
    let done_tx = Arc::new(File::from(done_tx));
    type Job = Box<dyn FnOnce(&Device) -> String + Send>;
    let jobs: [(&str, Job); 3] = [
        ("wg-tun", Box::new(|d| format!("tun: {:?}", d.tun_loop()))),
        ("wg-udp", Box::new(|d| format!("udp: {:?}", d.udp_loop()))),
        (
            "wg-timers",
            Box::new(|d| {
                d.timer_loop();
                "timers ended".to_owned()
            }),
        ),
    ];
    for (name, job) in jobs {
        let (d, done) = (Arc::clone(dev), Arc::clone(&done_tx));
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let why = job(&d);
                let _ = (&*done).write_all(format!("{why}\n").as_bytes());
            })
            .map_err(UnprivError::io("cannot start thread", name))?;
    }
    Ok(File::from(done_rx))
}

/// lo up; the tun's MTU, addresses, link up and routes: in the keeper's own namespace.
fn configure(spec: &NetworkSpec) -> anyhow::Result<()> {
    let rt = crate::netlink::runtime()?;
    rt.block_on(async {
        let nl = Netlink::connect(None)?;
        if let Some(lo) = nl.link("lo").await? {
            nl.set_up(lo.index, &lo.name).await?;
        }
        let dev = spec.device.as_str();
        let link = nl
            .link(dev)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{dev} vanished"))?;
        if let Some(mtu) = spec.mtu {
            nl.set_mtu(&link, mtu).await?;
        }
        for a in &spec.addresses {
            nl.add_address(&link, a).await?;
        }
        nl.set_up(link.index, &link.name).await?;
        for r in &spec.routes {
            nl.add_route(&link, r).await?;
        }
        anyhow::Ok(())
    })
}

fn wait_for_end(signals: &SignalFd, done: &File) -> String {
    loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(done.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return format!("poll failed: {e}"),
        }
        if fds[0].any().unwrap_or(false) {
            return match signals.read_signal() {
                Ok(Some(si)) => format!("signal {}", si.ssi_signo),
                _ => "a signal".to_owned(),
            };
        }
        if fds[1].any().unwrap_or(false) {
            let mut buf = [0u8; 256];
            let n = (&*done).read(&mut buf).unwrap_or(0);
            return format!(
                "data plane ended: {}",
                String::from_utf8_lossy(&buf[..n]).trim()
            );
        }
    }
}
