//! Command-line definitions (clap) and nothing else; man pages and completions are
//! generated from these.
//!
//! Keep this file dependent on clap and std only: src/bin/vpn-ns-gen/ (man pages,
//! completions) and tests/packaging.rs include it with `#[path]`. A positional named
//! `conn` / `CONN` gets connection-name completion in bash.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vpn-ns",
    version,
    about = "Isolate VPN connections in Linux network namespaces",
    long_about = "vpn-ns gives each VPN connection its own network namespace. The VPN client \
keeps its encrypted socket in the host namespace; only the tunnel device moves into the \
connection's namespace, with the pushed addresses, routes and DNS. Applications started \
there reach the network only through that VPN."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory of connection files (<conn>.toml) [default: /etc/vpn-ns]
    #[arg(long, global = true, value_name = "DIR", env = "VPN_NS_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output on stdout
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Entry points for VPN clients' scripts (OpenVPN --up/--down)
    #[command(subcommand)]
    Hook(HookCommand),
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// OpenVPN --up/--down/--route-up/--route-pre-down script; the phase comes from $script_type
    #[command(name = "openvpn")]
    Openvpn {
        /// Connection name (file <config-dir>/<CONN>.toml)
        #[arg(value_name = "CONN")]
        conn: String,
        /// Positional arguments OpenVPN appends (dev, mtu, addresses, init|restart); the
        /// environment is authoritative, these are accepted and ignored
        #[arg(
            value_name = "OPENVPN_ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        openvpn_args: Vec<String>,
    },
}
