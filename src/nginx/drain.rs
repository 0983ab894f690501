//! `es nginx drain|undrain BACKEND` on one host: the upstreams' `server`
//! entries of a backend marked `down` (or no longer) in whichever file of
//! nginx's config holds them, written, tested and reloaded as the switch is.

use anyhow::{bail, Result};

use super::{read_file, reload_if_running, restore_config, run_test, write_config, Nginx};
use crate::fleet::HostCtx;

/// `drain` (`down == true`) / `undrain` on one host: every `server` entry of
/// the config's upstreams that names `backend` is marked `down` (or no longer),
/// in whichever file of the config holds it; tested, reloaded. Draining the
/// last server of an upstream that is up is refused; nothing is left changed
/// when a step fails.
pub(super) fn drain(
    ctx: &mut HostCtx<'_>,
    nginx: &Nginx,
    backend: &str,
    down: bool,
) -> Result<String> {
    ctx.step("read config");
    let dump = ctx.exec(&nginx.command("-T"))?;
    if !dump.success() {
        bail!(
            "{} fails `nginx -T`: {}",
            nginx.conf,
            crate::failure::tail(&dump.stderr, 6)
        );
    }
    let mut changes = Vec::new();
    let mut matched = 0;
    for file in config_files(&dump.stdout) {
        let old = read_file(ctx, nginx, &file)?;
        let Ok(text) = String::from_utf8(old.clone()) else {
            continue;
        };
        let marked = super::upstream::mark(&text, backend, down);
        matched += marked.matched;
        if let Some(name) = marked.emptied.first().filter(|_| down) {
            bail!(
                "draining {backend} would leave upstream {name} with no server up (in {file}): nothing changed"
            );
        }
        if marked.changed > 0 {
            changes.push((file, old, marked));
        }
    }
    if matched == 0 {
        bail!(
            "no upstream of {} names {backend}: nothing changed",
            nginx.conf
        );
    }
    if changes.is_empty() {
        return Ok(format!(
            "{backend} is already {}",
            if down { "drained" } else { "in rotation" }
        ));
    }
    ctx.step("write config");
    let mut written: Vec<&str> = Vec::new();
    let mut outcome = Ok(());
    for (file, old, marked) in &changes {
        outcome = write_config(ctx, nginx, file, old, marked.text.as_bytes());
        if outcome.is_err() {
            break;
        }
        written.push(file);
    }
    if outcome.is_ok() {
        ctx.step("test config");
        outcome = run_test(ctx, nginx);
    }
    if let Err(err) = outcome {
        ctx.step("restore config");
        for file in written {
            restore_config(ctx, nginx, file)?;
        }
        return Err(err.context(format!("{backend} was left as it was")));
    }
    let count: usize = changes.iter().map(|(_, _, m)| m.changed).sum();
    let files: Vec<&str> = changes.iter().map(|(f, _, _)| f.as_str()).collect();
    let done = format!(
        "{backend} {} ({count} server entr{} in {})",
        if down { "drained" } else { "back in rotation" },
        if count == 1 { "y" } else { "ies" },
        files.join(", ")
    );
    reload_if_running(ctx, nginx, &done)
}

/// The files of nginx's config, as `nginx -T` names them.
pub(super) fn config_files(dump: &str) -> Vec<String> {
    dump.lines()
        .filter_map(|line| {
            line.strip_prefix("# configuration file ")?
                .strip_suffix(':')
                .map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_files_of_nginx_t() {
        let dump = "nginx: the configuration file /e/n.conf syntax is ok\n# configuration file /e/n.conf:\nhttp { include /e/up.conf; }\n\n# configuration file /e/up.conf:\nupstream b { server 1.2.3.4; }\n";
        assert_eq!(config_files(dump), vec!["/e/n.conf", "/e/up.conf"]);
    }
}
