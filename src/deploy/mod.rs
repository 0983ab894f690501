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

mod host;
mod plan;
mod status;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::App;
use crate::bad_input;
use crate::cli::{BuildArgs, DeployArgs, QuickdeployArgs, RollbackArgs};
use crate::config::HooksOn;
use crate::fleet::{Fleet, HostCtx};
use crate::hosts::Target;
use crate::ui::Mode;
use host::{Facts, LockMode};
pub use plan::{configured_process_spec, DEFAULT_SUPERVISOR_TEMPLATE};
use plan::{Plan, Request};
pub use status::{releases, status};

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
    Ok(rollout(app, &fleet, &plan))
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

/// The rollout: prepare, release hooks, switch by batches, finish. True when
/// every host ends on the new release.
fn rollout(app: &App, fleet: &Fleet<'_>, plan: &Plan) -> bool {
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

    // 1. Prepare: lock, pre hooks, stage.
    let report = fleet.run(|ctx| prepare_host(ctx, plan, &runs));
    runs.record(&report);

    let busy = runs.labels_where(|r| matches!(r.outcome, Outcome::Locked(_)));
    let mut stopped = None;
    if crate::interrupt::requested() {
        stopped = Some(INTERRUPTED.to_string());
    } else if !busy.is_empty() {
        stopped = Some(format!(
            "venv {} is being deployed by another deploy (on {}): nothing was switched",
            plan.venv.name,
            busy.join(", ")
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
                stopped = Some(format!(
                    "{} hosts failed (max-fail {max_fail}): the rollout stopped and the hosts already switched went back",
                    runs.failed()
                ));
                let switched = runs.labels_where(|r| r.outcome == Outcome::Switched);
                let report =
                    sub_fleet(fleet, &switched, true).run(|ctx| revert_host(ctx, &spec, &runs));
                runs.record(&report);
                break;
            }
        }
    }

    // 4. Finish wherever the lock is ours.
    let locked = runs.labels_where(|r| r.locked);
    let report = sub_fleet(fleet, &locked, true).run(|ctx| finish_host(ctx, plan, &runs));
    for outcome in &report.outcomes {
        if let Err(failure) = &outcome.result {
            app.ui.note(&format!(
                "{}: could not finish ({}); the lock may remain",
                outcome.host, failure.error
            ));
        }
    }
    print_rollout_summary(app, &title, &runs, stopped.as_deref(), started.elapsed());
    runs.all()
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Switched | Outcome::Unchanged))
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

/// Phase 1 on one host: facts and lock, pre hooks, staging.
fn prepare_host(ctx: &mut HostCtx<'_>, plan: &Plan, runs: &Runs) -> Result<()> {
    let label = ctx.host().to_string();
    ctx.step("lock");
    let owner = plan.owner_line();
    let mut facts = host::read_facts(ctx, &plan.venv.dir, LockMode::Lock, &owner)?;
    if facts.lock.as_deref() == Some("busy") && plan.force {
        check_holder_is_gone(&facts, ctx.command_timeout())?;
        ctx.ui().note(&format!(
            "{label}: breaking the deploy lock held by {}",
            facts.lock_holder()
        ));
        facts = host::read_facts(ctx, &plan.venv.dir, LockMode::Break, &owner)?;
    }
    match facts.lock.as_deref() {
        Some("taken") => {}
        Some("busy") => {
            let holder = facts.lock_holder();
            runs.update(&label, |r| r.outcome = Outcome::Locked(holder));
            return Ok(());
        }
        _ => anyhow::bail!(
            "{}",
            facts
                .lock_error
                .clone()
                .unwrap_or_else(|| "the host did not report the lock".into())
        ),
    }
    let root = facts
        .root
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the host did not report the venv's path"))?;
    runs.update(&label, |r| {
        r.locked = true;
        r.root = Some(root.clone());
        r.previous = facts.current.clone();
        r.facts = facts.clone();
    });
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

/// `--force` breaks a lock only when its holder is gone: a deploy from this
/// machine whose process still runs keeps its lock, and so does one from
/// elsewhere whose lock was refreshed (every step refreshes it) within the
/// longest a step may take (`ssh.command_timeout`).
fn check_holder_is_gone(facts: &Facts, command_timeout: Duration) -> Result<()> {
    let owner: Value = facts
        .lock_owner
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null);
    let same_machine = owner["machine"].as_str() == Some(crate::identity::machine().as_str());
    if let (true, Some(pid)) = (same_machine, owner["pid"].as_u64()) {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|comm| comm.trim() == "es")
            .unwrap_or(false);
        if alive && pid != u64::from(std::process::id()) {
            anyhow::bail!(
                "the deploy lock is held by {}, which is still running (pid {pid} on this machine): --force breaks only the lock of a deploy that is gone",
                facts.lock_holder()
            );
        }
        return Ok(());
    }
    let age = facts.lock_age.unwrap_or(0);
    if age < command_timeout.as_secs() {
        anyhow::bail!(
            "the deploy lock is held by {}, refreshed {age}s ago: that deploy may still be running on its machine; --force breaks a lock from another machine only once it is older than ssh.command_timeout ({}s)",
            facts.lock_holder(),
            command_timeout.as_secs()
        );
    }
    Ok(())
}

/// Phase 3 on one host: switch to the staged release; on failure, back to
/// the previous one.
fn switch_host(ctx: &mut HostCtx<'_>, plan: &Plan, spec: &Value, runs: &Runs) -> Result<()> {
    let run = runs.get(ctx.host());
    let (Some(root), Some(id)) = (run.root.clone(), run.release.clone()) else {
        anyhow::bail!("nothing staged");
    };
    let mut spec = spec.clone();
    spec["root"] = json!(root);
    if run.outcome == Outcome::Unchanged {
        ctx.step("health (release unchanged)");
        host::run_manager(ctx, "start", &spec)?;
        return Ok(());
    }
    ctx.step("switch");
    if let Err(failure) = host::switch(ctx, &spec, &id) {
        return Err(go_back(ctx, &spec, &run, failure));
    }
    runs.update(ctx.host(), |r| r.outcome = Outcome::Switched);
    host::run_hooks(
        ctx,
        "post hook",
        &format!("{root}/current"),
        &plan.post_hooks,
    )
    .map_err(|e| e.context("the new release is serving; a post hook failed"))
}

/// After a failed switch: the previous release again, healthy. Returns the
/// failure, saying what serves now.
fn go_back(
    ctx: &mut HostCtx<'_>,
    spec: &Value,
    run: &HostRun,
    failure: anyhow::Error,
) -> anyhow::Error {
    let Some(previous) = run.previous.clone() else {
        return failure.context(
            "the new release is not healthy, and there is no previous release to go back to",
        );
    };
    let step = ctx.current_step();
    ctx.step("switch back");
    let back = host::switch(ctx, spec, &previous);
    ctx.step(&step);
    let version = run.version_of(Some(&previous));
    match back {
        Ok(()) => failure.context(format!(
            "not healthy; back on {version}, which serves again"
        )),
        Err(err) => failure.context(format!(
            "not healthy, and going back to {version} failed too: {}",
            crate::fleet::describe(&err)
        )),
    }
}

/// The rollout stopped: a switched host goes back to its previous release.
fn revert_host(ctx: &mut HostCtx<'_>, spec: &Value, runs: &Runs) -> Result<()> {
    let run = runs.get(ctx.host());
    let (Some(root), Some(previous)) = (run.root.clone(), run.previous.clone()) else {
        anyhow::bail!("no previous release to go back to");
    };
    let mut spec = spec.clone();
    spec["root"] = json!(root);
    ctx.step("revert");
    host::switch(ctx, &spec, &previous)?;
    runs.update(ctx.host(), |r| r.outcome = Outcome::Reverted);
    Ok(())
}

/// Phase 4 on one host: prune, ledger, unlock.
fn finish_host(ctx: &mut HostCtx<'_>, plan: &Plan, runs: &Runs) -> Result<()> {
    let run = runs.get(ctx.host());
    let Some(root) = run.root.clone() else {
        return Ok(());
    };
    let (outcome, error) = outcome_words(&run.outcome);
    let serving = match run.outcome {
        Outcome::Switched | Outcome::Unchanged => run.release.clone(),
        _ => run.previous.clone(),
    };
    let mut entry = plan.deployer.clone();
    entry["action"] = json!("deploy");
    entry["version"] = json!(plan.version);
    entry["release"] = json!(run.release);
    entry["previous"] = json!(run.previous);
    entry["serving"] = json!(serving);
    entry["profile"] = json!(plan.profile);
    entry["commit"] = run.build["commit"].clone();
    entry["branch"] = run.build["branch"].clone();
    entry["outcome"] = json!(outcome);
    if let Some(error) = error {
        entry["error"] = json!(error);
    }
    let protect: Vec<&str> = [run.previous.as_deref(), run.release.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    host::finish(
        ctx,
        &root,
        plan.keep_releases,
        plan.deploy_id(),
        Some(&entry),
        &protect,
    )
}

/// The outcome as the summary and the ledger say it, and its error.
fn outcome_words(outcome: &Outcome) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Staged => ("not switched", None),
        Outcome::Switched => ("switched", None),
        Outcome::Unchanged => ("unchanged", None),
        Outcome::Reverted => ("reverted", None),
        Outcome::Locked(holder) => ("locked", Some(format!("locked by {holder}"))),
        Outcome::Failed { step, error } => ("failed", Some(format!("at {step}: {error}"))),
    }
}

fn print_rollout_summary(
    app: &App,
    title: &str,
    runs: &Runs,
    stopped: Option<&str>,
    elapsed: Duration,
) {
    let ui = &app.ui;
    ui.clear();
    let all = runs.all();
    let count = |word: &str| {
        all.iter()
            .filter(|r| outcome_words(&r.outcome).0 == word)
            .count()
    };
    let ok = count("switched") + count("unchanged");
    if ui.wants_summary() {
        let hosts: Vec<Value> = all
            .iter()
            .map(|r| {
                let (outcome, error) = outcome_words(&r.outcome);
                let mut v = json!({
                    "host": r.label,
                    "ok": matches!(r.outcome, Outcome::Switched | Outcome::Unchanged),
                    "outcome": outcome,
                    "release": r.release,
                    "previous": r.previous,
                    "seconds": r.elapsed.as_secs_f64(),
                });
                if let Outcome::Failed { step, error } = &r.outcome {
                    v["step"] = json!(step);
                    v["error"] = json!(error);
                } else if let Some(error) = error {
                    v["error"] = json!(error);
                }
                v
            })
            .collect();
        ui.summary(json!({
            "event": "summary",
            "command": title,
            "ok": ok,
            "failed": all.len() - ok,
            "stopped": stopped,
            "seconds": elapsed.as_secs_f64(),
            "hosts": hosts,
        }));
    }
    if ui.mode == Mode::Json {
        return;
    }
    let width = all.iter().map(|r| r.label.len()).max().unwrap_or(4).max(4);
    let mut text = format!("\n{title}: {} hosts\n", all.len());
    for r in &all {
        let (word, _) = outcome_words(&r.outcome);
        let from = r.version_of(r.previous.as_deref());
        let to = r.version_of(r.release.as_deref());
        let detail = match &r.outcome {
            Outcome::Switched => format!("{from} -> {to}"),
            Outcome::Unchanged => format!("{to} already current, healthy"),
            Outcome::Reverted => format!("back on {from}"),
            Outcome::Staged => format!("still on {from} ({to} staged)"),
            Outcome::Locked(holder) => format!("locked by {holder}"),
            Outcome::Failed { step, error } => {
                let mut lines = error.lines();
                let mut s = format!("at {step}: {}", lines.next().unwrap_or(""));
                for line in lines {
                    s.push_str(&format!("\n  {:width$}                  {line}", ""));
                }
                s
            }
        };
        let shown = if matches!(r.outcome, Outcome::Failed { .. }) {
            "FAILED"
        } else {
            word
        };
        if !ui.quiet || shown != "switched" {
            text.push_str(&format!(
                "  {:<width$}  {shown:<12}  {:>6.2}s  {detail}\n",
                r.label,
                r.elapsed.as_secs_f64()
            ));
        }
    }
    if let Some(why) = stopped {
        text.push_str(&format!("stopped: {why}\n"));
    }
    let mut counts = vec![format!("{ok} ok"), format!("{} failed", count("failed"))];
    for word in ["reverted", "not switched", "locked"] {
        let n = count(word);
        if n > 0 {
            counts.push(format!("{n} {word}"));
        }
    }
    text.push_str(&format!(
        "{}, in {:.2}s",
        counts.join(", "),
        elapsed.as_secs_f64()
    ));
    eprintln!("{}", ui.mask(&text));
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
        report.push_str(&format!(
            "would stage release {} (a new venv) and install {}=={} from {}\n",
            rendered.id,
            plan.project,
            plan.version,
            crate::index::redact_url(&plan.index_url)
        ));
        report.push_str(&resolve_on_host(ctx, plan, &facts)?);
    }
    for dir in &plan.shared_dirs {
        report.push_str(&format!("would link {dir} to {root}/shared/{dir}\n"));
    }
    for (path, _) in &rendered.extras {
        report.push_str(&format!("would write {path} into the release (0600)\n"));
    }
    for hook in &plan.release_hooks {
        report.push_str(&format!(
            "would run release hook ({:?}): {hook}\n",
            plan.release_hooks_on
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
        return Ok(
            "(the dependencies are resolved at the first staging: this venv has no tools yet)\n"
                .into(),
        );
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

/// `es rollback [VENV] [--to VERSION]`: every host back to its previous (or
/// the named) release still kept there, health-checked; no index needed.
pub fn rollback(app: &App, args: &RollbackArgs) -> Result<bool> {
    let loaded = app.require_config()?;
    let config = &loaded.config;
    let Some(project) = config.project.name.clone() else {
        bad_input!("{}: `project.name` is not set", loaded.path.display());
    };
    let venv = app.venv(args.venv.as_deref())?;
    let venv_name = venv.name.clone();
    if let Some(to) = &args.to {
        if crate::version::parse_version(to).is_err() {
            bad_input!("bad version {to:?} for --to");
        }
    }
    let spec = plan::configured_process_spec(config, &venv_name);
    let deployer = plan::deployer();
    let fleet = app.fleet(true)?;
    let title = format!("rollback {project} in venv {venv_name}");
    let report = fleet.run(|ctx| {
        ctx.step("lock");
        let mut owner = deployer.clone();
        owner["version"] = json!(args.to.clone().unwrap_or_else(|| "previous".into()));
        let facts = host::read_facts(ctx, &venv.dir, LockMode::Lock, &owner.to_string())?;
        match facts.lock.as_deref() {
            Some("taken") => {}
            Some("busy") => anyhow::bail!("locked by {}", facts.lock_holder()),
            _ => anyhow::bail!(
                "{}",
                facts.lock_error.clone().unwrap_or_else(|| "no lock".into())
            ),
        }
        let root = facts.root.clone().unwrap_or_default();
        let target = match &args.to {
            Some(to) => facts
                .releases
                .iter()
                .find(|r| {
                    crate::version::parse_version(r.version()).ok()
                        == crate::version::parse_version(to).ok()
                })
                .cloned(),
            None => facts.previous().cloned(),
        };
        let result = match target {
            None => Err(anyhow::anyhow!(
                "no {} release is kept here (releases: {})",
                args.to.as_deref().unwrap_or("previous"),
                facts
                    .releases
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(target) => {
                let mut spec = spec.clone();
                spec["root"] = json!(root);
                ctx.step(&format!("switch to {}", target.version()));
                match host::switch(ctx, &spec, &target.id) {
                    Ok(()) => Ok(target),
                    Err(failure) => {
                        let run = HostRun {
                            previous: facts.current.clone(),
                            facts: facts.clone(),
                            ..HostRun::new(ctx.host())
                        };
                        Err(go_back(ctx, &spec, &run, failure))
                    }
                }
            }
        };
        let mut entry = deployer.clone();
        entry["action"] = json!("rollback");
        entry["previous"] = json!(facts.current);
        match &result {
            Ok(target) => {
                entry["release"] = json!(target.id);
                entry["version"] = json!(target.version());
                entry["commit"] = target.build["commit"].clone();
                entry["outcome"] = json!("switched");
            }
            Err(err) => {
                entry["outcome"] = json!("failed");
                entry["error"] = json!(crate::fleet::describe(err));
            }
        }
        let finished = host::finish(
            ctx,
            &root,
            u32::MAX,
            entry["deploy_id"].as_str().unwrap_or(""),
            Some(&entry),
            &[],
        );
        let target = result?;
        finished?;
        Ok(target.version().to_string())
    });
    report.print_summary(&app.ui, &title);
    Ok(report.all_ok())
}
