//! `vpn-ns publish CONN SPEC...` and `vpn-ns unpublish CONN SPEC...`: ad hoc relays,
//! asked of the connection's running keeper over its control socket. They last as
//! long as that keeper; entries meant to stay belong in the connection file.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir};
use crate::config::{self, Connection};
use crate::forward::parse_specs;
use crate::keeper::control::{self, Reply, Request};
use crate::keeper::socket_path;
use crate::publish::Rule;

/// Binding a listener (and, the first time, starting the relay threads) is quick.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long up waits for its keeper to open the connection file's relays.
const WAIT_LISTENING: Duration = Duration::from_secs(3);

pub fn publish(
    g: &GlobalArgs,
    conn: &str,
    specs: &[String],
    host_access: bool,
) -> anyhow::Result<ExitCode> {
    let rules = prepare(g, conn, specs, host_access)?;
    control::publish_rules(conn, rules, |req| ask(conn, req))?;
    Ok(ExitCode::SUCCESS)
}

pub fn unpublish(
    g: &GlobalArgs,
    conn: &str,
    specs: &[String],
    host_access: bool,
) -> anyhow::Result<ExitCode> {
    let rules = prepare(g, conn, specs, host_access)?;
    control::unpublish_rules(conn, rules, |req| ask(conn, req))?;
    Ok(ExitCode::SUCCESS)
}

/// Checks the connection and every spec before anything is asked of the keeper.
fn prepare(
    g: &GlobalArgs,
    conn: &str,
    specs: &[String],
    host_access: bool,
) -> anyhow::Result<Vec<Rule>> {
    config::load(&config_dir(g)?, conn)?;
    parse_specs(specs, host_access).map_err(|e| UsageError(e.0).into())
}

/// After up: waits (briefly) until the keeper answers on its control socket and has
/// opened the file's relays, and warns about any it could not. Up returns only once the
/// connection is attended: a `status` right after it shows what the keeper watches.
pub fn wait_listening(conn: &Connection) {
    let end = Instant::now() + WAIT_LISTENING;
    while Instant::now() < end {
        if let Ok(Reply::Status(st)) = control::query(&conn.name, &Request::Status, TIMEOUT)
            && st.published.len() >= conn.forwards.len()
        {
            for r in st.published {
                if let Some(e) = r.error {
                    tracing::warn!("{}: {}: not listening: {e}", conn.name, r.rule);
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(
        "{}: the keeper has not answered yet; see `vpn-ns status {}`",
        conn.name,
        conn.name
    );
}

fn ask(conn: &str, req: &Request) -> anyhow::Result<Reply> {
    if !socket_path(conn).exists() {
        bail!(
            "connection {conn} has no running keeper ({} is missing): it is not up, or its keeper is gone (`vpn-ns up {conn}` starts a new one)",
            socket_path(conn).display()
        );
    }
    control::query(conn, req, TIMEOUT).with_context(|| format!("connection {conn}"))
}
