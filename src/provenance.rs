//! What `es build` records about a build inside the wheel it made:
//! `NAME-VERSION.dist-info/es-build.json` (version, commit, branch, built_at,
//! built_by), listed in the wheel's RECORD like every other file. Installers
//! copy it into site-packages, where a deploy reads it on the hosts, so the
//! ledger and `es status` show the commit a version was built from, whatever
//! is checked out locally.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The file's name inside the `.dist-info` directory.
pub const FILE_NAME: &str = "es-build.json";

/// Rewrites `wheel` with `record` (JSON) added as `.dist-info/es-build.json`.
pub fn add_to_wheel(wheel: &Path, record: &serde_json::Value) -> Result<()> {
    let content = format!("{record}\n");
    let source =
        std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive =
        zip::ZipArchive::new(source).with_context(|| format!("reading {}", wheel.display()))?;
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let name = archive
            .name_for_index(i)
            .ok_or_else(|| anyhow!("{}: entry {i} has no name", wheel.display()))?
            .with_context(|| format!("reading {}", wheel.display()))?;
        names.push(name.into_owned());
    }
    let record_path = names
        .iter()
        .find(|name| name.ends_with(".dist-info/RECORD") && name.matches('/').count() == 1)
        .cloned()
        .ok_or_else(|| anyhow!("{}: no .dist-info/RECORD", wheel.display()))?;
    let dist_info = record_path.trim_end_matches("RECORD");
    let ours = format!("{dist_info}{FILE_NAME}");

    let tmp = wheel.with_extension("whl.es-tmp");
    let out = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    let mut writer = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (i, name) in names.iter().enumerate() {
        if *name == ours {
            continue;
        }
        if *name == record_path {
            let mut text = String::new();
            archive.by_index(i)?.read_to_string(&mut text)?;
            let mut lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{ours},")))
                .collect();
            let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(content.as_bytes()));
            let line = format!("{ours},sha256={digest},{}", content.len());
            lines.insert(lines.len().saturating_sub(1), &line);
            writer.start_file(ours.as_str(), options)?;
            writer.write_all(content.as_bytes())?;
            writer.start_file(name.as_str(), options)?;
            writer.write_all(format!("{}\n", lines.join("\n")).as_bytes())?;
            continue;
        }
        writer.raw_copy_file(archive.by_index_raw(i)?)?;
    }
    writer.finish()?;
    std::fs::rename(&tmp, wheel).with_context(|| format!("replacing {}", wheel.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_added_and_listed_in_record() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("p-1.0-py3-none-any.whl");
        {
            let mut w = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
            let o = zip::write::SimpleFileOptions::default();
            w.start_file("p/__init__.py", o).unwrap();
            w.write_all(b"x = 1\n").unwrap();
            w.start_file("p-1.0.dist-info/METADATA", o).unwrap();
            w.write_all(b"Name: p\n").unwrap();
            w.start_file("p-1.0.dist-info/RECORD", o).unwrap();
            w.write_all(b"p/__init__.py,sha256=abc,6\np-1.0.dist-info/METADATA,,\np-1.0.dist-info/RECORD,,\n").unwrap();
            w.finish().unwrap();
        }
        add_to_wheel(&wheel, &serde_json::json!({"commit": "abc123"})).unwrap();
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
        let mut text = String::new();
        archive
            .by_name("p-1.0.dist-info/es-build.json")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\"commit\":\"abc123\"}\n");
        let mut record = String::new();
        archive
            .by_name("p-1.0.dist-info/RECORD")
            .unwrap()
            .read_to_string(&mut record)
            .unwrap();
        let lines: Vec<&str> = record.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[2].starts_with("p-1.0.dist-info/es-build.json,sha256="),
            "{record}"
        );
        assert!(lines[2].ends_with(",20"), "{record}");
        assert_eq!(lines[3], "p-1.0.dist-info/RECORD,,");
        let mut init = String::new();
        archive
            .by_name("p/__init__.py")
            .unwrap()
            .read_to_string(&mut init)
            .unwrap();
        assert_eq!(init, "x = 1\n");
    }
}
