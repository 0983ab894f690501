//! `es init`: the deploy files a project in the current directory is missing,
//! named after the project.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use super::{find_template, render, validate_dist_name, write_new, Out, Rendered};
use crate::bad_input;
use crate::cli::{GlobalOpts, InitArgs};
use crate::config::ProcessManager;
use crate::deploy::DEFAULT_SUPERVISOR_TEMPLATE;

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
pub(super) fn setup_py_name(text: &str) -> Option<String> {
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
