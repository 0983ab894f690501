//! Where to upload and as whom: `~/.pypirc`, `TWINE_USERNAME` / `TWINE_PASSWORD`,
//! or credentials handed over in a file rather than the environment.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{default_upload_url, Credentials};
use crate::bad_input;

/// Names a 0600 file holding the upload user name and password (one a line),
/// which the build deletes once read: how `es serve` hands a job its upload
/// credentials without putting them in any process's environment.
pub const UPLOAD_CREDENTIALS_VAR: &str = "ES_UPLOAD_CREDENTIALS";

/// The credentials in `path`, which is deleted whether or not it could be read.
pub fn read_file(path: &Path) -> Result<Credentials> {
    let text = std::fs::read_to_string(path);
    let _ = std::fs::remove_file(path);
    let text = match text {
        Ok(text) => text,
        Err(err) => bad_input!(
            "{UPLOAD_CREDENTIALS_VAR}: {} cannot be read: {err}",
            path.display()
        ),
    };
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(username), Some(password)) => Ok(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }),
        _ => bad_input!(
            "{UPLOAD_CREDENTIALS_VAR}: {} holds no user name and password",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn the_file_is_read_once_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"uploader\ns3cret pass\n").unwrap();
        let c = read_file(&path).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("uploader", "s3cret pass")
        );
        assert!(!path.exists(), "deleted once read");
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }
}

/// Where to upload and as whom.
#[derive(Debug)]
pub struct UploadTarget {
    pub url: String,
    pub credentials: Option<Credentials>,
}

/// The upload URL and credentials: `index.repository` names a `~/.pypirc` section
/// (username, password, and repository when `index.upload_url` is unset); without it,
/// `TWINE_USERNAME` / `TWINE_PASSWORD` from the environment.
pub fn upload_target(index: &crate::config::Index, home: Option<PathBuf>) -> Result<UploadTarget> {
    let mut url = index.upload_url.clone();
    let credentials = if let Some(section) = &index.repository {
        let path = home.unwrap_or_default().join(".pypirc");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => bad_input!(
                "index.repository = {section:?}, but {} cannot be read: {err}",
                path.display()
            ),
        };
        let values = pypirc_section(&text, section);
        if values.is_empty() {
            bad_input!(
                "{} has no [{section}] section (named by index.repository)",
                path.display()
            );
        }
        let get = |key: &str| {
            values
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if url.is_none() {
            url = get("repository");
        }
        match (get("username"), get("password")) {
            (Some(username), Some(password)) => Some(Credentials { username, password }),
            (Some(_), None) | (None, Some(_)) => bad_input!(
                "{} [{section}] needs both username and password",
                path.display()
            ),
            (None, None) => None,
        }
    } else if let Some(path) = std::env::var_os(UPLOAD_CREDENTIALS_VAR) {
        Some(read_file(Path::new(&path))?)
    } else {
        match (
            std::env::var("TWINE_USERNAME"),
            std::env::var("TWINE_PASSWORD"),
        ) {
            (Ok(username), Ok(password)) => Some(Credentials { username, password }),
            (Ok(_), Err(_)) => bad_input!("TWINE_USERNAME is set but TWINE_PASSWORD is not"),
            (Err(_), Ok(_)) => bad_input!("TWINE_PASSWORD is set but TWINE_USERNAME is not"),
            _ => None,
        }
    };
    let url = match (url, &index.url) {
        (Some(url), _) => url,
        (None, Some(index_url)) => default_upload_url(index_url),
        (None, None) => {
            bad_input!("no index to upload to: set index.url (and index.upload_url) in deploy.toml")
        }
    };
    Ok(UploadTarget { url, credentials })
}

/// The `key = value` (or `key: value`) pairs of one section of a `.pypirc`.
pub(super) fn pypirc_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut values = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') || trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            inside = trimmed[1..trimmed.len() - 1].trim() == section;
            continue;
        }
        if !inside {
            continue;
        }
        let split = trimmed
            .find(['=', ':'])
            .map(|i| (&trimmed[..i], &trimmed[i + 1..]));
        if let Some((key, value)) = split {
            values.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    values
}
