//! Adopting a venv deployed by essay (or an older es): the venv at PREFIX/VENV
//! itself. The first deploy into it keeps it as the release `legacy`, with its
//! supervisord config, so that `es rollback` goes back to it.

use anyhow::Result;

use super::host::{self, Facts, LockMode};
use crate::fleet::HostCtx;
use crate::remote::{Arg, ADOPT};

/// When `facts` show a venv of the old layout, keeps it as release `legacy`
/// (made current) and returns the facts read again; else `facts` unchanged.
pub fn adopt_if_legacy(
    ctx: &mut HostCtx<'_>,
    project: &str,
    root: &str,
    facts: Facts,
) -> Result<Facts> {
    if !facts.legacy {
        return Ok(facts);
    }
    ctx.step("adopt the essay venv");
    let out = ctx.check(&ADOPT.shell(&[Arg::Value(root), Arg::Value(project)]))?;
    if let Some(version) = out.stdout.lines().find_map(|l| l.strip_prefix("adopted=")) {
        ctx.ui().note(&format!(
            "{}: kept the venv deployed by essay ({project} {version}) as release `legacy`: `es rollback` goes back to it",
            ctx.host()
        ));
    }
    let mut again = host::read_facts(ctx, root, LockMode::Read, "")?;
    // The lock is ours: as read when it was taken.
    again.lock = facts.lock;
    Ok(again)
}
