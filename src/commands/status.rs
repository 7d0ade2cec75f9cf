//! `vpn-ns status [CONN]` and `vpn-ns list`: the state records joined with the
//! configuration and with what the kernel says now. The JSON schema is documented in
//! docs/status-json.md; field names there are a stable interface.
//!
//! Cost matters (hundreds of connections): see `probe` for how the namespaces are read;
//! /proc is scanned at most once for all of them.

use std::collections::HashMap;
use std::fs;
use std::process::ExitCode;

use super::probe::{self, NsKey, NsView, ProcReader, Target};
use super::status_model::{
    AddrOut, ConnStatus, DnsOut, KeeperOut, PeerOut, ProcOut, Report, RouteOut, StateKind,
};
use super::status_view::{render_list, render_status};
use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir};
use crate::config::{self, ConfigError, Connection};
use crate::dns;
use crate::keeper::KeeperError;
use crate::keeper::control::{self, Reply, Request};
use crate::netns;
use crate::procs;
use crate::spec::NetnsName;
use crate::state::{self, State};

/// How long `status` waits for a keeper's answer.
const KEEPER_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
use crate::verify::parse_resolv_conf;

/// The recorded keeper, asked over its control socket when it runs.
fn keeper_of(s: &State) -> Option<KeeperOut> {
    let k = s.keeper?;
    let running = k.alive();
    let mut out = KeeperOut {
        pid: k.pid,
        running,
        rss_kib: running.then(|| procs::rss_kib(k.pid)).flatten(),
        watching: Vec::new(),
        lease_expires: None,
        lease_expired: false,
        published: Vec::new(),
    };
    // Only root can connect to the socket; a keeper just started by up may not have
    // bound it yet (up does not wait for it): then the record says what it can.
    if running && nix::unistd::geteuid().is_root() {
        match control::query(&s.connection, &Request::Status, KEEPER_TIMEOUT) {
            Ok(Reply::Status(st)) => {
                out.watching = st.watching;
                out.lease_expires = st.lease_expires.map(rfc3339);
                out.lease_expired = st.lease_expired;
                out.published = st.published;
            }
            Ok(Reply::Error { message }) => tracing::warn!("{}: keeper: {message}", s.connection),
            Ok(other) => tracing::warn!("{}: keeper: unexpected reply {other:?}", s.connection),
            Err(KeeperError::Query { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    if out.lease_expires.is_none()
        && let Some(rec) = crate::plain::load_record(&s.connection).ok().flatten()
        && let (Some(lease), Some(obtained)) = (&rec.lease, rec.lease_obtained)
        && let Some((_, _, l)) = lease.times()
    {
        out.lease_expires = Some(rfc3339(obtained + l));
        out.lease_expired = rec.lease_expired;
    }
    Some(out)
}

/// One connection to report: its file (if any) and its state record (if any).
struct Entry {
    name: String,
    conn: Option<Connection>,
    state: Option<State>,
}

pub fn status(g: &GlobalArgs, conn: Option<&str>) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let entries = match conn {
        Some(name) => vec![one_entry(&dir, name)?],
        None => state::load_all()?
            .into_iter()
            .map(|s| Entry {
                name: s.connection.clone(),
                conn: optional_config(&dir, &s.connection),
                state: Some(s),
            })
            .collect(),
    };
    let report = gather(entries)?;
    if g.json && conn.is_none() {
        // Users' own connections, read-only (docs/status-json.md).
        #[derive(serde::Serialize)]
        struct WithUsers<'a> {
            #[serde(flatten)]
            report: &'a Report,
            user_connections: Vec<crate::unpriv::root_view::UserConnection>,
        }
        let all = WithUsers {
            report: &report,
            user_connections: crate::unpriv::root_view::collect(),
        };
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_status(&report, state::now()));
        if conn.is_none() {
            print!("{}", crate::unpriv::root_view::render());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let mut by_name: HashMap<String, Entry> = HashMap::new();
    for c in config::load_all(&dir)? {
        by_name.insert(
            c.name.clone(),
            Entry {
                name: c.name.clone(),
                conn: Some(c),
                state: None,
            },
        );
    }
    for s in state::load_all()? {
        // A record without a file is still listed: it is up (or stale) on this host.
        let name = s.connection.clone();
        by_name
            .entry(name.clone())
            .or_insert_with(|| Entry {
                name,
                conn: None,
                state: None,
            })
            .state = Some(s);
    }
    let mut entries: Vec<Entry> = by_name.into_values().collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let report = gather(entries)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_list(&report, state::now()));
    }
    Ok(ExitCode::SUCCESS)
}

fn one_entry(dir: &std::path::Path, name: &str) -> anyhow::Result<Entry> {
    if name.parse::<NetnsName>().is_err() {
        return Err(UsageError(format!(
            "connection name {name:?} is not valid: use 1 to 64 characters of A-Z a-z 0-9 _ . -"
        ))
        .into());
    }
    let state = state::load(name)?;
    let conn = match config::load(dir, name) {
        Ok(c) => Some(c),
        // Neither a file nor a record: there is no such connection.
        Err(e) if state.is_none() => return Err(e.into()),
        Err(e) => {
            warn_config(&e);
            None
        }
    };
    Ok(Entry {
        name: name.to_owned(),
        conn,
        state,
    })
}

/// The connection file of a recorded connection, if it still loads (a record outlives
/// an edited or removed file; status still reports it).
fn optional_config(dir: &std::path::Path, name: &str) -> Option<Connection> {
    config::load(dir, name).map_err(|e| warn_config(&e)).ok()
}

fn warn_config(e: &ConfigError) {
    if !matches!(e, ConfigError::NotFound { .. }) {
        tracing::warn!("{e}");
    }
}

fn gather(entries: Vec<Entry>) -> anyhow::Result<Report> {
    // Entering a namespace needs CAP_SYS_ADMIN: without root, say so once and report
    // what can be known without entering (records, namespace files, processes).
    let can_enter = nix::unistd::geteuid().is_root();
    if !can_enter
        && entries
            .iter()
            .any(|e| e.state.as_ref().is_some_and(|s| s.isolated))
    {
        tracing::warn!(
            "not root: namespaces are not entered, so devices, addresses, routes and counters are not shown"
        );
    }
    let targets: Vec<Target> = entries
        .iter()
        .map(|e| match &e.state {
            None => Target::None,
            Some(s) if !s.isolated => Target::Host,
            Some(s) if !can_enter => Target::Identity(s.netns.clone()),
            Some(s) => Target::Netns(s.netns.clone()),
        })
        .collect();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let probes = probe::read_all(&targets, &names)?;
    let keys: Vec<NsKey> = probes.iter().filter_map(|p| p.0).collect();
    let pids = match (keys.as_slice(), single_netns(&targets)) {
        ([], _) => HashMap::new(),
        // A single namespace: its own scan is the same one pass over /proc.
        ([key], Some(ns)) => netns::open(ns)
            .map(|f| HashMap::from([(*key, netns::pids_in(&f))]))
            .unwrap_or_default(),
        _ => probe::pids_by_netns(),
    };
    let mut procs = ProcReader::default();
    let connections = entries
        .into_iter()
        .zip(probes)
        .map(|(e, (key, view))| {
            let ns_pids = key.and_then(|k| pids.get(&k)).cloned().unwrap_or_default();
            let processes = ns_pids.iter().filter_map(|p| procs.read(*p)).collect();
            let peers = wireguard_peers(&e, can_enter);
            let mut c = build(e, view.as_ref(), processes);
            c.wireguard_peers = peers;
            c
        })
        .collect();
    Ok(Report { connections })
}

fn single_netns(targets: &[Target]) -> Option<&NetnsName> {
    let mut it = targets.iter().filter_map(|t| match t {
        Target::Netns(n) | Target::Identity(n) => Some(n),
        _ => None,
    });
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// Facts from the live system that decide the state.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub netns_exists: bool,
    /// `None`: no pid recorded.
    pub vpn_alive: Option<bool>,
    /// `None`: unknown.
    pub device_present: Option<bool>,
}

/// up / down / kept / stale, with the reason for stale.
pub fn classify(state: Option<&State>, live: Liveness) -> (StateKind, Option<String>) {
    let Some(s) = state else {
        return (StateKind::Down, None);
    };
    // The intent record of an up that died half way (see `State::creating`).
    if s.creating {
        return (
            StateKind::Stale,
            Some("an up did not finish (vpn-ns was interrupted half way)".to_owned()),
        );
    }
    if !s.up {
        return (StateKind::Kept, None);
    }
    let reason = if s.isolated && !live.netns_exists {
        Some(format!("namespace {} is gone", s.netns))
    } else if live.vpn_alive == Some(false) {
        Some(format!(
            "the VPN process (pid {}) is gone without running its down hook",
            s.vpn_pid.unwrap_or(0)
        ))
    } else if live.device_present == Some(false) {
        let dev = s.device.as_deref().unwrap_or("(none recorded)");
        Some(match s.isolated {
            true => format!("device {dev} is no longer in namespace {}", s.netns),
            false => format!("device {dev} is gone"),
        })
    } else {
        None
    };
    match reason {
        Some(r) => (StateKind::Stale, Some(r)),
        None => (StateKind::Up, None),
    }
}

fn build(e: Entry, view: Option<&NsView>, processes: Vec<ProcOut>) -> ConnStatus {
    let s = e.state.as_ref();
    let isolated = s
        .map(|s| s.isolated)
        .or(e.conn.as_ref().map(|c| c.netns_isolate))
        .unwrap_or(true);
    let persistent = s
        .map(|s| s.persistent)
        .or(e.conn.as_ref().map(|c| c.netns_persistent))
        .unwrap_or(false);
    let netns_name = s
        .map(|s| s.netns.clone())
        .or(e.conn.as_ref().map(|c| c.netns.clone()));
    let netns_name = netns_name.filter(|_| isolated);
    let netns_exists = netns_name.as_ref().is_some_and(netns::exists);
    let device = s.and_then(|s| s.device.clone());
    let link = view.and_then(|v| {
        device
            .as_deref()
            .and_then(|d| v.links.iter().find(|l| l.name == d))
    });
    let device_present = view.map(|_| link.is_some());
    let vpn_pid = s.and_then(|s| s.vpn_pid);
    let (kind, stale_reason) = classify(
        s,
        Liveness {
            netns_exists,
            vpn_alive: s.and_then(State::vpn_alive),
            device_present,
        },
    );
    let names: HashMap<u32, &str> = view
        .map(|v| v.links.iter().map(|l| (l.index, l.name.as_str())).collect())
        .unwrap_or_default();
    let lo = names.iter().find(|(_, n)| **n == "lo").map(|(i, _)| *i);
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    if let (Some(v), Some(l)) = (view, link) {
        addresses = v
            .addresses
            .iter()
            .filter(|a| a.index == l.index)
            .map(|a| AddrOut {
                local: a.local.to_string(),
                peer: a.peer,
            })
            .collect();
        // Inside its own namespace every route is the connection's (except lo's);
        // in the host namespace only the device's are.
        routes = v
            .routes
            .iter()
            .filter(|r| match isolated {
                true => r.oif.is_none() || r.oif != lo,
                false => r.oif == Some(l.index),
            })
            .map(|r| RouteOut {
                dest: r.dest.to_string(),
                gateway: r.gateway,
                metric: r.metric,
                dev: r.oif.and_then(|i| names.get(&i)).map(|n| (*n).to_owned()),
            })
            .collect();
    }
    ConnStatus {
        kind: e.conn.as_ref().map(|c| c.kind.tag()),
        uuid: e
            .conn
            .as_ref()
            .and_then(|c| c.uuid.as_ref())
            .map(|u| u.as_str().to_owned()),
        state: kind,
        stale_reason,
        dns: s.map(|s| dns_of(s, netns_exists)).unwrap_or_default(),
        netns: netns_name.map(String::from),
        netns_exists,
        device,
        device_present,
        mtu: link.and_then(|l| l.mtu),
        addresses,
        routes,
        processes,
        rx_bytes: link.map(|l| l.rx_bytes),
        tx_bytes: link.map(|l| l.tx_bytes),
        up_since: s.filter(|s| s.up).map(|s| rfc3339(s.since)),
        since: s.filter(|s| s.up).map(|s| s.since),
        vpn_pid,
        persistent,
        isolated,
        wireguard_peers: None,
        keeper: s.filter(|s| s.up).and_then(keeper_of),
        vpn_gone: s.and_then(|s| s.vpn_gone.clone()),
        name: e.name,
    }
}

/// The peers of an up WireGuard connection: its UAPI socket, or (kernel device) a
/// generic-netlink socket in its namespace, which needs root.
fn wireguard_peers(e: &Entry, can_enter: bool) -> Option<Vec<PeerOut>> {
    let st = e.state.as_ref().filter(|s| {
        s.up && matches!(
            s.origin,
            state::Origin::Wireguard | state::Origin::WgQuickHook
        )
    })?;
    let dev = st.device.as_deref()?;
    let ns = match st.isolated && can_enter {
        true => Some(netns::open(&st.netns).ok()?),
        false => None,
    };
    let peers = match crate::wireguard::peers::read(dev, ns.as_ref(), PEERS_TIMEOUT) {
        Ok(p) => p,
        Err(err) => {
            tracing::debug!("{}: cannot read the peers of {dev}: {err}", e.name);
            return None;
        }
    };
    let now = state::now();
    Some(
        peers
            .into_iter()
            .map(|p| PeerOut {
                latest_handshake: p.latest_handshake.map(rfc3339),
                latest_handshake_age: p.latest_handshake.map(|t| now.saturating_sub(t)),
                public_key: p.public_key,
                endpoint: p.endpoint,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                allowed_ips: p.allowed_ips,
                persistent_keepalive: p.persistent_keepalive,
            })
            .collect(),
    )
}

/// How long a device's UAPI socket gets to answer `get=1`.
const PEERS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The namespace's resolv.conf as written (what processes inside actually use); the
/// record's DNS when there is no file (non-isolated connections keep the host's DNS).
fn dns_of(s: &State, netns_exists: bool) -> DnsOut {
    let file = dns::etc_dir(&s.netns).join("resolv.conf");
    match fs::read_to_string(&file) {
        Ok(text) if s.isolated && netns_exists => {
            let r = parse_resolv_conf(&text);
            DnsOut {
                servers: r
                    .servers
                    .iter()
                    .map(|x| match x {
                        Ok(ip) => ip.to_string(),
                        Err(t) => t.clone(),
                    })
                    .collect(),
                search: r.search,
            }
        }
        _ => DnsOut {
            servers: s.dns.servers.iter().map(ToString::to_string).collect(),
            search: s.dns.search.iter().map(|d| d.as_str().to_owned()).collect(),
        },
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-11-29T13:50:04Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
