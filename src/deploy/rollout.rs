//! The rollout's state machine, apart from any host: lock, prepare, release
//! hooks, switch batch by batch (stopping, and sending the switched hosts
//! back, once more hosts fail than `max_fail` allows), finish. What each phase
//! does on a host is behind [`Hosts`]; the SSH fleet is one implementation, a
//! scripted fake in the tests below is another (`cargo test rollout`).

use std::time::Duration;

use super::runs::{Outcome, Runs};
use crate::config::{CountOrPercent, HooksOn};
use crate::failure::FailureKind;

/// What the rollout asks of the hosts, one phase at a time. Each phase runs on
/// the hosts named (in parallel) and records in `runs` how each fared: a
/// failure as [`Outcome::Failed`], and what the phase learnt (facts, the lock,
/// the staged release, `Switched`, `Reverted`).
pub(super) trait Hosts {
    /// Takes the venv's lock, the first host first; marks the hosts it holds
    /// `locked` (with their facts), and the ones another holds `Locked`.
    fn lock(&self, runs: &Runs);
    /// Pre hooks and staging.
    fn prepare(&self, runs: &Runs, hosts: &[String]);
    /// The release hooks, in the staged release.
    fn release_hooks(&self, runs: &Runs, hosts: &[String]);
    /// The health-checked switch (a host that fails goes back by itself).
    fn switch(&self, runs: &Runs, hosts: &[String]);
    /// Back to the previous release, after the rollout stopped.
    fn revert(&self, runs: &Runs, hosts: &[String]);
    /// Marks the locks of `hosts` as held by a deploy that still runs, so
    /// that no other machine's `--force` takes them while they wait.
    fn refresh_locks(&self, runs: &Runs, hosts: &[String]);
    /// Prune, ledger, unlock; the hosts whose finish failed.
    fn finish(&self, runs: &Runs, hosts: &[String]) -> Vec<String>;
    /// Whether the user asked to stop (Ctrl-C, SIGTERM).
    fn interrupted(&self) -> bool;
    /// Waits (between batches), cut short when interrupted.
    fn sleep(&self, time: Duration);
}

/// How the rollout goes.
pub(super) struct Settings<'a> {
    pub venv: &'a str,
    pub batch: CountOrPercent,
    pub max_fail: CountOrPercent,
    /// Seconds between batches.
    pub pause: u64,
    /// Where the release hooks run; `None` when there are none.
    pub release_hooks: Option<HooksOn>,
    /// `--lock-wait`, to say how long a held lock was waited for.
    pub lock_wait: Option<u64>,
    /// Deploy although a host is in maintenance.
    pub during_maintenance: bool,
    /// How often the locks of hosts that wait are refreshed during a pause:
    /// well within the age at which another machine's `--force` may take them.
    pub lock_refresh: Duration,
}

/// Why a rollout stopped after Ctrl-C.
pub(super) const INTERRUPTED: &str =
    "interrupted: the steps under way were finished (a hook before the switch is stopped, not waited for), nothing more was switched, the locks were released";

/// Runs the rollout over `hosts`; why it stopped early, if it did.
pub(super) fn run(hosts: &impl Hosts, runs: &Runs, settings: &Settings<'_>) -> Option<String> {
    let stopped = prepare(hosts, runs, settings)
        .or_else(|| release_hooks(hosts, runs, settings))
        .or_else(|| switch_in_batches(hosts, runs, settings));
    finish(hosts, runs, stopped)
}

/// Lock and prepare; why nothing may be switched, if so.
fn prepare(hosts: &impl Hosts, runs: &Runs, settings: &Settings<'_>) -> Option<String> {
    hosts.lock(runs);
    let busy = runs.labels_where(|r| matches!(r.outcome, Outcome::Locked(_)));
    let in_maintenance = match settings.during_maintenance {
        true => Vec::new(),
        false => refuse_maintenance(runs),
    };
    if busy.is_empty() && in_maintenance.is_empty() && !hosts.interrupted() {
        hosts.prepare(runs, &runs.labels_where(|r| r.locked));
    }
    let total = runs.all().len();
    let max_fail = settings.max_fail.of(total);
    if hosts.interrupted() {
        Some(INTERRUPTED.to_string())
    } else if !busy.is_empty() {
        Some(locked_message(runs, &busy, settings))
    } else if !in_maintenance.is_empty() {
        Some(format!(
            "venv {} is in maintenance on {}: nothing was staged or switched; `es maintenance off` ends it, --during-maintenance deploys anyway",
            settings.venv,
            in_maintenance.join(", ")
        ))
    } else if runs.failed() > max_fail {
        Some(format!(
            "{} of {total} hosts could not stage the release (max-fail {max_fail}): nothing was switched",
            runs.failed()
        ))
    } else {
        None
    }
}

/// Why a deploy refused by a held lock stopped: where, and by whom.
fn locked_message(runs: &Runs, busy: &[String], settings: &Settings<'_>) -> String {
    let holders: Vec<String> = busy
        .iter()
        .map(|label| match runs.get(label).outcome {
            Outcome::Locked(holder) => format!("on {label} by {holder}"),
            _ => label.clone(),
        })
        .collect();
    format!(
        "venv {} is locked ({}): nothing was staged or switched{}",
        settings.venv,
        holders.join("; "),
        match settings.lock_wait {
            Some(secs) => format!(", after waiting {secs}s (--lock-wait)"),
            None => "; --lock-wait SECS waits for it".into(),
        }
    )
}

/// Fails every locked host whose venv is in maintenance (`es maintenance on`);
/// their labels.
fn refuse_maintenance(runs: &Runs) -> Vec<String> {
    let hosts = runs.labels_where(|r| r.locked && r.facts.maintenance.is_some());
    for label in &hosts {
        runs.update(label, |r| {
            let record = r.facts.maintenance.as_deref().unwrap_or_default();
            r.outcome = Outcome::Failed {
                kind: FailureKind::Maintenance,
                step: "maintenance".into(),
                error: format!(
                    "the venv is in maintenance ({})",
                    crate::nginx::maintenance::describe(record)
                ),
            };
        });
    }
    hosts
}

/// The release hooks, on one staged host or all; why the rollout stops, if so.
fn release_hooks(hosts: &impl Hosts, runs: &Runs, settings: &Settings<'_>) -> Option<String> {
    let on_hosts = settings.release_hooks?;
    let staged = runs.labels_where(|r| r.outcome == Outcome::Staged);
    let on: Vec<String> = match on_hosts {
        HooksOn::One => staged.into_iter().take(1).collect(),
        HooksOn::All => staged,
    };
    hosts.release_hooks(runs, &on);
    let failed = on
        .iter()
        .any(|label| matches!(runs.get(label).outcome, Outcome::Failed { .. }));
    if hosts.interrupted() {
        Some(INTERRUPTED.to_string())
    } else if failed {
        Some("a release hook failed: nothing was switched anywhere".to_string())
    } else {
        None
    }
}

/// The switch, batch by batch; why the rollout stopped, if it did.
fn switch_in_batches(hosts: &impl Hosts, runs: &Runs, settings: &Settings<'_>) -> Option<String> {
    let max_fail = settings.max_fail.of(runs.all().len());
    let ready = runs.labels_where(|r| matches!(r.outcome, Outcome::Staged | Outcome::Unchanged));
    let batch = settings.batch.of(ready.len()).max(1);
    for (i, labels) in ready.chunks(batch).enumerate() {
        if i > 0 {
            pause(hosts, runs, settings);
        }
        if hosts.interrupted() {
            return Some(INTERRUPTED.to_string());
        }
        hosts.switch(runs, labels);
        if runs.failed() > max_fail {
            let failed = runs.failed();
            let switched = runs.labels_where(|r| r.outcome == Outcome::Switched);
            hosts.revert(runs, &switched);
            let back = runs.labels_where(|r| r.outcome == Outcome::Reverted).len();
            let others = match switched.len() {
                0 => "no other host had switched".to_string(),
                n => format!("{back} of the {n} hosts already switched went back"),
            };
            if hosts.interrupted() {
                return Some(format!(
                    "interrupted: {failed} hosts failed meanwhile, nothing more was switched; {others}"
                ));
            }
            return Some(format!(
                "{failed} hosts failed (max-fail {max_fail}): the rollout stopped; {others}"
            ));
        }
    }
    None
}

/// Between batches: the pause (cut short by Ctrl-C), the locks kept fresh
/// before it, every `lock_refresh` during it and after it.
fn pause(hosts: &impl Hosts, runs: &Runs, settings: &Settings<'_>) {
    let locked = runs.labels_where(|r| r.locked);
    hosts.refresh_locks(runs, &locked);
    let mut left = Duration::from_secs(settings.pause);
    while !left.is_zero() && !hosts.interrupted() {
        let step = left.min(settings.lock_refresh.max(Duration::from_secs(1)));
        hosts.sleep(step);
        left -= step;
        hosts.refresh_locks(runs, &locked);
    }
}

/// Finish wherever the lock is ours; the reason the rollout stopped, said
/// again when an interrupted rollout could not finish somewhere.
fn finish(hosts: &impl Hosts, runs: &Runs, stopped: Option<String>) -> Option<String> {
    let locked = runs.labels_where(|r| r.locked);
    let unfinished = hosts.finish(runs, &locked);
    if stopped.as_deref() == Some(INTERRUPTED) && !unfinished.is_empty() {
        return Some(format!(
            "interrupted: the steps under way were finished (a hook before the switch is stopped, not waited for), nothing more was switched; finishing failed on {} (its line says whether its lock remains)",
            unfinished.join(", ")
        ));
    }
    stopped
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    use super::*;

    /// A scripted fleet: which host fails which phase, when Ctrl-C comes, and
    /// a log of every call.
    #[derive(Default)]
    struct Fake {
        /// (phase, host) pairs that fail.
        fails: Vec<(&'static str, &'static str)>,
        /// A host whose lock another deploy holds.
        held: Option<&'static str>,
        /// A host in maintenance.
        maintenance: Option<&'static str>,
        /// Ctrl-C after this many switch batches.
        interrupt_after_batches: Option<usize>,
        batches: Cell<usize>,
        log: RefCell<Vec<String>>,
    }

    impl Fake {
        fn phase(&self, runs: &Runs, phase: &'static str, hosts: &[String], ok: Outcome) {
            self.log
                .borrow_mut()
                .push(format!("{phase} {}", hosts.join(",")));
            for host in hosts {
                let fails = self.fails.iter().any(|(p, h)| *p == phase && h == host);
                runs.update(host, |r| {
                    r.outcome = if fails {
                        Outcome::Failed {
                            step: phase.into(),
                            error: "scripted".into(),
                            kind: FailureKind::Command,
                        }
                    } else {
                        ok.clone()
                    }
                });
            }
        }

        fn calls(&self, phase: &str) -> Vec<String> {
            self.log
                .borrow()
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{phase} ")).map(str::to_string))
                .collect()
        }
    }

    impl Hosts for Fake {
        fn lock(&self, runs: &Runs) {
            for run in runs.all() {
                let label = run.label.clone();
                runs.update(&label, |r| {
                    if self.held == Some(label.as_str()) {
                        r.outcome = Outcome::Locked("ann@ci1".into());
                    } else {
                        r.locked = true;
                        r.facts.maintenance = (self.maintenance == Some(label.as_str()))
                            .then(|| r#"{"user":"bob","message":"db move"}"#.to_string());
                    }
                });
            }
        }
        fn prepare(&self, runs: &Runs, hosts: &[String]) {
            self.phase(runs, "prepare", hosts, Outcome::Staged);
        }
        fn release_hooks(&self, runs: &Runs, hosts: &[String]) {
            self.phase(runs, "release_hooks", hosts, Outcome::Staged);
        }
        fn switch(&self, runs: &Runs, hosts: &[String]) {
            self.phase(runs, "switch", hosts, Outcome::Switched);
            self.batches.set(self.batches.get() + 1);
        }
        fn revert(&self, runs: &Runs, hosts: &[String]) {
            self.phase(runs, "revert", hosts, Outcome::Reverted);
        }
        fn refresh_locks(&self, _runs: &Runs, hosts: &[String]) {
            self.log
                .borrow_mut()
                .push(format!("refresh {}", hosts.join(",")));
        }
        fn finish(&self, _runs: &Runs, hosts: &[String]) -> Vec<String> {
            self.log
                .borrow_mut()
                .push(format!("finish {}", hosts.join(",")));
            Vec::new()
        }
        fn interrupted(&self) -> bool {
            self.interrupt_after_batches
                .is_some_and(|n| self.batches.get() >= n)
        }
        fn sleep(&self, time: Duration) {
            self.log
                .borrow_mut()
                .push(format!("sleep {}", time.as_secs()));
        }
    }

    fn settings(batch: CountOrPercent, max_fail: CountOrPercent) -> Settings<'static> {
        Settings {
            venv: "a",
            batch,
            max_fail,
            pause: 0,
            release_hooks: None,
            lock_wait: None,
            during_maintenance: false,
            lock_refresh: Duration::from_secs(30),
        }
    }

    fn six() -> Runs {
        Runs::new(&["h1", "h2", "h3", "h4", "h5", "h6"].map(String::from))
    }

    /// Each host's outcome, in a word.
    fn outcomes(runs: &Runs) -> BTreeMap<String, &'static str> {
        runs.all()
            .into_iter()
            .map(|r| {
                let word = match r.outcome {
                    Outcome::Staged => "staged",
                    Outcome::Switched => "switched",
                    Outcome::Unchanged => "unchanged",
                    Outcome::Reverted => "reverted",
                    Outcome::Locked(_) => "locked",
                    Outcome::Failed { .. } => "failed",
                };
                (r.label, word)
            })
            .collect()
    }

    fn words(list: &[(&str, &'static str)]) -> BTreeMap<String, &'static str> {
        list.iter().map(|(h, w)| (h.to_string(), *w)).collect()
    }

    #[test]
    fn rollout_failure_in_batch_k_reverts_the_batches_before_it() {
        let fake = Fake {
            fails: vec![("switch", "h5")],
            ..Fake::default()
        };
        let runs = six();
        let stopped = run(
            &fake,
            &runs,
            &settings(CountOrPercent::Count(2), CountOrPercent::Count(0)),
        );
        assert_eq!(
            stopped.as_deref(),
            Some("1 hosts failed (max-fail 0): the rollout stopped; 5 of the 5 hosts already switched went back")
        );
        assert_eq!(fake.calls("switch"), vec!["h1,h2", "h3,h4", "h5,h6"]);
        assert_eq!(fake.calls("revert"), vec!["h1,h2,h3,h4,h6"]);
        assert_eq!(fake.calls("finish"), vec!["h1,h2,h3,h4,h5,h6"]);
        let ends = outcomes(&runs);
        assert_eq!(ends["h5"], "failed");
        assert!(ends.values().all(|w| *w != "switched"), "{ends:?}");
    }

    #[test]
    fn rollout_max_fail_counts_and_percents() {
        // 1 failure tolerated: the rollout goes on to the end.
        let fake = Fake {
            fails: vec![("switch", "h2")],
            ..Fake::default()
        };
        let runs = six();
        let stopped = run(
            &fake,
            &runs,
            &settings(CountOrPercent::Count(1), CountOrPercent::Count(1)),
        );
        assert_eq!(stopped, None);
        assert_eq!(fake.calls("switch").len(), 6);
        assert!(fake.calls("revert").is_empty());
        // 33% of 6 hosts (rounded up) is 2 failures tolerated; the third stops the
        // rollout at its batch.
        let fake = Fake {
            fails: vec![("switch", "h1"), ("switch", "h3"), ("switch", "h4")],
            ..Fake::default()
        };
        let runs = six();
        let stopped = run(
            &fake,
            &runs,
            &settings(CountOrPercent::Count(2), CountOrPercent::Percent(33)),
        );
        assert!(
            stopped
                .as_deref()
                .unwrap()
                .starts_with("3 hosts failed (max-fail 2)"),
            "{stopped:?}"
        );
        assert_eq!(fake.calls("switch"), vec!["h1,h2", "h3,h4"]);
        assert_eq!(fake.calls("revert"), vec!["h2"]);
        assert_eq!(
            outcomes(&runs),
            words(&[
                ("h1", "failed"),
                ("h2", "reverted"),
                ("h3", "failed"),
                ("h4", "failed"),
                ("h5", "staged"),
                ("h6", "staged")
            ])
        );
    }

    #[test]
    fn rollout_interrupt_between_batches_switches_nothing_more() {
        let fake = Fake {
            interrupt_after_batches: Some(1),
            ..Fake::default()
        };
        let runs = six();
        let stopped = run(
            &fake,
            &runs,
            &settings(CountOrPercent::Count(3), CountOrPercent::Count(0)),
        );
        assert_eq!(stopped.as_deref(), Some(INTERRUPTED));
        assert_eq!(fake.calls("switch"), vec!["h1,h2,h3"]);
        assert!(fake.calls("revert").is_empty());
        assert_eq!(fake.calls("finish"), vec!["h1,h2,h3,h4,h5,h6"]);
        assert_eq!(
            runs.labels_where(|r| r.outcome == Outcome::Staged),
            vec!["h4", "h5", "h6"]
        );
    }

    /// Ctrl-C during a batch's switch, a host of that batch failing
    /// meanwhile: the batch's switched hosts go back, as after any failure,
    /// no batch follows, and the reason says it was an interrupt.
    #[test]
    fn rollout_interrupt_that_fails_a_host_in_its_batch_reverts_the_batch() {
        let fake = Fake {
            fails: vec![("switch", "h2")],
            interrupt_after_batches: Some(1),
            ..Fake::default()
        };
        let runs = six();
        let stopped = run(
            &fake,
            &runs,
            &settings(CountOrPercent::Count(3), CountOrPercent::Count(0)),
        );
        assert_eq!(
            stopped.as_deref(),
            Some("interrupted: 1 hosts failed meanwhile, nothing more was switched; 2 of the 2 hosts already switched went back")
        );
        assert_eq!(fake.calls("switch"), vec!["h1,h2,h3"]);
        assert_eq!(fake.calls("revert"), vec!["h1,h3"]);
        assert_eq!(
            runs.labels_where(|r| r.outcome == Outcome::Staged),
            vec!["h4", "h5", "h6"]
        );
    }

    #[test]
    fn rollout_refreshes_the_locks_of_waiting_hosts_between_batches_and_during_pause() {
        let fake = Fake::default();
        let runs = six();
        let mut settings = settings(CountOrPercent::Count(3), CountOrPercent::Count(0));
        settings.pause = 70;
        assert_eq!(run(&fake, &runs, &settings), None);
        let log = fake.log.borrow().clone();
        let all = "h1,h2,h3,h4,h5,h6";
        let expected: Vec<String> = [
            "prepare h1,h2,h3,h4,h5,h6".to_string(),
            "switch h1,h2,h3".into(),
            format!("refresh {all}"),
            "sleep 30".into(),
            format!("refresh {all}"),
            "sleep 30".into(),
            format!("refresh {all}"),
            "sleep 10".into(),
            format!("refresh {all}"),
            "switch h4,h5,h6".into(),
            format!("finish {all}"),
        ]
        .to_vec();
        assert_eq!(log, expected);
        // Without a pause the locks are still refreshed before each later batch.
        let fake = Fake::default();
        let settings = self::settings(CountOrPercent::Count(2), CountOrPercent::Count(0));
        run(&fake, &six(), &settings);
        assert_eq!(fake.calls("refresh").len(), 2);
    }

    #[test]
    fn rollout_a_held_lock_or_maintenance_stages_nothing() {
        let fake = Fake {
            held: Some("h3"),
            ..Fake::default()
        };
        let runs = six();
        let stopped = run(
            &fake,
            &runs,
            &settings(CountOrPercent::Percent(100), CountOrPercent::Count(0)),
        )
        .unwrap();
        assert!(
            stopped.starts_with("venv a is locked (on h3 by ann@ci1): nothing was staged"),
            "{stopped}"
        );
        assert!(fake.calls("prepare").is_empty() && fake.calls("switch").is_empty());
        assert_eq!(fake.calls("finish"), vec!["h1,h2,h4,h5,h6"]);

        let fake = Fake {
            maintenance: Some("h2"),
            ..Fake::default()
        };
        let runs = six();
        let mut settings = settings(CountOrPercent::Percent(100), CountOrPercent::Count(0));
        let stopped = run(&fake, &runs, &settings).unwrap();
        assert!(
            stopped.starts_with("venv a is in maintenance on h2"),
            "{stopped}"
        );
        assert!(fake.calls("prepare").is_empty());
        assert_eq!(outcomes(&runs)["h2"], "failed");
        settings.during_maintenance = true;
        let fake = Fake {
            maintenance: Some("h2"),
            ..Fake::default()
        };
        assert_eq!(run(&fake, &six(), &settings), None);
    }

    #[test]
    fn rollout_a_failed_release_hook_or_staging_switches_nothing() {
        let fake = Fake {
            fails: vec![("release_hooks", "h1")],
            ..Fake::default()
        };
        let mut settings = settings(CountOrPercent::Percent(100), CountOrPercent::Count(5));
        settings.release_hooks = Some(HooksOn::One);
        let stopped = run(&fake, &six(), &settings);
        assert_eq!(
            stopped.as_deref(),
            Some("a release hook failed: nothing was switched anywhere")
        );
        assert_eq!(fake.calls("release_hooks"), vec!["h1"]);
        assert!(fake.calls("switch").is_empty());

        let fake = Fake {
            fails: vec![("prepare", "h1"), ("prepare", "h6")],
            ..Fake::default()
        };
        let settings = self::settings(CountOrPercent::Percent(100), CountOrPercent::Count(1));
        let stopped = run(&fake, &six(), &settings);
        assert_eq!(
            stopped.as_deref(),
            Some("2 of 6 hosts could not stage the release (max-fail 1): nothing was switched")
        );
        assert!(fake.calls("switch").is_empty());
    }
}
