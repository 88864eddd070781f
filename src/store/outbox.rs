//! The outbox table: notifications of jobs' ends, each waiting for its
//! next delivery attempt.

use rusqlite::{Connection, params};

use super::StoreError;
use crate::names::JobId;

/// A notification waiting to be delivered: one message (a job's end) to
/// one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The message's id, the same on every attempt (`webhook-id`).
    pub message: String,
    /// The target's id within its project.
    pub target: String,
    pub project: String,
    pub job: JobId,
    /// The job's end state, as the event names it.
    pub event: String,
    /// When the job ended, Unix milliseconds; retries stop a day after.
    pub created_at_ms: u64,
    /// When the next attempt is due, Unix milliseconds.
    pub next_at_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// The message's body, as JSON, fixed when the job ended.
    pub payload: String,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxOutcome {
    /// Delivered, or given up: the row goes.
    Done,
    /// Failed; try again at `next_at_ms`.
    Retry { attempts: u32, next_at_ms: u64 },
}

pub(super) fn settle(
    c: &Connection,
    message: &str,
    target: &str,
    outcome: &OutboxOutcome,
) -> Result<(), StoreError> {
    match outcome {
        OutboxOutcome::Done => {
            c.prepare_cached("DELETE FROM outbox WHERE message = ?1 AND target = ?2")?
                .execute(params![message, target])?;
        }
        OutboxOutcome::Retry {
            attempts,
            next_at_ms,
        } => {
            c.prepare_cached(
                "UPDATE outbox SET attempts = ?3, next_at = ?4 WHERE message = ?1 AND target = ?2",
            )?
            .execute(params![message, target, attempts, *next_at_ms as i64])?;
        }
    }
    Ok(())
}

pub(super) fn due(c: &Connection, now: u64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT message, target, project, job_id, event, created_at, next_at, attempts, payload
         FROM outbox WHERE next_at <= ?1 ORDER BY next_at LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![now as i64, limit as i64], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, u32>(7)?,
                row.get::<_, String>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(message, target, project, job, event, created, next, attempts, payload)| {
                Some(OutboxRow {
                    message,
                    target,
                    project,
                    job: JobId::parse(&job)?,
                    event,
                    created_at_ms: u64::try_from(created).ok()?,
                    next_at_ms: u64::try_from(next).ok()?,
                    attempts,
                    payload,
                })
            },
        )
        .collect())
}

pub(super) fn waiting(c: &Connection, now: u64) -> Result<(u64, Option<u64>), StoreError> {
    let (count, soonest) = c
        .prepare_cached(
            "SELECT COUNT(*), MIN(CASE WHEN next_at > ?1 THEN next_at END) FROM outbox",
        )?
        .query_row([now as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
        })?;
    Ok((
        u64::try_from(count).unwrap_or(0),
        soonest.and_then(|s| u64::try_from(s).ok()),
    ))
}

/// New notifications; one already waiting (the same message to the same
/// target) is left as it is.
pub(super) fn put_rows(c: &Connection, rows: &[OutboxRow]) -> Result<(), StoreError> {
    for row in rows {
        c.prepare_cached(
            "INSERT OR IGNORE INTO outbox
             (message, target, project, job_id, event, created_at, next_at, attempts, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            row.message,
            row.target,
            row.project,
            row.job.to_string(),
            row.event,
            row.created_at_ms as i64,
            row.next_at_ms as i64,
            row.attempts,
            row.payload
        ])?;
    }
    Ok(())
}
