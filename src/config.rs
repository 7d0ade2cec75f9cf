//! Connection files: `<dir>/<conn>.toml` -> a validated [`Connection`].
//!
//! Errors must point a user at the exact spot to fix, in one line: file, line, key.
//! Values are validated inside deserialization (types whose `Deserialize` goes
//! through `FromStr`), so toml still knows the bad value's span; a spanned parse of
//! the document (`DeTable`) maps that span back to the dotted key it belongs to.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::spec::{DomainName, InvalidValue, NetnsName};

mod locate;
use locate::Document;
mod trust;
pub use trust::{problem as untrusted_because, require_root_owned};

pub const DEFAULT_CONFIG_DIR: &str = "/etc/vpn-ns";

pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// Validating inside `Deserialize`, not afterwards, is what lets toml attach the bad
/// value's span to the error. The `&str` completes "expected ..." for non-strings.
struct FromStrVisitor<T>(&'static str, PhantomData<T>);

impl<T: FromStr<Err: fmt::Display>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        s.parse().map_err(E::custom)
    }
}

macro_rules! deserialize_via_from_str {
    ($($ty:ty => $expected:expr,)*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(FromStrVisitor($expected, PhantomData))
            }
        }
    )*};
}

/// Closed sets of keywords: one table gives parsing, printing and the error text.
macro_rules! keywords {
    ($ty:ident, $what:literal, $expected:expr, { $($variant:ident = $kw:literal),+ }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $kw),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                match s {
                    $($kw => Ok(Self::$variant),)+
                    _ => Err(InvalidValue(format!("unknown {} {s:?} (expected {})", $what, $expected))),
                }
            }
        }
        deserialize_via_from_str! { $ty => $expected, }
    };
}

// After the macros, which they use.
mod values;
pub use values::{Hostname, Uuid, WgBackend};
use values::{Ip, MinPrefix, NetnsChoice, TimeoutMs, abs_path, accounts, ip_list, opt_abs_path};
mod plain;
pub use plain::{MacvlanMode, MacvlanSection, RoutedSection};
mod publish;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    OpenVpn,
    WireGuard,
    Device,
    Macvlan,
    Routed,
}

const TYPES: &str = "\"openvpn\", \"wireguard\", \"device\", \"macvlan\" or \"routed\"";

keywords!(ConnectionType, "connection type", TYPES, {
    OpenVpn = "openvpn", WireGuard = "wireguard", Device = "device",
    Macvlan = "macvlan", Routed = "routed"
});

#[derive(Debug, Clone)]
pub struct Connection {
    /// The file stem; also names /run/vpn-ns/<name>.lock.
    pub name: String,
    pub path: PathBuf,
    /// The type and the section that belongs to it: a section of another type cannot
    /// be represented.
    pub kind: Kind,
    pub uuid: Option<Uuid>,
    pub netns_isolate: bool,
    pub netns_persistent: bool,
    pub netns: NetnsName,
    pub netns_timeout: Duration,
    pub default_route: bool,
    /// `netns-isolate = false` only: pushed routes shorter than this prefix are refused
    /// (they would take over much of the host's table).
    pub host_routes_min_prefix: u8,
    pub dns: DnsOverride,
    pub exec: Option<ExecPolicy>,
    /// `[[publish]]` then `[[host-access]]` entries, in file order.
    pub forwards: Vec<crate::forward::Rule>,
}

/// A connection's type with its own section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `None`: hook mode only (the user starts OpenVPN); `vpn-ns up` needs the section.
    OpenVpn(Option<OpenVpnSection>),
    /// An absent `[wireguard]` is the defaults (a `wg-quick` hook connection).
    WireGuard(WireGuardSection),
    Device,
    Macvlan(MacvlanSection),
    Routed(RoutedSection),
}

impl Kind {
    pub fn tag(&self) -> ConnectionType {
        match self {
            Self::OpenVpn(_) => ConnectionType::OpenVpn,
            Self::WireGuard(_) => ConnectionType::WireGuard,
            Self::Device => ConnectionType::Device,
            Self::Macvlan(_) => ConnectionType::Macvlan,
            Self::Routed(_) => ConnectionType::Routed,
        }
    }

    pub fn macvlan(&self) -> Option<&MacvlanSection> {
        match self {
            Self::Macvlan(m) => Some(m),
            _ => None,
        }
    }

    pub fn routed(&self) -> Option<&RoutedSection> {
        match self {
            Self::Routed(r) => Some(r),
            _ => None,
        }
    }

    /// The files this connection names, which must be as trusted as the connection's.
    fn named_files(&self) -> Option<&Path> {
        match self {
            Self::OpenVpn(Some(o)) => Some(&o.config),
            Self::WireGuard(w) => w.config.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.tag().fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenVpnSection {
    #[serde(deserialize_with = "abs_path")]
    pub config: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WireGuardSection {
    #[serde(deserialize_with = "opt_abs_path")]
    pub config: Option<PathBuf>,
    pub backend: WgBackend,
    pub userspace: String,
}

impl Default for WireGuardSection {
    fn default() -> Self {
        let userspace = "wireguard-go".to_owned();
        Self {
            config: None,
            backend: WgBackend::Auto,
            userspace,
        }
    }
}

/// `None` fields mean "use what the VPN pushed".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsOverride {
    #[serde(deserialize_with = "ip_list")]
    pub servers: Option<Vec<IpAddr>>,
    pub search: Option<Vec<DomainName>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecPolicy {
    #[serde(deserialize_with = "accounts")]
    pub users: Vec<String>,
    #[serde(deserialize_with = "accounts")]
    pub groups: Vec<String>,
    pub hostname: Option<Hostname>,
    #[serde(rename = "session-bus")]
    pub session_bus: SessionBus,
}

/// What `vpn-ns exec` gives the command of the user's session bus. The bus daemon runs
/// in the host's namespace and starts services there, so the real bus is a way out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBus {
    /// No bus: no address in the environment, no socket in the runtime directory.
    #[default]
    None,
    /// Through xdg-dbus-proxy with a minimal policy (desktop notifications only).
    Filtered,
    /// The real bus (warned about on every exec).
    Full,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: no connection {name:?} (create {}, or run `ls {}` to see the configured connections)",
        path.display(), path.display(), path.parent().unwrap_or(Path::new(".")).display()
    )]
    NotFound { path: PathBuf, name: String },
    #[error("{}: connection name {name:?} is not valid: use 1 to 64 characters of \
             A-Z a-z 0-9 _ . - (not \".\" or \"..\")", path.display())]
    BadName { path: PathBuf, name: String },
    #[error("{}: cannot read", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// `line` is `None` only for a key that is missing altogether.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

// Only tests ask an error for its file; users read it in the message.
#[cfg(test)]
impl ConfigError {
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path, .. }
            | Self::BadName { path, .. }
            | Self::Io { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Connection names become file names under /run/vpn-ns and /etc/vpn-ns, so they
/// follow the same rules as namespace names: nothing can escape those directories.
fn check_name(name: &str, path: &Path) -> Result<(), ConfigError> {
    match name.parse::<NetnsName>() {
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::BadName {
            path: path.to_owned(),
            name: name.to_owned(),
        }),
    }
}

pub fn load(dir: &Path, name: &str) -> Result<Connection, ConfigError> {
    let path = dir.join(format!("{name}.toml"));
    check_name(name, &path)?;
    let text = read_trusted(&path, name)?;
    let conn = parse(name, &path, &text)?;
    if let Some(p) = conn.kind.named_files() {
        trust::check_named(p)?;
    }
    tracing::debug!(path = %path.display(), kind = %conn.kind, netns = %conn.netns, "loaded connection");
    Ok(conn)
}

/// Reads connection `name`'s file through one descriptor, so that the file whose
/// ownership was checked is the file read.
fn read_trusted(path: &Path, name: &str) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let io = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_owned(),
            name: name.to_owned(),
        },
        _ => ConfigError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    trust::check_opened(path, &f.metadata().map_err(io)?)?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

pub fn load_all(dir: &Path) -> Result<Vec<Connection>, ConfigError> {
    let io_err = |source| ConfigError::Io {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err)?;
        if entry.file_type().map_err(io_err)?.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_string_lossy().strip_suffix(".toml") {
            names.push(name.to_owned());
        }
    }
    // Sorted before loading, so that the first error reported is deterministic too.
    names.sort();
    names.iter().map(|name| load(dir, name)).collect()
}

pub fn parse(name: &str, path: &Path, text: &str) -> Result<Connection, ConfigError> {
    check_name(name, path)?;
    let doc = Document::new(path, text)?;
    let mut raw: RawConnection =
        toml::from_str(text).map_err(|e| doc.error(e.span(), e.message()))?;
    let Some(tag) = raw.kind else {
        let message = format!("missing required key \"type\" ({TYPES})");
        return Err(doc.invalid(None, message));
    };
    let kind = kind(&doc, tag, &mut raw)?;
    plain::check(&doc, &kind, raw.dns.as_ref())?;
    let netns = match (raw.netns_name.unwrap_or(NetnsChoice::Name), &raw.uuid) {
        (NetnsChoice::Name, _) => name
            .parse()
            .expect("connection names are valid namespace names"),
        (NetnsChoice::Literal(n), _) => n,
        (NetnsChoice::Uuid, Some(uuid)) => uuid.to_netns_name(),
        (NetnsChoice::Uuid, None) => {
            return Err(doc.key_error(
                "netns-name",
                "\"uuid\" needs a `uuid = \"...\"` key in this file",
            ));
        }
    };
    let mut forwards = publish::rules(&doc, crate::forward::Direction::Publish, raw.publish)?;
    forwards.extend(publish::rules(
        &doc,
        crate::forward::Direction::HostAccess,
        raw.host_access,
    )?);
    Ok(Connection {
        name: name.to_owned(),
        path: path.to_owned(),
        kind,
        uuid: raw.uuid,
        netns_isolate: raw.netns_isolate.unwrap_or(true),
        netns_persistent: raw.netns_persistent.unwrap_or(false),
        netns,
        netns_timeout: Duration::from_millis(raw.netns_timeout.map_or(DEFAULT_TIMEOUT_MS, |t| t.0)),
        default_route: raw.default_route.unwrap_or(true),
        host_routes_min_prefix: raw
            .host_routes_min_prefix
            .map_or(crate::cover::MIN_PREFIX, |p| p.0),
        dns: raw.dns.unwrap_or_default(),
        exec: raw.exec,
        forwards,
    })
}

/// Takes the section that belongs to `tag` out of `raw`; any other section is an
/// error at its key.
fn kind(
    doc: &Document<'_>,
    tag: ConnectionType,
    raw: &mut RawConnection,
) -> Result<Kind, ConfigError> {
    let sections = [
        (ConnectionType::OpenVpn, raw.openvpn.is_some()),
        (ConnectionType::WireGuard, raw.wireguard.is_some()),
        (ConnectionType::Macvlan, raw.macvlan.is_some()),
        (ConnectionType::Routed, raw.routed.is_some()),
    ];
    let misplaced = sections
        .iter()
        .find(|(owner, present)| *present && *owner != tag)
        .map(|(owner, _)| owner.as_str());
    if let Some(section) = misplaced {
        let why =
            format!("[{section}] is only for type = \"{section}\", this connection is \"{tag}\"");
        return Err(doc.key_error(section, &why));
    }
    let missing = |section: &str, key: &str| {
        let message =
            format!("type = \"{section}\" needs a [{section}] section with {key} = \"<device>\"");
        doc.invalid(None, message)
    };
    Ok(match tag {
        ConnectionType::OpenVpn => Kind::OpenVpn(raw.openvpn.take()),
        ConnectionType::WireGuard => Kind::WireGuard(raw.wireguard.take().unwrap_or_default()),
        ConnectionType::Device => Kind::Device,
        ConnectionType::Macvlan => Kind::Macvlan(
            raw.macvlan
                .take()
                .ok_or_else(|| missing("macvlan", "parent"))?,
        ),
        ConnectionType::Routed => Kind::Routed(
            raw.routed
                .take()
                .ok_or_else(|| missing("routed", "uplink"))?,
        ),
    })
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConnection {
    // Optional here so that a missing `type` gets our message, not serde's.
    #[serde(rename = "type")]
    kind: Option<ConnectionType>,
    uuid: Option<Uuid>,
    netns_isolate: Option<bool>,
    netns_persistent: Option<bool>,
    netns_name: Option<NetnsChoice>,
    netns_timeout: Option<TimeoutMs>,
    default_route: Option<bool>,
    host_routes_min_prefix: Option<MinPrefix>,
    openvpn: Option<OpenVpnSection>,
    wireguard: Option<WireGuardSection>,
    macvlan: Option<MacvlanSection>,
    routed: Option<RoutedSection>,
    dns: Option<DnsOverride>,
    exec: Option<ExecPolicy>,
    publish: Option<Vec<publish::RawForward>>,
    host_access: Option<Vec<publish::RawForward>>,
}

#[cfg(test)]
mod tests;
