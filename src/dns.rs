//! `/etc/netns/<ns>/`: the files that `ip netns exec` and `vpn-ns exec` bind over
//! `/etc`, so that name lookups inside the namespace go only to the VPN's servers.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::spec::{DnsSpec, NetnsName};

/// glibc reads at most three `nameserver` lines; more would be silently ignored.
const MAX_NAMESERVERS: usize = 3;
/// glibc's limit on the `search` list.
const MAX_SEARCH: usize = 6;

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct DnsError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DnsError + use<> {
    let path = path.to_owned();
    move |source| DnsError { op, path, source }
}

pub fn etc_root() -> PathBuf {
    PathBuf::from("/etc/netns")
}

pub fn etc_dir(ns: &NetnsName) -> PathBuf {
    etc_root().join(ns.as_str())
}

/// resolv.conf for the namespace. With no servers it lists none, so glibc falls back to
/// 127.0.0.1, where nothing listens inside the namespace: lookups fail closed.
pub fn resolv_conf(conn: &str, dns: &DnsSpec) -> String {
    let mut s = format!("# Written by vpn-ns for connection {conn}; replaced on every up.\n");
    if dns.servers.is_empty() {
        s.push_str("# The VPN pushed no DNS server and [dns] sets none: lookups fail closed.\n");
    }
    for srv in dns.servers.iter().take(MAX_NAMESERVERS) {
        s.push_str(&format!("nameserver {srv}\n"));
    }
    if !dns.search.is_empty() {
        let list: Vec<&str> = dns
            .search
            .iter()
            .take(MAX_SEARCH)
            .map(|d| d.as_str())
            .collect();
        s.push_str(&format!("search {}\n", list.join(" ")));
    }
    s
}

/// nsswitch.conf for the namespace: the host's file with its `hosts:` line replaced by
/// `files dns`, so nss-resolve (systemd-resolved), mdns and myhostname, which answer
/// from outside the tunnel, are never asked. Other databases (passwd, group...) keep
/// the host's settings.
pub fn nsswitch_conf(host: Option<&str>) -> String {
    let mut out =
        String::from("# Written by vpn-ns: host lookups only via files and the VPN's DNS.\n");
    let mut saw_hosts = false;
    for line in host
        .unwrap_or("passwd: files\ngroup: files\nshadow: files\n")
        .lines()
    {
        let key = line.split(':').next().unwrap_or("").trim();
        if key == "hosts" && line.contains(':') && !line.trim_start().starts_with('#') {
            if !saw_hosts {
                out.push_str("hosts: files dns\n");
                saw_hosts = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !saw_hosts {
        out.push_str("hosts: files dns\n");
    }
    out
}

/// Writes both files. Existing files are rewritten in place rather than replaced, because
/// processes in a persistent namespace have the old inodes bind-mounted over `/etc`.
/// Returns whether the directory was created by this call (for rollback).
pub fn write(ns: &NetnsName, conn: &str, dns: &DnsSpec) -> Result<bool, DnsError> {
    let root = etc_root();
    match fs::DirBuilder::new().mode(0o755).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("cannot create", &root)(e)),
    }
    let dir = etc_dir(ns);
    let created = match fs::DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io_err("cannot create", &dir)(e)),
    };
    let host_nsswitch = fs::read_to_string("/etc/nsswitch.conf").ok();
    write_in_place(&dir.join("resolv.conf"), &resolv_conf(conn, dns))?;
    write_in_place(
        &dir.join("nsswitch.conf"),
        &nsswitch_conf(host_nsswitch.as_deref()),
    )?;
    Ok(created)
}

fn write_in_place(path: &Path, body: &str) -> Result<(), DnsError> {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err("cannot write", path))?;
    f.write_all(body.as_bytes())
        .map_err(io_err("cannot write", path))
}

/// Removes `/etc/netns/<ns>` and what vpn-ns put in it.
pub fn remove(ns: &NetnsName) -> Result<(), DnsError> {
    let dir = etc_dir(ns);
    for f in ["resolv.conf", "nsswitch.conf"] {
        let p = dir.join(f);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot remove", &p)(e)),
        }
    }
    match fs::remove_dir(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // The admin put other files there: leave them and the directory.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTEMPTY as i32) => {
            tracing::warn!("{} is not empty; leaving it in place", dir.display());
            Ok(())
        }
        Err(e) => Err(io_err("cannot remove", &dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_servers_and_search() {
        let dns = DnsSpec {
            servers: vec!["203.0.113.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            search: vec![
                "vpn.example".parse().unwrap(),
                "lab.example".parse().unwrap(),
            ],
        };
        let s = resolv_conf("work", &dns);
        assert!(s.contains("nameserver 203.0.113.53\nnameserver fd00::53\n"));
        assert!(s.contains("search vpn.example lab.example\n"));
    }

    #[test]
    fn resolv_conf_caps_servers_and_fails_closed_without_any() {
        let dns = DnsSpec {
            servers: (1..=5)
                .map(|i| format!("192.0.2.{i}").parse().unwrap())
                .collect(),
            search: vec![],
        };
        assert_eq!(resolv_conf("w", &dns).matches("nameserver").count(), 3);
        let empty = resolv_conf("w", &DnsSpec::default());
        assert!(!empty.lines().any(|l| l.starts_with("nameserver")));
    }

    #[test]
    fn nsswitch_replaces_only_hosts() {
        let host = "passwd: files systemd\n# hosts: comment\nhosts: files mdns4_minimal [NOTFOUND=return] resolve dns myhostname\ngroup: files\n";
        let s = nsswitch_conf(Some(host));
        assert!(s.contains("passwd: files systemd\n"));
        assert!(s.contains("group: files\n"));
        assert!(s.contains("hosts: files dns\n"));
        assert!(!s.contains("resolve"));
        assert!(!s.contains("mdns"));
        let none = nsswitch_conf(None);
        assert!(none.contains("hosts: files dns\n"));
        assert!(none.contains("passwd: files\n"));
    }
}
