//! Command-line definitions (clap) and nothing else; man pages and completions are
//! generated from these.
//!
//! Keep this file dependent on clap and std only: gen/ (man pages,
//! completions) and gen/tests/packaging.rs include it with `#[path]`. A positional named
//! `conn` / `CONN` gets connection-name completion in bash.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Entry points for VPN clients' scripts (OpenVPN --up/--down, wg-quick PostUp/PreDown)
    #[command(subcommand)]
    Hook(HookCommand),
    /// Bring a connection up (OpenVPN: started with the hook flags; WireGuard: natively)
    /// and wait until the namespace is ready (within netns-timeout)
    Up {
        /// Connection name (file <config-dir>/<CONN>.toml)
        #[arg(value_name = "CONN")]
        conn: String,
        /// Stay in the foreground with the VPN program as a child (for systemd units)
        #[arg(long)]
        foreground: bool,
    },
    /// Take a connection down: stop its VPN program and wait for the teardown
    Down {
        /// Connection name
        #[arg(value_name = "CONN")]
        conn: String,
        /// Also remove a persistent namespace (refused while processes run inside)
        #[arg(long)]
        purge: bool,
        /// With --purge: terminate the processes still inside the namespace
        #[arg(long, requires = "purge")]
        kill: bool,
    },
    /// Validate connection files and the host (tun, namespaces, WireGuard, OpenVPN);
    /// exit 2 when something is wrong
    Check {
        /// Only this connection (default: all in the config directory)
        #[arg(value_name = "CONN")]
        conn: Option<String>,
    },
    /// Move an already-configured device into CONN's namespace, keeping its addresses
    /// and routes (type = "device" connections)
    Adopt {
        /// Connection name
        #[arg(value_name = "CONN")]
        conn: String,
        /// The device in the host namespace (e.g. tun0, NetworkManager's VPN_IP_IFACE)
        #[arg(value_name = "DEVICE")]
        device: String,
    },
    /// Run a command inside a connection's namespace, as the invoking user
    Exec {
        /// Connection name (file <config-dir>/<CONN>.toml)
        #[arg(value_name = "CONN")]
        conn: String,
        /// Run as USER instead of the invoking user (root only)
        #[arg(short = 'u', long, value_name = "USER")]
        user: Option<String>,
        /// Wait (up to netns-timeout) for the connection to come up
        #[arg(long)]
        wait: bool,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// What is up: namespace, device, addresses, routes, DNS, processes inside, traffic
    #[command(long_about = "What is up: namespace, device, addresses, routes, DNS, \
processes inside, traffic counters, up since. A connection recorded as up whose namespace, \
VPN process or device is gone is shown as stale, with the reason; `vpn-ns down CONN` cleans \
it up. --json prints a stable, documented schema.")]
    Status {
        /// Only this connection (default: every connection with a state record)
        #[arg(value_name = "CONN")]
        conn: Option<String>,
    },
    /// Configured connections and recorded ones, up or down, one line each
    List,
    /// Internal: the built-in WireGuard data plane of one interface, started and
    /// supervised by `vpn-ns up` (configuration on stdin, "ready" on stdout)
    #[command(name = "wg-builtin", hide = true)]
    WgBuiltin {
        /// Create the tun device inside this namespace (default: the current one)
        #[arg(long, value_name = "NS")]
        netns: Option<String>,
        /// The interface name
        #[arg(value_name = "IFACE")]
        iface: String,
    },
    /// Prove a live namespace is sealed (exit 1 naming the failed checks)
    #[command(
        long_about = "Prove a live namespace is sealed. Checks, by name: state (the \
connection is up and isolated, its VPN process runs), links (only lo and the tunnel), routes \
(every route goes out the tunnel or stays on lo), ipv6 (tunnelled, or no way out), dns (every \
nameserver in /etc/netns/<ns>/resolv.conf is routed via the tunnel, none on loopback), \
nsswitch (hosts: uses only files and dns), handshake (WireGuard: every peer with an endpoint \
completed a handshake, waiting up to netns-timeout after the up). Exit 0 when all pass, 1 naming \
the failed ones."
    )]
    Verify {
        /// Connection name
        #[arg(value_name = "CONN")]
        conn: String,
    },
    /// Relay a port across the namespace boundary while the connection is up
    #[command(
        long_about = "Relay a port across the namespace boundary while the connection \
is up, through its keeper: a service inside the namespace becomes reachable on the host \
(default), or with --host-access a service on the host becomes reachable from inside. \
SPEC is [ADDR:]PORT[:TARGETPORT][/udp]: listen on ADDR (default 127.0.0.1) port PORT, \
connect to 127.0.0.1:TARGETPORT (default PORT) on the other side; IPv6 as [::1]:PORT. \
Lasts until unpublish, down or the keeper's end; permanent entries go in the connection \
file ([[publish]], [[host-access]]; see docs/publish.md)."
    )]
    Publish {
        /// Connection name
        #[arg(value_name = "CONN")]
        conn: String,
        /// [ADDR:]PORT[:TARGETPORT][/udp]
        #[arg(value_name = "SPEC", required = true)]
        specs: Vec<String>,
        /// Listen inside the namespace and connect to the host (a host service for apps inside)
        #[arg(long)]
        host_access: bool,
    },
    /// Stop relaying a port published with `publish` (or from the connection file)
    Unpublish {
        /// Connection name
        #[arg(value_name = "CONN")]
        conn: String,
        /// [ADDR:]PORT[/udp], as given to publish (a TARGETPORT is ignored)
        #[arg(value_name = "SPEC", required = true)]
        specs: Vec<String>,
        /// The relay listens inside the namespace (published with --host-access)
        #[arg(long)]
        host_access: bool,
    },
    /// WireGuard's `wg` tool on a user's own connection (default: `wg show IFACE`)
    #[command(
        long_about = "Runs WireGuard's `wg` tool (wireguard-tools) on a user's own \
connection, whose UAPI socket lives in $XDG_RUNTIME_DIR/vpn-ns rather than in \
/run/wireguard where `wg` looks: `vpn-ns wg home` prints `wg show IFACE`; other \
arguments are passed to wg as they are (`vpn-ns wg home show home latest-handshakes`, \
`vpn-ns wg home showconf home`). Root's connections use `wg` directly (see \
docs/unprivileged.md)."
    )]
    Wg {
        /// Connection name
        #[arg(value_name = "CONN")]
        conn: String,
        /// Arguments for wg (default: show IFACE)
        #[arg(
            value_name = "WG_ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<String>,
    },
    /// The connection's keeper (started by up, ended by down; not for direct use)
    #[command(hide = true)]
    Keeper {
        #[arg(value_name = "CONN")]
        conn: String,
    },
    /// The keeper of a user's own connection (unprivileged mode), started by `up`.
    #[command(name = "user-keeper", hide = true)]
    UserKeeper {
        #[arg(value_name = "CONN")]
        conn: String,
    },
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
    /// NetworkManager dispatcher script (hooks/networkmanager/90-vpn-ns runs it): the
    /// connection comes from CONNECTION_UUID / CONNECTION_ID, the device from VPN_IP_IFACE
    #[command(
        name = "networkmanager",
        long_about = "NetworkManager dispatcher script (hooks/networkmanager/90-vpn-ns runs it). \
Acts on vpn-pre-up / vpn-up (adopt the VPN's device, VPN_IP_IFACE, into the namespace of the \
connection file <CONNECTION_UUID>.toml or <CONNECTION_ID>.toml, with DNS from \
VPN_IP4_NAMESERVERS, VPN_IP6_NAMESERVERS, VPN_IP4_DOMAINS, VPN_IP6_DOMAINS) and vpn-down \
(take down only what that NetworkManager connection owns); every other action is ignored."
    )]
    Networkmanager {
        /// The interface NetworkManager passes first (VPN_IP_IFACE is authoritative)
        #[arg(value_name = "IFACE")]
        iface: Option<String>,
        /// The dispatcher action (vpn-pre-up, vpn-up, vpn-down, ...)
        #[arg(value_name = "ACTION")]
        action: Option<String>,
    },
    /// wg-quick PostUp (`up`) / PreDown (`down`) hook
    #[command(name = "wg-quick")]
    WgQuick {
        /// `up` from PostUp, `down` from PreDown
        #[arg(value_enum)]
        action: WgAction,
        /// Connection name (file <config-dir>/<CONN>.toml)
        #[arg(value_name = "CONN")]
        conn: String,
        /// The WireGuard interface (wg-quick's %i)
        #[arg(value_name = "IFACE")]
        iface: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WgAction {
    Up,
    Down,
}
