//! The job queue of `es serve`: one job at a time per role and venv, each one
//! a fetch of the pushed commit into the server's own clone, `es build` of
//! that exact commit and `es deploy` of the version built, with the trigger's
//! settings.
//!
//! The `es` runs write their output to the job's log file (not a pipe), so a
//! server that dies does not kill them mid-step; they get SIGTERM instead
//! (PR_SET_PDEATHSIG, see `spawn`), which es's interrupt guard turns into
//! "finish the step, switch nothing more, unlock". A restarted server marks
//! such jobs interrupted, with the hosts of the deploy's report when it wrote one.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::db::{self, Db, Job, NewJob};
use super::joblog::{log_path, JobLog};
use super::reports::{host_results, last_error_line, read_report, stopped_or_failed, Outcome};
use super::{notify, spawn, Settings, TriggerSpec};

/// The queue and the jobs running now.
#[derive(Clone)]
pub struct Queue {
    db: Arc<Db>,
    settings: Arc<Settings>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    running: Arc<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>,
}

impl Queue {
    pub fn new(db: Arc<Db>, settings: Arc<Settings>) -> Queue {
        Queue {
            db,
            settings,
            wake: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Queues a deploy (coalesced into a queued job of the same role and venv).
    pub fn submit(&self, job: NewJob) -> Result<(i64, bool)> {
        let queued = self.db.enqueue(&job)?;
        eprintln!(
            "es serve: job {} {} ({}, {} {})",
            queued.0,
            if queued.1 {
                "takes a newer push"
            } else {
                "queued"
            },
            job.trigger,
            job.branch,
            job.commit.as_deref().unwrap_or("head")
        );
        self.wake.notify_one();
        Ok(queued)
    }

    /// After a restart: jobs the last server left running are interrupted
    /// (their `es` got SIGTERM when it died); their log is read to its end.
    pub async fn recover(&self) -> Result<()> {
        for job in self.db.running()? {
            if let Some(pid) = job.pid {
                wait_gone(pid).await;
            }
            let mut log = JobLog::open(&self.settings, job.id, job.log_offset)?;
            log.line(&format!(
                "es serve: the server stopped while this job ran (restarted at {})",
                crate::clock::now_utc()
            ));
            // The deploy's report, when the child `es` lived to write it,
            // says which hosts switched.
            let report = self
                .settings
                .state_dir
                .join("work")
                .join(format!("{}-deploy.json", job.id));
            let hosts = read_report(&report)
                .map(|r| host_results(&r))
                .unwrap_or_default();
            let switched = hosts.iter().filter(|h| h.ok).count();
            let error = if hosts.is_empty() {
                "es serve stopped while this job ran".to_string()
            } else {
                format!(
                    "es serve stopped while this job ran; {switched} of {} hosts deployed",
                    hosts.len()
                )
            };
            log.line(&format!("es serve: {}: {error}", db::INTERRUPTED));
            log.sync(&self.db, true);
            self.db
                .finish(job.id, db::INTERRUPTED, Some(&error), &hosts)?;
            eprintln!(
                "es serve: job {} was running when the server stopped: interrupted ({} hosts in its report)",
                job.id,
                hosts.len()
            );
            self.notify("failure", job.id);
            let work = self.settings.state_dir.join("work");
            let _ = std::fs::remove_file(work.join(format!("{}-upload", job.id)));
            let _ = std::fs::remove_dir_all(
                self.settings
                    .state_dir
                    .join("work")
                    .join(job.id.to_string()),
            );
        }
        let repo = self.settings.state_dir.join("repo.git");
        if repo.join("HEAD").is_file() {
            let _ = self.git_output(&repo, &["worktree", "prune"]).await;
        }
        let cutoff = db::now() - self.settings.log_retention_days * 86_400;
        self.db.prune_deliveries(cutoff)?;
        for id in self.db.prune_logs(cutoff)? {
            let _ = std::fs::remove_file(log_path(&self.settings, id));
        }
        Ok(())
    }

    /// Starts queued jobs whose quiet period is over, one per role and venv,
    /// until the server stops.
    pub async fn schedule(self) {
        let mut stop = self.stop.subscribe();
        let mut last_prune = db::now();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
            if *self.stop.borrow() {
                return;
            }
            let ready = match self.db.ready(db::now()) {
                Ok(ready) => ready,
                Err(err) => {
                    eprintln!("es serve: reading the queue: {err:#}");
                    continue;
                }
            };
            for job in ready {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                running.retain(|_, handle| !handle.is_finished());
                if running.contains_key(&job.key) {
                    continue;
                }
                match self.db.start(job.id) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(err) => {
                        eprintln!("es serve: starting job {}: {err:#}", job.id);
                        continue;
                    }
                }
                let key = job.key.clone();
                let queue = self.clone();
                running.insert(key, tokio::spawn(async move { queue.run(job).await }));
            }
            if db::now() - last_prune > 3600 {
                last_prune = db::now();
                let cutoff = last_prune - self.settings.log_retention_days * 86_400;
                if let Err(err) = self.db.prune_deliveries(cutoff) {
                    eprintln!("es serve: pruning deliveries: {err:#}");
                }
                if let Ok(ids) = self.db.prune_logs(cutoff) {
                    for id in ids {
                        let _ = std::fs::remove_file(log_path(&self.settings, id));
                    }
                }
            }
        }
    }

    /// Tells running jobs to stop (their `es` gets SIGTERM) and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let handles: Vec<_> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.drain().map(|(_, h)| h).collect()
        };
        for handle in handles {
            let _ = handle.await;
        }
    }

    async fn run(&self, job: Job) {
        let id = job.id;
        eprintln!("es serve: job {id} started ({})", job.trigger);
        let trigger = self
            .settings
            .triggers
            .iter()
            .find(|t| t.name == job.trigger)
            .cloned();
        let mut log = match JobLog::open(&self.settings, id, 0) {
            Ok(log) => log,
            Err(err) => {
                let _ = self
                    .db
                    .finish(id, db::FAILED, Some(&format!("{err:#}")), &[]);
                return;
            }
        };
        self.notify("start", id);
        let outcome = match trigger {
            Some(trigger) => self.steps(&job, &trigger, &mut log).await,
            None => Err(anyhow!(
                "no trigger is named `{}` any more in [serve]",
                job.trigger
            )),
        };
        let (state, error, hosts) = match outcome {
            Ok(done) => done,
            Err(err) => (db::FAILED, Some(format!("{err:#}")), Vec::new()),
        };
        if let Some(error) = &error {
            log.line(&format!("es serve: {state}: {error}"));
        } else {
            log.line(&format!("es serve: {state}"));
        }
        log.sync(&self.db, true);
        if let Err(err) = self.db.finish(id, state, error.as_deref(), &hosts) {
            eprintln!("es serve: recording job {id}: {err:#}");
        }
        eprintln!("es serve: job {id} finished: {state}");
        self.notify(
            if state == db::SUCCESS {
                "success"
            } else {
                "failure"
            },
            id,
        );
    }

    fn notify(&self, event: &str, id: i64) {
        if let Ok(Some(job)) = self.db.get(id) {
            notify::send(self.settings.clone(), self.db.clone(), event, job);
        }
    }

    /// Fetch, build, deploy. Returns the job's state, its reason, its hosts.
    async fn steps(&self, job: &Job, trigger: &TriggerSpec, log: &mut JobLog) -> Result<Outcome> {
        let settings = &self.settings;
        let repo = settings.state_dir.join("repo.git");
        log.line(&format!(
            "es serve: job {} ({}): branch {}, commit {}",
            job.id,
            trigger.name,
            job.branch,
            job.commit.as_deref().unwrap_or("(the branch's newest)")
        ));
        if !repo.join("HEAD").is_file() {
            self.git(log, None, &["init", "--quiet", "--bare", &path_arg(&repo)])
                .await?;
        }
        let refspec = format!("+refs/heads/{0}:refs/heads/{0}", job.branch);
        self.git(
            log,
            Some(&repo),
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--",
                &settings.remote,
                &refspec,
            ],
        )
        .await?;
        let commit = match &job.commit {
            Some(commit) => commit.clone(),
            None => self
                .git_output(
                    &repo,
                    &[
                        "rev-parse",
                        "--verify",
                        &format!("refs/heads/{}^{{commit}}", job.branch),
                    ],
                )
                .await?
                .trim()
                .to_string(),
        };
        if self
            .git_output(&repo, &["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .await
            .is_err()
        {
            bail!(
                "commit {commit} is not on branch {} of the remote (force-pushed away?)",
                job.branch
            );
        }
        let described = self
            .git_output(&repo, &["log", "-1", "--format=%an%x00%s", &commit])
            .await?;
        let (author, subject) = described.trim_end().split_once('\0').unwrap_or(("", ""));
        self.db.set_commit(job.id, &commit, author, subject)?;
        if let Some(refused) = self
            .check_descent(job, trigger, &repo, &commit, log)
            .await?
        {
            return Ok((db::REFUSED, Some(refused), Vec::new()));
        }

        let work = settings.state_dir.join("work").join(job.id.to_string());
        let _ = std::fs::remove_dir_all(&work);
        self.git(
            log,
            Some(&repo),
            &[
                "worktree",
                "add",
                "--quiet",
                "--detach",
                "--force",
                &path_arg(&work),
                &commit,
            ],
        )
        .await?;
        let result = self.build_and_deploy(job, trigger, &work, log).await;
        let _ = self
            .git_output(&repo, &["worktree", "remove", "--force", &path_arg(&work)])
            .await;
        let _ = std::fs::remove_dir_all(&work);
        let _ = self.git_output(&repo, &["worktree", "prune"]).await;
        result
    }

    /// A pushed commit must descend from the one this trigger last deployed
    /// from the branch: an older commit (a late or replayed push) or a
    /// force-push ships nothing unless the trigger has `allow_force_push`.
    /// Deploys by hand and re-deploys of a version are not checked.
    async fn check_descent(
        &self,
        job: &Job,
        trigger: &TriggerSpec,
        repo: &Path,
        commit: &str,
        log: &mut JobLog,
    ) -> Result<Option<String>> {
        if job.version.is_some() || !db::is_push(&job.source) {
            return Ok(None);
        }
        let Some((last_job, last)) = self.db.last_deployed(&job.key, &job.branch, job.id)? else {
            return Ok(None);
        };
        let descends = last != commit
            && self
                .git_output(repo, &["merge-base", "--is-ancestor", &last, commit])
                .await
                .is_ok();
        if descends {
            return Ok(None);
        }
        let why = if last == commit {
            format!("commit {commit} is already deployed (job {last_job})")
        } else {
            format!(
                "commit {commit} does not descend from {last}, which job {last_job} deployed from {}: an older commit or a force-push",
                job.branch
            )
        };
        if trigger.allow_force_push && last != commit {
            log.line(&format!(
                "es serve: {why}; deployed anyway (allow_force_push)"
            ));
            return Ok(None);
        }
        Ok(Some(format!("refused: {why}")))
    }

    async fn build_and_deploy(
        &self,
        job: &Job,
        trigger: &TriggerSpec,
        work: &Path,
        log: &mut JobLog,
    ) -> Result<Outcome> {
        let config = work.join(&self.settings.job_config);
        if !config.is_file() {
            bail!(
                "the commit has no {} (serve.config): nothing says how to build and deploy it",
                self.settings.job_config
            );
        }
        let version = match &job.version {
            // Deploy again, or roll back: the version is on the index already.
            Some(version) => {
                log.line(&format!(
                    "es serve: deploying {version} again (built before; no build)"
                ));
                version.clone()
            }
            None => match self.build(job, work, &path_arg(&config), log).await? {
                Ok(version) => version,
                Err(stopped) => return Ok(stopped),
            },
        };
        if *self.stop.borrow() {
            return Ok((
                db::INTERRUPTED,
                Some(format!(
                    "es serve stopped after building {version}; nothing was deployed"
                )),
                Vec::new(),
            ));
        }
        let deploy_report = self
            .settings
            .state_dir
            .join("work")
            .join(format!("{}-deploy.json", job.id));
        let mut deploy_args = vec![
            "-c".to_string(),
            path_arg(&config),
            "-R".into(),
            trigger.role.clone(),
            "--report".into(),
            path_arg(&deploy_report),
            "deploy".into(),
            version.clone(),
            trigger.venv.clone(),
            trigger.profile.clone(),
        ];
        if let Some(batch) = &trigger.batch {
            deploy_args.extend(["--batch".into(), batch.clone()]);
        }
        if let Some(max_fail) = &trigger.max_fail {
            deploy_args.extend(["--max-fail".into(), max_fail.clone()]);
        }
        if let Some(pause) = trigger.pause {
            deploy_args.extend(["--pause".into(), pause.to_string()]);
        }
        let code = self.es(job.id, work, &deploy_args, None, log).await?;
        let report = read_report(&deploy_report).unwrap_or(Value::Null);
        let _ = std::fs::remove_file(&deploy_report);
        let hosts = host_results(&report);
        let (state, error) = match code {
            Some(0) => (db::SUCCESS, None),
            _ => {
                let (state, error, _) = stopped_or_failed(code, "es deploy failed");
                (state, error)
            }
        };
        let error = error.map(|e| match hosts.iter().find(|h| !h.ok) {
            Some(h) => format!(
                "{e}: {} of {} hosts not ok; {}: {}",
                hosts.iter().filter(|h| !h.ok).count(),
                hosts.len(),
                h.host,
                h.error.as_deref().unwrap_or(&h.outcome)
            ),
            None => e,
        });
        Ok((state, error, hosts))
    }

    /// `es build` of the job's commit as one of its branch (a branch other
    /// than the default one gets its `+branch` label, which `latest` skips);
    /// the version built, or how the job ends when the build did not succeed.
    async fn build(
        &self,
        job: &Job,
        work: &Path,
        config: &str,
        log: &mut JobLog,
    ) -> Result<std::result::Result<String, Outcome>> {
        let commit = self
            .db
            .get(job.id)?
            .and_then(|j| j.commit)
            .ok_or_else(|| anyhow!("the job lost its commit"))?;
        let scratch = self.settings.state_dir.join("work");
        let report = scratch.join(format!("{}-build.json", job.id));
        let args = vec![
            "-c".to_string(),
            config.to_string(),
            "--report".into(),
            path_arg(&report),
            "build".into(),
            "--commit".into(),
            commit,
            "--branch".into(),
            job.branch.clone(),
        ];
        let credentials = scratch.join(format!("{}-upload", job.id));
        let handed = match &self.settings.upload {
            Some((user, password)) => {
                write_private(&credentials, &format!("{user}\n{password}\n"))?;
                Some(credentials.as_path())
            }
            None => None,
        };
        let code = self.es(job.id, work, &args, handed, log).await;
        let _ = std::fs::remove_file(&credentials);
        let code = code?;
        if code != Some(0) {
            let _ = std::fs::remove_file(&report);
            let (state, error, hosts) = stopped_or_failed(code, "es build failed");
            let error = error.map(|e| match last_error_line(log) {
                Some(cause) => format!("{e}: {cause}"),
                None => e,
            });
            return Ok(Err((state, error, hosts)));
        }
        let report = read_report(&report)?;
        let version = report["version"]
            .as_str()
            .ok_or_else(|| anyhow!("es build reported no version"))?
            .to_string();
        self.db.set_version(job.id, &version)?;
        Ok(Ok(version))
    }

    /// Runs `es ARGS` in `dir` with its output into the job's log; its exit
    /// code, `None` when a signal ended it.
    async fn es(
        &self,
        id: i64,
        dir: &Path,
        args: &[String],
        credentials: Option<&Path>,
        log: &mut JobLog,
    ) -> Result<Option<i32>> {
        let exe = std::env::current_exe().context("finding the es executable")?;
        log.line(&format!(
            "$ es {}",
            args.iter()
                .map(|a| crate::quote::quote(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        log.sync(&self.db, false);
        let out = log.file_for_child()?;
        let err = out.try_clone()?;
        let mut command = std::process::Command::new(exe);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("ES_SERVE_JOB", id.to_string());
        for var in &self.settings.secret_vars {
            command.env_remove(var);
        }
        if let Some(credentials) = credentials {
            command.env(crate::index::UPLOAD_CREDENTIALS_VAR, credentials);
        }
        let mut child = spawn::spawn(command).await.context("starting es")?;
        let pid = child.id();
        self.db.set_pid(id, Some(pid))?;
        let mut waited = tokio::task::spawn_blocking(move || child.wait());
        let mut stop = self.stop.subscribe();
        let mut told = *stop.borrow();
        if told {
            spawn::terminate(pid);
        }
        let status = loop {
            tokio::select! {
                status = &mut waited => break status.context("waiting for es")??,
                _ = tokio::time::sleep(Duration::from_millis(300)) => log.sync(&self.db, false),
                changed = stop.changed(), if !told => {
                    if changed.is_ok() && *stop.borrow() {
                        told = true;
                        spawn::terminate(pid);
                    }
                }
            }
        };
        self.db.set_pid(id, None)?;
        log.sync(&self.db, false);
        Ok(status.code())
    }

    /// Runs git with its output masked into the log; fails on a non-zero exit.
    async fn git(&self, log: &mut JobLog, repo: Option<&Path>, args: &[&str]) -> Result<()> {
        let mut command = tokio::process::Command::new("git");
        if let Some(repo) = repo {
            command.arg("--git-dir").arg(repo);
        }
        let shown: Vec<String> = args
            .iter()
            .map(|a| crate::quote::quote(a).into_owned())
            .collect();
        log.line(&format!("$ git {}", shown.join(" ")));
        for var in &self.settings.secret_vars {
            command.env_remove(var);
        }
        let out = command
            .args(args)
            .stdin(Stdio::null())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .await
            .context("running git")?;
        for stream in [&out.stdout, &out.stderr] {
            for line in String::from_utf8_lossy(stream).lines() {
                log.line(line);
            }
        }
        log.sync(&self.db, false);
        if !out.status.success() {
            bail!(
                "git {} failed ({})",
                args.first().unwrap_or(&""),
                out.status
            );
        }
        Ok(())
    }

    async fn git_output(&self, repo: &Path, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new("git")
            .arg("--git-dir")
            .arg(repo)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running git")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Waits (at most two minutes) for a process of an earlier server to end.
async fn wait_gone(pid: i64) {
    for _ in 0..600 {
        // SAFETY: signal 0 only asks whether the process exists.
        if pid <= 0 || unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a file only its owner may read, created with that mode.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A path as one argument (es and git take paths as they are).
fn path_arg(path: &Path) -> String {
    path.display().to_string()
}
