//! The PEP 517 front end that builds the sdist and the wheel (uv, else
//! `python -m build` from es's cached build venv), and how a build step is run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};

use super::home_dir;
use crate::app::App;
use crate::version::Version;

/// Runs a build step: its output shown under `-v` (on stderr, so the version stays
/// the last stdout line), otherwise kept and shown only when it fails.
pub(super) fn run_step(mut cmd: Command, what: &str, verbose: bool) -> Result<()> {
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
pub(super) enum Backend {
    Uv(PathBuf),
    PyBuild(PathBuf),
}

impl Backend {
    pub(super) fn find(app: &App) -> Result<Backend> {
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

    pub(super) fn describe(&self) -> String {
        match self {
            Backend::Uv(_) => "uv build".into(),
            Backend::PyBuild(_) => "python -m build".into(),
        }
    }

    pub(super) fn command(&self, src: &Path, out_dir: &Path, version: &Version) -> Command {
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
