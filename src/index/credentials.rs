//! Upload credentials handed over in a file rather than the environment.

use std::path::Path;

use anyhow::Result;

use super::Credentials;
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
