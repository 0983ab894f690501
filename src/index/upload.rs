//! Uploading distributions with the legacy upload API, and the metadata the
//! upload form carries.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use sha2::Digest;

use super::{basic_auth, first_line, redact_url, AlreadyOnIndex, Credentials, IndexClient};
use crate::version::{self, DistKind};

impl IndexClient {
    /// Uploads one sdist or wheel to `upload_url` with the legacy upload API.
    pub fn upload(
        &self,
        upload_url: &str,
        credentials: Option<&Credentials>,
        file: &Path,
    ) -> Result<()> {
        let filename = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: not a file name", file.display()))?
            .to_string();
        let dist = version::parse_filename(&filename)
            .ok_or_else(|| anyhow!("{filename}: not an sdist or wheel file name"))?;
        let shown = redact_url(upload_url);
        let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let metadata = read_metadata(file, &content)?;
        let form = upload_form(&filename, &dist, &metadata, &content);
        let boundary = format!("es-{}", hex(&sha2::Sha256::digest(&content)[..12]));
        let body = multipart(&boundary, &form, &filename, &content);
        match credentials {
            Some(c) => self.say(&format!("POST {shown} ({filename}, as {})", c.username)),
            None => self.say(&format!("POST {shown} ({filename}, no credentials)")),
        }
        let response = self.with_retries(&shown, || {
            // Never follow a redirect when publishing (as uv): a POST answered
            // with 301/302 would be repeated as a GET, and look like success.
            let mut request = self
                .agent
                .post(upload_url)
                .config()
                .max_redirects(0)
                .timeout_global(Some(self.timeout * 10))
                .build()
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={boundary}"),
                );
            if let Some(c) = credentials {
                request = request.header("Authorization", basic_auth(c));
            }
            request.send(&body[..])
        })?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(redact_url);
        let text = response.into_body().read_to_string().unwrap_or_default();
        let reason = first_line(&text);
        if (200..300).contains(&status) {
            return Ok(());
        }
        if (300..400).contains(&status) {
            return Err(anyhow!(
                "the index answered HTTP {status} redirecting to {}: nothing was uploaded for {filename}; uploads never follow redirects, set index.upload_url to the address that takes them",
                location.as_deref().unwrap_or("(no Location)")
            ));
        }
        let exists = status == 409
            || text.to_ascii_lowercase().contains("already exist")
            || text.to_ascii_lowercase().contains("file exists");
        if exists {
            return Err(AlreadyOnIndex {
                filename,
                url: shown.clone(),
            }
            .into());
        }
        match (status, credentials) {
            (401 | 403, Some(c)) => Err(anyhow!(
                "the index refused the credentials for {} (HTTP {status} from {shown}); nothing was uploaded for {filename}",
                c.username
            )),
            (401 | 403, None) => Err(anyhow!(
                "the index refused an upload without credentials (HTTP {status} from {shown}): set index.repository (a ~/.pypirc section) or TWINE_USERNAME and TWINE_PASSWORD"
            )),
            _ => Err(anyhow!("uploading {filename} to {shown}: HTTP {status} {reason}")),
        }
    }

    /// Whether the index lists `file` with the same sha256 as the local one:
    /// an upload answered "already exists" after an attempt whose answer was
    /// lost (the index took the file, the connection broke) is then done.
    pub fn lists_identical(&self, index_url: &str, project: &str, file: &Path) -> Result<bool> {
        let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let ours = hex(&sha2::Sha256::digest(&content));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        Ok(self
            .project_files(index_url, project)?
            .unwrap_or_default()
            .iter()
            .any(|f| f.filename == name && f.sha256.as_deref() == Some(ours.as_str())))
    }
}

/// Core metadata (PKG-INFO / METADATA): header fields in order, and the description body.
#[derive(Debug, Default, Clone)]
pub struct Metadata {
    pub fields: Vec<(String, String)>,
    pub body: String,
}

impl Metadata {
    /// Parses RFC 822-style core metadata.
    pub fn parse(text: &str) -> Metadata {
        let mut metadata = Metadata::default();
        let mut lines = text.lines();
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = metadata.fields.last_mut() {
                    let continued = line.trim_start();
                    let continued = continued.strip_prefix('|').unwrap_or(continued);
                    value.push('\n');
                    value.push_str(continued);
                }
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                metadata
                    .fields
                    .push((key.trim().to_string(), value.trim().to_string()));
            }
        }
        metadata.body = lines.collect::<Vec<_>>().join("\n");
        metadata
    }

    /// The first value of a field (names compared case-insensitively).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a multiple-use field.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The core metadata inside an sdist (`NAME-VER/PKG-INFO`) or a wheel (`*.dist-info/METADATA`).
pub fn read_metadata(path: &Path, content: &[u8]) -> Result<Metadata> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let text = if name.ends_with(".whl") {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(content))
            .with_context(|| format!("{}: not a zip file", path.display()))?;
        let entry = archive
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .find(|n| {
                let mut parts = n.split('/');
                matches!((parts.next(), parts.next(), parts.next()),
                    (Some(dir), Some("METADATA"), None) if dir.ends_with(".dist-info"))
            })
            .ok_or_else(|| anyhow!("{}: no .dist-info/METADATA", path.display()))?;
        let mut text = String::new();
        archive
            .by_name(&entry)?
            .read_to_string(&mut text)
            .with_context(|| format!("{}: reading {entry}", path.display()))?;
        text
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(content));
        let mut found = None;
        for entry in archive
            .entries()
            .with_context(|| format!("{}: not a tar.gz file", path.display()))?
        {
            let mut entry = entry.with_context(|| format!("reading {}", path.display()))?;
            let entry_path = entry.path()?.into_owned();
            if entry_path.components().count() == 2 && entry_path.ends_with("PKG-INFO") {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                found = Some(text);
                break;
            }
        }
        found.ok_or_else(|| anyhow!("{}: no PKG-INFO at its top", path.display()))?
    } else {
        return Err(anyhow!(
            "{}: es reads metadata from .tar.gz sdists and .whl wheels only",
            path.display()
        ));
    };
    Ok(Metadata::parse(&text))
}

/// The form fields of an upload (everything but the file itself).
fn upload_form(
    filename: &str,
    dist: &version::DistFile,
    metadata: &Metadata,
    content: &[u8],
) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = vec![
        (":action".into(), "file_upload".into()),
        ("protocol_version".into(), "1".into()),
    ];
    let get = |key: &str| metadata.get(key).unwrap_or("").to_string();
    form.push(("metadata_version".into(), get("Metadata-Version")));
    form.push((
        "name".into(),
        metadata.get("Name").unwrap_or(&dist.name).to_string(),
    ));
    form.push((
        "version".into(),
        metadata
            .get("Version")
            .map_or_else(|| dist.version.to_string(), str::to_string),
    ));
    let (filetype, pyversion) = match dist.kind {
        DistKind::Sdist => ("sdist", "source".to_string()),
        DistKind::Wheel => ("bdist_wheel", dist.python_tag.clone().unwrap_or_default()),
    };
    form.push(("filetype".into(), filetype.into()));
    form.push(("pyversion".into(), pyversion));
    for (field, key) in [
        ("summary", "Summary"),
        ("home_page", "Home-page"),
        ("author", "Author"),
        ("author_email", "Author-email"),
        ("maintainer", "Maintainer"),
        ("maintainer_email", "Maintainer-email"),
        ("license", "License"),
        ("keywords", "Keywords"),
        ("platform", "Platform"),
        ("requires_python", "Requires-Python"),
        ("description_content_type", "Description-Content-Type"),
    ] {
        if let Some(value) = metadata.get(key) {
            form.push((field.into(), value.to_string()));
        }
    }
    for (field, key) in [
        ("classifiers", "Classifier"),
        ("requires_dist", "Requires-Dist"),
        ("provides_extra", "Provides-Extra"),
        ("project_urls", "Project-URL"),
    ] {
        for value in metadata.all(key) {
            form.push((field.into(), value.to_string()));
        }
    }
    let description = metadata
        .get("Description")
        .map(str::to_string)
        .unwrap_or_else(|| metadata.body.clone());
    if !description.is_empty() {
        form.push(("description".into(), description));
    }
    form.push(("sha256_digest".into(), hex(&sha2::Sha256::digest(content))));
    form.push((
        "blake2_256_digest".into(),
        hex(&blake2::Blake2b::<blake2::digest::consts::U32>::digest(
            content,
        )),
    ));
    form.push(("md5_digest".into(), hex(&md5::Md5::digest(content))));
    let _ = filename;
    form
}

/// A multipart/form-data body: the fields, then the file as `content`.
pub(super) fn multipart(
    boundary: &str,
    form: &[(String, String)],
    filename: &str,
    content: &[u8],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(content.len() + 4096);
    for (name, value) in form {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    let safe_name = filename.replace(['"', '\r', '\n'], "_");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
