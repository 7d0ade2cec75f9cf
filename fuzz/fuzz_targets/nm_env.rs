//! NetworkManager's dispatcher environment (the DNS values were pushed by the VPN server):
//! input lines `KEY=VALUE` become the environment of one hook call, the first line the
//! action. Any input gives Ok or an error, never a panic; an error is one line and, when
//! it is about a value, names a variable that is in the environment.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vpn_ns::nm::{NmError, parse_dns, parse_event};

fn check(e: &NmError, env: &BTreeMap<String, String>) {
    if let NmError::Invalid { variable, .. } = e {
        assert!(
            env.contains_key(*variable),
            "error names {variable:?}, absent from the environment: {e}"
        );
    }
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let action = lines.next().unwrap_or_default().to_owned();
    let env: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("\\n", "\n")))
        .collect();
    let get = |k: &str| env.get(k).cloned();
    if let Err(e) = parse_event(&action, &get) {
        check(&e, &env);
    }
    if let Err(e) = parse_dns(&get) {
        check(&e, &env);
    }
});
