//! The UAPI socket of a built-in device: `/run/wireguard/<iface>.sock`, mode 0600 in a
//! root-owned directory, the path `wg show` and `wg set` use for userspace
//! implementations. `get=1` reports the device and per-peer statistics; `set=1` applies
//! changes (the same parser as the start-up configuration).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::device::Device;
use super::{BuiltinError, request};
use crate::wireguard::uapi::{SOCKET_DIR, socket_path};

/// A client gets this long per request; the socket is root-only, this only bounds a
/// stuck client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests larger than this are refused (a 10,000-AllowedIPs `set` is ~300 KiB).
const MAX_REQUEST: usize = 16 << 20;

pub struct Server {
    path: PathBuf,
    listener: UnixListener,
}

/// The socket directory must be ours: a directory (not a symlink) owned by root and
/// writable by nobody else, or a local user could swap the socket.
fn check_dir(dir: &Path) -> Result<(), BuiltinError> {
    let created = crate::owned::create_dir(dir, 0o755)
        .map_err(BuiltinError::io("cannot create", dir.display().to_string()))?;
    if created {
        return Ok(());
    }
    let m = fs::symlink_metadata(dir).map_err(BuiltinError::io(
        "cannot inspect",
        dir.display().to_string(),
    ))?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(BuiltinError::io("refusing", dir.display().to_string())(
            io::Error::other("not a root-owned directory writable only by root"),
        ));
    }
    Ok(())
}

impl Server {
    /// Binds the socket of `iface`. A leftover socket nobody answers on is replaced; a
    /// live one (another implementation serving that name) is refused.
    pub fn bind(iface: &str) -> Result<Server, BuiltinError> {
        check_dir(Path::new(SOCKET_DIR))?;
        Server::bind_at(socket_path(iface))
    }

    /// Binds at `path`, whose directory the caller has checked (a user connection's
    /// keeper: its own 0700 runtime directory), with the same stale/live rule.
    pub fn bind_at(path: PathBuf) -> Result<Server, BuiltinError> {
        let what = path.display().to_string();
        if fs::symlink_metadata(&path).is_ok() {
            if UnixStream::connect(&path).is_ok() {
                return Err(BuiltinError::io("refusing to replace", what)(
                    io::Error::from(io::ErrorKind::AddrInUse),
                ));
            }
            fs::remove_file(&path).map_err(BuiltinError::io("cannot remove stale", &what))?;
        }
        let listener = UnixListener::bind(&path).map_err(BuiltinError::io("cannot bind", &what))?;
        // Root only, whatever the host process's umask (`wg-builtin` sets 077, so there
        // it is born 0600; before this chmod nobody else could connect anyway: connect
        // needs write permission, which a 022 umask never gives).
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(BuiltinError::io("cannot restrict", &what))?;
        Ok(Server { path, listener })
    }

    /// Answers clients one at a time until the listener fails.
    pub fn serve(&self, dev: &Device) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(s) => {
                    if let Err(e) = handle(dev, s) {
                        tracing::debug!("{}: UAPI client: {e}", dev.iface());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("{}: UAPI socket: {e}", dev.iface());
                    return;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn handle(dev: &Device, s: UnixStream) -> io::Result<()> {
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(());
        }
        match first.trim_end() {
            "get=1" => {
                // The request ends with a blank line.
                let mut rest = String::new();
                while r.read_line(&mut rest)? > 0 && !rest.ends_with("\n\n") && rest != "\n" {}
                w.write_all(get_response(dev).as_bytes())?;
            }
            "set=1" => {
                let mut body = String::from("set=1\n");
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line)? == 0 || line == "\n" {
                        break;
                    }
                    if body.len() + line.len() > MAX_REQUEST {
                        w.write_all(b"errno=7\n\n")?;
                        return Ok(());
                    }
                    body.push_str(&line);
                }
                let errno = match request::parse(&body).and_then(|set| dev.apply(set)) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::info!("{}: refused a UAPI set: {e}", dev.iface());
                        libc::EINVAL
                    }
                };
                w.write_all(format!("errno={errno}\n\n").as_bytes())?;
            }
            _ => {
                w.write_all(format!("errno={}\n\n", libc::EINVAL).as_bytes())?;
                return Ok(());
            }
        }
    }
}

/// The `get=1` answer, in wireguard-go's order, ending `errno=0` and a blank line.
pub fn get_response(dev: &Device) -> String {
    let (key, port, mark, peers) = dev.status();
    let mut s = String::new();
    if let Some(k) = key {
        let _ = writeln!(s, "private_key={}", k.to_hex());
    }
    let _ = writeln!(s, "listen_port={port}");
    if mark != 0 {
        let _ = writeln!(s, "fwmark={mark}");
    }
    for p in peers {
        let _ = writeln!(s, "public_key={}", p.public.to_hex());
        if let Some(k) = &p.preshared {
            let _ = writeln!(s, "preshared_key={}", k.to_hex());
        }
        let _ = writeln!(s, "protocol_version=1");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        let hs = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(s, "last_handshake_time_sec={}", hs.as_secs());
        let _ = writeln!(s, "last_handshake_time_nsec={}", hs.subsec_nanos());
        let _ = writeln!(s, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(s, "persistent_keepalive_interval={}", p.keepalive);
        for a in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={a}");
        }
    }
    s.push_str("errno=0\n\n");
    s
}
