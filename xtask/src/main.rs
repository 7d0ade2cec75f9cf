//! `cargo xtask TASK`: developer tasks that are not part of the product.
//!
//! - `licences`: every package in the workspace's dependency graph must be licensed
//!   compatibly with vpn-ns's own licence (docs/licensing.md); exit 1 naming each one
//!   that is not.
//! - `copyright`: print the Debian copyright file of the binary package.

mod copyright;
mod licences;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["licences"] => licences::run(),
        ["copyright"] => copyright::run(),
        _ => {
            eprintln!("usage: cargo xtask licences | copyright");
            ExitCode::from(2)
        }
    }
}
