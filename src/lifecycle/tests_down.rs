//! Down over the in-memory fake: going on past failures, what it keeps, and a failed
//! down finished by the next one, for every kind. No root needed.

use futures::executor::block_on;

use super::journal::ErrorList;
use super::tests_rollback::{
    assert_as_before, conn, hook, host_for, macvlan, routed, spec, up_any,
};
use super::*;

#[test]
fn down_goes_on_past_failures_and_keeps_the_record() {
    let c = routed();
    let (f, before) = host_for(&c);
    up_any(&f, &c).unwrap();
    f.fail("nat.delete", 1);
    let err = block_on(down(&f, &c)).unwrap_err();
    assert!(
        err.to_string().contains("cannot remove the NAT table"),
        "{err}"
    );
    {
        let w = f.world.borrow();
        // Everything after the failed step was still done...
        assert!(w.forwarding.is_empty() && w.namespaces.is_empty() && w.dns.is_empty());
        assert!(w.keepers.is_empty());
        // ...but the records stay, naming what is left.
        assert!(w.nat.contains("work"));
        assert!(w.states.contains_key("work") && w.plain.contains_key("work"));
    }
    block_on(down(&f, &c)).unwrap();
    assert_as_before(&f, &before, "second down");
}

#[test]
fn down_reports_every_failure() {
    let c = hook();
    let (f, _) = host_for(&c);
    up_any(&f, &c).unwrap();
    f.fail("route.del", 1);
    f.fail("dns.remove", 1);
    let err = block_on(down(&f, &c)).unwrap_err();
    let LifecycleError::Errors(ErrorList(all)) = &err else {
        panic!("every failure reported: {err}");
    };
    assert_eq!(all.len(), 2, "{err}");
    // The device went back and the namespace went all the same; the record stays for
    // the next down.
    let w = f.world.borrow();
    assert!(w.namespaces.is_empty());
    assert!(w.links.contains_key(&(None, "tun0".to_owned())));
    assert!(w.states.contains_key("work"));
}

#[test]
fn down_keeps_the_namespace_while_the_device_cannot_go_back() {
    let c = hook();
    let (f, before) = host_for(&c);
    up_any(&f, &c).unwrap();
    f.fail("link.move", 2);
    let err = block_on(down(&f, &c)).unwrap_err();
    assert!(err.to_string().contains("cannot configure tun0"), "{err}");
    {
        // Deleting the namespace would destroy the VPN's device: nothing else goes.
        let w = f.world.borrow();
        assert!(w.namespaces.contains("work") && w.dns.contains("work"));
        assert!(
            w.links
                .contains_key(&(Some("work".to_owned()), "tun0".to_owned()))
        );
        assert!(w.states["work"].up);
    }
    block_on(down(&f, &c)).unwrap();
    let mut w = f.world.borrow().clone();
    w.links.values_mut().for_each(|l| l.up = false);
    assert_eq!(w, before);
}

#[test]
fn persistent_down_keeps_namespace_and_a_kept_record() {
    let c = conn(
        "type = \"routed\"\nnetns-persistent = true\n[routed]\nuplink = \"wan0\"\n[dns]\nservers = [\"192.0.2.53\"]\n",
    );
    let (f, _) = host_for(&c);
    up_any(&f, &c).unwrap();
    let r = block_on(down(&f, &c)).unwrap();
    assert!(!r.removed_netns);
    let w = f.world.borrow();
    assert!(w.namespaces.contains("work") && w.nat.is_empty() && w.forwarding.is_empty());
    assert!(!w.states["work"].up && !w.states["work"].creating);
    assert!(!w.plain.contains_key("work"));
}

/// Every change down makes, for every kind, failed in turn: down reports it, and the
/// next down finishes the job (the record stayed to say what was left).
#[test]
fn every_failed_step_of_down_is_finished_by_the_next_down() {
    for c in [
        hook(),
        routed(),
        macvlan(false),
        conn("type = \"openvpn\"\nnetns-isolate = false\n"),
    ] {
        let (f, _) = host_for(&c);
        up_any(&f, &c).unwrap();
        let from = f.log.borrow().len();
        block_on(down(&f, &c)).unwrap();
        let ops: Vec<String> = f.log.borrow()[from..]
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .filter(|o| o != "keeper.stop" && o != "dhcp.release")
            .collect();
        assert!(!ops.is_empty());
        for (i, op) in ops.iter().enumerate() {
            let (f, before) = host_for(&c);
            up_any(&f, &c).unwrap();
            let done: usize = f
                .log
                .borrow()
                .iter()
                .filter(|l| l.split(' ').next() == Some(op))
                .count();
            let n = done + ops[..=i].iter().filter(|o| *o == op).count();
            f.fail(op, n);
            let when = format!("{}: down with {op} #{n} failing", c.kind);
            assert!(block_on(down(&f, &c)).is_err(), "{when}");
            assert!(f.world.borrow().states.contains_key("work"), "{when}");
            block_on(down(&f, &c)).unwrap_or_else(|e| panic!("{when}, then down: {e}"));
            let mut w = f.world.borrow().clone();
            let mut before = before;
            // A VPN's device comes back unconfigured but up; host mode leaves it up.
            w.links.values_mut().for_each(|l| l.up = false);
            before.links.values_mut().for_each(|l| l.up = false);
            assert_eq!(w, before, "{when}, then down");
        }
    }
}

/// An adopted device: down hands it back and re-applies its snapshot on the host; with
/// `Handback::Release` it stays inside, stripped, and goes with the namespace.
#[test]
fn adopted_device_is_handed_back_with_its_configuration() {
    let c = conn("type = \"device\"\n");
    let snap = crate::adopt::Snapshot {
        device: "tun0".to_owned(),
        mtu: Some(1400),
        addresses: spec().addresses,
        routes: spec().routes,
        ifindex: None,
        nm: None,
    };
    for handback in [Handback::Return, Handback::Release] {
        let (f, _) = host_for(&c);
        f.world
            .borrow_mut()
            .adopted
            .insert("work".to_owned(), snap.clone());
        let s = snap.spec(DnsSpec::default()).unwrap();
        block_on(up(&f, &c, &s, Origin::Adopt, None)).unwrap();
        let from = f.log.borrow().len();
        block_on(down_with(&f, &c, handback)).unwrap();
        let log = f.log.borrow()[from..].to_vec();
        let w = f.world.borrow();
        assert!(w.adopted.is_empty() && w.states.is_empty() && w.namespaces.is_empty());
        let host = w.links.get(&(None, "tun0".to_owned()));
        match handback {
            Handback::Return => {
                assert!(log.contains(&"link.move tun0 work->host as tun0".to_owned()));
                let host = host.expect("back on the host");
                assert_eq!(host.addresses, snap.addresses);
                assert_eq!(host.routes, snap.routes);
            }
            Handback::Release => {
                assert!(!log.iter().any(|l| l.starts_with("link.move")), "{log:?}");
                assert!(host.is_none(), "released: gone with the namespace");
            }
        }
    }
}
