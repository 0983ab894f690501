//! Phase 3 on one host: the guarded switch to the staged release, the post
//! hooks, and the way back (after a failed switch or post hook, or when the
//! rollout stopped).

use anyhow::Result;
use serde_json::{json, Value};

use super::host::Facts;
use super::plan::Plan;
use super::{guard, host, HostRun, Outcome, Runs};
use crate::failure::{FailureKind, Kinded};
use crate::fleet::HostCtx;

/// Switches to the staged release under the host's guard and runs the post
/// hooks; on failure, back to the previous release.
pub(super) fn switch_host(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    spec: &Value,
    runs: &Runs,
) -> Result<()> {
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
    let deadline = guard::Deadline::of(&plan.health, plan.process_count);
    let back = run.previous.as_deref().map_or_else(
        || spec.clone(),
        |p| host::spec_for_release(&spec, &run.facts, p),
    );
    let armed = guard::arm(
        ctx,
        &back,
        &id,
        run.previous.as_deref(),
        deadline,
        plan.deploy_id(),
    )?;
    if let Err(failure) = host::switch(ctx, &spec, &id) {
        let refused = refused_by_host(&failure);
        let failure = go_back(ctx, &spec, &run, failure, "not healthy");
        let failure = match armed.disarm(ctx) {
            Ok(()) => failure,
            Err(fired) => failure.context(fired.to_string()),
        };
        guard::mark_failed(ctx, &root, &id, &format!("{failure:#}"))?;
        return Err(unhealthy_if(refused, failure));
    }
    armed.confirm(ctx)?;
    runs.update(ctx.host(), |r| r.outcome = Outcome::Switched);
    if let Err(failure) = host::run_hooks(
        ctx,
        host::HookPhase::Post,
        &format!("{root}/current"),
        &plan.post_hooks,
    ) {
        // The fleet ends on one version: a failed post hook fails the switch.
        runs.update(ctx.host(), |r| r.outcome = Outcome::Staged);
        let failure = go_back(ctx, &spec, &run, failure, "a post hook failed");
        guard::mark_failed(ctx, &root, &id, &format!("{failure:#}"))?;
        return Err(failure);
    }
    Ok(())
}

/// `es rollback`'s switch of one host to `target`, guarded like a deploy's;
/// on failure, back to what ran before.
pub(super) fn rollback_switch(
    ctx: &mut HostCtx<'_>,
    spec: &Value,
    target: &str,
    facts: &Facts,
    deadline: guard::Deadline,
    deploy_id: &str,
) -> Result<()> {
    let run = HostRun {
        previous: facts.current.clone(),
        facts: facts.clone(),
        ..HostRun::new(ctx.host())
    };
    let back = facts
        .current
        .as_deref()
        .map_or_else(|| spec.clone(), |c| host::spec_for_release(spec, facts, c));
    let armed = guard::arm(
        ctx,
        &back,
        target,
        facts.current.as_deref(),
        deadline,
        deploy_id,
    )?;
    let spec = &host::spec_for_release(spec, facts, target);
    match host::switch(ctx, spec, target) {
        Ok(()) => armed.confirm(ctx),
        Err(failure) => {
            let refused = refused_by_host(&failure);
            let failure = go_back(ctx, spec, &run, failure, "not healthy");
            let failure = match armed.disarm(ctx) {
                Ok(()) => failure,
                Err(fired) => failure.context(fired.to_string()),
            };
            Err(unhealthy_if(refused, failure))
        }
    }
}

/// Whether the host's process-manager script refused the switch (the
/// release is unhealthy), rather than the switch breaking off (a lost link
/// keeps its own kind).
fn refused_by_host(failure: &anyhow::Error) -> bool {
    failure
        .downcast_ref::<crate::failure::CommandFailed>()
        .is_some()
}

/// The failure of a switch the host refused, said as before, of kind `unhealthy`.
fn unhealthy_if(refused: bool, failure: anyhow::Error) -> anyhow::Error {
    match refused {
        true => Kinded::new(FailureKind::Unhealthy, crate::fleet::describe(&failure)).into(),
        false => failure,
    }
}

/// After a failed switch (`why`): the previous release again, healthy.
/// Returns the failure, saying what serves now.
pub(super) fn go_back(
    ctx: &mut HostCtx<'_>,
    spec: &Value,
    run: &HostRun,
    failure: anyhow::Error,
    why: &str,
) -> anyhow::Error {
    let Some(previous) = run.previous.clone() else {
        // A first deploy: nothing half-serves; the logs stay for inspection.
        let stopped = match host::run_manager(ctx, "stop", spec) {
            Ok(_) => "supervisord stopped".to_string(),
            Err(err) => format!(
                "stopping supervisord failed: {}",
                crate::fleet::describe(&err)
            ),
        };
        return failure.context(format!(
            "{why}, and there is no previous release to go back to: this host runs no healthy release ({stopped}; the logs are in {}/logs)",
            spec["root"].as_str().unwrap_or("")
        ));
    };
    let step = ctx.current_step();
    ctx.step("switch back");
    let back = host::switch(
        ctx,
        &host::spec_for_release(spec, &run.facts, &previous),
        &previous,
    );
    ctx.step(&step);
    let version = run.version_of(Some(&previous));
    match back {
        Ok(()) => failure.context(format!("{why}; back on {version}, which serves again")),
        Err(err) => failure.context(format!(
            "{why}, and going back to {version} failed too: {}",
            crate::fleet::describe(&err)
        )),
    }
}

/// The rollout stopped: a switched host goes back to its previous release.
pub(super) fn revert_host(ctx: &mut HostCtx<'_>, spec: &Value, runs: &Runs) -> Result<()> {
    let run = runs.get(ctx.host());
    let (Some(root), Some(previous)) = (run.root.clone(), run.previous.clone()) else {
        anyhow::bail!("no previous release to go back to");
    };
    let mut spec = spec.clone();
    spec["root"] = json!(root);
    ctx.step("revert");
    host::switch(
        ctx,
        &host::spec_for_release(&spec, &run.facts, &previous),
        &previous,
    )?;
    runs.update(ctx.host(), |r| r.outcome = Outcome::Reverted);
    Ok(())
}
