//! `vpn-ns verify <CONN>`: gathers a snapshot of the connection's namespace, runs the
//! checks of `crate::verify`, prints them, and exits 1 naming the failed ones.

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::probe::read_ns;
use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config;
use crate::dns;
use crate::netns;
use crate::spec::NetnsName;
use crate::state;
use crate::state::Origin;
use crate::verify::{CheckResult, Live, Recorded, Snapshot, run_checks};
use crate::wireguard::peers;
use std::time::Duration;

#[derive(Serialize)]
struct VerifyJson<'a> {
    connection: &'a str,
    sealed: bool,
    checks: &'a [CheckResult],
}

/// Raised after the results are printed: exit 1, naming what failed.
#[derive(Debug, thiserror::Error)]
#[error("connection {conn}: namespace is NOT sealed; failed check(s): {failed}")]
struct NotSealed {
    conn: String,
    failed: String,
}

pub fn verify(g: &GlobalArgs, conn: &str) -> anyhow::Result<ExitCode> {
    if conn.parse::<NetnsName>().is_err() {
        return Err(UsageError(format!(
            "connection name {conn:?} is not valid: use 1 to 64 characters of A-Z a-z 0-9 _ . -"
        ))
        .into());
    }
    let snapshot = gather(conn)?;
    let mut checks = run_checks(&snapshot);
    if checks
        .iter()
        .all(|c| c.name != crate::verify::STATE || c.ok)
        && let Some(c) = handshake(g, conn)?
    {
        checks.push(c);
    }
    // macvlan/routed: the namespace is sealed to its one device, which is no tunnel.
    if let Some(note) = state::load(conn)?
        .as_ref()
        .and_then(crate::plain::uplink_note)
        && let Some(c) = checks
            .iter_mut()
            .find(|c| c.name == crate::verify::STATE && c.ok)
    {
        c.detail = format!("{}; {note}", c.detail);
        if let Some(exp) = lease_expiry(conn) {
            c.detail = format!("{}; {exp}", c.detail);
        }
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    if g.json {
        let out = VerifyJson {
            connection: conn,
            sealed: failed.is_empty(),
            checks: &checks,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for c in &checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            println!("{mark} {:<9} {}", c.name, c.detail);
        }
        if failed.is_empty() {
            println!("{conn}: sealed");
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(NotSealed {
            conn: conn.to_owned(),
            failed: failed.join(", "),
        }
        .into())
    }
}

fn gather(conn: &str) -> anyhow::Result<Snapshot> {
    let Some(st) = state::load(conn)? else {
        return Ok(Snapshot::default());
    };
    let recorded = Recorded {
        up: st.up,
        isolated: st.isolated,
        netns: st.netns.to_string(),
        device: st.device.clone(),
        vpn_alive: st.vpn_alive(),
    };
    let live = if st.isolated && netns::exists(&st.netns) {
        let ns = netns::open(&st.netns)?;
        let view = runtime()?
            .block_on(read_ns(Some(&ns)))
            .with_context(|| format!("cannot read namespace {}", st.netns))?;
        let etc = dns::etc_dir(&st.netns);
        Some(Live {
            links: view.links,
            addresses: view.addresses,
            routes: view.routes,
            resolv_conf: read_optional(&etc.join("resolv.conf"))?,
            nsswitch: read_optional(&etc.join("nsswitch.conf"))?,
        })
    } else {
        None
    };
    Ok(Snapshot {
        recorded: Some(recorded),
        live,
    })
}

/// "DHCP lease expires ..." for a macvlan connection with a finite lease (the keeper
/// records each renewal).
fn lease_expiry(conn: &str) -> Option<String> {
    let rec = crate::plain::load_record(conn).ok()??;
    let lease = rec.lease.as_ref()?;
    let (_, _, l) = lease.times()?;
    let at = super::status::rfc3339(rec.lease_obtained? + l);
    Some(match rec.lease_expired {
        true => format!("DHCP lease EXPIRED at {at}: address removed"),
        false => format!("DHCP lease expires {at}"),
    })
}

fn read_optional(p: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// How often verify reads a WireGuard device's peers while waiting for a handshake:
/// there is no event for a completed handshake, so this polls, bounded by
/// netns-timeout counted from the up.
const HANDSHAKE_POLL: Duration = Duration::from_millis(100);

/// The `handshake` check for WireGuard connections (None for other kinds): waits until
/// every peer with an endpoint has completed a handshake, at most until netns-timeout
/// after the up, then judges.
fn handshake(g: &GlobalArgs, conn: &str) -> anyhow::Result<Option<CheckResult>> {
    let Some(st) = state::load(conn)? else {
        return Ok(None);
    };
    let Some(dev) = st
        .device
        .as_deref()
        .filter(|_| st.up && matches!(st.origin, Origin::Wireguard | Origin::WgQuickHook))
    else {
        return Ok(None);
    };
    let timeout = config::load(&config_dir(g)?, conn)
        .map(|c| c.netns_timeout)
        .unwrap_or(Duration::from_millis(config::DEFAULT_TIMEOUT_MS));
    let ns = match st.isolated {
        true => Some(netns::open(&st.netns)?),
        false => None,
    };
    let deadline = st.since + timeout.as_secs();
    loop {
        let peers =
            peers::read(dev, ns.as_ref(), Duration::from_secs(2)).map_err(|e| e.to_string());
        let now = state::now();
        let again = peers.as_ref().is_ok_and(|p| peers::waiting(p)) && now < deadline;
        if !again {
            let up_for = Duration::from_secs(now.saturating_sub(st.since));
            let c = peers::handshake_check(
                peers.as_deref().map_err(Clone::clone),
                now,
                up_for,
                timeout,
            );
            return Ok(Some(c));
        }
        std::thread::sleep(HANDSHAKE_POLL);
    }
}
