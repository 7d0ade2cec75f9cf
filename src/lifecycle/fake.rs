//! An in-memory system for the engine's unit tests: namespaces, links with their
//! addresses and routes, records, DNS files, NAT, forwarding and keepers as plain
//! data, every change logged, and any operation made to fail on its n-th call.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::edges::{At, Namespaces, Net, Records, Supervisor, SupervisorError, Uplink};
use crate::adopt::Snapshot;
use crate::config::{Connection, MacvlanMode};
use crate::dns::DnsError;
use crate::netlink::{Link, NetlinkError};
use crate::netns::NetnsError;
use crate::plain::nft::NftError;
use crate::plain::{Lease, Record};
use crate::procs::ProcId;
use crate::spec::{Address, DnsSpec, IpNet, NetnsName, Route};
use crate::state::{State, StateError};

/// Where a link lives: `None` is the host.
type Place = Option<String>;

/// The system as the fake sees it; compared whole before and after a rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    pub namespaces: BTreeSet<String>,
    /// (place, name) -> (index, addresses, routes, up)
    pub links: BTreeMap<(Place, String), FakeLink>,
    pub states: BTreeMap<String, State>,
    pub dns: BTreeSet<String>,
    pub plain: BTreeMap<String, Record>,
    pub forwarding: BTreeSet<String>,
    pub nat: BTreeSet<String>,
    pub keepers: BTreeSet<u32>,
    pub adopted: BTreeMap<String, Snapshot>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeLink {
    pub index: u32,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub up: bool,
}

#[derive(Default)]
pub struct Fake {
    pub world: RefCell<World>,
    /// Every operation that changes the world, in order, as `op detail`.
    pub log: RefCell<Vec<String>>,
    /// Operations to fail: (op, n) fails the n-th call (1-based) of `op`.
    fail: RefCell<Vec<(String, usize)>>,
    calls: RefCell<BTreeMap<String, usize>>,
    next_index: RefCell<u32>,
    pub lease: Option<Lease>,
}

fn place(at: At<'_>) -> Place {
    match at {
        At::Host => None,
        At::Ns(n) => Some(n.to_string()),
    }
}

fn name_of(at: At<'_>) -> String {
    place(at).unwrap_or_else(|| "host".to_owned())
}

fn injected() -> io::Error {
    io::Error::other("injected failure")
}

impl Fake {
    pub fn new() -> Self {
        let f = Fake::default();
        *f.next_index.borrow_mut() = 10;
        f
    }

    /// A link in the host namespace (a VPN's tun, a LAN device).
    pub fn host_link(&self, name: &str) {
        self.add_link(None, name);
    }

    /// A link made inside namespace `ns` (as a `MakeDevice` would).
    pub fn ns_link(&self, ns: &str, name: &str) {
        self.call("born", format!("{ns} {name}"));
        self.add_link(Some(ns.to_owned()), name);
    }

    fn add_link(&self, p: Place, name: &str) {
        let mut i = self.next_index.borrow_mut();
        *i += 1;
        self.world.borrow_mut().links.insert(
            (p, name.to_owned()),
            FakeLink {
                index: *i,
                ..FakeLink::default()
            },
        );
    }

    /// Makes the `n`-th call of `op` fail.
    pub fn fail(&self, op: &str, n: usize) {
        self.fail.borrow_mut().push((op.to_owned(), n));
    }

    /// Counts a call of `op`; `true` when it is to fail. Logged either way, a failed
    /// call with a `!`.
    fn call(&self, op: &str, detail: String) -> bool {
        let mut calls = self.calls.borrow_mut();
        let n = calls.entry(op.to_owned()).or_default();
        *n += 1;
        let failed = self.fail.borrow().iter().any(|(o, k)| o == op && k == n);
        let mark = if failed { "!" } else { "" };
        self.log.borrow_mut().push(format!("{mark}{op} {detail}"));
        failed
    }

    fn net(&self, op: &str, detail: String) -> Result<(), NetlinkError> {
        match self.call(op, detail) {
            true => Err(NetlinkError::Socket(injected())),
            false => Ok(()),
        }
    }

    fn file(&self, op: &str, detail: String) -> Result<(), StateError> {
        match self.call(op, detail) {
            true => Err(StateError::Io {
                op: "injected",
                path: PathBuf::from(op),
                source: injected(),
            }),
            false => Ok(()),
        }
    }

    fn to_link(&self, p: &Place, name: &str) -> Option<Link> {
        let w = self.world.borrow();
        let l = w.links.get(&(p.clone(), name.to_owned()))?;
        Some(Link {
            index: l.index,
            name: name.to_owned(),
            kind: None,
            mtu: None,
            up: l.up,
            rx_bytes: 0,
            tx_bytes: 0,
        })
    }

    fn with_link(&self, at: At<'_>, link: &Link, f: impl FnOnce(&mut FakeLink)) {
        if let Some(l) = self
            .world
            .borrow_mut()
            .links
            .get_mut(&(place(at), link.name.clone()))
        {
            f(l)
        }
    }

    /// The ops logged from the first failed one on: the failure and its rollback.
    pub fn after_failure(&self) -> Vec<String> {
        let log = self.log.borrow();
        let from = log
            .iter()
            .position(|l| l.starts_with('!'))
            .unwrap_or(log.len());
        log[from..].to_vec()
    }
}

impl Net for Fake {
    async fn link(&self, at: At<'_>, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.to_link(&place(at), name))
    }
    async fn link_by_index(&self, at: At<'_>, index: u32) -> Result<Option<Link>, NetlinkError> {
        let p = place(at);
        let name = self
            .world
            .borrow()
            .links
            .iter()
            .find(|((lp, _), l)| *lp == p && l.index == index)
            .map(|((_, n), _)| n.clone());
        Ok(name.and_then(|n| self.to_link(&p, &n)))
    }
    async fn link_names(&self, at: At<'_>) -> Result<Vec<String>, NetlinkError> {
        let p = place(at);
        let w = self.world.borrow();
        Ok(w.links
            .keys()
            .filter(|(lp, _)| *lp == p)
            .map(|(_, n)| n.clone())
            .collect())
    }
    async fn wait_for_link(
        &self,
        at: At<'_>,
        name: &str,
        timeout: Duration,
    ) -> Result<Link, NetlinkError> {
        self.to_link(&place(at), name)
            .ok_or_else(|| NetlinkError::Timeout {
                name: name.to_owned(),
                timeout,
            })
    }
    async fn move_link(
        &self,
        from: At<'_>,
        link: &Link,
        to: At<'_>,
        rename: Option<&str>,
    ) -> Result<(), NetlinkError> {
        let new = rename.unwrap_or(&link.name).to_owned();
        self.net(
            "link.move",
            format!("{} {}->{} as {new}", link.name, name_of(from), name_of(to)),
        )?;
        let mut w = self.world.borrow_mut();
        let l = w.links.remove(&(place(from), link.name.clone()));
        // A move drops addresses and routes, as the kernel does.
        let l = l.map(|l| FakeLink {
            index: l.index,
            ..FakeLink::default()
        });
        w.links.insert((place(to), new), l.unwrap_or_default());
        Ok(())
    }
    async fn set_up(&self, at: At<'_>, link: &Link) -> Result<(), NetlinkError> {
        self.net("link.up", format!("{} {}", name_of(at), link.name))?;
        self.with_link(at, link, |l| l.up = true);
        Ok(())
    }
    async fn set_mtu(&self, at: At<'_>, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        self.net("link.mtu", format!("{} {} {mtu}", name_of(at), link.name))
    }
    async fn add_address(&self, at: At<'_>, link: &Link, a: &Address) -> Result<(), NetlinkError> {
        self.net(
            "addr.add",
            format!("{} {} {}", name_of(at), link.name, a.local),
        )?;
        self.with_link(at, link, |l| l.addresses.push(a.clone()));
        Ok(())
    }
    async fn del_address(&self, at: At<'_>, link: &Link, a: &Address) -> Result<(), NetlinkError> {
        self.net(
            "addr.del",
            format!("{} {} {}", name_of(at), link.name, a.local),
        )?;
        self.with_link(at, link, |l| l.addresses.retain(|x| x != a));
        Ok(())
    }
    async fn add_route(&self, at: At<'_>, link: &Link, r: &Route) -> Result<(), NetlinkError> {
        self.net(
            "route.add",
            format!("{} {} {}", name_of(at), link.name, r.dest),
        )?;
        self.with_link(at, link, |l| l.routes.push(r.clone()));
        Ok(())
    }
    async fn del_route(&self, at: At<'_>, link: &Link, r: &Route) -> Result<(), NetlinkError> {
        self.net(
            "route.del",
            format!("{} {} {}", name_of(at), link.name, r.dest),
        )?;
        self.with_link(at, link, |l| l.routes.retain(|x| x != r));
        Ok(())
    }
    async fn host_networks(&self) -> Result<Vec<IpNet>, NetlinkError> {
        Ok(Vec::new())
    }
    async fn create_macvlan(
        &self,
        ns: &NetnsName,
        name: &str,
        parent: &Link,
        _mode: MacvlanMode,
        _mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        self.net("macvlan.create", format!("{ns} {name} on {}", parent.name))?;
        self.add_link(Some(ns.to_string()), name);
        Ok(())
    }
    async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        ns: &NetnsName,
    ) -> Result<(), NetlinkError> {
        self.net("veth.create", format!("{host} {ns}/{peer}"))?;
        self.add_link(None, host);
        self.add_link(Some(ns.to_string()), peer);
        Ok(())
    }
    async fn delete_link(&self, at: At<'_>, name: &str) -> Result<bool, NetlinkError> {
        let key = (place(at), name.to_owned());
        if !self.world.borrow().links.contains_key(&key) {
            return Ok(false);
        }
        self.net("link.delete", format!("{} {name}", name_of(at)))?;
        let mut w = self.world.borrow_mut();
        w.links.remove(&key);
        // A veth pair goes as a whole.
        if name.starts_with("vns") {
            w.links.retain(|(p, n), _| !(p.is_some() && n == "eth0"));
        }
        Ok(true)
    }
}

impl Namespaces for Fake {
    fn exists(&self, ns: &NetnsName) -> bool {
        self.world.borrow().namespaces.contains(ns.as_str())
    }
    fn create(&self, ns: &NetnsName) -> Result<(), NetnsError> {
        if self.call("netns.create", ns.to_string()) {
            return Err(NetnsError::Enter(nix::errno::Errno::EIO));
        }
        self.world.borrow_mut().namespaces.insert(ns.to_string());
        self.add_link(Some(ns.to_string()), "lo");
        Ok(())
    }
    fn delete(&self, ns: &NetnsName) -> Result<(), NetnsError> {
        if self.call("netns.delete", ns.to_string()) {
            return Err(NetnsError::Enter(nix::errno::Errno::EIO));
        }
        let mut w = self.world.borrow_mut();
        w.namespaces.remove(ns.as_str());
        // Devices inside go with it (a tun is destroyed, a veth takes its peer along).
        let gone: Vec<String> = w
            .links
            .keys()
            .filter(|(p, _)| p.as_deref() == Some(ns.as_str()))
            .map(|(_, n)| n.clone())
            .collect();
        w.links
            .retain(|(p, _), _| p.as_deref() != Some(ns.as_str()));
        if gone.iter().any(|n| n == "eth0") {
            w.links
                .retain(|(p, n), _| !(p.is_none() && n.starts_with("vns")));
        }
        Ok(())
    }
    fn open(&self, ns: &NetnsName) -> Result<File, NetnsError> {
        match self.exists(ns) {
            true => File::open("/dev/null").map_err(|source| NetnsError::Io {
                op: "open",
                path: "/dev/null".into(),
                source,
            }),
            false => Err(NetnsError::NotFound(ns.clone())),
        }
    }
    fn host(&self) -> Result<File, NetnsError> {
        File::open("/dev/null").map_err(|source| NetnsError::Io {
            op: "open",
            path: "/dev/null".into(),
            source,
        })
    }
}

impl Records for Fake {
    fn load_state(&self, conn: &str) -> Result<Option<State>, StateError> {
        Ok(self.world.borrow().states.get(conn).cloned())
    }
    fn save_state(&self, st: &State) -> Result<(), StateError> {
        let kind = match (st.up, st.creating) {
            (true, _) => "up",
            (false, true) => "intent",
            (false, false) => "kept",
        };
        self.file("state.save", format!("{} {kind}", st.connection))?;
        self.world
            .borrow_mut()
            .states
            .insert(st.connection.clone(), st.clone());
        Ok(())
    }
    fn remove_state(&self, conn: &str) -> Result<(), StateError> {
        self.file("state.remove", conn.to_owned())?;
        self.world.borrow_mut().states.remove(conn);
        Ok(())
    }
    fn write_dns(&self, ns: &NetnsName, _conn: &str, _d: &DnsSpec) -> Result<bool, DnsError> {
        if self.call("dns.write", ns.to_string()) {
            return Err(DnsError::Io {
                op: "injected",
                path: "dns".into(),
                source: injected(),
            });
        }
        Ok(self.world.borrow_mut().dns.insert(ns.to_string()))
    }
    fn remove_dns(&self, ns: &NetnsName) -> Result<(), DnsError> {
        if self.call("dns.remove", ns.to_string()) {
            return Err(DnsError::Io {
                op: "injected",
                path: "dns".into(),
                source: injected(),
            });
        }
        self.world.borrow_mut().dns.remove(ns.as_str());
        Ok(())
    }
    fn load_plain(&self, conn: &str) -> Result<Option<Record>, StateError> {
        Ok(self.world.borrow().plain.get(conn).cloned())
    }
    fn save_plain(&self, conn: &str, r: &Record) -> Result<(), StateError> {
        self.file("plain.save", conn.to_owned())?;
        self.world
            .borrow_mut()
            .plain
            .insert(conn.to_owned(), r.clone());
        Ok(())
    }
    fn remove_plain(&self, conn: &str) -> Result<(), StateError> {
        self.file("plain.remove", conn.to_owned())?;
        self.world.borrow_mut().plain.remove(conn);
        Ok(())
    }
    fn load_adopted(&self, conn: &str) -> Option<Snapshot> {
        self.world.borrow().adopted.get(conn).cloned()
    }
    fn forget_adopted(&self, conn: &str) -> Result<(), StateError> {
        self.file("adopted.forget", conn.to_owned())?;
        self.world.borrow_mut().adopted.remove(conn);
        Ok(())
    }
}

impl Uplink for Fake {
    fn enable_forwarding(&self, conn: &str) -> anyhow::Result<()> {
        if self.call("forwarding.enable", conn.to_owned()) {
            anyhow::bail!("injected failure");
        }
        self.world.borrow_mut().forwarding.insert(conn.to_owned());
        Ok(())
    }
    fn release_forwarding(&self, conn: &str) -> anyhow::Result<Option<String>> {
        if self.call("forwarding.release", conn.to_owned()) {
            anyhow::bail!("injected failure");
        }
        self.world.borrow_mut().forwarding.remove(conn);
        Ok(None)
    }
    fn add_nat(&self, conn: &str, _t: &IpNet, uplink: &str) -> Result<(), NftError> {
        if self.call("nat.add", format!("{conn} out of {uplink}")) {
            return Err(NftError::Socket(injected()));
        }
        self.world.borrow_mut().nat.insert(conn.to_owned());
        Ok(())
    }
    fn delete_nat(&self, conn: &str) -> Result<bool, NftError> {
        if self.call("nat.delete", conn.to_owned()) {
            return Err(NftError::Socket(injected()));
        }
        Ok(self.world.borrow_mut().nat.remove(conn))
    }
    fn dhcp(&self, ns: &NetnsName, dev: &str, _conn: &str) -> anyhow::Result<Lease> {
        if self.call("dhcp", format!("{ns} {dev}")) {
            anyhow::bail!("no DHCP OFFER on {dev} (injected)");
        }
        self.lease
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no lease in the fake"))
    }
    fn release_lease(&self, conn: &str, _rec: &Record, _ns: &NetnsName, _dev: &str) {
        self.call("dhcp.release", conn.to_owned());
    }
}

impl Supervisor for Fake {
    fn start(&self, conn: &Connection, _ns: Option<&File>) -> Result<ProcId, SupervisorError> {
        if self.call("keeper.start", conn.name.clone()) {
            anyhow::bail!("cannot start the keeper of {} (injected)", conn.name);
        }
        let pid = 1000 + self.world.borrow().keepers.len() as u32;
        self.world.borrow_mut().keepers.insert(pid);
        Ok(ProcId { pid, start: 1 })
    }
    fn stop(&self, st: &State) {
        if let Some(k) = st.keeper {
            self.discard(&st.connection, k)
        }
    }
    fn stop_id(&self, conn: &str, k: ProcId) {
        self.discard(conn, k)
    }
    fn discard(&self, conn: &str, k: ProcId) {
        self.call("keeper.stop", format!("{conn} {}", k.pid));
        self.world.borrow_mut().keepers.remove(&k.pid);
    }
}
