//! Running one job: its compose steps, the health gate, and the rollback
//! when the new version does not come up.
//!
//! Before the steps, the job records the image id each container of the
//! service runs and tags the one it will roll back to
//! (`delivery-hook/rollback:<job id>`), so no prune can take it while the
//! job may need it. After `up`, the gate waits until every container of
//! the service runs, is healthy where it has a health check, and has run
//! for `stable_secs` without a restart. When the gate or `up` fails and the
//! service's containers were replaced, the service's image reference is
//! pointed back at the previous image (a tag, or the previous pin's
//! override), `up -d --no-build` recreates them, and the gate is checked
//! again: the job ends `rolled_back`, or `failed` with both reasons.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalogue::Code;
use crate::clock::Clock;
use crate::docker::model::{self, ProjectRules};
use crate::docker::{
    ComposeHost, ComposeOp, ComposeTarget, ContainerStatus, CopyInUse, Engine, Exit, ImagePin,
    Images, JudgedCopies, Limits, OutputLog, RealPaths, Reference, StateFiles,
};
use crate::names::{Action, JobId};
use crate::policy::{ModelMode, Policy, PolicyCell, Project};
use crate::record::{JobRecord, JobState, JobTarget, Restored, Rollback, RollbackState, Step};
use crate::store::Store;

/// How often the service is looked at while it starts; the gate waits for
/// a condition (running, healthy where checked, stable).
const POLL: Duration = Duration::from_millis(250);

/// The repository of the tags that keep a job's previous image from
/// pruning; the tag is the job id.
const HOLD_REPOSITORY: &str = "delivery-hook/rollback";

/// The repository of the tags that keep a release without a repository
/// digest on the host while the service keeps the release, so a rollback
/// can restore it; the tag is the job id.
const RELEASE_REPOSITORY: &str = "delivery-hook/release";

/// The tag that keeps job `id`'s previous image.
fn hold_reference(id: JobId) -> String {
    format!("{HOLD_REPOSITORY}:{id}")
}

/// Removes the tag that kept job `id`'s previous image.
pub(super) async fn release_hold(engine: &dyn Images, id: JobId) {
    if let Err(e) = engine.untag_image(&hold_reference(id)).await {
        tracing::warn!(job = %id, error = %e, "could not remove the tag that kept the previous image");
    }
}

/// What the service of `target` runs now, in a sentence, as the engine says.
pub(super) async fn what_runs(engine: &dyn ComposeHost, target: &ComposeTarget) -> String {
    match engine.service_containers(target).await {
        Ok(containers) => running_now(&containers),
        Err(e) => format!("what runs now could not be asked: {e}"),
    }
}

/// Why a service's image reference could not be pointed back at the
/// image it ran before.
#[derive(Debug, thiserror::Error)]
enum PointBackError {
    #[error("the previous container's image reference `{0}` cannot be pointed back at its image")]
    Reference(String),
    #[error("the previous pin's override file could not be written: {0}")]
    PinFile(#[source] std::io::Error),
    #[error("the judged copy with the previous image could not be written: {0}")]
    Copy(#[source] std::io::Error),
    #[error("`{reference}` could not be pointed back at {previous}: {source}")]
    Tag {
        reference: String,
        previous: String,
        source: crate::docker::EngineError,
    },
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub state: JobState,
    pub error: Option<String>,
}

impl Completion {
    pub(super) fn ended(state: JobState, error: impl Into<String>) -> Self {
        Self {
            state,
            error: Some(error.into()),
        }
    }

    fn succeeded() -> Self {
        Self {
            state: JobState::Succeeded,
            error: None,
        }
    }

    fn why(&self) -> &str {
        self.error.as_deref().unwrap_or("it failed")
    }
}

/// The commands of a job of `action`. A pull by a project that may not
/// build runs `up --no-build`: compose's `up` would otherwise build a
/// service with `build:` whose image the pull did not bring (or whose
/// `pull_policy` is `build`).
fn steps(action: Action, may_build: bool) -> &'static [ComposeOp] {
    match (action, may_build) {
        (Action::Pull, true) => &[ComposeOp::Pull, ComposeOp::Up],
        (Action::Pull, false) => &[ComposeOp::Pull, ComposeOp::UpNoBuild],
        (Action::Build, _) => &[ComposeOp::UpBuild],
    }
}

/// A release restored by its image id: the reference pointed at it, then
/// `up` without pulling or building.
const RESTORE_STEPS: &[ComposeOp] = &[ComposeOp::UpNoBuild];

fn describe(op: ComposeOp) -> &'static str {
    match op {
        ComposeOp::Pull => "compose pull",
        ComposeOp::Up => "compose up -d",
        ComposeOp::UpBuild => "compose up -d --build",
        ComposeOp::UpNoBuild => "compose up -d --no-build",
    }
}

/// A job stopped before `op`, for a reason of the catalogue.
fn refused(op: ComposeOp, code: Code, why: impl std::fmt::Display) -> Completion {
    Completion::ended(
        JobState::Failed,
        format!("{}: {why}; {} did not run", code.as_str(), describe(op)),
    )
}

/// How a job runs compose.
enum Runs {
    /// On the project's own files (`compose_model = "off"`): `run` is the
    /// invocation, with `pin_file`, a pin's override, when pinned.
    Files {
        run: ComposeTarget,
        pin_file: Option<PathBuf>,
    },
    /// On a judged copy of its model.
    Copy(Judged),
}

impl Runs {
    /// The pin override file a run on the project's files uses.
    fn pin_file(&self) -> Option<&Path> {
        match self {
            Runs::Files { pin_file, .. } => pin_file.as_deref(),
            Runs::Copy(_) => None,
        }
    }
}

/// A judged copy a job runs, and what it was made from.
pub(super) struct Judged {
    pub copy: CopyInUse,
    pub model: Arc<serde_json::Value>,
    /// The target as the labels named it, without a pin.
    pub origin: ComposeTarget,
    /// The real paths of its config files when judged: their directories
    /// are the host paths of a project that names none.
    pub real_configs: Vec<PathBuf>,
}

/// Judges the invocation of `origin` (with `pin` merged in) by `project`'s
/// rules and writes the model as a copy to run: the refusal, with its code
/// first, when the project enforces and the model is refused, or when no
/// model can be had. Under `warn`, what would be refused is audited.
pub(super) async fn judge_and_copy(
    engine: &dyn ComposeHost,
    copies: &Arc<JudgedCopies>,
    policy: &Policy,
    project: &Project,
    origin: &ComposeTarget,
    pin: Option<&ImagePin>,
    real_configs: &[PathBuf],
) -> Result<Judged, (Code, String)> {
    let rules = ProjectRules::new(policy, project, origin.project.as_str(), real_configs);
    let enforce = project.compose_model == ModelMode::Enforce;
    let judgement = model::judge_invocation(engine, origin, pin, &rules.rules(), enforce)
        .await
        .map_err(|e| (Code::ComposeConfigInvalid, e.to_string()))?;
    if let Some(first) = judgement.findings.first() {
        if enforce {
            return Err((Code::ComposeModelNotAllowed, first.to_string()));
        }
        model::audit_warned(project.name.as_str(), origin, &judgement.findings);
    }
    let model = judgement.model.ok_or_else(|| {
        (
            Code::ComposeConfigInvalid,
            "compose printed no model".to_string(),
        )
    })?;
    let copy = copies.write(origin, &model).map_err(|e| {
        (
            Code::InternalError,
            format!("the judged copy of the compose model could not be written: {e}"),
        )
    })?;
    Ok(Judged {
        copy,
        model,
        origin: origin.clone(),
        real_configs: real_configs.to_vec(),
    })
}

/// Where an end-to-end test changes files after the judge's last read.
#[cfg(feature = "test-seams")]
mod seam {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::names::JobId;

    /// With `DELIVERY_TEST_SEAM_DIR` set, a job that has judged its model
    /// and written its copy creates `<dir>/<job>.judged` and waits (up to a
    /// minute) until `<dir>/<job>.go` exists.
    pub async fn after_judging(job: JobId) {
        let Some(dir) = std::env::var_os("DELIVERY_TEST_SEAM_DIR").map(PathBuf::from) else {
            return;
        };
        if std::fs::write(dir.join(format!("{job}.judged")), b"").is_err() {
            return;
        }
        let go = dir.join(format!("{job}.go"));
        for _ in 0..3000 {
            if go.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(super) fn timeout_message(timeout: Duration, during: &str) -> String {
    format!(
        "the job ran past job_timeout_secs ({} s) {during} and was stopped",
        timeout.as_secs()
    )
}

/// What every container has alike, read by `field`; none when they differ
/// or there are none.
fn all_alike<T: PartialEq>(
    containers: &[ContainerStatus],
    field: impl Fn(&ContainerStatus) -> &T,
) -> Option<&T> {
    let first = field(containers.first()?);
    containers
        .iter()
        .all(|c| field(c) == first)
        .then_some(first)
}

pub(super) const INTERRUPTED: &str = "the gateway stopped while the job ran";

/// One job to run and what it needs.
pub struct JobRun<'a> {
    pub engine: &'a dyn Engine,
    pub store: &'a Store,
    /// Where pin overrides and judged copies are written.
    pub files: &'a StateFiles,
    /// The gateway's clock: the gate's stable time, the rollback's times.
    pub clock: &'a Clock,
    pub target: &'a ComposeTarget,
    /// The caller's pin.
    pub pin: Option<&'a ImagePin>,
    /// The release a rollback restores; without `pin`, by its image id.
    pub restore: Option<&'a Restored>,
    pub record: &'a watch::Sender<JobRecord>,
    pub output: &'a OutputLog,
    pub limits: &'a Limits,
    pub timeout: Duration,
    /// How long the service must run unchanged after `up`.
    pub stable: Duration,
    /// The policy in force and the project the job acts for, to judge its
    /// files by before each command; `None` in a self-update helper, which
    /// has no policy and only checks that the files stay the same.
    pub boundary: Option<(&'a PolicyCell, &'a str)>,
}

/// How one command ended, as a failure of the job; `None` on success.
fn failure_of(exit: &Exit, op: ComposeOp, timeout: Duration) -> Option<Completion> {
    let step = describe(op);
    Some(match exit {
        Exit::Code(0) => return None,
        Exit::Code(code) => Completion::ended(
            JobState::Failed,
            format!("`{step}` exited with code {code}"),
        ),
        Exit::Signal(signal) => Completion::ended(
            JobState::Failed,
            format!("`{step}` was killed by signal {signal}"),
        ),
        Exit::SpawnFailed(why) => Completion::ended(JobState::Failed, why.clone()),
        Exit::TimedOut => Completion::ended(
            JobState::TimedOut,
            timeout_message(timeout, &format!("during `{step}`")),
        ),
        Exit::Cancelled => Completion::ended(JobState::Interrupted, INTERRUPTED),
    })
}

/// The image a rollback returns to: the one the named container ran, or
/// the first container's.
fn previous_of<'c>(containers: &'c [ContainerStatus], name: &str) -> Option<&'c ContainerStatus> {
    containers
        .iter()
        .find(|c| c.name == name)
        .or_else(|| containers.first())
}

/// What the service runs, in a sentence.
fn running_now(containers: &[ContainerStatus]) -> String {
    if containers.is_empty() {
        return "no container of the service exists".into();
    }
    let each: Vec<String> = containers
        .iter()
        .map(|c| format!("{} is {} on image {}", c.name, c.state, c.image))
        .collect();
    each.join("; ")
}

impl JobRun<'_> {
    /// Runs the job to its end.
    pub async fn execute(&self) -> Completion {
        let before = match self.engine.service_containers(self.target).await {
            Ok(containers) => containers,
            Err(e) => {
                return Completion::ended(
                    JobState::Failed,
                    format!(
                        "the engine could not be asked about the service before the deploy: {e}"
                    ),
                );
            }
        };
        let (id, hold) = self.remember_previous(&before);
        let held = match hold {
            Some(image) => self.hold(id, &image).await,
            None => false,
        };
        let completion = self.deploy(&before).await;
        if held {
            release_hold(self.engine, id).await;
        }
        self.collect_copies().await;
        completion
    }

    /// Removes the compose project's judged copies that no container names
    /// and no job runs now.
    async fn collect_copies(&self) {
        let project = self.target.project.as_str();
        let named = match self.engine.compose_project_files(project).await {
            Ok(files) => files.into_iter().collect::<HashSet<_>>(),
            Err(e) => {
                tracing::warn!(project, error = %e, "could not list what the project's containers name; its unused judged copies stay");
                return;
            }
        };
        if let Err(e) = self.files.copies.collect(project, &named) {
            tracing::warn!(project, error = %e, "could not remove unused judged copies");
        }
    }

    /// Records the image the service runs now, unless an earlier attempt
    /// of the job did (that one ran before any attempt changed it). Returns
    /// the job's id and the image to keep, when the job rolls back.
    fn remember_previous(&self, before: &[ContainerStatus]) -> (JobId, Option<String>) {
        self.record.send_modify(|r| {
            let JobRecord {
                previous_image,
                target: JobTarget::Compose(c),
                ..
            } = r
            else {
                return;
            };
            if previous_image.is_none() {
                if let Some(previous) = previous_of(before, &c.container_name) {
                    *previous_image = Some(previous.image.clone());
                    c.previous_reference = Some(previous.reference.clone());
                }
            }
        });
        let r = self.record.borrow();
        let rolls_back = r.compose().is_some_and(|c| c.rollback_on_failure);
        let keep = r.previous_image.clone().filter(|_| rolls_back);
        (r.id, keep)
    }

    /// Tags the previous image so that nothing prunes it while the job
    /// may return to it.
    async fn hold(&self, id: JobId, image: &str) -> bool {
        match self
            .engine
            .tag_image(image, HOLD_REPOSITORY, &id.to_string())
            .await
        {
            Ok(()) => true,
            Err(e) => {
                self.output.note(&format!(
                    "(the previous image {image} could not be tagged to keep it: {e}; a prune during the job would prevent a rollback)"
                ));
                false
            }
        }
    }

    /// A run on the project's files, with its pin's override file when
    /// pinned.
    fn on_files(&self, pin: Option<&ImagePin>) -> Runs {
        let (project, service) = (self.target.project.as_str(), self.target.service.as_str());
        let pin_file = pin.map(|pin| self.files.pins.path(project, service, pin));
        let run = match &pin_file {
            Some(file) => self.target.clone().with_override(file.clone()),
            None => self.target.clone(),
        };
        Runs::Files { run, pin_file }
    }

    /// The policy in force and the job's project in it; `None` in a
    /// self-update helper, which has no policy.
    fn policy(&self, op: ComposeOp) -> Result<Option<(Arc<Policy>, &str)>, Completion> {
        let Some((cell, name)) = self.boundary else {
            return Ok(None);
        };
        let policy = cell.get();
        if policy.project(name).is_none() {
            return Err(refused(
                op,
                Code::ProjectNotFound,
                format!("the project `{name}` is no longer in the policy"),
            ));
        }
        Ok(Some((policy, name)))
    }

    /// Whether the job's project may build, by the policy in force; a
    /// self-update helper, which has no policy, runs what the gateway
    /// admitted.
    fn may_build(&self) -> bool {
        self.boundary.is_none_or(|(cell, name)| {
            cell.get()
                .project(name)
                .is_some_and(|p| p.allows_action(Action::Build))
        })
    }

    /// Decides how the job runs compose: on the project's own files
    /// (`compose_model = "off"`), or on a judged copy of its model, made
    /// and judged now by the policy in force. A self-update helper runs the
    /// copy the gateway made for it, or the files.
    async fn prepare(&self, op: ComposeOp) -> Result<Runs, Completion> {
        let origin = self.target.clone();
        let made = self
            .record
            .borrow()
            .compose()
            .and_then(|c| c.judged_copy.clone());
        let Some((policy, name)) = self.policy(op)? else {
            return match made {
                Some(copy) => self.copy_made(origin, PathBuf::from(copy), op),
                None => Ok(self.on_files(self.pin)),
            };
        };
        let project = policy.project(name).expect("checked by policy()");
        if project.compose_model == ModelMode::Off {
            return Ok(self.on_files(self.pin));
        }
        let real = self.judge_files(&origin, project, op)?;
        let copy = judge_and_copy(
            self.engine,
            &self.files.copies,
            &policy,
            project,
            &origin,
            self.pin,
            &real.config_files,
        )
        .await
        .map_err(|(code, why)| refused(op, code, why))?;
        self.record.send_modify(|r| {
            if let Some(c) = r.compose_mut() {
                c.judged_copy = Some(copy.copy.path.display().to_string());
            }
        });
        #[cfg(feature = "test-seams")]
        {
            let id = self.record.borrow().id;
            seam::after_judging(id).await;
        }
        Ok(Runs::Copy(copy))
    }

    /// For a self-update job, before its helper starts: judges the model
    /// and writes the copy the helper will run (recorded in the job),
    /// unless the project runs its own files.
    pub(super) async fn prepare_for_helper(&self) -> Result<Option<CopyInUse>, Completion> {
        let first = steps(self.record.borrow().action, true)[0];
        match self.prepare(first).await? {
            Runs::Copy(judged) => Ok(Some(judged.copy)),
            Runs::Files { .. } => Ok(None),
        }
    }

    /// The copy a gateway made for this self-update job, read back.
    fn copy_made(
        &self,
        origin: ComposeTarget,
        path: PathBuf,
        op: ComposeOp,
    ) -> Result<Runs, Completion> {
        let model = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| {
                refused(
                    op,
                    Code::InternalError,
                    format!("the judged copy {} cannot be read: {e}", path.display()),
                )
            })?;
        Ok(Runs::Copy(Judged {
            copy: self.files.copies.hold(path),
            model: Arc::new(model),
            origin,
            real_configs: Vec::new(),
        }))
    }

    /// The target's real files, once the project's `compose_files` still
    /// allow them; files that resolve elsewhere than when the request was
    /// admitted are allowed only where `compose_files` judges them.
    fn judge_files(
        &self,
        target: &ComposeTarget,
        project: &crate::policy::Project,
        op: ComposeOp,
    ) -> Result<RealPaths, Completion> {
        let real = target
            .real_paths()
            .map_err(|e| refused(op, Code::ComposeFileNotVisible, e))?;
        let admitted = self
            .record
            .borrow()
            .compose()
            .map(|c| c.admitted_files.clone())
            .unwrap_or_default();
        let moved = !admitted.is_empty() && real.listing() != admitted;
        if moved && !project.bounds_compose_files() {
            return Err(refused(
                op,
                Code::ComposeFilesChanged,
                format!(
                    "the compose files resolve to other real files than when the request was admitted (now: {})",
                    real.listing().join(", ")
                ),
            ));
        }
        if !project.allows_compose_paths(&real.config_files, &real.env_files, &real.working_dir) {
            return Err(refused(
                op,
                Code::ComposeFileNotAllowed,
                "the files compose would read are now outside the project's compose_files",
            ));
        }
        Ok(real)
    }

    /// Runs one compose command. On the project's files, they are judged
    /// right before it and must be the same real files right after it; on
    /// a judged copy, the copy's model is judged again by the policy in
    /// force (a tightened policy stops the job) and compose reads nothing
    /// else.
    async fn run_step(&self, runs: &Runs, op: ComposeOp, limits: &Limits) -> Option<Completion> {
        match runs {
            Runs::Files { run, .. } => self.run_on_files(run, op, limits).await,
            Runs::Copy(judged) => {
                if let Err(refused) = self.judge_again(judged, op) {
                    self.output.note(&format!("({})", refused.why()));
                    return Some(refused);
                }
                let target = self
                    .files
                    .copies
                    .target_of(&judged.copy.path, &judged.origin);
                let outcome = self
                    .engine
                    .run_compose(&target, op, limits, self.output)
                    .await;
                self.record
                    .send_modify(|r| r.steps.push(Step::from(&outcome)));
                failure_of(&outcome.exit, op, self.timeout)
            }
        }
    }

    /// Runs `run`, an invocation of the project's files (and a pin's
    /// override), judging the project's files around it.
    async fn run_on_files(
        &self,
        run: &ComposeTarget,
        op: ComposeOp,
        limits: &Limits,
    ) -> Option<Completion> {
        let target = self.target;
        let before = match self.files_before(target, op) {
            Ok(real) => real,
            Err(refused) => {
                self.output.note(&format!("({})", refused.why()));
                return Some(refused);
            }
        };
        let outcome = self.engine.run_compose(run, op, limits, self.output).await;
        self.record
            .send_modify(|r| r.steps.push(Step::from(&outcome)));
        let after = target.real_paths();
        if after.as_ref() != Ok(&before) {
            let now = match after {
                Ok(real) => real.listing().join(", "),
                Err(e) => e.to_string(),
            };
            let why = format!(
                "{}: the compose files resolved to other real files while {} ran (now: {now}); the job stops here",
                Code::ComposeFilesChanged.as_str(),
                describe(op)
            );
            self.output.note(&format!("({why})"));
            return Some(Completion::ended(JobState::Failed, why));
        }
        failure_of(&outcome.exit, op, self.timeout)
    }

    /// The target's real files right before a command on them, judged by
    /// the policy in force (a helper, without one, only checks that they
    /// are the files it was handed).
    fn files_before(&self, target: &ComposeTarget, op: ComposeOp) -> Result<RealPaths, Completion> {
        match self.policy(op)? {
            Some((policy, name)) => {
                let project = policy.project(name).expect("checked by policy()");
                self.judge_files(target, project, op)
            }
            None => {
                let real = target
                    .real_paths()
                    .map_err(|e| refused(op, Code::ComposeFileNotVisible, e))?;
                let admitted = self
                    .record
                    .borrow()
                    .compose()
                    .map(|c| c.admitted_files.clone())
                    .unwrap_or_default();
                if !admitted.is_empty() && real.listing() != admitted {
                    return Err(refused(
                        op,
                        Code::ComposeFilesChanged,
                        format!(
                            "the compose files resolve to other real files than when the request was admitted (now: {})",
                            real.listing().join(", ")
                        ),
                    ));
                }
                Ok(real)
            }
        }
    }

    /// The copy's model, judged again by the policy in force.
    fn judge_again(&self, judged: &Judged, op: ComposeOp) -> Result<(), Completion> {
        let Some((policy, name)) = self.policy(op)? else {
            return Ok(());
        };
        let project = policy.project(name).expect("checked by policy()");
        if project.compose_model != ModelMode::Enforce {
            return Ok(());
        }
        let rules = ProjectRules::new(
            &policy,
            project,
            judged.origin.project.as_str(),
            &judged.real_configs,
        );
        let findings = model::judge_model(&judged.model, &rules.rules());
        match findings.first() {
            Some(first) => Err(refused(op, Code::ComposeModelNotAllowed, first)),
            None => Ok(()),
        }
    }

    /// The image id a rollback restores when it has no digest to pin.
    fn restore_image(&self) -> Option<&str> {
        self.restore
            .filter(|_| self.pin.is_none())
            .map(|r| r.image.as_str())
    }

    /// Points the service's image reference (the one its container was
    /// created with, never a digest) at the image id being restored.
    async fn point_at(&self, image: &str) -> Option<Completion> {
        let reference = self
            .record
            .borrow()
            .compose()
            .and_then(|c| c.previous_reference.clone())
            .unwrap_or_default();
        let why = match Reference::parse(&reference).filter(|r| r.digest.is_none()) {
            None => PointBackError::Reference(reference.clone()).to_string(),
            Some(parsed) => match self.tag_back(image, &reference, &parsed).await {
                Ok(()) => return None,
                Err(e) => e.to_string(),
            },
        };
        Some(Completion::ended(
            JobState::Failed,
            format!("the release could not be restored: {why}"),
        ))
    }

    async fn tag_back(
        &self,
        image: &str,
        reference: &str,
        parsed: &Reference<'_>,
    ) -> Result<(), PointBackError> {
        let tag = parsed.tag.unwrap_or("latest");
        self.engine
            .tag_image(image, parsed.repository, tag)
            .await
            .map_err(|source| PointBackError::Tag {
                reference: reference.to_owned(),
                previous: image.to_owned(),
                source,
            })
    }

    /// Records the repository digest of what the service runs now: the
    /// pin, or the image's digest in the repository its containers name.
    async fn note_digest(&self) {
        if let Some(pin) = self.pin {
            self.record
                .send_modify(|r| r.running_digest = Some(pin.to_string()));
            return;
        }
        let Ok(containers) = self.engine.service_containers(self.target).await else {
            return;
        };
        let Some(first) = containers.first() else {
            return;
        };
        let Some(parsed) = Reference::parse(&first.reference) else {
            return;
        };
        let digest = match parsed.pin() {
            Some(pin) => Some(pin.to_string()),
            None => {
                let prefix = format!("{}@", parsed.repository);
                let digests = self.engine.repo_digests(&first.image).await;
                digests
                    .ok()
                    .flatten()
                    .and_then(|all| all.into_iter().find(|d| d.starts_with(&prefix)))
            }
        };
        self.record.send_modify(|r| r.running_digest = digest);
    }

    /// Tags the image of a release without a digest, so it stays on the
    /// host while the service keeps the release; the releases this one
    /// pushes out of the history lose their tags.
    async fn keep_release(&self) {
        let (id, image) = {
            let r = self.record.borrow();
            let untagged = r.running_digest.is_none();
            (r.id, r.running_image.clone().filter(|_| untagged))
        };
        if let Some(image) = image {
            self.tag_release(id, &image).await;
        }
        let key =
            crate::store::compose_key(self.target.project.as_str(), self.target.service.as_str());
        let keep = self.store.release_history() as usize;
        let Ok(kept) = self.store.releases(None, &key, keep + 1).await else {
            return;
        };
        // This release is not written yet: it will push out those from
        // the `keep`th on.
        for old in kept.iter().skip(keep.saturating_sub(1)) {
            if old.digest.is_none() {
                let tag = format!("{RELEASE_REPOSITORY}:{}", old.job);
                if let Err(e) = self.engine.untag_image(&tag).await {
                    tracing::warn!(error = %e, "could not remove the tag of a release no longer kept");
                }
            }
        }
    }

    async fn tag_release(&self, id: JobId, image: &str) {
        if let Err(e) = self
            .engine
            .tag_image(image, RELEASE_REPOSITORY, &id.to_string())
            .await
        {
            self.output.note(&format!(
                "(the release's image {image} could not be tagged to keep it: {e}; a prune may prevent rolling back to it)"
            ));
        }
    }

    async fn deploy(&self, before: &[ContainerStatus]) -> Completion {
        let action = self.record.borrow().action;
        let ops = match self.restore_image() {
            Some(_) => RESTORE_STEPS,
            None => steps(action, self.may_build()),
        };
        let first = ops[0];
        let runs = match self.prepare(first).await {
            Ok(runs) => runs,
            Err(refused) => {
                self.output.note(&format!("({})", refused.why()));
                return refused;
            }
        };
        let (project, service) = (self.target.project.as_str(), self.target.service.as_str());
        if let (Runs::Files { .. }, Some(pin)) = (&runs, self.pin) {
            if let Err(e) = self.files.pins.write(project, service, pin) {
                return Completion::ended(
                    JobState::Failed,
                    format!("the override file that pins the image could not be written: {e}"),
                );
            }
        }
        if let Some(image) = self.restore_image() {
            if let Some(failed) = self.point_at(image).await {
                return failed;
            }
        }
        let mut failure = None;
        for &op in ops {
            if let Some(failed) = self.run_step(&runs, op, self.limits).await {
                // Until `up` runs, nothing was replaced.
                if op == ComposeOp::Pull || failed.state == JobState::Interrupted {
                    return failed;
                }
                failure = Some(failed);
                break;
            }
        }
        let failure = match failure {
            Some(failed) => failed,
            None => match self.gate(before, self.limits).await {
                Ok(()) => {
                    self.retain_pins(runs.pin_file());
                    self.note_digest().await;
                    self.keep_release().await;
                    return Completion::succeeded();
                }
                Err(failed) if failed.state == JobState::Interrupted => return failed,
                Err(failed) => failed,
            },
        };
        self.roll_back(before, failure, &runs).await
    }

    /// Removes the service's pin overrides that no container names now.
    fn retain_pins(&self, in_use: Option<&std::path::Path>) {
        let (project, service) = (self.target.project.as_str(), self.target.service.as_str());
        if let Err(e) = self.files.pins.retain(project, service, in_use) {
            tracing::warn!(project, service, error = %e, "could not remove unused pin override files");
        }
    }

    /// After a failed `up` or gate: returns the service to the image it
    /// ran before, when the project wants that and something was replaced.
    async fn roll_back(
        &self,
        before: &[ContainerStatus],
        failure: Completion,
        runs: &Runs,
    ) -> Completion {
        let plan = match self.rollback_plan(before, &failure).await {
            Ok(plan) => plan,
            Err(ended) => return ended,
        };
        self.output.note(&format!(
            "(the deploy failed: {}; rolling back to {})",
            failure.why(),
            plan.previous
        ));
        self.record_rollback_start(&failure, &plan).await;
        // Its own budget: the deploy may have used all of the job's.
        let limits = Limits {
            deadline: Instant::now() + self.timeout,
            cancel: self.limits.cancel.clone(),
        };
        let outcome = match self.point_back(&plan.previous, &plan.reference, runs).await {
            Err(why) => Err(Completion::ended(JobState::Failed, why.to_string())),
            Ok(back) => match self.run_step(&back, ComposeOp::UpNoBuild, &limits).await {
                Some(failed) => Err(failed),
                None => self.gate(&plan.now, &limits).await.map(|()| back),
            },
        };
        let end = self.rollback_end(outcome, &failure, &plan.previous).await;
        self.record.send_modify(|r| {
            if let Some(rollback) = r.compose_mut().and_then(|c| c.rollback.as_mut()) {
                rollback.state = end.rollback_state;
                rollback.error = end.rollback_error;
                rollback.finished_at_ms = Some(self.clock.unix_ms());
            }
        });
        Completion::ended(end.state, end.why)
    }

    /// What a rollback would go back to, or the failure as it ends when
    /// there is none: rollback is off, there was no image before, the
    /// containers cannot be listed, or none of them was replaced.
    async fn rollback_plan(
        &self,
        before: &[ContainerStatus],
        failure: &Completion,
    ) -> Result<RollbackPlan, Completion> {
        let (enabled, previous, reference) = {
            let r = self.record.borrow();
            let compose = r.compose();
            (
                compose.is_some_and(|c| c.rollback_on_failure),
                r.previous_image.clone(),
                compose.and_then(|c| c.previous_reference.clone()),
            )
        };
        let (true, Some(previous)) = (enabled, previous) else {
            return Err(failure.clone());
        };
        let now = self
            .engine
            .service_containers(self.target)
            .await
            .map_err(|e| {
                let why = format!(
                    "{}; whether to roll back could not be decided: {e}",
                    failure.why()
                );
                Completion::ended(failure.state, why)
            })?;
        let unchanged = now.len() == before.len()
            && now
                .iter()
                .all(|c| c.image == previous && before.iter().any(|b| b.id == c.id));
        if unchanged {
            let why = format!(
                "{}; the service's containers were not replaced, so there was nothing to roll back",
                failure.why()
            );
            return Err(Completion::ended(failure.state, why));
        }
        Ok(RollbackPlan {
            from_image: now.iter().map(|c| c.image.clone()).find(|i| *i != previous),
            previous,
            reference: reference.unwrap_or_default(),
            now,
        })
    }

    /// Records that the rollback runs, durably before it starts: a gateway
    /// that dies now must not run the failed deploy again at its next start.
    async fn record_rollback_start(&self, failure: &Completion, plan: &RollbackPlan) {
        self.record.send_modify(|r| {
            r.error = failure.error.clone();
            if let Some(c) = r.compose_mut() {
                c.rollback = Some(Rollback {
                    from_image: plan.from_image.clone(),
                    to_image: plan.previous.clone(),
                    state: RollbackState::Running,
                    error: None,
                    started_at_ms: self.clock.unix_ms(),
                    finished_at_ms: None,
                });
            }
        });
        let mut snapshot = self.record.borrow().clone();
        snapshot.output = self.output.text();
        if let Err(e) = self.store.put(&snapshot).await {
            tracing::error!(job = %snapshot.id, error = %e, "could not record that a rollback started");
        }
    }

    /// How the job and its rollback end, from what the rollback did.
    async fn rollback_end(
        &self,
        outcome: Result<Runs, Completion>,
        failure: &Completion,
        previous: &str,
    ) -> RollbackEnd {
        match outcome {
            Ok(back) => {
                self.retain_pins(back.pin_file());
                RollbackEnd {
                    state: JobState::RolledBack,
                    rollback_state: RollbackState::Succeeded,
                    rollback_error: None,
                    why: format!("{}; rolled back to {previous}", failure.why()),
                }
            }
            Err(failed) if failed.state == JobState::Interrupted => {
                let running = what_runs(self.engine, self.target).await;
                RollbackEnd {
                    state: JobState::Interrupted,
                    rollback_state: RollbackState::Interrupted,
                    rollback_error: failed.error,
                    why: format!(
                        "{}; the gateway stopped during the rollback; {running}",
                        failure.why()
                    ),
                }
            }
            Err(failed) => {
                let why = failed.why().to_owned();
                RollbackEnd {
                    state: JobState::Failed,
                    rollback_state: RollbackState::Failed,
                    rollback_error: Some(why.clone()),
                    why: format!("{}; the rollback failed too: {why}", failure.why()),
                }
            }
        }
    }

    /// Makes the service's image reference name `previous` again, and
    /// returns how to run `up` with it: a tag moved back through the
    /// engine, or, when the previous container was pinned, that pin (an
    /// override file on the project's files; on a judged copy, the copy's
    /// model with that image, judged before it runs).
    async fn point_back(
        &self,
        previous: &str,
        reference: &str,
        runs: &Runs,
    ) -> Result<Runs, PointBackError> {
        let parsed = Reference::parse(reference)
            .ok_or_else(|| PointBackError::Reference(reference.to_owned()))?;
        let (project, service) = (self.target.project.as_str(), self.target.service.as_str());
        let pin = parsed.pin();
        if pin.is_none() {
            self.tag_back(previous, reference, &parsed).await?;
        }
        match runs {
            Runs::Files { .. } => {
                if let Some(pin) = &pin {
                    self.files
                        .pins
                        .write(project, service, pin)
                        .map_err(PointBackError::PinFile)?;
                }
                Ok(self.on_files(pin.as_ref()))
            }
            Runs::Copy(judged) => {
                let model = model::with_image(&judged.model, service, reference);
                let copy = self
                    .files
                    .copies
                    .write(&judged.origin, &model)
                    .map_err(PointBackError::Copy)?;
                Ok(Runs::Copy(Judged {
                    copy,
                    model: Arc::new(model),
                    origin: judged.origin.clone(),
                    real_configs: judged.real_configs.clone(),
                }))
            }
        }
    }

    /// Records the names of the service's containers, and the image they
    /// run and the reference they were created with when they all have one,
    /// when these changed.
    fn note_containers(&self, containers: &[ContainerStatus]) {
        self.record.send_if_modified(|r| {
            let image = all_alike(containers, |c| &c.image).cloned();
            let mut changed = image.is_some() && r.running_image != image;
            if changed {
                r.running_image = image;
            }
            let Some(job) = r.compose_mut() else {
                return changed;
            };
            let reference = all_alike(containers, |c| &c.reference);
            if reference.is_some() && job.running_reference.as_ref() != reference {
                job.running_reference = reference.cloned();
                changed = true;
            }
            let names = containers.iter().map(|c| c.name.as_str());
            if !job.containers.iter().map(String::as_str).eq(names.clone()) {
                job.containers = names.map(str::to_owned).collect();
                changed = true;
            }
            changed
        });
    }

    /// Waits until every container of the service runs, is healthy where
    /// checked, and has run for `stable` without a restart since `before`.
    async fn gate(&self, before: &[ContainerStatus], limits: &Limits) -> Result<(), Completion> {
        let service = self.target.service.as_str();
        let baseline: HashMap<&str, i64> = before
            .iter()
            .map(|c| (c.id.as_str(), c.restart_count))
            .collect();
        loop {
            let last = match self.engine.service_containers(self.target).await {
                Ok(containers) => {
                    self.note_containers(&containers);
                    match assess(
                        service,
                        &containers,
                        &baseline,
                        self.clock.system_time(),
                        self.stable,
                    ) {
                        Verdict::Ready => return Ok(()),
                        Verdict::Broken(why) => {
                            return Err(Completion::ended(JobState::Failed, why));
                        }
                        Verdict::Waiting(why) => why,
                    }
                }
                Err(e) => format!("the engine could not be asked about the service: {e}"),
            };
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = tokio::time::sleep_until(limits.deadline) => {
                    let during = format!("while waiting for service {service} ({last})");
                    return Err(Completion::ended(JobState::TimedOut, timeout_message(self.timeout, &during)));
                }
                () = limits.cancel.cancelled() => {
                    return Err(Completion::ended(JobState::Interrupted, INTERRUPTED));
                }
            }
        }
    }
}

/// What the service's containers say right now.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ready,
    Waiting(String),
    Broken(String),
}

/// Judges the service's containers at `now`. `baseline` holds the restart
/// counts of containers that existed before the deploy; a new one starts
/// from zero.
fn assess(
    service: &str,
    containers: &[ContainerStatus],
    baseline: &HashMap<&str, i64>,
    now: SystemTime,
    stable: Duration,
) -> Verdict {
    if containers.is_empty() {
        return Verdict::Broken(format!(
            "no container of service {service} exists after `up`"
        ));
    }
    let mut waiting = None;
    for c in containers {
        match (c.state.as_str(), c.health.as_deref()) {
            ("running", None | Some("healthy")) => {
                let restarts = c.restart_count - baseline.get(c.id.as_str()).copied().unwrap_or(0);
                if restarts > 0 {
                    return Verdict::Broken(format!(
                        "container {} restarted {restarts} time(s) after `up` (last exit code {}); check its logs",
                        c.name, c.exit_code
                    ));
                }
                let up = c
                    .started_at
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                if up < stable {
                    waiting = Some(format!(
                        "container {} has run for {} of the {} s it must run unchanged",
                        c.name,
                        humantime::format_duration(Duration::from_secs(up.as_secs())),
                        stable.as_secs()
                    ));
                }
            }
            ("running", Some("unhealthy")) => {
                let log = c
                    .health_log
                    .as_deref()
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("; last check said: {l}"))
                    .unwrap_or_default();
                return Verdict::Broken(format!(
                    "container {} is running but unhealthy: its health check failed{log}",
                    c.name
                ));
            }
            ("running", Some(other)) => {
                waiting = Some(format!(
                    "container {} is running, health check {other}",
                    c.name
                ));
            }
            ("created", _) => {
                waiting = Some(format!("container {} is created, not started", c.name))
            }
            ("restarting", _) => {
                return Verdict::Broken(format!(
                    "container {} is restarting after exiting with code {}; check its logs",
                    c.name, c.exit_code
                ));
            }
            ("exited" | "dead", _) => {
                return Verdict::Broken(format!(
                    "container {} is {} with exit code {}",
                    c.name, c.state, c.exit_code
                ));
            }
            (state, _) => {
                return Verdict::Broken(format!("container {} is {state}", c.name));
            }
        }
    }
    waiting.map_or(Verdict::Ready, Verdict::Waiting)
}

/// What a rollback goes back to: the image before (and the reference that
/// named it), and the containers as the failed deploy left them.
struct RollbackPlan {
    previous: String,
    reference: String,
    now: Vec<ContainerStatus>,
    from_image: Option<String>,
}

/// How a job that rolled back ends, and how its rollback ended.
struct RollbackEnd {
    state: JobState,
    rollback_state: RollbackState,
    rollback_error: Option<String>,
    why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const STABLE: Duration = Duration::from_secs(5);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn container(state: &str, health: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            id: "id".into(),
            name: "web-1".into(),
            image: "sha256:x".into(),
            reference: "app:1".into(),
            state: state.into(),
            exit_code: 3,
            health: health.map(Into::into),
            health_log: Some("connection refused".into()),
            started_at: Some(at(0)),
            restart_count: 0,
        }
    }

    /// Judged at `secs` after the container started, with no baseline.
    fn judge(containers: &[ContainerStatus], secs: u64) -> Verdict {
        assess("web", containers, &HashMap::new(), at(secs), STABLE)
    }

    #[test]
    fn running_for_stable_secs_without_or_with_a_passing_check_is_ready() {
        assert_eq!(judge(&[container("running", None)], 5), Verdict::Ready);
        assert_eq!(
            judge(&[container("running", Some("healthy"))], 60),
            Verdict::Ready
        );
    }

    #[test]
    fn a_container_that_started_less_than_stable_secs_ago_is_waited_for() {
        let Verdict::Waiting(why) = judge(&[container("running", None)], 1) else {
            panic!()
        };
        assert!(why.contains("has run for 1s of the 5 s"), "{why}");
        let never_started = ContainerStatus {
            started_at: None,
            ..container("running", None)
        };
        assert!(matches!(judge(&[never_started], 60), Verdict::Waiting(_)));
        // A clock that reads before the start waits, it does not pass.
        assert!(matches!(
            assess(
                "web",
                &[container("running", None)],
                &HashMap::new(),
                at(0) - Duration::from_secs(9),
                STABLE
            ),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn a_restart_since_the_deploy_fails_the_gate() {
        let restarted = ContainerStatus {
            restart_count: 1,
            ..container("running", None)
        };
        let Verdict::Broken(why) = judge(std::slice::from_ref(&restarted), 60) else {
            panic!()
        };
        assert!(why.contains("restarted 1 time(s)"), "{why}");
        // Restarts from before the deploy, of a container it kept, count not.
        let baseline = HashMap::from([("id", 1)]);
        assert_eq!(
            assess("web", &[restarted], &baseline, at(60), STABLE),
            Verdict::Ready
        );
    }

    #[test]
    fn starting_checks_wait() {
        assert!(matches!(
            judge(
                &[
                    container("running", Some("healthy")),
                    container("running", Some("starting"))
                ],
                60
            ),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn broken_states_say_why() {
        let Verdict::Broken(why) = judge(&[container("running", Some("unhealthy"))], 60) else {
            panic!()
        };
        assert!(
            why.contains("unhealthy") && why.contains("connection refused"),
            "{why}"
        );
        let Verdict::Broken(why) = judge(&[container("exited", None)], 60) else {
            panic!()
        };
        assert!(why.contains("exit code 3"), "{why}");
        assert!(matches!(
            judge(&[container("restarting", None)], 60),
            Verdict::Broken(_)
        ));
        assert!(matches!(judge(&[], 60), Verdict::Broken(_)));
        assert!(matches!(
            judge(&[container("paused", None)], 60),
            Verdict::Broken(_)
        ));
    }

    #[test]
    fn what_runs_is_said_per_container() {
        assert_eq!(
            running_now(&[container("running", None)]),
            "web-1 is running on image sha256:x"
        );
        assert_eq!(running_now(&[]), "no container of the service exists");
    }
}
