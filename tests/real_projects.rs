//! Real third-party projects deployed with es commands only (hosts 34-36).
//!
//! The project is the Flask tutorial application "flaskr" as published on PyPI
//! as `flaskrrr` 1.0.0 (BSD, by the Pallets team): a setup.py with a literal
//! `version="1.0.0"` and `install_requires=["flask"]`, a `create_app()` factory,
//! an SQLite database in the instance folder (`sys.prefix/var/flaskr-instance`)
//! and `flask --app flaskr init-db` to create its schema. Its code is not kept
//! in this repository: the test downloads the sdist once (into the test bed's
//! cache) and unpacks it into a fresh git repository, as a team's would be.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{expect_code, text, Sandbox, Testbed};

const FLASKRRR: &str = "flaskrrr-1.0.0";

/// The flaskrrr 1.0.0 sdist, downloaded from PyPI (source only, no
/// dependencies) into the test bed's cache the first time.
fn flaskrrr_sdist() -> &'static Path {
    static SDIST: OnceLock<PathBuf> = OnceLock::new();
    SDIST.get_or_init(|| {
        let cache = std::env::var_os("ES_TESTBED_CACHE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/es-testbed-cache"))
            .join("real-projects");
        let sdist = cache.join(format!("{FLASKRRR}.tar.gz"));
        if sdist.is_file() {
            return sdist;
        }
        std::fs::create_dir_all(&cache).expect("making the cache directory");
        let tmp = tempfile::tempdir_in(&cache).expect("a temporary download directory");
        let out = Command::new("python3")
            .args(["-m", "pip", "download", "--disable-pip-version-check"])
            .args(["--no-deps", "--no-binary", ":all:", "flaskrrr==1.0.0", "-d"])
            .arg(tmp.path())
            .output()
            .expect("running pip download");
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "pip download flaskrrr==1.0.0 failed (PyPI must be reachable the first time)\n{stdout}{stderr}"
        );
        std::fs::rename(tmp.path().join(format!("{FLASKRRR}.tar.gz")), &sdist)
            .expect("moving the sdist into the cache");
        sdist
    })
}

/// flaskrrr unpacked into `dir` (the sdist's build outputs PKG-INFO and
/// *.egg-info left out, as a source repository has none), committed on main.
fn flaskrrr_repo(sb: &Sandbox) -> PathBuf {
    let out = Command::new("tar")
        .args(["--no-same-owner", "-xzf"])
        .arg(flaskrrr_sdist())
        .arg("-C")
        .arg(sb.work.path())
        .output()
        .expect("running tar");
    expect_code(&out, 0);
    let dir = sb.work.path().join("flaskr");
    std::fs::rename(sb.work.path().join(FLASKRRR), &dir).unwrap();
    std::fs::remove_file(dir.join("PKG-INFO")).unwrap();
    std::fs::remove_dir_all(dir.join("flaskrrr.egg-info")).unwrap();
    common::git(sb, &dir, &["init", "-q", "-b", "main"]);
    common::git(sb, &dir, &["add", "-A"]);
    common::git(
        sb,
        &dir,
        &["commit", "-qm", "flaskr, the Flask tutorial app"],
    );
    dir
}

/// `es init` in `dir`; returns what it printed.
fn es_init(sb: &Sandbox, dir: &Path) -> String {
    let out = sb.es().current_dir(dir).arg("init").output().unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    stdout + &stderr
}

#[test]
fn es_init_finds_flaskrs_app_factory_and_runs_it_under_gunicorn() {
    let sb = Sandbox::new();
    let dir = flaskrrr_repo(&sb);
    let stdout = es_init(&sb, &dir);
    assert!(stdout.contains("added   deploy.toml"), "{stdout}");
    assert!(stdout.contains("added   conf/supervisord.conf"), "{stdout}");
    assert!(
        stdout.contains("runs gunicorn with the WSGI app flaskr:create_app()"),
        "{stdout}"
    );

    let config: toml::Table = std::fs::read_to_string(dir.join("deploy.toml"))
        .unwrap()
        .parse()
        .unwrap();
    // The distribution's name, from setup.py (not the package's, flaskr).
    assert_eq!(config["project"]["name"].as_str(), Some("flaskrrr"));
    let deploy = &config["deploy"];
    assert_eq!(
        deploy["requirements"].as_array().unwrap(),
        &vec![toml::Value::from("gunicorn")]
    );
    assert_eq!(
        deploy["supervisor_template"].as_str(),
        Some("conf/supervisord.conf")
    );
    // flaskr keeps its SQLite file (and config.py) in its instance folder, which
    // would otherwise be new with every release.
    assert_eq!(
        deploy["shared_dirs"].as_array().unwrap(),
        &vec![toml::Value::from("var/flaskr-instance")]
    );
    assert!(
        stdout.contains("deploy.shared_dirs keeps var/flaskr-instance across releases"),
        "{stdout}"
    );
    assert!(
        stdout.contains("`es pypi sync --project gunicorn` (the dependencies onto your index)"),
        "{stdout}"
    );
    // The tables a migrating user fills in are there to fill in.
    for table in ["health", "env", "secrets"] {
        assert!(
            deploy.get(table).is_some_and(toml::Value::is_table),
            "{table}"
        );
    }

    let template = std::fs::read_to_string(dir.join("conf/supervisord.conf")).unwrap();
    let command = template
        .lines()
        .find(|l| l.starts_with("command="))
        .unwrap_or_else(|| panic!("no command= in\n{template}"));
    // The factory is called by gunicorn; bin/es-env loads the release's
    // environment (deploy.env, deploy.secrets) first.
    assert_eq!(
        command,
        "command={{ venv_dir }}/bin/es-env {{ venv_dir }}/bin/gunicorn --bind 0.0.0.0:{{ port }}%(process_num)d 'flaskr:create_app()'"
    );
    assert!(template.contains("[program:{{ project }}]"), "{template}");
    assert!(
        template.contains("numprocs={{ process_count }}"),
        "{template}"
    );

    // Only the two new files; the project's own files are untouched.
    let status = common::git(&sb, &dir, &["status", "--porcelain"]);
    assert_eq!(status, "?? conf/\n?? deploy.toml\n");
    // A second run overwrites nothing.
    let before = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    std::fs::write(dir.join("conf/supervisord.conf"), "; mine\n").unwrap();
    es_init(&sb, &dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("deploy.toml")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("conf/supervisord.conf")).unwrap(),
        "; mine\n"
    );
}

/// `key = value` in `[table]` of a deploy.toml: the line replaced when the key is
/// set there, else added under the table's header (what a user does in an editor).
fn set(text: &str, table: &str, key: &str, value: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let header = format!("[{table}]");
    let start = lines
        .iter()
        .position(|l| l.split('#').next().map(str::trim) == Some(header.as_str()))
        .unwrap_or_else(|| panic!("no {header} in\n{text}"));
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let line = format!("{key} = {value}");
    match (start + 1..end).find(|i| lines[*i].split('=').next().map(str::trim) == Some(key)) {
        Some(i) => out[i] = line,
        None => out.insert(start + 1, line),
    }
    out.join("\n") + "\n"
}

/// A TOML string.
fn toml_str(s: &str) -> String {
    toml::Value::from(s).to_string()
}

/// Stops what an earlier run left under `~/PREFIX` on the hosts (supervisord,
/// its children, and processes a killed one left behind) and removes it. The
/// directory is put together from the arguments, so that no process's command
/// line (this script's own) names it.
fn fresh(tb: &Testbed, hosts: &[usize], prefix: &str) {
    let script = r#"dir="/home/$1/$2/"
pids() { ps -eo pid=,args= | D="$dir" awk -v want="$1" 'index($0, ENVIRON["D"]) && index($0, want) { print $1 }'; }
for pid in $(pids "supervisord -c"); do
  for child in $(ps -o pid= --ppid "$pid"); do kill -KILL "$child"; done
  kill -KILL "$pid"
done
for pid in $(pids /); do kill -KILL "$pid"; done
rm -rf "$dir""#;
    for n in hosts {
        let out = tb.exec(*n, &["sh", "-c", script, "sh", &tb.user, prefix]);
        expect_code(&out, 0);
    }
}

/// One HTTP exchange with curl (no redirect followed).
struct Response {
    status: u16,
    headers: String,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The `session` cookie this response sets.
    fn session_cookie(&self) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let value = v.trim().strip_prefix("session=")?;
            Some(value.split(';').next().unwrap_or("").to_string())
        })
    }
}

fn http(url: &str, form: &[(&str, &str)], cookie: Option<&str>) -> Response {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "10"]);
    for (k, v) in form {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    if let Some(cookie) = cookie {
        cmd.arg("-H").arg(format!("Cookie: session={cookie}"));
    }
    let out = cmd.arg(url).output().expect("running curl");
    let raw = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (headers, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer from {url}: {raw:?}"));
    Response {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// Whether Flask's session cookie was signed with `secret` (itsdangerous:
/// HMAC-SHA1 keyed by HMAC-SHA1(secret, "cookie-session"), base64url, no padding).
fn signed_with(cookie: &str, secret: &str) -> bool {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    type HmacSha1 = hmac::Hmac<sha1::Sha1>;
    let Some((value, signature)) = cookie.rsplit_once('.') else {
        return false;
    };
    let mut derive = HmacSha1::new_from_slice(secret.as_bytes()).unwrap();
    derive.update(b"cookie-session");
    let key = derive.finalize().into_bytes();
    let mut mac = HmacSha1::new_from_slice(&key).unwrap();
    mac.update(value.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        == signature
}

#[test]
fn flaskr_from_pypi_source_to_serving_with_es_commands_only() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [34, 35, 36];
    let prefix = "flaskr_real";
    let port = "860";
    fresh(&tb, &hosts, prefix);
    let secret = format!(
        "flaskr-{}-{}-key",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // Everything es prints, checked for the secret at the end.
    let mut printed = String::new();
    let mut es = |args: &[&str], code: i32| -> (String, String) {
        let out = sb
            .es()
            .current_dir(sb.work.path().join("flaskr"))
            .args(args)
            .env("FLASKR_TEST_SECRET", &secret)
            .env("TWINE_USERNAME", &tb.index_user)
            .env("TWINE_PASSWORD", &tb.index_password)
            .output()
            .unwrap();
        let (stdout, stderr) = expect_code(&out, code);
        printed.push_str(&stdout);
        printed.push_str(&stderr);
        (stdout, stderr)
    };

    // 1. The team's repository, and es init in it.
    let dir = flaskrrr_repo(&sb);
    es_init(&sb, &dir);

    // The site's settings, edited into what es init wrote.
    let mut config = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    let entries: Vec<String> = tb.entries(&hosts).iter().map(|e| toml_str(e)).collect();
    for (table, key, value) in [
        ("index", "url", toml_str(&tb.index_url)),
        ("index", "upload_url", toml_str(&tb.upload_url)),
        // The hosts' Python: pip resolves the closure for it.
        ("index", "python", toml_str("3.11")),
        ("roles", "prod", format!("[{}]", entries.join(", "))),
        ("ssh", "user", toml_str(&tb.user)),
        ("ssh", "identity_file", toml_str(&tb.key.display().to_string())),
        (
            "ssh",
            "known_hosts",
            toml_str(&tb.known_hosts.display().to_string()),
        ),
        ("ssh", "connect_timeout", "3".into()),
        ("deploy", "virtualenv_prefix", toml_str(&format!("~/{prefix}"))),
        ("deploy", "venv_ports", format!("{{ a = \"{port}\" }}")),
        ("deploy", "default_role", toml_str("prod")),
        (
            "deploy",
            "release_hooks",
            format!(
                "[{}, {}]",
                // The secret, from the release's environment, into the instance config.
                toml_str(
                    "python -c 'import os, sys; p = os.path.join(sys.prefix, \"var\", \"flaskr-instance\", \"config.py\"); os.umask(0o077); open(p, \"w\").write(\"SECRET_KEY = %r\\n\" % os.environ[\"FLASKR_SECRET_KEY\"])'"
                ),
                // The schema, once: init-db drops the tables it creates.
                toml_str(
                    "test -e \"$VIRTUAL_ENV/var/flaskr-instance/flaskr.sqlite\" || flask --app flaskr init-db"
                ),
            ),
        ),
        // Every host has its own SQLite database.
        ("deploy", "release_hooks_on", toml_str("all")),
        // The blog's index reads the database: it answers only once the schema is there.
        ("deploy.health", "path", toml_str("/")),
        (
            "deploy.secrets",
            "FLASKR_SECRET_KEY",
            "{ env = \"FLASKR_TEST_SECRET\" }".into(),
        ),
    ] {
        config = set(&config, table, key, &value);
    }
    std::fs::write(dir.join("deploy.toml"), &config).unwrap();
    common::git(&sb, &dir, &["add", "-A"]);
    common::git(&sb, &dir, &["commit", "-qm", "deploy with es"]);

    // 2. The dependency closure of a setup.py project, and the app server.
    let (_, stderr) = es(&["pypi", "sync", "--project", "gunicorn"], 0);
    for dep in [
        "flask-",
        "werkzeug-",
        "jinja2-",
        "itsdangerous-",
        "click-",
        "blinker-",
        "markupsafe-",
        "gunicorn-",
    ] {
        assert!(
            stderr.to_lowercase().lines().any(|l| l.starts_with("es: ")
                && l.contains(dep)
                && (l.contains("uploaded") || l.contains("already on the index"))),
            "{dep} not synced:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("flaskrrr-"),
        "the project itself: {stderr}"
    );
    // pip built the project's metadata in a copy: the work tree is clean.
    assert_eq!(common::git(&sb, &dir, &["status", "--porcelain"]), "");

    // 3. The build: es's version, though setup.py says 1.0.0.
    let (stdout, _) = es(&["build"], 0);
    let v1 = stdout.lines().last().unwrap().to_string();
    assert!(v1.starts_with("20") && v1 != "1.0.0", "{v1}");
    assert!(std::fs::read_to_string(dir.join("setup.py"))
        .unwrap()
        .contains("version=\"1.0.0\""));
    let (stdout, _) = es(&["version", "latest"], 0);
    assert_eq!(stdout.trim(), v1);

    // 4. The deploy. A dry run first proves on every host that the version and
    // its whole closure resolve from the index; then the hooks on every host,
    // and the switch, health-checked.
    let (stdout, _) = es(&["deploy", "--dry-run", "latest", "a", "prod"], 0);
    assert!(stdout.contains("would run release hook"), "{stdout}");
    let (stdout, stderr) = es(&["deploy", "latest", "a", "prod"], 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    // The hooks' output, prefixed by host.
    for n in hosts {
        assert!(
            stdout.contains(&format!(
                "{} | Initialized the database.",
                tb.entries(&[n])[0]
            )),
            "init-db on host {n}:\n{stdout}"
        );
    }

    // 5. Over HTTP: every process serves; a user registers, logs in and posts.
    let url = |n: usize, i: usize, path: &str| format!("http://{}:{port}{i}{path}", tb.addr(n));
    let mut cookies = Vec::new();
    for n in hosts {
        for i in 0..2 {
            let page = http(&url(n, i, "/auth/login"), &[], None);
            assert_eq!(page.status, 200, "host {n} process {i}: {}", page.body);
            assert!(page.body.contains("Log In"), "{}", page.body);
        }
        let form = [("username", "ada"), ("password", "lovelace-1815")];
        let registered = http(&url(n, 0, "/auth/register"), &form, None);
        assert_eq!(registered.status, 302, "host {n}: {}", registered.body);
        assert!(
            registered
                .header("location")
                .is_some_and(|l| l.ends_with("/auth/login")),
            "{}",
            registered.headers
        );
        // The other process, the same database (the shared instance folder).
        let login = http(&url(n, 1, "/auth/login"), &form, None);
        assert_eq!(login.status, 302, "host {n}: {}", login.body);
        let cookie = login.session_cookie().expect("a session cookie");
        assert!(
            signed_with(&cookie, &secret),
            "host {n}: the session is not signed with the delivered secret"
        );
        assert!(!signed_with(&cookie, "dev"), "signed with flaskr's default");
        let title = format!("Hello from host {n}");
        let created = http(
            &url(n, 0, "/create"),
            &[("title", &title), ("body", "posted through es")],
            Some(&cookie),
        );
        assert_eq!(created.status, 302, "host {n}: {}", created.body);
        let index = http(&url(n, 1, "/"), &[], Some(&cookie));
        assert_eq!(index.status, 200);
        assert!(index.body.contains(&title), "{}", index.body);
        assert!(index.body.contains("by ada"), "{}", index.body);
        assert!(index.body.contains("Log Out"), "logged in: {}", index.body);
        cookies.push(cookie);
    }
    // A forged cookie (flaskr's default key) is not a login.
    let anonymous = http(&url(34, 0, "/create"), &[], Some("forged.cookie.value"));
    assert_eq!(anonymous.status, 302);
    assert!(anonymous
        .header("location")
        .is_some_and(|l| l.ends_with("/auth/login")));

    // 6. A second version: the data outlives the release, init-db does not run again.
    std::fs::write(
        dir.join("README.rst"),
        std::fs::read_to_string(dir.join("README.rst")).unwrap() + "\nDeployed with es.\n",
    )
    .unwrap();
    common::git(&sb, &dir, &["commit", "-qam", "a second version"]);
    let (stdout, _) = es(&["build"], 0);
    let v2 = stdout.lines().last().unwrap().to_string();
    assert_ne!(v1, v2);
    // The hosts have their tools now: the dry run resolves the closure there.
    let (stdout, _) = es(&["deploy", "--dry-run", "latest", "a", "prod"], 0);
    assert_eq!(
        stdout
            .matches(&format!(
                "flaskrrr=={v2} with gunicorn and its dependencies resolve from the index"
            ))
            .count(),
        3,
        "{stdout}"
    );
    for pin in ["flask==", "werkzeug==", "gunicorn=="] {
        assert!(stdout.contains(pin), "{pin}: {stdout}");
    }
    let (stdout, stderr) = es(&["-v", "deploy", "latest", "a", "prod"], 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    assert!(stderr.contains("release hook 2"), "{stderr}");
    assert!(!stdout.contains("Initialized the database."), "{stdout}");
    for (k, n) in hosts.into_iter().enumerate() {
        for i in 0..2 {
            // The old session still works: the same secret.
            let index = http(&url(n, i, "/"), &[], Some(&cookies[k]));
            assert_eq!(index.status, 200);
            assert!(
                index.body.contains(&format!("Hello from host {n}")),
                "host {n} lost its post: {}",
                index.body
            );
            assert!(index.body.contains("Log Out"), "{}", index.body);
        }
        let login = http(
            &url(n, 0, "/auth/login"),
            &[("username", "ada"), ("password", "lovelace-1815")],
            None,
        );
        assert_eq!(login.status, 302, "host {n} lost its user: {}", login.body);
    }
    let head = common::git(&sb, &dir, &["rev-parse", "HEAD"]);
    let (stdout, _) = es(&["status", "a"], 0);
    for entry in tb.entries(&hosts) {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{entry} ")))
            .unwrap_or_else(|| panic!("no row for {entry}:\n{stdout}"));
        assert!(
            row.contains(&format!(" {v2} ")) && row.contains("healthy") && row.contains("2/2"),
            "{row}"
        );
        assert!(row.contains(&head[..12]), "the commit built: {row}");
    }

    // The secret: in the instance config (0600), never in es's output or a command line.
    let config_py = tb.exec(
        34,
        &[
            "sh",
            "-c",
            &format!(
                "stat -c %a /home/{}/{prefix}/a/shared/var/flaskr-instance/config.py",
                tb.user
            ),
        ],
    );
    assert_eq!(text(&config_py).0.trim(), "600");
    assert!(!printed.contains(&secret), "es printed the secret");
    for n in hosts {
        let ps = tb.exec(n, &["ps", "-eo", "args"]);
        let (listing, _) = text(&ps);
        assert!(listing.contains("gunicorn"), "{listing}");
        assert!(!listing.contains(&secret), "the secret on a command line");
    }
    fresh(&tb, &hosts, prefix);
}

/// The summary line of `entry` (`user@addr`).
fn summary_line<'a>(stderr: &'a str, entry: &str) -> &'a str {
    stderr
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(&format!("{entry} ")))
        .unwrap_or_else(|| panic!("no summary line for {entry} in\n{stderr}"))
}

#[test]
fn a_program_that_cannot_start_shows_supervisords_reason_in_one_line() {
    let tb = bed!();
    let sb = Sandbox::new();
    let host = 36;
    let prefix = "real_faults";
    let entry = tb.entries(&[host]).remove(0);
    fresh(&tb, &[host], prefix);

    // A project of es's default template (a stdlib HTTP service), on the index.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    let name = format!("real_f_{}_{stamp}", std::process::id());
    let dir = common::create_project(&sb, &name);
    std::fs::write(
        dir.join("deploy.toml"),
        format!("[project]\nname = \"{name}\"\n\n{}", tb.index_section()),
    )
    .unwrap();
    common::git(&sb, &dir, &["commit", "-qam", "the test index"]);
    expect_code(
        &common::es_build(&sb, &tb, &dir, &["--version", "1.0.0"]),
        0,
    );

    // Three templates: es's default; one whose program is /nonexistent; one with
    // a sleeper that ignores SIGTERM (it keeps supervisord in its shutdown state).
    let default =
        std::fs::read_to_string(common::repo_root().join("templates/supervisord.conf")).unwrap();
    let program_line = "command={{ venv_dir }}/bin/es-env {{ venv_dir }}/bin/{{ project }} {{ port }}%(process_num)d";
    assert!(default.contains(program_line));
    let sleeper = "\n[program:sleeper]\ncommand=/bin/sh -c 'trap \"\" TERM; exec sleep 100000'\nstartsecs=0\nstopwaitsecs=3600\nstdout_logfile={{ venv_dir }}/logs/sleeper.log\n";
    let work = sb.work.path();
    std::fs::write(work.join("good.conf"), &default).unwrap();
    std::fs::write(
        work.join("bad.conf"),
        default.replace(
            program_line,
            "command=/nonexistent {{ port }}%(process_num)d",
        ),
    )
    .unwrap();
    std::fs::write(work.join("sleeper.conf"), format!("{default}{sleeper}")).unwrap();
    let config = |template: &str| {
        format!(
            "[project]\nname = \"{name}\"\n\n{}\n[roles]\nweb = [\"{entry}\"]\n\n{}\n[deploy]\nvirtualenv_prefix = \"~/{prefix}\"\nvenv_ports = {{ a = \"862\", b = \"863\", c = \"864\" }}\ndefault_role = \"web\"\nsupervisor_template = \"{template}\"\n\n[deploy.health]\ntimeout = 20\n",
            tb.index_section(),
            tb.ssh_section(),
        )
    };
    let es = |args: &[&str], code: i32| expect_code(&sb.es().args(args).output().unwrap(), code);
    let reason = "can't find command '/nonexistent'";

    // Venv a serves 1.0.0.
    sb.write_config(&config("good.conf"));
    es(&["deploy", "1.0.0", "a", "prod"], 0);

    // The same version with a command that does not exist: supervisord's reason,
    // and the host back on the configuration that serves.
    sb.write_config(&config("bad.conf"));
    let (_, stderr) = es(&["deploy", "1.0.0", "a", "prod"], 1);
    let line = summary_line(&stderr, &entry);
    assert!(
        line.contains("FAILED") && line.contains("at switch"),
        "{line}"
    );
    assert!(
        stderr.contains(&format!("{name}:{name}_0 BACKOFF: {reason}")),
        "supervisord's reason:\n{stderr}"
    );
    assert!(stderr.contains("back on 1.0.0"), "{stderr}");
    es(&["supervisor", "status", "a"], 0);

    // Venv b has nothing to go back to: its supervisord is stopped, and the
    // summary says the host runs no healthy release.
    let (_, stderr) = es(&["deploy", "1.0.0", "b", "prod"], 1);
    assert!(stderr.contains(reason), "{stderr}");
    assert!(stderr.contains("runs no healthy release"), "{stderr}");
    // es supervisor start (supervisord started afresh) says why, not only
    // that something is not RUNNING.
    let (_, stderr) = es(&["supervisor", "start", "b"], 1);
    assert!(stderr.contains(reason), "{stderr}");
    // es supervisor status names what is not RUNNING, with supervisord's reason.
    let (_, stderr) = es(&["supervisor", "status", "b"], 1);
    assert!(
        stderr.contains(&format!("{entry} {name}:{name}_0 ")) && stderr.contains(reason),
        "{stderr}"
    );
    es(&["supervisor", "shutdown", "b"], 0);
    let (_, stderr) = es(&["supervisor", "start", "b"], 1);
    assert!(
        stderr.contains(&format!("{name}:{name}_0 BACKOFF: {reason}")),
        "{stderr}"
    );
    let (_, stderr) = es(&["supervisor", "start", &name, "b"], 1);
    assert!(
        stderr.contains(&format!(
            "{name}:{name}_0 cannot start: {reason} (supervisord: NO_FILE)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");

    // Faults of supervisord, one line each.
    let (_, stderr) = es(&["supervisor", "stop", &format!("{name}:nope"), "a"], 1);
    assert!(
        stderr.contains(&format!(
            "supervisord has no process or group {name}:nope; it runs {name}:{name}_0, {name}:{name}_1 (supervisord: BAD_NAME)"
        )),
        "{stderr}"
    );
    // Already running: nothing to do, and healthy.
    let (stdout, _) = es(&["-v", "supervisor", "start", &name, "a"], 0);
    assert!(stdout.contains("already running"), "{stdout}");
    // supervisord shutting down (it waits for the sleeper of venv c): every
    // command is refused.
    sb.write_config(&config("sleeper.conf"));
    es(&["deploy", "1.0.0", "c", "prod"], 0);
    let ctl =
        format!("cd ~/{prefix}/c && .es/tools/bin/supervisorctl -c etc/supervisord.conf shutdown");
    es(&["run", "--", &ctl], 0);
    let (_, stderr) = es(&["supervisor", "stop", "sleeper", "c"], 1);
    assert!(
        stderr.contains("supervisord is shutting down and takes no commands")
            && stderr.contains("(supervisord: SHUTDOWN_STATE)"),
        "{stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");

    fresh(&tb, &[host], prefix);
}
