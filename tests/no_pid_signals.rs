//! Issue 19 finding 8 and issue 14: nothing in vpn-ns may signal a process by its pid
//! number (a recorded pid may have been reused by another process). Signals go through
//! `procs::PidFd` (pidfd_send_signal) only; the one exception, std's `Child::kill` on a
//! child we have not reaped (its pid cannot be reused), is allowed where it is marked.
//! This scans the source, so a new `kill(pid, ...)` fails the build's tests.

use std::fs;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_signal_is_sent_by_pid_number() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "scanned too few files: {files:?}");
    let forbidden = [
        "libc::kill(",
        "libc::killpg(",
        "signal::kill",
        "signal::killpg",
        "kill(Pid",
        "kill(nix::unistd::Pid",
        "SYS_kill",
        "SYS_tgkill",
        "\"kill\"",
    ];
    let mut found = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for pat in forbidden {
                if code.contains(pat) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
            if code.contains(".kill()") {
                let marked = lines[n.saturating_sub(3)..n]
                    .iter()
                    .any(|l| l.contains("unreaped child"));
                if !marked {
                    found.push(format!(
                        "{}:{}: Child::kill without the unreaped-child note: {}",
                        f.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "signals by pid number:\n{}",
        found.join("\n")
    );
}
