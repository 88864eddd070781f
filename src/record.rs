//! What a job is: the service it deploys, carried whole from the request's
//! admission to its record, and the record as it is stored and reported.

use serde::{Deserialize, Serialize};

use crate::docker::{CommandOutcome, ComposeTarget, Exit, ImagePin, TargetError};
use crate::names::{Action, ContainerName, JobId, SwarmServiceName};

/// What a job deploys: one typed value from the request's admission to the
/// job's record ([`JobRecord::new`]) and back ([`JobRecord::deployment`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deployment {
    pub target: DeployTarget,
    /// The caller's pin, the one place it is kept: a compose job merges it
    /// into its judged model (or passes an override file), a Swarm job
    /// resolves it.
    pub pin: Option<ImagePin>,
    /// The release a rollback restores: by its digest (then `pin` holds
    /// it), or, without `pin`, by its image id, which the service's image
    /// reference is pointed at before `up`.
    pub restore: Option<Restored>,
}

/// The release a rollback restores: the job that made it, and the image it
/// left running (a digest reference, or an image id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Restored {
    pub job: JobId,
    pub image: String,
}

/// The service a job deploys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeployTarget {
    /// A compose service, as the named container's labels describe it.
    Compose {
        container: ContainerName,
        target: ComposeTarget,
    },
    /// A Docker Swarm service.
    Swarm(SwarmServiceName),
}

/// The life of a job.
///
/// `queued → running → succeeded | failed | timed_out | rolled_back`: a
/// deploy whose service did not come up, put back on the image it ran
/// before, ends `rolled_back`. A job running when
/// the gateway stops is put back to `queued` for one more attempt at the
/// next start (compose `up` is idempotent); interrupted again, it ends
/// `interrupted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Interrupted,
    RolledBack,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Interrupted,
        JobState::RolledBack,
    ];

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Interrupted => "interrupted",
            JobState::RolledBack => "rolled_back",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// How a job in this state ended, when it did.
    pub fn outcome(self) -> Option<crate::policy::Outcome> {
        use crate::policy::Outcome;
        Some(match self {
            JobState::Queued | JobState::Running => return None,
            JobState::Succeeded => Outcome::Succeeded,
            JobState::Failed => Outcome::Failed,
            JobState::TimedOut => Outcome::TimedOut,
            JobState::Interrupted => Outcome::Interrupted,
            JobState::RolledBack => Outcome::RolledBack,
        })
    }
}

/// One command a job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub argv: Vec<String>,
    /// `None` when it was killed or never started.
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

impl From<&CommandOutcome> for Step {
    fn from(outcome: &CommandOutcome) -> Self {
        Self {
            argv: outcome.argv.clone(),
            exit_code: match outcome.exit {
                Exit::Code(code) => Some(code),
                _ => None,
            },
            duration_ms: outcome.duration.as_millis() as u64,
        }
    }
}

/// Where a rollback is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackState {
    Running,
    Succeeded,
    Failed,
    /// The gateway stopped while it ran.
    Interrupted,
}

impl RollbackState {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackState::Running => "running",
            RollbackState::Succeeded => "succeeded",
            RollbackState::Failed => "failed",
            RollbackState::Interrupted => "interrupted",
        }
    }
}

/// A deploy's rollback: from the image that failed to the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The image id the failed deploy brought, when a container ran it.
    pub from_image: Option<String>,
    pub to_image: String,
    pub state: RollbackState,
    /// Why the rollback failed.
    pub error: Option<String>,
    /// When it started and ended, Unix milliseconds.
    #[serde(default)]
    pub started_at_ms: u64,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// Everything known about a job. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub project: String,
    pub action: Action,
    pub state: JobState,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub steps: Vec<Step>,
    pub output: String,
    /// Why it did not succeed, in a sentence.
    pub error: Option<String>,
    /// 1, or 2 when re-run after an interruption.
    pub attempt: u32,
    /// The image id the service ran before the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// The caller's pin, `repository@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The pin's digest, `sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// What the job says in place of `pulling`/`building`, e.g. `up to date`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who asked for it (the first request, when others joined it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
    /// The image the service ran when the job ended: its containers' image
    /// id, or the digest reference a Swarm job deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_image: Option<String>,
    /// The repository digest of the image the service ran when the job
    /// succeeded, `repository@sha256:…`, where the image has one for the
    /// repository the service names (a built image has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_digest: Option<String>,
    /// Of a rollback: the release it restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<Restored>,
    /// What it deploys, with what only that kind of job has. Stored flat
    /// beside the fields above, as records always were.
    #[serde(flatten)]
    pub target: JobTarget,
}

/// Who asked for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Requester {
    /// A request signed with the project's secret at this place in its
    /// `secrets` (0 is the first).
    Key { index: u32 },
    /// A request with a CI token.
    Token { issuer: String, subject: String },
}

/// What a job deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Tried in this order: only a Swarm job has `swarm_service` (records
// written before the two were told apart also carry the compose fields,
// empty).
#[serde(untagged)]
// Nearly every job is a compose job: boxing that variant would allocate in
// the common case to save bytes in the rare one.
#[allow(clippy::large_enum_variant)]
pub enum JobTarget {
    Swarm(SwarmJob),
    Compose(ComposeJob),
}

/// A job of a compose service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComposeJob {
    pub container_name: String,
    pub compose_project: String,
    pub service: String,
    pub working_dir: String,
    pub compose_files: Vec<String>,
    #[serde(default)]
    pub env_files: Vec<String>,
    /// It redeploys the gateway's own compose service, so a helper container
    /// runs it.
    #[serde(default)]
    pub self_update: bool,
    /// The helper container's name, once it is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<String>,
    /// The reference the service's container was created with
    /// (`Config.Image`): what a rollback points back at `previous_image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_reference: Option<String>,
    /// The reference the service's containers were created with when the
    /// job last looked: the one tag a rollback to this job's release may
    /// point back at its image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_reference: Option<String>,
    /// Whether a failed deploy is rolled back (the project's `rollback`).
    #[serde(default = "yes")]
    pub rollback_on_failure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// The names of the service's containers when the job last looked, after
    /// `up`: compose v2 renames the containers v1 named `<project>_<service>_1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// The real files of the compose target as judged when the request was
    /// admitted: a compose command runs on other files only where the
    /// project's `compose_files` can judge them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admitted_files: Vec<String>,
    /// The judged copy of the compose model the job runs compose on
    /// (where the project's model is judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_copy: Option<String>,
}

/// A job of a Docker Swarm service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmJob {
    /// The service's name.
    #[serde(rename = "swarm_service")]
    pub name: String,
    /// Once it succeeded: the tasks running the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_updated: Option<u64>,
}

fn display_paths(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

impl JobRecord {
    /// A new job of `deployment`, queued at `at_ms`.
    pub fn new(
        project: &str,
        action: Action,
        deployment: &Deployment,
        self_update: bool,
        at_ms: u64,
    ) -> Self {
        let target = match &deployment.target {
            DeployTarget::Compose { container, target } => JobTarget::Compose(ComposeJob {
                container_name: container.to_string(),
                compose_project: target.project.to_string(),
                service: target.service.to_string(),
                working_dir: target.working_dir.display().to_string(),
                compose_files: display_paths(&target.config_files),
                env_files: display_paths(&target.env_files),
                self_update,
                helper: None,
                previous_reference: None,
                running_reference: None,
                rollback_on_failure: true,
                rollback: None,
                containers: Vec::new(),
                admitted_files: Vec::new(),
                judged_copy: None,
            }),
            DeployTarget::Swarm(name) => JobTarget::Swarm(SwarmJob {
                name: name.to_string(),
                replicas_updated: None,
            }),
        };
        let mut record = Self::queued(project, action, at_ms, target);
        record.image = deployment.pin.as_ref().map(ToString::to_string);
        record.image_digest = deployment.pin.as_ref().map(ImagePin::digest);
        record.restored = deployment.restore.clone();
        record
    }

    /// A new job of `project`, queued.
    fn queued(project: &str, action: Action, at_ms: u64, target: JobTarget) -> Self {
        Self {
            id: JobId::random(),
            project: project.to_owned(),
            action,
            state: JobState::Queued,
            created_at_ms: at_ms,
            started_at_ms: None,
            finished_at_ms: None,
            steps: Vec::new(),
            output: String::new(),
            error: None,
            attempt: 1,
            previous_image: None,
            image: None,
            image_digest: None,
            message: None,
            requested_by: None,
            running_image: None,
            running_digest: None,
            restored: None,
            target,
        }
    }

    /// The compose side of a compose job.
    pub fn compose(&self) -> Option<&ComposeJob> {
        match &self.target {
            JobTarget::Compose(c) => Some(c),
            JobTarget::Swarm(_) => None,
        }
    }

    pub fn compose_mut(&mut self) -> Option<&mut ComposeJob> {
        match &mut self.target {
            JobTarget::Compose(c) => Some(c),
            JobTarget::Swarm(_) => None,
        }
    }

    /// The container the request named; empty for a Swarm job.
    pub fn container_name(&self) -> &str {
        self.compose().map_or("", |c| c.container_name.as_str())
    }

    /// The compose service, or the Swarm service's name.
    pub fn service(&self) -> &str {
        match &self.target {
            JobTarget::Compose(c) => &c.service,
            JobTarget::Swarm(s) => &s.name,
        }
    }

    /// Whether a helper container runs it.
    pub fn self_update(&self) -> bool {
        self.compose().is_some_and(|c| c.self_update)
    }

    /// The helper container running it, once started.
    pub fn helper(&self) -> Option<&str> {
        self.compose().and_then(|c| c.helper.as_deref())
    }

    /// Its rollback, once one started.
    pub fn rollback(&self) -> Option<&Rollback> {
        self.compose().and_then(|c| c.rollback.as_ref())
    }

    /// What the job deploys, read back from the record and validated again
    /// (after a restart, or in a self-update helper).
    pub fn deployment(&self) -> Result<Deployment, TargetError> {
        let invalid = |label, e: &dyn std::fmt::Display| TargetError::InvalidLabel {
            label,
            reason: e.to_string(),
        };
        let pin = match &self.image {
            Some(image) => Some(ImagePin::parse(image).map_err(|e| invalid("image", &e))?),
            None => None,
        };
        let target = match &self.target {
            JobTarget::Swarm(swarm) => DeployTarget::Swarm(
                SwarmServiceName::parse(&swarm.name).map_err(|e| invalid("swarm_service", &e))?,
            ),
            JobTarget::Compose(compose) => DeployTarget::Compose {
                container: ContainerName::parse(&compose.container_name)
                    .map_err(|e| invalid("container_name", &e))?,
                target: compose.target()?,
            },
        };
        Ok(Deployment {
            target,
            pin,
            restore: self.restored.clone(),
        })
    }
}

impl ComposeJob {
    /// The compose target again, re-validated.
    pub fn target(&self) -> Result<ComposeTarget, TargetError> {
        ComposeTarget::from_stored(
            &self.compose_project,
            &self.service,
            &self.working_dir,
            &self.compose_files,
            &self.env_files,
        )
    }
}

/// Formats Unix milliseconds as RFC 3339 in UTC, e.g. `2026-11-28T09:15:02.123Z`.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn records_stored_before_the_target_was_a_type_are_read() {
        let common = r#""id":"5f0c3a9e8b7d4c21a0e9f8d7c6b5a493","project":"ops","action":"pull","state":"succeeded","created_at_ms":1,"started_at_ms":2,"finished_at_ms":3,"steps":[],"output":"","error":null,"attempt":1"#;
        let swarm = format!(
            r#"{{{common},"container_name":"","compose_project":"","service":"web","working_dir":"","compose_files":[],"env_files":[],"self_update":false,"rollback_on_failure":false,"swarm_service":"web","replicas_updated":3,"previous_image":"app@sha256:1"}}"#
        );
        let record: JobRecord = serde_json::from_str(&swarm).unwrap();
        assert_eq!(
            record.target,
            JobTarget::Swarm(SwarmJob {
                name: "web".into(),
                replicas_updated: Some(3)
            })
        );
        assert_eq!(record.previous_image.as_deref(), Some("app@sha256:1"));
        let compose = format!(
            r#"{{{common},"container_name":"billing-web","compose_project":"billing","service":"web","working_dir":"/srv/billing","compose_files":["/srv/billing/compose.yml"],"previous_image":"sha256:ab","previous_reference":"app:1","containers":["billing-web"]}}"#
        );
        let record: JobRecord = serde_json::from_str(&compose).unwrap();
        let c = record.compose().expect("a compose job");
        assert_eq!(c.container_name, "billing-web");
        assert_eq!(c.compose_files, ["/srv/billing/compose.yml"]);
        assert!(c.rollback_on_failure, "rollback defaults on, as it did");
        assert!(c.env_files.is_empty() && !c.self_update);
        assert_eq!(c.previous_reference.as_deref(), Some("app:1"));
        // Written again and read back, each is the same record.
        for text in [swarm, compose] {
            let record: JobRecord = serde_json::from_str(&text).unwrap();
            let again: JobRecord =
                serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
            assert_eq!(again, record);
        }
    }

    /// A deployment is written into its record and read back whole, its
    /// pin included: recovery and a self-update helper run what was
    /// admitted.
    #[test]
    fn a_deployment_goes_into_its_record_and_comes_back() {
        let pin =
            ImagePin::parse(&format!("reg.example.com/app@sha256:{}", "a".repeat(64))).unwrap();
        let compose = Deployment {
            target: DeployTarget::Compose {
                container: ContainerName::parse("app-web-1").unwrap(),
                target: ComposeTarget::from_parts(
                    "app",
                    "web",
                    "/srv/app",
                    "/srv/app/compose.yml,/srv/app/prod.yml",
                    "/srv/app/prod.env",
                )
                .unwrap(),
            },
            pin: Some(pin.clone()),
            restore: None,
        };
        let swarm = Deployment {
            target: DeployTarget::Swarm(SwarmServiceName::parse("web_frontend").unwrap()),
            pin: None,
            restore: None,
        };
        for deployment in [compose, swarm] {
            let record = JobRecord::new("ops", Action::Pull, &deployment, false, 1);
            let stored: JobRecord =
                serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
            assert_eq!(stored.deployment().unwrap(), deployment);
        }
        let mut tampered = JobRecord::new(
            "ops",
            Action::Pull,
            &Deployment {
                target: DeployTarget::Swarm(SwarmServiceName::parse("web").unwrap()),
                pin: None,
                restore: None,
            },
            false,
            1,
        );
        tampered.image = Some("not a pin".into());
        assert!(
            tampered.deployment().is_err(),
            "a record that does not read back is refused"
        );
    }

    #[test]
    fn a_swarm_job_is_stored_without_compose_fields() {
        let deployment = Deployment {
            target: DeployTarget::Swarm(SwarmServiceName::parse("web").unwrap()),
            pin: None,
            restore: None,
        };
        let record = JobRecord::new("ops", Action::Pull, &deployment, false, 1);
        let doc: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(doc["swarm_service"], "web");
        for absent in [
            "container_name",
            "compose_files",
            "helper",
            "rollback_on_failure",
        ] {
            assert!(doc.get(absent).is_none(), "{absent}: {doc}");
        }
    }

    #[test]
    fn final_states() {
        let finals: Vec<_> = JobState::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals.len(), 5);
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
    }
}
