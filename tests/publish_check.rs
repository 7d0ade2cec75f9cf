//! `[[publish]]`/`[[host-access]]` entries at the command line, without bringing
//! anything up: `check`'s warnings about exposure, configuration errors naming
//! file:line:key for `check`, `up` and `publish`, and `publish` without a keeper.
//! Needs root (sandboxes).

use vpn_ns_testkit as common;

use common::*;

#[test]
fn check_warns_about_exposure_and_bad_entries_are_config_errors() {
    if !require_root("check_warns_about_exposure_and_bad_entries_are_config_errors") {
        return;
    }
    let sb = Sandbox::new("publish-check");
    sb.write_conn(
        "lan",
        "type = \"device\"\n\
         [[publish]]\nlisten = \"0.0.0.0:8080\"\ntarget = 80\n\
         [[host-access]]\nlisten = 1143\ntarget = \"192.168.1.5:1143\"\n\
         [[publish]]\nlisten = \"127.0.0.1:9091\"\n",
    );
    let o = vpn_ns(&sb, &["check", "lan"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("lan: warning: [[publish]] listen = \"0.0.0.0:8080\" is not a loopback address: 127.0.0.1:80 inside the namespace is reachable from your LAN"),
        "{}",
        out(&o)
    );
    assert!(
        text.contains("leave through the host's network, not the VPN"),
        "{}",
        out(&o)
    );
    assert!(
        !text.contains("9091"),
        "a loopback entry is no warning:\n{text}"
    );
    let j = vpn_ns(&sb, &["--json", "check", "lan"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2), "{v}");

    sb.write_conn(
        "bad",
        "type = \"device\"\n\n[[publish]]\nlisten = \"localhost:80\"\n",
    );
    for args in [
        &["check", "bad"][..],
        &["up", "bad"],
        &["publish", "bad", "80"],
    ] {
        let o = vpn_ns(&sb, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", out(&o));
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            err.contains("bad.toml line 4: key \"publish.listen\": \"localhost:80\" is not an address and port"),
            "{args:?}: {err}"
        );
    }
    // publish to a connection that is not up: exit 1, saying so.
    let o = vpn_ns(&sb, &["publish", "lan", "7000"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no running keeper"),
        "{}",
        out(&o)
    );
}
