//! The state directory: private to the server's user (0700; the database
//! and logs 0600), and used by one `es serve` at a time (a lock).

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

use crate::bad_input;

/// Makes the state directory private and takes its lock; the lock is held
/// while the returned file is open. A second server exits 2 naming the first.
pub fn prepare(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("making {}", dir.display()))?;
    for private in [dir.to_path_buf(), dir.join("logs"), dir.join("work")] {
        if private.exists() {
            std::fs::set_permissions(&private, Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private", private.display()))?;
        }
    }
    let path = dir.join("serve.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        bad_input!(
            "another es serve (pid {}) uses the state directory {}: stop it first",
            pid.trim(),
            dir.display()
        );
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    write!(file, "{}", std::process::id())?;
    for entry in std::fs::read_dir(dir.join("logs"))?.flatten() {
        let _ = std::fs::set_permissions(entry.path(), Permissions::from_mode(0o600));
    }
    Ok(file)
}

/// Creates (or makes private) a file only its owner may read, such as the
/// database, before anything is written to it.
pub fn private_file(path: &Path) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn one_server_per_state_dir_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = prepare(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // flock locks belong to the open file: a second open is refused.
        let err = prepare(&state).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(err.downcast_ref::<crate::error::BadInput>().is_some());
        drop(first);
        prepare(&state).unwrap();
        private_file(&state.join("serve.db")).unwrap();
        let mode = std::fs::metadata(state.join("serve.db")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
