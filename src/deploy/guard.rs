//! The host-guarded switch ("commit confirmed"): before a switch, es starts a
//! watchdog on the host (src/remote/guard.py), detached from the SSH session.
//! Unless es confirms the new release healthy before the deadline, the host
//! puts the previous release back by itself, records why and releases the
//! deploy's lock; a link cut, a SIGKILL of es or a second Ctrl-C all end the
//! same way.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::config::Health;
use crate::fleet::HostCtx;
use crate::remote::{Arg, GUARD, GUARD_STEPS};

/// A switch's deadline: `seconds` after the switch began the host serves a
/// good release, the new one confirmed by es or the previous one put back by
/// the host itself. The host's way back is given one health wait and the
/// settle window (the reserve), so es must confirm before the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub seconds: u64,
    reserve: u64,
}

impl Deadline {
    /// The configured deadline, or enough for every process's health wait
    /// (one at a time), the settle window and supervisord's own restart
    /// (60 s) before the host's reserve.
    pub fn of(health: &Health, processes: u32) -> Self {
        let reserve = health.way_back();
        let seconds = health
            .deadline
            .as_ref()
            .map(|d| *d.get_ref())
            .unwrap_or_else(|| {
                health.timeout * (u64::from(processes) + 1)
                    + health.settle.get_ref().ceil() as u64
                    + 60
                    + reserve
            });
        Deadline { seconds, reserve }
    }

    /// Seconds es has to confirm the new release before the host goes back.
    pub fn confirm_within(self) -> u64 {
        self.seconds.saturating_sub(self.reserve).max(1)
    }
}

/// A guard waiting on the host for es's word.
pub struct Armed {
    /// `.../armed-TOKEN`: es removes it to confirm, the guard renames it to fire.
    flag: String,
    reason: String,
    /// `releases/ID/failed` of the release switched to.
    failed_mark: String,
}

/// Starts the guard of the switch of `back.root` to `release`; when it fires
/// it goes back to `previous` (or stops the processes when there is none)
/// with `back`, the spec of `previous`'s process manager.
pub fn arm(
    ctx: &mut HostCtx<'_>,
    back: &Value,
    release: &str,
    previous: Option<&str>,
    deadline: Deadline,
    deploy_id: &str,
) -> Result<Armed> {
    let root = back["root"].as_str().unwrap_or("");
    let dir = format!("{root}/.es/guard");
    let token = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let flag = format!("{dir}/armed-{token}");
    ctx.check(&GUARD_STEPS.shell(&[Arg::Value("prepare"), Arg::Value(&dir)]))?;
    // The process manager's own script (supervisord.py or systemd.py) puts it back.
    ctx.conn.upload(
        super::host::manager_script(back).source().as_bytes(),
        &format!("{dir}/manager.py"),
        0o600,
    )?;
    ctx.conn
        .upload(GUARD.source().as_bytes(), &format!("{dir}/guard.py"), 0o600)?;
    ctx.conn
        .upload(format!("{release}\n").as_bytes(), &flag, 0o600)?;
    let mut back = back.clone();
    back["release"] = json!(previous);
    let python = format!("{root}/.es/tools/bin/python");
    let within = deadline.confirm_within().to_string();
    let back = back.to_string();
    ctx.check(&GUARD_STEPS.shell(&[
        Arg::Value("start"),
        Arg::Value(&python),
        Arg::Value(&dir),
        Arg::Value(&token),
        Arg::Value(&within),
        Arg::Value(deploy_id),
        Arg::Value(&back),
    ]))?;
    Ok(Armed {
        flag,
        reason: format!("{dir}/reason"),
        failed_mark: failed_mark(root, release),
    })
}

/// The mark of a release whose switch failed on this host.
fn failed_mark(root: &str, release: &str) -> String {
    format!("{root}/releases/{release}/failed")
}

/// Marks `release` failed on this host: `es rollback` never picks it and it
/// does not count toward `deploy.keep_releases`.
pub fn mark_failed(ctx: &mut HostCtx<'_>, root: &str, release: &str, why: &str) -> Result<()> {
    let line = why
        .lines()
        .last()
        .unwrap_or("")
        .chars()
        .take(500)
        .collect::<String>();
    let mark = failed_mark(root, release);
    ctx.check(&GUARD_STEPS.shell(&[Arg::Value("mark"), Arg::Value(&mark), Arg::Value(&line)]))?;
    Ok(())
}

impl Armed {
    /// Tells the guard the new release is healthy (and clears an earlier
    /// failed mark). Fails when the guard fired first: the host went back by itself.
    pub fn confirm(&self, ctx: &mut HostCtx<'_>) -> Result<()> {
        self.settle(ctx, Some(&self.failed_mark))
    }

    /// Tells the guard es went back itself.
    pub fn disarm(&self, ctx: &mut HostCtx<'_>) -> Result<()> {
        self.settle(ctx, None)
    }

    /// Removes the flag (and `also`); fails when the guard fired first.
    fn settle(&self, ctx: &mut HostCtx<'_>, also: Option<&str>) -> Result<()> {
        let mut args = vec![
            Arg::Value("settle"),
            Arg::Value(&self.flag),
            Arg::Value(&self.reason),
        ];
        args.extend(also.map(Arg::Value));
        let out = ctx.exec(&GUARD_STEPS.shell(&args))?;
        if out.stdout.trim() == "confirmed" {
            return Ok(());
        }
        bail!(
            "the host's guard acted before es confirmed: {}",
            out.stdout.trim()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Runs guard.py (deadline 1 s) over a venv in `root` whose manager.py
    /// is a stand-in recording what it was asked; `confirm` removes the flag first.
    fn run_guard(root: &Path, confirm: bool) {
        let guard = root.join(".es/guard");
        std::fs::create_dir_all(root.join(".es/lock")).unwrap();
        std::fs::create_dir_all(&guard).unwrap();
        std::fs::write(
            root.join(".es/lock/owner"),
            "{\"deploy_id\":\"d1\",\"pid\":1}\n",
        )
        .unwrap();
        std::fs::write(
            guard.join("manager.py"),
            "import sys\nopen(sys.argv[0] + '.called', 'w').write(' '.join(sys.argv[1:]))\n",
        )
        .unwrap();
        std::fs::write(guard.join("armed-t1"), "2.0.0-abc\n").unwrap();
        if confirm {
            std::fs::remove_file(guard.join("armed-t1")).unwrap();
        }
        let spec = json!({"root": root.to_str().unwrap(), "release": "1.0.0-def"});
        let out = Command::new("python3")
            .arg("-c")
            .arg(GUARD.source())
            .args([guard.to_str().unwrap(), "t1", "1", "d1", &spec.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn an_unconfirmed_switch_is_undone_recorded_and_unlocked_by_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        run_guard(root, false);
        let guard = root.join(".es/guard");
        let called = std::fs::read_to_string(guard.join("manager.py.called")).unwrap();
        assert!(
            called.starts_with("switch ") && called.contains("1.0.0-def"),
            "{called}"
        );
        let reason = std::fs::read_to_string(guard.join("reason")).unwrap();
        assert!(
            reason.contains("es did not confirm release 2.0.0-abc within 1s"),
            "{reason}"
        );
        assert!(reason.contains("went back to 1.0.0-def"), "{reason}");
        assert!(guard.join("fired-t1").exists());
        assert!(
            !root.join(".es/lock").exists(),
            "the deploy's lock is released"
        );
        let ledger = std::fs::read_to_string(root.join(".es/releases.jsonl")).unwrap();
        let entry: Value = serde_json::from_str(ledger.trim()).unwrap();
        assert_eq!(entry["outcome"], "reverted by the host");
        assert_eq!(entry["serving"], "1.0.0-def");
    }

    #[test]
    fn a_confirmed_switch_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        run_guard(root, true);
        assert!(!root.join(".es/guard/manager.py.called").exists());
        assert!(!root.join(".es/guard/reason").exists());
        assert!(root.join(".es/lock").exists());
    }

    #[test]
    fn the_default_deadline_covers_every_health_wait_the_settle_window_and_the_way_back() {
        let health = Health {
            timeout: 30,
            settle: toml::Spanned::new(0..0, 2.5),
            ..Health::default()
        };
        let default = Deadline::of(&health, 2);
        assert_eq!(default.confirm_within(), 30 * 3 + 3 + 60);
        assert_eq!(default.seconds, 30 * 3 + 3 + 60 + 30 + 3);
        let set = Health {
            deadline: Some(toml::Spanned::new(0..0, 70)),
            ..health
        };
        let set = Deadline::of(&set, 2);
        assert_eq!(set.seconds, 70);
        assert_eq!(
            set.confirm_within(),
            70 - 33,
            "the host keeps one health wait and the settle window"
        );
    }
}
