//! Sockets made by another process, in its network namespace, and passed over a
//! `SOCK_SEQPACKET` socket pair with `SCM_RIGHTS`. A user connection's keeper leaves
//! the host namespace for good (its user namespace gives it no way back), so a small
//! helper it forked just before stays there and makes the host side's sockets
//! (docs/publish.md, "User connections"). The helper only ever makes unbound,
//! unconnected TCP/UDP sockets of the four kinds; where they bind or connect is the
//! keeper's relay code, which uses only the configured addresses.
//!
//! Protocol: request = one byte, the kind (`Kind::index`); reply = `[0]` with the
//! descriptor attached, or `[1, errno as 4 bytes little-endian]`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{self as sock, ControlMessage, ControlMessageOwned, MsgFlags};

use super::side::{Kind, make};

/// Asks the helper at the other end of `channel` for a socket of `kind`.
pub fn request(channel: &OwnedFd, kind: Kind) -> io::Result<OwnedFd> {
    let byte = [u8::try_from(kind.index()).expect("four kinds")];
    sock::send(channel.as_raw_fd(), &byte, MsgFlags::MSG_NOSIGNAL)?;
    let mut buf = [0u8; 8];
    let mut space = nix::cmsg_space!(RawFd);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = sock::recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process; each
                // is owned by nothing else. Extra ones (a confused helper) are closed.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let n = msg.bytes;
    match (n, buf[0], fd) {
        (0, _, _) => Err(io::Error::other("the host-side socket helper is gone")),
        (1, 0, Some(fd)) => Ok(fd),
        (5, 1, None) => Err(io::Error::from_raw_os_error(i32::from_le_bytes([
            buf[1], buf[2], buf[3], buf[4],
        ]))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed reply from the host-side socket helper",
        )),
    }
}

/// The helper's loop: answers requests on `channel` until the keeper closes it (or
/// sends something that is not a request). Blocking, single-threaded.
pub fn serve(channel: &OwnedFd) -> io::Result<()> {
    loop {
        let mut req = [0u8; 2];
        let n = match sock::recv(channel.as_raw_fd(), &mut req, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(kind) = (n == 1).then(|| Kind::from_index(req[0])).flatten() else {
            return Ok(());
        };
        match make(kind) {
            Ok(fd) => {
                let fds = [fd.as_raw_fd()];
                sock::sendmsg::<()>(
                    channel.as_raw_fd(),
                    &[IoSlice::new(&[0])],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )?;
            }
            Err(e) => {
                let mut reply = [1u8; 5];
                reply[1..].copy_from_slice(&e.raw_os_error().unwrap_or(libc::EIO).to_le_bytes());
                sock::send(channel.as_raw_fd(), &reply, MsgFlags::MSG_NOSIGNAL)?;
            }
        }
    }
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec: (keeper's end, helper's end).
pub fn channel() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(sock::socketpair(
        sock::AddressFamily::Unix,
        sock::SockType::SeqPacket,
        None,
        sock::SockFlag::SOCK_CLOEXEC,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn sockets_of_each_kind_come_back_over_the_pair() {
        let (keeper, helper) = channel().unwrap();
        let t = std::thread::spawn(move || serve(&helper));
        for i in 0..4u8 {
            let kind = Kind::from_index(i).unwrap();
            let fd = request(&keeper, kind).unwrap();
            let ty: sock::SockType =
                sock::getsockopt(&fd.as_fd(), sock::sockopt::SockType).unwrap();
            let want = if kind.udp {
                sock::SockType::Datagram
            } else {
                sock::SockType::Stream
            };
            assert_eq!(ty, want, "kind {i}");
            let local: sock::SockaddrStorage = sock::getsockname(fd.as_raw_fd()).unwrap();
            assert_eq!(local.as_sockaddr_in6().is_some(), kind.v6);
        }
        drop(keeper);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn anything_but_a_request_ends_the_helper_and_a_gone_helper_is_an_error() {
        let (keeper, helper) = channel().unwrap();
        let t = std::thread::spawn(move || serve(&helper));
        sock::send(keeper.as_raw_fd(), &[9], MsgFlags::empty()).unwrap();
        t.join().unwrap().unwrap();
        let err = request(&keeper, Kind::from_index(0).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("gone") || err.kind() == io::ErrorKind::BrokenPipe,
            "{err}"
        );
    }
}
