//! `es nginx`: start, stop, reload and test nginx on every host of the role, and
//! the A/B switch: a literal text replacement in its config, tested, then reloaded.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::bad_input;
use crate::cli::{NginxAction, NginxArgs};
use crate::fleet::HostCtx;
use crate::remote::{Arg, NGINX};

mod drain;
pub mod maintenance;
mod upstream;

/// How long `stop` waits for nginx to exit after `-s quit`.
const QUIT_WAIT_SECS: u32 = 15;
/// How long a reload may take to start workers on the new config.
const RELOAD_WAIT_SECS: u32 = 10;

/// nginx on a host: its binary, its config, and whether it goes through sudo.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub bin: String,
    pub conf: String,
    pub sudo: bool,
}

impl Nginx {
    /// `[nginx]` of the configuration, overridden by the flags.
    pub fn from_args(app: &App, args: &NginxArgs) -> Result<Nginx> {
        Nginx::new(
            app,
            args.bin.as_deref(),
            args.conf.as_deref(),
            args.sudo,
            args.no_sudo,
        )
    }

    /// `[nginx]` of the configuration, overridden by what is given.
    pub fn new(
        app: &App,
        bin: Option<&str>,
        conf: Option<&str>,
        sudo: bool,
        no_sudo: bool,
    ) -> Result<Nginx> {
        let config = &app.config().nginx;
        let bin = bin.unwrap_or(&config.bin).to_string();
        let conf = conf.unwrap_or(&config.conf).to_string();
        if bin.trim().is_empty() {
            bad_input!("the nginx binary is empty: set nginx.bin or give --bin");
        }
        if conf.trim().is_empty() {
            bad_input!("the nginx config is empty: set nginx.conf or give --conf");
        }
        let sudo = if no_sudo { false } else { sudo || config.sudo };
        Ok(Nginx { bin, conf, sudo })
    }

    /// `sudo -n ` when nginx is driven through sudo.
    fn sudo_prefix(&self) -> &'static str {
        if self.sudo {
            "sudo -n "
        } else {
            ""
        }
    }

    /// nginx.sh ACTION ARGS, as the user nginx is driven as.
    fn script(&self, args: &[Arg<'_>]) -> String {
        format!("{}{}", self.sudo_prefix(), NGINX.shell(args))
    }

    /// `[sudo -n] BIN -c CONF OPTIONS`; `options` are nginx's, as es writes them.
    fn command(&self, options: &str) -> String {
        let mut args = vec![
            Arg::Value("run"),
            Arg::Path(&self.bin),
            Arg::Path(&self.conf),
        ];
        args.extend(options.split_whitespace().map(Arg::Value));
        self.script(&args)
    }

    /// `nginx -t`: the config is valid.
    fn test_command(&self) -> String {
        self.command("-t")
    }

    /// Starts nginx (its output through a file: the daemon must not keep the
    /// connection's stderr open).
    fn start_command(&self) -> String {
        self.script(&[
            Arg::Value("start"),
            Arg::Path(&self.bin),
            Arg::Path(&self.conf),
        ])
    }

    /// `-s reload`, then waits until the master has started workers on the new
    /// config (a master that cannot load it keeps its old workers: that fails), and
    /// briefly for the old workers to go, so that new connections see the new config.
    fn reload_command(&self, master: u32) -> String {
        let (master, limit) = (master.to_string(), (RELOAD_WAIT_SECS * 10).to_string());
        self.script(&[
            Arg::Value("reload"),
            Arg::Path(&self.bin),
            Arg::Path(&self.conf),
            Arg::Value(&master),
            Arg::Value(&limit),
        ])
    }
}

/// `es nginx ACTION` on every host of the role.
pub fn command(app: &App, args: &NginxArgs) -> Result<bool> {
    let nginx = Nginx::from_args(app, args)?;
    let title = match &args.action {
        NginxAction::Start => "nginx start",
        NginxAction::Stop => "nginx stop",
        NginxAction::Reload => "nginx reload",
        NginxAction::Test => "nginx test",
        NginxAction::Switch { dry_run: true, .. } => "nginx switch (dry run)",
        NginxAction::Switch { .. } => "nginx switch",
        NginxAction::Drain { .. } => "nginx drain",
        NginxAction::Undrain { .. } => "nginx undrain",
    };
    if let NginxAction::Drain { backend } | NginxAction::Undrain { backend } = &args.action {
        if backend.trim().is_empty() || backend.contains(char::is_whitespace) {
            bad_input!(
                "BACKEND must be a host or HOST:PORT as the upstream names it, not {backend:?}"
            );
        }
    }
    if let NginxAction::Switch { src, dst, .. } = &args.action {
        if src.is_empty() {
            bad_input!("SRC is empty: give the text to replace");
        }
        if src == dst {
            bad_input!("SRC and DST are the same: nothing would change");
        }
    }
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| {
        let result = match &args.action {
            NginxAction::Start => start(ctx, &nginx),
            NginxAction::Stop => stop(ctx, &nginx),
            NginxAction::Reload => reload(ctx, &nginx),
            NginxAction::Test => test(ctx, &nginx),
            NginxAction::Switch { src, dst, dry_run } => switch(ctx, &nginx, src, dst, *dry_run),
            NginxAction::Drain { backend } => drain::drain(ctx, &nginx, backend, true),
            NginxAction::Undrain { backend } => drain::drain(ctx, &nginx, backend, false),
        }?;
        let host = ctx.host().to_string();
        let ui = ctx.ui();
        ui.event("nginx", &host, json!({ "result": result }));
        if !ui.quiet {
            ui.note(&format!("{host}: {result}"));
        }
        Ok(result)
    });
    report.print_summary(&app.ui, title);
    Ok(report.all_ok())
}

/// Runs `nginx -t`; fails with nginx's own words when the config is bad.
fn run_test(ctx: &mut HostCtx<'_>, nginx: &Nginx) -> Result<()> {
    let out = ctx.exec(&nginx.test_command())?;
    if !out.success() {
        bail!(
            "{} fails `nginx -t`: {}",
            nginx.conf,
            crate::failure::tail(&format!("{}{}", out.stdout, out.stderr), 6)
        );
    }
    Ok(())
}

fn test(ctx: &mut HostCtx<'_>, nginx: &Nginx) -> Result<String> {
    ctx.step("test config");
    run_test(ctx, nginx)?;
    Ok(format!("{} is valid", nginx.conf))
}

fn start(ctx: &mut HostCtx<'_>, nginx: &Nginx) -> Result<String> {
    ctx.step("test config");
    run_test(ctx, nginx)?;
    ctx.step("start");
    let pid_file = pid_file(ctx, nginx)?;
    if let Some(pid) = running(ctx, &pid_file)? {
        return Ok(format!("already running (pid {pid})"));
    }
    ctx.check(&nginx.start_command())?;
    // The master writes its pid file once it runs; give it a moment.
    for _ in 0..50 {
        if let Some(pid) = running(ctx, &pid_file)? {
            return Ok(format!("started (pid {pid})"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("nginx exited 0 but no nginx process is named in {pid_file}")
}

fn stop(ctx: &mut HostCtx<'_>, nginx: &Nginx) -> Result<String> {
    ctx.step("stop");
    let pid_file = pid_file(ctx, nginx)?;
    let Some(pid) = running(ctx, &pid_file)? else {
        return Ok("not running".into());
    };
    ctx.check(&nginx.command("-s quit"))?;
    let (waited, limit) = (pid.to_string(), (QUIT_WAIT_SECS * 10).to_string());
    let wait = NGINX.shell(&[
        Arg::Value("wait_exit"),
        Arg::Value(&waited),
        Arg::Value(&limit),
    ]);
    if ctx.exec(&wait)?.success() {
        Ok(format!("stopped (was pid {pid})"))
    } else {
        Ok(format!(
            "asked to quit (pid {pid}); still finishing open connections after {QUIT_WAIT_SECS}s"
        ))
    }
}

fn reload(ctx: &mut HostCtx<'_>, nginx: &Nginx) -> Result<String> {
    ctx.step("test config");
    run_test(ctx, nginx)?;
    ctx.step("reload");
    let pid_file = pid_file(ctx, nginx)?;
    let Some(pid) = running(ctx, &pid_file)? else {
        bail!("nginx is not running (no live pid in {pid_file}): start it with `es nginx start`");
    };
    ctx.check(&nginx.reload_command(pid))?;
    Ok(format!("reloaded (pid {pid})"))
}

/// The A/B switch on one host. Nothing is left changed when it fails.
fn switch(
    ctx: &mut HostCtx<'_>,
    nginx: &Nginx,
    src: &str,
    dst: &str,
    dry_run: bool,
) -> Result<String> {
    ctx.step("read config");
    // Change the file itself, not a symlink to it.
    let conf = expand(ctx, &nginx.conf)?;
    let real = ctx
        .check(&nginx.script(&[Arg::Value("resolve"), Arg::Value(&conf)]))
        .with_context(|| format!("{} does not exist", nginx.conf))?
        .stdout
        .trim_end_matches('\n')
        .to_string();
    if real.is_empty() {
        bail!("cannot resolve {}", nginx.conf);
    }
    let old = read_file(ctx, nginx, &real)?;
    let (new, count) = replace_all(&old, src.as_bytes(), dst.as_bytes());
    if count == 0 {
        bail!("`{src}` does not occur in {}: nothing changed", nginx.conf);
    }
    let changes = changed_lines(&old, src.as_bytes(), dst.as_bytes());
    let lines = changes.len();
    if dry_run {
        let host = ctx.host().to_string();
        let ui = ctx.ui();
        ui.event(
            "switch_preview",
            &host,
            json!({ "file": real, "changes": changes.iter().map(|(n, a, b)| json!({"line": n, "old": a, "new": b})).collect::<Vec<_>>() }),
        );
        if ui.mode != crate::ui::Mode::Json {
            let text: String = changes
                .iter()
                .map(|(n, a, b)| format!("{real}:{n}\n- {a}\n+ {b}\n"))
                .collect();
            ui.host_text(&host, &text);
        }
        return Ok(format!(
            "would replace {count} occurrence(s) on {lines} line(s) of {real} (dry run: nothing changed)"
        ));
    }

    ctx.step("write config");
    write_config(ctx, nginx, &real, &old, &new)?;
    ctx.step("test config");
    if let Err(test_error) = run_test(ctx, nginx) {
        ctx.step("restore config");
        restore_config(ctx, nginx, &real)?;
        return Err(test_error.context(format!(
            "switching `{src}` to `{dst}` gives a config nginx refuses; the previous one is restored"
        )));
    }

    let done = format!("replaced {count} occurrence(s) on {lines} line(s)");
    reload_if_running(ctx, nginx, &done)
}

/// Reloads nginx when it runs; `done` says what changed.
fn reload_if_running(ctx: &mut HostCtx<'_>, nginx: &Nginx, done: &str) -> Result<String> {
    ctx.step("reload");
    let pid_file = pid_file(ctx, nginx)?;
    match running(ctx, &pid_file)? {
        Some(pid) => {
            ctx.check(&nginx.reload_command(pid))?;
            Ok(format!("{done}, reloaded (pid {pid})"))
        }
        None => Ok(format!(
            "{done}; nginx is not running, the config applies when it starts"
        )),
    }
}

/// A new temporary file (`-d`: directory) on the host, from `mktemp ARGS TEMPLATE`.
fn remote_temp(ctx: &mut HostCtx<'_>, args: &str) -> Result<String> {
    let path = ctx
        .check(&format!("mktemp {args}"))?
        .stdout
        .trim()
        .to_string();
    if !path.starts_with('/') {
        bail!("mktemp gave {path:?}, not an absolute path");
    }
    Ok(path)
}

/// Replaces the config file `real` (whose bytes were `old`) by `new`: staged
/// in a temporary directory, refused when the file changed meanwhile, the old
/// one kept as `REAL.es-bak`, installed by a rename.
fn write_config(
    ctx: &mut HostCtx<'_>,
    nginx: &Nginx,
    real: &str,
    old: &[u8],
    new: &[u8],
) -> Result<()> {
    let dir = remote_temp(ctx, "-d \"${TMPDIR:-/tmp}/es-nginx.XXXXXX\"")?;
    let staged = format!("{dir}/new.conf");
    if let Err(err) = ctx.conn.upload(new, &staged, 0o600) {
        let _ = ctx.exec(&NGINX.shell(&[Arg::Value("discard"), Arg::Value(&dir)]));
        return Err(err);
    }
    let expected = hex(&Sha256::digest(old));
    ctx.check(&nginx.script(&[
        Arg::Value("install"),
        Arg::Value(real),
        Arg::Value(&dir),
        Arg::Value(&expected),
    ]))?;
    Ok(())
}

/// Puts `REAL.es-bak` back in place of the config file `real`.
fn restore_config(ctx: &mut HostCtx<'_>, nginx: &Nginx, real: &str) -> Result<()> {
    ctx.check(&nginx.script(&[Arg::Value("restore"), Arg::Value(real)]))
        .with_context(|| {
            format!("restoring the previous {real} failed: restore it from {real}.es-bak by hand")
        })?;
    Ok(())
}

/// A path with its leading `~/` expanded for the login user (not for root under sudo).
fn expand(ctx: &mut HostCtx<'_>, path: &str) -> Result<String> {
    if !path.starts_with('~') {
        return Ok(path.to_string());
    }
    Ok(ctx
        .check(&NGINX.shell(&[Arg::Value("expand"), Arg::Path(path)]))?
        .stdout)
}

/// A file's bytes, exactly (read through base64: the transport keeps text only).
fn read_file(ctx: &mut HostCtx<'_>, nginx: &Nginx, path: &str) -> Result<Vec<u8>> {
    let out = ctx.check(&nginx.script(&[Arg::Value("read"), Arg::Value(path)]))?;
    let clean: String = out.stdout.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| anyhow!("reading {path}: {e}"))
}

/// The pid file nginx uses: `pid` at the config's top level, else the built-in one.
fn pid_file(ctx: &mut HostCtx<'_>, nginx: &Nginx) -> Result<String> {
    let conf = expand(ctx, &nginx.conf)?;
    let out = ctx.check(&nginx.script(&[Arg::Value("cat"), Arg::Value(&conf)]))?;
    let configured = top_level_directive(&out.stdout, "pid");
    let version = ctx.exec(&NGINX.shell(&[Arg::Value("version"), Arg::Path(&nginx.bin)]))?;
    let option = |name: &str| {
        version
            .stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name).map(str::to_string))
    };
    let path = configured
        .or_else(|| option("--pid-path="))
        .unwrap_or_else(|| "logs/nginx.pid".into());
    if path.starts_with('/') {
        return Ok(path);
    }
    let prefix = option("--prefix=").unwrap_or_else(|| "/usr/local/nginx/".into());
    Ok(format!("{}/{path}", prefix.trim_end_matches('/')))
}

/// The pid of the nginx master named by `pid_file`, when one runs.
fn running(ctx: &mut HostCtx<'_>, pid_file: &str) -> Result<Option<u32>> {
    let script = NGINX.shell(&[Arg::Value("running"), Arg::Value(pid_file)]);
    let out = ctx.check(&script)?;
    Ok(out.stdout.trim().parse().ok())
}

/// The argument of a directive at the top level of an nginx config (outside any
/// block), e.g. `pid /run/nginx.pid;`.
pub fn top_level_directive(text: &str, name: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut statement: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    let mut quote_char: Option<char> = None;
    let flush = |word: &mut String, statement: &mut Vec<String>| {
        if !word.is_empty() {
            statement.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        if let Some(q) = quote_char {
            match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                    }
                }
                c if c == q => quote_char = None,
                c => word.push(c),
            }
            continue;
        }
        match c {
            '"' | '\'' => quote_char = Some(c),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                flush(&mut word, &mut statement);
            }
            c if c.is_whitespace() => flush(&mut word, &mut statement),
            ';' => {
                flush(&mut word, &mut statement);
                if depth == 0 && statement.len() >= 2 && statement[0] == name {
                    return Some(statement[1].clone());
                }
                statement.clear();
            }
            '{' => {
                flush(&mut word, &mut statement);
                statement.clear();
                depth += 1;
            }
            '}' => {
                flush(&mut word, &mut statement);
                statement.clear();
                depth = depth.saturating_sub(1);
            }
            c => word.push(c),
        }
    }
    None
}

/// `haystack` with every `needle` replaced by `with`, and how many there were.
pub fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(haystack.len());
    let mut count = 0;
    let mut i = 0;
    while i < haystack.len() {
        if !needle.is_empty() && haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
            count += 1;
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    (out, count)
}

/// The lines holding `needle`: (1-based number, before, after). A needle that
/// spans lines shows as the lines it starts on.
pub fn changed_lines(text: &[u8], needle: &[u8], with: &[u8]) -> Vec<(usize, String, String)> {
    text.split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let (after, n) = replace_all(line, needle, with);
            (n > 0).then(|| {
                (
                    i + 1,
                    String::from_utf8_lossy(line).into_owned(),
                    String::from_utf8_lossy(&after).into_owned(),
                )
            })
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_literal_occurrence() {
        let (out, n) = replace_all(b"include upstreamA.conf; # upstreamA", b"upstreamA", b"B");
        assert_eq!(n, 2);
        assert_eq!(out, b"include B.conf; # B");
        // Not a pattern: dots and stars are literal.
        let (out, n) = replace_all(b"a.b a*b", b"a.b", b"x");
        assert_eq!((out.as_slice(), n), (&b"x a*b"[..], 1));
        let (_, n) = replace_all(b"abc", b"zz", b"y");
        assert_eq!(n, 0);
        // Bytes that are not UTF-8 survive.
        let (out, _) = replace_all(b"\xff A \xfe", b"A", b"B");
        assert_eq!(out, b"\xff B \xfe");
    }

    #[test]
    fn shows_the_lines_that_change() {
        let text = b"http {\n  include upstreamA.conf;\n}\n# upstreamA upstreamA\n";
        let lines = changed_lines(text, b"upstreamA", b"upstreamB");
        assert_eq!(
            lines,
            vec![
                (
                    2,
                    "  include upstreamA.conf;".to_string(),
                    "  include upstreamB.conf;".to_string()
                ),
                (
                    4,
                    "# upstreamA upstreamA".to_string(),
                    "# upstreamB upstreamB".to_string()
                ),
            ]
        );
    }

    #[test]
    fn finds_the_top_level_pid() {
        let conf = "# pid /commented;\nuser www;\nhttp {\n  pid /not/here;\n  server { listen 80; }\n}\npid \"/home/d/nginx x.pid\";\n";
        assert_eq!(
            top_level_directive(conf, "pid").as_deref(),
            Some("/home/d/nginx x.pid")
        );
        assert_eq!(top_level_directive("events {}\n", "pid"), None);
        assert_eq!(
            top_level_directive("pid logs/n.pid;", "pid").as_deref(),
            Some("logs/n.pid")
        );
    }

    #[test]
    fn commands_quote_paths_and_use_sudo_n() {
        let nginx = Nginx {
            bin: "/opt/my nginx/sbin/nginx".into(),
            conf: "~/conf dir/nginx.conf".into(),
            sudo: true,
        };
        let test = nginx.test_command();
        assert!(test.starts_with("sudo -n sh -c "), "{test}");
        assert!(
            test.ends_with(" es run '/opt/my nginx/sbin/nginx' ~/'conf dir/nginx.conf' -t"),
            "{test}"
        );
        let plain = Nginx {
            sudo: false,
            ..nginx
        };
        assert!(plain.test_command().starts_with("sh -c "));
    }
}
