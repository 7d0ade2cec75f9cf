//! WireGuard's native up over the fake: a failure injected at each of its device steps
//! (wireguard-go started and configured, kernel link created and configured, built-in
//! data plane started), for each backend, and what the rollback undid. No root needed.

use futures::executor::block_on;

use super::fake::{Fake, World};
use super::tests_rollback::{assert_as_before, conn, spec};
use super::*;
use crate::config::WgBackend;

pub(super) fn wg(backend: &str, isolate: bool) -> Connection {
    conn(&format!(
        "type = \"wireguard\"\nnetns-isolate = {isolate}\n[wireguard]\nbackend = \"{backend}\"\n"
    ))
}

fn backend(c: &Connection) -> WgBackend {
    match &c.kind {
        crate::config::Kind::WireGuard(s) => s.backend,
        k => panic!("not wireguard: {k}"),
    }
}

pub(super) fn fake(kernel_wg: bool) -> Fake {
    let mut f = Fake::new();
    f.kernel_wg = kernel_wg;
    f
}

pub(super) fn up_wg(f: &Fake, c: &Connection) -> Result<UpReport, LifecycleError> {
    block_on(up_wireguard(f, c, &spec(), backend(c)))
}

/// Fails the `n`-th call of `op` during up of `c`: up fails; the log from the failure on.
fn fail_up(c: &Connection, kernel_wg: bool, op: &str, n: usize) -> (Fake, Vec<String>) {
    let f = fake(kernel_wg);
    f.fail(op, n);
    assert!(up_wg(&f, c).is_err(), "up must fail when {op} #{n} fails");
    let after = f.after_failure();
    (f, after)
}

const NS_UNDO: [&str; 2] = ["netns.delete work", "state.remove work"];

#[test]
fn userspace_up_starts_wireguard_go_before_the_namespace_and_moves_its_device() {
    let c = wg("wireguard-go", true);
    let f = fake(false);
    let r = up_wg(&f, &c).unwrap();
    assert_eq!(r.vpn.map(|v| v.pid), Some(2000));
    let log = f.log.borrow();
    assert_eq!(
        log[..5],
        [
            "wg.userspace tun0",
            "wg.uapi tun0",
            "state.save work intent",
            "netns.create work",
            "link.up work lo",
        ]
    );
    assert_eq!(log[5], "link.move tun0 host->work as tun0");
    // The intent record names the process already.
    assert_eq!(f.world.borrow().states["work"].vpn_pid, Some(2000));
}

#[test]
fn failed_userspace_start_changes_nothing() {
    let (f, after) = fail_up(&wg("wireguard-go", true), false, "wg.userspace", 1);
    assert_eq!(after, ["!wg.userspace tun0"]);
    assert_as_before(&f, &World::default(), "wireguard-go start");
}

#[test]
fn failed_uapi_configuration_stops_wireguard_go() {
    let (f, after) = fail_up(&wg("wireguard-go", true), false, "wg.uapi", 1);
    assert_eq!(after, ["!wg.uapi tun0", "wg.stop 2000 tun0"]);
    assert_as_before(&f, &World::default(), "uapi");
}

#[test]
fn userspace_failure_inside_hands_the_device_back_then_stops_the_process() {
    let (f, after) = fail_up(&wg("wireguard-go", true), false, "route.add", 1);
    assert_eq!(
        after,
        [
            "!route.add work tun0 203.0.113.0/24",
            "link.move tun0 work->host as tun0",
            "netns.delete work",
            "state.remove work",
            "wg.stop 2000 tun0",
        ]
    );
    assert_as_before(&f, &World::default(), "route");
}

#[test]
fn failed_builtin_start_removes_namespace_and_record() {
    let (f, after) = fail_up(&wg("builtin", true), false, "wg.builtin", 1);
    assert_eq!(after[0], "!wg.builtin work tun0");
    assert_eq!(after[1..], NS_UNDO);
    assert_as_before(&f, &World::default(), "builtin start");
}

#[test]
fn builtin_later_failure_stops_the_data_plane_before_the_namespace_goes() {
    let (f, after) = fail_up(&wg("builtin", true), false, "keeper.start", 1);
    assert_eq!(
        after[..3],
        ["!keeper.start work", "dns.remove work", "wg.stop 2000 tun0"]
    );
    assert_eq!(after[3..], NS_UNDO);
    assert_as_before(&f, &World::default(), "keeper");
}

#[test]
fn failed_kernel_configuration_deletes_the_link() {
    let (f, after) = fail_up(&wg("kernel", true), true, "wg.configure", 1);
    assert_eq!(
        after,
        [
            "!wg.configure work tun0",
            "wg.delete work tun0",
            "netns.delete work",
            "state.remove work"
        ]
    );
    assert_as_before(&f, &World::default(), "kernel configure");
}

#[test]
fn failed_kernel_link_is_not_deleted() {
    let (f, after) = fail_up(&wg("kernel", true), true, "wg.kernel", 1);
    assert_eq!(after[0], "!wg.kernel work tun0");
    assert_eq!(after[1..], NS_UNDO);
    assert_as_before(&f, &World::default(), "kernel create");
}

#[test]
fn kernel_backend_without_the_module_is_refused_and_rolled_back() {
    let c = wg("kernel", true);
    let f = fake(false);
    let err = up_wg(&f, &c).unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains("cannot create tun0 in namespace \"work\"")
            && text.contains("set backend = \"builtin\""),
        "{text}"
    );
    assert_eq!(
        f.log.borrow()[3..],
        ["wg.kernel work tun0", NS_UNDO[0], NS_UNDO[1]]
    );
    assert_as_before(&f, &World::default(), "no module");
}

#[test]
fn auto_uses_the_kernel_link_when_the_module_exists_else_the_builtin() {
    let c = wg("auto", true);
    let f = fake(true);
    assert_eq!(up_wg(&f, &c).unwrap().vpn, None);
    assert!(
        f.log
            .borrow()
            .contains(&"wg.configure work tun0".to_owned())
    );
    let f = fake(false);
    assert!(up_wg(&f, &c).unwrap().vpn.is_some());
    let log = f.log.borrow();
    assert_eq!(log[3..5], ["wg.kernel work tun0", "wg.builtin work tun0"]);
}

#[test]
fn host_mode_builtin_is_stopped_after_its_addresses_go() {
    let (f, after) = fail_up(&wg("builtin", false), false, "keeper.start", 1);
    assert_eq!(
        after,
        [
            "!keeper.start work",
            "route.del host tun0 203.0.113.0/24",
            "addr.del host tun0 100.64.0.2/24",
            "wg.stop 2000 tun0",
        ]
    );
    assert_as_before(&f, &World::default(), "host mode");
}

/// Every change of every backend's up, isolated or not, failed in turn: the system
/// ends as it began (no process, no link, no namespace, no record).
#[test]
fn every_failed_step_of_every_backend_leaves_the_system_as_before() {
    for (b, kernel_wg) in [
        ("wireguard-go", false),
        ("builtin", false),
        ("kernel", true),
        ("auto", true),
        ("auto", false),
    ] {
        for isolate in [true, false] {
            let c = wg(b, isolate);
            let f = fake(kernel_wg);
            up_wg(&f, &c).unwrap();
            for (op, n) in f.calls_since(0) {
                let (f, _) = fail_up(&c, kernel_wg, &op, n);
                let when = format!("{b} isolate={isolate}: {op} #{n} failed");
                assert_as_before(&f, &World::default(), &when);
            }
        }
    }
}
