//! What a job's `es` runs report: their exit, their report file, the error
//! line of their log; read into the job's state, reason and hosts.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::db::{self, HostResult};
use super::joblog::JobLog;

/// How a job ends: its state, the reason when it did not succeed, its hosts.
pub type Outcome = (&'static str, Option<String>, Vec<HostResult>);

pub fn stopped_or_failed(code: Option<i32>, what: &str) -> Outcome {
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

pub fn read_report(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the report {}", path.display()))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).with_context(|| format!("reading the report {}", path.display()))
}

/// The hosts of a deploy's summary.
pub fn host_results(report: &Value) -> Vec<HostResult> {
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

/// The last `es: error...` line of the job's log: why a step failed.
pub fn last_error_line(log: &JobLog) -> Option<String> {
    log.tail()
        .into_iter()
        .rev()
        .find_map(|line| line.strip_prefix("es: error: ").map(str::to_string))
}
