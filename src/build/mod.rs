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
use backend::{run_step, Backend};
use stamp::stamp;

mod backend;
mod stamp;

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
}
