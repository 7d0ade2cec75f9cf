//! The keeper's DHCP task (macvlan with `dhcp = true`, RFC 2131 4.4.5): at T1 a
//! REQUEST unicast to the server that gave the lease, at T2 broadcast to any server,
//! retransmitted at half the remaining time (at least `MIN_RETRY`); an ACK renews the
//! lease, a NAK or the lease's end removes the address and routes (fail closed: the
//! LAN's server may give the address to another host). Between those instants the
//! task has no descriptor open and costs no wake-up: only a deadline.

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

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
    /// Unix time the lease was obtained (or last renewed).
    obtained: u64,
    phase: Phase,
    /// Open only while a request is outstanding.
    sock: Option<UdpSocket>,
    xid: u32,
    next_send: Option<Instant>,
    renewals: u32,
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
        Ok(Some(Renewal {
            conn: conn.name.clone(),
            dev: rec.inside.clone(),
            mac: lease::mac_for(&conn.name),
            lease,
            obtained,
            phase: if rec.lease_expired {
                Phase::Expired
            } else {
                Phase::Bound
            },
            sock: None,
            xid: 0,
            next_send: None,
            renewals: 0,
        }))
    }

    fn times(&self) -> (u64, u64, u64) {
        let (t1, t2, l) = self.lease.times().unwrap_or((u64::MAX, u64::MAX, u64::MAX));
        let at = |t: u64| self.obtained.saturating_add(t);
        (at(t1), at(t2), at(l))
    }

    /// The next instant something is due (`None`: nothing, ever).
    pub fn deadline(&self) -> Option<Instant> {
        let (t1, t2, end) = self.times();
        let next = match self.phase {
            Phase::Bound => at_unix(t1),
            Phase::Renewing => at_unix(t2),
            Phase::Rebinding => at_unix(end),
            Phase::Expired => return None,
        };
        Some(match self.next_send {
            Some(s) => s.min(next),
            None => next,
        })
    }

    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }

    pub fn expires_unix(&self) -> u64 {
        self.times().2
    }

    pub fn expired(&self) -> bool {
        self.phase == Phase::Expired
    }

    pub fn describe(&self) -> String {
        let (t1, t2, end) = self.times();
        let now = state::now();
        let left = |t: u64| t.saturating_sub(now);
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

    /// Reads answers and acts on whatever is due. Returns a message when the lease is
    /// lost (the caller logs it).
    pub fn on_wake(&mut self, ns: Option<&File>, now: Instant) -> Option<String> {
        if let Some(why) = self.read_answers(ns) {
            return Some(why);
        }
        if self.phase == Phase::Expired {
            return None;
        }
        let (t1, t2, end) = self.times();
        let unix = state::now();
        if unix >= end {
            return Some(self.expire(ns, "the lease ran out without a renewal"));
        }
        let send = match self.phase {
            Phase::Bound | Phase::Renewing if unix >= t2 => Some(Phase::Rebinding),
            Phase::Bound if unix >= t1 => Some(Phase::Renewing),
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

    fn send(&mut self, ns: Option<&File>, until_unix: u64) -> std::io::Result<()> {
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
        let left = until_unix.saturating_sub(state::now());
        self.next_send = Some(Instant::now() + Duration::from_secs(left / 2).max(MIN_RETRY));
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

fn at_unix(t: u64) -> Instant {
    let now = state::now();
    Instant::now() + Duration::from_secs(t.saturating_sub(now))
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
