//! Up and down of a connection over a `NetworkSpec`, whichever VPN produced it.
//!
//! Up records every change it makes in a `Journal`; if any later step fails, the
//! journal is unwound in reverse so the system is left as it was before the call.

use std::fs::File;
use std::net::IpAddr;

use crate::config::Connection;
use crate::dns;
use crate::fault;
use crate::keeper::{self, KeeperError};
use crate::netlink::{Link, Netlink, NetlinkError};
use crate::netns::{self, NetnsError};
use crate::procs::ProcId;
use crate::publish::PublishError;
use crate::spec::{DnsSpec, IpNet, NetnsName, NetworkSpec, Route};
use crate::state::{self, Origin, State, StateError};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot create namespace \"{ns}\"")]
    CreateNetns {
        ns: NetnsName,
        #[source]
        source: NetnsError,
    },
    #[error("cannot open namespace \"{ns}\"")]
    OpenNetns {
        ns: NetnsName,
        #[source]
        source: NetnsError,
    },
    #[error("cannot delete namespace \"{ns}\"")]
    DeleteNetns {
        ns: NetnsName,
        #[source]
        source: NetnsError,
    },
    #[error("{device} did not appear in the host namespace within {} ms (netns-timeout); is the VPN running and is `dev` right?", .timeout_ms)]
    DeviceMissing { device: String, timeout_ms: u128 },
    #[error(
        "{device} is an OpenVPN data-channel-offload device ({kind}), which cannot work after a move to another namespace: add `disable-dco` to the OpenVPN config"
    )]
    Dco { device: String, kind: String },
    #[error("cannot move {device} into namespace \"{ns}\"")]
    Move {
        device: String,
        ns: NetnsName,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot configure {device} in namespace \"{ns}\"")]
    Configure {
        device: String,
        ns: String,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot create {device} in namespace \"{ns}\"")]
    MakeDevice {
        device: String,
        ns: String,
        #[source]
        source: anyhow::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("cannot write DNS files for namespace \"{ns}\"")]
    Dns {
        ns: NetnsName,
        #[source]
        source: dns::DnsError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Keeper(#[from] KeeperError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(
        "connection {conn} is recorded with namespace \"{recorded}\", which vpn-ns created and which still exists, not \"{ns}\" (netns-name changed?): run `vpn-ns down {conn}` first"
    )]
    OtherNetns {
        conn: String,
        recorded: NetnsName,
        ns: NetnsName,
    },
}

/// What a successful up did, for the one-line report.
#[derive(Debug)]
pub struct UpReport {
    pub netns: Option<NetnsName>,
    pub device: String,
    pub addresses: usize,
    pub routes: usize,
    pub dns_servers: usize,
    pub reused: bool,
}

impl UpReport {
    /// The one line every up prints (OpenVPN captures it in its log).
    pub fn log(&self, conn_name: &str) {
        match &self.netns {
            Some(ns) => tracing::info!(
                "{conn_name}: {} in namespace {ns}{}: {} address(es), {} route(s), {} DNS server(s)",
                self.device,
                if self.reused { " (reused)" } else { "" },
                self.addresses,
                self.routes,
                self.dns_servers
            ),
            None => tracing::info!(
                "{conn_name}: {} configured in the host namespace (netns-isolate = false)",
                self.device
            ),
        }
    }
}

/// Changes made so far by one `up`, undone in reverse on failure.
#[derive(Default)]
struct Journal {
    created_netns: Option<NetnsName>,
    /// The intent record written before creating the namespace.
    intent: bool,
    /// Device moved into the namespace by this call.
    moved: Option<String>,
    created_etc: Option<NetnsName>,
    wrote_state: Option<String>,
    /// The keeper started for the new record.
    keeper: Option<ProcId>,
    /// Host-namespace changes for `netns-isolate = false`.
    host_link: Option<Link>,
    host_addresses: Vec<crate::spec::Address>,
    host_routes: Vec<Route>,
}

/// The DNS the namespace gets: `[dns]` replaces what the VPN pushed, key by key.
pub fn effective_dns(conn: &Connection, pushed: &DnsSpec) -> DnsSpec {
    DnsSpec {
        servers: conn
            .dns
            .servers
            .clone()
            .unwrap_or_else(|| pushed.servers.clone()),
        search: conn
            .dns
            .search
            .clone()
            .unwrap_or_else(|| pushed.search.clone()),
    }
}

/// The routes to install inside the namespace: pushed ones, plus default routes when
/// `default-route` is on (one per address family that has an address, so a family
/// without a tunnel address has no route at all and fails closed).
pub fn routes_for(spec: &NetworkSpec, default_route: bool) -> Vec<Route> {
    let mut routes: Vec<Route> = spec.routes.clone();
    if default_route {
        if spec.addresses.iter().any(|a| a.local.is_ipv4()) {
            routes.push(Route {
                dest: IpNet::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0).expect("/0"),
                gateway: spec.gateway_v4.map(IpAddr::V4),
                metric: None,
            });
        }
        if spec.addresses.iter().any(|a| !a.local.is_ipv4()) {
            routes.push(Route {
                dest: IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0).expect("/0"),
                gateway: None,
                metric: None,
            });
        }
    }
    routes
}

/// Brings `conn` up with `spec`. The caller holds the connection's lock.
pub async fn up(
    conn: &Connection,
    spec: &NetworkSpec,
    origin: Origin,
    vpn: Option<ProcId>,
) -> Result<UpReport, LifecycleError> {
    up_with(conn, spec, origin, vpn, None).await
}

pub(super) async fn up_with(
    conn: &Connection,
    spec: &NetworkSpec,
    origin: Origin,
    vpn: Option<ProcId>,
    make: Option<MakeDevice<'_>>,
) -> Result<UpReport, LifecycleError> {
    let mut journal = Journal::default();
    fault::point("up:after-lock");
    // Overwriting that record would leave its namespace without a known owner.
    let prior = state::load(&conn.name)?;
    if let Some(p) = &prior
        && p.netns_created
        && p.netns != conn.netns
        && netns::path(&p.netns).exists()
    {
        return Err(LifecycleError::OtherNetns {
            conn: conn.name.clone(),
            recorded: p.netns.clone(),
            ns: conn.netns.clone(),
        });
    }
    let host = netns::current().map_err(|source| LifecycleError::OpenNetns {
        ns: conn.netns.clone(),
        source,
    })?;
    let res = if conn.netns_isolate {
        up_isolated(conn, spec, prior, origin, vpn, make, &mut journal).await
    } else {
        up_host(conn, spec, prior, origin, vpn, make, &mut journal).await
    };
    if res.is_err() {
        rollback(conn, &host, journal).await;
    }
    res
}

async fn up_isolated(
    conn: &Connection,
    spec: &NetworkSpec,
    prior: Option<State>,
    origin: Origin,
    mut vpn: Option<ProcId>,
    make: Option<MakeDevice<'_>>,
    journal: &mut Journal,
) -> Result<UpReport, LifecycleError> {
    let ns = &conn.netns;
    let owned_before = prior
        .as_ref()
        .is_some_and(|s| s.netns_created && &s.netns == ns);
    let reused = netns::exists(ns);
    if reused {
        if !owned_before {
            tracing::warn!(
                "namespace \"{ns}\" already exists and was not created by vpn-ns: using it, and it will not be deleted on down"
            );
        }
    } else {
        if owned_before {
            // A crash inside netns::create can leave the bare mount-point file behind.
            netns::delete(ns).map_err(|source| LifecycleError::DeleteNetns {
                ns: ns.clone(),
                source,
            })?;
        }
        // Recorded before it exists: whenever vpn-ns dies from here on, the namespace
        // has a known owner that the next up reuses and down removes.
        state::save(&intent_record(conn, spec, origin, vpn))?;
        journal.intent = true;
        netns::create(ns).map_err(|source| LifecycleError::CreateNetns {
            ns: ns.clone(),
            source,
        })?;
        journal.created_netns = Some(ns.clone());
        tracing::debug!("created namespace {ns}");
        fault::point("up:after-create-netns");
    }
    let ns_file = netns::open(ns).map_err(|source| LifecycleError::OpenNetns {
        ns: ns.clone(),
        source,
    })?;
    let mut inside = Netlink::connect(Some(&ns_file))?;
    let configure = |source| LifecycleError::Configure {
        device: spec.device.to_string(),
        ns: ns.to_string(),
        source,
    };
    if let Some(lo) = inside.link("lo").await? {
        inside.set_up(lo.index, "lo").await.map_err(configure)?;
    }

    let dev = spec.device.as_str();
    let born = make.is_some();
    if let Some(make) = make {
        vpn = make_device(make, &ns_file, dev, ns.as_str())
            .await?
            .and_then(ProcId::of);
    }
    // On OpenVPN's `--up-restart` the device is already inside from the previous up.
    let already_inside = inside.link(dev).await?;
    let restart = already_inside.is_some() && !born;
    let link = match already_inside {
        Some(l) => {
            tracing::debug!("{dev} is already in namespace {ns}");
            l
        }
        None => {
            let mut outside = Netlink::connect(None)?;
            let l = wait_in_host(&mut outside, dev, conn).await?;
            refuse_dco(&l)?;
            outside
                .move_link(&l, &ns_file)
                .await
                .map_err(|source| LifecycleError::Move {
                    device: dev.to_owned(),
                    ns: ns.clone(),
                    source,
                })?;
            journal.moved = Some(dev.to_owned());
            let l = inside
                .wait_for_link(dev, conn.netns_timeout)
                .await
                .map_err(|source| LifecycleError::Move {
                    device: dev.to_owned(),
                    ns: ns.clone(),
                    source,
                })?;
            fault::point("up:after-move-device");
            l
        }
    };

    let mut routes = routes_for(spec, conn.default_route);
    apply(&inside, &link, spec, &routes)
        .await
        .map_err(configure)?;
    // OpenVPN passes no route_* variables at `up ... restart`: the routes of the previous
    // up are still on the device, and stay recorded so that down can account for them.
    if restart && let Some(p) = prior.as_ref().filter(|p| p.up) {
        for r in &p.routes {
            if !routes.contains(r) {
                routes.push(r.clone());
            }
        }
    }

    let dns = effective_dns(conn, &spec.dns);
    if dns.servers.is_empty() {
        tracing::warn!(
            "no DNS server pushed by the VPN and none in [dns]: name lookups in namespace {ns} will fail"
        );
    }
    let created_etc = dns::write(ns, &conn.name, &dns).map_err(|source| LifecycleError::Dns {
        ns: ns.clone(),
        source,
    })?;
    if created_etc {
        journal.created_etc = Some(ns.clone());
    }
    fault::point("up:after-dns");

    let mut st = State {
        connection: conn.name.clone(),
        netns: ns.clone(),
        netns_created: journal.created_netns.is_some() || owned_before,
        isolated: true,
        persistent: conn.netns_persistent,
        up: true,
        origin,
        device: Some(dev.to_owned()),
        addresses: spec.addresses.clone(),
        routes: routes.clone(),
        dns: dns.clone(),
        vpn_pid: vpn.map(|v| v.pid),
        since: state::now(),
        creating: false,
        vpn_start: vpn.map(|v| v.start),
        keeper: None,
        vpn_gone: None,
    };
    fault::point("up:before-state-save");
    start_keeper(conn, prior.as_ref(), &mut st, journal)?;
    state::save(&st)?;
    journal.wrote_state = Some(conn.name.clone());
    Ok(UpReport {
        netns: Some(ns.clone()),
        device: dev.to_owned(),
        addresses: spec.addresses.len(),
        routes: routes.len(),
        dns_servers: dns.servers.len(),
        reused,
    })
}

/// The record saved before up creates the namespace (see `State::creating`).
fn intent_record(
    conn: &Connection,
    spec: &NetworkSpec,
    origin: Origin,
    vpn: Option<ProcId>,
) -> State {
    State {
        connection: conn.name.clone(),
        netns: conn.netns.clone(),
        netns_created: true,
        isolated: true,
        persistent: conn.netns_persistent,
        up: false,
        origin,
        device: Some(spec.device.to_string()),
        addresses: Vec::new(),
        routes: Vec::new(),
        dns: DnsSpec::default(),
        vpn_pid: vpn.map(|v| v.pid),
        since: state::now(),
        creating: true,
        vpn_start: vpn.map(|v| v.start),
        keeper: None,
        vpn_gone: None,
    }
}

/// `netns-isolate = false`: addresses and pushed routes in the host namespace, never a
/// default route, host DNS untouched.
async fn up_host(
    conn: &Connection,
    spec: &NetworkSpec,
    prior: Option<State>,
    origin: Origin,
    mut vpn: Option<ProcId>,
    make: Option<MakeDevice<'_>>,
    journal: &mut Journal,
) -> Result<UpReport, LifecycleError> {
    let dev = spec.device.as_str();
    if let Some(make) = make {
        let host = netns::current().map_err(|source| LifecycleError::OpenNetns {
            ns: conn.netns.clone(),
            source,
        })?;
        vpn = make_device(make, &host, dev, "host")
            .await?
            .and_then(ProcId::of);
    }
    let mut nl = Netlink::connect(None)?;
    let link = wait_in_host(&mut nl, dev, conn).await?;
    journal.host_link = Some(link.clone());
    let routes = routes_for(spec, false);
    let configure = |source| LifecycleError::Configure {
        device: dev.to_owned(),
        ns: "host".to_owned(),
        source,
    };
    if let Some(mtu) = spec.mtu {
        nl.set_mtu(&link, mtu).await.map_err(configure)?;
    }
    for a in &spec.addresses {
        nl.add_address(&link, a).await.map_err(configure)?;
        journal.host_addresses.push(a.clone());
    }
    nl.set_up(link.index, dev).await.map_err(configure)?;
    for r in &routes {
        nl.add_route(&link, r).await.map_err(configure)?;
        journal.host_routes.push(r.clone());
    }
    let mut st = State {
        connection: conn.name.clone(),
        netns: conn.netns.clone(),
        netns_created: false,
        isolated: false,
        persistent: false,
        up: true,
        origin,
        device: Some(dev.to_owned()),
        addresses: spec.addresses.clone(),
        routes: routes.clone(),
        dns: DnsSpec::default(),
        vpn_pid: vpn.map(|v| v.pid),
        since: state::now(),
        creating: false,
        vpn_start: vpn.map(|v| v.start),
        keeper: None,
        vpn_gone: None,
    };
    start_keeper(conn, prior.as_ref(), &mut st, journal)?;
    state::save(&st)?;
    journal.wrote_state = Some(conn.name.clone());
    Ok(UpReport {
        netns: None,
        device: dev.to_owned(),
        addresses: spec.addresses.len(),
        routes: routes.len(),
        dns_servers: 0,
        reused: false,
    })
}

/// Starts the keeper the new record `st` will name, after ending the previous record's
/// keeper (it watched the connection as it was before this up). The keeper waits for
/// the lock the caller holds, so it starts work on the saved record.
fn start_keeper(
    conn: &Connection,
    prior: Option<&State>,
    st: &mut State,
    journal: &mut Journal,
) -> Result<(), LifecycleError> {
    if let Some(k) = prior.and_then(|p| p.keeper) {
        keeper::stop_id(&conn.name, k);
    }
    // After the prior keeper (which holds the listeners) has ended.
    let ns = match st.isolated {
        true => Some(
            netns::open(&st.netns).map_err(|source| LifecycleError::OpenNetns {
                ns: st.netns.clone(),
                source,
            })?,
        ),
        false => None,
    };
    crate::publish::preflight(conn, ns.as_ref())?;
    let k = keeper::spawn(conn)?;
    journal.keeper = Some(k);
    st.keeper = Some(k);
    Ok(())
}

/// Waits for the VPN's device in the host namespace, bounded by `netns-timeout`.
async fn wait_in_host(
    nl: &mut Netlink,
    dev: &str,
    conn: &Connection,
) -> Result<Link, LifecycleError> {
    nl.wait_for_link(dev, conn.netns_timeout)
        .await
        .map_err(|e| match e {
            NetlinkError::Timeout { timeout, .. } => LifecycleError::DeviceMissing {
                device: dev.to_owned(),
                timeout_ms: timeout.as_millis(),
            },
            e => e.into(),
        })
}

fn refuse_dco(l: &Link) -> Result<(), LifecycleError> {
    match l.kind.as_deref() {
        Some(k @ ("ovpn-dco" | "ovpn")) => Err(LifecycleError::Dco {
            device: l.name.clone(),
            kind: k.to_owned(),
        }),
        _ => Ok(()),
    }
}

async fn apply(
    nl: &Netlink,
    link: &Link,
    spec: &NetworkSpec,
    routes: &[Route],
) -> Result<(), NetlinkError> {
    if let Some(mtu) = spec.mtu
        && link.mtu != Some(mtu)
    {
        nl.set_mtu(link, mtu).await?;
    }
    for a in &spec.addresses {
        nl.add_address(link, a).await?;
    }
    fault::point("up:after-addresses");
    nl.set_up(link.index, &link.name).await?;
    for r in routes {
        nl.add_route(link, r).await?;
    }
    fault::point("up:after-routes");
    Ok(())
}

async fn rollback(conn: &Connection, host: &File, j: Journal) {
    if let Some(k) = j.keeper {
        keeper::discard(&conn.name, k);
    }
    if let Some(name) = &j.wrote_state
        && let Err(e) = state::remove(name)
    {
        tracing::error!("rollback: {e}");
    }
    if let Some(ns) = &j.created_etc
        && let Err(e) = dns::remove(ns)
    {
        tracing::error!("rollback: {e}");
    }
    if let Some(link) = &j.host_link
        && let Ok(nl) = Netlink::connect(None)
    {
        for r in j.host_routes.iter().rev() {
            let _ = nl.del_route(link, r).await;
        }
        for a in j.host_addresses.iter().rev() {
            let _ = nl.del_address(link, a).await;
        }
    }
    // Hand the device back to the host namespace, where its VPN process expects it.
    if let Some(dev) = &j.moved {
        match netns::open(&conn.netns) {
            Ok(ns_file) => match Netlink::connect(Some(&ns_file)) {
                Ok(nl) => {
                    if let Ok(Some(l)) = nl.link(dev).await
                        && let Err(e) = nl.move_link(&l, host).await
                    {
                        tracing::error!(
                            "rollback: cannot move {dev} back to the host namespace: {e}"
                        );
                    }
                }
                Err(e) => tracing::error!("rollback: {e}"),
            },
            Err(e) => tracing::error!("rollback: {e}"),
        }
    }
    let mut netns_gone = true;
    if let Some(ns) = &j.created_netns {
        match netns::delete(ns) {
            Ok(()) => tracing::info!("rolled back: namespace {ns} removed"),
            Err(e) => {
                netns_gone = false;
                tracing::error!("rollback: cannot delete namespace {ns}: {e}");
            }
        }
    }
    // The intent record goes only with its namespace: one left behind keeps an owner.
    if j.intent
        && netns_gone
        && let Err(e) = state::remove(&conn.name)
    {
        tracing::error!("rollback: {e}");
    }
}

mod born;
mod down;
use born::make_device;
pub use born::{MakeDevice, up_in_place};
pub use down::{DownReport, Handback, down, down_with};

#[cfg(test)]
mod tests;
