//! `[deploy]`: how releases are made, run, checked and rolled out, and the
//! values those settings take.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

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
    /// `[deploy.systemd]`: where the units live (process_manager = "systemd").
    #[serde(default)]
    pub systemd: Systemd,
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

/// `[deploy.systemd]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Systemd {
    /// The deploy user's manager (default) or the system's, through sudo.
    pub scope: Option<SystemdScope>,
}

impl Systemd {
    /// The scope, `user` unless set.
    pub fn scope(&self) -> SystemdScope {
        self.scope.unwrap_or_default()
    }
}

/// `deploy.systemd.scope`: whose systemd runs the units.
#[derive(Debug, Deserialize, serde::Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SystemdScope {
    /// The deploy user's manager: ~/.config/systemd/user, `systemctl --user`.
    #[default]
    User,
    /// The system's: /etc/systemd/system, `sudo -n systemctl`; the processes
    /// still run as the deploy user.
    System,
}

impl SystemdScope {
    pub fn as_str(self) -> &'static str {
        match self {
            SystemdScope::User => "user",
            SystemdScope::System => "system",
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
    Spanned::new(0..0, 4.0)
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
            systemd: Systemd::default(),
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
