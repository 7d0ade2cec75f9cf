//! The fake's WireGuard devices: a process is a pid serving an interface, its tun a
//! link that goes when the process is stopped; a kernel link is a link.

use futures::future::LocalBoxFuture;

use super::edges::{At, WgDevices};
use super::fake::{Fake, name_of, place};
use crate::config::Connection;
use crate::procs::ProcId;

impl Fake {
    fn fallible(&self, op: &str, detail: String) -> anyhow::Result<()> {
        match self.call(op, detail) {
            true => Err(anyhow::anyhow!("{op} failed (injected)")),
            false => Ok(()),
        }
    }

    fn spawn(&self, iface: &str) -> ProcId {
        let mut w = self.world.borrow_mut();
        let pid = 2000 + w.processes.len() as u32;
        w.processes.insert(pid, iface.to_owned());
        ProcId { pid, start: 1 }
    }
}

impl WgDevices for Fake {
    fn start_userspace(&self, _conn: &Connection, iface: &str) -> anyhow::Result<ProcId> {
        self.fallible("wg.userspace", iface.to_owned())?;
        self.add_link(None, iface);
        Ok(self.spawn(iface))
    }
    fn configure_userspace(&self, _conn: &Connection, iface: &str) -> anyhow::Result<()> {
        self.fallible("wg.uapi", iface.to_owned())
    }
    fn create_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            self.fallible("wg.kernel", format!("{} {iface}", name_of(at)))?;
            if self.kernel_wg {
                self.add_link(place(at), iface);
            }
            Ok(self.kernel_wg)
        })
    }
    fn configure_kernel(&self, at: At<'_>, iface: &str) -> anyhow::Result<()> {
        self.fallible("wg.configure", format!("{} {iface}", name_of(at)))
    }
    fn delete_kernel<'a>(
        &'a self,
        at: At<'a>,
        iface: &'a str,
    ) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.fallible("wg.delete", format!("{} {iface}", name_of(at)))?;
            let key = (place(at), iface.to_owned());
            self.world.borrow_mut().links.remove(&key);
            Ok(())
        })
    }
    fn start_builtin(&self, _conn: &Connection, at: At<'_>, iface: &str) -> anyhow::Result<ProcId> {
        self.fallible("wg.builtin", format!("{} {iface}", name_of(at)))?;
        self.add_link(place(at), iface);
        Ok(self.spawn(iface))
    }
    fn stop_device(&self, id: ProcId, iface: &str) -> anyhow::Result<()> {
        self.fallible("wg.stop", format!("{} {iface}", id.pid))?;
        let mut w = self.world.borrow_mut();
        if w.processes.remove(&id.pid).is_some() {
            // Its tun goes with it, wherever it is.
            w.links.retain(|(_, n), _| n != iface);
        }
        Ok(())
    }
}
