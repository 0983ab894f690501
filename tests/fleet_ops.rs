//! Operating the fleet between deploys (hosts 45-50): deploy locks taken in
//! order, waited for, held by hand and broken when their deploy is gone.
//! A real gunicorn app built by `es build`, served from the test index; each
//! test deploys under its own prefix and ports.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{expect_code, text, Sandbox, Testbed};

/// The project built once per run: versions 1.0.0 and 2.0.0, each answering
/// `NAME VERSION` on `/`.
struct Built {
    name: String,
    _sandbox: Sandbox,
}

const APP: &str = r#"def application(environ, start_response):
    body = b"__NAME__ __VERSION__\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

const MAIN: &str = r#"import os
import sys


def main():
    port = sys.argv[1]
    gunicorn = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "gunicorn")
    os.execv(gunicorn, [gunicorn, "--bind", "0.0.0.0:" + port, "--workers", "1",
                        "--graceful-timeout", "5", "__NAME__.app:application"])
"#;

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tb = Testbed::get();
        let sb = Sandbox::new();
        let name = common::unique("ops");
        let dir = common::create_project(&sb, &name);
        std::fs::write(
            dir.join("deploy.toml"),
            format!("[project]\nname = \"{name}\"\n\n{}", tb.index_section()),
        )
        .unwrap();
        let main = MAIN.replace("__NAME__", &name);
        std::fs::write(dir.join(&name).join("main.py"), main).unwrap();
        let pyproject = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
        std::fs::write(
            dir.join("pyproject.toml"),
            pyproject.replace("dependencies = []", "dependencies = [\"gunicorn\"]"),
        )
        .unwrap();
        for version in ["1.0.0", "2.0.0"] {
            let app = APP
                .replace("__NAME__", &name)
                .replace("__VERSION__", version);
            std::fs::write(dir.join(&name).join("app.py"), app).unwrap();
            common::git(&sb, &dir, &["add", "-A"]);
            common::git(&sb, &dir, &["commit", "-qm", version]);
            expect_code(
                &common::es_build(&sb, &tb, &dir, &["--version", version]),
                0,
            );
        }
        Built { name, _sandbox: sb }
    })
}

/// A deploy.toml for `hosts` (the first one first), deploying under `~/PREFIX`
/// with ports PORT0 and PORT1.
fn config(tb: &Testbed, hosts: &[usize], prefix: &str, port: &str) -> String {
    let entries: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[project]\nname = \"{}\"\n\n{}\n[roles]\nweb = [{}]\n\n{}command_timeout = 300\n\n[deploy]\nvirtualenv_prefix = \"~/{prefix}\"\nvenv_ports = {{ a = \"{port}\" }}\ndefault_role = \"web\"\n\n[deploy.health]\ntimeout = 15\n",
        built().name,
        tb.index_section(),
        entries.join(", "),
        tb.ssh_section(),
    )
}

fn host_sh(tb: &Testbed, n: usize, script: &str) -> String {
    let out = tb.exec(n, &["sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The venv's directory on the hosts.
fn venv_dir(tb: &Testbed, prefix: &str) -> String {
    format!("/home/{}/{prefix}/a", tb.user)
}

/// Stops what an earlier run left under `~/PREFIX` and removes it.
fn fresh(tb: &Testbed, hosts: &[usize], prefix: &str) {
    let script = format!(
        r#"for f in /home/{user}/{prefix}/*/tmp/supervisord.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f"); kill "$pid" 2>/dev/null || continue
  i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
done
rm -rf /home/{user}/{prefix}"#,
        user = tb.user
    );
    for n in hosts {
        tb.exec(*n, &["sh", "-c", &script]);
    }
}

fn es(sb: &Sandbox, args: &[&str]) -> Output {
    sb.es().args(args).output().unwrap()
}

fn spawn(sb: &Sandbox, args: &[&str]) -> Child {
    sb.es()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What host `n` answers on `port`.
fn fetch(tb: &Testbed, n: usize, port: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}:{port}/", tb.addr(n)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every process of host `n` (ports PORT0, PORT1) answers with `version`.
fn assert_serving(tb: &Testbed, n: usize, port: &str, version: &str) {
    for i in 0..2 {
        let body = fetch(tb, n, &format!("{port}{i}"));
        assert_eq!(
            body,
            format!("{} {version}", built().name),
            "host {n} port {port}{i}"
        );
    }
}

/// The number of ledger lines of the venv on host `n`.
fn ledger_lines(tb: &Testbed, n: usize, prefix: &str) -> usize {
    host_sh(
        tb,
        n,
        &format!(
            "cat {}/.es/releases.jsonl 2>/dev/null",
            venv_dir(tb, prefix)
        ),
    )
    .lines()
    .count()
}

/// Whether the venv on host `n` is locked.
fn locked(tb: &Testbed, n: usize, prefix: &str) -> bool {
    host_sh(
        tb,
        n,
        &format!("test -d {}/.es/lock && echo yes", venv_dir(tb, prefix)),
    )
    .contains("yes")
}

#[test]
fn of_two_deploys_started_together_exactly_one_deploys_and_the_other_takes_nothing() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [45, 46, 47];
    let prefix = "ops_race";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "910"));
    for version in ["1.0.0", "2.0.0"] {
        expect_code(&es(&sb, &["deploy", version, "a", "prod"]), 0);
    }
    let mut current = "2.0.0";
    for round in 1..=10 {
        let before: Vec<usize> = hosts
            .iter()
            .map(|n| ledger_lines(&tb, *n, prefix))
            .collect();
        // Both in the same instant: one asks for the other version, one for the current one.
        let other = if current == "1.0.0" { "2.0.0" } else { "1.0.0" };
        let a = spawn(&sb, &["deploy", other, "a", "prod"]);
        let b = spawn(&sb, &["deploy", current, "a", "prod"]);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = (a.status.code(), b.status.code());
        let (winner, loser, version) = match codes {
            (Some(0), Some(1)) => (&a, &b, other),
            (Some(1), Some(0)) => (&b, &a, current),
            _ => panic!(
                "round {round}: exit codes {codes:?}\n--- a\n{}\n--- b\n{}",
                text(&a).1,
                text(&b).1
            ),
        };
        let (_, lost) = text(loser);
        assert!(
            lost.contains("venv a is locked (on ")
                && lost.contains("nothing was staged or switched"),
            "round {round}: {lost}"
        );
        assert!(lost.contains("(always taken first) is not ours"), "{lost}");
        let (_, won) = text(winner);
        assert!(won.contains("3 ok, 0 failed"), "round {round}: {won}");
        // The loser took no lock and wrote nothing: one ledger line per host, the winner's.
        for (i, n) in hosts.iter().enumerate() {
            assert_eq!(
                ledger_lines(&tb, *n, prefix),
                before[i] + 1,
                "round {round}, host {n}"
            );
            assert!(
                !locked(&tb, *n, prefix),
                "round {round}: host {n} still locked"
            );
            assert_serving(&tb, *n, "910", version);
        }
        println!("round {round}: {version} deployed, the other deploy refused");
        current = version;
    }
}

#[test]
fn lock_wait_deploys_right_after_the_deploy_holding_the_lock() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [48, 49];
    let prefix = "ops_wait";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "920"));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let first = spawn(&sb, &["deploy", "2.0.0", "a", "prod"]);
    // The second starts once the first holds the lock of the first host.
    let until = Instant::now() + Duration::from_secs(60);
    while !locked(&tb, 48, prefix) {
        assert!(
            Instant::now() < until,
            "the first deploy never took its lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = es(&sb, &["deploy", "1.0.0", "a", "prod", "--lock-wait", "120"]);
    let (_, stderr) = expect_code(&second, 0);
    let (_, first_err) = expect_code(&first.wait_with_output().unwrap(), 0);
    assert!(first_err.contains("2 ok, 0 failed"), "{first_err}");
    assert!(
        stderr.contains("waiting up to 120s (--lock-wait) for the deploy lock held by"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deploying 2.0.0"),
        "the holder is named: {stderr}"
    );
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "920", "1.0.0");
        assert!(!locked(&tb, n, prefix));
    }
}

#[test]
fn a_held_lock_refuses_deploys_naming_its_message_until_released() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [50, 48];
    let prefix = "ops_hold";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "930"));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let (_, stderr) = expect_code(&es(&sb, &["lock", "acquire", "a", "-m", "incident 42"]), 0);
    assert!(stderr.contains("venv a is held on 2 hosts"), "{stderr}");
    let (stdout, _) = expect_code(&es(&sb, &["lock", "status", "a"]), 1);
    assert!(stdout.contains("held: \"incident 42\""), "{stdout}");
    let (stdout, stderr) = expect_code(&es(&sb, &["status", "a"]), 1);
    assert!(
        format!("{stdout}{stderr}").contains("incident 42"),
        "{stdout}{stderr}"
    );
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 1);
    assert!(stderr.contains("held: \"incident 42\""), "{stderr}");
    assert!(
        stderr.contains("nothing was staged or switched"),
        "{stderr}"
    );
    // --force does not break a hold.
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod", "--force"]), 1);
    assert!(stderr.contains("`es lock release`"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "930", "1.0.0");
    }
    expect_code(&es(&sb, &["lock", "release", "a"]), 0);
    expect_code(&es(&sb, &["lock", "status", "a"]), 0);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "930", "2.0.0");
    }
}

/// Starts `es ARGS`, SIGKILLs it once it holds the lock on host `n`; returns its pid.
fn kill_once_locked(sb: &Sandbox, tb: &Testbed, n: usize, prefix: &str, args: &[&str]) -> u32 {
    let mut child = spawn(sb, args);
    let pid = child.id();
    let owner = format!("{}/.es/lock/owner", venv_dir(tb, prefix));
    let until = Instant::now() + Duration::from_secs(60);
    while !host_sh(tb, n, &format!("cat {owner} 2>/dev/null")).contains(&format!("\"pid\":{pid}")) {
        assert!(Instant::now() < until, "es never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    pid
}

#[test]
fn the_lock_of_a_killed_es_is_broken_without_force_and_rollback_force_recovers() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [49, 50];
    let prefix = "ops_dead";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "940"));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);

    // A SIGKILLed deploy's lock: named as gone, with the command that clears it.
    let pid = kill_once_locked(&sb, &tb, 49, prefix, &["deploy", "1.0.0", "a", "prod"]);
    assert!(locked(&tb, 49, prefix));
    let (stdout, stderr) = expect_code(&es(&sb, &["status", "a"]), 1);
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains(&format!("left by a deploy that is gone (pid {pid})"))
            && said.contains(&format!("`es lock release -H {} a`", tb.addr(49))),
        "{said}"
    );
    // The rollback breaks it by itself.
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a"]), 0);
    assert!(
        stderr.contains(&format!(
            "breaking the deploy lock left by a deploy that is gone (pid {pid})"
        )),
        "{stderr}"
    );
    for n in hosts {
        assert_serving(&tb, n, "940", "1.0.0");
        assert!(!locked(&tb, n, prefix));
    }

    // So does the next deploy.
    let pid = kill_once_locked(&sb, &tb, 49, prefix, &["deploy", "2.0.0", "a", "prod"]);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(stderr.contains(&format!("gone (pid {pid})")), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "940", "2.0.0");
    }

    // A lock left an hour ago by a deploy of another machine: only --force breaks it.
    let plant = format!(
        "mkdir {d}/.es/lock && echo '{{\"user\":\"ci\",\"machine\":\"gone-runner\",\"pid\":4242,\"deploy_id\":\"x1\",\"version\":\"9.9\"}}' > {d}/.es/lock/owner && chown -R {u} {d}/.es/lock && touch -d '-1 hour' {d}/.es/lock",
        d = venv_dir(&tb, prefix),
        u = tb.user
    );
    for n in hosts {
        host_sh(&tb, n, &plant);
    }
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a"]), 1);
    assert!(
        stderr.contains("ci@gone-runner (pid 4242, deploying 9.9"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was rolled back"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "940", "2.0.0");
    }
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a", "--force"]), 0);
    assert!(stderr.contains("held by ci@gone-runner"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "940", "1.0.0");
        assert!(!locked(&tb, n, prefix));
    }
}

/// The secret of the exec tests, and its sha256 (what the commands compare:
/// the secret itself never goes on a command line, not even the test's).
const SECRET: &str = "s3cr3t-ops-7f2e91";

fn secret_sha() -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{SECRET}' | sha256sum"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// A deploy.toml whose releases carry OPS_SECRET (from the environment).
fn secret_config(tb: &Testbed, hosts: &[usize], prefix: &str, port: &str) -> String {
    format!(
        "{}\n[deploy.env]\nOPS_PLAIN = \"plain value\"\n\n[deploy.secrets]\nOPS_SECRET = {{ env = \"OPS_SECRET_SOURCE\" }}\n",
        config(tb, hosts, prefix, port)
    )
}

#[test]
fn exec_runs_in_the_current_release_with_the_secrets_and_never_shows_them() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [45, 46];
    let prefix = "ops_exec";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&secret_config(&tb, &hosts, prefix, "950"));
    let es_env = |args: &[&str]| {
        sb.es()
            .args(args)
            .env("OPS_SECRET_SOURCE", SECRET)
            .output()
            .unwrap()
    };
    expect_code(&es_env(&["deploy", "1.0.0", "a", "prod"]), 0);
    let check = format!(
        "import hashlib, os, subprocess, sys\n\
         print('secret ok:', hashlib.sha256(os.environ['OPS_SECRET'].encode()).hexdigest() == '{}')\n\
         print('plain:', os.environ['OPS_PLAIN'])\n\
         print('cwd:', os.getcwd())\n\
         print('python:', sys.prefix == os.environ['VIRTUAL_ENV'])\n\
         ps = subprocess.run(['ps', 'axww', '-o', 'args'], capture_output=True, text=True).stdout\n\
         print('secret in ps:', os.environ['OPS_SECRET'] in ps)",
        secret_sha()
    );
    // Without the secret in es's environment: exec needs none (it stays on the hosts).
    for verbose in [false, true] {
        let mut args = vec!["exec", "a", "--", "python", "-c", &check];
        if verbose {
            args.insert(0, "-v");
        }
        let out = es(&sb, &args);
        let (stdout, stderr) = expect_code(&out, 0);
        for n in hosts {
            let addr = tb.addr(n);
            for line in [
                "secret ok: True".to_string(),
                "plain: plain value".to_string(),
                format!("cwd: {}/releases/1.0.0-", venv_dir(&tb, prefix)),
                "python: True".to_string(),
                "secret in ps: False".to_string(),
            ] {
                assert!(
                    stdout
                        .lines()
                        .any(|l| l.starts_with(addr) && l.contains(&line)),
                    "host {n}: no {line:?} in\n{stdout}"
                );
            }
        }
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "{stdout}{stderr}"
        );
    }
    // The command's failure is the host's.
    let (_, stderr) = expect_code(&es(&sb, &["exec", "a", "--", "sh", "-c", "exit 4"]), 1);
    assert!(
        stderr.contains("0 ok") || stderr.contains("FAILED"),
        "{stderr}"
    );
    // -i wants exactly one host.
    let (_, stderr) = expect_code(&es(&sb, &["exec", "a", "-i", "--", "bash"]), 2);
    assert!(stderr.contains("exactly one host"), "{stderr}");
}

/// What a tmux pane shows now.
fn pane(socket: &std::path::Path) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(["capture-pane", "-p", "-t", "ops"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until the pane shows `what`.
fn wait_for_pane(socket: &std::path::Path, what: &str) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = pane(socket);
        if shown.contains(what) {
            return shown;
        }
        assert!(
            Instant::now() < until,
            "the pane never showed {what:?}:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tmux(socket: &std::path::Path, args: &[&str]) {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "tmux {args:?}: {out:?}");
}

#[test]
fn exec_interactive_runs_a_shell_on_one_host_with_a_terminal() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [47];
    let prefix = "ops_shell";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&secret_config(&tb, &hosts, prefix, "960"));
    let deployed = sb
        .es()
        .args(["deploy", "1.0.0", "a", "prod"])
        .env("OPS_SECRET_SOURCE", SECRET)
        .output()
        .unwrap();
    expect_code(&deployed, 0);
    // es in a tmux pane, as a person at a terminal would run it.
    let script = sb.work.path().join("shell.sh");
    std::fs::write(
        &script,
        format!(
            "cd '{}'\nexport HOME='{}'\nunset SSH_AUTH_SOCK\n'{}' exec a -i -- bash --norc -i\necho \"es-exit=$?\"\nsleep 60\n",
            sb.work.path().display(),
            sb.home.path().display(),
            env!("CARGO_BIN_EXE_es")
        ),
    )
    .unwrap();
    let socket = sb.work.path().join("tmux.sock");
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "ops",
            "-x",
            "160",
            "-y",
            "40",
            &format!("sh {}", script.display()),
        ],
    );
    struct Kill(std::path::PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(&self.0)
                .arg("kill-server")
                .output();
        }
    }
    let _kill = Kill(socket.clone());
    let line = format!(
        "tty; echo \"dir=$PWD\"; python -c \"import hashlib, os; print('match=%s' % (hashlib.sha256(os.environ['OPS_SECRET'].encode()).hexdigest() == '{}'))\"",
        secret_sha()
    );
    // The remote shell's prompt comes first; then it runs what is typed.
    std::thread::sleep(Duration::from_millis(500));
    tmux(&socket, &["send-keys", "-t", "ops", &line, "Enter"]);
    let shown = wait_for_pane(&socket, "\nmatch=");
    assert!(
        shown.contains("/dev/pts/"),
        "a terminal on the host:\n{shown}"
    );
    assert!(shown.contains("\nmatch=True"), "{shown}");
    assert!(
        shown.contains(&format!("\ndir={}/current", venv_dir(&tb, prefix))),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    // Keys reach the remote side as typed (Ctrl-C interrupts the remote command, not es).
    tmux(&socket, &["send-keys", "-t", "ops", "sleep 30", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&socket, &["send-keys", "-t", "ops", "C-c"]);
    tmux(
        &socket,
        &["send-keys", "-t", "ops", "echo still-here", "Enter"],
    );
    wait_for_pane(&socket, "\nstill-here");
    tmux(&socket, &["send-keys", "-t", "ops", "exit 3", "Enter"]);
    let shown = wait_for_pane(&socket, "es-exit=");
    assert!(
        shown.contains("es-exit=1"),
        "the shell's failure is es's:\n{shown}"
    );
    assert!(shown.contains("the command exited 3"), "{shown}");
}

/// Lays out what essay's `fab deploy 1.0.0 a prod` leaves on host `n`: the
/// venv at PREFIX/a itself, supervisor and the project installed into it,
/// etc/supervisord.conf rendered with venv_dir = the venv, and supervisord
/// started from the venv's own bin.
fn essay_deploy(tb: &Testbed, n: usize, prefix: &str, port: &str) {
    let root = venv_dir(tb, prefix);
    let name = &built().name;
    let conf = format!(
        "[unix_http_server]\nfile={root}/tmp/supervisor.sock\nchmod=0700\nusername=essay\npassword=essay-pw\n\n\
         [supervisord]\nlogfile={root}/logs/supervisord.log\npidfile={root}/tmp/supervisord.pid\nchildlogdir={root}/logs\ndirectory={root}/tmp\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{root}/tmp/supervisor.sock\nusername=essay\npassword=essay-pw\n\n\
         [program:{name}]\ncommand={root}/bin/{name} {port}%(process_num)d\nprocess_name=%(program_name)s_%(process_num)d\nnumprocs=2\nnumprocs_start=0\ndirectory={root}\nstartsecs=3\nstopasgroup=true\nkillasgroup=true\nredirect_stderr=true\nstdout_logfile={root}/logs/%(program_name)s_%(process_num)02d.log\n"
    );
    let host = tb
        .index_url
        .split("//")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_string();
    let script = format!(
        "set -e\npython3 -m venv {root}\nmkdir -p {root}/etc {root}/logs {root}/tmp\n\
         {root}/bin/pip install -q --index-url '{index}' --trusted-host {host} supervisor '{name}==1.0.0'\n\
         cat > {root}/etc/supervisord.conf <<'CONF'\n{conf}CONF\n\
         {root}/bin/supervisord -c {root}/etc/supervisord.conf\n",
        index = tb.index_url
    );
    let out = tb.exec(n, &["runuser", "-u", &tb.user, "--", "sh", "-c", &script]);
    assert!(out.status.success(), "essay's layout on host {n}: {out:?}");
    let until = Instant::now() + Duration::from_secs(60);
    while fetch(tb, n, &format!("{port}1")).is_empty() {
        assert!(
            Instant::now() < until,
            "essay's deploy never served on host {n}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_essay_venv_is_adopted_as_release_legacy_and_rollback_brings_it_back() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [48, 50];
    let prefix = "ops_essay";
    fresh(&tb, &hosts, prefix);
    for n in hosts {
        essay_deploy(&tb, n, prefix, "970");
        assert_serving(&tb, n, "970", "1.0.0");
    }
    sb.write_config(&config(&tb, &hosts, prefix, "970"));
    let (stdout, _) = expect_code(&es(&sb, &["status", "a", "--json"]), 1);
    assert!(stdout.contains("\"version\":\"legacy\""), "{stdout}");

    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(
        stderr.contains("kept the venv deployed by essay")
            && stderr.contains("as release `legacy`"),
        "{stderr}"
    );
    assert!(stderr.contains("1.0.0 -> 2.0.0"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "970", "2.0.0");
    }
    let (stdout, stderr) = expect_code(&es(&sb, &["releases", "a"]), 0);
    assert!(
        format!("{stdout}{stderr}").contains("legacy"),
        "{stdout}{stderr}"
    );

    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a"]), 0);
    assert!(stderr.contains("2 hosts"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "970", "1.0.0");
        // essay's own supervisord configuration runs again.
        let conf = host_sh(
            &tb,
            n,
            &format!("cat {}/etc/supervisord.conf", venv_dir(&tb, prefix)),
        );
        assert!(conf.contains("password=essay-pw"), "{conf}");
    }
    let (stdout, _) = expect_code(&es(&sb, &["status", "a", "--json"]), 0);
    assert!(stdout.contains("\"version\":\"1.0.0\""), "{stdout}");
    // And forward again.
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    for n in hosts {
        assert_serving(&tb, n, "970", "2.0.0");
    }
}

#[test]
fn rollback_to_a_version_kept_on_some_hosts_names_them_and_releases_shows_the_fleet() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [46, 47];
    let prefix = "ops_to";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "980"));
    let (h46, h47) = (tb.addr(46), tb.addr(47));
    expect_code(&es(&sb, &["-H", h46, "deploy", "1.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);

    let (stdout, _) = expect_code(&es(&sb, &["releases", "a"]), 0);
    let row = |version: &str| {
        stdout
            .lines()
            .find(|l| {
                l.trim_start_matches(['*', ' '])
                    .starts_with(&format!("{version} "))
            })
            .unwrap_or_else(|| panic!("no fleet row for {version}:\n{stdout}"))
            .to_string()
    };
    let newest = row("2.0.0");
    assert!(newest.starts_with("* 2.0.0"), "{newest}");
    assert!(newest.contains(&format!("{h46}, {h47} (2/2)")), "{newest}");
    let older = row("1.0.0");
    assert!(older.starts_with("  1.0.0"), "{older}");
    assert!(
        older.contains(&format!("{h46} (1/2)")) && older.trim_end().ends_with('-'),
        "{older}"
    );

    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a", "--to", "1.0.0"]), 1);
    assert!(
        stderr.contains(&format!(
            "1.0.0 is kept only on {h46} (not on {h47}): nothing was rolled back"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("`es rollback -H {h46} --to 1.0.0`")),
        "{stderr}"
    );
    for n in hosts {
        assert_serving(&tb, n, "980", "2.0.0");
        assert!(!locked(&tb, n, prefix), "host {n} kept the rollback's lock");
    }
}
