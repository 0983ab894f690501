//! `es ps`, `es start|stop|restart` and `es logs`: a venv's processes on every
//! host of the role, whichever process manager runs them. They go through the
//! host script of the project's manager (supervisord.py or systemd.py: the
//! same `check` and `program` actions) and `logs.sh`.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::app::App;
use crate::cli::{LogsArgs, ProgramArgs};
use crate::config::ProcessManager;
use crate::remote::{Arg, LOGS};
use crate::venv::Venv;

/// The manager script's ACTION for the venv, run from its directory (the
/// script takes the root `.` as that directory) with the tools venv's python.
pub fn manager_command(venv: &Venv, action: &str, spec: &Value) -> String {
    let mut spec = spec.clone();
    spec["root"] = json!(".");
    format!(
        "cd {} && {}",
        venv.path(""),
        crate::deploy::manager_script(&spec).python(
            ".es/tools/bin/python",
            &[Arg::Value(action), Arg::Value(&spec.to_string())],
        )
    )
}

/// PROGRAM and VENV from `[PROGRAM] [VENV]`: one word is the venv when it
/// names one, else the program.
fn program_and_venv(app: &App, args: &[String]) -> Result<(Option<String>, Venv)> {
    let venvs = app.venv_names();
    let (program, venv) = match args {
        [] => (None, None),
        [one] if venvs.contains(one) => (None, Some(one.clone())),
        [one] => (Some(one.clone()), None),
        [program, venv] => (Some(program.clone()), Some(venv.clone())),
        _ => crate::bad_input!("expected [PROGRAM] [VENV]"),
    };
    Ok((program, app.venv(venv.as_deref())?))
}

/// The manager's name for PROGRAM: `all` (also the project's name), a process
/// number N, or the manager's own name (`project:project_0`, `unit@0.service`).
fn program_pattern(manager: ProcessManager, project: &str, program: Option<&str>) -> String {
    match program {
        None => "all".into(),
        Some(name) if name == project || name == "all" => "all".into(),
        Some(n)
            if manager == ProcessManager::Supervisord && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{project}:{project}_{n}")
        }
        Some(name) => name.into(),
    }
}

/// `es ps [VENV]`: one row per process of every host.
pub fn ps(app: &App, venv: Option<&str>) -> Result<bool> {
    let config = &app.require_config()?.config;
    let venv = app.venv(venv)?;
    let spec = crate::deploy::configured_process_spec(config, &venv.name);
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| {
        ctx.step("ps");
        let out = ctx.check(&manager_command(&venv, "check", &spec))?;
        serde_json::from_str::<Value>(out.stdout.trim())
            .map_err(|e| anyhow!("bad answer from the process manager's check: {e}"))
    });
    let mut table = vec![[
        "HOST", "PROCESS", "STATE", "PID", "UPTIME", "RELEASE", "HEALTH",
    ]
    .map(String::from)
    .to_vec()];
    let mut all_running = true;
    for outcome in &report.outcomes {
        let Ok(check) = &outcome.result else {
            all_running = false;
            continue;
        };
        let processes = check["processes"].as_array().cloned().unwrap_or_default();
        if processes.is_empty() {
            all_running = false;
            table.push(vec![
                outcome.host.clone(),
                "-".into(),
                "no processes".into(),
            ]);
        }
        for p in processes {
            all_running &= p["state"] == "RUNNING";
            app.ui.event("process", &outcome.host, p.clone());
            table.push(vec![
                outcome.host.clone(),
                p["name"].as_str().unwrap_or("?").into(),
                p["state"].as_str().unwrap_or("?").into(),
                p["pid"].as_u64().map_or("-".into(), |pid| pid.to_string()),
                p["uptime"].as_u64().map_or("-".into(), duration),
                check["release"].as_str().unwrap_or("-").into(),
                health(&p),
            ]);
        }
    }
    if app.ui.mode != crate::ui::Mode::Json {
        app.ui.table(&table);
    }
    report.print_summary(&app.ui, "ps");
    Ok(report.all_ok() && all_running)
}

fn health(process: &Value) -> String {
    match (&process["port"], &process["status"]) {
        (Value::Number(port), Value::Number(status)) => format!("{port}: {status}"),
        (Value::Number(port), _) => format!(
            "{port}: {}",
            process["error"].as_str().unwrap_or("no answer")
        ),
        _ => "-".into(),
    }
}

/// `93s`, `12m`, `5h`, `3d`.
fn duration(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `es start|stop|restart [PROGRAM] [VENV]`: host by host as the fleet runs
/// them, process by process on a host, each started one health-checked.
pub fn program(app: &App, action: &str, args: &ProgramArgs) -> Result<bool> {
    let config = &app.require_config()?.config;
    let (program, venv) = program_and_venv(app, &args.args)?;
    let project = config.project.name.clone().unwrap_or_default();
    let mut spec = crate::deploy::configured_process_spec(config, &venv.name);
    spec["do"] = json!(action);
    spec["name"] = json!(program_pattern(
        config.deploy.process_manager,
        &project,
        program.as_deref()
    ));
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| {
        ctx.step(action);
        let out = ctx.check(&manager_command(&venv, "program", &spec))?;
        ctx.ui().host_text(ctx.host(), &out.stdout);
        Ok(())
    });
    report.print_summary(&app.ui, action);
    Ok(report.all_ok())
}

/// `es logs [PROGRAM] [VENV] [-n N] [-f]`: each host's lines prefixed by the
/// host; with `-f`, every host followed live until Ctrl-C.
pub fn logs(app: &App, args: &LogsArgs) -> Result<bool> {
    let config = &app.require_config()?.config;
    let (program, venv) = program_and_venv(app, &args.args)?;
    let project = config.project.name.clone().unwrap_or_default();
    let which = match program.as_deref() {
        None => "all".to_string(),
        Some(name) if name == project || name == "all" => "all".to_string(),
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
        Some(other) => {
            crate::bad_input!("es logs takes a process number or `{project}`, not `{other}`")
        }
    };
    let manager = match config.deploy.process_manager {
        ProcessManager::Supervisord => "supervisord",
        ProcessManager::Systemd => "systemd",
    };
    let unit = crate::deploy::unit_name(&project, &venv.name);
    let lines = args.lines.to_string();
    let command = LOGS.shell(&[
        Arg::Value(manager),
        Arg::Path(&venv.dir),
        Arg::Value(&unit),
        Arg::Value(&which),
        Arg::Value(&lines),
        Arg::Value(if args.follow { "1" } else { "0" }),
        Arg::Value(config.deploy.systemd.scope().as_str()),
    ]);
    if args.follow {
        crate::interrupt::end_at_once();
    }
    crate::run::on_every_host(app, &command, "logs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_named_as_each_manager_names_them() {
        let (s, d) = (ProcessManager::Supervisord, ProcessManager::Systemd);
        assert_eq!(program_pattern(s, "app", None), "all");
        assert_eq!(program_pattern(s, "app", Some("app")), "all");
        assert_eq!(program_pattern(s, "app", Some("1")), "app:app_1");
        assert_eq!(program_pattern(s, "app", Some("app:app_0")), "app:app_0");
        assert_eq!(program_pattern(d, "app", Some("1")), "1");
        assert_eq!(
            program_pattern(d, "app", Some("app-a@0.service")),
            "app-a@0.service"
        );
    }

    #[test]
    fn uptimes_read_at_a_glance() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(3 * 3600), "3h");
        assert_eq!(duration(3 * 86_400), "3d");
    }
}
