//! Who holds a venv's ports on a host: an answer to a health check proves
//! nothing when another process gives it (src/remote/ports.py).

use anyhow::{bail, Result};

use crate::fleet::HostCtx;
use crate::remote::{parse_owners, Arg, PORTS};

/// One line per port of `ports` that a process outside venv `dir` (its
/// supervisord and its releases) listens on, naming that process.
pub fn foreign_holders(ctx: &mut HostCtx<'_>, dir: &str, ports: &[String]) -> Result<Vec<String>> {
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![Arg::Path(dir)];
    args.extend(ports.iter().map(|p| Arg::Value(p)));
    let out = ctx.check(&PORTS.python("python3", &args))?;
    let owners = parse_owners(&out.stdout);
    if owners.len() != ports.len() {
        bail!(
            "who holds ports {ports:?}: no answer ({})",
            out.stderr.trim()
        );
    }
    Ok(owners
        .into_iter()
        .filter_map(|(_, holder)| holder)
        .collect())
}
