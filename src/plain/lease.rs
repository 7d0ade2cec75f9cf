//! A macvlan connection's DHCP lease after up: what the keeper records when it renews
//! or loses it, and the DHCPRELEASE sent at down (RFC 2131 4.4.6), so the LAN's server
//! can hand the address to another host at once.

use std::fs::File;

use anyhow::Context as _;

use super::dhcp::{self, BoundKind, Lease};
use super::{Record, links, load_record, save_record};
use crate::netns;

/// The MAC address the connection's macvlan has (derived from its name).
pub fn mac_for(conn: &str) -> [u8; 6] {
    links::mac_for(conn)
}

/// Records a renewed (or, with `expired`, lost) lease.
pub fn save(conn: &str, lease: &Lease, obtained: u64, expired: bool) -> anyhow::Result<()> {
    let mut rec = load_record(conn)?.with_context(|| format!("{conn}: no record to update"))?;
    rec.lease = Some(lease.clone());
    rec.lease_obtained = Some(obtained);
    rec.lease_expired = expired;
    Ok(save_record(conn, &rec)?)
}

/// Sends DHCPRELEASE for a lease that is still held, from inside `ns` on `dev`. Best
/// effort: down goes on whatever happens (the server frees the address at expiry then).
pub fn release(conn: &str, rec: &Record, ns: &File, dev: &str) {
    let Some(lease) = rec.lease.clone().filter(|_| !rec.lease_expired) else {
        return;
    };
    let dev = dev.to_owned();
    let mac = mac_for(conn);
    let xid = links::fnv1a(&format!(
        "{conn}/release/{:?}",
        std::time::SystemTime::now()
    ));
    let sent = netns::run_in(ns, move || -> std::io::Result<()> {
        let s = dhcp::bound_socket(&dev)?;
        let msg = dhcp::encode_bound(BoundKind::Release, xid, mac, &lease);
        s.send_to(&msg, dhcp::destination(Some(lease.server)))?;
        Ok(())
    });
    let address = rec.lease.as_ref().map(|l| l.address);
    match sent {
        Ok(Ok(())) => tracing::info!(
            "{conn}: DHCP lease of {} released",
            address.map(|a| a.to_string()).unwrap_or_default()
        ),
        Ok(Err(e)) => tracing::warn!("{conn}: cannot send DHCPRELEASE: {e}"),
        Err(e) => tracing::warn!("{conn}: cannot send DHCPRELEASE: {e}"),
    }
}
