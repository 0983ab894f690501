//! `[serve]`: the settings of `es serve` (webhooks, triggers, notifications,
//! who may read and who may deploy), and their checks.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{CountOrPercent, Loaded, SecretSource};
use crate::error::ConfigError;

/// `[serve]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// SQLite database, the clone, job logs; relative to the project root.
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Where pushed commits are fetched from.
    pub remote: Option<Spanned<String>>,
    /// The configuration a job runs with, as a path inside the pushed commit.
    #[serde(default = "default_job_config")]
    pub config: String,
    /// GitHub's webhook secret (X-Hub-Signature-256).
    pub github_secret: Option<SecretSource>,
    /// GitLab's secret token (X-Gitlab-Token).
    pub gitlab_token: Option<SecretSource>,
    /// Bearer token that may read and deploy.
    pub token: Option<SecretSource>,
    /// Bearer token that may only read.
    pub read_token: Option<SecretSource>,
    /// Users who log in to the page with a password.
    #[serde(default)]
    pub users: Vec<User>,
    /// Seconds a queued job waits for newer pushes before it starts.
    #[serde(default = "default_quiet_period")]
    pub quiet_period: u64,
    /// Days a finished job's log is kept.
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: u64,
    /// The server's address as users reach it, for links in notifications.
    pub public_url: Option<String>,
    #[serde(default)]
    pub trigger: Vec<Trigger>,
    #[serde(default)]
    pub notify: Vec<Notify>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8765".to_string())
}

fn default_state_dir() -> String {
    ".es-serve".into()
}

fn default_job_config() -> String {
    super::FILE_NAME.into()
}

fn default_quiet_period() -> u64 {
    5
}

fn default_log_retention_days() -> u64 {
    30
}

/// `[[serve.users]]`: a login for the page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: SecretSource,
    /// May start deploys (the buttons), not only read.
    #[serde(default)]
    pub deploy: bool,
}

/// `[[serve.trigger]]`: which pushes deploy, and where to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// A name for the page and notifications [default: `BRANCH -> ROLE/VENV`].
    pub name: Option<String>,
    /// A glob over the branch name (`main`, `release/*`).
    pub branch: Spanned<String>,
    /// Only commits whose message contains this text deploy.
    pub message_filter: Option<String>,
    pub role: Spanned<String>,
    pub venv: Spanned<String>,
    pub profile: String,
    /// `--batch`, `--max-fail`, `--pause` of the deploy.
    pub batch: Option<CountOrPercent>,
    pub max_fail: Option<CountOrPercent>,
    pub pause: Option<u64>,
    /// Deploy a push whose commit does not descend from the one this trigger
    /// last deployed from the branch (a force-push). Off: such a push is refused.
    #[serde(default)]
    pub allow_force_push: bool,
}

impl Trigger {
    /// The name shown on the page and in notifications.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            format!(
                "{} -> {}/{}",
                self.branch.get_ref(),
                self.role.get_ref(),
                self.venv.get_ref()
            )
        })
    }
}

/// `[[serve.notify]]`: where outcomes are sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub kind: Spanned<NotifyKind>,
    /// The webhook (json, slack, dingtalk): a URL, or a secret source for one.
    pub url: Option<UrlSetting>,
    /// DingTalk's signing secret (the robot's "SEC..." value).
    pub secret: Option<SecretSource>,
    /// Email: `host:port` of the SMTP server.
    pub smtp: Option<Spanned<String>>,
    /// Email: none | starttls | tls [default: starttls].
    #[serde(default)]
    pub tls: SmtpTls,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// Which events: start, success, failure [default: all].
    #[serde(default = "default_events")]
    pub on: Vec<Spanned<String>>,
    /// The names of the triggers this applies to [default: all].
    #[serde(default)]
    pub triggers: Vec<Spanned<String>>,
    /// Attempts after the first one fails.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_events() -> Vec<Spanned<String>> {
    EVENTS
        .iter()
        .map(|e| Spanned::new(0..0, e.to_string()))
        .collect()
}

fn default_retries() -> u32 {
    3
}

/// The events a notification can be sent on.
pub const EVENTS: [&str; 3] = ["start", "success", "failure"];

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    Json,
    Slack,
    Dingtalk,
    Email,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

/// A URL written in the file, or taken like a secret (a Slack webhook URL is one).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum UrlSetting {
    Plain(String),
    Secret(SecretSource),
}

/// Checks what serde cannot: addresses, globs, and references to roles, venvs
/// and triggers. Secrets are read by `es serve` itself, not here.
pub fn validate(loaded: &Loaded, serve: &Serve) -> Result<(), ConfigError> {
    let config = &loaded.config;
    if serve.listen.get_ref().parse::<SocketAddr>().is_err() {
        return Err(loaded.error_at(
            serve.listen.span(),
            "serve.listen",
            format!(
                "{:?} is not an address and port like \"127.0.0.1:8765\"",
                serve.listen.get_ref()
            ),
        ));
    }
    let venvs = &config.deploy.venv_ports;
    for (i, trigger) in serve.trigger.iter().enumerate() {
        let key = |k: &str| format!("serve.trigger[{i}].{k}");
        if let Err(e) = glob::Pattern::new(trigger.branch.get_ref()) {
            return Err(loaded.error_at(
                trigger.branch.span(),
                &key("branch"),
                format!("not a glob: {e}"),
            ));
        }
        if !config.roles.contains_key(trigger.role.get_ref()) {
            return Err(loaded.error_at(
                trigger.role.span(),
                &key("role"),
                format!(
                    "unknown role `{}`; [roles] defines: {}",
                    trigger.role.get_ref(),
                    super::role_list(config)
                ),
            ));
        }
        if !venvs.is_empty() && !venvs.contains_key(trigger.venv.get_ref()) {
            return Err(loaded.error_at(
                trigger.venv.span(),
                &key("venv"),
                format!(
                    "unknown venv `{}`; deploy.venv_ports defines: {}",
                    trigger.venv.get_ref(),
                    venvs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let names: Vec<String> = serve.trigger.iter().map(Trigger::name).collect();
    for (i, notify) in serve.notify.iter().enumerate() {
        let key = |k: &str| format!("serve.notify[{i}].{k}");
        let kind = *notify.kind.get_ref();
        match kind {
            NotifyKind::Email => {
                let Some(smtp) = &notify.smtp else {
                    return Err(loaded.error_at(
                        notify.kind.span(),
                        &key("smtp"),
                        "an email notification needs smtp = \"host:port\"",
                    ));
                };
                if smtp_address(smtp.get_ref()).is_none() {
                    return Err(loaded.error_at(
                        smtp.span(),
                        &key("smtp"),
                        format!("{:?} is not host:port", smtp.get_ref()),
                    ));
                }
                if notify.from.is_none() || notify.to.is_empty() {
                    return Err(loaded.error_at(
                        notify.kind.span(),
                        &key("to"),
                        "an email notification needs from = \"...\" and to = [\"...\"]",
                    ));
                }
            }
            _ => {
                if notify.url.is_none() {
                    return Err(loaded.error_at(
                        notify.kind.span(),
                        &key("url"),
                        "this notification needs url = \"https://...\" (or { env = \"VAR\" })",
                    ));
                }
                if let Some(UrlSetting::Plain(url)) = &notify.url {
                    if !url.starts_with("http://") && !url.starts_with("https://") {
                        return Err(loaded.error(
                            &key("url"),
                            format!("{url:?} is not an http:// or https:// URL"),
                        ));
                    }
                }
            }
        }
        for event in &notify.on {
            if !EVENTS.contains(&event.get_ref().as_str()) {
                return Err(loaded.error_at(
                    event.span(),
                    &key("on"),
                    format!(
                        "unknown event `{}`; events are: {}",
                        event.get_ref(),
                        EVENTS.join(", ")
                    ),
                ));
            }
        }
        for trigger in &notify.triggers {
            if !names.contains(trigger.get_ref()) {
                return Err(loaded.error_at(
                    trigger.span(),
                    &key("triggers"),
                    format!(
                        "no trigger is named `{}`; triggers are: {}",
                        trigger.get_ref(),
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `host:port` split, when it is that.
pub fn smtp_address(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        crate::config::parse(Path::new("deploy.toml"), text.to_string())
    }

    const BASE: &str = "[roles]\nprod = [\"local\"]\n[deploy]\nvenv_ports = { a = \"880\" }\n";

    #[test]
    fn a_trigger_names_a_known_role_with_its_line() {
        let text = format!(
            "{BASE}[serve]\n[[serve.trigger]]\nbranch = \"main\"\nrole = \"prdo\"\nvenv = \"a\"\nprofile = \"p\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("deploy.toml:8:8: `serve.trigger[0].role`"),
            "{err}"
        );
        assert!(err.contains("unknown role `prdo`"), "{err}");
    }

    #[test]
    fn unknown_venv_event_and_kind_are_refused() {
        let venv = format!(
            "{BASE}[serve]\n[[serve.trigger]]\nbranch = \"main\"\nrole = \"prod\"\nvenv = \"c\"\nprofile = \"p\"\n"
        );
        assert!(parse(&venv)
            .unwrap_err()
            .to_string()
            .contains("unknown venv `c`"));
        let event = format!(
            "{BASE}[serve]\n[[serve.notify]]\nkind = \"json\"\nurl = \"http://x/\"\non = [\"sucess\"]\n"
        );
        assert!(parse(&event)
            .unwrap_err()
            .to_string()
            .contains("unknown event `sucess`"));
        let kind = format!("{BASE}[serve]\n[[serve.notify]]\nkind = \"pager\"\n");
        let err = parse(&kind).unwrap_err().to_string();
        assert!(
            err.contains("deploy.toml:7:8: `serve.notify[0].kind`")
                && err.contains("unknown variant `pager`"),
            "{err}"
        );
        let email = format!("{BASE}[serve]\n[[serve.notify]]\nkind = \"email\"\nsmtp = \"mail\"\n");
        assert!(parse(&email)
            .unwrap_err()
            .to_string()
            .contains("is not host:port"));
    }

    /// The reference deploy.toml with its commented [serve] examples switched on.
    #[test]
    fn the_reference_serve_examples_parse() {
        let reference = include_str!("../../deploy.toml");
        let serve_at = reference.find("[serve]").unwrap();
        let mut text = reference[..serve_at].to_string();
        for line in reference[serve_at..].lines() {
            let example = line.strip_prefix("# ").filter(|l| {
                l.starts_with("[[serve.")
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            });
            text.push_str(example.unwrap_or(line));
            text.push('\n');
        }
        let loaded = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let serve = loaded.config.serve.unwrap();
        assert_eq!(serve.notify.len(), 4);
        assert_eq!(serve.users.len(), 1);
        assert!(serve.read_token.is_some() && serve.public_url.is_some());
        assert_eq!(serve.trigger[0].batch, Some(CountOrPercent::Percent(50)));
    }

    #[test]
    fn defaults_and_names() {
        let text = format!(
            "{BASE}[serve]\n[[serve.trigger]]\nbranch = \"release/*\"\nmessage_filter = \"[deploy]\"\nrole = \"prod\"\nvenv = \"a\"\nprofile = \"p\"\n"
        );
        let loaded = parse(&text).unwrap();
        let serve = loaded.config.serve.as_ref().unwrap();
        let t = &serve.trigger[0];
        assert_eq!(t.name(), "release/* -> prod/a");
        assert_eq!(t.message_filter.as_deref(), Some("[deploy]"));
        assert_eq!(serve.listen.get_ref(), "127.0.0.1:8765");
        assert_eq!(serve.quiet_period, 5);
    }
}
