//! The wire types of the API, as the OpenAPI document describes them.

use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{Example, Type};
use poem_openapi::{Enum, Object};
use serde::{Deserialize, Serialize};

use crate::gateway::{Code, Operation, Refusal, RefusalKind};
use crate::record;
use crate::record::JobRecord;

/// A JSON response body serialised straight from its type with serde.
///
/// poem-openapi's own `Json` goes through a `serde_json::Value` first, which
/// cost as much as all the rest of refusing a request. The types below
/// derive both `Object` (the schema) and `Serialize` (the bytes) with the
/// same names; schemathesis checks that the two agree. `Deserialize` is
/// how `trigger` reads them back.
pub struct JsonBody<T>(pub T);

const JSON: &str = "application/json; charset=utf-8";

impl<T: Type + Send> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = JSON;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> poem::IntoResponse for JsonBody<T> {
    fn into_response(self) -> poem::Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => poem::Response::builder()
                .header(
                    poem::http::header::CONTENT_TYPE,
                    poem::http::HeaderValue::from_static(JSON),
                )
                .body(body),
            Err(e) => {
                tracing::error!(error = %e, "a response could not be serialised");
                poem::Response::builder()
                    .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .finish()
            }
        }
    }
}

/// The body of `POST /pull` for a container of a compose service.
///
/// Sign these exact bytes: the gateway verifies the raw body, so any
/// serialisation works as long as the signature covers what is sent.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct DeployRequest {
    /// The container's name as `docker ps` shows it (compose's
    /// `container_name`, or names like `project-web-1`).
    #[oai(validator(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$", max_length = 255))]
    pub container_name: String,
    /// Deploy exactly this image, `<repository>@sha256:<64 lowercase hex>`
    /// (the repository in the engine's grammar: an optional registry host,
    /// then lowercase path components), instead of what the compose file's
    /// tag points at. The repository
    /// must match the project's `images`, or, without them, be the one the
    /// compose file names. A later pull without `image` returns the service
    /// to its compose file's image.
    #[oai(
        skip_serializing_if_is_none,
        validator(
            pattern = r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*|[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+|[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)@sha256:[0-9a-f]{64}$",
            max_length = 327
        )
    )]
    pub image: Option<String>,
}

impl Example for DeployRequest {
    fn example() -> Self {
        Self {
            container_name: "billing-web".into(),
            image: None,
        }
    }
}

/// The body of `POST /pull` for a Docker Swarm service, on a gateway whose
/// engine is a Swarm manager.
///
/// Sign these exact bytes, as for a container.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ServiceDeployRequest {
    /// The Swarm service's name, as `docker service ls` shows it.
    #[oai(validator(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$", max_length = 255))]
    pub service_name: String,
    /// Deploy exactly this image, as for a container; without it, the
    /// service's own image reference is resolved to its current digest.
    #[oai(
        skip_serializing_if_is_none,
        validator(
            pattern = r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*|[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+|[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)@sha256:[0-9a-f]{64}$",
            max_length = 327
        )
    )]
    pub image: Option<String>,
}

impl Example for ServiceDeployRequest {
    fn example() -> Self {
        Self {
            service_name: "billing_web".into(),
            image: None,
        }
    }
}

/// The body of `POST /pull`: a container of a compose service, or a Swarm
/// service.
#[derive(Debug, Clone, poem_openapi::Union)]
#[oai(one_of)]
pub enum PullRequest {
    Container(DeployRequest),
    Service(ServiceDeployRequest),
}

/// The body of `POST /build`: what it deploys is what it builds, so it
/// takes no `image`.
///
/// Sign these exact bytes, as for `POST /pull`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct BuildRequest {
    /// The container's name as `docker ps` shows it.
    #[oai(validator(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$", max_length = 255))]
    pub container_name: String,
}

impl Example for BuildRequest {
    fn example() -> Self {
        Self {
            container_name: "billing-web".into(),
        }
    }
}

/// The body of `POST /rollback` for a container of a compose service.
///
/// Sign these exact bytes, as for `POST /pull`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ContainerRollbackRequest {
    /// The container's name as `docker ps` shows it.
    #[oai(validator(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$", max_length = 255))]
    pub container_name: String,
    /// `previous` (the newest release whose image is not the one running),
    /// or the id of the job that made the release (see `listReleases`).
    #[oai(validator(pattern = "^(previous|[0-9a-f]{32})$"))]
    pub to: String,
}

impl Example for ContainerRollbackRequest {
    fn example() -> Self {
        Self {
            container_name: "billing-web".into(),
            to: "previous".into(),
        }
    }
}

/// The body of `POST /rollback` for a Docker Swarm service.
///
/// Sign these exact bytes, as for a container.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ServiceRollbackRequest {
    /// The Swarm service's name, as `docker service ls` shows it.
    #[oai(validator(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$", max_length = 255))]
    pub service_name: String,
    /// As for a container.
    #[oai(validator(pattern = "^(previous|[0-9a-f]{32})$"))]
    pub to: String,
}

impl Example for ServiceRollbackRequest {
    fn example() -> Self {
        Self {
            service_name: "billing_web".into(),
            to: "previous".into(),
        }
    }
}

/// The body of `POST /rollback`: the service, and the release to restore.
#[derive(Debug, Clone, poem_openapi::Union)]
#[oai(one_of)]
pub enum RollbackRequest {
    Container(ContainerRollbackRequest),
    Service(ServiceRollbackRequest),
}

/// A release: what a job that succeeded left running.
#[derive(Debug, Clone, Object, Serialize)]
pub struct Release {
    /// The job that made it: pass it as a rollback's `to`.
    pub job: String,
    /// A compose service's image id, or the digest reference a Swarm job
    /// deployed.
    pub image: String,
    /// `<repository>@sha256:…`, where the image has a digest in the
    /// repository the service names; absent for a built image.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_digest: Option<String>,
    /// When the job ended, RFC 3339, UTC.
    pub released_at: String,
    // Documented on its type, as a job's.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<JobRequester>,
}

impl From<crate::store::Release> for Release {
    fn from(r: crate::store::Release) -> Self {
        Self {
            job: r.job.to_string(),
            image: r.image,
            repository_digest: r.digest,
            released_at: record::rfc3339(r.at_ms),
            requested_by: r.requested_by.map(JobRequester::from),
        }
    }
}

/// A service's releases, newest first.
#[derive(Debug, Clone, Object, Serialize)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
}

/// The release a rollback restores.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
pub struct JobRestored {
    /// The job that made the release.
    pub job: String,
    /// What it deploys: the release's `repository_digest`, or, for a
    /// release without one, its image id.
    pub image: String,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum JobAction {
    /// `compose pull <service>`, then `compose up -d <service>`.
    Pull,
    /// `compose up -d --build <service>`.
    Build,
}

impl JobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Pull => "pull",
            JobAction::Build => "build",
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its service's previous job or for a free slot.
    Queued,
    /// Its compose commands, or the check after them, are running.
    Running,
    /// Compose succeeded and the service's containers run (and are healthy, where checked).
    Succeeded,
    /// A command failed, or the service did not come up; see `error` and `output`.
    Failed,
    /// It ran past the job timeout; its processes were killed.
    TimedOut,
    /// The gateway stopped during it twice, or during its rollback; it was not re-run again.
    Interrupted,
    /// The new version did not come up; the service runs the image it ran
    /// before again (see `rollback`). A failure, like `failed`.
    RolledBack,
}

impl JobStatus {
    /// The state as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Interrupted => "interrupted",
            JobStatus::RolledBack => "rolled_back",
        }
    }

    /// Whether the job has ended, well or not.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// Where a rollback is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RollbackStatus {
    Running,
    /// The service runs `to_image` again and passed the health gate.
    Succeeded,
    /// See `error`; the service may run neither image as it should.
    Failed,
    /// The gateway stopped during it; the job's `error` says what runs.
    Interrupted,
}

impl RollbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackStatus::Running => "running",
            RollbackStatus::Succeeded => "succeeded",
            RollbackStatus::Failed => "failed",
            RollbackStatus::Interrupted => "interrupted",
        }
    }
}

/// The return of a failed deploy to the image the service ran before;
/// present on a job once a rollback started.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
pub struct JobRollback {
    /// The image id the failed deploy brought, when a container ran it.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// The image id the service ran before the deploy.
    pub to_image: String,
    pub state: RollbackStatus,
    /// Why the rollback failed.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, from the decision to roll back to its end;
    /// absent while it runs.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// One command a job ran.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
pub struct JobStep {
    /// The command, exactly as run (no shell).
    pub argv: Vec<String>,
    /// Its exit code; absent when it was killed or did not start.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

/// Who asked for a job (the first request, when others joined it): a
/// request signed with one of the project's secrets, or a CI token.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
pub struct JobRequester {
    /// The secret's place in the project's `secrets`, from 0.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_index: Option<u32>,
    /// The CI token's `iss`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_issuer: Option<String>,
    /// The CI token's `sub`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_subject: Option<String>,
}

impl From<record::Requester> for JobRequester {
    fn from(who: record::Requester) -> Self {
        match who {
            record::Requester::Key { index } => JobRequester {
                key_index: Some(index),
                oidc_issuer: None,
                oidc_subject: None,
            },
            record::Requester::Token { issuer, subject } => JobRequester {
                key_index: None,
                oidc_issuer: Some(issuer),
                oidc_subject: Some(subject),
            },
        }
    }
}

/// A deploy job.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Job {
    /// 32 hex digits; 128 random bits.
    pub id: String,
    /// The policy project that asked for it.
    pub project: String,
    pub action: JobAction,
    pub container_name: String,
    /// The compose service, from the container's `com.docker.compose.service` label.
    pub service: String,
    /// The compose project, from `com.docker.compose.project`.
    pub compose_project: String,
    /// The compose files, from `com.docker.compose.project.config_files`.
    pub compose_files: Vec<String>,
    pub state: JobStatus,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC; absent until it starts.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339, UTC; absent until it ends.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub steps: Vec<JobStep>,
    /// The last 64 KiB of the commands' combined stdout and stderr.
    pub output: String,
    /// Why it did not succeed, in a sentence; absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// 1, or 2 when it was re-run after the gateway stopped during it.
    pub attempt: u32,
    /// This request was seen before; this is the job the first one started.
    pub replayed: bool,
    /// This request joined a job that was already queued for the same service and action.
    pub coalesced: bool,
    /// The job redeploys the gateway's own compose service, so a helper
    /// container runs it; the gateway restarts during the job.
    pub self_update: bool,
    /// The image id the service's container ran before this job changed it.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// The pin this job deploys, `<repository>@sha256:…`, as sent.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The pin's digest, `sha256:…`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    // Documented on its type: a described reference becomes an `allOf`,
    // which some client generators cannot read.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<JobRollback>,
    /// The Swarm service a Swarm job updates. Such a job has an empty
    /// `container_name`, `compose_project` and `compose_files`, and
    /// `service` is the Swarm service's name.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_service: Option<String>,
    /// Of a Swarm job that succeeded: how many tasks run the new image.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas_updated: Option<u64>,
    /// `pulling` or `building`, as the seed tool answered; `up to date`
    /// for a Swarm job whose service already ran the resolved digest.
    pub message: String,
    /// The compose files, comma-joined, as the seed tool answered.
    pub compose_file: String,
    /// The image the service ran when the job ended: its containers' image
    /// id (after a rollback, the image rolled back to), or the digest
    /// reference a Swarm job deployed.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_image: Option<String>,
    // Documented on its type, as `rollback`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<JobRequester>,
    // Documented on its type. Only a rollback has it; its `action` is
    // `pull`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<JobRestored>,
    /// From its start to its end, in milliseconds; absent until it ends.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The names of the service's containers after `up` (empty before it,
    /// and for a Swarm job). Compose v2 names a default-named container
    /// `<project>-<service>-1` where v1 named it `<project>_<service>_1`,
    /// so after a host moves to v2 the next request names the new name.
    pub containers: Vec<String>,
}

impl Job {
    pub fn from_record(r: JobRecord, replayed: bool, coalesced: bool) -> Self {
        // The wire form stays flat: a Swarm job has empty compose fields.
        let (compose, swarm) = match r.target {
            record::JobTarget::Compose(c) => (Some(c), None),
            record::JobTarget::Swarm(s) => (None, Some(s)),
        };
        let service = compose
            .as_ref()
            .map(|c| c.service.clone())
            .or_else(|| swarm.as_ref().map(|s| s.name.clone()))
            .unwrap_or_default();
        let compose_files = compose
            .as_ref()
            .map(|c| c.compose_files.clone())
            .unwrap_or_default();
        Self {
            id: r.id.to_string(),
            action: match r.action {
                crate::names::Action::Pull => JobAction::Pull,
                crate::names::Action::Build => JobAction::Build,
            },
            state: r.state.into(),
            rollback: compose
                .as_ref()
                .and_then(|c| c.rollback.clone())
                .map(JobRollback::from),
            previous_image: r.previous_image,
            image: r.image,
            image_digest: r.image_digest,
            created_at: record::rfc3339(r.created_at_ms),
            started_at: r.started_at_ms.map(record::rfc3339),
            finished_at: r.finished_at_ms.map(record::rfc3339),
            steps: r
                .steps
                .into_iter()
                .map(|s| JobStep {
                    argv: s.argv,
                    exit_code: s.exit_code,
                    duration_ms: s.duration_ms,
                })
                .collect(),
            message: r
                .message
                .unwrap_or_else(|| r.action.progress_word().to_owned()),
            replicas_updated: swarm.as_ref().and_then(|s| s.replicas_updated),
            running_image: r.running_image,
            requested_by: r.requested_by.map(JobRequester::from),
            restored: r.restored.map(|to| JobRestored {
                job: to.job.to_string(),
                image: to.image,
            }),
            duration_ms: r
                .started_at_ms
                .zip(r.finished_at_ms)
                .map(|(start, end)| end.saturating_sub(start)),
            swarm_service: swarm.map(|s| s.name),
            compose_file: compose_files.join(","),
            project: r.project,
            service,
            compose_files,
            self_update: compose.as_ref().is_some_and(|c| c.self_update),
            containers: compose
                .as_ref()
                .map(|c| c.containers.clone())
                .unwrap_or_default(),
            container_name: compose
                .as_ref()
                .map(|c| c.container_name.clone())
                .unwrap_or_default(),
            compose_project: compose.map(|c| c.compose_project).unwrap_or_default(),
            output: r.output,
            error: r.error,
            attempt: r.attempt,
            replayed,
            coalesced,
        }
    }
}

impl From<record::JobState> for JobStatus {
    fn from(state: record::JobState) -> Self {
        match state {
            record::JobState::Queued => JobStatus::Queued,
            record::JobState::Running => JobStatus::Running,
            record::JobState::Succeeded => JobStatus::Succeeded,
            record::JobState::Failed => JobStatus::Failed,
            record::JobState::TimedOut => JobStatus::TimedOut,
            record::JobState::Interrupted => JobStatus::Interrupted,
            record::JobState::RolledBack => JobStatus::RolledBack,
        }
    }
}

impl From<record::Rollback> for JobRollback {
    fn from(b: record::Rollback) -> Self {
        JobRollback {
            from_image: b.from_image,
            to_image: b.to_image,
            state: match b.state {
                record::RollbackState::Running => RollbackStatus::Running,
                record::RollbackState::Succeeded => RollbackStatus::Succeeded,
                record::RollbackState::Failed => RollbackStatus::Failed,
                record::RollbackState::Interrupted => RollbackStatus::Interrupted,
            },
            error: b.error,
            duration_ms: b
                .finished_at_ms
                .map(|end| end.saturating_sub(b.started_at_ms)),
        }
    }
}

impl Example for Job {
    fn example() -> Self {
        Self {
            id: "5f0c3a9e8b7d4c21a0e9f8d7c6b5a493".into(),
            project: "billing".into(),
            action: JobAction::Pull,
            container_name: "billing-web".into(),
            service: "web".into(),
            compose_project: "billing".into(),
            compose_files: vec!["/srv/billing/compose.yml".into()],
            state: JobStatus::Succeeded,
            created_at: "2026-11-28T09:15:02.120Z".into(),
            started_at: Some("2026-11-28T09:15:02.131Z".into()),
            finished_at: Some("2026-11-28T09:15:05.442Z".into()),
            steps: vec![
                JobStep {
                    argv: [
                        "docker",
                        "compose",
                        "--project-name=billing",
                        "--file=/srv/billing/compose.yml",
                        "--project-directory=/srv/billing",
                        "pull",
                        "--",
                        "web",
                    ]
                    .map(String::from)
                    .to_vec(),
                    exit_code: Some(0),
                    duration_ms: 2310,
                },
                JobStep {
                    argv: [
                        "docker",
                        "compose",
                        "--project-name=billing",
                        "--file=/srv/billing/compose.yml",
                        "--project-directory=/srv/billing",
                        "up",
                        "-d",
                        "--",
                        "web",
                    ]
                    .map(String::from)
                    .to_vec(),
                    exit_code: Some(0),
                    duration_ms: 812,
                },
            ],
            output: "$ docker compose … pull -- web\n web Pulled\n$ docker compose … up -d -- web\n Container billing-web  Recreated\n Container billing-web  Started\n".into(),
            error: None,
            attempt: 1,
            replayed: false,
            coalesced: false,
            self_update: false,
            previous_image: Some(
                "sha256:3f1c9a0e5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e".into(),
            ),
            image: None,
            image_digest: None,
            rollback: None,
            swarm_service: None,
            replicas_updated: None,
            message: "pulling".into(),
            compose_file: "/srv/billing/compose.yml".into(),
            running_image: Some(
                "sha256:9c2e4f6a8b0d1c3e5f7a9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a".into(),
            ),
            requested_by: Some(JobRequester {
                key_index: Some(0),
                oidc_issuer: None,
                oidc_subject: None,
            }),
            restored: None,
            duration_ms: Some(3311),
            containers: vec!["billing-web".into()],
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// An error, as an RFC 9457 problem document with the gateway's own `code` and `message`.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Problem {
    /// `urn:delivery-hook:error:<code>`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// Stable and machine-readable, e.g. `signature_mismatch`, `container_not_allowed`.
    pub code: String,
    /// What went wrong and what to do, for a person. Never contains a secret, a
    /// signature, or whether a project or container exists.
    pub message: String,
    /// With `invalid_token`: the check the token failed (`size`, `format`,
    /// `algorithm`, `key`, `signature`, `issuer`, `audience`, `expired`,
    /// `not_yet_valid`, `too_old`, `jti`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// With `compose_model_not_allowed`: each key of the compose model
    /// that the project's rules refuse.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<ModelFinding>>,
}

/// One key of a compose model that the project's rules refuse.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
pub struct ModelFinding {
    /// The compose service, or absent for a top-level key.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Where in the service (or the model), e.g. `volumes[0]`,
    /// `security_opt`, `volumes.data.driver_opts`.
    pub key: String,
    /// `unknown` (a key or value the gateway does not know),
    /// `needs_allow`, `outside_host_paths`, `variable`, `refused` or
    /// `unreadable`.
    pub reason: String,
    /// The `allow` class that would admit it, when one would.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    /// The finding in words.
    pub message: String,
}

impl From<&crate::docker::model::Finding> for ModelFinding {
    fn from(f: &crate::docker::model::Finding) -> Self {
        use crate::docker::model::Why;
        let allow = match &f.why {
            Why::Needs(class, _)
            | Why::Unknown {
                class: Some(class), ..
            } => Some(class.as_str().to_owned()),
            _ => None,
        };
        Self {
            service: f.service.clone(),
            key: f.key.clone(),
            reason: f.why.reason().to_owned(),
            allow,
            message: f.why.to_string(),
        }
    }
}

impl Example for Problem {
    fn example() -> Self {
        Problem::new(
            Code::TimestampOutOfWindow,
            "X-Timestamp is 412 s away from the gateway's clock; at most 300 s is accepted (check the client's clock)",
        )
    }
}

impl Problem {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let status = http_status(code.kind());
        Self {
            kind: ["urn:delivery-hook:error:", code.as_str()].concat(),
            title: poem::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error")
                .into(),
            status,
            code: code.as_str().into(),
            message: message.into(),
            rule: None,
            findings: None,
        }
    }
}

/// A problem document as a response body, with its status.
pub struct ProblemJson(pub Problem);

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = PROBLEM_JSON;

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

/// The media type of problem documents (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

impl poem::IntoResponse for ProblemJson {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .status(
                poem::http::StatusCode::from_u16(self.0.status)
                    .unwrap_or(poem::http::StatusCode::BAD_REQUEST),
            )
            .header(
                poem::http::header::CONTENT_TYPE,
                poem::http::HeaderValue::from_static(PROBLEM_JSON),
            )
            .body(serde_json::to_vec(&self.0).unwrap_or_default())
    }
}

/// The HTTP status of each kind of refusal.
pub fn http_status(kind: RefusalKind) -> u16 {
    match kind {
        RefusalKind::Invalid => 400,
        RefusalKind::Unauthenticated => 401,
        RefusalKind::Forbidden => 403,
        RefusalKind::NotFound => 404,
        RefusalKind::MethodNotAllowed => 405,
        RefusalKind::BodyTimeout => 408,
        RefusalKind::BodyTooLarge => 413,
        RefusalKind::NotJson => 415,
        RefusalKind::Undeployable => 422,
        RefusalKind::RateLimited => 429,
        RefusalKind::Unavailable => 503,
    }
}

impl From<&Refusal> for Problem {
    fn from(r: &Refusal) -> Self {
        Problem {
            rule: r.rule.map(str::to_owned),
            findings: (!r.findings.is_empty())
                .then(|| r.findings.iter().map(ModelFinding::from).collect()),
            ..Problem::new(r.code, r.message.as_ref())
        }
    }
}

/// Turns poem-openapi's own extraction errors (a wrong content type, a
/// parameter that does not parse) into the gateway's refusals.
pub fn refusal_for_parse_error(err: &poem::Error) -> Refusal {
    use poem_openapi::error::ParseParamError;
    if err.status() == poem::http::StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return Refusal::new(
            Code::UnsupportedMediaType,
            "the body must be JSON, sent with Content-Type: application/json",
        );
    }
    if let Some(p) = err.downcast_ref::<ParseParamError>() {
        let unauthorized =
            |code, what: &str| Refusal::new(code, format!("{what} is not valid header text"));
        return match p.name {
            "X-Timestamp" => unauthorized(Code::InvalidTimestamp, "X-Timestamp"),
            "X-Signature" => unauthorized(Code::InvalidSignature, "X-Signature"),
            "X-Project" => unauthorized(Code::InvalidProject, "X-Project"),
            "wait" => Refusal::new(Code::InvalidWait, "wait must be a whole number of seconds"),
            name => Refusal::new(
                Code::InvalidParameter,
                format!("the parameter `{name}` is not valid: {}", p.reason),
            ),
        };
    }
    Refusal::new(Code::InvalidRequest, err.to_string())
}

/// The operations' markers for [`Answer`].
pub mod operation {
    use crate::gateway::Operation;

    /// Names the operation an [`super::Answer`] answers.
    pub trait Marker: Send + 'static {
        const OPERATION: Operation;
    }

    macro_rules! markers {
        ($($name:ident),*) => {$(
            pub enum $name {}
            impl Marker for $name {
                const OPERATION: Operation = Operation::$name;
            }
        )*};
    }
    markers!(
        Pull,
        Build,
        GetJob,
        ListJobs,
        Readiness,
        ListReleases,
        Rollback
    );
}

/// The answer of operation `O`: the response `R`, whose refusals the API
/// document lists from the refusal catalogue, per status, with the codes
/// that `O` can answer with.
pub struct Answer<R, O>(pub R, std::marker::PhantomData<fn() -> O>);

impl<R, O> Answer<R, O> {
    pub fn new(response: R) -> Self {
        Self(response, std::marker::PhantomData)
    }
}

impl<R: From<Refusal>, O: operation::Marker> From<Refusal> for Answer<R, O> {
    fn from(r: Refusal) -> Self {
        debug_assert!(
            r.code.operations().contains(O::OPERATION),
            "{} answered `{}`, which the refusal catalogue does not list for it",
            O::OPERATION.id(),
            r.code.as_str(),
        );
        Self::new(r.into())
    }
}

impl<R, O> poem_openapi::ApiResponse for Answer<R, O>
where
    R: poem_openapi::ApiResponse + From<Refusal>,
    O: operation::Marker,
{
    const BAD_REQUEST_HANDLER: bool = true;

    fn meta() -> poem_openapi::registry::MetaResponses {
        let mut meta = R::meta();
        for response in &mut meta.responses {
            if let Some(status) = response.status {
                response.description = documented(O::OPERATION, status, response.description);
            }
        }
        meta
    }

    fn register(registry: &mut Registry) {
        R::register(registry);
    }

    fn from_parse_request_error(err: poem::Error) -> Self {
        refusal_for_parse_error(&err).into()
    }
}

impl<R: poem::IntoResponse, O: operation::Marker> poem::IntoResponse for Answer<R, O> {
    fn into_response(self) -> poem::Response {
        self.0.into_response()
    }
}

/// The codes `operation` can answer with `status`, from the catalogue.
pub fn codes_of(operation: Operation, status: u16) -> impl Iterator<Item = Code> {
    Code::ALL
        .iter()
        .copied()
        .filter(move |c| c.operations().contains(operation) && http_status(c.kind()) == status)
}

/// A response's description followed by the list of its codes; written once
/// per operation and status, when the document is first built.
fn documented(operation: Operation, status: u16, base: &'static str) -> &'static str {
    type Written = Vec<((Operation, u16), &'static str)>;
    static WRITTEN: std::sync::Mutex<Written> = std::sync::Mutex::new(Vec::new());
    if codes_of(operation, status).next().is_none() {
        return base;
    }
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, text)) = written.iter().find(|(key, _)| *key == (operation, status)) {
        return text;
    }
    let mut text = format!("{base}\n\nCodes:");
    for code in codes_of(operation, status) {
        text.push_str(&format!("\n- `{}`: {}", code.as_str(), code.title()));
    }
    let text: &'static str = Box::leak(text.into_boxed_str());
    written.push(((operation, status), text));
    text
}

/// Maps refusals onto a response's variants by kind. Variants listed under
/// `retry` carry a `Retry-After` header; a kind the response cannot produce
/// falls back to `otherwise`.
macro_rules! refusal_responses {
    (
        $response:ident,
        plain { $($kind:ident => $variant:ident),* $(,)? },
        retry { $($retry_kind:ident => $retry_variant:ident),* $(,)? },
        otherwise $fallback:ident $(,)?
    ) => {
        impl From<$crate::gateway::Refusal> for $response {
            fn from(r: $crate::gateway::Refusal) -> Self {
                use $crate::gateway::RefusalKind;
                let problem = $crate::api::wire::ProblemJson($crate::api::wire::Problem::from(&r));
                let retry_after = r.retry_after.unwrap_or(1);
                #[allow(unreachable_patterns)]
                match r.kind() {
                    $(RefusalKind::$kind => Self::$variant(problem),)*
                    $(RefusalKind::$retry_kind => Self::$retry_variant(problem, retry_after),)*
                    _ => Self::$fallback(problem),
                }
            }
        }
    };
}
pub(crate) use refusal_responses;
