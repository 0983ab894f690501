//! `es deploy` and `es supervisor` on the test bed (hosts 6-8), with a project
//! created by `es create`, built by `es build` and served from the test index.
//! Each test deploys into its own venv prefix and ports, so they run side by side.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{expect_code, Sandbox, Testbed};

const HOSTS: [usize; 3] = [6, 7, 8];

/// A project on the index with versions 1.0.0 and 2.0.0, and 1.5.0 which does
/// not start, shared by every test here.
struct Built {
    name: String,
    /// Keeps the project's directory alive.
    _sandbox: Sandbox,
}

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
        let name = format!("dt_{}_{stamp}", std::process::id());
        let dir = common::create_project(&sb, &name);
        std::fs::write(
            dir.join("deploy.toml"),
            format!("[project]\nname = \"{name}\"\n\n{}", tb.index_section()),
        )
        .unwrap();
        common::git(&sb, &dir, &["commit", "-qam", "point at the test index"]);
        for version in ["1.0.0", "2.0.0"] {
            let out = common::es_build(&sb, &tb, &dir, &["--version", version]);
            expect_code(&out, 0);
        }
        // 1.5.0 exits as soon as it starts (and is not `latest`).
        let main_py = dir.join(&name).join("main.py");
        let code = std::fs::read_to_string(&main_py).unwrap();
        std::fs::write(
            &main_py,
            format!("import sys\nsys.exit('broken on purpose')\n{code}"),
        )
        .unwrap();
        common::git(
            &sb,
            &dir,
            &["commit", "-qam", "a build that does not start"],
        );
        expect_code(
            &common::es_build(&sb, &tb, &dir, &["--version", "1.5.0"]),
            0,
        );
        Built { name, _sandbox: sb }
    })
}

/// A deploy.toml for the shared project, deploying under `~/PREFIX`.
fn config(tb: &Testbed, prefix: &str, ports: &[(&str, &str)], deploy_extra: &str) -> String {
    let hosts: Vec<String> = HOSTS
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    let ports: Vec<String> = ports
        .iter()
        .map(|(v, p)| format!("{v} = \"{p}\""))
        .collect();
    format!(
        "[project]\nname = \"{}\"\n\n{}\n[roles]\nweb = [{}]\n\n{}\n[deploy]\nvirtualenv_prefix = \"~/{prefix}\"\nvenv_ports = {{ {} }}\ndefault_role = \"web\"\n{deploy_extra}",
        built().name,
        tb.index_section(),
        hosts.join(", "),
        tb.ssh_section(),
        ports.join(", ")
    )
}

/// What the process on `port` of host `n` answers at `/`.
fn fetch(tb: &Testbed, n: usize, port: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}:{port}/", tb.addr(n)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_serving(tb: &Testbed, n: usize, port: &str, version: &str, profile: &str) {
    let body = fetch(tb, n, port);
    let expected = format!(
        "{} {version} (profile {profile}, port {port})",
        built().name
    );
    assert_eq!(body.trim(), expected, "host {n} port {port}");
}

/// Command lines of the supervisord processes of host `n` whose venv dir is `venv`.
fn supervisords(n: usize, venv: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", &format!("es-h{n}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("bin/supervisord") && cmdline.contains(&format!("/{venv}/etc/")))
                .then(|| pid.parse().ok())
                .flatten()
        })
        .collect()
}

/// A file in host `n`'s home, as the host sees it.
fn host_file(tb: &Testbed, n: usize, path: &str) -> Option<String> {
    let out = tb.exec(n, &["cat", &format!("/home/{}/{path}", tb.user)]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes what an earlier run left under `~/PREFIX` on the hosts: its
/// supervisords (waiting for them to exit, freeing their ports) and its venvs.
fn fresh(tb: &Testbed, prefix: &str) {
    let script = common::clear_prefix(&format!("/home/{}/{prefix}", tb.user));
    for n in HOSTS {
        let out = tb.exec(n, &["sh", "-c", &script]);
        assert!(out.status.success(), "cleaning host {n}: {:?}", out);
    }
}

fn deploy(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    sb.es().arg("deploy").args(args).output().unwrap()
}

#[test]
fn first_deploy_upgrade_redeploy_and_status() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "up");
    let hook = r#"post_hooks = ["printf '%s|%s|%s|%s|%s' \"$ES_VERSION\" \"$ES_VENV\" \"$ES_PROFILE\" \"$ES_HOST\" \"$ES_PROJECT\" > post_hook.out"]"#;
    std::fs::create_dir_all(sb.work.path().join("conf")).unwrap();
    std::fs::write(
        sb.work.path().join("conf/app.ini"),
        "[app]\nversion = {{ version }}\nhost = {{ host }}\nport = {{ port }}0\n",
    )
    .unwrap();
    let extra = format!("{hook}\nextra_templates = {{ \"conf/app.ini\" = \"etc/app/app.ini\" }}\n");
    sb.write_config(&config(&tb, "up", &[("a", "880")], &extra));

    let out = deploy(&sb, &["1.0.0", "a", "test"]);
    let (_, stderr) = expect_code(&out, 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    for n in HOSTS {
        for port in ["8800", "8801"] {
            assert_serving(&tb, n, port, "1.0.0", "test");
        }
        let hook_out = host_file(&tb, n, "up/a/current/post_hook.out").expect("post hook ran");
        assert_eq!(
            hook_out,
            format!("1.0.0|a|test|{}|{}", tb.addr(n), built().name)
        );
        assert_eq!(supervisords(n, "up/a").len(), 1, "host {n}");
        assert_eq!(
            host_file(&tb, n, "up/a/current/etc/app/app.ini").as_deref(),
            Some(
                format!(
                    "[app]\nversion = 1.0.0\nhost = {}\nport = 8800\n",
                    tb.addr(n)
                )
                .as_str()
            )
        );
        // Rendered files may hold secrets: readable by the deploy user only.
        let mode = tb.exec(
            n,
            &[
                "stat",
                "-c",
                "%a",
                &format!("/home/{}/up/a/current/etc/app/app.ini", tb.user),
            ],
        );
        assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "600");
    }

    // Upgrade: every process serves 2.0.0, and the old supervisord is gone.
    let out = deploy(&sb, &["-R", "web", "latest", "a", "test"]);
    expect_code(&out, 0);
    for n in HOSTS {
        for port in ["8800", "8801"] {
            assert_serving(&tb, n, port, "2.0.0", "test");
        }
        assert_eq!(supervisords(n, "up/a").len(), 1, "host {n}");
        let ledger = host_file(&tb, n, "up/a/.es/releases.jsonl").unwrap();
        let lines: Vec<serde_json::Value> = ledger
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{ledger}");
        assert_eq!(lines[1]["version"], "2.0.0");
        assert_eq!(lines[1]["outcome"], "switched");
        assert_eq!(lines[1]["action"], "deploy");
        assert!(
            host_file(&tb, n, "up/a/.es/lock/owner").is_none(),
            "lock released"
        );
    }

    // The same version and configuration again: that release is already staged
    // and current, so nothing is installed or restarted; its health is checked.
    let pids: Vec<Vec<u32>> = HOSTS.iter().map(|n| supervisords(*n, "up/a")).collect();
    let out = deploy(&sb, &["2.0.0", "a", "test"]);
    let (_, stderr) = expect_code(&out, 0);
    assert_eq!(
        stderr.matches("stage (already staged)").count(),
        3,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("already current, healthy").count(),
        3,
        "{stderr}"
    );
    assert!(!stderr.contains(": stage\n"), "{stderr}");
    for (i, n) in HOSTS.iter().enumerate() {
        assert_eq!(supervisords(*n, "up/a"), pids[i]);
    }

    // One status table for the whole fleet.
    let out = sb
        .es()
        .args(["supervisor", "status", "a"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    for n in HOSTS {
        for i in 0..2 {
            let program = format!("{0}:{0}_{i}", built().name);
            assert!(
                stdout.lines().any(|l| l.starts_with(tb.addr(n))
                    && l.contains(&program)
                    && l.contains("RUNNING")),
                "{program} on host {n} not RUNNING in\n{stdout}"
            );
        }
    }

    // supervisord itself: shut down (nothing answers), started, reloaded.
    let out = sb
        .es()
        .args(["supervisor", "shutdown", "a"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    for n in HOSTS {
        assert_eq!(fetch(&tb, n, "8800"), "", "host {n} still answers");
        assert!(supervisords(n, "up/a").is_empty(), "host {n}");
    }
    let out = sb.es().args(["supervisor", "start", "a"]).output().unwrap();
    expect_code(&out, 0);
    let out = sb
        .es()
        .args(["supervisor", "reload", "a"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    for n in HOSTS {
        assert_eq!(supervisords(n, "up/a").len(), 1, "host {n}");
    }
    // reload restarts the programs: they answer again within a few seconds.
    for n in HOSTS {
        let expected = format!("{} 2.0.0 (profile test, port 8800)", built().name);
        let mut body = String::new();
        for _ in 0..100 {
            body = fetch(&tb, n, "8800");
            if body.trim() == expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(body.trim(), expected, "host {n} after reload");
    }

    // One program stopped (status then exits 1, naming it) and started again.
    let program = format!("{0}:{0}_1", built().name);
    let out = sb
        .es()
        .args(["supervisor", "stop", &program, "a"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let out = sb
        .es()
        .args(["supervisor", "status", "a"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(
        stderr.contains(&format!("{} {program} STOPPED", tb.addr(6))),
        "{stderr}"
    );
    assert_eq!(fetch(&tb, 6, "8801"), "");
    assert_serving(&tb, 6, "8800", "2.0.0", "test");
    let out = sb
        .es()
        .args(["supervisor", "start", &program, "a"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert_serving(&tb, 6, "8801", "2.0.0", "test");
}

#[test]
fn a_failing_pre_hook_leaves_that_host_on_its_old_version() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "hook");
    sb.write_config(&config(&tb, "hook", &[("a", "882")], ""));
    expect_code(&deploy(&sb, &["1.0.0", "a", "prod"]), 0);

    // The hook fails on host 7 only.
    let hook = format!(
        "pre_hooks = [\"test \\\"$ES_HOST\\\" != {}\"]\n",
        tb.addr(7)
    );
    sb.write_config(&config(&tb, "hook", &[("a", "882")], &hook));
    // With the default max-fail of 0, nothing switches anywhere.
    let out = deploy(&sb, &["2.0.0", "a", "prod"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("nothing was switched"), "{stderr}");
    assert!(stderr.contains("2 not switched"), "{stderr}");
    for n in HOSTS {
        assert_serving(&tb, n, "8820", "1.0.0", "prod");
    }
    // With --max-fail 1 the two others switch.
    let out = deploy(&sb, &["2.0.0", "a", "prod", "--max-fail", "1"]);
    let (_, stderr) = expect_code(&out, 1);
    let failed = stderr
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_else(|| panic!("no failed host in\n{stderr}"));
    assert!(
        failed.contains(tb.addr(7)) && failed.contains("pre hook 1"),
        "{failed}"
    );
    assert!(stderr.contains("2 ok, 1 failed"), "{stderr}");
    for port in ["8820", "8821"] {
        assert_serving(&tb, 6, port, "2.0.0", "prod");
        assert_serving(&tb, 7, port, "1.0.0", "prod");
        assert_serving(&tb, 8, port, "2.0.0", "prod");
    }
    let ledger = host_file(&tb, 7, "hook/a/.es/releases.jsonl").unwrap();
    let last: serde_json::Value = serde_json::from_str(ledger.lines().last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "failed");
}

#[test]
fn shell_metacharacters_in_values_never_run() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "meta");
    let hook = r#"post_hooks = ["printf '%s' \"$ES_PROFILE\" > profile.out"]"#;
    sb.write_config(&config(&tb, "meta", &[("a", "883")], hook));
    let profile = "$(touch /tmp/es-pwned-1)`touch /tmp/es-pwned-2`&& touch /tmp/es-pwned-3 'x' & |";
    let out = deploy(&sb, &["1.0.0", "a", profile]);
    expect_code(&out, 0);
    for n in HOSTS {
        assert_eq!(
            host_file(&tb, n, "meta/a/current/profile.out").as_deref(),
            Some(profile)
        );
        let pwned = tb.exec(n, &["sh", "-c", "ls /tmp/es-pwned-* 2>/dev/null"]);
        assert!(pwned.stdout.is_empty(), "a value ran on host {n}");
    }
    assert!(!Path::new("/tmp/es-pwned-1").exists());

    // A prefix with a command substitution is refused before any host is
    // contacted, even in a dry run (pip's launcher scripts would run it).
    let hostile = config(&tb, "meta", &[("a", "883")], "")
        .replace("\"~/meta\"", "\"~/meta_$(touch /tmp/es-pwned-p)\"");
    assert!(hostile.contains("es-pwned-p"));
    sb.write_config(&hostile);
    let (_, stderr) = expect_code(&deploy(&sb, &["1.0.0", "a", "prod", "--dry-run"]), 2);
    assert!(stderr.contains("deploy.virtualenv_prefix"), "{stderr}");
    sb.write_config(&config(&tb, "meta", &[("a", "883")], hook));

    // A venv name with metacharacters is refused before any host is contacted.
    let out = deploy(&sb, &["1.0.0", "a;touch /tmp/es-pwned-4", "prod"]);
    let (_, stderr) = expect_code(&out, 2);
    assert!(stderr.contains("unknown venv `a;touch"), "{stderr}");
    // So is a profile that would rewrite supervisord's configuration.
    let out = deploy(
        &sb,
        &[
            "1.0.0",
            "a",
            "x\n[program:evil]\ncommand=touch /tmp/es-pwned-5",
        ],
    );
    expect_code(&out, 2);
    // ` ;` starts a comment in supervisord's configuration: refused too.
    let (_, stderr) = expect_code(&deploy(&sb, &["1.0.0", "a", "prod ;x"]), 2);
    assert!(stderr.contains("bad profile"), "{stderr}");
    for n in HOSTS {
        let pwned = tb.exec(n, &["sh", "-c", "ls /tmp/es-pwned-* 2>/dev/null"]);
        assert!(pwned.stdout.is_empty(), "a value ran on host {n}");
    }
}

/// essay's own template, as its README gives it (Jinja2, with supervisord's %(...)d).
const ESSAY_TEMPLATE: &str = r#"[unix_http_server]
file={{ run_root }}/tmp/supervisor.sock
username={{ username }}
password={{ password }}

[supervisord]
logfile={{ run_root }}/logs/supervisord.log
pidfile={{ run_root }}/tmp/supervisord.pid

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{{ run_root }}/tmp/supervisor.sock
username={{ username }}
password={{ password }}

[program:{{ project }}]
command={{ venv_dir}}/bin/{{ project }} {{ port }}%(process_num)d --profile={{ profile }}
process_name=%(program_name)s_%(process_num)d
umask=022
startsecs=1
stopwaitsecs=0
redirect_stderr=true
stdout_logfile={{ run_root }}/logs/process_%(process_num)02d.log
numprocs={{ process_count }}
numprocs_start=0
"#;

#[test]
fn essay_template_and_a_second_venv_side_by_side() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "ab");
    std::fs::create_dir_all(sb.work.path().join("conf")).unwrap();
    std::fs::write(sb.work.path().join("conf/supervisord.conf"), ESSAY_TEMPLATE).unwrap();
    sb.write_config(&config(
        &tb,
        "ab",
        &[("a", "884"), ("b", "885")],
        "supervisor_template = \"conf/supervisord.conf\"\n",
    ));
    expect_code(&deploy(&sb, &["1.0.0", "a", "blue"]), 0);
    let a_pids: Vec<Vec<u32>> = HOSTS.iter().map(|n| supervisords(*n, "ab/a")).collect();
    expect_code(&deploy(&sb, &["2.0.0", "b", "green"]), 0);
    for (i, n) in HOSTS.iter().enumerate() {
        assert_serving(&tb, *n, "8840", "1.0.0", "blue");
        assert_serving(&tb, *n, "8841", "1.0.0", "blue");
        assert_serving(&tb, *n, "8850", "2.0.0", "green");
        assert_serving(&tb, *n, "8851", "2.0.0", "green");
        assert_eq!(
            supervisords(*n, "ab/a"),
            a_pids[i],
            "venv a was disturbed on host {n}"
        );
        let conf = host_file(&tb, *n, "ab/b/etc/supervisord.conf").unwrap();
        assert!(
            conf.contains("process_name=%(program_name)s_%(process_num)d"),
            "{conf}"
        );
    }
}

#[test]
fn concurrent_deploys_to_one_venv_one_is_refused() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "lock");
    sb.write_config(&config(
        &tb,
        "lock",
        &[("a", "886")],
        "pre_hooks = [\"sleep 4\"]\n",
    ));
    let first: Child = sb
        .es()
        .args(["deploy", "1.0.0", "a", "prod"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let second = deploy(&sb, &["1.0.0", "a", "prod"]);
    // --force does not break the lock of a deploy that is still running.
    let forced = deploy(&sb, &["1.0.0", "a", "prod", "--force"]);
    let first = first.wait_with_output().unwrap();
    let (_, stderr) = expect_code(&forced, 1);
    assert!(stderr.contains("which is still running"), "{stderr}");
    expect_code(&first, 0);
    let (_, stderr) = expect_code(&second, 1);
    assert!(stderr.contains("venv a is locked (on "), "{stderr}");
    assert!(
        stderr.contains("nothing was staged or switched"),
        "{stderr}"
    );
    // The first host refused it: the others were not even tried.
    assert!(stderr.contains("1 locked"), "{stderr}");
    assert!(
        stderr.contains("(always taken first) is not ours"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deploying 1.0.0"),
        "the holder is named: {stderr}"
    );
}

#[test]
fn dry_run_shows_the_config_and_changes_nothing() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "dry");
    sb.write_config(&config(&tb, "dry", &[("a", "887")], ""));
    let out = deploy(&sb, &["1.0.0", "a", "prod", "--dry-run"]);
    let (stdout, _) = expect_code(&out, 0);
    assert!(stdout.contains("(to be created)"), "{stdout}");
    // With --json, every line is JSON, the plan included.
    let out = deploy(&sb, &["1.0.0", "a", "prod", "--dry-run", "--json"]);
    let (stdout, stderr) = expect_code(&out, 0);
    assert!(stderr.is_empty(), "{stderr}");
    for line in stdout.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["event"].is_string(), "{line}");
    }
    assert!(stdout.contains("would stage release 1.0.0-"), "{stdout}");
    assert!(
        stdout.contains(&format!("+[program:{}]", built().name)),
        "{stdout}"
    );
    assert!(
        !stdout.contains("password=") || stdout.contains("password=********"),
        "{stdout}"
    );
    for n in HOSTS {
        let exists = tb.exec(n, &["test", "-e", &format!("/home/{}/dry", tb.user)]);
        assert!(
            !exists.status.success(),
            "dry run created the venv on host {n}"
        );
    }
    // A wrong setting is found before connecting: venv without a port.
    let out = deploy(&sb, &["1.0.0", "nope", "prod", "--dry-run"]);
    let (_, stderr) = expect_code(&out, 2);
    assert!(stderr.contains("venv_ports"), "{stderr}");

    // Against a deployed venv: a diff of the configuration, nothing changed.
    expect_code(&deploy(&sb, &["1.0.0", "a", "prod"]), 0);
    let conf_path = "dry/a/etc/supervisord.conf";
    let before = host_file(&tb, 6, conf_path).unwrap();
    let out = deploy(&sb, &["2.0.0", "a", "canary", "--dry-run"]);
    let (stdout, _) = expect_code(&out, 0);
    assert!(stdout.contains("would stage release 2.0.0-"), "{stdout}");
    // Proven on the host: the version and its dependencies resolve from the index.
    assert!(
        stdout.contains(&format!(
            "{}==2.0.0 and its dependencies resolve from the index",
            built().name
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("supervisord.conf unchanged: processes restart one by one"),
        "{stdout}"
    );
    assert!(!stdout.contains(&before.lines().find(|l| l.starts_with("password=")).unwrap()[9..]));
    // A template that changes: the diff, the password masked.
    std::fs::create_dir_all(sb.work.path().join("conf")).unwrap();
    std::fs::write(
        sb.work.path().join("conf/supervisord.conf"),
        format!("; canary {{{{ version }}}}\n{}", deploy_template()),
    )
    .unwrap();
    sb.write_config(&config(
        &tb,
        "dry",
        &[("a", "887")],
        "supervisor_template = \"conf/supervisord.conf\"\n",
    ));
    let out = deploy(&sb, &["2.0.0", "a", "canary", "--dry-run"]);
    let (stdout, _) = expect_code(&out, 0);
    assert!(stdout.contains("+; canary 2.0.0"), "{stdout}");
    assert!(!stdout.contains(&before.lines().find(|l| l.starts_with("password=")).unwrap()[9..]));
    assert_eq!(host_file(&tb, 6, conf_path).unwrap(), before);
    assert_serving(&tb, 6, "8870", "1.0.0", "prod");
}

#[test]
fn a_program_that_does_not_start_fails_its_host_with_its_log() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "fail");
    std::fs::create_dir_all(sb.work.path().join("conf")).unwrap();
    let broken = ESSAY_TEMPLATE.replace(
        "command={{ venv_dir}}/bin/{{ project }} {{ port }}%(process_num)d --profile={{ profile }}",
        "command=sh -c 'echo boom-from-the-app; exit 3'",
    );
    assert_ne!(broken, ESSAY_TEMPLATE);
    std::fs::write(sb.work.path().join("conf/supervisord.conf"), broken).unwrap();
    sb.write_config(&config(
        &tb,
        "fail",
        &[("a", "888")],
        "supervisor_template = \"conf/supervisord.conf\"\n",
    ));
    let out = deploy(&sb, &["1.0.0", "a", "prod"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("0 ok, 3 failed"), "{stderr}");
    assert!(stderr.contains("at switch"), "{stderr}");
    assert!(stderr.contains("no previous release"), "{stderr}");
    assert!(stderr.contains("boom-from-the-app"), "{stderr}");
}

#[test]
fn a_version_that_does_not_start_is_rolled_back() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "roll");
    sb.write_config(&config(&tb, "roll", &[("a", "889")], ""));
    expect_code(&deploy(&sb, &["1.0.0", "a", "prod"]), 0);
    let out = deploy(&sb, &["1.5.0", "a", "prod"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("0 ok, 3 failed"), "{stderr}");
    assert!(
        stderr.contains("not healthy; back on 1.0.0, which serves again"),
        "{stderr}"
    );
    assert!(stderr.contains("broken on purpose"), "{stderr}");
    for n in HOSTS {
        assert_serving(&tb, n, "8890", "1.0.0", "prod");
        assert_serving(&tb, n, "8891", "1.0.0", "prod");
        let ledger = host_file(&tb, n, "roll/a/.es/releases.jsonl").unwrap();
        let last: serde_json::Value = serde_json::from_str(ledger.lines().last().unwrap()).unwrap();
        assert_eq!(last["outcome"], "failed");
        assert_eq!(last["version"], "1.5.0");
        assert!(
            host_file(&tb, n, "roll/a/.es/lock/owner").is_none(),
            "lock released"
        );
    }
}

#[test]
fn a_dead_index_fails_every_host_before_anything_changes() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "dead");
    let good = config(&tb, "dead", &[("a", "893")], "");
    sb.write_config(&good);
    expect_code(&deploy(&sb, &["1.0.0", "a", "prod"]), 0);

    // Nothing listens on port 9 of the index's address.
    let dead_url = format!("http://{}:9/simple/", tb.bridge_addr);
    sb.write_config(&good.replace(&tb.index_url, &dead_url));
    // The version is looked up on the index before any host is touched.
    let out = deploy(&sb, &["2.0.0", "a", "prod"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("on the index"), "{stderr}");
    assert!(
        !stderr.contains(&format!("{}:", tb.addr(6))),
        "a host was contacted: {stderr}"
    );
    for n in HOSTS {
        assert_serving(&tb, n, "8930", "1.0.0", "prod");
        assert_serving(&tb, n, "8931", "1.0.0", "prod");
    }
    // A version that is not on the index: refused before any host too.
    sb.write_config(&good);
    let out = deploy(&sb, &["9.9.9", "a", "prod"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("9.9.9 is not on the index"), "{stderr}");
    // `latest` needs the index too: found before any host is touched.
    sb.write_config(&good.replace(&tb.index_url, &dead_url));
    let out = deploy(&sb, &["latest", "a", "prod"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(
        stderr.contains(&dead_url) && stderr.contains("refused"),
        "{stderr}"
    );
}

#[test]
fn an_index_password_in_the_url_is_never_shown() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "secret");
    let with_password = tb.index_url.replacen(
        "://",
        &format!("://{}:{}@", tb.index_user, tb.index_password),
        1,
    );
    sb.write_config(
        &config(&tb, "secret", &[("a", "894")], "").replace(&tb.index_url, &with_password),
    );
    for extra in [&["-v"][..], &["-v", "--json"][..], &["-v", "--dry-run"][..]] {
        let out = sb
            .es()
            .args(["deploy", "latest", "a", "prod"])
            .args(extra)
            .output()
            .unwrap();
        let (stdout, stderr) = expect_code(&out, 0);
        if extra == ["-v"] {
            // The install reads the index URL from a file on the host: no
            // command line carries it, not even masked.
            assert!(
                stderr.contains("stage.sh") || stderr.contains("Stages a release"),
                "{stderr}"
            );
            assert!(!stderr.contains("****@"), "{stderr}");
        }
        for text in [&stdout, &stderr] {
            assert!(
                !text.contains(&tb.index_password),
                "the password was shown:\n{text}"
            );
        }
    }
    assert_serving(&tb, 6, "8940", "2.0.0", "prod");
    // The file the password is in is readable by the deploy user only, and
    // gone once staged.
    let staging = tb.exec(
        6,
        &[
            "sh",
            "-c",
            &format!("ls -A /home/{}/secret/a/.es/staging", tb.user),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&staging.stdout).trim(), "");
}

/// The supervisord template built into es (as `es create` writes it).
fn deploy_template() -> String {
    std::fs::read_to_string(common::repo_root().join("templates/supervisord.conf")).unwrap()
}

#[test]
fn a_lock_from_another_machine_is_broken_only_once_stale() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "stale");
    sb.write_config(&config(&tb, "stale", &[("a", "895")], ""));
    expect_code(&deploy(&sb, &["1.0.0", "a", "prod"]), 0);
    // A lock left by a deploy from another machine, refreshed a moment ago.
    let plant = |age: &str| {
        for n in HOSTS {
            let script = format!(
                "cd /home/{u}/stale/a && mkdir -p .es/lock && echo '{{\"user\":\"bob\",\"machine\":\"laptop-9\",\"pid\":4242,\"version\":\"9.9\",\"deploy_id\":\"x\"}}' > .es/lock/owner && touch -d '{age}' .es/lock && chown -R {u}: .es",
                u = tb.user
            );
            let out = tb.exec(n, &["sh", "-c", &script]);
            assert!(out.status.success(), "{out:?}");
        }
    };
    plant("now");
    let (_, stderr) = expect_code(&deploy(&sb, &["2.0.0", "a", "prod", "--force"]), 1);
    assert!(
        stderr.contains("bob@laptop-9") && stderr.contains("may still be running"),
        "{stderr}"
    );
    assert_serving(&tb, 6, "8950", "1.0.0", "prod");
    // Without --force: refused, the holder and its age named.
    let (_, stderr) = expect_code(&deploy(&sb, &["2.0.0", "a", "prod"]), 1);
    assert!(
        stderr.contains("locked by bob@laptop-9 (pid 4242, deploying 9.9"),
        "{stderr}"
    );
    // An hour old (past ssh.command_timeout): --force breaks it.
    plant("1 hour ago");
    let (_, stderr) = expect_code(&deploy(&sb, &["2.0.0", "a", "prod", "--force"]), 0);
    assert!(
        stderr.contains("breaking the deploy lock held by bob@laptop-9"),
        "{stderr}"
    );
    assert_serving(&tb, 6, "8950", "2.0.0", "prod");
}
