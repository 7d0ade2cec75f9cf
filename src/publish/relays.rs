//! The keeper's relay task: the connection file's entries, started when the keeper
//! starts (the namespace is ready by then) and ended with it, plus what `vpn-ns
//! publish` adds while it runs. The engine's threads start only once something is
//! published.

use std::fs::File;

use super::side::Side;
use super::{Direction, Endpoint, Engine, Place, Proto, PublishError, RelayStatus, Rule, listener};
use crate::config::Connection;

pub struct Relays {
    name: String,
    ns: Option<File>,
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
            engine: None,
            failed: Vec::new(),
        };
        for rule in &conn.forwards {
            // Up checked every address just before; losing one since is reported, and
            // the others still run.
            if let Err(e) = r.publish(*rule) {
                tracing::error!("{}: {e}", conn.name);
                r.failed.push((*rule, e.to_string()));
            }
        }
        r
    }

    fn engine(&mut self) -> Result<&mut Engine, PublishError> {
        if self.engine.is_none() {
            let ns_name = format!("namespace of {}", self.name);
            let inside = match &self.ns {
                Some(f) => Place::Netns(&ns_name, f),
                None => Place::Here("the host"),
            };
            self.engine = Some(Engine::start(Place::Here("the host"), inside)?);
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
