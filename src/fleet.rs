//! The fleet executor: one job per host, at most `parallel` at once. A failing
//! host never stops the others; every host's outcome ends up in the report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::failure::{CommandFailed, FailureKind};
use crate::hosts::Target;
use crate::ssh::{ConnectOptions, Connection, Output};
use crate::ui::{HostLine, Mode, Ui};

/// The hosts of one run and how to reach them.
pub struct Fleet<'a> {
    pub targets: Vec<Target>,
    pub parallel: usize,
    pub connect: ConnectOptions,
    pub ui: &'a Ui,
    /// Print each step as a plain line (deploys); otherwise steps show only on a terminal.
    pub announce_steps: bool,
    /// Start hosts even after Ctrl-C (a deploy's finish: unlock, ledger).
    pub despite_interrupt: bool,
    /// Connections kept between runs over the same hosts (a deploy's phases),
    /// so that each host is connected to once.
    pub pool: Option<&'a ConnectionPool>,
}

/// Open connections by host label, reused by the next run on the host.
pub type ConnectionPool = Mutex<std::collections::HashMap<String, Connection>>;

/// A job's handle on its host: the open connection, and the step it is at.
pub struct HostCtx<'a> {
    pub target: &'a Target,
    pub conn: Connection,
    step: String,
    line: &'a HostLine,
    fleet: &'a Fleet<'a>,
    /// When the host's job started: verbose lines show the time since.
    started: Instant,
}

impl<'a> HostCtx<'a> {
    /// Names the step the job is at: shown in progress, and in the summary if it fails.
    pub fn step(&mut self, name: &str) {
        self.step = name.to_string();
        self.line.set(name);
        let ui = self.fleet.ui;
        ui.event("step", &self.target.label, json!({ "step": name }));
        if ui.mode == Mode::Plain && !ui.quiet && (self.fleet.announce_steps || ui.verbose) {
            ui.note(&format!("{}: {name}", self.target.label));
        }
        if ui.verbose && ui.mode == Mode::Terminal {
            ui.note(&format!(
                "{}: [{:.2}s] {name}",
                self.target.label,
                self.started.elapsed().as_secs_f64()
            ));
        }
    }

    /// How long one remote command may take (ssh.command_timeout).
    pub fn command_timeout(&self) -> Duration {
        self.fleet.connect.command_timeout
    }

    /// The step the job is at.
    pub fn current_step(&self) -> String {
        self.step.clone()
    }

    /// The host's label, as the user wrote it.
    pub fn host(&self) -> &str {
        &self.target.label
    }

    /// The fleet's output side.
    pub fn ui(&self) -> &'a Ui {
        self.fleet.ui
    }

    /// Runs a command; its result is returned whatever the exit status.
    pub fn exec(&mut self, command: &str) -> Result<Output> {
        if self.fleet.ui.verbose {
            self.fleet.ui.note(&format!(
                "{}: [{:.2}s] $ {}",
                self.target.label,
                self.started.elapsed().as_secs_f64(),
                command_summary(command)
            ));
        }
        self.conn.exec(command)
    }

    /// Runs a command whose output goes to `sink` as it comes (`true` for
    /// stderr); the result keeps only the last 64 KiB of each stream.
    pub fn exec_streaming(&mut self, command: &str, sink: crate::ssh::Sink<'_>) -> Result<Output> {
        self.exec_streaming_with(command, crate::ssh::Stdin::Closed, sink)
    }

    /// Like [`exec_streaming`](Self::exec_streaming) for a command that
    /// watches its stdin: es closes it when interrupted (`remote/hook.sh`).
    pub fn exec_stoppable(&mut self, command: &str, sink: crate::ssh::Sink<'_>) -> Result<Output> {
        self.exec_streaming_with(command, crate::ssh::Stdin::ClosedOnInterrupt, sink)
    }

    fn exec_streaming_with(
        &mut self,
        command: &str,
        stdin: crate::ssh::Stdin,
        sink: crate::ssh::Sink<'_>,
    ) -> Result<Output> {
        if self.fleet.ui.verbose {
            self.fleet.ui.note(&format!(
                "{}: $ {}",
                self.target.label,
                command_summary(command)
            ));
        }
        self.conn.exec_streaming_with(command, stdin, sink)
    }

    /// Runs a command and fails (keeping its stderr) when it exits non-zero.
    pub fn check(&mut self, command: &str) -> Result<Output> {
        self.exec(command)?.ok()
    }
}

/// How one host's job ended.
#[derive(Debug)]
pub struct HostOutcome<T> {
    pub host: String,
    pub elapsed: Duration,
    pub result: Result<T, Failure>,
}

/// Where and why a host failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub step: String,
    pub error: String,
    pub kind: FailureKind,
}

/// Every host's outcome, in the order the hosts were given.
#[derive(Debug)]
pub struct Report<T> {
    pub outcomes: Vec<HostOutcome<T>>,
    pub elapsed: Duration,
}

impl<T> Report<T> {
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_err()).count()
    }

    pub fn all_ok(&self) -> bool {
        self.failed() == 0
    }

    /// Prints the summary table (stderr), or the JSON summary object.
    pub fn print_summary(&self, ui: &Ui, title: &str) {
        ui.clear();
        let ok = self.outcomes.len() - self.failed();
        if ui.wants_summary() {
            let hosts: Vec<_> = self
                .outcomes
                .iter()
                .map(|o| {
                    let mut v = json!({
                        "host": o.host,
                        "ok": o.result.is_ok(),
                        "seconds": o.elapsed.as_secs_f64(),
                    });
                    if let Err(f) = &o.result {
                        v["step"] = json!(f.step);
                        v["error"] = json!(f.error);
                        v["kind"] = json!(f.kind);
                    }
                    v
                })
                .collect();
            ui.summary(json!({
                "event": "summary",
                "command": title,
                "ok": ok,
                "failed": self.failed(),
                "seconds": self.elapsed.as_secs_f64(),
                "hosts": hosts,
            }));
        }
        if ui.mode == Mode::Json {
            return;
        }
        let width = self
            .outcomes
            .iter()
            .map(|o| o.host.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut text = String::new();
        // -q: only the failed hosts and the count.
        text.push_str(&format!("\n{title}: {} hosts\n", self.outcomes.len()));
        for o in &self.outcomes {
            let secs = format!("{:.2}s", o.elapsed.as_secs_f64());
            match &o.result {
                Ok(_) if ui.quiet => {}
                Ok(_) => text.push_str(&format!("  {:<width$}  ok      {secs:>7}\n", o.host)),
                Err(f) => text.push_str(&format!(
                    "  {:<width$}  FAILED  {secs:>7}  at {}: {}\n",
                    o.host,
                    f.step,
                    f.error
                        .replace('\n', &format!("\n  {:width$}                     ", ""))
                )),
            }
        }
        text.push_str(&format!(
            "{ok} ok, {} failed, in {:.2}s",
            self.failed(),
            self.elapsed.as_secs_f64()
        ));
        eprintln!("{}", ui.mask(&text));
    }
}

impl<'a> Fleet<'a> {
    /// Connects to every host and runs `job` there, at most `parallel` hosts at once.
    pub fn run<T, F>(&'a self, job: F) -> Report<T>
    where
        T: Send,
        F: Fn(&mut HostCtx<'_>) -> Result<T> + Sync,
    {
        let started = Instant::now();
        let width = self
            .targets
            .iter()
            .map(|t| t.label.len())
            .max()
            .unwrap_or(0);
        let lines: Vec<HostLine> = self
            .targets
            .iter()
            .map(|t| self.ui.host_line(&t.label, width))
            .collect();
        // Hosts are I/O-bound: one plain thread per slot, each taking the next
        // host until none is left (no work-stealing pool spinning between jobs).
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<HostOutcome<T>>>> =
            self.targets.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.parallel.clamp(1, self.targets.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (Some(target), Some(line)) = (self.targets.get(i), lines.get(i)) else {
                        break;
                    };
                    let outcome = if crate::interrupt::requested() && !self.despite_interrupt {
                        line.finish("not started (interrupted)");
                        HostOutcome {
                            host: target.label.clone(),
                            elapsed: Duration::ZERO,
                            result: Err(Failure {
                                step: "start".into(),
                                error: "interrupted before it started".into(),
                                kind: FailureKind::Interrupted,
                            }),
                        }
                    } else {
                        self.run_one(target, line, &job)
                    };
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                });
            }
        });
        let outcomes = slots
            .into_iter()
            .filter_map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        Report {
            outcomes,
            elapsed: started.elapsed(),
        }
    }

    fn run_one<T, F>(&'a self, target: &'a Target, line: &'a HostLine, job: &F) -> HostOutcome<T>
    where
        F: Fn(&mut HostCtx<'_>) -> Result<T>,
    {
        let started = Instant::now();
        line.set("connecting");
        let pooled = self.pool.and_then(|pool| {
            pool.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&target.label)
        });
        let opened = match pooled {
            Some(conn) => Ok(conn),
            None => Connection::open(target, &self.connect),
        };
        let result = match opened {
            Err(err) => Err(Failure {
                step: "connect".into(),
                error: describe(&err),
                // Not reached: unless the host said more (its key, the login).
                kind: match FailureKind::of(&err) {
                    FailureKind::Other => FailureKind::Connect,
                    kind => kind,
                },
            }),
            Ok(conn) => {
                let mut ctx = HostCtx {
                    target,
                    conn,
                    step: "start".into(),
                    line,
                    fleet: self,
                    started,
                };
                let result = job(&mut ctx).map_err(|err| Failure {
                    step: ctx.step.clone(),
                    error: describe(&err),
                    kind: FailureKind::of(&err),
                });
                // A connection that served a job well serves the next one.
                if let (Some(pool), Ok(_)) = (self.pool, &result) {
                    pool.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(target.label.clone(), ctx.conn);
                }
                result
            }
        };
        let elapsed = started.elapsed();
        let secs = elapsed.as_secs_f64();
        match &result {
            Ok(_) => line.finish(&format!("ok ({secs:.2}s)")),
            Err(f) => line.finish(&format!("FAILED at {}: {}", f.step, f.error)),
        }
        let mut fields = json!({ "ok": result.is_ok(), "seconds": secs });
        if let Err(f) = &result {
            fields["step"] = json!(f.step);
            fields["error"] = json!(f.error);
        }
        self.ui.event("host_done", &target.label, fields);
        HostOutcome {
            host: target.label.clone(),
            elapsed,
            result,
        }
    }
}

/// A command as verbose output shows it: its first line (at most 160
/// characters), and how many lines follow.
fn command_summary(command: &str) -> String {
    let mut lines = command.lines();
    let first = lines.next().unwrap_or("");
    let mut shown: String = first.chars().take(160).collect();
    if shown.len() < first.len() {
        shown.push('…');
    }
    let rest = lines.count();
    if rest > 0 {
        shown.push_str(&format!("  (+{rest} lines)"));
    }
    shown
}

/// An error and its causes on one line, with a failed command's stderr tail.
pub fn describe(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = match cause.downcast_ref::<CommandFailed>() {
            Some(failed) => failed.to_string(),
            None => cause.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    // Keep what happened (the first line) and the cause (the last lines).
    let text = parts.join(": ");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 24 {
        return lines.join("\n");
    }
    format!(
        "{}\n… ({} lines left out)\n{}",
        lines[0],
        lines.len() - 21,
        lines[lines.len() - 20..].join("\n")
    )
}
