//! More of the history in `serve.db`: webhook deliveries (each answered once,
//! and listed with its answer), browser sessions (which outlive a restart),
//! and what a trigger last deployed.

use anyhow::Result;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::db::{now, Db, SUCCESS};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    delivery    TEXT,
    received    INTEGER NOT NULL,
    status      INTEGER NOT NULL DEFAULT 0,
    answer      TEXT NOT NULL DEFAULT 'received',
    branch      TEXT,
    commit_id   TEXT,
    UNIQUE (source, delivery)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    who        TEXT NOT NULL,
    deploy     INTEGER NOT NULL,
    csrf       TEXT NOT NULL,
    expires    INTEGER NOT NULL
);
";

/// One webhook request as the deliveries page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub source: String,
    pub delivery: Option<String>,
    pub received: String,
    pub status: i64,
    pub answer: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
}

/// A browser session.
#[derive(Debug, Clone)]
pub struct Session {
    pub who: String,
    pub deploy: bool,
    pub csrf: String,
}

impl Db {
    /// Records a webhook request; `None` when a request with the same
    /// delivery id from the same forge was recorded before (a replay).
    pub fn claim_delivery(&self, source: &str, delivery: Option<&str>) -> Result<Option<i64>> {
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO deliveries (source, delivery, received) VALUES (?1, ?2, ?3)",
            params![source, delivery, now()],
        )?;
        Ok((inserted == 1).then(|| conn.last_insert_rowid()))
    }

    /// What a delivery was answered.
    pub fn answer_delivery(
        &self,
        id: i64,
        status: u16,
        answer: &str,
        push: Option<(&str, &str)>,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE deliveries SET status = ?2, answer = ?3, branch = ?4, commit_id = ?5 WHERE id = ?1",
            params![id, status, answer, push.map(|p| p.0), push.map(|p| p.1)],
        )?;
        Ok(())
    }

    /// The newest deliveries first.
    pub fn deliveries(&self, limit: i64) -> Result<Vec<Delivery>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, source, delivery, received, status, answer, branch, commit_id
             FROM deliveries ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![limit], |row| {
                Ok(Delivery {
                    id: row.get(0)?,
                    source: row.get(1)?,
                    delivery: row.get(2)?,
                    received: crate::clock::format_utc(row.get(3)?),
                    status: row.get(4)?,
                    answer: row.get(5)?,
                    branch: row.get(6)?,
                    commit: row.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The commit (and its job) this role and venv last deployed from
    /// `branch`, before job `before`.
    pub fn last_deployed(
        &self,
        key: &str,
        branch: &str,
        before: i64,
    ) -> Result<Option<(i64, String)>> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, commit_id FROM jobs WHERE key = ?1 AND branch = ?2 AND state = ?3
                 AND commit_id IS NOT NULL AND id < ?4 ORDER BY finished DESC, id DESC LIMIT 1",
                params![key, branch, SUCCESS, before],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(row)
    }

    /// The version (and its commit and branch) this role and venv deployed
    /// successfully before job `id`, other than `version`: a rollback's target.
    pub fn previous_good(
        &self,
        key: &str,
        id: i64,
        version: Option<&str>,
    ) -> Result<Option<(String, Option<String>, String)>> {
        let row = self
            .conn()
            .query_row(
                "SELECT version, commit_id, branch FROM jobs WHERE key = ?1 AND state = ?2
                 AND version IS NOT NULL AND version IS NOT ?3 AND id < ?4
                 ORDER BY id DESC LIMIT 1",
                params![key, SUCCESS, version, id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        Ok(row)
    }

    /// Forgets deliveries received before `before` (with the logs' retention).
    pub fn prune_deliveries(&self, before: i64) -> Result<()> {
        self.conn().execute(
            "DELETE FROM deliveries WHERE received < ?1",
            params![before],
        )?;
        Ok(())
    }

    pub fn save_session(&self, token_hash: &str, session: &Session, expires: i64) -> Result<()> {
        let conn = self.conn();
        conn.execute("DELETE FROM sessions WHERE expires <= ?1", params![now()])?;
        conn.execute(
            "INSERT INTO sessions (token_hash, who, deploy, csrf, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, session.who, session.deploy, session.csrf, expires],
        )?;
        Ok(())
    }

    /// The session with this token hash, unless it has expired.
    pub fn session(&self, token_hash: &str) -> Result<Option<Session>> {
        let session = self
            .conn()
            .query_row(
                "SELECT who, deploy, csrf FROM sessions WHERE token_hash = ?1 AND expires > ?2",
                params![token_hash, now()],
                |row| {
                    Ok(Session {
                        who: row.get(0)?,
                        deploy: row.get(1)?,
                        csrf: row.get(2)?,
                    })
                },
            )
            .optional()?;
        Ok(session)
    }

    pub fn end_session(&self, token_hash: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM sessions WHERE token_hash = ?1",
            params![token_hash],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_id_is_claimed_once_and_sessions_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("serve.db")).unwrap();
        let first = db.claim_delivery("github", Some("d-1")).unwrap();
        assert!(first.is_some());
        assert_eq!(db.claim_delivery("github", Some("d-1")).unwrap(), None);
        assert!(db.claim_delivery("gitlab", Some("d-1")).unwrap().is_some());
        assert!(db.claim_delivery("github", None).unwrap().is_some());
        assert!(db.claim_delivery("github", None).unwrap().is_some());
        db.answer_delivery(first.unwrap(), 200, "queued job 1", Some(("main", "abc")))
            .unwrap();
        let listed = db.deliveries(10).unwrap();
        assert_eq!(listed.len(), 4);
        assert_eq!(listed[3].answer, "queued job 1");
        db.prune_deliveries(now() - 60).unwrap();
        assert_eq!(db.deliveries(10).unwrap().len(), 4);
        db.prune_deliveries(now() + 1).unwrap();
        assert!(db.deliveries(10).unwrap().is_empty());

        let s = Session {
            who: "ann".into(),
            deploy: true,
            csrf: "c".into(),
        };
        db.save_session("live", &s, now() + 60).unwrap();
        db.save_session("dead", &s, now() - 1).unwrap();
        assert_eq!(db.session("live").unwrap().unwrap().who, "ann");
        assert!(db.session("dead").unwrap().is_none());
        db.end_session("live").unwrap();
        assert!(db.session("live").unwrap().is_none());
    }
}
