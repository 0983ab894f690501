//! `es build` and `es version`: export a commit, stamp its version, build an sdist
//! and a wheel with the project's own PEP 517 backend, check them and upload them.
//!
//! The commit is exported with `git archive` into a temporary directory, so the
//! user's work tree and git index are never touched. Which commit: `--commit`, else
//! `--branch`, else `project.default_branch`; when that branch does not exist (a
//! repository whose main branch has another name), HEAD is built, with a note.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::app::App;
use crate::bad_input;
use crate::cli::{BuildArgs, VersionArgs, VersionWhich};
use crate::config::VersionScheme;
use crate::index::{self, IndexClient};
use crate::ui::Mode;
use crate::version::{self, Bump, LocalTime, Version};

/// `es version latest|next`: prints the bare version on stdout.
pub fn version_command(app: &App, args: &VersionArgs) -> Result<bool> {
    let root = project_root(app)?;
    let project = project_name(app, &root)?;
    let index_url = index_url(app)?;
    let client = IndexClient::new(app.ui.verbose, app.index_timeout());
    let version = match &args.which {
        // The same `latest` a deploy takes: the default branch's newest, not yanked.
        VersionWhich::Latest => match index::latest_version(&index_url, &project, app.index_timeout())? {
            Some(v) => v,
            None => {
                return Err(anyhow!(
                    "{project} is not on the index {index_url} (no sdist or wheel of it with a PEP 440 version, built from the default branch and not yanked)"
                ))
            }
        },
        VersionWhich::Next { bump } => {
            next_version(app, &client.versions(&index_url, &project)?, *bump)?
        }
    };
    if app.ui.mode == Mode::Json {
        let which = match args.which {
            VersionWhich::Latest => "latest",
            VersionWhich::Next { .. } => "next",
        };
        app.ui.json(json!({
            "event": "summary", "command": "version", "ok": true, "project": project,
            "which": which, "version": version.to_string(),
        }));
    } else {
        println!("{version}");
    }
    Ok(true)
}

/// The version the next build gets, from today's local date and the index's versions.
fn next_version(app: &App, existing: &[Version], bump: Option<Bump>) -> Result<Version> {
    let scheme = app.config().build.version_scheme;
    if bump.is_some() && scheme != VersionScheme::Semver {
        bad_input!("--bump applies to build.version_scheme = \"semver\" only");
    }
    Ok(version::next_version(
        scheme,
        LocalTime::now().date,
        existing,
        bump.unwrap_or_default(),
    ))
}

/// The directory of the project: where deploy.toml is, else the current directory.
fn project_root(app: &App) -> Result<PathBuf> {
    match &app.loaded {
        Some(loaded) => Ok(loaded.root().to_path_buf()),
        None => std::env::current_dir().context("finding the current directory"),
    }
}

/// `project.name`, else `[project] name` of the pyproject.toml in `dir`.
fn project_name(app: &App, dir: &Path) -> Result<String> {
    if let Some(name) = &app.config().project.name {
        return Ok(name.clone());
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("pyproject.toml")) {
        if let Ok(value) = text.parse::<toml::Table>() {
            if let Some(name) = value
                .get("project")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
            {
                return Ok(name.to_string());
            }
        }
    }
    bad_input!("no project name: set project.name in deploy.toml")
}

/// `index.url`, required.
/// An upload refused as "already on the index" whose file the index lists
/// with our sha256: our own earlier attempt, whose answer was lost.
fn identical_on_index(
    client: &IndexClient,
    config: &crate::config::Config,
    project: &str,
    file: &Path,
    err: &anyhow::Error,
) -> bool {
    let (Some(url), Some(_)) = (
        &config.index.url,
        err.downcast_ref::<index::AlreadyOnIndex>(),
    ) else {
        return false;
    };
    client.lists_identical(url, project, file).unwrap_or(false)
}

fn index_url(app: &App) -> Result<String> {
    match &app.config().index.url {
        Some(url) => Ok(url.clone()),
        None => bad_input!("no index: set index.url (the simple API URL) in deploy.toml"),
    }
}

/// Runs git in `dir` and returns its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        return Err(anyhow!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The full id of `rev` as a commit, or `None` when it names none.
fn resolve(dir: &Path, rev: &str) -> Option<String> {
    git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .ok()
    .filter(|id| !id.is_empty())
}

/// The commit to build and how to describe it.
fn choose_commit(app: &App, root: &Path, args: &BuildArgs) -> Result<(String, String)> {
    if let Some(commit) = &args.commit {
        // With --branch too, the commit is built as one of that branch (its
        // version labelled the same way), as `es serve` builds a pushed commit.
        let described = match &args.branch {
            Some(branch) => format!("branch {branch}"),
            None => format!("commit {commit}"),
        };
        return match resolve(root, commit) {
            Some(id) => Ok((id, described)),
            None => bad_input!("--commit {commit}: no such commit in {}", root.display()),
        };
    }
    if let Some(branch) = &args.branch {
        for rev in [
            format!("refs/heads/{branch}"),
            format!("refs/remotes/origin/{branch}"),
        ] {
            if let Some(id) = resolve(root, &rev) {
                return Ok((id, format!("branch {branch}")));
            }
        }
        bad_input!(
            "--branch {branch}: no such branch (local or origin/) in {}",
            root.display()
        );
    }
    let branch = &app.config().project.default_branch;
    if let Some(id) = resolve(root, &format!("refs/heads/{branch}")) {
        return Ok((id, format!("branch {branch}")));
    }
    match resolve(root, "HEAD") {
        Some(id) => {
            app.ui.note(&format!(
                "es: note: project.default_branch `{branch}` does not exist; building HEAD"
            ));
            Ok((id, "HEAD".to_string()))
        }
        None => bad_input!("{} has no commit to build", root.display()),
    }
}

/// `es build`: returns the version built (also printed as the last stdout line).
pub fn build(app: &App, args: &BuildArgs) -> Result<Version> {
    let config = app.config();
    let verbose = app.ui.verbose;
    let say = |line: &str| {
        if !app.ui.quiet {
            app.ui.note(line)
        }
    };
    let root = project_root(app)?;
    let toplevel = PathBuf::from(
        git(&root, &["rev-parse", "--show-toplevel"])
            .with_context(|| format!("{} is not in a git repository", root.display()))?,
    );
    let prefix = git(&root, &["rev-parse", "--show-prefix"])?;
    let (commit, described) = choose_commit(app, &root, args)?;
    // Where it is built: checked (exit 2) before anything is asked or sent.
    let build_host = crate::build_host::choose(app, args)?;
    if verbose {
        // --no-optional-locks: status must not refresh (write) the user's index.
        let dirty = git(&toplevel, &["--no-optional-locks", "status", "--porcelain"])?;
        if !dirty.is_empty() {
            app.ui.note(&format!(
                "es: the work tree has uncommitted changes; they are not built (building {described}, {})",
                &commit[..12.min(commit.len())]
            ));
        }
    }

    // Export.
    let tmp = tempfile::Builder::new()
        .prefix("es-build-")
        .tempdir()
        .context("making a temporary directory")?;
    let export = tmp.path().join("src");
    export_commit(&toplevel, &commit, &export)?;
    let src = export.join(prefix.trim_end_matches('/'));
    let project = project_name(app, &src)?;

    // Version.
    let upload = !args.no_upload;
    let client = IndexClient::new(verbose, app.index_timeout());
    let existing = match (&config.index.url, upload || args.version.is_none()) {
        (Some(url), true) => client.versions(url, &project)?,
        _ => Vec::new(),
    };
    let mut version = match &args.version {
        Some(text) => match version::parse_version(text) {
            Ok(v) => v,
            Err(message) => bad_input!("--version: {message}"),
        },
        None => {
            if config.index.url.is_none() {
                bad_input!("no index to number the build from: set index.url in deploy.toml, or give --version");
            }
            next_version(app, &existing, args.bump)?
        }
    };
    // A build of another branch than the default one is marked, so that
    // `latest` (the default branch's newest) never picks it.
    let other_branch = described
        .strip_prefix("branch ")
        .filter(|b| *b != config.project.default_branch);
    if let (Some(branch), None) = (other_branch, &args.name) {
        version = version::with_local(&version, &branch_label(branch))?;
        say(&format!(
            "es: note: {branch} is not the default branch ({}): the version is {version}, which `latest` skips",
            config.project.default_branch
        ));
    }
    if let Some(name) = &args.name {
        version = version::with_local(&version, name)?;
        say("es: note: a build name makes a PEP 440 local version (+NAME); public indexes such as PyPI refuse local versions, private ones accept them");
    }
    if upload && existing.contains(&version) {
        return Err(anyhow!(
            "{project} {version} is already on the index: an index never replaces a file; build another version"
        ));
    }
    // Where to upload, checked before the (slow) build.
    let target = match upload {
        true => Some(index::upload_target(&config.index, home_dir())?),
        false => None,
    };
    say(&format!(
        "es: building {project} {version} from {described} ({})",
        &commit[..12.min(commit.len())]
    ));

    // Stamp.
    let values = [
        ("${version}", version.to_string()),
        ("${git_version}", commit.clone()),
        ("${release_time}", LocalTime::now().stamp()),
    ];
    stamp(app, &src, &project, &version, &values)?;

    // Pre-build commands.
    for command in &config.build.pre_build {
        if verbose {
            app.ui.note(&format!("es: pre_build: {command}"));
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&src)
            .env("ES_VERSION", version.to_string())
            .env("ES_GIT_VERSION", &commit)
            .env("ES_PROJECT", &project)
            .env_remove("TWINE_PASSWORD");
        run_step(cmd, &format!("pre_build command `{command}`"), verbose)?;
    }

    // Build.
    let out_dir = tmp.path().join("dist");
    std::fs::create_dir_all(&out_dir)?;
    let built_on = match &build_host {
        None => {
            let backend = Backend::find(app)?;
            say(&format!(
                "es: building sdist and wheel with {}",
                backend.describe()
            ));
            run_step(
                backend.command(&src, &out_dir, &version),
                "the build backend",
                verbose,
            )?;
            None
        }
        Some(target) => {
            let subdir = prefix.trim_end_matches('/');
            Some(crate::build_host::build(
                app, target, &export, subdir, &version, &out_dir,
            )?)
        }
    };
    let artifacts = check_artifacts(&out_dir, &project, &version)?;
    for wheel in artifacts
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "whl"))
    {
        for line in crate::wheel_check::lacks(&src, &project, wheel)? {
            say(&format!("es: warning: {line}"));
        }
    }
    let branch = described.strip_prefix("branch ").map(str::to_string);
    let mut provenance = json!({
        "project": project,
        "version": version.to_string(),
        "commit": commit,
        "branch": branch,
        "built_at": crate::clock::now_utc(),
        "built_by": format!("{}@{}", crate::identity::login(), crate::identity::machine()),
    });
    if let Some(built) = &built_on {
        provenance["built_on"] = json!(built.host);
        provenance["build_hostname"] = json!(built.hostname);
    }
    for wheel in artifacts
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "whl"))
    {
        crate::provenance::add_to_wheel(wheel, &provenance)?;
    }

    // Upload, copy.
    if let Some(target) = &target {
        for file in &artifacts {
            match client.upload(&target.url, target.credentials.as_ref(), file) {
                Ok(()) => say(&format!("es: uploaded {}", file_name(file))),
                Err(err) if identical_on_index(&client, config, &project, file, &err) => say(
                    &format!(
                        "es: {} is on the index already, byte for byte (an earlier attempt went through): uploaded",
                        file_name(file)
                    ),
                ),
                Err(err) => return Err(err),
            }
        }
    }
    if let Some(dist) = &args.dist {
        std::fs::create_dir_all(dist).with_context(|| format!("making {}", dist.display()))?;
        for file in &artifacts {
            let to = dist.join(file_name(file));
            std::fs::copy(file, &to).with_context(|| format!("copying to {}", to.display()))?;
        }
        say(&format!(
            "es: copied the sdist and wheel to {}",
            dist.display()
        ));
    }
    if app.ui.wants_summary() {
        let files: Vec<String> = artifacts.iter().map(|f| file_name(f)).collect();
        app.ui.summary(json!({
            "event": "summary", "command": "build", "ok": true, "project": project,
            "version": version.to_string(), "commit": commit, "files": files, "uploaded": upload,
            "built_on": built_on.as_ref().map_or("local", |b| b.host.as_str()),
        }));
    }
    if app.ui.mode != Mode::Json {
        println!("{version}");
    }
    Ok(version)
}

/// A branch name as a PEP 440 local label: `feature/Login-2` -> `feature.login.2`.
fn branch_label(branch: &str) -> String {
    branch
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `git archive COMMIT` unpacked into `dest`.
fn export_commit(toplevel: &Path, commit: &str, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(toplevel)
        .args(["archive", "--format=tar", commit])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("git archive: no output"))?;
    let unpacked = tar::Archive::new(stdout).unpack(dest);
    let out = child.wait_with_output().context("running git archive")?;
    if !out.status.success() {
        return Err(anyhow!(
            "git archive {commit}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    unpacked.with_context(|| format!("unpacking git archive of {commit}"))
}

/// Writes the version into pyproject.toml and fills the placeholders of setup.py,
/// the package's settings module and `build.stamp_files`.
fn stamp(
    app: &App,
    src: &Path,
    project: &str,
    version: &Version,
    values: &[(&str, String)],
) -> Result<()> {
    let pyproject = src.join("pyproject.toml");
    if pyproject.is_file() {
        let text = std::fs::read_to_string(&pyproject)?;
        match stamp_pyproject(&text, &version.to_string()) {
            Ok(Some(stamped)) => {
                std::fs::write(&pyproject, stamped)?;
                if app.ui.verbose {
                    app.ui.note(&format!(
                        "es: stamped [project] version = \"{version}\" in pyproject.toml"
                    ));
                }
            }
            Ok(None) => {}
            Err(message) => return Err(anyhow!("pyproject.toml: {message}")),
        }
    }
    let mut files = vec![src.join("setup.py")];
    let package = project.replace(['-', '.'], "_");
    for base in [src.to_path_buf(), src.join("src")] {
        files.push(base.join(&package).join("settings.py"));
        files.push(base.join(&package).join("settings").join("__init__.py"));
    }
    files.retain(|f| f.is_file());
    for extra in &app.config().build.stamp_files {
        let path = src.join(extra);
        if !path.is_file() {
            bad_input!("build.stamp_files: {extra} is not a file of the built commit");
        }
        if !files.contains(&path) {
            files.push(path);
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let mut stamped = text.clone();
        for (placeholder, value) in values {
            stamped = stamped.replace(placeholder, value);
        }
        if stamped != text {
            std::fs::write(&file, stamped)?;
            if app.ui.verbose {
                let shown = file.strip_prefix(src).unwrap_or(&file);
                app.ui.note(&format!("es: stamped {}", shown.display()));
            }
        }
    }
    // A setuptools project that writes its version as a literal (as essay's
    // projects and most setup.py files do): that literal becomes the version.
    let setup_py = src.join("setup.py");
    if setup_py.is_file() {
        let text = std::fs::read_to_string(&setup_py)
            .with_context(|| format!("reading {}", setup_py.display()))?;
        match stamp_setup_py(&text, &version.to_string()) {
            Ok(Some(stamped)) => {
                std::fs::write(&setup_py, stamped)?;
                if app.ui.verbose {
                    app.ui
                        .note(&format!("es: stamped version=\"{version}\" in setup.py"));
                }
            }
            Ok(None) => {}
            Err(message) => return Err(anyhow!("setup.py: {message}")),
        }
    }
    let setup_cfg = src.join("setup.cfg");
    if setup_cfg.is_file() {
        let text = std::fs::read_to_string(&setup_cfg)
            .with_context(|| format!("reading {}", setup_cfg.display()))?;
        if let Some(stamped) = stamp_setup_cfg(&text, &version.to_string()) {
            std::fs::write(&setup_cfg, stamped)?;
            if app.ui.verbose {
                app.ui.note(&format!(
                    "es: stamped [metadata] version = {version} in setup.cfg"
                ));
            }
        }
    }
    Ok(())
}

/// setup.py with its one literal `version="..."` (or `version='...'`, a keyword
/// argument or an assignment) set to `version`. `None` when there is no such
/// literal or it already says `version`; an error when there are several (es
/// cannot tell which one setuptools gets). Comment lines are skipped; a `version`
/// that is a name (`version=__version__`) is not a literal and is left alone.
fn stamp_setup_py(text: &str, version: &str) -> Result<Option<String>, String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    // (start, end) of each literal's content.
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let code = match line.trim_start().starts_with('#') {
            true => "",
            false => line,
        };
        let mut from = 0;
        while let Some(at) = code[from..].find("version").map(|i| from + i) {
            from = at + "version".len();
            if code[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let rest = &code[from..];
            let after_key = rest.trim_start();
            let Some(after_eq) = after_key.strip_prefix('=') else {
                continue;
            };
            if after_eq.starts_with('=') {
                continue;
            }
            let value = after_eq.trim_start();
            let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            let content = &value[1..];
            let Some(len) = content.find(quote) else {
                continue;
            };
            if content[..len].contains('\\')
                || content[len..].starts_with(&format!("{quote}{quote}"))
            {
                continue;
            }
            let start = line_start + code.len() - content.len();
            found.push((start, start + len));
        }
        line_start += line.len();
    }
    match found.as_slice() {
        [] => Ok(None),
        [(start, end)] if &text[*start..*end] == version => Ok(None),
        [(start, end)] => Ok(Some(format!(
            "{}{version}{}",
            &text[..*start],
            &text[*end..]
        ))),
        many => Err(format!(
            "{} literal `version=` values ({}); es stamps one: keep one, or use version=\"${{version}}\"",
            many.len(),
            many.iter()
                .map(|(s, e)| format!("\"{}\"", &text[*s..*e]))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// setup.cfg with `[metadata] version` set to `version` (whatever it said: a
/// literal, `attr:` or `file:`); `None` when it has none or it already says so.
fn stamp_setup_cfg(text: &str, version: &str) -> Option<String> {
    let mut in_metadata = false;
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_metadata = trimmed.trim_end_matches(|c| c != ']') == "[metadata]";
        } else if in_metadata && !line.starts_with([' ', '\t']) {
            let split = line.find(['=', ':']);
            if let Some(at) = split.filter(|at| line[..*at].trim() == "version") {
                let new = format!("{} = {version}", line[..at].trim_end());
                let ending = if line.ends_with("\r\n") {
                    "\r\n"
                } else if line.ends_with('\n') {
                    "\n"
                } else {
                    ""
                };
                if line[at + 1..].trim() != version {
                    changed = true;
                }
                out.push_str(&new);
                out.push_str(ending);
                continue;
            }
        }
        out.push_str(line);
    }
    changed.then_some(out)
}

/// pyproject.toml with `[project] version` set to `version`; `None` when there is no
/// `[project]` table. A `dynamic = [... "version" ...]` entry is removed so the static
/// version wins over the backend's own way of finding one.
fn stamp_pyproject(text: &str, version: &str) -> Result<Option<String>, String> {
    let parsed: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    if !parsed.contains_key("project") {
        return Ok(None);
    }
    let lines: Vec<&str> = text.lines().collect();
    // A table header; array continuation lines (`["a", "b"],`) are not.
    let is_header = |line: &str| {
        let t = line.trim_start();
        t.starts_with('[') && !t.starts_with("[\"") && !t.starts_with("['")
    };
    let start = lines
        .iter()
        .position(|l| {
            let t = l.trim();
            t == "[project]" || t.starts_with("[project]") && t[9..].trim_start().starts_with('#')
        })
        .ok_or("[project] is not written as a `[project]` table; es cannot stamp its version")?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| is_header(l))
        .map_or(lines.len(), |i| start + 1 + i);
    let line_key = |line: &str| line.split_once('=').map(|(k, _)| k.trim().to_string());
    let new_line = format!("version = \"{version}\"");
    let mut section: Vec<String> = lines[start + 1..end]
        .iter()
        .map(|l| l.to_string())
        .collect();
    if let Some(i) = section
        .iter()
        .position(|l| line_key(l).as_deref() == Some("version"))
    {
        section[i] = new_line;
    } else {
        // Take "version" out of `dynamic`, then add the static version.
        let joined = section.join("\n");
        let joined = match joined.find("dynamic") {
            Some(at) => {
                let open = joined[at..]
                    .find('[')
                    .map(|i| at + i)
                    .ok_or("bad `dynamic`")?;
                let close = joined[open..]
                    .find(']')
                    .map(|i| open + i)
                    .ok_or("bad `dynamic`")?;
                let items: Vec<&str> = joined[open + 1..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty() && *i != "\"version\"" && *i != "'version'")
                    .collect();
                format!(
                    "{}[{}]{}",
                    &joined[..open],
                    items.join(", "),
                    &joined[close + 1..]
                )
            }
            None => joined,
        };
        section = std::iter::once(new_line)
            .chain(joined.lines().map(str::to_string))
            .collect();
    }
    let mut out: Vec<String> = lines[..=start].iter().map(|l| l.to_string()).collect();
    out.extend(section);
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    let mut result = out.join("\n");
    if text.ends_with('\n') {
        result.push('\n');
    }
    // Check the edit did what was meant.
    let check: toml::Table = result
        .parse()
        .map_err(|e| format!("es could not stamp the version (the edit broke the file: {e})"))?;
    let project = check.get("project");
    let stamped = project
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str());
    let still_dynamic = project
        .and_then(|p| p.get("dynamic"))
        .and_then(|d| d.as_array())
        .is_some_and(|d| d.iter().any(|i| i.as_str() == Some("version")));
    if stamped != Some(version) || still_dynamic {
        return Err("es could not stamp [project] version; write it as `version = \"...\"` or `dynamic = [\"version\"]`".into());
    }
    Ok(Some(result))
}

/// Runs a build step: its output shown under `-v` (on stderr, so the version stays
/// the last stdout line), otherwise kept and shown only when it fails.
fn run_step(mut cmd: Command, what: &str, verbose: bool) -> Result<()> {
    cmd.stdin(Stdio::null());
    if verbose {
        let status = cmd
            .stdout(std::io::stderr())
            .stderr(std::io::stderr())
            .status()
            .with_context(|| format!("starting {what}"))?;
        if !status.success() {
            return Err(anyhow!("{what} failed ({status})"));
        }
        return Ok(());
    }
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        return Err(anyhow!("{what} failed ({}):\n{tail}", out.status));
    }
    Ok(())
}

/// The PEP 517 front end: uv when it is on PATH or in es's cached build venv
/// (about twice as fast), else `python3 -m build` from that venv.
enum Backend {
    Uv(PathBuf),
    PyBuild(PathBuf),
}

impl Backend {
    fn find(app: &App) -> Result<Backend> {
        if let Some(uv) = which("uv") {
            return Ok(Backend::Uv(uv));
        }
        let python = which("python3").ok_or_else(|| {
            anyhow!("neither uv nor python3 is on PATH: es needs one of them to build")
        })?;
        let venv_python = cached_build_venv(app, &python)?;
        let uv = venv_python.with_file_name("uv");
        if uv.is_file() {
            return Ok(Backend::Uv(uv));
        }
        Ok(Backend::PyBuild(venv_python))
    }

    fn describe(&self) -> String {
        match self {
            Backend::Uv(_) => "uv build".into(),
            Backend::PyBuild(_) => "python -m build".into(),
        }
    }

    fn command(&self, src: &Path, out_dir: &Path, version: &Version) -> Command {
        let mut cmd = match self {
            Backend::Uv(uv) => {
                let mut cmd = Command::new(uv);
                cmd.arg("build").arg("--out-dir").arg(out_dir).arg(src);
                cmd
            }
            Backend::PyBuild(python) => {
                let mut cmd = Command::new(python);
                cmd.args(["-m", "build", "--outdir"]).arg(out_dir).arg(src);
                cmd
            }
        };
        // The backend has no business with the upload password.
        cmd.env_remove("TWINE_PASSWORD");
        // For setuptools-scm projects: the export has no .git to read a version from.
        cmd.env("SETUPTOOLS_SCM_PRETEND_VERSION", version.to_string());
        cmd.current_dir(src);
        cmd
    }
}

/// The full path of `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn has_build_module(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import build"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// es's cache directory: `$XDG_CACHE_HOME/es`, else `~/.cache/es`.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("es"));
    }
    home_dir()
        .map(|home| home.join(".cache").join("es"))
        .ok_or_else(|| anyhow!("neither XDG_CACHE_HOME nor HOME is set: no cache directory"))
}

/// A venv holding `build`, made once under the cache directory; returns its python.
fn cached_build_venv(app: &App, python: &Path) -> Result<PathBuf> {
    let cache = cache_dir()?;
    let venv = cache.join("build-venv");
    let venv_python = venv.join("bin").join("python");
    if has_build_module(&venv_python) {
        return Ok(venv_python);
    }
    app.ui.note(&format!(
        "es: installing the build front ends (build, uv) into {} (once)",
        venv.display()
    ));
    std::fs::create_dir_all(&cache).with_context(|| format!("making {}", cache.display()))?;
    let tmp = cache.join(format!("build-venv.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut make = Command::new(python);
    make.args(["-m", "venv"]).arg(&tmp);
    run_step(make, "python3 -m venv", app.ui.verbose)?;
    let mut install = Command::new(tmp.join("bin").join("python"));
    install.args(["-m", "pip", "install", "--quiet", "build"]);
    run_step(install, "pip install build", app.ui.verbose)?;
    // uv builds about twice as fast; without it (no wheel for this platform), build does.
    let mut install = Command::new(tmp.join("bin").join("python"));
    install.args(["-m", "pip", "install", "--quiet", "uv"]);
    if let Err(err) = run_step(install, "pip install uv", app.ui.verbose) {
        app.ui
            .note(&format!("es: note: building without uv ({err:#})"));
    }
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another es made it meanwhile, or a broken one is in the way.
        if !has_build_module(&venv_python) {
            let _ = std::fs::remove_dir_all(&venv);
            std::fs::rename(&tmp, &venv)
                .with_context(|| format!("moving the build venv to {}", venv.display()))?;
        } else {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    Ok(venv_python)
}

/// The sdist and the wheel in `out_dir`, checked to be `project` at `version` (by
/// file name and by their metadata).
fn check_artifacts(out_dir: &Path, project: &str, version: &Version) -> Result<Vec<PathBuf>> {
    let mut sdist = None;
    let mut wheel = None;
    for entry in std::fs::read_dir(out_dir)? {
        let path = entry?.path();
        let name = file_name(&path);
        if name.ends_with(".tar.gz") {
            sdist = Some(path);
        } else if name.ends_with(".whl") {
            wheel = Some(path);
        }
    }
    let (Some(sdist), Some(wheel)) = (sdist, wheel) else {
        return Err(anyhow!(
            "the build backend did not make both an sdist (.tar.gz) and a wheel"
        ));
    };
    let hint = "does pyproject.toml have a [project] version, setup.py one literal version=\"...\" (or version=\"${version}\"), or setup.cfg a [metadata] version?";
    for file in [&sdist, &wheel] {
        let name = file_name(file);
        let dist = version::parse_filename(&name)
            .ok_or_else(|| anyhow!("the build made {name}, whose name es cannot read"))?;
        if version::normalize_name(&dist.name) != version::normalize_name(project) {
            return Err(anyhow!(
                "the build made {name}, not a distribution of {project}"
            ));
        }
        let content = std::fs::read(file)?;
        let metadata = index::read_metadata(file, &content)?;
        let meta_version = metadata
            .get("Version")
            .and_then(|v| version::parse_version(v).ok());
        if dist.version != *version || meta_version.as_ref() != Some(version) {
            return Err(anyhow!(
                "the build made {name} with version {}, not {version}: {hint}",
                metadata.get("Version").unwrap_or("?")
            ));
        }
    }
    Ok(vec![sdist, wheel])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_labels_are_pep440_local_labels() {
        assert_eq!(branch_label("feature/Login-2"), "feature.login.2");
        assert_eq!(branch_label("__x__"), "x");
    }

    #[test]
    fn stamps_a_static_version() {
        let text = "[build-system]\nrequires = [\"setuptools\"]\n\n[project]\nname = \"a\"\nversion = \"0.0.0\" # set by es\ndescription = \"x\"\n\n[tool.x]\nversion = \"keep\"\n";
        let out = stamp_pyproject(text, "2026.11.22.1").unwrap().unwrap();
        assert!(out.contains("[project]\nname = \"a\"\nversion = \"2026.11.22.1\"\ndescription"));
        assert!(out.contains("[tool.x]\nversion = \"keep\"\n"));
    }

    #[test]
    fn stamps_a_dynamic_version() {
        let text = "[project]\nname = \"a\"\ndynamic = [\n  \"version\",\n  \"readme\",\n]\n\n[tool.setuptools.dynamic]\nversion = {attr = \"a.__version__\"}\n";
        let out = stamp_pyproject(text, "1.2.3").unwrap().unwrap();
        let parsed: toml::Table = out.parse().unwrap();
        assert_eq!(parsed["project"]["version"].as_str(), Some("1.2.3"));
        assert_eq!(
            parsed["project"]["dynamic"].as_array().unwrap().len(),
            1,
            "{out}"
        );
    }

    #[test]
    fn stamps_the_literal_version_of_setup_py() {
        let text = "from setuptools import setup\n\nsetup(\n    name=\"flaskrrr\",\n    version=\"1.0.0\",\n    python_version='3',\n    install_requires=[\"flask\"],\n)\n";
        let out = stamp_setup_py(text, "2026.12.1.1").unwrap().unwrap();
        assert_eq!(out, text.replace("1.0.0", "2026.12.1.1"));
        // Single quotes, spaces around `=`, an assignment passed on.
        let text =
            "# version='0.1' was the first\nversion = '0.9'\nsetup(name='a', version=version)\n";
        let out = stamp_setup_py(text, "1.2").unwrap().unwrap();
        assert_eq!(
            out,
            "# version='0.1' was the first\nversion = '1.2'\nsetup(name='a', version=version)\n"
        );
        // Already the version (a filled-in ${version}): nothing to write.
        assert_eq!(
            stamp_setup_py("setup(version=\"1.2\")\n", "1.2").unwrap(),
            None
        );
    }

    #[test]
    fn setup_py_without_one_literal_version_is_not_guessed() {
        for text in [
            "setup(name=\"a\", version=__version__)\n",
            "setup(name=\"a\", use_scm_version=True)\n",
            "if version == \"1\": pass\n",
            "setup(my_version=\"1\", version_file=\"v.txt\")\n",
            "setup(version=\"\"\"1\"\"\")\n",
        ] {
            assert_eq!(stamp_setup_py(text, "2.0").unwrap(), None, "{text}");
        }
        let err = stamp_setup_py(
            "V='1'\nsetup(version='1.0')\nsetup(version=\"1.1\")\n",
            "2.0",
        )
        .unwrap_err();
        assert!(err.contains("2 literal `version=` values"), "{err}");
    }

    #[test]
    fn stamps_the_metadata_version_of_setup_cfg() {
        let text =
            "[metadata]\nname = a\nversion = attr: a.__version__\n\n[options]\nversion = keep\n";
        assert_eq!(
            stamp_setup_cfg(text, "3.1").unwrap(),
            "[metadata]\nname = a\nversion = 3.1\n\n[options]\nversion = keep\n"
        );
        assert_eq!(stamp_setup_cfg("[metadata]\nversion=3.1\n", "3.1"), None);
        assert_eq!(stamp_setup_cfg("[egg_info]\ntag_build =\n", "3.1"), None);
        assert_eq!(
            stamp_setup_cfg("[metadata]\r\nversion: 1\r\n", "3.1").unwrap(),
            "[metadata]\r\nversion = 3.1\r\n"
        );
    }

    #[test]
    fn pyproject_without_project_table_is_left_alone() {
        assert_eq!(
            stamp_pyproject("[build-system]\nrequires = []\n", "1").unwrap(),
            None
        );
        assert!(stamp_pyproject("[project\n", "1").is_err());
    }
}
