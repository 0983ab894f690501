//! The host scripts run against this machine, without the test bed: compiled
//! only for tests (`#[cfg(test)] mod tests;` in mod.rs).

use super::*;
use std::process::Command;

/// `sh -c LINE`: its stdout, stderr and exit status.
pub(super) fn sh(line: &str) -> (String, String, i32) {
    let out = Command::new("sh").arg("-c").arg(line).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn facts(root: &std::path::Path, mode: &str, owner: &str) -> String {
    facts_held(root, mode, owner, "")
}

/// facts.sh with HELD_BY (break, refresh).
fn facts_held(root: &std::path::Path, mode: &str, owner: &str, held_by: &str) -> String {
    let line = FACTS.shell(&[
        Arg::Value(root.to_str().unwrap()),
        Arg::Value(mode),
        Arg::Value(owner),
        Arg::Value(held_by),
    ]);
    let (stdout, stderr, code) = sh(&line);
    assert_eq!(code, 0, "{stderr}");
    stdout
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
fn facts_breaks_a_lock_only_while_it_is_the_holder_it_was_read_from() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("v");
    let take = |mode: &str, owner: &str, held_by: &str| facts_held(&root, mode, owner, held_by);
    assert!(take("lock", r#"{"deploy_id":"dead"}"#, "").contains("lock=taken"));
    // The first breaker takes it over; the second, who read "dead" too, does not.
    let first = take("break", r#"{"deploy_id":"one"}"#, "dead");
    assert!(first.contains("lock=taken"), "{first}");
    let second = take("break", r#"{"deploy_id":"two"}"#, "dead");
    assert!(second.contains("lock=busy"), "{second}");
    assert!(
        second.contains(r#"lock_owner={"deploy_id":"one"}"#),
        "{second}"
    );
    assert!(!root.join(".es").read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("lock.broken")));
}

#[test]
fn facts_refreshes_only_its_own_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("v");
    let run = |mode: &str, owner: &str, held_by: &str| facts_held(&root, mode, owner, held_by);
    // No venv: nothing is made.
    assert_eq!(run("refresh", "", "one"), "missing=yes\n");
    assert!(!root.exists());
    assert!(run("lock", r#"{"deploy_id":"one"}"#, "").contains("lock=taken"));
    let lock = root.join(".es/lock");
    let age = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // Another deploy's id: busy, the lock's age kept.
    let other = run("refresh", "", "two");
    assert!(
        other.starts_with("root=") && other.contains("lock=busy\n"),
        "{other}"
    );
    assert!(
        other.contains(r#"lock_owner={"deploy_id":"one"}"#),
        "{other}"
    );
    assert_eq!(age(&lock), old);
    // Its own: fresh again, and nothing else read or changed.
    let own = run("refresh", "", "one");
    assert_eq!(own.lines().nth(1), Some("lock=taken"), "{own}");
    assert!(!own.contains("release="));
    assert!(age(&lock) > old + std::time::Duration::from_secs(3000));
    assert!(root.join(".es/lock/owner").exists());
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
    std::fs::write(root.join("releases/1.1-bb/systemd.service"), "[Unit]\n").unwrap();
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
        out.contains("release=1.0-aa\t-\t{\"id\":\"1.0-aa\"}\t{}\tsupervisord\n"),
        "{out}"
    );
    assert!(
        out.contains("release=1.1-bb\t2026-01-01T00:00:00Z\t{\"id\":\"1.1-bb\"}\t{}\tsystemd\n"),
        "a release with a unit was staged for systemd: {out}"
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
    assert!(ledger.starts_with("{\"time\":\"20") && ledger.contains(",\"outcome\":\"switched\"}"));
}

#[test]
fn maintenance_writes_the_snippet_and_page_and_facts_report_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop/a");
    let page = dir.path().join("page.tmp");
    std::fs::write(&page, "<h1>down</h1>").unwrap();
    let run = |words: &[&str]| {
        let mut args = vec![Arg::Value(root.to_str().unwrap())];
        args.extend(words.iter().map(|w| Arg::Value(w)));
        sh(&MAINTENANCE.shell(&args))
    };
    // Off and status on a venv that is not there: nothing, and nothing made.
    assert_eq!(run(&["status"]), (String::new(), String::new(), 0));
    assert!(!root.exists());
    let record = r#"{"user":"ann","message":"it's \"big\""}"#;
    let (out, err, code) = run(&["on", page.to_str().unwrap(), record, "120"]);
    assert_eq!(code, 0, "{err}");
    let real = std::fs::canonicalize(&root).unwrap();
    let snippet = real.join("maintenance/es-maintenance.conf");
    assert_eq!(out, format!("snippet={}\n", snippet.display()));
    let conf = std::fs::read_to_string(&snippet).unwrap();
    assert!(conf.contains("error_page 503 @es_maintenance;"), "{conf}");
    assert!(conf.contains(&format!("root \"{}/maintenance\";", real.display())));
    assert!(conf.contains("add_header Retry-After 120 always;"));
    assert!(conf.trim_end().ends_with("return 503;"));
    let served = std::fs::read_to_string(root.join("maintenance/503.html")).unwrap();
    assert_eq!(served, "<h1>down</h1>");
    assert!(!page.exists());
    let (out, _, _) = run(&["status"]);
    assert_eq!(out, format!("was={record}\n"));
    assert!(facts(&root, "read", "").contains(&format!("maintenance={record}\n")));
    // A Retry-After that is not a number never reaches nginx's config.
    std::fs::write(&page, "x").unwrap();
    let (_, err, code) = run(&["on", page.to_str().unwrap(), "{}", "1; evil"]);
    assert_eq!(code, 2, "{err}");
    assert!(std::fs::read_to_string(&snippet)
        .unwrap()
        .contains("Retry-After 120 "));
    // Off removes the snippet and the record, and says what was on.
    let (out, err, code) = run(&["off"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("was={record}\n")), "{out}");
    assert!(!snippet.exists() && !root.join("maintenance/on.json").exists());
    assert!(!facts(&root, "read", "").contains("maintenance="));
    assert_eq!(run(&["status"]).0, "");
    // A planted symlink is not written through.
    std::fs::remove_dir_all(root.join("maintenance")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("maintenance")).unwrap();
    let (_, err, code) = run(&["on", page.to_str().unwrap(), "{}", "60"]);
    assert_eq!(code, 1);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn exec_runs_in_the_current_release_with_its_environment_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("v a");
    let release = root.join("releases/r1");
    std::fs::create_dir_all(release.join("bin")).unwrap();
    std::fs::write(
        release.join("bin/activate"),
        "export VIRTUAL_ENV=\"$PWD\"\n",
    )
    .unwrap();
    std::fs::write(release.join("es.env"), env_file([("TOKEN", "it's $(x)")])).unwrap();
    std::os::unix::fs::symlink("releases/r1", root.join("current")).unwrap();
    let run = |words: &[&str]| {
        let mut args = vec![Arg::Value(root.to_str().unwrap())];
        args.extend(words.iter().map(|w| Arg::Value(w)));
        sh(&EXEC.shell(&args))
    };
    let (out, err, code) = run(&[
        "sh",
        "-c",
        "printf '%s|%s|%s' \"$TOKEN\" \"$VIRTUAL_ENV\" \"$1\"; exit 3",
        "-",
        "a b",
    ]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(
        out,
        format!("it's $(x)|{}|a b", root.join("current").display())
    );
    std::fs::remove_file(root.join("current")).unwrap();
    let (_, err, code) = run(&["true"]);
    assert_eq!(code, 127);
    assert!(err.contains("has no current release"), "{err}");
}

#[test]
fn adopt_keeps_an_essay_venv_as_release_legacy_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a");
    for sub in ["bin", "lib", "etc", "logs", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    // The venv's python, answering the installed version of the project.
    let python = root.join("bin/python");
    std::fs::write(&python, "#!/bin/sh\necho 1.4.2\n").unwrap();
    sh(&format!("chmod +x {}", quote(python.to_str().unwrap())));
    std::fs::write(root.join("etc/supervisord.conf"), "[program:shop]\n").unwrap();
    let path = root.to_str().unwrap();
    assert!(facts(&root, "read", "").contains("legacy=yes"));
    let adopt = || {
        let (out, err, code) = sh(&ADOPT.shell(&[Arg::Value(path), Arg::Value("shop")]));
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(adopt(), "adopted=1.4.2\n");
    let legacy = root.join("releases/legacy");
    assert_eq!(
        std::fs::read_to_string(legacy.join("supervisord.conf")).unwrap(),
        "[program:shop]\n"
    );
    assert!(legacy.join("bin/python").exists());
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        std::path::Path::new("releases/legacy")
    );
    let out = facts(&root, "read", "");
    assert!(out.contains("current=legacy"), "{out}");
    assert!(out.contains("release=legacy\t20"), "{out}");
    assert!(out.contains("\"version\":\"1.4.2\""), "{out}");
    assert!(!out.contains("legacy=yes"), "{out}");
    assert_eq!(adopt(), "", "adopted once");
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

/// tools.py against a stand-in index served by python3's http.server: the
/// newest uv wheel for this machine is taken (credentials from the URL
/// sent as a header), a wheel whose sha256 differs from the index's is refused.
#[test]
fn tools_takes_uv_out_of_the_newest_wheel_for_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.py");
    std::fs::write(&tools, TOOLS.source()).unwrap();
    let driver = r##"
import hashlib, http.server, os, platform, subprocess, sys, threading, zipfile
root, tools, bad = sys.argv[1], sys.argv[2], sys.argv[3] == "bad"
machine = platform.machine()
os.makedirs(root + "/simple/uv")
links = []
for version, arch in (("0.9.0", machine), ("0.10.1", machine), ("0.99.0", "other")):
    name = "uv-%s-py3-none-manylinux_2_17_%s.manylinux2014_%s.whl" % (version, arch, arch)
    with zipfile.ZipFile(root + "/" + name, "w") as z:
        z.writestr("uv-%s.data/scripts/uv" % version, "#!/bin/sh\necho uv %s\n" % version)
    digest = hashlib.sha256(open(root + "/" + name, "rb").read()).hexdigest()
    if bad:
        digest = "0" * 64
    links.append('<a href="../../%s#sha256=%s">%s</a>' % (name, digest, name))
open(root + "/simple/uv/index.html", "w").write("<html><body>%s</body></html>" % "".join(links))
auth = []
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def log_message(self, *a):
        auth.append(self.headers.get("Authorization"))
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ, ES_INDEX_URL="http://me:s%%40cret@127.0.0.1:%d/simple/" % server.server_port,
           XDG_CACHE_HOME=root + "/cache")
done = subprocess.run([sys.executable, tools, root + "/uv"], env=env, capture_output=True, text=True)
print(done.returncode, done.stdout.strip(), done.stderr.strip().replace(root, "ROOT"))
print(sorted(set(auth)))
if done.returncode == 0:
    print(subprocess.run([root + "/uv"], capture_output=True, text=True).stdout.strip())
    # The next venv takes uv from the cache: the wheels may be gone from the index.
    for name in os.listdir(root):
        if name.endswith(".whl"):
            os.remove(root + "/" + name)
    done = subprocess.run([sys.executable, tools, root + "/uv2"], env=env, capture_output=True, text=True)
    print(done.returncode, done.stdout.strip(), subprocess.run([root + "/uv2"], capture_output=True, text=True).stdout.strip())
"##;
    let run = |case: &str| {
        let root = dir.path().join(case);
        let out = Command::new("python3")
            .args(["-c", driver])
            .arg(&root)
            .arg(&tools)
            .arg(case)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (String::from_utf8_lossy(&out.stdout).into_owned(), root)
    };
    let (out, root) = run("good");
    // "me:s@cret", base64.
    assert_eq!(
        out, "0 uv=0.10.1 \n['Basic bWU6c0BjcmV0']\nuv 0.10.1\n0 uv=0.10.1 uv 0.10.1\n",
        "{out}"
    );
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("uv") && !n.ends_with(".whl"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["uv", "uv2"], "no partial file is left");
    let (out, root) = run("bad");
    assert!(
        out.starts_with("1  uv-0.10.1-py3-none-manylinux_2_17_"),
        "{out}"
    );
    assert!(
        out.contains("does not match the sha256 the index gives"),
        "{out}"
    );
    assert!(!root.join("uv").exists());
}

/// hook.sh: the hook runs in DIR with es.env loaded and its status comes
/// back; past SECS its process group is ended (124); with ON_EOF `stop`, when
/// its stdin closes (es interrupted, or gone) the hook's process group gets
/// SIGTERM (143); with `finish` it runs to its end.
#[test]
fn hook_runs_in_its_release_and_ends_when_timed_out_or_its_stdin_closes() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("es.env"), "GREETING='hello there'\n").unwrap();
    let dir_arg = d.to_str().unwrap();
    let run_until = |secs: &str, on_eof: &str, hook: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(HOOK.shell(&[
                Arg::Value(dir_arg),
                Arg::Value(secs),
                Arg::Value(on_eof),
                Arg::Value(hook),
            ]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let run = |secs: &str, hook: &str| run_until(secs, "stop", hook);
    // Its own directory and environment; its exit status; stdin held open
    // (as es holds it) does not keep the script waiting.
    let mut child = run("60", "echo \"$GREETING from $(pwd)\"; exit 3");
    let held = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(held);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hello there from {}", d.display())
    );
    // Past SECS: the hook and its child are ended.
    let mut child = run("1", "sleep 300.25 & wait");
    let held = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(held);
    assert_eq!(out.status.code(), Some(124));
    // Stdin closed while it runs: its TERM trap runs, its child is ended.
    let mut child = run(
        "60",
        "trap 'echo got-term > term; exit 143' TERM; touch began; sleep 300.5 & wait",
    );
    for _ in 0..200 {
        if d.join("began").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(d.join("term")).unwrap().trim(),
        "got-term"
    );
    // ON_EOF finish: stdin closed at once, the hook still runs to its end.
    let mut child = run_until("60", "finish", "sleep 0.5; echo finished");
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "finished");
    for pattern in ["[s]leep 300.25", "[s]leep 300.5"] {
        let mut left = true;
        for _ in 0..100 {
            left = Command::new("pgrep")
                .args(["-f", pattern])
                .status()
                .unwrap()
                .success();
            if !left {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!left, "{pattern} still runs");
    }
}

#[test]
fn staging_empties_and_makes_its_directories_and_removes_a_forced_release() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("it's $(v)");
    let staging = root.join(".es/staging");
    let release = root.join("releases/1.0-a");
    std::fs::create_dir_all(staging.join("old")).unwrap();
    std::fs::create_dir_all(&release).unwrap();
    let extra = staging.join("extra/etc/app");
    let run = |release: &str| {
        let line = STAGING.shell(&[
            Arg::Value(staging.to_str().unwrap()),
            Arg::Value(release),
            Arg::Value(extra.to_str().unwrap()),
        ]);
        sh(&line)
    };
    assert_eq!(run("").2, 0);
    assert!(!staging.join("old").exists() && extra.is_dir());
    assert!(release.exists(), "kept without --force");
    assert_eq!(run(release.to_str().unwrap()).2, 0);
    assert!(!release.exists(), "removed with --force");
}

#[test]
fn dry_run_reads_the_running_config_and_compiles_with_the_tools_uv() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("supervisord.conf");
    let run = |args: &[&str]| {
        let args: Vec<Arg<'_>> = args.iter().map(|a| Arg::Value(a)).collect();
        sh(&DRY_RUN.shell(&args))
    };
    assert_eq!(
        run(&["config", conf.to_str().unwrap()]),
        (String::new(), String::new(), 0)
    );
    std::fs::write(&conf, "[program:x]\n").unwrap();
    assert_eq!(run(&["config", conf.to_str().unwrap()]).0, "[program:x]\n");

    // A stand-in uv printing what it was asked and the index it was given.
    let uv = dir.path().join("uv");
    std::fs::write(
        &uv,
        "#!/bin/sh\necho \"args: $*\"\necho \"index: $UV_INDEX_URL\"\ncat\n",
    )
    .unwrap();
    std::fs::set_permissions(&uv, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = dir.path().join("index.env");
    let write_env =
        || std::fs::write(&env, env_file([("ES_INDEX_URL", "http://u:p@idx/simple/")])).unwrap();
    write_env();
    let (out, _, code) = run(&[
        "compile",
        env.to_str().unwrap(),
        uv.to_str().unwrap(),
        "app==1.0",
        "gunicorn[gevent]>=21; python_version > '3'",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "args: pip compile -q --no-header --python python3 -\n\
         index: http://u:p@idx/simple/\n\
         app==1.0\n\
         gunicorn[gevent]>=21; python_version > '3'\n"
    );
    assert!(!env.exists(), "the index file is removed");
    write_env();
    let missing = dir.path().join("no-uv");
    let (out, _, _) = run(&[
        "compile",
        env.to_str().unwrap(),
        missing.to_str().unwrap(),
        "app==1.0",
    ]);
    assert_eq!(out, "es-no-uv\n");
}

#[test]
fn exports_quote_every_value() {
    let text = exports([("ES_HOST", "h"), ("ES_PROFILE", "it's $(x)")]);
    let (out, _, _) = sh(&format!(
        "{text}printf '%s|%s' \"$ES_HOST\" \"$ES_PROFILE\""
    ));
    assert_eq!(out, "h|it's $(x)");
}
