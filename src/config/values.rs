//! Values of single keys, each validated by its `FromStr` inside deserialization (so
//! that toml reports the bad value's own line): keywords, UUIDs, hostnames, paths,
//! accounts, addresses, ranges.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::FromStrVisitor;
use crate::spec::{InvalidValue, NetnsName};

const MAX_TIMEOUT_MS: u64 = 600_000;

/// Which WireGuard implementation carries a native connection (docs/wireguard.md has
/// the decision table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WgBackend {
    Kernel,
    /// The data plane built into vpn-ns (boringtun), tun born in the namespace.
    Builtin,
    /// An external UAPI program (`userspace =`, default wireguard-go); spelled
    /// "wireguard-go", and "userspace" as before.
    Userspace,
    /// Kernel when the module exists, else builtin.
    #[default]
    Auto,
}

const WG_BACKENDS: &str =
    "\"kernel\", \"builtin\", \"wireguard-go\" (or \"userspace\") or \"auto\"";

impl WgBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Builtin => "builtin",
            Self::Userspace => "wireguard-go",
            Self::Auto => "auto",
        }
    }
}

impl fmt::Display for WgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WgBackend {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "kernel" => Ok(Self::Kernel),
            "builtin" => Ok(Self::Builtin),
            // "userspace" is the name configurations used before "builtin" existed.
            "wireguard-go" | "userspace" => Ok(Self::Userspace),
            "auto" => Ok(Self::Auto),
            _ => Err(InvalidValue(format!(
                "unknown WireGuard backend {s:?} (expected {WG_BACKENDS})"
            ))),
        }
    }
}

deserialize_via_from_str! { WgBackend => WG_BACKENDS, }

/// A UUID in canonical 8-4-4-4-12 form, stored lowercase so that the namespace
/// derived from it does not depend on how the file spelled it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uuid(String);

impl Uuid {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_netns_name(&self) -> NetnsName {
        self.0
            .parse()
            .expect("a canonical UUID is a valid namespace name")
    }
}

impl FromStr for Uuid {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let why = if s.len() != 36 {
            Some(format!("{} characters instead of 36", s.chars().count()))
        } else {
            s.chars()
                .enumerate()
                .find_map(|(i, c)| match (matches!(i, 8 | 13 | 18 | 23), c) {
                    (true, '-') => None,
                    (true, _) => Some(format!("position {} should be '-'", i + 1)),
                    (false, c) if c.is_ascii_hexdigit() => None,
                    (false, c) => Some(format!("{c:?} is not a hex digit")),
                })
        };
        match why {
            None => Ok(Self(s.to_ascii_lowercase())),
            Some(why) => Err(InvalidValue(format!(
                "{s:?} is not a UUID ({why}; the form is 8-4-4-4-12 hex digits, \
                 like 0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21)"
            ))),
        }
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hostname for the exec'd apps' UTS namespace: RFC 1123 labels, at most 64 bytes
/// (the kernel's limit for `sethostname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| Err(InvalidValue(format!("hostname {s:?} {why}")));
        if s.is_empty() || s.len() > 64 {
            return bad("must be 1 to 64 bytes long");
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if let Some(c) = s.chars().find(|&c| !allowed(c) && c != '.') {
            return bad(&format!(
                "contains {c:?}; only A-Z a-z 0-9 - and dots are allowed"
            ));
        }
        let label_ok =
            |l: &str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-');
        if !s.split('.').all(label_ok) {
            return bad("needs labels of 1 to 63 characters, not starting or ending with '-'");
        }
        Ok(Self(s.to_owned()))
    }
}

pub(super) enum NetnsChoice {
    Uuid,
    Name,
    Literal(NetnsName),
}

impl FromStr for NetnsChoice {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uuid" => Ok(Self::Uuid),
            "name" => Ok(Self::Name),
            _ => s.parse().map(Self::Literal),
        }
    }
}

/// std's message ("invalid IP address syntax") does not say which value was bad.
pub(super) struct Ip(pub(super) IpAddr);

impl FromStr for Ip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(Self)
            .map_err(|_| format!("{s:?} is not an IP address"))
    }
}

pub(super) struct AbsPath(pub(super) PathBuf);

impl FromStr for AbsPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.starts_with('/') && !s.contains('\0') {
            true => Ok(Self(PathBuf::from(s))),
            false => Err(format!("{s:?} is not an absolute path")),
        }
    }
}

/// A user or group name. One that can never match an account would silently lock
/// everyone out of `exec`, so it is refused here instead.
pub(super) struct Account(pub(super) String);

impl FromStr for Account {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |c: char| c == ':' || c == '/' || c.is_whitespace() || c.is_control();
        match s.is_empty() || s.chars().any(bad) {
            true => Err(format!("{s:?} is not a valid user or group name")),
            false => Ok(Self(s.to_owned())),
        }
    }
}

pub(super) fn abs_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Ok(AbsPath::deserialize(d)?.0)
}

pub(super) fn opt_abs_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    abs_path(d).map(Some)
}

pub(super) fn ip_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpAddr>>, D::Error> {
    Ok(Some(
        Vec::<Ip>::deserialize(d)?
            .into_iter()
            .map(|ip| ip.0)
            .collect(),
    ))
}

pub(super) fn accounts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<Account>::deserialize(d)?
        .into_iter()
        .map(|a| a.0)
        .collect())
}

deserialize_via_from_str! {
    Uuid => "a UUID string",
    Hostname => "a hostname string",
    NetnsChoice => "\"name\", \"uuid\" or a namespace name",
    Ip => "an IP address string",
    AbsPath => "an absolute path",
    Account => "a user or group name",
}

pub(super) struct TimeoutMs(pub(super) u64);

/// `host-routes-min-prefix`: 1 to 32 (a /0 route is refused whatever it says).
pub(super) struct MinPrefix(pub(super) u8);

impl<'de> Deserialize<'de> for MinPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        match u8::try_from(v) {
            Ok(p) if (1..=32).contains(&p) => Ok(MinPrefix(p)),
            _ => Err(de::Error::custom(format!(
                "{v} is out of range (a prefix length from 1 to 32)"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for TimeoutMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeoutMs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer (milliseconds)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeoutMs, E> {
                match u64::try_from(v) {
                    Ok(v) if (1..=MAX_TIMEOUT_MS).contains(&v) => Ok(TimeoutMs(v)),
                    _ => Err(E::custom(format!(
                        "{v} is out of range (1 to {MAX_TIMEOUT_MS} milliseconds)"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeoutMs, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_u64(V)
    }
}
