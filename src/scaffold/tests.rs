//! Tests of the templates, their rendering, and the checks of names:
//! compiled only for tests (`#[cfg(test)] mod tests;` in mod.rs).

use super::init::setup_py_name;
use super::*;

#[test]
fn every_template_renders() {
    for t in TEMPLATES {
        let files = render(t, "shopapi", ProcessManager::Supervisord).expect(t.name);
        assert!(files.iter().any(|f| f.path == Path::new("deploy.toml")));
        assert!(files
            .iter()
            .any(|f| f.path == Path::new("conf/supervisord.conf")));
        for f in files
            .iter()
            .filter(|f| f.path != Path::new("conf/supervisord.conf"))
        {
            assert!(
                !f.contents.contains("{{"),
                "{}: {}",
                t.name,
                f.path.display()
            );
            assert!(!f.contents.contains("__project__"));
        }
    }
}

#[test]
fn init_has_only_the_deploy_files() {
    let files = render(
        find_template("init").unwrap(),
        "x",
        ProcessManager::Supervisord,
    )
    .unwrap();
    let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(
        paths,
        [
            PathBuf::from("deploy.toml"),
            PathBuf::from("conf/supervisord.conf")
        ]
    );
}

#[test]
fn supervisord_conf_is_es_default_template_unchanged() {
    for t in TEMPLATES {
        let files = render(t, "shopapi", ProcessManager::Supervisord).unwrap();
        let conf = files
            .iter()
            .find(|f| f.path == Path::new("conf/supervisord.conf"))
            .unwrap();
        assert_eq!(conf.contents, DEFAULT_SUPERVISOR_TEMPLATE);
        assert!(conf.contents.contains("%(process_num)d"));
        assert!(conf.contents.contains("%(program_name)s_%(process_num)d"));
    }
}

#[test]
fn supervisord_syntax_survives_plain_rendering() {
    // Without {% raw %}, as `es deploy` renders it: %(...)s passes through.
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    let text = env
        .render_str(
            DEFAULT_SUPERVISOR_TEMPLATE,
            context! { project => "p", venv_dir => "/v", port => "880", process_count => 2,
            username => "u", password => "pw", profile => "prod", version => "1",
            virtualenv_name => "a", host => "h", run_root => "/v" },
        )
        .unwrap();
    assert!(text.contains("command=/v/bin/es-env /v/bin/p 880%(process_num)d"));
    assert!(text.contains("process_name=%(program_name)s_%(process_num)d"));
}

#[test]
fn project_paths_replace_the_placeholder() {
    let files = render(
        find_template("default").unwrap(),
        "shopapi",
        ProcessManager::Supervisord,
    )
    .unwrap();
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    for want in [
        "shopapi/__init__.py",
        "shopapi/main.py",
        "shopapi/settings.py",
        "tests/test_main.py",
        ".gitignore",
        "pyproject.toml",
        "README.md",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} missing: {paths:?}");
    }
    let pyproject = &files
        .iter()
        .find(|f| f.path == Path::new("pyproject.toml"))
        .unwrap()
        .contents;
    assert!(pyproject.contains("shopapi = \"shopapi.main:main\""));
    assert!(pyproject.contains("version = \"0.0.0\""));
    let settings = &files
        .iter()
        .find(|f| f.path == Path::new("shopapi/settings.py"))
        .unwrap()
        .contents;
    for placeholder in ["${version}", "${git_version}", "${release_time}"] {
        assert!(settings.contains(placeholder));
    }
    assert!(files
        .iter()
        .all(|f| f.contents.ends_with('\n') || f.contents.is_empty()));
}

#[test]
fn rendered_deploy_toml_is_a_valid_configuration() {
    for t in TEMPLATES {
        let files = render(t, "shopapi", ProcessManager::Supervisord).unwrap();
        let deploy = files
            .iter()
            .find(|f| f.path == Path::new("deploy.toml"))
            .unwrap();
        let loaded = crate::config::parse(Path::new("deploy.toml"), deploy.contents.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(loaded.config.project.name.as_deref(), Some("shopapi"));
        assert_eq!(
            loaded.config.deploy.supervisor_template.as_deref(),
            Some("conf/supervisord.conf")
        );
    }
}

/// `es create --process-manager systemd`: the project's process file is
/// es's systemd template unit, unchanged, and deploy.toml names it.
#[test]
fn a_systemd_project_gets_the_template_unit_and_a_deploy_toml_naming_it() {
    for t in TEMPLATES {
        let files = render(t, "shopapi", ProcessManager::Systemd).unwrap();
        let file = |path: &str| files.iter().find(|f| f.path == Path::new(path));
        assert!(file("conf/supervisord.conf").is_none(), "{}", t.name);
        assert_eq!(
            file("conf/systemd.service").unwrap().contents,
            DEFAULT_SYSTEMD_TEMPLATE
        );
        let deploy = file("deploy.toml").unwrap();
        let loaded = crate::config::parse(Path::new("deploy.toml"), deploy.contents.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(
            loaded.config.deploy.process_manager,
            ProcessManager::Systemd
        );
        assert_eq!(
            loaded.config.deploy.systemd_template.as_deref(),
            Some("conf/systemd.service")
        );
        assert_eq!(loaded.config.deploy.supervisor_template, None);
    }
}

#[test]
fn table_matches_the_template_directories() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    for (dir, files) in TEMPLATES
        .iter()
        .filter(|t| t.name != "init")
        .map(|t| (t.name, t.files))
        .chain([("init", INIT_FILES)])
    {
        let mut on_disk = Vec::new();
        walk(&root.join(dir), &root.join(dir), &mut on_disk);
        let mut listed: Vec<String> = files
            .iter()
            .filter(|f| !f.verbatim)
            .map(|f| f.path.to_string())
            .collect();
        on_disk.sort();
        listed.sort();
        assert_eq!(on_disk, listed, "templates/{dir} and the table differ");
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            walk(base, &path, out);
        } else {
            let rel = path.strip_prefix(base).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn names() {
    for good in ["shopapi", "shop_api", "_x", "A1"] {
        validate_name(good).unwrap();
    }
    for bad in [
        "bad-name!",
        "1abc",
        "",
        "shop-api",
        "a b",
        "class",
        "é",
        "http",
        "django",
    ] {
        let err = validate_name(bad).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2, "{bad}");
    }
    validate_dist_name("my-app.core").unwrap();
    assert!(validate_dist_name("-x").is_err());
    assert!(validate_dist_name("a/b").is_err());
}

#[test]
fn unknown_template_is_bad_input() {
    let err = find_template("flask").map(|_| ()).unwrap_err();
    assert_eq!(crate::error::exit_code(&err), 2);
    assert!(err.to_string().contains("default"));
}

#[test]
fn setup_py_names() {
    let text =
        "from setuptools import setup\nsetup(\n    name = 'legacy_app',\n    version='1',\n)\n";
    assert_eq!(setup_py_name(text).as_deref(), Some("legacy_app"));
    assert_eq!(
        setup_py_name("setup(package_name='x', name=\"y\")").as_deref(),
        Some("y")
    );
    assert_eq!(setup_py_name("if name == 'x': pass"), None);
    assert_eq!(setup_py_name("setup(name=NAME)"), None);
}

#[test]
fn secret_keys_differ() {
    let (a, b) = (secret_key(), secret_key());
    assert_eq!(a.len(), 50);
    assert_ne!(a, b);
}
