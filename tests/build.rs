//! `es version`, `es build` and uploads against the test bed's pypiserver (auth on).
//!
//! Every test uses a project name of its own (test name + process id), so that runs
//! never see each other's packages on the shared index.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{expect_code, text, Sandbox, Testbed};

/// A project name no other test or run uses.
fn unique(test: &str) -> String {
    format!("es_t_{test}_{}", std::process::id())
}

/// Runs a command and returns its trimmed stdout; panics with its output on failure.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("starting a command");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{cmd:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout.trim().to_string()
}

fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args))
}

/// Commits everything in the sandbox's work directory on branch main.
fn commit_all(sb: &Sandbox) {
    let dir = sb.work.path();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "init"]);
}

/// Today's date as the calver scheme writes it, and its one-digit-year essay form.
fn today() -> (String, String) {
    let out = run(Command::new("date").arg("+%Y %-m %-d"));
    let parts: Vec<&str> = out.split_whitespace().collect();
    let year: u32 = parts[0].parse().unwrap();
    (
        format!("{year}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", year % 10, parts[1], parts[2]),
    )
}

/// `es` with the test bed's index credentials, and a build-venv cache shared by the tests.
fn es(sb: &Sandbox, tb: &Testbed, password: &str) -> Command {
    let mut cmd = sb.es();
    cmd.env("TWINE_USERNAME", &tb.index_user)
        .env("TWINE_PASSWORD", password)
        .env("XDG_CACHE_HOME", cache_dir());
    cmd
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("es-cache")
}

fn config(tb: &Testbed, name: &str, extra: &str) -> String {
    format!(
        "[project]\nname = \"{name}\"\n\n{}{extra}",
        tb.index_section()
    )
}

/// A pyproject.toml project with a static version es stamps.
fn write_pyproject_project(sb: &Sandbox, name: &str) {
    let dir = sb.work.path();
    std::fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"{name}\"\nversion = \"0.0.0\"\ndescription = \"es test project\"\n\n[tool.setuptools]\npackages = [\"{name}\"]\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("__init__.py"), "GREETING = 'hello'\n").unwrap();
}

/// The file names the index lists for `name` (PEP 503 HTML anchors).
fn index_files(tb: &Testbed, name: &str) -> Vec<String> {
    let script = "import sys, re, urllib.request, urllib.error\n\
try:\n    page = urllib.request.urlopen(sys.argv[1]).read().decode()\n\
except urllib.error.HTTPError as e:\n    page = ''\n\
print('\\n'.join(re.findall(r'>([^<>]+)</a>', page)))\n";
    let url = format!("{}{}/", tb.index_url, name.replace('_', "-").to_lowercase());
    run(Command::new("python3").args(["-c", script, &url]))
        .lines()
        .map(str::to_string)
        .collect()
}

/// A fresh venv (system python) with `requirement` pip-installed from the test bed's index.
fn install_fresh(sb: &Sandbox, tb: &Testbed, requirement: &str) -> PathBuf {
    let venv = sb.home.path().join("venv");
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv));
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--no-deps", "--index-url"])
        .arg(&tb.index_url)
        .args(["--trusted-host", &tb.bridge_addr, requirement])
        .current_dir(sb.home.path()));
    venv
}

#[test]
fn calver_builds_count_up_upload_and_install() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("calver");
    sb.write_config(&config(&tb, &name, ""));
    write_pyproject_project(&sb, &name);
    commit_all(&sb);
    let (day, _) = today();

    let out = es(&sb, &tb, &tb.index_password)
        .args(["version", "next"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), format!("{day}.1"));

    let out = es(&sb, &tb, &tb.index_password)
        .arg("build")
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.lines().last(), Some(format!("{day}.1").as_str()));

    // The second build runs with -v: the password must not show anywhere.
    let out = es(&sb, &tb, &tb.index_password)
        .args(["-v", "build"])
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert_eq!(stdout.lines().last(), Some(format!("{day}.2").as_str()));
    assert!(!stdout.contains(&tb.index_password) && !stderr.contains(&tb.index_password));

    let files = index_files(&tb, &name);
    for n in [1, 2] {
        assert!(
            files.contains(&format!("{name}-{day}.{n}.tar.gz")),
            "{files:?}"
        );
        assert!(
            files.contains(&format!("{name}-{day}.{n}-py3-none-any.whl")),
            "{files:?}"
        );
    }

    let out = es(&sb, &tb, "")
        .args(["version", "latest"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), format!("{day}.2"));

    let venv = install_fresh(&sb, &tb, &format!("{name}=={day}.2"));
    let installed = run(Command::new(venv.join("bin/python"))
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version('{name}'))"),
        ])
        .current_dir(sb.home.path()));
    assert_eq!(installed, format!("{day}.2"));

    // es pinstall uses the python3 on PATH: the venv's here.
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = sb
        .es()
        .env("PATH", &path)
        .args(["pinstall", "-q", &format!("{name}=={day}.1")])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let installed = run(Command::new(venv.join("bin/python"))
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version('{name}'))"),
        ])
        .current_dir(sb.home.path()));
    assert_eq!(installed, format!("{day}.1"));

    // es pypi sync from the index into itself: every file is already there, so skipped.
    let out = es(&sb, &tb, &tb.index_password)
        .args([
            "pypi",
            "sync",
            "--from",
            &tb.index_url,
            &format!("{name}=={day}.1"),
        ])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 0);
    assert!(
        stderr.contains("is already on the index; skipped"),
        "{stderr}"
    );

    assert_eq!(git(sb.work.path(), &["status", "--porcelain"]), "");
}

#[test]
fn legacy_setup_py_placeholders_are_stamped_in_the_build_only() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("legacy");
    let dir = sb.work.path();
    // Credentials from ~/.pypirc this time.
    std::fs::write(
        sb.home.path().join(".pypirc"),
        format!(
            "[distutils]\nindex-servers = testbed\n\n[testbed]\nusername = {}\npassword = {}\n",
            tb.index_user, tb.index_password
        ),
    )
    .unwrap();
    sb.write_config(&config(&tb, &name, "repository = \"testbed\"\n"));
    let setup_py = format!(
        "from setuptools import setup\n\nsetup(name=\"{name}\", version=\"${{version}}\", packages=[\"{name}\"])\n"
    );
    std::fs::write(dir.join("setup.py"), &setup_py).unwrap();
    std::fs::create_dir_all(dir.join(&name)).unwrap();
    std::fs::write(dir.join(&name).join("__init__.py"), "").unwrap();
    let settings = "VERSION = \"${version}\"\nGIT_VERSION = \"${git_version}\"\nRELEASE_TIME = \"${release_time}\"\n";
    std::fs::write(dir.join(&name).join("settings.py"), settings).unwrap();
    commit_all(&sb);
    let commit = git(dir, &["rev-parse", "HEAD"]);

    let mut cmd = sb.es();
    cmd.env("XDG_CACHE_HOME", cache_dir());
    let out = cmd.args(["build", "--version", "1.2.3"]).output().unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.lines().last(), Some("1.2.3"));

    let venv = install_fresh(&sb, &tb, &format!("{name}==1.2.3"));
    let stamped = run(Command::new(venv.join("bin/python"))
        .args([
            "-c",
            &format!(
                "import {name}.settings as s; print(s.VERSION, s.GIT_VERSION, s.RELEASE_TIME)"
            ),
        ])
        .current_dir(sb.home.path()));
    assert!(
        stamped.starts_with(&format!("1.2.3 {commit} ")),
        "{stamped}"
    );
    assert!(!stamped.contains("${"), "{stamped}");

    assert_eq!(
        std::fs::read_to_string(dir.join("setup.py")).unwrap(),
        setup_py
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(&name).join("settings.py")).unwrap(),
        settings
    );
    assert_eq!(git(dir, &["status", "--porcelain"]), "");
}

#[test]
fn wrong_password_is_refused_and_never_printed() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("badpass");
    sb.write_config(&config(&tb, &name, ""));
    write_pyproject_project(&sb, &name);
    commit_all(&sb);
    let password = format!("wrong-{}-pw", std::process::id());

    let out = es(&sb, &tb, &password)
        .args(["-v", "build"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("refused the credentials for"), "{stderr}");
    assert!(!stdout.contains(&password) && !stderr.contains(&password));
    assert_eq!(index_files(&tb, &name), Vec::<String>::new());

    let out = es(&sb, &tb, "")
        .args(["version", "latest"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("is not on the index"), "{stderr}");
}

#[test]
fn essay_scheme_has_a_one_digit_year() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("essay");
    sb.write_config(&config(
        &tb,
        &name,
        "\n[build]\nversion_scheme = \"essay\"\n",
    ));
    let out = sb.es().args(["version", "next"]).output().unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), format!("{}.1", today().1));
}

#[test]
fn commit_is_exported_not_the_work_tree() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("export");
    let dir = sb.work.path();
    sb.write_config(&config(&tb, &name, ""));
    write_pyproject_project(&sb, &name);
    commit_all(&sb);
    let first = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join(&name).join("__init__.py"), "GREETING = 'second'\n").unwrap();
    git(dir, &["commit", "-q", "-am", "second"]);
    // Uncommitted: neither commit has it.
    std::fs::write(dir.join(&name).join("__init__.py"), "GREETING = 'dirty'\n").unwrap();
    let dist = sb.home.path().join("dist");
    let git_index = std::fs::read(dir.join(".git/index")).unwrap();
    let index_mtime = std::fs::metadata(dir.join(".git/index"))
        .unwrap()
        .modified()
        .unwrap();

    let out = es(&sb, &tb, &tb.index_password)
        .args([
            "-v",
            "build",
            "--no-upload",
            "--version",
            "1.0",
            "--name",
            "fixbug",
        ])
        .args(["--branch", "main", "--commit", &first[..10], "--dist"])
        .arg(&dist)
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert_eq!(stdout.lines().last(), Some("1.0+fixbug"));
    assert!(stderr.contains("uncommitted changes"), "{stderr}");
    assert!(stderr.contains("public indexes"), "{stderr}");
    let wheel = dist.join(format!("{name}-1.0+fixbug-py3-none-any.whl"));
    assert!(dist.join(format!("{name}-1.0+fixbug.tar.gz")).is_file());
    let listing = run(Command::new("python3")
        .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(z.read(sys.argv[2]).decode())"])
        .arg(&wheel)
        .arg(format!("{name}/__init__.py")));
    assert_eq!(listing, "GREETING = 'hello'");
    // --no-upload: nothing on the index; the work tree keeps its change.
    assert_eq!(index_files(&tb, &name), Vec::<String>::new());
    assert!(std::fs::read_to_string(dir.join(&name).join("__init__.py"))
        .unwrap()
        .contains("dirty"));
    // The user's git index was not rewritten (not even a stat refresh).
    assert_eq!(std::fs::read(dir.join(".git/index")).unwrap(), git_index);
    assert_eq!(
        std::fs::metadata(dir.join(".git/index"))
            .unwrap()
            .modified()
            .unwrap(),
        index_mtime
    );
}

#[test]
fn bad_usage_exits_2() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("usage");
    sb.write_config(&config(&tb, &name, "repository = \"missing\"\n"));
    write_pyproject_project(&sb, &name);
    commit_all(&sb);
    for args in [
        vec!["build", "--version", "not a version"],
        vec!["build", "--commit", "no-such-commit"],
        vec!["build", "--version", "1.0", "--name", "bad name"],
        vec!["version", "next", "--bump", "minor"],
    ] {
        let out = sb.es().args(&args).output().unwrap();
        expect_code(&out, 2);
    }
    // The ~/.pypirc section is missing: found before the upload, exit 2.
    let mut cmd = sb.es();
    cmd.env("XDG_CACHE_HOME", cache_dir());
    let out = cmd.args(["build", "--version", "1.0"]).output().unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(stderr.contains(".pypirc"), "{stderr}");
}

/// A server on 127.0.0.1 that answers every request with a 301 to `location`,
/// for `count` requests; returns its port.
fn redirecting_server(location: String, count: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    port
}

#[test]
fn an_upload_to_a_redirecting_url_fails_and_uploads_nothing() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("redirect");
    let port = redirecting_server(tb.upload_url.clone(), 8);
    let upload = format!("http://127.0.0.1:{port}/");
    sb.write_config(&config(&tb, &name, "").replace(
        &format!("upload_url = \"{}\"", tb.upload_url),
        &format!("upload_url = \"{upload}\""),
    ));
    write_pyproject_project(&sb, &name);
    commit_all(&sb);
    let out = es(&sb, &tb, &tb.index_password)
        .args(["build", "--version", "1.0.0"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("HTTP 301 redirecting to"), "{stderr}");
    assert!(stderr.contains("nothing was uploaded"), "{stderr}");
    assert_eq!(index_files(&tb, &name), Vec::<String>::new());
}

#[test]
fn an_index_that_never_answers_fails_within_index_timeout() {
    // Accepts connections, never answers (for at most a minute).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(held);
    });
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "[project]\nname = \"silent\"\n[index]\nurl = \"http://127.0.0.1:{port}/simple/\"\ntimeout = 2\n"
    ));
    let started = std::time::Instant::now();
    let out = sb.es().args(["version", "latest"]).output().unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(
        stderr.contains("no answer within 2s (index.timeout)"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{stderr}"
    );
}

#[test]
fn an_https_index_signed_by_an_internal_ca_is_trusted_through_the_system_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An internal CA, and a certificate it signs for 127.0.0.1.
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=es-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out server.pem 2>/dev/null
mkdir -p simple/intranet-app
printf '<a href="intranet_app-1.4.0.tar.gz">intranet_app-1.4.0.tar.gz</a>\n' > simple/intranet-app/index.html
"#;
    let made = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(d)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let server = r#"import http.server, ssl, sys
httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.pem", "server.key")
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
httpd.timeout = 60
for _ in range(8):
    httpd.handle_request()
"#;
    let mut child = Command::new("python3")
        .args(["-c", server])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "[project]\nname = \"intranet-app\"\n[index]\nurl = \"https://127.0.0.1:{}/simple/\"\ntimeout = 10\n",
        port.trim()
    ));
    // Not in the system store: the certificate is refused.
    let out = sb
        .es()
        .args(["version", "latest"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    // The CA in the trust store es reads (SSL_CERT_FILE, as OpenSSL's tools do).
    let out = sb
        .es()
        .args(["version", "latest"])
        .env("SSL_CERT_FILE", d.join("ca.pem"))
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), "1.4.0");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn pypi_sync_brings_the_whole_closure_and_a_host_installs_from_it() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("syncer");
    // The project's own dependencies (--project): flask and its closure
    // (werkzeug, jinja2, markupsafe, itsdangerous, click, blinker), resolved
    // for the hosts' Python (the same Debian python3 here).
    sb.write_config(&format!(
        "{}\n[roles]\nweb = [\"{}\"]\n\n{}",
        config(&tb, &name, ""),
        tb.addr(34),
        tb.ssh_section()
    ));
    write_pyproject_project(&sb, &name);
    let pyproject = std::fs::read_to_string(sb.work.path().join("pyproject.toml")).unwrap();
    std::fs::write(
        sb.work.path().join("pyproject.toml"),
        pyproject.replace(
            "description = ",
            "dependencies = [\"flask\"]\ndescription = ",
        ),
    )
    .unwrap();
    let out = es(&sb, &tb, &tb.index_password)
        .args([
            "pypi",
            "sync",
            "--project",
            "--python",
            "3.11",
            "--platform",
            "manylinux2014_x86_64",
        ])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 0);
    for dep in [
        "flask",
        "werkzeug",
        "jinja2",
        "itsdangerous",
        "click",
        "blinker",
        "markupsafe",
    ] {
        assert!(
            stderr
                .to_lowercase()
                .contains(&format!("es: uploaded {dep}"))
                || stderr.to_lowercase().contains(&format!("es: {dep}")),
            "{dep} missing:\n{stderr}"
        );
    }
    // A host that reaches nothing but the test index installs flask from it.
    let script = format!(
        "rm -rf /tmp/synced && python3 -m venv /tmp/synced && /tmp/synced/bin/pip install -q --disable-pip-version-check --index-url {} --trusted-host {} flask && /tmp/synced/bin/python -c 'import flask; print(\"flask ok\")'",
        tb.index_url, tb.bridge_addr
    );
    let out = sb
        .es()
        .args(["run", "-R", "web", "--", &script])
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert!(stdout.contains("flask ok"), "{stdout}{stderr}");
    // Nothing to sync is bad usage.
    let out = es(&sb, &tb, &tb.index_password)
        .args(["pypi", "sync"])
        .output()
        .unwrap();
    expect_code(&out, 2);
}

/// Host 33 is this file's build host.
const BUILD_HOST: usize = 33;

/// A project whose build records where it ran: setup.py writes the build
/// machine's hostname and working directory into the package (once, at the
/// sdist build; the wheel is built from the sdist and keeps them).
fn write_where_built_project(sb: &Sandbox, name: &str) {
    write_pyproject_project(sb, name);
    std::fs::write(
        sb.work.path().join("setup.py"),
        format!(
            "import os, socket\nfrom setuptools import setup\n\npath = os.path.join({name:?}, 'where.py')\nif not os.path.exists(path):\n    with open(path, 'w') as f:\n        f.write('HOSTNAME = %r\\nCWD = %r\\n' % (socket.gethostname(), os.getcwd()))\nsetup()\n"
        ),
    )
    .unwrap();
}

/// Reads `member` of the zip file `archive`.
fn zip_member(archive: &Path, member: &str) -> String {
    run(Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]).decode())",
        ])
        .arg(archive)
        .arg(member))
}

/// The work directory es said it built in: "..., in DIR" on stderr.
fn work_dir_named(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("with python -m build on ")?
                .1
                .split_once(", in ")
        })
        .map(|(_, dir)| dir.trim().to_string())
        .unwrap_or_else(|| panic!("no work directory named:\n{stderr}"))
}

/// Whether `path` exists on host `n` (its own /home/deploy).
fn exists_on(tb: &Testbed, n: usize, path: &str) -> bool {
    tb.exec(n, &["test", "-e", path]).status.success()
}

#[test]
fn the_build_role_builds_on_its_host_and_the_version_is_uploaded_from_here() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("remote");
    let host = format!("{}@{}", tb.user, tb.addr(BUILD_HOST));
    sb.write_config(&format!(
        "{}\n[roles]\nbuild = [\"{host}\"]\n\n{}",
        config(&tb, &name, ""),
        tb.ssh_section()
    ));
    write_where_built_project(&sb, &name);
    commit_all(&sb);
    let (day, _) = today();
    let dist = sb.home.path().join("dist");

    let out = es(&sb, &tb, &tb.index_password)
        .arg("build")
        .arg("--dist")
        .arg(&dist)
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    let version = format!("{day}.1");
    assert_eq!(stdout.lines().last(), Some(version.as_str()), "{stderr}");
    assert!(!stderr.contains(&tb.index_password));

    // The build ran on host 33, in the work directory es named, now removed.
    let hostname = String::from_utf8_lossy(&tb.exec(BUILD_HOST, &["hostname"]).stdout)
        .trim()
        .to_string();
    let here = run(&mut Command::new("hostname"));
    assert_ne!(hostname, here);
    assert!(
        stderr.contains(&format!("on {host} ({hostname}), in ")),
        "{stderr}"
    );
    let dir = work_dir_named(&stderr);
    let wheel = dist.join(format!("{name}-{version}-py3-none-any.whl"));
    let recorded = zip_member(&wheel, &format!("{name}/where.py"));
    assert!(
        recorded.contains(&format!("HOSTNAME = '{hostname}'")),
        "{recorded}"
    );
    assert!(
        recorded.contains(&format!("CWD = '{dir}/src'")),
        "{recorded}"
    );
    // The test bed's user has its home at /home/USER on every host.
    let base = format!("/home/{}/.es-build", tb.user);
    assert!(dir.starts_with(&format!("{base}/work/")), "{dir}");
    assert!(
        !exists_on(&tb, BUILD_HOST, &dir),
        "{dir} was left on the host"
    );
    assert!(exists_on(
        &tb,
        BUILD_HOST,
        &format!("{base}/venv/bin/python")
    ));

    // Its provenance names the build host; the version is the latest.
    let provenance = zip_member(&wheel, &format!("{name}-{version}.dist-info/es-build.json"));
    assert!(
        provenance.contains(&format!("\"built_on\":\"{host}\""))
            && provenance.contains(&format!("\"build_hostname\":\"{hostname}\"")),
        "{provenance}"
    );
    let files = index_files(&tb, &name);
    assert!(
        files.contains(&format!("{name}-{version}.tar.gz"))
            && files.contains(&format!("{name}-{version}-py3-none-any.whl")),
        "{files:?}"
    );
    let out = es(&sb, &tb, "")
        .args(["version", "latest"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), version);
    assert_eq!(git(sb.work.path(), &["status", "--porcelain"]), "");
}

#[test]
fn a_backend_failing_on_the_build_host_names_the_host_and_the_cause() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("remotefail");
    let host = format!("{}@{}", tb.user, tb.addr(BUILD_HOST));
    // The role is not `build`: --on picks it.
    sb.write_config(&format!(
        "{}\n[roles]\nbuild = [\"local\"]\nbuilder = [\"{host}\"]\n\n{}",
        config(&tb, &name, ""),
        tb.ssh_section()
    ));
    write_pyproject_project(&sb, &name);
    std::fs::write(
        sb.work.path().join("setup.py"),
        "raise SystemExit('es-test: the backend gives up here')\n",
    )
    .unwrap();
    commit_all(&sb);

    let out = es(&sb, &tb, &tb.index_password)
        .args(["build", "--on", "builder", "--version", "1.0.0"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(
        stderr.contains(&format!("building on {host} failed at build")),
        "{stderr}"
    );
    assert!(
        stderr.contains("es-test: the backend gives up here"),
        "{stderr}"
    );
    let dir = work_dir_named(&stderr);
    assert!(
        !exists_on(&tb, BUILD_HOST, &dir),
        "{dir} was left on the host"
    );
    assert_eq!(index_files(&tb, &name), Vec::<String>::new());
}

#[test]
fn an_unreachable_build_host_fails_naming_it_and_local_builds_here() {
    let tb = bed!();
    let sb = Sandbox::new();
    let name = unique("unreachable");
    // Nothing listens on port 1: the connection is refused.
    sb.write_config(&format!(
        "{}\n[roles]\nbuild = [\"deploy@127.0.0.1:1\"]\n\n{}",
        config(&tb, &name, ""),
        tb.ssh_section()
    ));
    write_pyproject_project(&sb, &name);
    commit_all(&sb);
    let dist = sb.home.path().join("dist");

    let out = es(&sb, &tb, &tb.index_password)
        .args(["build", "--no-upload", "--version", "1.0.0"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(
        stderr.contains("building on deploy@127.0.0.1:1 failed at connect"),
        "{stderr}"
    );

    let out = es(&sb, &tb, &tb.index_password)
        .args([
            "build",
            "--local",
            "--no-upload",
            "--version",
            "1.0.0",
            "--dist",
        ])
        .arg(&dist)
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert_eq!(stdout.lines().last(), Some("1.0.0"));
    assert!(!stderr.contains("127.0.0.1:1"), "{stderr}");
    let provenance = zip_member(
        &dist.join(format!("{name}-1.0.0-py3-none-any.whl")),
        &format!("{name}-1.0.0.dist-info/es-build.json"),
    );
    assert!(!provenance.contains("built_on"), "{provenance}");

    let out = es(&sb, &tb, &tb.index_password)
        .args(["build", "--on", "nope", "--no-upload", "--version", "1.0.0"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(stderr.contains("--on nope"), "{stderr}");
}
