//! Where in `deploy.toml` an error is: line and column of an offset, the key
//! written there, and toml's errors told that way (with "did you mean").

use std::ops::Range;
use std::path::Path;

use crate::error::ConfigError;

/// Where the dotted `key` is written in `source` (toml_edit keeps every key's
/// place, which serde's view of the file has lost).
pub(super) fn key_span(source: &str, key: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(source).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (found, item) = table.get_key_value(part)?;
        span = found.span();
        if parts.peek().is_some() {
            table = item.as_table_like()?;
        }
    }
    span
}

/// Turns a toml/serde error into one naming the file, line, column and key.
pub(super) fn translate_toml_error(
    path: &Path,
    source: &str,
    err: &toml::de::Error,
) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let (line, column) = line_col(source, span.start);
    let mut message = err.message().trim().to_string();
    let key = key_at(source, span.start);
    if let Some((unknown, expected)) = parse_unknown_field(&message) {
        message = format!("unknown key `{unknown}`");
        if let Some(best) = closest(&unknown, &expected) {
            message.push_str(&format!("; did you mean `{best}`?"));
        } else if !expected.is_empty() {
            message.push_str(&format!("; known keys: {}", expected.join(", ")));
        }
    }
    ConfigError {
        path: path.to_path_buf(),
        line: Some((line, column)),
        key,
        message,
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" -> (x, [a, b]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((unknown.to_string(), expected))
}

/// The known key closest to `unknown`, when it is close enough to be a typo.
fn closest(unknown: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.clone())
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted key (`table.key`) of the line holding `offset`, read from the text.
pub(super) fn key_at(source: &str, offset: usize) -> Option<String> {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..].lines().next().unwrap_or("").trim();
    let before: Vec<&str> = source[..line_start].lines().map(str::trim).collect();
    // The nearest table header; an array of tables (`[[serve.notify]]`) is
    // named with its index (`serve.notify[1]`).
    let table = before.iter().rposition(|l| l.starts_with('[')).map(|at| {
        let header = before[at];
        let name = header.trim_matches(|c| c == '[' || c == ']').trim();
        if header.starts_with("[[") {
            let index = before[..at].iter().filter(|l| **l == header).count();
            format!("{name}[{index}]")
        } else {
            name.to_string()
        }
    });
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())?;
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key,
    })
}
