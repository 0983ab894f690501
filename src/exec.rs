//! `es exec [VENV] [-i] -- CMD...`: a command in the venv's current release
//! (its venv activated, es.env with deploy.env and the secrets loaded, cwd the
//! release), on every host with output prefixed, or on one host on a terminal.
//! The secrets stay in the release's es.env on the host: never on a command
//! line, never through es.

use anyhow::Result;

use crate::app::App;
use crate::bad_input;
use crate::cli::ExecArgs;
use crate::remote::{Arg, EXEC};

/// Runs the command; true when it succeeded on every host.
pub fn exec(app: &App, args: &ExecArgs) -> Result<bool> {
    let venv = app.venv(args.venv.as_deref())?;
    let mut line = vec![Arg::Path(&venv.dir)];
    line.extend(args.command.iter().map(|word| Arg::Value(word)));
    let command = EXEC.shell(&line);
    if !args.interactive {
        return crate::run::on_every_host(app, &command, &format!("exec in venv {}", venv.name));
    }
    let fleet = app.fleet(false)?;
    let [target] = fleet.targets.as_slice() else {
        bad_input!(
            "es exec -i runs on exactly one host, and {} are chosen: name one with -H HOST",
            fleet.targets.len()
        );
    };
    let mut conn = crate::ssh::Connection::open(target, &fleet.connect)?;
    let status = conn.interactive(&command)?;
    if status != 0 {
        app.ui.note(&format!(
            "es: {}: the command exited {status}",
            target.label
        ));
    }
    Ok(status == 0)
}
