//! Two devices talking over UDP on loopback, each with a SOCK_SEQPACKET socket pair
//! standing in for its tun (packet boundaries kept, no root needed): handshake, both
//! directions, endpoint learning, AllowedIPs on the way in, status and `get=1`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use boringtun::x25519::{PublicKey, StaticSecret};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use super::*;
use crate::wireguard::builtin::{request, server};

fn pair() -> (File, File) {
    let (a, b): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    (File::from(a), File::from(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A minimal IPv4/UDP packet (boringtun reads the version, addresses and total length).
fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = (28 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39]);
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn start(dev: &Arc<Device>) {
    for f in [
        |d: Arc<Device>| drop(d.tun_loop()),
        |d: Arc<Device>| drop(d.udp_loop()),
        |d: Arc<Device>| d.timer_loop(),
    ] {
        let d = Arc::clone(dev);
        std::thread::spawn(move || f(d));
    }
}

fn read_timeout(f: &File, d: Duration) -> Option<Vec<u8>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::try_from(d).unwrap()).unwrap() == 0 {
        return None;
    }
    let mut buf = vec![0u8; 2048];
    let n = (&*f).read(&mut buf).unwrap();
    buf.truncate(n);
    Some(buf)
}

#[test]
fn two_devices_handshake_carry_traffic_and_filter_sources() {
    let (ka, kb) = ([0x11u8; 32], [0x22u8; 32]);
    let pa = PublicKey::from(&StaticSecret::from(ka));
    let pb = PublicKey::from(&StaticSecret::from(kb));
    let psk = [0x33u8; 32];
    let (tun_b, app_b) = pair();
    let b = Device::new(
        "tb",
        tun_b,
        request::parse(&format!(
            "set=1\nprivate_key={}\nlisten_port=0\npublic_key={}\npreshared_key={}\nallowed_ip=10.0.0.1/32\n",
            hex(&kb),
            hex(pa.as_bytes()),
            hex(&psk)
        ))
        .unwrap(),
    )
    .unwrap();
    let port_b = b.status().1;
    let (tun_a, app_a) = pair();
    let a = Device::new(
        "ta",
        tun_a,
        request::parse(&format!(
            "set=1\nprivate_key={}\npublic_key={}\npreshared_key={}\nendpoint=127.0.0.1:{port_b}\n\
             allowed_ip=10.0.0.2/32\nallowed_ip=fd00::/64\n",
            hex(&ka),
            hex(pb.as_bytes()),
            hex(&psk)
        ))
        .unwrap(),
    )
    .unwrap();
    start(&a);
    start(&b);
    let wait = Duration::from_secs(5);

    // A -> B: the first packet starts the handshake and is delivered after it.
    let out = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello");
    (&app_a).write_all(&out).unwrap();
    assert_eq!(read_timeout(&app_b, wait).as_deref(), Some(&out[..]));
    // B learned A's endpoint from the handshake and answers.
    let back = ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"world");
    (&app_b).write_all(&back).unwrap();
    assert_eq!(read_timeout(&app_a, wait).as_deref(), Some(&back[..]));
    // B drops what A sends from a source outside the AllowedIPs B has for A.
    let spoof = ipv4([10, 0, 0, 9], [10, 0, 0, 2], b"spoof");
    (&app_a).write_all(&spoof).unwrap();
    assert_eq!(read_timeout(&app_b, Duration::from_millis(300)), None);
    // Nothing for a destination no peer owns.
    (&app_a)
        .write_all(&ipv4([10, 0, 0, 1], [192, 0, 2, 1], b"nowhere"))
        .unwrap();

    let (key, _, _, peers) = a.status();
    assert_eq!(key.unwrap().bytes(), &ka);
    assert_eq!(peers.len(), 1);
    let p = &peers[0];
    assert!(p.last_handshake.is_some());
    assert!(p.tx_bytes >= out.len() as u64 && p.rx_bytes >= back.len() as u64);
    assert_eq!(
        p.endpoint,
        Some(format!("127.0.0.1:{port_b}").parse().unwrap())
    );
    let nets: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.2/32", "fd00::/64"]);
    let (_, _, _, bp) = b.status();
    assert!(
        bp[0].endpoint.is_some_and(|e| e.ip().is_loopback()),
        "B learned A's endpoint: {bp:?}"
    );
    let get = server::get_response(&a);
    assert!(
        get.contains(&format!("public_key={}\n", hex(pb.as_bytes()))),
        "{get}"
    );
    assert!(get.contains(&format!("preshared_key={}\n", hex(&psk))));
    assert!(get.ends_with("errno=0\n\n"));
    assert!(!get.contains("last_handshake_time_sec=0\n"), "{get}");

    // Live changes: a removed peer takes its AllowedIPs with it; port changes are refused.
    a.apply(
        request::parse(&format!(
            "set=1\npublic_key={}\nremove=true\n",
            hex(pb.as_bytes())
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(a.status().3.is_empty());
    assert!(
        a.apply(request::parse("set=1\nlisten_port=1\n").unwrap())
            .is_err()
    );
    a.stop();
    b.stop();
}
