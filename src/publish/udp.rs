//! UDP relaying: one session per client address, each with its own socket on the far
//! side connected to the target (so only the target's datagrams come back through it),
//! ended after `IDLE` without traffic; at most `MAX_SESSIONS` at once, the least
//! recently active session making room for a new client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::side::{Kind, Side};
use super::{Active, Stats};

/// Long enough for DNS, NTP and game/VoIP keepalives; as conntrack's UDP stream timeout.
pub const IDLE: Duration = Duration::from_secs(120);
pub const MAX_SESSIONS: usize = 1024;
const MAX_DATAGRAM: usize = 65_535;

struct Session {
    id: u64,
    sock: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    task: AbortHandle,
    _active: Active,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

#[derive(Clone, Copy)]
pub(super) struct Limits {
    pub idle: Duration,
    pub max: usize,
}

pub(super) async fn serve(
    listener: std::net::UdpSocket,
    target: SocketAddr,
    side: Arc<Side>,
    stats: Arc<Stats>,
    limits: Limits,
) {
    let listener = match UdpSocket::from_std(listener) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            tracing::error!("cannot watch the UDP listener for {target}: {e}");
            return;
        }
    };
    let epoch = Instant::now();
    let now_ms = move || epoch.elapsed().as_millis() as u64;
    let sessions: Sessions = Arc::default();
    // Aborts every session task when the relay is removed (this future is dropped).
    let _cleanup = Cleanup(sessions.clone());
    let mut next_id = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = match listener.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("UDP relay to {target}: {e}");
                continue;
            }
        };
        let known = {
            let map = sessions.lock().expect("sessions lock");
            map.get(&peer).map(|s| {
                s.last.store(now_ms(), Ordering::Relaxed);
                s.sock.clone()
            })
        };
        let sock = match known {
            Some(s) => s,
            None => {
                let sock = match connect(&side, target).await {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::warn!("UDP relay to {target} in {}: {e}", side.name);
                        continue;
                    }
                };
                next_id += 1;
                let last = Arc::new(AtomicU64::new(now_ms()));
                let session = Answers {
                    sock: sock.clone(),
                    listener: listener.clone(),
                    peer,
                    id: next_id,
                    last: last.clone(),
                    sessions: sessions.clone(),
                };
                let task = tokio::spawn(session.run(limits.idle, now_ms)).abort_handle();
                let mut map = sessions.lock().expect("sessions lock");
                if map.len() >= limits.max
                    && let Some(oldest) = map
                        .iter()
                        .min_by_key(|(_, s)| s.last.load(Ordering::Relaxed))
                        .map(|(a, _)| *a)
                    && let Some(old) = map.remove(&oldest)
                {
                    old.task.abort();
                }
                map.insert(
                    peer,
                    Session {
                        id: next_id,
                        sock: sock.clone(),
                        last,
                        task,
                        _active: stats.open(),
                    },
                );
                sock
            }
        };
        // A refused or failed send (ICMP from the target) loses this datagram only.
        let _ = sock.send(&buf[..n]).await;
    }
}

async fn connect(side: &Side, target: SocketAddr) -> std::io::Result<UdpSocket> {
    let fd = side
        .socket(Kind {
            v6: target.is_ipv6(),
            udp: true,
        })
        .await?;
    let s = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
    s.connect(target).await?;
    Ok(s)
}

/// One session's way back: the target's answers to `peer`.
struct Answers {
    sock: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    peer: SocketAddr,
    id: u64,
    last: Arc<AtomicU64>,
    sessions: Sessions,
}

impl Answers {
    /// Carries the target's answers back until the session has been idle for `idle`,
    /// then removes it (unless a newer session for the same peer replaced it).
    async fn run(self, idle: Duration, now_ms: impl Fn() -> u64) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let since = now_ms().saturating_sub(self.last.load(Ordering::Relaxed));
            let wait = idle.saturating_sub(Duration::from_millis(since));
            if wait.is_zero() {
                break;
            }
            // An error (ECONNREFUSED: the target's port is closed for now) or a timeout
            // leaves the session; only idleness ends it.
            if let Ok(Ok(n)) = tokio::time::timeout(wait, self.sock.recv(&mut buf)).await {
                self.last.store(now_ms(), Ordering::Relaxed);
                let _ = self.listener.send_to(&buf[..n], self.peer).await;
            }
        }
        let mut map = self.sessions.lock().expect("sessions lock");
        if map.get(&self.peer).is_some_and(|s| s.id == self.id) {
            map.remove(&self.peer);
        }
    }
}

struct Cleanup(Sessions);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut map) = self.0.lock() {
            for (_, s) in map.drain() {
                s.task.abort();
            }
        }
    }
}
