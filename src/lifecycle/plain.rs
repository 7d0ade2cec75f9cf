//! The uplink kinds' steps in the engine (`type = "macvlan"`, `type = "routed"`):
//! before the namespace, the host device check, the transfer network and the
//! `<conn>.plain` record; as the device step, the macvlan or veth pair born in the
//! namespace, with NAT and IP forwarding for routed and DHCP for macvlan. Everything
//! else (intent record, namespace, addresses, routes, DNS, keeper, rollback, down) is
//! the engine's.

use std::net::{IpAddr, Ipv4Addr};

use super::edges::{At, Edges};
use super::journal::{Journal, Undo};
use super::up::{self, Device};
use super::{LifecycleError, UpReport};
use crate::config::{Connection, Kind, MacvlanSection, RoutedSection};
use crate::fault;
use crate::netlink::Link;
use crate::plain::{Record, links};
use crate::spec::{Address, DnsSpec, IpNet, NetworkSpec};
use crate::state::{self, Origin, State};

/// The kind-specific part of a connection: the one place that reads its section.
enum Section<'a> {
    Macvlan(&'a MacvlanSection),
    Routed(&'a RoutedSection),
}

fn section(conn: &Connection) -> Result<Section<'_>, LifecycleError> {
    match &conn.kind {
        Kind::Macvlan(m) => Ok(Section::Macvlan(m)),
        Kind::Routed(r) => Ok(Section::Routed(r)),
        k => Err(LifecycleError::Refused(format!(
            "connection {}: type \"{}\" is not an uplink type",
            conn.name,
            k.tag()
        ))),
    }
}

/// What the uplink step found and made, carried through up.
pub struct Plan {
    pub rec: Record,
    host_link: Link,
}

#[derive(Debug)]
pub struct PlainUpReport {
    pub netns: crate::spec::NetnsName,
    pub device: String,
    pub address: IpNet,
    pub gateway: Option<Ipv4Addr>,
    pub dns_servers: usize,
    pub already_up: bool,
    pub lease_secs: Option<u32>,
}

/// Brings a macvlan or routed connection up. The caller holds the connection's lock.
pub async fn up_plain<E: Edges>(e: &E, conn: &Connection) -> Result<PlainUpReport, LifecycleError> {
    if let Some(st) = e.load_state(&conn.name)?
        && st.up
    {
        return already_up(e, conn, &st);
    }
    let origin = match section(conn)? {
        Section::Macvlan(_) => Origin::Macvlan,
        Section::Routed(_) => Origin::Routed,
    };
    // The device name is the plan's; this spec only carries it until then.
    let placeholder = NetworkSpec {
        device: links::ROUTED_INSIDE.parse().expect("valid name"),
        mtu: None,
        addresses: Vec::new(),
        routes: Vec::new(),
        gateway_v4: None,
        gateway_v6: None,
        dns: DnsSpec::default(),
    };
    let u = up::run(e, conn, &placeholder, origin, None, Device::Plain).await?;
    let UpReport {
        netns,
        device,
        dns_servers,
        ..
    } = u.report;
    let plan = u.plan.expect("the uplink step made a plan");
    let st = e.load_state(&conn.name)?;
    let address = st
        .as_ref()
        .and_then(|s| s.addresses.first())
        .map(|a| a.local)
        .ok_or_else(|| LifecycleError::Refused(format!("{}: no address recorded", conn.name)))?;
    Ok(PlainUpReport {
        netns: netns.expect("isolated"),
        device,
        address,
        gateway: st.as_ref().and_then(gateway_of),
        dns_servers,
        already_up: false,
        lease_secs: plan.rec.lease.and_then(|l| l.lease_secs),
    })
}

fn gateway_of(st: &State) -> Option<Ipv4Addr> {
    st.routes.iter().find_map(|r| match r.gateway {
        Some(IpAddr::V4(g)) => Some(g),
        _ => None,
    })
}

fn already_up<E: Edges>(
    e: &E,
    conn: &Connection,
    st: &State,
) -> Result<PlainUpReport, LifecycleError> {
    let rec = e.load_plain(&conn.name)?;
    let address = st.addresses.first().map(|a| a.local);
    match (address, e.exists(&st.netns)) {
        (Some(address), true) => Ok(PlainUpReport {
            netns: st.netns.clone(),
            device: rec.map(|r| r.inside).unwrap_or_default(),
            address,
            gateway: gateway_of(st),
            dns_servers: st.dns.servers.len(),
            already_up: true,
            lease_secs: None,
        }),
        _ => Err(LifecycleError::Refused(format!(
            "the state in {} says up, but namespace \"{}\" is gone: run `vpn-ns down {}` first",
            state::state_path(&conn.name).display(),
            st.netns,
            conn.name
        ))),
    }
}

/// Before the namespace: the host device must exist, leftovers of an earlier up of
/// ours go, the transfer network is chosen, and the record is written.
pub(super) async fn prepare<E: Edges>(
    e: &E,
    conn: &Connection,
    prior: Option<&State>,
    j: &mut Journal,
) -> Result<Plan, LifecycleError> {
    let sec = section(conn)?;
    let (what, host_dev) = match &sec {
        Section::Macvlan(m) => ("parent", m.parent.as_str()),
        Section::Routed(r) => ("uplink", r.uplink.as_str()),
    };
    let Some(host_link) = e.link(At::Host, host_dev).await? else {
        return Err(LifecycleError::Refused(format!(
            "{what} device {host_dev} does not exist in the host namespace"
        )));
    };
    let host_veth = matches!(sec, Section::Routed(_)).then(|| links::host_veth_name(&conn.name));
    // A record that is not up (an up that died half way, or a kept persistent
    // namespace) makes this connection's devices found now leftovers of ours.
    if prior.is_some()
        && let Some(v) = &host_veth
        && e.delete_link(At::Host, v).await?
    {
        tracing::info!("removed {v}, left by an earlier up of {}", conn.name);
    }
    let transfer = match &sec {
        Section::Routed(r) => {
            let taken = e.host_networks().await?;
            Some(
                links::choose_transfer(&conn.name, r.transfer, &taken)
                    .map_err(LifecycleError::Refused)?,
            )
        }
        Section::Macvlan(_) => None,
    };
    let rec = Record {
        inside: match &sec {
            Section::Macvlan(m) => m.parent.to_string(),
            Section::Routed(_) => links::ROUTED_INSIDE.to_owned(),
        },
        host_veth,
        transfer,
        uplink: match &sec {
            Section::Routed(r) => Some(r.uplink.to_string()),
            Section::Macvlan(_) => None,
        },
        forwarding: false,
        lease: None,
        lease_obtained: None,
        lease_expired: false,
    };
    // Recorded before anything exists: whenever vpn-ns dies from here on, down finds
    // the devices, NAT and forwarding claim.
    e.save_plain(&conn.name, &rec)?;
    j.push(Undo::PlainRecord);
    Ok(Plan { rec, host_link })
}

/// The device step: the macvlan or veth pair, born in the namespace; returns the link
/// inside and what to apply to it (address, gateway, DNS from DHCP).
pub(super) async fn make<E: Edges>(
    e: &E,
    conn: &Connection,
    plan: &mut Plan,
    had_prior: bool,
    j: &mut Journal,
) -> Result<(Link, NetworkSpec), LifecycleError> {
    let ns = &conn.netns;
    let at = At::Ns(ns);
    let inside_name = plan.rec.inside.clone();
    let configure = |source| LifecycleError::Configure {
        device: inside_name.clone(),
        ns: ns.to_string(),
        source,
    };
    // Leftover of a half-done earlier up inside a namespace that was kept.
    if had_prior && e.delete_link(at, &inside_name).await? {
        tracing::info!("removed {inside_name} in namespace {ns}, left by an earlier up");
    }
    let (link, address, gateway, pushed) = match section(conn)? {
        Section::Macvlan(m) => {
            let mac = links::mac_for(&conn.name);
            e.create_macvlan(ns, &inside_name, &plan.host_link, m.mode, mac)
                .await?;
            j.push(Undo::InsideLink(inside_name.clone()));
            fault::point("up:after-uplink-device");
            let link = inside_link(e, conn, &inside_name).await?;
            e.set_up(at, &link).await.map_err(configure)?;
            match m.address {
                Some(a) => (link, a, m.gateway, DnsSpec::default()),
                None => {
                    let lease = e
                        .dhcp(ns, &inside_name, &conn.name)
                        .map_err(LifecycleError::Uplink)?;
                    let a = IpNet::new(IpAddr::V4(lease.address), lease.prefix)
                        .map_err(|err| LifecycleError::Refused(format!("DHCP: {err}")))?;
                    let pushed = DnsSpec {
                        servers: lease.dns.iter().map(|d| IpAddr::V4(*d)).collect(),
                        search: lease.domain.iter().filter_map(|d| d.parse().ok()).collect(),
                    };
                    let gw = lease.router;
                    plan.rec.lease = Some(lease);
                    plan.rec.lease_obtained = Some(state::now());
                    (link, a, gw, pushed)
                }
            }
        }
        Section::Routed(r) => {
            let t = plan.rec.transfer.expect("routed has a transfer network");
            let host_name = links::host_veth_name(&conn.name);
            if e.link(At::Host, &host_name).await?.is_some() {
                return Err(LifecycleError::Refused(format!(
                    "device {host_name} already exists in the host namespace (left by an earlier run of connection {}? remove it with `ip link del {host_name}`)",
                    conn.name
                )));
            }
            e.create_veth(&host_name, &inside_name, ns).await?;
            j.push(Undo::HostLink(host_name.clone()));
            fault::point("up:after-uplink-device");
            let (host_end, inside_end) = links::transfer_ends(&t);
            let host_cfg = |source| LifecycleError::Configure {
                device: host_name.clone(),
                ns: "host".to_owned(),
                source,
            };
            let hl = e.link(At::Host, &host_name).await?.ok_or_else(|| {
                LifecycleError::Refused(format!("{host_name} vanished after its creation"))
            })?;
            let host_addr = Address {
                local: host_end,
                peer: None,
            };
            e.add_address(At::Host, &hl, &host_addr)
                .await
                .map_err(host_cfg)?;
            e.set_up(At::Host, &hl).await.map_err(host_cfg)?;
            let link = inside_link(e, conn, &inside_name).await?;
            e.set_up(at, &link).await.map_err(configure)?;
            e.enable_forwarding(&conn.name)
                .map_err(LifecycleError::Uplink)?;
            j.push(Undo::Forwarding);
            plan.rec.forwarding = true;
            e.add_nat(&conn.name, &t, r.uplink.as_str())
                .map_err(|source| LifecycleError::Nat {
                    transfer: t,
                    uplink: r.uplink.to_string(),
                    source,
                })?;
            j.push(Undo::Nat);
            fault::point("up:after-nat");
            let gw = match host_end.addr() {
                IpAddr::V4(g) => Some(g),
                IpAddr::V6(_) => None,
            };
            (link, inside_end, gw, DnsSpec::default())
        }
    };
    let spec = NetworkSpec {
        device: link
            .name
            .parse()
            .map_err(|err| LifecycleError::Refused(format!("device name {}: {err}", link.name)))?,
        mtu: None,
        addresses: vec![Address {
            local: address,
            peer: None,
        }],
        routes: Vec::new(),
        gateway_v4: gateway,
        gateway_v6: None,
        dns: pushed,
    };
    Ok((link, spec))
}

async fn inside_link<E: Edges>(
    e: &E,
    conn: &Connection,
    name: &str,
) -> Result<Link, LifecycleError> {
    e.link(At::Ns(&conn.netns), name).await?.ok_or_else(|| {
        LifecycleError::Refused(format!(
            "{name} did not appear in namespace \"{}\" after its creation",
            conn.netns
        ))
    })
}
