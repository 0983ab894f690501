//! The hosts' Python against what packages require (`Requires-Python`): a
//! project or a dependency the hosts cannot run is named here, not found
//! out while staging.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, Result};
use pep440_rs::{Version, VersionSpecifiers};

use crate::app::App;

/// Whether Python `python` (`3.11` or `3.11.2`) meets `spec` (`>=3.8,<4`).
/// A specifier that cannot be parsed is not held against the package.
pub fn meets(python: &str, spec: &str) -> bool {
    match (Version::from_str(python), VersionSpecifiers::from_str(spec)) {
        (Ok(version), Ok(specifiers)) => specifiers.contains(&version),
        _ => true,
    }
}

/// The hosts' Python: `--python`, else `index.python`, else asked from the
/// first host of the chosen role (`python3` there).
pub fn hosts_python(app: &App, given: Option<&str>) -> Result<String> {
    if let Some(python) = given.or(app.config().index.python.as_deref()) {
        return Ok(python.to_string());
    }
    let fleet = app.fleet(false)?;
    let first = fleet
        .targets
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no host to ask for its Python: set index.python"))?;
    let one = crate::fleet::Fleet {
        targets: vec![first],
        ..fleet
    };
    let report = one.run(|ctx| {
        ctx.step("python version");
        let out =
            ctx.check("python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'")?;
        Ok(out.stdout.trim().to_string())
    });
    let outcome = report
        .outcomes
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no host answered for its Python"))?;
    let host = outcome.host;
    let python = outcome.result.map_err(|failure| {
        anyhow!(
            "asking {host} for its Python: {} (or set index.python)",
            failure.error
        )
    })?;
    app.ui
        .note(&format!("es: the hosts run Python {python} (asked {host})"));
    Ok(python)
}

/// One line per downloaded file whose Requires-Python `python` does not meet.
pub fn unmet(files: &[PathBuf], python: &str) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let Ok(content) = std::fs::read(file) else {
            continue;
        };
        let Ok(metadata) = crate::index::read_metadata(file, &content) else {
            continue;
        };
        if let Some(spec) = metadata.get("Requires-Python") {
            if !meets(python, spec) {
                found.push(format!(
                    "{} {} needs Python {spec}",
                    metadata.get("Name").unwrap_or("?"),
                    metadata.get("Version").unwrap_or("?")
                ));
            }
        }
    }
    found
}

/// The project's own `requires-python` (pyproject.toml's `[project]`), when set.
pub fn project_requires(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("pyproject.toml")).ok()?;
    let table: toml::Table = text.parse().ok()?;
    table
        .get("project")?
        .get("requires-python")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn versions_meet_specifiers() {
        assert!(meets("3.11.2", ">=3.8"));
        assert!(!meets("3.11.2", ">=3.12"));
        assert!(!meets("3.11", ">=3.11.4"));
        assert!(meets("3.11.2", ">=3.8,<4"));
        assert!(!meets("3.11.2", "!=3.11.*"));
        assert!(meets("3.11.2", "not a specifier"));
    }

    #[test]
    fn downloaded_wheels_are_named_with_what_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = |name: &str, spec: Option<&str>| {
            let path = dir.path().join(format!("{name}-1.0-py3-none-any.whl"));
            let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
            zip.start_file(
                format!("{name}-1.0.dist-info/METADATA"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            let requires = spec.map_or(String::new(), |s| format!("Requires-Python: {s}\n"));
            write!(
                zip,
                "Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{requires}\n"
            )
            .unwrap();
            zip.finish().unwrap();
            path
        };
        let files = [
            wheel("new_only", Some(">=3.12")),
            wheel("fine", Some(">=3.8")),
            wheel("any", None),
        ];
        assert_eq!(
            unmet(&files, "3.11.2"),
            vec!["new_only 1.0 needs Python >=3.12"]
        );
        assert!(unmet(&files, "3.12.1").is_empty());
    }

    #[test]
    fn the_projects_own_requirement_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"x\"\nrequires-python = \">=3.12\"\n",
        )
        .unwrap();
        assert_eq!(project_requires(dir.path()).as_deref(), Some(">=3.12"));
        assert_eq!(project_requires(&dir.path().join("none")), None);
    }
}
