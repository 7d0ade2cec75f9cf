//! Who is asking, who the command will run as, and whether `[exec]` allows it. Pure
//! decisions over values the caller looked up, so every branch has a unit test.

use std::path::Path;

use crate::config::ExecPolicy;

/// The person behind this root process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invoker {
    /// A real root shell (or root going through sudo/pkexec/doas).
    Root,
    /// A non-root user elevated by `via` (sudo, pkexec, doas).
    User {
        via: &'static str,
        who: Who,
        /// sudo's SUDO_GID: the group the user was running with.
        gid: Option<u32>,
    },
}

/// How the elevation tool named the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Uid(u32),
    Name(String),
}

/// Reads the invoker from the variables sudo (SUDO_UID, SUDO_GID, SUDO_USER), pkexec
/// (PKEXEC_UID) and doas (DOAS_USER) set. They are trusted because the process runs as
/// root with a root real uid (`ruid`): main refuses a setuid-root install, where they
/// would be the caller's own.
pub fn invoker(ruid: u32, get: impl Fn(&str) -> Option<String>) -> Result<Invoker, String> {
    if ruid != 0 {
        return Err(format!(
            "real uid {ruid} is not root: run vpn-ns exec through sudo, pkexec or doas"
        ));
    }
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    let uid_var = |k: &str| -> Result<Option<u32>, String> {
        match get(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("{k}={v:?} is not a numeric uid")),
        }
    };
    if let Some(uid) = uid_var("SUDO_UID")? {
        if uid == 0 {
            return Ok(Invoker::Root);
        }
        let gid = match get("SUDO_GID") {
            None => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .map_err(|_| format!("SUDO_GID={v:?} is not a numeric gid"))?,
            ),
        };
        return Ok(Invoker::User {
            via: "sudo",
            who: Who::Uid(uid),
            gid,
        });
    }
    if let Some(uid) = uid_var("PKEXEC_UID")? {
        if uid == 0 {
            return Ok(Invoker::Root);
        }
        return Ok(Invoker::User {
            via: "pkexec",
            who: Who::Uid(uid),
            gid: None,
        });
    }
    if let Some(name) = get("DOAS_USER") {
        if name == "root" {
            return Ok(Invoker::Root);
        }
        return Ok(Invoker::User {
            via: "doas",
            who: Who::Name(name),
            gid: None,
        });
    }
    Ok(Invoker::Root)
}

/// The account the command runs as, before it is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// The invoking user (or root for a root shell).
    Invoker,
    /// `-u USER`.
    Named(String),
}

/// `-u USER` picks another account, which only root may do: a user elevated through sudo
/// may exec only as themselves (sudo's own rules decide who may be someone else).
pub fn target(inv: &Invoker, user_flag: Option<&str>) -> Result<TargetSpec, String> {
    match (inv, user_flag) {
        (_, None) => Ok(TargetSpec::Invoker),
        (Invoker::Root, Some(u)) => Ok(TargetSpec::Named(u.to_owned())),
        (Invoker::User { via, .. }, Some(_)) => Err(format!(
            "-u/--user is only for root; through {via}, exec runs as the invoking user"
        )),
    }
}

/// `[exec]` absent: whoever reached vpn-ns as root may exec (sudo/pkexec/doas decided).
/// Present: a non-root invoker must be listed in `users`, or be a member of one of
/// `groups` (`member_gids` is the invoker's primary and supplementary groups;
/// `group_gid` resolves a group name). A real root shell is always allowed.
pub fn allowed(
    conn_path: &Path,
    conn: &str,
    policy: Option<&ExecPolicy>,
    inv: &Invoker,
    inv_name: &str,
    member_gids: &[u32],
    group_gid: impl Fn(&str) -> Option<u32>,
) -> Result<(), String> {
    let (Some(p), Invoker::User { .. }) = (policy, inv) else {
        return Ok(());
    };
    if p.users.iter().any(|u| u == inv_name) {
        return Ok(());
    }
    let in_group = p
        .groups
        .iter()
        .filter_map(|g| group_gid(g))
        .any(|gid| member_gids.contains(&gid));
    if in_group {
        return Ok(());
    }
    // The lists come from a root-only file: the refused user learns only about themself.
    Err(format!(
        "{}: [exec] does not allow user {inv_name} to exec in connection {conn}; \
         an administrator can add the user or one of their groups to [exec]",
        conn_path.display(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn invoker_from_elevation_tools() {
        assert_eq!(
            invoker(
                0,
                env(&[
                    ("SUDO_UID", "1000"),
                    ("SUDO_GID", "100"),
                    ("SUDO_USER", "al")
                ])
            ),
            Ok(Invoker::User {
                via: "sudo",
                who: Who::Uid(1000),
                gid: Some(100)
            })
        );
        assert_eq!(
            invoker(0, env(&[("PKEXEC_UID", "1001")])),
            Ok(Invoker::User {
                via: "pkexec",
                who: Who::Uid(1001),
                gid: None
            })
        );
        assert_eq!(
            invoker(0, env(&[("DOAS_USER", "bob")])),
            Ok(Invoker::User {
                via: "doas",
                who: Who::Name("bob".into()),
                gid: None
            })
        );
    }

    #[test]
    fn root_through_a_tool_or_a_shell_is_root() {
        assert_eq!(invoker(0, env(&[])), Ok(Invoker::Root));
        assert_eq!(invoker(0, env(&[("SUDO_UID", "0")])), Ok(Invoker::Root));
        assert_eq!(invoker(0, env(&[("PKEXEC_UID", "0")])), Ok(Invoker::Root));
        assert_eq!(invoker(0, env(&[("DOAS_USER", "root")])), Ok(Invoker::Root));
        assert_eq!(invoker(0, env(&[("SUDO_UID", "")])), Ok(Invoker::Root));
    }

    #[test]
    fn a_non_root_real_uid_is_refused_whatever_the_variables_say() {
        assert!(invoker(1000, env(&[])).is_err());
        assert!(invoker(1000, env(&[("SUDO_UID", "0")])).is_err());
    }

    #[test]
    fn garbage_ids_are_refused() {
        assert!(invoker(0, env(&[("SUDO_UID", "x")])).is_err());
        assert!(invoker(0, env(&[("SUDO_UID", "5"), ("SUDO_GID", "-1")])).is_err());
        assert!(invoker(0, env(&[("PKEXEC_UID", "1e3")])).is_err());
    }

    #[test]
    fn only_root_may_pick_another_user() {
        assert_eq!(target(&Invoker::Root, None), Ok(TargetSpec::Invoker));
        assert_eq!(
            target(&Invoker::Root, Some("al")),
            Ok(TargetSpec::Named("al".into()))
        );
        let user = Invoker::User {
            via: "sudo",
            who: Who::Uid(1000),
            gid: None,
        };
        assert_eq!(target(&user, None), Ok(TargetSpec::Invoker));
        assert!(
            target(&user, Some("root"))
                .unwrap_err()
                .contains("only for root")
        );
    }

    fn policy(users: &[&str], groups: &[&str]) -> ExecPolicy {
        ExecPolicy {
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            hostname: None,
            session_bus: Default::default(),
        }
    }

    fn check(
        p: Option<&ExecPolicy>,
        inv: &Invoker,
        name: &str,
        gids: &[u32],
    ) -> Result<(), String> {
        let groups = |g: &str| match g {
            "vpn" => Some(500),
            "wheel" => Some(10),
            _ => None,
        };
        allowed(
            Path::new("/etc/vpn-ns/work.toml"),
            "work",
            p,
            inv,
            name,
            gids,
            groups,
        )
    }

    #[test]
    fn policy_decisions() {
        let al = Invoker::User {
            via: "sudo",
            who: Who::Uid(1000),
            gid: None,
        };
        // No [exec]: sudo decided.
        assert!(check(None, &al, "al", &[1000]).is_ok());
        // A real root shell is always allowed.
        assert!(check(Some(&policy(&[], &[])), &Invoker::Root, "root", &[0]).is_ok());
        assert!(check(Some(&policy(&["al"], &[])), &al, "al", &[1000]).is_ok());
        assert!(check(Some(&policy(&["bob"], &["vpn"])), &al, "al", &[1000, 500]).is_ok());
        let err = check(
            Some(&policy(&["bob"], &["vpn", "nosuch"])),
            &al,
            "al",
            &[1000, 10],
        )
        .unwrap_err();
        assert!(err.starts_with("/etc/vpn-ns/work.toml: [exec] does not allow user al"));
        assert!(!err.contains("bob") && !err.contains("vpn,") && !err.contains("nosuch"));
        // An empty [exec] section allows no non-root user.
        assert!(check(Some(&policy(&[], &[])), &al, "al", &[1000]).is_err());
    }
}
