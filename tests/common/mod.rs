//! Shared support for the integration tests: the test bed (see testbed/testbed.sh)
//! and running the `es` binary in an isolated environment.
//!
//! Hosts are numbered 1..=ES_TB_COUNT. Test files keep to their own hosts so that
//! they never disturb each other:
//!   1-5   tests/run.rs (5 is stopped and restarted by the dead-host test)
//!   6-8   tests/deploy.rs
//!   9-11  tests/create_deploy.rs
//!   12-14 tests/nginx.rs
//!   15-20 benchmarks (bench/; the fan-out benchmark uses all hosts)
//!   21-25 tests/releases.rs (staged releases, health checks, rollouts)
//!   26-28 tests/faults.rs (link drop, disk full, interrupts)
//!   29-30 tests/bastion.rs (29 the bastion, 30 reachable only through it)
//!   31-32 tests/serve.rs (es serve)
//!   33    tests/build.rs (the build role)
//!   34-36 tests/real_projects.rs (third-party apps, day-2 commands)
//!   37-41 tests/switch_guard.rs (the host-guarded switch, settle, ledger, prefixes)
//!   42-44 tests/real_projects2.rs (ports held by others, a requirements-only app)
//!   45-50 tests/fleet_ops.rs, tests/fleet_exec.rs, tests/maintenance.rs (locks, exec,
//!         essay adoption, rollback --to, maintenance, nginx drain)
//!   51-53 tests/serve_hardening.rs
//!   54-60 tests/bootstrap.rs (first deploy on fresh hosts)
//!   61-200 bench/compare.sh fan-out (after `testbed.sh up 200`)
//!
//! The systemd hosts (`systemd_hosts`, numbered 1..=3 by `testbed.sh
//! systemd-restart K`): 3 is restarted by tests/systemd_bed.rs; 1-2 deploy in
//! tests/systemd_deploy.rs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What `testbed/testbed.sh up` wrote to `testbed.env`.
pub struct Testbed {
    pub dir: PathBuf,
    pub hosts: Vec<String>,
    pub user: String,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub index_url: String,
    pub upload_url: String,
    pub index_user: String,
    pub index_password: String,
    pub bridge_addr: String,
    /// Hosts whose PID 1 is systemd, each on its own root (testbed/systemd-hosts.sh).
    pub systemd_hosts: Vec<String>,
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running test bed, or `return` from the test (skipped, saying so) when
/// the bed is not up and `ES_TB_REQUIRED` is not set: `cargo test` on a machine
/// without the bed runs the local tier and passes; CI sets `ES_TB_REQUIRED=1`
/// so that a bed test can never be skipped there.
#[macro_export]
macro_rules! bed {
    () => {
        match $crate::common::Testbed::if_up(module_path!()) {
            Some(tb) => tb,
            None => return,
        }
    };
}

/// Where `testbed.sh up` writes the bed's environment.
fn env_file() -> PathBuf {
    std::env::var_os("ES_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/es-testbed"))
        .join("testbed.env")
}

impl Testbed {
    /// The running test bed; None, after saying the test is skipped, when it
    /// is not up and `ES_TB_REQUIRED` is unset (see `bed!`).
    pub fn if_up(test: &str) -> Option<Testbed> {
        let required =
            std::env::var_os("ES_TB_REQUIRED").is_some_and(|v| v != "0" && !v.is_empty());
        if !required && !env_file().exists() {
            eprintln!(
                "skipped {test}: the test bed is not up (`bash testbed/testbed.sh up` as root); set ES_TB_REQUIRED=1 to fail instead"
            );
            return None;
        }
        Some(Testbed::get())
    }

    /// The running test bed. Panics, saying how to bring it up, when it is not up.
    pub fn get() -> Testbed {
        let env_file = env_file();
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|_| {
            panic!(
                "the test bed is not up ({} is missing): run `sudo bash testbed/testbed.sh up` first",
                env_file.display()
            )
        });
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_string(),
                    v.trim().trim_matches(['"', '\'']).to_string(),
                )
            })
            .collect();
        let get = |k: &str| {
            vars.get(k).cloned().unwrap_or_else(|| {
                panic!(
                    "{} has no {k}: bring the test bed up again",
                    env_file.display()
                )
            })
        };
        // Checked once per test binary, before any test can stop a host on purpose.
        static HEALTHY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        HEALTHY.get_or_init(|| {
            let status = Command::new("bash")
                .arg(repo_root().join("testbed/testbed.sh"))
                .arg("status")
                .output()
                .expect("running testbed.sh status");
            assert!(
                status.status.success(),
                "the test bed is not healthy: run `sudo bash testbed/testbed.sh up`\n{}{}",
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr)
            );
        });
        Testbed {
            dir: PathBuf::from(get("ES_TB_DIR")),
            hosts: get("ES_TB_HOSTS")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            user: get("ES_TB_USER"),
            key: PathBuf::from(get("ES_TB_KEY")),
            known_hosts: PathBuf::from(get("ES_TB_KNOWN_HOSTS")),
            index_url: get("ES_TB_INDEX_URL"),
            upload_url: get("ES_TB_UPLOAD_URL"),
            index_user: get("ES_TB_INDEX_USER"),
            index_password: get("ES_TB_INDEX_PASSWORD"),
            bridge_addr: get("ES_TB_BRIDGE_ADDR"),
            systemd_hosts: get("ES_TB_SYSTEMD_HOSTS")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    /// The address of host `n` (1-based).
    pub fn addr(&self, n: usize) -> &str {
        &self.hosts[n - 1]
    }

    /// `user@addr` entries for hosts `ns`.
    pub fn entries(&self, ns: &[usize]) -> Vec<String> {
        ns.iter()
            .map(|n| format!("{}@{}", self.user, self.addr(*n)))
            .collect()
    }

    /// Runs a command as root inside host `n`'s namespaces (its network, mounts, hostname).
    pub fn exec(&self, n: usize, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo_root().join("testbed/testbed.sh"))
            .arg("exec")
            .arg(n.to_string())
            .args(args)
            .output()
            .expect("running testbed.sh exec")
    }

    /// Runs a `testbed.sh` subcommand (e.g. `stop-sshd 5`) and checks it succeeded.
    pub fn control(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(repo_root().join("testbed/testbed.sh"))
            .args(args)
            .output()
            .expect("running testbed.sh");
        assert!(
            out.status.success(),
            "testbed.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `[ssh]` section connecting to the test bed's hosts.
    pub fn ssh_section(&self) -> String {
        format!(
            "[ssh]\nuser = \"{}\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = 3\n",
            self.user,
            self.key.display(),
            self.known_hosts.display()
        )
    }

    /// An `[index]` section pointing at the test bed's pypiserver.
    pub fn index_section(&self) -> String {
        format!(
            "[index]\nurl = \"{}\"\nupload_url = \"{}\"\n",
            self.index_url, self.upload_url
        )
    }
}

/// A clean environment for one test: its own HOME, and none of the caller's
/// ssh-agent or index credentials.
pub struct Sandbox {
    pub home: tempfile::TempDir,
    pub work: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            home: tempfile::tempdir().expect("temp home"),
            work: tempfile::tempdir().expect("temp work dir"),
        }
    }

    /// Writes `deploy.toml` into the work directory and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.work.path().join("deploy.toml");
        std::fs::write(&path, text).expect("writing deploy.toml");
        path
    }

    /// The `es` binary, run in the work directory with the sandbox's HOME.
    pub fn es(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_es"));
        cmd.current_dir(self.work.path())
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("TWINE_USERNAME")
            .env_remove("TWINE_PASSWORD")
            .env_remove("TWINE_REPOSITORY_URL")
            // One build-venv cache for every test, not one per sandbox HOME.
            .env(
                "XDG_CACHE_HOME",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("es-cache"),
            );
        cmd
    }
}

/// A git identity for commits made in a sandbox.
const GIT_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "es tests"),
    ("GIT_AUTHOR_EMAIL", "tests@es.invalid"),
    ("GIT_COMMITTER_NAME", "es tests"),
    ("GIT_COMMITTER_EMAIL", "tests@es.invalid"),
];

/// A name no other run of the tests has used: a project, a prefix.
pub fn unique(prefix: &str) -> String {
    // Tests of one binary run at once: two of them asking in the same
    // millisecond must not get one name (they would build one project's
    // version twice on the shared index).
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{prefix}_{}_{stamp}_{n}", std::process::id())
}

/// Creates project `name` in the sandbox's work directory with `es create --no-push`.
pub fn create_project(sb: &Sandbox, name: &str) -> PathBuf {
    create_project_with(sb, name, &[])
}

/// `create_project` with more arguments of `es create` (`-t django`...).
pub fn create_project_with(sb: &Sandbox, name: &str, args: &[&str]) -> PathBuf {
    let out = sb
        .es()
        .args(["create", name, "--no-push"])
        .args(args)
        .envs(GIT_IDENTITY)
        .output()
        .expect("running es create");
    expect_code(&out, 0);
    sb.work.path().join(name)
}

/// Runs git in `dir` with a sandbox identity; returns stdout.
pub fn git(sb: &Sandbox, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", sb.home.path())
        .envs(GIT_IDENTITY)
        .output()
        .expect("running git");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "git {args:?} failed: {stderr}");
    stdout
}

/// `es build ARGS` in `dir`, with the test index's upload credentials.
pub fn es_build(sb: &Sandbox, tb: &Testbed, dir: &Path, args: &[&str]) -> Output {
    sb.es()
        .current_dir(dir)
        .arg("build")
        .args(args)
        .env("TWINE_USERNAME", &tb.index_user)
        .env("TWINE_PASSWORD", &tb.index_password)
        .output()
        .expect("running es build")
}

/// Output as text, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Panics with the command's output unless it exited with `code`.
pub fn expect_code(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr)
}

/// Whether `path` is under `dir`.
pub fn is_under(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// An nginx config that runs as the deploy user: pid, logs and temp paths in
/// `dir`; `http` goes inside its http block.
pub fn nginx_conf_in(dir: &str, http: &str) -> String {
    format!(
        r#"worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
{http}}}
"#
    )
}

/// The `kind` of host `addr`'s failure in the summary es wrote with
/// `--report FILE` ("" when the host did not fail).
pub fn failure_kind(report: &Path, addr: &str) -> String {
    let text = std::fs::read_to_string(report).expect("es wrote its --report");
    let summary: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let hosts = summary["hosts"].as_array().expect("the report lists hosts");
    let host = hosts
        .iter()
        .find(|h| {
            let label = h["host"].as_str().unwrap_or_default();
            label == addr || label.ends_with(&format!("@{addr}"))
        })
        .unwrap_or_else(|| panic!("{addr} is not in the report\n{text}"));
    host["kind"].as_str().unwrap_or_default().to_string()
}

/// Shell code that defines `stop_pid FILE WANT`: stops the process pid file
/// FILE names and waits for it to exit (SIGTERM, SIGKILL after 15 s), but
/// only while that
/// process's command line matches WANT (an extended regular expression).
/// A pid file a killed run left behind can name any process of the machine
/// once pids wrap (the bed's hosts share the machine's pid space, and
/// `pid_max` is often 32768): a bare `kill $(cat FILE)` once powered off a
/// systemd host of the bed in the middle of CI.
pub const STOP_PID: &str = r#"stop_pid() {
  pid=$(cat "$1" 2>/dev/null) || return 0
  case $pid in ''|*[!0-9]*) return 0 ;; esac
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -Eq -- "$2" || return 0
  kill "$pid" 2>/dev/null || return 0
  i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -Eq -- "$2" && kill -9 "$pid"
  i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
}
"#;

/// Shell code that stops the supervisord of every venv under `prefix_dir`
/// (waiting for each to exit, so its ports are free) and removes the
/// directory. Only a process whose command line names the venv's own
/// `etc/supervisord.conf` is stopped (see [`STOP_PID`]).
pub fn clear_prefix(prefix_dir: &str) -> String {
    format!(
        r#"{STOP_PID}for f in {prefix_dir}/*/tmp/supervisord.pid; do
  [ -f "$f" ] && stop_pid "$f" "${{f%/tmp/supervisord.pid}}/etc/supervisord\.conf"
done
rm -rf {prefix_dir}
"#
    )
}

/// Starts `es deploy ARGS`, waits for a stderr line containing `when`, runs
/// `act` with the child's pid, and returns the child (its stderr drained in
/// the background).
pub fn deploy_until(
    sb: &Sandbox,
    args: &[&str],
    when: &str,
    act: impl FnOnce(u32),
) -> std::process::Child {
    let mut child = sb
        .es()
        .arg("deploy")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        line.clear();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            panic!("es ended before {when:?}:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(when) {
            break;
        }
    }
    act(child.id());
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    child
}

/// Runs `es deploy ARGS`, sends SIGINT once a stderr line contains `when`, and
/// returns the output.
pub fn interrupted_deploy(sb: &Sandbox, args: &[&str], when: &str) -> Output {
    use std::io::{BufRead, BufReader};
    let mut child = sb
        .es()
        .arg("deploy")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains(when) {
            let kill = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            break;
        }
        line.clear();
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let mut out = child.wait_with_output().unwrap();
    out.stderr = format!("{seen}{rest}").into_bytes();
    out
}

/// `kill SIG PID`, which must succeed.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Points a deploy.toml made by `es create` at the test bed (role `dev` on
/// `addrs`, venvs under `~/VENV_PREFIX`, `venv_ports` the TOML value given),
/// keeping the rest of what it generated (template path, process manager,
/// hooks...).
pub fn point_at_test_bed(
    tb: &Testbed,
    text: &str,
    addrs: &[String],
    venv_prefix: &str,
    venv_ports: &str,
) -> String {
    let hosts: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let mut out = String::new();
    let mut section = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        let replaced = match (section.as_str(), key) {
            ("[index]", "url") => Some(format!("url = \"{}\"", tb.index_url)),
            ("[index]", "upload_url") => Some(format!("upload_url = \"{}\"", tb.upload_url)),
            ("[roles]", "dev") => Some(format!("dev = [{}]", hosts.join(", "))),
            ("[ssh]", "user") => Some(format!(
                "user = \"{}\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"",
                tb.user,
                tb.key.display(),
                tb.known_hosts.display()
            )),
            ("[deploy]", "virtualenv_prefix") => {
                Some(format!("virtualenv_prefix = \"~/{venv_prefix}\""))
            }
            ("[deploy]", "venv_ports") => Some(format!("venv_ports = {venv_ports}")),
            _ => None,
        };
        out.push_str(&replaced.unwrap_or_else(|| line.to_string()));
        out.push('\n');
    }
    out
}
