//! A minimal DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK on one interface.
//!
//! It runs on a thread inside the connection's namespace, on a UDP socket bound to
//! port 68 and to the macvlan (SO_BINDTODEVICE, so the limited broadcast leaves through
//! it although the namespace has no route yet). The broadcast flag asks the server to
//! broadcast its answers, since the interface has no address to receive unicast on.
//! Renewal (RFC 2131 4.4.5: REQUEST unicast to the server at T1, broadcast at T2)
//! and DHCPRELEASE at down are built here and driven by the connection's keeper
//! (`keeper::dhcp`), which owns the timing.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;

const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_DOMAIN: u8 = 15;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE: u8 = 51;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_CLIENT_ID: u8 = 61;
const OPT_RENEWAL: u8 = 58;
const OPT_REBINDING: u8 = 59;
const OPT_END: u8 = 255;
const OPT_PAD: u8 = 0;

/// How long one exchange may take before the next retransmission.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
    /// T1 and T2 as the server set them (options 58, 59); else 1/2 and 7/8 of the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebind_secs: Option<u32>,
}

impl Lease {
    /// (T1, T2, lease time) in seconds after the lease was obtained; `None` for an
    /// infinite lease. T1 < T2 < lease is enforced whatever the server said.
    pub fn times(&self) -> Option<(u64, u64, u64)> {
        let l = u64::from(self.lease_secs.filter(|s| *s != u32::MAX)?);
        let t2 = self
            .rebind_secs
            .map(u64::from)
            .filter(|t| *t < l)
            .unwrap_or(l * 7 / 8);
        let t1 = self
            .renew_secs
            .map(u64::from)
            .filter(|t| *t < t2)
            .unwrap_or(l / 2)
            .min(t2);
        Some((t1, t2, l))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP socket on {dev}")]
    Socket {
        dev: String,
        #[source]
        source: io::Error,
    },
    #[error("no DHCP {stage} on {dev} within {} s", .waited.as_secs())]
    Timeout {
        dev: String,
        stage: &'static str,
        waited: Duration,
    },
    #[error("the DHCP server {server} refused the request (NAK) on {dev}")]
    Nak { dev: String, server: Ipv4Addr },
}

/// A decoded server message, with only what the client uses.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub server: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub renew_secs: Option<u32>,
    pub rebind_secs: Option<u32>,
}

fn encode(kind: u8, xid: u32, mac: [u8; 6], request: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10] = 0x80; // broadcast flag: answer by broadcast, we have no address yet
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(&[OPT_MSG_TYPE, 1, kind]);
    m.extend_from_slice(&[OPT_CLIENT_ID, 7, 1]);
    m.extend_from_slice(&mac);
    if let Some((ip, server)) = request {
        m.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
        m.extend_from_slice(&ip.octets());
        m.extend_from_slice(&[OPT_SERVER_ID, 4]);
        m.extend_from_slice(&server.octets());
    }
    m.extend_from_slice(&[
        OPT_PARAMS, 5, OPT_MASK, OPT_ROUTER, OPT_DNS, OPT_DOMAIN, OPT_LEASE,
    ]);
    m.push(OPT_END);
    // Some servers ignore requests shorter than a BOOTP packet (300 bytes).
    if m.len() < 300 {
        m.resize(300, 0);
    }
    m
}

fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
}

/// Decodes a server's message (any LAN host can send one: fuzzed by
/// `fuzz/fuzz_targets/dhcp_reply.rs`). `None` for anything that is not a well-formed
/// BOOTREPLY with a message type.
pub fn decode(p: &[u8]) -> Option<Reply> {
    if p.len() < 240 || p[0] != 2 || p[236..240] != MAGIC {
        return None;
    }
    let mut r = Reply {
        xid: u32::from_be_bytes(p[4..8].try_into().ok()?),
        yiaddr: ipv4(&p[16..20])?,
        chaddr: p[28..34].try_into().ok()?,
        kind: 0,
        mask: None,
        router: None,
        dns: Vec::new(),
        domain: None,
        server: None,
        lease_secs: None,
        renew_secs: None,
        rebind_secs: None,
    };
    let mut o = &p[240..];
    while let Some((&code, rest)) = o.split_first() {
        match code {
            OPT_PAD => {
                o = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let val = rest.get(..usize::from(len))?;
        match code {
            OPT_MSG_TYPE => r.kind = *val.first()?,
            OPT_MASK => r.mask = ipv4(val),
            OPT_ROUTER => r.router = val.get(..4).and_then(ipv4),
            OPT_DNS => r.dns = val.chunks_exact(4).filter_map(ipv4).collect(),
            OPT_DOMAIN => {
                r.domain = std::str::from_utf8(val)
                    .ok()
                    .map(|s| s.trim_end_matches('\0').to_owned())
                    .filter(|s| !s.is_empty())
            }
            OPT_SERVER_ID => r.server = ipv4(val),
            OPT_LEASE => r.lease_secs = val.try_into().ok().map(u32::from_be_bytes),
            OPT_RENEWAL => r.renew_secs = val.try_into().ok().map(u32::from_be_bytes),
            OPT_REBINDING => r.rebind_secs = val.try_into().ok().map(u32::from_be_bytes),
            _ => {}
        }
        o = &rest[usize::from(len)..];
    }
    (r.kind != 0).then_some(r)
}

/// A mask from option 1, or the classful guess RFC 2131 leaves to the client.
fn prefix_of(mask: Option<Ipv4Addr>) -> u8 {
    match mask {
        Some(m) if u32::from(m).leading_ones() == u32::from(m).count_ones() => {
            u32::from(m).count_ones() as u8
        }
        _ => 24,
    }
}

/// Runs one DISCOVER..ACK exchange on `dev`, which must be up. Call it on a thread
/// inside the device's namespace; it blocks up to `timeout`.
pub fn acquire(dev: &str, mac: [u8; 6], xid: u32, timeout: Duration) -> Result<Lease, DhcpError> {
    let sock_err = |source| DhcpError::Socket {
        dev: dev.to_owned(),
        source,
    };
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).map_err(sock_err)?;
    setsockopt(&s, sockopt::BindToDevice, &std::ffi::OsString::from(dev))
        .map_err(|e| sock_err(io::Error::from(e)))?;
    s.set_broadcast(true).map_err(sock_err)?;
    let deadline = Instant::now() + timeout;
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

    let offer = exchange(
        &s,
        dev,
        &encode(DISCOVER, xid, mac, None),
        to,
        deadline,
        "OFFER",
        |r| r.kind == OFFER && r.xid == xid && r.chaddr == mac && r.server.is_some(),
    )?;
    let server = offer.server.expect("filtered on a server id");
    let req = encode(REQUEST, xid, mac, Some((offer.yiaddr, server)));
    let ack = exchange(&s, dev, &req, to, deadline, "ACK", |r| {
        matches!(r.kind, ACK | NAK) && r.xid == xid && r.chaddr == mac
    })?;
    if ack.kind == NAK {
        return Err(DhcpError::Nak {
            dev: dev.to_owned(),
            server,
        });
    }
    Ok(Lease {
        address: ack.yiaddr,
        prefix: prefix_of(ack.mask.or(offer.mask)),
        router: ack.router,
        dns: ack.dns,
        domain: ack.domain,
        server: ack.server.unwrap_or(server),
        lease_secs: ack.lease_secs,
        renew_secs: ack.renew_secs,
        rebind_secs: ack.rebind_secs,
    })
}

/// A bound client's message (RFC 2131 4.3.2/4.4.5/4.4.6): `ciaddr` is the leased
/// address, no broadcast flag (the client can receive unicast), and for a release the
/// server identifier. REQUEST renews (unicast to the server) or rebinds (broadcast).
pub fn encode_bound(kind: BoundKind, xid: u32, mac: [u8; 6], lease: &Lease) -> Vec<u8> {
    let mut m = encode(
        match kind {
            BoundKind::Request => REQUEST,
            BoundKind::Release => RELEASE,
        },
        xid,
        mac,
        None,
    );
    m[10] = 0;
    m[12..16].copy_from_slice(&lease.address.octets());
    if kind == BoundKind::Release {
        // Replaces the parameter list (a release asks for nothing): message type,
        // client id, server id, end.
        let opts = 240 + 3 + 9;
        m.truncate(opts);
        m.extend_from_slice(&[OPT_SERVER_ID, 4]);
        m.extend_from_slice(&lease.server.octets());
        m.push(OPT_END);
        m.resize(300, 0);
    }
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    Request,
    Release,
}

/// The server's answer to a renewal: the renewed lease (the old one's DNS, domain and
/// router kept where the ACK omits them), a refusal, or not an answer to us.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Ack(Lease),
    Nak,
}

pub fn answer(p: &[u8], xid: u32, mac: [u8; 6], old: &Lease) -> Option<Answer> {
    let r = decode(p)?;
    if r.xid != xid || r.chaddr != mac {
        return None;
    }
    match r.kind {
        NAK => Some(Answer::Nak),
        ACK => Some(Answer::Ack(Lease {
            address: r.yiaddr,
            prefix: r.mask.map(|m| prefix_of(Some(m))).unwrap_or(old.prefix),
            router: r.router.or(old.router),
            dns: if r.dns.is_empty() {
                old.dns.clone()
            } else {
                r.dns
            },
            domain: r.domain.or_else(|| old.domain.clone()),
            server: r.server.unwrap_or(old.server),
            lease_secs: r.lease_secs,
            renew_secs: r.renew_secs,
            rebind_secs: r.rebind_secs,
        })),
        _ => None,
    }
}

/// A UDP socket on port 68 bound to `dev` (non-blocking), for a renewal or a release.
/// Call it on a thread inside the device's namespace.
pub fn bound_socket(dev: &str) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))?;
    setsockopt(&s, sockopt::BindToDevice, &std::ffi::OsString::from(dev))
        .map_err(io::Error::from)?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Where a bound client's message goes: the server (renew, release) or everyone
/// (rebind).
pub fn destination(server: Option<Ipv4Addr>) -> SocketAddrV4 {
    SocketAddrV4::new(server.unwrap_or(Ipv4Addr::BROADCAST), 67)
}

/// Sends `msg`, retransmitting every RETRY, until a reply passing `want` arrives.
fn exchange(
    s: &UdpSocket,
    dev: &str,
    msg: &[u8],
    to: SocketAddrV4,
    deadline: Instant,
    stage: &'static str,
    want: impl Fn(&Reply) -> bool,
) -> Result<Reply, DhcpError> {
    let sock_err = |source| DhcpError::Socket {
        dev: dev.to_owned(),
        source,
    };
    let mut buf = vec![0u8; 1500];
    let start = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(DhcpError::Timeout {
                dev: dev.to_owned(),
                stage,
                waited: now - start,
            });
        }
        s.send_to(msg, to).map_err(sock_err)?;
        tracing::debug!("DHCP: sent a request for an {stage} on {dev}");
        let resend_at = (now + RETRY).min(deadline);
        loop {
            let left = resend_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s.set_read_timeout(Some(left)).map_err(sock_err)?;
            match s.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(r) = decode(&buf[..n]).filter(|r| want(r)) {
                        return Ok(r);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(sock_err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0xaa, 0xbb, 0xcc];

    /// A server reply as dnsmasq sends it.
    fn reply(kind: u8, xid: u32) -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[0] = 2;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&[192, 0, 2, 120]);
        m[28..34].copy_from_slice(&MAC);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[OPT_MSG_TYPE, 1, kind, OPT_PAD]);
        m.extend_from_slice(&[OPT_SERVER_ID, 4, 192, 0, 2, 1]);
        m.extend_from_slice(&[OPT_LEASE, 4, 0, 0, 0x0e, 0x10]);
        m.extend_from_slice(&[OPT_MASK, 4, 255, 255, 255, 0]);
        m.extend_from_slice(&[OPT_ROUTER, 4, 192, 0, 2, 1]);
        m.extend_from_slice(&[OPT_DNS, 8, 192, 0, 2, 1, 192, 0, 2, 2]);
        m.extend_from_slice(&[OPT_DOMAIN, 4]);
        m.extend_from_slice(b"lan\0");
        m.push(OPT_END);
        m
    }

    #[test]
    fn decodes_a_server_reply() {
        let r = decode(&reply(ACK, 0x1234_5678)).unwrap();
        assert_eq!(r.kind, ACK);
        assert_eq!(r.xid, 0x1234_5678);
        assert_eq!(r.chaddr, MAC);
        assert_eq!(r.yiaddr, Ipv4Addr::new(192, 0, 2, 120));
        assert_eq!(r.server, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r.router, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(
            r.dns,
            [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
        assert_eq!(r.domain.as_deref(), Some("lan"));
        assert_eq!(r.lease_secs, Some(3600));
        assert_eq!(prefix_of(r.mask), 24);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert_eq!(decode(&[]), None);
        let mut bad_magic = reply(ACK, 1);
        bad_magic[236] = 0;
        assert_eq!(decode(&bad_magic), None);
        let mut request = reply(ACK, 1);
        request[0] = 1;
        assert_eq!(decode(&request), None);
        // An option running past the end of the packet.
        let mut cut = reply(ACK, 1);
        cut.truncate(250);
        cut.extend_from_slice(&[OPT_DNS, 200, 1, 2]);
        assert_eq!(decode(&cut), None);
    }

    #[test]
    fn encodes_discover_and_request() {
        let d = encode(DISCOVER, 7, MAC, None);
        assert_eq!(d.len(), 300);
        assert_eq!((d[0], d[10]), (1, 0x80));
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, OPT_MSG_TYPE, 1, DISCOVER]);
        let r = encode(
            REQUEST,
            7,
            MAC,
            Some((Ipv4Addr::new(192, 0, 2, 120), Ipv4Addr::new(192, 0, 2, 1))),
        );
        let has = |n: &[u8]| r.windows(n.len()).any(|w| w == n);
        assert!(has(&[OPT_REQUESTED_IP, 4, 192, 0, 2, 120]));
        assert!(has(&[OPT_SERVER_ID, 4, 192, 0, 2, 1]));
    }

    fn lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(192, 0, 2, 120),
            prefix: 24,
            router: Some(Ipv4Addr::new(192, 0, 2, 1)),
            dns: vec![Ipv4Addr::new(192, 0, 2, 53)],
            domain: Some("lan".into()),
            server: Ipv4Addr::new(192, 0, 2, 1),
            lease_secs: Some(120),
            renew_secs: None,
            rebind_secs: None,
        }
    }

    #[test]
    fn renewal_times_default_and_are_ordered() {
        assert_eq!(lease().times(), Some((60, 105, 120)));
        let l = Lease {
            renew_secs: Some(30),
            rebind_secs: Some(90),
            ..lease()
        };
        assert_eq!(l.times(), Some((30, 90, 120)));
        // A server's T1 after T2, or T2 after the lease, is not believed.
        let l = Lease {
            renew_secs: Some(200),
            rebind_secs: Some(500),
            ..lease()
        };
        assert_eq!(l.times(), Some((60, 105, 120)));
        let inf = Lease {
            lease_secs: Some(u32::MAX),
            ..lease()
        };
        assert_eq!(inf.times(), None);
        assert_eq!(
            Lease {
                lease_secs: None,
                ..lease()
            }
            .times(),
            None
        );
    }

    #[test]
    fn bound_messages_carry_ciaddr_and_no_broadcast_flag() {
        let r = encode_bound(BoundKind::Request, 9, MAC, &lease());
        assert_eq!(r[10], 0);
        assert_eq!(&r[12..16], &[192, 0, 2, 120]);
        let has = |m: &[u8], n: &[u8]| m.windows(n.len()).any(|w| w == n);
        assert!(has(&r, &[OPT_MSG_TYPE, 1, REQUEST]));
        assert!(
            !has(&r, &[OPT_REQUESTED_IP, 4]),
            "RFC 2131: not when renewing"
        );
        let x = encode_bound(BoundKind::Release, 9, MAC, &lease());
        assert_eq!(x.len(), 300);
        assert!(has(&x, &[OPT_MSG_TYPE, 1, RELEASE]));
        assert!(has(&x, &[OPT_SERVER_ID, 4, 192, 0, 2, 1, OPT_END]));
        assert!(!has(&x, &[OPT_PARAMS]));
        assert_eq!(&x[12..16], &[192, 0, 2, 120]);
    }

    #[test]
    fn answers_to_a_renewal() {
        let mut ack = reply(ACK, 5);
        // T1 = 100 s, T2 = 200 s.
        ack.pop();
        ack.extend_from_slice(&[OPT_RENEWAL, 4, 0, 0, 0, 100, OPT_REBINDING, 4, 0, 0, 0, 200]);
        ack.push(OPT_END);
        match answer(&ack, 5, MAC, &lease()) {
            Some(Answer::Ack(l)) => {
                assert_eq!(l.address, Ipv4Addr::new(192, 0, 2, 120));
                assert_eq!(l.lease_secs, Some(3600));
                assert_eq!(l.times(), Some((100, 200, 3600)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(answer(&reply(NAK, 5), 5, MAC, &lease()), Some(Answer::Nak));
        assert_eq!(answer(&reply(ACK, 6), 5, MAC, &lease()), None, "other xid");
        assert_eq!(answer(&reply(OFFER, 5), 5, MAC, &lease()), None);
        let mut other_mac = reply(ACK, 5);
        other_mac[33] ^= 1;
        assert_eq!(answer(&other_mac, 5, MAC, &lease()), None);
    }

    #[test]
    fn prefix_from_mask() {
        assert_eq!(prefix_of(Some(Ipv4Addr::new(255, 255, 252, 0))), 22);
        assert_eq!(prefix_of(Some(Ipv4Addr::new(255, 0, 255, 0))), 24);
        assert_eq!(prefix_of(None), 24);
    }
}
