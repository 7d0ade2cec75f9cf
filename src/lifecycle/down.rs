//! Down: undo what up recorded, keep what is persistent, never delete a namespace
//! vpn-ns did not create.

use std::fs::File;

use super::LifecycleError;
use crate::config::Connection;
use crate::dns;
use crate::fault;
use crate::netlink::{Link, Netlink, NetlinkError};
use crate::netns;
use crate::spec::NetnsName;
use crate::state::{self, Origin};

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
}

/// Takes `conn` down. The caller holds the connection's lock.
pub async fn down(conn: &Connection) -> Result<DownReport, LifecycleError> {
    down_with(conn, Handback::Return).await
}

/// Takes `conn` down, handing an adopted device back as `handback` says. The caller
/// holds the connection's lock.
pub async fn down_with(
    conn: &Connection,
    handback: Handback,
) -> Result<DownReport, LifecycleError> {
    let Some(st) = state::load(&conn.name)? else {
        return Ok(DownReport {
            netns: None,
            removed_netns: false,
            was_up: false,
        });
    };
    crate::keeper::stop(&st);
    let host = netns::current().map_err(|source| LifecycleError::OpenNetns {
        ns: st.netns.clone(),
        source,
    })?;
    if !st.isolated {
        if let Some(dev) = &st.device {
            let nl = Netlink::connect(None)?;
            if let Some(link) = nl.link(dev).await? {
                for r in st.routes.iter().rev() {
                    ignore_gone(nl.del_route(&link, r).await)?;
                }
                for a in st.addresses.iter().rev() {
                    ignore_gone(nl.del_address(&link, a).await)?;
                }
            }
        }
        state::remove(&conn.name)?;
        return Ok(DownReport {
            netns: None,
            removed_netns: false,
            was_up: st.up,
        });
    }

    let ns = st.netns.clone();
    let keep = st.persistent || conn.netns_persistent;
    let adopted = (st.origin == Origin::Adopt)
        .then(|| crate::adopt::load(&conn.name))
        .flatten();
    let mut returned: Option<String> = None;
    if netns::exists(&ns) {
        let ns_file = netns::open(&ns).map_err(|source| LifecycleError::OpenNetns {
            ns: ns.clone(),
            source,
        })?;
        // Usually OpenVPN has closed the tun already and it is gone; with --down-pre or
        // for a device vpn-ns adopted it is still here: strip it and hand it back.
        if let Some(dev) = &st.device {
            let nl = Netlink::connect(Some(&ns_file))?;
            // An adopted device is known by its index: its name is only the one it had
            // on the host.
            let link = match adopted.as_ref().and_then(|a| a.ifindex) {
                Some(index) => nl.link_by_index(index).await?,
                None => nl.link(dev).await?,
            };
            if let Some(link) = link {
                for r in st.routes.iter().rev() {
                    ignore_gone(nl.del_route(&link, r).await)?;
                }
                for a in st.addresses.iter().rev() {
                    ignore_gone(nl.del_address(&link, a).await)?;
                }
                if st.origin == Origin::Adopt && handback == Handback::Release {
                    tracing::info!(
                        "{} (ifindex {}) stays in namespace {ns} without addresses or routes until its VPN closes it",
                        link.name,
                        link.index
                    );
                } else {
                    returned = Some(return_to_host(&nl, &link, &host, &ns).await?);
                }
            }
        }
        fault::point("down:after-device-strip");
    }
    if st.origin == Origin::Adopt {
        match handback {
            Handback::Return => {
                crate::adopt::restore(&conn.name, returned.as_deref(), conn.netns_timeout).await?
            }
            Handback::Release => crate::adopt::forget(&conn.name)?,
        }
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
        state::save(&kept)?;
        return Ok(DownReport {
            netns: Some(ns),
            removed_netns: false,
            was_up: st.up,
        });
    }
    let mut removed = false;
    if st.netns_created {
        netns::delete(&ns).map_err(|source| LifecycleError::DeleteNetns {
            ns: ns.clone(),
            source,
        })?;
        removed = true;
        fault::point("down:after-netns-delete");
    } else {
        tracing::info!("namespace \"{ns}\" was not created by vpn-ns: leaving it in place");
    }
    dns::remove(&ns).map_err(|source| LifecycleError::Dns {
        ns: ns.clone(),
        source,
    })?;
    fault::point("down:before-state-remove");
    state::remove(&conn.name)?;
    Ok(DownReport {
        netns: Some(ns),
        removed_netns: removed,
        was_up: st.up,
    })
}

/// Moves `link` back to the host namespace; when another device took its name there,
/// under a free name instead of failing (the name is all that collides).
async fn return_to_host(
    nl: &Netlink,
    link: &Link,
    host: &File,
    ns: &NetnsName,
) -> Result<String, LifecycleError> {
    let configure = |source| LifecycleError::Configure {
        device: link.name.clone(),
        ns: ns.to_string(),
        source,
    };
    match nl.move_link(link, host).await {
        Ok(()) => Ok(link.name.clone()),
        Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST as i32) => {
            let taken: Vec<String> = Netlink::connect(None)?
                .links()
                .await?
                .into_iter()
                .map(|l| l.name)
                .collect();
            let name = crate::adopt::free_name(&link.name, &taken);
            nl.move_link_renamed(link, host, &name)
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
fn ignore_gone(r: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
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
