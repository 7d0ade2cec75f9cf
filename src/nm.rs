//! NetworkManager's dispatcher environment -> what `vpn-ns hook networkmanager` does.
//!
//! The dispatcher runs scripts as root with `<interface> <action>` and the connection in
//! the environment. The values come from NetworkManager, but the DNS ones were pushed by
//! the VPN server: everything is parsed strictly, and an error names the variable.

use std::net::IpAddr;

use crate::config::{ConnectionType, Uuid};
use crate::spec::{DnsSpec, DomainName, InterfaceName, NetnsName};
use crate::state::Origin;

/// Bounds the input only; resolv.conf uses the first three servers.
const MAX_DNS_SERVERS: usize = 32;
const MAX_SEARCH_DOMAINS: usize = 32;
/// A dispatcher variable longer than this is refused before it is split.
const MAX_VALUE: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NmError {
    #[error("NetworkManager variable {variable} is missing")]
    Missing { variable: &'static str },
    #[error("NetworkManager variable {variable}={value:?}: {reason}")]
    Invalid {
        variable: &'static str,
        value: String,
        reason: String,
    },
}

/// The dispatcher actions vpn-ns acts on; every other one is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Blocking (scripts in `dispatcher.d/pre-up.d`): NetworkManager configured the
    /// device in the host namespace and waits for the scripts before it reports the
    /// VPN activated. Moving the device here shortens its time on the host.
    PreUp,
    /// Not blocking: the VPN is activated. Adopts the device unless pre-up did.
    Up,
    /// The VPN is down; NetworkManager has already deconfigured (usually: closed) it.
    Down,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "vpn-pre-up" => Some(Action::PreUp),
            "vpn-up" => Some(Action::Up),
            "vpn-down" => Some(Action::Down),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::PreUp => "vpn-pre-up",
            Action::Up => "vpn-up",
            Action::Down => "vpn-down",
        }
    }
}

/// One dispatcher call about a VPN connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: Action,
    /// NetworkManager's connection id, any string (shown with `{:?}`).
    pub id: String,
    pub uuid: Uuid,
    /// The VPN's IP interface (up actions; absent at vpn-up once the device left).
    pub iface: Option<InterfaceName>,
}

fn shorten(v: &str) -> String {
    let mut s: String = v.chars().take(80).collect();
    if s.len() < v.len() {
        s.push_str("...");
    }
    s
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> NmError {
    NmError::Invalid {
        variable,
        value: shorten(value),
        reason: reason.into(),
    }
}

fn bounded(
    env: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<String>, NmError> {
    match env(variable) {
        Some(v) if v.len() > MAX_VALUE => Err(invalid(
            variable,
            &v,
            format!("longer than {MAX_VALUE} bytes"),
        )),
        v => Ok(v),
    }
}

/// The event, or None for an action vpn-ns ignores (nothing else is parsed then).
pub fn parse_event(
    action: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Event>, NmError> {
    let Some(action) = Action::parse(action) else {
        return Ok(None);
    };
    let uuid = bounded(env, "CONNECTION_UUID")?
        .filter(|v| !v.is_empty())
        .ok_or(NmError::Missing {
            variable: "CONNECTION_UUID",
        })?;
    let uuid: Uuid = uuid
        .parse()
        .map_err(|e: crate::spec::InvalidValue| invalid("CONNECTION_UUID", &uuid, e.0))?;
    let id = bounded(env, "CONNECTION_ID")?.unwrap_or_default();
    // At vpn-up NetworkManager no longer names a device that already left its
    // namespace (moved at vpn-pre-up): the record decides then.
    let iface = match bounded(env, "VPN_IP_IFACE")?.filter(|v| !v.is_empty()) {
        Some(v) if action != Action::Down => Some(
            v.parse::<InterfaceName>()
                .map_err(|e| invalid("VPN_IP_IFACE", &v, e.0))?,
        ),
        _ => None,
    };
    Ok(Some(Event {
        action,
        id,
        uuid,
        iface,
    }))
}

/// DNS servers (IPv4 then IPv6) and domains NetworkManager got from the VPN.
pub fn parse_dns(env: &impl Fn(&str) -> Option<String>) -> Result<DnsSpec, NmError> {
    let mut spec = DnsSpec::default();
    for (variable, v6) in [
        ("VPN_IP4_NAMESERVERS", false),
        ("VPN_IP6_NAMESERVERS", true),
    ] {
        let Some(value) = bounded(env, variable)? else {
            continue;
        };
        for word in value.split_whitespace() {
            let ip: IpAddr = word
                .parse()
                .map_err(|_| invalid(variable, &value, format!("{word:?} is not an IP address")))?;
            if ip.is_ipv6() != v6 {
                return Err(invalid(
                    variable,
                    &value,
                    format!("{word} is not an IPv{} address", if v6 { 6 } else { 4 }),
                ));
            }
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(invalid(
                    variable,
                    &value,
                    format!("{word} cannot be a DNS server"),
                ));
            }
            if !spec.servers.contains(&ip) {
                if spec.servers.len() == MAX_DNS_SERVERS {
                    return Err(invalid(
                        variable,
                        &value,
                        format!("more than {MAX_DNS_SERVERS} DNS servers"),
                    ));
                }
                spec.servers.push(ip);
            }
        }
    }
    for variable in ["VPN_IP4_DOMAINS", "VPN_IP6_DOMAINS"] {
        let Some(value) = bounded(env, variable)? else {
            continue;
        };
        for word in value.split_whitespace() {
            let d: DomainName = word
                .parse()
                .map_err(|e: crate::spec::InvalidValue| invalid(variable, &value, e.0))?;
            if !spec.search.contains(&d) {
                if spec.search.len() == MAX_SEARCH_DOMAINS {
                    return Err(invalid(
                        variable,
                        &value,
                        format!("more than {MAX_SEARCH_DOMAINS} search domains"),
                    ));
                }
                spec.search.push(d);
            }
        }
    }
    Ok(spec)
}

/// The connection-file stems that may belong to this NetworkManager connection, most
/// specific first: its uuid (unique), then its id when that is a usable name (two
/// NetworkManager connections may share an id).
pub fn candidates(ev: &Event) -> Vec<String> {
    let mut v = vec![ev.uuid.as_str().to_owned()];
    if ev.id.parse::<NetnsName>().is_ok() && ev.id != ev.uuid.as_str() {
        v.push(ev.id.clone());
    }
    v
}

/// Who an adopted device belongs to, recorded at adopt and compared at every later event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub uuid: String,
    pub id: String,
}

impl Owner {
    pub fn of(ev: &Event) -> Owner {
        Owner {
            uuid: ev.uuid.as_str().to_owned(),
            id: ev.id.clone(),
        }
    }
}

/// What an event does with the connection file found for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileDecision {
    /// The file is this NetworkManager connection's.
    Act,
    /// Not this connection's business (exit 0, one log line saying why).
    LeaveAlone(String),
    /// A NetworkManager connection asks for something the file forbids (exit 2).
    Refuse(String),
}

/// Whether a connection file (`kind`, `uuid` key `file_uuid`) may be driven by this
/// event. A file keyed by an id names one NetworkManager connection only when it says
/// which uuid it is for; a file of another type is vpn-ns's own connection, which a
/// NetworkManager connection with the same name must neither bring up nor take down.
pub fn decide_file(kind: ConnectionType, file_uuid: Option<&Uuid>, ev: &Event) -> FileDecision {
    if let Some(u) = file_uuid
        && u != &ev.uuid
    {
        return FileDecision::LeaveAlone(format!(
            "the file is for NetworkManager connection {}, not {}",
            u.as_str(),
            ev.uuid.as_str()
        ));
    }
    if kind != ConnectionType::Device {
        let why = format!(
            "the file is a vpn-ns {kind} connection, which vpn-ns runs itself, not one of NetworkManager's"
        );
        return match ev.action {
            Action::Down => FileDecision::LeaveAlone(why),
            Action::PreUp | Action::Up => FileDecision::Refuse(why),
        };
    }
    FileDecision::Act
}

/// What vpn-down does, given the connection's state (`up`, `origin`) and the owner its
/// adopt record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownDecision {
    Release,
    LeaveAlone(String),
}

pub fn decide_down(up: bool, origin: Origin, owner: Option<&Owner>, ev: &Event) -> DownDecision {
    let holder = match (up, origin, owner) {
        (false, _, _) => "nothing (its persistent namespace is kept)".to_owned(),
        (true, Origin::Adopt, Some(o)) if o.uuid == ev.uuid.as_str() => {
            return DownDecision::Release;
        }
        (true, Origin::Adopt, Some(o)) => {
            format!("NetworkManager connection {:?} ({})", o.id, o.uuid)
        }
        (true, Origin::Adopt, None) => "a device adopted by `vpn-ns adopt`".to_owned(),
        (true, origin, _) => format!("vpn-ns itself ({origin:?})"),
    };
    DownDecision::LeaveAlone(format!("it is held by {holder}, not by this connection"))
}

#[cfg(test)]
mod tests;
