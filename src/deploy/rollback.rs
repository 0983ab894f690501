//! `es rollback [VENV] [--to VERSION] [--force]`: every host back to its
//! previous (or the named) release still kept there, health-checked; no index
//! needed. The locks are taken first, in the deploy's order; nothing switches
//! unless every host is locked and keeps the release to go back to.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::host::{self, Facts, Release};
use super::switch::rollback_switch;
use super::{guard, lock, plan, sub_fleet};
use crate::app::App;
use crate::bad_input;
use crate::cli::RollbackArgs;
use crate::fleet::{Failure, Fleet, HostCtx, HostOutcome, Report};
use crate::venv::Venv;

/// `es rollback`.
pub fn rollback(app: &App, args: &RollbackArgs) -> Result<bool> {
    let loaded = app.require_config()?;
    let config = &loaded.config;
    let Some(project) = config.project.name.clone() else {
        bad_input!("{}: `project.name` is not set", loaded.path.display());
    };
    let venv = app.venv(args.venv.as_deref())?;
    if let Some(to) = &args.to {
        if crate::version::parse_version(to).is_err() {
            bad_input!("bad version {to:?} for --to");
        }
    }
    let spec = plan::configured_process_spec(config, &venv.name);
    let deployer = plan::deployer();
    let all = app.fleet(true)?;
    let pool = crate::fleet::ConnectionPool::default();
    let labels: Vec<String> = all.targets.iter().map(|t| t.label.clone()).collect();
    let fleet = Fleet {
        pool: Some(&pool),
        ..sub_fleet(&all, &labels, false)
    };
    let title = format!("rollback {project} in venv {}", venv.name);
    let locks = Locks::take(&fleet, &venv, args, &deployer);
    if let Some(why) = locks.refusal(&venv.name, args.to.as_deref(), &labels) {
        let released = locks.release(&fleet, &deployer);
        locks
            .refused_report(&labels, released.elapsed)
            .print_summary(&app.ui, &title);
        app.ui.note(&format!("es: {why}"));
        if !released.all_ok() {
            app.ui.note("es: a lock taken may remain (see above)");
        }
        return Ok(false);
    }
    let deadline = guard::Deadline::of(&config.deploy.health, config.deploy.process_count);
    let report = fleet.run(|ctx| {
        let (facts, target) = locks.ours.get(ctx.host()).cloned().unwrap_or_default();
        let to = args.to.as_deref();
        rollback_host(ctx, &spec, &deployer, &facts, (target, to), deadline)
    });
    report.print_summary(&app.ui, &title);
    Ok(report.all_ok())
}

/// The venv's locks as a rollback takes them, on every host first.
struct Locks {
    /// The hosts locked for this rollback: each one's facts and the release
    /// it goes back to (none when it keeps none).
    ours: HashMap<String, (Facts, Option<Release>)>,
    /// (host, why) of the hosts not locked: another holds the lock, or the
    /// host failed.
    refused: Vec<(String, String)>,
}

impl Locks {
    /// Takes the venv's lock on every host of `fleet`, as `deployer` going
    /// back to `--to` (or the previous release).
    fn take(fleet: &Fleet<'_>, venv: &Venv, args: &RollbackArgs, deployer: &Value) -> Locks {
        let mut owner = deployer.clone();
        owner["version"] = json!(args.to.clone().unwrap_or_else(|| "previous".into()));
        owner["since"] = json!(crate::clock::now_utc());
        let taken = lock::acquire(
            fleet,
            &lock::Request {
                dir: &venv.dir,
                owner: owner.to_string(),
                force: args.force,
                wait: args.lock_wait.map(Duration::from_secs),
            },
        );
        let mut locks = Locks {
            ours: HashMap::new(),
            refused: Vec::new(),
        };
        for outcome in taken.outcomes {
            match outcome.result {
                Ok(facts) if lock::taken(&facts) => {
                    let target = target_of(&facts, args.to.as_deref());
                    locks.ours.insert(outcome.host, (facts, target));
                }
                Ok(facts) => {
                    let holder = lock::describe(&facts, &outcome.host, &venv.name);
                    locks
                        .refused
                        .push((outcome.host, format!("locked by {holder}")));
                }
                Err(failure) => locks.refused.push((outcome.host, failure.error)),
            }
        }
        locks
    }

    /// Why nothing is rolled back, if so: a host was not locked, or the
    /// version `to` is kept on some hosts only.
    fn refusal(&self, venv: &str, to: Option<&str>, labels: &[String]) -> Option<String> {
        let ours = &self.ours;
        match (to, self.refused.is_empty()) {
            (_, false) => Some(format!("venv {venv} is locked: nothing was rolled back")),
            // Kept nowhere: each host says so (and its ledger records it) below.
            (Some(to), true)
                if ours.values().any(|(_, t)| t.is_none())
                    && ours.values().any(|(_, t)| t.is_some()) =>
            {
                Some(kept_where(to, labels, ours))
            }
            _ => None,
        }
    }

    /// Releases the locks taken, writing no ledger.
    fn release(&self, fleet: &Fleet<'_>, deployer: &Value) -> Report<host::Finished> {
        let ours_labels: Vec<String> = self.ours.keys().cloned().collect();
        let deploy_id = deployer["deploy_id"].as_str().unwrap_or_default();
        sub_fleet(fleet, &ours_labels, true).run(|ctx| {
            let root = self.ours[ctx.host()].0.root.clone().unwrap_or_default();
            host::finish(ctx, &root, u32::MAX, deploy_id, None, &[])
        })
    }

    /// Every host failed at `lock`, with why it was refused or "not rolled back".
    fn refused_report(&self, labels: &[String], elapsed: Duration) -> Report<()> {
        Report {
            outcomes: labels
                .iter()
                .map(|label| HostOutcome {
                    host: label.clone(),
                    elapsed: Duration::ZERO,
                    result: Err::<(), _>(Failure {
                        step: "lock".into(),
                        error: self
                            .refused
                            .iter()
                            .find(|(h, _)| h == label)
                            .map(|(_, e)| e.clone())
                            .unwrap_or_else(|| "not rolled back".into()),
                        kind: crate::failure::FailureKind::Locked,
                    }),
                })
                .collect(),
            elapsed,
        }
    }
}

/// The release a host goes back to: the named version's, else the previous.
fn target_of(facts: &Facts, to: Option<&str>) -> Option<Release> {
    match to {
        Some(to) => facts
            .releases
            .iter()
            .find(|r| {
                !r.failed
                    && crate::version::parse_version(r.version()).ok()
                        == crate::version::parse_version(to).ok()
            })
            .cloned(),
        None => facts.previous().cloned(),
    }
}

/// `--to VERSION` kept on some hosts only: which have it.
fn kept_where(
    to: &str,
    labels: &[String],
    ours: &HashMap<String, (Facts, Option<Release>)>,
) -> String {
    let (with, without): (Vec<&String>, Vec<&String>) = labels
        .iter()
        .partition(|l| ours.get(*l).is_some_and(|(_, t)| t.is_some()));
    let join = |hosts: Vec<&String>| {
        hosts
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{to} is kept only on {} (not on {}): nothing was rolled back; `es rollback -H {} --to {to}` goes back there alone",
        join(with.clone()),
        join(without),
        with.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(",")
    )
}

/// One host, its lock taken: switch to `target` (the release `to` names, or
/// the previous one), host-guarded with `deadline`, then the ledger and unlock.
fn rollback_host(
    ctx: &mut HostCtx<'_>,
    spec: &Value,
    deployer: &Value,
    facts: &Facts,
    (target, to): (Option<Release>, Option<&str>),
    deadline: guard::Deadline,
) -> Result<String> {
    let root = facts.root.clone().unwrap_or_default();
    let result = match target {
        None => Err(anyhow::anyhow!(
            "no {} release is kept here (releases: {})",
            to.unwrap_or("previous"),
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
            let id = deployer["deploy_id"].as_str().unwrap_or("");
            rollback_switch(ctx, &spec, &target.id, facts, deadline, id).map(|()| target)
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
    if let Some(error) = finished?.error {
        anyhow::bail!("{error}");
    }
    Ok(target.version().to_string())
}
