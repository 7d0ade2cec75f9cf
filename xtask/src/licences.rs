//! The licence check: vpn-ns is `MIT OR Apache-2.0` and is shipped as one statically
//! linked binary (and a Debian package), so every crate in its dependency graph must
//! be usable under terms that allow that. The policy is the list below: permissive
//! licences only. A crate whose SPDX expression cannot be satisfied from the list (a
//! copyleft licence such as GPL or LGPL with no permissive alternative, an unknown
//! identifier, or no `license` field at all) fails the check, named with its version.

use std::process::ExitCode;

use cargo_metadata::{MetadataCommand, Package};

/// Licences a dependency may be used under (SPDX identifiers, with an exception where
/// one is part of the grant). Each allows redistribution in a binary under vpn-ns's
/// own licence with its notice kept; none requires the combined work to be copyleft.
pub const ALLOWED: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "0BSD",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "CC0-1.0",
    "BSL-1.0",
];

/// Why a package fails the policy.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Missing,
    Unparsable(String),
    Refused(String),
}

/// Judges one `license` field against [`ALLOWED`]. Crates.io still carries old
/// `MIT/Apache-2.0` spellings, so the lax parse mode is used (it reads `/` as OR).
pub fn judge(license: Option<&str>) -> Verdict {
    let Some(text) = license else {
        return Verdict::Missing;
    };
    let expr = match spdx::Expression::parse_mode(text, spdx::ParseMode::LAX) {
        Ok(e) => e,
        Err(e) => return Verdict::Unparsable(e.to_string()),
    };
    if expr.evaluate(|req| ALLOWED.contains(&req.to_string().as_str())) {
        Verdict::Allowed
    } else {
        Verdict::Refused(text.to_owned())
    }
}

pub fn run() -> ExitCode {
    let meta = match MetadataCommand::new()
        .other_options(["--locked".to_owned()])
        .exec()
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("licences: cargo metadata failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bad = Vec::new();
    for p in &meta.packages {
        match judge(p.license.as_deref()) {
            Verdict::Allowed => {}
            v => bad.push(describe(p, &v)),
        }
    }
    if bad.is_empty() {
        println!(
            "licences: all {} packages are licensed compatibly with MIT OR Apache-2.0",
            meta.packages.len()
        );
        ExitCode::SUCCESS
    } else {
        for b in &bad {
            eprintln!("licences: {b}");
        }
        eprintln!(
            "licences: {} of {} packages refused; allowed: {} (docs/licensing.md)",
            bad.len(),
            meta.packages.len(),
            ALLOWED.join(", ")
        );
        ExitCode::FAILURE
    }
}

fn describe(p: &Package, v: &Verdict) -> String {
    let who = format!("{} {}", p.name, p.version);
    match v {
        Verdict::Allowed => format!("{who}: allowed"),
        Verdict::Missing => {
            format!("{who}: no `license` field (a licence file only cannot be checked)")
        }
        Verdict::Unparsable(e) => format!("{who}: licence is not an SPDX expression: {e}"),
        Verdict::Refused(t) => {
            format!("{who}: \"{t}\" cannot be satisfied by the allowed licences")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let allowed = [
            "MIT",
            "MIT OR Apache-2.0",
            "Apache-2.0 OR MIT",
            "MIT/Apache-2.0",
            "(MIT OR Apache-2.0) AND Unicode-3.0",
            "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT",
            "BSD-3-Clause",
            "Unlicense OR MIT",
            "LGPL-2.1-or-later OR MIT",
        ];
        for l in allowed {
            assert_eq!(judge(Some(l)), Verdict::Allowed, "{l}");
        }
        let refused = [
            "GPL-3.0-only",
            "GPL-2.0-or-later",
            "LGPL-2.1+",
            "LGPL-2.1-or-later",
            "AGPL-3.0-only",
            "MIT AND GPL-2.0-only",
            "MPL-2.0",
            "SSPL-1.0",
        ];
        for l in refused {
            assert!(
                matches!(judge(Some(l)), Verdict::Refused(_)),
                "{l}: {:?}",
                judge(Some(l))
            );
        }
        assert_eq!(judge(None), Verdict::Missing);
        assert!(matches!(
            judge(Some("MIT OR NOPE-1.0")),
            Verdict::Unparsable(_)
        ));
        assert!(matches!(judge(Some("MIT AND (")), Verdict::Unparsable(_)));
    }
}
