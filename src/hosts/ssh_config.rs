//! The parts of OpenSSH's client configuration (`~/.ssh/config`) that es honours:
//! `Host` blocks with patterns, `HostName`, `User`, `Port`, `IdentityFile`.
//! As in OpenSSH, the first value found for a keyword wins (IdentityFile accumulates);
//! `Match` blocks are skipped.

use std::path::Path;

/// OpenSSH's limit on nested Include directives.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A parsed ssh client configuration.
#[derive(Debug, Default, Clone)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
struct Block {
    /// Patterns of the `Host` line; `None` for the lines before the first `Host`,
    /// and for `Match` blocks, which never apply.
    patterns: Option<Vec<String>>,
    applies_always: bool,
    options: Vec<(String, String)>,
}

/// What the configuration says about one host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostParams {
    /// ProxyJump: the bastion this host is reached through.
    pub proxy_jump: Option<String>,
    /// ProxyCommand: es does not run it, and says so.
    pub proxy_command: Option<String>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
}

impl SshConfig {
    /// Reads `~/.ssh/config`; a missing or unreadable file is an empty configuration.
    pub fn load_user_default() -> SshConfig {
        let path = crate::paths::expand_tilde("~/.ssh/config");
        Self::load(&path, 0)
    }

    fn load(path: &Path, depth: usize) -> SshConfig {
        std::fs::read_to_string(path)
            .map(|text| SshConfig::parse_at(&text, depth))
            .unwrap_or_default()
    }

    /// Parses configuration text.
    #[cfg(test)]
    pub fn parse(text: &str) -> SshConfig {
        SshConfig::parse_at(text, 0)
    }

    /// Parses text read `depth` Includes deep. Like OpenSSH, Includes nest at most
    /// 16 deep (a file that includes itself stops there, it does not overflow the
    /// stack), relative paths are in ~/.ssh, and globs (`config.d/*`) are expanded
    /// in sorted order.
    fn parse_at(text: &str, depth: usize) -> SshConfig {
        let mut blocks = vec![Block {
            patterns: None,
            applies_always: true,
            options: Vec::new(),
        }];
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, value) = split_keyword(line);
            let keyword = keyword.to_ascii_lowercase();
            match keyword.as_str() {
                "host" => blocks.push(Block {
                    patterns: Some(value.split_whitespace().map(str::to_string).collect()),
                    applies_always: false,
                    options: Vec::new(),
                }),
                "match" => blocks.push(Block {
                    patterns: None,
                    applies_always: false,
                    options: Vec::new(),
                }),
                "include" if depth >= MAX_INCLUDE_DEPTH => {}
                "include" => {
                    for pattern in value.split_whitespace() {
                        let path = if pattern.starts_with('/') || pattern.starts_with('~') {
                            crate::paths::expand_tilde(pattern)
                        } else {
                            crate::paths::expand_tilde(&format!("~/.ssh/{pattern}"))
                        };
                        let mut files: Vec<_> = glob::glob(&path.to_string_lossy())
                            .map(|paths| paths.filter_map(Result::ok).collect())
                            .unwrap_or_default();
                        files.sort();
                        for file in files {
                            blocks.extend(SshConfig::load(&file, depth + 1).blocks);
                        }
                    }
                }
                _ => {
                    if let Some(block) = blocks.last_mut() {
                        block.options.push((keyword, unquote(value)));
                    }
                }
            }
        }
        SshConfig { blocks }
    }

    /// Everything the configuration says about `host`.
    pub fn lookup(&self, host: &str) -> HostParams {
        let mut params = HostParams::default();
        for block in &self.blocks {
            let applies = block.applies_always
                || block
                    .patterns
                    .as_ref()
                    .is_some_and(|p| patterns_match(p, host));
            if !applies {
                continue;
            }
            for (keyword, value) in &block.options {
                match keyword.as_str() {
                    "hostname" if params.hostname.is_none() => {
                        params.hostname = Some(value.replace("%h", host))
                    }
                    "user" if params.user.is_none() => params.user = Some(value.clone()),
                    "port" if params.port.is_none() => params.port = value.parse().ok(),
                    "identityfile" => params.identity_files.push(value.clone()),
                    "proxyjump" if params.proxy_jump.is_none() => {
                        params.proxy_jump = Some(value.clone())
                    }
                    "proxycommand" if params.proxy_command.is_none() && value != "none" => {
                        params.proxy_command = Some(value.clone())
                    }
                    _ => {}
                }
            }
        }
        params
    }
}

/// `Keyword value`, `Keyword=value` or `Keyword = value`.
fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    (keyword, rest)
}

fn unquote(value: &str) -> String {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
        .to_string()
}

/// OpenSSH pattern lists: any positive match and no negated (`!`) match.
fn patterns_match(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated, host) {
                return false;
            }
        } else if wildcard_match(pattern, host) {
            matched = true;
        }
    }
    matched
}

/// `*` and `?` wildcards, case-insensitive as in OpenSSH host matching.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
    let text: Vec<char> = text.to_lowercase().chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_expand_globs_and_stop_at_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(d.join("conf.d/10-web"), "Host web\n  HostName 10.0.0.5\n").unwrap();
        std::fs::write(d.join("conf.d/20-db"), "Host db\n  Port 2202\n").unwrap();
        // A file that includes itself.
        let looped = d.join("loop");
        std::fs::write(
            &looped,
            format!("Include {}\nHost l\n  User ann\n", looped.display()),
        )
        .unwrap();
        let config = SshConfig::parse(&format!(
            "Include {}/conf.d/*\nInclude {}\n",
            d.display(),
            looped.display()
        ));
        assert_eq!(config.lookup("web").hostname.as_deref(), Some("10.0.0.5"));
        assert_eq!(config.lookup("db").port, Some(2202));
        assert_eq!(config.lookup("l").user.as_deref(), Some("ann"));
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let config = SshConfig::parse(
            "User global\n\nHost web* !web9\n  HostName %h.example.internal\n  Port=2202\n  IdentityFile ~/.ssh/web\n\nHost *\n  User other\n  Port 22\n  IdentityFile ~/.ssh/any\n",
        );
        let web1 = config.lookup("web1");
        assert_eq!(web1.hostname.as_deref(), Some("web1.example.internal"));
        assert_eq!(web1.user.as_deref(), Some("global"));
        assert_eq!(web1.port, Some(2202));
        assert_eq!(web1.identity_files, vec!["~/.ssh/web", "~/.ssh/any"]);

        let web9 = config.lookup("web9");
        assert_eq!(web9.hostname, None);
        assert_eq!(web9.port, Some(22));
    }

    #[test]
    fn match_blocks_never_apply() {
        let config = SshConfig::parse("Match host x\n  User m\nHost x\n  User h\n");
        assert_eq!(config.lookup("x").user.as_deref(), Some("h"));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("10.0.0.?", "10.0.0.7"));
        assert!(!wildcard_match("10.0.0.?", "10.0.0.17"));
        assert!(wildcard_match("*.Example.com", "a.b.example.com"));
        assert!(!wildcard_match("a*c", "abd"));
    }
}
