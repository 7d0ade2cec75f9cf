//! Paths vpn-ns writes into or binds from must be its own. A directory another user can
//! write to (a tmpfs mounted with default options is 1777) lets them plant files that
//! root then overwrites through a symlink, or binds over /etc. So: directories are
//! root-owned, not group/world-writable and not symlinks, else refused naming the path;
//! files are opened with O_NOFOLLOW; temporary files are created exclusively.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OwnedError {
    #[error(
        "refusing to use {path}: {why} (it must be a root-owned directory, not group- or \
         world-writable: fix or remove it)"
    )]
    UnsafeDir { path: PathBuf, why: String },
    #[error("refusing to use {path}: {why}")]
    UnsafeFile { path: PathBuf, why: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OwnedError + use<> {
    let path = path.to_owned();
    move |source| OwnedError::Io { op, path, source }
}

/// Why a directory with these properties is not vpn-ns's own, if it is not.
pub fn dir_verdict(symlink: bool, dir: bool, uid: u32, mode: u32) -> Result<(), String> {
    if symlink {
        return Err("it is a symbolic link".into());
    }
    if !dir {
        return Err("it is not a directory".into());
    }
    owner_verdict(uid, mode)
}

/// Why a file with these properties is not fit to bind or trust, if it is not.
pub fn file_verdict(regular: bool, uid: u32, mode: u32) -> Result<(), String> {
    if !regular {
        return Err("it is not a regular file".into());
    }
    owner_verdict(uid, mode)
}

/// Root's, and writable by nobody else.
fn owner_verdict(uid: u32, mode: u32) -> Result<(), String> {
    if uid != 0 {
        return Err(format!("it is owned by uid {uid}, not root"));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "its mode {:04o} lets others write to it",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Checks an existing directory (not following a final symlink).
pub fn check_dir(path: &Path) -> Result<(), OwnedError> {
    let m = fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
    dir_verdict(m.file_type().is_symlink(), m.is_dir(), m.uid(), m.mode()).map_err(|why| {
        OwnedError::UnsafeDir {
            path: path.to_owned(),
            why,
        }
    })
}

/// Checks the directory when it exists; Ok(false) when it does not.
pub fn check_dir_if_exists(path: &Path) -> Result<bool, OwnedError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        _ => check_dir(path).map(|()| true),
    }
}

/// Creates one directory (mode `mode`, parent not created) unless something exists at
/// `path`; Ok(true) when this call created it. What exists is not inspected: callers
/// check it (`ensure_dir`, or their own ownership rule) before trusting it.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<bool> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the directory (mode `mode`) unless it exists, then checks it.
/// Returns whether this call created it.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<bool, OwnedError> {
    let created = create_dir(path, mode).map_err(io_err("cannot create", path))?;
    check_dir(path)?;
    Ok(created)
}

/// Opens a file to read or bind: no symlink, regular, root-owned, not writable by others.
pub fn open_own_file(path: &Path) -> Result<File, OwnedError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("cannot open", path))?;
    let m = f.metadata().map_err(io_err("cannot inspect", path))?;
    file_verdict(m.is_file(), m.uid(), m.mode()).map_err(|why| OwnedError::UnsafeFile {
        path: path.to_owned(),
        why,
    })?;
    Ok(f)
}

/// Opens (creating if needed) a file for writing without following a symlink.
pub fn open_write(path: &Path, mode: u32, truncate: bool) -> Result<File, OwnedError> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("cannot open", path))
}

/// Creates a temporary file exclusively (O_EXCL | O_NOFOLLOW), replacing a leftover of
/// a crashed run: unlinking in a directory only root can write to is safe.
pub fn create_temp(path: &Path, mode: u32) -> Result<File, OwnedError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot remove", path)(e)),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("cannot create", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_must_be_roots_and_closed() {
        assert!(dir_verdict(false, true, 0, 0o40755).is_ok());
        assert!(dir_verdict(false, true, 0, 0o40700).is_ok());
        assert!(
            dir_verdict(false, true, 0, 0o41777)
                .unwrap_err()
                .contains("1777")
        );
        assert!(dir_verdict(false, true, 0, 0o40775).is_err());
        assert!(
            dir_verdict(false, true, 1000, 0o40755)
                .unwrap_err()
                .contains("uid 1000")
        );
        assert!(
            dir_verdict(true, false, 0, 0o120777)
                .unwrap_err()
                .contains("symbolic")
        );
        assert!(dir_verdict(false, false, 0, 0o100644).is_err());
    }

    #[test]
    fn files_must_be_roots_and_closed() {
        assert!(file_verdict(true, 0, 0o100644).is_ok());
        assert!(file_verdict(true, 0, 0o100666).is_err());
        assert!(file_verdict(true, 1000, 0o100644).is_err());
        assert!(file_verdict(false, 0, 0o140777).is_err());
    }

    #[test]
    fn create_dir_once_then_exists_and_parents_are_not_made() {
        let d = std::env::temp_dir().join(format!("vpn-ns-mkdir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        assert!(create_dir(&d, 0o700).unwrap());
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        assert!(!create_dir(&d, 0o700).unwrap());
        // Something else at the path "exists" too: the caller's check refuses it.
        fs::write(d.join("f"), "").unwrap();
        assert!(!create_dir(&d.join("f"), 0o700).unwrap());
        let e = create_dir(&d.join("no/such"), 0o700).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_files_replace_a_planted_symlink_instead_of_following_it() {
        let d = std::env::temp_dir().join(format!("vpn-ns-owned-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let victim = d.join("victim");
        fs::write(&victim, "keep").unwrap();
        let tmp = d.join("x.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        use std::io::Write;
        create_temp(&tmp, 0o644).unwrap().write_all(b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());
        fs::remove_file(&tmp).unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(open_write(&tmp, 0o644, true).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        fs::remove_dir_all(&d).unwrap();
    }
}
