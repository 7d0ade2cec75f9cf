//! WireGuard's native down over the fake: the process serving the device stopped, a
//! kernel link deleted where it lives, each of these failing in turn (reported, the
//! rest done, the next down finishing the job), for each backend, isolated or not.
//! No root needed.

use futures::executor::block_on;

use super::fake::{Fake, World};
use super::tests_rollback::{assert_as_before, conn};
use super::tests_wg::{fake, up_wg, wg};
use super::*;

/// Each backend, with whether the fake kernel has the WireGuard module.
const BACKENDS: [(&str, bool); 3] = [
    ("wireguard-go", false),
    ("builtin", false),
    ("kernel", true),
];

/// `c` up on a fake; the log's length after up.
fn upped(c: &Connection, kernel_wg: bool) -> (Fake, usize) {
    let f = fake(kernel_wg);
    up_wg(&f, c).unwrap();
    let from = f.log.borrow().len();
    (f, from)
}

/// The log from `from` on, without the keeper's stop (its pid varies).
fn log_since(f: &Fake, from: usize) -> Vec<String> {
    f.log.borrow()[from..]
        .iter()
        .filter(|l| !l.starts_with("keeper.stop"))
        .cloned()
        .collect()
}

/// The WireGuard step of down for `backend`.
fn step(backend: &str) -> &'static str {
    match backend {
        "kernel" => "wg.delete",
        _ => "wg.stop",
    }
}

#[test]
fn down_stops_the_process_or_deletes_the_kernel_link() {
    let cases: [(&str, bool, bool, &[&str]); 6] = [
        (
            "wireguard-go",
            false,
            true,
            &["wg.stop 2000 tun0", "netns.delete work", "dns.remove work"],
        ),
        (
            "builtin",
            false,
            true,
            &["wg.stop 2000 tun0", "netns.delete work", "dns.remove work"],
        ),
        (
            "kernel",
            true,
            true,
            &[
                "wg.delete work tun0",
                "netns.delete work",
                "dns.remove work",
            ],
        ),
        ("wireguard-go", false, false, &["wg.stop 2000 tun0"]),
        ("builtin", false, false, &["wg.stop 2000 tun0"]),
        (
            "kernel",
            true,
            false,
            &[
                "route.del host tun0 203.0.113.0/24",
                "addr.del host tun0 100.64.0.2/24",
                "wg.delete host tun0",
            ],
        ),
    ];
    for (b, kernel_wg, isolate, steps) in cases {
        let c = wg(b, isolate);
        let (f, from) = upped(&c, kernel_wg);
        block_on(down(&f, &c)).unwrap();
        let first = f.log.borrow()[from].clone();
        let when = format!("{b} isolate={isolate}");
        // The keeper first, as in a rollback, so it does not act on the process's end.
        assert!(first.starts_with("keeper.stop"), "{when}: {first}");
        let mut want: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        want.push("state.remove work".to_owned());
        assert_eq!(log_since(&f, from), want, "{when}");
        assert_as_before(&f, &World::default(), &when);
    }
}

/// The WireGuard step of down fails: down reports it, does the rest, keeps the record;
/// the next down finishes the job.
#[test]
fn failed_wireguard_step_is_reported_and_finished_by_the_next_down() {
    for (b, kernel_wg) in BACKENDS {
        for isolate in [true, false] {
            let c = wg(b, isolate);
            let (f, _) = upped(&c, kernel_wg);
            f.fail(step(b), 1);
            let when = format!("{b} isolate={isolate}: down with {} failing", step(b));
            let err = block_on(down(&f, &c)).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("{} failed (injected)", step(b))),
                "{when}: {err}"
            );
            {
                let w = f.world.borrow();
                assert!(w.keepers.is_empty(), "{when}: keeper stopped");
                assert!(
                    w.namespaces.is_empty() && w.dns.is_empty(),
                    "{when}: namespace and DNS files gone"
                );
                assert!(w.states["work"].up, "{when}: the record stays");
                // What is left of the device is on the host, without the addresses and
                // routes up gave it.
                for ((at, name), l) in &w.links {
                    assert_eq!((at, name.as_str()), (&None, "tun0"), "{when}");
                    assert!(l.addresses.is_empty() && l.routes.is_empty(), "{when}");
                }
            }
            block_on(down(&f, &c)).unwrap_or_else(|e| panic!("{when}, then down: {e}"));
            assert_as_before(&f, &World::default(), &format!("{when}, then down"));
        }
    }
}

/// A kernel link that could not be deleted from a namespace that stays: the record
/// keeps naming it (the namespace's deletion would not take it along).
#[test]
fn persistent_namespace_keeps_the_undeleted_kernel_link_named() {
    let c = conn_persistent();
    let (f, _) = upped(&c, true);
    f.fail("wg.delete", 1);
    assert!(block_on(down(&f, &c)).is_err());
    {
        let w = f.world.borrow();
        assert!(w.namespaces.contains("work") && w.keepers.is_empty());
        assert!(
            w.links
                .contains_key(&(Some("work".to_owned()), "tun0".to_owned()))
        );
        let st = &w.states["work"];
        assert!(st.up && st.device.as_deref() == Some("tun0"));
    }
    let r = block_on(down(&f, &c)).unwrap();
    assert!(!r.removed_netns);
    let w = f.world.borrow();
    assert!(w.namespaces.contains("work"));
    assert!(!w.links.keys().any(|(_, n)| n == "tun0"));
    assert!(!w.states["work"].up && w.states["work"].device.is_none());
}

fn conn_persistent() -> Connection {
    conn("type = \"wireguard\"\nnetns-persistent = true\n[wireguard]\nbackend = \"kernel\"\n")
}

/// Every change WireGuard's down makes, for every backend, isolated or not, failed in
/// turn: down reports it, keeps the record, and the next down leaves nothing.
#[test]
fn every_failed_step_of_wireguard_down_is_finished_by_the_next_down() {
    for (b, kernel_wg) in BACKENDS {
        for isolate in [true, false] {
            let c = wg(b, isolate);
            let (f, from) = upped(&c, kernel_wg);
            block_on(down(&f, &c)).unwrap();
            let calls: Vec<(String, usize)> = f
                .calls_since(from)
                .into_iter()
                .filter(|(o, _)| o != "keeper.stop")
                .collect();
            assert!(calls.iter().any(|(o, _)| o == step(b)), "{calls:?}");
            for (op, n) in calls {
                let (f, _) = upped(&c, kernel_wg);
                f.fail(&op, n);
                let when = format!("{b} isolate={isolate}: down with {op} #{n} failing");
                assert!(block_on(down(&f, &c)).is_err(), "{when}");
                assert!(f.world.borrow().states.contains_key("work"), "{when}");
                block_on(down(&f, &c)).unwrap_or_else(|e| panic!("{when}, then down: {e}"));
                assert_as_before(&f, &World::default(), &format!("{when}, then down"));
            }
        }
    }
}
