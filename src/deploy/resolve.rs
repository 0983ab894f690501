//! What a dry run resolves on a host whose venv has no tools venv yet.

use anyhow::Result;

use super::plan::Plan;
use crate::fleet::HostCtx;
use crate::remote::{Arg, RESOLVE};

/// A first deploy's dry run: the project and deploy.requirements resolved
/// for the host's python3 in a temporary venv (removed after), so that a
/// project or a dependency the host's Python cannot run is named now.
pub fn in_a_temporary_venv(ctx: &mut HostCtx<'_>, plan: &Plan) -> Result<String> {
    let env_path = ctx.check("mktemp")?.stdout.trim().to_string();
    let index = plan.index_env();
    ctx.conn.upload(index.as_bytes(), &env_path, 0o600)?;
    let project = format!("{}=={}", plan.project, plan.version);
    let mut args = vec![Arg::Value(&env_path), Arg::Value(&project)];
    args.extend(plan.requirements.iter().map(|r| Arg::Value(r)));
    let out = ctx.exec(&RESOLVE.shell(&args))?;
    if let Some(reason) = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("es-no-venv: "))
    {
        return Ok(format!(
            "(the dependencies are resolved at the first staging: python3 -m venv fails here: {reason})\n"
        ));
    }
    let python = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("es-python: "))
        .unwrap_or("?")
        .to_string();
    if !out.success() {
        anyhow::bail!(
            "{project} does not resolve from the index for this host's Python {python}:\n{}",
            out.stdout
                .lines()
                .filter(|l| !l.starts_with("es-python: "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let pins: Vec<&str> = out.stdout.lines().filter(|l| l.contains("==")).collect();
    Ok(format!(
        "{project} and its dependencies resolve from the index for this host's Python {python} (a temporary venv): {}\n",
        pins.join(", ")
    ))
}
