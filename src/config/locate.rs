//! Turning toml's byte spans into "line N: key K" for one-line error messages.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::ConfigError;

struct KeyEntry {
    path: String,
    depth: usize,
    key: Range<usize>,
    value: Range<usize>,
}

pub(super) struct Document<'a> {
    path: &'a Path,
    text: &'a str,
    keys: Vec<KeyEntry>,
}

impl<'a> Document<'a> {
    /// Syntax errors are reported here; the recovered partial table still locates them.
    pub(super) fn new(path: &'a Path, text: &'a str) -> Result<Self, ConfigError> {
        let (table, errors) = DeTable::parse_recoverable(text);
        let mut doc = Self {
            path,
            text,
            keys: Vec::new(),
        };
        index_keys(table.get_ref(), "", 0, &mut doc.keys);
        match errors.first() {
            Some(e) => Err(doc.error(e.span(), e.message())),
            None => Ok(doc),
        }
    }

    pub(super) fn invalid(&self, line: Option<usize>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            message,
        }
    }

    pub(super) fn key_error(&self, key: &str, message: &str) -> ConfigError {
        let line = self
            .keys
            .iter()
            .find(|k| k.path == key)
            .map(|k| self.line_of(k.key.start));
        self.invalid(line, format!("key {key:?}: {message}"))
    }

    pub(super) fn error(&self, span: Option<Range<usize>>, message: &str) -> ConfigError {
        let span = span.map(|s| s.start.min(self.text.len())..s.end.min(self.text.len()));
        let key = span.clone().and_then(|s| match message {
            // A duplicate is dropped from the recovered table; its span is the key itself.
            "duplicate key" => self.text.get(s).map(|k| k.trim().to_owned()),
            _ => self.key_at(s.start),
        });
        let line = span.map(|s| self.line_of(s.start));
        self.invalid(line, describe(message, key.as_deref()))
    }

    fn line_of(&self, off: usize) -> usize {
        self.text.as_bytes()[..off]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The innermost key whose name or value covers `off`. Ends are inclusive because
    /// syntax errors such as an unclosed array point just past the value.
    fn key_at(&self, off: usize) -> Option<String> {
        let covers = |r: &Range<usize>| r.start <= off && off <= r.end;
        let keys = self
            .keys
            .iter()
            .filter(|k| covers(&k.key) || covers(&k.value));
        keys.max_by_key(|k| k.depth).map(|k| k.path.clone())
    }
}

fn index_keys(table: &DeTable<'_>, prefix: &str, depth: usize, out: &mut Vec<KeyEntry>) {
    for (k, v) in table.iter() {
        let path = match prefix {
            "" => k.get_ref().to_string(),
            _ => format!("{prefix}.{}", k.get_ref()),
        };
        match v.get_ref() {
            DeValue::Table(t) => index_keys(t, &path, depth + 1, out),
            // `[[publish]]` entries: their keys are named "publish.listen"; the line
            // tells which entry.
            DeValue::Array(items) => {
                for item in items.iter() {
                    if let DeValue::Table(t) = item.get_ref() {
                        index_keys(t, &path, depth + 1, out);
                    }
                }
            }
            _ => {}
        }
        out.push(KeyEntry {
            path,
            depth,
            key: k.span(),
            value: v.span(),
        });
    }
}

/// Rewrites serde/toml messages (possibly multi-line, in serde's vocabulary) into one
/// line that talks about keys and TOML types.
fn describe(message: &str, key: Option<&str>) -> String {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let (parent, leaf) = match key.map(|k| k.rsplit_once('.').unwrap_or(("", k))) {
        Some((p, l)) => (p, Some(l)),
        None => ("", None),
    };
    let in_section = if parent.is_empty() {
        String::new()
    } else {
        format!(" in [{parent}]")
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once("`, expected ").unwrap_or((rest, ""));
        let name = leaf.unwrap_or(field.trim_end_matches(['`', ',']));
        let expected: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let hint = if expected.is_empty() {
            String::new()
        } else {
            format!(" (expected one of: {})", expected.join(", "))
        };
        return format!("unknown key {name:?}{in_section}{hint}");
    }
    if let Some(field) = message.strip_prefix("missing field `") {
        let field = field.trim_end_matches('`');
        return match key {
            Some(k) => format!("missing key {field:?} in [{k}]"),
            None => format!("missing key {field:?}"),
        };
    }
    let mut text = message.clone();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let expected = match expected {
                "a sequence" => "an array",
                e if e.starts_with("struct ") => "a table",
                e => e,
            };
            text = format!("expected {expected}, found {}", describe_found(found));
        }
    }
    match key {
        Some(k) => format!("key {k:?}: {text}"),
        None => text,
    }
}

fn describe_found(found: &str) -> String {
    const KINDS: [(&str, &str); 6] = [
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a float"),
        ("boolean", "a boolean"),
        ("sequence", "an array"),
        ("map", "a table"),
    ];
    let found = found.replace('`', "");
    for (serde_name, toml_name) in KINDS {
        if let Some(rest) = found.strip_prefix(serde_name) {
            return format!("{toml_name}{rest}");
        }
    }
    found
}
