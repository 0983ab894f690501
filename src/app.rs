//! What every command starts from: the configuration (when there is one), the
//! output side, and the hosts chosen with `-R` or `-H`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::bad_input;
use crate::cli::GlobalOpts;
use crate::config::{self, Config, Loaded};
use crate::fleet::Fleet;
use crate::hosts::ssh_config::SshConfig;
use crate::hosts::{self, Target};
use crate::paths::expand_tilde;
use crate::ssh::ConnectOptions;
use crate::ui::Ui;

/// The state shared by a command's steps.
pub struct App {
    pub global: GlobalOpts,
    /// The configuration file, or `None` when there is none (defaults apply).
    pub loaded: Option<Loaded>,
    pub ui: Ui,
}

impl App {
    /// Finds and reads the configuration: `-c FILE`, else `deploy.toml` here or above.
    pub fn new(global: GlobalOpts) -> Result<App> {
        let loaded = match &global.config {
            Some(path) => {
                if !path.is_file() {
                    bad_input!("{}: no such configuration file", path.display());
                }
                Some(config::load(path)?)
            }
            None => {
                let cwd = std::env::current_dir()?;
                match config::find(&cwd) {
                    Some(path) => Some(config::load(&path)?),
                    None => None,
                }
            }
        };
        let ui = Ui::new(&global);
        // Passwords that could reach output through a command line or an error.
        if let Some(loaded) = &loaded {
            let index = &loaded.config.index;
            for url in index.url.iter().chain(index.upload_url.iter()) {
                if let Some(password) = crate::index::url_password(url) {
                    ui.add_secret(password);
                }
            }
        }
        if let Ok(password) = std::env::var("TWINE_PASSWORD") {
            ui.add_secret(&password);
        }
        Ok(App { global, loaded, ui })
    }

    /// The configuration, or the defaults when there is no file.
    pub fn config(&self) -> &Config {
        static DEFAULT: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        match &self.loaded {
            Some(loaded) => &loaded.config,
            None => DEFAULT.get_or_init(Config::default),
        }
    }

    /// The configuration, required by commands that cannot work without one.
    pub fn require_config(&self) -> Result<&Loaded> {
        match &self.loaded {
            Some(loaded) => Ok(loaded),
            None => bad_input!(
                "no {} here or in any parent directory (give one with -c FILE, or create a project with `es create`)",
                config::FILE_NAME
            ),
        }
    }

    /// The venvs the configuration names (the keys of deploy.venv_ports).
    pub fn venv_names(&self) -> Vec<String> {
        self.config().deploy.venv_ports.keys().cloned().collect()
    }

    /// The venv named on the command line, else deploy.default_venv, placed
    /// under deploy.virtualenv_prefix.
    pub fn venv(&self, named: Option<&str>) -> Result<crate::venv::Venv> {
        let deploy = &self.config().deploy;
        match named
            .map(str::to_string)
            .or_else(|| deploy.default_venv.clone())
        {
            Some(name) => crate::venv::Venv::new(deploy.virtualenv_prefix.get_ref(), &name),
            None => bad_input!("which venv? give VENV, or set deploy.default_venv"),
        }
    }

    /// How long one request to the index may take (index.timeout).
    pub fn index_timeout(&self) -> Duration {
        Duration::from_secs(self.config().index.timeout.max(1))
    }

    /// A path from the configuration: `~` expanded, relative paths taken from the project root.
    pub fn config_path(&self, value: &str) -> PathBuf {
        let path = expand_tilde(value);
        match &self.loaded {
            Some(loaded) if path.is_relative() => loaded.root().join(path),
            _ => path,
        }
    }

    /// The hosts chosen by `-H`, else by `-R`, else by `deploy.default_role`.
    pub fn targets(&self) -> Result<Vec<Target>> {
        let config = self.config();
        let entries: Vec<String> = if !self.global.hosts.is_empty() {
            self.global
                .hosts
                .iter()
                .map(|h| h.trim().to_string())
                .collect()
        } else {
            let roles: Vec<String> = if !self.global.roles.is_empty() {
                self.global.roles.clone()
            } else if let Some(role) = &config.deploy.default_role {
                vec![role.get_ref().clone()]
            } else {
                bad_input!(
                    "no hosts chosen: give -R ROLE (roles: {}) or -H HOSTS",
                    config::role_list(config)
                );
            };
            let mut entries = Vec::new();
            for role in &roles {
                let Some(hosts) = config.roles.get(role) else {
                    bad_input!(
                        "unknown role `{role}`; {} defines: {}",
                        self.loaded
                            .as_ref()
                            .map_or(Path::new(config::FILE_NAME), |l| &l.path)
                            .display(),
                        config::role_list(config)
                    );
                };
                for host in hosts {
                    if !entries.contains(host.get_ref()) {
                        entries.push(host.get_ref().clone());
                    }
                }
            }
            entries
        };
        if entries.is_empty() {
            bad_input!("the chosen roles have no hosts");
        }
        let ssh_config = SshConfig::load_user_default();
        let settings = self.ssh_settings();
        // The same host written several ways (an alias, user@addr, addr:22)
        // is one target: two jobs on one venv at once would fight.
        let mut targets: Vec<Target> = Vec::new();
        for entry in &entries {
            let target = match hosts::resolve(entry, &settings, &ssh_config) {
                Ok(target) => target,
                Err(message) => bad_input!("{message}"),
            };
            match targets.iter().find(|t| same_host(t, &target)) {
                Some(first) => self.ui.note(&format!(
                    "es: note: `{}` is the same host as `{}`; it is worked on once",
                    target.label, first.label
                )),
                None => targets.push(target),
            }
        }
        Ok(targets)
    }

    /// `[ssh]`, its identity file taken from the project root.
    fn ssh_settings(&self) -> crate::config::Ssh {
        let mut settings = self.config().ssh.clone();
        settings.identity_file = settings
            .identity_file
            .map(|f| self.config_path(&f).display().to_string());
        settings
    }

    /// One host entry (as written in `[roles]`) resolved as the chosen hosts are.
    pub fn resolve_host(&self, entry: &str) -> Result<Target> {
        match hosts::resolve(entry, &self.ssh_settings(), &SshConfig::load_user_default()) {
            Ok(target) => Ok(target),
            Err(message) => bad_input!("{message}"),
        }
    }

    /// How to connect: timeouts and known_hosts from the configuration and flags.
    pub fn connect_options(&self) -> ConnectOptions {
        let config = self.config();
        let user_file = expand_tilde("~/.ssh/known_hosts");
        // OpenSSH's UserKnownHostsFile and GlobalKnownHostsFile defaults.
        let mut files = vec![
            user_file.clone(),
            expand_tilde("~/.ssh/known_hosts2"),
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2"),
        ];
        if let Some(extra) = &config.ssh.known_hosts {
            files.push(self.config_path(extra));
        }
        ConnectOptions {
            connect_timeout: Duration::from_secs(config.ssh.connect_timeout.max(1)),
            known_hosts_files: files,
            record_file: user_file,
            accept_new_host_keys: self.global.accept_new_host_keys,
            command_timeout: Duration::from_secs(config.ssh.command_timeout.max(1)),
            keepalive: Duration::from_secs(config.ssh.keepalive.max(1)),
        }
    }

    /// A fleet over the chosen hosts.
    pub fn fleet(&self, announce_steps: bool) -> Result<Fleet<'_>> {
        Ok(Fleet {
            targets: self.targets()?,
            parallel: self.global.parallel.unwrap_or(self.config().ssh.parallel),
            connect: self.connect_options(),
            ui: &self.ui,
            announce_steps,
            despite_interrupt: false,
            pool: None,
        })
    }
}

/// Whether two targets reach the same account on the same host.
fn same_host(a: &Target, b: &Target) -> bool {
    use crate::hosts::TargetKind;
    match (&a.kind, &b.kind) {
        (TargetKind::Local, TargetKind::Local) => true,
        (TargetKind::Ssh(x), TargetKind::Ssh(y)) => {
            x.user == y.user
                && x.port == y.port
                && x.hostname.eq_ignore_ascii_case(&y.hostname)
                && x.jump.as_ref().map(|j| (&j.hostname, j.port))
                    == y.jump.as_ref().map(|j| (&j.hostname, j.port))
        }
        _ => false,
    }
}
