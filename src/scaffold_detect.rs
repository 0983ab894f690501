//! What `es init` finds in an existing project: how it is packaged, and what
//! runs it (a console script named like the project, or a WSGI/ASGI app that
//! gunicorn can serve), so that the supervisord template it writes runs it.

use std::fs;
use std::path::{Path, PathBuf};

/// What serves the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A console script named like the project (`[project.scripts]`).
    Script(String),
    /// `module:app` (or `module:factory()`) for gunicorn.
    Wsgi(String),
    /// `module:app` of an ASGI app (FastAPI, Starlette), for gunicorn's uvicorn worker.
    Asgi(String),
    None,
}

/// Whether the directory has packaging es can build.
pub fn is_packaged(dir: &Path) -> bool {
    ["pyproject.toml", "setup.py", "setup.cfg"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// Top-level packages: directories holding an `__init__.py` (not tests).
pub fn packages(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("__init__.py").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with('.') && n != "tests" && n != "test")
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Finds what runs the project `name` in `dir`.
pub fn entry(dir: &Path, name: &str) -> Entry {
    if has_console_script(dir, name) {
        return Entry::Script(name.to_string());
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for package in packages(dir) {
        collect_py(&dir.join(&package), 2, &mut files);
    }
    files.sort();
    for file in &files {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let Some(module) = module_name(dir, file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(var) = assigned_call(line, &["Flask(", "Bottle(", "Falcon(", "falcon.App("])
            {
                return Entry::Wsgi(format!("{module}:{var}"));
            }
            if line.starts_with("application = get_wsgi_application(") {
                return Entry::Wsgi(format!("{module}:application"));
            }
            if let Some(var) = assigned_call(line, &["FastAPI(", "Starlette("]) {
                return Entry::Asgi(format!("{module}:{var}"));
            }
        }
        if text.lines().any(|l| l.starts_with("def create_app(")) {
            return Entry::Wsgi(format!("{module}:create_app()"));
        }
    }
    Entry::None
}

/// `VAR = Flask(...)` at the start of a line: VAR.
fn assigned_call(line: &str, calls: &[&str]) -> Option<String> {
    let (var, value) = line.split_once('=')?;
    let var = var.trim();
    let valid = !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let value = value.trim_start();
    (valid && !line.starts_with(char::is_whitespace) && calls.iter().any(|c| value.starts_with(c)))
        .then(|| var.to_string())
}

fn has_console_script(dir: &Path, name: &str) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("pyproject.toml")) else {
        return false;
    };
    let Ok(value) = text.parse::<toml::Table>() else {
        return false;
    };
    value
        .get("project")
        .and_then(|p| p.get("scripts"))
        .and_then(|s| s.as_table())
        .is_some_and(|scripts| scripts.contains_key(name))
}

fn collect_py(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() && depth > 0 && path.join("__init__.py").is_file() {
            collect_py(&path, depth - 1, out);
        } else if path.extension().is_some_and(|e| e == "py") {
            out.push(path);
        }
    }
}

/// `pkg/sub/mod.py` -> `pkg.sub.mod`; `pkg/__init__.py` -> `pkg`.
fn module_name(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?.with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str().map(str::to_string))
        .collect();
    if parts.last().is_some_and(|p| p == "__init__") {
        parts.pop();
    }
    (!parts.is_empty()).then(|| parts.join("."))
}

/// The instance folder of a Flask app that keeps its data there
/// (`Flask(__name__, instance_relative_config=True)`, or `app.instance_path` used):
/// `var/MODULE-instance`, where Flask puts it for a package installed in a venv.
/// Inside a release it would be new (empty) with every release: it belongs in
/// deploy.shared_dirs.
pub fn flask_instance_dir(dir: &Path, entry: &Entry) -> Option<String> {
    let Entry::Wsgi(target) = entry else {
        return None;
    };
    let module = target.split(':').next()?;
    let base = dir.join(module.replace('.', "/"));
    let text = [base.with_extension("py"), base.join("__init__.py")]
        .iter()
        .find_map(|f| fs::read_to_string(f).ok())?;
    let flask = text.contains("Flask(__name__");
    let uses_instance =
        text.contains("instance_relative_config=True") || text.contains("instance_path");
    (flask && uses_instance).then(|| format!("var/{module}-instance"))
}

/// The supervisord template running `entry`, from the default one; and what
/// the user must know or do.
pub fn template_for(default: &str, entry: &Entry, name: &str) -> (String, String) {
    let script_line =
        "{{ venv_dir }}/bin/es-env {{ venv_dir }}/bin/{{ project }} {{ port }}%(process_num)d";
    let gunicorn = |target: &str, worker: &str| {
        format!("{{{{ venv_dir }}}}/bin/es-env {{{{ venv_dir }}}}/bin/gunicorn --bind 0.0.0.0:{{{{ port }}}}%(process_num)d{worker} '{target}'")
    };
    match entry {
        Entry::Script(_) => (
            default.to_string(),
            format!("conf/supervisord.conf runs the console script `{name} PORT`: it must take the port as its first argument"),
        ),
        Entry::Wsgi(target) => (
            default.replace(script_line, &gunicorn(target, "")),
            format!("conf/supervisord.conf runs gunicorn with the WSGI app {target}; deploy.requirements installs gunicorn into every release"),
        ),
        Entry::Asgi(target) => (
            default.replace(script_line, &gunicorn(target, " --worker-class uvicorn.workers.UvicornWorker")),
            format!("conf/supervisord.conf runs gunicorn with uvicorn's worker for the ASGI app {target}; deploy.requirements installs gunicorn and uvicorn into every release"),
        ),
        Entry::None => (
            default.to_string(),
            format!("fill in `command=` in conf/supervisord.conf: es found no console script `{name}` and no WSGI/ASGI app (Flask(...), create_app(), Django's wsgi.py, FastAPI(...))"),
        ),
    }
}

/// The app server packages `entry` needs beside the project (deploy.requirements).
pub fn app_server(entry: &Entry) -> Vec<&'static str> {
    match entry {
        Entry::Wsgi(_) => vec!["gunicorn"],
        Entry::Asgi(_) => vec!["gunicorn", "uvicorn"],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_flask_factories_django_and_fastapi() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("shop/web")).unwrap();
        fs::write(d.join("shop/__init__.py"), "").unwrap();
        fs::write(d.join("shop/web/__init__.py"), "").unwrap();
        fs::write(
            d.join("shop/web/app.py"),
            "from flask import Flask\n\napp = Flask(__name__)\n",
        )
        .unwrap();
        assert_eq!(entry(d, "shop"), Entry::Wsgi("shop.web.app:app".into()));
        fs::write(
            d.join("shop/web/app.py"),
            "def create_app(config=None):\n    pass\n",
        )
        .unwrap();
        assert_eq!(
            entry(d, "shop"),
            Entry::Wsgi("shop.web.app:create_app()".into())
        );
        fs::write(d.join("shop/web/app.py"), "").unwrap();
        fs::write(
            d.join("shop/wsgi.py"),
            "application = get_wsgi_application()\n",
        )
        .unwrap();
        assert_eq!(
            entry(d, "shop"),
            Entry::Wsgi("shop.wsgi:application".into())
        );
        fs::write(d.join("shop/wsgi.py"), "api = FastAPI(title='x')\n").unwrap();
        assert_eq!(entry(d, "shop"), Entry::Asgi("shop.wsgi:api".into()));
        fs::write(d.join("shop/wsgi.py"), "").unwrap();
        assert_eq!(entry(d, "shop"), Entry::None);
        fs::write(
            d.join("pyproject.toml"),
            "[project]\nname='shop'\n[project.scripts]\nshop = 'shop.main:main'\n",
        )
        .unwrap();
        assert_eq!(entry(d, "shop"), Entry::Script("shop".into()));
        assert_eq!(packages(d), ["shop"]);
    }

    #[test]
    fn a_flask_instance_folder_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("blog")).unwrap();
        fs::write(
            d.join("blog/__init__.py"),
            "from flask import Flask\n\ndef create_app():\n    app = Flask(__name__, instance_relative_config=True)\n    return app\n",
        )
        .unwrap();
        let found = entry(d, "blog");
        assert_eq!(found, Entry::Wsgi("blog:create_app()".into()));
        assert_eq!(
            flask_instance_dir(d, &found).as_deref(),
            Some("var/blog-instance")
        );
        fs::write(
            d.join("blog/__init__.py"),
            "from flask import Flask\n\napp = Flask(__name__)\n",
        )
        .unwrap();
        let found = entry(d, "blog");
        assert_eq!(found, Entry::Wsgi("blog:app".into()));
        assert_eq!(flask_instance_dir(d, &found), None);
        assert_eq!(flask_instance_dir(d, &Entry::None), None);
    }
}
