//! `vpn-ns publish|unpublish` for a user's own connection: the same specs and rules as
//! root's (`crate::commands::publish`), asked of the user keeper's control socket in
//! the user's runtime directory.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::{UnprivError, conf, state};
use crate::cli::GlobalArgs;
use crate::error::UsageError;
use crate::forward::parse_specs;
use crate::keeper::control::{self, Reply, Request};
use crate::publish::{RelayStatus, Rule};

/// Binding a listener (and, the first time, starting the relay threads) is quick.
const TIMEOUT: Duration = Duration::from_secs(2);

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

/// The relays a running keeper reports (empty when it does not answer).
pub fn relays(conn: &str) -> Vec<RelayStatus> {
    let Ok(run) = state::runtime_dir() else {
        return Vec::new();
    };
    match control::query_at(
        &state::control_path(&run, conn),
        conn,
        &Request::Status,
        TIMEOUT,
    ) {
        Ok(Reply::Status(st)) => st.published,
        _ => Vec::new(),
    }
}

/// Checks the connection and every spec before anything is asked of the keeper.
fn prepare(
    g: &GlobalArgs,
    conn: &str,
    specs: &[String],
    host_access: bool,
) -> anyhow::Result<Vec<Rule>> {
    conf::load(&super::cmds::config_dir(g)?, conn)?;
    parse_specs(specs, host_access).map_err(|e| UsageError(e.0).into())
}

fn ask(conn: &str, req: &Request) -> anyhow::Result<Reply> {
    let run = super::cmds::runtime_dir()?;
    let live = state::read(&run, conn)?.is_some_and(|st| super::cmds::live_keeper(&st).is_some());
    if !live {
        return Err(UnprivError::NotUp(conn.to_owned()).into());
    }
    control::query_at(&state::control_path(&run, conn), conn, req, TIMEOUT)
        .with_context(|| format!("connection {conn}"))
}
