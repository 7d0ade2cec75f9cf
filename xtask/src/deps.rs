//! The unused-dependency check, a cheap stand-in for cargo-udeps (which needs
//! nightly): every crate in the product's `[dependencies]` must be named somewhere in
//! src/ (`name::`, `name!`, `use name`). A crate reached only through another one's
//! re-export (rtnetlink's `packet_route`) is not a direct dependency and must go.

use std::path::Path;
use std::process::ExitCode;

use cargo_metadata::{DependencyKind, MetadataCommand};

pub fn run() -> ExitCode {
    match unused() {
        Ok(unused) if unused.is_empty() => {
            println!("deps: every [dependencies] crate is used in src/");
            ExitCode::SUCCESS
        }
        Ok(unused) => {
            for name in &unused {
                eprintln!("deps: {name} is in [dependencies] but src/ never names it");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("deps: {e}");
            ExitCode::from(2)
        }
    }
}

fn unused() -> Result<Vec<String>, String> {
    let meta = MetadataCommand::new()
        .no_deps()
        .exec()
        .map_err(|e| e.to_string())?;
    let product = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "vpn-ns")
        .ok_or("no vpn-ns package in the workspace")?;
    let src = product
        .manifest_path
        .parent()
        .ok_or("manifest without a directory")?
        .join("src");
    let mut text = String::new();
    read_all(src.as_std_path(), &mut text)?;
    Ok(product
        .dependencies
        .iter()
        .filter(|d| d.kind == DependencyKind::Normal)
        .map(|d| d.rename.clone().unwrap_or_else(|| d.name.clone()))
        .filter(|name| !named(&text, &name.replace('-', "_")))
        .collect())
}

fn named(text: &str, krate: &str) -> bool {
    text.match_indices(krate).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = &text[i + krate.len()..];
        let starts = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        starts && (after.starts_with("::") || after.starts_with('!') || after.starts_with(';'))
    })
}

fn read_all(dir: &Path, out: &mut String) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            read_all(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).map_err(|e| e.to_string())?);
            out.push('\n');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn named_as_a_path_not_inside_a_word() {
        let text = "use tokio::net;\nlet x = my_serde::y;\nuse anyhow;\nformat_args!(\"\");";
        assert!(super::named(text, "tokio"));
        assert!(super::named(text, "anyhow"));
        assert!(!super::named(text, "serde"));
        assert!(super::named(text, "format_args"));
    }
}
