//! Devices born in the connection's namespace: the caller's `MakeDevice` runs once the
//! namespace exists, instead of the lifecycle waiting for a device in the host namespace
//! and moving it.

use std::fs::File;

use futures::future::LocalBoxFuture;

use super::edges::Edges;
use super::up::{self, Device};
use super::{LifecycleError, UpReport};
use crate::config::Connection;
use crate::spec::NetworkSpec;
use crate::state::Origin;

/// Creates the device inside the connection's namespace once that exists, so the device
/// is born there and never moves (a device move costs 20-45 ms in the kernel). Gets the
/// namespace (the host's with `netns-isolate = false`); returns the pid of the process
/// serving the device, if any. What it made is the caller's to undo when up fails.
pub type MakeDevice<'a> =
    Box<dyn FnOnce(File) -> LocalBoxFuture<'a, anyhow::Result<Option<u32>>> + 'a>;

pub(super) async fn make_device(
    make: MakeDevice<'_>,
    ns_file: &File,
    dev: &str,
    ns: &str,
) -> Result<Option<u32>, LifecycleError> {
    let err = |source| LifecycleError::MakeDevice {
        device: dev.to_owned(),
        ns: ns.to_owned(),
        source,
    };
    let f = ns_file.try_clone().map_err(|e| err(e.into()))?;
    make(f).await.map_err(err)
}

/// `up`, with the device made in place by `make` instead of waited for and moved.
pub async fn up_in_place<E: Edges>(
    e: &E,
    conn: &Connection,
    spec: &NetworkSpec,
    origin: Origin,
    make: MakeDevice<'_>,
) -> Result<UpReport, LifecycleError> {
    Ok(up::run(e, conn, spec, origin, None, Device::Born(make))
        .await?
        .report)
}
