//! The WireGuard cross-platform UAPI: a text protocol over `/run/wireguard/<iface>.sock`
//! spoken by userspace implementations (wireguard-go, boringtun). Configuration goes
//! over the socket, so key material never touches a file of ours.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::parse::WgConfig;

pub const SOCKET_DIR: &str = "/run/wireguard";

pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{iface}.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    #[error("cannot talk to {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} refused the configuration: {}", .path.display(), std::io::Error::from_raw_os_error(*.errno))]
    Refused { path: PathBuf, errno: i32 },
    #[error("{} sent an unexpected answer", .path.display())]
    Protocol { path: PathBuf },
}

/// The `set=1` request that makes the device match `cfg` exactly (replacing peers and
/// their allowed IPs). `endpoints[i]` is peer i's resolved endpoint.
pub fn set_request(cfg: &WgConfig, endpoints: &[Option<SocketAddr>]) -> String {
    let i = &cfg.interface;
    let mut s = String::from("set=1\n");
    s.push_str(&format!("private_key={}\n", i.private_key.to_hex()));
    if let Some(p) = i.listen_port {
        s.push_str(&format!("listen_port={p}\n"));
    }
    s.push_str(&format!("fwmark={}\n", i.fwmark.unwrap_or(0)));
    s.push_str("replace_peers=true\n");
    for (n, p) in cfg.peers.iter().enumerate() {
        s.push_str(&format!("public_key={}\n", p.public_key.to_hex()));
        if let Some(psk) = &p.preshared_key {
            s.push_str(&format!("preshared_key={}\n", psk.to_hex()));
        }
        if let Some(Some(ep)) = endpoints.get(n) {
            s.push_str(&format!("endpoint={ep}\n"));
        }
        s.push_str(&format!(
            "persistent_keepalive_interval={}\n",
            p.persistent_keepalive.unwrap_or(0)
        ));
        s.push_str("replace_allowed_ips=true\n");
        for a in &p.allowed_ips {
            s.push_str(&format!("allowed_ip={}\n", a.network()));
        }
    }
    s.push('\n');
    s
}

/// The errno in a response (`...errno=N\n\n`); None when there is none.
pub fn response_errno(text: &str) -> Option<i32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("errno="))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
}

/// Sends `request` and waits for the blank line that ends the answer.
pub fn transact(path: &Path, request: &str, timeout: Duration) -> Result<String, UapiError> {
    let io = |source| UapiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut sock = UnixStream::connect(path).map_err(io)?;
    sock.set_read_timeout(Some(timeout)).map_err(io)?;
    sock.set_write_timeout(Some(timeout)).map_err(io)?;
    sock.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    let mut r = BufReader::new(sock);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        if line == "\n" {
            break;
        }
        answer.push_str(&line);
    }
    Ok(answer)
}

/// Applies `request` (a `set=1` block), checking the errno.
pub fn set(path: &Path, request: &str, timeout: Duration) -> Result<(), UapiError> {
    let answer = transact(path, request, timeout)?;
    match response_errno(&answer) {
        Some(0) => Ok(()),
        Some(errno) => Err(UapiError::Refused {
            path: path.to_owned(),
            errno,
        }),
        None => Err(UapiError::Protocol {
            path: path.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::parse;

    #[test]
    fn request_matches_the_file() {
        let text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                    ListenPort = 51820\nFwMark = 0x10\n\
                    [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
                    PresharedKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                    AllowedIPs = 203.0.113.7/24, fd00::/64\nPersistentKeepalive = 25\n\
                    [Peer]\nPublicKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n";
        let cfg = parse::parse(Path::new("t.conf"), text).unwrap();
        let ep: SocketAddr = "198.51.100.2:51820".parse().unwrap();
        let r = set_request(&cfg, &[Some(ep), None]);
        let want = "set=1\n\
            private_key=c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669\n\
            listen_port=51820\nfwmark=16\nreplace_peers=true\n\
            public_key=c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038\n\
            preshared_key=c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669\n\
            endpoint=198.51.100.2:51820\npersistent_keepalive_interval=25\n\
            replace_allowed_ips=true\nallowed_ip=203.0.113.0/24\nallowed_ip=fd00::/64\n\
            public_key=c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669\n\
            persistent_keepalive_interval=0\nreplace_allowed_ips=true\n\n";
        assert_eq!(r, want);
    }

    #[test]
    fn errno_of_answers() {
        assert_eq!(response_errno("errno=0\n"), Some(0));
        assert_eq!(response_errno("protocol_version=1\nerrno=22\n"), Some(22));
        assert_eq!(response_errno("garbage\n"), None);
    }
}
