//! Quoting for POSIX shells. Every remote command line es sends is built here:
//! values (paths, versions, venv names, user text) are always quoted; only code
//! es itself writes goes in unquoted.

use std::borrow::Cow;

/// Quotes `value` as one POSIX shell word. Plain words are left as they are.
pub fn quote(value: &str) -> Cow<'_, str> {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-+=.,/:@%".contains(&b));
    if plain {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format!("'{}'", value.replace('\'', r"'\''")))
    }
}

/// Quotes a remote path but leaves a leading `~/` to the shell, so that it
/// expands to the remote user's home.
pub fn quote_path(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) if !rest.is_empty() => format!("~/{}", quote(rest)),
        _ if path == "~" => "~".to_string(),
        _ => quote(path).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const NASTY: &[&str] = &[
        "plain",
        "",
        "with space",
        "it's",
        "\"double\"",
        "$(touch /tmp/es-quote-pwned)",
        "`touch /tmp/es-quote-pwned`",
        "a; rm -rf /tmp/es-quote-pwned",
        "line\nbreak",
        "tab\there",
        "ünïcødé ✓ 日本",
        "$HOME ${PATH} *.txt ?",
        "back\\slash",
        "'",
        "''",
        "-n",
        "a|b&c>d<e",
        "~/not-expanded",
    ];

    /// Each quoted value, run through a real shell, comes back byte for byte.
    #[test]
    fn values_survive_a_real_shell() {
        for value in NASTY {
            let script = format!("printf '%s' {}", quote(value));
            let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
            assert!(out.status.success(), "{script}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), *value, "{script}");
        }
        assert!(!std::path::Path::new("/tmp/es-quote-pwned").exists());
    }

    #[test]
    fn quote_path_keeps_tilde_expansion() {
        assert_eq!(quote_path("~/my app/a"), "~/'my app/a'");
        assert_eq!(quote_path("/srv/x y"), "'/srv/x y'");
        assert_eq!(quote_path("~"), "~");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote_path("~/a b")))
            .env("HOME", "/h")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "/h/a b");
    }
}
