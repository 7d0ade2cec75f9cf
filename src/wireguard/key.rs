//! WireGuard keys: 32 bytes, base64 in wg-quick files, lowercase hex on the UAPI wire.
//! A key is never printed: `Debug` is redacted and errors never echo the value.

use std::fmt;

pub const KEY_LEN: usize = 32;

#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// Decodes standard base64 (44 characters with one `=`), as `wg genkey` prints it.
    pub fn from_base64(s: &str) -> Option<Key> {
        let b = s.as_bytes();
        if b.len() != 44 || b[43] != b'=' {
            return None;
        }
        let mut out = [0u8; KEY_LEN];
        let mut acc: u32 = 0;
        let mut bits = 0u32;
        let mut n = 0;
        for &c in &b[..43] {
            acc = (acc << 6) | u32::from(sextet(c)?);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out[n] = (acc >> bits) as u8;
                n += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // 43 sextets carry 258 bits: 256 of key and 2 padding bits that must be zero,
        // as in every canonical encoding.
        (n == KEY_LEN && acc == 0).then_some(Key(out))
    }

    /// Decodes 64 lowercase or uppercase hex digits (the UAPI wire format).
    pub fn from_hex(s: &str) -> Option<Key> {
        let b = s.as_bytes();
        if b.len() != KEY_LEN * 2 {
            return None;
        }
        let mut out = [0u8; KEY_LEN];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Key(out))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// Whether every byte is zero (how the UAPI removes a preshared key).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// The raw key, for the kernel's netlink API.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Standard base64, as `wg` prints keys (for public keys in status output).
    pub fn to_base64(&self) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::with_capacity(44);
        for c in self.0.chunks(3) {
            let v = (u32::from(c[0]) << 16)
                | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
                | u32::from(c.get(2).copied().unwrap_or(0));
            for k in 0..=c.len() {
                s.push(char::from(A[((v >> (18 - 6 * k)) & 63) as usize]));
            }
        }
        s.push('=');
        s
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(KEY_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        for b in &mut self.0 {
            // SAFETY: `b` is a valid, aligned &mut u8; volatile keeps the wipe from being
            // optimised away as a dead store.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with `wg genkey` / `wg pubkey`; not used anywhere.
    const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PRIV_HEX: &str = "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669";

    #[test]
    fn base64_round_trip() {
        let k = Key::from_base64(PRIV).unwrap();
        assert_eq!(k.to_base64(), PRIV);
        assert_eq!(Key::from_hex(PRIV_HEX).unwrap(), k);
        assert!(Key::from_hex("zz").is_none());
    }

    #[test]
    fn decodes_to_hex() {
        assert_eq!(Key::from_base64(PRIV).unwrap().to_hex(), PRIV_HEX);
        let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(Key::from_base64(zero).unwrap().to_hex(), "0".repeat(64));
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in [
            "",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk==",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm*=",
            "yAnz5TF-lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
            // Non-zero padding bits: not a canonical encoding.
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmn=",
        ] {
            assert!(Key::from_base64(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let k = Key::from_base64(PRIV).unwrap();
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }
}
