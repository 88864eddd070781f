//! Self-update jobs: a deploy that recreates the gateway's own container
//! cannot run inside it, so a helper container runs it.
//!
//! The gateway records the job `running` under the helper's name, starts
//! the helper ([`Engine::start_helper`]), and follows it until it ends; the
//! helper runs `delivery-hook helper`, which is [`run_helper`]: the same
//! steps as any job, its end written into the same store. A gateway that
//! stops meanwhile leaves the job `running` with the helper's name, and the
//! next one follows the helper on.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Active, DeployTarget, Inner, JobEvent, helper_name, run, settle, snapshot};
use crate::clock::Clock;
use crate::docker::{
    CopyInUse, Engine, EngineError, HelperEnd, HelperRun, Limits, OutputLog, StateFiles,
    TargetError,
};
use crate::names::JobId;
use crate::record::{JobRecord, JobState};
use crate::store::{Store, StoreError};

/// How long past the job's timeout a helper is followed before it is stopped;
/// the helper enforces the timeout itself, this covers a helper that hangs.
const HELPER_MARGIN: Duration = Duration::from_secs(60);

/// Why a self-update job could not be handed off, or run by its helper.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no job {0} in the store")]
    Missing(JobId),
    #[error("job {id} cannot be run: {source}")]
    Target { id: JobId, source: TargetError },
    #[error("the job store is in memory, so a helper could not record the result")]
    InMemory,
    #[error("the job could not be recorded before handing it off: {0}")]
    Record(StoreError),
    #[error("the self-update helper could not be started: {0}")]
    Start(EngineError),
}

/// Why a self-update job was not handed to a helper.
enum Handoff {
    /// Its files or model are refused, or no model could be had.
    Refused(run::Completion),
    Failed(HelperError),
}

impl From<HelperError> for Handoff {
    fn from(e: HelperError) -> Self {
        Handoff::Failed(e)
    }
}

/// A self-update job's time limits, as the gateway hands them over.
#[derive(Debug, Clone, Copy)]
pub struct HelperBudget {
    /// The job's timeout, counted from when the gateway started it.
    pub timeout: Duration,
    /// How long the service must run unchanged after `up`.
    pub stable: Duration,
}

/// `delivery-hook helper`: runs a self-update job that a gateway handed off
/// and records how it ended. The job's time budget counts from when the
/// gateway started it.
pub async fn run_helper(
    engine: &dyn Engine,
    store: &Store,
    id: JobId,
    budget: HelperBudget,
    files: &StateFiles,
    clock: &Clock,
    cancel: CancellationToken,
) -> Result<JobRecord, HelperError> {
    let HelperBudget { timeout, stable } = budget;
    let record = store.get(id).await?.ok_or(HelperError::Missing(id))?;
    if record.state.is_final() {
        return Ok(record);
    }
    let deployment = record
        .deployment()
        .map_err(|source| HelperError::Target { id, source })?;
    let DeployTarget::Compose { target, .. } = &deployment.target else {
        return Err(HelperError::Target {
            id,
            source: TargetError::NotCompose,
        });
    };
    let spent = clock.since_ms(record.started_at_ms.unwrap_or_else(|| clock.unix_ms()));
    let limits = Limits {
        deadline: Instant::now() + timeout.saturating_sub(spent),
        cancel,
    };
    let output = OutputLog::with_text(&record.output);
    let (sender, _) = watch::channel(record);
    let completion = run::JobRun {
        engine,
        store,
        files,
        clock,
        target,
        pin: deployment.pin.as_ref(),
        restore: deployment.restore.as_ref(),
        record: &sender,
        output: &output,
        limits: &limits,
        timeout,
        stable,
        boundary: None,
    }
    .execute()
    .await;
    let mut record = sender.borrow().clone();
    settle(&mut record, completion, &output, clock.unix_ms());
    store.put(&record).await?;
    Ok(record)
}

impl Inner {
    /// A self-update job: starts its helper (unless one already runs it)
    /// and follows the helper until it ends. When the gateway stops, it
    /// stops following and leaves the job `running` with the helper's name,
    /// for the next start to follow on.
    pub(super) async fn run_detached(&self, active: &Active) {
        let (id, helper, copy) = {
            let r = active.record.borrow();
            let copy = r.compose().and_then(|c| c.judged_copy.clone());
            (r.id, r.helper().map(str::to_owned), copy)
        };
        // The copy the helper runs is not collected while it may need it.
        let mut _held = copy.map(|c| self.settings.files.copies.hold(c.into()));
        let name = match helper {
            Some(name) => name,
            None => match self.start_helper(active, id).await {
                Ok((name, held)) => {
                    _held = held;
                    name
                }
                Err(Handoff::Refused(refused)) => {
                    let why = refused.error.unwrap_or_default();
                    active.output.note(&format!("({why})"));
                    return self.end_detached(active, refused.state, why).await;
                }
                Err(Handoff::Failed(why)) => {
                    return self
                        .end_detached(active, JobState::Failed, why.to_string())
                        .await;
                }
            },
        };
        let clock = &self.settings.clock;
        let started_ms = active
            .record
            .borrow()
            .started_at_ms
            .unwrap_or_else(|| clock.unix_ms());
        let timeout = self.settings.timeout();
        let budget = timeout + HELPER_MARGIN;
        let left = budget.saturating_sub(clock.since_ms(started_ms));
        let end = tokio::select! {
            end = self.engine.wait_helper(&name) => Some(end),
            () = tokio::time::sleep(left) => None,
            () = self.stopping.cancelled() => {
                tracing::info!(job = %id, helper = %name, "stopping; the self-update helper carries on and the next start follows it");
                return;
            }
        };
        match self.store.get(id).await {
            Ok(Some(record)) if record.state.is_final() => {
                let duration = Duration::from_millis(
                    record
                        .finished_at_ms
                        .unwrap_or_else(|| clock.unix_ms())
                        .saturating_sub(started_ms),
                );
                self.notify(&record, JobEvent::Finished { duration });
                active.record.send_replace(record);
            }
            read => {
                if let Err(e) = &read {
                    tracing::error!(job = %id, error = %e, "could not read a self-update job's result");
                }
                let (state, why) = self.unrecorded_end(&name, end, timeout).await;
                self.end_detached(active, state, why).await;
            }
        }
    }

    /// How a job ends whose helper recorded no result: `end` is how the
    /// helper ended, or `None` when it ran past its time (it is stopped).
    async fn unrecorded_end(
        &self,
        name: &str,
        end: Option<Result<HelperEnd, EngineError>>,
        timeout: Duration,
    ) -> (JobState, String) {
        match end {
            None => {
                if let Err(e) = self.engine.remove_helper(name).await {
                    tracing::warn!(helper = %name, error = %e, "could not stop the self-update helper");
                }
                (
                    JobState::TimedOut,
                    format!(
                        "the self-update helper {name} ran past job_timeout_secs ({} s) and was stopped",
                        timeout.as_secs()
                    ),
                )
            }
            Some(Ok(HelperEnd::Exited(code))) => (
                JobState::Failed,
                format!(
                    "the self-update helper {name} exited with code {code} without recording a result"
                ),
            ),
            Some(Ok(HelperEnd::Gone)) => (
                JobState::Failed,
                format!("the self-update helper {name} is gone and recorded no result"),
            ),
            Some(Err(e)) => (
                JobState::Failed,
                format!("the self-update helper {name} could not be followed: {e}"),
            ),
        }
    }

    /// Judges the job's model and writes the copy the helper runs (unless
    /// the project runs its own files), marks the job running under its
    /// helper's name, durably, then starts the helper; the name and the
    /// copy are recorded first so that a restart in between still finds
    /// the helper, and the helper its copy.
    async fn start_helper(
        &self,
        active: &Active,
        id: JobId,
    ) -> Result<(String, Option<CopyInUse>), Handoff> {
        let name = helper_name(id);
        let state_dir = self.store.dir().ok_or(HelperError::InMemory)?.to_owned();
        let held = self.judge_for_helper(active).await?;
        active.output.note(&format!(
            "(this deploy recreates the gateway's own container, so the helper container {name} runs it)"
        ));
        active.record.send_modify(|r| {
            r.state = JobState::Running;
            r.started_at_ms = Some(self.settings.clock.unix_ms());
            if let Some(c) = r.compose_mut() {
                c.helper = Some(name.clone());
            }
        });
        let record = snapshot(active, &active.record.borrow());
        self.store.put(&record).await.map_err(HelperError::Record)?;
        self.notify(&record, JobEvent::Started);
        let run = HelperRun {
            name: name.clone(),
            job: id,
            state_dir,
            timeout: self.settings.timeout(),
            stable: self.settings.stable(),
            withheld_env: self.settings.withheld_env(),
        };
        self.engine
            .start_helper(&run)
            .await
            .map_err(HelperError::Start)?;
        tracing::info!(job = %id, helper = %name, "self-update handed to a helper container");
        Ok((name, held))
    }

    /// The judged copy a self-update helper runs, made by the gateway,
    /// which has the policy.
    async fn judge_for_helper(&self, active: &Active) -> Result<Option<CopyInUse>, Handoff> {
        let DeployTarget::Compose { target, .. } = &active.deployment.target else {
            return Ok(None);
        };
        let project = active.record.borrow().project.clone();
        let timeout = self.settings.timeout();
        let limits = Limits {
            deadline: Instant::now() + timeout,
            cancel: self.kill.child_token(),
        };
        run::JobRun {
            engine: &*self.engine,
            store: &self.store,
            files: &self.settings.files,
            clock: &self.settings.clock,
            target,
            pin: active.deployment.pin.as_ref(),
            restore: active.deployment.restore.as_ref(),
            record: &active.record,
            output: &active.output,
            limits: &limits,
            timeout,
            stable: self.settings.stable(),
            boundary: Some((&self.settings.policy, &project)),
        }
        .prepare_for_helper()
        .await
        .map_err(Handoff::Refused)
    }

    async fn end_detached(&self, active: &Active, state: JobState, why: String) {
        let mut record = active.record.borrow().clone();
        let clock = &self.settings.clock;
        let duration = clock.since_ms(*record.started_at_ms.get_or_insert_with(|| clock.unix_ms()));
        settle(
            &mut record,
            run::Completion {
                state,
                error: Some(why),
            },
            &active.output,
            clock.unix_ms(),
        );
        self.publish(active, record, JobEvent::Finished { duration })
            .await;
    }
}
