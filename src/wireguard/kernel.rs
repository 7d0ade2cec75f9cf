//! The kernel backend: the link is created with rtnetlink (`ip link add type wireguard`)
//! and configured over WireGuard's generic-netlink API (what `wg setconf` does). The
//! messages are built by hand; the API is small and stable (include/uapi/linux/wireguard.h).

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_GENERIC};
use rtnetlink::LinkWireguard;

use super::parse::WgConfig;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel has no WireGuard module")]
    NoModule,
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op}: {}", describe(.source))]
    Link {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}: {source}")]
    Genl {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

fn handle() -> Result<rtnetlink::Handle, KernelError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Creates the link `name` in the calling thread's namespace. `NoModule` when the kernel
/// does not know the link type ("Unknown device type").
pub async fn create(name: &str) -> Result<(), KernelError> {
    let h = handle()?;
    match h
        .link()
        .add(LinkWireguard::new(name).build())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EOPNOTSUPP => {
            Err(KernelError::NoModule)
        }
        Err(source) => Err(KernelError::Link {
            op: format!("cannot create WireGuard device {name}"),
            source,
        }),
    }
}

/// Deletes the WireGuard link `name` of the host namespace if it exists.
pub async fn delete(name: &str) -> Result<(), KernelError> {
    let h = handle()?;
    use futures::TryStreamExt;
    let link = h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await;
    let index = match link {
        Ok(Some(m)) => m.header.index,
        Ok(None) => return Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => return Ok(()),
        Err(source) => {
            return Err(KernelError::Link {
                op: format!("cannot look up {name}"),
                source,
            });
        }
    };
    h.link()
        .del(index)
        .execute()
        .await
        .map_err(|source| KernelError::Link {
            op: format!("cannot delete {name}"),
            source,
        })
}

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 1 << 15;

const WG_CMD_SET_DEVICE: u8 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_FLAGS: u16 = 5;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_FWMARK: u16 = 7;
const WGDEVICE_A_PEERS: u16 = 8;
const WGDEVICE_F_REPLACE_PEERS: u32 = 1;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_PRESHARED_KEY: u16 = 2;
const WGPEER_A_FLAGS: u16 = 3;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGPEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

/// A netlink message under construction: header, generic header, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(family: u16, cmd: u8, version: u8) -> Msg {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish()
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).expect("attribute fits");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn begin(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("open nest");
        let len = u16::try_from(self.buf.len() - start).expect("nest fits");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("message fits");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn sockaddr(ep: &SocketAddr) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    match ep {
        SocketAddr::V4(a) => {
            b.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&[0; 8]);
        }
        SocketAddr::V6(a) => {
            b.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.flowinfo().to_ne_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
    b
}

/// The WG_CMD_SET_DEVICE message that makes `iface` match `cfg` (peers replaced).
fn set_device(
    family: u16,
    iface: &str,
    cfg: &WgConfig,
    endpoints: &[Option<SocketAddr>],
) -> Vec<u8> {
    let i = &cfg.interface;
    let mut m = Msg::new(family, WG_CMD_SET_DEVICE, 1);
    let mut name = iface.as_bytes().to_vec();
    name.push(0);
    m.attr(WGDEVICE_A_IFNAME, &name);
    m.attr(WGDEVICE_A_PRIVATE_KEY, i.private_key.bytes());
    m.attr(WGDEVICE_A_FLAGS, &WGDEVICE_F_REPLACE_PEERS.to_ne_bytes());
    if let Some(p) = i.listen_port {
        m.attr(WGDEVICE_A_LISTEN_PORT, &p.to_ne_bytes());
    }
    m.attr(WGDEVICE_A_FWMARK, &i.fwmark.unwrap_or(0).to_ne_bytes());
    m.begin(WGDEVICE_A_PEERS);
    for (n, p) in cfg.peers.iter().enumerate() {
        m.begin(0);
        m.attr(WGPEER_A_PUBLIC_KEY, p.public_key.bytes());
        if let Some(psk) = &p.preshared_key {
            m.attr(WGPEER_A_PRESHARED_KEY, psk.bytes());
        }
        m.attr(WGPEER_A_FLAGS, &WGPEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes());
        if let Some(Some(ep)) = endpoints.get(n) {
            m.attr(WGPEER_A_ENDPOINT, &sockaddr(ep));
        }
        m.attr(
            WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
            &p.persistent_keepalive.unwrap_or(0).to_ne_bytes(),
        );
        m.begin(WGPEER_A_ALLOWEDIPS);
        for a in &p.allowed_ips {
            let net = a.network();
            m.begin(0);
            let (fam, bytes) = match net.addr() {
                IpAddr::V4(v4) => (libc::AF_INET as u16, v4.octets().to_vec()),
                IpAddr::V6(v6) => (libc::AF_INET6 as u16, v6.octets().to_vec()),
            };
            m.attr(WGALLOWEDIP_A_FAMILY, &fam.to_ne_bytes());
            m.attr(WGALLOWEDIP_A_IPADDR, &bytes);
            m.attr(WGALLOWEDIP_A_CIDR_MASK, &[net.prefix()]);
            m.end();
        }
        m.end();
        m.end();
    }
    m.end();
    m.finish()
}

/// Attributes after the netlink and generic headers of a reply.
fn attrs(msg: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = msg.get(20..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & !NLA_F_NESTED;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((ty, payload))
    })
}

/// Sends one request and returns the data replies, failing on a negative ack.
fn transact(sock: &Socket, req: &[u8], op: &'static str) -> Result<Vec<Vec<u8>>, KernelError> {
    let genl = |source| KernelError::Genl { op, source };
    sock.send(req, 0).map_err(genl)?;
    let mut data = Vec::new();
    loop {
        let (buf, _) = sock.recv_from_full().map_err(genl)?;
        let mut rest = &buf[..];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < 16 || len > rest.len() {
                return Err(genl(io::Error::other("malformed netlink reply")));
            }
            let msg = &rest[..len];
            if ty == NLMSG_ERROR {
                let code = msg
                    .get(16..20)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .unwrap_or(-libc::EPROTO);
                return if code == 0 {
                    Ok(data)
                } else {
                    Err(genl(io::Error::from_raw_os_error(-code)))
                };
            }
            data.push(msg.to_vec());
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}

/// Configures the kernel device `iface` like `wg setconf`.
pub fn configure(
    iface: &str,
    cfg: &WgConfig,
    endpoints: &[Option<SocketAddr>],
) -> Result<(), KernelError> {
    let sock = Socket::new(NETLINK_GENERIC).map_err(KernelError::Socket)?;
    sock.connect(&NlAddr::new(0, 0))
        .map_err(KernelError::Socket)?;
    let mut q = Msg::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
    q.attr(CTRL_ATTR_FAMILY_NAME, b"wireguard\0");
    let replies = transact(
        &sock,
        &q.finish(),
        "cannot find the WireGuard netlink family",
    )?;
    let family = replies
        .iter()
        .flat_map(|r| attrs(r))
        .find(|(t, p)| *t == CTRL_ATTR_FAMILY_ID && p.len() >= 2)
        .map(|(_, p)| u16::from_ne_bytes([p[0], p[1]]))
        .ok_or(KernelError::NoModule)?;
    transact(
        &sock,
        &set_device(family, iface, cfg, endpoints),
        "the kernel refused the WireGuard configuration",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::parse;
    use std::path::Path;

    #[test]
    fn set_device_layout() {
        let text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                    ListenPort = 51820\n\
                    [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
                    AllowedIPs = 203.0.113.7/24\n";
        let cfg = parse::parse(Path::new("t.conf"), text).unwrap();
        let ep: SocketAddr = "198.51.100.2:51820".parse().unwrap();
        let msg = set_device(0x20, "wg0", &cfg, &[Some(ep)]);
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), 0x20);
        assert_eq!(msg[16], WG_CMD_SET_DEVICE);
        let top: Vec<(u16, Vec<u8>)> = attrs(&msg).map(|(t, p)| (t, p.to_vec())).collect();
        let types: Vec<u16> = top.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            types,
            [
                WGDEVICE_A_IFNAME,
                WGDEVICE_A_PRIVATE_KEY,
                WGDEVICE_A_FLAGS,
                WGDEVICE_A_LISTEN_PORT,
                WGDEVICE_A_FWMARK,
                WGDEVICE_A_PEERS
            ]
        );
        assert_eq!(top[0].1, b"wg0\0");
        assert_eq!(top[3].1, 51820u16.to_ne_bytes());
        // The masked allowed IP is inside the peers nest.
        let peers = &top[5].1;
        assert!(peers.windows(4).any(|w| w == [203, 0, 113, 0]));
        assert!(peers.windows(2).any(|w| w == 51820u16.to_be_bytes()));
    }
}
