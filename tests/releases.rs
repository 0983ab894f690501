//! Staged, health-checked, reversible releases and rollouts (hosts 21-25),
//! with a real gunicorn app built by `es build` and served from the test index.
//! Each test deploys under its own prefix and ports.

mod common;

use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{expect_code, Sandbox, Testbed};

/// Versions on the index: 1.0.0 and 2.0.0 serve; 2.1.0's workers cannot boot
/// (its app raises at import). Every version answers 500 when deploy.env's
/// FAIL_HOST is `*` or names the host (ES_HOST), else 200.
struct Built {
    name: String,
    /// The commit 1.0.0 and 2.0.0 were built from.
    commit: String,
    _sandbox: Sandbox,
}

const APP: &str = r#"import os

from __NAME__ import settings


def application(environ, start_response):
    fail = os.environ.get("FAIL_HOST", "")
    status = "500 Internal Server Error" if fail in ("*", os.environ.get("ES_HOST")) else "200 OK"
    body = ("__NAME__ %s %s\n" % (settings.VERSION, os.environ.get("ES_PROFILE"))).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

const MAIN: &str = r#"import os
import sys


def main():
    port = sys.argv[1]
    bindir = os.path.dirname(os.path.abspath(sys.argv[0]))
    gunicorn = os.path.join(bindir, "gunicorn")
    os.execv(gunicorn, [gunicorn, "--bind", "0.0.0.0:" + port, "--workers", "1",
                        "--graceful-timeout", "5", "__NAME__.app:application"])
"#;

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tb = Testbed::get();
        let sb = Sandbox::new();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 100_000_000;
        let name = format!("rel_{}_{stamp}", std::process::id());
        let dir = common::create_project(&sb, &name);
        std::fs::write(
            dir.join("deploy.toml"),
            format!("[project]\nname = \"{name}\"\n\n{}", tb.index_section()),
        )
        .unwrap();
        std::fs::write(
            dir.join(&name).join("app.py"),
            APP.replace("__NAME__", &name),
        )
        .unwrap();
        std::fs::write(
            dir.join(&name).join("main.py"),
            MAIN.replace("__NAME__", &name),
        )
        .unwrap();
        let pyproject = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
        std::fs::write(
            dir.join("pyproject.toml"),
            pyproject.replace("dependencies = []", "dependencies = [\"gunicorn\"]"),
        )
        .unwrap();
        common::git(&sb, &dir, &["add", "-A"]);
        common::git(&sb, &dir, &["commit", "-qm", "a gunicorn app"]);
        for version in ["1.0.0", "2.0.0"] {
            expect_code(
                &common::es_build(&sb, &tb, &dir, &["--version", version]),
                0,
            );
        }
        let app = dir.join(&name).join("app.py");
        let commit = common::git(&sb, &dir, &["rev-parse", "HEAD"])
            .trim()
            .to_string();
        let code = std::fs::read_to_string(&app).unwrap();
        std::fs::write(
            &app,
            format!("raise ImportError('this version cannot boot')\n{code}"),
        )
        .unwrap();
        common::git(&sb, &dir, &["commit", "-qam", "workers cannot boot"]);
        expect_code(
            &common::es_build(&sb, &tb, &dir, &["--version", "2.1.0"]),
            0,
        );
        Built {
            name,
            commit,
            _sandbox: sb,
        }
    })
}

/// A deploy.toml for hosts `hosts`, deploying under `~/PREFIX` with ports PORT0, PORT1.
fn config(tb: &Testbed, hosts: &[usize], prefix: &str, port: &str, extra: &str) -> String {
    let entries: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[project]\nname = \"{}\"\n\n{}\n[roles]\nweb = [{}]\n\n{}\n[deploy]\nvirtualenv_prefix = \"~/{prefix}\"\nvenv_ports = {{ a = \"{port}\" }}\ndefault_role = \"web\"\n\n{extra}\n\n[deploy.health]\ntimeout = 15\n",
        built().name,
        tb.index_section(),
        entries.join(", "),
        tb.ssh_section(),
    )
}

fn fetch(tb: &Testbed, n: usize, port: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}:{port}/", tb.addr(n)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every process of host `n` (ports PORT0 and PORT1) answers with `version`.
fn assert_serving(tb: &Testbed, n: usize, port: &str, version: &str) {
    for i in 0..2 {
        let body = fetch(tb, n, &format!("{port}{i}"));
        assert!(
            body.starts_with(&format!("{} {version} ", built().name)),
            "host {n} port {port}{i} answers {body:?}, not {version}"
        );
    }
}

fn host_sh(tb: &Testbed, n: usize, script: &str) -> String {
    let out = tb.exec(n, &["sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops what an earlier run left under `~/PREFIX` and removes it.
fn fresh(tb: &Testbed, hosts: &[usize], prefix: &str) {
    // The full-disk test leaves a tmpfs mounted on the prefix.
    let dir = format!("/home/{}/{prefix}", tb.user);
    let script = format!(
        "{}umount {dir} 2>/dev/null\nrm -rf {dir}",
        common::clear_prefix(&dir)
    );
    for n in hosts {
        tb.exec(*n, &["sh", "-c", &script]);
    }
}

fn es(sb: &Sandbox, args: &[&str]) -> Output {
    sb.es().args(args).output().unwrap()
}

/// The summary line of host `n`.
fn summary_line<'a>(stderr: &'a str, tb: &Testbed, n: usize) -> &'a str {
    let addr = format!("  {} ", tb.addr(n));
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with(&addr))
        .unwrap_or_else(|| panic!("no summary line for host {n} in\n{stderr}"))
}

#[test]
fn a_version_that_cannot_serve_is_refused_and_every_host_keeps_the_old_one() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [21, 22, 23];
    fresh(&tb, &hosts, "health");
    sb.write_config(&config(&tb, &hosts, "health", "870", ""));
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "870", "1.0.0");
    }

    // gunicorn's workers cannot import the app: FAILED, back on 1.0.0.
    let report = sb.work.path().join("report.json");
    let report_arg = report.to_str().unwrap();
    let (_, stderr) = expect_code(
        &es(
            &sb,
            &["deploy", "2.1.0", "a", "prod", "--report", report_arg],
        ),
        1,
    );
    assert!(stderr.contains("0 ok, 3 failed"), "{stderr}");
    for n in hosts {
        assert_eq!(common::failure_kind(&report, tb.addr(n)), "unhealthy");
        let line = summary_line(&stderr, &tb, n);
        assert!(
            line.contains("FAILED") && line.contains("at switch"),
            "{line}"
        );
        assert_serving(&tb, n, "870", "1.0.0");
    }
    assert!(
        stderr.contains("back on 1.0.0, which serves again"),
        "{stderr}"
    );
    assert!(
        stderr.contains("this version cannot boot"),
        "the app's log: {stderr}"
    );

    // A version that answers 500: FAILED, back on 1.0.0.
    sb.write_config(&config(
        &tb,
        &hosts,
        "health",
        "870",
        "[deploy.env]\nFAIL_HOST = \"*\"\n",
    ));
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 1);
    assert!(
        stderr.contains("answered 500 (accepted 200-399)"),
        "{stderr}"
    );
    for n in hosts {
        assert_serving(&tb, n, "870", "1.0.0");
    }

    // The same version with a configuration that does not start: the previous
    // configuration comes back.
    std::fs::create_dir_all(sb.work.path().join("conf")).unwrap();
    let template = std::fs::read_to_string(common::repo_root().join("templates/supervisord.conf"))
        .unwrap()
        .replace(
            "{{ venv_dir }}/bin/{{ project }} ",
            "{{ venv_dir }}/bin/no-such-program ",
        );
    std::fs::write(sb.work.path().join("conf/supervisord.conf"), template).unwrap();
    sb.write_config(&config(
        &tb,
        &hosts,
        "health",
        "870",
        "supervisor_template = \"conf/supervisord.conf\"\n",
    ));
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 1);
    assert!(stderr.contains("back on 1.0.0"), "{stderr}");
    assert!(
        stderr.contains("no-such-program"),
        "supervisord's reason: {stderr}"
    );
    for n in hosts {
        assert_serving(&tb, n, "870", "1.0.0");
        let conf = host_sh(
            &tb,
            n,
            &format!("cat /home/{}/health/a/etc/supervisord.conf", tb.user),
        );
        assert!(
            !conf.contains("no-such-program"),
            "host {n} kept the bad config"
        );
        let lock = host_sh(&tb, n, &format!("ls /home/{}/health/a/.es", tb.user));
        assert!(!lock.contains("lock"), "host {n} kept the lock: {lock}");
    }

    // A mixed fleet: status says so and exits 1.
    sb.write_config(&config(&tb, &hosts, "health", "870", ""));
    let out = sb
        .es()
        .args(["deploy", "2.0.0", "a", "prod", "-H", tb.addr(21)])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let (stdout, stderr) = expect_code(&es(&sb, &["status", "a"]), 1);
    assert!(
        stderr.contains("different versions: 1.0.0, 2.0.0"),
        "{stderr}"
    );
    assert!(
        stdout.contains("HOST") && stdout.contains("COMMIT"),
        "{stdout}"
    );
    let row = stdout.lines().find(|l| l.starts_with(tb.addr(21))).unwrap();
    assert!(
        row.contains("2.0.0") && row.contains("healthy") && row.contains("2/2"),
        "{row}"
    );
    // The commit the version was built from (recorded by es build in the wheel),
    // not what is checked out here.
    assert!(row.contains(&built().commit[..12]), "{row}");
    let ledger = host_sh(
        &tb,
        21,
        &format!("tail -n 1 /home/{}/health/a/.es/releases.jsonl", tb.user),
    );
    let last: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    assert_eq!(last["commit"], built().commit.as_str());
    assert_eq!(last["branch"], "main");

    // es rollback needs no index: the config points at a dead one.
    let dead = config(&tb, &hosts, "health", "870", "").replace(
        &tb.index_url,
        &format!("http://{}:9/simple/", tb.bridge_addr),
    );
    sb.write_config(&dead);
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a", "-H", tb.addr(21)]), 0);
    assert!(stderr.contains("1 ok, 0 failed"), "{stderr}");
    assert_serving(&tb, 21, "870", "1.0.0");
    expect_code(&es(&sb, &["status", "a"]), 0);
    // --to names a release kept on the host.
    expect_code(
        &es(&sb, &["rollback", "a", "--to", "2.0.0", "-H", tb.addr(21)]),
        0,
    );
    assert_serving(&tb, 21, "870", "2.0.0");
    let (_, stderr) = expect_code(
        &es(&sb, &["rollback", "a", "--to", "7.7.7", "-H", tb.addr(21)]),
        1,
    );
    assert!(stderr.contains("no 7.7.7 release is kept here"), "{stderr}");
    let (stdout, _) = expect_code(&es(&sb, &["releases", "a", "-H", tb.addr(21)]), 0);
    assert!(
        stdout.contains("current") && stdout.contains("rollback switched"),
        "{stdout}"
    );
    let ledger = host_sh(
        &tb,
        21,
        &format!("cat /home/{}/health/a/.es/releases.jsonl", tb.user),
    );
    let outcomes: Vec<String> = ledger
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                v["action"].as_str().unwrap(),
                v["version"].as_str().unwrap_or("-"),
                v["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "deploy 1.0.0 switched",
            "deploy 2.1.0 failed",
            "deploy 2.0.0 failed",
            "deploy 1.0.0 failed",
            "deploy 2.0.0 switched",
            "rollback 1.0.0 switched",
            "rollback 2.0.0 switched",
            "rollback - failed",
        ]
    );
}

/// Unmounts the tmpfs over host `n`'s prefix, even when the test fails.
struct Unmount(usize, String);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(common::repo_root().join("testbed/testbed.sh"))
            .args(["exec", &self.0.to_string(), "umount", &self.1])
            .output();
    }
}

#[test]
fn a_full_disk_leaves_the_host_serving_and_the_next_deploy_works() {
    let tb = bed!();
    let sb = Sandbox::new();
    // Host 25 first: the role's first host is locked alone before the others
    // (the arbiter of concurrent deploys); the full disk is on the second one.
    let hosts = [25, 24];
    fresh(&tb, &hosts, "full");
    sb.write_config(&config(&tb, &hosts, "full", "872", ""));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);

    // A small tmpfs over host 24's venv prefix, inside its mount namespace:
    // the running processes keep their files, es sees an empty, tiny disk.
    let prefix = format!("/home/{}/full", tb.user);
    let mount = tb.exec(
        24,
        &[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=2m,mode=0777",
            "tmpfs",
            &prefix,
        ],
    );
    assert!(mount.status.success(), "{mount:?}");
    let _unmount = Unmount(24, prefix.clone());

    // Full at the lock step.
    host_sh(
        &tb,
        24,
        &format!("dd if=/dev/zero of={prefix}/fill bs=64k 2>/dev/null; true"),
    );
    let report = sb.work.path().join("report.json");
    let report_arg = report.to_str().unwrap();
    // The deploy below, its summary also in `report`.
    let deploy = || {
        let args = [
            "deploy",
            "2.0.0",
            "a",
            "prod",
            "--max-fail",
            "1",
            "--report",
            report_arg,
        ];
        expect_code(&es(&sb, &args), 1)
    };
    let (_, stderr) = deploy();
    assert_eq!(common::failure_kind(&report, tb.addr(24)), "disk_full");
    assert_eq!(common::failure_kind(&report, tb.addr(25)), "");
    let line = summary_line(&stderr, &tb, 24);
    assert!(
        line.contains("FAILED") && line.contains("No space left on device"),
        "{stderr}"
    );
    assert!(
        summary_line(&stderr, &tb, 25).contains("switched"),
        "{stderr}"
    );
    assert_serving(&tb, 24, "872", "1.0.0");
    assert_serving(&tb, 25, "872", "2.0.0");

    // Room for the lock, not for a venv: fails at staging, lock released.
    host_sh(&tb, 24, &format!("rm -f {prefix}/fill"));
    let (_, stderr) = deploy();
    assert_eq!(common::failure_kind(&report, tb.addr(24)), "disk_full");
    let line = summary_line(&stderr, &tb, 24);
    assert!(line.contains("at stage"), "{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "the cause is kept: {stderr}"
    );
    assert_serving(&tb, 24, "872", "1.0.0");
    let left = host_sh(
        &tb,
        24,
        &format!("ls -A {prefix}/a/.es {prefix}/a/releases 2>&1"),
    );
    assert!(!left.contains("lock"), "the lock was left: {left}");

    // Space again: the next deploy works, without --force.
    drop(_unmount);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    assert_serving(&tb, 24, "872", "2.0.0");
}

#[test]
fn release_hooks_run_once_before_the_switch_and_shared_dirs_survive() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [21, 22, 23];
    fresh(&tb, &hosts, "hooks");
    // The hook records the host, the version, what `current` pointed at (it
    // must still be the old release), and checks that the secret arrived.
    // sqlparse is not a dependency of the app: deploy.requirements brings it.
    let hook = r#"python -c 'import sqlparse' && test "$APP_SECRET" = "s3cr3t-value-42" && echo "$ES_HOST $ES_VERSION $(readlink ../../current || echo none)" >> var/data/hooks.log"#;
    let extra = |on: &str, hooks: &str| {
        format!(
            "shared_dirs = [\"var/data\"]\nrequirements = [\"sqlparse\"]\nrelease_hooks = [{hooks}]\nrelease_hooks_on = \"{on}\"\n\n[deploy.secrets]\nAPP_SECRET = {{ env = \"REL_TEST_SECRET\" }}\n"
        )
    };
    let quoted = serde_json::to_string(hook).unwrap();
    sb.write_config(&config(&tb, &hosts, "hooks", "874", &extra("one", &quoted)));
    let deploy = |args: &[&str]| {
        sb.es()
            .arg("deploy")
            .args(args)
            .env("REL_TEST_SECRET", "s3cr3t-value-42")
            .output()
            .unwrap()
    };
    let logs = || -> Vec<String> {
        hosts
            .iter()
            .flat_map(|n| {
                host_sh(
                    &tb,
                    *n,
                    &format!(
                        "cat /home/{}/hooks/a/shared/var/data/hooks.log 2>/dev/null",
                        tb.user
                    ),
                )
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
            })
            .collect()
    };
    let (stdout, stderr) = expect_code(&deploy(&["1.0.0", "a", "prod", "-v"]), 0);
    assert!(!stdout.contains("s3cr3t-value-42") && !stderr.contains("s3cr3t-value-42"));
    let lines = logs();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with(" 1.0.0 none"), "{lines:?}");

    let (_, stderr) = expect_code(&deploy(&["2.0.0", "a", "prod"]), 0);
    let lines = logs();
    assert_eq!(lines.len(), 2, "{lines:?} {stderr}");
    assert!(
        lines.iter().any(|l| l.contains(" 2.0.0 releases/1.0.0-")),
        "ran before the switch: {lines:?}"
    );
    // The secret is in the release's es.env, readable by the deploy user only.
    let mode = host_sh(
        &tb,
        21,
        &format!("stat -c %a /home/{}/hooks/a/current/es.env", tb.user),
    );
    assert_eq!(mode.trim(), "600");

    // A failing release hook switches nothing anywhere.
    sb.write_config(&config(
        &tb,
        &hosts,
        "hooks",
        "874",
        &extra("one", "\"exit 3\""),
    ));
    let (_, stderr) = expect_code(&deploy(&["1.0.0", "a", "prod"]), 1);
    assert!(
        stderr.contains("a release hook failed: nothing was switched anywhere"),
        "{stderr}"
    );
    for n in hosts {
        assert_serving(&tb, n, "874", "2.0.0");
    }

    // On all hosts when asked; the shared data survives a rollback.
    sb.write_config(&config(&tb, &hosts, "hooks", "874", &extra("all", &quoted)));
    expect_code(&deploy(&["1.0.0", "a", "canary"]), 0);
    assert_eq!(logs().len(), 5);
    expect_code(&es(&sb, &["rollback", "a"]), 0);
    for n in hosts {
        assert_serving(&tb, n, "874", "2.0.0");
    }
    assert_eq!(logs().len(), 5, "shared data lost in the rollback");
}

#[test]
fn a_rollout_that_fails_midway_reverts_the_switched_hosts() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [21, 22, 23, 24, 25];
    fresh(&tb, &hosts, "batch");
    sb.write_config(&config(&tb, &hosts, "batch", "876", ""));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);

    // 2.0.0 fails its health check on the third host only.
    let env = format!("[deploy.env]\nFAIL_HOST = \"{}\"\n", tb.addr(23));
    sb.write_config(&config(&tb, &hosts, "batch", "876", &env));
    let (stdout, stderr) = expect_code(
        &es(
            &sb,
            &[
                "deploy",
                "2.0.0",
                "a",
                "prod",
                "--batch",
                "2",
                "--max-fail",
                "0",
                "--json",
            ],
        ),
        1,
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    let outcome = |n: usize| {
        summary["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == tb.addr(n))
            .map(|h| h["outcome"].as_str().unwrap().to_string())
            .unwrap()
    };
    // Batches of two switch in parallel: [21, 22] switched; [23, 24] switched
    // together, 23 failed its check; so both batches go back and 25 is never touched.
    assert_eq!(
        hosts.map(outcome),
        ["reverted", "reverted", "failed", "reverted", "not switched"],
        "{summary}"
    );
    assert!(
        summary["stopped"].as_str().unwrap().contains("went back"),
        "{summary}"
    );
    for n in hosts {
        assert_serving(&tb, n, "876", "1.0.0");
    }

    // Re-running the deploy (the fault fixed) finishes the job.
    sb.write_config(&config(&tb, &hosts, "batch", "876", ""));
    let (_, stderr) = expect_code(
        &es(&sb, &["deploy", "2.0.0", "a", "prod", "--batch", "2"]),
        0,
    );
    assert!(stderr.contains("5 ok, 0 failed"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "876", "2.0.0");
    }
}

/// Stops the test's nginx on host `n`, even when the test fails.
struct StopNginx(usize, String);

impl Drop for StopNginx {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(common::repo_root().join("testbed/testbed.sh"))
            .args(["exec", &self.0.to_string(), "sh", "-c"])
            .arg(format!(
                "kill $(cat {}/nginx.pid) 2>/dev/null; true",
                self.1
            ))
            .output();
    }
}

/// One request through nginx: the body when it answered 200.
fn get(addr: &str, port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{addr}:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?,
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(answer.lines().next().unwrap_or("no answer").to_string()),
    }
}

#[test]
fn a_rolling_switch_behind_nginx_fails_no_request() {
    let tb = bed!();
    let sb = Sandbox::new();
    let n = 25;
    fresh(&tb, &[n], "zero");
    sb.write_config(&config(&tb, &[n], "zero", "878", ""));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);

    // nginx (as root inside the host) balancing over the venv's two ports;
    // max_fails=0: a process that is restarting is retried, never shunned.
    let dir = "/tmp/es-zero-nginx";
    let conf = format!(
        "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n scgi_temp_path {dir}/scgi;\n\
         upstream app {{ server 127.0.0.1:8780 max_fails=0; server 127.0.0.1:8781 max_fails=0; }}\n\
         server {{ listen 8190; location / {{ proxy_pass http://app; }} }}\n}}\n"
    );
    let script = format!(
        "{stop_pid}stop_pid {dir}/nginx.pid nginx\nrm -rf {dir} && mkdir -p {dir} && cat > {dir}/nginx.conf <<'EOF'\n{conf}EOF\n/usr/sbin/nginx -c {dir}/nginx.conf",
        stop_pid = common::STOP_PID
    );
    let started = tb.exec(n, &["sh", "-c", &script]);
    assert!(started.status.success(), "{started:?}");
    let _stop = StopNginx(n, dir.to_string());
    let addr = tb.addr(n).to_string();
    let mut ready = false;
    for _ in 0..50 {
        if get(&addr, 8190).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready, "nginx did not come up");

    // A load loop (bounded in time) during a rolling upgrade, one process at a time.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let done = done.clone();
        let addr = addr.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut versions) =
                (0, Vec::new(), std::collections::BTreeSet::new());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
            while !done.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                match get(&addr, 8190) {
                    Ok(body) => {
                        ok += 1;
                        versions.insert(body.split_whitespace().nth(1).unwrap_or("").to_string());
                    }
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed, versions)
        })
    };
    let (_, stderr) = expect_code(
        &es(&sb, &["deploy", "2.0.0", "a", "prod", "--batch", "1"]),
        0,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, versions) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed requests of {}: {:?}\n{stderr}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 20, "only {ok} requests were made");
    assert!(
        versions.contains("1.0.0") && versions.contains("2.0.0"),
        "{versions:?}"
    );
    assert_serving(&tb, n, "878", "2.0.0");
    eprintln!("rolling switch behind nginx: {ok} requests, 0 failed");
}

#[test]
fn ctrl_c_leaves_no_lock_and_every_host_serving() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [21, 22, 23];
    fresh(&tb, &hosts, "intr");
    sb.write_config(&config(
        &tb,
        &hosts,
        "intr",
        "880",
        "post_hooks = [\"sleep 2\"]\n",
    ));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let locks = |n: usize| host_sh(&tb, n, &format!("ls -A /home/{}/intr/a/.es", tb.user));

    // During staging: the steps under way finish, nothing switches.
    sb.write_config(&config(
        &tb,
        &hosts,
        "intr",
        "880",
        "pre_hooks = [\"sleep 2\"]\n",
    ));
    let out = common::interrupted_deploy(&sb, &["2.0.0", "a", "prod"], ": pre hook 1");
    let (_, stderr) = expect_code(&out, 130);
    assert!(stderr.contains("interrupted"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "880", "1.0.0");
        assert!(
            !locks(n).contains("lock"),
            "host {n} kept its lock: {stderr}"
        );
    }

    // During a rolling switch: the host being switched finishes (healthy),
    // no other host starts; every host serves, no lock is left.
    sb.write_config(&config(
        &tb,
        &hosts,
        "intr",
        "880",
        "post_hooks = [\"sleep 2\"]\n",
    ));
    let out = common::interrupted_deploy(
        &sb,
        &["2.0.0", "a", "prod", "--batch", "1"],
        ": post hook 1",
    );
    let (_, stderr) = expect_code(&out, 130);
    assert!(
        summary_line(&stderr, &tb, 21).contains("switched"),
        "{stderr}"
    );
    for n in [22, 23] {
        assert!(
            summary_line(&stderr, &tb, n).contains("not switched"),
            "{stderr}"
        );
        assert_serving(&tb, n, "880", "1.0.0");
    }
    assert_serving(&tb, 21, "880", "2.0.0");
    for n in hosts {
        assert!(
            !locks(n).contains("lock"),
            "host {n} kept its lock: {stderr}"
        );
    }
    // The deploy run again finishes the job.
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
}

/// Stops the test's own pypiserver, even when the test fails.
struct StopIndex(std::process::Child);

impl Drop for StopIndex {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_index_that_needs_credentials_to_read_works_and_its_password_stays_hidden() {
    let tb = bed!();
    let sb = Sandbox::new();
    built();
    // A second pypiserver over the same packages, needing auth for everything.
    let port = 8082;
    let server = Command::new(tb.dir.join("pypiserver-venv/bin/pypi-server"))
        .args(["run", "-p", &port.to_string(), "-i", &tb.bridge_addr])
        .args(["-a", "download,list,update", "--disable-fallback", "-P"])
        .arg(tb.dir.join("htpasswd"))
        .arg(tb.dir.join("packages"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _stop = StopIndex(server);
    let open_url = format!("http://{}:{port}/simple/", tb.bridge_addr);
    for _ in 0..100 {
        let code = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &open_url])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&code.stdout) == "401" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let n = 22;
    fresh(&tb, &[n], "authidx");
    let with_password = format!(
        "http://{}:{}@{}:{port}/simple/",
        tb.index_user, tb.index_password, tb.bridge_addr
    );
    // Without credentials: a clear refusal, before any host.
    sb.write_config(&config(&tb, &[n], "authidx", "882", "").replace(&tb.index_url, &open_url));
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "latest", "a", "prod"]), 1);
    assert!(stderr.contains("needs credentials to read"), "{stderr}");

    // With them: es reads the index, the host installs from it, and the
    // password is on no command line: a watcher samples the host's processes.
    sb.write_config(
        &config(&tb, &[n], "authidx", "882", "").replace(&tb.index_url, &with_password),
    );
    let watcher = std::thread::spawn({
        let script = "for i in $(seq 400); do ps -eo args; sleep 0.02; done".to_string();
        move || {
            let out = Command::new("bash")
                .arg(common::repo_root().join("testbed/testbed.sh"))
                .args(["exec", "22", "sh", "-c", &script])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    });
    let (stdout, stderr) = expect_code(&es(&sb, &["-v", "deploy", "2.0.0", "a", "prod"]), 0);
    let processes = watcher.join().unwrap();
    assert_serving(&tb, n, "882", "2.0.0");
    assert!(
        processes.contains("pip install"),
        "the watcher saw the install: {}",
        processes.len()
    );
    assert!(
        !processes.contains(&tb.index_password),
        "the password was in the host's process list"
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(&tb.index_password),
            "es printed the password"
        );
    }
}
