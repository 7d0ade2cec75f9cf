//! Down, for every kind: undo what the record says, keep what is persistent, never
//! delete a namespace vpn-ns did not create. A step that fails does not stop the
//! others; every failure is reported, and the record stays (so `status` calls it stale
//! and the next down retries) unless everything before its removal succeeded.

use super::LifecycleError;
use super::edges::{At, Edges};
use super::journal::ErrorList;
use crate::config::Connection;
use crate::fault;
use crate::netlink::{Link, NetlinkError};
use crate::plain::Record;
use crate::procs::ProcId;
use crate::spec::NetnsName;
use crate::state::{Origin, State};

/// What becomes of an adopted device that is still there at down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handback {
    /// `vpn-ns down`: back to the host namespace (under a free name when another device
    /// took its name there), with the configuration it had before the move.
    Return,
    /// NetworkManager's vpn-down: NetworkManager has deconfigured the VPN already, so
    /// nothing is put back on the host. The device is stripped where it is and goes away
    /// with its namespace or with its VPN process.
    Release,
}

#[derive(Debug)]
pub struct DownReport {
    pub netns: Option<NetnsName>,
    pub removed_netns: bool,
    pub was_up: bool,
    /// The ip_forward value restored, when this was the last routed connection.
    pub restored_forwarding: Option<String>,
}

/// Takes `conn` down. The caller holds the connection's lock.
pub async fn down<E: Edges>(e: &E, conn: &Connection) -> Result<DownReport, LifecycleError> {
    down_with(e, conn, Handback::Return).await
}

/// Takes `conn` down, handing an adopted device back as `handback` says. The caller
/// holds the connection's lock.
pub async fn down_with<E: Edges>(
    e: &E,
    conn: &Connection,
    handback: Handback,
) -> Result<DownReport, LifecycleError> {
    let Some(st) = e.load_state(&conn.name)? else {
        return Ok(DownReport {
            netns: None,
            removed_netns: false,
            was_up: false,
            restored_forwarding: None,
        });
    };
    e.stop(&st);
    let mut errs = ErrorList::default();
    if st.origin == Origin::Wireguard {
        stop_wireguard(e, &st, &mut errs);
    }
    let uplink = matches!(st.origin, Origin::Macvlan | Origin::Routed);
    let rec = match uplink {
        true => errs.keep(e.load_plain(&conn.name)).flatten(),
        false => None,
    };
    let mut report = DownReport {
        netns: st.isolated.then(|| st.netns.clone()),
        removed_netns: false,
        was_up: st.up,
        restored_forwarding: None,
    };
    if st.origin == Origin::Routed {
        report.restored_forwarding = routed_host(e, conn, rec.as_ref(), &mut errs).await;
    }
    if !st.isolated {
        strip_host(e, &st, &mut errs).await;
        if let Some(dev) = st.device.as_deref().filter(|_| kernel_link(&st)) {
            errs.keep(
                e.delete_kernel(At::Host, dev)
                    .await
                    .map_err(LifecycleError::WireGuard),
            );
        }
        if errs.is_empty() {
            errs.keep(e.remove_state(&conn.name));
        }
        return errs.finish(report);
    }

    let ns = st.netns.clone();
    let keep = st.persistent || conn.netns_persistent;
    let inside = match e.exists(&ns) {
        true => {
            let r = device(e, conn, &st, rec.as_ref(), handback, &mut errs).await;
            fault::point("down:after-device-strip");
            r
        }
        false => Inside::Gone,
    };
    if let Inside::Stuck(why) = inside {
        // Deleting the namespace now would destroy a device that is not ours to
        // destroy (the VPN's, an adopted one), or keeping it would lose the record of
        // ours: it all stays for the next down.
        tracing::error!(
            "namespace {ns} kept: its device {why}; `vpn-ns down {}` tries again",
            conn.name
        );
        return errs.finish(report);
    }
    let returned = match inside {
        Inside::Returned(name) => Some(name),
        _ => None,
    };
    if st.origin == Origin::Adopt {
        let r = match handback {
            Handback::Return => {
                super::restore_adopted(e, &conn.name, returned.as_deref(), conn.netns_timeout).await
            }
            Handback::Release => e.forget_adopted(&conn.name).map_err(Into::into),
        };
        errs.keep(r);
    }
    if keep {
        let mut kept = st.clone();
        kept.up = false;
        kept.device = None;
        kept.vpn_pid = None;
        kept.vpn_start = None;
        kept.keeper = None;
        kept.creating = false;
        fault::point("down:before-state-keep");
        errs.keep(e.save_state(&kept));
    } else {
        if st.netns_created {
            let deleted = e.delete(&ns).map_err(|source| LifecycleError::DeleteNetns {
                ns: ns.clone(),
                source,
            });
            report.removed_netns = errs.keep(deleted).is_some();
            fault::point("down:after-netns-delete");
        } else {
            tracing::info!("namespace \"{ns}\" was not created by vpn-ns: leaving it in place");
        }
        errs.keep(e.remove_dns(&ns).map_err(|source| LifecycleError::Dns {
            ns: ns.clone(),
            source,
        }));
        fault::point("down:before-state-remove");
    }
    // The kind's record before the state record: down starts from the state record,
    // so whatever is left must still be named by it.
    if uplink && errs.is_empty() {
        errs.keep(e.remove_plain(&conn.name));
    }
    if !keep && errs.is_empty() {
        errs.keep(e.remove_state(&conn.name));
    }
    errs.finish(report)
}

/// Routed: the NAT table, the forwarding claim and the host end of the veth pair.
/// Returns the ip_forward value restored, if this was the last claim.
async fn routed_host<E: Edges>(
    e: &E,
    conn: &Connection,
    rec: Option<&Record>,
    errs: &mut ErrorList,
) -> Option<String> {
    errs.keep(
        e.delete_nat(&conn.name)
            .map_err(|source| LifecycleError::NatDelete { source }),
    );
    fault::point("down:after-nat-delete");
    let restored = errs
        .keep(
            e.release_forwarding(&conn.name)
                .map_err(LifecycleError::Uplink),
        )
        .flatten();
    let name = rec
        .and_then(|r| r.host_veth.clone())
        .unwrap_or_else(|| crate::plain::links::host_veth_name(&conn.name));
    errs.keep(e.delete_link(At::Host, &name).await);
    restored
}

/// `netns-isolate = false`: the addresses and routes up added to the host's device.
async fn strip_host<E: Edges>(e: &E, st: &State, errs: &mut ErrorList) {
    let Some(dev) = &st.device else {
        return;
    };
    if let Some(Some(link)) = errs.keep(e.link(At::Host, dev).await) {
        for r in st.routes.iter().rev() {
            errs.keep(ignore_gone(e.del_route(At::Host, &link, r).await));
        }
        for a in st.addresses.iter().rev() {
            errs.keep(ignore_gone(e.del_address(At::Host, &link, a).await));
        }
    }
}

/// What became of the device inside at down.
#[derive(Debug, PartialEq, Eq)]
enum Inside {
    /// None there (closed by its VPN, or deleted: the uplink kinds' own devices).
    Gone,
    /// Left inside on purpose (`Handback::Release`).
    Kept,
    /// Back in the host namespace, under this name.
    Returned(String),
    /// Maybe still inside, and not ours to destroy with the namespace (or ours, in a
    /// namespace that stays): why.
    Stuck(&'static str),
}

const NOT_BACK: &str = "could not be handed back to the host";

/// WireGuard's own kernel link (native up with no process serving it).
fn kernel_link(st: &State) -> bool {
    st.origin == Origin::Wireguard && st.vpn_pid.is_none()
}

/// The process serving WireGuard's device (wireguard-go, the built-in data plane),
/// stopped after the keeper (which would act on its end) and before the rest of down:
/// its tun goes with it, wherever it is.
fn stop_wireguard<E: Edges>(e: &E, st: &State, errs: &mut ErrorList) {
    let Some(dev) = &st.device else {
        return;
    };
    // A record without a start time (older vpn-ns): the pid's process, if it runs.
    if let Some(id) = st.vpn().or_else(|| st.vpn_pid.and_then(ProcId::of)) {
        errs.keep(e.stop_device(id, dev).map_err(LifecycleError::WireGuard));
    }
}

/// The device inside: an uplink kind's is deleted (after DHCPRELEASE); a VPN's is
/// stripped and handed back.
async fn device<E: Edges>(
    e: &E,
    conn: &Connection,
    st: &State,
    rec: Option<&Record>,
    handback: Handback,
    errs: &mut ErrorList,
) -> Inside {
    let ns = &st.netns;
    let at = At::Ns(ns);
    let Some(dev) = st.device.as_ref() else {
        return Inside::Gone;
    };
    if matches!(st.origin, Origin::Macvlan | Origin::Routed) {
        if let Some(r) = rec {
            e.release_lease(&conn.name, r, ns, dev);
        }
        // Routed: gone with its host end already; macvlan: ours to delete (and the
        // namespace's deletion takes it along if this fails).
        errs.keep(e.delete_link(at, dev).await);
        return Inside::Gone;
    }
    if kernel_link(st) {
        // Ours, deleted where it is (its addresses and routes go with it). When that
        // fails, the namespace's deletion takes it along; a namespace that stays keeps
        // it, so the record must go on naming it.
        let deleted = e.delete_kernel(at, dev).await;
        return match errs.keep(deleted.map_err(LifecycleError::WireGuard)) {
            None if st.persistent || conn.netns_persistent => Inside::Stuck("could not be deleted"),
            _ => Inside::Gone,
        };
    }
    // Usually OpenVPN has closed the tun already and it is gone; with --down-pre or for
    // a device vpn-ns adopted it is still here: strip it and hand it back. An adopted
    // device is known by its index: its name is only the one it had on the host.
    let adopted = (st.origin == Origin::Adopt)
        .then(|| e.load_adopted(&conn.name))
        .flatten();
    let link = match adopted.and_then(|a| a.ifindex) {
        Some(index) => e.link_by_index(at, index).await,
        None => e.link(at, dev).await,
    };
    let link = match errs.keep(link) {
        Some(Some(l)) => l,
        Some(None) => return Inside::Gone,
        None => return Inside::Stuck(NOT_BACK),
    };
    for r in st.routes.iter().rev() {
        errs.keep(ignore_gone(e.del_route(at, &link, r).await));
    }
    for a in st.addresses.iter().rev() {
        errs.keep(ignore_gone(e.del_address(at, &link, a).await));
    }
    if st.origin == Origin::Adopt && handback == Handback::Release {
        tracing::info!(
            "{} (ifindex {}) stays in namespace {ns} without addresses or routes until its VPN closes it",
            link.name,
            link.index
        );
        return Inside::Kept;
    }
    match errs.keep(return_to_host(e, &link, ns).await) {
        Some(name) => Inside::Returned(name),
        None => Inside::Stuck(NOT_BACK),
    }
}

/// Moves `link` back to the host namespace; when another device took its name there,
/// under a free name instead of failing (the name is all that collides).
async fn return_to_host<E: Edges>(
    e: &E,
    link: &Link,
    ns: &NetnsName,
) -> Result<String, LifecycleError> {
    let configure = |source| LifecycleError::Configure {
        device: link.name.clone(),
        ns: ns.to_string(),
        source,
    };
    match e.move_link(At::Ns(ns), link, At::Host, None).await {
        Ok(()) => Ok(link.name.clone()),
        Err(err) if err.errno() == Some(nix::errno::Errno::EEXIST as i32) => {
            let taken = e.link_names(At::Host).await?;
            let name = crate::adopt::free_name(&link.name, &taken);
            e.move_link(At::Ns(ns), link, At::Host, Some(&name))
                .await
                .map_err(configure)?;
            tracing::warn!(
                "another device took the name {} in the host namespace: returned {} as {name}",
                link.name,
                link.name
            );
            Ok(name)
        }
        Err(source) => Err(configure(source)),
    }
}

/// During down, an address or route already gone (device closed, admin removed it) is fine.
pub(super) fn ignore_gone(r: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match r {
        Err(e)
            if matches!(
                e.errno()
                    .and_then(|n| nix::errno::Errno::from_raw(n).into()),
                Some(
                    nix::errno::Errno::ESRCH
                        | nix::errno::Errno::ENOENT
                        | nix::errno::Errno::EADDRNOTAVAIL
                        | nix::errno::Errno::ENODEV
                )
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}
