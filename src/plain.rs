//! Connections with a direct uplink and no VPN: `type = "macvlan"` (a macvlan clone of
//! a LAN device, its own host on the LAN, static or DHCP) and `type = "routed"` (a veth
//! pair to the host, masqueraded out of an uplink). The namespace gets one device, its
//! address, a default route and DNS; everything else on the host stays as it was.
//!
//! Up records what it changed in a journal and undoes it in reverse if a later step
//! fails. What down needs beyond the common state (host veth, transfer network, lease)
//! is kept in `/run/vpn-ns/<conn>.plain`.

pub mod dhcp;
mod forwarding;
pub mod lease;
mod links;
mod nft;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::config::{Connection, Kind};
use crate::dns;
use crate::lifecycle::effective_dns;
use crate::netlink::{Link, Netlink};
use crate::netns;
use crate::spec::{Address, DnsSpec, IpNet, NetnsName, Route};
use crate::state::{self, Origin, State};

pub use dhcp::Lease;

/// How long a DHCP exchange may take in all (requests are resent every 2 s).
const DHCP_TIMEOUT: Duration = Duration::from_secs(10);

/// What down needs to find again, beyond the common state record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The device inside the namespace.
    pub inside: String,
    /// Routed: the host end of the veth pair, the transfer network, the uplink.
    pub host_veth: Option<String>,
    pub transfer: Option<IpNet>,
    pub uplink: Option<String>,
    /// Routed: whether this connection holds a claim on net.ipv4.ip_forward.
    pub forwarding: bool,
    /// Macvlan with DHCP: the lease, and when it was obtained (Unix time).
    pub lease: Option<Lease>,
    pub lease_obtained: Option<u64>,
    /// The keeper removed the address when the lease ran out or the server refused it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease_expired: bool,
}

fn record_path(conn: &str) -> PathBuf {
    state::run_dir().join(format!("{conn}.plain"))
}

pub fn load_record(conn: &str) -> anyhow::Result<Option<Record>> {
    let p = record_path(conn);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("{} is corrupt", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(format!("cannot read {}", p.display())),
    }
}

pub(crate) fn save_record(conn: &str, r: &Record) -> anyhow::Result<()> {
    let p = record_path(conn);
    let body = serde_json::to_vec_pretty(r).expect("record serializes");
    state::ensure_dir()?;
    let mut f = crate::owned::open_write(&p, 0o644, true)?;
    std::io::Write::write_all(&mut f, &body)
        .with_context(|| format!("cannot write {}", p.display()))
}

fn remove_record(conn: &str) -> anyhow::Result<()> {
    match std::fs::remove_file(record_path(conn)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("cannot remove {}", record_path(conn).display())),
    }
}

/// For `verify`/`status`: says that a plain connection's namespace has a direct uplink,
/// not a tunnel, and which. `None` for other connections.
pub fn uplink_note(st: &State) -> Option<String> {
    let rec = load_record(&st.connection).ok().flatten();
    let dev = st.device.as_deref().unwrap_or("?");
    match st.origin {
        Origin::Macvlan => Some(format!(
            "a direct uplink, not a tunnel: {dev} is a macvlan on the host's LAN{}",
            match rec.and_then(|r| r.lease) {
                Some(l) => format!(" (DHCP lease from {})", l.server),
                None => String::new(),
            }
        )),
        Origin::Routed => Some(match rec {
            Some(Record {
                transfer: Some(t),
                uplink: Some(u),
                ..
            }) => format!(
                "a direct uplink, not a tunnel: {dev} is routed through the host (transfer {t}), masqueraded out of {u}"
            ),
            _ => format!("a direct uplink, not a tunnel: {dev} is routed through the host"),
        }),
        _ => None,
    }
}

/// For `check`: the host device a macvlan or routed connection needs, if it is missing
/// from the calling thread's namespace (the host's, for the main thread).
pub fn host_device_problem(conn: &Connection) -> Option<String> {
    let (what, dev) = match &conn.kind {
        Kind::Macvlan(m) => ("parent", m.parent.as_str()),
        Kind::Routed(r) => ("uplink", r.uplink.as_str()),
        _ => return None,
    };
    match nix::net::if_::if_nametoindex(dev) {
        Ok(_) => None,
        Err(_) => Some(format!(
            "{what} device {dev} does not exist in the host namespace (`ip link` lists the devices)"
        )),
    }
}

/// True for the connection types this module brings up.
pub fn handles(kind: &Kind) -> bool {
    matches!(kind, Kind::Macvlan(_) | Kind::Routed(_))
}

#[derive(Debug)]
pub struct UpReport {
    pub netns: NetnsName,
    pub device: String,
    pub address: IpNet,
    pub gateway: Option<Ipv4Addr>,
    pub dns_servers: usize,
    pub already_up: bool,
    pub lease_secs: Option<u32>,
}

/// Changes made so far by one `up`, undone in reverse on failure.
#[derive(Default)]
struct Journal {
    created_netns: Option<NetnsName>,
    /// Macvlan created inside the namespace.
    inside_link: Option<String>,
    host_veth: Option<String>,
    forwarding: bool,
    nat: bool,
    created_etc: bool,
    record: bool,
    /// A state record (intent or final) was written; `prior` is what to put back.
    state: bool,
    prior: Option<State>,
    keeper: Option<crate::procs::ProcId>,
}

/// Brings a macvlan or routed connection up. The caller holds the connection's lock.
pub async fn up(conn: &Connection) -> anyhow::Result<UpReport> {
    if let Some(st) = state::load(&conn.name)?
        && st.up
    {
        let rec = load_record(&conn.name)?;
        let address = st.addresses.first().map(|a| a.local);
        if let (Some(address), true) = (address, netns::exists(&st.netns)) {
            return Ok(UpReport {
                netns: st.netns.clone(),
                device: rec.map(|r| r.inside).unwrap_or_default(),
                address,
                gateway: st.routes.iter().find_map(|r| match r.gateway {
                    Some(IpAddr::V4(g)) => Some(g),
                    _ => None,
                }),
                dns_servers: st.dns.servers.len(),
                already_up: true,
                lease_secs: None,
            });
        }
        bail!(
            "the state in {} says up, but namespace \"{}\" is gone: run `vpn-ns down {}` first",
            state::state_path(&conn.name).display(),
            st.netns,
            conn.name
        );
    }
    let mut j = Journal::default();
    let res = up_journaled(conn, &mut j).await;
    if res.is_err() {
        rollback(conn, j).await;
    }
    res
}

async fn up_journaled(conn: &Connection, j: &mut Journal) -> anyhow::Result<UpReport> {
    let host = Netlink::connect(None)?;
    let (origin, host_dev) = match &conn.kind {
        Kind::Macvlan(m) => (Origin::Macvlan, m.parent.as_str()),
        Kind::Routed(r) => (Origin::Routed, r.uplink.as_str()),
        k => bail!(
            "connection {}: type \"{k}\" is not a plain uplink type",
            conn.name
        ),
    };
    // The host-side device must exist before anything is created.
    let Some(host_link) = host.link(host_dev).await? else {
        bail!(
            "{} device {host_dev} does not exist in the host namespace",
            if origin == Origin::Macvlan {
                "parent"
            } else {
                "uplink"
            }
        );
    };
    let ns = &conn.netns;
    let prior = state::load(&conn.name)?;
    if let Some(p) = &prior
        && p.netns_created
        && &p.netns != ns
        && netns::path(&p.netns).exists()
    {
        bail!(
            "the state records namespace \"{}\" (created by vpn-ns) for connection {}, not \"{ns}\": run `vpn-ns down {}` first",
            p.netns,
            conn.name,
            conn.name
        );
    }
    let owned_before = prior
        .as_ref()
        .is_some_and(|s| s.netns_created && &s.netns == ns);
    let host_veth = conn
        .kind
        .routed()
        .map(|_| links::host_veth_name(&conn.name));
    // A record that is not up (an up that died half way, or a kept persistent
    // namespace) makes this connection's devices found now leftovers of ours.
    if prior.is_some()
        && let Some(v) = &host_veth
        && links::delete_link(&host, v).await?
    {
        tracing::info!("removed {v}, left by an earlier up of {}", conn.name);
    }
    let transfer = match conn.kind.routed() {
        Some(r) => {
            let taken = host_networks(&host).await?;
            Some(
                links::choose_transfer(&conn.name, r.transfer, &taken)
                    .map_err(anyhow::Error::msg)?,
            )
        }
        None => None,
    };
    let inside_name = match conn.kind.macvlan() {
        Some(m) => m.parent.as_str(),
        None => links::ROUTED_INSIDE,
    };
    let mut rec = Record {
        inside: inside_name.to_owned(),
        host_veth: host_veth.clone(),
        transfer,
        uplink: conn.kind.routed().map(|r| r.uplink.to_string()),
        forwarding: false,
        lease: None,
        lease_obtained: None,
        lease_expired: false,
    };

    let create = !netns::exists(ns);
    if !create && !owned_before {
        tracing::warn!(
            "namespace \"{ns}\" already exists and was not created by vpn-ns: using it, and it will not be deleted on down"
        );
    }
    if create && owned_before {
        // A crash inside netns::create can leave the bare mount-point file behind.
        netns::delete(ns).with_context(|| format!("cannot delete namespace \"{ns}\""))?;
    }
    // Recorded before anything exists: whenever vpn-ns dies from here on, the
    // namespace has a known owner and down finds the devices, NAT and forwarding claim.
    j.prior = prior.clone();
    save_record(&conn.name, &rec)?;
    j.record = true;
    state::save(&State {
        connection: conn.name.clone(),
        netns: ns.clone(),
        netns_created: create || owned_before,
        isolated: true,
        persistent: conn.netns_persistent,
        up: false,
        origin,
        device: Some(inside_name.to_owned()),
        addresses: Vec::new(),
        routes: Vec::new(),
        dns: DnsSpec::default(),
        vpn_pid: None,
        since: state::now(),
        creating: true,
        vpn_start: None,
        keeper: None,
        vpn_gone: None,
    })?;
    j.state = true;
    if create {
        netns::create(ns).with_context(|| format!("cannot create namespace \"{ns}\""))?;
        j.created_netns = Some(ns.clone());
    }
    let ns_file = netns::open(ns).with_context(|| format!("cannot open namespace \"{ns}\""))?;
    let inside = Netlink::connect(Some(&ns_file))?;
    if let Some(lo) = inside.link("lo").await? {
        inside.set_up(lo.index, "lo").await?;
    }

    // Leftover of a half-done earlier up inside a namespace that was kept.
    if prior.is_some() && links::delete_link(&inside, inside_name).await? {
        tracing::info!("removed {inside_name} in namespace {ns}, left by an earlier up");
    }
    let (link, address, gateway, pushed) = match (conn.kind.macvlan(), transfer) {
        (Some(m), _) => {
            let name = m.parent.as_str();
            let mac = links::mac_for(&conn.name);
            links::create_macvlan(&host, name, (host_link.index, name), m.mode, mac, &ns_file)
                .await?;
            j.inside_link = Some(name.to_owned());
            let link = inside_link(&inside, name, ns).await?;
            inside.set_up(link.index, name).await?;
            match m.address {
                Some(a) => (link, a, m.gateway, DnsSpec::default()),
                None => {
                    let lease = run_dhcp(&ns_file, name, mac, &conn.name)?;
                    let a = IpNet::new(IpAddr::V4(lease.address), lease.prefix)?;
                    let pushed = DnsSpec {
                        servers: lease.dns.iter().map(|d| IpAddr::V4(*d)).collect(),
                        search: lease.domain.iter().filter_map(|d| d.parse().ok()).collect(),
                    };
                    let gw = lease.router;
                    rec.lease = Some(lease);
                    rec.lease_obtained = Some(state::now());
                    (link, a, gw, pushed)
                }
            }
        }
        (None, Some(t)) => {
            let uplink = host_dev;
            let host_name = links::host_veth_name(&conn.name);
            if host.link(&host_name).await?.is_some() {
                bail!(
                    "device {host_name} already exists in the host namespace (left by an earlier run of connection {}? remove it with `ip link del {host_name}`)",
                    conn.name
                );
            }
            links::create_veth(&host, &host_name, links::ROUTED_INSIDE, &ns_file).await?;
            j.host_veth = Some(host_name.clone());
            let (host_end, inside_end) = links::transfer_ends(&t);
            let hl = host
                .link(&host_name)
                .await?
                .with_context(|| format!("{host_name} vanished after its creation"))?;
            host.add_address(
                &hl,
                &Address {
                    local: host_end,
                    peer: None,
                },
            )
            .await?;
            host.set_up(hl.index, &host_name).await?;
            let link = inside_link(&inside, links::ROUTED_INSIDE, ns).await?;
            inside.set_up(link.index, links::ROUTED_INSIDE).await?;
            forwarding::enable(&conn.name)?;
            j.forwarding = true;
            rec.forwarding = true;
            nft::add_masquerade(&conn.name, &t, uplink)
                .with_context(|| format!("cannot set up NAT of {t} out of {uplink}"))?;
            j.nat = true;
            let gw = match host_end.addr() {
                IpAddr::V4(g) => Some(g),
                IpAddr::V6(_) => None,
            };
            (link, inside_end, gw, DnsSpec::default())
        }
        (None, None) => bail!("connection {}: no [macvlan] or [routed] section", conn.name),
    };

    let addr = Address {
        local: address,
        peer: None,
    };
    inside.add_address(&link, &addr).await?;
    let mut routes = Vec::new();
    if let (Some(g), true) = (gateway, conn.default_route) {
        let r = Route {
            dest: IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("/0"),
            gateway: Some(IpAddr::V4(g)),
            metric: None,
        };
        inside.add_route(&link, &r).await?;
        routes.push(r);
    }

    let dns = effective_dns(conn, &pushed);
    if dns.servers.is_empty() {
        tracing::warn!(
            "no DNS server from DHCP and none in [dns]: name lookups in namespace {ns} will fail"
        );
    }
    j.created_etc = dns::write(ns, &conn.name, &dns)
        .with_context(|| format!("cannot write DNS files for namespace \"{ns}\""))?;

    save_record(&conn.name, &rec)?;
    j.record = true;
    let mut st = State {
        connection: conn.name.clone(),
        netns: ns.clone(),
        netns_created: j.created_netns.is_some() || owned_before,
        isolated: true,
        persistent: conn.netns_persistent,
        up: true,
        origin,
        device: Some(link.name.clone()),
        addresses: vec![addr],
        routes,
        dns: dns.clone(),
        vpn_pid: None,
        since: state::now(),
        creating: false,
        vpn_start: None,
        keeper: None,
        vpn_gone: None,
    };
    // The keeper waits for the lock our caller holds, then renews the lease and
    // watches the device.
    if let Some(k) = prior.as_ref().and_then(|p| p.keeper) {
        crate::keeper::stop_id(&conn.name, k);
    }
    let ns_file = netns::open(ns).with_context(|| format!("cannot open namespace \"{ns}\""))?;
    crate::publish::preflight(conn, Some(&ns_file))?;
    let k = crate::keeper::spawn(conn)?;
    j.keeper = Some(k);
    st.keeper = Some(k);
    state::save(&st)?;
    j.state = true;
    Ok(UpReport {
        netns: ns.clone(),
        device: link.name,
        address,
        gateway,
        dns_servers: dns.servers.len(),
        already_up: false,
        lease_secs: rec.lease.and_then(|l| l.lease_secs),
    })
}

/// Every network the host namespace has an address in or a (non-default) route to.
async fn host_networks(host: &Netlink) -> anyhow::Result<Vec<IpNet>> {
    let mut v: Vec<IpNet> = host
        .addresses()
        .await?
        .into_iter()
        .map(|a| a.local.network())
        .collect();
    v.extend(
        host.routes()
            .await?
            .into_iter()
            .filter(|r| !r.dest.is_default())
            .map(|r| r.dest),
    );
    Ok(v)
}

async fn inside_link(inside: &Netlink, name: &str, ns: &NetnsName) -> anyhow::Result<Link> {
    inside
        .link(name)
        .await?
        .with_context(|| format!("{name} did not appear in namespace \"{ns}\" after its creation"))
}

fn run_dhcp(ns_file: &File, dev: &str, mac: [u8; 6], conn: &str) -> anyhow::Result<Lease> {
    let dev_owned = dev.to_owned();
    // A fresh transaction id per run: a reply to an earlier run must not be taken.
    let xid = links::fnv1a(&format!("{conn}/{:?}", std::time::SystemTime::now()));
    let lease = netns::run_in(ns_file, move || {
        dhcp::acquire(&dev_owned, mac, xid, DHCP_TIMEOUT)
    })?
    .with_context(|| format!("DHCP on {dev} failed"))?;
    tracing::info!(
        "DHCP: {}/{} from {} (lease {})",
        lease.address,
        lease.prefix,
        lease.server,
        lease
            .lease_secs
            .map_or("infinite".to_owned(), |s| format!("{s} s"))
    );
    Ok(lease)
}

async fn rollback(conn: &Connection, j: Journal) {
    let log = |what: &str, e: anyhow::Error| tracing::error!("rollback: {what}: {e:#}");
    if let Some(k) = j.keeper {
        crate::keeper::discard(&conn.name, k);
    }
    if j.created_etc
        && let Err(e) = dns::remove(&conn.netns)
    {
        log("DNS files", e.into());
    }
    if j.nat
        && let Err(e) = nft::delete_table(&conn.name)
    {
        log("NAT table", e.into());
    }
    if j.forwarding
        && let Err(e) = forwarding::release(&conn.name)
    {
        log("ip_forward", e);
    }
    if let Some(name) = &j.host_veth
        && let Ok(host) = Netlink::connect(None)
        && let Err(e) = links::delete_link(&host, name).await
    {
        log(name, e.into());
    }
    if let Some(name) = &j.inside_link
        && let Ok(f) = netns::open(&conn.netns)
        && let Ok(nl) = Netlink::connect(Some(&f))
        && let Err(e) = links::delete_link(&nl, name).await
    {
        log(name, e.into());
    }
    if let Some(ns) = &j.created_netns {
        match netns::delete(ns) {
            Ok(()) => tracing::info!("rolled back: namespace {ns} removed"),
            Err(e) => log("namespace", e.into()),
        }
    }
    // Last: while anything above is left, the record names its owner.
    if j.record
        && let Err(e) = remove_record(&conn.name)
    {
        log("record", e);
    }
    if j.state {
        let r = match &j.prior {
            Some(p) => state::save(p),
            None => state::remove(&conn.name),
        };
        if let Err(e) = r {
            log("state", e.into());
        }
    }
}

#[derive(Debug)]
pub struct DownReport {
    pub netns: Option<NetnsName>,
    pub removed_netns: bool,
    pub was_up: bool,
    /// The ip_forward value restored, when this was the last routed connection.
    pub restored_forwarding: Option<String>,
}

/// Takes a macvlan or routed connection down. The caller holds the connection's lock.
pub async fn down(conn: &Connection) -> anyhow::Result<DownReport> {
    let Some(st) = state::load(&conn.name)? else {
        return Ok(DownReport {
            netns: None,
            removed_netns: false,
            was_up: false,
            restored_forwarding: None,
        });
    };
    crate::keeper::stop(&st);
    let rec = load_record(&conn.name)?;
    let ns = st.netns.clone();
    let mut restored = None;
    if st.origin == Origin::Routed {
        nft::delete_table(&conn.name).context("cannot remove the NAT table")?;
        restored = forwarding::release(&conn.name)?;
        let host = Netlink::connect(None)?;
        let name = rec
            .as_ref()
            .and_then(|r| r.host_veth.clone())
            .unwrap_or_else(|| links::host_veth_name(&conn.name));
        links::delete_link(&host, &name).await?;
    }
    if netns::exists(&ns)
        && let Some(dev) = &st.device
    {
        let f = netns::open(&ns).with_context(|| format!("cannot open namespace \"{ns}\""))?;
        if let Some(r) = &rec {
            lease::release(&conn.name, r, &f, dev);
        }
        let nl = Netlink::connect(Some(&f))?;
        // Routed: gone with its host end already; macvlan: ours to delete.
        links::delete_link(&nl, dev).await?;
    }
    let keep = st.persistent || conn.netns_persistent;
    let mut removed = false;
    if keep {
        let mut kept = st.clone();
        kept.up = false;
        kept.creating = false;
        kept.device = None;
        kept.keeper = None;
        state::save(&kept)?;
    } else {
        if st.netns_created {
            netns::delete(&ns).with_context(|| format!("cannot delete namespace \"{ns}\""))?;
            removed = true;
        } else {
            tracing::info!("namespace \"{ns}\" was not created by vpn-ns: leaving it in place");
        }
        dns::remove(&ns)
            .with_context(|| format!("cannot remove DNS files of namespace \"{ns}\""))?;
        state::remove(&conn.name)?;
    }
    remove_record(&conn.name)?;
    Ok(DownReport {
        netns: Some(ns),
        removed_netns: removed,
        was_up: st.up,
        restored_forwarding: restored,
    })
}
