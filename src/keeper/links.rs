//! The keeper's device watch: a route netlink socket in the connection's namespace,
//! subscribed to link events, read without blocking when it is readable. Quiet when
//! nothing changes, so it costs no wake-ups.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};

use crate::netlink;
use crate::netns;

/// A watched device and the socket that reports its fate.
pub struct LinkWatch {
    sock: OwnedFd,
    pub device: String,
    /// Its index when the watch started; `None`: it was not there.
    pub index: Option<u32>,
}

/// What happened to the watched device, as far as one batch of events tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// Deleted, or moved out of the namespace.
    Gone,
    /// Came back (a new device of that name).
    Appeared(u32),
}

impl LinkWatch {
    /// Subscribes first and looks the device up second, so it cannot vanish unseen in
    /// between. `ns`: the connection's namespace, `None` for the caller's.
    pub fn open(ns: Option<&File>, device: &str) -> io::Result<LinkWatch> {
        let dev = device.to_owned();
        let make = move || -> io::Result<(OwnedFd, Option<u32>)> {
            let sock = netlink::open_socket()?;
            let index = nix::net::if_::if_nametoindex(dev.as_str()).ok();
            Ok((sock, index))
        };
        let (sock, index) = match ns {
            Some(ns) => netns::run_in(ns, make).map_err(io::Error::other)??,
            None => make()?,
        };
        nix::fcntl::fcntl(
            &sock,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(LinkWatch {
            sock,
            device: device.to_owned(),
            index,
        })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads every pending event and says what happened to the device, if anything.
    /// An overrun socket (ENOBUFS) lost events: then the device is looked up afresh.
    pub fn read(&mut self, ns: Option<&File>) -> io::Result<Option<LinkEvent>> {
        let mut last = None;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.sock),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(0) => break,
                Ok(n) => {
                    for m in messages(&buf[..n]) {
                        if let Some(ev) = self.apply(&m) {
                            last = Some(ev);
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ENOBUFS) => {
                    last = self.recheck(ns)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(last)
    }

    fn apply(&mut self, m: &LinkChange) -> Option<LinkEvent> {
        match m {
            LinkChange::Del { index, name } => {
                let ours = Some(*index) == self.index
                    || (self.index.is_none() && name.as_deref() == Some(self.device.as_str()));
                ours.then(|| {
                    self.index = None;
                    LinkEvent::Gone
                })
            }
            LinkChange::New { index, name } => {
                if name.as_deref() == Some(self.device.as_str()) && self.index != Some(*index) {
                    self.index = Some(*index);
                    return Some(LinkEvent::Appeared(*index));
                }
                None
            }
        }
    }

    fn recheck(&mut self, ns: Option<&File>) -> io::Result<Option<LinkEvent>> {
        let dev = self.device.clone();
        let look = move || nix::net::if_::if_nametoindex(dev.as_str()).ok();
        let now = match ns {
            Some(ns) => netns::run_in(ns, look).map_err(io::Error::other)?,
            None => look(),
        };
        let was = self.index;
        self.index = now;
        Ok(match (was, now) {
            (Some(_), None) => Some(LinkEvent::Gone),
            (a, Some(b)) if a != Some(b) => Some(LinkEvent::Appeared(b)),
            _ => None,
        })
    }
}

/// A link notification, reduced to what the watch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    New { index: u32, name: Option<String> },
    Del { index: u32, name: Option<String> },
}

/// Splits a datagram into netlink messages and keeps the link notifications. Anything
/// malformed ends the batch: the kernel is the only sender (bound socket, port 0).
pub fn messages(mut buf: &[u8]) -> Vec<LinkChange> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    out.push(LinkChange::New {
                        index: l.header.index,
                        name: name_of(&l),
                    })
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    out.push(LinkChange::Del {
                        index: l.header.index,
                        name: name_of(&l),
                    })
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        let step = len.div_ceil(4) * 4;
        buf = buf.get(step..).unwrap_or(&[]);
    }
    out
}

fn name_of(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkHeader;

    fn encode(msg: RouteNetlinkMessage) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn link(index: u32, name: &str) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.to_owned()));
        l
    }

    #[test]
    fn reads_new_and_deleted_links_from_one_datagram() {
        let mut buf = encode(RouteNetlinkMessage::NewLink(link(3, "tun0")));
        buf.extend(encode(RouteNetlinkMessage::DelLink(link(3, "tun0"))));
        assert_eq!(
            messages(&buf),
            vec![
                LinkChange::New {
                    index: 3,
                    name: Some("tun0".into())
                },
                LinkChange::Del {
                    index: 3,
                    name: Some("tun0".into())
                },
            ]
        );
    }

    #[test]
    fn garbage_and_truncation_end_the_batch() {
        assert!(messages(&[0xff; 7]).is_empty());
        let buf = encode(RouteNetlinkMessage::NewLink(link(3, "tun0")));
        assert!(messages(&buf[..buf.len() - 1]).is_empty());
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(messages(&huge).is_empty());
    }

    #[test]
    fn the_watch_follows_its_device_by_index() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut w = LinkWatch {
            sock: a.into(),
            device: "tun0".into(),
            index: Some(3),
        };
        let other = LinkChange::Del {
            index: 4,
            name: Some("tun1".into()),
        };
        assert_eq!(w.apply(&other), None);
        let gone = LinkChange::Del {
            index: 3,
            name: Some("tun0".into()),
        };
        assert_eq!(w.apply(&gone), Some(LinkEvent::Gone));
        let back = LinkChange::New {
            index: 9,
            name: Some("tun0".into()),
        };
        assert_eq!(w.apply(&back), Some(LinkEvent::Appeared(9)));
        assert_eq!(
            w.apply(&back),
            None,
            "a change of the same device is not news"
        );
    }
}
