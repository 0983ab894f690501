//! `es deploy`, `es quickdeploy` and `es rollback`: staged, health-checked,
//! reversible releases, rolled out across the fleet.
//!
//! A deploy goes in phases over the fleet:
//! 1. **prepare**, every host in parallel: read the venv's facts and take its
//!    lock, run the pre hooks, stage the new release beside the running one
//!    (a fresh venv under `releases/`). Nothing the running processes use is
//!    touched. A lock held by another deploy anywhere refuses the whole deploy.
//! 2. **release hooks** (migrations and the like) in the new release, on one
//!    host or on all. A failing one switches nothing anywhere.
//! 3. **switch**, batch by batch: `current` points to the new release and its
//!    processes are restarted one by one, each checked for health. A host that
//!    fails goes back to its previous release. When more hosts fail than
//!    `max_fail` allows, the rollout stops and the hosts already switched go
//!    back too, so the fleet ends on one version.
//! 4. **finish**, every locked host: prune old releases, write the ledger,
//!    release the lock.
//!
//! The order of the phases and every decision between them (batches,
//! max-fail, going back, Ctrl-C, refreshing the locks of hosts that wait) is
//! `rollout.rs`, over the `rollout::Hosts` boundary; here is its SSH side
//! ([`SshHosts`]): each phase's work on one host.

mod adopt;
mod finish;
mod guard;
mod host;
mod lock;
mod plan;
mod resolve;
mod rollback;
mod rollout;
mod runs;
mod status;
mod switch;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::app::App;
use crate::bad_input;
use crate::cli::{BuildArgs, DeployArgs, QuickdeployArgs};
use crate::config::HooksOn;
use crate::fleet::{Fleet, HostCtx};
use crate::remote::{Arg, DRY_RUN};
use finish::{finish_host, print_rollout_summary};
pub use host::manager_script;
use host::{Facts, LockMode};
pub use lock::command as lock_command;
pub use plan::{
    configured_process_spec, unit_name, DEFAULT_SUPERVISOR_TEMPLATE, DEFAULT_SYSTEMD_TEMPLATE,
};
use plan::{Plan, Request};
pub use rollback::rollback;
use runs::{HostRun, Outcome, Runs};
pub use status::{releases, status};
use switch::{revert_host, switch_host};

/// A fleet over some of the chosen hosts; `despite_interrupt` for the steps
/// that must run after Ctrl-C too (going back, finishing).
fn sub_fleet<'a>(fleet: &Fleet<'a>, labels: &[String], despite_interrupt: bool) -> Fleet<'a> {
    Fleet {
        targets: fleet
            .targets
            .iter()
            .filter(|t| labels.contains(&t.label))
            .cloned()
            .collect(),
        parallel: fleet.parallel,
        connect: fleet.connect.clone(),
        ui: fleet.ui,
        announce_steps: fleet.announce_steps,
        despite_interrupt,
        pool: fleet.pool,
    }
}

/// `es deploy`.
pub fn command(app: &App, args: &DeployArgs) -> Result<bool> {
    let venvs = app.venv_names();
    let (version, venv, profile) = match args.args.as_slice() {
        [version, venv, profile] => {
            check_venv(&venvs, venv)?;
            (version.as_str(), Some(venv.as_str()), profile.as_str())
        }
        [version, profile] if venvs.contains(profile) => bad_input!(
            "`{profile}` is a venv (a key of deploy.venv_ports), and no profile was given: \
             es deploy {version} {profile} PROFILE (to run profile `{profile}` in the default venv, name the venv too)"
        ),
        [version, profile] => (version.as_str(), None, profile.as_str()),
        _ => bad_input!("usage: es deploy VERSION [VENV] PROFILE"),
    };
    let plan = plan::plan(
        app,
        &Request {
            version,
            venv,
            profile,
            force: args.force,
            batch: args.batch.as_deref(),
            max_fail: args.max_fail.as_deref(),
            pause: args.pause,
        },
    )?;
    let fleet = app.fleet(true)?;
    if args.dry_run {
        let report = fleet.run(|ctx| dry_run_host(ctx, &plan));
        report.print_summary(
            &app.ui,
            &format!("dry run: deploy {} {}", plan.project, plan.version),
        );
        return Ok(report.all_ok());
    }
    Ok(rollout(
        app,
        &fleet,
        &plan,
        args.lock_wait,
        args.during_maintenance,
    ))
}

/// A venv named on the command line must be one the configuration knows,
/// when it names any (deploy.venv_ports).
fn check_venv(venvs: &[String], venv: &str) -> Result<()> {
    if !venvs.is_empty() && !venvs.iter().any(|v| v == venv) {
        bad_input!(
            "unknown venv `{venv}`: deploy.venv_ports defines {}",
            venvs.join(", ")
        );
    }
    Ok(())
}

/// `[VENV] PROFILE [BRANCH]` of quickdeploy, VENV told by being a venv's name.
fn quickdeploy_positionals<'a>(
    venvs: &[String],
    args: &'a [String],
) -> Result<(Option<&'a str>, &'a str, Option<&'a str>)> {
    Ok(match args {
        [profile] => (None, profile.as_str(), None),
        [first, second] if venvs.contains(first) => (Some(first.as_str()), second.as_str(), None),
        [profile, branch] => (None, profile.as_str(), Some(branch.as_str())),
        [venv, profile, branch] => {
            check_venv(venvs, venv)?;
            (Some(venv.as_str()), profile.as_str(), Some(branch.as_str()))
        }
        _ => bad_input!("usage: es quickdeploy [VENV] PROFILE [BRANCH]"),
    })
}

/// `es quickdeploy`: build and upload, then deploy the version built.
pub fn quickdeploy(app: &App, args: &QuickdeployArgs) -> Result<bool> {
    let venvs = app.venv_names();
    let (venv, profile, branch) = quickdeploy_positionals(&venvs, &args.args)?;
    let venv = match venv
        .map(str::to_string)
        .or_else(|| app.config().deploy.default_venv.clone())
    {
        Some(v) => v,
        None => bad_input!("which venv? give VENV PROFILE, or set deploy.default_venv"),
    };
    let deploy_args = |version: String| DeployArgs {
        args: vec![version, venv.clone(), profile.to_string()],
        dry_run: false,
        force: false,
        batch: None,
        max_fail: None,
        pause: None,
        lock_wait: None,
        during_maintenance: false,
    };
    // Everything but the version is checked before the (slow) build.
    plan::check(
        app,
        &Request {
            version: "0",
            venv: Some(&venv),
            profile,
            force: false,
            batch: None,
            max_fail: None,
            pause: None,
        },
    )?;
    app.targets()?;
    let build_args = BuildArgs {
        branch: branch.map(str::to_string),
        ..BuildArgs::default()
    };
    let version = crate::build::build(app, &build_args)?;
    command(app, &deploy_args(version.to_string()))
}

/// The rollout ([`rollout::run`]) over the SSH fleet, and its summary.
/// True when every host ends on the new release.
fn rollout(
    app: &App,
    fleet: &Fleet<'_>,
    plan: &Plan,
    lock_wait: Option<u64>,
    during_maintenance: bool,
) -> bool {
    let started = Instant::now();
    // One connection per host for every phase.
    let pool = crate::fleet::ConnectionPool::default();
    let labels: Vec<String> = fleet.targets.iter().map(|t| t.label.clone()).collect();
    let fleet = Fleet {
        pool: Some(&pool),
        ..sub_fleet(fleet, &labels, false)
    };
    let runs = Runs::new(&labels);
    let hosts = SshHosts {
        fleet: &fleet,
        plan,
        spec: plan.process_spec(),
        lock_wait,
    };
    let settings = rollout::Settings {
        venv: &plan.venv.name,
        batch: plan.batch,
        max_fail: plan.max_fail,
        pause: plan.pause,
        release_hooks: (!plan.release_hooks.is_empty()).then_some(plan.release_hooks_on),
        lock_wait,
        during_maintenance,
        lock_refresh: (fleet.connect.command_timeout / 3)
            .clamp(Duration::from_secs(1), Duration::from_secs(30)),
    };
    let stopped = rollout::run(&hosts, &runs, &settings);
    let title = format!(
        "deploy {} {} to venv {}",
        plan.project, plan.version, plan.venv.name
    );
    print_rollout_summary(app, &title, &runs, stopped.as_deref(), started.elapsed());
    runs.all()
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Switched | Outcome::Unchanged))
}

/// The rollout's phases on hosts over SSH, each host's part in parallel.
struct SshHosts<'a> {
    fleet: &'a Fleet<'a>,
    plan: &'a Plan,
    /// The process manager's spec (`root` filled in per host).
    spec: Value,
    lock_wait: Option<u64>,
}

impl rollout::Hosts for SshHosts<'_> {
    fn lock(&self, runs: &Runs) {
        let plan = self.plan;
        let locks = lock::acquire(
            self.fleet,
            &lock::Request {
                dir: &plan.venv.dir,
                owner: plan.owner_line(),
                force: plan.force,
                wait: self.lock_wait.map(Duration::from_secs),
            },
        );
        runs.record(&locks);
        for outcome in &locks.outcomes {
            let Ok(facts) = &outcome.result else { continue };
            let held = lock::describe(facts, &outcome.host, &plan.venv.name);
            runs.update(&outcome.host, |r| {
                if lock::taken(facts) {
                    r.locked = true;
                    r.root = facts.root.clone();
                    r.previous = facts.current.clone();
                    r.facts = facts.clone();
                } else {
                    r.outcome = Outcome::Locked(held);
                }
            });
        }
    }

    fn prepare(&self, runs: &Runs, hosts: &[String]) {
        let report =
            sub_fleet(self.fleet, hosts, false).run(|ctx| prepare_host(ctx, self.plan, runs));
        runs.record(&report);
    }

    fn release_hooks(&self, runs: &Runs, hosts: &[String]) {
        let report = sub_fleet(self.fleet, hosts, false).run(|ctx| {
            let run = runs.get(ctx.host());
            let (Some(root), Some(id)) = (&run.root, &run.release) else {
                return Ok(());
            };
            host::run_hooks(
                ctx,
                host::HookPhase::Release,
                &format!("{root}/releases/{id}"),
                &self.plan.release_hooks,
            )
        });
        runs.record(&report);
    }

    fn switch(&self, runs: &Runs, hosts: &[String]) {
        let report = sub_fleet(self.fleet, hosts, true)
            .run(|ctx| switch_host(ctx, self.plan, &self.spec, runs));
        runs.record(&report);
    }

    fn revert(&self, runs: &Runs, hosts: &[String]) {
        let report =
            sub_fleet(self.fleet, hosts, true).run(|ctx| revert_host(ctx, &self.spec, runs));
        runs.record(&report);
    }

    fn refresh_locks(&self, runs: &Runs, hosts: &[String]) {
        // A lock that cannot be refreshed is said, not a failure: the deploy
        // still holds it, and finishing releases it.
        sub_fleet(self.fleet, hosts, true).run(|ctx| {
            let Some(root) = runs.get(ctx.host()).root else {
                return Ok(());
            };
            host::refresh_lock(ctx, &root, self.plan.deploy_id())
        });
    }

    fn finish(&self, runs: &Runs, hosts: &[String]) -> Vec<String> {
        let report =
            sub_fleet(self.fleet, hosts, true).run(|ctx| finish_host(ctx, self.plan, runs));
        // A finish that failed (the ledger, the lock) fails its host; its error
        // says whether the lock remains.
        runs.record(&report);
        report
            .outcomes
            .iter()
            .filter(|o| o.result.is_err())
            .map(|o| o.host.clone())
            .collect()
    }

    fn interrupted(&self) -> bool {
        crate::interrupt::requested()
    }

    fn sleep(&self, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until && !crate::interrupt::requested() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Phase 1 on one host, its lock taken: pre hooks, staging.
fn prepare_host(ctx: &mut HostCtx<'_>, plan: &Plan, runs: &Runs) -> Result<()> {
    let label = ctx.host().to_string();
    let run = runs.get(&label);
    let Some(root) = run.root.clone() else {
        anyhow::bail!("the host did not report the venv's path");
    };
    let facts = adopt::adopt_if_legacy(ctx, &plan.project, &root, run.facts)?;
    runs.update(&label, |r| {
        r.previous = facts.current.clone();
        r.facts = facts.clone();
    });
    ctx.step("ports");
    let held = crate::ports::foreign_holders(ctx, &root, &plan.ports())?;
    if !held.is_empty() {
        anyhow::bail!(
            "{}: another process serves there, so no health check could tell this release's answer; nothing was staged or switched",
            held.join("; ")
        );
    }
    host::run_pre_hooks(ctx, plan, &root, &facts)?;
    if crate::interrupt::requested() {
        anyhow::bail!("interrupted before staging");
    }
    let (id, build) = host::stage(ctx, plan, &facts, &root)?;
    let unchanged = facts.current.as_deref() == Some(id.as_str()) && !plan.force;
    runs.update(&label, |r| {
        r.release = Some(id.clone());
        r.build = build;
        if unchanged {
            r.outcome = Outcome::Unchanged;
        }
    });
    Ok(())
}

/// `--dry-run`: the plan for each host, from the same facts and rendering the
/// deploy uses, changing nothing.
fn dry_run_host(ctx: &mut HostCtx<'_>, plan: &Plan) -> Result<()> {
    ctx.step("inspect");
    let facts = host::read_facts(ctx, &plan.venv.dir, LockMode::Read, "")?;
    let host = ctx.host().to_string();
    let root = facts
        .root
        .clone()
        .unwrap_or_else(|| format!("{} (to be created)", plan.venv.dir));
    let secret = facts
        .secret
        .clone()
        .unwrap_or_else(|| "(new secret)".into());
    let rendered = plan.render_for(&plan::Placement {
        host: host.clone(),
        root: root.clone(),
        secret: secret.clone(),
        user: facts
            .user
            .clone()
            .unwrap_or_else(|| "(the deploy user)".into()),
    })?;
    let current_conf = current_process_config(ctx, plan, &facts)?;
    let mut report = format!(
        "would deploy {} {} into {root} (profile {})\n",
        plan.project, plan.version, plan.profile
    );
    if facts.lock.is_some() || facts.lock_owner.is_some() {
        report.push_str(&format!(
            "the venv is locked by {}: the deploy would be refused\n",
            facts.lock_holder()
        ));
    }
    for hook in &plan.pre_hooks {
        report.push_str(&format!("would run pre hook: {hook}\n"));
    }
    if facts.release(&rendered.id).is_some() {
        report.push_str(&format!(
            "release {} is already staged: reused\n",
            rendered.id
        ));
    } else {
        report.push_str(&would_stage(plan, &facts, &rendered));
        report.push_str(&resolve_on_host(ctx, plan, &facts)?);
    }
    report.push_str(&would_prepare_release(plan, &root, &rendered));
    report.push_str(&would_switch(
        plan,
        &facts,
        &rendered,
        &current_conf,
        &secret,
    ));
    for hook in &plan.post_hooks {
        report.push_str(&format!("would run post hook: {hook}\n"));
    }
    report.push_str(&format!(
        "would keep the newest {} releases\n",
        plan.keep_releases
    ));
    ctx.ui().host_text(&host, &report);
    Ok(())
}

/// The process manager's configuration the host runs now (empty when there is none).
fn current_process_config(ctx: &mut HostCtx<'_>, plan: &Plan, facts: &Facts) -> Result<String> {
    let conf_file = plan.process_manager.config_file();
    Ok(match &facts.root {
        Some(r) => {
            let file = format!("{r}/etc/{conf_file}");
            ctx.exec(&DRY_RUN.shell(&[Arg::Value("config"), Arg::Value(&file)]))?
                .stdout
        }
        None => String::new(),
    })
}

/// `--dry-run`'s line about staging a release not on the host yet.
fn would_stage(plan: &Plan, facts: &Facts, rendered: &plan::Rendered) -> String {
    // A venv's first deploy makes its supervisor secret, which the id hashes.
    let id = match facts.secret {
        Some(_) => rendered.id.clone(),
        None => format!(
            "{}-… (its id is fixed once the new venv's secret is made)",
            plan.version
        ),
    };
    format!(
        "would stage release {id} (a new venv) and install {}=={} from {}\n",
        plan.project,
        plan.version,
        crate::index::redact_url(&plan.index_url)
    )
}

/// `--dry-run`'s lines about the release before its switch: the shared
/// directories linked, the extra templates written, the release hooks run.
fn would_prepare_release(plan: &Plan, root: &str, rendered: &plan::Rendered) -> String {
    let mut lines = String::new();
    for entry in &plan.shared_dirs {
        let (name, path) = entry.split_once('=').unwrap_or((entry, entry));
        lines.push_str(&format!("would link {path} to {root}/shared/{name}\n"));
    }
    for (path, _) in &rendered.extras {
        lines.push_str(&format!("would write {path} into the release (0600)\n"));
    }
    for hook in &plan.release_hooks {
        lines.push_str(&format!(
            "would run release hook ({}): {hook}\n",
            match plan.release_hooks_on {
                HooksOn::One => "on one host",
                HooksOn::All => "on every host",
            }
        ));
    }
    lines
}

/// `--dry-run`'s lines about the switch: its health check and how the
/// process manager's configuration changes (`secret` masked).
fn would_switch(
    plan: &Plan,
    facts: &Facts,
    rendered: &plan::Rendered,
    current_conf: &str,
    secret: &str,
) -> String {
    if facts.current.as_deref() == Some(rendered.id.as_str()) {
        return "the release is already current: only its health would be checked\n".into();
    }
    let mut lines = format!(
        "would switch from {} to {} and check every process answers {} with {}-{} within {}s\n",
        facts.current.as_deref().unwrap_or("nothing"),
        rendered.id,
        plan.health.path,
        plan.health.status[0],
        plan.health.status[1],
        plan.health.timeout
    );
    let conf_file = plan.process_manager.config_file();
    let mask = |text: &str| text.replace(secret, "********");
    if current_conf == rendered.process_config {
        lines.push_str(&format!(
            "{conf_file} unchanged: processes restart one by one\n"
        ));
    } else if current_conf.is_empty() {
        lines.push_str(&format!("new {conf_file}:\n"));
        for line in mask(&rendered.process_config).lines() {
            lines.push_str(&format!("+{line}\n"));
        }
    } else {
        lines.push_str(&mask(
            &similar::TextDiff::from_lines(current_conf, rendered.process_config.as_str())
                .unified_diff()
                .header(&format!("current {conf_file}"), &format!("new {conf_file}"))
                .to_string(),
        ));
    }
    lines
}

/// Proves, on the host, that the version and its whole dependency closure
/// resolve from the index (`uv pip compile` with the tools venv's uv), without
/// installing anything. The index URL goes in a 0600 file, removed after.
fn resolve_on_host(ctx: &mut HostCtx<'_>, plan: &Plan, facts: &Facts) -> Result<String> {
    let (Some(root), true) = (&facts.root, facts.tools) else {
        return resolve::in_a_temporary_venv(ctx, plan);
    };
    let env_path = format!("{root}/.es/dry-run-index.env");
    let index = crate::remote::env_file([("ES_INDEX_URL", plan.index_url.as_str())]);
    ctx.conn.upload(index.as_bytes(), &env_path, 0o600)?;
    // The project, and what deploy.requirements installs beside it.
    let mut requirement = format!("{}=={}", plan.project, plan.version);
    let uv = format!("{root}/.es/tools/bin/uv");
    let mut args = vec![
        Arg::Value("compile"),
        Arg::Value(&env_path),
        Arg::Value(&uv),
        Arg::Value(&requirement),
    ];
    args.extend(plan.requirements.iter().map(|r| Arg::Value(r)));
    let out = ctx.exec(&DRY_RUN.shell(&args))?;
    if !plan.requirements.is_empty() {
        requirement = format!("{requirement} with {}", plan.requirements.join(", "));
    }
    if out.stdout.contains("es-no-uv") {
        Ok("(the dependencies are resolved at staging: installer = \"pip\")\n".into())
    } else if out.success() {
        let pins: Vec<&str> = out.stdout.lines().filter(|l| l.contains("==")).collect();
        Ok(format!(
            "{requirement} and its dependencies resolve from the index: {}\n",
            pins.join(", ")
        ))
    } else {
        anyhow::bail!(
            "{requirement} does not resolve from the index on this host:\n{}",
            out.stdout.trim()
        )
    }
}
