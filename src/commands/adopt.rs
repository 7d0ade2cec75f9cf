//! `vpn-ns adopt <CONN> <DEVICE>`: move a device that something else configured in the
//! host namespace into CONN's namespace, with its addresses and routes. The NetworkManager
//! hook adopts through the same path, with the owning NetworkManager connection and DNS.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::adopt::{self, Snapshot};
use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, Connection, Kind};
use crate::lifecycle::{self, UpReport};
use crate::netlink::Netlink;
use crate::netns;
use crate::nm::Owner;
use crate::spec::{DnsSpec, InterfaceName};
use crate::state::{self, Origin};

pub fn run(g: &GlobalArgs, name: &str, device: &str) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, name)?;
    check_adoptable(&conn)?;
    let dev: InterfaceName = device
        .parse()
        .map_err(|e| UsageError(format!("device {device:?}: {e}")))?;
    match adopt_device(&conn, &dev, None, DnsSpec::default())? {
        Adopted::Already { ifindex } => {
            tracing::info!(
                "{name}: {dev} (ifindex {ifindex}) is already in namespace {}",
                conn.netns
            )
        }
        Adopted::Moved(report) => {
            tracing::info!(
                "{name}: {dev} adopted into namespace {}: {} address(es), {} route(s), {} DNS server(s)",
                conn.netns,
                report.addresses,
                report.routes,
                report.dns_servers
            );
            // The keeper opens the relays once it has the lock, which adopt_device released.
            super::publish::wait_listening(&conn);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check_adoptable(conn: &Connection) -> Result<(), UsageError> {
    if conn.kind != Kind::Device {
        return Err(UsageError(format!(
            "{}: adopting a device needs type = \"device\" (this connection is \"{}\", which vpn-ns brings up itself)",
            conn.path.display(),
            conn.kind
        )));
    }
    if !conn.netns_isolate {
        return Err(UsageError(format!(
            "{}: adopting moves the device into a namespace; it makes no sense with netns-isolate = false",
            conn.path.display()
        )));
    }
    Ok(())
}

pub(crate) enum Adopted {
    Moved(UpReport),
    /// This very device (same index, same owner) is already inside: a repeated event.
    Already {
        ifindex: u32,
    },
}

/// Adopts host device `dev` for `conn`, recording its identity (index inside, `owner`).
/// A device is "already adopted" only when the record says so by identity: the same
/// name on the host is then another device, and is refused rather than ignored.
pub(crate) fn adopt_device(
    conn: &Connection,
    dev: &InterfaceName,
    owner: Option<Owner>,
    dns: DnsSpec,
) -> anyhow::Result<Adopted> {
    let name = &conn.name;
    let _lock = state::lock(name)?;
    let rt = runtime()?;
    rt.block_on(async {
        let nl = Netlink::connect(None)?;
        let on_host = nl.link(dev.as_str()).await?;
        if let Some(st) = state::load(name)?
            && st.up
            && !released_stale(conn, &st).await?
        {
            let rec = adopt::load(name);
            let inside = match (&rec, netns::exists(&st.netns)) {
                (Some(Snapshot {
                    ifindex: Some(i), ..
                }), true) => {
                    let f = netns::open(&st.netns).with_context(|| {
                        format!("cannot open namespace {} of connection {name}", st.netns)
                    })?;
                    Netlink::connect(Some(&f))?.link_by_index(*i).await?
                }
                _ => None,
            };
            if let Some(l) = &inside
                && adopt::is_the_adopted_device(
                    st.origin,
                    rec.as_ref(),
                    owner.as_ref(),
                    on_host.is_some(),
                    l.name.as_str(),
                    dev.as_str(),
                )
            {
                return Ok(Adopted::Already { ifindex: l.index });
            }
            let held = match (&rec, st.origin) {
                (Some(r), Origin::Adopt) => describe(r),
                _ => format!(
                    "{} (brought up by {:?})",
                    st.device.as_deref().unwrap_or("no device"),
                    st.origin
                ),
            };
            return Err(anyhow::anyhow!(
                "connection {name} is already up in namespace {} with {held}; {dev} on the host is another device and stays where it is (run `vpn-ns down {name}` first)",
                st.netns
            ));
        }
        let link = on_host.with_context(|| format!("no device {dev} in the host namespace"))?;
        set_aside_leftover(conn, dev).await?;
        let mut snap = adopt::snapshot(&nl, &link)
            .await
            .with_context(|| format!("cannot read the configuration of {dev}"))?;
        snap.nm = owner;
        adopt::save(name, &snap)?;
        // The move takes tens of milliseconds in the kernel; down first, the VPN's routes
        // stop steering the host's traffic now (the rollback brings it up again).
        if let Err(e) = nl.set_down(link.index, dev.as_str()).await {
            tracing::warn!("cannot bring {dev} down before the move: {e}");
        }
        let spec = snap.spec(dns)?;
        let sys = crate::keeper::system();
        match lifecycle::up(&sys, conn, &spec, Origin::Adopt, None).await {
            Ok(report) => {
                let f = netns::open(&conn.netns)
                    .with_context(|| format!("cannot open namespace {}", conn.netns))?;
                snap.ifindex = Netlink::connect(Some(&f))?
                    .link(dev.as_str())
                    .await?
                    .map(|l| l.index);
                adopt::save(name, &snap)?;
                Ok(Adopted::Moved(report))
            }
            Err(e) => {
                // The rollback moved the device back bare; give it its configuration again.
                let back = Some(dev.as_str());
                if let Err(re) =
                    lifecycle::restore_adopted(&sys, name, back, conn.netns_timeout).await
                {
                    tracing::error!("rollback: cannot restore {dev} in the host namespace: {re}");
                }
                Err(anyhow::Error::from(e).context(format!(
                    "connection {name}: cannot adopt {dev}, changes rolled back"
                )))
            }
        }
    })
}

/// A device of that name still inside the kept (persistent) namespace vpn-ns owns is a
/// leftover of the previous VPN, released but not yet closed by its process: it is
/// renamed out of the way (down, stripped already), or up would take it for this one.
async fn set_aside_leftover(conn: &Connection, dev: &InterfaceName) -> anyhow::Result<()> {
    let kept = state::load(&conn.name)?.is_some_and(|s| !s.up && s.netns_created);
    if !kept || !netns::exists(&conn.netns) {
        return Ok(());
    }
    let f = netns::open(&conn.netns)
        .with_context(|| format!("cannot open namespace {}", conn.netns))?;
    let nl = Netlink::connect(Some(&f))?;
    let Some(old) = nl.link(dev.as_str()).await? else {
        return Ok(());
    };
    let taken: Vec<String> = nl.links().await?.into_iter().map(|l| l.name).collect();
    let name = adopt::free_name(dev.as_str(), &taken);
    let what = || format!("cannot set aside the old {dev} in namespace {}", conn.netns);
    nl.set_down(old.index, dev.as_str())
        .await
        .with_context(what)?;
    nl.rename_link(&old, &name).await.with_context(what)?;
    tracing::warn!(
        "{}: the previous {dev} (ifindex {}) is still in namespace {}: renamed {name}",
        conn.name,
        old.index,
        conn.netns
    );
    Ok(())
}

/// A record whose adopted device no longer exists (its VPN closed it, and the vpn-down
/// that would have said so has not run yet: NetworkManager reconnecting) owns nothing:
/// it is released so that the new device can be adopted. True when it was.
async fn released_stale(conn: &Connection, st: &state::State) -> anyhow::Result<bool> {
    let Some(index) = adopt::load(&conn.name).and_then(|r| r.ifindex) else {
        return Ok(false);
    };
    if st.origin != Origin::Adopt || !netns::exists(&st.netns) {
        return Ok(false);
    }
    let f = netns::open(&st.netns).with_context(|| {
        format!(
            "cannot open namespace {} of connection {}",
            st.netns, conn.name
        )
    })?;
    if Netlink::connect(Some(&f))?
        .link_by_index(index)
        .await?
        .is_some()
    {
        return Ok(false);
    }
    lifecycle::down_with(&crate::keeper::system(), conn, lifecycle::Handback::Release)
        .await
        .with_context(|| format!("connection {}: cannot release its stale record", conn.name))?;
    tracing::info!(
        "{}: the device adopted before (ifindex {index}) is gone: its record was released",
        conn.name
    );
    Ok(true)
}

fn describe(r: &Snapshot) -> String {
    let index = r
        .ifindex
        .map_or_else(|| "ifindex unknown".to_owned(), |i| format!("ifindex {i}"));
    match &r.nm {
        Some(o) => format!(
            "{} ({index}) of NetworkManager connection {:?} ({})",
            r.device, o.id, o.uuid
        ),
        None => format!("{} ({index})", r.device),
    }
}
