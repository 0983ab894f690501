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
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};
use minijinja::{context, Environment, UndefinedBehavior};
use serde_json::json;

use crate::bad_input;
use crate::cli::{CreateArgs, GlobalOpts, InitArgs};
use crate::config::ProcessManager;
use crate::deploy::{DEFAULT_SUPERVISOR_TEMPLATE, DEFAULT_SYSTEMD_TEMPLATE};

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
            source: include_str!(concat!("../templates/", $dir, "/", $path)),
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

/// `es create`: render the template into ./NAME, git init, first commit, push.
pub fn create(global: &GlobalOpts, args: &CreateArgs) -> Result<bool> {
    if args.list {
        return list_templates();
    }
    let out = Out::new(global);
    let Some(name) = args.name.as_deref() else {
        bad_input!("give the project's NAME (or --list)");
    };
    validate_name(name)?;
    let template = find_template(&args.template)?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let root = cwd.join(name);
    check_target(&root)?;
    check_git_identity(&cwd)?;
    let files = render(template, name, args.process_manager)?;

    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    for file in &files {
        write_new(&root, file)?;
    }
    out.say(&format!(
        "created {name}/ from the `{}` template: {} files",
        template.name,
        files.len()
    ));

    git(&root, &["init", "-q"])?;
    // `git init -b` needs git 2.28; this works with every version.
    git(&root, &["symbolic-ref", "HEAD", "refs/heads/main"])?;
    git(&root, &["add", "-A"])?;
    let message = format!(
        "Create {name} from the es `{}` template\n\nGenerated by es {}.",
        template.name,
        env!("CARGO_PKG_VERSION")
    );
    git(&root, &["commit", "-q", "-m", &message]).with_context(|| {
        format!(
            "the project is in {}, but its first commit failed; commit it yourself",
            root.display()
        )
    })?;
    out.say("git: initialised, first commit on branch main");

    let remote = match (&args.remote, args.no_push) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => None,
        (None, false) => ask_remote(&out)?,
    };
    let pushed = match &remote {
        Some(url) => {
            push(&root, url)?;
            out.say(&format!("git: pushed main to {url}"));
            true
        }
        None => {
            out.say(&format!(
                "not pushed; to push later:\n  cd {name} && git remote add origin URL && git push -u origin main"
            ));
            false
        }
    };
    out.say(&format!(
        "next: cd {name}, edit deploy.toml (index URLs, roles), then `es build` and `es deploy -R dev latest a prod`"
    ));
    out.summary(json!({
        "event": "summary",
        "command": "create",
        "project": name,
        "template": template.name,
        "path": root.display().to_string(),
        "files": files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
        "remote": remote,
        "pushed": pushed,
        "ok": true,
    }));
    Ok(true)
}

/// Refuses a target that exists and is not an empty directory.
fn check_target(root: &Path) -> Result<()> {
    match fs::symlink_metadata(root) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
            if entries.next().is_some() {
                bad_input!(
                    "{} already exists and is not empty; nothing was changed (use `es init` to add the deploy files to an existing project)",
                    root.display()
                );
            }
            Ok(())
        }
        Ok(_) => bad_input!(
            "{} already exists and is not a directory; nothing was changed",
            root.display()
        ),
    }
}

/// Checks, before anything is written, that git can make the first commit.
fn check_git_identity(dir: &Path) -> Result<()> {
    let version = Command::new("git")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(version, Ok(s) if s.success()) {
        bad_input!("git is not installed (es create makes the project's first commit with it)");
    }
    let configured = |key: &str, vars: [&str; 2]| -> bool {
        if vars
            .iter()
            .all(|v| std::env::var(v).is_ok_and(|x| !x.trim().is_empty()))
        {
            return true;
        }
        Command::new("git")
            .args(["config", "--get", key])
            .current_dir(dir)
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
    };
    let mut missing = Vec::new();
    if !configured("user.name", ["GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"]) {
        missing.push("git config --global user.name \"Your Name\"");
    }
    if !configured("user.email", ["GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"]) {
        missing.push("git config --global user.email you@example.com");
    }
    if !missing.is_empty() {
        bad_input!(
            "git has no identity for the first commit; nothing was created. Set it with:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// Asks for the remote URL on a terminal; without one, never waits.
fn ask_remote(out: &Out) -> Result<Option<String>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() || !std::io::stderr().is_terminal() {
        out.say("no terminal to ask for a remote URL on (give --remote URL or --no-push)");
        return Ok(None);
    }
    eprint!("Git URL to push to (empty: do not push): ");
    std::io::stderr()
        .flush()
        .context("writing to the terminal")?;
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the remote URL")?;
    let url = line.trim();
    Ok((!url.is_empty()).then(|| url.to_string()))
}

/// Adds `origin` and pushes main to it.
fn push(root: &Path, url: &str) -> Result<()> {
    git(root, &["remote", "add", "origin", url])?;
    git(root, &["push", "-q", "-u", "origin", "main"]).with_context(|| {
        format!(
            "the project is created and committed in {}, but the push to {url} failed; \
             once the remote exists: cd {} && git push -u origin main",
            root.display(),
            root.display()
        )
    })
}

/// Runs git in `dir`; an error carries git's own message.
fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("git");
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    if !std::io::stdin().is_terminal() {
        // Never wait for a credential prompt nobody can answer.
        cmd.env("GIT_TERMINAL_PROMPT", "0");
    }
    let output = cmd
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(anyhow!(
            "git {} failed ({}): {}",
            args.join(" "),
            output.status,
            stderr.trim()
        ));
    }
    Ok(())
}

/// `es init [NAME]`: add the missing deploy files to the project in the current directory.
pub fn init(global: &GlobalOpts, args: &InitArgs) -> Result<bool> {
    let out = Out::new(global);
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let packaged = crate::scaffold_detect::is_packaged(&cwd);
    if !packaged && !args.package && args.name.is_none() {
        bad_input!(
            "{} has no packaging (pyproject.toml, setup.py or setup.cfg), so no project name: es builds and deploys an installable package. Run `es init --package` to write a minimal pyproject.toml, or give the name: es init NAME",
            cwd.display()
        );
    }
    if !packaged && !args.package {
        out.say("note: no pyproject.toml, setup.py or setup.cfg here: `es build` needs one; `es init --package` writes a minimal pyproject.toml");
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => match project_name(&cwd)? {
            Some(name) => name,
            None if !packaged => cwd
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.replace('-', "_"))
                .unwrap_or_default(),
            None => bad_input!(
                "cannot tell the project's name: no `name` in pyproject.toml's [project] or in setup.py; give it: es init NAME"
            ),
        },
    };
    validate_dist_name(&name)?;
    let template = find_template("init")?;
    let mut files = render(template, &name, ProcessManager::Supervisord)?;
    // Run what the project has: a console script, or its WSGI/ASGI app under gunicorn.
    let entry = crate::scaffold_detect::entry(&cwd, &name);
    let (conf, advice) =
        crate::scaffold_detect::template_for(DEFAULT_SUPERVISOR_TEMPLATE, &entry, &name);
    let server = crate::scaffold_detect::app_server(&entry);
    let instance = crate::scaffold_detect::flask_instance_dir(&cwd, &entry);
    for file in files.iter_mut() {
        if file.path == Path::new("conf/supervisord.conf") {
            file.contents = conf.clone();
        }
        if file.path == Path::new("deploy.toml") {
            file.contents = crate::scaffold_ports::with_project_ports(&file.contents, &name);
        }
        // The app server es chose goes into every release, whatever the
        // project declares.
        if file.path == Path::new("deploy.toml") && !server.is_empty() {
            let line = format!(
                "[deploy]\nrequirements = [{}]   # installed into every release beside the project\n",
                server.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
            );
            file.contents = file.contents.replacen("[deploy]\n", &line, 1);
        }
        if let (true, Some(dir)) = (file.path == Path::new("deploy.toml"), &instance) {
            file.contents = file.contents.replacen(
                "shared_dirs = []                # e.g. [\"var/app-instance\"]",
                &format!("shared_dirs = [\"{dir}\"]   # the app's instance folder (its data, config.py), kept across releases"),
                1,
            );
        }
    }
    let django = cwd.join("manage.py").is_file();
    if django {
        files.push(Rendered {
            path: PathBuf::from(crate::scaffold_nginx::DJANGO_SITE_PATH),
            contents: crate::scaffold_nginx::DJANGO_SITE.to_string(),
            executable: false,
        });
    }
    if !packaged && args.package {
        let packages = crate::scaffold_detect::packages(&cwd);
        if packages.is_empty() {
            bad_input!(
                "--package: {} holds no Python package (a directory with an __init__.py)",
                cwd.display()
            );
        }
        files.push(Rendered {
            path: PathBuf::from("pyproject.toml"),
            contents: crate::scaffold_pyproject::pyproject(&cwd, &name, &packages),
            executable: false,
        });
    }
    let mut added = Vec::new();
    let mut skipped = Vec::new();
    for file in &files {
        let path = cwd.join(&file.path);
        if fs::symlink_metadata(&path).is_ok() {
            skipped.push(file.path.display().to_string());
        } else {
            write_new(&cwd, file)?;
            added.push(file.path.display().to_string());
        }
    }
    for path in &added {
        out.say(&format!("added   {path}"));
    }
    for path in &skipped {
        out.say(&format!("skipped {path} (exists; left as it is)"));
    }
    out.say(&advice);
    let (port_a, port_b) = crate::scaffold_ports::venv_port_prefixes(&name);
    out.say(&format!(
        "ports: venv a listens on {port_a}0.., b on {port_b}0.. (deploy.venv_ports); check that nothing else does on the hosts: es run -R dev -- ss -ltn"
    ));
    if let Some(dir) = &instance {
        out.say(&format!(
            "the Flask app keeps its data in its instance folder: deploy.shared_dirs keeps {dir} across releases"
        ));
    }
    if django {
        out.say(&format!("{} serves Django's static and media files from the shared dir: its comments say how to use it", crate::scaffold_nginx::DJANGO_SITE_PATH));
    }
    if added.is_empty() {
        out.say("nothing to add: every deploy file is already there");
    } else {
        let sync = std::iter::once("es pypi sync --project")
            .chain(server.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        out.say(&format!(
            "next: edit deploy.toml (index URLs, roles; secrets, release hooks, health) for {name}, then `{sync}` (the dependencies onto your index), `es build` and `es deploy -R dev latest a prod`"
        ));
    }
    out.summary(json!({
        "event": "summary",
        "command": "init",
        "project": name,
        "added": added,
        "skipped": skipped,
        "ok": true,
    }));
    Ok(true)
}

/// The project's name from pyproject.toml (`[project] name`), else setup.py (`name=`).
fn project_name(dir: &Path) -> Result<Option<String>> {
    let pyproject = dir.join("pyproject.toml");
    if pyproject.is_file() {
        let text = fs::read_to_string(&pyproject)
            .with_context(|| format!("reading {}", pyproject.display()))?;
        let value: toml::Table = match text.parse() {
            Ok(value) => value,
            Err(err) => bad_input!("{}: not valid TOML: {err}", pyproject.display()),
        };
        let name = value
            .get("project")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str());
        if let Some(name) = name {
            return Ok(Some(name.to_string()));
        }
    }
    let setup = dir.join("setup.py");
    if setup.is_file() {
        let text =
            fs::read_to_string(&setup).with_context(|| format!("reading {}", setup.display()))?;
        return Ok(setup_py_name(&text));
    }
    Ok(None)
}

/// The literal `name="..."` (or `name='...'`) keyword of a setup.py, if there is one.
fn setup_py_name(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find("name") {
        let start = from + found;
        from = start + 4;
        // A whole word: not `package_name`, `name_x`.
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            continue;
        }
        let rest = text[from..].trim_start_matches([' ', '\t']);
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        if rest.starts_with('=') {
            continue;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let value = &rest[1..];
        if let Some(end) = value.find(quote) {
            let name = &value[..end];
            if !name.is_empty() && !name.contains('\n') {
                return Some(name.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
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
}
