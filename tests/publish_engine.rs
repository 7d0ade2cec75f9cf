//! The relay engine (src/publish) between two real network namespaces (two sandboxes),
//! with real TCP and UDP traffic: large transfers, half-close, back-pressure, 1,000
//! concurrent connections, UDP sessions both ways, IPv6, a taken address, unpublish.
//! Needs root.

use vpn_ns_testkit as common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{self as sock, SockaddrStorage};
use vpn_ns::publish::side::{Kind, Side};
use vpn_ns::publish::{Direction, Endpoint, Engine, Place, Proto, PublishError, Rule};

use common::*;

/// Two namespaces: "host" (where [[publish]] listens) and "inside".
struct Pair {
    _a: Sandbox,
    _b: Sandbox,
    host_ns: File,
    inside_ns: File,
    host: Side,
    inside: Side,
}

fn pair(name: &str) -> Pair {
    let a = Sandbox::new(&format!("{name}-host"));
    let b = Sandbox::new(&format!("{name}-inside"));
    let open = |sb: &Sandbox| File::open(format!("/proc/{}/ns/net", sb.pid())).unwrap();
    let (host_ns, inside_ns) = (open(&a), open(&b));
    let host = Side::netns("test host", &host_ns).unwrap();
    let inside = Side::netns("test inside", &inside_ns).unwrap();
    Pair {
        _a: a,
        _b: b,
        host_ns,
        inside_ns,
        host,
        inside,
    }
}

impl Pair {
    fn engine(&self) -> Engine {
        Engine::start(
            Place::Netns("host", &self.host_ns),
            Place::Netns("inside", &self.inside_ns),
        )
        .unwrap()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rule(direction: Direction, proto: Proto, listen: &str, target: &str) -> Rule {
    Rule {
        direction,
        proto,
        listen: Endpoint(addr(listen)),
        target: Endpoint(addr(target)),
    }
}

fn blocking(side: &Side, v6: bool, udp: bool) -> OwnedFd {
    let fd = side.socket_blocking(Kind { v6, udp }).unwrap();
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    fd
}

fn listen_in(side: &Side, at: &str) -> TcpListener {
    let a = addr(at);
    let fd = blocking(side, a.is_ipv6(), false);
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(a)).unwrap();
    sock::listen(&fd, sock::Backlog::new(2048).unwrap()).unwrap();
    TcpListener::from(fd)
}

fn connect_in(side: &Side, to: &str) -> std::io::Result<TcpStream> {
    let a = addr(to);
    let fd = blocking(side, a.is_ipv6(), false);
    sock::connect(fd.as_raw_fd(), &SockaddrStorage::from(a))?;
    Ok(TcpStream::from(fd))
}

fn udp_in(side: &Side, at: &str) -> UdpSocket {
    let a = addr(at);
    let fd = blocking(side, a.is_ipv6(), true);
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(a)).unwrap();
    let u = UdpSocket::from(fd);
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u
}

/// Answers each connection once its client has finished sending (half-close): the
/// byte count and a checksum of everything it read, then closes.
fn half_close_server(l: TcpListener) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut all = Vec::new();
                c.read_to_end(&mut all).unwrap();
                let sum: u64 = all.iter().map(|&b| b as u64).sum();
                let _ = writeln!(c, "{} {sum}", all.len());
            });
        }
    });
}

fn settles(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_until(timeout, || if cond() { Ok(()) } else { Err(String::new()) }).is_ok()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn tcp_publish_relays_whole_streams_with_half_close_v4_and_v6() {
    if !require_root("tcp_publish_relays_whole_streams_with_half_close_v4_and_v6") {
        return;
    }
    let p = pair("pubtcp");
    half_close_server(listen_in(&p.inside, "127.0.0.1:9091"));
    half_close_server(listen_in(&p.inside, "[::1]:9091"));
    let mut e = p.engine();
    e.add(rule(
        Direction::Publish,
        Proto::Tcp,
        "127.0.0.1:8091",
        "127.0.0.1:9091",
    ))
    .unwrap();
    e.add(rule(
        Direction::Publish,
        Proto::Tcp,
        "[::1]:8091",
        "[::1]:9091",
    ))
    .unwrap();
    // Nothing listens on 8091 inside, 9091 on the host: the relay is the only path.
    assert!(connect_in(&p.inside, "127.0.0.1:8091").is_err());
    assert!(connect_in(&p.host, "127.0.0.1:9091").is_err());
    for at in ["127.0.0.1:8091", "[::1]:8091"] {
        let data = payload(24 << 20);
        let want = format!(
            "{} {}\n",
            data.len(),
            data.iter().map(|&b| b as u64).sum::<u64>()
        );
        let mut c = connect_in(&p.host, at).unwrap();
        let t = Instant::now();
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, want, "{at}");
        eprintln!(
            "{at}: 24 MiB relayed and answered after half-close in {:?}",
            t.elapsed()
        );
    }
    let st = e.status();
    assert_eq!(st.len(), 2);
    assert!(st.iter().all(|s| s.total == 1), "{st:?}");
    assert!(
        settles(Duration::from_secs(5), || e
            .status()
            .iter()
            .all(|s| s.active == 0)),
        "connections still counted: {:?}",
        e.status()
    );
}

#[test]
fn tcp_back_pressure_bounds_what_is_buffered() {
    if !require_root("tcp_back_pressure_bounds_what_is_buffered") {
        return;
    }
    let p = pair("pubbp");
    let l = listen_in(&p.inside, "127.0.0.1:7000");
    let (tx, rx) = std::sync::mpsc::channel();
    // Accepts and reads nothing until told to.
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        rx.recv().unwrap();
        let mut n = 0u64;
        let mut buf = vec![0; 1 << 16];
        loop {
            match c.read(&mut buf).unwrap() {
                0 => break,
                k => n += k as u64,
            }
        }
        let _ = writeln!(c, "{n}");
    });
    let mut e = p.engine();
    e.add(rule(
        Direction::Publish,
        Proto::Tcp,
        "127.0.0.1:7001",
        "127.0.0.1:7000",
    ))
    .unwrap();
    let mut c = connect_in(&p.host, "127.0.0.1:7001").unwrap();
    c.set_nonblocking(true).unwrap();
    let chunk = vec![1u8; 1 << 16];
    let mut sent = 0u64;
    let mut stalled_since = Instant::now();
    while stalled_since.elapsed() < Duration::from_secs(1) {
        match c.write(&chunk) {
            Ok(n) => {
                sent += n as u64;
                stalled_since = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(
            sent < 64 << 20,
            "{sent} bytes taken by a relay whose reader reads nothing"
        );
    }
    eprintln!("sender stalled after {sent} bytes (socket buffers + one pipe)");
    assert!(sent > 0);
    tx.send(()).unwrap();
    c.set_nonblocking(false).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer.trim(),
        sent.to_string(),
        "every byte taken was delivered"
    );
}

#[test]
fn a_thousand_concurrent_connections() {
    if !require_root("a_thousand_concurrent_connections") {
        return;
    }
    const N: usize = 1000;
    let p = pair("pubmany");
    let l = listen_in(&p.inside, "127.0.0.1:6000");
    // Echoes each line; a small stack per connection thread keeps 1,000 of them cheap.
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                })
                .unwrap();
        }
    });
    let mut e = p.engine();
    e.add(rule(
        Direction::Publish,
        Proto::Tcp,
        "127.0.0.1:6001",
        "127.0.0.1:6000",
    ))
    .unwrap();
    let t = Instant::now();
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = connect_in(&p.host, "127.0.0.1:6001").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(format!("{i:06}").as_bytes()).unwrap();
        conns.push(c);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut buf = [0u8; 6];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, format!("{i:06}").as_bytes());
    }
    eprintln!("{N} connections opened and echoed in {:?}", t.elapsed());
    let st = &e.status()[0];
    assert_eq!((st.active, st.total), (N as u64, N as u64), "{st:?}");
    drop(conns);
    assert!(
        settles(Duration::from_secs(10), || e.status()[0].active == 0),
        "still counted after close: {:?}",
        e.status()
    );
}

#[test]
fn udp_sessions_both_ways_with_idle_timeout_and_bound() {
    if !require_root("udp_sessions_both_ways_with_idle_timeout_and_bound") {
        return;
    }
    let p = pair("pubudp");
    // Echo servers that prefix the answer with where the datagram came from.
    for (side, at) in [(&p.host, "127.0.0.1:5300"), (&p.inside, "[::1]:5300")] {
        let s = udp_in(side, at);
        s.set_read_timeout(None).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let mut answer = format!("{from} ").into_bytes();
                answer.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&answer, from);
            }
        });
    }
    let mut e = p.engine();
    e.set_udp_limits(Duration::from_millis(500), 2);
    e.add(rule(
        Direction::HostAccess,
        Proto::Udp,
        "127.0.0.1:53",
        "127.0.0.1:5300",
    ))
    .unwrap();
    e.add(rule(
        Direction::Publish,
        Proto::Udp,
        "127.0.0.1:53",
        "[::1]:5300",
    ))
    .unwrap();
    let ask = |u: &UdpSocket, to: &str, msg: &str| -> String {
        u.send_to(msg.as_bytes(), addr(to)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = u.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr(to), "answers come from the relay's address");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // From inside to a host service, and from the host to a service inside.
    let c1 = udp_in(&p.inside, "127.0.0.1:0");
    let c2 = udp_in(&p.inside, "127.0.0.1:0");
    let a1 = ask(&c1, "127.0.0.1:53", "one");
    let a1b = ask(&c1, "127.0.0.1:53", "again");
    let a2 = ask(&c2, "127.0.0.1:53", "two");
    assert!(a1.ends_with(" one") && a1b.ends_with(" again") && a2.ends_with(" two"));
    let (s1, s2) = (a1.split(' ').next().unwrap(), a2.split(' ').next().unwrap());
    assert_eq!(
        s1,
        a1b.split(' ').next().unwrap(),
        "one session per client address"
    );
    assert_ne!(s1, s2, "each client has its own session");
    let h = udp_in(&p.host, "127.0.0.1:0");
    let a = ask(&h, "127.0.0.1:53", "in");
    assert!(a.starts_with("[::1]:") && a.ends_with(" in"), "{a}");
    let host_access = |e: &Engine| {
        e.status()
            .into_iter()
            .find(|s| s.rule.direction == Direction::HostAccess)
            .unwrap()
    };
    assert_eq!(host_access(&e).active, 2);
    // A third client: the bound of 2 makes the least recently active session go.
    let c3 = udp_in(&p.inside, "127.0.0.1:0");
    assert!(ask(&c3, "127.0.0.1:53", "three").ends_with(" three"));
    let st = host_access(&e);
    assert_eq!((st.active, st.total), (2, 3), "{st:?}");
    // Idle sessions end.
    assert!(
        settles(Duration::from_secs(5), || host_access(&e).active == 0),
        "idle sessions still live: {:?}",
        e.status()
    );
    assert!(ask(&c1, "127.0.0.1:53", "later").ends_with(" later"));
}

#[test]
fn a_taken_address_fails_add_and_unpublish_closes_everything() {
    if !require_root("a_taken_address_fails_add_and_unpublish_closes_everything") {
        return;
    }
    let p = pair("pubtaken");
    let _squatter = listen_in(&p.host, "127.0.0.1:4000");
    let mut e = p.engine();
    let r = rule(
        Direction::Publish,
        Proto::Tcp,
        "127.0.0.1:4000",
        "127.0.0.1:4001",
    );
    match e.add(r) {
        Err(err @ PublishError::Listen { .. }) => {
            let msg = err.to_string();
            assert!(
                msg.contains("127.0.0.1:4000/tcp") && msg.contains("in use"),
                "{msg}"
            );
        }
        other => panic!("expected a listen error, got {other:?}"),
    }
    assert!(e.status().is_empty());
    // Host access: listens inside, reaches only its target on the host.
    let l = listen_in(&p.host, "127.0.0.1:1143");
    let r = rule(
        Direction::HostAccess,
        Proto::Tcp,
        "127.0.0.1:1143",
        "127.0.0.1:1143",
    );
    e.add(r).unwrap();
    assert!(matches!(e.add(r), Err(PublishError::Duplicate { .. })));
    let mut c = connect_in(&p.inside, "127.0.0.1:1143").unwrap();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    e.remove(Direction::HostAccess, Proto::Tcp, r.listen)
        .unwrap();
    // The open connection is closed and the port refuses.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    let refused = connect_in(&p.inside, "127.0.0.1:1143").unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(matches!(
        e.remove(Direction::HostAccess, Proto::Tcp, r.listen),
        Err(PublishError::NotPublished { .. })
    ));
    // A target that refuses: the client's connection is closed, nothing else reached.
    e.add(rule(
        Direction::Publish,
        Proto::Tcp,
        "127.0.0.1:4002",
        "127.0.0.1:4003",
    ))
    .unwrap();
    let mut c = connect_in(&p.host, "127.0.0.1:4002").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    drop(e);
    // The engine's end closes every listener.
    assert!(connect_in(&p.host, "127.0.0.1:4002").is_err());
}

#[test]
fn the_connection_budget_closes_clients_past_it_and_recovers() {
    if !require_root("the_connection_budget_closes_clients_past_it_and_recovers") {
        return;
    }
    let p = pair("pubbudget");
    let l = listen_in(&p.inside, "127.0.0.1:6100");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut e = p.engine();
    e.set_tcp_limit(3);
    e.add(rule(
        Direction::Publish,
        Proto::Tcp,
        "127.0.0.1:6101",
        "127.0.0.1:6100",
    ))
    .unwrap();
    let echo = |c: &mut TcpStream| -> bool {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2];
        c.write_all(b"hi").is_ok() && c.read_exact(&mut buf).is_ok() && &buf == b"hi"
    };
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| connect_in(&p.host, "127.0.0.1:6101").unwrap())
        .collect();
    assert!(held.iter_mut().all(echo));
    // The kernel accepts the fourth; the relay closes it without relaying.
    let mut extra = connect_in(&p.host, "127.0.0.1:6101").unwrap();
    assert!(
        !echo(&mut extra),
        "a connection past the budget was relayed"
    );
    assert_eq!(e.status()[0].active, 3);
    drop(held.pop());
    assert!(settles(Duration::from_secs(5), || e.status()[0].active == 2));
    let mut again = connect_in(&p.host, "127.0.0.1:6101").unwrap();
    assert!(echo(&mut again), "room again after a connection closed");
}
