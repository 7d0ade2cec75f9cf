//! A small reader of OpenVPN client config files: enough to find the directives that
//! conflict with `vpn-ns up` and the lines hook-mode wiring needs, with line numbers
//! for the messages. It tokenizes like OpenVPN's own `parse_line`: `#`/`;` start a
//! comment where a token would start, `"..."` quotes with backslash escapes, `'...'`
//! quotes literally, and inline files (`<ca>` ... `</ca>`) are skipped.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// 1-based line number in the file.
    pub line: usize,
    /// The option name, without a leading `--`.
    pub name: String,
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

pub fn read(path: &Path) -> Result<Vec<Directive>, ConfError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(line, message)| ConfError::Syntax {
        path: path.to_owned(),
        line,
        message,
    })
}

/// Directives in file order; `Err((line, message))` for an unterminated quote or
/// inline file.
pub fn parse(text: &str) -> Result<Vec<Directive>, (usize, String)> {
    let mut out = Vec::new();
    let mut inline: Option<(String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if let Some((tag, _)) = &inline {
            if trimmed == format!("</{tag}>") {
                inline = None;
            }
            continue;
        }
        if let Some(tag) = trimmed
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .filter(|t| !t.starts_with('/') && !t.is_empty())
        {
            inline = Some((tag.to_owned(), line));
            continue;
        }
        let tokens = tokenize(raw).map_err(|m| (line, m))?;
        let mut it = tokens.into_iter();
        if let Some(first) = it.next() {
            let name = first.strip_prefix("--").unwrap_or(&first).to_owned();
            out.push(Directive {
                line,
                name,
                args: it.collect(),
            });
        }
    }
    match inline {
        Some((tag, line)) => Err((line, format!("<{tag}> is never closed by </{tag}>"))),
        None => Ok(out),
    }
}

fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#' | ';') => return Ok(tokens),
            _ => {}
        }
        let mut tok = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => loop {
                    match chars.next() {
                        None => return Err("unterminated \" quote".to_owned()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => tok.push(e),
                            None => return Err("unterminated \" quote".to_owned()),
                        },
                        Some(x) => tok.push(x),
                    }
                },
                '\'' => loop {
                    match chars.next() {
                        None => return Err("unterminated ' quote".to_owned()),
                        Some('\'') => break,
                        Some(x) => tok.push(x),
                    }
                },
                '\\' => {
                    if let Some(e) = chars.next() {
                        tok.push(e);
                    }
                }
                c => tok.push(c),
            }
        }
        tokens.push(tok);
    }
}

/// A directive that `vpn-ns up` cannot run with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub line: usize,
    pub name: String,
    pub reason: &'static str,
}

/// Directives that fight the flags `vpn-ns up` adds or the way it watches OpenVPN.
pub fn conflicts(directives: &[Directive]) -> Vec<Conflict> {
    directives
        .iter()
        .filter_map(|d| {
            let reason = match d.name.as_str() {
                "up" => "it installs its own --up hook",
                "down" => "it installs its own --down hook",
                "route-up" | "route-pre-down" => {
                    "a script here would run in the host namespace while the tunnel lives in the connection's namespace"
                }
                "dev-type" if d.args.first().is_some_and(|t| t != "tun" && t != "tap") => {
                    "only tun and tap devices can be moved into a namespace"
                }
                "user" | "chroot" => PRIVILEGE_REASON,
                "daemon" => "it starts and watches OpenVPN itself (use --foreground under systemd)",
                "log" | "log-append" | "syslog" => {
                    "it keeps OpenVPN's output in /run/vpn-ns/<conn>.openvpn.log to report failures"
                }
                _ => return None,
            };
            Some(Conflict {
                line: d.line,
                name: d.name.clone(),
                reason,
            })
        })
        .collect()
}

const PRIVILEGE_REASON: &str = "OpenVPN would run the --down hook without root or outside the real filesystem, so the namespace could not be removed";

/// Directives that break the vpn-ns hook whoever starts OpenVPN (`user`, `chroot`).
pub fn privilege_conflicts(directives: &[Directive]) -> Vec<Conflict> {
    conflicts(directives)
        .into_iter()
        .filter(|c| c.reason == PRIVILEGE_REASON)
        .collect()
}

/// One actionable message for a conflict in `path`.
pub fn conflict_message(path: &Path, c: &Conflict) -> String {
    format!(
        "{} line {}: `{}` conflicts with vpn-ns ({}); remove it",
        path.display(),
        c.line,
        c.name,
        c.reason
    )
}

/// True when the config wires vpn-ns as its --up/--down script (hook mode).
pub fn uses_vpn_ns_hook(directives: &[Directive]) -> bool {
    directives
        .iter()
        .any(|d| (d.name == "up" || d.name == "down") && d.args.iter().any(|a| is_hook_cmd(a)))
}

fn is_hook_cmd(cmd: &str) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    words
        .first()
        .is_some_and(|p| p.rsplit('/').next() == Some("vpn-ns"))
        && words.windows(2).any(|w| w == ["hook", "openvpn"])
}

/// What a hook-mode config is missing: (line to add, why). Empty when complete.
pub fn missing_hook_lines(directives: &[Directive]) -> Vec<(&'static str, &'static str)> {
    let has = |n: &str| directives.iter().any(|d| d.name == n);
    let mut missing = Vec::new();
    let security_ok = directives
        .iter()
        .rfind(|d| d.name == "script-security")
        .and_then(|d| d.args.first())
        .and_then(|a| a.parse::<u8>().ok())
        .is_some_and(|l| l >= 2);
    if !security_ok {
        missing.push((
            "script-security 2",
            "OpenVPN refuses to run the vpn-ns hook below level 2",
        ));
    }
    if !has("ifconfig-noexec") {
        missing.push((
            "ifconfig-noexec",
            "otherwise OpenVPN configures the tunnel in the host namespace first",
        ));
    }
    if !has("route-noexec") {
        missing.push((
            "route-noexec",
            "otherwise OpenVPN installs the pushed routes in the host namespace",
        ));
    }
    if !has("disable-dco") {
        missing.push((
            "disable-dco",
            "a data-channel-offload device stops working once moved into a namespace",
        ));
    }
    let hooked = |n: &str| {
        directives
            .iter()
            .any(|d| d.name == n && d.args.iter().any(|a| is_hook_cmd(a)))
    };
    if !hooked("up") {
        missing.push((
            "up \"/usr/bin/vpn-ns hook openvpn <conn>\"",
            "vpn-ns must see the tunnel come up",
        ));
    }
    if !hooked("down") {
        missing.push((
            "down \"/usr/bin/vpn-ns hook openvpn <conn>\"",
            "without it the namespace outlives the tunnel",
        ));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ds: &[Directive]) -> Vec<(usize, &str)> {
        ds.iter().map(|d| (d.line, d.name.as_str())).collect()
    }

    #[test]
    fn comments_quotes_and_inline_files() {
        let text = "# comment\n\
                    ; other comment\n\
                    client\n\
                    remote vpn.example 1194 udp # trailing\n\
                    <ca>\n\
                    up not-a-directive\n\
                    </ca>\n\
                    up \"/usr/bin/vpn-ns hook openvpn work\"\n\
                    --down '/bin/x y'\n\
                    setenv A \"x\\\"y\"\n\
                    \n\
                    auth-user-pass pa\\ ss";
        let ds = parse(text).unwrap();
        assert_eq!(
            names(&ds),
            vec![
                (3, "client"),
                (4, "remote"),
                (8, "up"),
                (9, "down"),
                (10, "setenv"),
                (12, "auth-user-pass")
            ]
        );
        assert_eq!(ds[1].args, vec!["vpn.example", "1194", "udp"]);
        assert_eq!(ds[2].args, vec!["/usr/bin/vpn-ns hook openvpn work"]);
        assert_eq!(ds[3].args, vec!["/bin/x y"]);
        assert_eq!(ds[4].args, vec!["A", "x\"y"]);
        assert_eq!(ds[5].args, vec!["pa ss"]);
    }

    #[test]
    fn a_hash_inside_a_token_is_not_a_comment() {
        let ds = parse("setenv X a#b").unwrap();
        assert_eq!(ds[0].args, vec!["X", "a#b"]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(parse("client\nup \"x").unwrap_err().0, 2);
        assert_eq!(parse("client\n<key>\nabc\n").unwrap_err().0, 2);
        assert!(parse("x 'y").is_err());
    }

    #[test]
    fn conflicting_directives_are_found_with_lines() {
        let ds = parse(
            "client\nup /etc/openvpn/up.sh\nroute-up x\ndev-type tun\ndaemon\nlog /var/log/x\nifconfig-noexec\nroute 10.0.0.0\n",
        )
        .unwrap();
        let c = conflicts(&ds);
        let got: Vec<(usize, &str)> = c.iter().map(|c| (c.line, c.name.as_str())).collect();
        assert_eq!(
            got,
            vec![(2, "up"), (3, "route-up"), (5, "daemon"), (6, "log")]
        );
        let msg = conflict_message(Path::new("/etc/openvpn/work.conf"), &c[0]);
        assert_eq!(
            msg,
            "/etc/openvpn/work.conf line 2: `up` conflicts with vpn-ns (it installs its own --up hook); remove it"
        );
    }

    #[test]
    fn dropping_privileges_breaks_the_down_hook() {
        let ds = parse("client\nuser nobody\ngroup nogroup\nchroot /var/empty\nup x\n").unwrap();
        let pc = privilege_conflicts(&ds);
        let p: Vec<(usize, &str)> = pc.iter().map(|c| (c.line, c.name.as_str())).collect();
        assert_eq!(p, vec![(2, "user"), (4, "chroot")]);
        assert_eq!(conflicts(&ds).len(), 3);
    }

    #[test]
    fn odd_dev_type_conflicts() {
        let ds = parse("dev-type ovpn\ndev-type tap\n").unwrap();
        let c = conflicts(&ds);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].line, 1);
    }

    #[test]
    fn hook_wiring_complete_and_incomplete() {
        let full = parse(
            "script-security 2\nifconfig-noexec\nroute-noexec\ndisable-dco\n\
             up \"/usr/bin/vpn-ns hook openvpn work\"\ndown \"/usr/bin/vpn-ns --config-dir /x hook openvpn work\"\n",
        )
        .unwrap();
        assert!(uses_vpn_ns_hook(&full));
        assert!(missing_hook_lines(&full).is_empty());

        let partial = parse("script-security 1\nup \"vpn-ns hook openvpn work\"\n").unwrap();
        assert!(uses_vpn_ns_hook(&partial));
        let missing: Vec<&str> = missing_hook_lines(&partial)
            .iter()
            .map(|m| m.0.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            missing,
            vec![
                "script-security",
                "ifconfig-noexec",
                "route-noexec",
                "disable-dco",
                "down"
            ]
        );
        assert!(!uses_vpn_ns_hook(
            &parse("up /etc/openvpn/update-resolv-conf").unwrap()
        ));
    }
}
