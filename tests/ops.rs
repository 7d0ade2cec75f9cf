//! Acceptance tests of `status`, `list` and `verify` against a real OpenVPN connection
//! in a per-test sandbox: every field is checked against what `ip` and /proc say.
//! Needs root and /dev/net/tun (skipped loudly otherwise; under CI they must run).

use vpn_ns_testkit as common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs vpn-ns expecting exit 0 and returns stdout.
fn vpn_ns_ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = vpn_ns(sb, args);
    assert!(
        out.status.success(),
        "vpn-ns {args:?} failed ({}): {}{}",
        out.status,
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn ip_json(sb: &Sandbox, ns: &str, args: &[&str]) -> Value {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    json(&expect_ok(sb.ip(Some(ns), &a)))
}

fn connect(sb: &Sandbox, conn: &str) -> (OpenVpnClient, String) {
    let mut client = sb.start_client(conn, &ClientOptions::default());
    expect_ok(client.wait_connected(CONNECT));
    let tun = client
        .tun_name()
        .expect("tun device name in the client log");
    (client, tun)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().expect("string").to_owned())
        .collect()
}

/// `ip -j route` dst -> the CIDR form status uses.
fn cidr(dst: &str, v6: bool) -> String {
    match (dst, v6) {
        ("default", false) => "0.0.0.0/0".into(),
        ("default", true) => "::/0".into(),
        (d, _) if d.contains('/') => d.into(),
        (d, false) => format!("{d}/32"),
        (d, true) => format!("{d}/128"),
    }
}

fn tun_rx_tx(sb: &Sandbox, ns: &str, tun: &str) -> (u64, u64) {
    let v = ip_json(sb, ns, &["-s", "link", "show", "dev", tun]);
    let s = &v[0]["stats64"];
    (
        s["rx"]["bytes"].as_u64().expect("rx bytes"),
        s["tx"]["bytes"].as_u64().expect("tx bytes"),
    )
}

/// 2. `status --json` against the live system; `list` shows up and down connections;
///    status reports a connection whose OpenVPN was killed as stale.
#[test]
fn status_and_list_match_the_live_system() {
    if !require_root("status_and_list_match_the_live_system") {
        return;
    }
    let sb = Sandbox::new("status");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    sb.write_conn(
        "home",
        "type = \"openvpn\"\nnetns-persistent = true\nuuid = \"0F5C6A3E-8c1b-4c43-a8f5-3b1b0c6f9d21\"\n",
    );
    let (mut client, tun) = connect(&sb, "work");
    let mut sleeper = sb.ns_cmd("work", "sleep");
    sleeper.arg("1000");
    let _sleeper = sb.spawn("sleeper", sleeper);
    let pids_inside: BTreeSet<u64> = wait_until(Duration::from_secs(5), || {
        let out = sb.ip(None, &["netns", "pids", "work"])?;
        let p: BTreeSet<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if p.is_empty() {
            Err("no process in work yet".to_owned())
        } else {
            Ok(p)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // Traffic through the tunnel, so the counters are not trivially zero.
    let reply = wait_until(Duration::from_secs(5), || {
        sb.tcp_get(Some("work"), SERVICE_V4, SERVICE_PORT)
    });
    assert_eq!(reply.as_deref(), Ok(SERVICE_REPLY));
    let before = tun_rx_tx(&sb, "work", &tun);
    let v = json(&vpn_ns_ok(&sb, &["--json", "status", "work"]));
    let after = tun_rx_tx(&sb, "work", &tun);
    let cs = v["connections"].as_array().expect("connections array");
    assert_eq!(cs.len(), 1, "{v:#}");
    let c = &cs[0];
    assert_eq!(c["name"], "work");
    assert_eq!(c["type"], "openvpn");
    assert_eq!(c["state"], "up", "{c:#}");
    assert_eq!(c["stale_reason"], Value::Null);
    assert_eq!(c["netns"], "work");
    assert_eq!(c["netns_exists"], true);
    assert_eq!(c["device"], tun.as_str());
    assert_eq!(c["device_present"], true);
    assert_eq!(c["isolated"], true);
    assert_eq!(c["persistent"], false);
    assert_eq!(c["vpn_pid"], u64::from(client.proc.pid()), "{c:#}");

    let link = ip_json(&sb, "work", &["link", "show", "dev", &tun]);
    assert_eq!(c["mtu"], link[0]["mtu"]);

    // Addresses: exactly what the kernel has on the tunnel.
    let live = ip_json(&sb, "work", &["addr", "show", "dev", &tun]);
    let want: BTreeSet<String> = live[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    let got: BTreeSet<String> = c["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .map(|a| a["local"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, want, "{c:#}");
    assert!(got.iter().any(|a| a.starts_with("100.64.0.")), "{got:?}");

    // Routes: the namespace's main table, both families, except lo's.
    let mut want = BTreeSet::new();
    for (fam, v6) in [("-4", false), ("-6", true)] {
        for r in ip_json(&sb, "work", &[fam, "route", "show"])
            .as_array()
            .unwrap()
        {
            let dev = r["dev"].as_str().unwrap_or("").to_owned();
            if dev != "lo" {
                want.insert((cidr(r["dst"].as_str().unwrap(), v6), dev));
            }
        }
    }
    let got: BTreeSet<(String, String)> = c["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            (
                r["dest"].as_str().unwrap().to_owned(),
                r["dev"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(got, want, "{c:#}");
    for d in ["0.0.0.0/0", "203.0.113.0/24", "fd00:203::/64", "::/0"] {
        assert!(
            got.contains(&(d.to_owned(), tun.clone())),
            "{d} missing: {got:?}"
        );
    }

    assert_eq!(strs(&c["dns"]["servers"]), [PUSHED_DNS]);
    assert_eq!(strs(&c["dns"]["search"]), [PUSHED_DOMAIN]);

    // Processes: the same pids as `ip netns pids`, with user and command line.
    let procs = c["processes"].as_array().expect("processes");
    let got: BTreeSet<u64> = procs.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert_eq!(got, pids_inside, "{c:#}");
    assert!(
        procs
            .iter()
            .any(|p| p["user"] == "root" && p["command"] == "sleep 1000"),
        "{c:#}"
    );

    // Counters between two readings taken around the status call.
    let (rx, tx) = (
        c["rx_bytes"].as_u64().unwrap(),
        c["tx_bytes"].as_u64().unwrap(),
    );
    assert!(
        before.0 <= rx && rx <= after.0,
        "rx {rx} not in {before:?}..{after:?}"
    );
    assert!(
        before.1 <= tx && tx <= after.1,
        "tx {tx} not in {before:?}..{after:?}"
    );
    assert!(rx > 0 && tx > 0);

    // up_since is the state's `since`, in RFC 3339 UTC.
    let st = json(&sb.read("/run/vpn-ns/work.json").expect("state file"));
    let since = st["since"].as_u64().expect("since");
    let want = expect_ok(common::sandbox::run(sb.cmd("date").args([
        "-u",
        "-d",
        &format!("@{since}"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ])));
    assert_eq!(c["up_since"], want.trim());

    // Human status names the same things.
    let human = vpn_ns_ok(&sb, &["status"]);
    for needle in [
        "work (openvpn): up",
        &format!("device     {tun}"),
        "203.0.113.0/24",
        PUSHED_DNS,
        "root sleep 1000",
    ] {
        assert!(human.contains(needle), "{needle:?} missing in:\n{human}");
    }
    assert!(
        !human.contains("home"),
        "status lists only what is up:\n{human}"
    );

    // list: the up connection and the configured-but-down one.
    let l = json(&vpn_ns_ok(&sb, &["--json", "list"]));
    let by_name = |n: &str| -> Value {
        l["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing from list: {l:#}"))
            .clone()
    };
    assert_eq!(by_name("work")["state"], "up");
    let home = by_name("home");
    assert_eq!(home["state"], "down", "{home:#}");
    assert_eq!(home["netns"], "home");
    assert_eq!(home["netns_exists"], false);
    assert_eq!(home["persistent"], true);
    assert_eq!(home["uuid"], "0f5c6a3e-8c1b-4c43-a8f5-3b1b0c6f9d21");
    assert_eq!(by_name("work")["uuid"], Value::Null);
    assert_eq!(home["device"], Value::Null);
    let table = vpn_ns_ok(&sb, &["list"]);
    let row = |n: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("no row for {n}:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("work")[..5],
        ["work", "openvpn", "up", "work", tun.as_str()]
    );
    assert_eq!(row("home")[..4], ["home", "openvpn", "down", "home"]);

    // OpenVPN killed without its down hook while nothing watches it (keeper killed
    // first): the record stays, status calls it stale.
    common::reliability::kill_keeper(&sb, "work");
    assert!(client.proc.signal(9), "cannot SIGKILL the OpenVPN client");
    let _ = client.wait_exit(Duration::from_secs(5));
    let v = json(&vpn_ns_ok(&sb, &["--json", "status", "work"]));
    let c = &v["connections"][0];
    assert_eq!(c["state"], "stale", "{c:#}");
    let why = c["stale_reason"].as_str().unwrap();
    assert!(why.contains("VPN process"), "{why}");
    let human = vpn_ns_ok(&sb, &["status", "work"]);
    assert!(
        human.contains("STALE") && human.contains("vpn-ns down work"),
        "{human}"
    );

    // Two namespaces at once (the one-pass /proc scan): the stale one keeps its
    // process, the second connection is up with none.
    let (_home, home_tun) = connect(&sb, "home");
    let v = json(&vpn_ns_ok(&sb, &["--json", "status"]));
    let cs = v["connections"].as_array().expect("connections");
    let names: Vec<&str> = cs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["home", "work"], "{v:#}");
    assert_eq!(cs[0]["state"], "up");
    assert_eq!(cs[0]["device"], home_tun.as_str());
    assert_eq!(cs[0]["processes"], serde_json::json!([]));
    assert_eq!(cs[1]["state"], "stale");
    let got: BTreeSet<u64> = cs[1]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(got, pids_inside, "{v:#}");

    // The suggested clean-up works, and the connection then shows as down.
    vpn_ns_ok(&sb, &["down", "work"]);
    let v = json(&vpn_ns_ok(&sb, &["--json", "status", "work"]));
    assert_eq!(v["connections"][0]["state"], "down", "{v:#}");

    // An unknown connection is a usage/config error.
    let out = vpn_ns(&sb, &["status", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Runs verify, returning (exit code, parsed JSON, stderr).
fn verify(sb: &Sandbox, conn: &str) -> (Option<i32>, Value, String) {
    let out = vpn_ns(sb, &["verify", conn, "--json"]);
    (
        out.status.code(),
        json(&text(&out.stdout)),
        text(&out.stderr),
    )
}

fn failed_checks(v: &Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_verified_sealed(sb: &Sandbox) {
    let (code, v, err) = verify(sb, "work");
    assert_eq!(code, Some(0), "verify must pass: {v:#} {err}");
    assert_eq!(v["sealed"], true);
    assert_eq!(v["connection"], "work");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["state", "links", "routes", "ipv6", "dns", "nsswitch"]
    );
}

/// Verify fails (exit 1) with `check` among the failed ones, named on stderr too.
fn assert_fails(sb: &Sandbox, check: &str) -> Vec<String> {
    let (code, v, err) = verify(sb, "work");
    assert_eq!(code, Some(1), "verify must fail on {check}: {v:#} {err}");
    assert_eq!(v["sealed"], false);
    let failed = failed_checks(&v);
    assert!(
        failed.iter().any(|f| f == check),
        "{check} not failed: {v:#}"
    );
    assert!(err.contains(check), "stderr must name {check}: {err}");
    failed
}

/// 3. verify passes on a sealed namespace and fails, naming the check, after a veth
///    is added to it, after a route not via the tunnel, and after DNS files are broken.
#[test]
fn verify_proves_the_namespace_sealed() {
    if !require_root("verify_proves_the_namespace_sealed") {
        return;
    }
    let sb = Sandbox::new("verify");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("work", "type = \"openvpn\"\n");
    sb.write_conn("home", "type = \"openvpn\"\n");
    let (_client, tun) = connect(&sb, "work");

    assert_verified_sealed(&sb);
    let human = vpn_ns_ok(&sb, &["verify", "work"]);
    assert!(human.contains("work: sealed"), "{human}");
    assert!(
        human.contains(&format!("ok   links     only lo and {tun}")),
        "{human}"
    );

    // A veth in the namespace: a second way out.
    sb.must("ip link add v0 type veth peer name v1 netns work");
    assert_eq!(assert_fails(&sb, "links"), ["links"]);
    let human = vpn_ns(&sb, &["verify", "work"]);
    assert!(
        text(&human.stdout).contains("FAIL links"),
        "{}",
        text(&human.stdout)
    );

    // And a route through it.
    sb.must("ip -n work link set v1 up && ip -n work route add 192.0.2.0/24 dev v1");
    let failed = assert_fails(&sb, "routes");
    assert!(failed.contains(&"links".to_owned()), "{failed:?}");
    sb.must("ip -n work -6 route add fd00:99::/64 dev v1");
    assert_fails(&sb, "ipv6");
    sb.must("ip link del v0");
    assert_verified_sealed(&sb);

    // DNS to a server the tunnel does not carry, then on loopback.
    let resolv = sb.path("/etc/netns/work/resolv.conf");
    let original = std::fs::read_to_string(&resolv).expect("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.53\n").unwrap();
    assert_eq!(assert_fails(&sb, "dns"), ["dns"]);
    std::fs::write(&resolv, &original).unwrap();

    let nss = sb.path("/etc/netns/work/nsswitch.conf");
    let original = std::fs::read_to_string(&nss).expect("nsswitch.conf");
    std::fs::write(&nss, "hosts: files resolve [!UNAVAIL=return] dns\n").unwrap();
    assert_eq!(assert_fails(&sb, "nsswitch"), ["nsswitch"]);
    std::fs::write(&nss, &original).unwrap();
    assert_verified_sealed(&sb);

    // A connection that is not up fails `state`.
    let (code, v, err) = verify(&sb, "home");
    assert_eq!(code, Some(1), "{v:#} {err}");
    assert_eq!(failed_checks(&v), ["state"]);
}

/// `netns-isolate = false`: the device stays in the host namespace; status shows its
/// addresses and only its routes there, and verify refuses (nothing to seal).
#[test]
fn status_of_a_host_namespace_connection() {
    if !require_root("status_of_a_host_namespace_connection") {
        return;
    }
    let sb = Sandbox::new("hostconn");
    let _srv = sb.start_server(&ServerOptions::default());
    sb.write_conn("flat", "type = \"openvpn\"\nnetns-isolate = false\n");
    let (_client, tun) = connect(&sb, "flat");

    let v = json(&vpn_ns_ok(&sb, &["--json", "status", "flat"]));
    let c = &v["connections"][0];
    assert_eq!(c["state"], "up", "{c:#}");
    assert_eq!(c["isolated"], false);
    assert_eq!(c["netns"], Value::Null);
    assert_eq!(c["device"], tun.as_str());
    assert_eq!(c["device_present"], true);
    let live = json(&expect_ok(
        sb.ip(None, &["-j", "addr", "show", "dev", &tun]),
    ));
    let want: BTreeSet<String> = live[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    let got: BTreeSet<String> = c["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["local"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, want, "{c:#}");
    let routes = c["routes"].as_array().unwrap();
    assert!(
        routes.iter().all(|r| r["dev"] == tun.as_str()),
        "only the device's routes: {c:#}"
    );
    assert!(
        routes.iter().any(|r| r["dest"] == "203.0.113.0/24"),
        "pushed route missing: {c:#}"
    );
    assert!(
        !routes.iter().any(|r| r["dest"] == "198.51.100.0/24"),
        "the uplink's route is not the connection's: {c:#}"
    );

    let (code, v, err) = verify(&sb, "flat");
    assert_eq!(code, Some(1), "{v:#} {err}");
    assert_eq!(failed_checks(&v), ["state"]);
    assert!(
        v["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not isolated"),
        "{v:#}"
    );
}
