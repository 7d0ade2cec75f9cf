//! `/etc/netns/<ns>/`: the files that `ip netns exec` and `vpn-ns exec` bind over
//! `/etc`, so that name lookups inside the namespace go only to the VPN's servers.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::spec::{DnsSpec, NetnsName};

/// glibc reads at most three `nameserver` lines; more would be silently ignored.
const MAX_NAMESERVERS: usize = 3;
/// glibc's limit on the `search` list.
const MAX_SEARCH: usize = 6;

/// The files vpn-ns writes into `/etc/netns/<ns>/`, and the only ones exec binds.
pub const OWN_FILES: [&str; 2] = ["resolv.conf", "nsswitch.conf"];
/// The first line of every file vpn-ns writes there: what tells its own files from a
/// namespace admin's, which are kept.
const HEADER: &str = "# Written by vpn-ns";

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] crate::owned::OwnedError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DnsError + use<> {
    let path = path.to_owned();
    move |source| DnsError::Io { op, path, source }
}

/// Whether the open file starts with the line vpn-ns writes.
pub fn starts_with_header(f: &fs::File) -> bool {
    let mut head = [0u8; HEADER.len()];
    std::os::unix::fs::FileExt::read_at(f, &mut head, 0)
        .is_ok_and(|n| head[..n] == *HEADER.as_bytes())
}

/// Whether `path` holds a file vpn-ns wrote (None: there is no file).
fn written_by_us(path: &Path) -> Result<Option<bool>, DnsError> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // vpn-ns never writes a symlink there: someone else's, kept and not followed.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Some(false)),
        Err(e) => return Err(io_err("cannot read", path)(e)),
    };
    let mut head = [0u8; HEADER.len()];
    let n = io::Read::read(&mut f, &mut head).map_err(io_err("cannot read", path))?;
    Ok(Some(head[..n] == *HEADER.as_bytes()))
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
    let mut s = format!("{HEADER} for connection {conn}; replaced on every up.\n");
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
    let mut out = format!("{HEADER}: host lookups only via files and the VPN's DNS.\n");
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
/// A file vpn-ns did not write (a namespace admin's own) is kept, with a warning.
/// Both directories must be root's alone. Returns whether the directory was created by
/// this call (for rollback).
pub fn write(ns: &NetnsName, conn: &str, dns: &DnsSpec) -> Result<bool, DnsError> {
    crate::owned::ensure_dir(&etc_root(), 0o755)?;
    let dir = etc_dir(ns);
    let created = crate::owned::ensure_dir(&dir, 0o755)?;
    let host_nsswitch = fs::read_to_string("/etc/nsswitch.conf").ok();
    let bodies = [
        resolv_conf(conn, dns),
        nsswitch_conf(host_nsswitch.as_deref()),
    ];
    for (name, body) in OWN_FILES.iter().zip(bodies) {
        let p = dir.join(name);
        if written_by_us(&p)? == Some(false) {
            tracing::warn!(
                "{} was not written by vpn-ns: keeping it; it, not the VPN's DNS settings, \
                 applies inside namespace {ns}",
                p.display()
            );
            continue;
        }
        write_in_place(&p, &body)?;
    }
    Ok(created)
}

fn write_in_place(path: &Path, body: &str) -> Result<(), DnsError> {
    let mut f = crate::owned::open_write(path, 0o644, true)?;
    f.write_all(body.as_bytes())
        .map_err(io_err("cannot write", path))
}

/// Removes what vpn-ns wrote in `/etc/netns/<ns>`, and the directory once empty.
/// Files vpn-ns did not write (a namespace admin's) stay, and so does their directory.
pub fn remove(ns: &NetnsName) -> Result<(), DnsError> {
    let dir = etc_dir(ns);
    if !crate::owned::check_dir_if_exists(&dir)? {
        return Ok(());
    }
    for f in OWN_FILES {
        let p = dir.join(f);
        if written_by_us(&p)? != Some(true) {
            continue;
        }
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
            tracing::info!(
                "{} holds files vpn-ns did not write; left in place",
                dir.display()
            );
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
