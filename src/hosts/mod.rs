//! Host entries resolved into connection targets with `~/.ssh/config` and the `[ssh]` settings.

pub(crate) mod ssh_config;

use std::fmt;
use std::path::PathBuf;

use crate::config::Ssh;
use crate::host_spec::HostSpec;
use crate::paths::expand_tilde;
use ssh_config::SshConfig;

/// Where and how to connect to one host, after every setting has been applied.
#[derive(Debug, Clone)]
pub struct Target {
    /// The entry as the user wrote it: how the host is named in output.
    pub label: String,
    pub kind: TargetKind,
}

#[derive(Debug, Clone)]
pub enum TargetKind {
    Local,
    Ssh(SshTarget),
}

/// A remote host's connection parameters.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub user: String,
    /// The address connected to (ssh config HostName, else the entry's host).
    pub hostname: String,
    pub port: u16,
    /// Private keys to try, in order, after ssh-agent.
    pub identity_files: Vec<PathBuf>,
    /// The bastion this host is reached through (ProxyJump), if any.
    pub jump: Option<Box<SshTarget>>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// Resolves a host entry. Precedence: the entry itself, then deploy.toml's
/// `[ssh]`, then `~/.ssh/config`, then OpenSSH's defaults.
pub fn resolve(entry: &str, settings: &Ssh, ssh_config: &SshConfig) -> Result<Target, String> {
    let kind = match HostSpec::parse(entry)? {
        HostSpec::Local => TargetKind::Local,
        HostSpec::Remote { user, host, port } => {
            let mut target = resolve_ssh(user, host.clone(), port, settings, ssh_config)?;
            // ProxyJump: deploy.toml's ssh.proxy_jump wins over ~/.ssh/config's.
            let found = ssh_config.lookup(&host);
            let jump = settings
                .proxy_jump
                .as_ref()
                .map(|j| j.get_ref().clone())
                .or(found.proxy_jump);
            if let Some(jump) = jump.filter(|j| j != "none") {
                if jump.contains(',') {
                    return Err(format!(
                        "ProxyJump {jump:?} for `{host}`: es goes through one bastion, not a chain"
                    ));
                }
                let HostSpec::Remote { user, host, port } =
                    HostSpec::parse(&jump).map_err(|e| format!("ProxyJump {jump:?}: {e}"))?
                else {
                    return Err(format!("ProxyJump {jump:?}: not a host"));
                };
                // The bastion: its own ssh config entry, never another jump.
                let mut bastion_settings = settings.clone();
                bastion_settings.proxy_jump = None;
                bastion_settings.port = None;
                target.jump = Some(Box::new(resolve_ssh(
                    user,
                    host,
                    port,
                    &bastion_settings,
                    ssh_config,
                )?));
            }
            TargetKind::Ssh(target)
        }
    };
    Ok(Target {
        label: entry.trim().to_string(),
        kind,
    })
}

/// `[user@]host[:port]` with the settings and ~/.ssh/config applied (no jump).
fn resolve_ssh(
    user: Option<String>,
    host: String,
    port: Option<u16>,
    settings: &Ssh,
    ssh_config: &SshConfig,
) -> Result<SshTarget, String> {
    let found = ssh_config.lookup(&host);
    if let Some(command) = &found.proxy_command {
        return Err(format!(
            "~/.ssh/config routes `{host}` through ProxyCommand {command:?}, which es does not run: use ProxyJump"
        ));
    }
    let user = user
        .or_else(|| settings.user.clone())
        .or(found.user)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_string());
    let port = port.or(settings.port).or(found.port).unwrap_or(22);
    let mut identity_files: Vec<PathBuf> = Vec::new();
    if let Some(file) = &settings.identity_file {
        identity_files.push(expand_tilde(file));
    }
    identity_files.extend(found.identity_files.iter().map(|f| expand_tilde(f)));
    if identity_files.is_empty() {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            identity_files.push(expand_tilde(&format!("~/.ssh/{name}")));
        }
    }
    Ok(SshTarget {
        user,
        hostname: found.hostname.unwrap_or(host),
        port,
        identity_files,
        jump: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_beats_settings_which_beat_ssh_config() {
        let ssh_config = SshConfig::parse(
            "Host web3\n  HostName 10.1.1.3\n  User bob\n  Port 2200\n  IdentityFile /k/web3\n",
        );
        let settings = Ssh {
            user: Some("deploy".into()),
            ..Ssh::default()
        };
        let target = resolve("web3", &settings, &ssh_config).unwrap();
        let TargetKind::Ssh(ssh) = target.kind else {
            panic!()
        };
        assert_eq!(ssh.hostname, "10.1.1.3");
        assert_eq!(ssh.user, "deploy");
        assert_eq!(ssh.port, 2200);
        assert_eq!(ssh.identity_files, vec![PathBuf::from("/k/web3")]);

        let target = resolve("root@web3:22", &settings, &ssh_config).unwrap();
        let TargetKind::Ssh(ssh) = target.kind else {
            panic!()
        };
        assert_eq!((ssh.user.as_str(), ssh.port), ("root", 22));
    }
}
