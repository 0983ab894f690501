//! One host's side of a deploy: its facts, read once; staging a release;
//! release hooks; the switch (health-checked) and the way back; the finish
//! (prune, ledger, lock). Each is one remote script from src/remote/.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::plan::{Placement, Plan, Rendered};
use crate::config::ProcessManager;
use crate::failure::{FailureKind, Kinded};
use crate::fleet::HostCtx;
use crate::remote::{
    Arg, Script, FACTS, FINISH, HOOK, STAGE, STAGING, SUPERVISORD, SYSTEMD, TOOLS,
};

/// A release kept on a host.
#[derive(Debug, Clone)]
pub struct Release {
    pub id: String,
    /// When it last became current (UTC), if ever.
    pub activated: Option<String>,
    /// Its release.json: version, profile, staged_at, staged_by.
    pub meta: Value,
    /// What `es build` recorded: commit, branch, built_at (empty when unknown).
    pub build: Value,
    /// Its switch failed on this host: never gone back to.
    pub failed: bool,
    /// The process manager it was staged for: going back to it (or rolling
    /// back to it) hands the venv back to that manager.
    pub manager: ProcessManager,
}

impl Release {
    pub fn version(&self) -> &str {
        self.meta["version"].as_str().unwrap_or("?")
    }

    /// When it was last current, else when it was staged: newest first orders releases.
    fn recency(&self) -> &str {
        self.activated
            .as_deref()
            .or_else(|| self.meta["staged_at"].as_str())
            .unwrap_or("")
    }
}

/// What `facts.sh` found about a venv on a host.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// The deploy user on the host.
    pub user: Option<String>,
    /// The venv's absolute directory; `None` when it does not exist.
    pub root: Option<String>,
    pub current: Option<String>,
    pub releases: Vec<Release>,
    pub lock: Option<String>,
    pub lock_owner: Option<String>,
    pub lock_age: Option<u64>,
    pub lock_error: Option<String>,
    pub lock_broken: Option<String>,
    pub tools: bool,
    pub legacy: bool,
    pub secret: Option<String>,
    pub supervisord: Option<u32>,
    /// The maintenance record when the venv's site is in maintenance.
    pub maintenance: Option<String>,
    /// The newest ledger lines, oldest first.
    pub ledger: Vec<Value>,
}

impl Facts {
    pub fn parse(text: &str) -> Facts {
        let mut facts = Facts::default();
        let mut failed = Vec::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.to_string();
            match key {
                "user" => facts.user = Some(value),
                "root" => facts.root = Some(value),
                "current" => facts.current = Some(value),
                "release" => {
                    let mut parts = value.splitn(5, '\t');
                    let id = parts.next().unwrap_or("").to_string();
                    let activated = parts.next().filter(|a| *a != "-").map(str::to_string);
                    let meta = parts.next().and_then(|j| serde_json::from_str(j).ok());
                    let build = parts.next().and_then(|j| serde_json::from_str(j).ok());
                    let manager = match parts.next() {
                        Some("systemd") => ProcessManager::Systemd,
                        _ => ProcessManager::Supervisord,
                    };
                    facts.releases.push(Release {
                        id,
                        activated,
                        meta: meta.unwrap_or(Value::Null),
                        build: build.unwrap_or(Value::Null),
                        failed: false,
                        manager,
                    });
                }
                "failed" => failed.push(value),
                "lock" => facts.lock = Some(value),
                "lock_owner" => facts.lock_owner = Some(value),
                "lock_age" => facts.lock_age = value.parse().ok(),
                "lock_error" => facts.lock_error = Some(value),
                "lock_broken" => facts.lock_broken = Some(value),
                "tools" => facts.tools = true,
                "legacy" => facts.legacy = true,
                "secret" => facts.secret = Some(value),
                "supervisord" => facts.supervisord = value.parse().ok(),
                "maintenance" => facts.maintenance = Some(value),
                "ledger" => {
                    if let Ok(entry) = serde_json::from_str(&value) {
                        facts.ledger.push(entry);
                    }
                }
                _ => {}
            }
        }
        for release in &mut facts.releases {
            release.failed = failed.contains(&release.id);
        }
        facts.releases.sort_by(|a, b| b.recency().cmp(a.recency()));
        facts
    }

    pub fn release(&self, id: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.id == id)
    }

    pub fn current_release(&self) -> Option<&Release> {
        self.current.as_deref().and_then(|id| self.release(id))
    }

    /// The release to go back to: the one most recently current before the
    /// current one, never one whose switch failed.
    pub fn previous(&self) -> Option<&Release> {
        self.releases
            .iter()
            .filter(|r| {
                Some(r.id.as_str()) != self.current.as_deref() && r.activated.is_some() && !r.failed
            })
            .max_by(|a, b| a.recency().cmp(b.recency()))
    }

    /// The lock holder, said for people: user@machine, then pid, version,
    /// message and age when known.
    pub fn lock_holder(&self) -> String {
        let owner: Value = self
            .lock_owner
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or(Value::Null);
        let mut details = Vec::new();
        if !owner["pid"].is_null() {
            details.push(format!("pid {}", owner["pid"]));
        }
        if let Some(version) = owner["version"].as_str() {
            details.push(format!("deploying {version}"));
        }
        if let Some(message) = owner["message"].as_str() {
            details.push(format!("held: {message:?}"));
        }
        if let Some(age) = self.lock_age {
            details.push(age_words(age));
        }
        let details = match details.is_empty() {
            true => String::new(),
            false => format!(" ({})", details.join(", ")),
        };
        if owner.is_null() {
            return format!("an unknown deploy{details}");
        }
        let field = |k: &str| owner[k].as_str().unwrap_or("?").to_string();
        format!("{}@{}{details}", field("user"), field("machine"))
    }
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn age_words(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// How facts are read.
#[derive(Clone, Copy)]
pub enum LockMode {
    Read,
    Lock,
}

/// Reads the venv's facts (one round trip), taking the lock unless `Read`.
pub fn read_facts(ctx: &mut HostCtx<'_>, dir: &str, mode: LockMode, owner: &str) -> Result<Facts> {
    let mode = match mode {
        LockMode::Read => "read",
        LockMode::Lock => "lock",
    };
    let out = ctx.check(&FACTS.shell(&[Arg::Path(dir), Arg::Value(mode), Arg::Value(owner)]))?;
    Ok(Facts::parse(&out.stdout))
}

/// Marks the venv's lock as held by a deploy that still runs (its age starts
/// again), while it is `deploy_id`'s. A lock that is no longer ours is said,
/// and left alone.
pub fn refresh_lock(ctx: &mut HostCtx<'_>, root: &str, deploy_id: &str) -> Result<()> {
    ctx.step("refresh lock");
    let line = FACTS.shell(&[
        Arg::Path(root),
        Arg::Value("refresh"),
        Arg::Value(""),
        Arg::Value(deploy_id),
    ]);
    let facts = Facts::parse(&ctx.check(&line)?.stdout);
    if facts.lock.as_deref() != Some("taken") {
        let host = ctx.host().to_string();
        ctx.ui().note(&format!(
            "{host}: the deploy lock is no longer this deploy's (held by {}); finishing will leave it alone",
            facts.lock_holder()
        ));
    }
    Ok(())
}

/// The tools venv's python, which runs supervisord.py.
fn tools_python(root: &str) -> String {
    format!("{root}/.es/tools/bin/python")
}

/// Stages the plan's release for this host. Returns the release's id and
/// what `es build` recorded about its version (commit, branch; null when
/// unknown); a complete release with the same id is reused (nothing is installed).
pub fn stage(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    facts: &Facts,
    root: &str,
) -> Result<(String, Value)> {
    let host = ctx.host().to_string();
    let secret = match &facts.secret {
        Some(secret) => secret.clone(),
        None => new_secret()?,
    };
    let Some(user) = facts.user.clone() else {
        bail!("the host did not say who the deploy user is (facts.sh)");
    };
    let rendered = plan.render_for(&Placement {
        host: host.clone(),
        root: root.to_string(),
        secret: secret.clone(),
        user,
    })?;
    ctx.ui().add_secret(&secret);
    if let (Some(release), false) = (facts.release(&rendered.id), plan.force) {
        ctx.step("stage (already staged)");
        return Ok((rendered.id, release.build.clone()));
    }
    ctx.step("stage");
    let staging = format!("{root}/.es/staging/{}", rendered.id);
    clear_staging(ctx, plan, root, &staging, &rendered)?;
    if facts.secret.is_none() {
        ctx.conn.upload(
            secret.as_bytes(),
            &format!("{root}/.es/supervisor-secret"),
            0o600,
        )?;
    }
    upload_release_files(ctx, plan, facts, &staging, &rendered)?;
    let build = run_stage_script(ctx, plan, root, &rendered.id)?;
    Ok((rendered.id, build))
}

/// Makes `staging` (and the directories of the extra templates in it) empty;
/// with `--force`, removes the release already staged under the same id.
fn clear_staging(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    root: &str,
    staging: &str,
    rendered: &Rendered,
) -> Result<()> {
    let mut dirs = vec![staging.to_string()];
    for (path, _) in &rendered.extras {
        if let Some((parent, _)) = format!("{staging}/extra/{path}").rsplit_once('/') {
            dirs.push(parent.to_string());
        }
    }
    let release = match plan.force {
        true => format!("{root}/releases/{}", rendered.id),
        false => String::new(),
    };
    let mut args = vec![Arg::Value(staging), Arg::Value(&release)];
    args.extend(dirs.iter().map(|d| Arg::Value(d)));
    ctx.check(&STAGING.shell(&args))?;
    Ok(())
}

/// Uploads what the stage script builds the release from into `staging`:
/// the rendered files, the index file, release.json and, on a host without
/// the tools venv yet, tools.py.
fn upload_release_files(
    ctx: &mut HostCtx<'_>,
    plan: &Plan,
    facts: &Facts,
    staging: &str,
    rendered: &Rendered,
) -> Result<()> {
    let release_json = json!({
        "id": rendered.id,
        "project": plan.project,
        "version": plan.version,
        "profile": plan.profile,
        "staged_at": crate::clock::now_utc(),
        "staged_by": plan.deployer,
    });
    let index = plan.index_env();
    ctx.conn.upload(
        rendered.process_config.as_bytes(),
        &format!("{staging}/{}", plan.process_manager.config_file()),
        0o600,
    )?;
    ctx.conn.upload(
        rendered.env_file.as_bytes(),
        &format!("{staging}/es.env"),
        0o600,
    )?;
    ctx.conn
        .upload(index.as_bytes(), &format!("{staging}/index.env"), 0o600)?;
    if !facts.tools {
        ctx.conn.upload(
            TOOLS.source().as_bytes(),
            &format!("{staging}/tools.py"),
            0o600,
        )?;
    }
    for (path, text) in &rendered.extras {
        ctx.conn
            .upload(text.as_bytes(), &format!("{staging}/extra/{path}"), 0o600)?;
    }
    ctx.conn.upload(
        format!("{release_json}\n").as_bytes(),
        &format!("{staging}/release.json"),
        0o644,
    )?;
    Ok(())
}

/// Runs the stage script, which builds release `id` from its staging
/// directory (a new venv, the project and deploy.requirements installed, the
/// links made). Returns what `es build` recorded about the version (null when
/// unknown).
fn run_stage_script(ctx: &mut HostCtx<'_>, plan: &Plan, root: &str, id: &str) -> Result<Value> {
    let installer = match plan.installer {
        crate::config::Installer::Pip => "pip",
        crate::config::Installer::Uv => "uv",
        crate::config::Installer::Auto => "auto",
    };
    let requirement = format!("{}=={}", plan.project, plan.version);
    let links: Vec<String> = plan
        .shared_dirs
        .iter()
        .map(|d| format!("shared:{d}"))
        .chain(plan.sub_dirs.iter().map(|d| format!("dir:{d}")))
        .chain(plan.requirements.iter().map(|r| format!("pkg:{r}")))
        .collect();
    let mut args = vec![
        Arg::Value(root),
        Arg::Value(id),
        Arg::Value(&requirement),
        Arg::Value(installer),
        Arg::Value(plan.virtualenv_command.as_deref().unwrap_or("")),
    ];
    args.extend(links.iter().map(|l| Arg::Value(l)));
    let out = ctx
        .check(&STAGE.shell(&args))
        .context("staging the release (the running release is untouched)")?;
    Ok(out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("build="))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null))
}

/// A fresh random supervisor password (hex), from the OS.
fn new_secret() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// When a deploy's hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPhase {
    /// Before staging, in the current release.
    Pre,
    /// In the staged release, before anything switches.
    Release,
    /// After the switch, in the new release.
    Post,
}

impl HookPhase {
    fn name(self) -> &'static str {
        match self {
            HookPhase::Pre => "pre hook",
            HookPhase::Release => "release hook",
            HookPhase::Post => "post hook",
        }
    }

    /// Whether Ctrl-C stops a hook of this phase: before the switch nothing
    /// is lost by stopping one; a post hook runs on a host that has switched
    /// and is finished like the switch itself (stopping it would take the
    /// host back, or down after a first deploy).
    fn stopped_by_interrupt(self) -> bool {
        self != HookPhase::Post
    }
}

/// Runs hooks in a release's environment (its venv activated, es.env loaded;
/// `remote/hook.sh`). Their output is shown. The host itself ends a hook at
/// `ssh.command_timeout` (coreutils `timeout` signals its whole process
/// group), so nothing of it outlives es giving up on it; Ctrl-C stops a hook
/// that runs before the switch the same way.
pub fn run_hooks(
    ctx: &mut HostCtx<'_>,
    phase: HookPhase,
    dir: &str,
    hooks: &[String],
) -> Result<()> {
    let secs = ctx.command_timeout().as_secs().max(1);
    let kind = phase.name();
    let on_eof = if phase.stopped_by_interrupt() {
        "stop"
    } else {
        "finish"
    };
    for (i, hook) in hooks.iter().enumerate() {
        ctx.step(&format!("{kind} {}", i + 1));
        let script = HOOK.shell(&[
            Arg::Value(dir),
            Arg::Value(&secs.to_string()),
            Arg::Value(on_eof),
            Arg::Value(hook),
        ]);
        // Shown line by line as it comes, never held whole.
        let ui = ctx.ui();
        let host = ctx.host().to_string();
        let mut buffers = [Vec::new(), Vec::new()];
        let mut show = |is_stderr: bool, bytes: &[u8], last: bool| {
            let pending = &mut buffers[usize::from(is_stderr)];
            pending.extend_from_slice(bytes);
            let cut = match pending.iter().rposition(|b| *b == b'\n') {
                _ if last || pending.len() > 65_536 => pending.len(),
                Some(i) => i + 1,
                None => return,
            };
            let lines: Vec<u8> = pending.drain(..cut).collect();
            if !ui.quiet && !lines.is_empty() {
                ui.host_text(&host, &String::from_utf8_lossy(&lines));
            }
        };
        let mut sink = |is_stderr, bytes: &[u8]| show(is_stderr, bytes, false);
        let out = if phase.stopped_by_interrupt() {
            ctx.exec_stoppable(&script, &mut sink)?
        } else {
            ctx.exec_streaming(&script, &mut sink)?
        };
        show(false, &[], true);
        show(true, &[], true);
        if out.status != 0 && phase.stopped_by_interrupt() && crate::interrupt::requested() {
            return Err(Kinded::new(
                FailureKind::Interrupted,
                format!(
                    "{kind} {} stopped by the interrupt (its process group was ended, exit {})",
                    i + 1,
                    out.status
                ),
            )
            .into());
        }
        out.ok()?;
    }
    Ok(())
}

/// Pre hooks (before staging) run in the current release when there is one,
/// else in the venv's directory, with the ES_* values exported.
pub fn run_pre_hooks(ctx: &mut HostCtx<'_>, plan: &Plan, root: &str, facts: &Facts) -> Result<()> {
    let dir = match &facts.current {
        Some(id) => format!("{root}/releases/{id}"),
        None => root.to_string(),
    };
    let exports = crate::remote::exports([
        ("ES_VERSION", plan.version.as_str()),
        ("ES_VENV", plan.venv.name.as_str()),
        ("ES_PROFILE", plan.profile.as_str()),
        ("ES_HOST", ctx.host()),
        ("ES_PROJECT", plan.project.as_str()),
    ]);
    let hooks: Vec<String> = plan
        .pre_hooks
        .iter()
        .map(|h| format!("{exports}{h}"))
        .collect();
    run_hooks(ctx, HookPhase::Pre, &dir, &hooks)
}

/// Makes `release` current and puts its processes in service, each checked
/// for health. Prints per-process lines with -v.
pub fn switch(ctx: &mut HostCtx<'_>, spec: &Value, release: &str) -> Result<()> {
    let mut spec = spec.clone();
    spec["release"] = json!(release);
    run_manager(ctx, "switch", &spec).map(|_| ())
}

/// `spec` for switching to release `id`: under the process manager that
/// release was staged for (a venv moving between supervisord and systemd
/// goes back, or rolls back, to the manager of the release it goes to).
pub fn spec_for_release(spec: &Value, facts: &Facts, id: &str) -> Value {
    let mut spec = spec.clone();
    if let Some(release) = facts.release(id) {
        spec["manager"] = json!(release.manager);
    }
    spec
}

/// The host script of the spec's process manager: supervisord.py or systemd.py
/// (one interface: switch, start, stop, check, program).
pub fn manager_script(spec: &Value) -> &'static Script {
    if spec["manager"] == "systemd" {
        &SYSTEMD
    } else {
        &SUPERVISORD
    }
}

/// Runs the process manager's script ACTION with the tools venv's python.
pub fn run_manager(ctx: &mut HostCtx<'_>, action: &str, spec: &Value) -> Result<String> {
    let root = spec["root"].as_str().unwrap_or("");
    let line = manager_script(spec).python(
        &tools_python(root),
        &[Arg::Value(action), Arg::Value(&spec.to_string())],
    );
    let out = ctx.check(&line)?;
    if ctx.ui().verbose {
        ctx.ui().host_text(ctx.host(), &out.stdout);
    }
    Ok(out.stdout)
}

/// One look at the venv's processes (state and health), changing nothing.
pub fn check(ctx: &mut HostCtx<'_>, spec: &Value) -> Result<Value> {
    let out = run_manager(ctx, "check", spec)?;
    serde_json::from_str(out.trim())
        .map_err(|e| anyhow!("bad answer from the process manager's check: {e}"))
}

/// What a host's finish read back: the release it runs at the end, and
/// what failed (the ledger, the lock), said with the lock's true state.
pub struct Finished {
    pub current: Option<String>,
    pub error: Option<String>,
}

/// Prunes old releases (keeping `protect`), appends `ledger` and releases the
/// lock when it is still `deploy_id`'s. Fails only when the host could not be
/// asked (then the lock may remain).
pub fn finish(
    ctx: &mut HostCtx<'_>,
    root: &str,
    keep: u32,
    deploy_id: &str,
    ledger: Option<&Value>,
    protect: &[&str],
) -> Result<Finished> {
    ctx.step("finish");
    let keep = keep.to_string();
    let ledger = ledger.map(Value::to_string).unwrap_or_default();
    let mut args = vec![
        Arg::Value(root),
        Arg::Value(&keep),
        Arg::Value(deploy_id),
        Arg::Value(&ledger),
    ];
    args.extend(protect.iter().map(|p| Arg::Value(p)));
    let out = ctx
        .exec(&FINISH.shell(&args))
        .map_err(|e| e.context("finishing (the deploy lock may remain)"))?;
    if ctx.ui().verbose {
        ctx.ui().host_text(ctx.host(), &out.stdout);
    }
    let field = |key: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
    };
    let error = (!out.success()).then(|| {
        let lock = match field("lock=").as_deref() {
            Some("remains") => "; the deploy lock remains (`es deploy --force` breaks it)",
            Some("released") => "; the deploy lock was released",
            _ => "",
        };
        format!("finishing: {}{lock}", out.stderr.trim())
    });
    Ok(Finished {
        current: field("current=").filter(|c| !c.is_empty()),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_parse_orders_releases_and_finds_the_previous() {
        let text = "root=/v\ncurrent=1.1-b\n\
            release=1.0-a\t2026-01-01T00:00:00Z\t{\"version\":\"1.0\",\"staged_at\":\"2026-01-01T00:00:00Z\"}\t{}\tsupervisord\n\
            release=1.1-b\t2026-01-02T00:00:00Z\t{\"version\":\"1.1\"}\t{\"commit\":\"abc\"}\tsystemd\n\
            release=1.2-c\t-\t{\"version\":\"1.2\",\"staged_at\":\"2026-01-03T00:00:00Z\"}\t{}\n\
            release=1.05-f\t2026-01-01T12:00:00Z\t{\"version\":\"1.05\"}\t{}\nfailed=1.05-f\n\
            lock=busy\nlock_owner={\"user\":\"ann\",\"machine\":\"m\",\"pid\":7,\"version\":\"1.2\"}\nlock_age=300\n\
            ledger={\"version\":\"1.1\"}\nsupervisord=42\ntools=yes\n";
        let facts = Facts::parse(text);
        let ids: Vec<&str> = facts.releases.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["1.2-c", "1.1-b", "1.05-f", "1.0-a"]);
        assert!(facts.release("1.05-f").unwrap().failed);
        assert_eq!(facts.current_release().map(Release::version), Some("1.1"));
        assert_eq!(facts.current_release().unwrap().build["commit"], "abc");
        assert_eq!(facts.previous().map(|r| r.id.as_str()), Some("1.0-a"));
        assert_eq!(facts.lock_holder(), "ann@m (pid 7, deploying 1.2, 5m ago)");
        let held = Facts::parse(
            "lock_owner={\"user\":\"bo\",\"machine\":\"n\",\"message\":\"incident 42\"}\nlock_age=30\n",
        );
        assert_eq!(held.lock_holder(), "bo@n (held: \"incident 42\", 30s ago)");
        assert_eq!(facts.supervisord, Some(42));
        assert!(facts.tools);
        assert_eq!(facts.ledger.len(), 1);
    }

    #[test]
    fn a_switch_goes_to_a_release_under_the_manager_it_was_staged_for() {
        let facts = Facts::parse(
            "current=2-b\nrelease=1-a\t-\t{}\t{}\tsupervisord\nrelease=2-b\t-\t{}\t{}\tsystemd\n\
             release=0-z\t-\t{}\t{}\n",
        );
        let spec = json!({"manager": "systemd", "root": "/v"});
        assert_eq!(
            spec_for_release(&spec, &facts, "1-a")["manager"],
            "supervisord"
        );
        assert_eq!(spec_for_release(&spec, &facts, "2-b")["manager"], "systemd");
        // Staged before releases said: supervisord, the only manager then.
        assert_eq!(
            spec_for_release(&spec, &facts, "0-z")["manager"],
            "supervisord"
        );
        // Not on the host (just staged): the plan's.
        assert_eq!(spec_for_release(&spec, &facts, "3-c")["manager"], "systemd");
    }
}
