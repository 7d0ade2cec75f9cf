//! The generated man pages and completions cover every subcommand that src/cli.rs
//! defines, and the bash completion really completes subcommands and connection
//! names (run in a real bash). No root needed.

#[path = "../../src/cli.rs"]
mod cli;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::CommandFactory;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vpn-ns-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn generate(out: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_vpn-ns-gen"))
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("run vpn-ns-gen");
    assert!(st.success(), "vpn-ns-gen failed: {st}");
}

/// Every visible subcommand path below the root, as word lists (`["hook", "openvpn"]`),
/// with the 1-based position of its CONN positional if it has one.
fn subcommand_paths() -> Vec<(Vec<String>, Option<usize>)> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<(Vec<String>, Option<usize>)>) {
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_owned());
            let conn = sub
                .get_positionals()
                .position(|a| {
                    a.get_id() == "conn"
                        || a.get_value_names()
                            .is_some_and(|n| n.iter().any(|n| n == "CONN"))
                })
                .map(|i| i + 1);
            out.push((path.clone(), conn));
            walk(sub, &path, out);
        }
    }
    let mut cmd = cli::Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &[], &mut out);
    out
}

/// Runs the generated bash completion for `words` (the last one is being completed)
/// and returns the candidates.
fn complete(script: &Path, config_dir: &Path, words: &[&str]) -> Vec<String> {
    let cword = words.len() - 1;
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let prog = format!(
        r#"source "$1" || exit 3
COMP_WORDS=({words}); COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
spec=$(complete -p vpn-ns) || exit 4
fn=${{spec#*-F }}; fn=${{fn%% *}}
"$fn" vpn-ns "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = quoted.join(" "),
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog, "complete"])
        .arg(script)
        .env("VPN_NS_CONFIG_DIR", config_dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash completion for {words:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_has_a_man_page() {
    let gen_dir = TempDir::new("gen-man");
    generate(&gen_dir.0);
    let man = gen_dir.0.join("man");
    let mut expected = vec!["vpn-ns.1".to_owned()];
    expected.extend(
        subcommand_paths()
            .into_iter()
            .map(|(p, _)| format!("vpn-ns-{}.1", p.join("-"))),
    );
    for page in &expected {
        let text = fs::read_to_string(man.join(page))
            .unwrap_or_else(|e| panic!("man page {page} missing: {e}"));
        assert!(text.contains(".SH NAME"), "{page} has no NAME section");
    }
    let mut written: Vec<String> = fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    expected.sort();
    assert_eq!(
        written, expected,
        "pages for exactly the visible subcommands"
    );
    for f in ["vpn-ns.bash", "_vpn-ns", "vpn-ns.fish"] {
        let len = fs::metadata(gen_dir.0.join("completions").join(f))
            .unwrap_or_else(|e| panic!("completion {f} missing: {e}"))
            .len();
        assert!(len > 0, "completion {f} is empty");
    }
}

#[test]
fn bash_completes_subcommands_and_connection_names() {
    let gen_dir = TempDir::new("gen-bash");
    generate(&gen_dir.0);
    let script = gen_dir.0.join("completions/vpn-ns.bash");
    let conf = TempDir::new("conf-bash");
    for f in ["work.toml", "home.toml", "notes.txt"] {
        fs::write(conf.0.join(f), "type = \"openvpn\"\n").unwrap();
    }

    let paths = subcommand_paths();
    let top = complete(&script, &conf.0, &["vpn-ns", ""]);
    for (path, _) in paths.iter().filter(|(p, _)| p.len() == 1) {
        assert!(
            top.contains(&path[0]),
            "`vpn-ns <TAB>` lacks {path:?}: {top:?}"
        );
    }

    let mut conn_levels = 0;
    for (path, conn) in &paths {
        let mut words: Vec<&str> = vec!["vpn-ns"];
        words.extend(path.iter().map(String::as_str));
        if let Some(pos) = conn {
            // Words before CONN (like wg-quick's up|down) are arbitrary positionals.
            words.extend(std::iter::repeat_n("x", pos - 1));
            let mut all = words.clone();
            all.push("");
            let got = complete(&script, &conf.0, &all);
            assert_eq!(got, ["home", "work"], "connections for {all:?}");
            let mut prefixed = words.clone();
            prefixed.push("w");
            assert_eq!(complete(&script, &conf.0, &prefixed), ["work"]);
            conn_levels += 1;
        } else {
            let children: Vec<&(Vec<String>, Option<usize>)> = paths
                .iter()
                .filter(|(p, _)| p.len() == path.len() + 1 && p.starts_with(path))
                .collect();
            let mut all = words.clone();
            all.push("");
            let got = complete(&script, &conf.0, &all);
            for (child, _) in children {
                let name = child.last().unwrap();
                assert!(got.contains(name), "{all:?} lacks {name}: {got:?}");
            }
        }
    }
    assert!(
        conn_levels > 0,
        "no subcommand takes a CONN: the test checked nothing"
    );

    // --config-dir on the command line wins over the environment.
    let other = TempDir::new("conf-bash-other");
    fs::write(other.0.join("lab.toml"), "type = \"openvpn\"\n").unwrap();
    let other_dir = other.0.to_str().unwrap();
    let got = complete(
        &script,
        &conf.0,
        &["vpn-ns", "--config-dir", other_dir, "hook", "openvpn", ""],
    );
    assert_eq!(got, ["lab"]);
    // Options still complete at a CONN position.
    let got = complete(&script, &conf.0, &["vpn-ns", "hook", "openvpn", "--j"]);
    assert_eq!(got, ["--json"]);
}
