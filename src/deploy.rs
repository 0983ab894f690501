//! `es deploy`: put one exact version into a venv on every host of a role, in
//! parallel, and leave its processes running under supervisord.
//!
//! Everything that can be checked is checked before any host is contacted (the
//! plan). Per host, nothing running is touched before the restart step, so a
//! host that fails earlier keeps serving its previous version.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::json;

use crate::app::App;
use crate::bad_input;
use crate::cli::{BuildArgs, DeployArgs, QuickdeployArgs};
use crate::config::Installer;
use crate::fleet::HostCtx;
use crate::quote::{quote, quote_path};
use crate::supervisor;
use crate::venv::Venv;

/// The supervisord template built into es.
pub const DEFAULT_SUPERVISOR_TEMPLATE: &str = include_str!("../templates/supervisord.conf");

/// Everything a deploy needs, checked before any host is contacted.
pub struct Plan {
    pub project: String,
    pub version: String,
    pub venv: Venv,
    pub profile: String,
    index_url: String,
    installer: Installer,
    /// (name, source) of the supervisord template and of each extra template.
    supervisor_template: (String, String),
    extra_templates: Vec<(String, String, String)>,
    port: Option<String>,
    process_count: u32,
    pre_hooks: Vec<String>,
    post_hooks: Vec<String>,
    virtualenv_command: String,
    sub_dirs: Vec<String>,
    force: bool,
    /// Who deploys: recorded in the lock and the release ledger.
    deployer: serde_json::Value,
}

/// `es deploy`.
pub fn command(app: &App, args: &DeployArgs) -> Result<bool> {
    let plan = plan(app, args)?;
    let fleet = app.fleet(true)?;
    let title = format!(
        "deploy {} {} to venv {}",
        plan.project, plan.version, plan.venv.name
    );
    let report = if args.dry_run {
        fleet.run(|ctx| dry_run_host(ctx, &plan))
    } else {
        fleet.run(|ctx| deploy_host(ctx, &plan))
    };
    report.print_summary(&app.ui, &title);
    Ok(report.all_ok())
}

/// `es quickdeploy`: build and upload, then deploy the version built.
pub fn quickdeploy(app: &App, args: &QuickdeployArgs) -> Result<bool> {
    let deploy_args = |version: String| DeployArgs {
        args: vec![version, args.venv.clone(), args.profile.clone()],
        dry_run: false,
        force: false,
    };
    // Everything the deploy needs is checked before the (slow) build.
    plan(app, &deploy_args("0".to_string()))?;
    app.targets()?;
    let build_args = BuildArgs {
        branch: args.branch.clone(),
        ..BuildArgs::default()
    };
    let version = crate::build::build(app, &build_args)?;
    command(app, &deploy_args(version.to_string()))
}

/// Checks the arguments and configuration and resolves `latest`, before any host is contacted.
pub fn plan(app: &App, args: &DeployArgs) -> Result<Plan> {
    let loaded = app.require_config()?;
    let config = &loaded.config;
    let Some(project) = config.project.name.clone() else {
        bad_input!("{}: `project.name` is not set", loaded.path.display());
    };
    let (version_arg, venv_arg, profile) = match args.args.as_slice() {
        [version, venv, profile] => (version.clone(), Some(venv.clone()), profile.clone()),
        [version, profile] => (version.clone(), None, profile.clone()),
        _ => bad_input!("usage: es deploy VERSION [VENV] PROFILE"),
    };
    let venv_name = match venv_arg.or_else(|| config.deploy.default_venv.clone()) {
        Some(v) => v,
        None => bad_input!("which venv? give VERSION VENV PROFILE, or set deploy.default_venv"),
    };
    let venv = Venv::new(&config.deploy.virtualenv_prefix, &venv_name)?;
    check_profile(&profile)?;
    let Some(index_url) = config.index.url.clone() else {
        bad_input!(
            "{}: `index.url` is not set: es installs from it",
            loaded.path.display()
        );
    };
    let version = if version_arg == "latest" {
        match crate::index::latest_version(&index_url, &project)? {
            Some(v) => v.to_string(),
            None => bail!("{project} has no release on {index_url}: nothing to deploy"),
        }
    } else {
        match crate::version::parse_version(&version_arg) {
            Ok(v) => v.to_string(),
            Err(err) => bad_input!("bad version {version_arg:?}: {err}"),
        }
    };

    let supervisor_template = match &config.deploy.supervisor_template {
        Some(path) => {
            let file = app.config_path(path);
            let source = std::fs::read_to_string(&file).map_err(|e| {
                crate::error::BadInput(format!(
                    "deploy.supervisor_template: cannot read {}: {e}",
                    file.display()
                ))
            })?;
            (path.clone(), source)
        }
        None => (
            "built-in supervisord.conf".to_string(),
            DEFAULT_SUPERVISOR_TEMPLATE.to_string(),
        ),
    };
    let mut extra_templates = Vec::new();
    for (local, remote) in &config.deploy.extra_templates {
        let file = app.config_path(local);
        let source = std::fs::read_to_string(&file).map_err(|e| {
            crate::error::BadInput(format!(
                "deploy.extra_templates: cannot read {}: {e}",
                file.display()
            ))
        })?;
        if remote.starts_with('/') || remote.split('/').any(|part| part == "..") {
            bad_input!("deploy.extra_templates: {remote:?} must be a path inside the venv");
        }
        extra_templates.push((local.clone(), source, remote.clone()));
    }
    let port = config.deploy.venv_ports.get(&venv_name).cloned();

    let plan = Plan {
        project,
        version,
        venv,
        profile,
        index_url,
        installer: config.deploy.installer,
        supervisor_template,
        extra_templates,
        port,
        process_count: config.deploy.process_count,
        pre_hooks: config.deploy.pre_hooks.clone(),
        post_hooks: config.deploy.post_hooks.clone(),
        virtualenv_command: config
            .deploy
            .virtualenv_command
            .clone()
            .unwrap_or_else(|| "python3 -m venv".to_string()),
        sub_dirs: config.deploy.virtualenv_sub_dirs.clone(),
        force: args.force,
        deployer: deployer(loaded.root()),
    };
    // Render once with placeholder host values: a broken template or a missing
    // port is a configuration error, found before connecting.
    for (name, source) in plan.templates() {
        let env = template_env();
        let template = env
            .template_from_str(source)
            .map_err(|e| crate::error::BadInput(format!("{name}: {e}")))?;
        if plan.port.is_none() && template.undeclared_variables(false).contains("port") {
            bad_input!(
                "{name} uses `port`, but deploy.venv_ports has no entry for venv `{}`",
                plan.venv.name
            );
        }
        plan.render(name, source, "check", "/check", "secret")
            .map_err(|e| crate::error::BadInput(format!("{e:#}")))?;
    }
    Ok(plan)
}

/// A profile goes into hook environments (quoted) and into supervisord's
/// configuration, where a newline, `"` or `%` would change its meaning.
fn check_profile(profile: &str) -> Result<()> {
    if profile.is_empty() {
        bad_input!("the profile is empty");
    }
    if let Some(c) = profile
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '%' | '\\'))
    {
        bad_input!("bad profile {profile:?}: it may not contain {c:?}");
    }
    Ok(())
}

/// The local user, machine, pid and git commit, for the lock and the ledger.
fn deployer(root: &std::path::Path) -> serde_json::Value {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| login_name().unwrap_or_else(|| "unknown".into()));
    let machine = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    json!({ "user": user, "machine": machine, "pid": std::process::id(), "commit": commit })
}

/// The name of the user running es, from the password database.
fn login_name() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; the name is
    // copied out at once, before any other call could reuse that storage.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if entry.is_null() || (*entry).pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

impl Plan {
    fn templates(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((
            self.supervisor_template.0.as_str(),
            self.supervisor_template.1.as_str(),
        ))
        .chain(
            self.extra_templates
                .iter()
                .map(|(name, source, _)| (name.as_str(), source.as_str())),
        )
    }

    /// Renders a template with essay's variables plus `version` and `host`.
    fn render(
        &self,
        name: &str,
        source: &str,
        host: &str,
        venv_dir: &str,
        secret: &str,
    ) -> Result<String> {
        let env = template_env();
        let vars = json!({
            "run_root": venv_dir,
            "venv_dir": venv_dir,
            "project": self.project,
            "port": self.port.clone().unwrap_or_default(),
            "process_count": self.process_count,
            "profile": self.profile,
            "virtualenv_name": self.venv.name,
            "username": "es",
            "password": secret,
            "version": self.version,
            "host": host,
        });
        env.render_str(source, vars)
            .with_context(|| format!("rendering {name}"))
    }

    /// `export ES_...=...;` for hooks, every value quoted.
    fn hook_env(&self, host: &str) -> String {
        [
            ("ES_VERSION", self.version.as_str()),
            ("ES_VENV", self.venv.name.as_str()),
            ("ES_PROFILE", self.profile.as_str()),
            ("ES_HOST", host),
            ("ES_PROJECT", self.project.as_str()),
        ]
        .iter()
        .map(|(k, v)| format!("export {k}={}; ", quote(v)))
        .collect()
    }

    fn owner_line(&self) -> String {
        let mut owner = self.deployer.clone();
        owner["version"] = json!(self.version);
        owner.to_string()
    }
}

/// Facts about a host's venv, read in one round trip.
#[derive(Debug, Default)]
struct VenvState {
    secret: String,
    has_supervisord: bool,
    has_uv: bool,
    installed_version: Option<String>,
}

fn key_values(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    map
}

fn first(map: &BTreeMap<String, Vec<String>>, key: &str) -> Option<String> {
    map.get(key).and_then(|v| v.first()).cloned()
}

/// The project's dist-info directory name prefix (`hello_es-`), as installers write it.
fn dist_info_prefix(project: &str) -> String {
    format!("{}-", project.to_lowercase().replace(['-', '.'], "_"))
}

/// Takes the deploy lock of the venv (an atomic `mkdir`) and returns the venv's absolute path.
fn take_lock(ctx: &mut HostCtx<'_>, plan: &Plan) -> Result<String> {
    ctx.step("lock");
    let dir = quote_path(&plan.venv.dir);
    let owner = quote(&plan.owner_line()).into_owned();
    let take =
        format!("mkdir .es/lock && printf '%s\\n' {owner} > .es/lock/owner && echo lock=taken");
    let script = format!(
        "set -e\nmkdir -p {dir}/.es\ncd {dir}\necho dir=\"$(pwd -P)\"\n\
         if {take}; then :; else echo lock=busy; echo owner=\"$(cat .es/lock/owner 2>/dev/null)\"; \
         echo age=$(( $(date +%s) - $(stat -c %Y .es/lock 2>/dev/null || date +%s) )); fi 2>/dev/null\n"
    );
    let out = ctx.check(&script)?;
    let facts = key_values(&out.stdout);
    let dir = first(&facts, "dir").context("the host did not report the venv's path")?;
    if first(&facts, "lock").as_deref() == Some("taken") {
        return Ok(dir);
    }
    let owner = first(&facts, "owner").unwrap_or_default();
    let age = first(&facts, "age").unwrap_or_default();
    if !plan.force {
        bail!(
            "venv {} is locked by another deploy ({owner}, {age}s ago); if none is running, break the lock with --force",
            plan.venv.name
        );
    }
    ctx.ui().note(&format!(
        "{}: breaking the deploy lock held by {owner} ({age}s old)",
        ctx.host()
    ));
    let script = format!("set -e\ncd {}\nrm -rf .es/lock\n{take}\n", quote(&dir));
    ctx.check(&script)?;
    Ok(dir)
}

/// Deploys to one host: lock, venv, pre hooks, install, config, restart, post hooks, ledger.
fn deploy_host(ctx: &mut HostCtx<'_>, plan: &Plan) -> Result<()> {
    let dir = take_lock(ctx, plan)?;
    let venv = Venv {
        name: plan.venv.name.clone(),
        dir: dir.clone(),
    };
    let result = deploy_locked(ctx, plan, &venv);
    // Always record the outcome and release the lock, even after a failure.
    let (outcome, failed_step) = match &result {
        Ok(_) => ("ok".to_string(), None),
        Err(err) => ("failed".to_string(), Some(crate::fleet::describe(err))),
    };
    let mut entry = plan.deployer.clone();
    entry["version"] = json!(plan.version);
    entry["profile"] = json!(plan.profile);
    entry["result"] = json!(outcome);
    if let Some(error) = failed_step {
        entry["error"] = json!(error);
    }
    let fields = entry.to_string();
    let fields = fields.trim_start_matches('{');
    let release = format!(
        "cd {} && printf '{{\"time\":\"%s\",%s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {} >> .es/releases.jsonl; rm -rf .es/lock",
        quote(&dir),
        quote(fields)
    );
    let released = ctx.exec(&release);
    result?;
    released.context("releasing the deploy lock")?;
    Ok(())
}

fn deploy_locked(ctx: &mut HostCtx<'_>, plan: &Plan, venv: &Venv) -> Result<()> {
    let host = ctx.host().to_string();
    ctx.step("venv");
    let state = ensure_venv(ctx, plan, venv)?;

    run_hooks(ctx, plan, venv, &plan.pre_hooks, "pre hook")?;

    let previous = state.installed_version.clone();
    let install_project = plan.force || previous.as_deref() != Some(plan.version.as_str());
    if install_project || !state.has_supervisord {
        ctx.step("install");
        let mut packages = Vec::new();
        if install_project {
            packages.push(format!("{}=={}", plan.project, plan.version));
        }
        if !state.has_supervisord {
            packages.push("supervisor".to_string());
        }
        let use_uv = choose_installer(ctx, plan, venv, &state)?;
        install(
            ctx,
            plan,
            venv,
            use_uv,
            &packages,
            plan.force && install_project,
        )?;
    } else {
        ctx.step("install (already in place)");
    }

    ctx.step("config");
    let (name, source) = (&plan.supervisor_template.0, &plan.supervisor_template.1);
    let conf = plan.render(name, source, &host, &venv.dir, &state.secret)?;
    ctx.conn.upload(
        conf.as_bytes(),
        &format!("{}/etc/supervisord.conf.new", venv.dir),
        0o600,
    )?;
    for (name, source, remote) in &plan.extra_templates {
        let text = plan.render(name, source, &host, &venv.dir, &state.secret)?;
        let target = format!("{}/{remote}", venv.dir);
        if let Some((parent, _)) = target.rsplit_once('/') {
            ctx.check(&format!("mkdir -p {}", quote(parent)))?;
        }
        ctx.conn.upload(text.as_bytes(), &target, 0o644)?;
    }

    ctx.step("restart");
    if let Err(failure) = ctx.check(&supervisor::restart_script(venv)) {
        // The new version did not start: put the previous one back in service.
        return Err(
            match previous.filter(|p| install_project && *p != plan.version) {
                Some(previous) => roll_back(ctx, plan, venv, &previous, failure),
                None => failure,
            },
        );
    }

    run_hooks(ctx, plan, venv, &plan.post_hooks, "post hook")
}

/// After a failed start: reinstall the previous version, restore the previous
/// supervisord.conf (kept as `.prev` by the restart) and start again. Returns
/// the start's failure, saying whether the previous version runs again.
fn roll_back(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    venv: &Venv,
    previous: &str,
    failure: anyhow::Error,
) -> anyhow::Error {
    ctx.step(&format!("restart failed: rolling back to {previous}"));
    let result = (|| -> Result<()> {
        let has_uv = ctx
            .exec(&format!("test -x {}", venv.path("bin/uv")))?
            .success();
        let use_uv = has_uv && plan.installer != Installer::Pip;
        install(
            ctx,
            plan,
            venv,
            use_uv,
            &[format!("{}=={previous}", plan.project)],
            false,
        )?;
        ctx.check(&format!(
            "mv -f {} {}",
            venv.path("etc/supervisord.conf.prev"),
            venv.path("etc/supervisord.conf.new")
        ))?;
        ctx.check(&supervisor::restart_script(venv))?;
        Ok(())
    })();
    ctx.step("restart");
    match result {
        Ok(()) => failure.context(format!(
            "{} {} did not start; rolled back to {previous}, which is running again",
            plan.project, plan.version
        )),
        Err(err) => failure.context(format!(
            "{} {} did not start, and rolling back to {previous} failed too ({})",
            plan.project,
            plan.version,
            crate::fleet::describe(&err)
        )),
    }
}

/// Makes sure the venv exists with its sub directories; reads what is in it.
fn ensure_venv(ctx: &mut HostCtx<'_>, plan: &Plan, venv: &Venv) -> Result<VenvState> {
    let v = venv.path("");
    let mut dirs = vec!["logs".to_string(), "etc".to_string(), "tmp".to_string()];
    dirs.extend(plan.sub_dirs.iter().cloned());
    let dirs: Vec<String> = dirs.iter().map(|d| venv.path(d)).collect();
    let script = format!(
        r#"set -e
if [ ! -x {v}/bin/python ]; then {create} {v} >&2; fi
mkdir -p {dirs}
if [ ! -s {secret} ]; then (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > {secret}); fi
echo secret=$(cat {secret})
if [ -x {v}/bin/supervisord ]; then echo supervisord=yes; fi
if [ -x {v}/bin/uv ]; then echo uv=yes; fi
for d in {v}/lib/python*/site-packages/*.dist-info; do [ -d "$d" ] && echo "dist=${{d##*/}}"; done
true
"#,
        create = plan.virtualenv_command,
        dirs = dirs.join(" "),
        secret = venv.path(".es/supervisor-secret"),
    );
    let out = ctx.check(&script)?;
    let facts = key_values(&out.stdout);
    let prefix = dist_info_prefix(&plan.project);
    let installed_version = facts.get("dist").and_then(|dists| {
        dists.iter().find_map(|d| {
            let lower = d.to_lowercase();
            let rest = lower.strip_prefix(&prefix)?;
            let version = rest.strip_suffix(".dist-info")?;
            // Another project whose name only starts the same (`hello_es_extra-1.0`).
            if version.contains('-') || !version.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            Some(d[prefix.len()..d.len() - ".dist-info".len()].to_string())
        })
    });
    let installed_version = installed_version.map(|v| {
        crate::version::parse_version(&v)
            .map(|p| p.to_string())
            .unwrap_or(v)
    });
    Ok(VenvState {
        secret: first(&facts, "secret").context("the host did not report the supervisor secret")?,
        has_supervisord: facts.contains_key("supervisord"),
        has_uv: facts.contains_key("uv"),
        installed_version,
    })
}

fn run_hooks(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    venv: &Venv,
    hooks: &[String],
    kind: &str,
) -> Result<()> {
    let env = plan.hook_env(ctx.host());
    for (i, hook) in hooks.iter().enumerate() {
        ctx.step(&format!("{kind} {}", i + 1));
        let script = format!(
            "cd {v} && . {v}/bin/activate && {env}\n{hook}",
            v = venv.path("")
        );
        let out = ctx.check(&script)?;
        if ctx.ui().verbose {
            ctx.ui().host_text(ctx.host(), &out.stdout);
        }
    }
    Ok(())
}

/// Whether to install with uv: `deploy.installer`, and for `auto` whether uv is
/// in the venv or installable into it from the index (once; far faster after).
fn choose_installer(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    venv: &Venv,
    state: &VenvState,
) -> Result<bool> {
    let pip = pip_install(plan, venv);
    Ok(match plan.installer {
        Installer::Pip => false,
        Installer::Uv | Installer::Auto if state.has_uv => true,
        Installer::Uv => {
            ctx.step("install uv");
            ctx.check(&format!("{pip} uv"))?;
            true
        }
        Installer::Auto => {
            ctx.step("install uv");
            match ctx.check(&format!("{pip} uv")) {
                Ok(_) => true,
                Err(err) => {
                    ctx.ui().note(&format!(
                        "{}: uv is not installable ({}), installing with pip",
                        ctx.host(),
                        crate::fleet::describe(&err)
                    ));
                    false
                }
            }
        }
    })
}

/// `VENV/bin/pip install` from the project's index (with `--trusted-host` for plain http).
fn pip_install(plan: &Plan, venv: &Venv) -> String {
    let index: Vec<String> = crate::pip::index_options(&plan.index_url)
        .iter()
        .map(|option| quote(option).into_owned())
        .collect();
    format!(
        "{} install --disable-pip-version-check -q {}",
        venv.path("bin/pip"),
        index.join(" ")
    )
}

/// Installs requirements into the venv from the index, with uv or pip;
/// `reinstall` reinstalls the project even when that version is in place.
fn install(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    venv: &Venv,
    use_uv: bool,
    requirements: &[String],
    reinstall: bool,
) -> Result<()> {
    ctx.step("install");
    let requirements: Vec<String> = requirements.iter().map(|p| quote(p).into_owned()).collect();
    let command = if use_uv {
        let reinstall = if reinstall {
            format!(" --reinstall-package {}", quote(&plan.project))
        } else {
            String::new()
        };
        // uv talks plain http to any index it is given; --trusted-host is pip's.
        format!(
            "{} pip install -q --python {} --index-url {}{reinstall} {}",
            venv.path("bin/uv"),
            venv.path("bin/python"),
            quote(&plan.index_url),
            requirements.join(" ")
        )
    } else {
        let force = if reinstall {
            " --force-reinstall --no-deps"
        } else {
            ""
        };
        format!(
            "{}{force} {}",
            pip_install(plan, venv),
            requirements.join(" ")
        )
    };
    ctx.check(&command)?;
    Ok(())
}

/// `--dry-run`: show the steps and the rendered configuration diffed against
/// the host's, changing nothing.
fn dry_run_host(ctx: &mut HostCtx<'_>, plan: &Plan) -> Result<()> {
    ctx.step("inspect");
    let v = quote_path(&plan.venv.dir);
    let script = format!(
        "if cd {v} 2>/dev/null; then echo dir=\"$(pwd -P)\"; else echo missing=yes; echo dir=\"$(eval echo {v})\"; fi\n\
         cat {v}/etc/supervisord.conf 2>/dev/null | sed 's/^/conf=/'; echo\n\
         if [ -s {v}/.es/supervisor-secret ]; then echo \"secret=$(cat {v}/.es/supervisor-secret)\"; fi\n\
         for d in {v}/lib/python*/site-packages/*.dist-info; do [ -d \"$d\" ] && echo \"dist=${{d##*/}}\"; done; true"
    );
    let out = ctx.check(&script)?;
    let facts = key_values(&out.stdout);
    let dir = first(&facts, "dir").unwrap_or_else(|| plan.venv.dir.clone());
    let secret = first(&facts, "secret").unwrap_or_else(|| "(new secret)".into());
    let current: String = facts
        .get("conf")
        .map(|lines| lines.iter().map(|l| format!("{l}\n")).collect())
        .unwrap_or_default();
    let host = ctx.host().to_string();
    let new = plan.render(
        &plan.supervisor_template.0,
        &plan.supervisor_template.1,
        &host,
        &dir,
        &secret,
    )?;
    let mask = |text: &str| text.replace(&secret, "********");
    let mut report = String::new();
    report.push_str(&format!(
        "would deploy {} {} into {dir} (profile {})\n",
        plan.project, plan.version, plan.profile
    ));
    if facts.contains_key("missing") {
        report.push_str(&format!(
            "would create the venv with `{}`\n",
            plan.virtualenv_command
        ));
    }
    for hook in &plan.pre_hooks {
        report.push_str(&format!("would run pre hook: {hook}\n"));
    }
    report.push_str(&format!(
        "would install {}=={} from {}\n",
        plan.project, plan.version, plan.index_url
    ));
    report.push_str("would restart supervisord with this configuration:\n");
    let diff = similar::TextDiff::from_lines(&current, &new);
    if current.is_empty() {
        for line in mask(&new).lines() {
            report.push_str(&format!("+{line}\n"));
        }
    } else if current == new {
        report.push_str("(configuration unchanged)\n");
    } else {
        report.push_str(&mask(
            &diff
                .unified_diff()
                .header("current supervisord.conf", "new supervisord.conf")
                .to_string(),
        ));
    }
    for hook in &plan.post_hooks {
        report.push_str(&format!("would run post hook: {hook}\n"));
    }
    ctx.ui().host_text(&host, &report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_that_would_change_supervisord_config_are_refused() {
        assert!(check_profile("prod").is_ok());
        assert!(check_profile("$(touch x); `y` 'z' & | ;").is_ok());
        for bad in ["", "a\nb", "a\"b", "100%", "a\\b"] {
            assert!(check_profile(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn essay_templates_render_unchanged_syntax() {
        let essay = "[program:{{ project }}]\ncommand={{ venv_dir}}/bin/{{ project }} --profile={{ profile }}\nprocess_name=%(program_name)s_%(process_num)d\nstdout_logfile={{ run_root }}/logs/process_%(process_num)02d.log\nnumprocs={{ process_count }}\n";
        let env = template_env();
        let out = env
            .render_str(
                essay,
                json!({"project": "p", "venv_dir": "/v", "run_root": "/v", "profile": "test", "process_count": 2}),
            )
            .unwrap();
        assert_eq!(
            out,
            "[program:p]\ncommand=/v/bin/p --profile=test\nprocess_name=%(program_name)s_%(process_num)d\nstdout_logfile=/v/logs/process_%(process_num)02d.log\nnumprocs=2\n"
        );
    }

    #[test]
    fn dist_info_prefix_is_normalised() {
        assert_eq!(dist_info_prefix("Hello-ES.web"), "hello_es_web-");
    }
}
