//! vpn-ns as a library: the binary (src/main.rs) is a thin front end, and fuzz targets
//! and benchmarks call the parsers directly.

pub mod adopt;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cover;
pub mod dns;
pub mod error;
pub mod exec;
pub mod fault;
pub mod forward;
pub mod keeper;
pub mod lifecycle;
pub mod netlink;
pub mod netns;
pub mod nm;
pub mod openvpn;
pub mod owned;
pub mod plain;
pub mod procs;
pub mod publish;
pub mod spec;
pub mod state;
pub mod unpriv;
pub mod verify;
pub mod wait;
pub mod wireguard;
