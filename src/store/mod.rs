//! The durable state: SQLite in `state_dir`, owned by one thread: the jobs
//! (`jobs.rs`), the replay entries (`replay.rs`), the notification
//! outbox (`outbox.rs`) and the releases (`releases.rs`).
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
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::names::JobId;
use crate::record::JobRecord;

mod jobs;
mod outbox;
mod releases;
mod replay;

pub use jobs::Cursor;
pub use outbox::{OutboxOutcome, OutboxRow};
pub use releases::{Release, compose_key, swarm_key};
pub use replay::ReplayRow;

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

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    /// A job record, with the replay entry of the request that created it
    /// and the notifications of its end (one transaction, so one sync to
    /// disk, and a job never ends without its notifications).
    /// A job that ends `succeeded` is a release of its service, written
    /// with it; the service keeps as many releases as the number says.
    Put(
        Box<JobRecord>,
        Option<ReplayRow>,
        Vec<OutboxRow>,
        u64,
        Reply<()>,
    ),
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
    /// A project's releases of a service, newest first, at most a number.
    Releases {
        project: Option<String>,
        service: String,
        limit: usize,
        reply: Reply<Vec<Release>>,
    },
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
    /// Releases kept per service: the policy's `release_history`.
    release_history: Arc<AtomicU64>,
}

/// Releases kept per service until the policy says otherwise.
pub const DEFAULT_RELEASE_HISTORY: u64 = 20;

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
CREATE TABLE IF NOT EXISTS releases (
    job_id       TEXT PRIMARY KEY,
    project      TEXT NOT NULL,
    service      TEXT NOT NULL,
    image        TEXT NOT NULL,
    digest       TEXT,
    requested_by TEXT,
    at           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_by_service ON releases (service, at DESC, job_id DESC);
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
            release_history: Arc::new(AtomicU64::new(DEFAULT_RELEASE_HISTORY)),
        })
    }

    /// Sets how many releases each service keeps (the policy's
    /// `release_history`), from the next release written.
    pub fn keep_releases(&self, keep: u64) {
        self.release_history.store(keep.max(1), Ordering::Relaxed);
    }

    /// How many releases each service keeps.
    pub fn release_history(&self) -> u64 {
        self.release_history.load(Ordering::Relaxed)
    }

    /// A service's releases (see [`compose_key`] and [`swarm_key`]), only
    /// `project`'s when given, newest first, at most `limit`.
    pub async fn releases(
        &self,
        project: Option<&str>,
        service: &str,
        limit: usize,
    ) -> Result<Vec<Release>, StoreError> {
        let (project, service) = (project.map(str::to_owned), service.to_owned());
        self.send(|reply| Request::Releases {
            project,
            service,
            limit,
            reply,
        })
        .await
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
        let keep = self.release_history.load(Ordering::Relaxed);
        self.send(|reply| Request::Put(Box::new(record.clone()), replay, Vec::new(), keep, reply))
    }

    /// As [`Self::put`], with the notifications of the job's end in the
    /// same transaction. A notification already in the outbox (the same
    /// message to the same target) is left as it is.
    pub fn put_final(&self, record: &JobRecord, outbox: Vec<OutboxRow>) -> Pending<()> {
        let keep = self.release_history.load(Ordering::Relaxed);
        self.send(|reply| Request::Put(Box::new(record.clone()), None, outbox, keep, reply))
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
                        Request::Put(record, replay, outbox, keep, _) => {
                            put(&savepoint, record, replay.as_ref(), outbox, *keep)
                        }
                        Request::PutReplay(row, _) => replay::put_replay(&savepoint, row),
                        Request::Settle(message, target, outcome, _) => {
                            outbox::settle(&savepoint, message, target, outcome)
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
        Request::Put(_, _, _, _, reply)
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
            let _ = reply.send(replay::live_replays(connection, now));
        }
        Request::Get(id, reply) => {
            let _ = reply.send(jobs::get(connection, id));
        }
        Request::List {
            project,
            limit,
            before,
            reply,
        } => {
            let _ = reply.send(jobs::list(connection, &project, limit, before));
        }
        Request::Unfinished(reply) => {
            let _ = reply.send(jobs::unfinished(connection));
        }
        Request::Releases {
            project,
            service,
            limit,
            reply,
        } => {
            let _ = reply.send(releases::list(
                connection,
                project.as_deref(),
                &service,
                limit,
            ));
        }
        Request::Prune {
            older_than_ms,
            keep,
            now_secs,
            reply,
        } => {
            let pruned = jobs::prune(connection, older_than_ms, keep)
                .and_then(|n| replay::prune(connection, now_secs).map(|()| n));
            let _ = reply.send(pruned);
        }
        Request::Due(now, limit, reply) => {
            let _ = reply.send(outbox::due(connection, now, limit));
        }
        Request::Waiting(now, reply) => {
            let _ = reply.send(outbox::waiting(connection, now));
        }
        write @ (Request::Put(..) | Request::PutReplay(..) | Request::Settle(..)) => {
            write_batch(connection, vec![write])
        }
    }
}

/// Inside the batch's transaction, so the job, its replay entry, its
/// notifications and the release it made are durable together.
fn put(
    c: &Connection,
    record: &JobRecord,
    replay: Option<&ReplayRow>,
    outbox: &[OutboxRow],
    keep_releases: u64,
) -> Result<(), StoreError> {
    let doc = serde_json::to_string(record)?;
    jobs::put_job(c, record, &doc)?;
    if let Some(release) = Release::of(record) {
        releases::put_release(c, &release, keep_releases)?;
    }
    if let Some(row) = replay {
        replay::put_replay(c, row)?;
    }
    outbox::put_rows(c, outbox)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ComposeTarget;
    use crate::names::Action;
    use crate::record::JobState;

    fn record(project: &str, created_at_ms: u64, state: JobState) -> JobRecord {
        let target = ComposeTarget::from_parts("p", "web", "/srv", "/srv/c.yml", "").unwrap();
        let mut r = JobRecord::new(
            project,
            Action::Pull,
            &crate::record::Deployment {
                target: crate::record::DeployTarget::Compose {
                    container: crate::names::ContainerName::parse("p-web").unwrap(),
                    target: target.clone(),
                },
                pin: None,
                restore: None,
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
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
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
    async fn releases_are_kept_per_service_whatever_the_jobs_pruning() {
        let store = Store::in_memory();
        store.keep_releases(3);
        let mut made = Vec::new();
        for t in 0..5 {
            let mut r = record("a", 100 + t, JobState::Succeeded);
            r.finished_at_ms = Some(200 + t);
            r.running_image = Some(format!("sha256:{t}"));
            made.push(r.id);
            store.put(&r).await.unwrap();
        }
        let mut failed = record("a", 300, JobState::Failed);
        failed.running_image = Some("sha256:f".into());
        store.put(&failed).await.unwrap();
        let key = compose_key("p", "web");
        let ids = |releases: Vec<Release>| releases.into_iter().map(|r| r.job).collect::<Vec<_>>();
        let kept = ids(store.releases(Some("a"), &key, 100).await.unwrap());
        assert_eq!(
            kept,
            vec![made[4], made[3], made[2]],
            "the newest 3, newest first"
        );
        assert!(
            store
                .releases(Some("b"), &key, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.prune(u64::MAX, 0, 0).await.unwrap(), 6);
        let after = ids(store.releases(None, &key, 2).await.unwrap());
        assert_eq!(after, vec![made[4], made[3]], "pruning jobs keeps releases");
    }

    #[tokio::test]
    async fn survives_reopening_from_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let r = record("a", 1, JobState::Queued);
        {
            let store = Store::open(&dir).unwrap();
            store.put(&r).await.unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.get(r.id).await.unwrap(), Some(r));
    }
}
