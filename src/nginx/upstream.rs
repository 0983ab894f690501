//! The `server` entries of nginx `upstream` blocks: taking one backend out
//! (its `down` flag) and putting it back, as an edit of the config text that
//! leaves every other byte as it was.

use std::ops::Range;

/// What marking a backend did to a config file's text.
#[derive(Debug, PartialEq, Eq)]
pub struct Marked {
    /// The new text.
    pub text: String,
    /// How many `server` entries changed.
    pub changed: usize,
    /// How many `server` entries name the backend (changed or already so).
    pub matched: usize,
    /// Upstreams that would be left with no server that is up.
    pub emptied: Vec<String>,
}

/// Marks every `server` entry of every upstream whose address is `backend`
/// (`HOST` matches any port of it, `HOST:PORT` that one) `down`, or takes the
/// mark away (`down == false`).
pub fn mark(text: &str, backend: &str, down: bool) -> Marked {
    let mut edits: Vec<(Range<usize>, &str)> = Vec::new();
    let mut matched = 0;
    let mut emptied = Vec::new();
    // Per open block: its name (first word) and, for upstreams, its label and
    // how many servers are up after the edit / were touched.
    let mut blocks: Vec<Block> = Vec::new();
    for statement in statements(text) {
        match statement.end {
            End::Open => blocks.push(Block {
                upstream: statement.words.first().map(|w| w.text.as_str()) == Some("upstream"),
                label: statement
                    .words
                    .get(1)
                    .map(|w| w.text.clone())
                    .unwrap_or_default(),
                servers_up: 0,
                touched: false,
            }),
            End::Close => {
                if let Some(block) = blocks.pop() {
                    if block.upstream && block.touched && block.servers_up == 0 {
                        emptied.push(block.label);
                    }
                }
            }
            End::Semicolon(at) => {
                let Some(block) = blocks.last_mut().filter(|b| b.upstream) else {
                    continue;
                };
                let [keyword, address, flags @ ..] = statement.words.as_slice() else {
                    continue;
                };
                if keyword.text != "server" {
                    continue;
                }
                let is_down = flags.iter().find(|w| w.text == "down");
                let names_backend = names(&address.text, backend);
                if names_backend {
                    matched += 1;
                    block.touched = true;
                    match (down, is_down) {
                        (true, None) => edits.push((at..at, " down")),
                        (false, Some(word)) => {
                            // The flag and the blanks before it.
                            let start = text[..word.span.start].trim_end().len();
                            edits.push((start..word.span.end, ""));
                        }
                        _ => {}
                    }
                }
                let up_after = if names_backend {
                    !down
                } else {
                    is_down.is_none()
                };
                if up_after && !flags.iter().any(|w| w.text == "backup") {
                    block.servers_up += 1;
                }
            }
        }
    }
    let changed = edits.len();
    let mut out = text.to_string();
    for (range, with) in edits.into_iter().rev() {
        out.replace_range(range, with);
    }
    Marked {
        text: out,
        changed,
        matched,
        emptied,
    }
}

struct Block {
    upstream: bool,
    label: String,
    servers_up: usize,
    touched: bool,
}

/// Whether an upstream server's address is `backend`: the same text, or the
/// same host when `backend` names no port.
fn names(address: &str, backend: &str) -> bool {
    if address == backend {
        return true;
    }
    if address.starts_with("unix:") {
        return false;
    }
    let host = match address.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(h, _)| h).unwrap_or(rest),
        None => match address.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => address,
        },
    };
    host == backend.trim_start_matches('[').trim_end_matches(']')
}

/// A word of the config and where it is.
struct Word {
    text: String,
    span: Range<usize>,
}

/// How a statement ends.
enum End {
    /// `;`, at this byte.
    Semicolon(usize),
    /// `{`: a block opens.
    Open,
    /// `}`: the innermost block closes.
    Close,
}

struct Statement {
    words: Vec<Word>,
    end: End,
}

/// The statements of an nginx config in order, comments skipped, quoted words
/// kept with their quotes' content.
fn statements(text: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut word = String::new();
    let mut start = None;
    let mut chars = text.char_indices().peekable();
    let mut quote: Option<char> = None;
    let flush =
        |word: &mut String, start: &mut Option<usize>, end: usize, words: &mut Vec<Word>| {
            if let Some(s) = start.take() {
                words.push(Word {
                    text: std::mem::take(word),
                    span: s..end,
                });
            }
        };
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                }
                c if c == q => quote = None,
                c => word.push(c),
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                start.get_or_insert(i);
                quote = Some(c);
            }
            '#' => {
                flush(&mut word, &mut start, i, &mut words);
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => flush(&mut word, &mut start, i, &mut words),
            ';' | '{' | '}' => {
                flush(&mut word, &mut start, i, &mut words);
                let end = match c {
                    ';' => End::Semicolon(i),
                    '{' => End::Open,
                    _ => End::Close,
                };
                out.push(Statement {
                    words: std::mem::take(&mut words),
                    end,
                });
            }
            c => {
                start.get_or_insert(i);
                word.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "http {\n    upstream shop_a {\n        server 10.0.0.5:8800;\n        server 10.0.0.5:8801 weight=2;\n        server 10.0.0.6:8800; # web2\n        server unix:/tmp/10.0.0.5.sock;\n    }\n    server {\n        listen 80;\n        server_name 10.0.0.5;\n    }\n}\n";

    #[test]
    fn drains_every_port_of_a_host_and_nothing_else() {
        let marked = mark(CONF, "10.0.0.5", true);
        assert_eq!((marked.changed, marked.matched), (2, 2));
        assert!(marked.emptied.is_empty());
        assert_eq!(
            marked.text,
            CONF.replace(
                "8800;\n        server 10.0.0.5:8801 weight=2;",
                "8800 down;\n        server 10.0.0.5:8801 weight=2 down;"
            )
        );
        // Again: already down, nothing changes.
        let again = mark(&marked.text, "10.0.0.5", true);
        assert_eq!((again.changed, again.matched), (0, 2));
        assert_eq!(again.text, marked.text);
        // Undrained: the text is as it was, byte for byte.
        let back = mark(&marked.text, "10.0.0.5", false);
        assert_eq!((back.changed, back.text.as_str()), (2, CONF));
    }

    #[test]
    fn a_port_names_one_entry() {
        let marked = mark(CONF, "10.0.0.5:8801", true);
        assert_eq!(marked.changed, 1);
        assert!(marked.text.contains("server 10.0.0.5:8800;"));
        assert!(marked.text.contains("server 10.0.0.5:8801 weight=2 down;"));
    }

    #[test]
    fn says_when_an_upstream_would_have_no_server_up() {
        let one_line = "upstream backend { server 127.0.0.1:8960; server 10.1.0.2:8960 backup; }\n";
        let marked = mark(one_line, "127.0.0.1", true);
        assert_eq!(marked.emptied, vec!["backend".to_string()]);
        assert_eq!(
            marked.text,
            "upstream backend { server 127.0.0.1:8960 down; server 10.1.0.2:8960 backup; }\n"
        );
        // An upstream the backend is not in is not said to be emptied.
        let other = "upstream a { server 10.0.0.9 down; }\nupstream b { server 10.0.0.5; server 10.0.0.6; }\n";
        assert!(mark(other, "10.0.0.5", true).emptied.is_empty());
    }

    #[test]
    fn ipv6_comments_and_unknown_backends() {
        let conf = "upstream v6 {\n  server [fd00::2]:80; # server fd00::2 here\n}\n";
        let marked = mark(conf, "fd00::2", true);
        assert_eq!(marked.changed, 1);
        assert!(marked
            .text
            .contains("server [fd00::2]:80 down; # server fd00::2 here"));
        assert_eq!(mark(conf, "[fd00::2]", true).changed, 1);
        let none = mark(CONF, "10.0.0.7", true);
        assert_eq!((none.matched, none.text.as_str()), (0, CONF));
    }
}
