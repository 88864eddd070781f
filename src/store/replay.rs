//! The replay table: the signed requests seen, each with the job it got,
//! until its timestamp leaves the tolerance window.

use rusqlite::{Connection, params};

use super::StoreError;
use crate::names::JobId;

/// A durable replay entry: a signed request's key, the job it got, and
/// until when (Unix seconds, inclusive) a second sighting must get that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRow {
    pub key: [u8; 16],
    pub project: String,
    pub job: JobId,
    pub expires_at: u64,
}

pub(super) fn put_replay(c: &Connection, row: &ReplayRow) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO replay (key, project, job_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &row.key[..],
        row.project,
        row.job.to_string(),
        row.expires_at as i64
    ])?;
    Ok(())
}

pub(super) fn live_replays(c: &Connection, now: u64) -> Result<Vec<ReplayRow>, StoreError> {
    prune(c, now)?;
    let mut statement = c.prepare_cached(
        "SELECT key, project, job_id, expires_at FROM replay ORDER BY expires_at",
    )?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // A row that does not decode (a hand-edited file) is skipped, not fatal.
    Ok(rows
        .into_iter()
        .filter_map(|(key, project, job, expires_at)| {
            Some(ReplayRow {
                key: key.try_into().ok()?,
                project,
                job: JobId::parse(&job)?,
                expires_at: u64::try_from(expires_at).ok()?,
            })
        })
        .collect())
}

/// Deletes the entries that expired before `now_secs`.
pub(super) fn prune(c: &Connection, now_secs: u64) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM replay WHERE expires_at < ?1")?
        .execute([now_secs as i64])?;
    Ok(())
}
