//! The data plane: peers (one boringtun `Tunn` each), cryptokey routing, and three
//! loops on dedicated threads — tun -> UDP (encapsulate), UDP -> tun (decapsulate,
//! roaming), timers (handshake retries, keepalives, rekeys by the library's own
//! timers). Blocking I/O on plain threads: no async runtime, no setns anywhere here.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, sockopt};

use super::BuiltinError;
use super::allowed::AllowedIps;
use super::request::{DeviceSet, PeerSet};
use crate::spec::IpNet;
use crate::wireguard::key::Key;

/// boringtun's device ticks its timers every 250 ms; `update_timers` expects about that.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Handshake initiations per second per peer before cookies are demanded (boringtun's).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
const SOCKET_BUFFER: usize = 7 << 20;
/// Room for the largest IP packet plus WireGuard's 32 bytes of overhead.
const BUF: usize = 65536 + 32;

pub struct Peer {
    pub public: [u8; 32],
    index: u32,
    tunn: Mutex<Tunn>,
    endpoint: Mutex<Option<SocketAddr>>,
    psk: Option<Key>,
    keepalive: u16,
}

/// A snapshot of one peer for `get=1` and status.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub public: Key,
    pub preshared: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub keepalive: u16,
    pub allowed_ips: Vec<IpNet>,
}

struct Identity {
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
}

#[derive(Default)]
struct State {
    identity: Option<Identity>,
    listen_port: u16,
    fwmark: u32,
    peers: HashMap<[u8; 32], Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    allowed: AllowedIps<Arc<Peer>>,
    next_index: u32,
}

/// One running WireGuard interface.
pub struct Device {
    iface: String,
    tun: File,
    udp: UdpSocket,
    /// The UDP socket is dual-stack (`[::]`): IPv4 peers are addressed as `::ffff:a.b.c.d`.
    dual_stack: bool,
    state: RwLock<State>,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking data-plane thread ends the process (see `process`), so a poisoned
    // lock only means "keep going with what is there".
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds the encrypted-side UDP socket in the calling thread's namespace (the host's):
/// one dual-stack `[::]:port` socket, or `0.0.0.0:port` where IPv6 is unavailable.
pub fn bind_udp(port: u16, fwmark: u32) -> Result<(UdpSocket, bool), BuiltinError> {
    let what = format!("UDP port {port}");
    let flags = SockFlag::SOCK_CLOEXEC;
    let (fd, dual): (OwnedFd, bool) =
        match socket::socket(AddressFamily::Inet6, SockType::Datagram, flags, None) {
            Ok(fd) => {
                socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)
                    .map_err(|e| BuiltinError::io("cannot configure", &what)(e.into()))?;
                let any = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
                socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any)
                    .map_err(|e| BuiltinError::io("cannot bind", &what)(e.into()))?;
                (fd, true)
            }
            Err(nix::errno::Errno::EAFNOSUPPORT) => {
                let fd = socket::socket(AddressFamily::Inet, SockType::Datagram, flags, None)
                    .map_err(|e| BuiltinError::io("cannot open", &what)(e.into()))?;
                let any = SockaddrIn::new(0, 0, 0, 0, port);
                socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any)
                    .map_err(|e| BuiltinError::io("cannot bind", &what)(e.into()))?;
                (fd, false)
            }
            Err(e) => return Err(BuiltinError::io("cannot open", &what)(e.into())),
        };
    // Bursts of a fast tunnel overflow the default buffers; wireguard-go asks for the
    // same 7 MiB (the Force variants pass rmem_max/wmem_max, we are root).
    for r in [
        socket::setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER),
        socket::setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER),
    ] {
        if let Err(e) = r {
            tracing::debug!("cannot enlarge the buffers of {what}: {e}");
        }
    }
    if fwmark != 0 {
        socket::setsockopt(&fd, sockopt::Mark, &fwmark)
            .map_err(|e| BuiltinError::io("cannot set the fwmark of", &what)(e.into()))?;
    }
    Ok((UdpSocket::from(fd), dual))
}

/// IPv4 peers reach a dual-stack socket as v4-mapped addresses; show and store them as
/// plain IPv4, as `wg` does.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

impl Device {
    /// Starts the interface over `tun` with the configuration `set` (which must carry
    /// the private key): binds the UDP socket here, in the caller's namespace.
    pub fn new(iface: &str, tun: File, set: DeviceSet) -> Result<Arc<Device>, BuiltinError> {
        if set.private_key.is_none() {
            return Err(BuiltinError::Request {
                line: 1,
                msg: "the configuration has no private_key".to_owned(),
            });
        }
        let (udp, dual_stack) = bind_udp(set.listen_port.unwrap_or(0), set.fwmark.unwrap_or(0))?;
        Device::with_socket(iface, tun, udp, dual_stack, set)
    }

    /// Like `new`, over a UDP socket from `bind_udp` the caller bound earlier (the
    /// unprivileged keeper binds it in the host namespace before it leaves it).
    pub fn with_socket(
        iface: &str,
        tun: File,
        udp: UdpSocket,
        dual_stack: bool,
        set: DeviceSet,
    ) -> Result<Arc<Device>, BuiltinError> {
        if set.private_key.is_none() {
            return Err(BuiltinError::Request {
                line: 1,
                msg: "the configuration has no private_key".to_owned(),
            });
        }
        let port = udp
            .local_addr()
            .map_err(BuiltinError::io(
                "cannot read the address of",
                "the UDP socket",
            ))?
            .port();
        let dev = Arc::new(Device {
            iface: iface.to_owned(),
            tun,
            udp,
            dual_stack,
            state: RwLock::new(State {
                listen_port: port,
                fwmark: set.fwmark.unwrap_or(0),
                ..State::default()
            }),
            stopping: AtomicBool::new(false),
        });
        dev.apply(set)?;
        Ok(dev)
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a `set=1` request. The listening port and fwmark are fixed at start: a
    /// change is refused (EINVAL on the UAPI socket) rather than half-applied.
    pub fn apply(&self, set: DeviceSet) -> Result<(), BuiltinError> {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let refuse = |msg: &str| BuiltinError::Request {
            line: 1,
            msg: msg.to_owned(),
        };
        if set
            .listen_port
            .is_some_and(|p| p != 0 && p != st.listen_port)
        {
            return Err(refuse(
                "the listening port of a running built-in device cannot change",
            ));
        }
        if set.fwmark.is_some_and(|m| m != st.fwmark) {
            return Err(refuse(
                "the fwmark of a running built-in device cannot change",
            ));
        }
        if let Some(k) = set.private_key {
            let secret = StaticSecret::from(*k.bytes());
            let public = PublicKey::from(&secret);
            let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
            st.identity = Some(Identity {
                secret,
                public,
                limiter,
            });
            // Every session was made with the old key: start all peers afresh.
            let old: Vec<Arc<Peer>> = st.peers.values().cloned().collect();
            for p in old {
                let ep = *lock(&p.endpoint);
                let fresh = new_peer(&mut st, p.public, p.psk.clone(), p.keepalive, ep);
                replace_peer(&mut st, &p, fresh);
            }
        }
        if set.replace_peers {
            st.peers.clear();
            st.by_index.clear();
            st.allowed = AllowedIps::default();
        }
        for ps in set.peers {
            apply_peer(&mut st, ps);
        }
        Ok(())
    }

    /// Peers as `wg show` sees them: (private key, listen port, fwmark, peers).
    pub fn status(&self) -> (Option<Key>, u16, u32, Vec<PeerStatus>) {
        // Never lock a peer's Tunn while holding the state lock (the UDP thread takes
        // them in the other order): copy what is needed, then let go.
        let (key, port, mark, peers, allowed) = {
            let st = self.read_state();
            let peers: Vec<Arc<Peer>> = st.peers.values().cloned().collect();
            let allowed: Vec<(IpNet, [u8; 32])> =
                st.allowed.entries().map(|(n, p)| (n, p.public)).collect();
            let key = st
                .identity
                .as_ref()
                .map(|i| Key::from_bytes(i.secret.to_bytes()));
            (key, st.listen_port, st.fwmark, peers, allowed)
        };
        let now = SystemTime::now();
        let mut out: Vec<PeerStatus> = peers
            .iter()
            .map(|p| {
                let (since, tx, rx, _, _) = lock(&p.tunn).stats();
                PeerStatus {
                    public: Key::from_bytes(p.public),
                    preshared: p.psk.clone(),
                    endpoint: *lock(&p.endpoint),
                    last_handshake: since.and_then(|d| now.checked_sub(d)),
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                    keepalive: p.keepalive,
                    allowed_ips: Vec::new(),
                }
            })
            .collect();
        for (net, public) in allowed {
            if let Some(s) = out.iter_mut().find(|s| s.public.bytes() == &public) {
                s.allowed_ips.push(net);
            }
        }
        out.sort_by(|a, b| a.public.bytes().cmp(b.public.bytes()));
        (key, port, mark, out)
    }

    /// Asks the loops to end (they notice at their next packet or tick).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn wire(&self, ep: SocketAddr) -> SocketAddr {
        match ep {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }

    fn send(&self, packet: &[u8], ep: SocketAddr) {
        if let Err(e) = self.udp.send_to(packet, self.wire(ep)) {
            tracing::trace!("{}: cannot send to {ep}: {e}", self.iface);
        }
    }

    /// tun -> peers: one packet at a time, routed by its destination.
    pub fn tun_loop(&self) -> io::Result<()> {
        let mut buf = vec![0u8; BUF];
        let mut out = vec![0u8; BUF];
        let mut tun = &self.tun;
        while !self.stopping.load(Ordering::Relaxed) {
            let n = match tun.read(&mut buf) {
                // A tun never reads 0 bytes; a closed stand-in (tests) has ended.
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let packet = &buf[..n];
            let Some(dst) = Tunn::dst_address(packet) else {
                continue;
            };
            let Some(peer) = self.read_state().allowed.lookup(dst).cloned() else {
                continue;
            };
            let ep = *lock(&peer.endpoint);
            let mut t = lock(&peer.tunn);
            match t.encapsulate(packet, &mut out) {
                TunnResult::WriteToNetwork(p) => {
                    if let Some(ep) = ep {
                        self.send(p, ep);
                    }
                }
                TunnResult::Err(e) => tracing::trace!("{}: encapsulate: {e:?}", self.iface),
                _ => {}
            }
        }
        Ok(())
    }

    /// Which peer a datagram is for: handshake initiations by the sender's static key
    /// (decrypted with ours), everything else by our session index.
    fn peer_of(&self, packet: &Packet) -> Option<Arc<Peer>> {
        let st = self.read_state();
        match packet {
            Packet::HandshakeInit(p) => {
                let id = st.identity.as_ref()?;
                let half = parse_handshake_anon(&id.secret, &id.public, p).ok()?;
                st.peers.get(&half.peer_static_public).cloned()
            }
            Packet::HandshakeResponse(p) => st.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Packet::PacketCookieReply(p) => st.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Packet::PacketData(p) => st.by_index.get(&(p.receiver_idx >> 8)).cloned(),
        }
    }

    /// UDP -> tun: authenticates, decrypts, checks the inner source against the peer's
    /// AllowedIPs, and follows the peer to the address its last valid packet came from.
    pub fn udp_loop(&self) -> io::Result<()> {
        let mut buf = vec![0u8; BUF];
        let mut out = vec![0u8; BUF];
        let mut cookie = vec![0u8; 256];
        while !self.stopping.load(Ordering::Relaxed) {
            let (n, from) = match self.udp.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let from = unmap(from);
            let datagram = &buf[..n];
            // The device-wide limiter checks mac1/mac2 before any Diffie-Hellman and
            // answers with a cookie under load.
            let limiter = self
                .read_state()
                .identity
                .as_ref()
                .map(|i| Arc::clone(&i.limiter));
            let Some(limiter) = limiter else {
                continue;
            };
            let parsed = match limiter.verify_packet(Some(from.ip()), datagram, &mut cookie) {
                Ok(p) => p,
                Err(TunnResult::WriteToNetwork(c)) => {
                    self.send(c, from);
                    continue;
                }
                Err(_) => continue,
            };
            let Some(peer) = self.peer_of(&parsed) else {
                continue;
            };
            let mut t = lock(&peer.tunn);
            let mut flush = false;
            let ok = match t.decapsulate(Some(from.ip()), datagram, &mut out) {
                TunnResult::Done => true,
                TunnResult::Err(e) => {
                    tracing::trace!("{}: decapsulate from {from}: {e:?}", self.iface);
                    false
                }
                TunnResult::WriteToNetwork(p) => {
                    self.send(p, from);
                    flush = true;
                    true
                }
                TunnResult::WriteToTunnelV4(p, src) => {
                    self.to_tun(&peer, p, IpAddr::V4(src));
                    true
                }
                TunnResult::WriteToTunnelV6(p, src) => {
                    self.to_tun(&peer, p, IpAddr::V6(src));
                    true
                }
            };
            if flush {
                // Packets queued while the handshake was in flight.
                while let TunnResult::WriteToNetwork(p) = t.decapsulate(None, &[], &mut out) {
                    self.send(p, from);
                }
            }
            drop(t);
            if ok {
                *lock(&peer.endpoint) = Some(from);
            }
        }
        Ok(())
    }

    fn to_tun(&self, peer: &Arc<Peer>, packet: &[u8], src: IpAddr) {
        let owner = self.read_state().allowed.lookup(src).cloned();
        if !owner.is_some_and(|o| Arc::ptr_eq(&o, peer)) {
            tracing::trace!(
                "{}: dropped a packet from {src}: not in the peer's AllowedIPs",
                self.iface
            );
            return;
        }
        if let Err(e) = (&self.tun).write_all(packet) {
            tracing::trace!("{}: cannot write to the tun: {e}", self.iface);
        }
    }

    /// Drives each peer's timers: handshake retries, persistent keepalives, rekeys.
    pub fn timer_loop(&self) {
        let mut out = vec![0u8; BUF];
        while !self.stopping.load(Ordering::Relaxed) {
            std::thread::sleep(TIMER_TICK);
            let peers: Vec<Arc<Peer>> = self.read_state().peers.values().cloned().collect();
            if let Some(id) = &self.read_state().identity {
                id.limiter.reset_count();
            }
            for peer in peers {
                let ep = *lock(&peer.endpoint);
                let mut t = lock(&peer.tunn);
                match t.update_timers(&mut out) {
                    TunnResult::WriteToNetwork(p) => {
                        if let Some(ep) = ep {
                            self.send(p, ep);
                        }
                    }
                    TunnResult::Err(e) => tracing::trace!("{}: timers: {e:?}", self.iface),
                    _ => {}
                }
            }
        }
    }
}

fn new_peer(
    st: &mut State,
    public: [u8; 32],
    psk: Option<Key>,
    keepalive: u16,
    endpoint: Option<SocketAddr>,
) -> Arc<Peer> {
    let id = st
        .identity
        .as_ref()
        .expect("a device always has a private key");
    // Indices are local session ids (24 bits; the low 8 are the Tunn's session slot).
    let index = st.next_index & 0x00ff_ffff;
    st.next_index = st.next_index.wrapping_add(1);
    let tunn = Tunn::new(
        id.secret.clone(),
        PublicKey::from(public),
        psk.as_ref().map(|k| *k.bytes()),
        (keepalive != 0).then_some(keepalive),
        index,
        None,
    );
    Arc::new(Peer {
        public,
        index,
        tunn: Mutex::new(tunn),
        endpoint: Mutex::new(endpoint),
        psk,
        keepalive,
    })
}

/// Puts `fresh` where `old` was: same key, same AllowedIPs.
fn replace_peer(st: &mut State, old: &Arc<Peer>, fresh: Arc<Peer>) {
    st.by_index.remove(&old.index);
    let nets: Vec<IpNet> = st
        .allowed
        .entries()
        .filter(|(_, p)| Arc::ptr_eq(p, old))
        .map(|(n, _)| n)
        .collect();
    for n in &nets {
        st.allowed.insert(n, Arc::clone(&fresh));
    }
    st.by_index.insert(fresh.index, Arc::clone(&fresh));
    st.peers.insert(fresh.public, fresh);
}

fn apply_peer(st: &mut State, ps: PeerSet) {
    let key = *ps.public_key.bytes();
    let existing = st.peers.get(&key).cloned();
    if ps.remove {
        if let Some(old) = existing {
            st.peers.remove(&key);
            st.by_index.remove(&old.index);
            st.allowed.retain(|p| !Arc::ptr_eq(p, &old));
        }
        return;
    }
    if ps.update_only && existing.is_none() {
        return;
    }
    // A peer sending to us with our own public key would be ourselves.
    if st
        .identity
        .as_ref()
        .is_some_and(|i| i.public.as_bytes() == &key)
    {
        return;
    }
    let peer = match existing {
        Some(old) => {
            let psk_changed = ps
                .preshared_key
                .as_ref()
                .is_some_and(|new| new.as_ref() != old.psk.as_ref());
            let ka_changed = ps.keepalive.is_some_and(|k| k != old.keepalive);
            if let Some(ep) = ps.endpoint {
                *lock(&old.endpoint) = Some(ep);
            }
            if psk_changed || ka_changed {
                let psk = match ps.preshared_key {
                    Some(p) => p,
                    None => old.psk.clone(),
                };
                let ep = *lock(&old.endpoint);
                let fresh = new_peer(st, key, psk, ps.keepalive.unwrap_or(old.keepalive), ep);
                replace_peer(st, &old, Arc::clone(&fresh));
                fresh
            } else {
                old
            }
        }
        None => {
            let psk = ps.preshared_key.flatten();
            let fresh = new_peer(st, key, psk, ps.keepalive.unwrap_or(0), ps.endpoint);
            st.by_index.insert(fresh.index, Arc::clone(&fresh));
            st.peers.insert(key, Arc::clone(&fresh));
            fresh
        }
    };
    if ps.replace_allowed_ips {
        st.allowed.retain(|p| !Arc::ptr_eq(p, &peer));
    }
    for net in &ps.allowed_ips {
        st.allowed.insert(net, Arc::clone(&peer));
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
