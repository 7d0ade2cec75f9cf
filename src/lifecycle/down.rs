//! Down: undo what up recorded, keep what is persistent, never delete a namespace
//! vpn-ns did not create.

use super::LifecycleError;
use crate::config::Connection;
use crate::dns;
use crate::fault;
use crate::netlink::{Netlink, NetlinkError};
use crate::netns;
use crate::spec::NetnsName;
use crate::state::{self, Origin};

#[derive(Debug)]
pub struct DownReport {
    pub netns: Option<NetnsName>,
    pub removed_netns: bool,
    pub was_up: bool,
}

/// Takes `conn` down. The caller holds the connection's lock.
pub async fn down(conn: &Connection) -> Result<DownReport, LifecycleError> {
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
            if let Some(link) = nl.link(dev).await? {
                for r in st.routes.iter().rev() {
                    ignore_gone(nl.del_route(&link, r).await)?;
                }
                for a in st.addresses.iter().rev() {
                    ignore_gone(nl.del_address(&link, a).await)?;
                }
                nl.move_link(&link, &host)
                    .await
                    .map_err(|source| LifecycleError::Configure {
                        device: dev.clone(),
                        ns: ns.to_string(),
                        source,
                    })?;
                returned = Some(dev.clone());
            }
        }
        fault::point("down:after-device-strip");
    }
    if st.origin == Origin::Adopt {
        crate::adopt::restore(&conn.name, returned.as_deref(), conn.netns_timeout).await?;
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
