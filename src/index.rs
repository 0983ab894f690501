//! The package index: reading a project's files through the simple API (PEP 691
//! JSON or PEP 503 HTML) and uploading distributions with the legacy upload API
//! that pypiserver, devpi, Nexus, Artifactory, GitLab and PyPI accept.
//!
//! Passwords are never printed, not even under `-v`: only the user name and the URL are.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use sha2::Digest;

use crate::bad_input;
use crate::version::{self, DistKind, Version};

mod credentials;
pub use credentials::UPLOAD_CREDENTIALS_VAR;

const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, text/html;q=0.1";
const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";
/// Attempts for a request that fails to connect or gets a 5xx answer.
const ATTEMPTS: u32 = 4;

/// An HTTP client for one index, with timeouts and retries.
pub struct IndexClient {
    agent: ureq::Agent,
    /// How long one request may take (uploads: ten times this).
    timeout: Duration,
    /// Say each request (and each ignored file) on stderr.
    verbose: bool,
}

/// A file a simple API page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    /// PEP 592: withdrawn by its publisher; never picked as `latest`.
    pub yanked: bool,
    /// The file's sha256 as the index gives it (lowercase hex), when it does.
    pub sha256: Option<String>,
}

/// A user name and password for uploads. `Debug` hides the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// An upload refused because the index already holds the file.
#[derive(Debug)]
pub struct AlreadyOnIndex {
    pub filename: String,
    pub url: String,
}

impl fmt::Display for AlreadyOnIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is already on the index ({}): an index never replaces a file; build a new version",
            self.filename, self.url
        )
    }
}

impl std::error::Error for AlreadyOnIndex {}

/// Highest version of `project` on the index at `index_url`; `None` when the index
/// does not have the project (or none of its files has a PEP 440 version).
///
/// `latest` means the highest release built from the default branch: files that
/// are yanked (PEP 592) and versions with a local label (`+feature.x`: builds
/// of other branches, or named builds) are skipped.
pub fn latest_version(
    index_url: &str,
    project: &str,
    timeout: Duration,
) -> Result<Option<Version>> {
    let files = IndexClient::new(false, timeout)
        .project_files(index_url, project)?
        .unwrap_or_default();
    Ok(latest_of(project, &files))
}

/// The highest version among `files` that is neither yanked nor local.
fn latest_of(project: &str, files: &[IndexFile]) -> Option<Version> {
    let candidates: Vec<Version> = files
        .iter()
        .filter(|f| !f.yanked)
        .filter_map(|f| version::version_for(project, &f.filename))
        .filter(|v| !v.is_local())
        .collect();
    version::highest(&candidates).cloned()
}

impl IndexClient {
    /// A client with a 10 s connect timeout and `timeout` for a whole request
    /// (index.timeout; uploads get ten times as long); `verbose` for `-v`.
    pub fn new(verbose: bool, timeout: Duration) -> IndexClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10).min(timeout)))
            .timeout_global(Some(timeout))
            .user_agent(concat!("es/", env!("CARGO_PKG_VERSION")))
            // The system's trust store (an internal CA installed there works;
            // SSL_CERT_FILE / SSL_CERT_DIR are honoured), as pip and uv do.
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        IndexClient {
            agent: config.into(),
            verbose,
            timeout,
        }
    }

    fn say(&self, line: &str) {
        if self.verbose {
            eprintln!("es: {line}");
        }
    }

    /// The files the index lists for `project`; `None` when it does not know the project (404).
    pub fn project_files(&self, index_url: &str, project: &str) -> Result<Option<Vec<IndexFile>>> {
        let url = project_url(index_url, project);
        let shown = redact_url(&url);
        self.say(&format!("GET {shown}"));
        // Credentials in the URL go in a header (an index that needs them to read).
        let (bare, credentials) = split_credentials(&url);
        let mut response = self.with_retries(&shown, || {
            let request = self.agent.get(&bare).header("Accept", ACCEPT);
            match &credentials {
                Some(c) => request.header("Authorization", basic_auth(c)).call(),
                None => request.call(),
            }
        })?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 => return Ok(None),
            401 | 403 => {
                return Err(anyhow!(
                    "the index refused to list {project} at {shown} (HTTP {status}): {}",
                    if credentials.is_some() {
                        "the credentials in index.url were refused"
                    } else {
                        "it needs credentials to read: put them in index.url (https://USER:PASSWORD@host/simple/); es never prints them and sends them to the hosts in a file, never on a command line"
                    }
                ))
            }
            _ => return Err(anyhow!("{shown}: HTTP {status}")),
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .with_context(|| format!("reading {shown}"))?;
        let files = if content_type.starts_with(JSON_TYPE) {
            parse_json_page(&body).with_context(|| format!("{shown}: bad PEP 691 JSON"))?
        } else {
            parse_html_page(&body)
        };
        Ok(Some(files))
    }

    /// Every PEP 440 version of `project` on the index (empty when it is not there).
    /// Files of other projects and files whose names do not parse are skipped (said under `-v`).
    pub fn versions(&self, index_url: &str, project: &str) -> Result<Vec<Version>> {
        let Some(files) = self.project_files(index_url, project)? else {
            self.say(&format!("{project} is not on the index yet"));
            return Ok(Vec::new());
        };
        let mut versions = Vec::new();
        for file in files {
            match version::version_for(project, &file.filename) {
                Some(v) => versions.push(v),
                None => self.say(&format!(
                    "ignoring {}: not a {project} sdist or wheel with a PEP 440 version",
                    file.filename
                )),
            }
        }
        Ok(versions)
    }

    /// Runs `request`, retrying connection errors and 5xx answers with backoff.
    fn with_retries(
        &self,
        url: &str,
        mut request: impl FnMut() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            match request() {
                Ok(response) if response.status().is_server_error() && !last => {
                    self.say(&format!(
                        "{url}: HTTP {}, retrying in {:.1}s",
                        response.status().as_u16(),
                        delay.as_secs_f32()
                    ));
                }
                Ok(response) => return Ok(response),
                Err(err) if retryable(&err) && !last => {
                    self.say(&format!(
                        "{url}: {err}, retrying in {:.1}s",
                        delay.as_secs_f32()
                    ));
                }
                Err(ureq::Error::Timeout(_)) => {
                    return Err(anyhow!(
                        "{url}: no answer within {}s (index.timeout)",
                        self.timeout.as_secs()
                    ))
                }
                Err(err) => return Err(anyhow!("{url}: {err}")),
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        Err(anyhow!("{url}: no answer"))
    }

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
}

impl IndexClient {
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

/// Errors worth another try. A timeout is not: an index that accepted the
/// connection and did not answer within index.timeout will not do better.
fn retryable(err: &ureq::Error) -> bool {
    matches!(err, ureq::Error::ConnectionFailed | ureq::Error::Io(_))
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// `url` with the password of any `user:password@` part replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

/// The password of a `scheme://user:password@host/...` URL, if it has one.
pub fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password)
}

/// `url` without its `user:password@`, and those credentials (percent-decoded),
/// sent as an Authorization header instead, as pip and uv do.
pub fn split_credentials(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = Credentials {
        username: percent_decode(user),
        password: percent_decode(password),
    };
    (format!("{scheme}://{host}{path}"), Some(credentials))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `{index_url}/{normalized}/`
pub fn project_url(index_url: &str, project: &str) -> String {
    format!(
        "{}/{}/",
        index_url.trim_end_matches('/'),
        version::normalize_name(project)
    )
}

/// The upload URL that goes with a simple API URL: the URL without its `/simple/` tail.
pub fn default_upload_url(index_url: &str) -> String {
    let trimmed = index_url.trim_end_matches('/');
    match trimmed.strip_suffix("/simple") {
        Some(base) => format!("{base}/"),
        None => format!("{trimmed}/"),
    }
}

/// The files of a PEP 691 JSON project page.
fn parse_json_page(body: &str) -> Result<Vec<IndexFile>> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    let files = value
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or_else(|| anyhow!("no `files` list"))?;
    Ok(files
        .iter()
        .filter_map(|f| {
            let name = f.get("filename").and_then(|n| n.as_str())?;
            // `yanked` is false, true, or a reason (a string).
            let yanked = match f.get("yanked") {
                Some(serde_json::Value::Bool(b)) => *b,
                Some(serde_json::Value::String(_)) => true,
                _ => false,
            };
            let sha256 = f
                .get("hashes")
                .and_then(|h| h.get("sha256"))
                .and_then(|h| h.as_str())
                .map(str::to_ascii_lowercase);
            Some(IndexFile {
                filename: name.to_string(),
                yanked,
                sha256,
            })
        })
        .collect())
}

/// The files of a PEP 503 HTML project page: the text of every anchor (or, when
/// empty, the last path segment of its href).
fn parse_html_page(body: &str) -> Vec<IndexFile> {
    let lower = body.to_ascii_lowercase();
    let mut files = Vec::new();
    let mut pos = 0;
    while let Some(start) = lower[pos..].find("<a").map(|i| pos + i) {
        let after = start + 2;
        // `<abbr>` and the like are not anchors.
        if !lower[after..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>') {
            pos = after;
            continue;
        }
        let Some(tag_end) = lower[after..].find('>').map(|i| after + i) else {
            break;
        };
        let Some(close) = lower[tag_end..].find("</a").map(|i| tag_end + i) else {
            break;
        };
        let text = unescape(body[tag_end + 1..close].trim());
        let name = if text.is_empty() {
            href_name(&body[after..tag_end]).unwrap_or_default()
        } else {
            text
        };
        if !name.is_empty() {
            let yanked = lower[after..tag_end].contains("data-yanked");
            let sha256 = href(&body[after..tag_end]).and_then(|h| {
                h.split_once("#sha256=")
                    .map(|(_, hex)| hex.to_ascii_lowercase())
            });
            files.push(IndexFile {
                filename: name,
                yanked,
                sha256,
            });
        }
        pos = close;
    }
    files
}

fn href_name(attributes: &str) -> Option<String> {
    let value = href(attributes)?;
    let path = value.split(['#', '?']).next()?;
    Some(unescape(path.rsplit('/').next()?))
}

/// The href of an anchor's attributes, as written.
fn href(attributes: &str) -> Option<&str> {
    let lower = attributes.to_ascii_lowercase();
    let i = lower.find("href=")? + 5;
    let rest = &attributes[i..];
    match rest.chars().next()? {
        q @ ('"' | '\'') => rest[1..].split(q).next(),
        _ => rest.split_whitespace().next(),
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
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
fn multipart(boundary: &str, form: &[(String, String)], filename: &str, content: &[u8]) -> Vec<u8> {
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

fn basic_auth(credentials: &Credentials) -> String {
    use base64::Engine;
    let pair = format!("{}:{}", credentials.username, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where to upload and as whom.
#[derive(Debug)]
pub struct UploadTarget {
    pub url: String,
    pub credentials: Option<Credentials>,
}

/// The upload URL and credentials: `index.repository` names a `~/.pypirc` section
/// (username, password, and repository when `index.upload_url` is unset); without it,
/// `TWINE_USERNAME` / `TWINE_PASSWORD` from the environment.
pub fn upload_target(index: &crate::config::Index, home: Option<PathBuf>) -> Result<UploadTarget> {
    let mut url = index.upload_url.clone();
    let credentials = if let Some(section) = &index.repository {
        let path = home.unwrap_or_default().join(".pypirc");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => bad_input!(
                "index.repository = {section:?}, but {} cannot be read: {err}",
                path.display()
            ),
        };
        let values = pypirc_section(&text, section);
        if values.is_empty() {
            bad_input!(
                "{} has no [{section}] section (named by index.repository)",
                path.display()
            );
        }
        let get = |key: &str| {
            values
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if url.is_none() {
            url = get("repository");
        }
        match (get("username"), get("password")) {
            (Some(username), Some(password)) => Some(Credentials { username, password }),
            (Some(_), None) | (None, Some(_)) => bad_input!(
                "{} [{section}] needs both username and password",
                path.display()
            ),
            (None, None) => None,
        }
    } else if let Some(path) = std::env::var_os(UPLOAD_CREDENTIALS_VAR) {
        Some(credentials::read_file(Path::new(&path))?)
    } else {
        match (
            std::env::var("TWINE_USERNAME"),
            std::env::var("TWINE_PASSWORD"),
        ) {
            (Ok(username), Ok(password)) => Some(Credentials { username, password }),
            (Ok(_), Err(_)) => bad_input!("TWINE_USERNAME is set but TWINE_PASSWORD is not"),
            (Err(_), Ok(_)) => bad_input!("TWINE_PASSWORD is set but TWINE_USERNAME is not"),
            _ => None,
        }
    };
    let url = match (url, &index.url) {
        (Some(url), _) => url,
        (None, Some(index_url)) => default_upload_url(index_url),
        (None, None) => {
            bad_input!("no index to upload to: set index.url (and index.upload_url) in deploy.toml")
        }
    };
    Ok(UploadTarget { url, credentials })
}

/// The `key = value` (or `key: value`) pairs of one section of a `.pypirc`.
fn pypirc_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut values = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') || trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            inside = trimmed[1..trimmed.len() - 1].trim() == section;
            continue;
        }
        if !inside {
            continue;
        }
        let split = trimmed
            .find(['=', ':'])
            .map(|i| (&trimmed[..i], &trimmed[i + 1..]));
        if let Some((key, value)) = split {
            values.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one HTTP request (headers and a Content-Length body) from `conn`.
    fn read_request(conn: &mut std::net::TcpStream) -> String {
        use std::io::Read;
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = conn.read(&mut buf).unwrap();
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    return text[..end].to_string();
                }
            }
            if n == 0 {
                return text;
            }
        }
    }

    #[test]
    fn an_upload_whose_answer_was_lost_is_found_on_the_index_byte_for_byte() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("acme_web-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file(
            "acme_web-1.0.dist-info/METADATA",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(b"Metadata-Version: 2.1\nName: acme-web\nVersion: 1.0\n\n")
            .unwrap();
        zip.finish().unwrap();
        let sha = hex(&sha2::Sha256::digest(std::fs::read(&wheel).unwrap()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The index takes the upload and the connection breaks before its
        // answer; the retry is told the file exists; the page lists it.
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (i, conn) in listener.incoming().take(4).enumerate() {
                let mut conn = conn.unwrap();
                let request = read_request(&mut conn);
                seen.push(request.lines().next().unwrap_or_default().to_string());
                let answer = match i {
                    0 => continue,
                    1 => "HTTP/1.1 409 Conflict\r\nContent-Length: 20\r\nConnection: close\r\n\r\nFile already exists.".to_string(),
                    _ => {
                        let sha = if i == 2 { sha.clone() } else { "0".repeat(64) };
                        let page = format!("<a href=\"/packages/acme_web-1.0-py3-none-any.whl#sha256={sha}\">acme_web-1.0-py3-none-any.whl</a>");
                        format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len())
                    }
                };
                conn.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        let client = IndexClient::new(false, Duration::from_secs(5));
        let err = client
            .upload(&format!("http://127.0.0.1:{port}/"), None, &wheel)
            .unwrap_err();
        assert!(err.downcast_ref::<AlreadyOnIndex>().is_some(), "{err:#}");
        let index = format!("http://127.0.0.1:{port}/simple/");
        assert!(client.lists_identical(&index, "acme-web", &wheel).unwrap());
        // Another file of the same name is not ours.
        assert!(!client.lists_identical(&index, "acme-web", &wheel).unwrap());
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            [
                "POST / HTTP/1.1",
                "POST / HTTP/1.1",
                "GET /simple/acme-web/ HTTP/1.1",
                "GET /simple/acme-web/ HTTP/1.1"
            ]
        );
    }

    #[test]
    fn html_page_lists_anchor_texts() {
        let page = r#"<!DOCTYPE html><html><body><h1>Links for acme-web</h1>
<a href="/packages/acme_web-1.0.tar.gz#sha256=ab">acme_web-1.0.tar.gz</a><br>
<A HREF="../../packages/acme_web-1.1-py3-none-any.whl#sha256=cd" data-requires-python="&gt;=3.8">acme_web-1.1-py3-none-any.whl</A>
<a href='/p/acme_web-1.2.tar.gz'></a><abbr>x</abbr>
</body></html>"#;
        let files = parse_html_page(page);
        let hashes: Vec<Option<&str>> = files.iter().map(|f| f.sha256.as_deref()).collect();
        assert_eq!(hashes, [Some("ab"), Some("cd"), None]);
        let names: Vec<String> = files.into_iter().map(|f| f.filename).collect();
        assert_eq!(
            names,
            [
                "acme_web-1.0.tar.gz",
                "acme_web-1.1-py3-none-any.whl",
                "acme_web-1.2.tar.gz"
            ]
        );
    }

    #[test]
    fn json_page_lists_files() {
        let page = r#"{"meta":{"api-version":"1.0"},"name":"acme-web","files":[
            {"filename":"acme_web-1.0.tar.gz","url":"x","hashes":{}},
            {"filename":"acme_web-1.0-py3-none-any.whl","url":"y","hashes":{"sha256":"EF01"}}]}"#;
        let files = parse_json_page(page).unwrap();
        assert_eq!(files[0].sha256, None);
        assert_eq!(files[1].sha256.as_deref(), Some("ef01"));
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].filename, "acme_web-1.0-py3-none-any.whl");
        assert!(parse_json_page("{}").is_err());
    }

    #[test]
    fn latest_skips_yanked_files_and_local_versions() {
        let html = r#"<a href="/p/acme_web-1.0.tar.gz">acme_web-1.0.tar.gz</a>
<a href="/p/acme_web-1.2.tar.gz" data-yanked="broke the login">acme_web-1.2.tar.gz</a>
<a href="/p/acme_web-1.3+feature.x.tar.gz">acme_web-1.3+feature.x.tar.gz</a>
<a href="/p/acme_web-1.1-py3-none-any.whl">acme_web-1.1-py3-none-any.whl</a>"#;
        let files = parse_html_page(html);
        assert_eq!(files.iter().filter(|f| f.yanked).count(), 1);
        assert_eq!(latest_of("acme-web", &files).unwrap().to_string(), "1.1");
        let json = r#"{"files":[
            {"filename":"acme_web-2.0.tar.gz","yanked":"security"},
            {"filename":"acme_web-1.9.tar.gz","yanked":false},
            {"filename":"acme_web-1.8.tar.gz","yanked":true},
            {"filename":"acme_web-2.1+hotfix.tar.gz"}]}"#;
        let files = parse_json_page(json).unwrap();
        assert_eq!(latest_of("acme-web", &files).unwrap().to_string(), "1.9");
        assert_eq!(latest_of("acme-web", &[]), None);
    }

    #[test]
    fn url_credentials_become_a_header() {
        let (bare, c) = split_credentials("https://ann:p%40ss@idx.example:8443/simple/x/");
        assert_eq!(bare, "https://idx.example:8443/simple/x/");
        let c = c.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("ann", "p@ss"));
        assert!(split_credentials("http://idx/simple/").1.is_none());
    }

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            redact_url("https://u:s3cret@h/simple/"),
            "https://u:***@h/simple/"
        );
        assert_eq!(redact_url("http://h:8080/"), "http://h:8080/");
        assert_eq!(url_password("https://u:s3cret@h:1/simple/"), Some("s3cret"));
        assert_eq!(url_password("https://u@h/simple/"), None);
        assert_eq!(url_password("http://h:8080/simple/"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            project_url("http://i:8080/simple/", "Acme_Web"),
            "http://i:8080/simple/acme-web/"
        );
        assert_eq!(project_url("http://i/simple", "a"), "http://i/simple/a/");
        assert_eq!(
            default_upload_url("http://i:8080/simple/"),
            "http://i:8080/"
        );
        assert_eq!(
            default_upload_url("https://h/pypi/simple"),
            "https://h/pypi/"
        );
    }

    #[test]
    fn metadata_parses_fields_and_body() {
        let text = "Metadata-Version: 2.1\nName: acme-web\nVersion: 1.0\nClassifier: A\nClassifier: B\nLicense: line one\n        |line two\n\nThe long description.\nSecond line.\n";
        let m = Metadata::parse(text);
        assert_eq!(m.get("name"), Some("acme-web"));
        assert_eq!(m.all("Classifier"), ["A", "B"]);
        assert_eq!(m.get("License"), Some("line one\nline two"));
        assert_eq!(m.body, "The long description.\nSecond line.");
    }

    #[test]
    fn multipart_body_holds_fields_and_file() {
        let form = vec![(":action".to_string(), "file_upload".to_string())];
        let body = multipart("B", &form, "a-1.0.tar.gz", b"DATA");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(
            "--B\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload\r\n"
        ));
        assert!(text.contains("name=\"content\"; filename=\"a-1.0.tar.gz\""));
        assert!(text.ends_with("\r\n\r\nDATA\r\n--B--\r\n"));
    }

    #[test]
    fn digests_match_known_values() {
        assert_eq!(
            hex(&sha2::Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&md5::Md5::digest(b"abc")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            hex(&blake2::Blake2b::<blake2::digest::consts::U32>::digest(
                b"abc"
            )),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
    }

    #[test]
    fn pypirc_sections_and_credentials_debug() {
        let text = "[distutils]\nindex-servers =\n    internal\n\n[internal]\nrepository: http://i:8080/\nusername = up\npassword = s3cret=x\n";
        let values = pypirc_section(text, "internal");
        assert_eq!(values[0], ("repository".into(), "http://i:8080/".into()));
        assert_eq!(values[2], ("password".into(), "s3cret=x".into()));
        let c = Credentials {
            username: "up".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
