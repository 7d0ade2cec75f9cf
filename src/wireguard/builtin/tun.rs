//! A tun device born inside a namespace: `/dev/net/tun` is opened and `TUNSETIFF`
//! issued on a dedicated thread that entered the namespace (the device belongs to the
//! namespace of the opener), so the device never moves. The fd works from any thread
//! and namespace afterwards.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::BuiltinError;

/// Creates the tun `name` (IFF_TUN | IFF_NO_PI: plain IP packets) in `ns`, or in the
/// calling thread's namespace when `ns` is None.
pub fn create(ns: Option<(&File, &str)>, name: &str) -> Result<File, BuiltinError> {
    let owned = name.to_owned();
    let make = move || open_tun(&owned);
    let res = match ns {
        Some((f, ns_name)) => {
            crate::netns::run_in(f, make).map_err(|source| BuiltinError::Netns {
                ns: ns_name.to_owned(),
                iface: name.to_owned(),
                source,
            })?
        }
        None => make(),
    };
    res.map_err(BuiltinError::io("cannot create tun device", name))
}

fn open_tun(name: &str) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}
