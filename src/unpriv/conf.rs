//! A user connection's file: the same format as root's, WireGuard only, and without
//! the keys that need root (they name system namespaces, other accounts, host links or
//! host programs). Files must belong to the user and be closed to others' writes.

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError, Connection, Kind};
use crate::spec::InterfaceName;
use crate::wireguard::{self, WgConfig};

/// A loaded user connection.
pub struct UserConn {
    pub conn: Connection,
    pub wg: WgConfig,
    pub iface: InterfaceName,
}

fn invalid(path: &Path, line: Option<usize>, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        message,
    }
}

/// Reads `path` through one descriptor (no symlink) after checking it belongs to `uid`
/// and nobody else may write it.
fn read_owned(path: &Path, uid: u32, name: &str) -> Result<String, ConfigError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_owned(),
            name: name.to_owned(),
        },
        _ => ConfigError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let md = f.metadata().map_err(io)?;
    if md.uid() != uid || md.mode() & 0o022 != 0 || !md.is_file() {
        return Err(invalid(
            path,
            None,
            format!(
                "must be a regular file owned by you (uid {uid}) and not writable by group or others"
            ),
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

/// Loads connection `name` from the user's config directory `dir`.
pub fn load(dir: &Path, name: &str) -> Result<UserConn, ConfigError> {
    let uid = nix::unistd::getuid().as_raw();
    let path = dir.join(format!("{name}.toml"));
    // The name check first: it keeps `name` from escaping `dir`.
    if name.parse::<crate::spec::NetnsName>().is_err() {
        return Err(ConfigError::BadName {
            path,
            name: name.to_owned(),
        });
    }
    let text = read_owned(&path, uid, name)?;
    if let Some((key, why)) = root_only_key(&text) {
        return Err(invalid(&path, line_of(&text, key), format!("{key}: {why}")));
    }
    let conn = config::parse(name, &path, &text)?;
    if !matches!(conn.kind, Kind::WireGuard(_)) {
        return Err(invalid(
            &path,
            line_of(&text, "type"),
            format!(
                "type = \"{}\" needs root; a user's own connection must be type = \"wireguard\"",
                conn.kind
            ),
        ));
    }
    let wg_path = wg_file(&conn, dir);
    let wg_text = read_owned(&wg_path, uid, name)?;
    let wg = wireguard::parse::parse(&wg_path, &wg_text).map_err(|e| match e {
        wireguard::WgError::Syntax { path, line, msg } => invalid(&path, Some(line), msg),
        wireguard::WgError::Read { path, source } => ConfigError::Io { path, source },
    })?;
    if wg.interface.fwmark.is_some() {
        // SO_MARK on the host-side socket needs CAP_NET_ADMIN in the host namespace.
        return Err(invalid(
            &wg_path,
            line_of(&wg_text, "FwMark"),
            "FwMark needs root (a mark on the host-side socket); remove it for a user connection"
                .to_owned(),
        ));
    }
    let iface = wg_path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<InterfaceName>().ok())
        .ok_or_else(|| {
            invalid(
                &wg_path,
                None,
                "the file name (without .conf) must be a valid interface name".to_owned(),
            )
        })?;
    Ok(UserConn { conn, wg, iface })
}

/// `[wireguard] config`, else `<conn>.conf` beside the connection file.
fn wg_file(conn: &Connection, dir: &Path) -> PathBuf {
    let named = match &conn.kind {
        Kind::WireGuard(w) => w.config.clone(),
        _ => None,
    };
    named.unwrap_or_else(|| dir.join(format!("{}.conf", conn.name)))
}

/// The first key a user connection may not have, with why. Keys are matched in the
/// TOML document itself (not the parsed connection), so that a default and an explicit
/// value can be told apart.
pub fn root_only_key(text: &str) -> Option<(&'static str, &'static str)> {
    let doc: toml::Table = text.parse().ok()?;
    let s = |t: &toml::Table, k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let b = |t: &toml::Table, k: &str| t.get(k).and_then(|v| v.as_bool());
    if let Some(ty) = s(&doc, "type")
        && ty != "wireguard"
    {
        return Some((
            "type",
            "only type = \"wireguard\" works without root (OpenVPN: see docs/unprivileged.md; macvlan and routed need host links)",
        ));
    }
    if s(&doc, "netns-name").is_some_and(|v| v != "name") {
        return Some((
            "netns-name",
            "a user connection's namespace is owned by its keeper and has no name; a named (system) namespace needs root",
        ));
    }
    if b(&doc, "netns-isolate") == Some(false) {
        return Some((
            "netns-isolate",
            "false means the host namespace, which needs root",
        ));
    }
    if b(&doc, "netns-persistent") == Some(true) {
        return Some((
            "netns-persistent",
            "a user namespace lives only as long as its keeper; persistence needs root",
        ));
    }
    if let Some(exec) = doc.get("exec").and_then(|v| v.as_table()) {
        for (key, name) in [("users", "[exec] users"), ("groups", "[exec] groups")] {
            if exec.contains_key(key) {
                return Some((
                    name,
                    "only you can enter your own connection; other accounts need root",
                ));
            }
        }
        if exec.contains_key("hostname") {
            return Some(("[exec] hostname", "not supported for a user connection"));
        }
    }
    if let Some(wg) = doc.get("wireguard").and_then(|v| v.as_table()) {
        if s(wg, "backend").is_some_and(|v| v != "builtin" && v != "auto") {
            return Some((
                "[wireguard] backend",
                "a user connection runs the built-in data plane (\"builtin\" or \"auto\"); the kernel and wireguard-go backends need root",
            ));
        }
        if wg.contains_key("userspace") {
            return Some((
                "[wireguard] userspace",
                "an external WireGuard program needs root",
            ));
        }
    }
    None
}

/// The line where `key` (possibly `[section] key`) is set, for the error message.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let bare = key.rsplit(' ').next().unwrap_or(key);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(bare)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_only_keys_are_named() {
        let cases = [
            ("type = \"openvpn\"\n", Some("type")),
            ("type = \"macvlan\"\n", Some("type")),
            (
                "type = \"wireguard\"\nnetns-name = \"vpn\"\n",
                Some("netns-name"),
            ),
            (
                "type = \"wireguard\"\nnetns-isolate = false\n",
                Some("netns-isolate"),
            ),
            (
                "type = \"wireguard\"\nnetns-persistent = true\n",
                Some("netns-persistent"),
            ),
            (
                "type = \"wireguard\"\n[exec]\nusers = [\"al\"]\n",
                Some("[exec] users"),
            ),
            (
                "type = \"wireguard\"\n[exec]\ngroups = [\"g\"]\n",
                Some("[exec] groups"),
            ),
            (
                "type = \"wireguard\"\n[wireguard]\nbackend = \"kernel\"\n",
                Some("[wireguard] backend"),
            ),
            (
                "type = \"wireguard\"\n[wireguard]\nbackend = \"wireguard-go\"\n",
                Some("[wireguard] backend"),
            ),
            (
                "type = \"wireguard\"\n[wireguard]\nuserspace = \"x\"\n",
                Some("[wireguard] userspace"),
            ),
            ("type = \"wireguard\"\n", None),
            ("type = \"wireguard\"\nnetns-name = \"name\"\n", None),
            (
                "type = \"wireguard\"\n[wireguard]\nbackend = \"builtin\"\n",
                None,
            ),
            (
                "type = \"wireguard\"\n[wireguard]\nbackend = \"auto\"\n",
                None,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(root_only_key(text).map(|(k, _)| k), want, "{text}");
        }
    }

    #[test]
    fn the_offending_line_is_found() {
        let t = "type = \"wireguard\"\n[exec]\n  users = [\"a\"]\n";
        assert_eq!(line_of(t, "[exec] users"), Some(3));
        assert_eq!(line_of(t, "type"), Some(1));
        assert_eq!(line_of(t, "netns-name"), None);
    }
}
