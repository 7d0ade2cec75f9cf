//! An adopted device handed back to the host: its snapshot (adopt.rs) re-applied.

use std::time::Duration;

use super::LifecycleError;
use super::edges::{At, Edges};

/// Re-applies the snapshot of `conn` to its device in the host namespace (when
/// `returned` says the device came back there) and forgets the snapshot.
pub async fn restore_adopted<E: Edges>(
    e: &E,
    conn: &str,
    returned: Option<&str>,
    timeout: Duration,
) -> Result<(), LifecycleError> {
    if let (Some(dev), Some(snap)) = (returned, e.load_adopted(conn)) {
        let link = e.wait_for_link(At::Host, dev, timeout).await?;
        let configure = |source| LifecycleError::Configure {
            device: dev.to_owned(),
            ns: "host".to_owned(),
            source,
        };
        for a in &snap.addresses {
            e.add_address(At::Host, &link, a).await.map_err(configure)?;
        }
        e.set_up(At::Host, &link).await.map_err(configure)?;
        for r in &snap.routes {
            e.add_route(At::Host, &link, r).await.map_err(configure)?;
        }
        tracing::info!(
            "{dev} is back in the host namespace with {} address(es) and {} route(s)",
            snap.addresses.len(),
            snap.routes.len()
        );
    }
    e.forget_adopted(conn)?;
    Ok(())
}
