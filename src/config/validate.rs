//! The checks serde cannot make: references between settings and the shape
//! of values.

use super::{role_list, serve, Loaded, ProcessManager};
use crate::error::ConfigError;

/// Checks what serde cannot: references between settings and the shape of values.
pub(super) fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
    let config = &loaded.config;
    let (unused, manager) = match config.deploy.process_manager {
        ProcessManager::Supervisord => ("deploy.systemd_template", "supervisord"),
        ProcessManager::Systemd => ("deploy.supervisor_template", "systemd"),
    };
    let set = match config.deploy.process_manager {
        ProcessManager::Supervisord => config.deploy.systemd_template.is_some(),
        ProcessManager::Systemd => config.deploy.supervisor_template.is_some(),
    };
    // `[deploy.systemd]` only means something to systemd.
    let unused = if config.deploy.process_manager == ProcessManager::Supervisord
        && config.deploy.systemd.scope.is_some()
    {
        Some("deploy.systemd.scope")
    } else {
        set.then_some(unused)
    };
    if let Some(unused) = unused {
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
