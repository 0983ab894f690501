//! `es run`: a shell command on every host, its output prefixed by host.

use anyhow::Result;
use serde_json::json;

use crate::app::App;
use crate::cli::RunArgs;
use crate::quote::quote;

/// Runs the command everywhere; true when it succeeded on every host.
pub fn run(app: &App, args: &RunArgs) -> Result<bool> {
    // The words after `--` are shell code, joined with spaces as ssh(1) does.
    let script = args.command.join(" ");
    let command = if args.sudo {
        format!("sudo -n -- sh -c {}", quote(&script))
    } else {
        script
    };
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| {
        ctx.step("running");
        let out = ctx.exec(&command)?;
        let host = ctx.host().to_string();
        let ui = ctx.ui();
        ui.event(
            "output",
            &host,
            json!({ "stdout": out.stdout, "stderr": out.stderr, "status": out.status }),
        );
        if !ui.quiet && ui.mode != crate::ui::Mode::Json {
            ui.host_text(&host, &out.stdout);
            for line in out.stderr.lines() {
                ui.note(&format!("{host} ! {line}"));
            }
        }
        out.ok().map(drop)
    });
    report.print_summary(&app.ui, "run");
    Ok(report.all_ok())
}
