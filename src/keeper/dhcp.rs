//! The keeper's DHCP task (macvlan with `dhcp = true`, RFC 2131 4.4.5): at T1 a
//! REQUEST unicast to the server that gave the lease, at T2 broadcast to any server,
//! retransmitted at half the remaining time (at least `MIN_RETRY`); an ACK renews the
//! lease, a NAK or the lease's end removes the address and routes (fail closed: the
//! LAN's server may give the address to another host). Between those instants the
//! task costs no wake-up: one timerfd on CLOCK_BOOTTIME, armed for the next instant
//! (so time spent suspended counts, as it does for the server), and a UDP socket only
//! while a request is outstanding.

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::config::Connection;
use crate::netlink::Netlink;
use crate::netns;
use crate::plain::dhcp::{self, Answer, BoundKind, Lease};
use crate::plain::{self, lease};
use crate::spec::{Address, IpNet};
use crate::state::{self, Origin, State};

/// Retransmissions are never closer than this (RFC 2131 says 60 s; leases of a few
/// minutes, dnsmasq's minimum, need a shorter floor to get a second try before T2).
const MIN_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Bound,
    Renewing,
    Rebinding,
    Expired,
}

pub struct Renewal {
    conn: String,
    dev: String,
    mac: [u8; 6],
    lease: Lease,
    /// Unix time the lease was obtained (or last renewed): what is recorded and shown.
    obtained: u64,
    /// The same instant on CLOCK_BOOTTIME: what the timing runs on.
    obtained_boot: Duration,
    phase: Phase,
    timer: TimerFd,
    /// Open only while a request is outstanding.
    sock: Option<UdpSocket>,
    xid: u32,
    /// CLOCK_BOOTTIME instant of the next retransmission.
    next_send: Option<Duration>,
    renewals: u32,
}

/// Now on CLOCK_BOOTTIME (monotonic, counting suspend).
fn boot_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

impl Renewal {
    /// The lease of a DHCP macvlan connection, if it has a finite one to look after.
    pub fn load(conn: &Connection, st: &State) -> std::io::Result<Option<Renewal>> {
        if st.origin != Origin::Macvlan {
            return Ok(None);
        }
        let rec = plain::load_record(&conn.name).map_err(std::io::Error::other)?;
        let Some(rec) = rec else {
            return Ok(None);
        };
        let (Some(lease), Some(obtained)) = (rec.lease.clone(), rec.lease_obtained) else {
            return Ok(None);
        };
        if lease.times().is_none() {
            return Ok(None);
        }
        // The one conversion from the recorded wall-clock time to the boot clock.
        let age = Duration::from_secs(state::now().saturating_sub(obtained));
        let timer = TimerFd::new(
            ClockId::CLOCK_BOOTTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let r = Renewal {
            conn: conn.name.clone(),
            dev: rec.inside.clone(),
            mac: lease::mac_for(&conn.name),
            lease,
            obtained,
            obtained_boot: boot_now().saturating_sub(age),
            timer,
            phase: if rec.lease_expired {
                Phase::Expired
            } else {
                Phase::Bound
            },
            sock: None,
            xid: 0,
            next_send: None,
            renewals: 0,
        };
        r.arm()?;
        Ok(Some(r))
    }

    /// (T1, T2, end) as offsets from the lease's start.
    fn offsets(&self) -> (Duration, Duration, Duration) {
        let (t1, t2, l) = self.lease.times().unwrap_or((u64::MAX, u64::MAX, u64::MAX));
        let d = |t: u64| Duration::from_secs(t.min(u64::from(u32::MAX)));
        (d(t1), d(t2), d(l))
    }

    /// (T1, T2, end) on the boot clock.
    fn boot_times(&self) -> (Duration, Duration, Duration) {
        let (t1, t2, end) = self.offsets();
        let b = self.obtained_boot;
        (b + t1, b + t2, b + end)
    }

    /// Arms the timer for the next instant something is due (disarms when nothing is).
    fn arm(&self) -> std::io::Result<()> {
        let (t1, t2, end) = self.boot_times();
        let next = match self.phase {
            Phase::Bound => Some(t1),
            Phase::Renewing => Some(t2),
            Phase::Rebinding => Some(end),
            Phase::Expired => None,
        };
        let next = match (next, self.next_send) {
            (Some(n), Some(s)) => Some(n.min(s)),
            (n, _) => n,
        };
        match next {
            // An instant already past fires at once (zero would disarm: use 1 ns).
            Some(at) => self.timer.set(
                Expiration::OneShot(TimeSpec::from(at.max(Duration::from_nanos(1)))),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            ),
            None => self.timer.unset(),
        }
        .map_err(std::io::Error::from)
    }

    /// The timerfd, and the UDP socket while a request is outstanding.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![self.timer.as_fd()];
        if let Some(s) = &self.sock {
            v.push(s.as_fd());
        }
        v
    }

    pub fn expires_unix(&self) -> u64 {
        self.obtained.saturating_add(self.offsets().2.as_secs())
    }

    pub fn expired(&self) -> bool {
        self.phase == Phase::Expired
    }

    pub fn describe(&self) -> String {
        let (t1, t2, end) = self.boot_times();
        let now = boot_now();
        let left = |t: Duration| t.saturating_sub(now).as_secs();
        match self.phase {
            Phase::Expired => format!(
                "DHCP lease of {} from {}: EXPIRED, address removed",
                self.lease.address, self.lease.server
            ),
            p => format!(
                "DHCP lease of {} from {} ({}): renew in {} s, rebind in {} s, expires in {} s; renewed {} time(s)",
                self.lease.address,
                self.lease.server,
                match p {
                    Phase::Renewing => "renewing",
                    Phase::Rebinding => "rebinding",
                    _ => "bound",
                },
                left(t1),
                left(t2),
                left(end),
                self.renewals
            ),
        }
    }

    /// Reads answers and acts on whatever is due, then re-arms the timer. Returns a
    /// message when the lease is lost (the caller logs it).
    pub fn on_wake(&mut self, ns: Option<&File>) -> Option<String> {
        // Drain the expiration count; what is due is decided from the clock.
        let _ = self.timer.wait();
        let lost = self.step(ns);
        if let Err(e) = self.arm() {
            tracing::warn!("{}: DHCP: cannot arm the timer: {e}", self.conn);
        }
        lost
    }

    fn step(&mut self, ns: Option<&File>) -> Option<String> {
        if let Some(why) = self.read_answers(ns) {
            return Some(why);
        }
        if self.phase == Phase::Expired {
            return None;
        }
        let (t1, t2, end) = self.boot_times();
        let now = boot_now();
        if now >= end {
            return Some(self.expire(ns, "the lease ran out without a renewal"));
        }
        let send = match self.phase {
            Phase::Bound | Phase::Renewing if now >= t2 => Some(Phase::Rebinding),
            Phase::Bound if now >= t1 => Some(Phase::Renewing),
            p if self.next_send.is_some_and(|s| s <= now) => Some(p),
            _ => None,
        };
        if let Some(p) = send {
            self.phase = p;
            let target = if p == Phase::Renewing { t2 } else { end };
            if let Err(e) = self.send(ns, target) {
                tracing::warn!("{}: DHCP: cannot send a request: {e}", self.conn);
                self.next_send = Some(now + MIN_RETRY);
            }
        }
        None
    }

    fn send(&mut self, ns: Option<&File>, until: Duration) -> std::io::Result<()> {
        if self.sock.is_none() {
            let dev = self.dev.clone();
            let make = move || dhcp::bound_socket(&dev);
            self.sock = Some(match ns {
                Some(ns) => netns::run_in(ns, make).map_err(std::io::Error::other)??,
                None => make()?,
            });
            self.xid = new_xid(&self.conn);
        }
        let (server, how) = match self.phase {
            Phase::Renewing => (Some(self.lease.server), "unicast to"),
            _ => (None, "broadcast, last server"),
        };
        let msg = dhcp::encode_bound(BoundKind::Request, self.xid, self.mac, &self.lease);
        if let Some(s) = &self.sock {
            s.send_to(&msg, dhcp::destination(server))?;
        }
        let now = boot_now();
        self.next_send = Some(now + (until.saturating_sub(now) / 2).max(MIN_RETRY));
        tracing::info!(
            "{}: DHCP: asking to renew the lease of {} ({how} {})",
            self.conn,
            self.lease.address,
            self.lease.server
        );
        Ok(())
    }

    fn read_answers(&mut self, ns: Option<&File>) -> Option<String> {
        let mut buf = [0u8; 1500];
        loop {
            let n = match self.sock.as_ref()?.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            match dhcp::answer(&buf[..n], self.xid, self.mac, &self.lease) {
                Some(Answer::Ack(l)) if l.address == self.lease.address => {
                    self.renewed(l);
                    return None;
                }
                Some(Answer::Ack(l)) => {
                    let why = format!("the server answered with another address ({})", l.address);
                    return Some(self.expire(ns, &why));
                }
                Some(Answer::Nak) => {
                    return Some(self.expire(ns, "the server refused the renewal (DHCPNAK)"));
                }
                None => {}
            }
        }
    }

    fn renewed(&mut self, l: Lease) {
        self.lease = l;
        self.obtained = state::now();
        self.obtained_boot = boot_now();
        self.phase = Phase::Bound;
        self.sock = None;
        self.next_send = None;
        self.renewals += 1;
        if let Err(e) = lease::save(&self.conn, &self.lease, self.obtained, false) {
            tracing::warn!(
                "{}: DHCP: cannot record the renewed lease: {e:#}",
                self.conn
            );
        }
        tracing::info!(
            "{}: DHCP: lease of {} renewed by {} for {} s",
            self.conn,
            self.lease.address,
            self.lease.server,
            self.lease.lease_secs.unwrap_or_default()
        );
    }

    /// Fail closed: the address and every route of the connection go.
    fn expire(&mut self, ns: Option<&File>, why: &str) -> String {
        self.phase = Phase::Expired;
        self.sock = None;
        self.next_send = None;
        if let Err(e) = lease::save(&self.conn, &self.lease, self.obtained, true) {
            tracing::warn!("{}: DHCP: cannot record the lost lease: {e:#}", self.conn);
        }
        let removed = match ns {
            Some(ns) => remove_address(&self.conn, ns, &self.dev, &self.lease),
            None => Err("no namespace".to_owned()),
        };
        let result = match removed {
            Ok(()) => {
                "address and routes removed, the namespace has no network (fail closed)".to_owned()
            }
            Err(e) => format!("removing the address failed: {e}"),
        };
        format!("DHCP lease of {} lost: {why}; {result}", self.lease.address)
    }
}

fn new_xid(conn: &str) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16) ^ conn.len() as u32
}

fn remove_address(conn: &str, ns: &File, dev: &str, lease: &Lease) -> Result<(), String> {
    let routes = state::load(conn)
        .ok()
        .flatten()
        .map(|s| s.routes)
        .unwrap_or_default();
    let addr = Address {
        local: IpNet::new(std::net::IpAddr::V4(lease.address), lease.prefix)
            .map_err(|e| e.to_string())?,
        peer: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let nl = Netlink::connect(Some(ns)).map_err(|e| e.to_string())?;
        let Some(link) = nl.link(dev).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        for r in routes.iter().rev() {
            let _ = nl.del_route(&link, r).await;
        }
        nl.del_address(&link, &addr)
            .await
            .map_err(|e| e.to_string())
    })
}
