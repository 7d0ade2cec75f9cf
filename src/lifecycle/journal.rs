//! The journal every up keeps, whatever the kind: each change is recorded as the step
//! that undoes it, and a failed up replays the journal backwards. Like netavark's
//! teardown, the replay goes on past a step that fails and reports every failure.
//!
//! Ownership records (the intent record, a kind's own record) come first in the
//! journal, so they are undone last, and only when everything undone before them
//! succeeded: a record left behind keeps a known owner for what is left. A namespace
//! whose device could not be handed back is not deleted (that would destroy the VPN's
//! device); it stays, recorded, for down.

use std::fmt;

use super::LifecycleError;
use super::edges::{At, Edges};
use crate::netlink::Link;
use crate::procs::ProcId;
use crate::spec::{Address, NetnsName, Route};
use crate::state::State;

/// One change made by up, as what undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// The record written before the namespace exists: `prior` is put back, or the
    /// record removed.
    Intent {
        prior: Option<State>,
    },
    /// The uplink kinds' `<conn>.plain` record.
    PlainRecord,
    Netns(NetnsName),
    /// A device moved into the namespace: handed back to the host, where its VPN
    /// process expects it.
    Moved(String),
    /// A link created inside the namespace.
    InsideLink(String),
    /// A link created in the host namespace.
    HostLink(String),
    HostAddress(Link, Address),
    HostRoute(Link, Route),
    Forwarding,
    Nat,
    Dns(NetnsName),
    Keeper(ProcId),
    /// A process serving the device (wireguard-go, the built-in data plane): stopped.
    Process(ProcId, String),
    /// A kernel WireGuard link, inside the namespace or (`host`) in the host's.
    KernelLink {
        iface: String,
        host: bool,
    },
}

impl Undo {
    fn owns(&self) -> bool {
        matches!(self, Undo::Intent { .. } | Undo::PlainRecord)
    }
}

/// The changes one up made so far, for one connection.
#[derive(Debug)]
pub struct Journal {
    conn: String,
    netns: NetnsName,
    steps: Vec<Undo>,
}

impl Journal {
    pub fn new(conn: &str, netns: &NetnsName) -> Self {
        Journal {
            conn: conn.to_owned(),
            netns: netns.clone(),
            steps: Vec::new(),
        }
    }

    pub fn push(&mut self, u: Undo) {
        self.steps.push(u);
    }

    pub fn steps(&self) -> &[Undo] {
        &self.steps
    }
}

/// Every failure of a teardown or rollback, in the order they happened.
#[derive(Debug, Default)]
pub struct ErrorList(pub Vec<LifecycleError>);

impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                write!(f, ": {s}")?;
                src = s.source();
            }
        }
        Ok(())
    }
}

impl ErrorList {
    /// Keeps the error of `r`, if any, and goes on.
    pub fn keep<T, E: Into<LifecycleError>>(&mut self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e.into());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(v)` when nothing failed; the one error alone, or all of them.
    pub fn finish<T>(mut self, v: T) -> Result<T, LifecycleError> {
        match self.0.len() {
            0 => Ok(v),
            1 => Err(self.0.remove(0)),
            _ => Err(LifecycleError::Errors(self)),
        }
    }
}

/// Undoes `j` backwards. Returns what could not be undone (also logged).
pub async fn rollback<E: Edges>(e: &E, j: Journal) -> ErrorList {
    let mut errs = ErrorList::default();
    let mut stuck = false;
    for step in j.steps.iter().rev() {
        if step.owns() && !errs.is_empty() {
            tracing::error!(
                "rollback: {} keeps its record: not everything could be undone",
                j.conn
            );
            continue;
        }
        let before = errs.0.len();
        if let Undo::Netns(n) = step
            && stuck
        {
            // Deleting it would destroy a device that is not ours to destroy.
            tracing::error!("rollback: namespace {n} kept: its device could not be handed back");
            continue;
        }
        undo(e, &j, step, &mut errs).await;
        stuck |= matches!(step, Undo::Moved(_)) && errs.0.len() > before;
        for err in &errs.0[before..] {
            tracing::error!("rollback: {err}");
        }
    }
    errs
}

async fn undo<E: Edges>(e: &E, j: &Journal, step: &Undo, errs: &mut ErrorList) {
    let conn = j.conn.as_str();
    let ns = &j.netns;
    match step {
        Undo::Keeper(k) => e.discard(conn, *k),
        Undo::Process(id, iface) => {
            errs.keep(e.stop_device(*id, iface).map_err(LifecycleError::WireGuard));
        }
        Undo::KernelLink { iface, host } => {
            let at = if *host { At::Host } else { At::Ns(ns) };
            errs.keep(
                e.delete_kernel(at, iface)
                    .await
                    .map_err(LifecycleError::WireGuard),
            );
        }
        Undo::Dns(n) => {
            errs.keep(e.remove_dns(n).map_err(|source| LifecycleError::Dns {
                ns: n.clone(),
                source,
            }));
        }
        Undo::Nat => {
            errs.keep(
                e.delete_nat(conn)
                    .map_err(|source| LifecycleError::NatDelete { source }),
            );
        }
        Undo::Forwarding => {
            errs.keep(e.release_forwarding(conn).map_err(LifecycleError::Uplink));
        }
        Undo::HostRoute(l, r) => {
            errs.keep(super::down::ignore_gone(e.del_route(At::Host, l, r).await));
        }
        Undo::HostAddress(l, a) => {
            errs.keep(super::down::ignore_gone(
                e.del_address(At::Host, l, a).await,
            ));
        }
        Undo::HostLink(name) => {
            errs.keep(e.delete_link(At::Host, name).await);
        }
        Undo::InsideLink(name) => {
            errs.keep(e.delete_link(At::Ns(ns), name).await);
        }
        Undo::Moved(dev) => {
            if let Some(Some(l)) = errs.keep(e.link(At::Ns(ns), dev).await) {
                errs.keep(
                    e.move_link(At::Ns(ns), &l, At::Host, None)
                        .await
                        .map_err(|source| LifecycleError::Configure {
                            device: dev.clone(),
                            ns: ns.to_string(),
                            source,
                        }),
                );
            }
        }
        Undo::Netns(n) => {
            if errs
                .keep(e.delete(n).map_err(|source| LifecycleError::DeleteNetns {
                    ns: n.clone(),
                    source,
                }))
                .is_some()
            {
                tracing::info!("rolled back: namespace {n} removed");
            }
        }
        Undo::PlainRecord => {
            errs.keep(e.remove_plain(conn));
        }
        Undo::Intent { prior } => {
            errs.keep(match prior {
                Some(p) => e.save_state(p),
                None => e.remove_state(conn),
            });
        }
    }
}
