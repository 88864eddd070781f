//! The fake engine: the narrow `Engine` seam, in memory.
//!
//! It records every lookup and every compose command, so tests can prove
//! that a refused request started nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use delivery_hook::docker::model::{ComposeModel, ModelError, Reads};
use delivery_hook::docker::{
    BoxFuture, CommandOutcome, ComposeFound, ComposeHost, ComposeOp, ComposeTarget, ContainerFacts,
    ContainerStatus, Distribution, Engine, EngineError, Exit, HelperEnd, HelperRun, Images, Limits,
    NoComposeTool, OutputLog, SelfUpdate, Swarm, SwarmService, TaskCount, UpdateState,
};
use delivery_hook::names::{ContainerName, SwarmServiceName};
use tokio::sync::{Notify, Semaphore};

#[derive(Default)]
pub struct FakeEngine {
    containers: Mutex<HashMap<String, ContainerFacts>>,
    /// Exit codes by step; 0 when absent.
    exits: Mutex<HashMap<&'static str, i32>>,
    /// What `service_containers` reports for a container on the image
    /// `up` brings ([`NEW_IMAGE`]); one on any other image runs fine.
    pub state: Mutex<(String, Option<String>)>,
    /// The image id the service's container runs; `up` moves it to
    /// [`NEW_IMAGE`], `up --no-build` to what [`REFERENCE`] is tagged as.
    pub image: Mutex<String>,
    /// Tags set, reference to image id.
    pub tags: Mutex<HashMap<String, String>>,
    /// Every tag and untag call, in order (`tag <ref> <id>`, `untag <ref>`).
    pub tag_calls: Mutex<Vec<String>>,
    pub down: AtomicBool,
    pub lookups: AtomicUsize,
    pub commands: Mutex<Vec<(String, ComposeOp)>>,
    running: AtomicUsize,
    pub max_running: AtomicUsize,
    /// The compose (project, service) the fake gateway runs as.
    pub own: Mutex<Option<(String, String)>>,
    /// When set, each command waits for a permit before it ends.
    gate: Mutex<Option<std::sync::Arc<Semaphore>>>,
    /// Helper containers started, in order.
    pub helpers: Mutex<Vec<HelperRun>>,
    /// How each ended helper ended, by name; the test decides.
    helper_ends: Mutex<HashMap<String, HelperEnd>>,
    helper_ended: Notify,
    /// Whether the engine says it is a Swarm manager.
    pub swarm_manager: AtomicBool,
    /// Swarm services by name.
    pub services: Mutex<HashMap<String, SwarmService>>,
    /// What the registry resolves, reference to digest.
    pub registry: Mutex<HashMap<String, String>>,
    /// Every service update sent, as `name image`.
    pub swarm_updates: Mutex<Vec<String>>,
    /// The `UpdateStatus` state an update leads to (`completed` unless set).
    pub update_outcome: Mutex<Option<String>>,
    /// When the service's containers started, as `service_containers`
    /// reports it; long ago unless set.
    pub started_at: Mutex<Option<std::time::SystemTime>>,
    /// What `compose config` prints (a model with no services unless set),
    /// or why it fails; every call is counted.
    pub model: Mutex<Option<Result<serde_json::Value, ModelError>>>,
    pub model_calls: AtomicUsize,
    /// The image `up` brings; [`NEW_IMAGE`] unless set.
    pub up_image: Mutex<Option<String>>,
    /// Images on the host besides those it runs or tags, with their
    /// repository digests.
    pub images: Mutex<HashMap<String, Vec<String>>>,
    /// The last compose command that succeeded was a pull.
    pulled: AtomicBool,
    /// What containers bind read-write: (container, host path).
    pub writable_binds: Mutex<Vec<(String, PathBuf)>>,
    /// The reference containers are created with; [`REFERENCE`] unless set.
    pub reference: Mutex<Option<String>>,
}

/// The image the service runs before a deploy.
pub const OLD_IMAGE: &str = "sha256:0ld";
/// The image a deploy's `up` brings.
pub const NEW_IMAGE: &str = "sha256:new";
/// The reference the service's containers were created with.
pub const REFERENCE: &str = "127.0.0.1:5000/billing/web:1";

fn op_name(op: ComposeOp) -> &'static str {
    match op {
        ComposeOp::Pull => "pull",
        ComposeOp::Up => "up",
        ComposeOp::UpBuild => "up --build",
        ComposeOp::UpNoBuild => "up --no-build",
    }
}

impl FakeEngine {
    pub fn new() -> Self {
        let engine = Self::default();
        *engine.state.lock().unwrap() = ("running".into(), None);
        *engine.image.lock().unwrap() = OLD_IMAGE.into();
        // Pulled from the registry: the image `up` brings has a digest, so
        // a release of it needs no tag to stay restorable.
        let digest = format!("127.0.0.1:5000/billing/web@sha256:{}", "0".repeat(64));
        engine
            .images
            .lock()
            .unwrap()
            .insert(NEW_IMAGE.into(), vec![digest]);
        engine
    }

    pub fn add(&self, name: &str, labels: &[(&str, String)]) {
        self.add_with_image(name, labels, &[]);
    }

    /// A container whose image carries `image_labels` too.
    pub fn add_with_image(
        &self,
        name: &str,
        labels: &[(&str, String)],
        image_labels: &[(&str, String)],
    ) {
        let map = |pairs: &[(&str, String)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        self.containers.lock().unwrap().insert(
            name.to_string(),
            ContainerFacts {
                id: format!("id-{name}"),
                name: name.to_string(),
                labels: map(labels),
                image_labels: map(image_labels),
                image_reference: REFERENCE.into(),
            },
        );
    }

    /// The reference containers are created with.
    pub fn reference(&self) -> String {
        self.reference
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| REFERENCE.into())
    }

    /// The compose commands run so far, in order, by their operation.
    pub fn ops(&self) -> Vec<ComposeOp> {
        self.commands.lock().unwrap().iter().map(|c| c.1).collect()
    }

    /// `up` brings [`Self::up_image`], else [`NEW_IMAGE`].
    fn bring_up_image(&self) {
        let brought = self.up_image.lock().unwrap().clone();
        *self.image.lock().unwrap() = brought.unwrap_or_else(|| NEW_IMAGE.into());
    }

    pub fn fail_step(&self, step: &'static str, code: i32) {
        self.exits.lock().unwrap().insert(step, code);
    }

    /// Holds every command until `release` is called for it.
    pub fn hold(&self) -> std::sync::Arc<Semaphore> {
        let gate = std::sync::Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Makes the helper `name` end as `end`.
    pub fn end_helper(&self, name: &str, end: HelperEnd) {
        self.helper_ends
            .lock()
            .unwrap()
            .insert(name.to_string(), end);
        self.helper_ended.notify_waiters();
    }

    /// What compose writes on the containers `up` creates: the files and
    /// env files it was given.
    fn label_as_compose_does(&self, target: &ComposeTarget) {
        let joined = |paths: &[std::path::PathBuf]| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let files = target.config_files.clone();
        for facts in self.containers.lock().unwrap().values_mut() {
            let label = |key: &str| facts.labels.get(key).map(String::as_str);
            if label("com.docker.compose.project") != Some(target.project.as_str())
                || label("com.docker.compose.service") != Some(target.service.as_str())
            {
                continue;
            }
            facts.labels.insert(
                "com.docker.compose.project.config_files".into(),
                joined(&files),
            );
            if target.env_files.is_empty() {
                facts
                    .labels
                    .remove("com.docker.compose.project.environment_file");
            } else {
                facts.labels.insert(
                    "com.docker.compose.project.environment_file".into(),
                    joined(&target.env_files),
                );
            }
        }
    }

    pub fn command_count(&self) -> usize {
        self.commands.lock().unwrap().len()
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    fn check_up(&self) -> Result<(), EngineError> {
        if self.down.load(Ordering::SeqCst) {
            Err(EngineError::Unreachable("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

impl ComposeHost for FakeEngine {
    fn compose_tool(&self) -> BoxFuture<'_, Result<ComposeFound, NoComposeTool>> {
        Box::pin(async move {
            Ok(ComposeFound::new(
                vec!["docker".into(), "compose".into()],
                "2.26.1\n",
            ))
        })
    }

    fn compose_model<'a>(
        &'a self,
        target: &'a ComposeTarget,
        _reads: &'a Reads,
    ) -> BoxFuture<'a, Result<ComposeModel, ModelError>> {
        Box::pin(async move {
            self.model_calls.fetch_add(1, Ordering::SeqCst);
            let model = self.model.lock().unwrap().clone().unwrap_or_else(|| {
                Ok(serde_json::json!({"services": {target.service.as_str(): {"image": REFERENCE}}}))
            })?;
            Ok(ComposeModel {
                model: std::sync::Arc::new(model),
            })
        })
    }

    fn taken_names<'a>(
        &'a self,
        _project: &'a str,
        _names: &'a [String],
    ) -> BoxFuture<'a, Result<std::collections::BTreeSet<String>, EngineError>> {
        Box::pin(async move { Ok(std::collections::BTreeSet::new()) })
    }

    fn writable_binds(&self) -> BoxFuture<'_, Result<Vec<(String, PathBuf)>, EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            Ok(self.writable_binds.lock().unwrap().clone())
        })
    }

    fn compose_project_files<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<std::path::PathBuf>, EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            let containers = self.containers.lock().unwrap();
            Ok(containers
                .values()
                .filter(|c| {
                    c.labels
                        .get("com.docker.compose.project")
                        .map(String::as_str)
                        == Some(project)
                })
                .filter_map(|c| c.labels.get("com.docker.compose.project.config_files"))
                .flat_map(|files| files.split(',').map(std::path::PathBuf::from))
                .collect())
        })
    }

    fn find_container<'a>(
        &'a self,
        name: &'a ContainerName,
    ) -> BoxFuture<'a, Result<Option<ContainerFacts>, EngineError>> {
        Box::pin(async move {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            self.check_up()?;
            let reference = self.reference();
            Ok(self
                .containers
                .lock()
                .unwrap()
                .get(name.as_str())
                .cloned()
                .map(|facts| ContainerFacts {
                    image_reference: reference,
                    ..facts
                }))
        })
    }

    fn service_containers<'a>(
        &'a self,
        target: &'a ComposeTarget,
    ) -> BoxFuture<'a, Result<Vec<ContainerStatus>, EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            let image = self.image.lock().unwrap().clone();
            let (state, health) = if image == NEW_IMAGE {
                self.state.lock().unwrap().clone()
            } else {
                ("running".into(), None)
            };
            Ok(vec![ContainerStatus {
                // A container is recreated when its image changes.
                id: format!("id-{image}"),
                name: format!("{}-{}-1", target.project, target.service),
                reference: self.reference(),
                image,
                state,
                exit_code: 1,
                health,
                health_log: Some("wget: connection refused".into()),
                // Long ago: the gate's stable time has passed.
                started_at: Some(
                    self.started_at
                        .lock()
                        .unwrap()
                        .unwrap_or(std::time::UNIX_EPOCH + Duration::from_secs(1)),
                ),
                restart_count: 0,
            }])
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
            self.commands
                .lock()
                .unwrap()
                .push((target.service.to_string(), op));
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let mut argv = vec!["fake-compose".to_string()];
            argv.extend(target.args(op));
            output.note(&format!("$ {}", argv.join(" ")));
            let gate = self.gate.lock().unwrap().clone();
            let exit = match gate {
                Some(gate) => tokio::select! {
                    permit = gate.acquire() => { permit.unwrap().forget(); None }
                    () = tokio::time::sleep_until(limits.deadline) => Some(Exit::TimedOut),
                    () = limits.cancel.cancelled() => Some(Exit::Cancelled),
                },
                None => None,
            };
            self.running.fetch_sub(1, Ordering::SeqCst);
            let code = self
                .exits
                .lock()
                .unwrap()
                .get(op_name(op))
                .copied()
                .unwrap_or(0);
            if code != 0 {
                output.note("Error response from daemon: manifest unknown");
            }
            if exit.is_none() && code == 0 && op != ComposeOp::Pull {
                self.label_as_compose_does(target);
            }
            if exit.is_none() && code == 0 {
                // `up` runs what a pull just brought, with or without
                // `--no-build`; without a pull before it, `--no-build` runs
                // what the reference is tagged as (a restore).
                let pulled = self.pulled.swap(op == ComposeOp::Pull, Ordering::SeqCst);
                match op {
                    ComposeOp::Up | ComposeOp::UpBuild => self.bring_up_image(),
                    ComposeOp::UpNoBuild if pulled => self.bring_up_image(),
                    ComposeOp::UpNoBuild => {
                        if let Some(id) = self.tags.lock().unwrap().get(REFERENCE) {
                            *self.image.lock().unwrap() = id.clone();
                        }
                    }
                    ComposeOp::Pull => {}
                }
            }
            CommandOutcome {
                argv,
                exit: exit.unwrap_or(Exit::Code(code)),
                duration: Duration::from_millis(5),
            }
        })
    }
}

impl Images for FakeEngine {
    fn tag_image<'a>(
        &'a self,
        image: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            let reference = format!("{repository}:{tag}");
            self.tag_calls
                .lock()
                .unwrap()
                .push(format!("tag {reference} {image}"));
            self.tags.lock().unwrap().insert(reference, image.into());
            Ok(())
        })
    }

    fn untag_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            self.tag_calls
                .lock()
                .unwrap()
                .push(format!("untag {reference}"));
            self.tags.lock().unwrap().remove(reference);
            Ok(())
        })
    }

    fn repo_digests<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            if let Some(digests) = self.images.lock().unwrap().get(image) {
                return Ok(Some(digests.clone()));
            }
            let runs = *self.image.lock().unwrap() == image;
            let tagged = self.tags.lock().unwrap().values().any(|id| id == image);
            Ok((runs || tagged).then(Vec::new))
        })
    }
}

impl SelfUpdate for FakeEngine {
    fn own_service(&self) -> BoxFuture<'_, Option<(String, String)>> {
        Box::pin(async move { self.own.lock().unwrap().clone() })
    }

    fn start_helper<'a>(&'a self, run: &'a HelperRun) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            self.helpers.lock().unwrap().push(run.clone());
            Ok(())
        })
    }

    fn wait_helper<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<HelperEnd, EngineError>> {
        Box::pin(async move {
            loop {
                let ended = self.helper_ended.notified();
                if let Some(end) = self.helper_ends.lock().unwrap().get(name) {
                    return Ok(*end);
                }
                ended.await;
            }
        })
    }

    fn remove_helper<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { Ok(()) })
    }
}

impl Swarm for FakeEngine {
    fn is_swarm_manager(&self) -> BoxFuture<'_, Result<bool, EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            Ok(self.swarm_manager.load(Ordering::SeqCst))
        })
    }

    fn swarm_service<'a>(
        &'a self,
        name: &'a SwarmServiceName,
    ) -> BoxFuture<'a, Result<Option<SwarmService>, EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            Ok(self.services.lock().unwrap().get(name.as_str()).cloned())
        })
    }

    fn distribution<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Distribution, EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            match self.registry.lock().unwrap().get(reference) {
                Some(digest) => Ok(Distribution {
                    digest: digest.clone(),
                    platforms: vec![("linux".into(), "amd64".into())],
                }),
                None => Err(EngineError::Api(format!(
                    "404: manifest unknown: {reference}"
                ))),
            }
        })
    }

    fn update_swarm_image<'a>(
        &'a self,
        name: &'a SwarmServiceName,
        image: &'a str,
        _: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.check_up()?;
            let mut updates = self.swarm_updates.lock().unwrap();
            updates.push(format!("{name} {image}"));
            let mut services = self.services.lock().unwrap();
            let service = services.get_mut(name.as_str()).unwrap();
            service.image = image.to_owned();
            let state = self
                .update_outcome
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "completed".into());
            service.update = Some(UpdateState {
                message: Some(format!("update {state}")),
                state,
                started_at: Some(format!("update {}", updates.len())),
            });
            Ok(())
        })
    }

    fn roll_back_swarm_service<'a>(
        &'a self,
        name: &'a SwarmServiceName,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.swarm_updates
                .lock()
                .unwrap()
                .push(format!("{name} rollback"));
            Ok(())
        })
    }

    fn swarm_tasks<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<TaskCount, EngineError>> {
        Box::pin(async move {
            Ok(TaskCount {
                desired: 2,
                running_image: 2,
            })
        })
    }
}

impl Engine for FakeEngine {
    fn ping(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.check_up() })
    }
}
