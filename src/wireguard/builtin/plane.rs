//! A running data plane, for whatever process hosts it (`vpn-ns wg-builtin` today, the
//! per-connection keeper later): the tun born in the namespace, the device, its UAPI
//! socket and its four threads. The host polls `ended_fd` with its own events and
//! calls `stop` when the connection goes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::device::Device;
use super::request::DeviceSet;
use super::server::Server;
use super::{BuiltinError, tun};

pub struct Plane {
    dev: Arc<Device>,
    server: Arc<Server>,
    ended: File,
}

impl Plane {
    /// Creates the tun `iface` inside `ns` (file and name; None: the caller's namespace),
    /// binds the UDP socket in the calling thread's namespace (the host's), configures
    /// it with `set` (which must carry the private key), opens the UAPI socket and
    /// starts the loops.
    pub fn start(
        ns: Option<(&File, &str)>,
        iface: &str,
        set: DeviceSet,
    ) -> Result<Plane, BuiltinError> {
        let tun_file = tun::create(ns, iface)?;
        let dev = Device::new(iface, tun_file, set)?;
        let server = Arc::new(Server::bind(iface)?);
        let (ended, done) = nix::unistd::pipe()
            .map_err(|e| BuiltinError::io("cannot create", "a pipe")(e.into()))?;
        let done = Arc::new(File::from(done));
        let spawn = |name: &str, f: Box<dyn FnOnce() -> String + Send>| {
            let done = Arc::clone(&done);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    let why = f();
                    let _ = (&*done).write_all(format!("{why}\n").as_bytes());
                })
                .map(drop)
                .map_err(BuiltinError::io("cannot start thread", name))
        };
        let d = Arc::clone(&dev);
        spawn(
            "wg-tun",
            Box::new(move || format!("tun: {:?}", d.tun_loop())),
        )?;
        let d = Arc::clone(&dev);
        spawn(
            "wg-udp",
            Box::new(move || format!("udp: {:?}", d.udp_loop())),
        )?;
        let d = Arc::clone(&dev);
        spawn(
            "wg-timers",
            Box::new(move || {
                d.timer_loop();
                "timers ended".to_owned()
            }),
        )?;
        let (d, s) = (Arc::clone(&dev), Arc::clone(&server));
        spawn(
            "wg-uapi",
            Box::new(move || {
                s.serve(&d);
                "UAPI socket ended".to_owned()
            }),
        )?;
        Ok(Plane {
            dev,
            server,
            ended: File::from(ended),
        })
    }

    /// Readable once a loop has ended (the tun went away, a socket failed): the plane
    /// no longer carries traffic and should be stopped.
    pub fn ended_fd(&self) -> BorrowedFd<'_> {
        self.ended.as_fd()
    }

    /// Why a loop ended (after `ended_fd` became readable).
    pub fn reason(&self) -> String {
        let mut why = String::new();
        let _ = (&self.ended).take(4096).read_to_string(&mut why);
        why.lines().next().unwrap_or_default().to_owned()
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// Stops the loops and removes the UAPI socket. The tun (and with it the device)
    /// goes when the last reference to the device is dropped: at the latest when the
    /// process exits, since blocked reads hold one.
    pub fn stop(self) {
        self.dev.stop();
        drop(self.server);
    }
}
