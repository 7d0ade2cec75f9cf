//! vpn-ns: parse the command line, run one command, map its error to an exit code.

use std::process::ExitCode;

use clap::Parser;

use vpn_ns::commands::{self, UsageError};
use vpn_ns::{cli, config};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(&cli.global);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vpn-ns: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for bad usage or configuration, 1 for an operation that failed.
fn exit_code(e: &anyhow::Error) -> u8 {
    let usage = e.chain().any(|c| {
        c.downcast_ref::<config::ConfigError>().is_some()
            || c.downcast_ref::<UsageError>().is_some()
    });
    if usage { 2 } else { 1 }
}

fn init_logging(g: &cli::GlobalArgs) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VPN_NS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vpn_ns={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
