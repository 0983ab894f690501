//! The scripts es runs on hosts, kept in files of their own beside this one,
//! and the one way their command lines are built: the script as code es
//! wrote, every argument quoted. Secrets never go on a command line: they are
//! uploaded in files readable only by the deploy user.

use crate::quote::{quote, quote_path};

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

/// Prunes old releases, appends to the ledger and releases the lock.
pub const FINISH: Script = Script {
    source: include_str!("finish.sh"),
};

/// Switches releases, starts and stops supervisord, checks health (Python).
pub const SUPERVISORD: Script = Script {
    source: include_str!("supervisord.py"),
};

/// Guards a switch on the host: goes back by itself unless es confirms in time.
pub const GUARD: Script = Script {
    source: include_str!("guard.py"),
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

/// `KEY='value'` lines a POSIX shell can source (`set -a; . FILE`).
pub fn env_file<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    vars.into_iter()
        .map(|(k, v)| format!("{k}={}\n", quote(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(line: &str) -> (String, String, i32) {
        let out = Command::new("sh").arg("-c").arg(line).output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    fn facts(root: &std::path::Path, mode: &str, owner: &str) -> String {
        let root = root.to_str().unwrap();
        let line = FACTS.shell(&[Arg::Value(root), Arg::Value(mode), Arg::Value(owner)]);
        let (stdout, stderr, code) = sh(&line);
        assert_eq!(code, 0, "{stderr}");
        stdout
    }

    /// supervisord.py's fault_line, run by python3 with a stand-in for the
    /// `supervisor` package (its Faults codes as supervisor 4 defines them).
    #[test]
    fn supervisord_refusals_are_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("supervisor");
        std::fs::create_dir(&pkg).unwrap();
        std::fs::write(pkg.join("__init__.py"), "").unwrap();
        std::fs::write(pkg.join("options.py"), "class ClientOptions:\n    pass\n").unwrap();
        std::fs::write(
            pkg.join("xmlrpc.py"),
            "class Faults:\n    UNKNOWN_METHOD = 1\n    SHUTDOWN_STATE = 6\n    BAD_NAME = 10\n    NO_FILE = 20\n    NOT_EXECUTABLE = 21\n    FAILED = 30\n    ABNORMAL_TERMINATION = 40\n    SPAWN_ERROR = 50\n    ALREADY_STARTED = 60\n    NOT_RUNNING = 70\n",
        )
        .unwrap();
        let cases = [
            (6, "SHUTDOWN_STATE", None, "supervisord is shutting down and takes no commands: run `es supervisor start VENV` once it has stopped (supervisord: SHUTDOWN_STATE)"),
            (10, "BAD_NAME: web:nope", None, "supervisord has no process or group web:nope (supervisord: BAD_NAME)"),
            (20, "NO_FILE: can't find command '/nonexistent'", Some("web:web_0"), "web:web_0 cannot start: can't find command '/nonexistent' (supervisord: NO_FILE)"),
            (21, "NOT_EXECUTABLE: command at '/etc/passwd' is not executable", Some("web:web_1"), "web:web_1 cannot start: command at '/etc/passwd' is not executable (supervisord: NOT_EXECUTABLE)"),
            (50, "SPAWN_ERROR: web:web_0", Some("web:web_0"), "web:web_0 could not be spawned (its log and supervisord's say why) (supervisord: SPAWN_ERROR)"),
            (40, "ABNORMAL_TERMINATION: web:web_0", Some("web:web_0"), "web:web_0 exited as soon as it was started (supervisord: ABNORMAL_TERMINATION)"),
            (70, "NOT_RUNNING: web:web_0", Some("web:web_0"), "web:web_0 is not running (supervisord: NOT_RUNNING)"),
            (99, "SOMETHING_NEW: odd", None, "supervisord refused: SOMETHING_NEW: odd (supervisord: fault 99)"),
        ];
        // The functions, without the call of main.
        let mut script = SUPERVISORD
            .source
            .strip_suffix("main(sys.argv[1:])\n")
            .expect("supervisord.py ends by calling main")
            .to_string();
        script.push_str("\nimport xmlrpc.client\n");
        for (code, text, name, _) in &cases {
            let name = name.map_or("None".to_string(), |n| format!("{n:?}"));
            script.push_str(&format!(
                "print(fault_line(xmlrpc.client.Fault({code}, {text:?}), {name}))\n"
            ));
        }
        let out = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .env("PYTHONPATH", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        let expected: Vec<&str> = cases.iter().map(|c| c.3).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn facts_takes_the_lock_once_and_reports_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("it's a $(venv)");
        let out = facts(&root, "read", "");
        assert_eq!(out, "missing=yes\n");
        assert!(!root.exists(), "reading creates nothing");
        let out = facts(&root, "lock", r#"{"user":"me"}"#);
        assert!(out.contains("lock=taken"), "{out}");
        let out = facts(&root, "lock", r#"{"user":"other"}"#);
        assert!(out.contains("lock=busy"), "{out}");
        assert!(out.contains(r#"lock_owner={"user":"me"}"#), "{out}");
        let out = facts(&root, "break", r#"{"user":"other"}"#);
        assert!(out.contains("lock=taken") && out.contains(r#"lock_broken={"user":"me"}"#));
    }

    #[test]
    fn facts_refuses_to_write_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let root = dir.path().join("v");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join(".es")).unwrap();
        let out = facts(&root, "lock", "{}");
        assert!(out.contains("lock=error"), "{out}");
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
    }

    #[test]
    fn facts_lists_complete_releases_and_ignores_a_stale_pidfile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (id, complete) in [("1.0-aa", true), ("1.1-bb", true), ("1.2-cc", false)] {
            let rel = root.join("releases").join(id);
            std::fs::create_dir_all(&rel).unwrap();
            if complete {
                std::fs::write(rel.join("release.json"), format!("{{\"id\":\"{id}\"}}\n")).unwrap();
            }
        }
        std::fs::write(
            root.join("releases/1.1-bb/activated"),
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        std::os::unix::fs::symlink("releases/1.1-bb", root.join("current")).unwrap();
        // A pidfile naming a live process that is not this venv's supervisord.
        std::fs::create_dir(root.join("tmp")).unwrap();
        std::fs::write(
            root.join("tmp/supervisord.pid"),
            std::process::id().to_string(),
        )
        .unwrap();
        let out = facts(root, "read", "");
        assert!(out.contains("current=1.1-bb\n"), "{out}");
        assert!(
            out.contains("release=1.0-aa\t-\t{\"id\":\"1.0-aa\"}\t{}\n"),
            "{out}"
        );
        assert!(
            out.contains("release=1.1-bb\t2026-01-01T00:00:00Z\t"),
            "{out}"
        );
        assert!(!out.contains("1.2-cc"), "{out}");
        assert!(!out.contains("supervisord="), "{out}");
    }

    #[test]
    fn finish_prunes_old_releases_writes_the_ledger_and_releases_only_its_own_lock() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Five releases, staged one second apart (oldest first).
        for (i, id) in ["r1", "r2", "r3", "r4", "r5"].iter().enumerate() {
            let rel = root.join("releases").join(id);
            std::fs::create_dir_all(&rel).unwrap();
            std::fs::write(rel.join("release.json"), "{}").unwrap();
            let (_, _, code) = sh(&format!(
                "touch -d @{} {}",
                1_700_000_000 + i,
                quote(rel.join("release.json").to_str().unwrap())
            ));
            assert_eq!(code, 0);
        }
        std::os::unix::fs::symlink("releases/r1", root.join("current")).unwrap();
        std::fs::create_dir_all(root.join(".es/lock")).unwrap();
        std::fs::write(root.join(".es/lock/owner"), r#"{"deploy_id":"other"}"#).unwrap();
        let finish = |id: &str| {
            let line = FINISH.shell(&[
                Arg::Value(root.to_str().unwrap()),
                Arg::Value("2"),
                Arg::Value(id),
                Arg::Value(r#"{"outcome":"switched"}"#),
                Arg::Value("r2"),
            ]);
            let (stdout, stderr, code) = sh(&line);
            assert_eq!(code, 0, "{stderr}");
            stdout
        };
        let out = finish("mine");
        // Kept: the two newest (r5, r4), current (r1) and the protected r2.
        assert_eq!(out, "pruned=r3\nlock=other\ncurrent=r1\n");
        assert!(
            root.join(".es/lock").exists(),
            "another deploy's lock was released"
        );
        std::fs::write(root.join(".es/lock/owner"), r#"{"deploy_id":"mine"}"#).unwrap();
        finish("mine");
        assert!(!root.join(".es/lock").exists());
        let ledger = std::fs::read_to_string(root.join(".es/releases.jsonl")).unwrap();
        assert_eq!(ledger.lines().count(), 2);
        assert!(
            ledger.starts_with("{\"time\":\"20") && ledger.contains(",\"outcome\":\"switched\"}")
        );
    }

    #[test]
    fn finish_prunes_failed_releases_first_and_never_leaves_half_a_ledger_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (i, id) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
            let rel = root.join("releases").join(id);
            std::fs::create_dir_all(&rel).unwrap();
            std::fs::write(rel.join("release.json"), "{}").unwrap();
            sh(&format!(
                "touch -d @{} {}",
                1_700_000_000 + i,
                quote(rel.join("release.json").to_str().unwrap())
            ));
        }
        std::fs::write(root.join("releases/r4/failed"), "not healthy\n").unwrap();
        std::os::unix::fs::symlink("releases/r3", root.join("current")).unwrap();
        std::fs::create_dir_all(root.join(".es")).unwrap();
        let whole = format!("{}\n", "x".repeat(399));
        std::fs::write(root.join(".es/releases.jsonl"), &whole).unwrap();
        // A file size limit of 512 bytes: the ledger line can be written only in part.
        let line = format!(
            "ulimit -f 1; {}",
            FINISH.shell(&[
                Arg::Value(root.to_str().unwrap()),
                Arg::Value("2"),
                Arg::Value("d1"),
                Arg::Value(&format!("{{\"error\":\"{}\"}}", "y".repeat(300))),
            ])
        );
        let (stdout, stderr, code) = sh(&line);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(stderr.contains("ledger: cannot append"), "{stderr}");
        // The failed r4 counts for nothing and goes; r3 (current) and r2 stay.
        assert_eq!(stdout, "pruned=r4\npruned=r1\nlock=none\ncurrent=r3\n");
        let ledger = std::fs::read_to_string(root.join(".es/releases.jsonl")).unwrap();
        assert_eq!(ledger, whole, "the ledger keeps whole lines only");
    }

    #[test]
    fn env_files_source_back_to_the_same_values() {
        let nasty = "it's $(touch /tmp/es-env-pwned) `x` \"q\"\nline2";
        let text = env_file([("A", "plain"), ("B", nasty)]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("es.env");
        std::fs::write(&file, text).unwrap();
        let (out, _, code) = sh(&format!(
            "set -a; . {}; set +a; printf '%s|%s' \"$A\" \"$B\"",
            quote(file.to_str().unwrap())
        ));
        assert_eq!(code, 0);
        assert_eq!(out, format!("plain|{nasty}"));
        assert!(!std::path::Path::new("/tmp/es-env-pwned").exists());
    }
}
