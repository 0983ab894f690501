//! `es serve` left running unattended (issue 19), on the test bed (hosts
//! 51-53): a delivery is answered once, an older commit ships nothing, other
//! branches' builds never become `latest`, "deploy again" and "roll back"
//! re-release a version, no secret is readable by the pushed code or shown
//! anywhere, logins are limited, sessions survive a restart, one server per
//! state directory, a crash keeps the hosts' truth, SIGTERM answers 503.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{expect_code, git, unique, Sandbox, Testbed};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const GH_SECRET: &str = "gh-secret-hardening-51";
const GL_TOKEN: &str = "gl-token-hardening-51";
const TOKEN: &str = "deploy-token-hardening-51";
const READ_TOKEN: &str = "read-token-hardening-51";
const VIEWER_PASSWORD: &str = "viewer-password-hardening-51";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Project {
    dir: PathBuf,
    port: u16,
    state: PathBuf,
    hosts: Vec<usize>,
}

/// A project made by `es create` with a [serve] section, pushed to a bare
/// repository standing for the forge. `build` and `deploy` are extra lines of
/// those sections; `notify_port` receives the JSON notifications.
fn project(
    tb: &Testbed,
    sb: &Sandbox,
    hosts: &[usize],
    prefix: &str,
    deploy: &str,
    build: &str,
    notify_port: u16,
) -> Project {
    let name = unique("hardened");
    let dir = common::create_project(sb, &name);
    let remote = sb.work.path().join("forge.git");
    let state = sb.work.path().join("serve-state");
    let port = free_port();
    let addrs: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    let config = format!(
        r#"[project]
name = "{name}"

{index}
[roles]
web = [{addrs}]

{ssh}
[build]
{build}

[deploy]
virtualenv_prefix = "~/{prefix}"
venv_ports = {{ a = "951", b = "952" }}
default_venv = "a"
{deploy}

[serve]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
remote = "{remote}"
github_secret = {{ env = "TEST_GH_SECRET" }}
gitlab_token = {{ env = "TEST_GL_TOKEN" }}
token = {{ env = "TEST_SERVE_TOKEN" }}
read_token = {{ env = "TEST_READ_TOKEN" }}
quiet_period = 1

[[serve.users]]
name = "viewer"
password = {{ env = "TEST_VIEWER_PASSWORD" }}

[[serve.trigger]]
name = "main"
branch = "main"
role = "web"
venv = "a"
profile = "ci"

[[serve.trigger]]
name = "release"
branch = "release/*"
role = "web"
venv = "b"
profile = "ci"

[[serve.notify]]
kind = "json"
url = "http://127.0.0.1:{notify_port}/hook"
on = ["start", "success", "failure"]
"#,
        index = tb.index_section(),
        addrs = addrs.join(", "),
        ssh = tb.ssh_section(),
        state = state.display(),
        remote = remote.display(),
    );
    std::fs::write(dir.join("deploy.toml"), config).unwrap();
    git(sb, &dir, &["add", "-A"]);
    git(sb, &dir, &["commit", "-qm", "deploy.toml for es serve"]);
    git(sb, &dir, &["branch", "-M", "main"]);
    let (d, r) = (dir.to_str().unwrap(), remote.to_str().unwrap());
    git(sb, sb.work.path(), &["clone", "-q", "--bare", d, r]);
    git(sb, &dir, &["remote", "add", "origin", r]);
    // What an earlier run left on these hosts.
    let _ = Command::new("pkill")
        .args(["-f", &format!("/home/{}/{prefix}/", tb.user)])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    for n in hosts {
        tb.exec(*n, &["rm", "-rf", &format!("/home/{}/{prefix}", tb.user)]);
    }
    Project {
        dir,
        port,
        state,
        hosts: hosts.to_vec(),
    }
}

/// A commit on `branch` (made from the current one when new) with
/// `message`, pushed to the forge; its id.
fn push_commit(sb: &Sandbox, p: &Project, branch: &str, message: &str) -> String {
    let exists = git(sb, &p.dir, &["branch", "--list", branch]);
    if exists.trim().is_empty() {
        git(sb, &p.dir, &["checkout", "-q", "-b", branch]);
    } else {
        git(sb, &p.dir, &["checkout", "-q", branch]);
    }
    let file = p.dir.join("CHANGES");
    let mut text = std::fs::read_to_string(&file).unwrap_or_default();
    text.push_str(message);
    text.push('\n');
    std::fs::write(&file, text).unwrap();
    git(sb, &p.dir, &["add", "CHANGES"]);
    git(sb, &p.dir, &["commit", "-qm", message]);
    git(
        sb,
        &p.dir,
        &["push", "-q", "origin", &format!("HEAD:{branch}")],
    );
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

fn serve_command(sb: &Sandbox, tb: &Testbed, p: &Project) -> Command {
    let mut command = sb.es();
    command
        .current_dir(&p.dir)
        .arg("serve")
        .env("TEST_GH_SECRET", GH_SECRET)
        .env("TEST_GL_TOKEN", GL_TOKEN)
        .env("TEST_SERVE_TOKEN", TOKEN)
        .env("TEST_READ_TOKEN", READ_TOKEN)
        .env("TEST_VIEWER_PASSWORD", VIEWER_PASSWORD)
        .env("TWINE_USERNAME", &tb.index_user)
        .env("TWINE_PASSWORD", &tb.index_password)
        .stdin(Stdio::null());
    command
}

fn start_server(sb: &Sandbox, tb: &Testbed, p: &Project, log_name: &str) -> Server {
    let log = sb.work.path().join(log_name);
    let file = std::fs::File::create(&log).unwrap();
    let child = serve_command(sb, tb, p)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let server = Server {
        child: Killed(child),
        log,
    };
    let started = Instant::now();
    while agent()
        .get(&url(p, "/healthz"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "es serve did not come up:\n{}",
            server_log(&server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn server_log(server: &Server) -> String {
    std::fs::read_to_string(&server.log).unwrap_or_default()
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

/// POSTs a signed GitHub push of `commit` on `branch` as delivery `delivery`.
fn github_push(p: &Project, delivery: &str, branch: &str, commit: &str) -> (u16, String) {
    let body = json!({
        "ref": format!("refs/heads/{branch}"), "after": commit, "deleted": false,
        "head_commit": {"id": commit, "message": "a push", "author": {"name": "Ann"}},
        "pusher": {"name": "ann"},
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(GH_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut response = agent()
        .post(&url(p, "/webhook/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", &format!("sha256={signature}"))
        .header("Content-Type", "application/json")
        .send(body.as_bytes())
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn queued_id(answer: &str) -> i64 {
    serde_json::from_str::<Value>(answer).unwrap()["queued"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("nothing queued: {answer}"))
}

fn api(p: &Project, path: &str) -> (u16, Value) {
    let mut response = agent()
        .get(&url(p, path))
        .header("Authorization", &format!("Bearer {READ_TOKEN}"))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn job_count(p: &Project) -> usize {
    let (status, jobs) = api(p, "/api/jobs");
    assert_eq!(status, 200, "{jobs}");
    jobs.as_array().map(Vec::len).unwrap_or(0)
}

/// Waits (bounded) until job `id` has ended; the job.
fn wait_done(p: &Project, server: &Server, id: i64) -> Value {
    let started = Instant::now();
    loop {
        let (_, job) = api(p, &format!("/api/jobs/{id}"));
        let state = job["state"].as_str().unwrap_or("").to_string();
        if !["queued", "running", ""].contains(&state.as_str()) {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "job {id} is still {state}\n--- server\n{}",
            server_log(server)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_success(p: &Project, server: &Server, id: i64) -> Value {
    let job = wait_done(p, server, id);
    assert_eq!(job["state"], "success", "{job}\n{}", server_log(server));
    job
}

fn job_log(p: &Project, id: i64) -> String {
    let (_, log) = api(p, &format!("/api/jobs/{id}/log"));
    log["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| l["line"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// `es version latest` of the project, as a person would ask.
fn latest(sb: &Sandbox, p: &Project) -> String {
    let out = sb
        .es()
        .current_dir(&p.dir)
        .args(["version", "latest"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    stdout.trim().lines().last().unwrap_or("").to_string()
}

fn serving(tb: &Testbed, n: usize, venv_port: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://{}:{venv_port}0/", tb.addr(n)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a local JSON webhook receiver was sent.
type Received = Arc<Mutex<Vec<String>>>;

/// A local receiver answering 200 to every request, keeping each raw request.
fn receiver() -> (u16, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push(format!("{head}\n{}", String::from_utf8_lossy(&body)));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, got)
}

/// Every file under `dir`, as bytes.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((path, bytes));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A headless Chromium driven through chromedriver (WebDriver over HTTP).
struct Browser {
    _driver: Killed,
    _profile: tempfile::TempDir,
    wd: String,
    sid: String,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let driver = Killed(
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
                "no chromedriver"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            _driver: driver,
            wd,
            sid: String::new(),
            _profile: profile,
        };
        let session = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1280,900",
                         format!("--user-data-dir={}", browser._profile.path().display())]
            }}}}),
        );
        browser.sid = session["sessionId"].as_str().unwrap().to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let full = format!("{}{path}", self.wd);
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
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.sid)
    }

    fn go(&self, to: &str) {
        self.call("POST", &self.s("/url"), json!({"url": to}));
    }

    fn at(&self) -> String {
        self.call("GET", &self.s("/url"), Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            json!({"using": "css selector", "value": css}),
        );
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), json!({}));
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            json!({ "text": text }),
        );
    }

    /// Waits (bounded) for a page that contains `wanted`; its source.
    fn page_with(&self, wanted: &str) -> String {
        let started = Instant::now();
        loop {
            let source = self.call("GET", &self.s("/source"), Value::Null);
            let source = source.as_str().unwrap().to_string();
            if source.contains(wanted) {
                return source;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the page never showed {wanted:?} ({}):\n{source}",
                self.at()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_in(&self, p: &Project, next: &str) {
        self.go(&url(p, &format!("/login?next={next}")));
        self.type_in("input[name=token]", TOKEN);
        self.click("#login button[type=submit]");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.sid.is_empty() {
            let _ = agent()
                .delete(&format!("{}/session/{}", self.wd, self.sid))
                .call();
        }
    }
}

/// Clicks "deploy again" or "roll back" on job `id`, confirms, and returns
/// the new job's id (from the page the browser lands on).
fn release_in_browser(browser: &Browser, p: &Project, id: i64, button: &str) -> i64 {
    browser.go(&url(p, &format!("/jobs/{id}")));
    browser.page_with(&format!("Job {id}"));
    browser.click(button);
    browser.page_with("id=\"confirm\"");
    browser.click("#confirm");
    let started = Instant::now();
    loop {
        let at = browser.at();
        if let Some(new) = at
            .rsplit('/')
            .next()
            .and_then(|last| last.parse::<i64>().ok())
            .filter(|new| *new != id)
        {
            return new;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stayed at {at}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pushed code's check: finds es serve among its ancestors, reads the
/// environment of es serve and of every process under it (the job's own
/// included) where it can, and greps for each secret (listed, one a line, in
/// a file of the commit). Other processes of this user on a shared machine,
/// such as other tests' builds, may hold the test bed's upload password
/// legitimately: they are not es serve's. Writes what it found to `report`
/// and fails on a leak.
fn leak_check_script(report: &Path) -> String {
    format!(
        r#"#!/bin/sh
report={report}
: > "$report"
ppid_of() {{ sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2; }}
serve=
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
  case "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" in
    */es\ serve*) serve=$p; break;;
  esac
  p=$(ppid_of "$p")
done
echo "serve $serve" >> "$report"
echo "parent $PPID" >> "$report"
[ -n "$serve" ] || exit 1
for f in /proc/[0-9]*/environ; do
  pid=${{f#/proc/}}; pid=${{pid%/environ}}
  a=$pid
  while [ -n "$a" ] && [ "$a" -gt 1 ] && [ "$a" != "$serve" ]; do a=$(ppid_of "$a"); done
  [ "$a" = "$serve" ] || continue
  if cat "$f" > /dev/null 2>&1; then
    echo "read $pid" >> "$report"
    if tr '\0' '\n' < "$f" | grep -q -F -f secrets.txt; then echo "LEAK $pid" >> "$report"; fi
  else
    echo "unreadable $pid" >> "$report"
  fi
done
! grep -q LEAK "$report"
"#,
        report = report.display()
    )
}

#[test]
fn pushes_ship_once_never_older_and_no_secret_reaches_the_pushed_code() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (notify_port, notified) = receiver();
    let report = sb.work.path().join("leak-report");
    let p = project(
        &tb,
        &sb,
        &[51, 52],
        "hardening_push",
        "",
        "pre_build = [\"sh leak-check.sh\"]",
        notify_port,
    );
    std::fs::write(p.dir.join("leak-check.sh"), leak_check_script(&report)).unwrap();
    let secrets = [
        GH_SECRET,
        GL_TOKEN,
        TOKEN,
        READ_TOKEN,
        VIEWER_PASSWORD,
        tb.index_password.as_str(),
    ];
    assert!(tb.index_password.len() >= 6, "a real upload password");
    std::fs::write(p.dir.join("secrets.txt"), secrets.join("\n") + "\n").unwrap();
    git(&sb, &p.dir, &["add", "-A"]);
    git(&sb, &p.dir, &["commit", "-qm", "the leak check"]);
    let server = start_server(&sb, &tb, &p, "serve.log");

    // The first push builds and deploys.
    let one = push_commit(&sb, &p, "main", "one");
    let (status, answer) = github_push(&p, "delivery-1", "main", &one);
    assert_eq!(status, 202, "{answer}");
    let first = wait_done(&p, &server, queued_id(&answer));
    assert_eq!(
        first["state"],
        "success",
        "{first}\n--- the leak check found\n{}",
        std::fs::read_to_string(&report).unwrap_or_default()
    );
    let v1 = first["version"].as_str().unwrap().to_string();
    assert!(!v1.contains('+'), "the default branch's build: {v1}");

    // The pushed pre_build read what it could and found no secret: not in the
    // build's own environment, nor in any process of the same user. It could
    // read its parent's environment (so the check works), but not es serve's.
    let found = std::fs::read_to_string(&report).unwrap();
    assert!(!found.contains("LEAK"), "{found}");
    let parent = found
        .lines()
        .find_map(|l| l.strip_prefix("parent "))
        .unwrap()
        .to_string();
    assert!(found.contains(&format!("read {parent}\n")), "{found}");
    let serve_pid = server.child.0.id();
    assert!(found.contains(&format!("serve {serve_pid}\n")), "{found}");
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root reads every process (PR_SET_DUMPABLE does not keep it out):
        // es serve's environment was read, and holds no secret.
        assert!(found.contains(&format!("read {serve_pid}\n")), "{found}");
    } else {
        assert!(
            found.contains(&format!("unreadable {serve_pid}\n")),
            "es serve is not dumpable: {found}"
        );
        assert!(std::fs::read(format!("/proc/{serve_pid}/environ")).is_err());
    }

    // A replay of the same delivery: answered, nothing queued, nothing shipped.
    let jobs_before = job_count(&p);
    let (status, answer) = github_push(&p, "delivery-1", "main", &one);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("already seen"), "{answer}");
    assert_eq!(job_count(&p), jobs_before);

    // A newer push ships; then the older commit, as a new delivery (late, or
    // replayed under another id), is refused: nothing queued.
    let two = push_commit(&sb, &p, "main", "two");
    let (status, answer) = github_push(&p, "delivery-2", "main", &two);
    assert_eq!(status, 202, "{answer}");
    let second = wait_success(&p, &server, queued_id(&answer));
    let v2 = second["version"].as_str().unwrap().to_string();
    assert_eq!(latest(&sb, &p), v2);
    let jobs_before = job_count(&p);
    let (status, answer) = github_push(&p, "delivery-3", "main", &one);
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer.contains("refused") && answer.contains("older"),
        "{answer}"
    );
    assert_eq!(job_count(&p), jobs_before, "an older commit queues nothing");
    for n in &p.hosts {
        let body = serving(&tb, *n, "951");
        assert!(body.contains(&format!(" {v2} ")), "host {n}: {body:?}");
    }

    // A release branch's build carries its +label and leaves `latest` alone.
    let release = push_commit(&sb, &p, "release/x", "release fix");
    let (status, answer) = github_push(&p, "delivery-4", "release/x", &release);
    assert_eq!(status, 202, "{answer}");
    let third = wait_success(&p, &server, queued_id(&answer));
    let v3 = third["version"].as_str().unwrap();
    assert!(v3.ends_with("+release.x"), "{v3}");
    assert!(
        job_log(&p, third["id"].as_i64().unwrap()).contains("--branch release/x"),
        "the job builds with --branch"
    );
    assert_eq!(latest(&sb, &p), v2, "a release-branch build is not latest");

    // "Deploy again" and "Roll back", in a real browser, after a confirmation:
    // es deploy of the version built before, no build.
    let browser = Browser::start();
    browser.log_in(&p, "/");
    browser.page_with("Deploy by hand");
    let first_id = first["id"].as_i64().unwrap();
    let again = release_in_browser(&browser, &p, first_id, "#redeploy");
    let job = wait_success(&p, &server, again);
    assert_eq!(job["version"].as_str(), Some(v1.as_str()), "{job}");
    let log = job_log(&p, again);
    assert!(!log.contains(" build --commit"), "no rebuild: {log}");
    for n in &p.hosts {
        let body = serving(&tb, *n, "951");
        assert!(body.contains(&format!(" {v1} ")), "host {n}: {body:?}");
    }
    let back = release_in_browser(&browser, &p, again, "#rollback");
    let job = wait_success(&p, &server, back);
    assert_eq!(job["version"].as_str(), Some(v2.as_str()), "{job}");
    assert_eq!(latest(&sb, &p), v2, "no release built anything");

    // A force-push (a commit that does not descend from the one deployed) is
    // queued, fetched, and refused: nothing is built, the hosts keep v2.
    git(&sb, &p.dir, &["checkout", "-q", "-B", "main", &one]);
    std::fs::write(p.dir.join("FORCED"), "rewritten history\n").unwrap();
    git(&sb, &p.dir, &["add", "FORCED"]);
    git(&sb, &p.dir, &["commit", "-qm", "rewritten"]);
    git(
        &sb,
        &p.dir,
        &["push", "-q", "--force", "origin", "HEAD:main"],
    );
    let forced = git(&sb, &p.dir, &["rev-parse", "HEAD"]).trim().to_string();
    let (status, answer) = github_push(&p, "delivery-5", "main", &forced);
    assert_eq!(status, 202, "{answer}");
    let job = wait_done(&p, &server, queued_id(&answer));
    assert_eq!(job["state"], "refused", "{job}");
    let why = job["error"].as_str().unwrap();
    assert!(
        why.contains("does not descend") && why.contains(&two),
        "{why}"
    );
    assert!(job["version"].is_null(), "{job}");
    for n in &p.hosts {
        let body = serving(&tb, *n, "951");
        assert!(body.contains(&format!(" {v2} ")), "host {n}: {body:?}");
    }

    // The deliveries page lists the replay and the refusal with their answers.
    browser.go(&url(&p, "/deliveries"));
    let source = browser.page_with("delivery-3");
    assert!(source.contains("already seen"), "{source}");
    assert!(source.contains("refused"), "{source}");

    // The upload password is nowhere: not in the database, the logs, the
    // pages, the notifications or the server's output.
    let password = tb.index_password.as_str();
    for (path, bytes) in all_bytes(&p.state) {
        assert!(!contains(&bytes, password), "{} holds it", path.display());
    }
    for path in ["/", &format!("/jobs/{first_id}"), "/deliveries"] {
        let mut response = agent()
            .get(&url(&p, path))
            .header("Authorization", &format!("Bearer {READ_TOKEN}"))
            .call()
            .unwrap();
        let html = response.body_mut().read_to_string().unwrap();
        assert!(!html.contains(password), "{path} shows it");
    }
    let sent = notified.lock().unwrap().join("\n");
    assert!(
        sent.contains("\"success\""),
        "notifications arrived: {sent}"
    );
    assert!(!sent.contains(password), "a notification holds it");
    assert!(!server_log(&server).contains(password));
    // The state directory is private.
    use std::os::unix::fs::MetadataExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().mode() & 0o777;
    assert_eq!(mode(&p.state), 0o700);
    assert_eq!(mode(&p.state.join("serve.db")), 0o600);
    assert_eq!(
        mode(&p.state.join("logs").join(format!("{first_id}.log"))),
        0o600
    );
}

fn login_form(p: &Project, user: &str, password: &str) -> ureq::http::Response<ureq::Body> {
    agent()
        .post(&url(p, "/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("user={user}&password={password}&next=/").as_bytes())
        .unwrap()
}

fn exit_of(out: &Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logins_sessions_one_server_a_crash_and_sigterm() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (notify_port, notified) = receiver();
    // After the switch, the post hook takes a while: a server killed then has
    // switched hosts, which the job's `es` reports when it has finished.
    let p = project(
        &tb,
        &sb,
        &[53],
        "hardening_crash",
        "post_hooks = [\"sleep 8\"]",
        "",
        notify_port,
    );
    let mut server = start_server(&sb, &tb, &p, "serve1.log");

    // A second server on the same state directory: exit 2, naming the first.
    let out = serve_command(&sb, &tb, &p)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let (code, stderr) = exit_of(&out);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", server.child.0.id())),
        "{stderr}"
    );

    // `next` is a path on this server only, in a real browser.
    let browser = Browser::start();
    for evil in ["/%5C127.0.0.1:1/phish", "//127.0.0.1:1/phish"] {
        browser.log_in(&p, evil);
        browser.page_with("Deploy by hand");
        let at = browser.at();
        assert!(at.starts_with(&url(&p, "/")), "next={evil} led to {at}");
    }

    // A session outlives a restart.
    let response = login_form(&p, "viewer", VIEWER_PASSWORD);
    assert_eq!(response.status(), 303);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // SAFETY: SIGTERM to our own child; no job runs, so it stops at once.
    unsafe { libc::kill(server.child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(server.child.0.wait().unwrap().code(), Some(0));
    server = start_server(&sb, &tb, &p, "serve2.log");
    let response = agent()
        .get(&url(&p, "/"))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200, "the session survived the restart");

    // A crash mid-deploy: SIGKILL once the host switched. The restarted server
    // takes the hosts from the deploy's report and sends the end notification.
    let commit = push_commit(&sb, &p, "main", "to be interrupted");
    let (status, answer) = github_push(&p, "crash-1", "main", &commit);
    assert_eq!(status, 202, "{answer}");
    let id = queued_id(&answer);
    let started = Instant::now();
    loop {
        let (_, job) = api(&p, &format!("/api/jobs/{id}"));
        if let Some(version) = job["version"].as_str() {
            if serving(&tb, 53, "951").contains(&format!(" {version} ")) {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the host never switched:\n{}",
            job_log(&p, id)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    server.child.0.kill().unwrap();
    server.child.0.wait().unwrap();
    let server = start_server(&sb, &tb, &p, "serve3.log");
    let job = wait_done(&p, &server, id);
    assert_eq!(job["state"], "interrupted", "{job}");
    let hosts = job["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{job}");
    assert_eq!(hosts[0]["outcome"], "switched", "{job}");
    assert!(serving(&tb, 53, "951").contains(job["version"].as_str().unwrap()));
    let started = Instant::now();
    loop {
        let sent = notified.lock().unwrap().join("\n");
        if sent.contains("\"failure\"") && sent.contains(&format!("\"id\":{id}")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no end notification: {sent}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGTERM while a job runs: webhooks get 503 and Retry-After (not a
    // refused connection) until the job has finished its step.
    let commit = push_commit(&sb, &p, "main", "during the drain");
    let (status, answer) = github_push(&p, "drain-1", "main", &commit);
    assert_eq!(status, 202, "{answer}");
    let id = queued_id(&answer);
    let started = Instant::now();
    while !job_log(&p, id).contains("$ es -c") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never started"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut server = server;
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(server.child.0.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let response = loop {
        let response = agent()
            .post(&url(&p, "/webhook/github"))
            .header("X-GitHub-Event", "push")
            .send(b"{}".as_slice())
            .unwrap();
        if response.status() == 503 {
            break response;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no 503");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(server.child.0.wait().unwrap().code(), Some(0));
    drop(browser);

    // Logins: ten wrong passwords in a minute, then the right one is refused
    // unchecked (429), and so is a good token from the same address; each
    // failure is logged as one.
    let server = start_server(&sb, &tb, &p, "serve4.log");
    for _ in 0..10 {
        let response = login_form(&p, "viewer", "wrong");
        assert_eq!(response.status(), 303);
        let to = response
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(to.contains("failed=1"), "{to}");
    }
    assert_eq!(login_form(&p, "viewer", VIEWER_PASSWORD).status(), 429);
    assert_eq!(api(&p, "/api/jobs").0, 429);
    let log = server_log(&server);
    assert_eq!(log.matches("FAILED login").count(), 10, "{log}");
}
