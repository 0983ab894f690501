//! `es status` and `es releases`: what runs where, read from the hosts'
//! releases, ledgers and processes; nothing is changed.

use anyhow::Result;
use serde_json::{json, Value};

use super::host::{self, Facts, LockMode};
use crate::app::App;
use crate::cli::VenvArg;
use crate::fleet::{HostCtx, Report};
use crate::ui::Mode;
use crate::venv::Venv;

/// The venv named on the command line or by default, and the health spec.
fn venv_and_spec(app: &App, args: &VenvArg) -> Result<(Venv, Value)> {
    let loaded = app.require_config()?;
    let config = &loaded.config;
    let venv = app.venv(args.venv.as_deref())?;
    let venv_name = venv.name.clone();
    let spec = super::plan::configured_process_spec(config, &venv_name);
    Ok((venv, spec))
}

/// One host's row of `es status`.
fn status_row(ctx: &mut HostCtx<'_>, venv: &Venv, spec: &Value) -> Result<Value> {
    ctx.step("status");
    let facts = host::read_facts(ctx, &venv.dir, LockMode::Read, "")?;
    let current = facts.current_release().cloned();
    let processes = match (&facts.root, facts.tools) {
        (Some(root), true) => {
            let mut spec = spec.clone();
            spec["root"] = json!(root);
            host::check(ctx, &spec)?["processes"].clone()
        }
        _ => json!([]),
    };
    let list = processes.as_array().cloned().unwrap_or_default();
    let running = list.iter().filter(|p| p["state"] == "RUNNING").count();
    let healthy = !list.is_empty() && list.iter().all(|p| p["healthy"] == true);
    let staged_by = current.as_ref().map(|r| {
        format!(
            "{}@{}",
            text(&r.meta["staged_by"]["user"]),
            text(&r.meta["staged_by"]["machine"])
        )
    });
    Ok(json!({
        "venv": venv.name,
        "version": match (&current, facts.legacy) {
            (Some(release), _) => Some(release.version().to_string()),
            (None, true) => Some("legacy".to_string()),
            (None, false) => None,
        },
        "release": facts.current,
        "healthy": healthy,
        "running": running,
        "programs": list.len(),
        "processes": list,
        "deployed_at": current.as_ref().and_then(|r| r.activated.clone()),
        "deployed_by": staged_by,
        "commit": current.as_ref().and_then(|r| r.build["commit"].as_str().map(str::to_string)),
        "branch": current.as_ref().and_then(|r| r.build["branch"].as_str().map(str::to_string)),
        "lock": facts
            .lock_owner
            .as_ref()
            .map(|_| super::lock::describe(&facts, ctx.host(), &venv.name)),
        "maintenance": facts.maintenance.as_deref().map(crate::nginx::maintenance::describe),
    }))
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| "?".into())
}

/// `es status [VENV]`.
pub fn status(app: &App, args: &VenvArg) -> Result<bool> {
    let (venv, spec) = venv_and_spec(app, args)?;
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| status_row(ctx, &venv, &spec));
    let findings = Findings::of(&report);
    let problems = &findings.problems;
    if app.ui.mode == Mode::Json {
        for row in &findings.rows {
            app.ui.json(json!({"event": "status", "row": row}));
        }
        app.ui.json(json!({"event": "summary", "command": "status", "ok": problems.is_empty(), "problems": problems}));
        return Ok(problems.is_empty());
    }
    app.ui.table(&status_table(&findings.rows, &venv.name));
    for line in findings.notes.iter().chain(problems) {
        app.ui.note(&format!("es: {line}"));
    }
    Ok(problems.is_empty())
}

/// What `es status` found on the fleet.
struct Findings {
    /// Each host's row (`host` added), or its `error`.
    rows: Vec<Value>,
    /// What makes the status fail: an unhealthy, locked or unreachable host,
    /// a port held by another process, hosts on different versions.
    problems: Vec<String>,
    /// Said, not a problem: maintenance is on on purpose.
    notes: Vec<String>,
}

impl Findings {
    fn of(report: &Report<Value>) -> Findings {
        let mut findings = Findings {
            rows: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        };
        let mut versions = std::collections::BTreeSet::new();
        for outcome in &report.outcomes {
            match &outcome.result {
                Ok(row) => {
                    let mut row = row.clone();
                    row["host"] = json!(outcome.host);
                    versions.insert(row["version"].as_str().unwrap_or("none").to_string());
                    findings.judge(&outcome.host, &row);
                    findings.rows.push(row);
                }
                Err(failure) => {
                    let problem = format!("{}: {}", outcome.host, failure.error);
                    findings.problems.push(problem);
                    let row = json!({"host": outcome.host, "error": failure.error});
                    findings.rows.push(row);
                }
            }
        }
        if versions.len() > 1 {
            findings.problems.push(format!(
                "hosts run different versions: {}",
                versions.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        findings
    }

    /// The problems and notes of one reachable host's row.
    fn judge(&mut self, host: &str, row: &Value) {
        if row["healthy"] != true {
            self.problems.push(format!("{host} is not healthy"));
        }
        for process in row["processes"].as_array().into_iter().flatten() {
            if let Some(holder) = process["holder"].as_str() {
                self.problems.push(format!("{host}: {holder}"));
            }
        }
        if let Some(lock) = row["lock"].as_str() {
            self.problems.push(format!("{host} is locked by {lock}"));
        }
        if let Some(record) = row["maintenance"].as_str() {
            self.notes
                .push(format!("{host} is in maintenance, {record}"));
        }
    }
}

/// The table of `es status`: a header, then a line per host (`venv` names
/// the venv of a host that could not be reached).
fn status_table(rows: &[Value], venv: &str) -> Vec<Vec<String>> {
    let header = [
        "HOST", "VENV", "VERSION", "HEALTH", "PROGRAMS", "DEPLOYED", "BY", "COMMIT", "LOCK",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let get = |k: &str| {
            row[k]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "-".into())
        };
        if let Some(error) = row["error"].as_str() {
            table.push(vec![
                get("host"),
                venv.to_string(),
                "?".into(),
                format!("unreachable: {error}"),
            ]);
            continue;
        }
        let commit = get("commit");
        table.push(vec![
            get("host"),
            get("venv"),
            get("version"),
            if row["healthy"] == true {
                "healthy".into()
            } else {
                "UNHEALTHY".into()
            },
            format!("{}/{}", row["running"], row["programs"]),
            get("deployed_at"),
            get("deployed_by"),
            commit.chars().take(12).collect(),
            get("lock"),
        ]);
    }
    table
}

/// `es releases [VENV]`.
pub fn releases(app: &App, args: &VenvArg) -> Result<bool> {
    let (venv, _) = venv_and_spec(app, args)?;
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| {
        ctx.step("releases");
        host::read_facts(ctx, &venv.dir, LockMode::Read, "")
    });
    let mut table: Vec<Vec<String>> = vec![[
        "HOST",
        "RELEASE",
        "VERSION",
        "STATE",
        "LAST CURRENT",
        "COMMIT",
        "LAST OUTCOME",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect()];
    for outcome in &report.outcomes {
        let Ok(facts) = &outcome.result else { continue };
        for release in &facts.releases {
            let state = if facts.current.as_deref() == Some(release.id.as_str()) {
                "current"
            } else if facts.previous().map(|p| p.id.as_str()) == Some(release.id.as_str()) {
                "previous"
            } else {
                "kept"
            };
            let ledger = last_ledger(facts, &release.id);
            app.ui.json(json!({
                "event": "release", "host": outcome.host, "id": release.id, "version": release.version(),
                "state": state, "activated": release.activated, "meta": release.meta, "build": release.build,
                "ledger": ledger,
            }));
            table.push(vec![
                outcome.host.clone(),
                release.id.clone(),
                release.version().to_string(),
                state.to_string(),
                release.activated.clone().unwrap_or_else(|| "-".into()),
                release.build["commit"]
                    .as_str()
                    .unwrap_or("-")
                    .chars()
                    .take(12)
                    .collect(),
                ledger
                    .map(|l| {
                        format!(
                            "{} {} ({})",
                            text(&l["action"]),
                            text(&l["outcome"]),
                            text(&l["time"])
                        )
                    })
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    if app.ui.mode != Mode::Json {
        app.ui.table(&table);
    }
    fleet_view(app, &report);
    report.print_summary(&app.ui, "releases");
    Ok(report.all_ok())
}

/// The fleet view of `es releases`: each version (newest first), the hosts
/// that keep it and those where it is current (marked `*`).
fn fleet_view(app: &App, report: &crate::fleet::Report<Facts>) {
    let mut versions: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let reached = report.outcomes.iter().filter(|o| o.result.is_ok()).count();
    for outcome in &report.outcomes {
        let Ok(facts) = &outcome.result else { continue };
        for release in &facts.releases {
            let version = release.version().to_string();
            let at = match versions.iter().position(|(v, _, _)| *v == version) {
                Some(at) => at,
                None => {
                    versions.push((version, Vec::new(), Vec::new()));
                    versions.len() - 1
                }
            };
            let (_, kept, current) = &mut versions[at];
            if !kept.contains(&outcome.host) {
                kept.push(outcome.host.clone());
            }
            if facts.current.as_deref() == Some(release.id.as_str()) {
                current.push(outcome.host.clone());
            }
        }
    }
    let rank = |v: &str| crate::version::parse_version(v).ok();
    versions.sort_by_key(|v| std::cmp::Reverse(rank(&v.0)));
    let mut table = vec![["VERSION", "KEPT ON", "CURRENT ON"]
        .map(String::from)
        .to_vec()];
    for (version, kept, current) in &versions {
        app.ui.json(json!({
            "event": "version", "version": version, "kept_on": kept, "current_on": current,
        }));
        let mark = if current.is_empty() { " " } else { "*" };
        table.push(vec![
            format!("{mark} {version}"),
            format!("{} ({}/{reached})", kept.join(", "), kept.len()),
            match current.is_empty() {
                true => "-".to_string(),
                false => format!("{} ({}/{reached})", current.join(", "), current.len()),
            },
        ]);
    }
    if app.ui.mode != Mode::Json {
        table.insert(0, Vec::new()); // a blank line after the hosts' table
        app.ui.table(&table);
    }
}

/// The newest ledger entry about a release.
fn last_ledger<'a>(facts: &'a Facts, id: &str) -> Option<&'a Value> {
    facts
        .ledger
        .iter()
        .rev()
        .find(|l| l["release"].as_str() == Some(id))
}
