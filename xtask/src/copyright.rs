//! `cargo xtask copyright`: the Debian `copyright` file (DEP-5) of the vpn-ns binary
//! package. The binary links every crate of its normal dependency graph statically,
//! so each of them gets a stanza with its licence expression; the licence texts that
//! Debian ships in /usr/share/common-licenses are referred to, the others are quoted.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId};

const OWN: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vpn-ns
Comment: vpn-ns is a single Rust binary; the Rust crates it links statically are
 listed below, one stanza each, with the licence expression their authors declared
 (the package may be used under any one side of an OR).

Files: *
Copyright: 2026 The vpn-ns developers (see the project's git history)
License: MIT or Apache-2.0
";

const MIT: &str = "\
License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy of
 this software and associated documentation files (the \"Software\"), to deal in
 the Software without restriction, including without limitation the rights to
 use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of
 the Software, and to permit persons to whom the Software is furnished to do so,
 subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all
 copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS
 FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
 COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
 AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
 WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
";

const APACHE: &str = "\
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";

pub fn run() -> ExitCode {
    // Only what is linked on this platform (no Windows-only crates in a Debian package).
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let meta = match MetadataCommand::new()
        .other_options([
            "--locked".to_owned(),
            "--filter-platform".to_owned(),
            platform,
        ])
        .exec()
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("copyright: cargo metadata failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match render(&meta, "vpn-ns") {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("copyright: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The crates linked into `root`'s binary: its normal (not dev, not build)
/// dependencies, transitively, without `root` itself.
fn linked(meta: &Metadata, root: &str) -> Result<BTreeSet<PackageId>, String> {
    let resolve = meta
        .resolve
        .as_ref()
        .ok_or("cargo metadata gave no dependency graph")?;
    let nodes: BTreeMap<&PackageId, _> = resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    let start = meta
        .workspace_packages()
        .into_iter()
        .find(|p| p.name.as_str() == root)
        .ok_or_else(|| format!("no package {root} in the workspace"))?
        .id
        .clone();
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.clone()];
    while let Some(id) = todo.pop() {
        let node = nodes
            .get(&id)
            .ok_or_else(|| format!("{id} missing from the graph"))?;
        for d in &node.deps {
            let normal = d.dep_kinds.iter().any(|k| k.kind == DependencyKind::Normal);
            if normal && seen.insert(d.pkg.clone()) {
                todo.push(d.pkg.clone());
            }
        }
    }
    seen.remove(&start);
    Ok(seen)
}

fn render(meta: &Metadata, root: &str) -> Result<String, String> {
    let ids = linked(meta, root)?;
    let mut out = String::from(OWN);
    let mut others = BTreeSet::new();
    let mut crates: Vec<_> = meta
        .packages
        .iter()
        .filter(|p| ids.contains(&p.id))
        .collect();
    crates.sort_by(|a, b| (a.name.as_str(), &a.version).cmp(&(b.name.as_str(), &b.version)));
    for p in crates {
        let license = p
            .license
            .as_deref()
            .ok_or_else(|| format!("{} {} declares no licence", p.name, p.version))?;
        let authors = if p.authors.is_empty() {
            format!("the {} authors", p.name)
        } else {
            p.authors.join(", ")
        };
        for id in license.split(|c: char| c.is_whitespace() || "()/".contains(c)) {
            if !matches!(id, "" | "OR" | "AND" | "WITH" | "MIT" | "Apache-2.0") {
                others.insert(id.to_owned());
            }
        }
        out.push_str(&format!(
            "\nFiles: vendored-crate/{}-{}/*\nCopyright: {}\nLicense: {}\n",
            p.name,
            p.version,
            authors.replace('\n', " "),
            license
                .replace('/', " or ")
                .replace(" OR ", " or ")
                .replace(" AND ", " and ")
        ));
    }
    out.push('\n');
    out.push_str(MIT);
    out.push('\n');
    out.push_str(APACHE);
    for id in others {
        out.push_str(&format!(
            "\nLicense: {id}\n The text of {id} is at https://spdx.org/licenses/{id}.html and in the\n sources of the crates above that name it.\n"
        ));
    }
    Ok(out)
}
