//! Phase 4 of a rollout and its account: each host's finish (prune, ledger,
//! unlock, what it runs read back) and the summary.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::plan::Plan;
use super::{host, HostRun, Outcome, Runs};
use crate::app::App;
use crate::fleet::HostCtx;
use crate::ui::Mode;

/// Phase 4 on one host: prune, ledger, unlock.
pub(super) fn finish_host(ctx: &mut HostCtx<'_>, plan: &Plan, runs: &Runs) -> Result<()> {
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
    let finished = host::finish(
        ctx,
        &root,
        plan.keep_releases,
        plan.deploy_id(),
        Some(&entry),
        &protect,
    )?;
    runs.update(ctx.host(), |r| r.now = Some(finished.current.clone()));
    match finished.error {
        // A ledger that cannot be written fails the deploy on that host.
        Some(error) => anyhow::bail!("{error}"),
        None => Ok(()),
    }
}

/// The outcome as the summary and the ledger say it, and its error.
pub(super) fn outcome_words(outcome: &Outcome) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Staged => ("not switched", None),
        Outcome::Switched => ("switched", None),
        Outcome::Unchanged => ("unchanged", None),
        Outcome::Reverted => ("reverted", None),
        Outcome::Locked(holder) => ("locked", Some(format!("locked by {holder}"))),
        Outcome::Failed { step, error, .. } => ("failed", Some(format!("at {step}: {error}"))),
    }
}

/// The rollout's account: a `summary` event for whoever reads the summary
/// (JSON), and a table of the hosts on stderr unless the output is JSON.
pub(super) fn print_rollout_summary(
    app: &App,
    title: &str,
    runs: &Runs,
    stopped: Option<&str>,
    elapsed: Duration,
) {
    let ui = &app.ui;
    ui.clear();
    let all = runs.all();
    let ok = count(&all, "switched") + count(&all, "unchanged");
    if ui.wants_summary() {
        let hosts: Vec<Value> = all.iter().map(host_summary).collect();
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
        let detail = format!("{}{}", outcome_detail(r, width), runs_now(r));
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
    text.push_str(&counts_line(&all, ok, elapsed));
    eprintln!("{}", ui.mask(&text));
}

/// How many hosts' outcome is said `word`.
fn count(all: &[HostRun], word: &str) -> usize {
    all.iter()
        .filter(|r| outcome_words(&r.outcome).0 == word)
        .count()
}

/// One host in the `summary` event.
fn host_summary(r: &HostRun) -> Value {
    let (outcome, error) = outcome_words(&r.outcome);
    let mut v = json!({
        "host": r.label,
        "ok": matches!(r.outcome, Outcome::Switched | Outcome::Unchanged),
        "outcome": outcome,
        "release": r.release,
        "previous": r.previous,
        "seconds": r.elapsed.as_secs_f64(),
    });
    if let Some(now) = &r.now {
        v["runs"] = json!(now);
    }
    if let Outcome::Failed { step, error, kind } = &r.outcome {
        v["step"] = json!(step);
        v["error"] = json!(error);
        v["kind"] = json!(kind);
    } else if let Some(error) = error {
        v["error"] = json!(error);
        v["kind"] = json!(crate::failure::FailureKind::Locked);
    }
    v
}

/// The last column of a host's row: its versions, or why it failed (the
/// error's further lines indented under the first, past a label `width` wide).
fn outcome_detail(r: &HostRun, width: usize) -> String {
    let from = r.version_of(r.previous.as_deref());
    let to = r.version_of(r.release.as_deref());
    match &r.outcome {
        Outcome::Switched => format!("{from} -> {to}"),
        Outcome::Unchanged => format!("{to} already current, healthy"),
        Outcome::Reverted => format!("back on {from}"),
        Outcome::Staged => format!("still on {from} ({to} staged)"),
        Outcome::Locked(holder) => format!("locked by {holder}"),
        Outcome::Failed { step, error, .. } => {
            let mut lines = error.lines();
            let mut s = format!("at {step}: {}", lines.next().unwrap_or(""));
            for line in lines {
                s.push_str(&format!("\n  {:width$}                  {line}", ""));
            }
            s
        }
    }
}

/// The summary's last line: `N ok, N failed`, the other outcomes that
/// occurred, and the time taken.
fn counts_line(all: &[HostRun], ok: usize, elapsed: Duration) -> String {
    let mut counts = vec![
        format!("{ok} ok"),
        format!("{} failed", count(all, "failed")),
    ];
    for word in ["reverted", "not switched", "locked"] {
        let n = count(all, word);
        if n > 0 {
            counts.push(format!("{n} {word}"));
        }
    }
    format!("{}, in {:.2}s", counts.join(", "), elapsed.as_secs_f64())
}

/// What the host runs at the end, read back, when the outcome's words do not
/// already say it (a failed host), or say otherwise.
fn runs_now(r: &HostRun) -> String {
    let Some(now) = &r.now else {
        return String::new();
    };
    let claimed = match r.outcome {
        Outcome::Switched | Outcome::Unchanged => r.release.as_ref(),
        Outcome::Reverted | Outcome::Staged => r.previous.as_ref(),
        Outcome::Locked(_) | Outcome::Failed { .. } => None,
    };
    let version = match now {
        Some(id) => r.version_of(Some(id)),
        None => "no release".to_string(),
    };
    match (&r.outcome, claimed) {
        (Outcome::Failed { .. }, _) => format!("; the host runs {version}"),
        (_, Some(id)) if now.as_ref() == Some(id) => String::new(),
        _ => format!(" (but the host runs {version})"),
    }
}
