//! `es serve`: deploy on push. A long-lived HTTP server that takes GitHub and
//! GitLab push webhooks, queues a job per trigger (one at a time per role and
//! venv, newer pushes coalesced), runs `es build` and `es deploy` for the
//! pushed commit, keeps every job's log and hosts' outcomes in SQLite, shows
//! them on a web page, and notifies the team.

mod auth;
mod db;
mod hooks;
mod joblog;
mod jobs;
mod notify;
mod records;
mod release;
mod reports;
mod spawn;
mod state;
mod web;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::app::App;
use crate::bad_input;
use crate::cli::ServeArgs;
use crate::config::serve::{self as config, NotifyKind, SmtpTls, UrlSetting};
use crate::config::SecretSource;

/// The `[serve]` settings with every secret read: what the server runs on.
pub struct Settings {
    /// project.name, for the page's title.
    pub project: String,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub remote: String,
    /// The configuration a job uses, inside the job's checkout.
    pub job_config: String,
    pub github_secret: Option<String>,
    pub gitlab_token: Option<String>,
    pub token: Option<String>,
    pub read_token: Option<String>,
    pub users: Vec<UserLogin>,
    pub quiet_period: i64,
    pub log_retention_days: i64,
    pub public_url: Option<String>,
    pub triggers: Vec<TriggerSpec>,
    pub notify: Vec<NotifySpec>,
    /// Every secret value, masked in job logs.
    pub secrets: Vec<String>,
    /// The environment variables the server's own secrets come from: removed
    /// from the environment of a job's processes, which run the pushed code.
    pub secret_vars: Vec<String>,
    /// TWINE_USERNAME and TWINE_PASSWORD, taken out of the environment: a
    /// job's build gets them in a 0600 file it deletes once read.
    pub upload: Option<(String, String)>,
}

pub struct UserLogin {
    pub name: String,
    pub password: String,
    pub deploy: bool,
}

#[derive(Clone)]
pub struct TriggerSpec {
    pub name: String,
    pub branch: String,
    pub message_filter: Option<String>,
    pub role: String,
    pub venv: String,
    pub profile: String,
    pub batch: Option<String>,
    pub max_fail: Option<String>,
    pub pause: Option<u64>,
    pub allow_force_push: bool,
}

impl TriggerSpec {
    pub fn key(&self) -> String {
        format!("{}/{}", self.role, self.venv)
    }

    pub fn matches_branch(&self, branch: &str) -> bool {
        glob::Pattern::new(&self.branch).is_ok_and(|p| p.matches(branch))
    }

    pub fn matches_message(&self, message: &str) -> bool {
        self.message_filter
            .as_ref()
            .is_none_or(|f| message.contains(f.as_str()))
    }

    /// A branch that one can deploy by hand without naming one (no glob).
    pub fn fixed_branch(&self) -> Option<&str> {
        (!self.branch.contains(['*', '?', '['])).then_some(self.branch.as_str())
    }
}

pub struct NotifySpec {
    pub kind: NotifyKind,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub smtp: Option<(String, u16)>,
    pub tls: SmtpTls,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub on: Vec<String>,
    pub triggers: Vec<String>,
    pub retries: u32,
}

impl NotifySpec {
    pub fn applies(&self, trigger: &str, event: &str) -> bool {
        (self.triggers.is_empty() || self.triggers.iter().any(|t| t == trigger))
            && self.on.iter().any(|e| e == event)
    }

    /// How the page and the logs name it: never its URL, which may be a secret.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            NotifyKind::Json => "json webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Dingtalk => "dingtalk",
            NotifyKind::Email => "email",
        };
        match (&self.kind, &self.smtp) {
            (NotifyKind::Email, Some((host, port))) => format!("{kind} via {host}:{port}"),
            _ => kind.to_string(),
        }
    }
}

/// Reads `[serve]` and its secrets; every error here exits 2.
pub fn settings(app: &App) -> Result<Settings> {
    let loaded = app.require_config()?;
    let Some(serve) = &loaded.config.serve else {
        bad_input!(
            "{}: no [serve] section (see the reference deploy.toml for its settings)",
            loaded.path.display()
        );
    };
    let root = loaded.root().to_path_buf();
    let mut secrets = Vec::new();
    let mut secret_vars = Vec::new();
    let mut read = |key: &str, source: &Option<SecretSource>| -> Result<Option<String>> {
        match source {
            Some(source) => {
                let value = source.read(key, &root).map_err(|err| {
                    crate::error::BadInput(format!("{}: {err:#}", loaded.path.display()))
                })?;
                secrets.push(value.clone());
                if let SecretSource::Env(var) = source {
                    secret_vars.push(var.clone());
                }
                Ok(Some(value))
            }
            None => Ok(None),
        }
    };
    let github_secret = read("serve.github_secret", &serve.github_secret)?;
    let gitlab_token = read("serve.gitlab_token", &serve.gitlab_token)?;
    let token = read("serve.token", &serve.token)?;
    let read_token = read("serve.read_token", &serve.read_token)?;
    let mut users = Vec::new();
    for (i, user) in serve.users.iter().enumerate() {
        let password = read(
            &format!("serve.users[{i}].password"),
            &Some(user.password.clone()),
        )?
        .unwrap_or_default();
        users.push(UserLogin {
            name: user.name.clone(),
            password,
            deploy: user.deploy,
        });
    }
    let mut notify = Vec::new();
    for (i, n) in serve.notify.iter().enumerate() {
        let url = match &n.url {
            Some(UrlSetting::Plain(url)) => Some(url.clone()),
            Some(UrlSetting::Secret(source)) => {
                read(&format!("serve.notify[{i}].url"), &Some(source.clone()))?
            }
            None => None,
        };
        notify.push(NotifySpec {
            kind: *n.kind.get_ref(),
            url,
            secret: read(&format!("serve.notify[{i}].secret"), &n.secret)?,
            smtp: n
                .smtp
                .as_ref()
                .and_then(|s| config::smtp_address(s.get_ref())),
            tls: n.tls,
            from: n.from.clone(),
            to: n.to.clone(),
            username: n.username.clone(),
            password: read(&format!("serve.notify[{i}].password"), &n.password)?,
            on: n.on.iter().map(|e| e.get_ref().clone()).collect(),
            triggers: n.triggers.iter().map(|t| t.get_ref().clone()).collect(),
            retries: n.retries,
        });
    }
    if token.is_none() && read_token.is_none() && users.is_empty() {
        return Err(loaded
            .error(
                "serve.token",
                "the page and the API need a login: set serve.token (or serve.read_token, or [[serve.users]])",
            )
            .into());
    }
    if github_secret.is_none() && gitlab_token.is_none() {
        return Err(loaded
            .error(
                "serve.github_secret",
                "no webhook can be verified: set serve.github_secret or serve.gitlab_token",
            )
            .into());
    }
    if serve.trigger.is_empty() {
        return Err(loaded
            .error(
                "serve.trigger",
                "no [[serve.trigger]]: nothing would ever be deployed",
            )
            .into());
    }
    let Some(remote) = &serve.remote else {
        return Err(loaded
            .error(
                "serve.remote",
                "where are pushed commits fetched from? set serve.remote",
            )
            .into());
    };
    if remote.get_ref().starts_with('-') || remote.get_ref().trim().is_empty() {
        return Err(loaded
            .error_at(remote.span(), "serve.remote", "not a git remote")
            .into());
    }
    let job_config = &serve.config;
    if job_config.starts_with('/') || job_config.split('/').any(|part| part == "..") {
        return Err(loaded
            .error(
                "serve.config",
                "must be a path inside the repository, without `..`",
            )
            .into());
    }
    let state_dir = app.config_path(&serve.state_dir);
    let listen = serve
        .listen
        .get_ref()
        .parse()
        .context("serve.listen was checked")?;
    if let Some(password) = crate::index::url_password(remote.get_ref()) {
        secrets.push(password.to_string());
    }
    let index = &loaded.config.index;
    for url in index.url.iter().chain(index.upload_url.iter()) {
        if let Some(password) = crate::index::url_password(url) {
            secrets.push(password.to_string());
        }
    }
    let upload = match (
        std::env::var("TWINE_USERNAME"),
        std::env::var("TWINE_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => {
            secrets.push(password.clone());
            Some((user, password))
        }
        _ => None,
    };
    secret_vars.extend(["TWINE_USERNAME".to_string(), "TWINE_PASSWORD".to_string()]);
    Ok(Settings {
        project: loaded.config.project.name.clone().unwrap_or_default(),
        listen,
        state_dir,
        remote: remote.get_ref().clone(),
        job_config: job_config.clone(),
        github_secret,
        gitlab_token,
        token,
        read_token,
        users,
        quiet_period: serve.quiet_period as i64,
        log_retention_days: serve.log_retention_days as i64,
        public_url: serve
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string()),
        triggers: serve
            .trigger
            .iter()
            .map(|t| TriggerSpec {
                name: t.name(),
                branch: t.branch.get_ref().clone(),
                message_filter: t.message_filter.clone(),
                role: t.role.get_ref().clone(),
                venv: t.venv.get_ref().clone(),
                profile: t.profile.clone(),
                batch: t.batch.map(|b| b.to_string()),
                max_fail: t.max_fail.map(|m| m.to_string()),
                pause: t.pause,
                allow_force_push: t.allow_force_push,
            })
            .collect(),
        notify,
        secrets,
        secret_vars,
        upload,
    })
}

/// `es serve [--check]`.
pub fn command(app: &App, args: &ServeArgs) -> Result<bool> {
    let settings = settings(app)?;
    if args.check {
        println!(
            "es: [serve] is valid: listen {}, {} trigger(s), {} notification(s), state in {}",
            settings.listen,
            settings.triggers.len(),
            settings.notify.len(),
            settings.state_dir.display()
        );
        return Ok(true);
    }
    let lock = state::prepare(&settings.state_dir)?;
    isolate_secrets(&settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(Arc::new(settings)))?;
    drop(lock);
    Ok(true)
}

/// Before any job: the server's secrets leave its environment (a job's
/// processes run the pushed code), and the server becomes non-dumpable, so a
/// process of the same user can read neither its /proc/PID/environ nor its memory.
///
/// Removing a variable only drops it from libc's list; /proc/PID/environ
/// shows the block the kernel gave the process at exec, so the values are
/// first overwritten there. Runs before any other thread exists.
fn isolate_secrets(settings: &Settings) {
    // SAFETY: single-threaded here; `environ` is a NUL-terminated array of
    // NUL-terminated strings, and each value is overwritten within its own
    // length, never past its terminator.
    unsafe {
        let mut entry = libc::environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if let Some(eq) = text.iter().position(|b| *b == b'=') {
                let name = &text[..eq];
                if settings.secret_vars.iter().any(|v| v.as_bytes() == name) {
                    std::ptr::write_bytes((*entry).add(eq + 1), 0, text.len() - eq - 1);
                }
            }
            entry = entry.add(1);
        }
    }
    for var in &settings.secret_vars {
        std::env::remove_var(var);
    }
    // SAFETY: prctl(2) with PR_SET_DUMPABLE only changes this process's flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
}

async fn run(settings: Arc<Settings>) -> Result<()> {
    let db = Arc::new(db::Db::open(&settings.state_dir.join("serve.db"))?);
    let queue = jobs::Queue::new(db.clone(), settings.clone());
    queue.recover().await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    eprintln!(
        "es serve: listening on http://{} (state in {})",
        settings.listen,
        settings.state_dir.display()
    );
    let scheduler = tokio::spawn(queue.clone().schedule());
    let project = settings.project.clone();
    let state = web::new_state(db, settings, queue.clone(), project);
    let router = web::router(state.clone());
    // On SIGTERM the server keeps answering (webhooks get 503 and
    // Retry-After) until the running jobs have finished their step.
    let drain = async move {
        shutdown_signal().await;
        state
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("es serve: stopping: webhooks are answered 503; the running jobs are told to stop and finish their step");
        queue.shutdown().await;
    };
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(drain)
    .await
    .context("serving HTTP")?;
    let _ = scheduler.await;
    eprintln!("es serve: stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_match_branch_globs_and_message_filters() {
        let t = TriggerSpec {
            name: "t".into(),
            branch: "release/*".into(),
            message_filter: Some("[deploy]".into()),
            role: "prod".into(),
            venv: "a".into(),
            profile: "p".into(),
            batch: None,
            max_fail: None,
            pause: None,
            allow_force_push: false,
        };
        assert!(t.matches_branch("release/1.2"));
        assert!(!t.matches_branch("main"));
        assert!(t.matches_message("fix: x [deploy]"));
        assert!(!t.matches_message("fix: x"));
        assert_eq!(t.fixed_branch(), None);
        assert_eq!(t.key(), "prod/a");
    }
}
