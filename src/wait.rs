//! The one way vpn-ns waits: until one of several descriptors is readable (an inotify
//! instance, a pidfd, a netlink socket, a signalfd, a timerfd, a listening socket) or a
//! deadline passes. Everything that waits goes through here, so nothing polls on a
//! timer and EINTR is handled once.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// What woke a wait: which descriptors are readable (by position), or the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    Ready(Vec<usize>),
    Deadline,
}

impl Wake {
    /// Whether the descriptor at `index` is readable.
    pub fn is(&self, index: usize) -> bool {
        matches!(self, Wake::Ready(v) if v.contains(&index))
    }
}

/// Waits until at least one of `fds` is readable (or hung up), or until `deadline`
/// (`None`: no deadline). A deadline already past still checks the descriptors once.
pub fn until(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> io::Result<Wake> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                // Rounded up to whole milliseconds: rounding down would wake just
                // before the deadline and spin.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(u32::try_from(ms).unwrap_or(u32::MAX))
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut pfds, timeout) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(0) => {
                if deadline.is_some_and(|end| Instant::now() >= end) {
                    return Ok(Wake::Deadline);
                }
            }
            Ok(_) => {
                let ready = pfds
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect();
                return Ok(Wake::Ready(ready));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn reports_the_readable_descriptor() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        b.write_all(b"x").unwrap();
        let w = until(&[c.as_fd(), a.as_fd()], None).unwrap();
        assert_eq!(w, Wake::Ready(vec![1]));
        assert!(w.is(1) && !w.is(0));
    }

    #[test]
    fn returns_at_the_deadline() {
        let (a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let w = until(&[a.as_fd()], Some(start + Duration::from_millis(30))).unwrap();
        assert_eq!(w, Wake::Deadline);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_past_deadline_still_sees_ready_descriptors() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"x").unwrap();
        let w = until(&[a.as_fd()], Some(Instant::now())).unwrap();
        assert_eq!(w, Wake::Ready(vec![0]));
    }
}
