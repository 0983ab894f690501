//! `es maintenance on|off|status [VENV]`: nginx on every host of the role
//! answers the venv's site with a maintenance page (503 and Retry-After) while
//! the venv's processes keep running. The venv's nginx site includes
//! `PREFIX/VENV/maintenance/*.conf` in its server block; `on` writes the
//! snippet there (`maintenance.sh`), checks with `nginx -T` that nginx reads
//! it, and reloads nginx; `off` removes it and reloads. `es deploy` refuses
//! while a host is in maintenance, unless `--during-maintenance`.

use anyhow::{bail, Context, Result};
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};
use serde_json::json;

use super::drain::config_files;
use super::{reload_if_running, remote_temp, run_test, Nginx};
use crate::app::App;
use crate::bad_input;
use crate::cli::{MaintenanceAction, MaintenanceArgs};
use crate::fleet::HostCtx;
use crate::remote::{Arg, MAINTENANCE};
use crate::ui::Mode;
use crate::venv::Venv;

/// es's own maintenance page, when `nginx.maintenance_page` names none.
const DEFAULT_PAGE: &str = include_str!("../../templates/maintenance.html");

/// What `on` puts on every host.
struct Page {
    /// The template's text and its name (for errors).
    template: (String, String),
    project: String,
    message: String,
    retry_after: u32,
    /// The record kept beside the page: who, when, why.
    record: String,
}

impl Page {
    /// The page for `host`.
    fn render(&self, venv: &Venv, host: &str) -> Result<String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        let (name, source) = &self.template;
        env.render_str(
            source,
            context! {
                project => self.project,
                virtualenv_name => venv.name,
                host => host,
                message => self.message,
                retry_after => self.retry_after,
                retry_minutes => self.retry_after.div_ceil(60).max(1),
            },
        )
        .with_context(|| format!("rendering the maintenance page {name}"))
    }
}

/// `es maintenance`.
pub fn command(app: &App, args: &MaintenanceArgs) -> Result<bool> {
    if args.message.is_some() && args.action != MaintenanceAction::On {
        bad_input!("-m MESSAGE goes with `es maintenance on`");
    }
    let nginx = Nginx::new(app, None, None, args.sudo, args.no_sudo)?;
    let venv = app.venv(args.venv.as_deref())?;
    let page = match args.action {
        MaintenanceAction::On => Some(page(app, args)?),
        _ => None,
    };
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| {
        let state = match &page {
            Some(page) => on(ctx, &nginx, &venv, page)?,
            None if args.action == MaintenanceAction::Off => off(ctx, &nginx, &venv)?,
            None => status(ctx, &venv)?,
        };
        let host = ctx.host().to_string();
        let ui = ctx.ui();
        ui.event("maintenance", &host, json!({ "result": state }));
        if !ui.quiet && args.action != MaintenanceAction::Status {
            ui.note(&format!("{host}: {state}"));
        }
        Ok(state)
    });
    if args.action == MaintenanceAction::Status && app.ui.mode != Mode::Json {
        let mut table = vec![vec!["HOST".to_string(), "MAINTENANCE".to_string()]];
        for outcome in &report.outcomes {
            let text = match &outcome.result {
                Ok(state) => state.clone(),
                Err(failure) => format!("unreachable: {}", failure.error),
            };
            table.push(vec![outcome.host.clone(), text]);
        }
        app.ui.table(&table);
    }
    let title = match args.action {
        MaintenanceAction::On => format!("maintenance on, venv {}", venv.name),
        MaintenanceAction::Off => format!("maintenance off, venv {}", venv.name),
        MaintenanceAction::Status => format!("maintenance status, venv {}", venv.name),
    };
    report.print_summary(&app.ui, &title);
    Ok(report.all_ok())
}

/// The page's template (the project's, else es's), checked by rendering it once.
fn page(app: &App, args: &MaintenanceArgs) -> Result<Page> {
    let config = &app.config().nginx;
    let template = match &config.maintenance_page {
        Some(path) => {
            let file = app.config_path(path);
            match std::fs::read_to_string(&file) {
                Ok(source) => (file.display().to_string(), source),
                Err(e) => bad_input!(
                    "nginx.maintenance_page: cannot read {}: {e}",
                    file.display()
                ),
            }
        }
        None => (
            "es's maintenance page".to_string(),
            DEFAULT_PAGE.to_string(),
        ),
    };
    let message = args.message.clone().unwrap_or_default();
    let record = json!({
        "user": crate::identity::login(),
        "machine": crate::identity::machine(),
        "since": crate::clock::now_utc(),
        "message": message,
    });
    let page = Page {
        template,
        project: app
            .config()
            .project
            .name
            .clone()
            .unwrap_or_else(|| "This service".into()),
        message,
        retry_after: config.maintenance_retry_after,
        record: record.to_string(),
    };
    if let Err(err) = page.render(&Venv::new("~", "check")?, "host") {
        bad_input!("{err:#}");
    }
    Ok(page)
}

/// Turns maintenance on on one host: page and snippet written, nginx seen to
/// read the snippet, reloaded. When nginx does not include it, nothing stays.
fn on(ctx: &mut HostCtx<'_>, nginx: &Nginx, venv: &Venv, page: &Page) -> Result<String> {
    ctx.step("write page");
    let host = ctx.host().to_string();
    let text = page.render(venv, &host)?;
    let staged = remote_temp(ctx, "\"${TMPDIR:-/tmp}/es-maintenance.XXXXXX\"")?;
    ctx.conn.upload(text.as_bytes(), &staged, 0o600)?;
    let retry_after = page.retry_after.to_string();
    let out = ctx.check(&MAINTENANCE.shell(&[
        Arg::Path(&venv.dir),
        Arg::Value("on"),
        Arg::Value(&staged),
        Arg::Value(&page.record),
        Arg::Value(&retry_after),
    ]))?;
    let snippet = value(&out.stdout, "snippet").unwrap_or_default();

    ctx.step("test config");
    let dump = ctx.exec(&nginx.command("-T"))?;
    let included = config_files(&dump.stdout).contains(&snippet);
    if !dump.success() || !included {
        ctx.step("undo");
        ctx.check(&MAINTENANCE.shell(&[Arg::Path(&venv.dir), Arg::Value("off")]))?;
        if !dump.success() {
            bail!(
                "{} fails `nginx -T` with the maintenance snippet: {}; maintenance stays off",
                nginx.conf,
                crate::failure::tail(&dump.stderr, 6)
            );
        }
        let dir = snippet.trim_end_matches("/es-maintenance.conf");
        bail!(
            "nginx's config ({}) does not include the maintenance snippet: add `include {dir}/*.conf;` to the venv's server block; maintenance stays off",
            nginx.conf
        );
    }
    reload_if_running(
        ctx,
        nginx,
        "on: nginx answers 503 with the maintenance page",
    )
}

/// Turns maintenance off on one host: snippet removed, nginx tested and reloaded.
fn off(ctx: &mut HostCtx<'_>, nginx: &Nginx, venv: &Venv) -> Result<String> {
    ctx.step("remove snippet");
    let out = ctx.check(&MAINTENANCE.shell(&[Arg::Path(&venv.dir), Arg::Value("off")]))?;
    if value(&out.stdout, "was").is_none() {
        return Ok("off (it was not on)".into());
    }
    ctx.step("test config");
    run_test(ctx, nginx)?;
    reload_if_running(ctx, nginx, "off: nginx serves the site again")
}

/// Whether the venv is in maintenance on one host, said for people.
fn status(ctx: &mut HostCtx<'_>, venv: &Venv) -> Result<String> {
    ctx.step("maintenance status");
    let out = ctx.check(&MAINTENANCE.shell(&[Arg::Path(&venv.dir), Arg::Value("status")]))?;
    Ok(match value(&out.stdout, "was") {
        Some(record) => format!("on, {}", describe(&record)),
        None => "off".into(),
    })
}

/// A maintenance record (`on.json`), said for people: by whom, since when, why.
pub fn describe(record: &str) -> String {
    let record: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
    let text = |key: &str| record[key].as_str().unwrap_or("?").to_string();
    let message = record["message"].as_str().unwrap_or_default();
    let mut said = format!(
        "set by {}@{} at {}",
        text("user"),
        text("machine"),
        text("since")
    );
    if !message.is_empty() {
        said.push_str(&format!(": \"{message}\""));
    }
    said
}

/// The value of the first `key=value` line.
fn value(stdout: &str, key: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_page_says_why_and_when_to_come_back() {
        let page = Page {
            template: ("default".into(), DEFAULT_PAGE.into()),
            project: "shop".into(),
            message: "Moving to a <new> database".into(),
            retry_after: 600,
            record: String::new(),
        };
        let venv = Venv::new("~/shop", "a").unwrap();
        let text = page.render(&venv, "web1").unwrap();
        assert!(text.contains("shop is down for maintenance"), "{text}");
        assert!(text.contains("Moving to a &lt;new&gt; database"), "{text}");
        assert!(text.contains("try again in 10 minutes"), "{text}");
        let short = Page {
            retry_after: 30,
            message: String::new(),
            ..page
        };
        let text = short.render(&venv, "web1").unwrap();
        assert!(text.contains("try again in 1 minute."), "{text}");
        assert!(!text.contains("<p></p>"), "{text}");
    }

    #[test]
    fn a_record_is_said_with_its_message() {
        let record =
            r#"{"user":"ann","machine":"ci1","since":"2026-12-04T08:00:00Z","message":"db move"}"#;
        assert_eq!(
            describe(record),
            "set by ann@ci1 at 2026-12-04T08:00:00Z: \"db move\""
        );
        assert_eq!(
            value("was=x=1\nsnippet=/a\n", "was").as_deref(),
            Some("x=1")
        );
    }
}
