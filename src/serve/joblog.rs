//! A job's log: a file the job's processes append to, copied into the
//! database as it grows, with every secret masked.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::db::Db;
use super::Settings;

pub fn log_path(settings: &Settings, id: i64) -> PathBuf {
    settings.state_dir.join("logs").join(format!("{id}.log"))
}

/// A job's log: a file that the job's processes append to, copied line by
/// line into the database as it grows. Secrets are masked on the way in.
pub struct JobLog {
    id: i64,
    path: PathBuf,
    offset: u64,
    secrets: Vec<String>,
}

impl JobLog {
    pub fn open(settings: &Settings, id: i64, offset: i64) -> Result<JobLog> {
        let path = log_path(settings, id);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(JobLog {
            id,
            path,
            offset: offset.max(0) as u64,
            secrets: settings.secrets.clone(),
        })
    }

    pub fn file_for_child(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))
    }

    /// Adds a line of the server's own.
    pub fn line(&mut self, line: &str) {
        if let Ok(mut file) = self.file_for_child() {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Copies the complete lines written since the last call into the
    /// database (`last`: the unfinished line too).
    pub fn sync(&mut self, db: &Db, last: bool) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
            return;
        }
        let end = if last {
            bytes.len()
        } else {
            match bytes.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => return,
            }
        };
        let lines: Vec<String> = String::from_utf8_lossy(&bytes[..end])
            .lines()
            .map(|line| self.mask(line))
            .collect();
        let offset = self.offset + end as u64;
        if db.append_log(self.id, &lines, offset as i64).is_ok() {
            self.offset = offset;
        }
    }

    /// The last lines of the log (its last 16 KiB), masked.
    pub fn tail(&self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut bytes = Vec::new();
        if file
            .seek(SeekFrom::Start(length.saturating_sub(16 * 1024)))
            .is_err()
            || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| self.mask(line))
            .collect()
    }

    fn mask(&self, line: &str) -> String {
        let line = self
            .secrets
            .iter()
            .filter(|s| s.len() >= 3)
            .fold(line.to_string(), |l, s| l.replace(s.as_str(), "****"));
        // Progress redraws and colours from a terminal-minded tool, made plain.
        line.replace('\r', "")
    }
}
