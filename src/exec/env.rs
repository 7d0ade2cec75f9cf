//! The environment of the exec'd command: built from nothing, so no variable of the
//! root process (LD_PRELOAD, root's HOME, sudo's leftovers) reaches the user's app.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::SessionBus;

/// Desktop-session and terminal variables taken over from the invoker.
const KEPT: [&str; 10] = [
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
    "PULSE_SERVER",
    "LANG",
    "LANGUAGE",
    "TERM",
    "COLORTERM",
];

const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The account the command will run as, from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

fn kept(key: &OsStr) -> bool {
    let k = key.as_bytes();
    KEPT.iter().any(|w| w.as_bytes() == k) || k.starts_with(b"LC_")
}

/// The uid in a `/run/user/<uid>` path inside `value`, if any.
fn runtime_uid(value: &OsStr) -> Option<u32> {
    let s = String::from_utf8_lossy(value.as_bytes());
    let rest = &s[s.find("/run/user/")? + "/run/user/".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Builds the command's environment and returns it with warnings for the user.
/// `exists` tells whether a path exists (a parameter so that tests need no /run/user).
/// The session bus address is the private runtime directory's `bus` (the proxy, or the
/// real bus bound there) or, with `SessionBus::None`, absent.
pub fn build(
    invoker_env: impl IntoIterator<Item = (OsString, OsString)>,
    t: &Account,
    bus_mode: SessionBus,
    exists: impl Fn(&Path) -> bool,
) -> (Vec<(OsString, OsString)>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    for (k, v) in invoker_env {
        if !kept(&k) || env.iter().any(|(e, _)| *e == k) {
            continue;
        }
        if k == "DBUS_SESSION_BUS_ADDRESS" && bus_mode != SessionBus::Full {
            continue;
        }
        // Root's (or another user's) runtime directory and bus: the target user could
        // not use them, and must not be pointed at them.
        if runtime_uid(&v).is_some_and(|u| u != t.uid) {
            continue;
        }
        // Only /run/user/<uid> is replaced by the private runtime directory inside; a
        // runtime directory elsewhere would hand over every socket in it.
        if k == "XDG_RUNTIME_DIR" && Path::new(&v) != Path::new(&format!("/run/user/{}", t.uid)) {
            continue;
        }
        env.push((k, v));
    }
    let has = |env: &[(OsString, OsString)], k: &str| env.iter().any(|(e, _)| e == k);
    let run_user = PathBuf::from(format!("/run/user/{}", t.uid));
    if !has(&env, "XDG_RUNTIME_DIR") && exists(&run_user) {
        env.push(("XDG_RUNTIME_DIR".into(), run_user.clone().into()));
    }
    let bus = run_user.join("bus");
    if bus_mode != SessionBus::None && !has(&env, "DBUS_SESSION_BUS_ADDRESS") && exists(&bus) {
        let mut v = OsString::from("unix:path=");
        v.push(&bus);
        env.push(("DBUS_SESSION_BUS_ADDRESS".into(), v));
    }
    if let Some((_, v)) = env.iter().find(|(k, _)| k == "DBUS_SESSION_BUS_ADDRESS")
        && v.as_bytes().starts_with(b"unix:abstract=")
    {
        warnings.push(format!(
            "DBUS_SESSION_BUS_ADDRESS={} is an abstract socket, which does not cross network \
             namespaces: the session bus will be unreachable inside (a bus at {} would work)",
            v.to_string_lossy(),
            bus.display()
        ));
    }
    if bus_mode == SessionBus::Full && has(&env, "DBUS_SESSION_BUS_ADDRESS") {
        warnings.push(
            "[exec] session-bus = \"full\": the command gets the real session bus, whose \
             services run outside the namespace; that is a way around the VPN"
                .to_owned(),
        );
    }
    let shell = match t.shell.as_os_str().is_empty() {
        true => OsString::from("/bin/sh"),
        false => t.shell.clone().into(),
    };
    env.push(("HOME".into(), t.home.clone().into()));
    env.push(("USER".into(), t.name.clone().into()));
    env.push(("LOGNAME".into(), t.name.clone().into()));
    env.push(("SHELL".into(), shell));
    let path = if t.uid == 0 { ROOT_PATH } else { USER_PATH };
    env.push(("PATH".into(), path.into()));
    (env, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn al() -> Account {
        Account {
            uid: 1000,
            gid: 1000,
            name: "al".into(),
            home: "/home/al".into(),
            shell: "/bin/bash".into(),
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn get<'a>(env: &'a [(OsString, OsString)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(e, _)| e == k)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn keeps_session_drops_the_rest_and_sets_identity() {
        let inv = pairs(&[
            ("DISPLAY", ":0"),
            ("WAYLAND_DISPLAY", "wayland-0"),
            ("XAUTHORITY", "/home/al/.Xauthority"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("LANG", "C.UTF-8"),
            ("TERM", "xterm"),
            ("PULSE_SERVER", "unix:/run/user/1000/pulse/native"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("HOME", "/root"),
            ("SUDO_COMMAND", "/usr/bin/vpn-ns"),
            ("PATH", "/root/bin:/usr/bin"),
        ]);
        let (env, warnings) = build(inv, &al(), SessionBus::Full, |_| false);
        assert!(warnings.is_empty());
        assert_eq!(get(&env, "DISPLAY"), Some(":0"));
        assert_eq!(get(&env, "WAYLAND_DISPLAY"), Some("wayland-0"));
        assert_eq!(get(&env, "XAUTHORITY"), Some("/home/al/.Xauthority"));
        assert_eq!(get(&env, "LC_TIME"), Some("de_DE.UTF-8"));
        assert_eq!(get(&env, "TERM"), Some("xterm"));
        assert!(get(&env, "PULSE_SERVER").is_some());
        assert_eq!(get(&env, "LD_PRELOAD"), None);
        assert_eq!(get(&env, "SUDO_COMMAND"), None);
        assert_eq!(get(&env, "HOME"), Some("/home/al"));
        assert_eq!(get(&env, "USER"), Some("al"));
        assert_eq!(get(&env, "LOGNAME"), Some("al"));
        assert_eq!(get(&env, "SHELL"), Some("/bin/bash"));
        assert_eq!(get(&env, "PATH"), Some(USER_PATH));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }

    #[test]
    fn runtime_dir_and_bus_fall_back_to_run_user() {
        let exists =
            |p: &Path| p == Path::new("/run/user/1000") || p == Path::new("/run/user/1000/bus");
        let (env, _) = build(Vec::new(), &al(), SessionBus::Filtered, exists);
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), Some("/run/user/1000"));
        assert_eq!(
            get(&env, "DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:path=/run/user/1000/bus")
        );
        let (env, _) = build(Vec::new(), &al(), SessionBus::Filtered, |_| false);
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), None);
        assert_eq!(get(&env, "DBUS_SESSION_BUS_ADDRESS"), None);
    }

    #[test]
    fn another_users_runtime_dir_is_replaced() {
        let inv = pairs(&[
            ("XDG_RUNTIME_DIR", "/run/user/0"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/0/bus"),
        ]);
        let (env, _) = build(inv, &al(), SessionBus::Full, |p| {
            p.starts_with("/run/user/1000")
        });
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), Some("/run/user/1000"));
        assert_eq!(
            get(&env, "DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:path=/run/user/1000/bus")
        );
    }

    #[test]
    fn bus_modes() {
        let inv = pairs(&[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus")]);
        let all = |_: &Path| true;
        let (env, w) = build(inv.clone(), &al(), SessionBus::None, all);
        assert_eq!(get(&env, "DBUS_SESSION_BUS_ADDRESS"), None);
        assert!(w.is_empty());
        let (env, w) = build(inv.clone(), &al(), SessionBus::Filtered, all);
        assert_eq!(
            get(&env, "DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:path=/run/user/1000/bus")
        );
        assert!(w.is_empty());
        let other = pairs(&[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/tmp/dbus-elsewhere")]);
        let (env, _) = build(other, &al(), SessionBus::Filtered, all);
        assert_eq!(
            get(&env, "DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:path=/run/user/1000/bus"),
            "filtered: only the proxy"
        );
        let (_, w) = build(inv, &al(), SessionBus::Full, all);
        assert!(w.iter().any(|w| w.contains("way around the VPN")));
    }

    #[test]
    fn a_runtime_dir_outside_run_user_is_not_passed() {
        let inv = pairs(&[("XDG_RUNTIME_DIR", "/tmp/xdg-al")]);
        let (env, _) = build(inv, &al(), SessionBus::None, |_| false);
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), None);
        let inv = pairs(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        let (env, _) = build(inv, &al(), SessionBus::None, |_| false);
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), Some("/run/user/1000"));
    }

    #[test]
    fn abstract_bus_warns() {
        let inv = pairs(&[("DBUS_SESSION_BUS_ADDRESS", "unix:abstract=/tmp/dbus-x")]);
        let (env, warnings) = build(inv, &al(), SessionBus::Full, |_| false);
        assert_eq!(
            get(&env, "DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:abstract=/tmp/dbus-x")
        );
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("abstract"));
        assert!(warnings[1].contains("way around the VPN"));
    }

    #[test]
    fn root_gets_sbin_and_empty_shell_means_sh() {
        let root = Account {
            uid: 0,
            gid: 0,
            name: "root".into(),
            home: "/root".into(),
            shell: PathBuf::new(),
        };
        let (env, _) = build(Vec::new(), &root, SessionBus::None, |_| false);
        assert_eq!(get(&env, "PATH"), Some(ROOT_PATH));
        assert_eq!(get(&env, "SHELL"), Some("/bin/sh"));
    }
}
