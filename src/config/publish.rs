//! `[[publish]]` and `[[host-access]]`: ports relayed across the namespace boundary
//! (see crate::forward, crate::publish and docs/publish.md).

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::{ConfigError, FromStrVisitor, locate::Document};
use crate::forward::{DEFAULT_ADDR, Direction, Endpoint, Proto, Rule};

/// One entry as written; `target` defaults to the listen port on 127.0.0.1.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    listen: Spanned<EndpointValue>,
    target: Option<EndpointValue>,
    proto: Option<ProtoValue>,
}

pub(super) struct EndpointValue(Endpoint);
struct ProtoValue(Proto);

const ENDPOINT: &str = "a port or an \"ADDR:PORT\" string";

impl<'de> Deserialize<'de> for EndpointValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EndpointValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(ENDPOINT)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EndpointValue, E> {
                s.parse().map(EndpointValue).map_err(|e| E::custom(e.0))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EndpointValue, E> {
                match u16::try_from(v) {
                    Ok(p) if p != 0 => {
                        Ok(EndpointValue(Endpoint(SocketAddr::new(DEFAULT_ADDR, p))))
                    }
                    _ => Err(E::custom(format!("{v} is not a port (1 to 65535)"))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EndpointValue, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ProtoValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<Proto>("\"tcp\" or \"udp\"", PhantomData))
            .map(ProtoValue)
    }
}

/// Builds the rules of one direction. Two entries listening on the same address and
/// protocol on the same side could never both be bound: the second is refused, at
/// its own line.
pub(super) fn rules(
    doc: &Document<'_>,
    direction: Direction,
    raw: Option<Vec<RawForward>>,
) -> Result<Vec<Rule>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for f in raw.unwrap_or_default() {
        let span = f.listen.span();
        let listen = f.listen.into_inner().0;
        let rule = Rule {
            direction,
            proto: f.proto.map_or(Proto::Tcp, |p| p.0),
            listen,
            target: f.target.map_or(
                Endpoint(SocketAddr::new(DEFAULT_ADDR, listen.0.port())),
                |t| t.0,
            ),
        };
        if !seen.insert((rule.proto, rule.listen)) {
            let msg = format!(
                "{} is already listed in an earlier [[{direction}]] entry",
                format_args!("{}/{}", rule.listen, rule.proto)
            );
            return Err(doc.error(Some(span), &msg));
        }
        out.push(rule);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Connection, parse};
    use crate::forward::{Direction, Endpoint, Proto, Rule};

    fn conn(extra: &str) -> Result<Connection, ConfigError> {
        let text = format!("type = \"device\"\n{extra}");
        parse("work", Path::new("/etc/vpn-ns/work.toml"), &text)
    }

    fn err(extra: &str) -> String {
        conn(extra).unwrap_err().to_string()
    }

    fn ep(s: &str) -> Endpoint {
        Endpoint(s.parse().unwrap())
    }

    /// The two examples of docs/publish.md, verbatim.
    const EXAMPLES: &str = r#"
[[publish]]                  # a service inside the namespace, reachable from the host
listen = "127.0.0.1:9091"    # host side; the default address is 127.0.0.1
target = "127.0.0.1:9091"    # inside the namespace; default: the same port on 127.0.0.1
proto = "tcp"                # "tcp" (default) or "udp"

[[host-access]]              # a service on the host, reachable from inside the namespace
listen = "127.0.0.1:1143"    # inside the namespace
target = "127.0.0.1:1143"    # on the host
proto = "tcp"
"#;

    #[test]
    fn the_documented_examples() {
        let c = conn(EXAMPLES).unwrap();
        assert_eq!(
            c.forwards,
            [
                Rule {
                    direction: Direction::Publish,
                    proto: Proto::Tcp,
                    listen: ep("127.0.0.1:9091"),
                    target: ep("127.0.0.1:9091"),
                },
                Rule {
                    direction: Direction::HostAccess,
                    proto: Proto::Tcp,
                    listen: ep("127.0.0.1:1143"),
                    target: ep("127.0.0.1:1143"),
                },
            ]
        );
        assert!(conn("").unwrap().forwards.is_empty());
    }

    #[test]
    fn defaults_ipv6_udp_and_several_entries() {
        let c = conn(
            "[[publish]]\nlisten = 8080\n\
             [[publish]]\nlisten = \"[::1]:5353\"\ntarget = \"[::1]:53\"\nproto = \"udp\"\n\
             [[publish]]\nlisten = \"5353\"\ntarget = 53\nproto = \"tcp\"\n\
             [[host-access]]\nlisten = \"5353\"\nproto = \"udp\"\n",
        )
        .unwrap();
        let got: Vec<_> = c
            .forwards
            .iter()
            .map(|r| (r.direction, r.proto, r.listen, r.target))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Direction::Publish,
                    Proto::Tcp,
                    ep("127.0.0.1:8080"),
                    ep("127.0.0.1:8080")
                ),
                (
                    Direction::Publish,
                    Proto::Udp,
                    ep("[::1]:5353"),
                    ep("[::1]:53")
                ),
                (
                    Direction::Publish,
                    Proto::Tcp,
                    ep("127.0.0.1:5353"),
                    ep("127.0.0.1:53")
                ),
                (
                    Direction::HostAccess,
                    Proto::Udp,
                    ep("127.0.0.1:5353"),
                    ep("127.0.0.1:5353")
                ),
            ]
        );
    }

    #[test]
    fn bad_entries_name_the_line_and_key() {
        let cases = [
            (
                "[[publish]]\nlisten = \"host:80\"\n",
                "line 3",
                "publish.listen",
                "\"host:80\"",
            ),
            (
                "[[publish]]\nlisten = 0\n",
                "line 3",
                "publish.listen",
                "not a port",
            ),
            (
                "[[publish]]\nlisten = 70000\n",
                "line 3",
                "publish.listen",
                "not a port",
            ),
            (
                "[[publish]]\nlisten = 80\nproto = \"sctp\"\n",
                "line 4",
                "publish.proto",
                "\"sctp\"",
            ),
            (
                "[[host-access]]\nlisten = 80\ntarget = \"1.2.3.4\"\n",
                "line 4",
                "host-access.target",
                "\"1.2.3.4\"",
            ),
            (
                "[[publish]]\nlisten = 80\nport = 1\n",
                "line 4",
                "unknown key \"port\"",
                "listen",
            ),
            (
                "[[publish]]\ntarget = 80\n",
                "line 2",
                "missing key \"listen\"",
                "publish",
            ),
            (
                "[[publish]]\nlisten = true\n",
                "line 3",
                "publish.listen",
                "a boolean",
            ),
            (
                "[[publish]]\nlisten = 80\n[[publish]]\nlisten = \"127.0.0.1:80\"\n",
                "line 5",
                "127.0.0.1:80/tcp is already listed",
                "[[publish]]",
            ),
        ];
        for (text, line, a, b) in cases {
            let e = err(text);
            for want in ["/etc/vpn-ns/work.toml", line, a, b] {
                assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
            }
        }
        // The same port on both sides, or for both protocols, is no conflict.
        conn("[[publish]]\nlisten = 80\n[[publish]]\nlisten = 80\nproto = \"udp\"\n[[host-access]]\nlisten = 80\n")
            .unwrap();
    }
}
