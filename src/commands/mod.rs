//! One module per subcommand; this module resolves what they share.

mod adopt;
mod check;
mod down;
mod exec;
mod hook;
mod keeper;
mod nm;
mod plain;
mod probe;
mod publish;
mod status;
mod status_model;
mod status_view;
mod up;
mod verify;
pub mod wg;
mod wg_inplace;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{Cli, Command, GlobalArgs, HookCommand};
use crate::config;

pub use crate::error::UsageError;
pub use crate::netlink::runtime;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A normal user (real uid != 0) manages their own connections (docs/unprivileged.md).
    if crate::unpriv::is_user()
        && let Some(res) = crate::unpriv::dispatch(&cli)
    {
        return res;
    }
    if let Some(who) = elevated_by() {
        config::require_root_owned(who);
    }
    match &cli.command {
        Command::Hook(HookCommand::Openvpn { conn, .. }) => hook::openvpn(&cli.global, conn),
        Command::Hook(HookCommand::Networkmanager { action, .. }) => {
            nm::hook(&cli.global, action.as_deref().unwrap_or(""))
        }
        Command::Up { conn, foreground } => up::run(&cli.global, conn, *foreground),
        Command::Down { conn, purge, kill } => down::run(&cli.global, conn, *purge, *kill),
        Command::Check { conn } => check::run(&cli.global, conn.as_deref()),
        Command::Adopt { conn, device } => adopt::run(&cli.global, conn, device),
        Command::Hook(HookCommand::WgQuick {
            action,
            conn,
            iface,
        }) => wg::hook(&cli.global, *action, conn, iface),
        Command::Exec {
            conn,
            user,
            wait,
            cmd,
        } => exec::exec(&cli.global, conn, user.as_deref(), *wait, cmd),
        Command::Status { conn } => status::status(&cli.global, conn.as_deref()),
        Command::List => status::list(&cli.global),
        Command::Verify { conn } => verify::verify(&cli.global, conn),
        Command::WgBuiltin { netns, iface } => wg_inplace::serve(netns.as_deref(), iface),
        Command::Keeper { conn } => keeper::run(&cli.global, conn),
        Command::Publish {
            conn,
            specs,
            host_access,
        } => publish::publish(&cli.global, conn, specs, *host_access),
        Command::Unpublish {
            conn,
            specs,
            host_access,
        } => publish::unpublish(&cli.global, conn, specs, *host_access),
        Command::Wg { conn, .. } => Err(UsageError(format!(
            "`vpn-ns wg` is for a user's own connection; as root, run `wg show` (userspace \
             devices) or `ip netns exec NS wg show` (kernel devices) for {conn}"
        ))
        .into()),
        Command::UserKeeper { .. } => Err(UsageError(
            "user-keeper runs a normal user's own connection; root uses `keeper`".to_owned(),
        )
        .into()),
    }
}

/// The configuration directory, refusing an override from a non-root user elevated by
/// sudo/pkexec/doas: their config would run as root.
/// The refusal for a setuid-root install (real uid not root, effective uid root): such
/// a caller controls the environment and arguments vpn-ns trusts as root's.
pub fn setuid_refusal(ruid: u32, euid: u32) -> Option<String> {
    (ruid != 0 && euid == 0).then(|| {
        format!(
            "refusing to run setuid-root (real uid {ruid}): vpn-ns must not be installed \
             setuid; run it through sudo, pkexec or doas"
        )
    })
}

pub fn config_dir(g: &GlobalArgs) -> Result<PathBuf, UsageError> {
    match &g.config_dir {
        None => Ok(PathBuf::from(config::DEFAULT_CONFIG_DIR)),
        Some(dir) => {
            if let Some(who) = elevated_by() {
                return Err(UsageError(format!(
                    "--config-dir/VPN_NS_CONFIG_DIR is refused when run through {who} by a non-root user; connection files must live in {}",
                    config::DEFAULT_CONFIG_DIR
                )));
            }
            Ok(dir.clone())
        }
    }
}

/// Which elevation tool a non-root user came through, if any.
fn elevated_by() -> Option<&'static str> {
    let non_root = |v: &str| {
        std::env::var(v)
            .ok()
            .filter(|u| !u.is_empty() && u != "0" && u != "root")
    };
    if non_root("SUDO_UID").is_some() {
        Some("sudo")
    } else if non_root("PKEXEC_UID").is_some() {
        Some("pkexec")
    } else if non_root("DOAS_USER").is_some() {
        Some("doas")
    } else {
        None
    }
}

/// A single-threaded runtime: everything vpn-ns awaits is a few netlink round trips.
#[cfg(test)]
mod setuid_tests {
    use super::setuid_refusal;

    #[test]
    fn only_a_setuid_root_caller_is_refused() {
        assert!(setuid_refusal(0, 0).is_none());
        assert!(setuid_refusal(1000, 1000).is_none());
        let msg = setuid_refusal(1000, 0).unwrap();
        assert!(
            msg.contains("setuid") && msg.contains("sudo, pkexec or doas"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }
}
