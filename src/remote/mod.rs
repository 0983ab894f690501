//! The scripts es runs on hosts, kept in files of their own beside this one,
//! and the one way their command lines are built: the script as code es
//! wrote, every argument quoted. Secrets never go on a command line: they are
//! uploaded in files readable only by the deploy user.

use crate::quote::{quote, quote_path};

mod ports;
pub use ports::{parse_owners, PORTS};

/// A script run on a host.
pub struct Script {
    source: &'static str,
}

/// Reads a venv's releases, lock, supervisord and ledger; takes the deploy lock.
pub const FACTS: Script = Script {
    source: include_str!("facts.sh"),
};

/// Stages a release beside the running one.
pub const STAGE: Script = Script {
    source: include_str!("stage.sh"),
};

/// Takes the uv binary out of uv's wheel on the index (uploaded, run by stage.sh).
pub const TOOLS: Script = Script {
    source: include_str!("tools.py"),
};

/// Prunes old releases, appends to the ledger and releases the lock.
pub const FINISH: Script = Script {
    source: include_str!("finish.sh"),
};

/// Keeps a venv deployed by essay as the release `legacy`.
pub const ADOPT: Script = Script {
    source: include_str!("adopt.sh"),
};

/// Runs one hook in a release, its environment loaded; ends its process
/// group past the command timeout or when es closes its stdin.
pub const HOOK: Script = Script {
    source: include_str!("hook.sh"),
};

/// Runs a command in a venv's current release, its environment loaded.
pub const EXEC: Script = Script {
    source: include_str!("exec.sh"),
};

/// Switches releases, starts and stops supervisord, checks health (Python;
/// ports.py's functions first, to tell whose process holds a port, and
/// release.py's, shared with systemd.py).
pub const SUPERVISORD: Script = Script {
    source: concat!(
        include_str!("ports.py"),
        include_str!("release.py"),
        include_str!("supervisord.py")
    ),
};

/// Resolves requirements for the host's python3 in a temporary venv (a first
/// deploy's dry run).
pub const RESOLVE: Script = Script {
    source: include_str!("resolve.sh"),
};

/// The same actions as SUPERVISORD, for instances of a systemd user unit (Python).
pub const SYSTEMD: Script = Script {
    source: concat!(include_str!("release.py"), include_str!("systemd.py")),
};

/// A venv's program logs: supervisord's log files or the units' journal.
pub const LOGS: Script = Script {
    source: include_str!("logs.sh"),
};

/// Guards a switch on the host: goes back by itself unless es confirms in time.
pub const GUARD: Script = Script {
    source: include_str!("guard.py"),
};

/// Prepares, starts, settles and marks a guarded switch (around GUARD).
pub const GUARD_STEPS: Script = Script {
    source: include_str!("guard.sh"),
};

/// Drives nginx on a host: runs, starts, reloads it; reads, replaces and
/// restores its config.
pub const NGINX: Script = Script {
    source: include_str!("nginx.sh"),
};

/// Asks every port of a venv from the host itself (`es validate`).
pub const PROBE: Script = Script {
    source: include_str!("probe.sh"),
};

/// What a dry run reads on a host: the running process configuration, the
/// pins uv resolves.
pub const DRY_RUN: Script = Script {
    source: include_str!("dry_run.sh"),
};

/// Empties and makes a release's staging directory.
pub const STAGING: Script = Script {
    source: include_str!("staging.sh"),
};

/// Puts a venv's nginx site into maintenance and takes it out again.
pub const MAINTENANCE: Script = Script {
    source: include_str!("maintenance.sh"),
};

/// Builds an sdist and a wheel on the build host, in a work directory of its own.
pub const BUILD: Script = Script {
    source: include_str!("build.sh"),
};

/// One argument of a remote command.
pub enum Arg<'a> {
    /// A value, quoted.
    Value(&'a str),
    /// A path, quoted, a leading `~/` left to the remote shell.
    Path(&'a str),
}

impl Script {
    /// The script's text, to upload as a file.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// `sh -c SCRIPT es ARGS...`
    pub fn shell(&self, args: &[Arg<'_>]) -> String {
        format!("sh -c {} es{}", quote(self.source), render(args))
    }

    /// `PYTHON -c SCRIPT ARGS...`
    pub fn python(&self, python: &str, args: &[Arg<'_>]) -> String {
        format!(
            "{} -c {}{}",
            quote_path(python),
            quote(self.source),
            render(args)
        )
    }
}

fn render(args: &[Arg<'_>]) -> String {
    args.iter()
        .map(|arg| match arg {
            Arg::Value(v) => format!(" {}", quote(v)),
            Arg::Path(p) => format!(" {}", quote_path(p)),
        })
        .collect()
}

/// `PROGRAM ARGS...` (the first argument is the program), every word quoted.
pub fn program(args: &[Arg<'_>]) -> String {
    render(args).trim_start().to_string()
}

/// `sudo -n -- sh -c SCRIPT`: shell code run as root (`es run --sudo`).
pub fn as_root(script: &str) -> String {
    format!("sudo -n -- sh -c {}", quote(script))
}

/// `export KEY='value'` lines, to put before a shell command (hooks).
pub fn exports<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    vars.into_iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect()
}

/// `KEY='value'` lines a POSIX shell can source (`set -a; . FILE`).
pub fn env_file<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    vars.into_iter()
        .map(|(k, v)| format!("{k}={}\n", quote(v)))
        .collect()
}

#[cfg(test)]
mod guard_nginx_tests;
#[cfg(test)]
mod manager_tests;
#[cfg(test)]
mod tests;
