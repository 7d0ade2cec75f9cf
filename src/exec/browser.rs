//! Browsers hand a new window to an instance already running for the same profile and
//! exit: `vpn-ns exec work firefox` next to the normal Firefox would then open its
//! window in the host namespace, outside the VPN. Warn when that is about to happen.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browser {
    Firefox,
    Chromium,
}

impl Browser {
    /// `comm` values (at most 15 bytes) of the browser's main process.
    fn process_names(self) -> &'static [&'static str] {
        match self {
            Browser::Firefox => &["firefox", "firefox-esr", "firefox-bin"],
            Browser::Chromium => &["chromium", "chromium-browse", "chrome", "brave"],
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            Browser::Firefox => "-no-remote -P <profile>",
            Browser::Chromium => "--user-data-dir=<directory>",
        }
    }
}

/// The browser that `argv0` starts, if it is one.
pub fn detect(argv0: &str) -> Option<Browser> {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    match base {
        "firefox" | "firefox-esr" => Some(Browser::Firefox),
        "chromium"
        | "chromium-browser"
        | "google-chrome"
        | "google-chrome-stable"
        | "brave-browser" => Some(Browser::Chromium),
        _ => None,
    }
}

/// Whether the arguments ask for a separate instance or profile.
pub fn separate_instance(args: &[String]) -> bool {
    const FLAGS: [&str; 8] = [
        "-no-remote",
        "--no-remote",
        "-new-instance",
        "--new-instance",
        "-P",
        "-profile",
        "--profile",
        "--user-data-dir",
    ];
    args.iter().any(|a| {
        let name = a.split_once('=').map_or(a.as_str(), |(n, _)| n);
        FLAGS.contains(&name)
    })
}

/// A pid of `browser` owned by `uid` whose network namespace is not `ns_ino`.
pub fn running_elsewhere(browser: Browser, uid: u32, ns_ino: u64) -> Option<u32> {
    let names = browser.process_names();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let dir = Path::new("/proc").join(pid.to_string());
        if fs::metadata(&dir).ok()?.uid() != uid {
            return None;
        }
        let comm = fs::read_to_string(dir.join("comm")).ok()?;
        if !names.contains(&comm.trim_end()) {
            return None;
        }
        (fs::metadata(dir.join("ns/net")).ok()?.ino() != ns_ino).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn detects_browsers_by_basename() {
        assert_eq!(detect("firefox"), Some(Browser::Firefox));
        assert_eq!(detect("/usr/bin/firefox-esr"), Some(Browser::Firefox));
        assert_eq!(detect("chromium"), Some(Browser::Chromium));
        assert_eq!(detect("/opt/x/google-chrome"), Some(Browser::Chromium));
        assert_eq!(detect("brave-browser"), Some(Browser::Chromium));
        assert_eq!(detect("curl"), None);
        assert_eq!(detect("firefox.sh"), None);
    }

    #[test]
    fn separate_instance_flags() {
        assert!(separate_instance(&args(&["-no-remote", "-P", "vpn"])));
        assert!(separate_instance(&args(&["--profile", "/tmp/p"])));
        assert!(separate_instance(&args(&["--user-data-dir=/tmp/c"])));
        assert!(separate_instance(&args(&["--new-instance"])));
        assert!(!separate_instance(&args(&["https://example.org/"])));
        assert!(!separate_instance(&args(&[
            "--headless",
            "--private-window"
        ])));
    }
}
