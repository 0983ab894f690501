//! The simple API's project pages: PEP 691 JSON and PEP 503 HTML, read into
//! the files they list.

use anyhow::{anyhow, Result};

use super::IndexFile;

/// The files of a PEP 691 JSON project page.
pub(super) fn parse_json_page(body: &str) -> Result<Vec<IndexFile>> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    let files = value
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or_else(|| anyhow!("no `files` list"))?;
    Ok(files
        .iter()
        .filter_map(|f| {
            let name = f.get("filename").and_then(|n| n.as_str())?;
            // `yanked` is false, true, or a reason (a string).
            let yanked = match f.get("yanked") {
                Some(serde_json::Value::Bool(b)) => *b,
                Some(serde_json::Value::String(_)) => true,
                _ => false,
            };
            let sha256 = f
                .get("hashes")
                .and_then(|h| h.get("sha256"))
                .and_then(|h| h.as_str())
                .map(str::to_ascii_lowercase);
            Some(IndexFile {
                filename: name.to_string(),
                yanked,
                sha256,
            })
        })
        .collect())
}

/// The files of a PEP 503 HTML project page: the text of every anchor (or, when
/// empty, the last path segment of its href).
pub(super) fn parse_html_page(body: &str) -> Vec<IndexFile> {
    let lower = body.to_ascii_lowercase();
    let mut files = Vec::new();
    let mut pos = 0;
    while let Some(start) = lower[pos..].find("<a").map(|i| pos + i) {
        let after = start + 2;
        // `<abbr>` and the like are not anchors.
        if !lower[after..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>') {
            pos = after;
            continue;
        }
        let Some(tag_end) = lower[after..].find('>').map(|i| after + i) else {
            break;
        };
        let Some(close) = lower[tag_end..].find("</a").map(|i| tag_end + i) else {
            break;
        };
        let text = unescape(body[tag_end + 1..close].trim());
        let name = if text.is_empty() {
            href_name(&body[after..tag_end]).unwrap_or_default()
        } else {
            text
        };
        if !name.is_empty() {
            let yanked = lower[after..tag_end].contains("data-yanked");
            let sha256 = href(&body[after..tag_end]).and_then(|h| {
                h.split_once("#sha256=")
                    .map(|(_, hex)| hex.to_ascii_lowercase())
            });
            files.push(IndexFile {
                filename: name,
                yanked,
                sha256,
            });
        }
        pos = close;
    }
    files
}

fn href_name(attributes: &str) -> Option<String> {
    let value = href(attributes)?;
    let path = value.split(['#', '?']).next()?;
    Some(unescape(path.rsplit('/').next()?))
}

/// The href of an anchor's attributes, as written.
fn href(attributes: &str) -> Option<&str> {
    let lower = attributes.to_ascii_lowercase();
    let i = lower.find("href=")? + 5;
    let rest = &attributes[i..];
    match rest.chars().next()? {
        q @ ('"' | '\'') => rest[1..].split(q).next(),
        _ => rest.split_whitespace().next(),
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
