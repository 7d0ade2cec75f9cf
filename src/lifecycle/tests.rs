//! Unit tests of the lifecycle's pure parts.

use super::*;
use crate::spec::Address;

pub(super) fn spec(v6: bool) -> NetworkSpec {
    let mut addresses = vec![Address {
        local: "100.64.0.2/24".parse().unwrap(),
        peer: None,
    }];
    if v6 {
        addresses.push(Address {
            local: "fd00:64::1000/64".parse().unwrap(),
            peer: None,
        });
    }
    NetworkSpec {
        device: "tun0".parse().unwrap(),
        mtu: Some(1500),
        addresses,
        routes: vec![Route {
            dest: "203.0.113.0/24".parse().unwrap(),
            gateway: None,
            metric: None,
        }],
        gateway_v4: Some("100.64.0.1".parse().unwrap()),
        gateway_v6: None,
        dns: DnsSpec::default(),
    }
}

#[test]
fn default_routes_follow_address_families() {
    let r = routes_for(&spec(false), true);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].dest.to_string(), "0.0.0.0/0");
    assert_eq!(r[1].gateway, Some("100.64.0.1".parse().unwrap()));
    let r6 = routes_for(&spec(true), true);
    assert_eq!(r6.len(), 3);
    assert_eq!(r6[2].dest.to_string(), "::/0");
}

#[test]
fn no_default_route_when_disabled() {
    let r = routes_for(&spec(true), false);
    assert_eq!(r.len(), 1);
    assert!(r.iter().all(|r| !r.dest.is_default()));
}
