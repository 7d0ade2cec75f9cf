//! One OpenVPN environment variable read strictly: the checks every value passes
//! (length, characters, whitespace), typed parsers (addresses, numbers, domains,
//! indexes), and the error constructors that name the variable and show its value
//! escaped and shortened.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Bound;

use super::EnvError;
use crate::spec::DomainName;

/// Long enough for `dhcp-option DOMAIN-SEARCH <253-byte name>`.
pub(super) const MAX_VALUE_LEN: usize = 512;
/// How much of a bad value an error message shows.
const SHOWN_VALUE_CHARS: usize = 80;

/// One variable as found in the environment, not yet checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Var<'a> {
    pub(super) name: &'a str,
    pub(super) value: &'a str,
}

pub(super) struct Env<'a>(pub(super) &'a BTreeMap<String, String>);

impl<'a> Env<'a> {
    pub(super) fn var(&self, name: &str) -> Option<Var<'a>> {
        self.0
            .get_key_value(name)
            .map(|(k, v)| Var { name: k, value: v })
    }

    pub(super) fn get(&self, name: &str) -> Result<Option<&'a str>, EnvError> {
        self.var(name).map(check).transpose()
    }

    pub(super) fn require(&self, name: &str) -> Result<&'a str, EnvError> {
        self.get(name)?.ok_or_else(|| missing(name, ""))
    }

    pub(super) fn vars_with_prefix(
        &self,
        prefix: &'a str,
    ) -> impl Iterator<Item = Var<'a>> + use<'a> {
        self.0
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Var { name: k, value: v })
    }

    /// `{prefix}{N}` variables grouped by N; slot i holds `prefixes[i]`.
    pub(super) fn group<const K: usize>(
        &self,
        prefixes: [&'a str; K],
    ) -> Result<BTreeMap<u32, [Option<Var<'a>>; K]>, EnvError> {
        let mut out = BTreeMap::new();
        for (slot, prefix) in prefixes.into_iter().enumerate() {
            for var in self.vars_with_prefix(prefix) {
                let n = index(&var.name[prefix.len()..]).ok_or_else(|| bad_name(var))?;
                out.entry(n).or_insert([None; K])[slot] = Some(var);
            }
        }
        Ok(out)
    }
}

/// Rejects what no OpenVPN value contains: nothing, overlong, surrounding whitespace,
/// control or non-ASCII characters. Typed parsing comes after.
pub(super) fn check(var: Var<'_>) -> Result<&str, EnvError> {
    let v = var.value;
    let reason = if v.is_empty() {
        "empty".to_owned()
    } else if v.len() > MAX_VALUE_LEN {
        format!("longer than {MAX_VALUE_LEN} bytes")
    } else if let Some(c) = v.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        format!("contains the character {c:?}")
    } else if v.starts_with(' ') || v.ends_with(' ') {
        "surrounding whitespace".to_owned()
    } else {
        return Ok(v);
    };
    Err(invalid_var(var, reason))
}

pub(super) fn ipv4(var: Var) -> Result<Ipv4Addr, EnvError> {
    match ip(var, "an IPv4 address")? {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(invalid_var(var, "an IPv6 address, expected IPv4")),
    }
}

pub(super) fn ipv6(var: Var) -> Result<Ipv6Addr, EnvError> {
    match ip(var, "an IPv6 address")? {
        IpAddr::V6(a) => Ok(a),
        IpAddr::V4(_) => Err(invalid_var(var, "an IPv4 address, expected IPv6")),
    }
}

/// std's parsers are strict already (no leading-zero octets, no zone ids, no whitespace).
pub(super) fn ip(var: Var, expected: &str) -> Result<IpAddr, EnvError> {
    check(var)?
        .parse()
        .map_err(|_| invalid_var(var, format!("not {expected}")))
}

pub(super) fn domain(var: Var) -> Result<DomainName, EnvError> {
    check(var)?
        .parse()
        .map_err(|_| invalid_var(var, "not a valid domain name"))
}

/// A plain decimal in `min..=max`: digits only, no sign, no leading zero.
pub(super) fn number(var: Var, min: u64, max: u64) -> Result<u64, EnvError> {
    let v = check(var)?;
    if !v.bytes().all(|b| b.is_ascii_digit()) || (v.len() > 1 && v.starts_with('0')) {
        return Err(invalid_var(var, "not a plain decimal number"));
    }
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid_var(var, format!("out of range {min}-{max}"))),
    }
}

/// A variable-name index as OpenVPN prints it: from 1, decimal, no leading zero.
pub(super) fn index(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn shorten(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE_CHARS) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_owned(),
    }
}

pub(super) fn invalid(variable: &str, value: &str, reason: impl Into<String>) -> EnvError {
    EnvError::Invalid {
        variable: variable.to_owned(),
        value: shorten(value),
        reason: reason.into(),
    }
}

pub(super) fn invalid_var(var: Var, reason: impl Into<String>) -> EnvError {
    invalid(var.name, var.value, reason)
}

pub(super) fn bad_name(var: Var) -> EnvError {
    invalid_var(var, "unexpected variable name (bad index)")
}

pub(super) fn missing(variable: &str, hint: &str) -> EnvError {
    EnvError::Missing {
        variable: variable.to_owned(),
        hint: hint.to_owned(),
    }
}

/// Missing `variable` although its siblings (the first present one is named) are set.
pub(super) fn missing_with<const K: usize>(variable: &str, siblings: [Option<Var>; K]) -> EnvError {
    let hint = siblings
        .into_iter()
        .flatten()
        .next()
        .map_or(String::new(), |v| format!(" ({} is set)", v.name));
    missing(variable, &hint)
}

pub(super) fn too_many(variable: &str, limit: usize, what: &'static str) -> EnvError {
    EnvError::TooMany {
        variable: variable.to_owned(),
        limit,
        what,
    }
}
