//! `vpn-ns keeper CONN` (hidden): the connection's keeper process, started by up. The
//! event loop lives in `crate::keeper`; this module supplies what it does when the VPN
//! dies: the same down as `vpn-ns down` for the connection's kind.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, Connection};
use crate::spec::NetnsName;
use crate::state::{self, Origin};
use crate::{keeper, lifecycle};

pub fn run(g: &GlobalArgs, name: &str) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    if name.parse::<NetnsName>().is_err() {
        return Err(UsageError(format!("connection name {name:?} is not valid")).into());
    }
    // The lock first: the up that started us holds it until its record is saved, and
    // waiting here, before the configuration is read, keeps this process off the CPU
    // while that up finishes (its time is what users wait for).
    let lock = state::lock(name)?;
    let conn = config::load(&dir, name)?;
    let take = |c: &Connection| take_down(c).map_err(|e| format!("{e:#}"));
    keeper::run(&conn, lock, &take)?;
    Ok(ExitCode::SUCCESS)
}

/// Down for the recorded kind; the keeper holds the lock.
fn take_down(conn: &Connection) -> anyhow::Result<()> {
    let Some(st) = state::load(&conn.name)? else {
        return Ok(());
    };
    let rt = runtime()?;
    match st.origin {
        Origin::Wireguard => rt.block_on(super::wg::native_down(conn)),
        Origin::Macvlan
        | Origin::Routed
        | Origin::OpenvpnHook
        | Origin::Adopt
        | Origin::WgQuickHook => rt
            .block_on(lifecycle::down(&crate::keeper::system(), conn))
            .map(drop)
            .map_err(Into::into),
    }
    .with_context(|| format!("connection {}: down failed", conn.name))
}
