//! The jobs table: each job's record as a JSON document, with the columns
//! its reads select and order by.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::names::JobId;
use crate::record::{JobRecord, JobState};

/// A page position: jobs created strictly before this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: u64,
    pub id: JobId,
}

pub(super) fn decode(doc: String) -> Result<JobRecord, StoreError> {
    Ok(serde_json::from_str(&doc)?)
}

pub(super) fn put_job(c: &Connection, record: &JobRecord, doc: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO jobs (id, project, created_at, state, doc) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
    )?
    .execute(params![
        record.id.to_string(),
        record.project,
        record.created_at_ms as i64,
        record.state.as_str(),
        doc
    ])?;
    Ok(())
}

pub(super) fn get(c: &Connection, id: JobId) -> Result<Option<JobRecord>, StoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM jobs WHERE id = ?1")?
        .query_row([id.to_string()], |row| row.get(0))
        .optional()?;
    doc.map(decode).transpose()
}

pub(super) fn list(
    c: &Connection,
    project: &str,
    limit: usize,
    before: Option<Cursor>,
) -> Result<Vec<JobRecord>, StoreError> {
    let (at, id) = match before {
        Some(cursor) => (cursor.created_at_ms as i64, cursor.id.to_string()),
        None => (i64::MAX, String::new()),
    };
    let mut statement = c.prepare_cached(
        "SELECT doc FROM jobs WHERE project = ?1 AND (created_at < ?2 OR (created_at = ?2 AND id < ?3))
         ORDER BY created_at DESC, id DESC LIMIT ?4",
    )?;
    let id_bound = if before.is_some() { id } else { "~".to_owned() };
    let docs = statement
        .query_map(params![project, at, id_bound, limit as i64], |row| {
            row.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter().map(decode).collect()
}

pub(super) fn unfinished(c: &Connection) -> Result<Vec<JobRecord>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT doc FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at, id",
    )?;
    let docs = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter().map(decode).collect()
}

/// Deletes finished jobs created before `older_than_ms`, and beyond the
/// newest `keep`; returns how many went.
pub(super) fn prune(c: &Connection, older_than_ms: u64, keep: u64) -> Result<usize, StoreError> {
    let unfinished = [JobState::Queued.as_str(), JobState::Running.as_str()];
    let by_age = c.execute(
        "DELETE FROM jobs WHERE created_at < ?1 AND state NOT IN (?2, ?3)",
        params![older_than_ms as i64, unfinished[0], unfinished[1]],
    )?;
    let by_count = c.execute(
        "DELETE FROM jobs WHERE state NOT IN (?2, ?3) AND id IN (
             SELECT id FROM jobs WHERE state NOT IN (?2, ?3)
             ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?1)",
        params![keep as i64, unfinished[0], unfinished[1]],
    )?;
    Ok(by_age + by_count)
}
