//! Reading the live system for `status`/`list`/`verify`: namespaces over rtnetlink and
//! processes from /proc, cheaply enough for hundreds of connections.
//!
//! Many namespaces are read with one netlink socket each, opened by a single dedicated
//! thread that enters the namespaces one after the other (instead of a thread per
//! namespace) and then ends; the dumps then run concurrently on the runtime.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use futures::StreamExt;
use nix::sched::CloneFlags;

use super::status_model::ProcOut;
use crate::netlink::{self, AddrInfo, Link, Netlink, NetlinkError, RouteInfo};
use crate::netns;
use crate::spec::NetnsName;

/// Namespaces whose sockets are open at once: bounds the fds held (one socket each)
/// well under the usual 1024 limit, whatever the number of connections.
const CHUNK: usize = 256;
/// Dumps in flight at once on the runtime.
const CONCURRENT_READS: usize = 32;

/// Links, addresses and main-table routes of one namespace.
#[derive(Debug, Default)]
pub struct NsView {
    pub links: Vec<Link>,
    pub addresses: Vec<AddrInfo>,
    pub routes: Vec<RouteInfo>,
}

/// Where a connection's device lives.
pub enum Target {
    /// Nothing live to read.
    None,
    /// `netns-isolate = false`: the host namespace.
    Host,
    Netns(NetnsName),
    /// A namespace that cannot be entered (not root): only its identity is read.
    Identity(NetnsName),
}

/// (device, inode) of a namespace: the identity /proc/PID/ns/net also reports.
pub type NsKey = (u64, u64);

/// What was read for one target: the namespace identity and its contents (`None` when
/// the namespace is gone or could not be read; a warning says why).
pub type Probe = (Option<NsKey>, Option<NsView>);

/// Reads a namespace (`None`: the caller's) over one netlink connection.
pub async fn read_ns(ns: Option<&File>) -> Result<NsView, NetlinkError> {
    read(Netlink::connect(ns)?).await
}

async fn read(nl: Netlink) -> Result<NsView, NetlinkError> {
    // One after the other: the kernel runs one dump per socket at a time (EBUSY).
    Ok(NsView {
        links: nl.links().await?,
        addresses: nl.addresses().await?,
        routes: nl.routes().await?,
    })
}

pub fn ns_key(f: &File) -> Option<NsKey> {
    f.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// A socket opened inside a namespace, or why not.
type Opened = Result<(NsKey, OwnedFd), String>;

/// Opens a netlink socket inside each namespace on one dedicated thread, which ends
/// when done (so no thread stays in a foreign namespace).
fn sockets_in(names: Vec<NetnsName>) -> Vec<Opened> {
    let open_one = |n: &NetnsName| -> Opened {
        let f = netns::open(n).map_err(|e| e.to_string())?;
        let key = ns_key(&f).ok_or_else(|| format!("cannot stat namespace {n}"))?;
        nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot enter namespace {n}: {e}"))?;
        let fd =
            netlink::open_socket().map_err(|e| format!("cannot open a netlink socket: {e}"))?;
        Ok((key, fd))
    };
    std::thread::spawn(move || names.iter().map(open_one).collect())
        .join()
        .unwrap_or_else(|_| Vec::new())
}

/// How one target is read.
enum Source {
    Skip,
    Host,
    Socket(OwnedFd),
    Failed(String),
}

/// Reads every target; `conns` names them for warnings. Must run outside a runtime.
pub fn read_all(targets: &[Target], conns: &[&str]) -> anyhow::Result<Vec<Probe>> {
    let rt = super::runtime()?;
    let mut out = Vec::with_capacity(targets.len());
    for (chunk, names) in targets.chunks(CHUNK).zip(conns.chunks(CHUNK)) {
        // Decided once per target, so sockets pair with targets even if a namespace
        // vanishes meanwhile (then its socket reports the error).
        let present: Vec<Option<&NetnsName>> = chunk
            .iter()
            .map(|t| match t {
                Target::Netns(n) if netns::exists(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut sockets =
            sockets_in(present.iter().flatten().map(|n| (*n).clone()).collect()).into_iter();
        let jobs: Vec<(Option<NsKey>, Source, &str)> = chunk
            .iter()
            .zip(names)
            .zip(&present)
            .map(|((t, conn), here)| match (t, here) {
                (Target::None, _) | (Target::Netns(_), None) => (None, Source::Skip, *conn),
                (Target::Identity(n), _) => (identity(n), Source::Skip, *conn),
                (Target::Host, _) => (None, Source::Host, *conn),
                (Target::Netns(_), Some(_)) => match sockets.next() {
                    Some(Ok((key, fd))) => (Some(key), Source::Socket(fd), *conn),
                    Some(Err(e)) => (None, Source::Failed(e), *conn),
                    None => (
                        None,
                        Source::Failed("namespace thread failed".into()),
                        *conn,
                    ),
                },
            })
            .collect();
        let probes: Vec<Probe> = rt.block_on(
            futures::stream::iter(jobs)
                .map(|(key, source, conn)| async move {
                    let nl = match source {
                        Source::Skip => return (key, None),
                        Source::Socket(fd) => Ok(Netlink::from_socket(fd)),
                        Source::Host => Netlink::connect(None).map_err(|e| e.to_string()),
                        Source::Failed(e) => Err(e),
                    };
                    let view = match nl {
                        Ok(nl) => read(nl).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    let view = view
                        .map_err(|e| tracing::warn!("{conn}: cannot read its namespace: {e}"))
                        .ok();
                    (key, view)
                })
                .buffered(CONCURRENT_READS)
                .collect(),
        );
        out.extend(probes);
    }
    Ok(out)
}

/// A namespace's identity from its name, without entering it.
fn identity(n: &NetnsName) -> Option<NsKey> {
    fs::metadata(netns::path(n))
        .ok()
        .filter(|_| netns::exists(n))
        .map(|m| (m.dev(), m.ino()))
}

/// Every process grouped by network namespace, in one pass over /proc.
pub fn pids_by_netns() -> HashMap<NsKey, Vec<u32>> {
    let mut map: HashMap<NsKey, Vec<u32>> = HashMap::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return map;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(m) = fs::metadata(format!("/proc/{pid}/ns/net")) {
            map.entry((m.dev(), m.ino())).or_default().push(pid);
        }
    }
    for v in map.values_mut() {
        v.sort_unstable();
    }
    map
}

/// Reads /proc/PID details, caching user names (an NSS lookup each otherwise).
#[derive(Default)]
pub struct ProcReader {
    users: HashMap<u32, String>,
}

impl ProcReader {
    pub fn read(&mut self, pid: u32) -> Option<ProcOut> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid = effective_uid(&status)?;
        let user = self
            .users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or_else(|| uid.to_string(), |u| u.name)
            })
            .clone();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command = match command_line(&cmdline) {
            Some(c) => c,
            None => {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                format!("[{}]", comm.trim_end())
            }
        };
        Some(ProcOut { pid, user, command })
    }
}

/// The effective uid from /proc/PID/status (`Uid: real effective saved fs`), as ps shows.
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// /proc/PID/cmdline (NUL-separated) as one line; `None` when empty (zombies, kernel
/// threads).
pub fn command_line(raw: &[u8]) -> Option<String> {
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_proc_scan_groups_by_namespace() {
        let own = File::open("/proc/self/ns/net").expect("own namespace");
        let key = ns_key(&own).expect("stat");
        let map = pids_by_netns();
        let me = std::process::id();
        assert!(map[&key].contains(&me), "{me} not under {key:?}");
        assert!(netns::pids_in(&own).contains(&me));
    }
}
