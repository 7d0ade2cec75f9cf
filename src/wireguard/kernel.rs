//! The kernel backend: the link is created with rtnetlink directly inside the
//! connection's namespace (`RTM_NEWLINK` + `IFLA_NET_NS_FD` sent from the host: born
//! there, no move; its UDP socket belongs to the namespace it was created from, the
//! host's — WireGuard's "birthplace" rule), and configured over WireGuard's generic
//! netlink API with typed messages (netlink-packet-wireguard + netlink-packet-generic,
//! on the same netlink-packet-core as rtnetlink), split as wg(8) splits them.

pub mod split;

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::WireguardMessage;
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
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the namespace of {iface}: {source}")]
    Netns {
        iface: String,
        #[source]
        source: crate::netns::NetnsError,
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

/// Creates the link `name` from the calling thread's namespace (the host's, which
/// keeps its UDP socket), inside `ns` when given. `NoModule` when the kernel does not
/// know the link type ("Unknown device type").
pub async fn create(name: &str, ns: Option<&File>) -> Result<(), KernelError> {
    let h = handle()?;
    let mut b = LinkWireguard::new(name);
    if let Some(f) = ns {
        b = b.setns_by_fd(f.as_raw_fd());
    }
    match h.link().add(b.build()).execute().await {
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

/// Deletes the WireGuard link `name` of the host namespace, or of `ns`, if it exists.
pub async fn delete(name: &str, ns: Option<&File>) -> Result<(), KernelError> {
    // Kept until the end: its connection task serves the handle.
    let inside;
    let h = match ns {
        None => handle()?,
        Some(f) => {
            inside = crate::netlink::Netlink::connect(Some(f))
                .map_err(|e| KernelError::Socket(io::Error::other(e.to_string())))?;
            inside.handle().clone()
        }
    };
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

/// Sends one request and waits for its ack, collecting the data replies.
fn transact<T>(
    sock: &Socket,
    mut msg: NetlinkMessage<T>,
    seq: u32,
    dump: bool,
    op: &str,
) -> Result<Vec<T>, KernelError>
where
    T: NetlinkSerializable + netlink_packet_core::NetlinkDeserializable + std::fmt::Debug,
{
    let genl = |source| KernelError::Genl {
        op: op.to_owned(),
        source,
    };
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    sock.send(&buf, 0).map_err(genl)?;
    let mut data = Vec::new();
    loop {
        let (reply, _) = sock.recv_from_full().map_err(genl)?;
        let mut rest = &reply[..];
        while !rest.is_empty() {
            let m = NetlinkMessage::<T>::deserialize(rest)
                .map_err(|e| genl(io::Error::other(format!("malformed reply: {e}"))))?;
            let len = (m.header.length as usize).max(16).next_multiple_of(4);
            rest = rest.get(len..).unwrap_or(&[]);
            if m.header.sequence_number != seq {
                continue;
            }
            match m.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(data),
                        Some(code) => Err(genl(io::Error::from_raw_os_error(-code.get()))),
                    };
                }
                NetlinkPayload::InnerMessage(i) => data.push(i),
                NetlinkPayload::Done(_) => return Ok(data),
                _ => {}
            }
        }
    }
}

/// Opens a generic-netlink socket in `ns` (the device's namespace: WireGuard's API finds
/// the device by name in the socket's namespace), or in the calling thread's.
fn genl_socket(iface: &str, ns: Option<&File>) -> Result<Socket, KernelError> {
    let open = || -> io::Result<Socket> {
        let mut s = Socket::new(NETLINK_GENERIC)?;
        s.bind_auto()?;
        s.connect(&NlAddr::new(0, 0))?;
        Ok(s)
    };
    match ns {
        None => open(),
        Some(f) => crate::netns::run_in(f, open).map_err(|source| KernelError::Netns {
            iface: iface.to_owned(),
            source,
        })?,
    }
    .map_err(KernelError::Socket)
}

/// The generic-netlink family id of WireGuard; `NoModule` when the kernel has none.
fn family(sock: &Socket) -> Result<u16, KernelError> {
    let q = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".to_owned())],
    });
    let replies = match transact(
        sock,
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(q)),
        1,
        false,
        "cannot find the WireGuard netlink family",
    ) {
        Err(KernelError::Genl { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            return Err(KernelError::NoModule);
        }
        r => r?,
    };
    replies
        .iter()
        .flat_map(|r| &r.payload.nlas)
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or(KernelError::NoModule)
}

/// Configures the kernel device `iface` (in `ns`, else in the calling thread's
/// namespace) like `wg setconf`, in as many messages as it takes. A refused message
/// fails the whole call; the caller deletes the device (rollback), so a half-applied
/// configuration never carries traffic.
pub fn configure(
    iface: &str,
    ns: Option<&File>,
    cfg: &WgConfig,
    endpoints: &[Option<SocketAddr>],
) -> Result<(), KernelError> {
    let sock = genl_socket(iface, ns)?;
    let family = family(&sock)?;
    let msgs = split::set_device(iface, cfg, endpoints, split::MAX_MESSAGE);
    let total = msgs.len();
    for (n, m) in msgs.into_iter().enumerate() {
        let mut genl: GenlMessage<WireguardMessage> = GenlMessage::from_payload(m);
        genl.set_resolved_family_id(family);
        let msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(genl));
        let op = format!(
            "the kernel refused part {} of {total} of the WireGuard configuration of {iface}",
            n + 1
        );
        transact(&sock, msg, 2 + n as u32, false, &op)?;
    }
    Ok(())
}

/// The device `iface` as the kernel reports it (`wg show`): a dump of one or more
/// messages, from a socket in `ns` (the device's namespace).
pub fn get_device(iface: &str, ns: Option<&File>) -> Result<Vec<WireguardMessage>, KernelError> {
    let sock = genl_socket(iface, ns)?;
    let family = family(&sock)?;
    let mut genl = GenlMessage::from_payload(WireguardMessage {
        cmd: netlink_packet_wireguard::WireguardCmd::GetDevice,
        attributes: vec![netlink_packet_wireguard::WireguardAttribute::IfName(
            iface.to_owned(),
        )],
    });
    genl.set_resolved_family_id(family);
    let msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(genl));
    let op = format!("cannot read the WireGuard device {iface}");
    Ok(transact(&sock, msg, 2, true, &op)?
        .into_iter()
        .map(|g| g.payload)
        .collect())
}
