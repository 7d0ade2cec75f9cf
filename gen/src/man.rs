//! Man pages: clap_mangen's rendering of every visible command, plus the sections a
//! man page needs that clap has no place for (exit status, environment, files, see
//! also). The command list and options come from clap; only those sections are text.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_mangen::Man;
use roff::{Roff, bold, roman};

/// Sections appended to `vpn-ns(1)`: (heading, [(term, text)]); an empty term makes a
/// plain paragraph.
const ROOT_SECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "EXIT STATUS",
        &[
            ("0", "Success."),
            (
                "1",
                "The operation failed; the message says what, and what this call changed was rolled back.",
            ),
            ("2", "Bad usage or configuration; nothing was changed."),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            (
                "VPN_NS_CONFIG_DIR",
                "Directory of connection files, like --config-dir. Refused when a non-root user runs vpn-ns through sudo, pkexec or doas.",
            ),
            (
                "VPN_NS_LOG",
                "A tracing filter (for example vpn_ns=debug) that overrides -v and -q.",
            ),
            (
                "SUDO_UID, PKEXEC_UID, DOAS_USER",
                "Who elevated vpn-ns: exec drops back to that user; such a user's config directory override is refused.",
            ),
        ],
    ),
    (
        "FILES",
        &[
            (
                "/etc/vpn-ns/CONN.toml",
                "One connection; its name is the file name. Owned by root and not writable by group or others.",
            ),
            (
                "/run/netns/NS",
                "The connection's network namespace, made as iproute2 makes it (ip netns exec NS works).",
            ),
            (
                "/etc/netns/NS/resolv.conf, /etc/netns/NS/nsswitch.conf",
                "The namespace's DNS; bind-mounted over /etc by vpn-ns exec and ip netns exec.",
            ),
            (
                "/run/vpn-ns/CONN.json, /run/vpn-ns/CONN.lock",
                "State of a connection that is up, and the lock that serializes calls for it.",
            ),
            (
                "/usr/share/doc/vpn-ns/",
                "README, example connections and OpenVPN configs, systemd, sudoers and polkit examples.",
            ),
        ],
    ),
];

/// Pages referred to from `vpn-ns(1)` besides its own subcommands.
const RELATED: &[&str] = &[
    "ip-netns(8)",
    "openvpn(8)",
    "wg-quick(8)",
    "systemd.exec(5)",
    "sudoers(5)",
    "pkexec(1)",
];

/// Writes `vpn-ns.1` and one page per visible subcommand at any depth
/// (`vpn-ns-hook-openvpn.1`); no pages for clap's `help`.
pub fn write_pages(root: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let source = format!(
        "{} {}",
        root.get_name(),
        root.get_version().unwrap_or_default()
    );
    let mut root = root.disable_help_subcommand(true);
    root.build();
    let mut written = Vec::new();
    let pages = all_pages(&root);
    write_page(&root, true, dir, &source, &pages, &mut written)?;
    Ok(written)
}

/// `name(1)` of every page, root first.
fn all_pages(root: &Command) -> Vec<String> {
    fn walk(cmd: &Command, out: &mut Vec<String>) {
        out.push(format!("{}(1)", display_name(cmd)));
        for sub in visible(cmd) {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

fn visible(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn display_name(cmd: &Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

fn write_page(
    cmd: &Command,
    is_root: bool,
    dir: &Path,
    source: &str,
    pages: &[String],
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let man = Man::new(cmd.clone()).source(source).manual("vpn-ns manual");
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    let mut extra = Roff::new();
    if is_root {
        for (heading, items) in ROOT_SECTIONS {
            extra.control("SH", [*heading]);
            for (term, text) in *items {
                extra
                    .control("TP", [])
                    .text([bold(*term)])
                    .text([roman(*text)]);
            }
        }
    }
    extra.control("SH", ["SEE ALSO"]);
    let me = format!("{}(1)", display_name(cmd));
    let see_also: Vec<&str> = if is_root {
        pages[1..]
            .iter()
            .map(String::as_str)
            .chain(RELATED.iter().copied())
            .collect()
    } else {
        pages
            .iter()
            .map(String::as_str)
            .filter(|p| *p != me)
            .collect()
    };
    extra.text([roman(see_also.join(", "))]);
    extra.to_writer(&mut buf)?;
    fs::write(&path, buf)?;
    written.push(path);
    for sub in visible(cmd) {
        write_page(sub, false, dir, source, pages, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_command_with_see_also() {
        let dir = std::env::temp_dir().join(format!("vpn-ns-gen-man-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let cmd = Command::new("vpn-ns")
            .version("9.9")
            .subcommand(Command::new("exec").about("Run a command"))
            .subcommand(Command::new("hook").subcommand(Command::new("wg-quick")))
            .subcommand(Command::new("secret").hide(true));
        let mut names: Vec<String> = write_pages(cmd, &dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "vpn-ns-exec.1",
                "vpn-ns-hook-wg-quick.1",
                "vpn-ns-hook.1",
                "vpn-ns.1"
            ]
        );
        // roff escapes hyphens in text as `\-`.
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap().replace("\\-", "-");
        let root = read("vpn-ns.1");
        assert!(root.contains(".SH \"EXIT STATUS\""), "{root}");
        assert!(root.contains("vpn-ns-hook-wg-quick(1)"));
        assert!(!root.contains("vpn-ns(1),"));
        let exec = read("vpn-ns-exec.1");
        assert!(
            exec.contains("vpn-ns 9.9"),
            "source names the program: {exec}"
        );
        assert!(exec.contains("vpn-ns(1)"));
        assert!(!exec.contains("vpn-ns-exec(1)"));
        assert!(!exec.contains("EXIT STATUS"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
