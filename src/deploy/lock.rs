//! The venv's deploy lock across the fleet. It is taken in order, the first
//! host alone and then the rest, so that of two deploys started together
//! exactly one proceeds and the other takes nothing. `--lock-wait` waits for a
//! held lock; a lock left by a deploy of this machine that is gone is broken
//! without `--force`; `es lock` shows, holds and releases it by hand.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::host::{self, Facts, LockMode};
use crate::app::App;
use crate::bad_input;
use crate::cli::{LockAction, LockArgs};
use crate::fleet::{Failure, Fleet, HostCtx, HostOutcome, Report};
use crate::remote::{Arg, FACTS};
use crate::ui::Mode;

/// How the lock is taken.
pub struct Request<'a> {
    /// The venv's directory.
    pub dir: &'a str,
    /// The owner line recorded in the lock (one JSON object).
    pub owner: String,
    /// Break the lock of a deploy that is gone wherever it ran (`--force`).
    pub force: bool,
    /// How long to wait for a held lock (`--lock-wait`).
    pub wait: Option<Duration>,
}

/// Takes the lock on the fleet's hosts in order: the first host alone, then,
/// once it is ours, the others in parallel. Each host's facts say
/// `lock=taken` or `lock=busy`; when the first host's lock is not ours the
/// others are not tried (and fail as such).
pub fn acquire(fleet: &Fleet<'_>, request: &Request<'_>) -> Report<Facts> {
    let started = Instant::now();
    let labels: Vec<String> = fleet.targets.iter().map(|t| t.label.clone()).collect();
    let mut report = Report {
        outcomes: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let Some((first, rest)) = labels.split_first() else {
        return report;
    };
    let head =
        super::sub_fleet(fleet, std::slice::from_ref(first), false).run(|ctx| take(ctx, request));
    let ours = head
        .outcomes
        .iter()
        .all(|o| matches!(&o.result, Ok(f) if f.lock.as_deref() == Some("taken")));
    report.outcomes = head.outcomes;
    if ours {
        let others = super::sub_fleet(fleet, rest, false).run(|ctx| take(ctx, request));
        report.outcomes.extend(others.outcomes);
    } else {
        report.outcomes.extend(rest.iter().map(|label| HostOutcome {
            host: label.clone(),
            elapsed: Duration::ZERO,
            result: Err(Failure {
                step: "lock".into(),
                error: format!("not tried: the lock of {first} (always taken first) is not ours"),
                kind: crate::failure::FailureKind::Locked,
            }),
        }));
    }
    report.elapsed = started.elapsed();
    report
}

/// Whether a host's facts say the lock is ours.
pub fn taken(facts: &Facts) -> bool {
    facts.lock.as_deref() == Some("taken")
}

/// One host: take the lock, breaking it when its holder is gone, waiting for
/// it while `--lock-wait` allows.
fn take(ctx: &mut HostCtx<'_>, request: &Request<'_>) -> Result<Facts> {
    ctx.step("lock");
    let deadline = request.wait.map(|wait| Instant::now() + wait);
    let mut told = false;
    loop {
        let mut facts = host::read_facts(ctx, request.dir, LockMode::Lock, &request.owner)?;
        if facts.lock.as_deref() == Some("busy") {
            if let Some(why) = breakable(&facts, request.force, ctx.command_timeout())? {
                ctx.ui()
                    .note(&format!("{}: breaking the deploy lock {why}", ctx.host()));
                facts = break_lock(ctx, request, &facts)?;
            }
        }
        match facts.lock.as_deref() {
            Some("taken") => return Ok(facts),
            Some("busy") => {
                let open = deadline.is_some_and(|d| Instant::now() < d);
                if !open || crate::interrupt::requested() {
                    return Ok(facts);
                }
                if !told {
                    ctx.ui().note(&format!(
                        "{}: waiting up to {}s (--lock-wait) for the deploy lock held by {}",
                        ctx.host(),
                        request.wait.unwrap_or_default().as_secs(),
                        facts.lock_holder()
                    ));
                    told = true;
                }
                ctx.step(&format!("waiting for the lock of {}", facts.lock_holder()));
                std::thread::sleep(Duration::from_millis(500));
            }
            _ => bail!(
                "{}",
                facts
                    .lock_error
                    .clone()
                    .unwrap_or_else(|| "the host did not report the lock".into())
            ),
        }
    }
}

/// Takes a held lock over, only while it is still the holder's that was read.
fn break_lock(ctx: &mut HostCtx<'_>, request: &Request<'_>, facts: &Facts) -> Result<Facts> {
    let held_by = owner(facts)["deploy_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let line = FACTS.shell(&[
        Arg::Path(request.dir),
        Arg::Value("break"),
        Arg::Value(&request.owner),
        Arg::Value(&held_by),
    ]);
    Ok(Facts::parse(&ctx.check(&line)?.stdout))
}

/// The lock's owner record (null when unreadable).
fn owner(facts: &Facts) -> Value {
    facts
        .lock_owner
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null)
}

/// The pid of the lock's holder when it was an es of this machine that no
/// longer runs. A lock held by hand (`es lock acquire`) has no pid.
pub fn gone_pid(facts: &Facts) -> Option<u64> {
    let owner = owner(facts);
    let pid = owner["pid"].as_u64()?;
    if owner["machine"].as_str() != Some(crate::identity::machine().as_str()) {
        return None;
    }
    (!es_runs(pid)).then_some(pid)
}

/// Whether `pid` is an es of this machine other than this one.
fn es_runs(pid: u64) -> bool {
    pid != u64::from(std::process::id())
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|comm| comm.trim() == "es")
            .unwrap_or(false)
}

/// Why a held lock may be broken now, or `None` when it must be left alone.
fn breakable(facts: &Facts, force: bool, command_timeout: Duration) -> Result<Option<String>> {
    if let Some(pid) = gone_pid(facts) {
        return Ok(Some(format!("left by a deploy that is gone (pid {pid})")));
    }
    if !force {
        return Ok(None);
    }
    if owner(facts)["message"].is_string() {
        bail!(
            "the venv is held by {}: `es lock release` lets deploys through again (--force does not)",
            facts.lock_holder()
        );
    }
    check_holder_is_gone(facts, command_timeout)?;
    Ok(Some(format!("held by {} (--force)", facts.lock_holder())))
}

/// `--force` breaks a lock only when its holder is gone: a deploy from this
/// machine whose process still runs keeps its lock, and so does one from
/// elsewhere whose lock was refreshed (every step refreshes it) within the
/// longest a step may take (`ssh.command_timeout`).
fn check_holder_is_gone(facts: &Facts, command_timeout: Duration) -> Result<()> {
    let owner = owner(facts);
    let same_machine = owner["machine"].as_str() == Some(crate::identity::machine().as_str());
    if let (true, Some(pid)) = (same_machine, owner["pid"].as_u64()) {
        if es_runs(pid) {
            bail!(
                "the deploy lock is held by {}, which is still running (pid {pid} on this machine): --force breaks only the lock of a deploy that is gone",
                facts.lock_holder()
            );
        }
        return Ok(());
    }
    let age = facts.lock_age.unwrap_or(0);
    if age < command_timeout.as_secs() {
        bail!(
            "the deploy lock is held by {}, refreshed {age}s ago: that deploy may still be running on its machine; --force breaks a lock from another machine only once it is older than ssh.command_timeout ({}s)",
            facts.lock_holder(),
            command_timeout.as_secs()
        );
    }
    Ok(())
}

/// The holder of a held lock, said for people; a lock left by a deploy that
/// is gone is named so, with the command that clears it.
pub fn describe(facts: &Facts, host: &str, venv: &str) -> String {
    let holder = facts.lock_holder();
    match gone_pid(facts) {
        Some(pid) => format!(
            "{holder}: left by a deploy that is gone (pid {pid}); `es lock release -H {host} {venv}` clears it (a deploy or rollback breaks it by itself)"
        ),
        None => holder,
    }
}

/// `es lock status|acquire|release [VENV]`.
pub fn command(app: &App, args: &LockArgs) -> Result<bool> {
    if args.message.is_some() && args.action != LockAction::Acquire {
        bad_input!("-m MESSAGE goes with `es lock acquire`");
    }
    let venv = app.venv(args.venv.as_deref())?;
    let fleet = app.fleet(false)?;
    match args.action {
        LockAction::Status => Ok(status(app, &fleet, &venv)),
        LockAction::Acquire => {
            let Some(message) = args.message.as_deref().filter(|m| !m.trim().is_empty()) else {
                bad_input!("es lock acquire needs -m MESSAGE: why the venv is held (every refused deploy shows it)");
            };
            Ok(hold(app, &fleet, &venv, message, args.lock_wait))
        }
        LockAction::Release => {
            let report = fleet.run(|ctx| release_host(ctx, &venv, args.force));
            report.print_summary(&app.ui, &format!("lock release, venv {}", venv.name));
            Ok(report.all_ok())
        }
    }
}

/// `es lock status`: who holds the lock on each host. True when it is free everywhere.
fn status(app: &App, fleet: &Fleet<'_>, venv: &crate::venv::Venv) -> bool {
    let report = fleet.run(|ctx| {
        ctx.step("lock status");
        let facts = host::read_facts(ctx, &venv.dir, LockMode::Read, "")?;
        Ok(facts
            .lock_owner
            .is_some()
            .then(|| describe(&facts, ctx.host(), &venv.name)))
    });
    let mut free = true;
    let mut table = vec![vec!["HOST".to_string(), "LOCK".to_string()]];
    for outcome in &report.outcomes {
        let (held, text) = match &outcome.result {
            Ok(Some(holder)) => (true, format!("held by {holder}")),
            Ok(None) => (false, "free".to_string()),
            Err(failure) => (true, format!("unreachable: {}", failure.error)),
        };
        free &= !held;
        if app.ui.mode == Mode::Json {
            app.ui
                .json(json!({"event": "lock", "host": outcome.host, "held": held, "lock": text}));
        }
        table.push(vec![outcome.host.clone(), text]);
    }
    if app.ui.mode == Mode::Json {
        app.ui
            .json(json!({"event": "summary", "command": "lock status", "free": free}));
    } else {
        app.ui.table(&table);
    }
    free
}

/// `es lock acquire -m MESSAGE`: holds the venv on every host, in the
/// deploy's order; when any host is held by someone else, nothing is kept.
fn hold(
    app: &App,
    fleet: &Fleet<'_>,
    venv: &crate::venv::Venv,
    message: &str,
    wait: Option<u64>,
) -> bool {
    let mut owner = super::plan::deployer();
    if let Some(fields) = owner.as_object_mut() {
        fields.remove("pid");
    }
    owner["message"] = json!(message);
    owner["since"] = json!(crate::clock::now_utc());
    let deploy_id = owner["deploy_id"].as_str().unwrap_or_default().to_string();
    let report = acquire(
        fleet,
        &Request {
            dir: &venv.dir,
            owner: owner.to_string(),
            force: false,
            wait: wait.map(Duration::from_secs),
        },
    );
    let refused: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.result {
            Ok(facts) if taken(facts) => None,
            Ok(facts) => Some(format!("{}: held by {}", o.host, facts.lock_holder())),
            Err(failure) => Some(format!("{}: {}", o.host, failure.error)),
        })
        .collect();
    if refused.is_empty() {
        app.ui.note(&format!(
            "venv {} is held on {} hosts: {message:?}; deploys are refused until `es lock release {}`",
            venv.name,
            report.outcomes.len(),
            venv.name
        ));
        return true;
    }
    let ours: Vec<String> = report
        .outcomes
        .iter()
        .filter(|o| matches!(&o.result, Ok(f) if taken(f)))
        .map(|o| o.host.clone())
        .collect();
    let undo = super::sub_fleet(fleet, &ours, true).run(|ctx| {
        let facts = host::read_facts(ctx, &venv.dir, LockMode::Read, "")?;
        host::finish(
            ctx,
            facts.root.as_deref().unwrap_or(&venv.dir),
            u32::MAX,
            &deploy_id,
            None,
            &[],
        )
    });
    for line in refused {
        app.ui.note(&format!("es: {line}"));
    }
    app.ui.note(&format!(
        "es: venv {} was not held: {}",
        venv.name,
        if undo.all_ok() {
            "nothing was taken"
        } else {
            "some locks taken may remain"
        }
    ));
    false
}

/// `es lock release` on one host: a hold, or the lock of a deploy that is
/// gone; a deploy's lock that may still be in use only with `--force` once
/// its holder is gone.
fn release_host(ctx: &mut HostCtx<'_>, venv: &crate::venv::Venv, force: bool) -> Result<String> {
    ctx.step("lock release");
    let facts = host::read_facts(ctx, &venv.dir, LockMode::Read, "")?;
    let (Some(root), Some(_)) = (&facts.root, &facts.lock_owner) else {
        return Ok("free".into());
    };
    let owner = owner(&facts);
    let held = owner["message"].is_string();
    if !held && gone_pid(&facts).is_none() {
        if !force {
            bail!(
                "the lock is held by {}, a deploy that may still run: `es lock release --force` releases it once that deploy is gone",
                facts.lock_holder()
            );
        }
        check_holder_is_gone(&facts, ctx.command_timeout())?;
    }
    let Some(deploy_id) = owner["deploy_id"].as_str() else {
        bail!(
            "the lock's owner is unreadable; remove {root}/.es/lock on the host once its deploy is gone"
        );
    };
    host::finish(ctx, root, u32::MAX, deploy_id, None, &[])?;
    Ok(format!("released the lock of {}", facts.lock_holder()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(owner: Value) -> Facts {
        Facts::parse(&format!("lock=busy\nlock_owner={owner}\nlock_age=90\n"))
    }

    #[test]
    fn a_lock_of_an_es_of_this_machine_that_is_gone_is_named_with_its_remedy() {
        // A pid that has exited: a child reaped at once.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let machine = crate::identity::machine();
        let dead = held_by(
            json!({"user": "ann", "machine": machine, "pid": pid, "version": "1.2", "deploy_id": "d"}),
        );
        assert_eq!(gone_pid(&dead), Some(u64::from(pid)));
        let said = describe(&dead, "web1", "a");
        assert!(
            said.contains(&format!("left by a deploy that is gone (pid {pid})")),
            "{said}"
        );
        assert!(
            said.contains("`es lock release -H web1 a` clears it"),
            "{said}"
        );
        let why = breakable(&dead, false, Duration::from_secs(600)).unwrap();
        assert_eq!(
            why,
            Some(format!("left by a deploy that is gone (pid {pid})"))
        );

        // Another machine's deploy, or a hold by hand: never gone by pid.
        let elsewhere =
            held_by(json!({"user": "bo", "machine": "not-this-one", "pid": pid, "deploy_id": "e"}));
        assert_eq!(gone_pid(&elsewhere), None);
        assert_eq!(
            breakable(&elsewhere, false, Duration::from_secs(600)).unwrap(),
            None
        );
        assert!(
            breakable(&elsewhere, true, Duration::from_secs(600)).is_err(),
            "refreshed 90s ago"
        );
        assert!(breakable(&elsewhere, true, Duration::from_secs(60))
            .unwrap()
            .is_some());
        let hold = held_by(
            json!({"user": "cy", "machine": machine, "message": "incident 42", "deploy_id": "h"}),
        );
        assert_eq!(gone_pid(&hold), None);
        let err = breakable(&hold, true, Duration::from_secs(60))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("incident 42") && err.contains("es lock release"),
            "{err}"
        );
    }
}
