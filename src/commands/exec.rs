//! `vpn-ns exec <CONN> [-u USER] [--wait] -- CMD...`

use std::process::ExitCode;

use crate::cli::GlobalArgs;
use crate::commands::config_dir;
use crate::config;
use crate::exec::{self, Request};

pub fn exec(
    g: &GlobalArgs,
    conn_name: &str,
    user: Option<&str>,
    wait: bool,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, conn_name)?;
    let failed = exec::run(&Request {
        conn: &conn,
        user,
        wait,
        cmd,
    })?;
    eprintln!("vpn-ns: {}", failed.message);
    Ok(ExitCode::from(failed.code))
}
