//! Accounts from the password and group databases (looked up before entering anything,
//! while NSS still sees the host), and the final, irreversible privilege drop.

use std::ffi::CString;

use anyhow::{Context as _, bail};
use nix::unistd::{Gid, Group, Uid, User};

use super::env::Account;

fn account(u: User) -> Account {
    Account {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        name: u.name,
        home: u.dir,
        shell: u.shell,
    }
}

pub fn by_uid(uid: u32) -> anyhow::Result<Option<Account>> {
    Ok(User::from_uid(Uid::from_raw(uid))
        .with_context(|| format!("cannot look up uid {uid} in the password database"))?
        .map(account))
}

pub fn by_name(name: &str) -> anyhow::Result<Option<Account>> {
    Ok(User::from_name(name)
        .with_context(|| format!("cannot look up user {name} in the password database"))?
        .map(account))
}

/// The account's primary group `gid` and its supplementary groups.
pub fn groups(a: &Account, gid: u32) -> anyhow::Result<Vec<u32>> {
    let name = CString::new(a.name.as_bytes())
        .with_context(|| format!("user name {:?} contains a NUL byte", a.name))?;
    let list = nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
        .with_context(|| format!("cannot list the groups of user {}", a.name))?;
    Ok(list.into_iter().map(Gid::as_raw).collect())
}

pub fn group_gid(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// setgroups -> setresgid -> setresuid, then proves it cannot be undone.
pub fn drop_to(a: &Account, gid: u32, groups: &[u32]) -> anyhow::Result<()> {
    let gids: Vec<Gid> = groups.iter().copied().map(Gid::from_raw).collect();
    let (uid, g) = (Uid::from_raw(a.uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&gids)
        .with_context(|| format!("cannot set the supplementary groups of {}", a.name))?;
    nix::unistd::setresgid(g, g, g).with_context(|| format!("cannot switch to gid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid)
        .with_context(|| format!("cannot switch to user {} (uid {})", a.name, a.uid))?;
    let r = nix::unistd::getresuid().context("getresuid")?;
    let rg = nix::unistd::getresgid().context("getresgid")?;
    if [r.real, r.effective, r.saved] != [uid; 3] || [rg.real, rg.effective, rg.saved] != [g; 3] {
        bail!("privilege drop to {} did not take effect", a.name);
    }
    if a.uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!(
            "privilege drop to {} failed: root could be regained",
            a.name
        );
    }
    Ok(())
}
