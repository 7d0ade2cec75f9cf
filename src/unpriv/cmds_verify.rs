//! `vpn-ns verify CONN` for a user connection: a forked child enters the keeper's
//! namespaces (the verifying process itself stays where it is) and checks, by name:
//! links (only lo and the tunnel), routes (all via the tunnel or lo), dns (the
//! namespace's resolv.conf is vpn-ns's), nsswitch (hosts: only files and dns).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cmds::{config_dir, keeper_namespaces, peers, runtime_dir};
use super::{conf, state};
use crate::cli::GlobalArgs;
use crate::netlink::Netlink;

/// One line per check: `ok NAME` or `FAIL NAME: why`.
pub fn verify(g: &GlobalArgs, conn: &str) -> anyhow::Result<ExitCode> {
    let timeout = conf::load(&config_dir(g)?, conn)?.conn.netns_timeout;
    let h = keeper_namespaces(conn)?;
    let (rx, tx) = nix::unistd::pipe()?;
    // SAFETY: the CLI is single-threaded here (no runtime, no threads started), so the
    // child may run ordinary code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(rx);
            let report = match h.enter() {
                Ok(()) => checks(),
                Err(e) => format!("FAIL enter: {e}\n"),
            };
            let _ = File::from(tx).write_all(report.as_bytes());
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut report = String::new();
            File::from(rx).read_to_string(&mut report)?;
            let _ = waitpid(child, None).map(|s| matches!(s, WaitStatus::Exited(..)));
            report.push_str(&line("handshake", handshakes(conn, timeout)));
            print!("{report}");
            let failed = report.is_empty() || report.lines().any(|l| !l.starts_with("ok "));
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Every peer with an endpoint has completed a handshake, waiting until `timeout`
/// after the up.
fn handshakes(conn: &str, timeout: Duration) -> Result<(), String> {
    let run = runtime_dir().map_err(|e| format!("{e:#}"))?;
    let st = state::read(&run, conn)
        .map_err(|e| e.to_string())?
        .ok_or("not up")?;
    let deadline = UNIX_EPOCH + Duration::from_secs(st.since) + timeout;
    loop {
        let peers = peers(&run, conn);
        if peers.is_empty() {
            return Err("the keeper does not answer on its UAPI socket".to_owned());
        }
        let waiting: Vec<&str> = peers
            .iter()
            .filter(|p| p.endpoint.is_some() && p.latest_handshake.is_none())
            .map(|p| p.public_key.as_str())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if SystemTime::now() >= deadline {
            return Err(format!("no handshake with {}", waiting.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn line(name: &str, res: Result<(), String>) -> String {
    match res {
        Ok(()) => format!("ok {name}\n"),
        Err(why) => format!("FAIL {name}: {why}\n"),
    }
}

fn checks() -> String {
    let net = net_checks().unwrap_or_else(|e| line("links", Err(format!("{e:#}"))));
    let resolv = File::open("/etc/resolv.conf")
        .map_err(|e| e.to_string())
        .and_then(|f| {
            crate::dns::starts_with_header(&f)
                .then_some(())
                .ok_or_else(|| "/etc/resolv.conf inside is not vpn-ns's".to_owned())
        });
    let nss = std::fs::read_to_string("/etc/nsswitch.conf")
        .map_err(|e| e.to_string())
        .and_then(|t| hosts_only_files_dns(&t));
    format!("{net}{}{}", line("dns", resolv), line("nsswitch", nss))
}

fn net_checks() -> anyhow::Result<String> {
    let rt = crate::netlink::runtime()?;
    rt.block_on(async {
        let nl = Netlink::connect(None)?;
        let links = nl.links().await?;
        let routes = nl.routes().await?;
        let others: Vec<&str> = links
            .iter()
            .filter(|l| l.name != "lo" && l.kind.as_deref().is_some_and(|k| k != "tun"))
            .map(|l| l.name.as_str())
            .collect();
        let tuns = links.iter().filter(|l| l.name != "lo").count();
        let links_res = match (others.is_empty(), tuns) {
            (true, 1) => Ok(()),
            (true, n) => Err(format!("{n} links besides lo (want the tunnel only)")),
            (false, _) => Err(format!("unexpected links: {}", others.join(", "))),
        };
        let tun = links.iter().find(|l| l.name != "lo").map(|l| l.index);
        let lo = links.iter().find(|l| l.name == "lo").map(|l| l.index);
        let stray: Vec<String> = routes
            .iter()
            .filter(|r| r.oif != tun && r.oif != lo)
            .map(|r| format!("{}/{}", r.dest.addr(), r.dest.prefix()))
            .collect();
        let routes_res = match stray.is_empty() {
            true => Ok(()),
            false => Err(format!("routes not via the tunnel: {}", stray.join(", "))),
        };
        anyhow::Ok(format!(
            "{}{}",
            line("links", links_res),
            line("routes", routes_res)
        ))
    })
}

/// The `hosts:` line may name only `files` and `dns`.
pub fn hosts_only_files_dns(nsswitch: &str) -> Result<(), String> {
    let hosts = nsswitch
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("hosts:"))
        .ok_or("no hosts: line")?;
    let bad: Vec<&str> = hosts
        .split_whitespace()
        .filter(|w| *w != "files" && *w != "dns")
        .collect();
    match bad.is_empty() {
        true => Ok(()),
        false => Err(format!("hosts: also uses {}", bad.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nsswitch_hosts_line_is_judged() {
        use super::hosts_only_files_dns as h;
        assert!(h("passwd: files\nhosts: files dns\n").is_ok());
        assert!(h("hosts: files resolve [!UNAVAIL=return] dns").is_err());
        assert!(h("passwd: files\n").is_err());
    }
}
