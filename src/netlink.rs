//! rtnetlink access to one network namespace: links, addresses, routes, and waiting for
//! a device to appear. A netlink socket belongs to the namespace it was created in, so
//! for another namespace the socket is created on a dedicated thread inside it
//! (`netns::run_in`) and then driven from the runtime.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{Socket, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::netns::{self, NetnsError};
pub use crate::spec::{AddrInfo, Link, RouteInfo};
use crate::spec::{Address, IpNet, Route};

/// RTNLGRP_LINK as a bind() group bitmask: link add/change/remove notifications.
const LINK_GROUP_MASK: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{op}: {}", describe(.error))]
    Request {
        op: String,
        // Not a `source`: `describe` already says what the kernel said, once. Boxed:
        // a netlink message is large and this error travels up every Result.
        error: Box<rtnetlink::Error>,
    },
    #[error("device {name} did not appear within {} ms", .timeout.as_millis())]
    Timeout { name: String, timeout: Duration },
    #[error("the netlink connection closed unexpectedly")]
    Closed,
}

/// rtnetlink's errors print the whole kernel message; users want the errno text.
fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

impl NetlinkError {
    /// The kernel's errno for a failed request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { error, .. } => match error.as_ref() {
                rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
                _ => None,
            },
            _ => None,
        }
    }
}

fn req(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |error| NetlinkError::Request {
        op,
        error: Box::new(error),
    }
}

impl Link {
    fn from_message(m: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            mtu: None,
            up: m.header.flags.contains(LinkFlags::Up),
            rx_bytes: 0,
            tx_bytes: 0,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            link.kind = Some(kind_name(k));
                        }
                    }
                }
                LinkAttribute::Stats64(s) => {
                    link.rx_bytes = s.rx_bytes;
                    link.tx_bytes = s.tx_bytes;
                }
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Other(s) => s.clone(),
        k => k.to_string(),
    }
}

/// A netlink connection bound to one namespace, subscribed to link notifications.
pub struct Netlink {
    handle: Handle,
    events: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

/// The runtime every netlink call here runs on: one thread, because the namespace a
/// socket is opened in belongs to the thread that opened it (setns is per thread).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// A route netlink socket in the calling thread's namespace, subscribed to link events.
pub fn open_socket() -> Result<OwnedFd, std::io::Error> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    // Subscribing at bind time, before any dump, means no link event can be missed
    // between "is it there?" and "wait for it".
    s.bind(&SocketAddr::new(0, LINK_GROUP_MASK))?;
    let fd: RawFd = s.into_raw_fd();
    // SAFETY: `fd` was just released by `Socket` and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Netlink {
    /// Connects to the namespace `ns`, or to the calling thread's when `None`.
    /// Must be called inside a tokio runtime.
    pub fn connect(ns: Option<&File>) -> Result<Netlink, NetlinkError> {
        let fd = match ns {
            None => open_socket().map_err(NetlinkError::Socket)?,
            Some(ns) => netns::run_in(ns, open_socket)?.map_err(NetlinkError::Socket)?,
        };
        // SAFETY: ownership of the socket fd moves into TokioSocket.
        let sock = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, events) = rtnetlink::from_socket(sock);
        tokio::spawn(conn);
        Ok(Netlink { handle, events })
    }

    /// The rtnetlink handle, for requests this module has no helper for.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Drives a socket from `open_socket`, made in whatever namespace the caller chose
    /// (for reading many namespaces without a thread each). Must be called inside a
    /// tokio runtime.
    pub fn from_socket(fd: OwnedFd) -> Netlink {
        // SAFETY: ownership of the socket fd moves into TokioSocket.
        let sock = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, events) = rtnetlink::from_socket(sock);
        tokio::spawn(conn);
        Netlink { handle, events }
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("cannot list links"))?;
        Ok(msgs.iter().filter_map(Link::from_message).collect())
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().and_then(Link::from_message)),
            // ENODEV: no such device.
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc_enodev() => Ok(None),
            Err(e) => Err(req(format!("cannot look up {name}"))(e)),
        }
    }

    /// Waits, on link notifications rather than by polling, until `name` exists.
    pub async fn wait_for_link(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Link, NetlinkError> {
        if let Some(l) = self.link(name).await? {
            return Ok(l);
        }
        let events = &mut self.events;
        let wait = async {
            while let Some((msg, _)) = events.next().await {
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) = msg.payload
                    && let Some(l) = Link::from_message(&m)
                    && l.name == name
                {
                    return Ok(l);
                }
            }
            Err(NetlinkError::Closed)
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(NetlinkError::Timeout {
                name: name.to_owned(),
                timeout,
            }),
        }
    }

    /// Moves a link into the namespace `target` (which drops its addresses and routes).
    pub async fn move_link(&self, link: &Link, target: &File) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index)
            .setns_by_fd(target.as_raw_fd())
            .build();
        self.set_link(msg, format!("cannot move {}", link.name))
            .await
    }

    /// Moves a link into `target` under the name `name` (a name taken there makes the
    /// plain move fail with EEXIST).
    pub async fn move_link_renamed(
        &self,
        link: &Link,
        target: &File,
        name: &str,
    ) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index)
            .setns_by_fd(target.as_raw_fd())
            .name(name.to_owned())
            .build();
        self.set_link(msg, format!("cannot move {} as {name}", link.name))
            .await
    }

    /// Renames a link (the kernel wants it down).
    pub async fn rename_link(&self, link: &Link, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index)
            .name(name.to_owned())
            .build();
        self.set_link(msg, format!("cannot rename {} to {name}", link.name))
            .await
    }

    /// One RTM_SETLINK; `what` names the operation and the link in the error.
    async fn set_link(&self, msg: LinkMessage, what: String) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req(what))
    }

    /// The link with index `index`, if there is one in this namespace.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links().await?.into_iter().find(|l| l.index == index))
    }

    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index).mtu(mtu).build();
        self.set_link(msg, format!("cannot set MTU {mtu} on {}", link.name))
            .await
    }

    /// Link down: the kernel drops the link's routes at once (the addresses stay).
    pub async fn set_down(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.set_link(msg, format!("cannot bring {name} down"))
            .await
    }

    pub async fn set_up(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link(msg, format!("cannot bring {name} up")).await
    }

    /// Adds (or re-asserts, so a second `up` is harmless) an address.
    pub async fn add_address(&self, link: &Link, a: &Address) -> Result<(), NetlinkError> {
        let mut r = self
            .handle
            .address()
            .add(link.index, a.local.addr(), a.local.prefix())
            .replace();
        if let Some(peer) = a.peer {
            // p2p: IFA_LOCAL is our side, IFA_ADDRESS the peer (what `ip addr add L peer P` sends).
            let m = r.message_mut();
            m.attributes.retain(|x| {
                !matches!(
                    x,
                    AddressAttribute::Address(_) | AddressAttribute::Broadcast(_)
                )
            });
            m.attributes.push(AddressAttribute::Address(peer));
        }
        r.execute().await.map_err(req(format!(
            "cannot add address {} to {}",
            describe_addr(a),
            link.name
        )))
    }

    pub async fn del_address(&self, link: &Link, a: &Address) -> Result<(), NetlinkError> {
        let mut m = AddressMessage::default();
        m.header.index = link.index;
        m.header.prefix_len = a.local.prefix();
        m.header.family = family(a.local.addr());
        m.attributes.push(AddressAttribute::Local(a.local.addr()));
        m.attributes
            .push(AddressAttribute::Address(a.peer.unwrap_or(a.local.addr())));
        self.handle
            .address()
            .del(m)
            .execute()
            .await
            .map_err(req(format!(
                "cannot remove address {} from {}",
                describe_addr(a),
                link.name
            )))
    }

    pub async fn addresses(&self) -> Result<Vec<AddrInfo>, NetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("cannot list addresses"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let mut local = None;
                let mut address = None;
                for a in &m.attributes {
                    match a {
                        AddressAttribute::Local(ip) => local = Some(*ip),
                        AddressAttribute::Address(ip) => address = Some(*ip),
                        _ => {}
                    }
                }
                let l = local.or(address)?;
                let peer = address.filter(|p| Some(*p) != local && local.is_some());
                Some(AddrInfo {
                    index: m.header.index,
                    local: IpNet::new(l, m.header.prefix_len).ok()?,
                    peer,
                })
            })
            .collect())
    }

    fn route_message(&self, link: &Link, r: &Route) -> RouteMessage {
        let dest = r.dest.network();
        let mut msg = match dest.addr() {
            IpAddr::V4(d) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(d, dest.prefix())
                    .output_interface(link.index);
                if let Some(IpAddr::V4(g)) = r.gateway {
                    b = b.gateway(g);
                }
                if let Some(m) = r.metric {
                    b = b.priority(m);
                }
                b.build()
            }
            IpAddr::V6(d) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(d, dest.prefix())
                    .output_interface(link.index);
                if let Some(IpAddr::V6(g)) = r.gateway {
                    b = b.gateway(g);
                }
                if let Some(m) = r.metric {
                    b = b.priority(m);
                }
                b.build()
            }
        };
        if r.gateway.is_none() {
            // A device route, like `ip route add X dev tun0`.
            msg.header.scope = RouteScope::Link;
        }
        msg
    }

    /// Adds (or replaces, so a second `up` is harmless) a route via `link`.
    pub async fn add_route(&self, link: &Link, r: &Route) -> Result<(), NetlinkError> {
        let msg = self.route_message(link, r);
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(req(format!(
                "cannot add route {} to {}",
                describe_route(r),
                link.name
            )))
    }

    pub async fn del_route(&self, link: &Link, r: &Route) -> Result<(), NetlinkError> {
        let msg = self.route_message(link, r);
        self.handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(req(format!(
                "cannot remove route {} from {}",
                describe_route(r),
                link.name
            )))
    }

    /// The main-table routes of both families.
    pub async fn routes(&self) -> Result<Vec<RouteInfo>, NetlinkError> {
        let mut out = Vec::new();
        for msg in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(msg)
                .execute()
                .try_collect()
                .await
                .map_err(req("cannot list routes"))?;
            out.extend(msgs.iter().filter_map(route_info));
        }
        Ok(out)
    }
}

fn route_info(m: &RouteMessage) -> Option<RouteInfo> {
    if m.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let mut dest = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    let mut table = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = route_addr(d),
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Table(t) => table = Some(*t),
            _ => {}
        }
    }
    if table
        .is_some_and(|t| t != u32::from(rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN))
    {
        return None;
    }
    let dest = match dest {
        Some(d) => IpNet::new(d, m.header.destination_prefix_length).ok()?,
        None => match m.header.address_family {
            AddressFamily::Inet => IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).ok()?,
            AddressFamily::Inet6 => IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0).ok()?,
            _ => return None,
        },
    };
    Some(RouteInfo {
        dest,
        gateway,
        oif,
        metric,
        scope_link_or_host: matches!(m.header.scope, RouteScope::Link | RouteScope::Host),
    })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

pub fn describe_addr(a: &Address) -> String {
    match a.peer {
        Some(p) => format!("{} peer {p}", a.local.addr()),
        None => a.local.to_string(),
    }
}

pub fn describe_route(r: &Route) -> String {
    let mut s = r.dest.network().to_string();
    if let Some(g) = r.gateway {
        s.push_str(&format!(" via {g}"));
    }
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    s
}
