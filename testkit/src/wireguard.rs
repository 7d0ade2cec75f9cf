//! WireGuard peers inside a sandbox: wireguard-go servers in namespaces `srv1`, `srv2`
//! behind veths (198.51.100.1/30 <-> .2, .5/30 <-> .6), each with TCP services on its
//! `lo`, and keys made with `wg genkey`/`wg pubkey`/`wg genpsk`.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::openvpn::SERVICE_PORT;
use super::sandbox::{Proc, Sandbox};
use super::{expect_ok, wait_until};

/// Bound for handshakes and for processes to go, generous for a loaded CI.
pub const WG_SETTLE: Duration = Duration::from_secs(10);
/// wireguard-go refuses to run on Linux without it.
pub const USERSPACE_ENV: &str = "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD";
pub const WG_PORT: u16 = 51820;
/// The client's tunnel addresses, as the servers' AllowedIPs expect them.
pub const CLIENT_V4: &str = "100.64.0.2";
pub const CLIENT_V6: &str = "fd00:64::2";

/// A key pair, base64 as `wg` prints it.
pub struct Keys {
    pub private: String,
    pub public: String,
}

/// Runs `wg ARGS` with `stdin`, returning its trimmed output.
pub fn wg(args: &[&str], stdin: &str) -> String {
    let mut c = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wg (wireguard-tools) must be installed");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to wg");
    let out = c.wait_with_output().expect("wg");
    assert!(out.status.success(), "wg {args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

/// A fresh key pair from `wg genkey` / `wg pubkey`.
pub fn genkeys() -> Keys {
    let private = wg(&["genkey"], "");
    let public = wg(&["pubkey"], &format!("{private}\n"));
    Keys { private, public }
}

/// One WireGuard server: namespace, veth, wireguard-go, services on its `lo`.
pub struct WgServer {
    pub endpoint: String,
    pub keys: Keys,
    /// wireguard-go and the services; dropping kills them.
    pub procs: Vec<Proc>,
}

/// What `start_wg_server` builds.
pub struct WgServerSpec<'a> {
    /// 1 or 2: picks namespace, veth /30 and tunnel address.
    pub n: u8,
    pub tunnel_v4: &'a str,
    pub tunnel_v6: Option<&'a str>,
    /// (address on lo, reply)
    pub services: &'a [(&'a str, &'a str)],
    pub psk: Option<&'a str>,
    /// Run vpn-ns's built-in data plane (`vpn-ns wg-builtin`) instead of wireguard-go.
    pub builtin: bool,
}

/// Writes a mode-600 file in the test directory.
pub fn write_secret(sb: &Sandbox, name: &str, text: &str) -> PathBuf {
    let p = sb.dir().join(name);
    std::fs::write(&p, format!("{text}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// Builds `srvN` and starts its wireguard-go (device `wgsN`, peer `client_pub` with the
/// client's tunnel addresses) and services; returns once the services answer.
pub fn start_wg_server(sb: &Sandbox, s: &WgServerSpec, client_pub: &str) -> WgServer {
    let ns = format!("srv{}", s.n);
    let base = 4 * (u32::from(s.n) - 1);
    let (up, srv) = (
        format!("198.51.100.{}", base + 1),
        format!("198.51.100.{}", base + 2),
    );
    let dev = format!("wgs{}", s.n);
    let mut script = format!(
        "set -e
         ip netns add {ns}
         ip link add up{n} type veth peer name eth0 netns {ns}
         ip addr add {up}/30 dev up{n}
         ip link set up{n} up
         ip -n {ns} link set lo up
         ip -n {ns} addr add {srv}/30 dev eth0
         ip -n {ns} link set eth0 up\n",
        n = s.n
    );
    for (addr, _) in s.services {
        if addr.contains(':') {
            script.push_str(&format!("ip -n {ns} -6 addr add {addr}/128 dev lo nodad\n"));
        } else {
            script.push_str(&format!("ip -n {ns} addr add {addr}/32 dev lo\n"));
        }
    }
    sb.must(&script);

    let keys = genkeys();
    let mut procs = Vec::new();
    if s.builtin {
        // Started inside srvN (tun and UDP socket there), configured first over stdin
        // and then, like wireguard-go, over its UAPI socket by `wg set` below.
        let conf = write_secret(
            sb,
            &format!("{ns}.uapi"),
            &format!(
                "set=1\nprivate_key={}\nlisten_port={WG_PORT}\n",
                key_hex(&keys.private)
            ),
        );
        let mut cmd = sb.ns_cmd(&ns, "sh");
        cmd.args([
            "-c",
            &format!(
                "exec {} wg-builtin {dev} < {}",
                crate::vpn_ns_bin(),
                conf.display()
            ),
        ]);
        procs.push(sb.spawn(&format!("wg-builtin-{ns}"), cmd));
    } else {
        let mut cmd = sb.ns_cmd(&ns, "wireguard-go");
        cmd.env(USERSPACE_ENV, "1").args(["-f", &dev]);
        procs.push(sb.spawn(&format!("wireguard-go-{ns}"), cmd));
    }
    let sock = format!("/run/wireguard/{dev}.sock");
    expect_ok(wait_until(WG_SETTLE, || {
        if sb.exists(&sock) {
            Ok(())
        } else {
            Err(format!("{sock} missing"))
        }
    }));
    let key_file = write_secret(sb, &format!("{ns}.key"), &keys.private);
    let mut allowed = format!("{CLIENT_V4}/32");
    if s.tunnel_v6.is_some() {
        allowed.push_str(&format!(",{CLIENT_V6}/128"));
    }
    let mut set = format!(
        "wg set {dev} private-key {} listen-port {WG_PORT} peer {client_pub} allowed-ips {allowed}",
        key_file.display()
    );
    if let Some(psk) = s.psk {
        let f = write_secret(sb, &format!("{ns}.psk"), psk);
        set.push_str(&format!(" preshared-key {}", f.display()));
    }
    let mut cfg = format!(
        "set -e
         {set}
         ip -n {ns} addr add {}/24 dev {dev}\n",
        s.tunnel_v4
    );
    if let Some(v6) = s.tunnel_v6 {
        cfg.push_str(&format!("ip -n {ns} -6 addr add {v6}/64 dev {dev} nodad\n"));
    }
    cfg.push_str(&format!("ip -n {ns} link set {dev} up\n"));
    sb.must(&cfg);

    for (i, (addr, reply)) in s.services.iter().enumerate() {
        let listen = if addr.contains(':') {
            format!("TCP6-LISTEN:{SERVICE_PORT},bind=[{addr}],reuseaddr,fork")
        } else {
            format!("TCP4-LISTEN:{SERVICE_PORT},bind={addr},reuseaddr,fork")
        };
        let mut cmd = sb.ns_cmd(&ns, "socat");
        cmd.arg(listen).arg(format!("SYSTEM:echo {reply}"));
        procs.push(sb.spawn(&format!("service-{ns}-{i}"), cmd));
        expect_ok(wait_until(WG_SETTLE, || {
            sb.tcp_get(Some(&ns), addr, SERVICE_PORT)
        }));
    }
    WgServer {
        endpoint: format!("{srv}:{WG_PORT}"),
        keys,
        procs,
    }
}

/// Pids of wireguard-go processes (anywhere on the machine) serving interface `word`.
pub fn wireguard_go_pids(word: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            if args.first().is_some_and(|a| a.ends_with(b"wireguard-go"))
                && args.contains(&word.as_bytes())
            {
                v.push(pid);
            }
        }
    }
    v
}

/// Pids of `vpn-ns wg-builtin` processes (anywhere on the machine) serving `iface`.
pub fn builtin_pids(iface: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
            if args.get(1) == Some(&b"wg-builtin".as_slice())
                && args.last() == Some(&iface.as_bytes())
            {
                v.push(pid);
            }
        }
    }
    v
}

/// A base64 key as the 64 hex digits of the UAPI wire.
pub fn key_hex(b64: &str) -> String {
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = String::new();
    for c in b64.bytes().take_while(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push_str(&format!("{:02x}", (bits >> n) & 0xff));
        }
    }
    out
}
