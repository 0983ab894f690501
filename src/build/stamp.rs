//! Stamping the version into the exported tree: pyproject.toml, setup.py,
//! setup.cfg, and the placeholders of the stamped files.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::app::App;
use crate::bad_input;
use crate::version::Version;

/// Writes the version into pyproject.toml and fills the placeholders of setup.py,
/// the package's settings module and `build.stamp_files`.
pub(super) fn stamp(
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

#[cfg(test)]
mod tests {
    use super::*;

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
