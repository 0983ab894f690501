//! The guard's steps (guard.sh) and nginx's script (nginx.sh) run against
//! `local`, without the test bed: compiled only for tests
//! (`#[cfg(test)] mod guard_nginx_tests;` in mod.rs).

use super::tests::sh;
use super::*;
use std::process::Command;

#[test]
fn guard_steps_prepare_start_settle_and_mark_a_guarded_switch() {
    let dir = tempfile::tempdir().unwrap();
    let guard = dir.path().join("it's $(a) guard");
    let g = guard.to_str().unwrap();
    let run = |args: &[&str]| {
        let args: Vec<Arg<'_>> = args.iter().map(|a| Arg::Value(a)).collect();
        sh(&GUARD_STEPS.shell(&args))
    };
    // prepare: a clean directory, an earlier switch's reason and fired flag gone.
    std::fs::create_dir_all(&guard).unwrap();
    std::fs::write(guard.join("reason"), "old\n").unwrap();
    std::fs::write(guard.join("fired-t0"), "1.0\n").unwrap();
    assert_eq!(run(&["prepare", g]).2, 0);
    assert!(!guard.join("reason").exists() && !guard.join("fired-t0").exists());

    // start: guard.py runs detached with its arguments, its output in DIR/log.
    std::fs::write(
        guard.join("guard.py"),
        "import json, os, sys\nprint('args', json.dumps(sys.argv[1:], separators=(',', ':')), 'session leader', os.getsid(0) == os.getpid())\n",
    )
    .unwrap();
    let spec = r#"{"root": "/v; rm -rf /"}"#;
    let (_, stderr, code) = run(&["start", "python3", g, "t1", "17", "d1", spec]);
    assert_eq!(code, 0, "{stderr}");
    let log = guard.join("log");
    for _ in 0..100 {
        if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("args")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!(
            "args {} session leader True",
            serde_json::json!([g, "t1", "17", "d1", spec])
        )),
        "{log}"
    );

    // settle: the flag removed (and the failed mark), "confirmed"; once the
    // guard fired (no flag), its reason.
    let flag = guard.join("armed-t1");
    let mark = dir.path().join("failed");
    let reason = guard.join("reason");
    std::fs::write(&flag, "2.0\n").unwrap();
    std::fs::write(&mark, "earlier\n").unwrap();
    let (f, r, m) = (
        flag.to_str().unwrap(),
        reason.to_str().unwrap(),
        mark.to_str().unwrap(),
    );
    assert_eq!(run(&["settle", f, r, m]).0, "confirmed\n");
    assert!(!flag.exists() && !mark.exists());
    std::fs::write(&reason, "es did not confirm\n").unwrap();
    assert_eq!(run(&["settle", f, r]).0, "es did not confirm\n");

    // mark: one line, said as given.
    assert_eq!(run(&["mark", m, "not healthy: $(port) 'x'"]).2, 0);
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap(),
        "not healthy: $(port) 'x'\n"
    );
}

#[test]
fn nginx_script_replaces_a_config_only_while_unchanged_and_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let args: Vec<Arg<'_>> = args.iter().map(|a| Arg::Value(a)).collect();
        sh(&NGINX.shell(&args))
    };
    let conf_dir = dir.path().join("it's $(nginx)");
    std::fs::create_dir(&conf_dir).unwrap();
    let real = conf_dir.join("nginx.conf");
    std::fs::write(&real, "old\n").unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link.conf")).unwrap();
    let r = real.to_str().unwrap();
    // resolve follows the link; read gives the bytes in base64.
    let (out, _, code) = run(&["resolve", dir.path().join("link.conf").to_str().unwrap()]);
    assert_eq!((out.trim(), code), (r, 0));
    assert_ne!(
        run(&["resolve", dir.path().join("nope").to_str().unwrap()]).2,
        0
    );
    assert_eq!(run(&["read", r]).0.trim(), "b2xkCg==");

    // install: refused when the file changed since it was read, then done.
    let stage = |text: &str| {
        let staged = tempfile::tempdir_in(dir.path()).unwrap().keep();
        std::fs::write(staged.join("new.conf"), text).unwrap();
        staged
    };
    let another_sum = "3ab4a2f2b0b5bd6bdfa9e6e9a4a4ae7a71ab4af0be8a4bb42b2c9f5e6b1e2d5f";
    let staged = stage("new\n");
    let (_, stderr, code) = run(&["install", r, staged.to_str().unwrap(), another_sum]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("changed while es was changing it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "old\n");
    assert!(!staged.exists(), "the staged directory is removed");
    let actual = Command::new("sh")
        .arg("-c")
        .arg("sha256sum < \"$1\" | cut -d' ' -f1")
        .arg("sh")
        .arg(&real)
        .output()
        .unwrap();
    let actual = String::from_utf8(actual.stdout).unwrap();
    let staged = stage("new\n");
    let (_, stderr, code) = run(&["install", r, staged.to_str().unwrap(), actual.trim()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "new\n");
    assert_eq!(
        std::fs::read_to_string(conf_dir.join("nginx.conf.es-bak")).unwrap(),
        "old\n"
    );
    // restore: the backup back in place.
    assert_eq!(run(&["restore", r]).2, 0);
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "old\n");

    // running: only a live process whose command line says nginx.
    let mut nginx = Command::new("python3")
        .args(["-c", "import time; time.sleep(30)", "nginx: master process"])
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("nginx.pid");
    std::fs::write(&pid_file, format!("{}\n", nginx.id())).unwrap();
    let p = pid_file.to_str().unwrap();
    assert_eq!(run(&["running", p]).0.trim(), nginx.id().to_string());
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&pid_file, format!("{}\n", other.id())).unwrap();
    assert_eq!(run(&["running", p]).0, "", "not nginx");
    other.kill().unwrap();
    other.wait().unwrap();
    // wait_exit: 1 while the process lives past the limit, 0 once it is gone.
    let pid = nginx.id().to_string();
    assert_eq!(run(&["wait_exit", &pid, "2"]).2, 1);
    nginx.kill().unwrap();
    nginx.wait().unwrap();
    assert_eq!(run(&["wait_exit", &pid, "2"]).2, 0);
}
