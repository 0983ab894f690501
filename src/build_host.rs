//! `es build` on the build host (`[roles] build`, or `es build --on ROLE`).
//!
//! Everything that decides what is built happens here, as for a local build:
//! the commit is exported, stamped and `build.pre_build` run in the export on
//! this machine. The stamped tree goes to the build host as one tarball over
//! SSH, into a work directory of its own (`~/.es-build/work/XXXXXXXX`), where
//! `python -m build` from a venv kept on the host (`~/.es-build/venv`, made once
//! with the project's index) makes the sdist and the wheel. They come back here
//! to be checked, stamped with their provenance and uploaded: the upload
//! credentials never leave this machine. The work directory is removed after,
//! whether the build worked or not (src/remote/build.sh).

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::app::App;
use crate::bad_input;
use crate::cli::BuildArgs;
use crate::fleet::{Fleet, HostCtx};
use crate::hosts::{Target, TargetKind};
use crate::remote::{Arg, BUILD};
use crate::version::Version;

/// Where a remote build ran.
pub struct Built {
    /// The host as `[roles]` names it.
    pub host: String,
    /// The name the host gives itself.
    pub hostname: String,
}

/// The host `es build` builds on, or `None` for this machine: `--local`, else
/// the first host of `--on ROLE`, else of role `build` (when it is not `local`).
pub fn choose(app: &App, args: &BuildArgs) -> Result<Option<Target>> {
    if args.local {
        return Ok(None);
    }
    let config = app.config();
    let role = args.on.as_deref().unwrap_or("build");
    let hosts = match config.roles.get(role) {
        Some(hosts) => hosts,
        None if args.on.is_some() => bad_input!(
            "--on {role}: no such role; [roles] defines: {}",
            crate::config::role_list(config)
        ),
        None => return Ok(None),
    };
    let Some(first) = hosts.first() else {
        if args.on.is_some() {
            bad_input!("--on {role}: the role has no hosts");
        }
        return Ok(None);
    };
    let target = app.resolve_host(first.get_ref())?;
    if matches!(target.kind, TargetKind::Local) {
        return Ok(None);
    }
    if hosts.len() > 1 && !app.ui.quiet {
        app.ui.note(&format!(
            "es: note: role `{role}` has {} hosts; building on the first, {}",
            hosts.len(),
            target.label
        ));
    }
    Ok(Some(target))
}

/// Builds `subdir` of `tree` (the stamped export) on `target`; the sdist and
/// the wheel made there are written into `out_dir`.
pub fn build(
    app: &App,
    target: &Target,
    tree: &Path,
    subdir: &str,
    version: &Version,
    out_dir: &Path,
) -> Result<Built> {
    let tarball = pack(tree)?;
    let index_url = app.config().index.url.clone().unwrap_or_default();
    let index_env = crate::remote::env_file([
        ("ES_INDEX_URL", index_url.as_str()),
        (
            "ES_TRUSTED_HOST",
            crate::pip::trusted_host(&index_url).as_str(),
        ),
    ]);
    let job = Job {
        app,
        tarball: &tarball,
        index_env: &index_env,
        subdir,
        version: version.to_string(),
    };
    let fleet = Fleet {
        targets: vec![target.clone()],
        parallel: 1,
        connect: app.connect_options(),
        ui: &app.ui,
        announce_steps: false,
        despite_interrupt: false,
        pool: None,
    };
    let report = fleet.run(|ctx| job.run(ctx));
    app.ui.clear();
    let outcome = report
        .outcomes
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the build on {} did not run", target.label))?;
    let (hostname, files) = match outcome.result {
        Ok(done) => done,
        Err(failure) => {
            return Err(anyhow!(
                "building on {} failed at {}: {}",
                target.label,
                failure.step,
                app.ui.mask(&failure.error)
            ))
        }
    };
    for (name, contents) in files {
        let path = out_dir.join(&name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Built {
        host: target.label.clone(),
        hostname,
    })
}

/// One remote build: what goes to the host.
struct Job<'a> {
    app: &'a App,
    tarball: &'a [u8],
    index_env: &'a str,
    subdir: &'a str,
    version: String,
}

/// The files a build made: name and contents.
type Files = Vec<(String, Vec<u8>)>;

impl Job<'_> {
    /// Makes the work directory, builds in it, and removes it again.
    fn run(&self, ctx: &mut HostCtx<'_>) -> Result<(String, Files)> {
        ctx.step("prepare");
        let out = ctx
            .check(&BUILD.shell(&[Arg::Value("prepare")]))
            .context("making the build work directory")?;
        let dir = field(&out.stdout, "dir")
            .ok_or_else(|| anyhow!("the host did not say where its work directory is"))?;
        let hostname = field(&out.stdout, "hostname").unwrap_or_default();
        if !self.app.ui.quiet {
            self.app.ui.note(&format!(
                "es: building sdist and wheel with python -m build on {} ({hostname}), in {dir}",
                ctx.host()
            ));
        }
        let result = self.build_in(ctx, &dir);
        // Removed whatever happened (a failing build removes it itself too).
        let cleaned = ctx
            .exec(&BUILD.shell(&[Arg::Value("clean"), Arg::Value(&dir)]))
            .and_then(|out| out.ok());
        if let Err(err) = cleaned {
            self.app.ui.note(&format!(
                "es: warning: {}: could not remove the work directory {dir} (the next build there removes it after a day): {}",
                ctx.host(),
                crate::fleet::describe(&err)
            ));
        }
        result.map(|files| (hostname, files))
    }

    /// Uploads the tree and the index settings, builds, and takes the files back.
    fn build_in(&self, ctx: &mut HostCtx<'_>, dir: &str) -> Result<Files> {
        stop_if_interrupted()?;
        ctx.step("upload");
        ctx.conn
            .upload(self.tarball, &format!("{dir}/src.tar.gz"), 0o600)
            .context("sending the tree")?;
        ctx.conn
            .upload(
                self.index_env.as_bytes(),
                &format!("{dir}/index.env"),
                0o600,
            )
            .context("sending the index settings")?;
        stop_if_interrupted()?;
        ctx.step("build");
        let command = BUILD.shell(&[
            Arg::Value("build"),
            Arg::Value(dir),
            Arg::Value(self.subdir),
            Arg::Value(&self.version),
        ]);
        let out = if self.app.ui.verbose {
            let host = ctx.host().to_string();
            let ui = &self.app.ui;
            let mut pending = Vec::new();
            let mut show = |bytes: &[u8], last: bool| {
                pending.extend_from_slice(bytes);
                let cut = match (last, pending.iter().rposition(|b| *b == b'\n')) {
                    (true, _) => pending.len(),
                    (false, Some(i)) => i + 1,
                    (false, None) => return,
                };
                let lines: Vec<u8> = pending.drain(..cut).collect();
                for line in String::from_utf8_lossy(&lines).lines() {
                    ui.note(&format!("{host} | {line}"));
                }
            };
            let out = ctx.exec_streaming(&command, &mut |is_stderr, bytes| {
                if is_stderr {
                    show(bytes, false)
                }
            })?;
            show(&[], true);
            out
        } else {
            ctx.exec(&command)?
        };
        let out = out.ok().context("the build failed on the host")?;
        stop_if_interrupted()?;
        ctx.step("download");
        let mut files = Vec::new();
        for name in out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("artifact="))
        {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(anyhow!("the build host named a strange file: {name:?}"));
            }
            let contents = ctx
                .conn
                .download(&format!("{dir}/dist/{name}"))
                .with_context(|| format!("fetching {name}"))?;
            files.push((name.to_string(), contents));
        }
        Ok(files)
    }
}

/// After Ctrl-C or SIGTERM, nothing more is started (the work directory is
/// still removed, and nothing is uploaded).
fn stop_if_interrupted() -> Result<()> {
    if crate::interrupt::requested() {
        return Err(anyhow!("interrupted"));
    }
    Ok(())
}

/// The value of the first `key=value` line of `text`.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// `tree` as a gzipped tarball (symbolic links kept as links).
fn pack(tree: &Path) -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", tree)
        .with_context(|| format!("packing {}", tree.display()))?;
    let gz = tar.into_inner().context("packing the tree")?;
    gz.finish().context("packing the tree")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::quote;
    use std::process::Command;

    fn sh(home: &Path, line: &str) -> (String, String, i32) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .env("HOME", home)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    #[test]
    fn work_directories_are_made_private_and_only_they_are_removed() {
        let home = tempfile::tempdir().unwrap();
        let (out, err, code) = sh(home.path(), &BUILD.shell(&[Arg::Value("prepare")]));
        assert_eq!(code, 0, "{err}");
        let dir = field(&out, "dir").unwrap();
        assert!(
            dir.starts_with(&format!("{}/.es-build/work/", home.path().display())),
            "{out}"
        );
        assert!(field(&out, "hostname").is_some_and(|h| !h.is_empty()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        // Nothing outside the work directories is removed.
        let outside = home.path().join("keep");
        std::fs::create_dir(&outside).unwrap();
        let work = home.path().join(".es-build/work");
        for victim in [
            outside.display().to_string(),
            format!("{}/..", work.display()),
            format!("{}/../../keep", dir),
            format!("{}/", work.display()),
        ] {
            let (_, err, code) = sh(
                home.path(),
                &BUILD.shell(&[Arg::Value("clean"), Arg::Value(&victim)]),
            );
            assert_eq!(code, 1, "{victim}: {err}");
            assert!(err.contains("not a build work directory"), "{err}");
        }
        assert!(outside.is_dir() && Path::new(&dir).is_dir());

        let (_, err, code) = sh(
            home.path(),
            &BUILD.shell(&[Arg::Value("clean"), Arg::Value(&dir)]),
        );
        assert_eq!(code, 0, "{err}");
        assert!(!Path::new(&dir).exists());
        assert!(work.is_dir());
    }

    #[test]
    fn a_failed_build_removes_its_work_directory() {
        let home = tempfile::tempdir().unwrap();
        let (out, _, _) = sh(home.path(), &BUILD.shell(&[Arg::Value("prepare")]));
        let dir = field(&out, "dir").unwrap();
        // No index.env was sent: the build stops at once, and cleans up.
        let (_, err, code) = sh(
            home.path(),
            &BUILD.shell(&[
                Arg::Value("build"),
                Arg::Value(&dir),
                Arg::Value(""),
                Arg::Value("1.0"),
            ]),
        );
        assert_ne!(code, 0, "{err}");
        assert!(!Path::new(&dir).exists(), "{err}");
    }

    #[test]
    fn the_tree_is_packed_with_links_and_modes() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("pkg")).unwrap();
        std::fs::write(tree.path().join("pkg/it's.py"), "X = 1\n").unwrap();
        std::fs::write(tree.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            tree.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("pkg", tree.path().join("link")).unwrap();
        let packed = pack(tree.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("t.tar.gz"), packed).unwrap();
        let (_, err, code) = sh(
            out.path(),
            &format!(
                "cd {} && mkdir x && tar -xzf t.tar.gz -C x",
                quote(&out.path().display().to_string())
            ),
        );
        assert_eq!(code, 0, "{err}");
        let x = out.path().join("x");
        assert_eq!(
            std::fs::read_to_string(x.join("pkg/it's.py")).unwrap(),
            "X = 1\n"
        );
        assert_eq!(
            std::fs::metadata(x.join("run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_link(x.join("link")).unwrap(),
            Path::new("pkg")
        );
    }
}
