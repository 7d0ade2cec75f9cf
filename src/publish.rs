//! Publishing ports across the namespace boundary by relaying at the socket level: the
//! listening socket is created in one namespace, the connecting socket in the other,
//! and bytes are relayed between them. No veth, route or firewall rule is involved, so
//! the namespace keeps only `lo` and the tunnel and its kill switch is untouched: a
//! relay only ever connects to its configured target.
//!
//! The relays run on one dedicated thread with a single-threaded tokio runtime; the
//! keeper's own event loop stays synchronous and talks to it through [`Engine`].

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use nix::sys::socket::{self as sock, sockopt};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

mod relays;
pub mod remote;
pub mod side;
mod tcp;
mod udp;

pub use crate::forward::{Direction, Endpoint, Proto, Rule};
pub use relays::{Relays, preflight};
use side::{Kind, Side};

/// Pending connections per TCP listener, as a typical server's backlog.
const BACKLOG: i32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{rule}: cannot listen {side}: {source}", side = rule.listen_side())]
    Listen {
        rule: Rule,
        #[source]
        source: io::Error,
    },
    #[error("{rule}: {listen}/{proto} is already published", listen = rule.listen, proto = rule.proto)]
    Duplicate { rule: Rule },
    #[error("nothing is published on {listen}/{proto} ({direction})")]
    NotPublished {
        direction: Direction,
        proto: Proto,
        listen: Endpoint,
    },
    #[error("cannot start the relays: {0}")]
    Start(#[source] io::Error),
}

/// Live figures of one relay, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    #[serde(flatten)]
    pub rule: Rule,
    /// Open TCP connections, or live UDP sessions.
    pub active: u64,
    /// Connections (sessions) relayed since the relay started.
    pub total: u64,
    /// Why the keeper could not listen (the relay is not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Default)]
pub(crate) struct Stats {
    active: AtomicU64,
    total: AtomicU64,
}

impl Stats {
    fn open(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }
}

/// One open connection or session; counted while it lives.
pub(crate) struct Active(Arc<Stats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Relay {
    stats: Arc<Stats>,
    task: AbortHandle,
}

/// A network namespace: the calling process's own, or an open namespace file
/// (/run/netns/NAME or /proc/PID/ns/net) with the name used in messages.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    Here(&'a str),
    Netns(&'a str, &'a File),
    /// The namespace of a helper process that makes sockets there on request
    /// ([`remote`]): for a keeper that cannot enter that namespace itself.
    Remote(&'a str, &'a OwnedFd),
}

impl Place<'_> {
    fn side(self) -> Result<Side, PublishError> {
        match self {
            Self::Here(name) => Ok(Side::here(name)),
            Self::Netns(name, f) => Side::netns(name, f).map_err(PublishError::Start),
            Self::Remote(name, channel) => channel
                .try_clone()
                .and_then(|c| Side::remote(name, c))
                .map_err(PublishError::Start),
        }
    }
}

/// The relays of one connection: `host` is where `[[publish]]` listens and
/// `[[host-access]]` connects, `inside` the connection's namespace (the same place as
/// `host` for a connection without a namespace of its own).
pub struct Engine {
    host: Arc<Side>,
    inside: Arc<Side>,
    udp: udp::Limits,
    /// Open TCP connections of all relays together.
    tcp: Arc<tcp::Budget>,
    rt: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    relays: HashMap<Rule, Relay>,
}

impl Engine {
    pub fn start(host: Place<'_>, inside: Place<'_>) -> Result<Self, PublishError> {
        let fds = raise_fd_limit();
        let host = Arc::new(host.side()?);
        let inside = Arc::new(inside.side()?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(PublishError::Start)?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("relays".into())
            .spawn(move || {
                let _ = rt.block_on(stopped);
            })
            .map_err(PublishError::Start)?;
        Ok(Self {
            host,
            inside,
            udp: udp::Limits {
                idle: udp::IDLE,
                max: udp::MAX_SESSIONS,
            },
            tcp: Arc::new(tcp::Budget::for_descriptors(fds)),
            rt: handle,
            stop: Some(stop),
            thread: Some(thread),
            relays: HashMap::new(),
        })
    }

    /// UDP sessions of relays added from now on end after `idle` without traffic, and
    /// at most `max` live at once per relay.
    pub fn set_udp_limits(&mut self, idle: Duration, max: usize) {
        self.udp = udp::Limits {
            idle,
            max: max.max(1),
        };
    }

    /// At most `max` relayed TCP connections at once, all relays together (by default
    /// what the descriptor limit allows, leaving room for the keeper's own work).
    pub fn set_tcp_limit(&mut self, max: usize) {
        self.tcp = Arc::new(tcp::Budget::new(max));
    }

    /// Binds the rule's listener now, so that a taken address fails this call (and
    /// the up that asked for it), then starts relaying.
    pub fn add(&mut self, rule: Rule) -> Result<(), PublishError> {
        let same = |r: &Rule| {
            r.direction == rule.direction && r.proto == rule.proto && r.listen == rule.listen
        };
        if self.relays.keys().any(same) {
            return Err(PublishError::Duplicate { rule });
        }
        let (near, far) = match rule.direction {
            Direction::Publish => (&self.host, &self.inside),
            Direction::HostAccess => (&self.inside, &self.host),
        };
        let listen_err = |source| PublishError::Listen { rule, source };
        let fd = listener(near, rule.listen.0, rule.proto).map_err(listen_err)?;
        let stats = Arc::new(Stats::default());
        let (far, st, target) = (far.clone(), stats.clone(), rule.target.0);
        let task = match rule.proto {
            Proto::Tcp => self
                .rt
                .spawn(tcp::serve(fd.into(), target, far, st, self.tcp.clone()))
                .abort_handle(),
            Proto::Udp => {
                let limits = self.udp;
                self.rt
                    .spawn(udp::serve(fd.into(), target, far, st, limits))
                    .abort_handle()
            }
        };
        tracing::info!("published: {rule}");
        self.relays.insert(rule, Relay { stats, task });
        Ok(())
    }

    /// Stops the relay listening on `listen` and closes its connections.
    pub fn remove(
        &mut self,
        direction: Direction,
        proto: Proto,
        listen: Endpoint,
    ) -> Result<Rule, PublishError> {
        let rule = self
            .relays
            .keys()
            .find(|r| r.direction == direction && r.proto == proto && r.listen == listen)
            .copied()
            .ok_or(PublishError::NotPublished {
                direction,
                proto,
                listen,
            })?;
        if let Some(r) = self.relays.remove(&rule) {
            r.task.abort();
        }
        tracing::info!("unpublished: {rule}");
        Ok(rule)
    }

    pub fn status(&self) -> Vec<RelayStatus> {
        let mut v: Vec<RelayStatus> = self
            .relays
            .iter()
            .map(|(rule, r)| RelayStatus {
                rule: *rule,
                active: r.stats.active.load(Ordering::Relaxed),
                total: r.stats.total.load(Ordering::Relaxed),
                error: None,
            })
            .collect();
        v.sort_by_key(|s| {
            (
                s.rule.direction.as_str(),
                s.rule.listen.0,
                s.rule.proto.as_str(),
            )
        });
        v
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for (_, r) in self.relays.drain() {
            r.task.abort();
        }
        drop(self.stop.take());
        // Dropping the runtime on its thread closes every listener and connection.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bound (and for TCP listening) socket of `side`.
pub(crate) fn listener(side: &Side, addr: SocketAddr, proto: Proto) -> io::Result<OwnedFd> {
    let kind = Kind {
        v6: addr.is_ipv6(),
        udp: proto == Proto::Udp,
    };
    let fd = side.socket_blocking(kind)?;
    if proto == Proto::Tcp {
        // A relay restarted with the keeper must not wait out TIME_WAIT connections.
        sock::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if addr.is_ipv6() {
        // "[::]:80" means IPv6 only; IPv4 is published by its own entry.
        sock::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    let sa = sock::SockaddrStorage::from(addr);
    sock::bind(fd.as_raw_fd(), &sa)?;
    if proto == Proto::Tcp {
        sock::listen(
            &fd,
            sock::Backlog::new(BACKLOG).unwrap_or(sock::Backlog::MAXCONN),
        )?;
    }
    Ok(fd)
}

/// Each relayed TCP connection holds two sockets and two pipes: the default soft limit
/// of 1024 descriptors would cap a keeper near 250 connections. Returns the limit now.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the one struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!(
                    "cannot raise the descriptor limit: {}",
                    io::Error::last_os_error()
                );
                return old;
            }
        }
    }
    lim.rlim_cur
}
