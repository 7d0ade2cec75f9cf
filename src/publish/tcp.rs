//! TCP relaying without user-space copies: each direction splices socket -> pipe ->
//! socket. A pipe holds at most its capacity, and nothing is read from a socket while
//! its pipe still holds data, so a slow reader throttles the writer through TCP's own
//! window (back-pressure) and a connection never costs more than its two pipes.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

use super::Stats;
use super::side::{Kind, Side};

/// Bytes asked of one splice; the pipe (64 KiB by default) may take less.
const CHUNK: usize = 1 << 20;
/// A target that does not answer (an address behind a dead tunnel) must not hold the
/// client and its descriptors for the kernel's two minutes of SYN retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After EMFILE/ENFILE, accepting again at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How many TCP connections the keeper relays at once. Past that a new client is
/// closed at once: whoever opens connections (a program inside, through a
/// `[[host-access]]` listener) cannot take the descriptors the keeper needs for its
/// own work (control socket, netlink, the VPN's pidfd).
pub(super) struct Budget {
    max: usize,
    used: AtomicUsize,
}

/// Descriptors kept for the keeper itself; each connection takes six.
const RESERVED_FDS: u64 = 512;
const FDS_PER_CONNECTION: u64 = 6;

impl Budget {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            used: AtomicUsize::new(0),
        }
    }

    pub(super) fn for_descriptors(limit: u64) -> Self {
        let n = limit.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION;
        Self::new(usize::try_from(n).unwrap_or(usize::MAX).max(1))
    }

    fn take(self: &Arc<Self>) -> Option<Slot> {
        let mut n = self.used.load(Ordering::Relaxed);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .used
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => n = now,
            }
        }
    }
}

struct Slot(Arc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) async fn serve(
    listener: std::net::TcpListener,
    target: SocketAddr,
    side: Arc<Side>,
    stats: Arc<Stats>,
    budget: Arc<Budget>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot watch the listener for {target}: {e}");
            return;
        }
    };
    // Dropped (and every connection with it) when the relay is removed.
    let mut conns = JoinSet::new();
    let mut full = false;
    loop {
        while conns.try_join_next().is_some() {}
        let client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!("accept for {target}: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = budget.take() else {
            // Once per episode of being full: a flood of refused clients must not
            // flood the log too.
            if !full {
                tracing::warn!(
                    "relay to {target}: {} connections open, the most the keeper relays; closing new ones",
                    budget.max
                );
            }
            full = true;
            continue;
        };
        full = false;
        let active = stats.open();
        let side = side.clone();
        conns.spawn(async move {
            let _held = (active, slot);
            if let Err(e) = relay(client, target, &side).await {
                tracing::debug!("relay to {target} in {}: {e}", side.name);
            }
        });
    }
}

/// Connects to `target` from `side` and relays until both directions have ended.
pub(super) async fn relay(client: TcpStream, target: SocketAddr, side: &Side) -> io::Result<()> {
    let fd = side
        .socket(Kind {
            v6: target.is_ipv6(),
            udp: false,
        })
        .await?;
    let connect = TcpSocket::from_std_stream(std::net::TcpStream::from(fd)).connect(target);
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (p1, p2) = (Pipe::new()?, Pipe::new()?);
    futures::future::try_join(pump(&client, &upstream, &p1), pump(&upstream, &client, &p2)).await?;
    Ok(())
}

/// Moves bytes from `src` to `dst` until `src` ends, then half-closes `dst`, so the
/// other direction keeps flowing (a client that shuts down its sending side still
/// gets the whole answer).
async fn pump(src: &TcpStream, dst: &TcpStream, pipe: &Pipe) -> io::Result<()> {
    loop {
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src.as_raw_fd(), pipe.w(), CHUNK)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return match nix::sys::socket::shutdown(
                dst.as_raw_fd(),
                nix::sys::socket::Shutdown::Write,
            ) {
                Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.r(), dst.as_raw_fd(), left)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: null offsets (both ends are streams), plain fds owned by the caller.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    match n {
        n if n >= 0 => Ok(n as usize),
        _ => Err(io::Error::last_os_error()),
    }
}

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are new fds owned by nothing else.
        Ok(unsafe {
            Self {
                r: OwnedFd::from_raw_fd(fds[0]),
                w: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    fn r(&self) -> RawFd {
        self.r.as_raw_fd()
    }

    fn w(&self) -> RawFd {
        self.w.as_raw_fd()
    }
}
