//! The keeper's event loop: its tasks' descriptors (a signalfd, the VPN's pidfd, the
//! device's netlink socket, the control socket, a DHCP deadline) in one wait. Nothing
//! is polled on a timer, so an idle keeper never wakes.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::control::{self, KeeperStatus, Reply, Request};
use super::dhcp::Renewal;
use super::links::{LinkEvent, LinkWatch};
use super::{KeeperError, socket_path};
use crate::config::Connection;
use crate::netns;
use crate::procs::{self, PidFd, ProcId};
use crate::publish::{Direction, Endpoint, Proto, Relays, Rule};
use crate::state::{self, State};
use crate::wait;

/// How the keeper takes its connection down: the same steps as `vpn-ns down` for the
/// connection's kind, without the lock (the keeper holds it). Supplied by the command
/// layer, which knows every kind.
pub type TakeDown<'a> = &'a dyn Fn(&Connection) -> Result<(), String>;

/// A control request may not hold the keeper longer than this.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(200);

struct Vpn {
    fd: PidFd,
    what: String,
}

struct Keeper<'a> {
    conn: &'a Connection,
    me: ProcId,
    signals: SignalFd,
    vpn: Option<Vpn>,
    link: Option<LinkWatch>,
    ns: Option<File>,
    listener: UnixListener,
    dhcp: Option<Renewal>,
    /// Ports published across the namespace boundary; dropped (every listener closed)
    /// before the keeper takes the connection down.
    relays: Option<Relays>,
}

/// Why the loop ended.
enum End {
    Stopped,
    Down(String),
}

/// Runs the keeper of `conn` until down ends it or it takes the connection down.
/// `lock`: the connection's lock, taken by the caller (released once the watches are
/// set up).
pub fn run(
    conn: &Connection,
    lock: state::Lock,
    take_down: TakeDown<'_>,
) -> Result<(), KeeperError> {
    let me = ProcId::current();
    let Some(st) = state::load(&conn.name)?.filter(|s| s.keeper == Some(me) && s.up) else {
        tracing::info!(
            "{}: keeper pid {} is not the one the record names; exiting",
            conn.name,
            me.pid
        );
        return Ok(());
    };
    // Blocked from here on: a stop request is read from the signalfd, between tasks.
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    let watch_err = |what: &str| {
        let conn = conn.name.clone();
        let what = what.to_owned();
        move |source: io::Error| KeeperError::Watch { conn, what, source }
    };
    set.thread_block()
        .map_err(|e| watch_err("cannot block signals")(e.into()))?;
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| watch_err("cannot create a signalfd")(e.into()))?;
    let (vpn, gone) = watch_vpn(&st).map_err(watch_err("cannot watch the VPN process"))?;
    let ns = if st.isolated {
        Some(
            netns::open(&st.netns)
                .map_err(|e| watch_err("cannot open the namespace")(io::Error::other(e)))?,
        )
    } else {
        None
    };
    let link = match &st.device {
        Some(dev) => {
            Some(LinkWatch::open(ns.as_ref(), dev).map_err(watch_err("cannot watch the device"))?)
        }
        None => None,
    };
    let listener = listen(&conn.name)?;
    let dhcp = Renewal::load(conn, &st).map_err(watch_err("cannot load the DHCP lease"))?;
    let relays = Some(Relays::start(conn, ns.as_ref()));
    let mut k = Keeper {
        conn,
        me,
        signals,
        vpn,
        link,
        ns,
        listener,
        dhcp,
        relays,
    };
    for w in k.watching() {
        tracing::info!("{}: keeper pid {} watching {w}", conn.name, me.pid);
    }
    drop(lock);
    trim_resident_code();
    let end = match gone {
        Some(why) => End::Down(why),
        None => k.event_loop()?,
    };
    // No published port may outlive the VPN: a listener left open would accept
    // connections with nowhere (or somewhere else) to go.
    drop(k.relays.take());
    let r = match end {
        End::Stopped => Ok(()),
        End::Down(why) => k.take_down(&why, take_down),
    };
    let _ = fs::remove_file(socket_path(&conn.name));
    r
}

/// Start-up ran most of the program once (command line, configuration, logging set-up,
/// the dynamic loader): that machine code and read-only data stay resident although
/// the idle loop never uses them again. Their pages are dropped from this process's
/// page tables; what the loop needs faults back in from the page cache on first use.
/// Only read-only file mappings without a single private (copy-on-write) page: such a
/// page is always identical to the file, so dropping it loses nothing (relocated
/// read-only data, which was written once, has private pages and is left alone).
fn trim_resident_code() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_file_mappings(&smaps) {
        // SAFETY: a whole read-only, file-backed mapping with no private pages:
        // MADV_DONTNEED only unmaps pages that are read again from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// (start, end) of every `r-xp`/`r--p` file mapping with `Anonymous: 0 kB` in a
/// `/proc/PID/smaps` text.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for l in smaps.lines() {
        let mut f = l.split_ascii_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            current = (matches!(perms, "r-xp" | "r--p") && path.starts_with('/')).then_some((a, b));
            continue;
        }
        if first == "Anonymous:"
            && let Some(range) = current.take()
            && f.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

/// The VPN process's pidfd, or why it is already gone.
fn watch_vpn(st: &State) -> io::Result<(Option<Vpn>, Option<String>)> {
    let Some(pid) = st.vpn_pid else {
        return Ok((None, None));
    };
    let name = procs::comm(pid).unwrap_or_else(|| "the VPN process".to_owned());
    let fd = match st.vpn() {
        Some(id) => id.open()?,
        // A record from before start times were kept: the pid's own state decides.
        None => PidFd::open_pid(pid)?.filter(|_| st.vpn_alive() == Some(true)),
    };
    Ok(match fd {
        Some(fd) => (
            Some(Vpn {
                fd,
                what: format!("{name} (pid {pid})"),
            }),
            None,
        ),
        None => (
            None,
            Some(format!(
                "the VPN process (pid {pid}) was already gone when the keeper started"
            )),
        ),
    })
}

fn listen(conn: &str) -> Result<UnixListener, KeeperError> {
    let path = socket_path(conn);
    let io_err = |op| {
        let path = path.clone();
        move |source| KeeperError::Io { op, path, source }
    };
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot remove")(e)),
    }
    let l = UnixListener::bind(&path).map_err(io_err("cannot bind"))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot restrict"))?;
    l.set_nonblocking(true)
        .map_err(io_err("cannot configure"))?;
    Ok(l)
}

impl Keeper<'_> {
    fn watching(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(v) = &self.vpn {
            w.push(format!("{} by pidfd", v.what));
        }
        if let Some(l) = &self.link {
            let place = match &self.ns {
                Some(_) => format!("namespace {}", self.conn.netns),
                None => "the host namespace".to_owned(),
            };
            w.push(format!("{} in {place} by netlink link events", l.device));
        }
        if let Some(d) = &self.dhcp {
            w.push(d.describe());
        }
        w.push(format!(
            "control socket {}",
            socket_path(&self.conn.name).display()
        ));
        w
    }

    fn event_loop(&mut self) -> Result<End, KeeperError> {
        loop {
            let wake = {
                let mut fds: Vec<BorrowedFd<'_>> =
                    vec![self.signals.as_fd(), self.listener.as_fd()];
                let vpn_at = self.vpn.as_ref().map(|v| {
                    fds.push(v.fd.as_fd());
                    fds.len() - 1
                });
                let link_at = self.link.as_ref().map(|l| {
                    fds.push(l.as_fd());
                    fds.len() - 1
                });
                let dhcp_from = fds.len();
                if let Some(d) = &self.dhcp {
                    fds.extend(d.fds());
                }
                let dhcp_at = dhcp_from..fds.len();
                let w = wait::until(&fds, None).map_err(|source| KeeperError::Watch {
                    conn: self.conn.name.clone(),
                    what: "cannot wait".into(),
                    source,
                })?;
                (w.clone(), vpn_at, link_at, dhcp_at)
            };
            let (w, vpn_at, link_at, dhcp_at) = wake;
            if w.is(0) && self.stop_signal() {
                tracing::info!("{}: keeper stopping (signal)", self.conn.name);
                return Ok(End::Stopped);
            }
            if w.is(1) {
                self.serve();
            }
            if let (Some(i), Some(v)) = (vpn_at, &self.vpn)
                && w.is(i)
            {
                return Ok(End::Down(format!(
                    "the VPN process {} exited without taking the connection down",
                    v.what
                )));
            }
            if let Some(i) = link_at
                && w.is(i)
                && let Some(why) = self.link_event()
            {
                return Ok(End::Down(why));
            }
            let dhcp_due = dhcp_at.clone().any(|i| w.is(i));
            if dhcp_due
                && let Some(d) = &mut self.dhcp
                && let Some(why) = d.on_wake(self.ns.as_ref())
            {
                tracing::warn!("{}: {why}", self.conn.name);
            }
        }
    }

    /// True for SIGTERM/SIGINT; SIGHUP (a terminal's hang-up) is ignored.
    fn stop_signal(&mut self) -> bool {
        let mut stop = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            stop |= info.ssi_signo != Signal::SIGHUP as u32;
        }
        stop
    }

    fn link_event(&mut self) -> Option<String> {
        let link = self.link.as_mut()?;
        let ev = match link.read(self.ns.as_ref()) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("{}: cannot read link events: {e}", self.conn.name);
                return None;
            }
        };
        let dev = link.device.clone();
        match (ev, &self.vpn) {
            (Some(LinkEvent::Gone), None) => Some(format!(
                "device {dev} left {}",
                match &self.ns {
                    Some(_) => format!("namespace {}", self.conn.netns),
                    None => "the host namespace".to_owned(),
                }
            )),
            // The VPN process decides: OpenVPN closes and reopens its tun on a restart.
            (Some(LinkEvent::Gone), Some(v)) => {
                tracing::info!(
                    "{}: device {dev} is gone while {} still runs",
                    self.conn.name,
                    v.what
                );
                None
            }
            (Some(LinkEvent::Appeared(i)), _) => {
                tracing::info!("{}: device {dev} is back (index {i})", self.conn.name);
                None
            }
            (None, _) => None,
        }
    }

    /// Answers every pending control connection, each bounded by `CLIENT_TIMEOUT`.
    fn serve(&mut self) {
        loop {
            let (s, _) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("{}: control socket: {e}", self.conn.name);
                    return;
                }
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(CLIENT_TIMEOUT));
            let _ = s.set_write_timeout(Some(CLIENT_TIMEOUT));
            let reply = match control::read_line(&s) {
                Ok(line) => match control::parse_request(&line) {
                    Ok(Request::Status) => Reply::Status(self.status()),
                    Ok(Request::Publish { rule }) => self.publish(rule),
                    Ok(Request::Unpublish {
                        direction,
                        proto,
                        listen,
                    }) => self.unpublish(direction, proto, listen),
                    Err(r) => r,
                },
                Err(e) => Reply::Error {
                    message: format!("cannot read the request: {e}"),
                },
            };
            let _ = control::write_line(&s, &reply);
        }
    }

    fn status(&self) -> KeeperStatus {
        KeeperStatus {
            pid: self.me.pid,
            watching: self.watching(),
            lease_expires: self.dhcp.as_ref().map(Renewal::expires_unix),
            lease_expired: self.dhcp.as_ref().is_some_and(Renewal::expired),
            published: self.relays.as_ref().map(Relays::status).unwrap_or_default(),
        }
    }

    fn publish(&mut self, rule: Rule) -> Reply {
        let Some(r) = &mut self.relays else {
            return Reply::Error {
                message: "the keeper is ending".into(),
            };
        };
        match r.publish(rule) {
            Ok(()) => Reply::Published { rule },
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        }
    }

    fn unpublish(&mut self, direction: Direction, proto: Proto, listen: Endpoint) -> Reply {
        let Some(r) = &mut self.relays else {
            return Reply::Error {
                message: "the keeper is ending".into(),
            };
        };
        match r.unpublish(direction, proto, listen) {
            Ok(rule) => Reply::Unpublished { rule },
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        }
    }

    /// The VPN or the device is gone: take the connection down as `down` would (a
    /// persistent namespace stays, marked "VPN gone", its apps without a network).
    fn take_down(&mut self, why: &str, take_down: TakeDown<'_>) -> Result<(), KeeperError> {
        let name = &self.conn.name;
        let _lock = state::lock(name)?;
        // Down ran meanwhile, or a new up replaced this keeper: not ours to act on.
        if !state::load(name)?.is_some_and(|s| s.keeper == Some(self.me) && s.up) {
            tracing::info!("{name}: {why}; the connection was already taken care of");
            return Ok(());
        }
        tracing::warn!("{name}: {why}: taking the connection down");
        take_down(self.conn).map_err(|message| KeeperError::TakeDown {
            conn: name.clone(),
            message,
        })?;
        match state::load(name)? {
            Some(mut kept) if !kept.up => {
                kept.vpn_gone = Some(why.to_owned());
                kept.keeper = None;
                state::save(&kept)?;
                tracing::warn!(
                    "{name}: namespace {} kept (netns-persistent) and marked \"VPN gone\"; programs inside have no network until the next up",
                    kept.netns
                );
            }
            _ => tracing::info!("{name}: down"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_trimmed() {
        let smaps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 42 /usr/bin/vpn-ns
Rss:                 100 kB
Anonymous:             0 kB
55d0c0100000-55d0c0400000 r-xp 00100000 08:01 42 /usr/bin/vpn-ns
Anonymous:             0 kB
55d0c0400000-55d0c0500000 r--p 00400000 08:01 42 /usr/bin/vpn-ns
Anonymous:            12 kB
55d0c0500000-55d0c0510000 rw-p 00500000 08:01 42 /usr/bin/vpn-ns
Anonymous:             0 kB
7f0000200000-7f0000300000 r--p 00000000 00:00 0
Anonymous:             0 kB
7ffe00000000-7ffe00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:           132 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![
                (0x55d0_c000_0000, 0x55d0_c010_0000),
                (0x55d0_c010_0000, 0x55d0_c040_0000)
            ],
            "the relocated (12 kB private) and writable mappings stay"
        );
    }

    #[test]
    fn trimming_our_own_code_keeps_it_running() {
        trim_resident_code();
        // Code runs again after its pages were dropped (they fault back in).
        assert!(clean_file_mappings("").is_empty());
        let v: Vec<u32> = (0..1000).map(|i| i * 2).collect();
        assert_eq!(v.iter().sum::<u32>(), 999_000);
    }
}
