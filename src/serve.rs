//! Assembling a running gateway: store, jobs, API, listeners, signals.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::api::server::{self, PerConnection, ServerLimits};
use crate::clock::Clock;
use crate::docker::Engine;
use crate::gateway::{Gateway, REFUSAL_INTERVAL};
use crate::jobs::{JobEvent, JobObserver, JobSettings, Jobs, Outbox};
use crate::metrics::Metrics;
use crate::notifications::Notifier;
use crate::policy::{Policy, PolicyCell};
use crate::record::JobRecord;
use crate::store::{Store, StoreError};

/// How often job history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What can be asked of a running gateway from outside.
pub struct Controls {
    /// Resolves when the gateway should stop (SIGTERM, Ctrl-C).
    pub shutdown: CancellationToken,
    /// Each message is a freshly loaded, valid policy to swap in.
    pub reload: mpsc::Receiver<Policy>,
}

/// A job as the API shows it: the `data` of its notifications.
fn render_job(record: &JobRecord) -> serde_json::Value {
    serde_json::to_value(api::Job::from_record(record.clone(), false, false)).unwrap_or_default()
}

/// Logs job transitions and counts finished jobs.
fn observer(metrics: Arc<Metrics>) -> JobObserver {
    Arc::new(move |job, event| match event {
        JobEvent::Started => tracing::info!(
            job = %job.id,
            project = %job.project,
            container = job.container_name(),
            action = %job.action,
            service = job.service(),
            attempt = job.attempt,
            "job running"
        ),
        JobEvent::Requeued => tracing::warn!(
            job = %job.id,
            project = %job.project,
            container = job.container_name(),
            action = %job.action,
            attempt = job.attempt,
            "job interrupted by shutdown; queued to run again at the next start"
        ),
        JobEvent::Finished { duration } => {
            metrics.job_finished(job.action, job.state, duration);
            tracing::info!(
                job = %job.id,
                project = %job.project,
                container = job.container_name(),
                action = %job.action,
                state = job.state.as_str(),
                duration_ms = duration.as_millis() as u64,
                error = job.error.as_deref().unwrap_or(""),
                "job finished"
            );
        }
    })
}

/// Prunes job history older than `job_history_days` or past
/// `job_history_max`, and replay entries that expired, by `clock`.
pub async fn prune(jobs: &Jobs, policy: &Policy, clock: &Clock) {
    let days = policy.server.job_history_days;
    let older_than = clock
        .unix_ms()
        .saturating_sub(days.saturating_mul(86_400_000));
    match jobs
        .store()
        .prune(older_than, policy.server.job_history_max, clock.unix_secs())
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "pruned job history"),
        Err(e) => tracing::warn!(error = %e, "could not prune job history"),
    }
}

/// Why a gateway could not be built from its store.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to recover jobs from the store: {0}")]
    Recover(StoreError),
    #[error("failed to load the replay entries from the store: {0}")]
    Replay(StoreError),
    #[error("failed to read or write the web page's session key in the state directory: {0}")]
    Sessions(std::io::Error),
}

/// Builds the gateway around an opened store and recovers unfinished jobs.
pub async fn build_gateway(
    policy: Policy,
    engine: Arc<dyn Engine>,
    store: Store,
    clock: Clock,
) -> Result<Arc<Gateway>, StartError> {
    let metrics = Arc::new(Metrics::default());
    let policy = Arc::new(PolicyCell::new(policy));
    let shared = policy.clone();
    let policy = policy.get();
    let notifier = Notifier::new(
        store.clone(),
        shared.clone(),
        metrics.clone(),
        render_job,
        clock.clone(),
    );
    let settings = JobSettings {
        files: crate::docker::StateFiles::new(&policy.server.state_dir),
        policy: shared.clone(),
        outbox: Some(notifier.clone() as Arc<dyn Outbox>),
        clock: clock.clone(),
    };
    store.keep_releases(policy.server.release_history);
    let jobs = Jobs::new(
        engine.clone(),
        store,
        settings,
        Some(observer(metrics.clone())),
    );
    let recovery = jobs.recover().await.map_err(StartError::Recover)?;
    if recovery != Default::default() {
        tracing::info!(
            requeued = recovery.requeued,
            rerun = recovery.rerun,
            abandoned = recovery.abandoned,
            followed = recovery.followed,
            "recovered unfinished jobs from the last run"
        );
    }
    prune(&jobs, &policy, &clock).await;
    let sessions =
        crate::sessions::Sessions::open(&policy.server.state_dir).map_err(StartError::Sessions)?;
    let gateway = Gateway::new(
        shared,
        engine,
        jobs,
        metrics,
        clock,
        notifier,
        Arc::new(sessions),
    );
    let restored = gateway
        .restore_replays()
        .await
        .map_err(StartError::Replay)?;
    if restored > 0 {
        tracing::info!(
            entries = restored,
            "restored replay protection from the last run"
        );
    }
    Ok(Arc::new(gateway))
}

/// Serves until `controls.shutdown`, then stops accepting, lets running jobs
/// finish for the grace period, and returns once everything is recorded.
pub async fn run_until_shutdown(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    controls: Controls,
) -> std::io::Result<()> {
    let policy = gateway.policy();
    let grace = Duration::from_secs(policy.docker.shutdown_grace_secs);
    let limits = ServerLimits {
        max_connections: policy.server.max_connections,
        per_connection: PerConnection::InForce(gateway.policy_cell()),
        drain: grace + Duration::from_secs(5),
    };
    let stop = controls.shutdown.clone();
    let background = CancellationToken::new();

    warm(&gateway);
    let notifications = tokio::spawn(gateway.notifier().clone().run(background.clone()));
    let maintenance = tokio::spawn(maintain(
        gateway.clone(),
        controls.reload,
        background.clone(),
    ));
    let metrics_server = metrics_listener.map(|listener| {
        let app = api::metrics_app(gateway.clone());
        let limits = ServerLimits {
            max_connections: 64,
            ..limits.clone()
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            server::accept_loop(listener, app, limits, stop.cancelled_owned()).await
        })
    });
    let jobs_stopped = tokio::spawn(stop_jobs(gateway.jobs().clone(), stop.clone(), grace));
    let served = server::accept_loop(
        listener,
        api::app(gateway.clone()),
        limits,
        stop.cancelled_owned(),
    )
    .await;
    let _ = jobs_stopped.await;
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    background.cancel();
    let _ = maintenance.await;
    let _ = notifications.await;
    gateway.flush_refusal_counts();
    tracing::info!("stopped");
    served
}

/// Fetches the issuers' keys in the background.
fn warm(gateway: &Arc<Gateway>) {
    let gateway = gateway.clone();
    tokio::spawn(async move { gateway.warm_issuers().await });
}

/// Until `background` is cancelled: prunes the job history, writes the
/// refusal counts, and puts reloaded policies in force.
async fn maintain(
    gateway: Arc<Gateway>,
    mut reloads: mpsc::Receiver<Policy>,
    background: CancellationToken,
) {
    let mut prune_timer = tokio::time::interval(PRUNE_EVERY);
    prune_timer.tick().await;
    let mut refusal_timer = tokio::time::interval(REFUSAL_INTERVAL);
    refusal_timer.tick().await;
    loop {
        tokio::select! {
            () = background.cancelled() => return,
            _ = prune_timer.tick() => prune(gateway.jobs(), &gateway.policy(), gateway.clock()).await,
            _ = refusal_timer.tick() => gateway.flush_refusal_counts(),
            Some(next) = reloads.recv() => {
                reload(&gateway, next);
                warm(&gateway);
            }
        }
    }
}

/// When `stop` is cancelled: takes no new jobs and waits up to `grace`
/// for the running ones.
async fn stop_jobs(jobs: Jobs, stop: CancellationToken, grace: Duration) {
    stop.cancelled().await;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "stopping: no new jobs; waiting for running ones"
    );
    jobs.shutdown(grace).await;
}

/// The settings that a reload does not change, and whether `next` changes
/// each: they size or bind what the gateway made when it started.
pub fn needs_restart(current: &Policy, next: &Policy) -> Vec<&'static str> {
    let (s, n) = (&current.server, &next.server);
    let (d, e) = (&current.docker, &next.docker);
    [
        ("server.listen", s.listen != n.listen),
        ("server.state_dir", s.state_dir != n.state_dir),
        ("server.docs", s.docs != n.docs),
        ("server.ui.enabled", s.ui.enabled != n.ui.enabled),
        ("server.metrics", s.metrics != n.metrics),
        (
            "server.metrics_listen",
            s.metrics_listen != n.metrics_listen,
        ),
        (
            "server.max_connections",
            s.max_connections != n.max_connections,
        ),
        (
            "server.replay_cache_entries",
            s.replay_cache_entries != n.replay_cache_entries,
        ),
        ("docker.compose", d.compose != e.compose),
        (
            "docker.max_parallel_jobs",
            d.max_parallel_jobs != e.max_parallel_jobs,
        ),
        (
            "docker.shutdown_grace_secs",
            d.shutdown_grace_secs != e.shutdown_grace_secs,
        ),
    ]
    .into_iter()
    .filter_map(|(setting, changed)| changed.then_some(setting))
    .collect()
}

fn reload(gateway: &Gateway, next: Policy) {
    for setting in needs_restart(&gateway.policy(), &next) {
        tracing::warn!(
            setting,
            "this setting changed in the policy but takes effect only after a restart"
        );
    }
    let projects = next.projects().len();
    gateway.replace_policy(next);
    tracing::info!(projects, "policy reloaded");
}
