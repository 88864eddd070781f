//! [`Engine`] backed by the real Docker engine (bollard) and compose processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::compose::{LABEL_CONFIG_FILES, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE};
use super::model::{self, ComposeModel, ModelError};
use super::{
    BoxFuture, CommandOutcome, ComposeFound, ComposeHost, ComposeOp, ComposeTarget, ContainerFacts,
    ContainerStatus, Distribution, Engine, EngineError, Exit, HelperEnd, HelperRun, Images, Limits,
    OutputLog, SelfUpdate, Swarm, SwarmService, TaskCount, process,
};
use crate::clock::Clock;
use crate::names::{ContainerName, SwarmServiceName};
use crate::policy::ComposeTool;
use crate::recent::Recent;

/// Bound on one Engine API call made while a client waits for its answer.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on `docker compose version` while detecting the tool.
const DETECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest health-check output kept in a job's error message.
const HEALTH_LOG_CHARS: usize = 500;
/// How long a container lookup by name is reused. A burst of requests for
/// one container (a pipeline retrying, ten jobs fanning out) asks the engine
/// once; a container replaced within this time is still found by compose,
/// which the job runs against the same labels anyway.
const LOOKUP_TTL: Duration = Duration::from_secs(1);
/// Lookups remembered at most; past this the memory is cleared.
const LOOKUP_ENTRIES: usize = 1024;

/// Bound on one `compose config`.
const MODEL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest model read from `compose config`.
const MAX_MODEL_BYTES: usize = 4 << 20;
/// Models kept; a key names the contents of every file read, so an entry
/// never goes stale, and the bound only keeps memory small.
const MODEL_ENTRIES: usize = 256;
const MODEL_TTL: Duration = Duration::from_secs(3600);
/// The most of compose's standard error read from `compose config`.
const MODEL_ERROR_BYTES: usize = 4096;

/// The label that marks a self-update helper container, with its job id.
pub const LABEL_HELPER: &str = "io.delivery-hook.helper.job";
/// The name of the gateway container that started a helper.
pub const LABEL_HELPER_OF: &str = "io.delivery-hook.helper.of";
/// Pause before asking again after the engine failed to answer a wait.
const WAIT_RETRY: Duration = Duration::from_secs(1);

/// The container this gateway runs in, when compose made it.
#[derive(Debug, Clone)]
struct Own {
    id: String,
    project: String,
    service: String,
}

pub struct DockerEngine {
    /// Connected lazily and with the API version negotiated, so the gateway
    /// starts (and answers 503) while the engine is down, and speaks to both
    /// old engines and new ones that refuse old API versions.
    client: OnceCell<Docker>,
    tool: ComposeTool,
    /// The tool found and its version; only success is cached, so a tool
    /// installed after start is found.
    detected: OnceCell<ComposeFound>,
    /// Recent lookups by container name, see [`LOOKUP_TTL`].
    lookups: Recent<String, Option<ContainerFacts>>,
    /// The compose-made container this gateway runs in, looked up once.
    own: OnceCell<Option<Own>>,
    /// Models compose printed, by the command and the identity and
    /// contents of every file it read.
    models: Recent<[u8; 32], Arc<serde_json::Value>>,
}

fn unreachable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unreachable(e.to_string())
}

pub(super) fn classify(e: BollardError) -> EngineError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Api(format!("{status_code}: {message}")),
        other => unreachable(other),
    }
}

pub(super) async fn bounded<T>(
    call: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, BollardError> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(BollardError::RequestTimeoutError),
    }
}

impl DockerEngine {
    pub fn new(tool: ComposeTool, clock: Clock) -> Self {
        Self {
            client: OnceCell::new(),
            tool,
            detected: OnceCell::new(),
            lookups: Recent::new(LOOKUP_TTL, LOOKUP_ENTRIES, clock.clone()),
            models: Recent::new(MODEL_TTL, MODEL_ENTRIES, clock),
            own: OnceCell::new(),
        }
    }

    pub(super) async fn client(&self) -> Result<&Docker, EngineError> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_defaults().map_err(unreachable)?;
                bounded(docker.negotiate_version())
                    .await
                    .map_err(unreachable)
            })
            .await
    }

    /// The compose tool this gateway runs and its version, found once.
    pub async fn compose_found(&self) -> Result<&ComposeFound, NoComposeTool> {
        self.detected
            .get_or_try_init(|| detect_compose(&self.tool))
            .await
    }

    /// The compose argv prefix this gateway runs.
    pub async fn compose_command(&self) -> Result<Vec<String>, NoComposeTool> {
        Ok(self.compose_found().await?.argv.clone())
    }

    /// The running containers compose made (one-off ones left out), as
    /// (compose project, service, container name), sorted.
    pub async fn compose_containers(&self) -> Result<Vec<(String, String, String)>, EngineError> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label".to_string(), vec![LABEL_PROJECT.to_string()])]);
        let options = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        let listed = bounded(docker.list_containers(Some(options)))
            .await
            .map_err(classify)?;
        let mut found: Vec<(String, String, String)> = listed
            .into_iter()
            .filter_map(|summary| {
                let labels = summary.labels?;
                if labels
                    .get(LABEL_ONEOFF)
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                {
                    return None;
                }
                let name = summary.names?.first()?.trim_start_matches('/').to_string();
                Some((
                    labels.get(LABEL_PROJECT)?.clone(),
                    labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
                    name,
                ))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    async fn own(&self) -> Option<&Own> {
        self.own
            .get_or_init(|| async {
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
                let id = own_container_id(&mountinfo)?;
                let found = self.inspect(&id).await.ok()??;
                let labels = found.config?.labels?;
                Some(Own {
                    id,
                    project: labels.get(LABEL_PROJECT)?.clone(),
                    service: labels.get(LABEL_SERVICE)?.clone(),
                })
            })
            .await
            .as_ref()
    }

    /// The helper container: the gateway's own image (by id, so a pull that
    /// moves the tag changes nothing), mounts, environment, user, groups and
    /// network, running `delivery-hook helper` for the job. None of the
    /// gateway's labels are copied, so compose never counts it as one of its
    /// containers.
    async fn helper_body(&self, run: &HelperRun) -> Result<ContainerCreateBody, EngineError> {
        let unsupported = |why: String| EngineError::Unsupported(why);
        let own = self.own().await.ok_or_else(|| {
            unsupported("the gateway does not run in a container that compose made".into())
        })?;
        let found = self.inspect(&own.id).await?.ok_or_else(|| {
            unsupported("the gateway's own container is no longer known to the engine".into())
        })?;
        let state_dir = std::path::absolute(&run.state_dir)
            .map_err(|e| unsupported(format!("state_dir cannot be resolved: {e}")))?;
        let mounted = found
            .mounts
            .iter()
            .flatten()
            .filter_map(|m| m.destination.as_deref())
            .any(|destination| state_dir.starts_with(destination));
        if !mounted {
            return Err(unsupported(format!(
                "state_dir {} is not on a volume or bind mount of the gateway's container, so a helper container could not record the result; mount it",
                state_dir.display()
            )));
        }
        let exe = std::env::current_exe()
            .map_err(|e| unsupported(format!("the gateway's executable cannot be found: {e}")))?;
        let compose = self
            .compose_command()
            .await
            .map_err(|e| unsupported(e.to_string()))?;
        let mut cmd = vec![
            "helper".to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--job".into(),
            run.job.to_string(),
            "--timeout-secs".into(),
            run.timeout.as_secs().to_string(),
            "--stable-secs".into(),
            run.stable.as_secs().to_string(),
            "--".into(),
        ];
        cmd.extend(compose);
        let config = found.config.unwrap_or_default();
        let host = found.host_config.unwrap_or_default();
        let own_name = found.name.unwrap_or_default();
        Ok(ContainerCreateBody {
            image: found.image,
            entrypoint: Some(vec![exe.display().to_string()]),
            cmd: Some(cmd),
            env: helper_env(config.env, &run.withheld_env),
            user: config.user,
            working_dir: config.working_dir,
            // The image's health check probes the gateway's port, which the
            // helper does not serve.
            healthcheck: Some(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([
                (LABEL_HELPER.to_string(), run.job.to_string()),
                (
                    LABEL_HELPER_OF.to_string(),
                    own_name.trim_start_matches('/').to_string(),
                ),
            ])),
            host_config: Some(helper_host_config(host)),
            ..Default::default()
        })
    }

    /// The labels of an image by id; none when it is gone (an image in use
    /// can lose its tags, not its record, so that is a race at most).
    async fn image_labels(&self, id: Option<&str>) -> Result<HashMap<String, String>, EngineError> {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return Ok(HashMap::new());
        };
        let docker = self.client().await?;
        match bounded(docker.inspect_image(id)).await {
            Ok(image) => Ok(image.config.and_then(|c| c.labels).unwrap_or_default()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(HashMap::new()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn inspect(
        &self,
        name_or_id: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, EngineError> {
        let docker = self.client().await?;
        match bounded(docker.inspect_container(name_or_id, None::<InspectContainerOptions>)).await {
            Ok(found) => Ok(Some(found)),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            // The engine resolves an exact name before an id prefix, so a
            // name that is an ambiguous prefix of several ids names nothing.
            Err(BollardError::DockerResponseServerError { message, .. })
                if is_ambiguous_prefix(&message) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(e)),
        }
    }
}

/// The engine's answer to an id prefix that several containers share.
fn is_ambiguous_prefix(message: &str) -> bool {
    message.contains("Multiple IDs found with provided prefix")
}

/// The gateway's environment for its helper, without the variables secrets
/// are read from: the helper runs compose, which never needs them.
fn helper_env(env: Option<Vec<String>>, withheld: &[String]) -> Option<Vec<String>> {
    env.map(|vars| {
        vars.into_iter()
            .filter(|var| {
                let name = var.split_once('=').map_or(var.as_str(), |(n, _)| n);
                !withheld.iter().any(|w| w == name)
            })
            .collect()
    })
}

/// The helper runs with the gateway's mounts, network and groups, and no
/// more privilege than the gateway: the same dropped capabilities, security
/// options, read-only root and resource limits. Removed when it exits.
fn helper_host_config(host: HostConfig) -> HostConfig {
    HostConfig {
        binds: host.binds,
        mounts: host.mounts,
        tmpfs: host.tmpfs,
        group_add: host.group_add,
        network_mode: host.network_mode,
        extra_hosts: host.extra_hosts,
        dns: host.dns,
        cap_add: host.cap_add,
        cap_drop: host.cap_drop,
        security_opt: host.security_opt,
        readonly_rootfs: host.readonly_rootfs,
        userns_mode: host.userns_mode,
        memory: host.memory,
        memory_swap: host.memory_swap,
        nano_cpus: host.nano_cpus,
        cpu_shares: host.cpu_shares,
        cpu_quota: host.cpu_quota,
        cpu_period: host.cpu_period,
        pids_limit: host.pids_limit,
        ulimits: host.ulimits,
        auto_remove: Some(true),
        ..Default::default()
    }
}

/// The id of the container this process runs in: Docker mounts
/// `/var/lib/docker/containers/<id>/…` (hostname, resolv.conf) into each.
pub fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let at = line.find("/containers/")? + "/containers/".len();
        let id = line.get(at..at + 64)?;
        let next = line.as_bytes().get(at + 64);
        (id.bytes().all(|b| b.is_ascii_hexdigit()) && next == Some(&b'/')).then(|| id.to_owned())
    })
}

/// The cache key of a model: the command, and the real path, identity and
/// contents of every file compose reads for it (`reads.files`: the config
/// files, what they include or extend, every env and label file, named or
/// implicit). Never the path text alone: a symlink moved or a file edited
/// is a new key.
///
/// The key also holds the change time of each file, as named and real, and
/// of the directories that hold it up to `within` (the project's working
/// directory). Replacing a directory entry (a symlink swapped in and back)
/// or rewriting a file in place moves a change time, which no one can set
/// back: so a swap while compose reads makes the two keys around the
/// reading differ (the reading is void), and a model read during such a
/// swap is never found again.
fn model_key(
    argv: &[String],
    files: &[PathBuf],
    within: &std::path::Path,
) -> Result<[u8; 32], ModelError> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut hash = Sha256::new();
    for arg in argv {
        hash.update(arg.as_bytes());
        hash.update([0]);
    }
    let changed = |hash: &mut Sha256, meta: &std::fs::Metadata| {
        hash.update(meta.dev().to_le_bytes());
        hash.update(meta.ino().to_le_bytes());
        hash.update(meta.ctime().to_le_bytes());
        hash.update(meta.ctime_nsec().to_le_bytes());
    };
    for file in files {
        hash.update(file.as_os_str().as_encoded_bytes());
        hash.update([0]);
        // The file, the directories holding it up to `within`, and its own
        // directory where that lies outside `within` (an included file).
        let outside = file.parent().filter(|dir| !dir.starts_with(within));
        for entry in std::iter::once(file.as_path()).chain(
            file.ancestors()
                .skip(1)
                .take_while(|dir| dir.starts_with(within))
                .chain(outside),
        ) {
            if let Ok(meta) = std::fs::symlink_metadata(entry) {
                changed(&mut hash, &meta);
            }
        }
        let unreadable =
            |e: std::io::Error| ModelError::File(format!("{} cannot be read: {e}", file.display()));
        match std::fs::canonicalize(file) {
            Ok(real) => {
                let meta = std::fs::metadata(&real).map_err(unreadable)?;
                if meta.is_dir() {
                    hash.update(b"directory\0");
                    continue;
                }
                let contents = model::reader::read_bounded(&real).map_err(unreadable)?;
                hash.update(real.as_os_str().as_encoded_bytes());
                hash.update([0]);
                changed(&mut hash, &meta);
                if let Some(Ok(meta)) = real.parent().map(std::fs::metadata) {
                    changed(&mut hash, &meta);
                }
                hash.update(Sha256::digest(&contents));
            }
            // A file named but missing is part of the key: compose reads an
            // optional one only when it exists, and says what is wrong with
            // a required one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                hash.update(b"absent\0");
            }
            Err(e) => return Err(unreadable(e)),
        }
    }
    Ok(hash.finalize().into())
}

/// No compose tool the policy allows answers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no compose tool found: {tried} does not answer `version --short`")]
pub struct NoComposeTool {
    tried: String,
}

/// The first of `tool`'s candidates that answers `version --short`, with
/// the version it printed. An explicit argv is used even when it does not
/// answer (a wrapper may not know `version`), with an unknown version.
async fn detect_compose(tool: &ComposeTool) -> Result<ComposeFound, NoComposeTool> {
    let candidates = tool.candidates();
    for prefix in &candidates {
        let mut argv = prefix.clone();
        argv.extend(["version".to_string(), "--short".to_string()]);
        let limits = Limits {
            deadline: Instant::now() + DETECT_TIMEOUT,
            cancel: CancellationToken::new(),
        };
        let scratch = OutputLog::with_limit(4096);
        if process::run_command(argv, None, &limits, &scratch)
            .await
            .exit
            == Exit::Code(0)
        {
            return Ok(ComposeFound::new(prefix.clone(), &scratch.text()));
        }
    }
    match tool {
        ComposeTool::Command(prefix) => Ok(ComposeFound::new(prefix.clone(), "")),
        _ => Err(NoComposeTool {
            tried: candidates
                .iter()
                .map(|c| format!("`{}`", c.join(" ")))
                .collect::<Vec<_>>()
                .join(" nor "),
        }),
    }
}

fn container_status(found: bollard::models::ContainerInspectResponse) -> ContainerStatus {
    let state = found.state.unwrap_or_default();
    let health = state.health.clone();
    let health_log = health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .and_then(|entry| entry.output.as_ref())
        .map(|text| text.trim().chars().take(HEALTH_LOG_CHARS).collect());
    let started_at = state
        .started_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .filter(|t| *t > std::time::UNIX_EPOCH);
    ContainerStatus {
        reference: found
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        started_at,
        restart_count: found.restart_count.unwrap_or(0),
        id: found.id.unwrap_or_default(),
        name: found
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: found.image.unwrap_or_default(),
        state: state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into()),
        exit_code: state.exit_code.unwrap_or(0),
        health: health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        health_log,
    }
}

impl ComposeHost for DockerEngine {
    fn compose_tool(&self) -> BoxFuture<'_, Result<ComposeFound, NoComposeTool>> {
        Box::pin(async move { self.compose_found().await.cloned() })
    }

    fn compose_model<'a>(
        &'a self,
        target: &'a ComposeTarget,
        reads: &'a model::Reads,
    ) -> BoxFuture<'a, Result<ComposeModel, ModelError>> {
        Box::pin(async move {
            let found = self
                .compose_found()
                .await
                .map_err(|e| ModelError::Compose(e.to_string()))?;
            let v1 = found.generation() == "v1";
            let mut argv = found.argv.clone();
            argv.extend(target.config_args(!v1));
            let key = model_key(&argv, &reads.files, &target.working_dir)?;
            if let Some(model) = self.models.get(&key) {
                return Ok(ComposeModel { model });
            }
            let limits = Limits {
                deadline: Instant::now() + MODEL_TIMEOUT,
                cancel: CancellationToken::new(),
            };
            let stdout = OutputLog::with_limit(MAX_MODEL_BYTES);
            let stderr = OutputLog::with_limit(MODEL_ERROR_BYTES);
            let outcome = process::run_command_apart(
                argv.clone(),
                Some(&target.working_dir),
                &limits,
                &stdout,
                &stderr,
            )
            .await;
            // What compose read must be what the reader read: a file that
            // changed meanwhile makes both readings void.
            if model_key(&argv, &reads.files, &target.working_dir)? != key {
                return Err(ModelError::Changed);
            }
            if outcome.exit != Exit::Code(0) {
                return Err(ModelError::Config(model::ConfigFailure::from_stderr(
                    &stderr.text(),
                    &reads.files,
                    &target.working_dir,
                )));
            }
            let model = Arc::new(model::parse_config_output(&stdout.text(), v1)?);
            self.models.insert(key, model.clone());
            Ok(ComposeModel { model })
        })
    }

    fn taken_names<'a>(
        &'a self,
        project: &'a str,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<std::collections::BTreeSet<String>, EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let mut taken = std::collections::BTreeSet::new();
            let not_found = |e: &BollardError| {
                matches!(
                    e,
                    BollardError::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }
                )
            };
            for name in names {
                let owners = [
                    match bounded(docker.inspect_volume(name)).await {
                        Ok(volume) => Some(volume.labels.get(LABEL_PROJECT).cloned()),
                        Err(e) if not_found(&e) => None,
                        Err(e) => return Err(classify(e)),
                    },
                    match bounded(docker.inspect_network(name, None)).await {
                        // The engine also finds a network by an id prefix.
                        Ok(network) if network.name.as_deref() == Some(name) => {
                            Some(network.labels.and_then(|l| l.get(LABEL_PROJECT).cloned()))
                        }
                        Ok(_) => None,
                        Err(e) if not_found(&e) => None,
                        Err(e) => return Err(classify(e)),
                    },
                ];
                if owners
                    .into_iter()
                    .flatten()
                    .any(|owner| owner.as_deref() != Some(project))
                {
                    taken.insert(name.clone());
                }
            }
            Ok(taken)
        })
    }

    fn writable_binds(&self) -> BoxFuture<'_, Result<Vec<(String, PathBuf)>, EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let options = ListContainersOptionsBuilder::new().all(true).build();
            let listed = bounded(docker.list_containers(Some(options)))
                .await
                .map_err(classify)?;
            let mut binds = Vec::new();
            for summary in listed {
                let name = summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .unwrap_or_default();
                let name = name.trim_start_matches('/');
                for mount in summary.mounts.into_iter().flatten() {
                    let bind = mount.typ.as_deref() == Some("bind");
                    if let (true, Some(true), Some(source)) = (bind, mount.rw, mount.source) {
                        binds.push((name.to_owned(), PathBuf::from(source)));
                    }
                }
            }
            Ok(binds)
        })
    }

    fn compose_project_files<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PathBuf>, EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_PROJECT}={project}")],
            )]);
            let options = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            let listed = bounded(docker.list_containers(Some(options)))
                .await
                .map_err(classify)?;
            Ok(listed
                .into_iter()
                .filter_map(|summary| summary.labels?.get(LABEL_CONFIG_FILES).cloned())
                .flat_map(|files| files.split(',').map(PathBuf::from).collect::<Vec<_>>())
                .collect())
        })
    }

    fn find_container<'a>(
        &'a self,
        name: &'a ContainerName,
    ) -> BoxFuture<'a, Result<Option<ContainerFacts>, EngineError>> {
        Box::pin(async move {
            if let Some(facts) = self.lookups.get(name.as_str()) {
                return Ok(facts);
            }
            let found = self.inspect(name.as_str()).await?.filter(|found| {
                // The engine also resolves ids and id prefixes; only an exact name counts.
                let found_name = found.name.as_deref().unwrap_or_default();
                found_name.trim_start_matches('/') == name.as_str()
            });
            let facts = match found {
                None => None,
                Some(found) => {
                    let config = found.config.unwrap_or_default();
                    Some(ContainerFacts {
                        image_labels: self.image_labels(found.image.as_deref()).await?,
                        id: found.id.unwrap_or_default(),
                        name: name.to_string(),
                        labels: config.labels.unwrap_or_default(),
                        image_reference: config.image.unwrap_or_default(),
                    })
                }
            };
            self.lookups.insert(name.to_string(), facts.clone());
            Ok(facts)
        })
    }

    fn service_containers<'a>(
        &'a self,
        target: &'a ComposeTarget,
    ) -> BoxFuture<'a, Result<Vec<ContainerStatus>, EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let filters = HashMap::from([(
                "label".to_string(),
                vec![
                    format!("{LABEL_PROJECT}={}", target.project),
                    format!("{LABEL_SERVICE}={}", target.service),
                ],
            )]);
            let options = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            let listed = bounded(docker.list_containers(Some(options)))
                .await
                .map_err(classify)?;
            let mut statuses = Vec::new();
            for summary in listed {
                let oneoff = summary
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_ONEOFF))
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                let Some(id) = summary.id.filter(|_| !oneoff) else {
                    continue;
                };
                if let Some(found) = self.inspect(&id).await? {
                    statuses.push(container_status(found));
                }
            }
            Ok(statuses)
        })
    }

    fn run_compose<'a>(
        &'a self,
        target: &'a ComposeTarget,
        op: ComposeOp,
        limits: &'a Limits,
        output: &'a OutputLog,
    ) -> BoxFuture<'a, CommandOutcome> {
        Box::pin(async move {
            let mut argv = match self.compose_command().await {
                Ok(prefix) => prefix,
                Err(missing) => {
                    let message = missing.to_string();
                    output.note(&message);
                    return CommandOutcome {
                        argv: Vec::new(),
                        exit: Exit::SpawnFailed(message),
                        duration: Duration::ZERO,
                    };
                }
            };
            argv.extend(target.args(op));
            process::run_command(argv, Some(&target.working_dir), limits, output).await
        })
    }
}

impl Images for DockerEngine {
    fn tag_image<'a>(
        &'a self,
        image: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let options = TagImageOptionsBuilder::new()
                .repo(repository)
                .tag(tag)
                .build();
            bounded(docker.tag_image(image, Some(options)))
                .await
                .map_err(classify)
        })
    }

    fn untag_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            // Not forced: an image a container uses, or that has other
            // tags, only loses this one.
            let options = RemoveImageOptionsBuilder::new().build();
            match bounded(docker.remove_image(reference, Some(options), None)).await {
                Ok(_)
                | Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                Err(e) => Err(classify(e)),
            }
        })
    }

    fn repo_digests<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            match bounded(docker.inspect_image(image)).await {
                Ok(inspect) => Ok(Some(inspect.repo_digests.unwrap_or_default())),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(classify(e)),
            }
        })
    }
}

impl SelfUpdate for DockerEngine {
    fn own_service(&self) -> BoxFuture<'_, Option<(String, String)>> {
        Box::pin(async move {
            self.own()
                .await
                .map(|own| (own.project.clone(), own.service.clone()))
        })
    }

    fn start_helper<'a>(&'a self, run: &'a HelperRun) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let body = self.helper_body(run).await?;
            let docker = self.client().await?;
            let options = CreateContainerOptionsBuilder::new().name(&run.name).build();
            bounded(docker.create_container(Some(options), body))
                .await
                .map_err(classify)?;
            bounded(docker.start_container(&run.name, None))
                .await
                .map_err(classify)
        })
    }

    fn wait_helper<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<HelperEnd, EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            loop {
                let Some(found) = self.inspect(name).await? else {
                    return Ok(HelperEnd::Gone);
                };
                let state = found.state.unwrap_or_default();
                let status = state.status.map(|s| s.to_string()).unwrap_or_default();
                match status.as_str() {
                    "exited" | "dead" => {
                        return Ok(HelperEnd::Exited(state.exit_code.unwrap_or(-1)));
                    }
                    // Created but never started: the gateway stopped in between.
                    "created" => {
                        bounded(docker.start_container(name, None))
                            .await
                            .map_err(classify)?;
                        continue;
                    }
                    _ => {}
                }
                let options = WaitContainerOptionsBuilder::new()
                    .condition("not-running")
                    .build();
                match docker.wait_container(name, Some(options)).next().await {
                    // Exited (any code) or removed: the next inspect tells which.
                    Some(Ok(_) | Err(BollardError::DockerContainerWaitError { .. })) | None => {}
                    Some(Err(BollardError::DockerResponseServerError {
                        status_code: 404, ..
                    })) => return Ok(HelperEnd::Gone),
                    Some(Err(e)) => {
                        tracing::warn!(helper = name, error = %e, "waiting for the self-update helper failed; asking again");
                        tokio::time::sleep(WAIT_RETRY).await;
                    }
                }
            }
        })
    }

    fn remove_helper<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let options = RemoveContainerOptionsBuilder::new().force(true).build();
            match bounded(docker.remove_container(name, Some(options))).await {
                Ok(()) => Ok(()),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => Ok(()),
                Err(e) => Err(classify(e)),
            }
        })
    }
}

impl Swarm for DockerEngine {
    fn is_swarm_manager(&self) -> BoxFuture<'_, Result<bool, EngineError>> {
        Box::pin(self.is_manager())
    }

    fn swarm_service<'a>(
        &'a self,
        name: &'a SwarmServiceName,
    ) -> BoxFuture<'a, Result<Option<SwarmService>, EngineError>> {
        Box::pin(self.service(name.as_str()))
    }

    fn distribution<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Distribution, EngineError>> {
        Box::pin(self.distribution_of(reference))
    }

    fn update_swarm_image<'a>(
        &'a self,
        name: &'a SwarmServiceName,
        image: &'a str,
        platforms: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.set_service_image(name.as_str(), image, platforms))
    }

    fn roll_back_swarm_service<'a>(
        &'a self,
        name: &'a SwarmServiceName,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(self.roll_back_service(name.as_str()))
    }

    fn swarm_tasks<'a>(
        &'a self,
        service_id: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<TaskCount, EngineError>> {
        Box::pin(self.count_tasks(service_id, image))
    }
}

impl Engine for DockerEngine {
    fn ping(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            bounded(docker.ping()).await.map(drop).map_err(classify)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model cache's key follows what compose reads, not path text: an
    /// edited file, a moved symlink or a new `.env` is a new key.
    #[test]
    fn a_model_is_cached_by_what_compose_read() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        for release in ["r1", "r2"] {
            std::fs::create_dir_all(dir.join(release)).unwrap();
            std::fs::write(
                dir.join(release).join("compose.yml"),
                format!(
                    "include: [{}/sub/extra.yml]\nservices: {{}}\n",
                    dir.display()
                ),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/extra.yml"), "services: {}\n").unwrap();
        let link = dir.join("compose.yml");
        std::os::unix::fs::symlink(dir.join("r1/compose.yml"), &link).unwrap();
        let target = ComposeTarget::from_stored(
            "app",
            "web",
            &dir.display().to_string(),
            &[link.display().to_string()],
            &[],
        )
        .unwrap();
        let argv = vec!["docker".to_string(), "compose".to_string()];
        let key = || {
            model_key(
                &argv,
                &model::reader::read(&target, &|_: &std::path::Path| true)
                    .unwrap()
                    .files,
                &dir,
            )
            .unwrap()
        };
        let first = key();
        assert_eq!(key(), first, "nothing changed");
        // The same text at another path is another file.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(dir.join("r2/compose.yml"), &link).unwrap();
        let moved = key();
        assert_ne!(moved, first, "the symlink moved");
        std::fs::write(dir.join("r2/compose.yml"), "services: {web: {}}\n").unwrap();
        let edited = key();
        assert_ne!(edited, moved, "the file was edited");
        std::fs::write(dir.join(".env"), "TAG=1\n").unwrap();
        let env = key();
        assert_ne!(env, edited, "an implicit .env appeared");
        std::fs::write(
            dir.join("r2/compose.yml"),
            format!(
                "include: [{}/sub/extra.yml]\nservices: {{web: {{}}}}\n",
                dir.display()
            ),
        )
        .unwrap();
        let included = key();
        std::fs::write(dir.join("sub/.env"), "PRIV=true\n").unwrap();
        assert_ne!(key(), included, "the included file's own .env appeared");
        std::fs::write(dir.join("sub/.env"), "PRIV=false\n").unwrap();
        let changed = key();
        std::fs::write(dir.join("sub/.env"), "PRIV=true\n").unwrap();
        assert_ne!(key(), changed, "the included file's own .env changed");
        let other = vec!["docker-compose".to_string()];
        assert_ne!(
            model_key(
                &other,
                &model::reader::read(&target, &|_: &std::path::Path| true)
                    .unwrap()
                    .files,
                &dir,
            )
            .unwrap(),
            key(),
            "another tool"
        );
        // An env file swapped for a symlink and back, as a compose reading
        // may have seen it between two keys: the same contents, the same
        // file, and still another key.
        let env = dir.join("app.env");
        let benign = dir.join("benign.env");
        std::fs::write(&benign, "A=1\n").unwrap();
        std::fs::write(dir.join("other.env"), "SECRET=1\n").unwrap();
        std::fs::hard_link(&benign, &env).unwrap();
        std::fs::write(
            dir.join("r2/compose.yml"),
            "services: {web: {env_file: app.env}}\n",
        )
        .unwrap();
        let before = key();
        assert_eq!(key(), before, "nothing changed");
        std::fs::remove_file(&env).unwrap();
        std::os::unix::fs::symlink(dir.join("other.env"), &env).unwrap();
        std::fs::remove_file(&env).unwrap();
        std::fs::hard_link(&benign, &env).unwrap();
        assert_ne!(key(), before, "swapped and back");
    }

    #[test]
    fn an_ambiguous_id_prefix_is_no_container() {
        assert!(is_ambiguous_prefix(
            "Multiple IDs found with provided prefix: d"
        ));
        assert!(!is_ambiguous_prefix("No such container: d"));
    }

    #[test]
    fn the_helper_gets_no_secret_and_no_more_privilege() {
        let env = Some(vec![
            "PATH=/usr/bin".to_string(),
            "BILLING_HOOK_SECRET=s3cret-0123456789".to_string(),
            "DELIVERY_LOG=info".to_string(),
            "SECRET_KEY=seed-0123456789abcdef".to_string(),
        ]);
        let withheld = ["BILLING_HOOK_SECRET".to_string(), "SECRET_KEY".to_string()];
        assert_eq!(
            helper_env(env, &withheld),
            Some(vec![
                "PATH=/usr/bin".to_string(),
                "DELIVERY_LOG=info".to_string()
            ])
        );
        let gateway = HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(true),
            memory: Some(64 << 20),
            pids_limit: Some(100),
            nano_cpus: Some(500_000_000),
            privileged: Some(true),
            ..Default::default()
        };
        let helper = helper_host_config(gateway);
        assert_eq!(helper.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            helper.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(helper.readonly_rootfs, Some(true));
        assert_eq!(
            (helper.memory, helper.pids_limit, helper.nano_cpus),
            (Some(64 << 20), Some(100), Some(500_000_000))
        );
        assert_eq!(helper.privileged, None, "nothing beyond the list is copied");
        assert_eq!(helper.auto_remove, Some(true));
    }

    #[test]
    fn the_own_container_id_comes_from_docker_mounts() {
        let id = "4f1d5a7e2b9c8d3e6f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcde";
        let mountinfo = format!(
            "612 590 0:52 / / rw,relatime - overlay overlay rw\n\
             640 612 254:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(own_container_id(&mountinfo).as_deref(), Some(id));
        assert_eq!(
            own_container_id("22 1 0:21 / /proc rw - proc proc rw\n"),
            None
        );
        assert_eq!(own_container_id("1 2 3 /containers/abc/x /y rw\n"), None);
    }
}
