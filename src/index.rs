//! The package index: reading a project's files through the simple API (PEP 691
//! JSON or PEP 503 HTML) and uploading distributions with the legacy upload API
//! that pypiserver, devpi, Nexus, Artifactory, GitLab and PyPI accept.
//!
//! Passwords are never printed, not even under `-v`: only the user name and the URL are.

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::version::{self, Version};

mod credentials;
mod simple;
#[cfg(test)]
mod tests;
mod upload;

pub use credentials::{upload_target, UPLOAD_CREDENTIALS_VAR};
use simple::{parse_html_page, parse_json_page};
pub use upload::read_metadata;

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
}

fn basic_auth(credentials: &Credentials) -> String {
    use base64::Engine;
    let pair = format!("{}:{}", credentials.username, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
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
