//! The keeper's relay task: the connection file's entries, started when the keeper
//! starts (the namespace is ready by then) and ended with it, plus what `vpn-ns
//! publish` adds while it runs. The engine's threads start only once something is
//! published.

use std::fs::File;
use std::os::fd::OwnedFd;

use super::side::Side;
use super::{Direction, Endpoint, Engine, Place, Proto, PublishError, RelayStatus, Rule, listener};
use crate::config::Connection;

pub struct Relays {
    name: String,
    ns: Option<File>,
    /// A user connection's keeper: the host-side helper's channel ([`super::remote`]);
    /// the keeper itself is in the connection's namespace.
    host_helper: Option<OwnedFd>,
    engine: Option<Engine>,
    /// File entries the keeper could not listen for, with why.
    failed: Vec<(Rule, String)>,
}

impl Relays {
    /// `ns`: the connection's namespace, `None` when it has none of its own.
    pub fn start(conn: &Connection, ns: Option<&File>) -> Self {
        let mut r = Self {
            name: conn.name.clone(),
            ns: ns.and_then(|f| f.try_clone().ok()),
            host_helper: None,
            engine: None,
            failed: Vec::new(),
        };
        r.open_all(conn);
        r
    }

    /// For a user connection's keeper, which runs inside the connection's namespace
    /// and gets host sockets from its helper over `host_helper`.
    pub fn start_user(conn: &Connection, host_helper: OwnedFd) -> Self {
        let mut r = Self {
            name: conn.name.clone(),
            ns: None,
            host_helper: Some(host_helper),
            engine: None,
            failed: Vec::new(),
        };
        r.open_all(conn);
        r
    }

    fn open_all(&mut self, conn: &Connection) {
        let r = self;
        for rule in &conn.forwards {
            // Up checked every address just before; losing one since is reported, and
            // the others still run.
            if let Err(e) = r.publish(*rule) {
                tracing::error!("{}: {e}", conn.name);
                r.failed.push((*rule, e.to_string()));
            }
        }
    }

    fn engine(&mut self) -> Result<&mut Engine, PublishError> {
        if self.engine.is_none() {
            let ns_name = format!("namespace of {}", self.name);
            let (host, inside) = match (&self.host_helper, &self.ns) {
                (Some(h), _) => (Place::Remote("the host", h), Place::Here(&ns_name)),
                (None, Some(f)) => (Place::Here("the host"), Place::Netns(&ns_name, f)),
                (None, None) => (Place::Here("the host"), Place::Here("the host")),
            };
            self.engine = Some(Engine::start(host, inside)?);
        }
        Ok(self.engine.as_mut().expect("started above"))
    }

    pub fn publish(&mut self, rule: Rule) -> Result<(), PublishError> {
        self.engine()?.add(rule)?;
        self.failed.retain(|(r, _)| !same_listener(r, &rule));
        Ok(())
    }

    pub fn unpublish(
        &mut self,
        direction: Direction,
        proto: Proto,
        listen: Endpoint,
    ) -> Result<Rule, PublishError> {
        let not = PublishError::NotPublished {
            direction,
            proto,
            listen,
        };
        let engine = self.engine.as_mut().ok_or(not)?;
        engine.remove(direction, proto, listen)
    }

    pub fn status(&self) -> Vec<RelayStatus> {
        let mut v = self.engine.as_ref().map(Engine::status).unwrap_or_default();
        v.extend(self.failed.iter().map(|(rule, e)| RelayStatus {
            rule: *rule,
            active: 0,
            total: 0,
            error: Some(e.clone()),
        }));
        v
    }
}

fn same_listener(a: &Rule, b: &Rule) -> bool {
    a.direction == b.direction && a.proto == b.proto && a.listen == b.listen
}

/// For up, before it starts the keeper: binds (and releases) every listen address of
/// `conn`, so that a taken address fails the up, naming the entry, while it can still
/// be rolled back. The keeper binds them again a moment later.
pub fn preflight(conn: &Connection, ns: Option<&File>) -> Result<(), PublishError> {
    if conn.forwards.is_empty() {
        return Ok(());
    }
    let host = Side::here("the host");
    let inside = match ns {
        Some(f) => Side::netns("the namespace", f).map_err(PublishError::Start)?,
        None => Side::here("the host"),
    };
    // All held at once, so that entries that exclude each other (0.0.0.0:80 and
    // 127.0.0.1:80) are caught too.
    let mut held = Vec::with_capacity(conn.forwards.len());
    for rule in &conn.forwards {
        let side = match rule.direction {
            Direction::Publish => &host,
            Direction::HostAccess => &inside,
        };
        held.push(listener(side, rule.listen.0, rule.proto).map_err(|source| {
            PublishError::Listen {
                rule: *rule,
                source,
            }
        })?);
    }
    Ok(())
}
