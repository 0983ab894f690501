//! `es create`, `es init` and `es templates`, run as a user would (no test bed needed).
//!
//! The end-to-end part (build and deploy a created project to test bed hosts
//! 9-11) comes with the build and deploy commands.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{expect_code, text, Sandbox};

/// Git variables that would let a commit happen without the sandbox's config.
const GIT_IDENTITY_VARS: &[&str] = &[
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "EMAIL",
    "XDG_CONFIG_HOME",
];

/// A sandbox whose HOME has a git identity.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    fs::write(
        sb.home.path().join(".gitconfig"),
        "[user]\n\tname = Es Test\n\temail = es-test@example.com\n",
    )
    .unwrap();
    sb
}

/// `es ARGS` in the sandbox, git isolated from the machine's configuration, no stdin.
fn es(sb: &Sandbox, args: &[&str]) -> Output {
    es_in(sb, sb.work.path(), args)
}

fn es_in(sb: &Sandbox, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = sb.es();
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null());
    for var in GIT_IDENTITY_VARS {
        cmd.env_remove(var);
    }
    cmd.output().expect("running es")
}

/// git in `dir` (for checks), with the sandbox's HOME.
fn git(sb: &Sandbox, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", sb.home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("running git");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "git {args:?} failed: {stderr}");
    stdout
}

/// Every file and directory under `dir`: contents (files), mode and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, SystemTime)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let contents = if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            Vec::new()
        } else {
            fs::read(&path).unwrap()
        };
        out.insert(
            path,
            (
                contents,
                meta.permissions().mode(),
                meta.modified().unwrap(),
            ),
        );
    }
    out
}

fn python3() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("python3 is not available: skipping");
    }
    ok.then_some("python3")
}

#[test]
fn create_commits_once_and_pushes_to_the_remote() {
    let sb = sandbox();
    let bare = sb.work.path().join("remote.git");
    git(&sb, sb.work.path(), &["init", "-q", "--bare", "remote.git"]);
    let out = es(
        &sb,
        &["create", "shopapi", "--remote", bare.to_str().unwrap()],
    );
    expect_code(&out, 0);

    let root = sb.work.path().join("shopapi");
    for file in [
        "pyproject.toml",
        "README.md",
        ".gitignore",
        "deploy.toml",
        "conf/supervisord.conf",
        "shopapi/__init__.py",
        "shopapi/main.py",
        "shopapi/settings.py",
        "tests/test_main.py",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    let conf = fs::read_to_string(root.join("conf/supervisord.conf")).unwrap();
    let default =
        fs::read_to_string(common::repo_root().join("templates/supervisord.conf")).unwrap();
    assert_eq!(
        conf, default,
        "conf/supervisord.conf is es's default template"
    );
    let deploy = fs::read_to_string(root.join("deploy.toml")).unwrap();
    assert!(deploy.contains("name = \"shopapi\""));

    // One commit, on main, everything in it, and the same commit in the bare repo.
    assert_eq!(
        git(&sb, &root, &["rev-list", "--count", "HEAD"]).trim(),
        "1"
    );
    assert_eq!(
        git(&sb, &root, &["branch", "--show-current"]).trim(),
        "main"
    );
    assert_eq!(git(&sb, &root, &["status", "--porcelain"]).trim(), "");
    let local = git(&sb, &root, &["rev-parse", "HEAD"]);
    let remote_log = git(
        &sb,
        sb.work.path(),
        &[
            "--git-dir",
            bare.to_str().unwrap(),
            "log",
            "--format=%H",
            "main",
        ],
    );
    assert_eq!(remote_log.lines().collect::<Vec<_>>(), [local.trim()]);
    let tracked = git(&sb, &root, &["ls-files"]);
    assert!(tracked.lines().any(|l| l == "conf/supervisord.conf"));
    assert_eq!(
        git(&sb, &root, &["log", "-1", "--format=%an <%ae>"]).trim(),
        "Es Test <es-test@example.com>"
    );
}

#[test]
fn create_again_fails_and_changes_nothing() {
    let sb = sandbox();
    expect_code(&es(&sb, &["create", "shopapi", "--no-push"]), 0);
    let before = snapshot(sb.work.path());
    std::thread::sleep(Duration::from_millis(20));

    let out = es(&sb, &["create", "shopapi", "--no-push"]);
    assert_ne!(out.status.code(), Some(0), "second create succeeded");
    let (_, stderr) = text(&out);
    assert!(stderr.contains("not empty"), "{stderr}");
    let bare = sb.work.path().join("other.git");
    let out = es(
        &sb,
        &["create", "shopapi", "--remote", bare.to_str().unwrap()],
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(before, snapshot(sb.work.path()), "a file changed");
}

#[test]
fn create_in_an_existing_empty_directory_works() {
    let sb = sandbox();
    fs::create_dir(sb.work.path().join("shopapi")).unwrap();
    expect_code(&es(&sb, &["create", "shopapi", "--no-push"]), 0);
    assert!(sb.work.path().join("shopapi/shopapi/main.py").is_file());
}

#[test]
fn bad_names_exit_2_and_create_nothing() {
    let sb = sandbox();
    for name in ["bad-name!", "1abc", "shop-api", "class", ""] {
        let out = es(&sb, &["create", name, "--no-push"]);
        let (_, stderr) = expect_code(&out, 2);
        assert!(stderr.contains("name"), "{name}: {stderr}");
    }
    let out = es(&sb, &["create", "shopapi", "-t", "nope", "--no-push"]);
    let (_, stderr) = expect_code(&out, 2);
    assert!(stderr.contains("default"), "{stderr}");
    assert_eq!(fs::read_dir(sb.work.path()).unwrap().count(), 0);
}

#[test]
fn create_without_git_identity_says_so_and_creates_nothing() {
    let sb = Sandbox::new(); // no .gitconfig
    let out = es(&sb, &["create", "shopapi", "--no-push"]);
    let (_, stderr) = expect_code(&out, 2);
    assert!(stderr.contains("identity"), "{stderr}");
    assert!(
        stderr.contains("git config --global user.email"),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(sb.work.path()).unwrap().count(), 0);
}

#[test]
fn create_without_terminal_or_remote_does_not_wait_or_push() {
    let sb = sandbox();
    let started = Instant::now();
    let out = es(&sb, &["create", "shopapi"]);
    let (_, stderr) = expect_code(&out, 0);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(stderr.contains("git remote add origin"), "{stderr}");
    let root = sb.work.path().join("shopapi");
    assert_eq!(git(&sb, &root, &["remote"]).trim(), "");
    assert_eq!(
        git(&sb, &root, &["rev-list", "--count", "HEAD"]).trim(),
        "1"
    );
}

#[test]
fn create_fails_clearly_when_the_push_fails() {
    let sb = sandbox();
    let missing = sb.work.path().join("no-such-remote.git");
    let out = es(
        &sb,
        &["create", "shopapi", "--remote", missing.to_str().unwrap()],
    );
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("push"), "{stderr}");
    // The project and its commit are kept.
    let root = sb.work.path().join("shopapi");
    assert_eq!(
        git(&sb, &root, &["rev-list", "--count", "HEAD"]).trim(),
        "1"
    );
}

#[test]
fn templates_are_listed_one_a_line() {
    let sb = sandbox();
    for args in [&["templates"][..], &["create", "--list"][..]] {
        let (stdout, _) = expect_code(&es(&sb, args), 0);
        let names: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(names, ["default", "django", "init"], "{stdout}");
    }
}

#[test]
fn django_template_is_complete_and_compiles() {
    let sb = sandbox();
    expect_code(
        &es(&sb, &["create", "djapp", "-t", "django", "--no-push"]),
        0,
    );
    let root = sb.work.path().join("djapp");
    for file in [
        "manage.py",
        "djapp/settings.py",
        "djapp/wsgi.py",
        "djapp/urls.py",
        "djapp/views.py",
        "djapp/main.py",
        "deploy.toml",
        "conf/supervisord.conf",
        "README.md",
        ".gitignore",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    let pyproject = fs::read_to_string(root.join("pyproject.toml")).unwrap();
    assert!(pyproject.contains("\"django"), "{pyproject}");
    assert!(pyproject.contains("\"gunicorn"), "{pyproject}");
    assert!(pyproject.contains("djapp = \"djapp.main:main\""));
    if let Some(python) = python3() {
        let out = Command::new(python)
            .args(["-m", "compileall", "-q", "."])
            .current_dir(&root)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap();
        expect_code(&out, 0);
    }
}

/// Writes an old-style project: setup.py, a package, a README and its own conf/.
fn legacy_project(dir: &Path) {
    fs::write(
        dir.join("setup.py"),
        "from setuptools import setup\n\nsetup(\n    name=\"legacy_app\",\n    version=\"1.0\",\n    packages=[\"legacy_app\"],\n)\n",
    )
    .unwrap();
    fs::create_dir_all(dir.join("legacy_app")).unwrap();
    fs::write(dir.join("legacy_app/__init__.py"), "VERSION = '1.0'\n").unwrap();
    fs::write(dir.join("README.md"), "# legacy\n").unwrap();
    fs::create_dir_all(dir.join("conf")).unwrap();
    fs::write(dir.join("conf/nginx.conf"), "# mine\n").unwrap();
}

#[test]
fn init_adds_the_deploy_files_and_leaves_the_rest_alone() {
    let sb = sandbox();
    let dir = sb.work.path();
    legacy_project(dir);
    let before = snapshot(dir);
    std::thread::sleep(Duration::from_millis(20));

    let (_, stderr) = expect_code(&es(&sb, &["init"]), 0);
    assert!(stderr.contains("deploy.toml"), "{stderr}");
    let deploy = fs::read_to_string(dir.join("deploy.toml")).unwrap();
    assert!(deploy.contains("name = \"legacy_app\""), "{deploy}");
    assert!(dir.join("conf/supervisord.conf").is_file());
    assert!(!dir.join(".git").exists(), "es init runs no git");

    let after = snapshot(dir);
    for (path, state) in &before {
        if path == dir || path == &dir.join("conf") {
            continue; // the directories gained entries
        }
        assert_eq!(after.get(path), Some(state), "{} changed", path.display());
    }
    let added: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert_eq!(
        added,
        [&dir.join("conf/supervisord.conf"), &dir.join("deploy.toml")]
    );

    // Again: nothing to add, everything skipped and unchanged.
    let (_, stderr) = expect_code(&es(&sb, &["init"]), 0);
    assert!(stderr.contains("skipped deploy.toml"), "{stderr}");
    assert!(stderr.contains("skipped conf/supervisord.conf"), "{stderr}");
    assert_eq!(after, snapshot(dir));
}

#[test]
fn init_never_overwrites_and_reads_pyproject() {
    let sb = sandbox();
    let dir = sb.work.path();
    fs::write(
        dir.join("pyproject.toml"),
        "[project]\nname = \"my-service\"\nversion = \"1\"\n",
    )
    .unwrap();
    fs::write(dir.join("deploy.toml"), "# my own\n").unwrap();
    let (_, stderr) = expect_code(&es(&sb, &["init"]), 0);
    assert!(stderr.contains("skipped deploy.toml"), "{stderr}");
    assert_eq!(
        fs::read_to_string(dir.join("deploy.toml")).unwrap(),
        "# my own\n"
    );
    assert!(dir.join("conf/supervisord.conf").is_file());

    let sub = dir.join("named");
    fs::create_dir(&sub).unwrap();
    expect_code(&es_in(&sb, &sub, &["init", "given_name"]), 0);
    let deploy = fs::read_to_string(sub.join("deploy.toml")).unwrap();
    assert!(deploy.contains("name = \"given_name\""));
}

#[test]
fn init_without_a_name_anywhere_is_bad_usage() {
    let sb = sandbox();
    let (_, stderr) = expect_code(&es(&sb, &["init"]), 2);
    assert!(stderr.contains("es init NAME"), "{stderr}");
    expect_code(&es(&sb, &["init", "bad name!"]), 2);
    assert_eq!(fs::read_dir(sb.work.path()).unwrap().count(), 0);
}

#[test]
fn created_project_passes_its_own_tests() {
    let Some(python) = python3() else { return };
    let sb = sandbox();
    expect_code(&es(&sb, &["create", "shopapi", "--no-push"]), 0);
    let root = sb.work.path().join("shopapi");
    let has_pytest = Command::new(python)
        .args(["-c", "import pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    let args: &[&str] = if has_pytest {
        &["-m", "pytest", "-q", "-p", "no:cacheprovider"]
    } else {
        &["-m", "unittest", "-v"]
    };
    let out = Command::new(python)
        .args(args)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    expect_code(&out, 0);
}

/// Sends `GET path` and returns the whole response.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn created_project_serves_http() {
    let Some(python) = python3() else { return };
    let sb = sandbox();
    expect_code(&es(&sb, &["create", "shopapi", "--no-push"]), 0);
    let root = sb.work.path().join("shopapi");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(python)
        .args([
            "-m",
            "shopapi.main",
            &port.to_string(),
            "--host",
            "127.0.0.1",
        ])
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ES_PROFILE", "test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let response = loop {
        match http_get(port, "/") {
            Ok(response) => break Some(response),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break None,
        }
    };
    let health = http_get(port, "/health").ok();
    child.kill().ok();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    let response = response.unwrap_or_else(|| panic!("no answer on port {port}\n{logs}"));
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.contains("shopapi"), "{response}");
    assert!(response.contains("profile test"), "{response}");
    let health = health.unwrap_or_default();
    assert!(health.contains("\"status\": \"ok\""), "{health}");
    assert!(logs.contains("listening"), "{logs}");
}

/// examples/hello_es is `es create hello_es` (less its deploy.toml: the
/// repository's own deploy.toml is the example's). It must not drift.
#[test]
fn the_example_project_is_what_es_create_makes() {
    fn files(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new(".git") || rel == Path::new("deploy.toml") {
                continue;
            }
            if path.is_dir() {
                files(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let sb = sandbox();
    let out = es(&sb, &["create", "hello_es", "--no-push"]);
    assert!(out.status.success(), "{out:?}");
    let created = sb.work.path().join("hello_es");
    let example = common::repo_root().join("examples/hello_es");
    let (mut want, mut have) = (BTreeMap::new(), BTreeMap::new());
    files(&created, &created, &mut want);
    files(&example, &example, &mut have);
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "regenerate examples/hello_es with `es create hello_es --no-push`"
    );
    for (path, bytes) in &want {
        assert!(
            have[path] == *bytes,
            "examples/hello_es/{} differs from the template",
            path.display()
        );
    }
}

#[test]
fn init_runs_a_flask_app_it_finds_and_packages_a_bare_project() {
    let sb = sandbox();
    let dir = sb.work.path().join("notes-web");
    fs::create_dir_all(dir.join("notes")).unwrap();
    fs::write(dir.join("notes/__init__.py"), "").unwrap();
    fs::write(
        dir.join("notes/views.py"),
        "from flask import Flask\n\nweb = Flask(__name__)\n",
    )
    .unwrap();
    // No packaging, no name: says what to do.
    let (_, stderr) = expect_code(&es_in(&sb, &dir, &["init"]), 2);
    assert!(stderr.contains("es init --package"), "{stderr}");
    // --package: a minimal pyproject.toml, and a template running gunicorn on the app.
    let (_, stderr) = expect_code(&es_in(&sb, &dir, &["init", "--package"]), 0);
    assert!(stderr.contains("WSGI app notes.views:web"), "{stderr}");
    let pyproject = fs::read_to_string(dir.join("pyproject.toml")).unwrap();
    assert!(pyproject.contains("name = \"notes_web\""), "{pyproject}");
    assert!(
        pyproject.contains("include = [\"notes\", \"notes.*\"]"),
        "{pyproject}"
    );
    // gunicorn comes with every release (deploy.requirements), not into the project.
    let deploy = fs::read_to_string(dir.join("deploy.toml")).unwrap();
    assert!(deploy.contains("requirements = [\"gunicorn\"]"), "{deploy}");
    let conf = fs::read_to_string(dir.join("conf/supervisord.conf")).unwrap();
    assert!(
        conf.contains("bin/gunicorn --bind 0.0.0.0:{{ port }}%(process_num)d 'notes.views:web'"),
        "{conf}"
    );
}
