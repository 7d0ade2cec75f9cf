//! The TOML connection file parser: any text gives a connection or an error, never a
//! panic, and errors are one line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = vpn_ns::config::parse("fuzz", Path::new("/etc/vpn-ns/fuzz.toml"), text) {
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    }
});
