//! The keeper's DHCP task (macvlan with `dhcp = true`): renew, rebind, expire, release.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use crate::config::Connection;
use crate::state::State;

pub struct Renewal {
    expires: u64,
}

impl Renewal {
    pub fn load(_conn: &Connection, _st: &State) -> io::Result<Option<Renewal>> {
        Ok(None)
    }
    pub fn deadline(&self) -> Option<Instant> {
        None
    }
    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    pub fn describe(&self) -> String {
        String::new()
    }
    pub fn on_wake(
        &mut self,
        _c: &Connection,
        _ns: Option<&File>,
        _now: Instant,
    ) -> Option<String> {
        None
    }
    pub fn expires_unix(&self) -> u64 {
        self.expires
    }
    pub fn expired(&self) -> bool {
        false
    }
}
