//! `vpn-ns adopt <CONN> <DEVICE>`: move a device that something else configured in the
//! host namespace into CONN's namespace, with its addresses and routes.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::adopt;
use crate::cli::GlobalArgs;
use crate::commands::{UsageError, config_dir, runtime};
use crate::config::{self, ConnectionType};
use crate::lifecycle;
use crate::netlink::Netlink;
use crate::spec::InterfaceName;
use crate::state::{self, Origin};

pub fn run(g: &GlobalArgs, name: &str, device: &str) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let conn = config::load(&dir, name)?;
    if conn.kind != ConnectionType::Device {
        return Err(UsageError(format!(
            "{}: `vpn-ns adopt` needs type = \"device\" (this connection is \"{}\", which vpn-ns brings up itself)",
            conn.path.display(),
            conn.kind
        ))
        .into());
    }
    if !conn.netns_isolate {
        return Err(UsageError(format!(
            "{}: `vpn-ns adopt` moves the device into a namespace; it makes no sense with netns-isolate = false",
            conn.path.display()
        ))
        .into());
    }
    let dev: InterfaceName = device
        .parse()
        .map_err(|e| UsageError(format!("device {device:?}: {e}")))?;
    let lock = state::lock(&conn.name)?;
    if let Some(st) = state::load(&conn.name)?
        && st.up
    {
        if st.device.as_deref() == Some(dev.as_str()) {
            tracing::info!("{name}: {dev} is already in namespace {}", st.netns);
            return Ok(ExitCode::SUCCESS);
        }
        return Err(anyhow::anyhow!(
            "connection {name} is already up with device {}; run `vpn-ns down {name}` first",
            st.device.as_deref().unwrap_or("?")
        ));
    }
    let rt = runtime()?;
    let code = rt.block_on(async {
        let nl = Netlink::connect(None)?;
        let link = nl
            .link(dev.as_str())
            .await?
            .with_context(|| format!("no device {dev} in the host namespace"))?;
        let snap = adopt::snapshot(&nl, &link)
            .await
            .with_context(|| format!("cannot read the configuration of {dev}"))?;
        adopt::save(&conn.name, &snap)?;
        let spec = snap.spec()?;
        match lifecycle::up(&conn, &spec, Origin::Adopt, None).await {
            Ok(report) => {
                tracing::info!(
                    "{name}: {dev} adopted into namespace {}: {} address(es), {} route(s), {} DNS server(s)",
                    conn.netns,
                    report.addresses,
                    report.routes,
                    report.dns_servers
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                // The rollback moved the device back bare; give it its configuration again.
                if let Err(re) =
                    adopt::restore(&conn.name, Some(dev.as_str()), conn.netns_timeout).await
                {
                    tracing::error!("rollback: cannot restore {dev} in the host namespace: {re}");
                }
                Err(anyhow::Error::from(e).context(format!(
                    "connection {name}: cannot adopt {dev}, changes rolled back"
                )))
            }
        }
    })?;
    // The keeper opens the relays once it has the lock.
    drop(lock);
    super::publish::wait_listening(&conn);
    Ok(code)
}
