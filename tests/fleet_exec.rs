//! Operating the fleet between deploys (hosts 45-50): `es exec` in the
//! current release (on every host, and on a terminal through tmux), adopting a
//! venv deployed by essay, `es rollback --to` and the fleet view of `es releases`.

mod common;
mod ops_support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{expect_code, Sandbox, Testbed};
use ops_support::{assert_serving, built, config, es, fetch, fresh, host_sh, locked, venv_dir};

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
