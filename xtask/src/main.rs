//! `cargo xtask TASK`: developer tasks that are not part of the product.
//!
//! - `licences`: every package in the workspace's dependency graph must be licensed
//!   compatibly with vpn-ns's own licence (docs/licensing.md); exit 1 naming each one
//!   that is not.
//! - `copyright`: print the Debian copyright file of the binary package.
//! - `deps`: every crate in the product's `[dependencies]` is used in src/.
//! - `layers`: no module names a module above its layer (docs/architecture.md).

mod copyright;
mod deps;
mod layers;
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
        ["layers"] => layers::run(),
        ["deps"] => deps::run(),
        _ => {
            eprintln!("usage: cargo xtask licences | copyright | layers | deps");
            ExitCode::from(2)
        }
    }
}
