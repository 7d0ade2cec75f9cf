//! The keeper's control protocol: one JSON request line, one JSON reply line, on
//! `/run/vpn-ns/<conn>.keeper.sock` (mode 0600 in a root-owned directory, so only root
//! can connect). `status` asks what the keeper watches; later requests (publish,
//! unpublish) are new variants of `Request`, and an old keeper answers an unknown one
//! with an error reply instead of dropping the connection.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{KeeperError, socket_path};
use crate::publish::{Direction, Endpoint, Proto, RelayStatus, Rule};

/// Longest request or reply line accepted: the protocol carries small objects.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// `vpn-ns publish`: start relaying `rule` until unpublished or the keeper ends.
    Publish {
        rule: Rule,
    },
    /// `vpn-ns unpublish`: stop the relay listening on `listen` and close its connections.
    Unpublish {
        direction: Direction,
        proto: Proto,
        listen: Endpoint,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    Status(KeeperStatus),
    Published { rule: Rule },
    Unpublished { rule: Rule },
    Error { message: String },
}

/// What a keeper says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperStatus {
    pub pid: u32,
    /// One line per task ("openvpn pid 1234 (pidfd)", "tun0 in namespace work (netlink)").
    pub watching: Vec<String>,
    /// DHCP: when the lease expires (Unix time), and whether it has already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease_expired: bool,
    /// The relays it runs (crate::publish), with live connection counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<RelayStatus>,
}

/// Parses one request line; an unknown or malformed request is an error reply.
pub fn parse_request(line: &str) -> Result<Request, Reply> {
    serde_json::from_str(line.trim_end()).map_err(|e| Reply::Error {
        message: format!("bad request: {e}"),
    })
}

/// Reads one line of at most `MAX_LINE` bytes.
pub fn read_line(stream: &UnixStream) -> io::Result<String> {
    let mut r = BufReader::new(io::Read::take(stream, MAX_LINE as u64));
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.len() >= MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(line)
}

pub fn write_line<T: Serialize>(mut stream: &UnixStream, msg: &T) -> io::Result<()> {
    let mut body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    body.push(b'\n');
    stream.write_all(&body)
}

/// Sends `req` to the keeper of `conn` and waits up to `timeout` for its reply.
pub fn query(conn: &str, req: &Request, timeout: Duration) -> Result<Reply, KeeperError> {
    query_at(&socket_path(conn), conn, req, timeout)
}

/// The same, for a keeper whose socket is at `path` (a user connection's keeper, in
/// the user's runtime directory).
pub fn query_at(
    path: &std::path::Path,
    conn: &str,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, KeeperError> {
    let err = |source| KeeperError::Query {
        conn: conn.to_owned(),
        source,
    };
    let s = UnixStream::connect(path).map_err(err)?;
    s.set_read_timeout(Some(timeout)).map_err(err)?;
    s.set_write_timeout(Some(timeout)).map_err(err)?;
    write_line(&s, req).map_err(err)?;
    let line = read_line(&s).map_err(err)?;
    serde_json::from_str(&line).map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// `vpn-ns publish`'s client side, for root's keeper and a user's alike: `ask` reaches
/// the connection's keeper. Stops at the first rule the keeper refuses (the ones before
/// it stay published, as each was reported).
pub fn publish_rules(
    conn: &str,
    rules: Vec<Rule>,
    mut ask: impl FnMut(&Request) -> anyhow::Result<Reply>,
) -> anyhow::Result<()> {
    for rule in rules {
        for w in [rule.exposure_warning(), rule.bypass_warning()]
            .into_iter()
            .flatten()
        {
            tracing::warn!("{conn}: {w}");
        }
        match ask(&Request::Publish { rule })? {
            Reply::Published { rule } => println!("{conn}: published {rule}"),
            other => anyhow::bail!(
                "connection {conn}: cannot publish {rule}: {}",
                describe(other)
            ),
        }
    }
    Ok(())
}

/// `vpn-ns unpublish`'s client side (see [`publish_rules`]).
pub fn unpublish_rules(
    conn: &str,
    rules: Vec<Rule>,
    mut ask: impl FnMut(&Request) -> anyhow::Result<Reply>,
) -> anyhow::Result<()> {
    for r in rules {
        let req = Request::Unpublish {
            direction: r.direction,
            proto: r.proto,
            listen: r.listen,
        };
        match ask(&req)? {
            Reply::Unpublished { rule } => println!("{conn}: unpublished {rule}"),
            other => anyhow::bail!(
                "connection {conn}: cannot unpublish {}/{}: {}",
                r.listen,
                r.proto,
                describe(other)
            ),
        }
    }
    Ok(())
}

fn describe(r: Reply) -> String {
    match r {
        Reply::Error { message } => message,
        other => format!("unexpected reply {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_tagged_json_lines() {
        assert_eq!(parse_request("{\"op\":\"status\"}\n"), Ok(Request::Status));
        let r = Reply::Status(KeeperStatus {
            pid: 7,
            watching: vec!["openvpn pid 9 (pidfd)".into()],
            lease_expires: None,
            lease_expired: false,
            published: Vec::new(),
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            "{\"result\":\"status\",\"pid\":7,\"watching\":[\"openvpn pid 9 (pidfd)\"]}"
        );
        assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), r);
    }

    #[test]
    fn unknown_or_malformed_requests_get_an_error_reply() {
        for bad in [
            "{\"op\":\"publish\"}",
            "{\"op\":\"frobnicate\"}",
            "status",
            "",
            "{\"op\":1}",
        ] {
            assert!(
                matches!(parse_request(bad), Err(Reply::Error { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_line_is_read_whole_and_bounded() {
        let (a, b) = UnixStream::pair().unwrap();
        write_line(&a, &Request::Status).unwrap();
        assert_eq!(read_line(&b).unwrap(), "{\"op\":\"status\"}\n");
        let (a, b) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = (&a).write_all(&vec![b'x'; MAX_LINE + 10]);
        });
        assert!(read_line(&b).is_err());
    }
}
