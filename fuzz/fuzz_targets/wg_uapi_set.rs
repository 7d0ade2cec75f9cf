//! The UAPI `set=1` parser of the built-in WireGuard data plane (its start-up pipe and
//! its UAPI socket): any text gives changes or an error, never a panic; errors are one
//! line and never echo a key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = vpn_ns::wireguard::builtin::request::parse(text) {
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    }
});
