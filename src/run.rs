//! `es run`: a shell command on every host, its output prefixed by host.

use anyhow::Result;
use serde_json::json;

use crate::app::App;
use crate::cli::RunArgs;

/// Runs the command everywhere; true when it succeeded on every host.
pub fn run(app: &App, args: &RunArgs) -> Result<bool> {
    // The words after `--` are shell code, joined with spaces as ssh(1) does.
    let script = args.command.join(" ");
    let command = if args.sudo {
        crate::remote::as_root(&script)
    } else {
        script
    };
    on_every_host(app, &command, "run")
}

/// Runs `command` on every host, its output shown line by line, prefixed by
/// host; prints the summary under `title`. True when it succeeded everywhere.
pub fn on_every_host(app: &App, command: &str, title: &str) -> Result<bool> {
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| {
        ctx.step("running");
        let host = ctx.host().to_string();
        let ui = &app.ui;
        // Output is shown line by line as it comes, never held whole: a
        // command may print far more than fits in memory.
        let mut pending = [Vec::new(), Vec::new()];
        let mut show = |is_stderr: bool, bytes: &[u8], last: bool| {
            let buffer = &mut pending[usize::from(is_stderr)];
            buffer.extend_from_slice(bytes);
            let cut = if last {
                buffer.len()
            } else {
                match buffer.iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None => return,
                }
            };
            let lines: Vec<u8> = buffer.drain(..cut).collect();
            let text = String::from_utf8_lossy(&lines);
            if text.is_empty() {
                return;
            }
            if ui.mode == crate::ui::Mode::Json {
                let stream = if is_stderr { "stderr" } else { "stdout" };
                ui.event("output", &host, json!({ stream: text }));
            } else if !ui.quiet {
                if is_stderr {
                    for line in text.lines() {
                        ui.note(&format!("{host} ! {line}"));
                    }
                } else {
                    ui.host_text(&host, &text);
                }
            }
        };
        let out = ctx.exec_streaming(command, &mut |is_stderr, bytes| {
            show(is_stderr, bytes, false)
        })?;
        show(false, &[], true);
        show(true, &[], true);
        ui.event("exit", &host, json!({ "status": out.status }));
        out.ok().map(drop)
    });
    report.print_summary(&app.ui, title);
    Ok(report.all_ok())
}
