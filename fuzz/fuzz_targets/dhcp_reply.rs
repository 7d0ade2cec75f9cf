//! The DHCP reply decoder and the renewal's answer check: any host on the LAN can send
//! the keeper packets on port 68, so any bytes must give `None` or a consistent reply,
//! never a panic; an answer is only ever taken for the transaction and MAC asked about.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vpn_ns::plain::dhcp::{Answer, Lease, answer, decode};

const MAC: [u8; 6] = [2, 0, 0, 0xaa, 0xbb, 0xcc];

fuzz_target!(|data: &[u8]| {
    let Some(r) = decode(data) else {
        return;
    };
    assert_ne!(r.kind, 0, "a reply without a message type must be refused");
    assert!(data.len() >= 240);
    let old = Lease {
        address: Ipv4Addr::new(192, 0, 2, 120),
        prefix: 24,
        router: None,
        dns: Vec::new(),
        domain: None,
        server: Ipv4Addr::new(192, 0, 2, 1),
        lease_secs: Some(120),
        renew_secs: None,
        rebind_secs: None,
    };
    if let Some(a) = answer(data, r.xid, MAC, &old) {
        assert_eq!(r.chaddr, MAC);
        if let Answer::Ack(l) = a {
            assert!(l.prefix <= 32);
            if let Some((t1, t2, end)) = l.times() {
                assert!(t1 <= t2 && t2 <= end, "{t1} {t2} {end}");
            }
        }
    }
    assert!(answer(data, r.xid.wrapping_add(1), MAC, &old).is_none());
});
