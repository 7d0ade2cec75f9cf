//! Up, the steps every kind shares: lock-held checks, the intent record, the
//! namespace, the device (the kind's step), addresses and routes, DNS files, the
//! keeper, the final record. Each change goes into the journal as it is made.

use super::edges::{At, Edges};
use super::journal::{Journal, Undo, rollback};
use super::plain::{self as uplink, Plan};
use super::{LifecycleError, MakeDevice, UpReport, effective_dns, routes_for};
use crate::config::Connection;
use crate::fault;
use crate::netlink::{Link, NetlinkError};
use crate::procs::ProcId;
use crate::spec::{DnsSpec, NetworkSpec, Route};
use crate::state::{self, Origin, State};

/// How the connection's device comes to be in its namespace: the kind's step.
pub enum Device<'a> {
    /// A VPN's device: waited for in the host namespace and moved in.
    Move,
    /// Made inside by the caller (born.rs).
    Born(MakeDevice<'a>),
    /// The uplink kinds: a macvlan or veth made from the connection's section.
    Plain,
}

/// What up did: the report, and for the uplink kinds their plan as carried out.
pub struct Upped {
    pub report: UpReport,
    pub plan: Option<Plan>,
}

/// Up with a journal; any failure replays it. The caller holds the connection's lock.
pub async fn run<E: Edges>(
    e: &E,
    conn: &Connection,
    spec: &NetworkSpec,
    origin: Origin,
    vpn: Option<ProcId>,
    device: Device<'_>,
) -> Result<Upped, LifecycleError> {
    let mut j = Journal::new(&conn.name, &conn.netns);
    fault::point("up:after-lock");
    // Overwriting that record would leave its namespace without a known owner.
    let prior = e.load_state(&conn.name)?;
    if let Some(p) = &prior
        && p.netns_created
        && p.netns != conn.netns
        && e.exists(&p.netns)
    {
        return Err(LifecycleError::OtherNetns {
            conn: conn.name.clone(),
            recorded: p.netns.clone(),
            ns: conn.netns.clone(),
        });
    }
    let isolated = conn.netns_isolate || matches!(device, Device::Plain);
    let res = match isolated {
        true => up_isolated(e, conn, spec, prior, origin, vpn, device, &mut j).await,
        false => up_host(e, conn, spec, prior, origin, vpn, device, &mut j).await,
    };
    match res {
        Ok(u) => Ok(u),
        Err(err) => {
            let left = rollback(e, j).await;
            match left.is_empty() {
                true => Err(err),
                false => Err(LifecycleError::RollbackIncomplete {
                    error: Box::new(err),
                    left,
                }),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn up_isolated<E: Edges>(
    e: &E,
    conn: &Connection,
    spec: &NetworkSpec,
    prior: Option<State>,
    origin: Origin,
    mut vpn: Option<ProcId>,
    device: Device<'_>,
    j: &mut Journal,
) -> Result<Upped, LifecycleError> {
    let ns = &conn.netns;
    let at = At::Ns(ns);
    let owned_before = prior
        .as_ref()
        .is_some_and(|s| s.netns_created && &s.netns == ns);
    // The uplink kinds change the host (veth, NAT, forwarding): their record goes
    // first, and their intent record is written even into a namespace they reuse.
    let mut plan = match device {
        Device::Plain => Some(uplink::prepare(e, conn, prior.as_ref(), j).await?),
        _ => None,
    };
    let reused = e.exists(ns);
    if reused && !owned_before {
        tracing::warn!(
            "namespace \"{ns}\" already exists and was not created by vpn-ns: using it, and it will not be deleted on down"
        );
    }
    if !reused && owned_before {
        // A crash inside netns::create can leave the bare mount-point file behind.
        e.delete(ns).map_err(|source| LifecycleError::DeleteNetns {
            ns: ns.clone(),
            source,
        })?;
    }
    if !reused || plan.is_some() {
        // Recorded before the namespace exists: whenever vpn-ns dies from here on, the
        // namespace has a known owner that the next up reuses and down removes.
        let dev = match &plan {
            Some(p) => p.rec.inside.clone(),
            None => spec.device.to_string(),
        };
        let intent = intent_record(conn, dev, origin, vpn, !reused || owned_before);
        e.save_state(&intent)?;
        j.push(Undo::Intent {
            prior: plan.as_ref().and(prior.clone()),
        });
    }
    if !reused {
        e.create(ns).map_err(|source| LifecycleError::CreateNetns {
            ns: ns.clone(),
            source,
        })?;
        j.push(Undo::Netns(ns.clone()));
        tracing::debug!("created namespace {ns}");
        fault::point("up:after-create-netns");
    }
    let configure = |device: &str| {
        let device = device.to_owned();
        move |source| LifecycleError::Configure {
            device,
            ns: ns.to_string(),
            source,
        }
    };
    if let Some(lo) = e.link(at, "lo").await? {
        e.set_up(at, &lo).await.map_err(configure("lo"))?;
    }

    let made;
    let (spec, link, restart, default_route) = if let Some(p) = plan.as_mut() {
        let (link, s) = uplink::make(e, conn, p, prior.is_some(), j).await?;
        let gw = s.gateway_v4.is_some();
        made = s;
        (&made, link, false, conn.default_route && gw)
    } else {
        let dev = spec.device.as_str();
        let born = matches!(device, Device::Born(_));
        if let Device::Born(make) = device {
            let f = e.open(ns).map_err(|source| LifecycleError::OpenNetns {
                ns: ns.clone(),
                source,
            })?;
            vpn = super::born::make_device(make, &f, dev, ns.as_str())
                .await?
                .and_then(ProcId::of);
        }
        // On OpenVPN's `--up-restart` the device is already inside from the previous up.
        let already_inside = e.link(at, dev).await?;
        let restart = already_inside.is_some() && !born;
        let link = match already_inside {
            Some(l) => {
                tracing::debug!("{dev} is already in namespace {ns}");
                l
            }
            None => move_in(e, conn, dev, j).await?,
        };
        (spec, link, restart, conn.default_route)
    };
    let dev = link.name.clone();

    let mut routes = routes_for(spec, default_route);
    apply(e, at, &link, spec, &routes)
        .await
        .map_err(configure(&dev))?;
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
            "no DNS server from the VPN or DHCP and none in [dns]: name lookups in namespace {ns} will fail"
        );
    }
    let created_etc = e
        .write_dns(ns, &conn.name, &dns)
        .map_err(|source| LifecycleError::Dns {
            ns: ns.clone(),
            source,
        })?;
    if created_etc {
        j.push(Undo::Dns(ns.clone()));
    }
    fault::point("up:after-dns");
    if let Some(p) = &plan {
        e.save_plain(&conn.name, &p.rec)?;
    }

    let mut st = State {
        connection: conn.name.clone(),
        netns: ns.clone(),
        netns_created: !reused || owned_before,
        isolated: true,
        persistent: conn.netns_persistent,
        up: true,
        origin,
        device: Some(dev.clone()),
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
    start_keeper(e, conn, prior.as_ref(), &mut st, j)?;
    e.save_state(&st)?;
    Ok(Upped {
        report: UpReport {
            netns: Some(ns.clone()),
            device: dev,
            addresses: spec.addresses.len(),
            routes: routes.len(),
            dns_servers: dns.servers.len(),
            reused,
        },
        plan,
    })
}

/// Waits for the VPN's device in the host namespace and moves it in.
async fn move_in<E: Edges>(
    e: &E,
    conn: &Connection,
    dev: &str,
    j: &mut Journal,
) -> Result<Link, LifecycleError> {
    let ns = &conn.netns;
    let l = wait_in_host(e, dev, conn).await?;
    refuse_dco(&l)?;
    let moved = |source| LifecycleError::Move {
        device: dev.to_owned(),
        ns: ns.clone(),
        source,
    };
    e.move_link(At::Host, &l, At::Ns(ns), None)
        .await
        .map_err(moved)?;
    j.push(Undo::Moved(dev.to_owned()));
    let l = e
        .wait_for_link(At::Ns(ns), dev, conn.netns_timeout)
        .await
        .map_err(moved)?;
    fault::point("up:after-move-device");
    Ok(l)
}

/// The record saved before up creates the namespace (see `State::creating`).
fn intent_record(
    conn: &Connection,
    device: String,
    origin: Origin,
    vpn: Option<ProcId>,
    netns_created: bool,
) -> State {
    State {
        connection: conn.name.clone(),
        netns: conn.netns.clone(),
        netns_created,
        isolated: true,
        persistent: conn.netns_persistent,
        up: false,
        origin,
        device: Some(device),
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
#[allow(clippy::too_many_arguments)]
async fn up_host<E: Edges>(
    e: &E,
    conn: &Connection,
    spec: &NetworkSpec,
    prior: Option<State>,
    origin: Origin,
    mut vpn: Option<ProcId>,
    device: Device<'_>,
    j: &mut Journal,
) -> Result<Upped, LifecycleError> {
    let dev = spec.device.as_str();
    if let Device::Born(make) = device {
        let host = e.host().map_err(|source| LifecycleError::OpenNetns {
            ns: conn.netns.clone(),
            source,
        })?;
        vpn = super::born::make_device(make, &host, dev, "host")
            .await?
            .and_then(ProcId::of);
    }
    let link = wait_in_host(e, dev, conn).await?;
    let routes = routes_for(spec, false);
    let configure = |source| LifecycleError::Configure {
        device: dev.to_owned(),
        ns: "host".to_owned(),
        source,
    };
    if let Some(mtu) = spec.mtu {
        e.set_mtu(At::Host, &link, mtu).await.map_err(configure)?;
    }
    for a in &spec.addresses {
        e.add_address(At::Host, &link, a).await.map_err(configure)?;
        j.push(Undo::HostAddress(link.clone(), a.clone()));
    }
    e.set_up(At::Host, &link).await.map_err(configure)?;
    for r in &routes {
        e.add_route(At::Host, &link, r).await.map_err(configure)?;
        j.push(Undo::HostRoute(link.clone(), r.clone()));
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
    start_keeper(e, conn, prior.as_ref(), &mut st, j)?;
    e.save_state(&st)?;
    Ok(Upped {
        report: UpReport {
            netns: None,
            device: dev.to_owned(),
            addresses: spec.addresses.len(),
            routes: routes.len(),
            dns_servers: 0,
            reused: false,
        },
        plan: None,
    })
}

/// Starts the keeper the new record `st` will name, after ending the previous record's
/// keeper (it watched the connection as it was before this up). The keeper waits for
/// the lock the caller holds, so it starts work on the saved record.
fn start_keeper<E: Edges>(
    e: &E,
    conn: &Connection,
    prior: Option<&State>,
    st: &mut State,
    j: &mut Journal,
) -> Result<(), LifecycleError> {
    if let Some(k) = prior.and_then(|p| p.keeper) {
        e.stop_id(&conn.name, k);
    }
    // After the prior keeper (which holds the listeners) has ended.
    let ns = match st.isolated {
        true => Some(
            e.open(&st.netns)
                .map_err(|source| LifecycleError::OpenNetns {
                    ns: st.netns.clone(),
                    source,
                })?,
        ),
        false => None,
    };
    let k = e.start(conn, ns.as_ref()).map_err(LifecycleError::Keeper)?;
    j.push(Undo::Keeper(k));
    st.keeper = Some(k);
    Ok(())
}

/// Waits for the VPN's device in the host namespace, bounded by `netns-timeout`.
async fn wait_in_host<E: Edges>(
    e: &E,
    dev: &str,
    conn: &Connection,
) -> Result<Link, LifecycleError> {
    e.wait_for_link(At::Host, dev, conn.netns_timeout)
        .await
        .map_err(|err| match err {
            NetlinkError::Timeout { timeout, .. } => LifecycleError::DeviceMissing {
                device: dev.to_owned(),
                timeout_ms: timeout.as_millis(),
            },
            err => err.into(),
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

async fn apply<E: Edges>(
    e: &E,
    at: At<'_>,
    link: &Link,
    spec: &NetworkSpec,
    routes: &[Route],
) -> Result<(), NetlinkError> {
    if let Some(mtu) = spec.mtu
        && link.mtu != Some(mtu)
    {
        e.set_mtu(at, link, mtu).await?;
    }
    for a in &spec.addresses {
        e.add_address(at, link, a).await?;
    }
    fault::point("up:after-addresses");
    e.set_up(at, link).await?;
    for r in routes {
        e.add_route(at, link, r).await?;
    }
    fault::point("up:after-routes");
    Ok(())
}
