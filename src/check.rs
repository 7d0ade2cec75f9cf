//! The decisions behind `vpn-ns check`: each takes facts gathered from the host or a
//! file and returns the problems, one actionable sentence each. Gathering the facts is
//! `commands::check`'s job, so every rule here is unit-tested without a host.

use std::path::Path;

use crate::config::WgBackend;
use crate::openvpn::conf::{self, Directive};

/// OpenVPN 2.6 is the first with `--disable-dco`, which vpn-ns needs.
pub const MIN_OPENVPN: (u32, u32) = (2, 6);

/// "OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL ..." -> (2, 6, 14).
pub fn parse_openvpn_version(out: &str) -> Option<(u32, u32, u32)> {
    let first = out.lines().next()?;
    let v = first.strip_prefix("OpenVPN ")?.split_whitespace().next()?;
    let mut nums = v.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = nums.next()??;
    let minor = nums.next()??;
    let patch = nums.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// `version_output`: stdout of `openvpn --version`, or `None` when it could not run.
pub fn openvpn_problem(version_output: Option<&str>) -> Option<String> {
    let Some(out) = version_output else {
        return Some("openvpn is not installed (or not in PATH): `apt install openvpn`".to_owned());
    };
    match parse_openvpn_version(out) {
        None => Some(format!(
            "cannot tell the OpenVPN version from `openvpn --version` ({:?}); vpn-ns needs 2.6 or newer",
            out.lines().next().unwrap_or("")
        )),
        Some((maj, min, patch)) if (maj, min) < MIN_OPENVPN => Some(format!(
            "OpenVPN {maj}.{min}.{patch} is too old: vpn-ns needs 2.6 or newer (for `disable-dco`); install openvpn 2.6"
        )),
        Some(_) => None,
    }
}

/// Host prerequisites every connection needs.
pub fn host_problems(tun: bool, netns: bool) -> Vec<String> {
    let mut v = Vec::new();
    if !tun {
        v.push(
            "/dev/net/tun is missing: load the tun module (`modprobe tun`) or, in a container, pass the device in".to_owned(),
        );
    }
    if !netns {
        v.push(
            "this kernel has no network namespaces (/proc/self/ns/net is missing): vpn-ns needs CONFIG_NET_NS".to_owned(),
        );
    }
    v
}

/// `module`: the kernel's WireGuard module is loaded or loadable; `userspace_found`:
/// the userspace program is in PATH.
pub fn wireguard_problem(
    backend: WgBackend,
    module: bool,
    userspace: &str,
    userspace_found: bool,
) -> Option<String> {
    match backend {
        WgBackend::Kernel if !module => Some(
            "backend = \"kernel\" but the wireguard kernel module is not available: `modprobe wireguard`, or use backend = \"builtin\"".to_owned(),
        ),
        WgBackend::Userspace if !userspace_found => Some(format!(
            "backend = \"wireguard-go\" but {userspace:?} is not in PATH: `apt install wireguard-go`, set userspace = \"/path/to/program\", or use backend = \"builtin\""
        )),
        // The built-in data plane needs only /dev/net/tun, checked on its own.
        WgBackend::Builtin | WgBackend::Auto => None,
        _ => None,
    }
}

/// A config file that root acts on must be root's alone.
pub fn permission_problem(path: &Path, uid: u32, mode: u32) -> Option<String> {
    if uid != 0 {
        return Some(format!(
            "{} is owned by uid {uid}, not root: `chown root: {}`",
            path.display(),
            path.display()
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "{} is writable by group or others (mode {:o}): `chmod go-w {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        ));
    }
    None
}

/// Problems of an OpenVPN client config. `native`: the file is the connection's
/// `[openvpn] config`, started by `vpn-ns up` (which adds the hook flags itself);
/// otherwise it is started by the user and must carry the hook wiring.
pub fn openvpn_config_problems(path: &Path, directives: &[Directive], native: bool) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if native {
        v.extend(
            conf::conflicts(directives)
                .iter()
                .map(|c| conf::conflict_message(path, c)),
        );
    } else if conf::uses_vpn_ns_hook(directives) {
        v.extend(
            conf::privilege_conflicts(directives)
                .iter()
                .map(|c| conf::conflict_message(path, c)),
        );
        v.extend(
            conf::missing_hook_lines(directives)
                .into_iter()
                .map(|(line, why)| format!("{}: missing `{line}` ({why}); add it", path.display())),
        );
    }
    if !directives
        .iter()
        .any(|d| d.name == "client" || d.name == "remote")
    {
        v.push(format!(
            "{}: no `client` or `remote` line: this does not look like an OpenVPN client config",
            path.display()
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openvpn_versions() {
        let out = "OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO]\nlibrary versions: ...";
        assert_eq!(parse_openvpn_version(out), Some((2, 6, 14)));
        assert_eq!(parse_openvpn_version("OpenVPN 2.7_rc1 x"), Some((2, 7, 0)));
        assert_eq!(parse_openvpn_version("garbage"), None);
        assert!(openvpn_problem(Some(out)).is_none());
        let old = openvpn_problem(Some("OpenVPN 2.5.9 x86_64")).unwrap();
        assert!(old.contains("2.5.9 is too old"), "{old}");
        assert!(
            openvpn_problem(None)
                .unwrap()
                .contains("apt install openvpn")
        );
        assert!(openvpn_problem(Some("what")).is_some());
    }

    #[test]
    fn host_prerequisites() {
        assert!(host_problems(true, true).is_empty());
        let p = host_problems(false, true);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("modprobe tun"));
        assert_eq!(host_problems(false, false).len(), 2);
    }

    #[test]
    fn wireguard_backends() {
        let wg = "wireguard-go";
        assert!(wireguard_problem(WgBackend::Auto, false, wg, true).is_none());
        assert!(wireguard_problem(WgBackend::Auto, true, wg, false).is_none());
        assert!(wireguard_problem(WgBackend::Auto, false, wg, false).is_none());
        assert!(wireguard_problem(WgBackend::Builtin, false, wg, false).is_none());
        assert!(wireguard_problem(WgBackend::Kernel, false, wg, true).is_some());
        assert!(wireguard_problem(WgBackend::Kernel, true, wg, false).is_none());
        let u = wireguard_problem(WgBackend::Userspace, true, wg, false).unwrap();
        assert!(u.contains("\"wireguard-go\" is not in PATH"), "{u}");
    }

    #[test]
    fn permissions() {
        let p = Path::new("/etc/vpn-ns/work.toml");
        assert!(permission_problem(p, 0, 0o100644).is_none());
        assert!(permission_problem(p, 0, 0o100600).is_none());
        assert!(
            permission_problem(p, 0, 0o100664)
                .unwrap()
                .contains("chmod go-w")
        );
        assert!(permission_problem(p, 0, 0o100646).is_some());
        assert!(
            permission_problem(p, 1000, 0o100644)
                .unwrap()
                .contains("chown")
        );
    }

    #[test]
    fn native_config_conflicts_and_hook_wiring() {
        let p = Path::new("/etc/openvpn/client/work.conf");
        let native = conf::parse("client\nremote x\nup /bin/true\n").unwrap();
        let v = openvpn_config_problems(p, &native, true);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("line 3: `up` conflicts"), "{v:?}");

        let hooked = conf::parse(
            "client\nremote x\nscript-security 2\nup \"/usr/bin/vpn-ns hook openvpn work\"\ndown \"/usr/bin/vpn-ns hook openvpn work\"\nifconfig-noexec\n",
        )
        .unwrap();
        let v = openvpn_config_problems(p, &hooked, false);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("missing `route-noexec`"));
        assert!(v[1].contains("missing `disable-dco`"));

        let dropping = conf::parse(
            "client\nremote x\nscript-security 2\nifconfig-noexec\nroute-noexec\ndisable-dco\nuser nobody\n\
             up \"vpn-ns hook openvpn work\"\ndown \"vpn-ns hook openvpn work\"\n",
        )
        .unwrap();
        let v = openvpn_config_problems(p, &dropping, false);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("line 7: `user` conflicts"), "{v:?}");

        let plain = conf::parse("client\nremote x\n").unwrap();
        assert!(openvpn_config_problems(p, &plain, false).is_empty());
        let empty = conf::parse("dev tun\n").unwrap();
        assert_eq!(openvpn_config_problems(p, &empty, true).len(), 1);
    }
}
