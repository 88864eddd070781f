//! Everything that touches the Docker engine or runs a process.
//!
//! The rest of the crate sees one narrow trait, [`Engine`]: find a container
//! by name, list a compose service's containers, run one compose command,
//! and run a job in a detached helper container when the deploy replaces
//! the gateway's own container.
//! [`DockerEngine`] implements it with bollard and real compose processes;
//! in-process tests implement it with a fake. No other module imports
//! bollard or spawns anything.

pub mod compose;
pub mod copies;
mod engine;
pub mod host_path;
pub mod image_ref;
pub mod model;
mod output;
pub mod pins;
mod process;
pub mod swarm;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use compose::{ComposeLabels, ComposeOp, ComposeTarget, RealPaths, Resolved, TargetError};
pub use copies::{CopyInUse, JudgedCopies};
pub use engine::LABEL_HELPER;
pub use engine::{DockerEngine, NoComposeTool};
pub use image_ref::{ImagePin, PinError, Reference};
pub use output::OutputLog;
pub use pins::PinFiles;
pub use swarm::{Distribution, SwarmService, TaskCount, UpdateState};

use crate::names::{ContainerName, JobId, SwarmServiceName};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The socket did not answer; the caller sees 503.
    #[error("the Docker engine is unreachable: {0}")]
    Unreachable(String),
    /// The engine answered, with an error.
    #[error("the Docker engine refused the request: {0}")]
    Api(String),
    /// What was asked cannot work in this setup; the text says why.
    #[error("{0}")]
    Unsupported(String),
}

/// The compose tool a gateway runs, as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeFound {
    /// The argv prefix, e.g. `["docker", "compose"]`.
    pub argv: Vec<String>,
    /// What `version --short` printed (`2.26.1`, `1.29.2`), or `unknown`.
    pub version: String,
}

impl ComposeFound {
    /// Reads the version from `version --short` output, which may carry
    /// warnings before it (v1 prints Python's on stderr).
    pub fn new(argv: Vec<String>, version_output: &str) -> Self {
        let version = version_output
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or("unknown")
            .to_string();
        Self { argv, version }
    }

    /// `v1` or `v2`, from the major version; `unknown` without one.
    pub fn generation(&self) -> &'static str {
        match self.version.split('.').next() {
            Some("1") => "v1",
            Some(major) if major.parse::<u32>().is_ok_and(|m| m >= 2) => "v2",
            _ => "unknown",
        }
    }
}

impl std::fmt::Display for ComposeFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "compose {} {} (`{}`)",
            self.generation(),
            self.version,
            self.argv.join(" ")
        )
    }
}

/// What the engine says about a container found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFacts {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: HashMap<String, String>,
    /// The labels of the image it was created from: the engine copies them
    /// onto the container, so a label set here may not come from compose.
    pub image_labels: HashMap<String, String>,
    /// The image reference it was created with (`Config.Image`), as compose
    /// wrote it from the compose file: `repo:tag`, `repo@sha256:…`, or the
    /// name compose gives a built image.
    pub image_reference: String,
}

/// The state of one container of a service, after `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    /// The image id (`sha256:…`).
    pub image: String,
    /// The reference it was created with (`Config.Image`).
    pub reference: String,
    /// `created`, `running`, `restarting`, `exited`, `dead`, …
    pub state: String,
    pub exit_code: i64,
    /// `starting`, `healthy` or `unhealthy`; `None` without a health check.
    pub health: Option<String>,
    /// The health check's last output, trimmed, when it has one.
    pub health_log: Option<String>,
    /// When it was last started; `None` if never.
    pub started_at: Option<SystemTime>,
    /// How often the engine restarted it since it was created.
    pub restart_count: i64,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by this signal (not by us).
    Signal(i32),
    /// Killed with its process group at the job's deadline.
    TimedOut,
    /// Killed with its process group because the gateway is stopping.
    Cancelled,
    /// It never started (tool missing, not executable).
    SpawnFailed(String),
}

/// One command run, as the job reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub argv: Vec<String>,
    pub exit: Exit,
    pub duration: Duration,
}

/// When a command must stop: at the deadline, or when the token is cancelled.
#[derive(Debug, Clone)]
pub struct Limits {
    pub deadline: Instant,
    pub cancel: CancellationToken,
}

/// What a self-update helper needs to run a job on its own (see
/// [`SelfUpdate::start_helper`]).
#[derive(Debug, Clone)]
pub struct HelperRun {
    /// The container name to give the helper.
    pub name: String,
    pub job: JobId,
    /// The gateway's state directory, which the helper records the result in.
    pub state_dir: PathBuf,
    /// The job's time budget.
    pub timeout: Duration,
    /// How long the service must run unchanged after `up`.
    pub stable: Duration,
    /// Variables of the gateway's environment the helper must not get.
    pub withheld_env: Vec<String>,
}

/// How a helper container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperEnd {
    /// It exited with this code.
    Exited(i64),
    /// It does not exist (removed, or never created).
    Gone,
}

/// The files the gateway writes for compose under its state directory:
/// pin overrides (where compose runs a project's own files) and judged
/// copies of compose models.
#[derive(Debug, Clone)]
pub struct StateFiles {
    pub pins: PinFiles,
    pub copies: std::sync::Arc<JudgedCopies>,
}

impl StateFiles {
    pub fn new(state_dir: &std::path::Path) -> Self {
        Self {
            pins: PinFiles::new(state_dir),
            copies: JudgedCopies::new(state_dir),
        }
    }
}

/// What a compose deploy needs: the compose tool and its model of a
/// project, the containers, and the commands.
pub trait ComposeHost: Send + Sync {
    /// The compose tool jobs run, and its version (`/readyz`).
    fn compose_tool(&self) -> BoxFuture<'_, Result<ComposeFound, NoComposeTool>>;

    /// Compose's resolved model of `target`'s project, for exactly the
    /// invocation a job runs (every profile active); `reads` lists every
    /// file compose reads for it, which the cached model is keyed by.
    fn compose_model<'a>(
        &'a self,
        target: &'a ComposeTarget,
        reads: &'a model::Reads,
    ) -> BoxFuture<'a, Result<model::ComposeModel, model::ModelError>>;

    /// Which of `names` are volumes or networks that exist and belong to
    /// another compose project than `project` (or to none).
    fn taken_names<'a>(
        &'a self,
        project: &'a str,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<std::collections::BTreeSet<String>, EngineError>>;

    /// The host paths containers bind read-write, whatever their state,
    /// each with the container's name, as the engine recorded them.
    fn writable_binds(&self) -> BoxFuture<'_, Result<Vec<(String, PathBuf)>, EngineError>>;

    /// The `config_files` every container of the compose project
    /// `project` names, whatever its state.
    fn compose_project_files<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PathBuf>, EngineError>>;

    /// The container with exactly this name, or `None`. Never matches an id
    /// or an id prefix, which the engine's own lookup would.
    fn find_container<'a>(
        &'a self,
        name: &'a ContainerName,
    ) -> BoxFuture<'a, Result<Option<ContainerFacts>, EngineError>>;

    /// The containers of one compose service, one-off containers excluded.
    fn service_containers<'a>(
        &'a self,
        target: &'a ComposeTarget,
    ) -> BoxFuture<'a, Result<Vec<ContainerStatus>, EngineError>>;

    /// Runs one compose command for `target`, appending its output to `output`.
    fn run_compose<'a>(
        &'a self,
        target: &'a ComposeTarget,
        op: ComposeOp,
        limits: &'a Limits,
        output: &'a OutputLog,
    ) -> BoxFuture<'a, CommandOutcome>;
}

/// Image tags, which a rollback moves back and a job keeps for it.
pub trait Images: Send + Sync {
    /// Tags the image `image` (an id) as `repository:tag`, moving the tag
    /// if it names another image.
    fn tag_image<'a>(
        &'a self,
        image: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Removes the tag `reference`; the image itself goes only if nothing
    /// else names or uses it. A tag that does not exist is no error.
    fn untag_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// The repository digests (`repository@sha256:…`) of the image `image`
    /// (an id or a reference), or `None` when the host has no such image.
    fn repo_digests<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, EngineError>>;
}

/// Redeploying the gateway's own compose service: a helper container
/// runs the job, since it recreates the gateway's container.
pub trait SelfUpdate: Send + Sync {
    /// The compose project and service of the container this gateway runs
    /// in, if it runs in one that compose made.
    fn own_service(&self) -> BoxFuture<'_, Option<(String, String)>>;

    /// Starts a detached container from the gateway's own image and mounts
    /// that runs `delivery-hook helper` for the job: a deploy that recreates
    /// the gateway's own container must not run inside it.
    fn start_helper<'a>(&'a self, run: &'a HelperRun) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Waits until the helper container has stopped.
    fn wait_helper<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<HelperEnd, EngineError>>;

    /// Removes a helper container, stopping it first if it still runs.
    fn remove_helper<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
}

/// Docker Swarm services, on an engine that is a manager.
pub trait Swarm: Send + Sync {
    /// Whether the engine is a Swarm manager, which alone can read and
    /// update services.
    fn is_swarm_manager(&self) -> BoxFuture<'_, Result<bool, EngineError>>;

    /// The Swarm service with exactly this name (never an id or prefix).
    fn swarm_service<'a>(
        &'a self,
        name: &'a SwarmServiceName,
    ) -> BoxFuture<'a, Result<Option<SwarmService>, EngineError>>;

    /// Resolves `reference` to its digest and platforms through the
    /// registry, with the gateway's credentials for it.
    fn distribution<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Distribution, EngineError>>;

    /// Updates the service to run `image` (a digest reference) on
    /// `platforms`, with registry credentials for the nodes.
    fn update_swarm_image<'a>(
        &'a self,
        name: &'a SwarmServiceName,
        image: &'a str,
        platforms: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Asks the engine to return the service to its previous spec.
    fn roll_back_swarm_service<'a>(
        &'a self,
        name: &'a SwarmServiceName,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// How many of the service's tasks run, and how many run `image`.
    fn swarm_tasks<'a>(
        &'a self,
        service_id: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<TaskCount, EngineError>>;
}

/// The engine operations the gateway needs, and nothing more, by
/// capability; the gateway holds one `Arc<dyn Engine>`.
pub trait Engine: ComposeHost + Images + SelfUpdate + Swarm + 'static {
    /// Whether the engine answers at all (`/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), EngineError>>;
}

#[cfg(test)]
mod tests {
    use super::ComposeFound;

    #[test]
    fn the_version_and_generation_come_from_version_short() {
        let argv = || vec!["docker".to_string(), "compose".to_string()];
        let v2 = ComposeFound::new(argv(), "2.26.1-4\n");
        assert_eq!((v2.version.as_str(), v2.generation()), ("2.26.1-4", "v2"));
        // v1 may print Python's warnings first.
        let v1 = ComposeFound::new(
            vec!["docker-compose".into()],
            "/usr/lib/python3/dist-packages/paramiko/transport.py:236: CryptographyDeprecationWarning\n1.29.2\n",
        );
        assert_eq!((v1.version.as_str(), v1.generation()), ("1.29.2", "v1"));
        let unknown = ComposeFound::new(argv(), "");
        assert_eq!(
            (unknown.version.as_str(), unknown.generation()),
            ("unknown", "unknown")
        );
        assert_eq!(v2.to_string(), "compose v2 2.26.1-4 (`docker compose`)");
    }
}
