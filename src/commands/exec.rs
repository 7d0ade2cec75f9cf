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
    let code = exec::run(&Request {
        conn: &conn,
        user,
        wait,
        cmd,
    })?;
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn everything_after_the_double_dash_is_the_command() {
        let cli = Cli::try_parse_from([
            "vpn-ns",
            "exec",
            "-u",
            "al",
            "--wait",
            "work",
            "--",
            "firefox",
            "-no-remote",
            "-P",
            "vpn",
        ])
        .unwrap();
        let Command::Exec {
            conn,
            user,
            wait,
            cmd,
        } = cli.command
        else {
            panic!("not exec: {:?}", cli.command);
        };
        assert_eq!(conn, "work");
        assert_eq!(user.as_deref(), Some("al"));
        assert!(wait);
        assert_eq!(cmd, ["firefox", "-no-remote", "-P", "vpn"]);
        assert!(Cli::try_parse_from(["vpn-ns", "exec", "work"]).is_err());
        assert!(Cli::try_parse_from(["vpn-ns", "exec", "work", "--"]).is_err());
    }
}
