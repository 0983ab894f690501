//! The pyproject.toml `es init --package` writes for a project kept as a
//! directory of code and a requirements file: one that builds a wheel that
//! runs, with the requirements as dependencies, every subpackage with its
//! templates, static files, translations, migrations and fixtures, the
//! top-level modules, and a top-level `migrations/` folder (Flask-Migrate)
//! installed into the venv.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Folders of a package that hold data, not code: shipped in the wheel.
const DATA_DIRS: [&str; 5] = ["templates", "static", "locale", "migrations", "fixtures"];

/// The requirements file a project keeps, when it keeps one.
fn requirements_file(dir: &Path) -> Option<PathBuf> {
    [
        "requirements.txt",
        "requirements/production.txt",
        "requirements/prod.txt",
        "requirements/base.txt",
    ]
    .iter()
    .map(|name| dir.join(name))
    .find(|path| path.is_file())
}

/// The requirements of `file`, `-r` includes followed, pins and markers kept;
/// options, editable installs and hashes left out.
pub fn requirements(file: &Path, seen: &mut BTreeSet<PathBuf>) -> Vec<String> {
    let Ok(text) = fs::read_to_string(file) else {
        return Vec::new();
    };
    if !seen.insert(fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf())) {
        return Vec::new();
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut found = Vec::new();
    for line in text.replace("\\\n", " ").lines() {
        let line = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        }
        .trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let include = line
            .strip_prefix("-r ")
            .or_else(|| line.strip_prefix("--requirement "))
            .or_else(|| line.strip_prefix("--requirement="));
        if let Some(included) = include {
            found.extend(requirements(&base.join(included.trim()), seen));
        } else if !line.starts_with('-') {
            let requirement = line.split(" --hash").next().unwrap_or(line).trim();
            found.push(requirement.to_string());
        }
    }
    found
}

/// Top-level modules: every `.py` file at the root but setup.py, conftest.py
/// and tests.
fn top_level_modules(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter_map(|n| n.strip_suffix(".py").map(str::to_string))
                .filter(|n| n != "setup" && n != "conftest" && !n.starts_with("test"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// `data-files` entries for a top-level folder: for each directory in it,
/// one glob per file extension found there (a later file of the same kind is
/// included too).
fn data_files(dir: &Path, folder: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut todo = vec![folder.to_string()];
    while let Some(rel) = todo.pop() {
        let Ok(entries) = fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        let mut globs = BTreeSet::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') || name == "__pycache__" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                todo.push(format!("{rel}/{name}"));
            } else {
                globs.insert(match name.rsplit_once('.') {
                    Some((_, ext)) => format!("{rel}/*.{ext}"),
                    None => format!("{rel}/{name}"),
                });
            }
        }
        if !globs.is_empty() {
            out.push((rel, globs.into_iter().collect()));
        }
    }
    out.sort();
    out
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{:?}", i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pyproject.toml for project `name` in `dir` with top-level `packages`.
pub fn pyproject(dir: &Path, name: &str, packages: &[String]) -> String {
    let requirements = requirements_file(dir)
        .map(|file| requirements(&file, &mut BTreeSet::new()))
        .unwrap_or_default();
    let dependencies: String = requirements.iter().map(|r| format!("  {r:?},\n")).collect();
    let include: Vec<String> = packages
        .iter()
        .flat_map(|p| [p.clone(), format!("{p}.*")])
        .collect();
    let data: Vec<String> = DATA_DIRS.iter().map(|d| format!("{d}/**/*")).collect();
    let mut text = format!(
        "# Written by `es init --package`: what es needs to build {name} into a wheel that runs.\n\
         [build-system]\nrequires = [\"setuptools>=64\"]\nbuild-backend = \"setuptools.build_meta\"\n\n\
         [project]\nname = \"{name}\"\n# `es build` stamps the version it builds here; keep it static.\nversion = \"0.0.0\"\n\
         # From the requirements file(s); the hosts install them from your index (`es pypi sync --project`).\n\
         dependencies = [\n{dependencies}]\n\n[tool.setuptools]\n"
    );
    let modules = top_level_modules(dir);
    if !modules.is_empty() {
        text.push_str(&format!("py-modules = [{}]\n", quoted(&modules)));
    }
    let migrations = data_files(dir, "migrations");
    if !migrations.is_empty() {
        text.push_str("# Installed into the venv: `flask db upgrade -d \"$VIRTUAL_ENV/migrations\"`.\n[tool.setuptools.data-files]\n");
        for (folder, globs) in migrations {
            text.push_str(&format!("{folder:?} = [{}]\n", quoted(&globs)));
        }
    }
    text.push_str(&format!(
        "\n[tool.setuptools.packages.find]\ninclude = [{}]\nnamespaces = false\n\n\
         # Data folders of the packages (templates, static files, translations, migrations, fixtures).\n\
         [tool.setuptools.package-data]\n\"*\" = [{}]\n",
        quoted(&include),
        quoted(&data)
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_follow_includes_and_keep_pins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("requirements")).unwrap();
        fs::write(
            d.join("requirements.txt"),
            "# prod\n-r requirements/base.txt\ngunicorn==22.0.0  # server\n--index-url https://example.invalid/simple\n-e .\n",
        )
        .unwrap();
        fs::write(
            d.join("requirements/base.txt"),
            "Flask>=3,<4\nFlask-Migrate==4.0.7 \\\n    --hash=sha256:abc\ntomli; python_version < \"3.11\"\n-r ../requirements.txt\n",
        )
        .unwrap();
        let found = requirements(&d.join("requirements.txt"), &mut BTreeSet::new());
        assert_eq!(
            found,
            [
                "Flask>=3,<4",
                "Flask-Migrate==4.0.7",
                "tomli; python_version < \"3.11\"",
                "gunicorn==22.0.0"
            ]
        );
    }

    #[test]
    fn the_pyproject_has_dependencies_subpackages_data_and_modules() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("app/main")).unwrap();
        fs::create_dir_all(d.join("migrations/versions")).unwrap();
        for f in [
            "app/__init__.py",
            "app/main/__init__.py",
            "config.py",
            "setup.py",
            "test_app.py",
            "migrations/env.py",
            "migrations/alembic.ini",
            "migrations/README",
            "migrations/versions/1a_init.py",
        ] {
            fs::write(d.join(f), "").unwrap();
        }
        fs::write(d.join("requirements.txt"), "flask==3.0.3\n").unwrap();
        let text = pyproject(d, "shop", &["app".to_string()]);
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["project"]["dependencies"].as_array().unwrap()[0].as_str(),
            Some("flask==3.0.3")
        );
        let tool = &parsed["tool"]["setuptools"];
        assert_eq!(tool["py-modules"].as_array().unwrap().len(), 1, "{text}");
        assert_eq!(tool["py-modules"][0].as_str(), Some("config"));
        assert_eq!(
            tool["packages"]["find"]["include"][1].as_str(),
            Some("app.*")
        );
        assert!(tool["package-data"]["*"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g.as_str() == Some("templates/**/*")));
        let files = &tool["data-files"];
        assert_eq!(files["migrations"].as_array().unwrap().len(), 3, "{text}");
        assert_eq!(
            files["migrations/versions"][0].as_str(),
            Some("migrations/versions/*.py")
        );
    }
}
