//! What a built wheel lacks that the project's tree has: the module the
//! detected entry point runs, the project's own modules and packages that
//! module imports, and the template, static and translation folders of its
//! packages. `es build` warns about each; the build still succeeds.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::scaffold_detect::Entry;

/// Folders of a package the app reads at run time.
const DATA_DIRS: [&str; 3] = ["templates", "static", "locale"];

/// One line per thing `wheel` lacks, for the project `name` built from `tree`.
pub fn lacks(tree: &Path, name: &str, wheel: &Path) -> Result<Vec<String>> {
    let file = fs::File::open(wheel).with_context(|| format!("reading {}", wheel.display()))?;
    let archive =
        zip::ZipArchive::new(file).with_context(|| format!("reading {}", wheel.display()))?;
    let entries: BTreeSet<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let has_module = |module: &str| {
        let path = module.replace('.', "/");
        entries.contains(&format!("{path}.py")) || entries.contains(&format!("{path}/__init__.py"))
    };
    let mut found = Vec::new();
    let module = match crate::scaffold_detect::entry(tree, name) {
        Entry::Wsgi(target) | Entry::Asgi(target) => target.split(':').next().map(str::to_string),
        _ => None,
    };
    if let Some(module) = module {
        if !has_module(&module) {
            found.push(format!(
                "the wheel lacks {module}, which the app server runs: list its package in pyproject.toml"
            ));
        }
        for imported in local_imports(tree, &module) {
            if !has_module(&imported) {
                found.push(format!(
                    "the wheel lacks {imported}, which {module} imports: list it in pyproject.toml (py-modules or packages)"
                ));
            }
        }
    }
    for package in crate::scaffold_detect::packages(tree) {
        for dir in DATA_DIRS {
            let path = tree.join(&package).join(dir);
            let prefix = format!("{package}/{dir}/");
            if path.is_dir() && !entries.iter().any(|e| e.starts_with(&prefix)) {
                found.push(format!(
                    "the wheel lacks {package}/{dir}/: add it to package data ([tool.setuptools.package-data])"
                ));
            }
        }
    }
    Ok(found)
}

/// The project's own top-level modules and packages that `module`'s source
/// imports (`import x`, `from x import y`, `from x.y import z`).
fn local_imports(tree: &Path, module: &str) -> Vec<String> {
    let path = module.replace('.', "/");
    let source = fs::read_to_string(tree.join(format!("{path}.py")))
        .or_else(|_| fs::read_to_string(tree.join(&path).join("__init__.py")))
        .unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in source.lines().map(str::trim_start) {
        let name = line
            .strip_prefix("import ")
            .or_else(|| line.strip_prefix("from "))
            .and_then(|rest| rest.split([' ', ',', '.']).next())
            .unwrap_or("");
        let local = tree.join(format!("{name}.py")).is_file()
            || tree.join(name).join("__init__.py").is_file();
        if !name.is_empty() && local && name != module.split('.').next().unwrap_or("") {
            found.insert(name.to_string());
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel(dir: &Path, files: &[&str]) -> std::path::PathBuf {
        let path = dir.join("w.whl");
        let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        for f in files {
            zip.start_file(*f, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"").unwrap();
        }
        zip.finish().unwrap();
        path
    }

    #[test]
    fn names_what_the_wheel_lacks_and_nothing_it_has() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        fs::create_dir_all(t.join("app/templates")).unwrap();
        fs::create_dir_all(t.join("app/static")).unwrap();
        fs::write(t.join("app/templates/index.html"), "").unwrap();
        fs::write(t.join("app/static/s.css"), "").unwrap();
        fs::write(
            t.join("app/__init__.py"),
            "from flask import Flask\nimport config\nfrom app.views import x\n\ndef create_app():\n    return Flask(__name__)\n",
        )
        .unwrap();
        fs::write(t.join("config.py"), "X = 1\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let bare = wheel(out.path(), &["app/__init__.py"]);
        let lacks_now = lacks(t, "shop", &bare).unwrap();
        assert_eq!(lacks_now.len(), 3, "{lacks_now:?}");
        assert!(lacks_now[0].starts_with("the wheel lacks config, which app imports"));
        assert!(lacks_now[1].starts_with("the wheel lacks app/templates/"));
        assert!(lacks_now[2].starts_with("the wheel lacks app/static/"));
        let whole = wheel(
            out.path(),
            &[
                "app/__init__.py",
                "config.py",
                "app/templates/index.html",
                "app/static/s.css",
            ],
        );
        assert_eq!(lacks(t, "shop", &whole).unwrap(), Vec::<String>::new());
    }
}
