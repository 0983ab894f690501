//! Local pip commands: `es pinstall` (from the project's index), `es install` (plain
//! pass-through) and `es pypi sync` (copy packages from upstream into the index).

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

/// The project's declared dependencies: pyproject.toml's [project].dependencies.
fn project_dependencies(app: &App) -> Result<Vec<String>> {
    let loaded = app.require_config()?;
    let path = loaded.root().join("pyproject.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => bad_input!("--project: cannot read {}: {err}", path.display()),
    };
    let value: toml::Value = match toml::from_str(&text) {
        Ok(value) => value,
        Err(err) => bad_input!("--project: {}: {err}", path.display()),
    };
    Ok(value
        .get("project")
        .and_then(|p| p.get("dependencies"))
        .and_then(|d| d.as_array())
        .map(|deps| {
            deps.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
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
    if sync.project {
        packages.extend(project_dependencies(app)?);
    }
    if packages.is_empty() && sync.requirements.is_empty() {
        bad_input!("nothing to sync: give packages, --project or -r FILE");
    }
    let target = index::upload_target(&config.index, std::env::var_os("HOME").map(Into::into))?;
    let tmp = tempfile::Builder::new()
        .prefix("es-sync-")
        .tempdir()
        .context("making a temporary directory")?;
    // The whole closure: pip resolves the dependencies too.
    let mut args = vec![
        "download".to_string(),
        "--disable-pip-version-check".to_string(),
        "-d".to_string(),
        tmp.path().display().to_string(),
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
                packages.join(" ")
            }
        ));
    }
    let client = IndexClient::new(app.ui.verbose, app.index_timeout());
    let mut files: Vec<_> = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
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
