//! Running one Swarm job: resolve the image to a digest, update the
//! service unless that digest already runs, and follow the engine's rolling
//! update to its end.
//!
//! The engine does the update and, with `update_config.failure_action:
//! rollback`, the rollback across the nodes; the job reports what the
//! engine reports: `completed` is success, `paused` and `rollback_paused`
//! are failures, `rollback_completed` is `rolled_back`. Past the job's
//! timeout the gateway asks the engine to roll back and the job ends
//! `timed_out`.

use std::time::Duration;

use tokio::sync::watch;

use super::run::{Completion, INTERRUPTED, timeout_message};
use crate::docker::swarm::{digest_of, pinned_reference, unpinned_reference};
use crate::docker::{ImagePin, Limits, OutputLog, Reference, Swarm, SwarmService};
use crate::names::SwarmServiceName;
use crate::record::{JobRecord, JobState, JobTarget};

/// How often the service's update status is read.
const POLL: Duration = Duration::from_millis(500);

/// The `message` of a job whose service already ran the resolved digest.
const UP_TO_DATE: &str = "up to date";

pub struct SwarmRun<'a> {
    pub engine: &'a dyn Swarm,
    pub name: &'a SwarmServiceName,
    pub pin: Option<&'a ImagePin>,
    pub record: &'a watch::Sender<JobRecord>,
    pub output: &'a OutputLog,
    pub limits: &'a Limits,
    pub timeout: Duration,
}

fn failed(why: impl Into<String>) -> Completion {
    Completion::ended(JobState::Failed, why)
}

impl SwarmRun<'_> {
    pub async fn execute(&self) -> Completion {
        let service = match self.engine.swarm_service(self.name).await {
            Ok(Some(service)) => service,
            Ok(None) => return failed(format!("service {} no longer exists", self.name)),
            Err(e) => {
                return failed(format!(
                    "the engine could not be asked about the service: {e}"
                ));
            }
        };
        self.record
            .send_modify(|r| r.previous_image = Some(service.image.clone()));
        let (reference, repository) = match self.pin {
            Some(pin) => (pin.to_string(), Some(pin.repository())),
            None => match unpinned_reference(&service.image) {
                Some(reference) => (reference, None),
                None => {
                    return failed(format!(
                        "the service's image `{}` is not a reference the gateway can resolve",
                        service.image
                    ));
                }
            },
        };
        self.output
            .note(&format!("resolving {reference} through the registry"));
        let resolved = match self.engine.distribution(&reference).await {
            Ok(resolved) => resolved,
            Err(e) => return failed(format!("the registry could not resolve {reference}: {e}")),
        };
        let Some(target) = pinned_reference(&service.image, repository, &resolved.digest) else {
            return failed(format!("`{}` cannot be pinned", service.image));
        };
        let same_repository = repository.is_none_or(|r| {
            Reference::parse(&service.image).is_some_and(|current| current.repository == r)
        });
        if same_repository && digest_of(&service.image) == Some(resolved.digest.as_str()) {
            // An update to this digest still under way (one this job started
            // before the gateway restarted, say) is followed to its end.
            let under_way = service
                .update
                .as_ref()
                .is_some_and(|u| matches!(u.state.as_str(), "updating" | "rollback_started"));
            if under_way {
                self.output.note(&format!(
                    "an update of {} to {} is under way; following it",
                    self.name, resolved.digest
                ));
                return self.follow(None, &service.image).await;
            }
            self.output.note(&format!(
                "{} already runs {}; nothing to update",
                self.name, resolved.digest
            ));
            self.record
                .send_modify(|r| r.message = Some(UP_TO_DATE.to_owned()));
            return self.finish(&service, &service.image).await;
        }
        self.output
            .note(&format!("updating {} to {target}", self.name));
        let before = service.update.as_ref().and_then(|u| u.started_at.clone());
        if let Err(e) = self
            .engine
            .update_swarm_image(self.name, &target, &resolved.platforms)
            .await
        {
            return failed(format!("the engine refused the update: {e}"));
        }
        self.follow(before, &target).await
    }

    /// Follows the update the gateway started (the first whose start
    /// differs from `before`) to its end.
    async fn follow(&self, before: Option<String>, target: &str) -> Completion {
        let mut last = String::from("the update has not started");
        loop {
            match self.engine.swarm_service(self.name).await {
                Ok(Some(service)) => {
                    let ours = service.update.clone().filter(|u| u.started_at != before);
                    if let Some(update) = ours {
                        let said = update
                            .message
                            .as_deref()
                            .filter(|m| !m.is_empty())
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default();
                        if update.state != last {
                            self.output.note(&format!("update {}{said}", update.state));
                        }
                        match update.state.as_str() {
                            "completed" => return self.finish(&service, target).await,
                            "paused" => {
                                return failed(format!("the engine paused the update{said}"));
                            }
                            "rollback_paused" => {
                                return failed(format!(
                                    "the engine's rollback of the update paused{said}"
                                ));
                            }
                            "rollback_completed" => {
                                return Completion::ended(
                                    JobState::RolledBack,
                                    format!("the engine rolled the update back{said}"),
                                );
                            }
                            _ => last = update.state,
                        }
                    }
                }
                Ok(None) => {
                    return failed(format!(
                        "service {} was removed during the update",
                        self.name
                    ));
                }
                Err(e) => last = format!("the engine could not be asked: {e}"),
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = tokio::time::sleep_until(self.limits.deadline) => {
                    let asked = match self.engine.roll_back_swarm_service(self.name).await {
                        Ok(()) => "the engine was asked to roll it back".to_owned(),
                        Err(e) => format!("asking the engine to roll it back failed: {e}"),
                    };
                    let during = format!("while the update was `{last}` ({asked})");
                    return Completion::ended(JobState::TimedOut, timeout_message(self.timeout, &during));
                }
                () = self.limits.cancel.cancelled() => {
                    return Completion::ended(JobState::Interrupted, INTERRUPTED);
                }
            }
        }
    }

    /// Succeeds, recording how many tasks run `image`.
    async fn finish(&self, service: &SwarmService, image: &str) -> Completion {
        match self.engine.swarm_tasks(&service.id, image).await {
            Ok(count) => {
                self.record.send_modify(|r| {
                    r.running_image = Some(image.to_owned());
                    if let JobTarget::Swarm(s) = &mut r.target {
                        s.replicas_updated = Some(count.running_image as u64);
                    }
                });
                self.output.note(&format!(
                    "{} of {} task(s) run {image}",
                    count.running_image, count.desired
                ));
            }
            Err(e) => self
                .output
                .note(&format!("(the tasks could not be counted: {e})")),
        }
        Completion {
            state: JobState::Succeeded,
            error: None,
        }
    }
}
