//! Build-time generator (not shipped): man pages and shell completions, all derived
//! from the clap definitions in src/cli.rs, so a new subcommand gets its page and its
//! completion without touching packaging.
//!
//! Usage: `vpn-ns-gen OUT_DIR` writes
//!   OUT_DIR/man/vpn-ns.1, vpn-ns-<sub>.1, vpn-ns-<sub>-<subsub>.1, ...
//!   OUT_DIR/completions/vpn-ns.bash, _vpn-ns (zsh), vpn-ns.fish

// cli.rs depends only on clap and std, so the generator shares it as source instead of
// the product needing a library target.
#[path = "../../src/cli.rs"]
mod cli;
mod man;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

const BIN: &str = "vpn-ns";

/// The hand-written half of the bash completion: the logic that completes connection
/// names; the tables it reads are generated from clap.
const BASH_CONN_LOGIC: &str = include_str!("../../packaging/completions/conn-names.bash");
/// The same for fish; the `complete` lines that call it are generated.
const FISH_CONN_LOGIC: &str = include_str!("../../packaging/completions/conn-names.fish");
/// The same for zsh; the CONN arguments' actions are pointed at it.
const ZSH_CONN_LOGIC: &str = include_str!("../../packaging/completions/conn-names.zsh");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, out] = args.as_slice() else {
        eprintln!("usage: vpn-ns-gen OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpn-ns-gen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn command() -> Command {
    let mut cmd = cli::Cli::command().bin_name(BIN);
    cmd.build();
    cmd
}

/// Writes every page and completion file; returns their paths.
fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let man = out.join("man");
    let comp = out.join("completions");
    for d in [&man, &comp] {
        // Stale pages of a renamed subcommand must not be packaged.
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("cannot clear {}", d.display()))?;
        }
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // Unbuilt: the `help` subcommand is turned off before building, so that no
    // `vpn-ns-help.1` is written.
    let mut written = man::write_pages(cli::Cli::command().bin_name(BIN), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;

    let files = [
        (comp.join("vpn-ns.bash"), bash_script(command())),
        (comp.join("_vpn-ns"), zsh_script(command())),
        (comp.join("vpn-ns.fish"), fish_script(command())),
    ];
    for (path, text) in &files {
        fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }

    written.extend(files.into_iter().map(|(p, _)| p));
    Ok(written)
}

fn render(shell: Shell, mut cmd: Command) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    String::from_utf8(buf).expect("clap_complete writes UTF-8")
}

/// clap's bash completion, fixed, plus connection-name completion.
fn bash_script(cmd: Command) -> String {
    let mut bash = fix_bash_arm_labels(&render(Shell::Bash, cmd.clone()));
    bash.push_str(&bash_tables(&cmd));
    bash.push_str(BASH_CONN_LOGIC);
    bash
}

/// clap's zsh completion with the action of every CONN argument (`':conn -- help:_default'`)
/// replaced by `_vpn_ns_connections`, defined before the script's closing `compdef`.
fn zsh_script(cmd: Command) -> String {
    let script = render(Shell::Zsh, cmd.clone());
    let mut cmd = cmd;
    cmd.build();
    let mut ids = Vec::new();
    collect_conn_ids(&cmd, &mut ids);
    let mut out = String::new();
    for line in script.lines() {
        let body = line.trim_start_matches("'::").trim_start_matches("':");
        let is_conn = line.starts_with('\'')
            && ids.iter().any(|id| {
                body.starts_with(&format!("{id} -- ")) || body.starts_with(&format!("{id}:"))
            })
            && line.ends_with(":_default' \\");
        if is_conn {
            out.push_str(&line.replace(":_default' \\", ":_vpn_ns_connections' \\"));
        } else {
            if line.starts_with("if [ \"$funcstack[1]\" = ") {
                out.push_str(ZSH_CONN_LOGIC.trim_start());
                out.push('\n');
            }
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Ids of every argument that names a connection, anywhere in the tree.
fn collect_conn_ids(cmd: &Command, ids: &mut Vec<String>) {
    for a in cmd.get_positionals().filter(|a| is_conn(a)) {
        let id = a.get_id().to_string();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for sub in cmd.get_subcommands() {
        collect_conn_ids(sub, ids);
    }
}

/// clap's fish completion plus connection names at every CONN position.
fn fish_script(cmd: Command) -> String {
    let mut fish = render(Shell::Fish, cmd.clone());
    fish.push_str(FISH_CONN_LOGIC);
    fish.push_str("\n# Generated from src/cli.rs by vpn-ns-gen.\n");
    let mut cmd = cmd;
    cmd.build();
    for (path, level) in levels(&cmd) {
        let Some(n) = level.conn_position else {
            continue;
        };
        let sub = path.strip_prefix(BIN).unwrap_or(&path).trim_start();
        let words = format!("{sub} {}", level.value_options.join(" "));
        // Subcommand and option names go into a fish string unquoted.
        assert!(
            words
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_ ".contains(c)),
            "unexpected character in {words:?}"
        );
        writeln!(
            fish,
            "complete -c {BIN} -n \"__vpn_ns_conn_wanted '{sub}' {n} {}\" -f -a '(__vpn_ns_connections)' -d connection",
            level.value_options.join(" ")
        )
        .unwrap();
    }
    fish
}

/// clap_complete 4.6 spells the `case` labels of subcommands of a hyphenated binary
/// (`vpn__subcmd__ns__subcmd__hook`) differently from the state its loop computes
/// (`vpn__ns__subcmd__hook`), so nothing past the first word completes
/// (clap-rs/clap#6421). Respell the labels the way the loop does.
fn fix_bash_arm_labels(script: &str) -> String {
    const SEP: &str = "__subcmd__";
    let wrong = format!("{}{SEP}", BIN.replace('-', SEP));
    let right = format!("{}{SEP}", BIN.replace('-', "__"));
    script.replace(&wrong, &right)
}

/// What the bash connection-name completion needs to know about one command level.
#[derive(Debug, Default, PartialEq)]
struct Level {
    /// Names (and aliases) of its visible subcommands.
    subcommands: Vec<String>,
    /// Options that take a value (`-u`, `--user`, `--config-dir`), so the next word is
    /// skipped when counting positionals.
    value_options: Vec<String>,
    /// 1-based position of the connection-name positional, if it has one.
    conn_position: Option<usize>,
    /// Takes a program and its arguments after `--` (exec).
    runs_command: bool,
}

/// Every command level keyed by its path (`vpn-ns`, `vpn-ns hook`, `vpn-ns hook openvpn`).
fn levels(cmd: &Command) -> BTreeMap<String, Level> {
    fn walk(cmd: &Command, path: String, out: &mut BTreeMap<String, Level>) {
        let visible = || {
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        };
        let mut level = Level::default();
        for sub in visible() {
            level.subcommands.push(sub.get_name().to_owned());
            level
                .subcommands
                .extend(sub.get_all_aliases().map(str::to_owned));
        }
        for arg in cmd.get_arguments() {
            if arg.is_positional() || !arg.get_action().takes_values() {
                continue;
            }
            if let Some(longs) = arg.get_long_and_visible_aliases() {
                level
                    .value_options
                    .extend(longs.into_iter().map(|l| format!("--{l}")));
            }
            if let Some(shorts) = arg.get_short_and_visible_aliases() {
                level
                    .value_options
                    .extend(shorts.into_iter().map(|s| format!("-{s}")));
            }
        }
        level.conn_position = cmd.get_positionals().position(is_conn).map(|i| i + 1);
        level.runs_command = cmd.get_positionals().any(|a| a.is_last_set());
        for sub in visible() {
            walk(sub, format!("{path} {}", sub.get_name()), out);
            for alias in sub.get_all_aliases() {
                walk(sub, format!("{path} {alias}"), out);
            }
        }
        out.insert(path, level);
    }
    let mut out = BTreeMap::new();
    walk(cmd, BIN.to_owned(), &mut out);
    out
}

/// A positional that names a connection: clap id `conn` or value name `CONN`.
fn is_conn(arg: &clap::Arg) -> bool {
    arg.get_id() == "conn"
        || arg
            .get_value_names()
            .is_some_and(|names| names.iter().any(|n| n == "CONN"))
}

/// The global `--config-dir` option and its environment variable, which change where
/// connection files are listed from.
fn config_dir_option(cmd: &Command) -> (String, String) {
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == "config_dir")
        .expect("cli.rs defines --config-dir");
    let long = arg.get_long().expect("--config-dir is a long option");
    let env = arg
        .get_env()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    (format!("--{long}"), env)
}

/// Bash associative arrays (global: bash-completion sources completions inside a
/// function) describing the command tree.
fn bash_tables(cmd: &Command) -> String {
    let (config_opt, config_env) = config_dir_option(cmd);
    let mut s = String::from("\n# Generated from src/cli.rs by vpn-ns-gen.\n");
    writeln!(s, "_vpn_ns_config_dir_option={}", sh_quote(&config_opt)).unwrap();
    writeln!(s, "_vpn_ns_config_dir_env={}", sh_quote(&config_env)).unwrap();
    let levels = levels(cmd);
    let table = |name: &str, value: &dyn Fn(&Level) -> Option<String>| {
        let mut t = format!("declare -gA {name}=(\n");
        for (path, level) in &levels {
            if let Some(v) = value(level) {
                writeln!(t, "    [{}]={}", sh_quote(path), sh_quote(&v)).unwrap();
            }
        }
        t.push_str(")\n");
        t
    };
    s.push_str(&table("_vpn_ns_subcommands", &|l| {
        Some(l.subcommands.join(" "))
    }));
    s.push_str(&table("_vpn_ns_value_options", &|l| {
        Some(l.value_options.join(" "))
    }));
    s.push_str(&table("_vpn_ns_conn_position", &|l| {
        l.conn_position.map(|p| p.to_string())
    }));
    s.push_str(&table("_vpn_ns_runs_command", &|l| {
        l.runs_command.then(|| "1".to_owned())
    }));
    s
}

/// Single-quoted for bash.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};
    use std::path::Path;

    /// The shape of the real command line: globals, exec with `-u` and `-- CMD`, a
    /// nested hook whose CONN comes second, a hidden command.
    fn toy_unbuilt() -> Command {
        Command::new(BIN)
            .arg(
                Arg::new("config_dir")
                    .long("config-dir")
                    .env("TOY_DIR")
                    .global(true),
            )
            .arg(Arg::new("quiet").short('q').action(ArgAction::SetTrue))
            .subcommand(
                Command::new("exec")
                    .arg(Arg::new("user").short('u').long("user"))
                    .arg(Arg::new("conn").value_name("CONN").required(true))
                    .arg(Arg::new("cmd").num_args(1..).last(true)),
            )
            .subcommand(
                Command::new("hook").subcommand(
                    Command::new("wg-quick")
                        .visible_alias("wg")
                        .arg(Arg::new("phase"))
                        .arg(Arg::new("c").value_name("CONN")),
                ),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    fn toy() -> Command {
        let mut cmd = toy_unbuilt();
        cmd.build();
        cmd
    }

    /// Candidates the toy's generated bash completion offers for the last word.
    fn toy_complete(script: &Path, conf: &Path, words: &[&str]) -> Vec<String> {
        let prog = r#"source "$1" || exit 3
shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_vpn_ns_complete vpn-ns "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
        let out = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c", prog, "complete"])
            .arg(script)
            .args(words)
            .env("TOY_DIR", conf)
            .output()
            .expect("run bash");
        assert!(out.status.success(), "bash: {:?}", out);
        let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        got.sort();
        got
    }

    #[test]
    fn bash_completes_connections_programs_and_options() {
        let tmp = std::env::temp_dir().join(format!("vpn-ns-gen-toy-{}", std::process::id()));
        let conf = tmp.join("conf");
        let other = tmp.join("other");
        fs::create_dir_all(&conf).unwrap();
        fs::create_dir_all(&other).unwrap();
        for f in ["work.toml", "home.toml", "notes.txt"] {
            fs::write(conf.join(f), "").unwrap();
        }
        fs::write(other.join("lab.toml"), "").unwrap();
        let script = tmp.join("vpn-ns.bash");
        fs::write(&script, bash_script(toy_unbuilt())).unwrap();
        let c = |words: &[&str]| toy_complete(&script, &conf, words);
        let conns = ["home", "work"];

        assert_eq!(c(&["vpn-ns", "exec", ""]), conns);
        assert_eq!(c(&["vpn-ns", "exec", "-u", "alice", ""]), conns);
        assert_eq!(c(&["vpn-ns", "-q", "exec", "w"]), ["work"]);
        assert_eq!(c(&["vpn-ns", "hook", "wg", "up", ""]), conns);
        assert_eq!(c(&["vpn-ns", "hook", "wg-quick", "up", ""]), conns);
        let other_dir = other.to_str().unwrap();
        assert_eq!(
            c(&["vpn-ns", "--config-dir", other_dir, "exec", ""]),
            ["lab"]
        );
        let arg = format!("--config-dir={other_dir}");
        assert_eq!(c(&["vpn-ns", &arg, "exec", ""]), ["lab"]);
        // Not at a CONN position: clap's own candidates.
        assert!(c(&["vpn-ns", "hook", ""]).contains(&"wg-quick".to_owned()));
        assert!(c(&["vpn-ns", "exec", "work", ""]).contains(&"--user".to_owned()));
        assert!(!c(&["vpn-ns", "hook", "wg-quick", "up", "work", ""]).contains(&"work".to_owned()));
        assert_eq!(c(&["vpn-ns", "exec", "--us"]), ["--user"]);
        // After `--`: a program, then its arguments (bash's file completion).
        assert!(c(&["vpn-ns", "exec", "work", "--", "bas"]).contains(&"bash".to_owned()));
        assert!(c(&["vpn-ns", "exec", "work", "--", "bash", ""]).is_empty());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn levels_follow_the_clap_tree() {
        let l = levels(&toy());
        let root = &l["vpn-ns"];
        assert_eq!(root.subcommands, ["exec", "hook"]);
        assert_eq!(root.value_options, ["--config-dir"]);
        assert_eq!(root.conn_position, None);
        let exec = &l["vpn-ns exec"];
        assert_eq!(exec.value_options, ["--user", "-u", "--config-dir"]);
        assert_eq!(exec.conn_position, Some(1));
        assert!(exec.runs_command);
        assert!(!root.runs_command);
        assert_eq!(l["vpn-ns hook"].subcommands, ["wg-quick", "wg"]);
        assert_eq!(l["vpn-ns hook wg-quick"].conn_position, Some(2));
        assert_eq!(l["vpn-ns hook wg"].conn_position, Some(2));
        assert!(!l.contains_key("vpn-ns secret"));
        assert!(!l.keys().any(|k| k.ends_with(" help")));
    }

    #[test]
    fn tables_are_global_bash_arrays() {
        let t = bash_tables(&toy());
        assert!(t.contains("_vpn_ns_config_dir_option='--config-dir'\n"));
        assert!(t.contains("_vpn_ns_config_dir_env='TOY_DIR'\n"));
        assert!(t.contains("declare -gA _vpn_ns_conn_position=(\n"));
        assert!(t.contains("    ['vpn-ns exec']='1'\n"));
        assert!(t.contains("    ['vpn-ns hook']='wg-quick wg'\n"));
        assert!(t.contains("declare -gA _vpn_ns_runs_command=(\n    ['vpn-ns exec']='1'\n)\n"));
    }

    #[test]
    fn bash_labels_match_the_loop_state() {
        let fixed = fix_bash_arm_labels(&render(Shell::Bash, command()));
        assert!(fixed.contains("cmd=\"vpn__ns__subcmd__hook\""));
        assert!(fixed.contains("\n        vpn__ns__subcmd__hook)\n"));
        assert!(!fixed.contains("vpn__subcmd__ns"));
    }

    #[test]
    fn fish_completes_connections_at_every_conn_position() {
        let f = fish_script(toy_unbuilt());
        assert!(f.contains(
            "complete -c vpn-ns -n \"__vpn_ns_conn_wanted 'exec' 1 --user -u --config-dir\" -f -a '(__vpn_ns_connections)' -d connection\n"
        ));
        assert!(f.contains("__vpn_ns_conn_wanted 'hook wg-quick' 2 --config-dir"));
        assert!(f.contains("__vpn_ns_conn_wanted 'hook wg' 2 --config-dir"));
        assert!(!f.contains("__vpn_ns_conn_wanted 'hook' "));
        assert!(f.contains("function __vpn_ns_connections"));
    }

    #[test]
    fn zsh_completes_connections_at_every_conn_argument() {
        let z = zsh_script(toy_unbuilt());
        // exec's `conn` and wg-quick's `c` (value name CONN), which have no help text.
        assert!(z.contains("\n':conn:_vpn_ns_connections' \\\n"), "{z}");
        assert!(z.contains("\n'::c:_vpn_ns_connections' \\\n"), "{z}");
        assert!(!z.contains("'::c:_default'"), "{z}");
        let fn_at = z.find("_vpn_ns_connections() {").expect("function defined");
        let compdef_at = z.find("compdef _vpn-ns vpn-ns").expect("compdef kept");
        assert!(fn_at < compdef_at);
        let real = zsh_script(command());
        assert!(
            !real
                .lines()
                .any(|l| l.starts_with("':conn -- ") && l.ends_with(":_default' \\"))
        );
        assert!(real.contains(":_vpn_ns_connections' \\\n"));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn the_real_cli_has_conn_positionals() {
        let l = levels(&command());
        assert_eq!(l["vpn-ns hook openvpn"].conn_position, Some(1));
        assert_eq!(config_dir_option(&command()).0, "--config-dir");
    }
}
