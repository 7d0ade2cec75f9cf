//! The wg-quick configuration parser: any text gives a config or an error, never a panic,
//! and errors are one line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = vpn_ns::wireguard::parse::parse(Path::new("fuzz.conf"), text) {
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    }
});
