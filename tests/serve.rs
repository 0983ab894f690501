//! `es serve` end to end on the test bed (hosts 31-32): signed GitHub and
//! GitLab pushes, triggers and filters, coalescing, the build and deploy of
//! the pushed commit, the history in SQLite, the page in a real headless
//! Chromium, notifications with a retry, a server killed mid-job and SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{expect_code, git, unique, Sandbox, Testbed};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const HOSTS: [usize; 2] = [31, 32];
const GH_SECRET: &str = "gh-webhook-secret-31";
const GL_TOKEN: &str = "gl-webhook-token-31";
const TOKEN: &str = "serve-deploy-token-31";
const READ_TOKEN: &str = "serve-read-token-31";
const VIEWER_PASSWORD: &str = "viewer-password-31";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A project made by `es create`, with a deploy.toml for hosts 31-32 and a
/// [serve] section, pushed to a bare repository that stands for the forge.
struct Project {
    dir: PathBuf,
    name: String,
    port: u16,
    state: PathBuf,
    prefix: String,
    venv_port: String,
    hook_port: u16,
}

fn project(
    tb: &Testbed,
    sb: &Sandbox,
    prefix: &str,
    venv_port: &str,
    extra_deploy: &str,
    notify: &str,
) -> Project {
    let name = unique("served");
    let dir = common::create_project(sb, &name);
    let remote = sb.work.path().join("forge.git");
    let state = sb.work.path().join("serve-state");
    let port = free_port();
    let prefix = prefix.to_string();
    let hosts: Vec<String> = HOSTS
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    let config = format!(
        r#"[project]
name = "{name}"

{index}
[roles]
web = [{hosts}]

{ssh}
[build]
# The pushed code runs in the build: es serve's own secrets are not in its environment.
pre_build = ["test -z \"${{TEST_SERVE_TOKEN:-}}${{TEST_GH_SECRET:-}}${{TEST_VIEWER_PASSWORD:-}}\""]

[deploy]
virtualenv_prefix = "~/{prefix}"
venv_ports = {{ a = "{venv_port}" }}
default_venv = "a"
{extra_deploy}

[serve]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
remote = "{remote}"
github_secret = {{ env = "TEST_GH_SECRET" }}
gitlab_token = {{ env = "TEST_GL_TOKEN" }}
token = {{ env = "TEST_SERVE_TOKEN" }}
read_token = {{ env = "TEST_READ_TOKEN" }}
quiet_period = 5
public_url = "http://127.0.0.1:{port}"

[[serve.users]]
name = "viewer"
password = {{ env = "TEST_VIEWER_PASSWORD" }}

[[serve.trigger]]
name = "main"
branch = "main"
message_filter = "[deploy]"
role = "web"
venv = "a"
profile = "ci"

{notify}
"#,
        index = tb.index_section(),
        hosts = hosts.join(", "),
        ssh = tb.ssh_section(),
        state = state.display(),
        remote = remote.display(),
    );
    std::fs::write(dir.join("deploy.toml"), config).unwrap();
    git(sb, &dir, &["add", "-A"]);
    git(sb, &dir, &["commit", "-qm", "deploy.toml for es serve"]);
    git(sb, &dir, &["branch", "-M", "main"]);
    git(
        sb,
        sb.work.path(),
        &[
            "clone",
            "-q",
            "--bare",
            dir.to_str().unwrap(),
            remote.to_str().unwrap(),
        ],
    );
    git(
        sb,
        &dir,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    // What an earlier run left: its processes (every host's /home/USER is
    // its own, but they share this machine's process table) and its files.
    let _ = Command::new("pkill")
        .args(["-f", &format!("/home/{}/{prefix}/", tb.user)])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    for n in HOSTS {
        tb.exec(n, &["rm", "-rf", &format!("/home/{}/{prefix}", tb.user)]);
    }
    Project {
        dir,
        name,
        port,
        state,
        prefix,
        venv_port: venv_port.to_string(),
        hook_port: 0,
    }
}

/// A commit on main with `message`, pushed to the forge; its id.
fn push_commit(sb: &Sandbox, p: &Project, message: &str) -> String {
    let file = p.dir.join("CHANGES");
    let mut text = std::fs::read_to_string(&file).unwrap_or_default();
    text.push_str(message);
    text.push('\n');
    std::fs::write(&file, text).unwrap();
    git(sb, &p.dir, &["add", "CHANGES"]);
    git(sb, &p.dir, &["commit", "-qm", message]);
    git(sb, &p.dir, &["push", "-q", "origin", "HEAD:main"]);
    git(sb, &p.dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// A process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    child: Killed,
    log: PathBuf,
}

fn start_server(sb: &Sandbox, tb: &Testbed, p: &Project, log_name: &str) -> Server {
    let log = sb.work.path().join(log_name);
    let file = std::fs::File::create(&log).unwrap();
    let child = sb
        .es()
        .current_dir(&p.dir)
        .arg("serve")
        .env("TEST_GH_SECRET", GH_SECRET)
        .env("TEST_GL_TOKEN", GL_TOKEN)
        .env("TEST_SERVE_TOKEN", TOKEN)
        .env("TEST_READ_TOKEN", READ_TOKEN)
        .env("TEST_VIEWER_PASSWORD", VIEWER_PASSWORD)
        .env(
            "TEST_SLACK_URL",
            format!("http://127.0.0.1:{}/slack", p.hook_port),
        )
        .env("TEST_DING_SECRET", "SECding")
        .env("TWINE_USERNAME", &tb.index_user)
        .env("TWINE_PASSWORD", &tb.index_password)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let server = Server {
        child: Killed(child),
        log,
    };
    let started = Instant::now();
    loop {
        if let Ok(r) = agent().get(&url(p, "/healthz")).call() {
            if r.status() == 200 {
                return server;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "es serve did not come up:\n{}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

fn url(p: &Project, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", p.port)
}

fn github_body(branch: &str, commit: &str, message: &str) -> String {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "after": commit,
        "deleted": false,
        "head_commit": {"id": commit, "message": message, "author": {"name": "Ann Author"}},
        "pusher": {"name": "ann"},
    })
    .to_string()
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// POSTs a GitHub push webhook; status and body.
fn github_push(p: &Project, body: &str, signature: Option<&str>) -> (u16, String) {
    let mut request = agent()
        .post(&url(p, "/webhook/github"))
        .header("X-GitHub-Event", "push")
        .header("Content-Type", "application/json");
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    let mut response = request.send(body.as_bytes()).unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn api(p: &Project, path: &str, token: &str) -> (u16, Value) {
    let mut response = agent()
        .get(&url(p, path))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn jobs(p: &Project) -> Vec<Value> {
    let (status, jobs) = api(p, "/api/jobs", READ_TOKEN);
    assert_eq!(status, 200, "{jobs}");
    jobs.as_array().cloned().unwrap_or_default()
}

/// Waits until job `id` is in one of `states` (bounded; a hang fails the test).
fn wait_state(p: &Project, server: &Server, id: i64, states: &[&str], limit: u64) -> Value {
    let started = Instant::now();
    loop {
        let (_, job) = api(p, &format!("/api/jobs/{id}"), READ_TOKEN);
        if states.contains(&job["state"].as_str().unwrap_or("")) {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(limit),
            "job {id} is {} after {limit}s, not {states:?}\n--- server\n{}",
            job["state"],
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// What a local webhook receiver was sent: path and JSON body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A local webhook receiver: answers 500 to the first request to /hook and
/// 200 to the rest, keeping every request it answered 200.
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        let mut failed_once = false;
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let fail = path == "/hook" && !failed_once;
            failed_once |= fail;
            let status = if fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            if !fail {
                let value = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((path, value));
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, got)
}

/// A local SMTP server (Python's smtpd DebuggingServer) printing what it gets.
struct SmtpSink {
    _child: Killed,
    port: u16,
    out: PathBuf,
}

fn smtp_sink(sb: &Sandbox) -> SmtpSink {
    let port = free_port();
    let out = sb.work.path().join("smtp.out");
    let child = Command::new("python3")
        .args([
            "-u",
            "-W",
            "ignore",
            "-m",
            "smtpd",
            "-n",
            "-c",
            "DebuggingServer",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the SMTP sink did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    SmtpSink {
        _child: Killed(child),
        port,
        out,
    }
}

fn notify_section(hook_port: u16, smtp_port: u16) -> String {
    format!(
        r#"[[serve.notify]]
kind = "json"
url = "http://127.0.0.1:{hook_port}/hook"
retries = 2

[[serve.notify]]
kind = "slack"
url = {{ env = "TEST_SLACK_URL" }}
on = ["success", "failure"]

[[serve.notify]]
kind = "dingtalk"
url = "http://127.0.0.1:{hook_port}/ding?access_token=t0k"
secret = {{ env = "TEST_DING_SECRET" }}
on = ["failure", "success"]

[[serve.notify]]
kind = "email"
smtp = "127.0.0.1:{smtp_port}"
tls = "none"
from = "es serve <es@example.com>"
to = ["team@example.com"]
on = ["success"]
"#
    )
}

fn page(p: &Project, path: &str) -> (u16, String) {
    let mut response = agent()
        .get(&url(p, path))
        .header("Authorization", &format!("Bearer {READ_TOKEN}"))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// A job's log lines as the database keeps them.
fn job_log(db: &rusqlite::Connection, id: i64) -> Vec<String> {
    db.prepare("SELECT line FROM log_lines WHERE job_id = ?1 ORDER BY seq")
        .unwrap()
        .query_map([id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn serving(tb: &Testbed, p: &Project, n: usize, i: usize) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            &format!("http://{}:{}{i}/", tb.addr(n), p.venv_port),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_signed_push_builds_and_deploys_the_newest_commit_and_keeps_the_history() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (hook_port, notified) = receiver();
    let smtp = smtp_sink(&sb);
    let mut p = project(
        &tb,
        &sb,
        "serve_push",
        "893",
        "",
        &notify_section(hook_port, smtp.port),
    );
    p.hook_port = hook_port;

    // --check reads the secrets and says what it found; a missing one is exit 2.
    let out = sb
        .es()
        .current_dir(&p.dir)
        .args(["serve", "--check"])
        .env("TEST_GH_SECRET", GH_SECRET)
        .env("TEST_GL_TOKEN", GL_TOKEN)
        .env("TEST_SERVE_TOKEN", TOKEN)
        .env("TEST_READ_TOKEN", READ_TOKEN)
        .env("TEST_VIEWER_PASSWORD", VIEWER_PASSWORD)
        .env("TEST_SLACK_URL", "http://127.0.0.1:1/slack")
        .env("TEST_DING_SECRET", "SECding")
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert!(
        stdout.contains("1 trigger(s), 4 notification(s)"),
        "{stdout}"
    );
    let out = sb
        .es()
        .current_dir(&p.dir)
        .args(["serve", "--check"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(
        stderr.contains("deploy.toml: serve.github_secret:") && stderr.contains("TEST_GH_SECRET"),
        "{stderr}"
    );

    // A [serve] mistake names file, line and key, before anything starts.
    let broken = std::fs::read_to_string(p.dir.join("deploy.toml"))
        .unwrap()
        .replace("role = \"web\"", "role = \"wbe\"");
    let broken_path = sb.work.path().join("broken.toml");
    std::fs::write(&broken_path, broken).unwrap();
    let out = sb
        .es()
        .args(["serve", "--check", "-c", broken_path.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(
        stderr.contains("broken.toml:")
            && stderr.contains("`serve.trigger[0].role`: unknown role `wbe`"),
        "{stderr}"
    );

    let server = start_server(&sb, &tb, &p, "serve.log");

    // Nothing without a login; the read token may read but not deploy.
    let (status, _) = api(&p, "/api/jobs", "wrong");
    assert_eq!(status, 401);
    let response = agent().get(&url(&p, "/")).call().unwrap();
    assert_eq!(response.status(), 303);
    let response = agent()
        .post(&url(&p, "/api/deploy"))
        .header("Authorization", &format!("Bearer {READ_TOKEN}"))
        .header("Content-Type", "application/json")
        .send(json!({"trigger": "main"}).to_string().as_bytes())
        .unwrap();
    assert_eq!(response.status(), 403);
    // A user with a password (HTTP Basic for API clients) who may only read.
    use base64::Engine;
    let basic = |password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("viewer:{password}"))
        )
    };
    let response = agent()
        .get(&url(&p, "/api/jobs"))
        .header("Authorization", &basic(VIEWER_PASSWORD))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = agent()
        .get(&url(&p, "/api/jobs"))
        .header("Authorization", &basic("wrong"))
        .call()
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = agent()
        .post(&url(&p, "/api/deploy"))
        .header("Authorization", &basic(VIEWER_PASSWORD))
        .header("Content-Type", "application/json")
        .send(json!({"trigger": "main"}).to_string().as_bytes())
        .unwrap();
    assert_eq!(response.status(), 403);

    // A wrong or missing signature: 401, nothing queued.
    let first = push_commit(&sb, &p, "first [deploy]");
    let body = github_body("main", &first, "first [deploy]");
    assert_eq!(
        github_push(&p, &body, Some(&sign("not the secret", &body))).0,
        401
    );
    assert_eq!(github_push(&p, &body, None).0, 401);
    // GitLab: a wrong token is refused; the right one for another branch does nothing.
    let gitlab =
        json!({"ref": "refs/heads/feature", "checkout_sha": first, "commits": []}).to_string();
    for (token, expected) in [("nope", 401), (GL_TOKEN, 204)] {
        let response = agent()
            .post(&url(&p, "/webhook/gitlab"))
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", token)
            .send(gitlab.as_bytes())
            .unwrap();
        assert_eq!(response.status(), expected);
    }
    // Another branch, or a message without the filter: 204, nothing queued.
    let other = github_body("feature", &first, "first [deploy]");
    assert_eq!(
        github_push(&p, &other, Some(&sign(GH_SECRET, &other))).0,
        204
    );
    let plain = github_body("main", &first, "first, no marker");
    assert_eq!(
        github_push(&p, &plain, Some(&sign(GH_SECRET, &plain))).0,
        204
    );
    assert!(jobs(&p).is_empty(), "nothing may be queued yet");

    // Two quick pushes: one job, of the newest commit.
    let (status, queued) = github_push(&p, &body, Some(&sign(GH_SECRET, &body)));
    assert_eq!(status, 202, "{queued}");
    let second = push_commit(&sb, &p, "second [deploy]");
    let body2 = github_body("main", &second, "second [deploy]");
    let (status, queued2) = github_push(&p, &body2, Some(&sign(GH_SECRET, &body2)));
    assert_eq!(status, 202, "{queued2}");
    let q1: Value = serde_json::from_str(&queued).unwrap();
    let q2: Value = serde_json::from_str(&queued2).unwrap();
    let id = q1["queued"][0]["id"].as_i64().unwrap();
    assert_eq!(q2["queued"][0]["id"].as_i64(), Some(id), "{queued2}");
    assert_eq!(q2["queued"][0]["coalesced"], true);

    let job = wait_state(&p, &server, id, &["success", "failed", "interrupted"], 600);
    assert_eq!(
        job["state"],
        "success",
        "{job}\n{}",
        std::fs::read_to_string(&server.log).unwrap()
    );
    assert_eq!(job["commit"], second.as_str());
    assert_eq!(job["pushes"], 2);
    let version = job["version"].as_str().unwrap().to_string();
    assert_eq!(jobs(&p).len(), 1, "two pushes, one job");
    let hosts = job["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{job}");
    for h in hosts {
        assert_eq!(h["ok"], true, "{job}");
        assert_eq!(h["outcome"], "switched", "{job}");
    }
    // The new version serves on every process of every host.
    for n in HOSTS {
        for i in 0..2 {
            let body = serving(&tb, &p, n, i);
            assert!(
                body.starts_with(&format!("{} {version} (profile ci", p.name)),
                "host {n} process {i}: {body:?}"
            );
        }
    }
    // The built wheel records the exact commit: es status shows it.
    let out = sb
        .es()
        .current_dir(&p.dir)
        .args(["-R", "web", "status", "a"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert!(stdout.contains(&second[..12]), "{stdout}");

    // The history in SQLite: the job, its hosts and its full log.
    let db = rusqlite::Connection::open(p.state.join("serve.db")).unwrap();
    let (state, commit): (String, String) = db
        .query_row(
            "SELECT state, commit_id FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), commit.as_str()),
        ("success", second.as_str())
    );
    let hosts_rows: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM job_hosts WHERE job_id = ?1 AND ok = 1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hosts_rows, 2);
    let log = job_log(&db, id);
    let log_text = log.join("\n");
    assert!(
        log_text.contains("$ es -c") && log_text.contains(" build --commit "),
        "{log_text}"
    );
    assert!(
        log_text.contains(" deploy ") && log_text.contains("2 ok, 0 failed"),
        "{log_text}"
    );
    assert!(
        !log_text.contains(&tb.index_password),
        "the upload password reached the log"
    );

    // The page: the job list and the job's page with hosts and log.
    let (status, html) = page(&p, "/");
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("href=\"/jobs/{id}\"")) && html.contains(&version),
        "{html}"
    );
    let (status, html) = page(&p, &format!("/jobs/{id}"));
    assert_eq!(status, 200);
    assert!(
        html.contains(tb.addr(31)) && html.contains(tb.addr(32)),
        "{html}"
    );
    assert!(html.contains("2 ok, 0 failed"), "{html}");
    assert!(
        !html.contains("redeploy"),
        "a read login gets no deploy button"
    );

    // The notifications: the first delivery to /hook got a 500 and was retried;
    // start and success reached the receiver with the outcome, and so did the
    // Slack, DingTalk (signed) and email ones.
    let started = Instant::now();
    loop {
        let got = notified.lock().unwrap().clone();
        let mail = std::fs::read_to_string(&smtp.out).unwrap_or_default();
        let json_hook: Vec<&Value> = got
            .iter()
            .filter(|(path, _)| path == "/hook")
            .map(|(_, v)| v)
            .collect();
        let slack = got.iter().find(|(path, _)| path == "/slack");
        let ding = got.iter().find(|(path, _)| path.starts_with("/ding"));
        if let (Some(success), Some(slack), Some(ding), true) = (
            json_hook.iter().find(|v| v["event"] == "success"),
            slack,
            ding,
            mail.contains("END MESSAGE"),
        ) {
            assert!(
                json_hook
                    .iter()
                    .any(|v| v["event"] == "start" && v["id"].as_i64() == Some(id)),
                "{got:?}"
            );
            assert_eq!(success["id"].as_i64(), Some(id));
            assert_eq!(success["state"], "success");
            assert_eq!(success["version"].as_str(), Some(version.as_str()));
            assert_eq!(success["hosts"].as_array().map(Vec::len), Some(2));
            let text = slack.1["text"].as_str().unwrap();
            assert!(
                text.contains(&format!("job {id} success")) && text.contains(&version),
                "{text}"
            );
            assert!(
                text.contains(&format!("http://127.0.0.1:{}/jobs/{id}", p.port)),
                "{text}"
            );
            assert_eq!(ding.1["msgtype"], "text");
            assert!(ding.1["text"]["content"]
                .as_str()
                .unwrap()
                .contains("success"));
            assert!(
                ding.0.contains("access_token=t0k&timestamp=") && ding.0.contains("&sign="),
                "{}",
                ding.0
            );
            assert!(
                mail.contains("Subject: es: job") && mail.contains("success"),
                "{mail}"
            );
            assert!(mail.contains("team@example.com"), "{mail}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "notifications missing: {got:?}\n{mail}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log_after = job_log(&db, id);
    assert!(
        log_after
            .iter()
            .any(|l| l.contains("notification (start) failed, attempt 1 of 3")),
        "the failed delivery is logged: {log_after:?}"
    );

    browser_check(&p, id, &version);

    let server_log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        server_log.contains("POST /webhook/github 401"),
        "{server_log}"
    );
    assert!(
        !server_log.contains(TOKEN) && !server_log.contains(GH_SECRET),
        "{server_log}"
    );
}

/// The page in a real headless Chromium (through chromedriver): log in with
/// the token, see the job list, open the job; screenshots are kept.
fn browser_check(p: &Project, id: i64, version: &str) {
    let profile = tempfile::tempdir().unwrap();
    let port = free_port();
    let _driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)"),
    );
    let wd = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while agent().get(&format!("{wd}/status")).call().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let call = |method: &str, path: &str, body: Value| -> Value {
        let full = format!("{wd}{path}");
        let mut response = match method {
            "GET" => agent().get(&full).call().unwrap(),
            "DELETE" => agent().delete(&full).call().unwrap(),
            _ => agent()
                .post(&full)
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes())
                .unwrap(),
        };
        let text = response.body_mut().read_to_string().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["value"].get("error").is_none(), "{method} {path}: {text}");
        v["value"].clone()
    };
    let session = call(
        "POST",
        "/session",
        json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
        }}}}),
    );
    let sid = session["sessionId"].as_str().unwrap().to_string();
    let s = |path: &str| format!("/session/{sid}{path}");
    let element = |css: &str| -> String {
        let v = call(
            "POST",
            &s("/element"),
            json!({"using": "css selector", "value": css}),
        );
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = |name: &str| {
        use base64::Engine;
        let data = call("GET", &s("/screenshot"), Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(shots.join(name), png).unwrap();
    };

    // A click that submits a form or follows a link may return before the next
    // page is there: wait (bounded) for the page that should follow.
    let page_with = |wanted: &str| -> String {
        let started = Instant::now();
        loop {
            let source = call("GET", &s("/source"), Value::Null);
            let source = source.as_str().unwrap().to_string();
            if source.contains(wanted) {
                return source;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the page never showed {wanted:?}:\n{source}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    call("POST", &s("/url"), json!({"url": url(p, "/")}));
    let source = call("GET", &s("/source"), Value::Null);
    assert!(
        source.as_str().unwrap().contains("Log in"),
        "the page asks for a login"
    );
    let field = element("input[name=token]");
    call(
        "POST",
        &s(&format!("/element/{field}/value")),
        json!({"text": TOKEN}),
    );
    let button = element("#login button[type=submit]");
    call("POST", &s(&format!("/element/{button}/click")), json!({}));
    let source = page_with("Deploy by hand");
    assert!(
        source.contains("Deploys") && source.contains(version),
        "{source}"
    );
    screenshot("jobs.png");
    let link = element(&format!("a[href=\"/jobs/{id}\"]"));
    call("POST", &s(&format!("/element/{link}/click")), json!({}));
    let source = page_with(&format!("Job {id}"));
    assert!(source.contains("switched"), "{source}");
    assert!(
        source.contains(&format!("Deploy {version} again")),
        "{source}"
    );
    screenshot("job.png");

    // "Deploy again", confirmed: a new job deploying the same version, whose
    // page follows it live (the log grows and the page shows the outcome
    // without a reload by hand).
    let again = element("#redeploy");
    call("POST", &s(&format!("/element/{again}/click")), json!({}));
    page_with("id=\"confirm\"");
    let confirm = element("#confirm");
    call("POST", &s(&format!("/element/{confirm}/click")), json!({}));
    let started = Instant::now();
    let (at, new_id) = loop {
        let at = call("GET", &s("/url"), Value::Null);
        let at = at.as_str().unwrap().to_string();
        let shown: i64 = at.rsplit('/').next().unwrap().parse().unwrap_or(0);
        if shown != id && shown != 0 {
            break (at, shown);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the button led nowhere: {at}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(new_id > id, "{at}");
    let started = Instant::now();
    let mut shot_running = false;
    loop {
        let source = call("GET", &s("/source"), Value::Null);
        let source = source.as_str().unwrap().to_string();
        if !shot_running && source.contains("$ es -c") {
            screenshot("job-live.png");
            shot_running = true;
        }
        if source.contains("state-success") && source.contains("2 ok, 0 failed") {
            assert!(
                source.contains(&format!("Job {new_id}")) && source.contains("redeploy by token"),
                "{source}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the page of job {new_id} never showed its success:\n{source}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    screenshot("job-again.png");
    call("DELETE", &s(""), Value::Null);
}

fn lock_exists(tb: &Testbed, p: &Project, n: usize) -> bool {
    let path = format!("/home/{}/{}/a/.es/lock", tb.user, p.prefix);
    tb.exec(n, &["test", "-e", &path]).status.success()
}

fn manual_deploy(p: &Project) -> i64 {
    let mut response = agent()
        .post(&url(p, "/api/deploy"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(json!({"trigger": "main"}).to_string().as_bytes())
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    assert_eq!(response.status(), 202, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// Waits until the job's log shows `text` (the deploy is under way).
fn wait_log(p: &Project, server: &Server, id: i64, text: &str) {
    let started = Instant::now();
    loop {
        let (_, log) = api(p, &format!("/api/jobs/{id}/log"), READ_TOKEN);
        let lines: Vec<String> = log["lines"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|x| x["line"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        if lines.iter().any(|l| l.contains(text)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "job {id} never logged {text:?}: {lines:?}\n--- server\n{}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_unlocked(tb: &Testbed, p: &Project) {
    let started = Instant::now();
    while HOSTS.iter().any(|n| lock_exists(tb, p, *n)) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a deploy lock was left behind"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_killed_server_shows_the_job_interrupted_and_sigterm_stops_gracefully() {
    let tb = bed!();
    let sb = Sandbox::new();
    // A pre hook that takes a while: the job is surely mid-deploy when it is killed.
    let p = project(
        &tb,
        &sb,
        "serve_kill",
        "894",
        "pre_hooks = [\"sleep 6\"]",
        "",
    );
    let commit = push_commit(&sb, &p, "first [deploy]");

    let mut server = start_server(&sb, &tb, &p, "serve1.log");
    // The first job comes from a GitLab push.
    let gitlab = json!({
        "ref": "refs/heads/main", "checkout_sha": commit, "user_username": "gl-user",
        "commits": [{"id": commit, "message": "first [deploy]", "author": {"name": "Gil Lab"}}],
    })
    .to_string();
    let mut response = agent()
        .post(&url(&p, "/webhook/gitlab"))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", GL_TOKEN)
        .send(gitlab.as_bytes())
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    assert_eq!(response.status(), 202, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["queued"][0]["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, &server, id, &["running"], 60);
    wait_log(&p, &server, id, " deploy ");
    std::thread::sleep(Duration::from_secs(2));
    // SIGKILL: the server cannot record anything; its es gets SIGTERM and unlocks.
    server.child.0.kill().unwrap();
    server.child.0.wait().unwrap();
    let server = start_server(&sb, &tb, &p, "serve2.log");
    let job = wait_state(&p, &server, id, &["interrupted", "success", "failed"], 180);
    assert_eq!(job["state"], "interrupted", "{job}");
    assert_eq!(
        (job["source"].as_str(), job["author"].as_str()),
        (Some("gitlab"), Some("Gil Lab"))
    );
    assert_eq!(job["commit"].as_str(), Some(commit.as_str()));
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("stopped while this job ran"),
        "{job}"
    );
    wait_unlocked(&tb, &p);

    // SIGTERM while a job runs: es serve tells the job's es, which finishes its
    // step and unlocks; the job is interrupted, never left running; exit 0.
    let id2 = manual_deploy(&p);
    assert_ne!(id2, id);
    wait_state(&p, &server, id2, &["running"], 60);
    wait_log(&p, &server, id2, " deploy ");
    std::thread::sleep(Duration::from_secs(2));
    let mut server = server;
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(server.child.0.id() as i32, libc::SIGTERM) };
    let status = server.child.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&server.log).unwrap()
    );
    let db = rusqlite::Connection::open(p.state.join("serve.db")).unwrap();
    let (state, error): (String, String) = db
        .query_row("SELECT state, error FROM jobs WHERE id = ?1", [id2], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(state, "interrupted", "{error}");
    assert!(error.contains("interrupted"), "{error}");
    wait_unlocked(&tb, &p);
    let log = job_log(&db, id2).join("\n");
    assert!(log.contains("es: interrupted"), "es's own guard ran: {log}");
}
