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

mod adopt;
mod finish;
mod guard;
mod host;
mod lock;
mod plan;
mod resolve;
mod rollback;
mod status;
mod switch;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::app::App;
use crate::bad_input;
use crate::cli::{BuildArgs, DeployArgs, QuickdeployArgs};
use crate::config::HooksOn;
use crate::fleet::{Fleet, HostCtx};
use crate::hosts::Target;
use finish::{finish_host, print_rollout_summary};
pub use host::manager_script;
use host::{Facts, LockMode};
pub use lock::command as lock_command;
pub use plan::{configured_process_spec, unit_name, DEFAULT_SUPERVISOR_TEMPLATE};
use plan::{Plan, Request};
pub use rollback::rollback;
pub use status::{releases, status};
use switch::{revert_host, switch_host};

/// How one host's part of a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Prepared and waiting for its batch (at the end: never switched).
    Staged,
    /// The new release serves, healthy.
    Switched,
    /// It was already the current release; its processes are healthy.
    Unchanged,
    /// Switched, then switched back because the rollout stopped.
    Reverted,
    /// The deploy was refused: another deploy holds the lock.
    Locked(String),
    Failed {
        step: String,
        error: String,
    },
}

/// One host's state across the phases.
#[derive(Debug, Clone)]
struct HostRun {
    label: String,
    root: Option<String>,
    facts: Facts,
    release: Option<String>,
    /// The release that was current before (what a revert goes back to).
    previous: Option<String>,
    /// What `es build` recorded about the new release's version.
    build: Value,
    locked: bool,
    outcome: Outcome,
    elapsed: Duration,
    /// What the host runs at the end, read back by its finish (`Some(None)`: nothing).
    now: Option<Option<String>>,
}

impl HostRun {
    fn new(label: &str) -> HostRun {
        HostRun {
            label: label.to_string(),
            root: None,
            facts: Facts::default(),
            release: None,
            previous: None,
            build: Value::Null,
            locked: false,
            outcome: Outcome::Staged,
            elapsed: Duration::ZERO,
            now: None,
        }
    }

    fn version_of(&self, id: Option<&str>) -> String {
        id.and_then(|id| self.facts.release(id))
            .map(|r| r.version().to_string())
            .or_else(|| id.map(|id| id.rsplit_once('-').map_or(id, |(v, _)| v).to_string()))
            .unwrap_or_else(|| "nothing".to_string())
    }
}

/// Every host's state, shared by the phases' jobs.
struct Runs {
    hosts: Mutex<HashMap<String, HostRun>>,
    order: Vec<String>,
}

impl Runs {
    fn new(targets: &[Target]) -> Runs {
        Runs {
            hosts: Mutex::new(
                targets
                    .iter()
                    .map(|t| (t.label.clone(), HostRun::new(&t.label)))
                    .collect(),
            ),
            order: targets.iter().map(|t| t.label.clone()).collect(),
        }
    }

    fn update(&self, label: &str, change: impl FnOnce(&mut HostRun)) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(run) = hosts.get_mut(label) {
            change(run);
        }
    }

    fn get(&self, label: &str) -> HostRun {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .get(label)
            .cloned()
            .unwrap_or_else(|| HostRun::new(label))
    }

    fn all(&self) -> Vec<HostRun> {
        self.order.iter().map(|l| self.get(l)).collect()
    }

    fn labels_where(&self, keep: impl Fn(&HostRun) -> bool) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|r| keep(r))
            .map(|r| r.label)
            .collect()
    }

    /// Records each host's failure from a phase's report.
    fn record<T>(&self, report: &crate::fleet::Report<T>) {
        for outcome in &report.outcomes {
            let elapsed = outcome.elapsed;
            self.update(&outcome.host, |run| {
                run.elapsed += elapsed;
                if let Err(failure) = &outcome.result {
                    run.outcome = Outcome::Failed {
                        step: failure.step.clone(),
                        error: failure.error.clone(),
                    };
                }
            });
        }
    }

    fn failed(&self) -> usize {
        self.all()
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
            .count()
    }
}

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

/// The rollout: lock, prepare, release hooks, switch by batches, finish.
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
    let fleet = &Fleet {
        pool: Some(&pool),
        ..sub_fleet(
            fleet,
            &fleet
                .targets
                .iter()
                .map(|t| t.label.clone())
                .collect::<Vec<_>>(),
            false,
        )
    };
    let runs = Runs::new(&fleet.targets);
    let title = format!(
        "deploy {} {} to venv {}",
        plan.project, plan.version, plan.venv.name
    );
    let total = fleet.targets.len();
    let max_fail = plan.max_fail.of(total);

    // 1. Lock (the first host first), then prepare: pre hooks, stage.
    let locks = lock::acquire(
        fleet,
        &lock::Request {
            dir: &plan.venv.dir,
            owner: plan.owner_line(),
            force: plan.force,
            wait: lock_wait.map(Duration::from_secs),
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
    let busy = runs.labels_where(|r| matches!(r.outcome, Outcome::Locked(_)));
    let in_maintenance = match during_maintenance {
        true => Vec::new(),
        false => refuse_maintenance(&runs),
    };
    if busy.is_empty() && in_maintenance.is_empty() && !crate::interrupt::requested() {
        let ours = runs.labels_where(|r| r.locked);
        let report = sub_fleet(fleet, &ours, false).run(|ctx| prepare_host(ctx, plan, &runs));
        runs.record(&report);
    }

    let mut stopped = None;
    if crate::interrupt::requested() {
        stopped = Some(INTERRUPTED.to_string());
    } else if !busy.is_empty() {
        let holders: Vec<String> = busy
            .iter()
            .map(|label| match runs.get(label).outcome {
                Outcome::Locked(holder) => format!("on {label} by {holder}"),
                _ => label.clone(),
            })
            .collect();
        stopped = Some(format!(
            "venv {} is locked ({}): nothing was staged or switched{}",
            plan.venv.name,
            holders.join("; "),
            match lock_wait {
                Some(secs) => format!(", after waiting {secs}s (--lock-wait)"),
                None => "; --lock-wait SECS waits for it".into(),
            }
        ));
    } else if !in_maintenance.is_empty() {
        stopped = Some(format!(
            "venv {} is in maintenance on {}: nothing was staged or switched; `es maintenance off` ends it, --during-maintenance deploys anyway",
            plan.venv.name,
            in_maintenance.join(", ")
        ));
    } else if runs.failed() > max_fail {
        stopped = Some(format!(
            "{} of {total} hosts could not stage the release (max-fail {max_fail}): nothing was switched",
            runs.failed()
        ));
    }

    // 2. Release hooks, before anything switches.
    if stopped.is_none() && !plan.release_hooks.is_empty() {
        let staged = runs.labels_where(|r| r.outcome == Outcome::Staged);
        let on: Vec<String> = match plan.release_hooks_on {
            HooksOn::One => staged.into_iter().take(1).collect(),
            HooksOn::All => staged,
        };
        let report = sub_fleet(fleet, &on, false).run(|ctx| {
            let run = runs.get(ctx.host());
            let (Some(root), Some(id)) = (&run.root, &run.release) else {
                return Ok(());
            };
            host::run_hooks(
                ctx,
                "release hook",
                &format!("{root}/releases/{id}"),
                &plan.release_hooks,
            )
        });
        runs.record(&report);
        if crate::interrupt::requested() {
            stopped = Some(INTERRUPTED.to_string());
        } else if !report.all_ok() {
            stopped = Some("a release hook failed: nothing was switched anywhere".to_string());
        }
    }

    // 3. Switch, batch by batch.
    let spec = plan.process_spec();
    if stopped.is_none() {
        let ready =
            runs.labels_where(|r| matches!(r.outcome, Outcome::Staged | Outcome::Unchanged));
        let batch = plan.batch.of(ready.len()).max(1);
        for (i, labels) in ready.chunks(batch).enumerate() {
            if i > 0 && plan.pause > 0 {
                pause(plan.pause);
            }
            if crate::interrupt::requested() {
                stopped = Some(INTERRUPTED.to_string());
                break;
            }
            let report =
                sub_fleet(fleet, labels, true).run(|ctx| switch_host(ctx, plan, &spec, &runs));
            runs.record(&report);
            if runs.failed() > max_fail {
                let failed = runs.failed();
                let switched = runs.labels_where(|r| r.outcome == Outcome::Switched);
                let report =
                    sub_fleet(fleet, &switched, true).run(|ctx| revert_host(ctx, &spec, &runs));
                runs.record(&report);
                let back = runs.labels_where(|r| r.outcome == Outcome::Reverted).len();
                let others = match switched.len() {
                    0 => "no other host had switched".to_string(),
                    n => format!("{back} of the {n} hosts already switched went back"),
                };
                stopped = Some(format!(
                    "{failed} hosts failed (max-fail {max_fail}): the rollout stopped; {others}"
                ));
                break;
            }
        }
    }

    // 4. Finish wherever the lock is ours.
    let locked = runs.labels_where(|r| r.locked);
    let report = sub_fleet(fleet, &locked, true).run(|ctx| finish_host(ctx, plan, &runs));
    // A finish that failed (the ledger, the lock) fails its host; its error
    // says whether the lock remains.
    runs.record(&report);
    let unfinished: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.host.as_str())
        .collect();
    if stopped.as_deref() == Some(INTERRUPTED) && !unfinished.is_empty() {
        stopped = Some(format!(
            "interrupted: the steps under way were finished, nothing more was switched; finishing failed on {} (its line says whether its lock remains)",
            unfinished.join(", ")
        ));
    }
    print_rollout_summary(app, &title, &runs, stopped.as_deref(), started.elapsed());
    runs.all()
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Switched | Outcome::Unchanged))
}

/// Fails every locked host whose venv is in maintenance (`es maintenance on`);
/// their labels.
fn refuse_maintenance(runs: &Runs) -> Vec<String> {
    let hosts = runs.labels_where(|r| r.locked && r.facts.maintenance.is_some());
    for label in &hosts {
        runs.update(label, |r| {
            let record = r.facts.maintenance.as_deref().unwrap_or_default();
            r.outcome = Outcome::Failed {
                step: "maintenance".into(),
                error: format!(
                    "the venv is in maintenance ({})",
                    crate::nginx::maintenance::describe(record)
                ),
            };
        });
    }
    hosts
}

/// Why a rollout stopped after Ctrl-C.
const INTERRUPTED: &str =
    "interrupted: the steps under way were finished, nothing more was switched, the locks were released";

/// Sleeps between batches, cut short by Ctrl-C.
fn pause(secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until && !crate::interrupt::requested() {
        std::thread::sleep(Duration::from_millis(100));
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
    })?;
    let conf_file = plan.process_manager.config_file();
    let current_conf = match &facts.root {
        Some(r) => {
            ctx.exec(&format!(
                "cat {} 2>/dev/null",
                crate::quote::quote(&format!("{r}/etc/{conf_file}"))
            ))?
            .stdout
        }
        None => String::new(),
    };
    let mask = |text: &str| text.replace(&secret, "********");
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
        // A venv's first deploy makes its supervisor secret, which the id hashes.
        let id = match facts.secret {
            Some(_) => rendered.id.clone(),
            None => format!(
                "{}-… (its id is fixed once the new venv's secret is made)",
                plan.version
            ),
        };
        report.push_str(&format!(
            "would stage release {id} (a new venv) and install {}=={} from {}\n",
            plan.project,
            plan.version,
            crate::index::redact_url(&plan.index_url)
        ));
        report.push_str(&resolve_on_host(ctx, plan, &facts)?);
    }
    for entry in &plan.shared_dirs {
        let (name, path) = entry.split_once('=').unwrap_or((entry, entry));
        report.push_str(&format!("would link {path} to {root}/shared/{name}\n"));
    }
    for (path, _) in &rendered.extras {
        report.push_str(&format!("would write {path} into the release (0600)\n"));
    }
    for hook in &plan.release_hooks {
        report.push_str(&format!(
            "would run release hook ({}): {hook}\n",
            match plan.release_hooks_on {
                HooksOn::One => "on one host",
                HooksOn::All => "on every host",
            }
        ));
    }
    if facts.current.as_deref() == Some(rendered.id.as_str()) {
        report.push_str("the release is already current: only its health would be checked\n");
    } else {
        report.push_str(&format!(
            "would switch from {} to {} and check every process answers {} with {}-{} within {}s\n",
            facts.current.as_deref().unwrap_or("nothing"),
            rendered.id,
            plan.health.path,
            plan.health.status[0],
            plan.health.status[1],
            plan.health.timeout
        ));
        if current_conf == rendered.process_config {
            report.push_str(&format!(
                "{conf_file} unchanged: processes restart one by one\n"
            ));
        } else if current_conf.is_empty() {
            report.push_str(&format!("new {conf_file}:\n"));
            for line in mask(&rendered.process_config).lines() {
                report.push_str(&format!("+{line}\n"));
            }
        } else {
            report.push_str(&mask(
                &similar::TextDiff::from_lines(&current_conf, &rendered.process_config)
                    .unified_diff()
                    .header(&format!("current {conf_file}"), &format!("new {conf_file}"))
                    .to_string(),
            ));
        }
    }
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
    let reqs: Vec<String> = std::iter::once(requirement.as_str())
        .chain(plan.requirements.iter().map(String::as_str))
        .map(|r| crate::quote::quote(r).into_owned())
        .collect();
    if !plan.requirements.is_empty() {
        requirement = format!("{requirement} with {}", plan.requirements.join(", "));
    }
    let script = format!(
        "set -a; . {env}; set +a; rm -f {env}\n\
         [ -x {uv} ] || {{ echo es-no-uv; exit 0; }}\n\
         printf '%s\\n' {req} | UV_INDEX_URL=\"$ES_INDEX_URL\" {uv} pip compile -q --no-header --python python3 - 2>&1",
        env = crate::quote::quote(&env_path),
        req = reqs.join(" "),
        uv = crate::quote::quote(&format!("{root}/.es/tools/bin/uv")),
    );
    let out = ctx.exec(&script)?;
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
