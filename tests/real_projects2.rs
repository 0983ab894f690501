//! Real projects, round two, on the test bed (hosts 42-44): an answer to a
//! health check counts only from this venv's own listener, and a port that
//! another project already serves is named before anything switches.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{expect_code, unique, Sandbox, Testbed};

/// A project made by `es create`, pointed at `hosts`, committed and built;
/// returns its directory.
fn built_project(
    tb: &Testbed,
    sb: &Sandbox,
    hosts: &[usize],
    prefix: &str,
    venv_ports: &str,
) -> PathBuf {
    let dir = common::create_project(sb, &unique("rp2"));
    let config = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    let addrs: Vec<String> = hosts.iter().map(|n| tb.addr(*n).to_string()).collect();
    std::fs::write(
        dir.join("deploy.toml"),
        common::point_at_test_bed(tb, &config, &addrs, prefix, venv_ports),
    )
    .unwrap();
    common::git(sb, &dir, &["commit", "-qam", "deploy to the test bed"]);
    let out = common::es_build(sb, tb, &dir, &[]);
    expect_code(&out, 0);
    dir
}

/// Stops every supervisord under `~/PREFIX` on `hosts` and removes the prefix.
fn clean(tb: &Testbed, hosts: &[usize], prefix: &str) {
    for &n in hosts {
        let script = common::clear_prefix(&format!("/home/{}/{prefix}", tb.user));
        tb.exec(n, &["sh", "-c", &script]);
    }
}

fn es(sb: &Sandbox, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = sb.es().current_dir(dir).args(args).output().unwrap();
    let (stdout, stderr) = common::text(&out);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// What answers on `port` of host `n`.
fn body(tb: &Testbed, n: usize, port: &str) -> String {
    let url = format!("http://{}:{port}/", tb.addr(n));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", &url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_port_another_project_serves_is_named_before_the_switch_and_never_healthy() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [42, 43];
    let prefix = unique("rp2_ports");
    clean(&tb, &hosts, &prefix);
    let first = built_project(&tb, &sb, &hosts, &prefix, "{ a = \"872\" }");
    let first_name = first.file_name().unwrap().to_str().unwrap().to_string();
    let (code, out) = es(&sb, &first, &["deploy", "latest", "a", "prod"]);
    assert_eq!(code, 0, "{out}");

    // A second project of the same prefix, its venv b on the ports a serves.
    let second = built_project(&tb, &sb, &hosts, &prefix, "{ a = \"872\", b = \"872\" }");
    let (code, out) = es(&sb, &second, &["deploy", "latest", "b", "prod"]);
    assert_eq!(code, 1, "{out}");
    let holder = "port 8720 is held by pid ";
    let owner = format!(" of /home/{}/{prefix}/a", tb.user);
    assert!(out.contains(holder) && out.contains(&owner), "{out}");
    assert!(out.contains("nothing was staged or switched"), "{out}");
    for &n in &hosts {
        // b never switched; a still answers on its ports.
        let current = tb.exec(
            n,
            &[
                "test",
                "-e",
                &format!("/home/{}/{prefix}/b/current", tb.user),
            ],
        );
        assert!(!current.status.success(), "b was switched on host {n}");
        assert!(
            body(&tb, n, "8720").starts_with(&first_name),
            "host {n} stopped serving the first project"
        );
    }
    let (code, out) = es(&sb, &second, &["status", "b"]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("healthy 2/2"), "{out}");
    let (code, out) = es(&sb, &second, &["validate", "-R", "dev", "b"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(holder) && out.contains(&owner), "{out}");
    // The first project's own venv is healthy and valid.
    let (code, out) = es(&sb, &first, &["validate", "-R", "dev", "a"]);
    assert_eq!(code, 0, "{out}");

    // b served on ports of its own, then pointed at a's ports: its processes
    // run, something answers, and still b is not healthy: the holder is named.
    let moved = second.join("deploy.toml");
    let text = std::fs::read_to_string(&moved).unwrap();
    std::fs::write(&moved, text.replace("b = \"872\"", "b = \"873\"")).unwrap();
    let (code, out) = es(&sb, &second, &["deploy", "latest", "b", "prod"]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&moved).unwrap();
    std::fs::write(&moved, text.replace("b = \"873\"", "b = \"872\"")).unwrap();
    let (code, out) = es(&sb, &second, &["status", "b"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UNHEALTHY"), "{out}");
    assert!(out.contains(holder) && out.contains(&owner), "{out}");
    let (code, out) = es(&sb, &first, &["status", "a"]);
    assert_eq!(code, 0, "{out}");
    clean(&tb, &hosts, &prefix);
}

/// A deploy.env value is a template: a mistake in it is a configuration
/// error naming the key, found before any host is contacted.
#[test]
fn a_bad_template_in_deploy_env_exits_2_naming_the_key() {
    let sb = Sandbox::new();
    sb.write_config(
        "[project]\nname = \"envtpl\"\n[index]\nurl = \"http://127.0.0.1:9/simple/\"\n\
         [roles]\nweb = [\"deploy@192.0.2.1\"]\n[deploy]\nvenv_ports = { a = \"880\" }\n\
         [deploy.env]\nDATABASE_URL = \"sqlite:///{{ shared_dir }}/db.sqlite\"\n\
         MEDIA = \"{{ no_such_variable }}/media\"\n",
    );
    let out = sb
        .es()
        .args(["deploy", "-R", "web", "1.0", "a", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(
        stderr.contains("deploy.toml:11:1: `deploy.env.MEDIA`"),
        "{stderr}"
    );
    assert!(!stderr.contains("DATABASE_URL"), "{stderr}");
}

/// `set(text, table, key, value)`: the key's line in that table, replaced or added.
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

fn toml_str(s: &str) -> String {
    toml::Value::from(s).to_string()
}

/// A Flask app kept as code and a requirements file only: a package with a
/// factory, a template, a top-level config module, a migration script.
fn requirements_only_flask_app(dir: &Path) {
    let files = [
        ("requirements.txt", "-r requirements/base.txt\n"),
        ("requirements/base.txt", "flask==3.0.3  # the web framework\n"),
        ("config.py", "GREETING = \"hello from a requirements-only app\"\n"),
        (
            "app/__init__.py",
            "import os\nimport sqlite3\n\nfrom flask import Flask, render_template\n\nimport config\n\n\n\
             def create_app():\n    app = Flask(__name__)\n\n    @app.route(\"/\")\n    def index():\n\
             \x20       with sqlite3.connect(os.environ[\"DATABASE_PATH\"]) as db:\n\
             \x20           runs = db.execute(\"SELECT count(*) FROM migrations_run\").fetchone()[0]\n\
             \x20       return render_template(\"index.html\", greeting=config.GREETING, runs=runs)\n\n    return app\n",
        ),
        (
            "app/migrate.py",
            "import os\nimport sqlite3\n\nwith sqlite3.connect(os.environ[\"DATABASE_PATH\"]) as db:\n\
             \x20   db.execute(\"CREATE TABLE IF NOT EXISTS migrations_run (at TEXT)\")\n\
             \x20   db.execute(\"INSERT INTO migrations_run VALUES (datetime('now'))\")\n",
        ),
        (
            "app/templates/index.html",
            "{{ greeting }}: migrated {{ runs }} times\n",
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn a_requirements_only_flask_app_deploys_with_es_commands_and_keeps_its_database_in_the_shared_dir()
{
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [42, 43, 44];
    let prefix = unique("rp2_flask");
    clean(&tb, &hosts, &prefix);
    let name = unique("reqonly");
    let dir = sb.work.path().join(&name);
    std::fs::create_dir(&dir).unwrap();
    requirements_only_flask_app(&dir);
    common::git(&sb, &dir, &["init", "-q", "-b", "main"]);
    let es = |args: &[&str], code: i32| -> String {
        let out = sb
            .es()
            .current_dir(&dir)
            .args(args)
            .env("TWINE_USERNAME", &tb.index_user)
            .env("TWINE_PASSWORD", &tb.index_password)
            .output()
            .unwrap();
        let (stdout, stderr) = expect_code(&out, code);
        stdout + &stderr
    };
    let out = es(&["init", "--package"], 0);
    assert!(out.contains("added   pyproject.toml"), "{out}");
    assert!(out.contains("app:create_app()"), "{out}");
    let pyproject = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
    assert!(pyproject.contains("\"flask==3.0.3\""), "{pyproject}");

    // The site's settings; the generated pyproject.toml is left as it is.
    let mut config = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    let entries: Vec<String> = tb.entries(&hosts).iter().map(|e| toml_str(e)).collect();
    for (table, key, value) in [
        ("index", "url", toml_str(&tb.index_url)),
        ("index", "upload_url", toml_str(&tb.upload_url)),
        ("index", "python", toml_str("3.11")),
        ("roles", "dev", format!("[{}]", entries.join(", "))),
        ("ssh", "user", toml_str(&tb.user)),
        (
            "ssh",
            "identity_file",
            toml_str(&tb.key.display().to_string()),
        ),
        (
            "ssh",
            "known_hosts",
            toml_str(&tb.known_hosts.display().to_string()),
        ),
        (
            "deploy",
            "virtualenv_prefix",
            toml_str(&format!("~/{prefix}")),
        ),
        ("deploy", "venv_ports", "{ a = \"874\" }".into()),
        (
            "deploy",
            "release_hooks",
            "[\"python -m app.migrate\"]".into(),
        ),
        ("deploy", "release_hooks_on", toml_str("all")),
        ("deploy", "shared_dirs", "{ db = \"var/db\" }".into()),
        (
            "deploy.env",
            "DATABASE_PATH",
            toml_str("{{ shared_dir }}/db/app.sqlite"),
        ),
    ] {
        config = set(&config, table, key, &value);
    }
    std::fs::write(dir.join("deploy.toml"), &config).unwrap();
    common::git(&sb, &dir, &["add", "-A"]);
    common::git(&sb, &dir, &["commit", "-qm", "deploy with es"]);

    let out = es(&["pypi", "sync", "--project", "gunicorn"], 0);
    assert!(out.to_lowercase().contains("flask-3.0.3"), "{out}");
    let out = es(&["build"], 0);
    assert!(!out.contains("warning"), "{out}");
    es(&["deploy", "latest", "a", "prod"], 0);
    for &n in &hosts {
        assert_eq!(
            body(&tb, n, "8740"),
            "hello from a requirements-only app: migrated 1 times",
            "host {n}"
        );
        let db = format!("/home/{}/{prefix}/a/shared/db/app.sqlite", tb.user);
        assert!(tb.exec(n, &["test", "-s", &db]).status.success(), "{db}");
    }

    // The next release migrates the same database: it outlived the first.
    es(&["build"], 0);
    es(&["deploy", "latest", "a", "prod"], 0);
    for &n in &hosts {
        assert_eq!(
            body(&tb, n, "8741"),
            "hello from a requirements-only app: migrated 2 times",
            "host {n}"
        );
    }
    clean(&tb, &hosts, &prefix);
}

/// index.python unset: es asks a host of the role for its Python, and a
/// project that needs a newer one is refused by `es pypi sync --project`,
/// naming both versions, before anything is downloaded or uploaded.
#[test]
fn a_project_needing_a_newer_python_than_the_hosts_is_refused_naming_the_versions() {
    let tb = bed!();
    let sb = Sandbox::new();
    let dir = common::create_project(&sb, &unique("rp2py"));
    let config = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    std::fs::write(
        dir.join("deploy.toml"),
        common::point_at_test_bed(
            &tb,
            &config,
            &[tb.addr(44).to_string()],
            "rp2_py",
            "{ a = \"875\" }",
        ),
    )
    .unwrap();
    let pyproject = dir.join("pyproject.toml");
    let text = std::fs::read_to_string(&pyproject).unwrap();
    std::fs::write(
        &pyproject,
        text.replace(
            "requires-python = \">=3.8\"",
            "requires-python = \">=3.99\"",
        ),
    )
    .unwrap();
    let host_python = tb.exec(
        44,
        &[
            "python3",
            "-c",
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ],
    );
    let host_python = String::from_utf8_lossy(&host_python.stdout)
        .trim()
        .to_string();
    let (code, out) = es(&sb, &dir, &["pypi", "sync", "--project"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "the project needs Python >=3.99 (pyproject.toml requires-python); the hosts run {host_python}"
        )),
        "{out}"
    );
    assert!(out.contains("asked"), "{out}");

    // A project for a Python newer than the hosts' (this machine's is): built
    // here, its first deploy's dry run resolves it for the host's Python in a
    // temporary venv, and is refused there.
    let needs = format!(">{host_python}");
    std::fs::write(
        &pyproject,
        text.replace(
            "requires-python = \">=3.8\"",
            &format!("requires-python = \"{needs}\""),
        ),
    )
    .unwrap();
    clean(&tb, &[44], "rp2_py");
    common::git(&sb, &dir, &["commit", "-qam", "needs a newer Python"]);
    expect_code(&common::es_build(&sb, &tb, &dir, &[]), 0);
    let (code, out) = es(&sb, &dir, &["deploy", "--dry-run", "latest", "a", "prod"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "does not resolve from the index for this host's Python {host_python}"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{host_python} not in '{needs}'")),
        "{out}"
    );
    let venv = format!("/home/{}/rp2_py", tb.user);
    assert!(!tb.exec(44, &["test", "-e", &venv]).status.success());
}

/// `es init` in a Django project writes the nginx site for its static and
/// media files, an es template that deploy.extra_templates can render.
#[test]
fn es_init_writes_an_nginx_site_for_a_django_project() {
    let sb = Sandbox::new();
    let dir = sb.work.path().join("mysite");
    std::fs::create_dir_all(dir.join("mysite")).unwrap();
    for (path, text) in [
        ("manage.py", "import django\n"),
        ("mysite/__init__.py", ""),
        (
            "mysite/wsgi.py",
            "from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n",
        ),
        (
            "pyproject.toml",
            "[project]\nname = \"mysite\"\nversion = \"0.0.0\"\n",
        ),
    ] {
        std::fs::write(dir.join(path), text).unwrap();
    }
    let (code, out) = es(&sb, &dir, &["init"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("added   conf/nginx-site.conf"), "{out}");
    let site = std::fs::read_to_string(dir.join("conf/nginx-site.conf")).unwrap();
    assert!(site.contains("alias {{ shared_dir }}/media/;"), "{site}");
    assert!(
        site.contains("extra_templates = { \"conf/nginx-site.conf\""),
        "{site}"
    );
}
