//! The OpenVPN environment parser: input lines `KEY=VALUE` become the environment of one
//! hook call. Any input must give Ok or an error, never a panic, and an error must name a
//! variable that is in the environment (the contract users rely on to find the bad push).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vpn_ns::openvpn::{EnvError, parse_env};

fuzz_target!(|data: &[u8]| {
    // Lossy like `from_process_env`: non-UTF-8 values reach the parser as U+FFFD.
    let text = String::from_utf8_lossy(data);
    let env: BTreeMap<String, String> = text
        .split('\n')
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("\\n", "\n")))
        .collect();
    if let Err(e) = parse_env(&env) {
        let named = match &e {
            EnvError::Invalid { variable, .. } | EnvError::TooMany { variable, .. } => {
                Some(variable)
            }
            // A missing variable is, by definition, not in the environment.
            EnvError::Missing { .. } => None,
        };
        if let Some(v) = named {
            // The index form of a name is validated, so a named variable must exist.
            assert!(
                env.contains_key(v),
                "error names {v:?}, absent from the environment: {e}"
            );
        }
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    }
});
