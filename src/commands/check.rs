//! `vpn-ns check [CONN]`: gather the facts (connection files, OpenVPN configs, kernel
//! features, programs) and report every problem `crate::check` finds, one line each.
//! Exit 0 when all is well, 2 otherwise.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::check;
use crate::cli::GlobalArgs;
use crate::commands::config_dir;
use crate::config::{self, Connection, Kind};
use crate::openvpn::conf;

struct Finding {
    subject: String,
    message: String,
}

pub fn run(g: &GlobalArgs, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let dir = config_dir(g)?;
    let mut findings = Vec::new();
    let mut add = |subject: &str, message: String| {
        findings.push(Finding {
            subject: subject.to_owned(),
            message,
        })
    };
    for p in check::host_problems(
        Path::new("/dev/net/tun").exists(),
        Path::new("/proc/self/ns/net").exists(),
    ) {
        add("host", p);
    }

    let names = match only {
        Some(n) => vec![n.to_owned()],
        None => connection_names(&dir)?,
    };
    let mut conns = Vec::new();
    for name in &names {
        match config::load(&dir, name) {
            Ok(c) => conns.push(c),
            Err(e) => add(name, e.to_string()),
        }
    }
    if conns.iter().any(|c| matches!(c.kind, Kind::OpenVpn(_)))
        && let Some(p) = check::openvpn_problem(openvpn_version().as_deref())
    {
        add("host", p);
    }
    for c in &conns {
        for p in connection_problems(c) {
            add(&c.name, p);
        }
    }
    // Deliberate choices the user may have made: reported, but not failures.
    let warnings: Vec<Finding> = conns
        .iter()
        .flat_map(|c| {
            c.forwards
                .iter()
                .flat_map(|r| [r.exposure_warning(), r.bypass_warning()])
                .flatten()
                .map(|message| Finding {
                    subject: c.name.clone(),
                    message,
                })
        })
        .collect();

    if g.json {
        let v: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| serde_json::json!({"subject": f.subject, "problem": f.message}))
            .collect();
        let out = serde_json::json!({
            "ok": findings.is_empty(),
            "connections": conns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "problems": v,
            "warnings": warnings
                .iter()
                .map(|f| serde_json::json!({"subject": f.subject, "warning": f.message}))
                .collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        for f in &findings {
            println!("{}: {}", f.subject, f.message);
        }
        for w in &warnings {
            println!("{}: warning: {}", w.subject, w.message);
        }
        if findings.is_empty() {
            println!(
                "ok: host and {} connection(s) checked, no problem found",
                conns.len()
            );
        }
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn connection_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", dir.display())),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".toml")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn openvpn_version() -> Option<String> {
    let out = Command::new("openvpn")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    // `openvpn --version` exits 1 on some builds; what matters is the banner.
    Some(String::from_utf8_lossy(&out.stdout).into_owned()).filter(|s| !s.is_empty())
}

fn connection_problems(c: &Connection) -> Vec<String> {
    let mut v = Vec::new();
    v.extend(file_permission_problem(&c.path));
    match &c.kind {
        Kind::OpenVpn(section) => {
            if let Some(section) = section {
                v.extend(openvpn_file_problems(&section.config, true));
            }
            // Hook mode: the user starts OpenVPN with a config that calls vpn-ns; check
            // it where it conventionally lives.
            for p in [
                PathBuf::from(format!("/etc/openvpn/client/{}.conf", c.name)),
                PathBuf::from(format!("/etc/openvpn/{}.conf", c.name)),
            ] {
                let native = section.as_ref().is_some_and(|s| s.config == p);
                if !native && p.exists() {
                    v.extend(openvpn_file_problems(&p, false));
                }
            }
        }
        Kind::WireGuard(section) => {
            v.extend(check::wireguard_problem(
                section.backend,
                wireguard_module(),
                &section.userspace,
                in_path(&section.userspace),
            ));
            if let Some(p) = &section.config {
                match crate::wireguard::parse::load(p) {
                    Ok(_) => {
                        v.extend(file_permission_problem(p));
                        v.extend(crate::wireguard::permission_warning(p));
                    }
                    Err(e) => v.push(e.to_string()),
                }
            }
        }
        Kind::Macvlan(_) | Kind::Routed(_) => {
            v.extend(crate::plain::host_device_problem(c));
        }
        Kind::Device => {}
    }
    v
}

fn openvpn_file_problems(path: &Path, native: bool) -> Vec<String> {
    match conf::read(path) {
        Ok(ds) => {
            let mut v: Vec<String> = file_permission_problem(path).into_iter().collect();
            v.extend(check::openvpn_config_problems(path, &ds, native));
            v
        }
        Err(e) => vec![e.to_string()],
    }
}

fn file_permission_problem(p: &Path) -> Option<String> {
    let m = std::fs::metadata(p).ok()?;
    check::permission_problem(p, m.uid(), m.mode())
}

/// Loaded, built in, or installed as a module for the running kernel.
fn wireguard_module() -> bool {
    if Path::new("/sys/module/wireguard").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let base = Path::new("/lib/modules").join(release.trim());
    ["modules.builtin", "modules.dep"].iter().any(|f| {
        std::fs::read_to_string(base.join(f))
            .is_ok_and(|t| t.lines().any(|l| l.contains("/wireguard.ko")))
    })
}

fn in_path(prog: &str) -> bool {
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
    if prog.contains('/') {
        return executable(Path::new(prog));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(prog))))
}
