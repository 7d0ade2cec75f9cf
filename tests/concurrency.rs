//! Concurrency: hook calls that OpenVPN (or many OpenVPNs) can make at the same time.
//! 50 connections brought up and down at once all succeed, each in its own namespace;
//! 10 ups of one connection at once serialize on its lock and leave one consistent
//! connection; an up racing a down leaves it fully up or fully down, never half.
//! The hook runs with OpenVPN's environment on persistent tun devices.

use vpn_ns_testkit as common;

use std::process::{Child, Output, Stdio};

use common::reliability::{FakeTun, assert_no_tunnel_on_host, assert_owners_known, state_text};
use common::*;

/// Starts the hook for every (tunnel, phase) at once, then waits for all of them.
fn all_at_once(sb: &Sandbox, calls: &[(&FakeTun, &str)]) -> Vec<Output> {
    let children: Vec<Child> = calls
        .iter()
        .map(|(t, phase)| {
            let mut c = t.hook(sb, phase, None);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(&c)))
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for the hook"))
        .collect()
}

fn assert_all_ok(outs: &[Output], calls: &[(&FakeTun, &str)]) {
    let failed: Vec<String> = outs
        .iter()
        .zip(calls)
        .filter(|(o, _)| !o.status.success())
        .map(|(o, (t, phase))| {
            format!(
                "{phase} {}: {} {}",
                t.conn,
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} concurrent hook calls failed:\n{}",
        failed.len(),
        outs.len(),
        failed.join("\n")
    );
}

#[test]
fn fifty_connections_at_once() {
    if !require_root("fifty_connections_at_once") {
        return;
    }
    let sb = Sandbox::new("conc-50");
    let tuns: Vec<FakeTun> = (1..=50u8)
        .map(|i| FakeTun::new(&sb, &format!("c{i}"), &format!("t{i}"), i, ""))
        .collect();

    let ups: Vec<(&FakeTun, &str)> = tuns.iter().map(|t| (t, "up")).collect();
    assert_all_ok(&all_at_once(&sb, &ups), &ups);
    let mut expected: Vec<String> = tuns.iter().map(|t| t.conn.clone()).collect();
    expected.sort();
    assert_eq!(sb.netns_list(), expected, "one namespace per connection");
    for t in &tuns {
        t.assert_up(&sb);
    }
    assert_no_tunnel_on_host(&sb, "after 50 concurrent ups");
    assert_owners_known(&sb, &[], "after 50 concurrent ups");

    let downs: Vec<(&FakeTun, &str)> = tuns.iter().map(|t| (t, "down")).collect();
    assert_all_ok(&all_at_once(&sb, &downs), &downs);
    for t in &tuns {
        t.assert_down(&sb);
    }
    assert_eq!(sb.netns_list(), Vec::<String>::new());
    assert_eq!(sb.dir_entries("/etc/netns"), Vec::<String>::new());
    assert_no_tunnel_on_host(&sb, "after 50 concurrent downs");
}

/// Fully up or fully down, judged from the system and the state together.
fn assert_consistent(sb: &Sandbox, t: &FakeTun, when: &str) -> bool {
    assert_no_tunnel_on_host(sb, when);
    assert_owners_known(sb, &[], when);
    if state_text(sb, &t.conn).is_some() {
        t.assert_up(sb);
        assert_eq!(sb.netns_list(), vec![t.conn.clone()], "{when}");
        true
    } else {
        t.assert_down(sb);
        assert!(
            sb.netns_list().is_empty(),
            "{when}: namespaces left: {:?}",
            sb.netns_list()
        );
        false
    }
}

#[test]
fn ten_at_once_on_one_connection() {
    if !require_root("ten_at_once_on_one_connection") {
        return;
    }
    let sb = Sandbox::new("conc-one");
    let t = FakeTun::new(&sb, "one", "tone", 7, "");

    let ups: Vec<(&FakeTun, &str)> = (0..10).map(|_| (&t, "up")).collect();
    assert_all_ok(&all_at_once(&sb, &ups), &ups);
    assert_eq!(sb.netns_list(), vec!["one".to_owned()]);
    t.assert_up(&sb);
    assert!(
        assert_consistent(&sb, &t, "after 10 concurrent ups"),
        "must be up"
    );

    // Up and down racing, from up and from down, in both start orders: every call
    // succeeds and the end state is whole, whichever ran last.
    for round in 0..12 {
        let calls: Vec<(&FakeTun, &str)> = if round % 2 == 0 {
            vec![(&t, "up"), (&t, "down")]
        } else {
            vec![(&t, "down"), (&t, "up")]
        };
        assert_all_ok(&all_at_once(&sb, &calls), &calls);
        assert_consistent(&sb, &t, &format!("round {round} of up racing down"));
    }
    // Whatever the races gave, the connection still works both ways.
    t.must_hook(&sb, "up");
    t.assert_up(&sb);
    t.must_hook(&sb, "down");
    t.assert_down(&sb);
}
