//! supervisord in a venv: the remote command lines that drive it, the safe
//! restart (wait for the old supervisord to be gone), and `es supervisor`.

use anyhow::Result;

use crate::app::App;
use crate::bad_input;
use crate::cli::SupervisorArgs;
use crate::config::{ProcessManager, SystemdScope};
use crate::fleet::HostCtx;
use crate::remote::Arg;
use crate::venv::Venv;

/// `VENV/.es/tools/bin/supervisorctl -c VENV/etc/supervisord.conf ARGS...`
/// (supervisor lives in the venv's tools venv, beside the releases).
pub fn supervisorctl(venv: &Venv, args: &[&str]) -> String {
    let ctl = format!("{}/.es/tools/bin/supervisorctl", venv.dir);
    let conf = format!("{}/etc/supervisord.conf", venv.dir);
    let mut words = vec![Arg::Path(&ctl), Arg::Value("-c"), Arg::Path(&conf)];
    words.extend(args.iter().map(|a| Arg::Value(a)));
    crate::remote::program(&words)
}

/// supervisord.py ACTION for the venv, with the deploy's health settings so
/// that `start` waits for health as a deploy does.
fn supervisord_action(venv: &Venv, action: &str, spec: &serde_json::Value) -> String {
    crate::processes::manager_command(venv, action, spec)
}

/// Stops this venv's supervisord (if it runs) and waits until its pid is gone.
pub fn shutdown_script(venv: &Venv, spec: &serde_json::Value) -> String {
    supervisord_action(venv, "stop", spec)
}

/// Starts supervisord and waits until every program is RUNNING and healthy;
/// on failure the reason carries the programs' log lines.
pub fn start_script(venv: &Venv, spec: &serde_json::Value) -> String {
    supervisord_action(venv, "start", spec)
}

/// One line of `supervisorctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStatus {
    pub program: String,
    pub state: String,
    pub pid: String,
    pub uptime: String,
    /// What supervisorctl says beside a state other than RUNNING (supervisord's
    /// reason: `can't find command '/x'`, `Exited too quickly ...`, `Not started`).
    pub detail: String,
}

/// Parses `supervisorctl status` output:
/// `name:name_0   RUNNING   pid 123, uptime 0:00:05`.
pub fn parse_status(text: &str) -> Vec<ProgramStatus> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let program = words.next()?.to_string();
            let state = words.next()?.to_string();
            if !state.chars().all(|c| c.is_ascii_uppercase()) {
                return None;
            }
            let rest: Vec<&str> = words.collect();
            let rest = rest.join(" ");
            let pid = rest
                .strip_prefix("pid ")
                .and_then(|r| r.split(',').next())
                .unwrap_or("")
                .to_string();
            let uptime = rest
                .split_once("uptime ")
                .map(|(_, u)| u.to_string())
                .unwrap_or_default();
            // A stopped or exited process: supervisorctl gives the time it stopped.
            let detail = match state.as_str() {
                "RUNNING" => String::new(),
                "STOPPED" | "EXITED" if !rest.is_empty() && rest != "Not started" => {
                    format!("since {rest}")
                }
                _ => rest.clone(),
            };
            Some(ProgramStatus {
                program,
                state,
                pid,
                uptime,
                detail,
            })
        })
        .collect()
}

/// The action `es supervisor` was asked for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// supervisord itself: status, reload, start, shutdown.
    Daemon(&'static str),
    /// One program: start, stop, restart.
    Program(&'static str, String),
}

/// `es supervisor ACTION [PROGRAM] [VENV]` on every host of the role.
pub fn command(app: &App, args: &SupervisorArgs) -> Result<bool> {
    let loaded = app.require_config()?;
    let config = &loaded.config;
    let project = config.project.name.clone().unwrap_or_default();
    let venvs = app.venv_names();
    if config.deploy.process_manager == ProcessManager::Systemd {
        let by_hand = match config.deploy.systemd.scope() {
            SystemdScope::User => "systemctl --user / journalctl --user",
            SystemdScope::System => "sudo systemctl / sudo journalctl",
        };
        bad_input!(
            "{}: deploy.process_manager is \"systemd\": there is no supervisord to drive; `es status` shows the processes, and {by_hand} on a host drive them",
            loaded.path.display()
        );
    }
    let (action, venv_arg) = parse_action(&args.action, &args.args, &project, &venvs)?;
    let venv = app.venv(venv_arg.as_deref())?;
    let spec = crate::deploy::configured_process_spec(config, &venv.name);
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| run_action(ctx, &venv, &action, &spec));

    if action == Action::Daemon("status") && app.ui.mode != crate::ui::Mode::Json {
        print_status_table(app, &report);
    }
    report.print_summary(&app.ui, &format!("supervisor {}", args.action));
    if action != Action::Daemon("status") {
        return Ok(report.all_ok());
    }
    // For scripts, like supervisorctl's own: status succeeds only when every
    // program of every host is RUNNING.
    let not_running: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().map(|stdout| (&o.host, stdout)))
        .flat_map(|(host, stdout)| {
            parse_status(stdout)
                .into_iter()
                .filter(|p| p.state != "RUNNING")
                .map(move |p| match p.detail.is_empty() {
                    true => format!("{host} {} {}", p.program, p.state),
                    false => format!("{host} {} {} ({})", p.program, p.state, p.detail),
                })
        })
        .collect();
    if !not_running.is_empty() {
        app.ui
            .note(&format!("not RUNNING: {}", not_running.join(", ")));
    }
    Ok(report.all_ok() && not_running.is_empty())
}

fn parse_action(
    action: &str,
    args: &[String],
    project: &str,
    venvs: &[String],
) -> Result<(Action, Option<String>)> {
    let daemon = |name: &'static str| -> Result<(Action, Option<String>)> {
        match args {
            [] => Ok((Action::Daemon(name), None)),
            [venv] => Ok((Action::Daemon(name), Some(venv.clone()))),
            _ => bad_input!("es supervisor {name} takes at most one argument: [VENV]"),
        }
    };
    // A program's name means all its processes (numprocs > 1 names them NAME:NAME_N).
    let every_process = |program: &str| {
        if program.contains(':') || program == "all" {
            program.to_string()
        } else {
            format!("{program}:*")
        }
    };
    let program = |name: &'static str| -> Result<(Action, Option<String>)> {
        match args {
            [venv] if venvs.contains(venv) => bad_input!(
                "`{venv}` is a venv; es supervisor {name} needs a PROGRAM: es supervisor {name} {project} {venv}"
            ),
            [program] => Ok((Action::Program(name, every_process(program)), None)),
            [program, venv] => Ok((
                Action::Program(name, every_process(program)),
                Some(venv.clone()),
            )),
            _ => bad_input!("es supervisor {name} takes PROGRAM [VENV]"),
        }
    };
    match action {
        "status" => daemon("status"),
        "reload" => daemon("reload"),
        "shutdown" => daemon("shutdown"),
        // `start VENV` starts supervisord; `start PROGRAM [VENV]` one program.
        "start" => match args {
            [one] if venvs.contains(one) || !looks_like_program(one, project) => daemon("start"),
            [] => daemon("start"),
            _ => program("start"),
        },
        "stop" => program("stop"),
        "restart" => program("restart"),
        other => bad_input!(
            "unknown supervisor action `{other}`: status, reload, start, shutdown, or start|stop|restart PROGRAM"
        ),
    }
}

/// `name`, `name:*` or `name:name_0`, where name is the project's program.
fn looks_like_program(arg: &str, project: &str) -> bool {
    arg.contains(':') || arg == project || arg == "all"
}

fn run_action(
    ctx: &mut HostCtx<'_>,
    venv: &Venv,
    action: &Action,
    spec: &serde_json::Value,
) -> Result<String> {
    ctx.step(&match action {
        Action::Daemon(name) => name.to_string(),
        Action::Program(name, program) => format!("{name} {program}"),
    });
    let script = match action {
        Action::Daemon("status") => supervisorctl(venv, &["status"]),
        // reload returns at once: wait until supervisord and its programs are back.
        Action::Daemon("reload") => format!(
            "{} && {}",
            supervisorctl(venv, &["reload"]),
            start_script(venv, spec)
        ),
        // Started, or already running: every program must be RUNNING and
        // healthy, or the reason is supervisord's (spawnerr) and the logs'.
        Action::Daemon("start") => start_script(venv, spec),
        Action::Daemon(_) => shutdown_script(venv, spec),
        // Through supervisord.py: a refusal is one clear line, a started
        // process must answer its health check.
        Action::Program(name, program) => {
            let mut spec = spec.clone();
            spec["do"] = serde_json::json!(name);
            spec["name"] = serde_json::json!(program);
            supervisord_action(venv, "program", &spec)
        }
    };
    let out = ctx.exec(&script)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    // supervisorctl status exits 3 when some program is not running: still a result.
    let status_ok = matches!(action, Action::Daemon("status")) && out.status == 3;
    let out = if status_ok { out } else { out.ok()? };
    let ui = ctx.ui();
    ui.event(
        "status",
        ctx.host(),
        serde_json::json!({ "programs": parse_status(&out.stdout).iter().map(|p| serde_json::json!({
            "program": p.program, "state": p.state, "pid": p.pid, "uptime": p.uptime,
        })).collect::<Vec<_>>() }),
    );
    if !matches!(action, Action::Daemon("status")) && ui.verbose {
        ui.host_text(ctx.host(), &text);
    }
    Ok(out.stdout)
}

fn print_status_table(app: &App, report: &crate::fleet::Report<String>) {
    let mut rows = vec![[
        "HOST".to_string(),
        "PROGRAM".to_string(),
        "STATE".to_string(),
        "PID".to_string(),
        "UPTIME".to_string(),
    ]];
    for outcome in &report.outcomes {
        if let Ok(stdout) = &outcome.result {
            for p in parse_status(stdout) {
                rows.push([outcome.host.clone(), p.program, p.state, p.pid, p.uptime]);
            }
        }
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    app.ui.table(&rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supervisorctl_status() {
        let text = "hello:hello_0   RUNNING   pid 4121, uptime 0:01:02\nhello:hello_1   FATAL     Exited too quickly (process log may have details)\nhello:hello_2   STOPPED   Not started\nhello:hello_3   STOPPED   Dec 01 07:43 PM\n";
        let parsed = parse_status(text);
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[3].detail, "since Dec 01 07:43 PM");
        assert_eq!(parsed[0].pid, "4121");
        assert_eq!(parsed[0].uptime, "0:01:02");
        assert_eq!(parsed[1].state, "FATAL");
        assert_eq!(parsed[2].pid, "");
        assert_eq!(parsed[0].detail, "");
        assert_eq!(
            parsed[1].detail,
            "Exited too quickly (process log may have details)"
        );
        assert_eq!(parsed[2].detail, "Not started");
    }

    #[test]
    fn start_with_one_argument_tells_venv_from_program() {
        let venvs = ["a".to_string(), "b".to_string()];
        let parse = |action: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            parse_action(action, &args, "hello", &venvs)
        };
        let (a, v) = parse("start", &["a"]).unwrap();
        assert_eq!((a, v), (Action::Daemon("start"), Some("a".into())));
        let (a, v) = parse("start", &["hello:*"]).unwrap();
        assert_eq!((a, v), (Action::Program("start", "hello:*".into()), None));
        // A program's name means every one of its processes.
        let (a, v) = parse("restart", &["hello", "b"]).unwrap();
        assert_eq!(
            (a, v),
            (
                Action::Program("restart", "hello:*".into()),
                Some("b".into())
            )
        );
        let (a, _) = parse("stop", &["hello:hello_1"]).unwrap();
        assert_eq!(a, Action::Program("stop", "hello:hello_1".into()));
        // `restart b`: b is a venv, not a program.
        assert!(parse("restart", &["b"]).is_err());
        assert!(parse("stop", &[]).is_err());
        assert!(parse("explode", &[]).is_err());
    }

    #[test]
    fn supervisorctl_quotes_every_word_and_leaves_the_home_to_the_shell() {
        let venv = Venv {
            name: "a".into(),
            dir: "~/it's app/a".into(),
        };
        let line = supervisorctl(&venv, &["status", "x $(y)"]);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {line}"))
            .env("HOME", "/h")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/h/it's app/a/.es/tools/bin/supervisorctl\n-c\n/h/it's app/a/etc/supervisord.conf\nstatus\nx $(y)\n"
        );
    }
}
