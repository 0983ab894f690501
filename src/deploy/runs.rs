//! Every host's state across a rollout's phases, shared by the phases' jobs
//! (which run in parallel) and read by the rollout, the ledger and the summary.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::host::Facts;
use crate::failure::FailureKind;

/// How one host's part of a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Prepared and waiting for its batch (at the end: never switched).
    Staged,
    /// The new release serves, healthy.
    Switched,
    /// It was already the current release; its processes are healthy.
    Unchanged,
    /// Switched, then switched back because the rollout stopped.
    Reverted,
    /// The deploy was refused: another deploy holds the lock.
    Locked(String),
    Failed {
        step: String,
        error: String,
        kind: FailureKind,
    },
}

/// One host's state across the phases.
#[derive(Debug, Clone)]
pub(super) struct HostRun {
    pub(super) label: String,
    pub(super) root: Option<String>,
    pub(super) facts: Facts,
    pub(super) release: Option<String>,
    /// The release that was current before (what a revert goes back to).
    pub(super) previous: Option<String>,
    /// What `es build` recorded about the new release's version.
    pub(super) build: Value,
    pub(super) locked: bool,
    pub(super) outcome: Outcome,
    pub(super) elapsed: Duration,
    /// What the host runs at the end, read back by its finish (`Some(None)`: nothing).
    pub(super) now: Option<Option<String>>,
}

impl HostRun {
    pub(super) fn new(label: &str) -> HostRun {
        HostRun {
            label: label.to_string(),
            root: None,
            facts: Facts::default(),
            release: None,
            previous: None,
            build: Value::Null,
            locked: false,
            outcome: Outcome::Staged,
            elapsed: Duration::ZERO,
            now: None,
        }
    }

    pub(super) fn version_of(&self, id: Option<&str>) -> String {
        id.and_then(|id| self.facts.release(id))
            .map(|r| r.version().to_string())
            .or_else(|| id.map(|id| id.rsplit_once('-').map_or(id, |(v, _)| v).to_string()))
            .unwrap_or_else(|| "nothing".to_string())
    }
}

/// Every host's state, shared by the phases' jobs.
pub(super) struct Runs {
    hosts: Mutex<HashMap<String, HostRun>>,
    order: Vec<String>,
}

impl Runs {
    /// Every host (by label, in the fleet's order) at its start.
    pub(super) fn new(labels: &[String]) -> Runs {
        Runs {
            hosts: Mutex::new(
                labels
                    .iter()
                    .map(|label| (label.clone(), HostRun::new(label)))
                    .collect(),
            ),
            order: labels.to_vec(),
        }
    }

    pub(super) fn update(&self, label: &str, change: impl FnOnce(&mut HostRun)) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(run) = hosts.get_mut(label) {
            change(run);
        }
    }

    pub(super) fn get(&self, label: &str) -> HostRun {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .get(label)
            .cloned()
            .unwrap_or_else(|| HostRun::new(label))
    }

    pub(super) fn all(&self) -> Vec<HostRun> {
        self.order.iter().map(|l| self.get(l)).collect()
    }

    pub(super) fn labels_where(&self, keep: impl Fn(&HostRun) -> bool) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|r| keep(r))
            .map(|r| r.label)
            .collect()
    }

    /// Records each host's failure from a phase's report.
    pub(super) fn record<T>(&self, report: &crate::fleet::Report<T>) {
        for outcome in &report.outcomes {
            let elapsed = outcome.elapsed;
            self.update(&outcome.host, |run| {
                run.elapsed += elapsed;
                if let Err(failure) = &outcome.result {
                    run.outcome = Outcome::Failed {
                        step: failure.step.clone(),
                        error: failure.error.clone(),
                        kind: failure.kind,
                    };
                }
            });
        }
    }

    pub(super) fn failed(&self) -> usize {
        self.all()
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
            .count()
    }
}
