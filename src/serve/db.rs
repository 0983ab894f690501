//! The history of `es serve`: jobs, their hosts' outcomes and their logs, in
//! one SQLite file (bundled SQLite, nothing to install).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger      TEXT NOT NULL,
    key          TEXT NOT NULL,
    state        TEXT NOT NULL,
    source       TEXT NOT NULL,
    requested_by TEXT,
    commit_id    TEXT,
    branch       TEXT NOT NULL,
    author       TEXT,
    message      TEXT,
    version      TEXT,
    error        TEXT,
    created      INTEGER NOT NULL,
    not_before   INTEGER NOT NULL,
    started      INTEGER,
    finished     INTEGER,
    pid          INTEGER,
    pushes       INTEGER NOT NULL DEFAULT 1,
    log_offset   INTEGER NOT NULL DEFAULT 0,
    log_pruned   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, key);
CREATE TABLE IF NOT EXISTS job_hosts (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    host    TEXT NOT NULL,
    ok      INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error   TEXT,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS job_hosts_job ON job_hosts (job_id);
CREATE TABLE IF NOT EXISTS log_lines (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    seq    INTEGER NOT NULL,
    line   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
";

/// A job's state, as the API names it.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const SUCCESS: &str = "success";
pub const FAILED: &str = "failed";
pub const INTERRUPTED: &str = "interrupted";
/// A push that would ship an older commit than the one deployed.
pub const REFUSED: &str = "refused";

/// A job asked for by a forge's push webhook.
pub fn is_push(source: &str) -> bool {
    source == "github" || source == "gitlab"
}

/// A deploy asked for by a push, a button or the API.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub trigger: String,
    pub key: String,
    pub source: String,
    pub requested_by: Option<String>,
    /// `None`: the branch's newest commit when the job starts.
    pub commit: Option<String>,
    pub branch: String,
    pub author: Option<String>,
    pub message: Option<String>,
    /// A version built before, deployed again without a build (deploy
    /// again, rollback); `None`: build the commit.
    pub version: Option<String>,
    /// The job starts no earlier than this (unix seconds): the quiet period.
    pub not_before: i64,
}

/// One job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i64,
    pub state: String,
    pub trigger: String,
    #[serde(skip)]
    pub key: String,
    pub source: String,
    pub requested_by: Option<String>,
    pub commit: Option<String>,
    pub branch: String,
    pub author: Option<String>,
    pub message: Option<String>,
    pub version: Option<String>,
    pub error: Option<String>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// Pushes this job stands for (newer pushes replace a queued job's commit).
    pub pushes: i64,
    pub hosts: Vec<HostResult>,
    #[serde(skip)]
    pub pid: Option<i64>,
    #[serde(skip)]
    pub log_offset: i64,
    #[serde(skip)]
    pub started_secs: Option<i64>,
    #[serde(skip)]
    pub finished_secs: Option<i64>,
}

impl Job {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({ "id": self.id }))
    }

    pub fn is_active(&self) -> bool {
        self.state == QUEUED || self.state == RUNNING
    }

    pub fn short_commit(&self) -> String {
        self.commit
            .as_deref()
            .map(|c| c[..12.min(c.len())].to_string())
            .unwrap_or_else(|| "(branch head)".into())
    }

    /// Seconds it ran, once it has finished.
    pub fn duration(&self) -> Option<i64> {
        Some(self.finished_secs? - self.started_secs?)
    }
}

/// One host's outcome in a job's deploy.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    pub host: String,
    pub ok: bool,
    pub outcome: String,
    pub error: Option<String>,
    pub seconds: Option<f64>,
}

/// The database; every call takes the connection for a short statement or two.
pub struct Db {
    conn: Mutex<Connection>,
}

const JOB_COLUMNS: &str = "id, state, trigger, key, source, requested_by, commit_id, branch, author, message, version, error, created, started, finished, pushes, pid, log_offset";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let created: i64 = row.get(12)?;
    let started: Option<i64> = row.get(13)?;
    let finished: Option<i64> = row.get(14)?;
    Ok(Job {
        id: row.get(0)?,
        state: row.get(1)?,
        trigger: row.get(2)?,
        key: row.get(3)?,
        source: row.get(4)?,
        requested_by: row.get(5)?,
        commit: row.get(6)?,
        branch: row.get(7)?,
        author: row.get(8)?,
        message: row.get(9)?,
        version: row.get(10)?,
        error: row.get(11)?,
        created: crate::clock::format_utc(created),
        started: started.map(crate::clock::format_utc),
        finished: finished.map(crate::clock::format_utc),
        pushes: row.get(15)?,
        hosts: Vec::new(),
        pid: row.get(16)?,
        log_offset: row.get(17)?,
        started_secs: started,
        finished_secs: finished,
    })
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        // SQLite gives its -wal and -shm files the database's own mode.
        super::state::private_file(path)?;
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.execute_batch(super::records::SCHEMA))
            .with_context(|| format!("creating the tables in {}", path.display()))?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job; a job still queued for the same role and venv takes the
    /// newer commit instead (pushes are coalesced). Returns the job's id and
    /// whether it was coalesced into a queued one.
    pub fn enqueue(&self, job: &NewJob) -> Result<(i64, bool)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let queued: Option<i64> = tx
            .query_row(
                "SELECT id FROM jobs WHERE state = 'queued' AND key = ?1 ORDER BY id DESC LIMIT 1",
                params![job.key],
                |row| row.get(0),
            )
            .optional()?;
        let result = match queued {
            Some(id) => {
                tx.execute(
                    "UPDATE jobs SET trigger = ?2, source = ?3, requested_by = ?4, commit_id = ?5,
                     branch = ?6, author = ?7, message = ?8, not_before = MAX(not_before, ?9),
                     version = ?10, pushes = pushes + 1 WHERE id = ?1",
                    params![
                        id,
                        job.trigger,
                        job.source,
                        job.requested_by,
                        job.commit,
                        job.branch,
                        job.author,
                        job.message,
                        job.not_before,
                        job.version
                    ],
                )?;
                (id, true)
            }
            None => {
                tx.execute(
                    "INSERT INTO jobs (trigger, key, state, source, requested_by, commit_id, branch,
                     author, message, created, not_before, version)
                     VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        job.trigger,
                        job.key,
                        job.source,
                        job.requested_by,
                        job.commit,
                        job.branch,
                        job.author,
                        job.message,
                        now(),
                        job.not_before,
                        job.version
                    ],
                )?;
                (tx.last_insert_rowid(), false)
            }
        };
        tx.commit()?;
        Ok(result)
    }

    /// Queued jobs whose quiet period is over, oldest first.
    pub fn ready(&self, now: i64) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND not_before <= ?1 ORDER BY id"
        ))?;
        let jobs = stmt
            .query_map(params![now], job_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(jobs)
    }

    /// Marks a queued job running; `false` when it is no longer queued.
    pub fn start(&self, id: i64) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE jobs SET state = 'running', started = ?2 WHERE id = ?1 AND state = 'queued'",
            params![id, now()],
        )?;
        Ok(n == 1)
    }

    pub fn set_commit(&self, id: i64, commit: &str, author: &str, message: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET commit_id = ?2, author = COALESCE(author, ?3), message = COALESCE(message, ?4) WHERE id = ?1",
            params![id, commit, author, message],
        )?;
        Ok(())
    }

    pub fn set_version(&self, id: i64, version: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET version = ?2 WHERE id = ?1",
            params![id, version],
        )?;
        Ok(())
    }

    pub fn set_pid(&self, id: i64, pid: Option<u32>) -> Result<()> {
        self.conn()
            .execute("UPDATE jobs SET pid = ?2 WHERE id = ?1", params![id, pid])?;
        Ok(())
    }

    /// Ends a job with its state, the reason when it did not succeed, and its hosts.
    pub fn finish(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
        hosts: &[HostResult],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET state = ?2, error = ?3, finished = ?4, pid = NULL WHERE id = ?1",
            params![id, state, error, now()],
        )?;
        tx.execute("DELETE FROM job_hosts WHERE job_id = ?1", params![id])?;
        for h in hosts {
            tx.execute(
                "INSERT INTO job_hosts (job_id, host, ok, outcome, error, seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, h.host, h.ok, h.outcome, h.error, h.seconds],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Jobs left running by a server that stopped without ending them.
    pub fn running(&self) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY id"
        ))?;
        let jobs = stmt
            .query_map([], job_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(jobs)
    }

    /// Appends log lines; `offset` is how far into the job's log file they reach.
    pub fn append_log(&self, id: i64, lines: &[String], offset: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut seq: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM log_lines WHERE job_id = ?1",
            params![id],
            |row| row.get(0),
        )?;
        {
            let mut insert =
                tx.prepare("INSERT INTO log_lines (job_id, seq, line) VALUES (?1, ?2, ?3)")?;
            for line in lines {
                seq += 1;
                insert.execute(params![id, seq, line])?;
            }
        }
        tx.execute(
            "UPDATE jobs SET log_offset = ?2 WHERE id = ?1",
            params![id, offset],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The job's log lines after `after`, with their numbers.
    pub fn log(&self, id: i64, after: i64) -> Result<Vec<(i64, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, line FROM log_lines WHERE job_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let lines = stmt
            .query_map(params![id, after], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines)
    }

    pub fn get(&self, id: i64) -> Result<Option<Job>> {
        let job = {
            let conn = self.conn();
            conn.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                job_from_row,
            )
            .optional()?
        };
        match job {
            Some(mut job) => {
                job.hosts = self.hosts(id)?;
                Ok(Some(job))
            }
            None => Ok(None),
        }
    }

    /// The newest jobs first.
    pub fn list(&self, limit: i64) -> Result<Vec<Job>> {
        let mut jobs = {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?1"
            ))?;
            let jobs = stmt
                .query_map(params![limit], job_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            jobs
        };
        for job in &mut jobs {
            job.hosts = self.hosts(job.id)?;
        }
        Ok(jobs)
    }

    fn hosts(&self, id: i64) -> Result<Vec<HostResult>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT host, ok, outcome, error, seconds FROM job_hosts WHERE job_id = ?1 ORDER BY rowid",
        )?;
        let hosts = stmt
            .query_map(params![id], |row| {
                Ok(HostResult {
                    host: row.get(0)?,
                    ok: row.get(1)?,
                    outcome: row.get(2)?,
                    error: row.get(3)?,
                    seconds: row.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(hosts)
    }

    /// Removes the logs of jobs that finished before `before`; returns their ids.
    pub fn prune_logs(&self, before: i64) -> Result<Vec<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM jobs WHERE finished IS NOT NULL AND finished < ?1 AND log_pruned = 0",
            )?;
            let ids = stmt
                .query_map(params![before], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            ids
        };
        for id in &ids {
            tx.execute("DELETE FROM log_lines WHERE job_id = ?1", params![id])?;
            tx.execute("UPDATE jobs SET log_pruned = 1 WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str, commit: &str, not_before: i64) -> NewJob {
        NewJob {
            trigger: "main -> prod/a".into(),
            key: key.into(),
            source: "github".into(),
            requested_by: None,
            commit: Some(commit.into()),
            branch: "main".into(),
            author: Some("Ann".into()),
            message: Some(format!("commit {commit}")),
            version: None,
            not_before,
        }
    }

    #[test]
    fn pushes_to_a_queued_job_take_the_newest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("serve.db")).unwrap();
        let (first, coalesced) = db.enqueue(&job("prod/a", "aaa", 0)).unwrap();
        assert!(!coalesced);
        let (second, coalesced) = db.enqueue(&job("prod/a", "bbb", 0)).unwrap();
        assert!(coalesced);
        assert_eq!(first, second);
        let (other, _) = db.enqueue(&job("prod/b", "ccc", 0)).unwrap();
        assert_ne!(other, first);
        let j = db.get(first).unwrap().unwrap();
        assert_eq!(j.commit.as_deref(), Some("bbb"));
        assert_eq!(j.pushes, 2);
        // Once running, a push makes a new queued job.
        assert!(db.start(first).unwrap());
        let (third, coalesced) = db.enqueue(&job("prod/a", "ddd", 0)).unwrap();
        assert!(!coalesced);
        assert_ne!(third, first);
    }

    #[test]
    fn quiet_period_logs_hosts_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("serve.db")).unwrap();
        let (id, _) = db.enqueue(&job("prod/a", "aaa", now() + 60)).unwrap();
        assert!(db.ready(now()).unwrap().is_empty());
        assert_eq!(db.ready(now() + 61).unwrap().len(), 1);
        db.start(id).unwrap();
        db.append_log(id, &["one".into(), "two".into()], 8).unwrap();
        db.append_log(id, &["three".into()], 14).unwrap();
        let lines = db.log(id, 1).unwrap();
        assert_eq!(lines, vec![(2, "two".into()), (3, "three".into())]);
        let hosts = vec![HostResult {
            host: "h1".into(),
            ok: false,
            outcome: "failed".into(),
            error: Some("at health: 500".into()),
            seconds: Some(1.5),
        }];
        db.finish(id, FAILED, Some("h1 failed"), &hosts).unwrap();
        let j = db.get(id).unwrap().unwrap();
        assert_eq!(j.state, FAILED);
        assert_eq!(j.hosts[0].outcome, "failed");
        assert_eq!(j.to_json()["hosts"][0]["host"], "h1");
        assert!(db.prune_logs(now() - 10).unwrap().is_empty());
        assert_eq!(db.prune_logs(now() + 10).unwrap(), vec![id]);
        assert!(db.log(id, 0).unwrap().is_empty());
    }
}
