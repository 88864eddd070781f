//! [`Engine`] backed by the real Docker engine (bollard) and compose processes.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::compose::{LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE};
use super::{
    BoxFuture, CommandOutcome, ComposeOp, ComposeTarget, ContainerFacts, ContainerStatus, Engine,
    EngineError, Exit, Limits, OutputLog, process,
};
use crate::names::ContainerName;
use crate::policy::ComposeTool;

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

type Lookup = (Instant, Option<ContainerFacts>);

pub struct DockerEngine {
    /// Connected lazily and with the API version negotiated, so the gateway
    /// starts (and answers 503) while the engine is down, and speaks to both
    /// old engines and new ones that refuse old API versions.
    client: OnceCell<Docker>,
    tool: ComposeTool,
    /// The argv prefix `auto` settled on; only success is cached.
    detected: OnceCell<Vec<String>>,
    /// Recent lookups by container name, see [`LOOKUP_TTL`].
    lookups: std::sync::Mutex<HashMap<String, Lookup>>,
    /// The compose service this gateway runs as, looked up once.
    own: OnceCell<Option<(String, String)>>,
}

fn unreachable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unreachable(e.to_string())
}

fn classify(e: BollardError) -> EngineError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Api(format!("{status_code}: {message}")),
        other => unreachable(other),
    }
}

async fn bounded<T>(
    call: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, BollardError> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(BollardError::RequestTimeoutError),
    }
}

impl DockerEngine {
    pub fn new(tool: ComposeTool) -> Self {
        Self {
            client: OnceCell::new(),
            tool,
            detected: OnceCell::new(),
            lookups: std::sync::Mutex::new(HashMap::new()),
            own: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Docker, EngineError> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_defaults().map_err(unreachable)?;
                bounded(docker.negotiate_version())
                    .await
                    .map_err(unreachable)
            })
            .await
    }

    /// The compose argv prefix this gateway runs, detecting it for `auto`.
    pub async fn compose_command(&self) -> Result<Vec<String>, String> {
        match &self.tool {
            ComposeTool::Command(argv) => Ok(argv.clone()),
            ComposeTool::Auto => self.detected.get_or_try_init(detect_compose).await.cloned(),
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
            Err(e) => Err(classify(e)),
        }
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

/// `docker compose` when the plugin answers, else `docker-compose`.
async fn detect_compose() -> Result<Vec<String>, String> {
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    for prefix in candidates {
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push("version".into());
        let limits = Limits {
            deadline: Instant::now() + DETECT_TIMEOUT,
            cancel: CancellationToken::new(),
        };
        let scratch = OutputLog::with_limit(4096);
        if process::run(argv, &limits, &scratch).await.exit == Exit::Code(0) {
            return Ok(prefix.iter().map(|s| s.to_string()).collect());
        }
    }
    Err("no compose tool found: neither `docker compose` nor `docker-compose` answers".into())
}

fn status_of(found: bollard::models::ContainerInspectResponse) -> ContainerStatus {
    let state = found.state.unwrap_or_default();
    let health = state.health.clone();
    let health_log = health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .and_then(|entry| entry.output.as_ref())
        .map(|text| text.trim().chars().take(HEALTH_LOG_CHARS).collect());
    ContainerStatus {
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

impl Engine for DockerEngine {
    fn ping(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            bounded(docker.ping()).await.map(drop).map_err(classify)
        })
    }

    fn find_container<'a>(
        &'a self,
        name: &'a ContainerName,
    ) -> BoxFuture<'a, Result<Option<ContainerFacts>, EngineError>> {
        Box::pin(async move {
            let lock = || self.lookups.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, facts)) = lock().get(name.as_str()) {
                if at.elapsed() < LOOKUP_TTL {
                    return Ok(facts.clone());
                }
            }
            let facts = self.inspect(name.as_str()).await?.and_then(|found| {
                // The engine also resolves ids and id prefixes; only an exact name counts.
                let found_name = found.name.as_deref().unwrap_or_default();
                (found_name.trim_start_matches('/') == name.as_str()).then(|| ContainerFacts {
                    id: found.id.unwrap_or_default(),
                    name: name.to_string(),
                    labels: found.config.and_then(|c| c.labels).unwrap_or_default(),
                })
            });
            let mut lookups = lock();
            if lookups.len() >= LOOKUP_ENTRIES {
                lookups.clear();
            }
            lookups.insert(name.to_string(), (Instant::now(), facts.clone()));
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
                    statuses.push(status_of(found));
                }
            }
            Ok(statuses)
        })
    }

    fn own_service(&self) -> BoxFuture<'_, Option<(String, String)>> {
        Box::pin(async move {
            self.own
                .get_or_init(|| async {
                    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
                    let id = own_container_id(&mountinfo)?;
                    let found = self.inspect(&id).await.ok()??;
                    let labels = found.config?.labels?;
                    Some((
                        labels.get(LABEL_PROJECT)?.clone(),
                        labels.get(LABEL_SERVICE)?.clone(),
                    ))
                })
                .await
                .clone()
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
                Err(message) => {
                    output.note(&message);
                    return CommandOutcome {
                        argv: Vec::new(),
                        exit: Exit::SpawnFailed(message),
                        duration: Duration::ZERO,
                    };
                }
            };
            argv.extend(target.args(op));
            process::run(argv, limits, output).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::own_container_id;

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
