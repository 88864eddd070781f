//! A job as it is stored and reported.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::DeployTarget;
use crate::docker::{CommandOutcome, ComposeTarget, Exit, ImagePin, TargetError};
use crate::names::{Action, JobId, SwarmServiceName};

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
    pub container_name: String,
    pub compose_project: String,
    pub service: String,
    pub working_dir: String,
    pub compose_files: Vec<String>,
    #[serde(default)]
    pub env_files: Vec<String>,
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
    /// It redeploys the gateway's own compose service, so a helper container
    /// runs it.
    #[serde(default)]
    pub self_update: bool,
    /// The helper container's name, once it is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<String>,
    /// The image id the service ran before the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// The reference that container was created with (`Config.Image`):
    /// what a rollback points back at `previous_image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_reference: Option<String>,
    /// The caller's pin, `repository@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The pin's digest, `sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The override file that carries the pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<String>,
    /// Whether a failed deploy is rolled back (the project's `rollback`).
    #[serde(default = "yes")]
    pub rollback_on_failure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// The Swarm service a Swarm job updates; such a job has no compose
    /// project, files or container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_service: Option<String>,
    /// Of a Swarm job that succeeded: the tasks running the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_updated: Option<u64>,
    /// What the job says in place of `pulling`/`building`, e.g. `up to date`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The names of the service's containers when the job last looked, after
    /// `up`: compose v2 renames the containers v1 named `<project>_<service>_1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// The real files of the compose target as judged when the request was
    /// admitted: a compose command runs on other files only where the
    /// project's `compose_files` can judge them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admitted_files: Vec<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The time since `ms` (Unix milliseconds); zero for a time in the future.
pub fn elapsed_since(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(now_ms().saturating_sub(ms))
}

fn display_paths(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

impl JobRecord {
    pub fn new(
        project: &str,
        action: Action,
        container_name: &str,
        target: &ComposeTarget,
        self_update: bool,
    ) -> Self {
        Self {
            container_name: container_name.to_owned(),
            compose_project: target.project.to_string(),
            service: target.service.to_string(),
            working_dir: target.working_dir.display().to_string(),
            compose_files: display_paths(&target.config_files),
            env_files: display_paths(&target.env_files),
            self_update,
            pin_file: target.pin.as_ref().map(|p| p.display().to_string()),
            ..Self::queued(project, action)
        }
    }

    /// A job that updates the Swarm service `name`.
    pub fn for_swarm(project: &str, name: &SwarmServiceName) -> Self {
        Self {
            service: name.to_string(),
            swarm_service: Some(name.to_string()),
            rollback_on_failure: false,
            ..Self::queued(project, Action::Pull)
        }
    }

    /// A new job of `project`, queued, naming nothing yet.
    fn queued(project: &str, action: Action) -> Self {
        Self {
            id: JobId::random(),
            project: project.to_owned(),
            action,
            container_name: String::new(),
            compose_project: String::new(),
            service: String::new(),
            working_dir: String::new(),
            compose_files: Vec::new(),
            env_files: Vec::new(),
            state: JobState::Queued,
            created_at_ms: now_ms(),
            started_at_ms: None,
            finished_at_ms: None,
            steps: Vec::new(),
            output: String::new(),
            error: None,
            attempt: 1,
            self_update: false,
            helper: None,
            previous_image: None,
            previous_reference: None,
            image: None,
            image_digest: None,
            pin_file: None,
            rollback_on_failure: true,
            rollback: None,
            swarm_service: None,
            replicas_updated: None,
            message: None,
            containers: Vec::new(),
            admitted_files: Vec::new(),
        }
    }

    /// What the job deploys, re-validated (used after a restart).
    pub fn target(&self) -> Result<DeployTarget, TargetError> {
        if let Some(name) = &self.swarm_service {
            let name = SwarmServiceName::parse(name).map_err(|e| TargetError::InvalidLabel {
                label: "swarm_service",
                reason: e.to_string(),
            })?;
            let pin = match &self.image {
                Some(image) => {
                    Some(
                        ImagePin::parse(image).map_err(|e| TargetError::InvalidLabel {
                            label: "image",
                            reason: e.to_string(),
                        })?,
                    )
                }
                None => None,
            };
            return Ok(DeployTarget::Swarm { name, pin });
        }
        self.compose_target().map(DeployTarget::Compose)
    }

    /// The compose target again, re-validated.
    pub fn compose_target(&self) -> Result<ComposeTarget, TargetError> {
        ComposeTarget::from_stored(
            &self.compose_project,
            &self.service,
            &self.working_dir,
            &self.compose_files,
            &self.env_files,
        )
        .map(|target| target.pinned(self.pin_file.as_ref().map(Into::into)))
    }
}

/// Formats Unix milliseconds as RFC 3339 in UTC, e.g. `2026-11-28T09:15:02.123Z`.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
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
    fn final_states() {
        let finals: Vec<_> = JobState::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals.len(), 5);
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
    }
}
