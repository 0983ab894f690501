//! `deploy.toml`: its types, how it is found and read, and how it is checked.
//!
//! Every error names the file, line, column and key, so that a user can go
//! straight to the mistake. Unknown keys are refused, with a "did you mean"
//! when a known key is close.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;

mod deploy;
mod locate;
pub mod serve;
mod validate;

pub use deploy::{
    CountOrPercent, Deploy, Health, HooksOn, Installer, ProcessManager, SecretSource, SystemdScope,
};
use locate::{key_span, line_col, translate_toml_error};
use validate::validate;

/// The file name looked for in the current directory and its parents.
pub const FILE_NAME: &str = "deploy.toml";

/// The whole of `deploy.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub project: Project,
    #[serde(default)]
    pub build: Build,
    #[serde(default)]
    pub index: Index,
    /// Role name -> host entries (`user@host:port`, `host`, an ssh config alias, or `local`).
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub deploy: Deploy,
    #[serde(default)]
    pub nginx: Nginx,
    /// `es serve`: webhooks, triggers, notifications.
    pub serve: Option<serve::Serve>,
}

/// `[project]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Distribution, console script and supervisord program name.
    pub name: Option<String>,
    /// Built when neither `--commit` nor `--branch` is given.
    #[serde(default = "default_branch")]
    pub default_branch: String,
}

fn default_branch() -> String {
    "main".into()
}

impl Default for Project {
    fn default() -> Self {
        Project {
            name: None,
            default_branch: default_branch(),
        }
    }
}

/// `[build]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Build {
    #[serde(default)]
    pub version_scheme: VersionScheme,
    /// Extra files whose `${version}`, `${git_version}`, `${release_time}` are filled in.
    #[serde(default)]
    pub stamp_files: Vec<String>,
    /// Local commands run in the exported tree before the build backend.
    #[serde(default)]
    pub pre_build: Vec<String>,
}

/// How `es build` chooses the next version.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VersionScheme {
    /// `YYYY.M.D.N`
    #[default]
    Calver,
    /// essay's `Y.M.D.N`, with a one-digit year.
    Essay,
    /// Bump the highest semver-shaped version.
    Semver,
}

/// `[index]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Simple API URL: pip installs from it, es reads versions from it.
    pub url: Option<String>,
    /// Where builds are uploaded (default: `url` without `/simple/`).
    pub upload_url: Option<String>,
    /// Optional `~/.pypirc` section holding the credentials.
    pub repository: Option<String>,
    /// Seconds one request to the index may take (an upload: ten times as long).
    #[serde(default = "default_index_timeout")]
    pub timeout: u64,
    /// The hosts' Python version (`es pypi sync` resolves for it).
    pub python: Option<String>,
    /// The hosts' platform tags (`es pypi sync` resolves for them).
    #[serde(default)]
    pub platforms: Vec<String>,
}

fn default_index_timeout() -> u64 {
    30
}

impl Default for Index {
    fn default() -> Self {
        Index {
            url: None,
            upload_url: None,
            repository: None,
            timeout: default_index_timeout(),
            python: None,
            platforms: Vec::new(),
        }
    }
}

/// `[ssh]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// User when a host entry names none (and `~/.ssh/config` gives none).
    pub user: Option<String>,
    /// Port when a host entry names none.
    pub port: Option<u16>,
    /// Private key tried after ssh-agent.
    pub identity_file: Option<String>,
    /// known_hosts file checked in addition to the user's own.
    pub known_hosts: Option<String>,
    /// Seconds to wait for a connection and the SSH handshake.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Hosts worked on at once.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Seconds one remote command or transfer may take.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: u64,
    /// Seconds between keepalives; a peer silent for a few of them is dropped.
    #[serde(default = "default_keepalive")]
    pub keepalive: u64,
    /// A bastion every host is reached through, like OpenSSH's ProxyJump
    /// (`[user@]host[:port]`; `none` for no bastion).
    pub proxy_jump: Option<Spanned<String>>,
}

fn default_command_timeout() -> u64 {
    600
}

fn default_keepalive() -> u64 {
    15
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_parallel() -> usize {
    30
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            user: None,
            port: None,
            identity_file: None,
            known_hosts: None,
            connect_timeout: default_connect_timeout(),
            parallel: default_parallel(),
            command_timeout: default_command_timeout(),
            keepalive: default_keepalive(),
            proxy_jump: None,
        }
    }
}

/// `[nginx]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nginx {
    #[serde(default = "default_nginx_bin")]
    pub bin: String,
    #[serde(default = "default_nginx_conf")]
    pub conf: String,
    #[serde(default)]
    pub sudo: bool,
    /// The page `es maintenance on` serves (a template of the project; default: es's own).
    pub maintenance_page: Option<String>,
    /// Retry-After of the maintenance answer, in seconds.
    #[serde(default = "default_retry_after")]
    pub maintenance_retry_after: u32,
}

fn default_retry_after() -> u32 {
    300
}

fn default_nginx_bin() -> String {
    "/usr/sbin/nginx".into()
}

fn default_nginx_conf() -> String {
    "/etc/nginx/nginx.conf".into()
}

impl Default for Nginx {
    fn default() -> Self {
        Nginx {
            bin: default_nginx_bin(),
            conf: default_nginx_conf(),
            sudo: false,
            maintenance_page: None,
            maintenance_retry_after: default_retry_after(),
        }
    }
}

/// A configuration read from a file, with what is needed to point at its lines.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub source: String,
    pub config: Config,
}

impl Loaded {
    /// The directory holding the configuration: the project's root.
    pub fn root(&self) -> &Path {
        // A bare file name (`-c sec.toml`) has the empty path as its parent.
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// An error pointing at a span of this file.
    pub fn error_at(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_col(&self.source, span.start);
        ConfigError {
            path: self.path.clone(),
            line: Some((line, column)),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// An error about `key` (dotted, as `deploy.supervisor_template`), at the
    /// line the key is written on when it is in the file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: key_span(&self.source, key).map(|span| line_col(&self.source, span.start)),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// Finds `deploy.toml` in `start` or its nearest parent.
pub fn find(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| candidate.is_file())
}

/// Reads and checks the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|err| ConfigError {
        path: path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot read: {err}"),
    })?;
    parse(path, source)
}

/// Parses and checks configuration text; `path` is used in error messages.
pub fn parse(path: &Path, source: String) -> Result<Loaded, ConfigError> {
    let config: Config = match toml::from_str(&source) {
        Ok(config) => config,
        Err(err) => return Err(translate_toml_error(path, &source, &err)),
    };
    let loaded = Loaded {
        path: path.to_path_buf(),
        source,
        config,
    };
    validate(&loaded)?;
    Ok(loaded)
}

/// The role names defined in `[roles]`, for messages.
pub fn role_list(config: &Config) -> String {
    if config.roles.is_empty() {
        "(none)".to_string()
    } else {
        config.roles.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests;
