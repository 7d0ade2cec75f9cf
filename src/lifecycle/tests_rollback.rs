//! The engine over the in-memory fake: a failure injected at each step of up, for each
//! kind, and what the rollback undid, in which order, and what remains; down going on
//! past failures. No root needed.

use std::path::Path;

use futures::executor::block_on;

use super::edges::Namespaces;
use super::fake::{Fake, World};
use super::*;
use crate::plain::links::host_veth_name;
use crate::spec::Address;

pub(super) fn conn(toml: &str) -> Connection {
    crate::config::parse("work", Path::new("/etc/vpn-ns/work.toml"), toml).expect("config")
}

pub(super) fn hook() -> Connection {
    conn("type = \"openvpn\"\n")
}

pub(super) fn routed() -> Connection {
    conn("type = \"routed\"\n[routed]\nuplink = \"wan0\"\n[dns]\nservers = [\"192.0.2.53\"]\n")
}

pub(super) fn macvlan(dhcp: bool) -> Connection {
    match dhcp {
        true => conn("type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\ndhcp = true\n"),
        false => conn(
            "type = \"macvlan\"\n[macvlan]\nparent = \"lan0\"\naddress = \"192.0.2.10/24\"\n\
             gateway = \"192.0.2.1\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
        ),
    }
}

pub(super) fn spec() -> NetworkSpec {
    NetworkSpec {
        device: "tun0".parse().unwrap(),
        mtu: Some(1400),
        addresses: vec![Address {
            local: "100.64.0.2/24".parse().unwrap(),
            peer: None,
        }],
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

/// A fake host with the kind's host device; its world before anything happens.
pub(super) fn host_for(c: &Connection) -> (Fake, World) {
    let f = Fake::new();
    f.host_link(match c.kind.tag() {
        crate::config::ConnectionType::Routed => "wan0",
        crate::config::ConnectionType::Macvlan => "lan0",
        _ => "tun0",
    });
    let w = f.world.borrow().clone();
    (f, w)
}

pub(super) fn up_any(f: &Fake, c: &Connection) -> Result<(), LifecycleError> {
    match c.kind.tag() {
        crate::config::ConnectionType::Routed | crate::config::ConnectionType::Macvlan => {
            block_on(up_plain(f, c)).map(drop)
        }
        _ => block_on(up(f, c, &spec(), Origin::OpenvpnHook, None)).map(drop),
    }
}

/// Fails the `n`-th call of `op` during up of `c`: up fails, and returns what the
/// log shows from the failure on.
fn fail_up(c: &Connection, op: &str, n: usize) -> (Fake, World, Vec<String>) {
    let (f, before) = host_for(c);
    f.fail(op, n);
    let r = up_any(&f, c);
    assert!(r.is_err(), "up must fail when {op} #{n} fails");
    let after = f.after_failure();
    (f, before, after)
}

pub(super) fn assert_as_before(f: &Fake, before: &World, when: &str) {
    assert_eq!(
        &*f.world.borrow(),
        before,
        "{when}: the system is not as before"
    );
}

const HOOK_UNDO: [&str; 3] = [
    "link.move tun0 work->host as tun0",
    "netns.delete work",
    "state.remove work",
];

#[test]
fn hook_up_takes_these_steps() {
    let c = hook();
    let (f, _) = host_for(&c);
    up_any(&f, &c).unwrap();
    assert_eq!(
        *f.log.borrow(),
        [
            "state.save work intent",
            "netns.create work",
            "link.up work lo",
            "link.move tun0 host->work as tun0",
            "link.mtu work tun0 1400",
            "addr.add work tun0 100.64.0.2/24",
            "link.up work tun0",
            "route.add work tun0 203.0.113.0/24",
            "route.add work tun0 0.0.0.0/0",
            "dns.write work",
            "keeper.start work",
            "state.save work up",
        ]
    );
}

#[test]
fn failed_intent_record_changes_nothing() {
    let (f, before, after) = fail_up(&hook(), "state.save", 1);
    assert_eq!(after, ["!state.save work intent"]);
    assert_as_before(&f, &before, "intent");
}

#[test]
fn failed_netns_create_removes_the_intent_record() {
    let (f, before, after) = fail_up(&hook(), "netns.create", 1);
    assert_eq!(after, ["!netns.create work", "state.remove work"]);
    assert_as_before(&f, &before, "netns.create");
}

#[test]
fn failed_lo_up_deletes_the_namespace_then_the_record() {
    let (f, before, after) = fail_up(&hook(), "link.up", 1);
    assert_eq!(
        after,
        ["!link.up work lo", "netns.delete work", "state.remove work"]
    );
    assert_as_before(&f, &before, "lo up");
}

#[test]
fn failed_move_leaves_the_device_on_the_host() {
    let (f, before, after) = fail_up(&hook(), "link.move", 1);
    assert_eq!(
        after,
        [
            "!link.move tun0 host->work as tun0",
            "netns.delete work",
            "state.remove work"
        ]
    );
    assert_as_before(&f, &before, "move");
}

#[test]
fn failed_address_hands_the_device_back_first() {
    for (op, first) in [
        ("link.mtu", "!link.mtu work tun0 1400"),
        ("addr.add", "!addr.add work tun0 100.64.0.2/24"),
        ("route.add", "!route.add work tun0 203.0.113.0/24"),
        ("dns.write", "!dns.write work"),
    ] {
        let (f, before, after) = fail_up(&hook(), op, 1);
        assert_eq!(after[0], first);
        assert_eq!(after[1..], HOOK_UNDO, "{op}");
        assert_as_before(&f, &before, op);
    }
}

#[test]
fn failed_keeper_removes_dns_files_then_the_rest() {
    let (f, before, after) = fail_up(&hook(), "keeper.start", 1);
    assert_eq!(after[..2], ["!keeper.start work", "dns.remove work"]);
    assert_eq!(after[2..], HOOK_UNDO);
    assert_as_before(&f, &before, "keeper");
}

#[test]
fn failed_final_record_stops_the_new_keeper() {
    let (f, before, after) = fail_up(&hook(), "state.save", 2);
    assert_eq!(
        after[..3],
        [
            "!state.save work up",
            "keeper.stop work 1000",
            "dns.remove work"
        ]
    );
    assert_eq!(after[3..], HOOK_UNDO);
    assert_as_before(&f, &before, "final record");
}

#[test]
fn reused_namespace_is_left_in_place() {
    let c = hook();
    let (f, _) = host_for(&c);
    Namespaces::create(&f, &c.netns).unwrap();
    // Up brings lo up in any namespace it uses, and leaves it up.
    let lo = (Some("work".to_owned()), "lo".to_owned());
    f.world.borrow_mut().links.get_mut(&lo).unwrap().up = true;
    let before = f.world.borrow().clone();
    f.fail("addr.add", 1);
    assert!(up_any(&f, &c).is_err());
    assert_eq!(
        f.after_failure(),
        [
            "!addr.add work tun0 100.64.0.2/24",
            "link.move tun0 work->host as tun0"
        ]
    );
    assert_as_before(&f, &before, "reused namespace");
}

#[test]
fn rollback_goes_on_past_a_failed_undo_and_keeps_the_owner() {
    let c = hook();
    let (f, _) = host_for(&c);
    f.fail("keeper.start", 1);
    f.fail("netns.delete", 1);
    let err = up_any(&f, &c).unwrap_err();
    assert_eq!(
        f.after_failure(),
        [
            "!keeper.start work",
            "dns.remove work",
            "link.move tun0 work->host as tun0",
            "!netns.delete work"
        ]
    );
    // The namespace is left, so its intent record stays: down knows it is ours.
    let w = f.world.borrow();
    assert!(w.namespaces.contains("work"));
    assert!(w.states["work"].creating && w.states["work"].netns_created);
    assert!(w.links.contains_key(&(None, "tun0".to_owned())));
    let LifecycleError::RollbackIncomplete { error, left } = &err else {
        panic!("both failures reported: {err}");
    };
    assert!(matches!(**error, LifecycleError::Keeper(_)), "{err}");
    assert_eq!(left.0.len(), 1, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("injected") && text.contains("cannot delete namespace"),
        "{text}"
    );
}

#[test]
fn born_device_goes_with_the_namespace() {
    let c = conn("type = \"wireguard\"\n");
    let f = Fake::new();
    f.fail("route.add", 1);
    let make: MakeDevice<'_> = Box::new(|_ns| {
        Box::pin(async {
            f.ns_link("work", "tun0");
            Ok(None)
        })
    });
    let r = block_on(up_in_place(&f, &c, &spec(), Origin::Wireguard, make));
    assert!(r.is_err());
    let log = f.log.borrow();
    assert_eq!(
        log[..3],
        [
            "state.save work intent",
            "netns.create work",
            "link.up work lo"
        ]
    );
    // Made inside: no move, and nothing to hand back; it goes with the namespace.
    assert_eq!(log[3], "born work tun0");
    assert_eq!(
        f.after_failure(),
        [
            "!route.add work tun0 203.0.113.0/24",
            "netns.delete work",
            "state.remove work"
        ]
    );
    assert_eq!(*f.world.borrow(), World::default());
}

#[test]
fn rollback_keeps_the_namespace_while_the_device_cannot_go_back() {
    let c = hook();
    let (f, before) = host_for(&c);
    f.fail("keeper.start", 1);
    f.fail("link.move", 2);
    assert!(up_any(&f, &c).is_err());
    assert_eq!(
        f.after_failure(),
        [
            "!keeper.start work",
            "dns.remove work",
            "!link.move tun0 work->host as tun0"
        ]
    );
    {
        let w = f.world.borrow();
        assert!(w.namespaces.contains("work"));
        assert!(
            w.links
                .contains_key(&(Some("work".to_owned()), "tun0".to_owned()))
        );
        assert!(w.states["work"].creating, "the intent record names it");
    }
    // Down finishes it from the intent record.
    block_on(down(&f, &c)).unwrap();
    let mut w = f.world.borrow().clone();
    w.links.values_mut().for_each(|l| l.up = false);
    assert_eq!(w, before);
}

#[test]
fn host_mode_rollback_removes_routes_then_addresses() {
    let c = conn("type = \"openvpn\"\nnetns-isolate = false\n");
    let (f, before) = host_for(&c);
    f.fail("keeper.start", 1);
    assert!(up_any(&f, &c).is_err());
    assert_eq!(
        f.after_failure(),
        [
            "!keeper.start work",
            "route.del host tun0 203.0.113.0/24",
            "addr.del host tun0 100.64.0.2/24"
        ]
    );
    let mut w = f.world.borrow().clone();
    // Up leaves the device up; nothing else remains.
    w.links.get_mut(&(None, "tun0".to_owned())).unwrap().up = false;
    assert_eq!(w, before);
}

#[test]
fn routed_up_takes_these_steps() {
    let c = routed();
    let (f, _) = host_for(&c);
    up_any(&f, &c).unwrap();
    let veth = host_veth_name("work");
    let log = f.log.borrow();
    let ops: Vec<&str> = log.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "plain.save",
            "state.save",
            "netns.create",
            "link.up",
            "veth.create",
            "addr.add",
            "link.up",
            "link.up",
            "forwarding.enable",
            "nat.add",
            "addr.add",
            "link.up",
            "route.add",
            "dns.write",
            "plain.save",
            "keeper.start",
            "state.save",
        ]
    );
    assert!(log.contains(&format!("veth.create {veth} work/eth0")));
    assert!(log.contains(&"nat.add work out of wan0".to_owned()));
}

#[test]
fn routed_failed_nat_releases_forwarding_and_deletes_the_veth() {
    let (f, before, after) = fail_up(&routed(), "nat.add", 1);
    assert_eq!(
        after,
        [
            "!nat.add work out of wan0".to_owned(),
            "forwarding.release work".to_owned(),
            format!("link.delete host {}", host_veth_name("work")),
            "netns.delete work".to_owned(),
            "state.remove work".to_owned(),
            "plain.remove work".to_owned(),
        ]
    );
    assert_as_before(&f, &before, "nat");
}

#[test]
fn routed_failed_veth_removes_namespace_and_records() {
    let (f, before, after) = fail_up(&routed(), "veth.create", 1);
    assert_eq!(
        after[1..],
        [
            "netns.delete work",
            "state.remove work",
            "plain.remove work"
        ]
    );
    assert_as_before(&f, &before, "veth");
}

#[test]
fn routed_failed_forwarding_deletes_the_veth_only() {
    let (f, before, after) = fail_up(&routed(), "forwarding.enable", 1);
    assert_eq!(after[0], "!forwarding.enable work");
    assert_eq!(
        after[1],
        format!("link.delete host {}", host_veth_name("work"))
    );
    assert_as_before(&f, &before, "forwarding");
}

#[test]
fn routed_failed_kind_record_changes_nothing() {
    let (f, before, after) = fail_up(&routed(), "plain.save", 1);
    assert_eq!(after, ["!plain.save work"]);
    assert_as_before(&f, &before, "plain record");
}

#[test]
fn macvlan_failed_dhcp_deletes_the_macvlan() {
    let (f, before, after) = fail_up(&macvlan(true), "dhcp", 1);
    assert_eq!(
        after,
        [
            "!dhcp work lan0",
            "link.delete work lan0",
            "netns.delete work",
            "state.remove work",
            "plain.remove work"
        ]
    );
    assert_as_before(&f, &before, "dhcp");
}

#[test]
fn missing_uplink_device_is_refused_before_any_change() {
    let c = routed();
    let f = Fake::new();
    let err = up_any(&f, &c).unwrap_err();
    assert!(
        err.to_string()
            .contains("uplink device wan0 does not exist in the host namespace"),
        "{err}"
    );
    assert!(f.log.borrow().is_empty());
}

/// Every change up makes, for every kind, failed in turn: the system ends as it began.
#[test]
fn every_failed_step_of_every_kind_leaves_the_system_as_before() {
    for c in [
        hook(),
        routed(),
        macvlan(false),
        conn("type = \"openvpn\"\nnetns-isolate = false\n"),
    ] {
        let (f, _) = host_for(&c);
        up_any(&f, &c).unwrap();
        let ops: Vec<String> = f
            .log
            .borrow()
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect();
        for (i, op) in ops.iter().enumerate() {
            let n = ops[..=i].iter().filter(|o| *o == op).count();
            let (f, mut before, _) = fail_up(&c, op, n);
            let mut w = f.world.borrow().clone();
            if !c.netns_isolate {
                // Host mode leaves the VPN's own device up.
                w.links.values_mut().for_each(|l| l.up = false);
                before.links.values_mut().for_each(|l| l.up = false);
            }
            assert_eq!(w, before, "{}: {op} #{n} failed", c.kind);
        }
    }
}
