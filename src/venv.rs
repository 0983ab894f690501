//! A virtualenv on the hosts: `deploy.virtualenv_prefix` + the venv's name.

use anyhow::Result;

use crate::bad_input;
use crate::quote::quote_path;

/// A venv, named and placed; paths come out quoted for the remote shell.
#[derive(Debug, Clone)]
pub struct Venv {
    pub name: String,
    /// `PREFIX/NAME` as configured; may start with `~/`.
    pub dir: String,
}

impl Venv {
    /// Checks the name (`[A-Za-z0-9_.-]+`, never `.` or `..`) and places it under `prefix`.
    pub fn new(prefix: &str, name: &str) -> Result<Venv> {
        let valid = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            bad_input!("bad venv name {name:?}: use letters, digits, `_`, `.` and `-` only");
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            bad_input!("deploy.virtualenv_prefix is empty");
        }
        Ok(Venv {
            name: name.to_string(),
            dir: format!("{prefix}/{name}"),
        })
    }

    /// A path inside the venv, quoted for the shell (a leading `~/` still expands).
    pub fn path(&self, relative: &str) -> String {
        if relative.is_empty() {
            quote_path(&self.dir)
        } else {
            quote_path(&format!("{}/{relative}", self.dir))
        }
    }
}

/// A venv prefix holds only characters no shell, pip launcher script or
/// supervisord line needs quoted (as venv names do), after an optional `~/`.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let rest = prefix.strip_prefix("~/").unwrap_or(prefix);
    let safe = rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
    // A leading `-` would read as an option to cd, mkdir or rm.
    if rest.is_empty() || rest.starts_with('-') || !safe {
        return Err(format!(
            "{prefix:?} is not a safe path: use letters, digits, `_`, `.`, `-` and `/` only (not starting with `-`), after an optional leading `~/`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "b", "blue-green_2.0"] {
            assert!(Venv::new("~/w", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "$(x)", "a;b", "ä"] {
            assert!(Venv::new("~/w", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_that_need_quoting_are_refused() {
        for good in ["~/hello_es", "/srv/apps", "apps", "~/a.b/c-d_e/"] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "~/",
            "-rf",
            "~/x$(touch /tmp/pwned)",
            "~/a`id`",
            "~/my apps",
            "~/a;b",
            "~/a'b",
            "~/a\"b",
            "~user/x",
            "/srv/ä",
            "~/a\nb",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_keep_tilde_and_quote_the_rest() {
        let venv = Venv::new("~/my apps/", "a").unwrap();
        assert_eq!(venv.path("bin/python"), "~/'my apps/a/bin/python'");
        assert_eq!(Venv::new("/srv", "a").unwrap().path(""), "/srv/a");
    }
}
