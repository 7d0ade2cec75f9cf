//! The layer check (docs/architecture.md): every module of the product has a layer,
//! and a module may name (`crate::...` paths, in `use` or inline) only modules of its
//! own layer or below. Between top-level modules of one layer, a cycle (A names B and
//! B names A) fails too. It reads the source text, not the compiler's resolution:
//! paths written relative to `self`/`super` inside one module's own files are not
//! followed (they stay inside that module), nor are paths made by macros.
//!
//! Paths resolve to the deepest module that has a file (`crate::keeper::control::query`
//! -> `keeper::control`), and a module's layer is that of the longest entry in
//! [`LAYERS`] that is a prefix of it, so a module can sit below its own submodules
//! (the keeper's handle in keeper.rs is below the keeper's run loop).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Module (path below `crate`) -> layer. A new top-level module must be placed here.
const LAYERS: &[(&str, u8)] = &[
    // 0: pure types and parsers; no system calls beyond reading the files they parse.
    ("spec", 0),
    ("error", 0),
    ("forward", 0),
    ("config", 0),
    ("openvpn", 0),
    ("cover", 0),
    ("verify", 0),
    ("check", 0),
    ("fault", 0),
    // 1: system edges: netlink, namespaces, processes, waiting, records and files,
    // the socket relays (they need nothing above the pure layer).
    ("netlink", 1),
    ("netns", 1),
    ("procs", 1),
    ("wait", 1),
    ("state", 1),
    ("dns", 1),
    ("owned", 1),
    ("publish", 1),
    // 2: bringing a connection up and down; the keeper's handle (spawn, stop) that
    // up and down use.
    ("lifecycle", 2),
    ("plain", 2),
    ("adopt", 2),
    ("nm", 2),
    ("keeper", 2),
    // 3: the resident keeper's run loop, the WireGuard data planes, exec.
    ("keeper::run", 3),
    ("keeper::dhcp", 3),
    ("keeper::links", 3),
    ("keeper::control", 3),
    ("wireguard", 3),
    ("exec", 3),
    // 4: the command line and the commands (a user's own connections are a parallel
    // set of commands: unpriv).
    ("cli", 4),
    ("commands", 4),
    ("unpriv", 4),
];

/// Known violations, each to be removed by the change named beside it. Keep it short.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

pub fn run() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    match check(&root) {
        Ok(problems) if problems.is_empty() => {
            println!("layers: every module names only its own layer or below");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "layers: {} problem(s); the layers are in xtask/src/layers.rs and docs/architecture.md",
                problems.len()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("layers: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(src: &Path) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    walk(src, &mut files)?;
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .filter_map(|f| module_of(src, f).map(|m| (m, f.clone())))
        .collect();
    let known: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut problems = Vec::new();
    // Top-level module -> top-level modules it names, for the cycle check.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        if module.is_empty() {
            continue;
        }
        let Some(own) = layer_of(module) else {
            problems.push(format!(
                "{}: module {module} has no layer: add it to LAYERS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (line, path) in crate_paths(&strip_comments(&text)) {
            let target = resolve(&path, &known);
            let (from_top, to_top) = (top(module), top(&target));
            if target.is_empty() || from_top == to_top {
                continue;
            }
            edges
                .entry(from_top.to_owned())
                .or_default()
                .insert(to_top.to_owned());
            let Some(theirs) = layer_of(&target) else {
                continue;
            };
            if theirs > own && !excepted(from_top, to_top) {
                problems.push(format!(
                    "{}:{line}: {module} (layer {own}) names crate::{path} ({target}, layer {theirs})",
                    file.display()
                ));
            }
        }
    }
    for (a, tos) in &edges {
        for b in tos {
            if a < b
                && edges.get(b).is_some_and(|t| t.contains(a))
                && !(excepted(a, b) && excepted(b, a))
            {
                problems.push(format!("import cycle: {a} <-> {b}"));
            }
        }
    }
    Ok(problems)
}

fn excepted(from: &str, to: &str) -> bool {
    EXCEPTIONS.iter().any(|&(f, t, _)| f == from && t == to)
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

fn layer_of(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(m, _)| module == *m || module.starts_with(&format!("{m}::")))
        .max_by_key(|(m, _)| m.len())
        .map(|&(_, l)| l)
}

/// The deepest module with a file that `path` is inside of.
fn resolve(path: &str, known: &BTreeSet<&str>) -> String {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find(|m| known.contains(m.as_str()))
        .unwrap_or_default()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `src/a/b.rs` -> `a::b`; `mod.rs` names its directory; lib.rs is the root (""). A
/// test file included with `#[path]` (`x_tests.rs`) belongs to `x`. main.rs is the
/// binary, on top of everything, and is not checked.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match segs.last().map(String::as_str) {
        Some("main") if segs.len() == 1 => return None,
        Some("lib") if segs.len() == 1 => return Some(String::new()),
        Some("mod") => {
            segs.pop();
        }
        _ => {}
    }
    if let Some(last) = segs.last_mut()
        && let Some(owner) = last.strip_suffix("_tests")
    {
        *last = owner.to_owned();
    }
    Some(segs.join("::"))
}

/// Removes `//` and `/* */` comments and the contents of string literals (messages
/// that mention `crate::` are not imports). Newlines are kept for line numbers.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push('"');
            }
            // A char literal such as '"' would otherwise open a string.
            '\'' if chars.clone().nth(1) == Some('\'') => {
                out.push('\'');
                out.push(chars.next().unwrap_or(' '));
                out.push(chars.next().unwrap_or(' '));
            }
            c => out.push(c),
        }
    }
    out
}

/// Every `crate::...` path in `text` with its line, use-groups expanded
/// (`crate::{a, b::{c, d}}` -> `a`, `b::c`, `b::d`).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("crate::").map(|i| i + from) {
        from = i + "crate::".len();
        let before = i.checked_sub(1).map(|j| bytes[j]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            continue;
        }
        let line = text[..i].matches('\n').count() + 1;
        let mut paths = Vec::new();
        parse_tree(text, &mut from, String::new(), &mut paths);
        out.extend(paths.into_iter().map(|p| (line, p)));
    }
    out
}

/// Parses a use-tree at `*at` with `prefix` already read.
fn parse_tree(text: &str, at: &mut usize, prefix: String, out: &mut Vec<String>) {
    let skip_ws = |at: &mut usize| {
        while text[*at..].starts_with(|c: char| c.is_whitespace()) {
            *at += 1;
        }
    };
    skip_ws(at);
    if text[*at..].starts_with('{') {
        *at += 1;
        loop {
            skip_ws(at);
            if text[*at..].starts_with('}') || *at >= text.len() {
                *at += 1;
                return;
            }
            parse_tree(text, at, prefix.clone(), out);
            skip_ws(at);
            if text[*at..].starts_with(',') {
                *at += 1;
            }
        }
    }
    let ident: String = text[*at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    *at += ident.len();
    let path = match (prefix.is_empty(), ident.as_str()) {
        (_, "" | "self" | "*") => prefix.clone(),
        (true, _) => ident,
        (false, _) => format!("{prefix}::{ident}"),
    };
    if text[*at..].starts_with("::") {
        *at += 2;
        parse_tree(text, at, path, out);
    } else {
        // `as name` and whatever follows an inline path end the tree.
        if !path.is_empty() {
            out.push(path);
        }
        if text[*at..].trim_start().starts_with("as ") {
            skip_ws(at);
            *at += 3;
            skip_ws(at);
            while text[*at..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                *at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_groups() {
        let text = "use crate::a::{b, c::{d, e as f}, self};\nfn x() { crate::g::h(); }\n\
                    // crate::commented\nlet s = \"crate::in_string\"; $crate::macro_path;";
        let got: Vec<(usize, String)> = crate_paths(&strip_comments(text));
        let want = [
            (1, "a::b"),
            (1, "a::c::d"),
            (1, "a::c::e"),
            (1, "a"),
            (2, "g::h"),
        ];
        assert_eq!(
            got,
            want.map(|(l, p)| (l, p.to_owned())).to_vec(),
            "{got:?}"
        );
    }

    #[test]
    fn layers_by_longest_prefix() {
        assert_eq!(layer_of("keeper"), Some(2));
        assert_eq!(layer_of("keeper::run"), Some(3));
        assert_eq!(layer_of("keeper::run::x"), Some(3));
        assert_eq!(layer_of("keeperx"), None);
        let known = BTreeSet::from(["keeper", "keeper::control"]);
        assert_eq!(resolve("keeper::control::query", &known), "keeper::control");
        assert_eq!(resolve("keeper::spawn", &known), "keeper");
        assert_eq!(resolve("nothing::here", &known), "");
    }

    /// A tree with one upward import, one cycle in a layer and a module with no layer:
    /// each is reported, nothing else.
    #[test]
    fn violations_cycles_and_unplaced_modules() {
        let src = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(src.join("keeper")).unwrap();
        let files = [
            ("lib.rs", "pub mod spec;"),
            (
                "spec.rs",
                "use crate::commands::UsageError; // crate::exec in a comment",
            ),
            (
                "commands.rs",
                "use crate::{spec::X, keeper::control::query};",
            ),
            ("netns.rs", "fn f() { crate::state::load(); }"),
            ("state.rs", "use crate::netns;"),
            ("keeper.rs", "use crate::state::State;"),
            ("keeper/control.rs", "use crate::keeper::spawn;"),
            ("newthing.rs", ""),
        ];
        for (f, text) in files {
            std::fs::write(src.join(f), text).unwrap();
        }
        let mut got = check(&src).unwrap();
        got.sort();
        std::fs::remove_dir_all(&src).unwrap();
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].ends_with("module newthing has no layer: add it to LAYERS"));
        assert!(
            got[1].ends_with(
                "spec.rs:1: spec (layer 0) names crate::commands::UsageError (commands, layer 4)"
            ),
            "{got:#?}"
        );
        // The upward import above is also half of a cycle.
        assert_eq!(got[2], "import cycle: commands <-> spec");
        assert_eq!(got[3], "import cycle: netns <-> state");
    }

    #[test]
    fn module_names() {
        let src = Path::new("/s");
        let m = |f: &str| module_of(src, Path::new(f));
        assert_eq!(m("/s/lib.rs").as_deref(), Some(""));
        assert_eq!(m("/s/main.rs"), None);
        assert_eq!(m("/s/a/b.rs").as_deref(), Some("a::b"));
        assert_eq!(m("/s/a/mod.rs").as_deref(), Some("a"));
        assert_eq!(m("/s/verify_tests.rs").as_deref(), Some("verify"));
    }
}
