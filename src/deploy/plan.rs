//! What a deploy will do, checked before any host is contacted: the version
//! (on the index), the venv, the profile, the templates (rendered once), the
//! environment and the secrets (read here, on the deploying machine).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::bad_input;
use crate::config::{
    CountOrPercent, Deploy, Health, HooksOn, Installer, ProcessManager, SecretSource, SystemdScope,
};
use crate::error::BadInput;
use crate::venv::Venv;

/// The supervisord template built into es.
pub const DEFAULT_SUPERVISOR_TEMPLATE: &str = include_str!("../../templates/supervisord.conf");
/// The template unit of `process_manager = "systemd"`, unless the project has its own.
pub const DEFAULT_SYSTEMD_TEMPLATE: &str = include_str!("../../templates/systemd.service");

/// Everything a deploy needs, checked before any host is contacted.
pub struct Plan {
    pub project: String,
    pub version: String,
    pub venv: Venv,
    pub profile: String,
    pub index_url: String,
    /// Seconds a request to the index may wait for an answer (index.timeout),
    /// on the hosts too.
    pub index_timeout: u64,
    pub installer: Installer,
    /// What runs the processes on the hosts.
    pub process_manager: ProcessManager,
    /// Whose systemd runs the units (process_manager = "systemd").
    pub systemd_scope: SystemdScope,
    /// (name, source) of the process manager's template (supervisord.conf or a systemd unit).
    process_template: (String, String),
    /// (name, source, path inside the release) of each extra template.
    pub extra_templates: Vec<(String, String, String)>,
    pub port: Option<String>,
    pub process_count: u32,
    pub pre_hooks: Vec<String>,
    pub post_hooks: Vec<String>,
    pub release_hooks: Vec<String>,
    pub release_hooks_on: HooksOn,
    /// Custom venv creation command (the path is appended); default: uv or `python3 -m venv`.
    pub virtualenv_command: Option<String>,
    /// Directories of the venv every release links to (`logs`, `tmp`, `etc` always).
    pub sub_dirs: Vec<String>,
    /// Paths inside each release that point to one directory per venv:
    /// `PATH` (shared/PATH at PATH) or `NAME=PATH` (shared/NAME at PATH).
    pub shared_dirs: Vec<String>,
    /// Installed into every release beside the project.
    pub requirements: Vec<String>,
    pub keep_releases: u32,
    pub health: Health,
    pub batch: CountOrPercent,
    pub max_fail: CountOrPercent,
    pub pause: u64,
    /// deploy.env (templates), then the secrets' values: the release's environment.
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    pub force: bool,
    /// Who deploys: recorded in the lock and the ledger.
    pub deployer: serde_json::Value,
}

/// The values a deploy command was given, before they are checked.
pub struct Request<'a> {
    pub version: &'a str,
    pub venv: Option<&'a str>,
    pub profile: &'a str,
    pub force: bool,
    pub batch: Option<&'a str>,
    pub max_fail: Option<&'a str>,
    pub pause: Option<u64>,
}

/// Checks the request and the configuration, resolves `latest` and makes sure
/// the version is on the index, before any host is contacted.
pub fn plan(app: &App, request: &Request<'_>) -> Result<Plan> {
    plan_with(app, request, true)
}

/// Everything `plan` checks but the version (for `es quickdeploy`, before the build).
pub fn check(app: &App, request: &Request<'_>) -> Result<()> {
    plan_with(app, request, false).map(|_| ())
}

fn plan_with(app: &App, request: &Request<'_>, resolve: bool) -> Result<Plan> {
    let loaded = app.require_config()?;
    let config = &loaded.config;
    let Some(project) = config.project.name.clone() else {
        bad_input!("{}: `project.name` is not set", loaded.path.display());
    };
    let venv_name = venv_name(request, &config.deploy)?;
    let venv = Venv::new(config.deploy.virtualenv_prefix.get_ref(), &venv_name)?;
    check_profile(request.profile)?;
    let Some(index_url) = config.index.url.clone() else {
        bad_input!(
            "{}: `index.url` is not set: es installs from it",
            loaded.path.display()
        );
    };
    // The index is asked last, once everything checked here is right.
    let version = request.version.to_string();

    let process_template = process_template(app, &config.deploy)?;
    let extra_templates = extra_templates(app, &config.deploy)?;
    for dir in &config.deploy.virtualenv_sub_dirs {
        check_relative("deploy.virtualenv_sub_dirs", dir)?;
    }
    let shared_dirs = shared_dirs(&config.deploy)?;
    let rollout = &config.deploy.rollout;
    let batch = parse_count("--batch", request.batch, rollout.batch)?;
    if batch == CountOrPercent::Count(0) || batch == CountOrPercent::Percent(0) {
        bad_input!("--batch must switch at least one host at a time");
    }
    let max_fail = parse_count("--max-fail", request.max_fail, rollout.max_fail)?;
    let secrets = read_secrets(app, &config.deploy)?;

    let mut plan = Plan {
        project,
        version,
        port: config.deploy.venv_ports.get(&venv_name).cloned(),
        venv,
        profile: request.profile.to_string(),
        index_url,
        index_timeout: app.index_timeout().as_secs(),
        installer: config.deploy.installer,
        process_manager: config.deploy.process_manager,
        systemd_scope: config.deploy.systemd.scope(),
        process_template,
        extra_templates,
        process_count: config.deploy.process_count,
        pre_hooks: config.deploy.pre_hooks.clone(),
        post_hooks: config.deploy.post_hooks.clone(),
        release_hooks: config.deploy.release_hooks.clone(),
        release_hooks_on: config.deploy.release_hooks_on,
        virtualenv_command: config.deploy.virtualenv_command.clone(),
        sub_dirs: config.deploy.virtualenv_sub_dirs.clone(),
        shared_dirs,
        requirements: config.deploy.requirements.clone(),
        keep_releases: config.deploy.keep_releases,
        health: config.deploy.health.clone(),
        batch,
        max_fail,
        pause: request.pause.unwrap_or(rollout.pause),
        env: config.deploy.env.clone(),
        secrets,
        force: request.force,
        deployer: deployer(),
    };
    check_rendering(app, &plan)?;
    if resolve {
        plan.version = resolve_version(
            &plan.index_url,
            &plan.project,
            request.version,
            app.index_timeout(),
        )?;
    } else if request.version != "latest" && crate::version::parse_version(request.version).is_err()
    {
        bad_input!("bad version {:?}", request.version);
    }
    Ok(plan)
}

/// The venv given on the command line, else deploy.default_venv.
fn venv_name(request: &Request<'_>, deploy: &Deploy) -> Result<String> {
    match request
        .venv
        .map(str::to_string)
        .or_else(|| deploy.default_venv.clone())
    {
        Some(v) => Ok(v),
        None => bad_input!("which venv? give VERSION VENV PROFILE, or set deploy.default_venv"),
    }
}

/// (name, source) of the process manager's template: the project's own
/// (deploy.supervisor_template or deploy.systemd_template), else the built-in one.
fn process_template(app: &App, deploy: &Deploy) -> Result<(String, String)> {
    let (key, own, default) = match deploy.process_manager {
        ProcessManager::Supervisord => (
            "deploy.supervisor_template",
            &deploy.supervisor_template,
            DEFAULT_SUPERVISOR_TEMPLATE,
        ),
        ProcessManager::Systemd => (
            "deploy.systemd_template",
            &deploy.systemd_template,
            DEFAULT_SYSTEMD_TEMPLATE,
        ),
    };
    Ok(match own {
        Some(path) => (path.clone(), read_template(app, key, path)?),
        None => (
            format!("built-in {}", deploy.process_manager.config_file()),
            default.to_string(),
        ),
    })
}

/// (name, source, path inside the release) of each of deploy.extra_templates.
fn extra_templates(app: &App, deploy: &Deploy) -> Result<Vec<(String, String, String)>> {
    let mut extra_templates = Vec::new();
    for (local, remote) in &deploy.extra_templates {
        let source = read_template(app, "deploy.extra_templates", local)?;
        check_relative("deploy.extra_templates", remote)?;
        extra_templates.push((local.clone(), source, remote.clone()));
    }
    Ok(extra_templates)
}

/// deploy.shared_dirs, checked, as the release links them: `PATH`, or
/// `NAME=PATH` when the name under shared/ is not the path.
fn shared_dirs(deploy: &Deploy) -> Result<Vec<String>> {
    let mut shared_dirs = Vec::new();
    for (name, path) in deploy.shared_dirs.pairs() {
        // A path may be written from the release's own directory.
        let path = path
            .strip_prefix("{{ release_dir }}/")
            .unwrap_or(&path)
            .to_string();
        check_relative("deploy.shared_dirs", &name)?;
        check_relative(&format!("deploy.shared_dirs.{name}"), &path)?;
        if name.contains(['=', '*']) {
            bad_input!("deploy.shared_dirs: {name:?}: a name under shared/ holds no `=` or `*`");
        }
        shared_dirs.push(if name == path {
            path
        } else {
            format!("{name}={path}")
        });
    }
    Ok(shared_dirs)
}

/// A `--batch` or `--max-fail` value given on the command line, else the configured one.
fn parse_count(flag: &str, value: Option<&str>, default: CountOrPercent) -> Result<CountOrPercent> {
    match value {
        Some(text) => text
            .parse::<CountOrPercent>()
            .map_err(|e| anyhow::Error::new(BadInput(format!("{flag}: {e}")))),
        None => Ok(default),
    }
}

/// Every secret's value, each one masked in the output from now on.
fn read_secrets(app: &App, deploy: &Deploy) -> Result<BTreeMap<String, String>> {
    let mut secrets = BTreeMap::new();
    for (name, source) in &deploy.secrets {
        let value = read_secret(app, name, source)?;
        app.ui.add_secret(&value);
        secrets.insert(name.clone(), value);
    }
    Ok(secrets)
}

/// Renders the templates and deploy.env once with placeholder host values: a
/// broken template or a missing port is a configuration error, found before
/// connecting.
fn check_rendering(app: &App, plan: &Plan) -> Result<()> {
    for (name, source) in plan.templates() {
        let template_env = template_env();
        let template = template_env
            .template_from_str(source)
            .map_err(|e| BadInput(format!("{name}: {e}")))?;
        if plan.port.is_none() && template.undeclared_variables(false).contains("port") {
            bad_input!(
                "{name} uses `port`, but deploy.venv_ports has no entry for venv `{}`",
                plan.venv.name
            );
        }
        plan.render(source, &Placement::example(), "check")
            .map_err(|e| BadInput(format!("{name}: {e:#}")))?;
    }
    // deploy.env values are templates too.
    for (key, value) in &plan.env {
        if let Err(e) = plan.render(value, &Placement::example(), "check") {
            let key = format!("deploy.env.{key}");
            return Err(match &app.loaded {
                Some(loaded) => loaded.error(&key, format!("{e:#}")).into(),
                None => BadInput(format!("{key}: {e:#}")).into(),
            });
        }
    }
    Ok(())
}

/// `latest` (the highest version built from the default branch), or an exact
/// version, which must be on the index: a missing version fails here, not on
/// every host.
fn resolve_version(
    index_url: &str,
    project: &str,
    wanted: &str,
    timeout: std::time::Duration,
) -> Result<String> {
    if wanted == "latest" {
        return match crate::index::latest_version(index_url, project, timeout)? {
            Some(v) => Ok(v.to_string()),
            None => bail!(
                "{project} has no release on {}: nothing to deploy",
                crate::index::redact_url(index_url)
            ),
        };
    }
    let version = match crate::version::parse_version(wanted) {
        Ok(v) => v,
        Err(err) => bad_input!("bad version {wanted:?}: {err}"),
    };
    let versions = crate::index::IndexClient::new(false, timeout)
        .versions(index_url, project)
        .context("checking that the version is on the index")?;
    if !versions.contains(&version) {
        let mut known: Vec<_> = versions.iter().collect();
        known.sort();
        let newest: Vec<String> = known.iter().rev().take(3).map(|v| v.to_string()).collect();
        bail!(
            "{project} {version} is not on the index {} (newest there: {}): nothing was deployed",
            crate::index::redact_url(index_url),
            if newest.is_empty() {
                "none".to_string()
            } else {
                newest.join(", ")
            }
        );
    }
    Ok(version.to_string())
}

fn read_template(app: &App, key: &str, path: &str) -> Result<String> {
    let file = app.config_path(path);
    std::fs::read_to_string(&file)
        .map_err(|e| BadInput(format!("{key}: cannot read {}: {e}", file.display())).into())
}

/// A path that must stay inside a release.
fn check_relative(key: &str, path: &str) -> Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|part| part == ".." || part == ".")
        || path.chars().any(|c| c.is_control())
    {
        bad_input!("{key}: {path:?} must be a relative path inside the release, without `..`");
    }
    Ok(())
}

/// A secret's value, read on this machine. Errors name the key and the source,
/// never the value.
fn read_secret(app: &App, name: &str, source: &SecretSource) -> Result<String> {
    let root = match &app.loaded {
        Some(loaded) => loaded.root().to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    source.read(&format!("deploy.secrets.{name}"), &root)
}

/// A profile goes into hook environments (quoted) and may go into supervisord's
/// configuration, where a newline, `"`, `%`, `;` or `#` would change its meaning.
fn check_profile(profile: &str) -> Result<()> {
    if profile.is_empty() {
        bad_input!("the profile is empty");
    }
    if let Some(c) = profile
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '%' | '\\' | ';' | '#'))
    {
        bad_input!("bad profile {profile:?}: it may not contain {c:?}");
    }
    Ok(())
}

/// The local user, machine and pid, for the lock and the ledger; a deploy id
/// that tells this deploy's lock from any other's.
pub fn deployer() -> serde_json::Value {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    json!({
        "user": crate::identity::login(),
        "machine": crate::identity::machine(),
        "pid": std::process::id(),
        "deploy_id": format!("{:x}-{:x}", std::process::id(), nanos),
    })
}

/// The systemd template unit of a venv's processes: `PROJECT-VENV` (`@N.service` for process N).
pub fn unit_name(project: &str, venv: &str) -> String {
    format!("{project}-{venv}")
}

/// What the host's process-manager script (supervisord.py or systemd.py)
/// needs to drive and judge a venv's processes; `root` is filled in per host.
pub fn process_spec(
    manager: ProcessManager,
    scope: SystemdScope,
    project: &str,
    venv: &str,
    ports: &[String],
    count: u32,
    health: &Health,
) -> Value {
    json!({
        "manager": manager,
        "root": "",
        "program": project,
        "unit": unit_name(project, venv),
        "scope": scope,
        "count": count,
        "ports": ports,
        "health": {
            "path": health.path,
            "status": health.status,
            "timeout": health.timeout,
            "headers": health.headers,
            "settle": health.settle.get_ref(),
        },
        "wait": 60,
    })
}

/// The spec of `venv`'s processes as deploy.toml describes them (for commands
/// that act without a plan: status, rollback, `es supervisor`).
pub fn configured_process_spec(config: &crate::config::Config, venv: &str) -> Value {
    let ports: Vec<String> = match config.deploy.venv_ports.get(venv) {
        Some(prefix) => (0..config.deploy.process_count)
            .map(|n| format!("{prefix}{n}"))
            .collect(),
        None => Vec::new(),
    };
    process_spec(
        config.deploy.process_manager,
        config.deploy.systemd.scope(),
        config.project.name.as_deref().unwrap_or_default(),
        venv,
        &ports,
        config.deploy.process_count,
        &config.deploy.health,
    )
}

fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

/// Stands for the release's id in what is rendered until the id is known.
const RELEASE_ID: &str = "@ES_RELEASE_ID@";

/// Where a release lives on one host: what the templates are rendered with.
pub struct Placement {
    pub host: String,
    /// The venv's absolute directory (PREFIX/VENV).
    pub root: String,
    /// The supervisor HTTP password of the venv.
    pub secret: String,
    /// The deploy user on the host (system units run the processes as it).
    pub user: String,
}

impl Placement {
    fn example() -> Placement {
        Placement {
            host: "check".into(),
            root: "/check/venv".into(),
            secret: "secret".into(),
            user: "check".into(),
        }
    }
}

/// A release as rendered for one host, before it is uploaded.
pub struct Rendered {
    /// `VERSION-HASH`: the same inputs give the same release.
    pub id: String,
    /// The process manager's configuration (supervisord.conf or the template unit).
    pub process_config: String,
    pub env_file: String,
    /// (path inside the release, text) of the extra templates.
    pub extras: Vec<(String, String)>,
}

impl Plan {
    /// The index file staging and resolving read on a host (uploaded 0600:
    /// the URL may carry credentials): the URL, its trusted host, the timeout.
    pub fn index_env(&self) -> String {
        crate::remote::env_file([
            ("ES_INDEX_URL", self.index_url.as_str()),
            (
                "ES_TRUSTED_HOST",
                crate::pip::trusted_host(&self.index_url).as_str(),
            ),
            ("ES_INDEX_TIMEOUT", self.index_timeout.to_string().as_str()),
        ])
    }

    fn templates(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((
            self.process_template.0.as_str(),
            self.process_template.1.as_str(),
        ))
        .chain(
            self.extra_templates
                .iter()
                .map(|(name, source, _)| (name.as_str(), source.as_str())),
        )
    }

    /// Renders a template. `venv_dir` and `run_root` are `ROOT/current`, so a
    /// configuration stays the same from one release to the next and the
    /// programs reach whichever release is current when they start.
    fn render(&self, source: &str, at: &Placement, env_file: &str) -> Result<String> {
        let current = format!("{}/current", at.root);
        let prefix = at
            .root
            .rsplit_once('/')
            .map_or(at.root.as_str(), |(parent, _)| parent);
        let vars = json!({
            "run_root": current,
            "venv_dir": current,
            "root": at.root,
            "prefix": prefix,
            "shared_dir": format!("{}/shared", at.root),
            "release_dir": format!("{}/releases/{RELEASE_ID}", at.root),
            "env_file": env_file,
            "project": self.project,
            "port": self.port.clone().unwrap_or_default(),
            "process_count": self.process_count,
            "profile": self.profile,
            "virtualenv_name": self.venv.name,
            "unit": unit_name(&self.project, &self.venv.name),
            "systemd_scope": self.systemd_scope,
            "user": at.user,
            "username": "es",
            "password": at.secret,
            "version": self.version,
            "host": at.host,
        });
        template_env()
            .render_str(source, vars)
            .context("rendering the template")
    }

    /// The release's environment: ES_* values, deploy.env (each value
    /// rendered like a template) and the secrets (as they are).
    fn env_file(&self, at: &Placement) -> Result<String> {
        let shared = format!("{}/shared", at.root);
        let release = format!("{}/releases/{RELEASE_ID}", at.root);
        let fixed = [
            ("ES_PROJECT", self.project.as_str()),
            ("ES_VERSION", self.version.as_str()),
            ("ES_VENV", self.venv.name.as_str()),
            ("ES_PROFILE", self.profile.as_str()),
            ("ES_HOST", at.host.as_str()),
            ("ES_SHARED_DIR", shared.as_str()),
            ("ES_RELEASE_DIR", release.as_str()),
        ];
        let env_path = format!("{}/current/es.env", at.root);
        let mut values = Vec::new();
        for (key, value) in &self.env {
            let rendered = self
                .render(value, at, &env_path)
                .map_err(|e| BadInput(format!("deploy.env.{key}: {e:#}")))?;
            values.push((key.as_str(), rendered));
        }
        Ok(crate::remote::env_file(
            fixed
                .into_iter()
                .chain(values.iter().map(|(k, v)| (*k, v.as_str())))
                .chain(self.secrets.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ))
    }

    /// Everything that goes into the release for one host, and its id.
    pub fn render_for(&self, at: &Placement) -> Result<Rendered> {
        let env_path = format!("{}/current/es.env", at.root);
        let (name, source) = (&self.process_template.0, &self.process_template.1);
        let process_config = self
            .render(source, at, &env_path)
            .with_context(|| name.clone())?;
        let env_file = self.env_file(at)?;
        let mut extras = Vec::new();
        for (name, source, path) in &self.extra_templates {
            let text = self
                .render(source, at, &env_path)
                .with_context(|| name.clone())?;
            extras.push((path.clone(), text));
        }
        let mut hash = Sha256::new();
        for part in [process_config.as_str(), env_file.as_str()]
            .into_iter()
            .chain(extras.iter().flat_map(|(p, t)| [p.as_str(), t.as_str()]))
            .chain(self.shared_dirs.iter().map(String::as_str))
            .chain(self.sub_dirs.iter().map(String::as_str))
            .chain(self.requirements.iter().map(String::as_str))
        {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        // The release's id depends on what is rendered: `release_dir` goes in after.
        let id = format!("{}-{short}", self.version);
        let place = |text: &str| text.replace(RELEASE_ID, &id);
        Ok(Rendered {
            process_config: place(&process_config),
            env_file: place(&env_file),
            extras: extras.iter().map(|(p, t)| (p.clone(), place(t))).collect(),
            id,
        })
    }

    /// What the host's process-manager script needs to drive and judge the
    /// processes (`root` is filled in per host).
    pub fn process_spec(&self) -> Value {
        process_spec(
            self.process_manager,
            self.systemd_scope,
            &self.project,
            &self.venv.name,
            &self.ports(),
            self.process_count,
            &self.health,
        )
    }

    /// The ports of the project's processes: the prefix followed by N.
    pub fn ports(&self) -> Vec<String> {
        match &self.port {
            Some(prefix) => (0..self.process_count)
                .map(|n| format!("{prefix}{n}"))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The deploy lock's owner line.
    pub fn owner_line(&self) -> String {
        let mut owner = self.deployer.clone();
        owner["version"] = json!(self.version);
        owner["since"] = json!(crate::clock::now_utc());
        owner.to_string()
    }

    pub fn deploy_id(&self) -> &str {
        self.deployer["deploy_id"].as_str().unwrap_or("")
    }
}

#[cfg(test)]
mod tests;
