//! Local pip commands: `es pinstall` (from the project's index), `es install` (plain
//! pass-through) and `es pypi sync` (copy packages from upstream into the index).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};

use crate::app::App;
use crate::bad_input;
use crate::index::{self, AlreadyOnIndex, IndexClient};

/// `python3 -m pip ARGS`, its output passed through; true when it succeeded.
fn pip(args: &[String]) -> Result<bool> {
    let status = Command::new("python3")
        .args(["-m", "pip"])
        .args(args)
        .status()
        .context("running python3 -m pip (is python3 on PATH?)")?;
    Ok(status.success())
}

/// pip's options for the index at `url`: `--index-url`, plus `--trusted-host` for
/// plain http (pip ignores a non-localhost http index otherwise).
pub fn index_options(url: &str) -> Vec<String> {
    let mut options = vec!["--index-url".to_string(), url.to_string()];
    if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or("");
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        if !host.is_empty() {
            options.push("--trusted-host".to_string());
            options.push(host.to_string());
        }
    }
    options
}

/// The host pip must trust for a plain-http index (empty for https).
pub fn trusted_host(url: &str) -> String {
    let options = index_options(url);
    options
        .iter()
        .position(|o| o == "--trusted-host")
        .and_then(|i| options.get(i + 1))
        .cloned()
        .unwrap_or_default()
}

/// What `--project` asks pip for.
#[derive(Debug, PartialEq)]
enum ProjectDeps {
    /// pyproject.toml's static `[project] dependencies`.
    Listed(Vec<String>),
    /// A setuptools project (setup.py, setup.cfg, or dynamic dependencies):
    /// pip reads its metadata through the build backend and resolves the
    /// project's own directory, from a copy (the backend writes egg-info).
    Resolve,
}

/// How the project in `root` declares its dependencies.
fn project_dependencies(root: &Path) -> Result<ProjectDeps> {
    let path = root.join("pyproject.toml");
    let pyproject = match std::fs::read_to_string(&path) {
        Ok(text) => match toml::from_str::<toml::Value>(&text) {
            Ok(value) => Some(value),
            Err(err) => bad_input!("--project: {}: {err}", path.display()),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => bad_input!("--project: cannot read {}: {err}", path.display()),
    };
    let project = pyproject.as_ref().and_then(|p| p.get("project"));
    let dynamic = project
        .and_then(|p| p.get("dynamic"))
        .and_then(|d| d.as_array())
        .is_some_and(|d| d.iter().any(|i| i.as_str() == Some("dependencies")));
    if let Some(project) = project.filter(|_| !dynamic) {
        return Ok(ProjectDeps::Listed(
            project
                .get("dependencies")
                .and_then(|d| d.as_array())
                .map(|deps| {
                    deps.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ));
    }
    if pyproject.is_some() || root.join("setup.py").is_file() || root.join("setup.cfg").is_file() {
        return Ok(ProjectDeps::Resolve);
    }
    bad_input!(
        "--project: {} has no pyproject.toml, setup.py or setup.cfg to read the dependencies from",
        root.display()
    )
}

/// Copies the project's files into `dest`: what git tracks or would track
/// (`.gitignore` honoured) in a git work tree, else everything but hidden
/// entries, `__pycache__` and virtualenvs.
fn copy_project(root: &Path, dest: &Path) -> Result<()> {
    let listed = Command::new("git")
        .args([
            "--no-optional-locks",
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match listed {
        Ok(out) if out.status.success() => {
            for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                let rel = Path::new(std::str::from_utf8(name).context("a file name git listed")?);
                let from = root.join(rel);
                // Deleted but still tracked, or a submodule.
                if !from.is_file() {
                    continue;
                }
                let to = dest.join(rel);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("making {}", parent.display()))?;
                }
                std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            }
            Ok(())
        }
        _ => copy_tree(root, dest),
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("making {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let path = entry.path();
        if text.starts_with('.') || text == "__pycache__" || path.join("pyvenv.cfg").is_file() {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&path, &to.join(&name))?;
        } else if path.is_file() {
            std::fs::copy(&path, to.join(&name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// `es pinstall PKG...`
pub fn pinstall(app: &App, packages: &[String]) -> Result<bool> {
    let Some(url) = &app.config().index.url else {
        bad_input!("no index: set index.url in deploy.toml");
    };
    let mut args = vec!["install".to_string()];
    args.extend(index_options(url));
    args.extend(packages.iter().cloned());
    pip(&args)
}

/// `es install ARGS...`: `pip install ARGS...`
pub fn install(args: &[String]) -> Result<bool> {
    let mut all = vec!["install".to_string()];
    all.extend(args.iter().cloned());
    pip(&all)
}

/// `es pypi sync PKG...`: download each package (no dependencies) and upload its
/// files; a file already on the index is skipped.
pub fn sync(app: &App, sync: &crate::cli::SyncArgs) -> Result<bool> {
    let config = app.config();
    let mut packages = sync.packages.clone();
    if packages.is_empty() && sync.requirements.is_empty() && !sync.project {
        bad_input!("nothing to sync: give packages, --project or -r FILE");
    }
    // Where to upload (credentials included), checked before any work.
    let target = index::upload_target(&config.index, std::env::var_os("HOME").map(Into::into))?;
    let tmp = tempfile::Builder::new()
        .prefix("es-sync-")
        .tempdir()
        .context("making a temporary directory")?;
    let downloads = tmp.path().join("files");
    // The project's own distribution name, when pip resolves the project itself.
    let mut own_name = None;
    if sync.project {
        let loaded = app.require_config()?;
        match project_dependencies(loaded.root())? {
            ProjectDeps::Listed(deps) => packages.extend(deps),
            ProjectDeps::Resolve => {
                let copy = tmp.path().join("project");
                copy_project(loaded.root(), &copy)?;
                app.ui.note(&format!(
                    "es: reading the dependencies of {} through its build backend",
                    loaded.root().display()
                ));
                packages.push(copy.display().to_string());
                own_name = Some(
                    config
                        .project
                        .name
                        .clone()
                        .map(|n| crate::version::normalize_name(&n)),
                );
            }
        }
    }
    // What the hosts run, to check every Requires-Python against.
    let hosts_python = match crate::requires_python::hosts_python(app, sync.python.as_deref()) {
        Ok(python) => Some(python),
        Err(err) => {
            app.ui
                .note(&format!("es: Requires-Python is not checked: {err:#}"));
            None
        }
    };
    if let (true, Some(python)) = (sync.project, &hosts_python) {
        let root = app.require_config()?.root().to_path_buf();
        if let Some(spec) = crate::requires_python::project_requires(&root) {
            if !crate::requires_python::meets(python, &spec) {
                return Err(anyhow!(
                    "the project needs Python {spec} (pyproject.toml requires-python); the hosts run {python}"
                ));
            }
        }
    }
    if packages.is_empty() && sync.requirements.is_empty() {
        bad_input!("nothing to sync: give packages, --project or -r FILE");
    }
    // The whole closure: pip resolves the dependencies too.
    let mut args = vec![
        "download".to_string(),
        "--disable-pip-version-check".to_string(),
        "-d".to_string(),
        downloads.display().to_string(),
    ];
    let python = sync.python.clone().or_else(|| config.index.python.clone());
    let platforms = if sync.platform.is_empty() {
        config.index.platforms.clone()
    } else {
        sync.platform.clone()
    };
    if python.is_some() || !platforms.is_empty() {
        // For another interpreter or platform pip takes wheels only.
        args.push("--only-binary=:all:".to_string());
        if let Some(python) = &python {
            args.extend(["--python-version".to_string(), python.clone()]);
        }
        for platform in &platforms {
            args.extend(["--platform".to_string(), platform.clone()]);
        }
    }
    if let Some(from) = &sync.from {
        args.extend(index_options(from));
    }
    for file in &sync.requirements {
        args.extend(["-r".to_string(), file.display().to_string()]);
    }
    args.extend(packages.iter().cloned());
    let status = Command::new("python3")
        .args(["-m", "pip"])
        .args(&args)
        .stdout(if app.ui.verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .status()
        .context("running python3 -m pip download")?;
    if !status.success() {
        return Err(anyhow!(
            "pip download could not resolve {}",
            if packages.is_empty() {
                "the requirements".to_string()
            } else {
                packages
                    .iter()
                    .map(|p| match Path::new(p).starts_with(tmp.path()) {
                        true => "the project's dependencies",
                        false => p.as_str(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        ));
    }
    let client = IndexClient::new(app.ui.verbose, app.index_timeout());
    let mut files: Vec<_> = match std::fs::read_dir(&downloads) {
        Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        // Nothing to download (a project without dependencies): pip made no directory.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).context("reading pip's downloads"),
    };
    files.sort();
    if let Some(python) = &hosts_python {
        let unmet = crate::requires_python::unmet(&files, python);
        if !unmet.is_empty() {
            return Err(anyhow!(
                "the hosts run Python {python}, which these cannot run: {}; nothing was uploaded",
                unmet.join("; ")
            ));
        }
    }
    // The project itself is es build's to upload, not a copy of the work tree.
    if let Some(own) = own_name {
        files.retain(|f| {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            let dist = name.as_deref().and_then(crate::version::parse_filename);
            match (&own, dist) {
                (Some(own), Some(dist)) => crate::version::normalize_name(&dist.name) != *own,
                _ => true,
            }
        });
    }
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match client.upload(&target.url, target.credentials.as_ref(), &file) {
            Ok(()) => app.ui.note(&format!("es: uploaded {name}")),
            Err(err) if err.downcast_ref::<AlreadyOnIndex>().is_some() => app
                .ui
                .note(&format!("es: {name} is already on the index; skipped")),
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_host_only_for_plain_http() {
        assert_eq!(trusted_host("http://u:p@10.0.0.2:8080/simple/"), "10.0.0.2");
        assert_eq!(trusted_host("https://index.example/simple/"), "");
    }

    #[test]
    fn setuptools_projects_are_resolved_by_pip_and_static_lists_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(project_dependencies(root).is_err());
        std::fs::write(root.join("setup.py"), "setup(install_requires=['flask'])\n").unwrap();
        assert_eq!(project_dependencies(root).unwrap(), ProjectDeps::Resolve);
        std::fs::remove_file(root.join("setup.py")).unwrap();
        std::fs::write(
            root.join("setup.cfg"),
            "[options]\ninstall_requires = flask\n",
        )
        .unwrap();
        assert_eq!(project_dependencies(root).unwrap(), ProjectDeps::Resolve);
        std::fs::write(
            root.join("pyproject.toml"),
            "[project]\nname = \"a\"\ndependencies = [\"flask>=3\", \"click\"]\n",
        )
        .unwrap();
        assert_eq!(
            project_dependencies(root).unwrap(),
            ProjectDeps::Listed(vec!["flask>=3".into(), "click".into()])
        );
        std::fs::write(
            root.join("pyproject.toml"),
            "[project]\nname = \"a\"\ndynamic = [\"version\", \"dependencies\"]\n",
        )
        .unwrap();
        assert_eq!(project_dependencies(root).unwrap(), ProjectDeps::Resolve);
        std::fs::write(root.join("pyproject.toml"), "[project\n").unwrap();
        assert!(project_dependencies(root).is_err());
    }

    #[test]
    fn the_project_is_copied_without_hidden_entries_or_venvs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        for d in ["pkg/__pycache__", ".hidden", "venv/bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("setup.py"), "x").unwrap();
        std::fs::write(root.join("pkg/__init__.py"), "y").unwrap();
        std::fs::write(root.join("pkg/__pycache__/a.pyc"), "z").unwrap();
        std::fs::write(root.join(".hidden/k"), "z").unwrap();
        std::fs::write(root.join("venv/pyvenv.cfg"), "home = /usr/bin").unwrap();
        let dest = dir.path().join("copy");
        copy_tree(&root, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("pkg/__init__.py")).unwrap(),
            "y"
        );
        assert!(dest.join("setup.py").is_file());
        for gone in ["pkg/__pycache__", ".hidden", "venv"] {
            assert!(!dest.join(gone).exists(), "{gone}");
        }
    }

    #[test]
    fn plain_http_indexes_are_trusted_by_host() {
        assert_eq!(
            index_options("http://10.0.0.2:8080/simple/"),
            [
                "--index-url",
                "http://10.0.0.2:8080/simple/",
                "--trusted-host",
                "10.0.0.2"
            ]
        );
        assert_eq!(
            index_options("http://u:p@pypi.internal/simple/")[3],
            "pypi.internal"
        );
        assert_eq!(index_options("https://pypi.internal/simple/").len(), 2);
    }
}
