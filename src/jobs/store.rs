//! The durable job store: SQLite in `state_dir`, owned by one thread.
//!
//! Every accepted job is written before the response goes out, and every
//! state change after. One thread owns the connection and serves requests
//! from a channel in order, so a job's insert always lands before its
//! updates and no async task ever blocks on disk. Writes that queue up
//! while one commits are committed together, with one sync to disk.
//!
//! WAL with `synchronous = FULL`: a commit is on disk when it returns, so an
//! accepted job survives a crash of the process and of the machine.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::record::{JobRecord, JobState};
use crate::names::JobId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the job store at {path} cannot be opened: {source}")]
    Open {
        path: String,
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    #[error("the job store failed: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    #[error("a job cannot be stored or read back: {0}")]
    Record(#[source] Arc<serde_json::Error>),
    #[error("the job store's thread could not start: {0}")]
    Thread(#[source] Arc<std::io::Error>),
    #[error("the job store has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Record(Arc::new(e))
    }
}

/// A page position: jobs created strictly before this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: u64,
    pub id: JobId,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A durable replay entry: a signed request's key, the job it got, and
/// until when (Unix seconds, inclusive) a second sighting must get that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRow {
    pub key: [u8; 16],
    pub project: String,
    pub job: JobId,
    pub expires_at: u64,
}

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

enum Request {
    /// A job record, with the replay entry of the request that created it
    /// and the notifications of its end (one transaction, so one sync to
    /// disk, and a job never ends without its notifications).
    Put(Box<JobRecord>, Option<ReplayRow>, Vec<OutboxRow>, Reply<()>),
    PutReplay(ReplayRow, Reply<()>),
    /// Records an attempt's outcome for (message, target).
    Settle(String, String, OutboxOutcome, Reply<()>),
    /// Outbox rows due at a time, soonest first, at most a number.
    Due(u64, usize, Reply<Vec<OutboxRow>>),
    /// How many rows wait, and when the soonest due after a time is.
    Waiting(u64, Reply<(u64, Option<u64>)>),
    /// Deletes expired entries and returns the live ones.
    LiveReplays(u64, Reply<Vec<ReplayRow>>),
    Get(JobId, Reply<Option<JobRecord>>),
    List {
        project: String,
        limit: usize,
        before: Option<Cursor>,
        reply: Reply<Vec<JobRecord>>,
    },
    Unfinished(Reply<Vec<JobRecord>>),
    Prune {
        older_than_ms: u64,
        keep: u64,
        now_secs: u64,
        reply: Reply<usize>,
    },
}

/// A request already sent to the store thread; resolves with its answer.
pub struct Pending<T> {
    sent: bool,
    answer: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if !self.sent {
            return std::task::Poll::Ready(Err(StoreError::Stopped));
        }
        std::pin::Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.map_err(|_| StoreError::Stopped)?)
    }
}

/// A handle to the store thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    requests: mpsc::Sender<Request>,
    /// The directory it lives in; `None` in memory.
    dir: Option<PathBuf>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    state       TEXT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS replay (
    key         BLOB PRIMARY KEY,
    project     TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS replay_by_expiry ON replay (expires_at);
CREATE TABLE IF NOT EXISTS outbox (
    message     TEXT NOT NULL,
    target      TEXT NOT NULL,
    project     TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    event       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (message, target)
);
CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox (next_at);
";

/// The store holds who deployed what and when: readable by its owner only.
/// SQLite gives its `-wal` and `-shm` files the database file's mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for file in [
        path.to_path_buf(),
        path.with_extension("sqlite3-wal"),
        path.with_extension("sqlite3-shm"),
    ] {
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating) `<dir>/jobs.sqlite3`, creating `dir` too.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_error = |source: Arc<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(Arc::new(e)))?;
        let path: PathBuf = dir.join("jobs.sqlite3");
        create_private(&path).map_err(|e| open_error(Arc::new(e)))?;
        let connection = Connection::open(&path).map_err(|e| open_error(Arc::new(e)))?;
        let mut store = Self::start(connection).map_err(|e| open_error(Arc::new(e)))?;
        store.dir = Some(dir.to_owned());
        Ok(store)
    }

    /// A store that lives only as long as the process; for tests.
    pub fn in_memory() -> Self {
        Self::start(Connection::open_in_memory().expect("SQLite opens in memory"))
            .expect("an in-memory store starts")
    }

    fn start(connection: Connection) -> Result<Self, StoreError> {
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        let (requests, inbox) = mpsc::channel();
        std::thread::Builder::new()
            .name("job-store".into())
            .spawn(move || store_thread(connection, inbox))
            .map_err(|e| StoreError::Thread(Arc::new(e)))?;
        Ok(Self {
            requests,
            dir: None,
        })
    }

    /// The directory the store lives in; `None` for one in memory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Queues a write of the whole record and returns at once; the returned
    /// future resolves when it is durable. Writes are applied in call order.
    pub fn put(&self, record: &JobRecord) -> Pending<()> {
        self.put_with(record, None)
    }

    /// As [`Self::put`], with the replay entry of the request that created
    /// the job, in the same transaction.
    pub fn put_with(&self, record: &JobRecord, replay: Option<ReplayRow>) -> Pending<()> {
        self.send(|reply| Request::Put(Box::new(record.clone()), replay, Vec::new(), reply))
    }

    /// As [`Self::put`], with the notifications of the job's end in the
    /// same transaction. A notification already in the outbox (the same
    /// message to the same target) is left as it is.
    pub fn put_final(&self, record: &JobRecord, outbox: Vec<OutboxRow>) -> Pending<()> {
        self.send(|reply| Request::Put(Box::new(record.clone()), None, outbox, reply))
    }

    /// Records a delivery attempt's outcome.
    pub fn settle(&self, message: &str, target: &str, outcome: OutboxOutcome) -> Pending<()> {
        let (message, target) = (message.to_owned(), target.to_owned());
        self.send(|reply| Request::Settle(message, target, outcome, reply))
    }

    /// The notifications due at `now_ms`, soonest first, at most `limit`.
    pub async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.send(|reply| Request::Due(now_ms, limit, reply)).await
    }

    /// How many notifications wait, and when the soonest due after
    /// `now_ms` is.
    pub async fn waiting(&self, now_ms: u64) -> Result<(u64, Option<u64>), StoreError> {
        self.send(|reply| Request::Waiting(now_ms, reply)).await
    }

    /// Queues a write of a replay entry (a request that joined a job); as
    /// [`Self::put`], it is sent at once and the future waits for durability.
    pub fn put_replay(&self, row: ReplayRow) -> Pending<()> {
        self.send(|reply| Request::PutReplay(row, reply))
    }

    /// Sends a request now; the answer is awaited separately.
    fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Pending<T> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(make(reply)).is_ok();
        Pending { sent, answer }
    }

    /// The replay entries alive at `now`; expired ones are deleted.
    pub async fn live_replays(&self, now: u64) -> Result<Vec<ReplayRow>, StoreError> {
        self.send(|reply| Request::LiveReplays(now, reply)).await
    }

    /// Sent at once, so it is answered after every write sent before it.
    pub fn get(&self, id: JobId) -> Pending<Option<JobRecord>> {
        self.send(|reply| Request::Get(id, reply))
    }

    /// A project's jobs, newest first.
    pub async fn list(
        &self,
        project: &str,
        limit: usize,
        before: Option<Cursor>,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let project = project.to_owned();
        self.send(|reply| Request::List {
            project,
            limit,
            before,
            reply,
        })
        .await
    }

    /// Jobs that were queued or running, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.send(Request::Unfinished).await
    }

    /// Deletes finished jobs created before `older_than_ms`, and beyond the
    /// newest `keep`, and replay entries that expired before `now_secs`.
    /// Returns how many jobs went.
    pub async fn prune(
        &self,
        older_than_ms: u64,
        keep: u64,
        now_secs: u64,
    ) -> Result<usize, StoreError> {
        self.send(|reply| Request::Prune {
            older_than_ms,
            keep,
            now_secs,
            reply,
        })
        .await
    }
}

/// Writes waiting together are committed together: one sync to disk for the
/// batch instead of one each. More than any burst needs; a bound on the
/// time a reply waits for its batch.
const MAX_BATCH: usize = 256;

fn store_thread(connection: Connection, inbox: mpsc::Receiver<Request>) {
    let mut next = None;
    loop {
        let request = match next.take() {
            Some(request) => request,
            None => match inbox.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        if !request.is_write() {
            answer(&connection, request);
            continue;
        }
        // The writes queued behind this one, in order, up to the first
        // request that is not a write (it is answered after the batch).
        let mut batch = vec![request];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(request) if request.is_write() => batch.push(request),
                Ok(request) => {
                    next = Some(request);
                    break;
                }
                Err(_) => break,
            }
        }
        write_batch(&connection, batch);
    }
}

impl Request {
    fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Put(..) | Request::PutReplay(..) | Request::Settle(..)
        )
    }
}

/// Applies writes in one transaction; each gets its own outcome, or the
/// commit's error if the commit fails.
fn write_batch(connection: &Connection, batch: Vec<Request>) {
    let mut transaction = match connection.unchecked_transaction() {
        Ok(transaction) => transaction,
        Err(e) => {
            let error = StoreError::from(e);
            for request in batch {
                reply_write(request, Err(error.clone()));
            }
            return;
        }
    };
    // Each write in a savepoint of its own: one that fails leaves nothing
    // behind, and the others still commit.
    let outcomes: Vec<(Request, Result<(), StoreError>)> = batch
        .into_iter()
        .map(|request| {
            let outcome = transaction
                .savepoint()
                .map_err(StoreError::from)
                .and_then(|savepoint| {
                    match &request {
                        Request::Put(record, replay, outbox, _) => {
                            put(&savepoint, record, replay.as_ref(), outbox)
                        }
                        Request::PutReplay(row, _) => put_replay(&savepoint, row),
                        Request::Settle(message, target, outcome, _) => {
                            settle(&savepoint, message, target, outcome)
                        }
                        _ => unreachable!("only writes are batched"),
                    }?;
                    savepoint.commit().map_err(StoreError::from)
                });
            (request, outcome)
        })
        .collect();
    let committed = transaction.commit().map_err(StoreError::from);
    for (request, outcome) in outcomes {
        let outcome = match &committed {
            Ok(()) => outcome,
            Err(e) => Err(e.clone()),
        };
        reply_write(request, outcome);
    }
}

fn reply_write(request: Request, outcome: Result<(), StoreError>) {
    match request {
        Request::Put(_, _, _, reply)
        | Request::PutReplay(_, reply)
        | Request::Settle(_, _, _, reply) => {
            let _ = reply.send(outcome);
        }
        _ => unreachable!("only writes are batched"),
    }
}

fn answer(connection: &Connection, request: Request) {
    match request {
        Request::LiveReplays(now, reply) => {
            let _ = reply.send(live_replays(connection, now));
        }
        Request::Get(id, reply) => {
            let _ = reply.send(get(connection, id));
        }
        Request::List {
            project,
            limit,
            before,
            reply,
        } => {
            let _ = reply.send(list(connection, &project, limit, before));
        }
        Request::Unfinished(reply) => {
            let _ = reply.send(unfinished(connection));
        }
        Request::Prune {
            older_than_ms,
            keep,
            now_secs,
            reply,
        } => {
            let _ = reply.send(prune(connection, older_than_ms, keep, now_secs));
        }
        Request::Due(now, limit, reply) => {
            let _ = reply.send(due(connection, now, limit));
        }
        Request::Waiting(now, reply) => {
            let _ = reply.send(waiting(connection, now));
        }
        write @ (Request::Put(..) | Request::PutReplay(..) | Request::Settle(..)) => {
            write_batch(connection, vec![write])
        }
    }
}

fn decode(doc: String) -> Result<JobRecord, StoreError> {
    Ok(serde_json::from_str(&doc)?)
}

/// Inside the batch's transaction, so the job, its replay entry and its
/// notifications are durable together.
fn put(
    c: &Connection,
    record: &JobRecord,
    replay: Option<&ReplayRow>,
    outbox: &[OutboxRow],
) -> Result<(), StoreError> {
    let doc = serde_json::to_string(record)?;
    put_job(c, record, &doc)?;
    if let Some(row) = replay {
        put_replay(c, row)?;
    }
    for row in outbox {
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

fn settle(
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

fn due(c: &Connection, now: u64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
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

fn waiting(c: &Connection, now: u64) -> Result<(u64, Option<u64>), StoreError> {
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

fn put_replay(c: &Connection, row: &ReplayRow) -> Result<(), StoreError> {
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

fn live_replays(c: &Connection, now: u64) -> Result<Vec<ReplayRow>, StoreError> {
    c.prepare_cached("DELETE FROM replay WHERE expires_at < ?1")?
        .execute([now as i64])?;
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

fn put_job(c: &Connection, record: &JobRecord, doc: &str) -> Result<(), StoreError> {
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

fn get(c: &Connection, id: JobId) -> Result<Option<JobRecord>, StoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM jobs WHERE id = ?1")?
        .query_row([id.to_string()], |row| row.get(0))
        .optional()?;
    doc.map(decode).transpose()
}

fn list(
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

fn unfinished(c: &Connection) -> Result<Vec<JobRecord>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT doc FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at, id",
    )?;
    let docs = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter().map(decode).collect()
}

fn prune(
    c: &Connection,
    older_than_ms: u64,
    keep: u64,
    now_secs: u64,
) -> Result<usize, StoreError> {
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
    c.execute(
        "DELETE FROM replay WHERE expires_at < ?1",
        [now_secs as i64],
    )?;
    Ok(by_age + by_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ComposeTarget;
    use crate::names::Action;

    fn record(project: &str, created_at_ms: u64, state: JobState) -> JobRecord {
        let target = ComposeTarget::from_parts("p", "web", "/srv", "/srv/c.yml", "").unwrap();
        let mut r = JobRecord::new(
            project,
            Action::Pull,
            &crate::jobs::Deployment {
                target: crate::jobs::DeployTarget::Compose {
                    container: crate::names::ContainerName::parse("p-web").unwrap(),
                    target: target.clone(),
                },
                pin: None,
            },
            false,
            1,
        );
        r.created_at_ms = created_at_ms;
        r.state = state;
        r
    }

    #[tokio::test]
    async fn replay_entries_survive_a_reopen_until_they_expire() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dh-replay-{}", JobId::random()));
        let job = record("a", 1, JobState::Queued);
        let row = |key: u8, expires_at| ReplayRow {
            key: [key; 16],
            project: "a".into(),
            job: job.id,
            expires_at,
        };
        {
            let store = Store::open(&dir).unwrap();
            store.put_with(&job, Some(row(1, 1_000))).await.unwrap();
            store.put_replay(row(2, 2_000)).await.unwrap();
            // While it is open, its write-ahead log exists too.
            for name in ["jobs.sqlite3", "jobs.sqlite3-wal"] {
                let mode = std::fs::metadata(dir.join(name))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{name} is its owner's only");
            }
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.get(job.id).await.unwrap().map(|j| j.id), Some(job.id));
        assert_eq!(
            store.live_replays(1_000).await.unwrap(),
            vec![row(1, 1_000), row(2, 2_000)],
            "alive through their expiry second"
        );
        assert_eq!(
            store.live_replays(1_001).await.unwrap(),
            vec![row(2, 2_000)]
        );
        assert_eq!(
            store.live_replays(0).await.unwrap(),
            vec![row(2, 2_000)],
            "expired entries were deleted"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn queued_writes_commit_together_and_reads_see_them_in_order() {
        let store = Store::in_memory();
        let records: Vec<_> = (0..300).map(|t| record("a", t, JobState::Queued)).collect();
        let writes: Vec<_> = records.iter().map(|r| store.put(r)).collect();
        // Sent after the writes, so answered after them.
        let read = store.get(records[299].id);
        let mut last = records[299].clone();
        last.state = JobState::Succeeded;
        let update = store.put(&last);
        for write in writes {
            write.await.unwrap();
        }
        assert_eq!(read.await.unwrap().map(|r| r.state), Some(JobState::Queued));
        update.await.unwrap();
        assert_eq!(
            store.get(last.id).await.unwrap().map(|r| r.state),
            Some(JobState::Succeeded)
        );
        assert_eq!(store.list("a", 1000, None).await.unwrap().len(), 300);
    }

    #[tokio::test]
    async fn put_get_and_update() {
        let store = Store::in_memory();
        let mut r = record("a", 1, JobState::Queued);
        store.put(&r).await.unwrap();
        assert_eq!(store.get(r.id).await.unwrap(), Some(r.clone()));
        r.state = JobState::Succeeded;
        r.output = "done".into();
        store.put(&r).await.unwrap();
        assert_eq!(store.get(r.id).await.unwrap().unwrap().output, "done");
        assert_eq!(store.get(JobId::random()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn list_pages_newest_first_per_project() {
        let store = Store::in_memory();
        let mut ids = Vec::new();
        for t in 0..5 {
            let r = record("a", 100 + t, JobState::Succeeded);
            ids.push(r.id);
            store.put(&r).await.unwrap();
        }
        store
            .put(&record("b", 500, JobState::Succeeded))
            .await
            .unwrap();
        let first = store.list("a", 2, None).await.unwrap();
        assert_eq!(
            first.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[4], ids[3]]
        );
        let cursor = Cursor {
            created_at_ms: first[1].created_at_ms,
            id: first[1].id,
        };
        let second = store.list("a", 10, Some(cursor)).await.unwrap();
        assert_eq!(
            second.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[2], ids[1], ids[0]]
        );
    }

    #[tokio::test]
    async fn unfinished_and_prune() {
        let store = Store::in_memory();
        let queued = record("a", 1, JobState::Queued);
        let running = record("a", 2, JobState::Running);
        store.put(&queued).await.unwrap();
        store.put(&running).await.unwrap();
        for t in 0..4 {
            store
                .put(&record("a", 10 + t, JobState::Failed))
                .await
                .unwrap();
        }
        let open: Vec<_> = store
            .unfinished()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(open, vec![queued.id, running.id]);
        // Keep the newest 3 finished jobs; unfinished jobs are never pruned.
        assert_eq!(store.prune(0, 3, 0).await.unwrap(), 1);
        assert_eq!(store.unfinished().await.unwrap().len(), 2);
        // By age: finished jobs created before t=12 go (only t=11 is left).
        assert_eq!(store.prune(12, 100, 0).await.unwrap(), 1);
        assert_eq!(store.prune(14, 100, 0).await.unwrap(), 2);
        assert_eq!(store.list("a", 10, None).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn survives_reopening_from_disk() {
        let dir = std::env::temp_dir().join(format!("dh-store-{}", JobId::random()));
        let r = record("a", 1, JobState::Queued);
        {
            let store = Store::open(&dir).unwrap();
            store.put(&r).await.unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.get(r.id).await.unwrap(), Some(r));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
