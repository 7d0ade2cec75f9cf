//! The seams between the lifecycle engine and the system: netlink (`Net`), named
//! namespaces (`Namespaces`), the files under `/run/vpn-ns` and `/etc/netns`
//! (`Records`), the host-side plumbing of uplink kinds (`Uplink`), the keeper
//! (`Supervisor`) and the WireGuard devices vpn-ns makes itself (`WgDevices`). `System` is the real thing, kept thin: every method is one call
//! into the module that owns the operation. Unit tests drive the engine over an
//! in-memory fake (`fake.rs`) that can fail any operation.
//!
//! Namespaces are named (`At`), not passed as open files, so that a fake needs no
//! kernel object and the real side opens and caches one netlink socket per namespace.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::rc::Rc;
use std::time::Duration;

use futures::future::LocalBoxFuture;

use crate::adopt::{self, Snapshot};
use crate::config::{Connection, MacvlanMode};
use crate::dns::{self, DnsError};
use crate::netlink::{Link, Netlink, NetlinkError};
use crate::netns::{self, NetnsError};
use crate::plain::{self, Lease, Record, forwarding, links, nft};
use crate::procs::ProcId;
use crate::spec::{Address, DnsSpec, IpNet, NetnsName, Route};
use crate::state::{self, State, StateError};

/// Which namespace an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At<'a> {
    Host,
    Ns(&'a NetnsName),
}

/// Type-erased so that the supervisor's own error types stay in its layer.
pub type SupervisorError = anyhow::Error;

// The engine runs these on one thread, with static dispatch: no Send bound is wanted.
#[allow(async_fn_in_trait)]
pub trait Net {
    async fn link(&self, at: At<'_>, name: &str) -> Result<Option<Link>, NetlinkError>;
    async fn link_by_index(&self, at: At<'_>, index: u32) -> Result<Option<Link>, NetlinkError>;
    async fn link_names(&self, at: At<'_>) -> Result<Vec<String>, NetlinkError>;
    /// Waits, bounded by `timeout`, until `name` exists in `at`.
    async fn wait_for_link(
        &self,
        at: At<'_>,
        name: &str,
        timeout: Duration,
    ) -> Result<Link, NetlinkError>;
    /// Moves `link` from `from` to `to`, under `rename` if given.
    async fn move_link(
        &self,
        from: At<'_>,
        link: &Link,
        to: At<'_>,
        rename: Option<&str>,
    ) -> Result<(), NetlinkError>;
    async fn set_up(&self, at: At<'_>, link: &Link) -> Result<(), NetlinkError>;
    async fn set_mtu(&self, at: At<'_>, link: &Link, mtu: u32) -> Result<(), NetlinkError>;
    async fn add_address(&self, at: At<'_>, link: &Link, a: &Address) -> Result<(), NetlinkError>;
    async fn del_address(&self, at: At<'_>, link: &Link, a: &Address) -> Result<(), NetlinkError>;
    async fn add_route(&self, at: At<'_>, link: &Link, r: &Route) -> Result<(), NetlinkError>;
    async fn del_route(&self, at: At<'_>, link: &Link, r: &Route) -> Result<(), NetlinkError>;
    /// Every network the host has an address in or a (non-default) route to.
    async fn host_networks(&self) -> Result<Vec<IpNet>, NetlinkError>;
    /// A macvlan of host device `parent`, born inside `ns`.
    async fn create_macvlan(
        &self,
        ns: &NetnsName,
        name: &str,
        parent: &Link,
        mode: MacvlanMode,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError>;
    /// A veth pair: `host_name` in the host namespace, `peer` born inside `ns`.
    async fn create_veth(
        &self,
        host_name: &str,
        peer: &str,
        ns: &NetnsName,
    ) -> Result<(), NetlinkError>;
    /// `Ok(false)` when there is no such link.
    async fn delete_link(&self, at: At<'_>, name: &str) -> Result<bool, NetlinkError>;
}

pub trait Namespaces {
    fn exists(&self, ns: &NetnsName) -> bool;
    fn create(&self, ns: &NetnsName) -> Result<(), NetnsError>;
    fn delete(&self, ns: &NetnsName) -> Result<(), NetnsError>;
    /// An open handle, for what needs a namespace fd (a device made in place, relays).
    fn open(&self, ns: &NetnsName) -> Result<File, NetnsError>;
    /// The calling thread's (the host's) namespace.
    fn host(&self) -> Result<File, NetnsError>;
}

/// The files vpn-ns owns: state records under `/run/vpn-ns`, DNS files under
/// `/etc/netns`.
pub trait Records {
    fn load_state(&self, conn: &str) -> Result<Option<State>, StateError>;
    fn save_state(&self, st: &State) -> Result<(), StateError>;
    fn remove_state(&self, conn: &str) -> Result<(), StateError>;
    /// `Ok(true)` when `/etc/netns/<ns>` was created by this call.
    fn write_dns(&self, ns: &NetnsName, conn: &str, dns: &DnsSpec) -> Result<bool, DnsError>;
    fn remove_dns(&self, ns: &NetnsName) -> Result<(), DnsError>;
    fn load_plain(&self, conn: &str) -> Result<Option<Record>, StateError>;
    fn save_plain(&self, conn: &str, r: &Record) -> Result<(), StateError>;
    fn remove_plain(&self, conn: &str) -> Result<(), StateError>;
    fn load_adopted(&self, conn: &str) -> Option<Snapshot>;
    fn forget_adopted(&self, conn: &str) -> Result<(), StateError>;
}

/// Host-side plumbing of the uplink kinds (macvlan, routed).
pub trait Uplink {
    fn enable_forwarding(&self, conn: &str) -> anyhow::Result<()>;
    /// The value restored when this was the last claim.
    fn release_forwarding(&self, conn: &str) -> anyhow::Result<Option<String>>;
    fn add_nat(&self, conn: &str, transfer: &IpNet, uplink: &str) -> Result<(), nft::NftError>;
    fn delete_nat(&self, conn: &str) -> Result<bool, nft::NftError>;
    /// Runs a DHCP exchange on `dev` inside `ns`.
    fn dhcp(&self, ns: &NetnsName, dev: &str, conn: &str) -> anyhow::Result<Lease>;
    /// DHCPRELEASE of a lease still held; best effort.
    fn release_lease(&self, conn: &str, rec: &Record, ns: &NetnsName, dev: &str);
}

/// The connection's keeper (and the relays it hosts), which live above the lifecycle.
pub trait Supervisor {
    /// Checks the connection's relays against the namespace (`None`: host) and starts
    /// the keeper, which waits for the caller's lock.
    fn start(&self, conn: &Connection, ns: Option<&File>) -> Result<ProcId, SupervisorError>;
    /// Ends the keeper recorded in `st` (unless it is the calling process).
    fn stop(&self, st: &State);
    /// Ends keeper `k` of a previous up; its log stays.
    fn stop_id(&self, conn: &str, k: ProcId);
    /// Ends keeper `k` of a rolled-back up, with its socket and log.
    fn discard(&self, conn: &str, k: ProcId);
}

/// The WireGuard devices of native up: the processes serving them (wireguard-go, the
/// built-in data plane) and kernel links. Their code and the peers' configuration live
/// above the lifecycle, which decides what to make and journals how to undo it.
pub trait WgDevices {
    /// Starts the external userspace program, which makes `iface` in the host namespace;
    /// returns once its UAPI socket answers.
    fn start_userspace(&self, conn: &Connection, iface: &str) -> anyhow::Result<ProcId>;
    /// Sets the peers' configuration over the UAPI socket of `iface`.
    fn configure_userspace(&self, conn: &Connection, iface: &str) -> anyhow::Result<()>;
    /// A kernel WireGuard link born in `at`; `Ok(false)` when the kernel has no
    /// WireGuard module.
    fn create_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<bool>>;
    fn configure_kernel(&self, at: At<'_>, iface: &str) -> anyhow::Result<()>;
    /// Deletes the kernel link `iface` of `at`, if it exists.
    fn delete_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<()>>;
    /// Starts the built-in data plane with its tun born in `at`; returns once it serves.
    fn start_builtin(&self, conn: &Connection, at: At<'_>, iface: &str) -> anyhow::Result<ProcId>;
    /// Stops process `id` serving `iface` (if it still is that process) and reaps it;
    /// fails when it still runs afterwards.
    fn stop_device(&self, id: ProcId, iface: &str) -> anyhow::Result<()>;
}

/// Everything the engine needs.
pub trait Edges: Net + Namespaces + Records + Uplink + Supervisor + WgDevices {}
impl<T: Net + Namespaces + Records + Uplink + Supervisor + WgDevices> Edges for T {}

/// The real system, with the keeper supplied by the layer above.
pub struct System<'a> {
    keeper: &'a dyn Supervisor,
    wg: Option<&'a dyn WgDevices>,
    sockets: RefCell<HashMap<Option<NetnsName>, Rc<Netlink>>>,
}

impl<'a> System<'a> {
    pub fn new(keeper: &'a dyn Supervisor) -> Self {
        System {
            keeper,
            wg: None,
            sockets: RefCell::default(),
        }
    }

    /// With WireGuard's devices: those of one native up (they carry its configuration),
    /// or down's (stop and delete need none).
    pub fn with_wireguard(mut self, wg: &'a dyn WgDevices) -> Self {
        self.wg = Some(wg);
        self
    }

    fn wg(&self) -> anyhow::Result<&'a dyn WgDevices> {
        self.wg
            .ok_or_else(|| anyhow::anyhow!("no WireGuard devices were given to this system"))
    }

    /// One socket per namespace, made on first use (inside a tokio runtime).
    fn nl(&self, at: At<'_>) -> Result<Rc<Netlink>, NetlinkError> {
        let key = match at {
            At::Host => None,
            At::Ns(n) => Some(n.clone()),
        };
        if let Some(nl) = self.sockets.borrow().get(&key) {
            return Ok(nl.clone());
        }
        let nl = Rc::new(connect(at)?);
        self.sockets.borrow_mut().insert(key, nl.clone());
        Ok(nl)
    }

    fn file(&self, at: At<'_>) -> Result<File, NetlinkError> {
        Ok(match at {
            At::Host => netns::current()?,
            At::Ns(n) => netns::open(n)?,
        })
    }
}

fn connect(at: At<'_>) -> Result<Netlink, NetlinkError> {
    match at {
        At::Host => Netlink::connect(None),
        At::Ns(n) => Netlink::connect(Some(&netns::open(n)?)),
    }
}

impl Net for System<'_> {
    async fn link(&self, at: At<'_>, name: &str) -> Result<Option<Link>, NetlinkError> {
        self.nl(at)?.link(name).await
    }
    async fn link_by_index(&self, at: At<'_>, index: u32) -> Result<Option<Link>, NetlinkError> {
        self.nl(at)?.link_by_index(index).await
    }
    async fn link_names(&self, at: At<'_>) -> Result<Vec<String>, NetlinkError> {
        let links = self.nl(at)?.links().await?;
        Ok(links.into_iter().map(|l| l.name).collect())
    }
    async fn wait_for_link(
        &self,
        at: At<'_>,
        name: &str,
        timeout: Duration,
    ) -> Result<Link, NetlinkError> {
        // Its own socket: waiting consumes the link events of the socket it runs on.
        connect(at)?.wait_for_link(name, timeout).await
    }
    async fn move_link(
        &self,
        from: At<'_>,
        link: &Link,
        to: At<'_>,
        rename: Option<&str>,
    ) -> Result<(), NetlinkError> {
        let target = self.file(to)?;
        let nl = self.nl(from)?;
        match rename {
            None => nl.move_link(link, &target).await,
            Some(n) => nl.move_link_renamed(link, &target, n).await,
        }
    }
    async fn set_up(&self, at: At<'_>, link: &Link) -> Result<(), NetlinkError> {
        self.nl(at)?.set_up(link.index, &link.name).await
    }
    async fn set_mtu(&self, at: At<'_>, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        self.nl(at)?.set_mtu(link, mtu).await
    }
    async fn add_address(&self, at: At<'_>, link: &Link, a: &Address) -> Result<(), NetlinkError> {
        self.nl(at)?.add_address(link, a).await
    }
    async fn del_address(&self, at: At<'_>, link: &Link, a: &Address) -> Result<(), NetlinkError> {
        self.nl(at)?.del_address(link, a).await
    }
    async fn add_route(&self, at: At<'_>, link: &Link, r: &Route) -> Result<(), NetlinkError> {
        self.nl(at)?.add_route(link, r).await
    }
    async fn del_route(&self, at: At<'_>, link: &Link, r: &Route) -> Result<(), NetlinkError> {
        self.nl(at)?.del_route(link, r).await
    }
    async fn host_networks(&self) -> Result<Vec<IpNet>, NetlinkError> {
        let nl = self.nl(At::Host)?;
        let mut v: Vec<IpNet> = nl
            .addresses()
            .await?
            .into_iter()
            .map(|a| a.local.network())
            .collect();
        v.extend(
            nl.routes()
                .await?
                .into_iter()
                .filter(|r| !r.dest.is_default())
                .map(|r| r.dest),
        );
        Ok(v)
    }
    async fn create_macvlan(
        &self,
        ns: &NetnsName,
        name: &str,
        parent: &Link,
        mode: MacvlanMode,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let f = netns::open(ns)?;
        let host = self.nl(At::Host)?;
        links::create_macvlan(&host, name, (parent.index, &parent.name), mode, mac, &f).await
    }
    async fn create_veth(
        &self,
        host_name: &str,
        peer: &str,
        ns: &NetnsName,
    ) -> Result<(), NetlinkError> {
        let f = netns::open(ns)?;
        links::create_veth(&*self.nl(At::Host)?, host_name, peer, &f).await
    }
    async fn delete_link(&self, at: At<'_>, name: &str) -> Result<bool, NetlinkError> {
        links::delete_link(&*self.nl(at)?, name).await
    }
}

impl Namespaces for System<'_> {
    fn exists(&self, ns: &NetnsName) -> bool {
        netns::exists(ns)
    }
    fn create(&self, ns: &NetnsName) -> Result<(), NetnsError> {
        netns::create(ns)
    }
    fn delete(&self, ns: &NetnsName) -> Result<(), NetnsError> {
        // A socket cached for the namespace would keep it alive.
        self.sockets.borrow_mut().remove(&Some(ns.clone()));
        netns::delete(ns)
    }
    fn open(&self, ns: &NetnsName) -> Result<File, NetnsError> {
        netns::open(ns)
    }
    fn host(&self) -> Result<File, NetnsError> {
        netns::current()
    }
}

impl Records for System<'_> {
    fn load_state(&self, conn: &str) -> Result<Option<State>, StateError> {
        state::load(conn)
    }
    fn save_state(&self, st: &State) -> Result<(), StateError> {
        state::save(st)
    }
    fn remove_state(&self, conn: &str) -> Result<(), StateError> {
        state::remove(conn)
    }
    fn write_dns(&self, ns: &NetnsName, conn: &str, d: &DnsSpec) -> Result<bool, DnsError> {
        dns::write(ns, conn, d)
    }
    fn remove_dns(&self, ns: &NetnsName) -> Result<(), DnsError> {
        dns::remove(ns)
    }
    fn load_plain(&self, conn: &str) -> Result<Option<Record>, StateError> {
        plain::load_record(conn)
    }
    fn save_plain(&self, conn: &str, r: &Record) -> Result<(), StateError> {
        plain::save_record(conn, r)
    }
    fn remove_plain(&self, conn: &str) -> Result<(), StateError> {
        plain::remove_record(conn)
    }
    fn load_adopted(&self, conn: &str) -> Option<Snapshot> {
        adopt::load(conn)
    }
    fn forget_adopted(&self, conn: &str) -> Result<(), StateError> {
        adopt::forget(conn)
    }
}

impl Uplink for System<'_> {
    fn enable_forwarding(&self, conn: &str) -> anyhow::Result<()> {
        forwarding::enable(conn)
    }
    fn release_forwarding(&self, conn: &str) -> anyhow::Result<Option<String>> {
        forwarding::release(conn)
    }
    fn add_nat(&self, conn: &str, transfer: &IpNet, uplink: &str) -> Result<(), nft::NftError> {
        nft::add_masquerade(conn, transfer, uplink)
    }
    fn delete_nat(&self, conn: &str) -> Result<bool, nft::NftError> {
        nft::delete_table(conn)
    }
    fn dhcp(&self, ns: &NetnsName, dev: &str, conn: &str) -> anyhow::Result<Lease> {
        plain::run_dhcp(&netns::open(ns)?, dev, conn)
    }
    fn release_lease(&self, conn: &str, rec: &Record, ns: &NetnsName, dev: &str) {
        match netns::open(ns) {
            Ok(f) => plain::lease::release(conn, rec, &f, dev),
            Err(e) => tracing::warn!("{conn}: cannot send DHCPRELEASE: {e}"),
        }
    }
}

impl Supervisor for System<'_> {
    fn start(&self, conn: &Connection, ns: Option<&File>) -> Result<ProcId, SupervisorError> {
        self.keeper.start(conn, ns)
    }
    fn stop(&self, st: &State) {
        self.keeper.stop(st)
    }
    fn stop_id(&self, conn: &str, k: ProcId) {
        self.keeper.stop_id(conn, k)
    }
    fn discard(&self, conn: &str, k: ProcId) {
        self.keeper.discard(conn, k)
    }
}

impl WgDevices for System<'_> {
    fn start_userspace(&self, conn: &Connection, iface: &str) -> anyhow::Result<ProcId> {
        self.wg()?.start_userspace(conn, iface)
    }
    fn configure_userspace(&self, conn: &Connection, iface: &str) -> anyhow::Result<()> {
        self.wg()?.configure_userspace(conn, iface)
    }
    fn create_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<bool>> {
        match self.wg() {
            Ok(w) => w.create_kernel(at, iface),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
    fn configure_kernel(&self, at: At<'_>, iface: &str) -> anyhow::Result<()> {
        self.wg()?.configure_kernel(at, iface)
    }
    fn delete_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        match self.wg() {
            Ok(w) => w.delete_kernel(at, iface),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
    fn start_builtin(&self, conn: &Connection, at: At<'_>, iface: &str) -> anyhow::Result<ProcId> {
        self.wg()?.start_builtin(conn, at, iface)
    }
    fn stop_device(&self, id: ProcId, iface: &str) -> anyhow::Result<()> {
        self.wg()?.stop_device(id, iface)
    }
}
