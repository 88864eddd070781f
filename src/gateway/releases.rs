//! Releases: the read of a service's releases (`GET /releases`), and the
//! release a rollback (`POST /rollback`, a pull) restores.

use super::{
    Code, Gateway, NamedTarget, ReadCall, Refusal, Wanted, authorise_target, check_image,
    check_paths, project_labels,
};
use crate::docker::{ComposeTarget, ContainerFacts, ImagePin, Reference, Resolved, SwarmService};
use crate::names::{ContainerName, JobId, SwarmServiceName};
use crate::policy::Project;
use crate::record::Restored;
use crate::store::{Release, compose_key, swarm_key};

/// The most releases a service can keep (`release_history`'s bound), and
/// so the most one read returns.
pub const MAX_RELEASES: usize = 10_000;

/// Which release a rollback restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTo {
    /// The newest release whose image is not the one running.
    Previous,
    /// The release this job made.
    Job(JobId),
}

/// A rollback's body: `to` is required, and `image` is not taken (the
/// release says what runs).
pub(super) fn rollback_to(wanted: &Wanted) -> Result<RollbackTo, Refusal> {
    let invalid = |why: &str| Refusal::new(Code::InvalidBody, why.to_owned());
    if wanted.pin.is_some() {
        return Err(invalid(
            "a rollback deploys the release `to` names; it takes no `image`",
        ));
    }
    match wanted.to.as_deref() {
        None => Err(invalid(
            "a rollback needs `to`: \"previous\" or the id of the job that made the release",
        )),
        Some("previous") => Ok(RollbackTo::Previous),
        Some(text) => JobId::parse(text)
            .map(RollbackTo::Job)
            .ok_or_else(|| invalid("`to` is neither \"previous\" nor a job id (32 hex digits)")),
    }
}

fn not_restorable(why: &str) -> Refusal {
    Refusal::new(Code::ReleaseNotRestorable, why.to_owned())
}

/// A release restored by its repository digest, through the pinned path.
pub(super) fn by_digest(release: Release) -> Result<(ImagePin, Restored), Refusal> {
    let pin = release
        .digest
        .as_deref()
        .and_then(|d| ImagePin::parse(d).ok())
        .ok_or_else(|| not_restorable("the release has no repository digest to deploy"))?;
    let restored = Restored {
        job: release.job,
        image: pin.to_string(),
    };
    Ok((pin, restored))
}

/// Picks the release `to` names among a service's releases, newest first.
fn choose(releases: Vec<Release>, to: &RollbackTo, running: Option<&str>) -> Option<Release> {
    releases.into_iter().find(|r| match to {
        RollbackTo::Previous => Some(r.image.as_str()) != running,
        RollbackTo::Job(id) => r.job == *id,
    })
}

impl Gateway {
    /// The container with exactly this name, or 404.
    pub(super) async fn find_facts(&self, name: &ContainerName) -> Result<ContainerFacts, Refusal> {
        self.engine
            .find_container(name)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "engine lookup failed");
                Refusal::engine(&e)
            })?
            .ok_or_else(|| {
                Refusal::new(
                    Code::ContainerNotFound,
                    "no container with this name exists on the host",
                )
            })
    }

    /// The Swarm service with exactly this name, on an engine that is a
    /// manager, or the refusal.
    pub(super) async fn find_service(
        &self,
        name: &SwarmServiceName,
    ) -> Result<SwarmService, Refusal> {
        let engine_failed = |e: crate::docker::EngineError| {
            tracing::warn!(error = %e, "engine lookup failed");
            Refusal::engine(&e)
        };
        if !self
            .engine
            .is_swarm_manager()
            .await
            .map_err(engine_failed)?
        {
            return Err(Refusal::new(
                Code::NotSwarmManager,
                "the gateway's Docker engine is not a Swarm manager, so it cannot update services",
            ));
        }
        self.engine
            .swarm_service(name)
            .await
            .map_err(engine_failed)?
            .ok_or_else(|| {
                Refusal::new(
                    Code::ServiceNotFound,
                    "no Swarm service with this name exists",
                )
            })
    }

    /// The release `to` names among the project's releases of `service`.
    pub(super) async fn release_to_restore(
        &self,
        project: &Project,
        service: &str,
        to: &RollbackTo,
        running: Option<&str>,
    ) -> Result<Release, Refusal> {
        let releases = self
            .jobs
            .store()
            .releases(Some(project.name.as_str()), service, MAX_RELEASES)
            .await
            .map_err(|e| Refusal::store(&e))?;
        choose(releases, to, running).ok_or_else(|| {
            Refusal::new(
                Code::ReleaseNotFound,
                match to {
                    RollbackTo::Previous => {
                        "the service has no release other than the image it runs"
                    }
                    RollbackTo::Job(_) => "the service has no release made by this job",
                },
            )
        })
    }

    /// What a rollback of a compose service deploys: the release's digest
    /// as a pin (judged as a pin is), or its image id while the host has
    /// that image and the service's reference is a tag that can name it.
    pub(super) async fn compose_restore(
        &self,
        project: &Project,
        facts: &ContainerFacts,
        target: &ComposeTarget,
        to: &RollbackTo,
    ) -> Result<(Option<ImagePin>, Option<Restored>), Refusal> {
        let running = self
            .engine
            .service_containers(target)
            .await
            .map_err(|e| Refusal::engine(&e))?
            .into_iter()
            .next()
            .map(|c| c.image);
        let key = compose_key(target.project.as_str(), target.service.as_str());
        let release = self
            .release_to_restore(project, &key, to, running.as_deref())
            .await?;
        if release.digest.is_some() {
            let (pin, restored) = by_digest(release)?;
            let compose_repository = Reference::parse(&facts.image_reference).map(|r| r.repository);
            check_image(project, &pin, compose_repository)?;
            return Ok((Some(pin), Some(restored)));
        }
        let on_host = self
            .engine
            .repo_digests(&release.image)
            .await
            .map_err(|e| Refusal::engine(&e))?
            .is_some();
        if !on_host {
            return Err(not_restorable(
                "the release has no repository digest, and its image is no longer on the host",
            ));
        }
        if Reference::parse(&facts.image_reference).is_none_or(|r| r.digest.is_some()) {
            return Err(not_restorable(
                "the service runs a pinned image, whose reference cannot be pointed at the release's image",
            ));
        }
        // The tag moved back is one the release itself ran under: a model
        // that now names another image (another team's tag, say) cannot
        // have it pointed at an image of this project's choosing.
        let ran_under = self
            .jobs
            .get(release.job)
            .await
            .map_err(|e| Refusal::store(&e))?
            .and_then(|r| r.compose().and_then(|c| c.running_reference.clone()));
        if ran_under.as_deref() != Some(facts.image_reference.as_str()) {
            return Err(not_restorable(
                "the release did not run under the image reference the service names now (or its job is no longer kept), and only that reference's own tag is pointed back at a release's image",
            ));
        }
        let restored = Restored {
            job: release.job,
            image: release.image,
        };
        Ok((None, Some(restored)))
    }

    /// `GET /releases`: the authenticated project's releases of the named
    /// service, newest first. The service is looked up as a deploy looks
    /// it up, so it is refused as a deploy would be.
    pub async fn list_releases(
        &self,
        call: ReadCall<'_>,
        named: NamedTarget,
    ) -> Result<Vec<Release>, Refusal> {
        let policy = self.policy();
        let result = async {
            let name = self.authenticate_read(&policy, &call).await?;
            let project = policy.project(&name).ok_or_else(|| {
                Refusal::new(
                    Code::SignatureMismatch,
                    "the project is no longer in the policy",
                )
            })?;
            authorise_target(&policy, project, &named)?;
            let key = match &named {
                NamedTarget::Container(container) => {
                    let facts = self.find_facts(container).await?;
                    let labels = project_labels(project, &facts, self.jobs.files())?;
                    let Resolved { target, real } = self.resolve(labels).await?;
                    check_paths(project, &real)?;
                    compose_key(target.project.as_str(), target.service.as_str())
                }
                NamedTarget::Service(service) => {
                    self.find_service(service).await?;
                    swarm_key(service.as_str())
                }
            };
            self.jobs
                .store()
                .releases(Some(&name), &key, MAX_RELEASES)
                .await
                .map_err(|e| Refusal::store(&e))
        }
        .await;
        self.audit.read(
            &call,
            "listReleases",
            result.as_ref().map(|_| ()),
            self.clock.now(),
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(job: JobId, image: &str) -> Release {
        Release {
            job,
            project: "a".into(),
            service: "p/web".into(),
            image: image.into(),
            digest: None,
            requested_by: None,
            at_ms: 1,
        }
    }

    #[test]
    fn previous_is_the_newest_release_of_another_image() {
        let ids: Vec<JobId> = (0..4).map(|_| JobId::random()).collect();
        let newest_first = vec![
            release(ids[0], "sha256:c"),
            release(ids[1], "sha256:c"),
            release(ids[2], "sha256:b"),
            release(ids[3], "sha256:a"),
        ];
        let pick = |to, running| choose(newest_first.clone(), &to, running).map(|r| r.job);
        assert_eq!(pick(RollbackTo::Previous, Some("sha256:c")), Some(ids[2]));
        assert_eq!(pick(RollbackTo::Previous, Some("sha256:x")), Some(ids[0]));
        assert_eq!(
            pick(RollbackTo::Job(ids[3]), Some("sha256:c")),
            Some(ids[3])
        );
        assert_eq!(pick(RollbackTo::Job(JobId::random()), None), None);
        let one = vec![release(ids[0], "sha256:c")];
        assert_eq!(choose(one, &RollbackTo::Previous, Some("sha256:c")), None);
    }
}
