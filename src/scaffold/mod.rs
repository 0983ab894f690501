//! `es create`, `es init` and `es templates`: new projects from the templates
//! built into es.
//!
//! The templates live in `templates/` of the es repository and are embedded at
//! compile time by the explicit table below (a unit test checks that the table
//! and the directories agree). Every file is rendered with minijinja; a path
//! segment `__project__` becomes the project name, and a top-level `gitignore`
//! becomes `.gitignore` (a real `.gitignore` under `templates/` would apply to
//! the es repository itself).
//!
//! Every template starts from the `init` files (`deploy.toml` and
//! `conf/supervisord.conf`); `conf/supervisord.conf` is es's own default
//! supervisord template (`templates/supervisord.conf`), copied unchanged so that
//! `es deploy` renders it later: it passes through the renderer inside a
//! `{% raw %}` block.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use minijinja::{context, Environment, UndefinedBehavior};

use crate::bad_input;
use crate::cli::GlobalOpts;
use crate::config::ProcessManager;
use crate::deploy::{DEFAULT_SUPERVISOR_TEMPLATE, DEFAULT_SYSTEMD_TEMPLATE};
pub use create::create;
pub use init::init;

mod create;
mod init;

/// One file of a template.
struct TemplateFile {
    /// Path in the generated project, before `__project__` and `gitignore` are replaced.
    path: &'static str,
    /// The template text.
    source: &'static str,
    /// Copied as it is (rendered inside `{% raw %}`): a template for a later step.
    verbatim: bool,
    /// Made executable (mode 755).
    executable: bool,
}

/// A file of `templates/DIR/PATH`.
macro_rules! file {
    ($dir:literal, $path:literal) => {
        file!($dir, $path, false)
    };
    ($dir:literal, $path:literal, $exec:expr) => {
        TemplateFile {
            path: $path,
            source: include_str!(concat!("../../templates/", $dir, "/", $path)),
            verbatim: false,
            executable: $exec,
        }
    };
}

/// A project template: its name, a line about it, and its own files.
pub struct Template {
    pub name: &'static str,
    pub about: &'static str,
    files: &'static [TemplateFile],
}

/// The deploy files every template has: the whole `init` template, with the
/// process file of supervisord (or, with `--process-manager systemd`,
/// [`SYSTEMD_FILE`] instead).
const INIT_FILES: &[TemplateFile] = &[
    file!("init", "deploy.toml"),
    TemplateFile {
        path: "conf/supervisord.conf",
        source: DEFAULT_SUPERVISOR_TEMPLATE,
        verbatim: true,
        executable: false,
    },
];

/// es's own systemd template unit, the process file of a systemd project.
const SYSTEMD_FILE: TemplateFile = TemplateFile {
    path: "conf/systemd.service",
    source: DEFAULT_SYSTEMD_TEMPLATE,
    verbatim: true,
    executable: false,
};

/// The templates, in the order `es templates` lists them.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "default",
        about: "a small HTTP service, standard library only (http.server), with tests",
        files: &[
            file!("default", "pyproject.toml"),
            file!("default", "README.md"),
            file!("default", "gitignore"),
            file!("default", "__project__/__init__.py"),
            file!("default", "__project__/main.py"),
            file!("default", "__project__/settings.py"),
            file!("default", "tests/__init__.py"),
            file!("default", "tests/test_main.py"),
        ],
    },
    Template {
        name: "django",
        about: "a Django project served by gunicorn, one gunicorn per process port",
        files: &[
            file!("django", "pyproject.toml"),
            file!("django", "README.md"),
            file!("django", "gitignore"),
            file!("django", "manage.py", true),
            file!("django", "__project__/__init__.py"),
            file!("django", "__project__/main.py"),
            file!("django", "__project__/settings.py"),
            file!("django", "__project__/urls.py"),
            file!("django", "__project__/views.py"),
            file!("django", "__project__/wsgi.py"),
            file!("django", "tests/__init__.py"),
            file!("django", "tests/test_views.py"),
        ],
    },
    Template {
        name: "init",
        about: "only the deploy files (deploy.toml, conf/supervisord.conf), as `es init` adds them",
        files: &[],
    },
];

/// A rendered file, ready to be written.
#[derive(Debug)]
pub struct Rendered {
    /// Relative to the project root.
    pub path: PathBuf,
    pub contents: String,
    pub executable: bool,
}

/// The template called `name`, or a bad-input error listing them.
pub fn find_template(name: &str) -> Result<&'static Template> {
    match TEMPLATES.iter().find(|t| t.name == name) {
        Some(template) => Ok(template),
        None => {
            let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
            bad_input!(
                "unknown template `{name}`; es has: {} (see `es templates`)",
                names.join(", ")
            )
        }
    }
}

/// Checks a name for `es create`: it becomes a Python package, so
/// `^[A-Za-z_][A-Za-z0-9_]*$` and not a Python keyword.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bad_input!(
            "bad project name `{name}`: it becomes a Python package, so it must match ^[A-Za-z_][A-Za-z0-9_]*$ (e.g. shop_api)"
        );
    }
    if PYTHON_KEYWORDS.contains(&name) {
        bad_input!("bad project name `{name}`: it is a Python keyword");
    }
    if SHADOWED_MODULES.contains(&name) {
        bad_input!(
            "bad project name `{name}`: the package would hide the module `{name}` the generated code imports"
        );
    }
    Ok(())
}

/// Checks a name for `es init`: a distribution name (PEP 508), which may hold `-` and `.`.
pub fn validate_dist_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bad_input!(
            "bad project name `{name}`: use letters, digits, `_`, `-` and `.`, starting and ending with a letter, digit or `_`"
        );
    }
    Ok(())
}

const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Modules the generated projects import: a package of the same name would hide them.
const SHADOWED_MODULES: &[&str] = &[
    "argparse",
    "django",
    "gunicorn",
    "http",
    "json",
    "logging",
    "os",
    "pathlib",
    "signal",
    "sys",
    "tests",
    "threading",
    "unittest",
    "urllib",
];

/// Renders every file of `template` for project `project`, its processes run
/// by `manager`.
pub fn render(
    template: &Template,
    project: &str,
    manager: ProcessManager,
) -> Result<Vec<Rendered>> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let ctx = context! {
        project => project,
        template => template.name,
        secret_key => secret_key(),
        es_version => env!("CARGO_PKG_VERSION"),
        process_manager => manager,
    };
    let process_file = match manager {
        ProcessManager::Supervisord => &INIT_FILES[1],
        ProcessManager::Systemd => &SYSTEMD_FILE,
    };
    let mut out = Vec::new();
    for file in [&INIT_FILES[0], process_file]
        .into_iter()
        .chain(template.files)
    {
        let wrapped;
        let source = if file.verbatim {
            if file.source.contains("{% endraw") || file.source.contains("{%- endraw") {
                return Err(anyhow!("{}: cannot hold `endraw`", file.path));
            }
            wrapped = format!("{{% raw %}}{}{{% endraw %}}", file.source);
            wrapped.as_str()
        } else {
            file.source
        };
        let contents = env
            .render_str(source, &ctx)
            .with_context(|| format!("rendering template {}/{}", template.name, file.path))?;
        out.push(Rendered {
            path: output_path(file.path, project),
            contents,
            executable: file.executable,
        });
    }
    Ok(out)
}

/// A template path as written in the project: `__project__` segments become the
/// project name, a top-level `gitignore` becomes `.gitignore`.
fn output_path(path: &str, project: &str) -> PathBuf {
    if path == "gitignore" {
        return PathBuf::from(".gitignore");
    }
    path.split('/')
        .map(|seg| if seg == "__project__" { project } else { seg })
        .collect()
}

/// A random key for Django's SECRET_KEY (dev only; production sets its own).
fn secret_key() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut key = String::with_capacity(50);
    while key.len() < 50 {
        // Every RandomState is seeded from the OS's randomness.
        let mut value = RandomState::new().build_hasher().finish();
        for _ in 0..8 {
            key.push(ALPHABET[(value % ALPHABET.len() as u64) as usize] as char);
            value /= ALPHABET.len() as u64;
        }
    }
    key.truncate(50);
    key
}

/// Writes one rendered file under `root`; never replaces an existing file.
fn write_new(root: &Path, file: &Rendered) -> Result<()> {
    let path = root.join(&file.path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    out.write_all(file.contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if file.executable {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

/// Human output on stderr (unless quiet or JSON) and the JSON summary on stdout.
struct Out {
    quiet: bool,
    json: bool,
}

impl Out {
    fn new(global: &GlobalOpts) -> Out {
        Out {
            quiet: global.quiet,
            json: global.json,
        }
    }

    fn say(&self, line: &str) {
        if !self.quiet && !self.json {
            eprintln!("{line}");
        }
    }

    fn summary(&self, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        }
    }
}

/// `es templates` (and `es create --list`): one line per template.
pub fn list_templates() -> Result<bool> {
    let width = TEMPLATES.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    for t in TEMPLATES {
        writeln!(stdout, "{:<width$}  {}", t.name, t.about).context("writing to stdout")?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
