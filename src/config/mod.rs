//! `deploy.toml`: its types, how it is found and read, and how it is checked.
//!
//! Every error names the file, line, column and key, so that a user can go
//! straight to the mistake. Unknown keys are refused, with a "did you mean"
//! when a known key is close.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;

pub mod serve;

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

/// `[deploy]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Venvs live in PREFIX/VENV on every host.
    #[serde(default = "default_virtualenv_prefix")]
    pub virtualenv_prefix: Spanned<String>,
    /// Command creating a venv; the venv path is appended (default `python3 -m venv`).
    pub virtualenv_command: Option<String>,
    /// Sub directories made in every venv besides `logs`, `etc` and `tmp`.
    #[serde(default)]
    pub virtualenv_sub_dirs: Vec<String>,
    /// supervisord `numprocs`.
    #[serde(default = "default_process_count")]
    pub process_count: u32,
    /// The project's supervisord template (default: the one built into es).
    pub supervisor_template: Option<String>,
    /// What runs the processes on the hosts.
    #[serde(default)]
    pub process_manager: ProcessManager,
    /// The project's systemd template unit (default: the one built into es).
    pub systemd_template: Option<String>,
    /// Extra templates rendered into the venv: local path -> path relative to the venv.
    #[serde(default)]
    pub extra_templates: BTreeMap<String, String>,
    /// Venv name -> port prefix: process N of the venv listens on PREFIX + N.
    #[serde(default)]
    pub venv_ports: BTreeMap<String, String>,
    #[serde(default)]
    pub installer: Installer,
    /// Shell commands run in the activated venv before the install.
    #[serde(default)]
    pub pre_hooks: Vec<String>,
    /// Shell commands run in the activated venv after the restart.
    #[serde(default)]
    pub post_hooks: Vec<String>,
    /// Role used when no `-R` is given.
    pub default_role: Option<Spanned<String>>,
    /// Venv used when none is given.
    pub default_venv: Option<String>,
    /// Packages installed into every release beside the project (an app server
    /// the project does not declare, such as gunicorn).
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Releases kept on each host (the running one included).
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// Commands run after staging and before the switch, in the new release.
    #[serde(default)]
    pub release_hooks: Vec<String>,
    /// Where release hooks run: one host of the rollout, or all.
    #[serde(default)]
    pub release_hooks_on: HooksOn,
    /// Paths inside each release that point to one directory per venv, kept
    /// across releases: a list, or a table SHARED_NAME = PATH_IN_THE_RELEASE.
    #[serde(default)]
    pub shared_dirs: SharedDirs,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub rollout: Rollout,
    /// Plain environment values for the programs and the hooks.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Values read on the deploying machine, delivered to each host 0600, never printed.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
}

fn default_keep_releases() -> u32 {
    5
}

/// `deploy.process_manager`: what runs a venv's processes on the hosts (also
/// `es create --process-manager`).
#[derive(
    Debug, Deserialize, serde::Serialize, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ProcessManager {
    /// One supervisord per venv, started by es.
    #[default]
    Supervisord,
    /// Instances of one template unit in the deploy user's systemd manager.
    Systemd,
}

impl ProcessManager {
    /// The file each release keeps its rendered configuration in.
    pub fn config_file(self) -> &'static str {
        match self {
            ProcessManager::Supervisord => "supervisord.conf",
            ProcessManager::Systemd => "systemd.service",
        }
    }
}

/// `deploy.shared_dirs`: `["var/app-instance"]` (the same path under shared/
/// and in the release) or `{ media = "lib/python*/site-packages/app/media" }`
/// (shared/media seen at that path of the release; `*` matches one directory).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SharedDirs {
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

impl Default for SharedDirs {
    fn default() -> Self {
        SharedDirs::List(Vec::new())
    }
}

impl SharedDirs {
    /// (directory under shared/, path inside the release) of every entry.
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            SharedDirs::List(paths) => paths.iter().map(|p| (p.clone(), p.clone())).collect(),
            SharedDirs::Map(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// `deploy.release_hooks_on`
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HooksOn {
    /// One host of the rollout (a shared database is migrated once).
    #[default]
    One,
    All,
}

/// `[deploy.health]`: what every process must answer after a switch.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Path requested on every process port.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Accepted status range, inclusive.
    #[serde(default = "default_health_status")]
    pub status: [u16; 2],
    /// Seconds every process has to answer after the switch.
    #[serde(default = "default_health_timeout")]
    pub timeout: u64,
    /// Request headers (a `Host` for a virtual host, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds every process must stay up and keep answering once all are RUNNING.
    #[serde(default = "default_health_settle")]
    pub settle: Spanned<f64>,
    /// Seconds after a switch began by which the host serves a good release:
    /// es confirms the new one, or the host goes back by itself, keeping
    /// `timeout` + `settle` of it for that; default: enough for every
    /// process's health wait and settle, and the way back.
    pub deadline: Option<Spanned<u64>>,
}

fn default_health_settle() -> Spanned<f64> {
    Spanned::new(0..0, 3.0)
}

fn default_health_path() -> String {
    "/".into()
}

fn default_health_status() -> [u16; 2] {
    [200, 399]
}

fn default_health_timeout() -> u64 {
    30
}

impl Health {
    /// Seconds a host keeps of a switch's deadline for going back by itself:
    /// one health wait and the settle window.
    pub fn way_back(&self) -> u64 {
        self.timeout + self.settle.get_ref().ceil() as u64
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: default_health_path(),
            status: default_health_status(),
            timeout: default_health_timeout(),
            headers: BTreeMap::new(),
            settle: default_health_settle(),
            deadline: None,
        }
    }
}

/// `[deploy.rollout]`: how the switch proceeds across the fleet.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Hosts switched at once: a count or a percentage (`"25%"`).
    #[serde(default = "default_batch")]
    pub batch: CountOrPercent,
    /// Failed hosts tolerated before the rollout stops and reverts.
    #[serde(default)]
    pub max_fail: CountOrPercent,
    /// Seconds between batches.
    #[serde(default)]
    pub pause: u64,
}

fn default_batch() -> CountOrPercent {
    CountOrPercent::Percent(100)
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            batch: default_batch(),
            max_fail: CountOrPercent::default(),
            pause: 0,
        }
    }
}

/// `N` or `"N%"`: a number of hosts, or a share of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountOrPercent {
    Count(usize),
    Percent(u32),
}

impl Default for CountOrPercent {
    fn default() -> Self {
        CountOrPercent::Count(0)
    }
}

impl fmt::Display for CountOrPercent {
    /// As the command line takes it: `3` or `25%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountOrPercent::Count(n) => write!(f, "{n}"),
            CountOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl CountOrPercent {
    /// The number of hosts out of `total` (a percentage rounds up, so `1%` of 5 is 1).
    pub fn of(self, total: usize) -> usize {
        match self {
            CountOrPercent::Count(n) => n,
            CountOrPercent::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl std::str::FromStr for CountOrPercent {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(p) if p <= 100 => Ok(CountOrPercent::Percent(p)),
                _ => Err(format!("{text:?} is not a percentage from 0% to 100%")),
            },
            None => text
                .parse::<usize>()
                .map(CountOrPercent::Count)
                .map_err(|_| {
                    format!("{text:?} is neither a number of hosts nor a percentage like \"25%\"")
                }),
        }
    }
}

impl<'de> Deserialize<'de> for CountOrPercent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(CountOrPercent::Count(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Where a secret's value comes from, on the deploying machine.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    /// An environment variable of es.
    Env(String),
    /// A file's content (trailing newline removed).
    File(String),
    /// A command's stdout (trailing newline removed), such as a password manager's CLI.
    Command(String),
}

impl SecretSource {
    /// The value, read on this machine; relative files are taken from `root`.
    /// Errors name `key` and the source, never the value.
    pub fn read(&self, key: &str, root: &Path) -> anyhow::Result<String> {
        use crate::error::BadInput;
        let value = match self {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) => v,
                Err(_) => crate::bad_input!("{key}: the environment variable {var} is not set"),
            },
            SecretSource::File(path) => {
                let file = crate::paths::expand_tilde(path);
                let file = if file.is_relative() {
                    root.join(file)
                } else {
                    file
                };
                match std::fs::read_to_string(&file) {
                    Ok(v) => v,
                    Err(e) => crate::bad_input!("{key}: cannot read {}: {e}", file.display()),
                }
            }
            SecretSource::Command(command) => {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .current_dir(root)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .map_err(|e| BadInput(format!("{key}: cannot run its command: {e}")))?;
                if !out.status.success() {
                    crate::bad_input!("{key}: its command failed ({})", out.status);
                }
                String::from_utf8(out.stdout)
                    .map_err(|_| BadInput(format!("{key}: its command printed non-UTF-8 output")))?
            }
        };
        let value = value.strip_suffix('\n').unwrap_or(&value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            crate::bad_input!("{key}: the value is empty");
        }
        Ok(value.to_string())
    }
}

fn default_virtualenv_prefix() -> Spanned<String> {
    Spanned::new(0..0, "~/w".into())
}

fn default_process_count() -> u32 {
    2
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            virtualenv_prefix: default_virtualenv_prefix(),
            virtualenv_command: None,
            virtualenv_sub_dirs: Vec::new(),
            process_count: default_process_count(),
            supervisor_template: None,
            process_manager: ProcessManager::default(),
            systemd_template: None,
            extra_templates: BTreeMap::new(),
            venv_ports: BTreeMap::new(),
            installer: Installer::default(),
            pre_hooks: Vec::new(),
            post_hooks: Vec::new(),
            default_role: None,
            default_venv: None,
            requirements: Vec::new(),
            keep_releases: default_keep_releases(),
            release_hooks: Vec::new(),
            release_hooks_on: HooksOn::default(),
            shared_dirs: SharedDirs::default(),
            health: Health::default(),
            rollout: Rollout::default(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }
}

/// Which tool installs packages into a venv.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Installer {
    Pip,
    Uv,
    /// uv when it is available to the venv (or installable from the index), else pip.
    #[default]
    Auto,
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

/// Where the dotted `key` is written in `source` (toml_edit keeps every key's
/// place, which serde's view of the file has lost).
fn key_span(source: &str, key: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(source).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (found, item) = table.get_key_value(part)?;
        span = found.span();
        if parts.peek().is_some() {
            table = item.as_table_like()?;
        }
    }
    span
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

/// Checks what serde cannot: references between settings and the shape of values.
fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
    let config = &loaded.config;
    let (unused, manager) = match config.deploy.process_manager {
        ProcessManager::Supervisord => ("deploy.systemd_template", "supervisord"),
        ProcessManager::Systemd => ("deploy.supervisor_template", "systemd"),
    };
    let set = match config.deploy.process_manager {
        ProcessManager::Supervisord => config.deploy.systemd_template.is_some(),
        ProcessManager::Systemd => config.deploy.supervisor_template.is_some(),
    };
    if set {
        return Err(loaded.error(
            unused,
            format!("is not used when deploy.process_manager is \"{manager}\": remove it or change the process manager"),
        ));
    }
    if let Some(role) = &config.deploy.default_role {
        if !config.roles.contains_key(role.get_ref()) {
            return Err(loaded.error_at(
                role.span(),
                "deploy.default_role",
                format!(
                    "unknown role `{}`; [roles] defines: {}",
                    role.get_ref(),
                    role_list(config)
                ),
            ));
        }
    }
    for (role, hosts) in &config.roles {
        for host in hosts {
            if let Err(message) = crate::host_spec::HostSpec::parse(host.get_ref()) {
                return Err(loaded.error_at(host.span(), &format!("roles.{role}"), message));
            }
        }
    }
    if config.ssh.parallel == 0 {
        return Err(loaded.error("ssh.parallel", "must be at least 1"));
    }
    if let Some(jump) = &config.ssh.proxy_jump {
        if let Err(message) = crate::host_spec::HostSpec::parse(jump.get_ref()) {
            return Err(loaded.error_at(jump.span(), "ssh.proxy_jump", message));
        }
    }
    let health = &config.deploy.health;
    if health.status[0] > health.status[1] || health.status[0] < 100 || health.status[1] > 599 {
        return Err(loaded.error(
            "deploy.health.status",
            format!(
                "must be a range [low, high] of HTTP statuses, got {:?}",
                health.status
            ),
        ));
    }
    if !health.path.starts_with('/') || health.path.chars().any(char::is_whitespace) {
        return Err(loaded.error(
            "deploy.health.path",
            "must start with `/` and hold no white space",
        ));
    }
    for (name, value) in &health.headers {
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || value.chars().any(|c| c.is_control())
        {
            return Err(loaded.error(
                &format!("deploy.health.headers.{name}"),
                "not a valid HTTP header",
            ));
        }
    }
    if let Some(bad) =
        config.deploy.requirements.iter().find(|r| {
            r.trim().is_empty() || r.chars().any(|c| c.is_control()) || r.starts_with('-')
        })
    {
        return Err(loaded.error(
            "deploy.requirements",
            format!("{bad:?} is not a requirement (as pip takes one: `gunicorn>=22`)"),
        ));
    }
    if config.deploy.keep_releases == 0 {
        return Err(loaded.error(
            "deploy.keep_releases",
            "must be at least 1 (the running release)",
        ));
    }
    for (table, names) in [
        ("deploy.env", config.deploy.env.keys().collect::<Vec<_>>()),
        ("deploy.secrets", config.deploy.secrets.keys().collect()),
    ] {
        for name in names {
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(loaded.error(
                    &format!("{table}.{name}"),
                    "not an environment variable name (letters, digits and `_`, not starting with a digit)",
                ));
            }
        }
    }
    if let Some(serve) = &config.serve {
        serve::validate(loaded, serve)?;
    }
    let settle = &config.deploy.health.settle;
    if !(0.0..=600.0).contains(settle.get_ref()) {
        return Err(loaded.error_at(
            settle.span(),
            "deploy.health.settle",
            "seconds from 0 to 600",
        ));
    }
    if let Some(deadline) = &config.deploy.health.deadline {
        let reserve = config.deploy.health.way_back();
        if *deadline.get_ref() < 2 * reserve {
            return Err(loaded.error_at(
                deadline.span(),
                "deploy.health.deadline",
                format!(
                    "at least {} seconds: 2 × (timeout + settle), for es to confirm and for the host to go back",
                    2 * reserve
                ),
            ));
        }
    }
    let prefix = &config.deploy.virtualenv_prefix;
    if let Err(message) = crate::venv::check_prefix(prefix.get_ref()) {
        return Err(loaded.error_at(prefix.span(), "deploy.virtualenv_prefix", message));
    }
    for (venv, prefix) in &config.deploy.venv_ports {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(loaded.error(
                &format!("deploy.venv_ports.{venv}"),
                format!("port prefix must be digits, got {prefix:?}"),
            ));
        }
    }
    Ok(())
}

/// The role names defined in `[roles]`, for messages.
pub fn role_list(config: &Config) -> String {
    if config.roles.is_empty() {
        "(none)".to_string()
    } else {
        config.roles.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Turns a toml/serde error into one naming the file, line, column and key.
fn translate_toml_error(path: &Path, source: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let (line, column) = line_col(source, span.start);
    let mut message = err.message().trim().to_string();
    let key = key_at(source, span.start);
    if let Some((unknown, expected)) = parse_unknown_field(&message) {
        message = format!("unknown key `{unknown}`");
        if let Some(best) = closest(&unknown, &expected) {
            message.push_str(&format!("; did you mean `{best}`?"));
        } else if !expected.is_empty() {
            message.push_str(&format!("; known keys: {}", expected.join(", ")));
        }
    }
    ConfigError {
        path: path.to_path_buf(),
        line: Some((line, column)),
        key,
        message,
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" -> (x, [a, b]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((unknown.to_string(), expected))
}

/// The known key closest to `unknown`, when it is close enough to be a typo.
fn closest(unknown: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.clone())
}

/// 1-based line and column of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted key (`table.key`) of the line holding `offset`, read from the text.
fn key_at(source: &str, offset: usize) -> Option<String> {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..].lines().next().unwrap_or("").trim();
    let before: Vec<&str> = source[..line_start].lines().map(str::trim).collect();
    // The nearest table header; an array of tables (`[[serve.notify]]`) is
    // named with its index (`serve.notify[1]`).
    let table = before.iter().rposition(|l| l.starts_with('[')).map(|at| {
        let header = before[at];
        let name = header.trim_matches(|c| c == '[' || c == ']').trim();
        if header.starts_with("[[") {
            let index = before[..at].iter().filter(|l| **l == header).count();
            format!("{name}[{index}]")
        } else {
            name.to_string()
        }
    });
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())?;
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Loaded, ConfigError> {
        parse(Path::new("deploy.toml"), text.to_string())
    }

    #[test]
    fn a_deadline_that_leaves_no_way_back_is_refused_with_its_line() {
        let err =
            parse_str("[deploy.health]\ntimeout = 8\nsettle = 3\ndeadline = 21\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("deploy.toml:4:")
                && text.contains("deploy.health.deadline")
                && text.contains("at least 22"),
            "{text}"
        );
        assert!(parse_str("[deploy.health]\ntimeout = 8\nsettle = 3\ndeadline = 22\n").is_ok());
    }

    #[test]
    fn a_settle_window_out_of_range_is_refused_with_its_line() {
        for bad in ["-1", "nan", "601"] {
            let err = parse_str(&format!("[deploy.health]\nsettle = {bad}\n")).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("deploy.toml:2:") && text.contains("deploy.health.settle"),
                "{text}"
            );
        }
        assert!(parse_str("[deploy.health]\nsettle = 0.5\n").is_ok());
    }

    #[test]
    fn a_bare_file_name_has_the_current_directory_as_its_root() {
        assert_eq!(parse_str("").unwrap().root(), Path::new("."));
        let nested = parse(Path::new("conf/sec.toml"), String::new()).unwrap();
        assert_eq!(nested.root(), Path::new("conf"));
    }

    #[test]
    fn a_key_in_an_array_of_tables_is_named_with_its_index() {
        let text =
            "[serve]\n[[serve.notify]]\nkind = \"json\"\n[[serve.notify]]\nkind = \"pager\"\n";
        let at = text.rfind("pager").unwrap();
        assert_eq!(key_at(text, at).as_deref(), Some("serve.notify[1].kind"));
        assert_eq!(key_at(text, 8).as_deref(), Some("serve.notify"));
    }

    #[test]
    fn full_interface_example_parses() {
        let loaded = parse_str(include_str!("../../deploy.toml")).expect("reference deploy.toml");
        assert!(loaded.config.project.name.is_some());
    }

    #[test]
    fn unknown_key_names_line_key_and_suggestion() {
        let err = parse_str("[project]\nname = \"x\"\n\n[ssh]\nuser = \"a\"\nconect_timeout = 5\n")
            .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.line, Some((6, 1)), "{text}");
        assert!(text.contains("ssh.conect_timeout"), "{text}");
        assert!(text.contains("did you mean `connect_timeout`"), "{text}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let err = parse_str("[ssh]\nport = \"twenty-two\"\n").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.line.map(|l| l.0), Some(2), "{text}");
        assert!(text.contains("`ssh.port`"), "{text}");
        assert!(text.contains("deploy.toml:2:"), "{text}");
    }

    #[test]
    fn unknown_default_role_is_refused() {
        let err =
            parse_str("[roles]\nweb = [\"a\"]\n\n[deploy]\ndefault_role = \"dev\"\n").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.line.map(|l| l.0), Some(5), "{text}");
        assert!(text.contains("deploy.default_role"), "{text}");
        assert!(text.contains("unknown role `dev`"), "{text}");
    }

    #[test]
    fn process_manager_is_checked_with_its_template() {
        let loaded = parse_str("[deploy]\nprocess_manager = \"systemd\"\n").unwrap();
        assert_eq!(
            loaded.config.deploy.process_manager,
            ProcessManager::Systemd
        );
        assert_eq!(
            parse_str("").unwrap().config.deploy.process_manager,
            ProcessManager::Supervisord
        );
        let err = parse_str("[deploy]\nprocess_manager = \"runit\"\n").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.line.map(|l| l.0), Some(2), "{text}");
        assert!(text.contains("deploy.process_manager"), "{text}");
        let err = parse_str(
            "[deploy]\nprocess_manager = \"systemd\"\nsupervisor_template = \"conf/supervisord.conf\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.line.map(|l| l.0), Some(3), "{text}");
        assert!(text.contains("deploy.supervisor_template"), "{text}");
        assert!(
            text.contains("is not used when deploy.process_manager is \"systemd\""),
            "{text}"
        );
    }

    #[test]
    fn bad_host_entry_is_refused_with_line() {
        let err = parse_str("[roles]\nweb = [\"ok\", \"user@host:notaport\"]\n").unwrap_err();
        assert_eq!(err.line.map(|l| l.0), Some(2));
        assert!(err.to_string().contains("roles.web"));
    }

    #[test]
    fn defaults_apply() {
        let loaded = parse_str("").unwrap();
        assert_eq!(loaded.config.ssh.connect_timeout, 10);
        assert_eq!(loaded.config.ssh.parallel, 30);
        assert_eq!(loaded.config.deploy.process_count, 2);
        assert_eq!(loaded.config.project.default_branch, "main");
    }

    #[test]
    fn find_walks_up_to_the_nearest_parent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(find(&nested), Some(dir.path().join(FILE_NAME)));
    }
}
