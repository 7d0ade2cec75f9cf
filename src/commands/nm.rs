//! `vpn-ns hook networkmanager`: NetworkManager's dispatcher script. Every decision is
//! one log line on stderr (scripts inherit the dispatcher's, the journal under systemd),
//! naming the action, the NetworkManager connection and what vpn-ns did or why not.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::adopt;
use crate::cli::GlobalArgs;
use crate::commands::adopt::{Adopted, adopt_device, check_adoptable};
use crate::commands::{UsageError, config_dir, runtime};
use crate::config;
use crate::lifecycle::{self, Handback};
use crate::nm::{self, Action, DownDecision, Event, FileDecision, Owner};
use crate::spec::DnsSpec;
use crate::state::{self, Origin};

pub fn hook(g: &GlobalArgs, action: &str) -> anyhow::Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    let Some(ev) = nm::parse_event(action, &env)
        .with_context(|| format!("{action}: refusing NetworkManager's dispatcher environment"))?
    else {
        tracing::debug!("{action:?}: not a VPN action, nothing to do");
        return Ok(ExitCode::SUCCESS);
    };
    let what = format!(
        "{}: NetworkManager connection {:?} ({})",
        ev.action.as_str(),
        ev.id,
        ev.uuid.as_str()
    );
    let dir = config_dir(g)?;
    let Some(stem) = nm::candidates(&ev)
        .into_iter()
        .find(|c| dir.join(format!("{c}.toml")).exists())
    else {
        tracing::info!(
            "{what}: no connection file for it in {} (tried {}): left alone",
            dir.display(),
            nm::candidates(&ev).join(".toml, ") + ".toml"
        );
        return Ok(ExitCode::SUCCESS);
    };
    let path = dir.join(format!("{stem}.toml"));
    // The dispatcher runs this as root for whatever NetworkManager activates: a file
    // someone else can write would let them steer root.
    for p in [path.as_path(), dir.as_path()] {
        refuse_untrusted(p).map_err(|e| anyhow::Error::from(e).context(what.clone()))?;
    }
    let conn = config::load(&dir, &stem).with_context(|| what.clone())?;
    match nm::decide_file(conn.kind.tag(), conn.uuid.as_ref(), &ev) {
        FileDecision::Act => {}
        FileDecision::LeaveAlone(why) => {
            tracing::info!("{what}: {}: {why}: left alone", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        FileDecision::Refuse(why) => {
            return Err(UsageError(format!("{what}: {}: {why}: refused", path.display())).into());
        }
    }
    check_adoptable(&conn).map_err(|e| anyhow::Error::from(e).context(what.clone()))?;
    match ev.action {
        Action::PreUp | Action::Up => up(&conn, &ev, &what),
        Action::Down => down(&conn, &ev, &what),
    }
}

fn refuse_untrusted(p: &Path) -> Result<(), UsageError> {
    let meta = std::fs::metadata(p)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", p.display())))?;
    match config::untrusted_because(meta.uid(), meta.mode()) {
        None => Ok(()),
        Some(why) => Err(UsageError(format!(
            "refusing {} that {why}: the NetworkManager dispatcher runs vpn-ns as root, so it only reads files that root owns and only root can write; fix: chown root: {p}; chmod go-w {p}",
            p.display(),
            p = p.display()
        ))),
    }
}

fn up(conn: &config::Connection, ev: &Event, what: &str) -> anyhow::Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    let Some(dev) = ev.iface.as_ref() else {
        return no_device(conn, ev, what);
    };
    // The device leaves the host even when the pushed DNS is refused: a hostile server
    // must not keep its routes on the host by pushing a bad value.
    let (dns, bad_dns) = match nm::parse_dns(&env) {
        Ok(d) => (d, None),
        Err(e) => (DnsSpec::default(), Some(e)),
    };
    let adopted =
        adopt_device(conn, dev, Some(Owner::of(ev)), dns).with_context(|| what.to_owned())?;
    let ns = &conn.netns;
    match adopted {
        Adopted::Already { ifindex } => tracing::info!(
            "{what}: {dev} (ifindex {ifindex}) is already in namespace {ns}: nothing to do"
        ),
        Adopted::Moved(r) => tracing::info!(
            "{what}: {dev} moved into namespace {ns}: {} address(es), {} route(s), {} DNS server(s){}",
            r.addresses,
            r.routes,
            r.dns_servers,
            if bad_dns.is_some() {
                " (pushed DNS refused)"
            } else {
                ""
            }
        ),
    }
    match bad_dns {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(anyhow::Error::from(e).context(format!(
            "{what}: {dev} is isolated, but the pushed DNS was refused and not used"
        ))),
    }
}

/// vpn-up without VPN_IP_IFACE: NetworkManager no longer sees the device, which is fine
/// only when vpn-pre-up moved it for this very connection.
fn no_device(conn: &config::Connection, ev: &Event, what: &str) -> anyhow::Result<ExitCode> {
    let name = &conn.name;
    let _lock = state::lock(name)?;
    let up = state::load(name)?.is_some_and(|s| s.up && s.origin == Origin::Adopt);
    match adopt::load(name) {
        Some(r) if up && r.nm.as_ref().is_some_and(|o| o.uuid == ev.uuid.as_str()) => {
            tracing::info!(
                "{what}: {} (ifindex {}) is already in namespace {}: nothing to do",
                r.device,
                r.ifindex.map_or_else(|| "?".to_owned(), |i| i.to_string()),
                conn.netns
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(anyhow::Error::from(nm::NmError::Missing {
            variable: "VPN_IP_IFACE",
        })
        .context(format!("{what}: no device to adopt"))),
    }
}

fn down(conn: &config::Connection, ev: &Event, what: &str) -> anyhow::Result<ExitCode> {
    let name = &conn.name;
    let _lock = state::lock(name)?;
    let Some(st) = state::load(name)? else {
        tracing::info!("{what}: connection {name} is not up: nothing to do");
        return Ok(ExitCode::SUCCESS);
    };
    let owner = adopt::load(name).and_then(|r| r.nm);
    if let DownDecision::LeaveAlone(why) = nm::decide_down(st.up, st.origin, owner.as_ref(), ev) {
        tracing::info!("{what}: connection {name}: {why}: left alone");
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime()?;
    let report = rt
        .block_on(lifecycle::down_with(
            &crate::keeper::system(),
            conn,
            Handback::Release,
        ))
        .with_context(|| format!("{what}: connection {name}: down failed"))?;
    match (&report.netns, report.removed_netns) {
        (Some(ns), true) => tracing::info!("{what}: namespace {ns} removed"),
        (Some(ns), false) => tracing::info!("{what}: down, namespace {ns} kept"),
        (None, _) => tracing::info!("{what}: down"),
    }
    Ok(ExitCode::SUCCESS)
}
