//! vpn-ns: parse the command line, run one command, map its error to an exit code.

use std::process::ExitCode;

use clap::Parser;

use vpn_ns::commands;
use vpn_ns::error::UsageError;
use vpn_ns::{cli, config};

fn main() -> ExitCode {
    // Before anything reads the command line or the environment: in a setuid-root
    // install both are the caller's, and vpn-ns trusts them (SUDO_UID, --config-dir).
    let (ruid, euid) = (nix::unistd::getuid(), nix::unistd::geteuid());
    if let Some(msg) = commands::setuid_refusal(ruid.as_raw(), euid.as_raw()) {
        eprintln!("vpn-ns: {msg}");
        return ExitCode::from(2);
    }
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
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match (g.quiet, g.verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    };
    // `Targets` ("vpn_ns=debug,warn") rather than EnvFilter: it parses without compiling
    // regexes, which showed in the start-up time of every hook and exec.
    let filter = std::env::var("VPN_NS_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            Targets::new()
                .with_target("vpn_ns", level)
                .with_default(LevelFilter::WARN)
        });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        // OpenVPN and systemd capture stderr into logs: colour codes only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(fmt).with(filter).init();
}
