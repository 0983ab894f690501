//! What kind of failure a host's is, so that the summary, `--json` (`kind`)
//! and `es serve` can tell a refused connection from a changed host key, a
//! full disk or an unhealthy release without reading the text. A kind is
//! given where it is known ([`Kinded`], as the error or as a context of it);
//! what a command on the host said decides the rest.

use std::fmt;

use serde::Serialize;

/// The kinds of a host's failure (`kind` in `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The host could not be reached, or the connection broke.
    Connect,
    /// Its host key is unknown or changed: refused.
    HostKey,
    /// No key or agent identity was accepted.
    Auth,
    /// A command outlived `ssh.command_timeout`.
    Timeout,
    /// Ctrl-C or SIGTERM stopped it.
    Interrupted,
    /// A command on the host failed (its exit status and output say how).
    Command,
    /// The host's disk is full.
    DiskFull,
    /// The new release did not answer its health check (or died right after).
    Unhealthy,
    /// Another deploy (or `es lock acquire`) holds the venv's lock.
    Locked,
    /// The venv's site is in maintenance (`es maintenance on`): no deploy.
    Maintenance,
    /// Anything else (the error says what).
    Other,
}

impl FailureKind {
    /// The kind of `err`: the outermost [`Kinded`] of its chain, else what its
    /// command on the host said, else `Interrupted` after Ctrl-C, else `Other`.
    pub fn of(err: &anyhow::Error) -> FailureKind {
        if let Some(kinded) = err.downcast_ref::<Kinded>() {
            return kinded.kind;
        }
        let text = format!("{err:#}");
        if text.contains("No space left on device") {
            return FailureKind::DiskFull;
        }
        if err.downcast_ref::<CommandFailed>().is_some() {
            return FailureKind::Command;
        }
        if crate::interrupt::requested() {
            return FailureKind::Interrupted;
        }
        FailureKind::Other
    }
}

/// An error, or a context of one, whose kind is known where it is raised.
#[derive(Debug)]
pub struct Kinded {
    pub kind: FailureKind,
    pub message: String,
}

impl Kinded {
    /// `message` as an error of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Kinded {
        Kinded {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Kinded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Kinded {}

/// A remote command that exited non-zero; its output is kept for the summary.
#[derive(Debug)]
pub struct CommandFailed {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.status)?;
        let tail = tail(
            if self.stderr.trim().is_empty() {
                &self.stdout
            } else {
                &self.stderr
            },
            12,
        );
        if !tail.is_empty() {
            write!(f, ":\n{tail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandFailed {}

/// The last `lines` non-empty lines of `text`, one a line.
pub fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outermost_known_kind_decides_then_what_the_host_said() {
        let refused = anyhow::Error::new(Kinded::new(FailureKind::HostKey, "HOST KEY CHANGED"));
        assert_eq!(FailureKind::of(&refused), FailureKind::HostKey);
        // A kind given as a context, over a command that failed.
        let failed = || CommandFailed {
            status: 1,
            stdout: String::new(),
            stderr: "web:web_0 EXITED within the settle window".into(),
        };
        let unhealthy = anyhow::Error::new(failed())
            .context(Kinded::new(FailureKind::Unhealthy, "not healthy"))
            .context("going back");
        assert_eq!(FailureKind::of(&unhealthy), FailureKind::Unhealthy);
        assert_eq!(
            format!("{unhealthy:#}"),
            "going back: not healthy: exit status 1:\nweb:web_0 EXITED within the settle window"
        );
        assert_eq!(
            FailureKind::of(&anyhow::Error::new(failed())),
            FailureKind::Command
        );
        let full = CommandFailed {
            status: 1,
            stdout: String::new(),
            stderr: "cat: write error: No space left on device".into(),
        };
        assert_eq!(
            FailureKind::of(&anyhow::Error::new(full).context("staging")),
            FailureKind::DiskFull
        );
        assert_eq!(FailureKind::of(&anyhow::anyhow!("odd")), FailureKind::Other);
        assert_eq!(
            serde_json::to_string(&FailureKind::DiskFull).unwrap(),
            "\"disk_full\""
        );
    }
}
