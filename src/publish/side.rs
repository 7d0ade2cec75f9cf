//! Sockets for one side of the boundary. A socket belongs to the network namespace of
//! the thread that created it, for its whole life; bind, connect and I/O can then
//! happen on any thread. So only `socket(2)` runs in the other namespace, on one
//! dedicated thread per namespace (never a tokio worker), and everything else runs on
//! the relay's own thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use futures::channel::oneshot;
use nix::sched::CloneFlags;

type Made = io::Result<OwnedFd>;
/// Makes one socket of a kind, on the factory thread.
type Maker = Box<dyn FnMut(Kind) -> Made + Send>;

/// `socket(2)`'s family and type; the descriptor comes back close-on-exec and
/// non-blocking, ready for tokio.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub v6: bool,
    pub udp: bool,
}

impl Kind {
    pub(crate) fn index(self) -> usize {
        usize::from(self.v6) << 1 | usize::from(self.udp)
    }

    pub(crate) fn from_index(i: u8) -> Option<Self> {
        (i < 4).then_some(Self {
            v6: i & 2 != 0,
            udp: i & 1 != 0,
        })
    }
}

/// Sockets made ahead per kind, so that a new connection does not wait for a round
/// trip to the factory thread (its main cost, tens of microseconds). An unused socket
/// in stock costs one descriptor.
const STOCK: usize = 16;

enum Job {
    One {
        kind: Kind,
        reply: oneshot::Sender<Made>,
    },
    /// Top the stock of `kind` up to `STOCK`.
    Fill { kind: Kind },
}

#[derive(Default)]
struct Stock {
    fds: Mutex<[Vec<OwnedFd>; 4]>,
    filling: [AtomicBool; 4],
}

impl Stock {
    fn take(&self, kind: Kind) -> (Option<OwnedFd>, bool) {
        let mut fds = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        let v = &mut fds[kind.index()];
        let fd = v.pop();
        let low = v.len() < STOCK / 2 && !self.filling[kind.index()].swap(true, Ordering::AcqRel);
        (fd, low)
    }

    fn fill(&self, kind: Kind, make: &mut Maker) {
        let have = self.fds.lock().unwrap_or_else(|e| e.into_inner())[kind.index()].len();
        let made: Vec<OwnedFd> = (have..STOCK).map_while(|_| make(kind).ok()).collect();
        self.fds.lock().unwrap_or_else(|e| e.into_inner())[kind.index()].extend(made);
        self.filling[kind.index()].store(false, Ordering::Release);
    }
}

pub struct Side {
    /// How the side is named in messages ("the host", "namespace work").
    pub name: String,
    factory: Option<Factory>,
}

struct Factory {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stock: Arc<Stock>,
}

impl Side {
    /// The namespace of the calling process.
    pub fn here(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            factory: None,
        }
    }

    /// The namespace `ns` (an open /run/netns or /proc/PID/ns/net file). Fails when
    /// the factory thread cannot enter it.
    pub fn netns(name: &str, ns: &File) -> io::Result<Self> {
        let fd = ns.as_fd().try_clone_to_owned()?;
        Self::with_factory(name, move || {
            let guard = NetnsGuard::enter(&fd)?;
            // The guard lives as long as the maker: the thread leaves the namespace
            // when its job loop ends.
            Ok(Box::new(move |kind| {
                let _in = &guard;
                make(kind)
            }))
        })
    }

    /// The namespace of another process that makes sockets on request and passes them
    /// over `channel` (a user connection's host-side helper, see [`super::remote`]): for
    /// a process that has left that namespace for good.
    pub fn remote(name: &str, channel: OwnedFd) -> io::Result<Self> {
        Self::with_factory(name, move || {
            Ok(Box::new(move |kind| super::remote::request(&channel, kind)))
        })
    }

    /// A side whose sockets are made on one dedicated thread by what `setup` returns
    /// (run on that thread first; its error fails this call).
    fn with_factory(
        name: &str,
        setup: impl FnOnce() -> io::Result<Maker> + Send + 'static,
    ) -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let stock = Arc::new(Stock::default());
        let filled = stock.clone();
        let thread = std::thread::Builder::new()
            .name("netns-sockets".into())
            .spawn(move || {
                let mut maker = match setup() {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                for job in rx {
                    match job {
                        Job::One { kind, reply } => drop(reply.send(maker(kind))),
                        Job::Fill { kind } => filled.fill(kind, &mut maker),
                    }
                }
            })?;
        ready_rx.recv().map_err(|_| gone())??;
        Ok(Self {
            name: name.to_owned(),
            factory: Some(Factory {
                jobs: Some(jobs),
                thread: Some(thread),
                stock,
            }),
        })
    }

    /// A socket for a relayed connection, from the stock when there is one.
    pub async fn socket(&self, kind: Kind) -> Made {
        let Some(f) = &self.factory else {
            return make(kind);
        };
        let (fd, low) = f.stock.take(kind);
        if low {
            f.send(Job::Fill { kind })?;
        }
        match fd {
            Some(fd) => Ok(fd),
            None => f.one(kind).await,
        }
    }

    /// For callers outside the relay's runtime (listeners, tests): never from the stock.
    pub fn socket_blocking(&self, kind: Kind) -> Made {
        match &self.factory {
            None => make(kind),
            Some(f) => futures::executor::block_on(f.one(kind)),
        }
    }
}

impl Factory {
    fn send(&self, job: Job) -> io::Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .expect("jobs live as long as the factory");
        jobs.send(job).map_err(|_| gone())
    }

    async fn one(&self, kind: Kind) -> Made {
        let (reply, rx) = oneshot::channel();
        self.send(Job::One { kind, reply })?;
        rx.await.map_err(|_| gone())?
    }
}

fn gone() -> io::Error {
    io::Error::other("the namespace socket thread ended")
}

impl Drop for Factory {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn make(kind: Kind) -> Made {
    let domain = if kind.v6 {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let ty = if kind.udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: socket(2) has no memory arguments; a non-negative result is a new fd
    // that nothing else owns.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The calling thread inside another network namespace until dropped.
struct NetnsGuard {
    home: File,
}

impl NetnsGuard {
    fn enter(ns: &OwnedFd) -> io::Result<Self> {
        let home = File::open("/proc/thread-self/ns/net")?;
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?;
        Ok(Self { home })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.home, CloneFlags::CLONE_NEWNET) {
            tracing::warn!("cannot return a socket thread to its namespace: {e}");
        }
    }
}
