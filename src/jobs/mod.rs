//! Jobs: the queue, per-service serialisation, the workers and job records.
//!
//! Rules:
//! - per compose service, one job runs at a time;
//! - a request arriving while a job of the same policy project for the same
//!   target and action is still queued joins it (`coalesced`); one arriving
//!   while it runs queues another;
//! - at most `max_parallel_jobs` run across services, and, where the policy
//!   has more than one project, one project's jobs hold at most all but one
//!   of them (all of one).
//!
//! Each service with work has one worker task, which exits when its queue is
//! empty. Active jobs live in memory behind a `watch` channel (so waiters
//! learn of changes at once); every state change is also written to the
//! [`Store`], and a job leaves memory only once its final state is durable.
//!
//! A job that redeploys the gateway's own compose service cannot run inside
//! the gateway: `up` stops the container it runs in. Such a job is handed to
//! a helper container (see [`run_helper`]) that runs the same steps and
//! records the end in the store; the gateway follows the helper until it
//! ends, and a gateway started in its place follows it on from the store.

mod run;
mod self_update;
mod swarm_run;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self_update::{HelperBudget, HelperError, run_helper};

use crate::clock::Clock;
use crate::docker::{Engine, Limits, OutputLog, StateFiles};
use crate::names::{Action, JobId, ProjectName};
use crate::policy::PolicyCell;
use crate::record::{DeployTarget, Deployment, JobRecord, JobState, Requester, RollbackState};
use crate::store::{Cursor, OutboxRow, ReplayRow, Store, StoreError};

/// A job interrupted this many times is not started again.
const MAX_ATTEMPTS: u32 = 2;

/// What jobs run with. Every setting of the policy is read from the policy
/// in force when a job needs it (its timeout, the gate's stable time, the
/// variables a self-update helper is not given), so a reload reaches the
/// next job; only `max_parallel_jobs` is read once, when the jobs start.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Where pin overrides and judged copies are written.
    pub files: StateFiles,
    /// The policy in force: each job's settings, and what a compose job
    /// judges its files by before each command.
    pub policy: Arc<PolicyCell>,
    /// Where the notifications of a job's end go, written with it.
    pub outbox: Option<Arc<dyn Outbox>>,
    /// The gateway's clock: jobs' times and the health gate read it.
    pub clock: Clock,
}

impl JobSettings {
    /// A job's budget, by the policy in force.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.policy.get().docker.job_timeout_secs)
    }

    /// How long a service must run unchanged after `up`, by the policy in
    /// force.
    pub fn stable(&self) -> Duration {
        Duration::from_secs(self.policy.get().docker.stable_secs)
    }

    /// The environment variables the policy in force reads secrets from:
    /// a self-update helper container is given the gateway's environment
    /// without them.
    pub fn withheld_env(&self) -> Vec<String> {
        self.policy.get().secret_env_names()
    }
}

/// Takes the notifications of jobs' ends: they are written to the store in
/// the transaction that records the end, so none is lost to a crash.
pub trait Outbox: Send + Sync {
    /// The notifications of `record`'s end (its state is final).
    fn rows(&self, record: &JobRecord) -> Vec<OutboxRow>;
    /// Some were written and can be delivered.
    fn written(&self);
}

impl std::fmt::Debug for dyn Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

/// An authorised request to run an action on a service.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub project: ProjectName,
    pub action: Action,
    pub deployment: Deployment,
    /// The target is the gateway's own compose service.
    pub self_update: bool,
    /// Roll back when the deploy fails (the project's `rollback`).
    pub rollback: bool,
    /// The real files of a compose target as they were judged when the
    /// request was admitted ([`crate::docker::RealPaths::listing`]).
    pub admitted_files: Vec<String>,
    /// Who asked.
    pub requested_by: Option<Requester>,
}

impl JobRequest {
    /// The new job's record, made at `now_ms`.
    fn record(&self, now_ms: u64) -> JobRecord {
        let mut record = JobRecord::new(
            self.project.as_str(),
            self.action,
            &self.deployment,
            self.self_update,
            now_ms,
        );
        record.requested_by = self.requested_by.clone();
        if let Some(c) = record.compose_mut() {
            c.rollback_on_failure = self.rollback;
            c.admitted_files = self.admitted_files.clone();
        }
        record
    }
}

/// A signed request's replay key and expiry, stored with its job.
#[derive(Debug, Clone, Copy)]
pub struct ReplayMark {
    pub key: [u8; 16],
    pub expires_at: u64,
}

/// The job a request ended up with.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: JobRecord,
    /// It joined a job that was already queued.
    pub coalesced: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("the gateway is shutting down and accepts no new jobs")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Something a job did that an observer (logs, metrics) may want to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    Started,
    Finished { duration: Duration },
    Requeued,
}

pub type JobObserver = Arc<dyn Fn(&JobRecord, JobEvent) + Send + Sync>;

/// What the restart recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub requeued: usize,
    pub rerun: usize,
    pub abandoned: usize,
    /// Self-update jobs whose helper is followed on.
    pub followed: usize,
}

struct Active {
    record: watch::Sender<JobRecord>,
    output: Arc<OutputLog>,
    deployment: Deployment,
    /// Whether the job's record reached the store: `None` until the store
    /// answers. A job the store did not take was refused, and never runs.
    stored: watch::Receiver<Option<bool>>,
}

impl Active {
    /// Waits for the store's answer to the job's insert.
    async fn stored(&self) -> bool {
        let mut stored = self.stored.clone();
        loop {
            if let Some(taken) = *stored.borrow_and_update() {
                return taken;
            }
            if stored.changed().await.is_err() {
                return false;
            }
        }
    }
}

/// Awaits a write on a task of its own, so its outcome is known (to the
/// job's worker) whether or not the request that made it still waits.
fn awaited_apart(
    written: crate::store::Pending<()>,
) -> (
    watch::Receiver<Option<bool>>,
    impl Future<Output = Result<(), StoreError>>,
) {
    let (done, stored) = watch::channel(None);
    let task = tokio::spawn(async move {
        let result = written.await;
        done.send_replace(Some(result.is_ok()));
        result
    });
    let result = async move { task.await.unwrap_or(Err(StoreError::Stopped)) };
    (stored, result)
}

type ServiceKey = (String, String);

#[derive(Default)]
struct Schedule {
    active: HashMap<JobId, Arc<Active>>,
    /// Queued jobs per service; a key is present exactly while its worker lives.
    services: HashMap<ServiceKey, VecDeque<JobId>>,
    running: usize,
}

struct Inner {
    engine: Arc<dyn Engine>,
    store: Store,
    settings: JobSettings,
    permits: Arc<Semaphore>,
    /// Per policy project, the slots it may hold at once while the policy
    /// has other projects: all but one of `permits` (all of one), so no
    /// project holds every slot while another's jobs wait.
    shares: Mutex<HashMap<String, Arc<Semaphore>>>,
    share: usize,
    schedule: Mutex<Schedule>,
    /// Cancelled on shutdown: no new job starts and none is accepted.
    stopping: CancellationToken,
    /// Cancelled when the grace period ends: running jobs are killed.
    kill: CancellationToken,
    idle: Notify,
    observer: Option<JobObserver>,
}

/// The job system; cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

/// Compose project names never start with `@`, so a Swarm service never
/// shares a queue with a compose service.
fn key_of(target: &DeployTarget) -> ServiceKey {
    match target {
        DeployTarget::Compose { target: t, .. } => (t.project.to_string(), t.service.to_string()),
        DeployTarget::Swarm(name) => ("@swarm".to_owned(), name.to_string()),
    }
}

impl Jobs {
    pub fn new(
        engine: Arc<dyn Engine>,
        store: Store,
        settings: JobSettings,
        observer: Option<JobObserver>,
    ) -> Self {
        let slots = settings.policy.get().docker.max_parallel_jobs;
        let permits = Arc::new(Semaphore::new(slots));
        Self {
            inner: Arc::new(Inner {
                engine,
                store,
                settings,
                permits,
                shares: Mutex::new(HashMap::new()),
                share: slots.saturating_sub(1).max(1),
                schedule: Mutex::new(Schedule::default()),
                stopping: CancellationToken::new(),
                kill: CancellationToken::new(),
                idle: Notify::new(),
                observer,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where jobs write pin overrides and the judged copies of compose
    /// models.
    pub fn files(&self) -> &StateFiles {
        &self.inner.settings.files
    }

    /// Queues a job, or joins the queued one of the same policy project for
    /// the same target and action. Returns once the job (and the request's
    /// replay entry, when given) is durable in the store.
    ///
    /// `recorded` is called with the job's id as soon as the job exists,
    /// before anything is awaited: from then on the job runs whether or not
    /// the caller waits for this future to finish.
    pub async fn submit(
        &self,
        request: JobRequest,
        replay: Option<ReplayMark>,
        recorded: impl FnOnce(JobId),
    ) -> Result<Submitted, SubmitError> {
        let row = |job: JobId| {
            replay.map(|mark| ReplayRow {
                key: mark.key,
                project: request.project.to_string(),
                job,
                expires_at: mark.expires_at,
            })
        };
        let (submitted, written) = {
            let mut schedule = self.inner.lock();
            if self.inner.stopping.is_cancelled() {
                return Err(SubmitError::ShuttingDown);
            }
            if let Some(job) = schedule.joinable(&request) {
                recorded(job.id);
                let written =
                    row(job.id).map(|row| awaited_apart(self.inner.store.put_replay(row)).1);
                (
                    Submitted {
                        job,
                        coalesced: true,
                    },
                    written,
                )
            } else {
                let record = request.record(self.inner.settings.clock.unix_ms());
                // Sent while holding the lock, so this insert reaches the store
                // before anything the worker writes about the job.
                let (stored, written) =
                    awaited_apart(self.inner.store.put_with(&record, row(record.id)));
                recorded(record.id);
                self.inner.enqueue(
                    &mut schedule,
                    record.clone(),
                    request.deployment,
                    OutputLog::default(),
                    stored,
                );
                let submitted = Submitted {
                    job: record,
                    coalesced: false,
                };
                (submitted, Some(written))
            }
        };
        if let Some(Err(e)) = match written {
            Some(w) => Some(w.await),
            None => None,
        } {
            // A joined job is not this request's to withdraw.
            if !submitted.coalesced {
                self.inner.withdraw(submitted.job.id);
            }
            return Err(e.into());
        }
        Ok(submitted)
    }

    /// The job with this id, live if it is active, else from the store.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        if let Some(record) = self.inner.live(id) {
            return Ok(Some(record));
        }
        self.inner.store.get(id).await
    }

    /// A project's jobs, newest first, with live state for active ones.
    pub async fn list(
        &self,
        project: &str,
        limit: usize,
        before: Option<Cursor>,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut records = self.inner.store.list(project, limit, before).await?;
        for record in &mut records {
            if let Some(live) = self.inner.live(record.id) {
                *record = live;
            }
        }
        Ok(records)
    }

    /// Waits until the job is final or `limit` passes; returns its latest state.
    pub async fn wait(&self, id: JobId, limit: Duration) -> Result<Option<JobRecord>, StoreError> {
        let receiver = self
            .inner
            .lock()
            .active
            .get(&id)
            .map(|active| active.record.subscribe());
        if let Some(mut receiver) = receiver {
            let _ = tokio::time::timeout(limit, receiver.wait_for(|r| r.state.is_final())).await;
        }
        self.get(id).await
    }

    /// Number of jobs queued and running.
    pub fn depth(&self) -> (usize, usize) {
        let schedule = self.inner.lock();
        let running = schedule.running;
        (schedule.active.len() - running, running)
    }

    /// After a restart: queued jobs are queued again; jobs that were running
    /// are re-run once (compose up is idempotent), or end `interrupted`.
    pub async fn recover(&self) -> Result<Recovery, StoreError> {
        let mut recovery = Recovery::default();
        for mut record in self.inner.store.unfinished().await? {
            let output = OutputLog::with_text(&record.output);
            if record.state == JobState::Running && record.helper().is_some() {
                // A helper runs it; the worker follows the helper.
                recovery.followed += 1;
            } else if record.state == JobState::Running && record.rollback().is_some() {
                // Never re-run: that would deploy the failed version again.
                self.inner
                    .end_interrupted_rollback(&mut record, &output)
                    .await;
                self.inner.write(&record).await?;
                recovery.abandoned += 1;
                continue;
            } else if record.state == JobState::Running {
                if record.attempt >= MAX_ATTEMPTS {
                    output.note("(the gateway stopped during this job again; it is not re-run)");
                    record.state = JobState::Interrupted;
                    record.finished_at_ms = Some(self.inner.settings.clock.unix_ms());
                    record.error = Some("interrupted by gateway restarts, twice".into());
                    record.output = output.text();
                    run::release_hold(&*self.inner.engine, record.id).await;
                    self.inner.write(&record).await?;
                    recovery.abandoned += 1;
                    continue;
                }
                requeue(
                    &mut record,
                    &output,
                    "the gateway restarted during this job",
                );
                recovery.rerun += 1;
            } else {
                recovery.requeued += 1;
            }
            let deployment = match record.deployment() {
                Ok(deployment) => deployment,
                Err(e) => {
                    record.state = JobState::Failed;
                    record.finished_at_ms = Some(self.inner.settings.clock.unix_ms());
                    record.error = Some(format!("cannot be resumed: {e}"));
                    self.inner.write(&record).await?;
                    continue;
                }
            };
            let (stored, written) = awaited_apart(self.inner.store.put(&record));
            self.inner
                .enqueue(&mut self.inner.lock(), record, deployment, output, stored);
            written.await?;
        }
        Ok(recovery)
    }

    /// Stops accepting and starting jobs, lets running ones finish for up to
    /// `grace`, then stops the rest; they are queued again for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.cancel();
        if tokio::time::timeout(grace, self.inner.until_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "jobs still running after the shutdown grace period; stopping them"
            );
            self.inner.kill.cancel();
            self.inner.until_idle().await;
        }
    }
}

impl Schedule {
    /// A queued or running job that `request` can join: the same action
    /// and deployment, never across policy projects (a joined request gets
    /// the job's record and output).
    fn joinable(&self, request: &JobRequest) -> Option<JobRecord> {
        let queue = self.services.get(&key_of(&request.deployment.target))?;
        queue.iter().find_map(|id| {
            let active = self.active.get(id)?;
            let record = active.record.borrow();
            (record.action == request.action
                && record.project == request.project.as_str()
                && active.deployment == request.deployment)
                .then(|| snapshot(active, &record))
        })
    }
}

fn snapshot(active: &Active, record: &JobRecord) -> JobRecord {
    let mut record = record.clone();
    if !record.state.is_final() {
        record.output = active.output.text();
    }
    record
}

/// Writes how a job ended, at `at_ms`, into its record.
fn settle(record: &mut JobRecord, completion: run::Completion, output: &OutputLog, at_ms: u64) {
    record.state = completion.state;
    record.error = completion.error;
    record.finished_at_ms = Some(at_ms);
    record.output = output.text();
}

/// The name of the helper container of a self-update job.
pub fn helper_name(id: JobId) -> String {
    format!("delivery-hook-helper-{id}")
}

fn requeue(record: &mut JobRecord, output: &OutputLog, why: &str) {
    record.attempt += 1;
    output.note(&format!(
        "({why}; it will run again, attempt {})",
        record.attempt
    ));
    record.state = JobState::Queued;
    record.output = output.text();
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self, id: JobId) -> Option<JobRecord> {
        let schedule = self.lock();
        let active = schedule.active.get(&id)?;
        let record = active.record.borrow();
        Some(snapshot(active, &record))
    }

    /// Ends a job whose rollback the gateway's stop cut short, saying what
    /// the service runs now.
    async fn end_interrupted_rollback(&self, record: &mut JobRecord, output: &OutputLog) {
        let running = match record.deployment().map(|d| d.target) {
            Ok(DeployTarget::Compose { target, .. }) => {
                run::what_runs(&*self.engine, &target).await
            }
            Ok(DeployTarget::Swarm(_)) => "a Swarm service has no rollback here".into(),
            Err(e) => format!("the service cannot be named: {e}"),
        };
        let failed = record
            .error
            .clone()
            .unwrap_or_else(|| "the deploy failed".into());
        output.note(&format!(
            "(the gateway stopped during the rollback; it is not re-run; {running})"
        ));
        if let Some(rollback) = record.compose_mut().and_then(|c| c.rollback.as_mut()) {
            rollback.state = RollbackState::Interrupted;
            rollback.error = Some("the gateway stopped during the rollback".into());
            rollback.finished_at_ms = Some(self.settings.clock.unix_ms());
        }
        record.state = JobState::Interrupted;
        record.finished_at_ms = Some(self.settings.clock.unix_ms());
        record.error = Some(format!(
            "{failed}; the gateway stopped during the rollback; {running}"
        ));
        record.output = output.text();
        run::release_hold(&*self.engine, record.id).await;
    }

    /// Writes a job's state; a final one with the notifications of its end.
    async fn write(&self, record: &JobRecord) -> Result<(), StoreError> {
        let outbox = self
            .settings
            .outbox
            .as_ref()
            .filter(|_| record.state.is_final());
        let rows = outbox.map(|o| o.rows(record)).unwrap_or_default();
        let notifies = !rows.is_empty();
        self.store.put_final(record, rows).await?;
        if let Some(outbox) = outbox.filter(|_| notifies) {
            outbox.written();
        }
        Ok(())
    }

    fn notify(&self, record: &JobRecord, event: JobEvent) {
        if let Some(observer) = &self.observer {
            observer(record, event);
        }
    }

    fn enqueue(
        self: &Arc<Self>,
        schedule: &mut Schedule,
        record: JobRecord,
        deployment: Deployment,
        output: OutputLog,
        stored: watch::Receiver<Option<bool>>,
    ) {
        let id = record.id;
        let key = key_of(&deployment.target);
        let (sender, _) = watch::channel(record);
        schedule.active.insert(
            id,
            Arc::new(Active {
                record: sender,
                output: Arc::new(output),
                deployment,
                stored,
            }),
        );
        match schedule.services.get_mut(&key) {
            Some(queue) => queue.push_back(id),
            None => {
                schedule.services.insert(key.clone(), VecDeque::from([id]));
                tokio::spawn(self.clone().work(key));
            }
        }
    }

    /// Takes back a job whose insert failed, if it has not started.
    fn withdraw(&self, id: JobId) {
        let mut schedule = self.lock();
        for queue in schedule.services.values_mut() {
            queue.retain(|queued| *queued != id);
        }
        schedule.active.remove(&id);
    }

    async fn until_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.lock().running == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The slots `project`'s jobs may hold at once.
    fn share_of(&self, project: &str) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        shares
            .entry(project.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
            .clone()
    }

    /// The policy project of the job next in `key`'s queue; `None`, and the
    /// worker's key gone, when the queue is empty.
    fn next_project(&self, key: &ServiceKey) -> Option<String> {
        let mut schedule = self.lock();
        let next = schedule
            .services
            .get(key)
            .and_then(VecDeque::front)
            .and_then(|id| schedule.active.get(id))
            .map(|active| active.record.borrow().project.clone());
        if next.is_none() {
            schedule.services.remove(key);
        }
        next
    }

    /// The worker of one service: runs its queue in order, then exits. A
    /// job takes its project's share of the slots (where the policy has
    /// more than one project), then a slot.
    async fn work(self: Arc<Self>, key: ServiceKey) {
        loop {
            let Some(project) = self.next_project(&key) else {
                return;
            };
            let shared = self.settings.policy.get().projects().len() > 1;
            let permits = tokio::select! {
                permits = async {
                    let share = match shared {
                        true => Some(self.share_of(&project).acquire_owned().await),
                        false => None,
                    };
                    let slot = self.permits.clone().acquire_owned().await;
                    share.transpose().and_then(|share| slot.map(|slot| (share, slot)))
                } => permits,
                () = self.stopping.cancelled() => {
                    self.lock().services.remove(&key);
                    return;
                }
            };
            let Ok(_permits) = permits else { return };
            let (id, active) = {
                let mut schedule = self.lock();
                let next = if self.stopping.is_cancelled() {
                    None
                } else {
                    schedule
                        .services
                        .get_mut(&key)
                        .and_then(VecDeque::pop_front)
                };
                let Some(id) = next else {
                    schedule.services.remove(&key);
                    return;
                };
                let Some(active) = schedule.active.get(&id).cloned() else {
                    continue;
                };
                if active.record.borrow().project != project {
                    // Another project's job came first in the meantime: it
                    // waits for its own share.
                    if let Some(queue) = schedule.services.get_mut(&key) {
                        queue.push_front(id);
                    }
                    continue;
                }
                schedule.running += 1;
                (id, active)
            };
            self.run_one(&active).await;
            let mut schedule = self.lock();
            schedule.active.remove(&id);
            schedule.running -= 1;
            if schedule.running == 0 {
                self.idle.notify_waiters();
            }
        }
    }

    async fn persist(&self, active: &Active) {
        let record = snapshot(active, &active.record.borrow());
        if let Err(e) = self.store.put(&record).await {
            tracing::error!(job = %record.id, error = %e, "could not record a job's state");
        }
    }

    async fn run_one(&self, active: &Active) {
        if !active.stored().await {
            return;
        }
        if active.record.borrow().self_update() {
            return self.run_detached(active).await;
        }
        let started = Instant::now();
        active.record.send_modify(|r| {
            r.state = JobState::Running;
            r.started_at_ms = Some(self.settings.clock.unix_ms());
        });
        self.persist(active).await;
        self.notify(&active.record.borrow(), JobEvent::Started);
        let timeout = self.settings.timeout();
        let limits = Limits {
            deadline: started + timeout,
            cancel: self.kill.child_token(),
        };
        let attempt = active.record.borrow().attempt;
        let completion = self.execute(active, &limits, timeout).await;
        // A job stopped during its rollback is not run again: that would
        // deploy the failed version once more.
        let rolling_back = active.record.borrow().rollback().is_some();
        let requeued =
            completion.state == JobState::Interrupted && attempt < MAX_ATTEMPTS && !rolling_back;
        let mut record = active.record.borrow().clone();
        let event = if requeued {
            requeue(
                &mut record,
                &active.output,
                "the gateway stopped during this job",
            );
            JobEvent::Requeued
        } else {
            settle(
                &mut record,
                completion,
                &active.output,
                self.settings.clock.unix_ms(),
            );
            JobEvent::Finished {
                duration: started.elapsed(),
            }
        };
        self.publish(active, record, event).await;
    }

    /// Runs the job's deployment: a compose service's commands and health
    /// gate, or a Swarm service's update.
    async fn execute(
        &self,
        active: &Active,
        limits: &Limits,
        timeout: Duration,
    ) -> run::Completion {
        let project = active.record.borrow().project.clone();
        let pin = active.deployment.pin.as_ref();
        match &active.deployment.target {
            DeployTarget::Compose { target, .. } => {
                run::JobRun {
                    engine: &*self.engine,
                    store: &self.store,
                    files: &self.settings.files,
                    clock: &self.settings.clock,
                    target,
                    pin,
                    restore: active.deployment.restore.as_ref(),
                    record: &active.record,
                    output: &active.output,
                    limits,
                    timeout,
                    stable: self.settings.stable(),
                    boundary: Some((&self.settings.policy, &project)),
                }
                .execute()
                .await
            }
            DeployTarget::Swarm(name) => {
                swarm_run::SwarmRun {
                    engine: &*self.engine,
                    name,
                    pin,
                    record: &active.record,
                    output: &active.output,
                    limits,
                    timeout,
                }
                .execute()
                .await
            }
        }
    }

    /// Makes a job's new state durable, counts and logs it, then tells
    /// anyone waiting.
    async fn publish(&self, active: &Active, record: JobRecord, event: JobEvent) {
        if let Err(e) = self.write(&record).await {
            tracing::error!(job = %record.id, error = %e, "could not record a job's state");
        }
        self.notify(&record, event);
        active.record.send_replace(record);
    }
}
