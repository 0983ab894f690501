//! The job queue of `es serve`: one job at a time per role and venv, each one
//! a fetch of the pushed commit into the server's own clone, `es build` of
//! that exact commit and `es deploy` of the version built, with the trigger's
//! settings.
//!
//! The `es` runs write their output to the job's log file (not a pipe), so a
//! server that dies does not kill them mid-step; they get SIGTERM instead
//! (PR_SET_PDEATHSIG), which es's interrupt guard turns into "finish the step,
//! switch nothing more, unlock". A restarted server marks such jobs interrupted.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::db::{self, Db, HostResult, Job, NewJob};
use super::{notify, Settings, TriggerSpec};

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
            log.sync(&self.db, true);
            self.db.finish(
                job.id,
                db::INTERRUPTED,
                Some("es serve stopped while this job ran"),
                &[],
            )?;
            eprintln!(
                "es serve: job {} was running when the server stopped: interrupted",
                job.id
            );
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
    async fn steps(
        &self,
        job: &Job,
        trigger: &TriggerSpec,
        log: &mut JobLog,
    ) -> Result<(&'static str, Option<String>, Vec<HostResult>)> {
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

    async fn build_and_deploy(
        &self,
        job: &Job,
        trigger: &TriggerSpec,
        work: &Path,
        log: &mut JobLog,
    ) -> Result<(&'static str, Option<String>, Vec<HostResult>)> {
        let config = work.join(&self.settings.job_config);
        if !config.is_file() {
            bail!(
                "the commit has no {} (serve.config): nothing says how to build and deploy it",
                self.settings.job_config
            );
        }
        let commit = self
            .db
            .get(job.id)?
            .and_then(|j| j.commit)
            .ok_or_else(|| anyhow!("the job lost its commit"))?;
        let build_report = self
            .settings
            .state_dir
            .join("work")
            .join(format!("{}-build.json", job.id));
        let config_arg = path_arg(&config);
        let build_args = vec![
            "-c".to_string(),
            config_arg.clone(),
            "--report".into(),
            path_arg(&build_report),
            "build".into(),
            "--commit".into(),
            commit.clone(),
        ];
        let code = self.es(job.id, work, &build_args, log).await?;
        if code != Some(0) {
            let _ = std::fs::remove_file(&build_report);
            return Ok(stopped_or_failed(code, "es build failed"));
        }
        let report = read_report(&build_report)?;
        let version = report["version"]
            .as_str()
            .ok_or_else(|| anyhow!("es build reported no version"))?
            .to_string();
        self.db.set_version(job.id, &version)?;

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
            config_arg,
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
        let code = self.es(job.id, work, &deploy_args, log).await?;
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

    /// Runs `es ARGS` in `dir` with its output into the job's log; its exit
    /// code, `None` when a signal ended it.
    async fn es(
        &self,
        id: i64,
        dir: &Path,
        args: &[String],
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
        let mut command = tokio::process::Command::new(exe);
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
        // SAFETY: prctl(2) is async-signal-safe; it only asks the kernel to send
        // SIGTERM to the child when this thread's process goes away.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command.spawn().context("starting es")?;
        self.db.set_pid(id, child.id())?;
        let mut stop = self.stop.subscribe();
        let mut told = *stop.borrow();
        if told {
            signal_child(&child);
        }
        let status = loop {
            tokio::select! {
                status = child.wait() => break status?,
                _ = tokio::time::sleep(Duration::from_millis(300)) => log.sync(&self.db, false),
                changed = stop.changed(), if !told => {
                    if changed.is_ok() && *stop.borrow() {
                        told = true;
                        signal_child(&child);
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

/// SIGTERM to a child `es`: its interrupt guard finishes the step and unlocks.
fn signal_child(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
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

fn stopped_or_failed(
    code: Option<i32>,
    what: &str,
) -> (&'static str, Option<String>, Vec<HostResult>) {
    match code {
        Some(130) | Some(143) | None => (
            db::INTERRUPTED,
            Some(format!("{what}: interrupted (the server was stopping)")),
            Vec::new(),
        ),
        Some(code) => (
            db::FAILED,
            Some(format!("{what} (exit {code})")),
            Vec::new(),
        ),
    }
}

fn read_report(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the report {}", path.display()))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).with_context(|| format!("reading the report {}", path.display()))
}

/// The hosts of a deploy's summary.
fn host_results(report: &Value) -> Vec<HostResult> {
    report["hosts"]
        .as_array()
        .map(|hosts| {
            hosts
                .iter()
                .map(|h| HostResult {
                    host: h["host"].as_str().unwrap_or("").to_string(),
                    ok: h["ok"].as_bool().unwrap_or(false),
                    outcome: h["outcome"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| if h["ok"] == true { "ok" } else { "failed" }.into()),
                    error: h["error"].as_str().map(str::to_string),
                    seconds: h["seconds"].as_f64(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A path as one argument (es and git take paths as they are).
fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

pub fn log_path(settings: &Settings, id: i64) -> PathBuf {
    settings.state_dir.join("logs").join(format!("{id}.log"))
}

/// A job's log: a file that the job's processes append to, copied line by
/// line into the database as it grows. Secrets are masked on the way in.
pub struct JobLog {
    id: i64,
    path: PathBuf,
    offset: u64,
    secrets: Vec<String>,
}

impl JobLog {
    pub fn open(settings: &Settings, id: i64, offset: i64) -> Result<JobLog> {
        let path = log_path(settings, id);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(JobLog {
            id,
            path,
            offset: offset.max(0) as u64,
            secrets: settings.secrets.clone(),
        })
    }

    fn file_for_child(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))
    }

    /// Adds a line of the server's own.
    pub fn line(&mut self, line: &str) {
        if let Ok(mut file) = self.file_for_child() {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Copies the complete lines written since the last call into the
    /// database (`last`: the unfinished line too).
    pub fn sync(&mut self, db: &Db, last: bool) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
            return;
        }
        let end = if last {
            bytes.len()
        } else {
            match bytes.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => return,
            }
        };
        let lines: Vec<String> = String::from_utf8_lossy(&bytes[..end])
            .lines()
            .map(|line| self.mask(line))
            .collect();
        let offset = self.offset + end as u64;
        if db.append_log(self.id, &lines, offset as i64).is_ok() {
            self.offset = offset;
        }
    }

    fn mask(&self, line: &str) -> String {
        let line = self
            .secrets
            .iter()
            .filter(|s| s.len() >= 3)
            .fold(line.to_string(), |l, s| l.replace(s.as_str(), "****"));
        // Progress redraws and colours from a terminal-minded tool, made plain.
        line.replace('\r', "")
    }
}
