//! Docker Swarm services: what the gateway reads of a service, and how it
//! updates one, through the Engine API.
//!
//! An update pins the service to a digest the gateway resolved itself
//! through the engine's registry endpoint (`/distribution`), as the docker
//! CLI does; it sends the image's platforms on as placement, and the
//! gateway's registry credentials so that every node can pull. A digest
//! that did not change updates nothing: the engine keeps one previous
//! spec, its rollback target, and an update with an unchanged spec would
//! overwrite it.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{Platform, ServiceSpec, TaskSpecPlacement};
use bollard::query_parameters::{ListTasksOptionsBuilder, UpdateServiceOptionsBuilder};

use super::image_ref::{Reference, registry_of};
use super::{EngineError, engine::DockerEngine};

/// How often an update is sent again after "update out of sequence" (the
/// service changed between the read and the write).
const OUT_OF_SEQUENCE_RETRIES: usize = 5;

/// What the gateway reads of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmService {
    pub id: String,
    pub name: String,
    /// The spec's image, `repo:tag@sha256:…` once pinned, or as created.
    pub image: String,
    /// The engine's account of the last update, if any.
    pub update: Option<UpdateState>,
}

/// `UpdateStatus` of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateState {
    /// `updating`, `paused`, `completed`, `rollback_started`,
    /// `rollback_paused`, `rollback_completed`.
    pub state: String,
    pub started_at: Option<String>,
    pub message: Option<String>,
}

/// An image as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// `sha256:…`.
    pub digest: String,
    /// `(os, architecture)` of each platform it is built for.
    pub platforms: Vec<(String, String)>,
}

/// How many of a service's tasks run a given image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskCount {
    /// Tasks meant to run (desired state `running`).
    pub desired: usize,
    /// Of those, running with the image asked about.
    pub running_image: usize,
}

/// The reference a service is updated to: the spec's image without its old
/// digest (the tag the user deployed, or the pin's repository), with
/// `digest`. `None` when the spec's image is not a valid reference.
pub fn pinned_reference(current: &str, repository: Option<&str>, digest: &str) -> Option<String> {
    let parsed = Reference::parse(current)?;
    Some(match (repository, parsed.tag) {
        (Some(repository), _) => format!("{repository}@{digest}"),
        (None, Some(tag)) => format!("{}:{tag}@{digest}", parsed.repository),
        (None, None) => format!("{}@{digest}", parsed.repository),
    })
}

/// The reference to resolve for an unpinned update: the spec's image with
/// its digest stripped (so the tag is asked for again).
pub fn unpinned_reference(current: &str) -> Option<String> {
    let parsed = Reference::parse(current)?;
    Some(match parsed.tag {
        Some(tag) => format!("{}:{tag}", parsed.repository),
        None => parsed.repository.to_owned(),
    })
}

/// The digest a spec's image is pinned to, if any.
pub fn digest_of(image: &str) -> Option<&str> {
    Reference::parse(image)?.digest
}

/// The credentials the gateway's docker client configuration holds for
/// `registry` (`auths` in `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`); none when it holds none. Credential helpers
/// are not run: a gateway takes no shell and runs no helper binaries.
pub fn credentials_for(registry: &str) -> Option<DockerCredentials> {
    use base64::Engine as _;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let entry = config.get("auths")?.get(registry)?;
    let mut credentials = DockerCredentials {
        serveraddress: Some(registry.to_owned()),
        ..Default::default()
    };
    if let Some(token) = entry.get("identitytoken").and_then(|t| t.as_str()) {
        credentials.identitytoken = Some(token.to_owned());
    }
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        credentials.username = Some(user.to_owned());
        credentials.password = Some(password.to_owned());
    }
    Some(credentials)
}

fn is_out_of_sequence(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { message, .. } if message.contains("update out of sequence"))
}

impl DockerEngine {
    pub(super) async fn is_manager(&self) -> Result<bool, EngineError> {
        let docker = self.client().await?;
        let info = super::engine::bounded(docker.info())
            .await
            .map_err(super::engine::classify)?;
        Ok(info
            .swarm
            .and_then(|s| s.control_available)
            .unwrap_or(false))
    }

    pub(super) async fn service(&self, name: &str) -> Result<Option<SwarmService>, EngineError> {
        let docker = self.client().await?;
        let found = match super::engine::bounded(docker.inspect_service(name, None)).await {
            Ok(found) => found,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(super::engine::classify(e)),
        };
        let spec = found.spec.unwrap_or_default();
        // The engine also finds services by id or id prefix; only the name counts.
        if spec.name.as_deref() != Some(name) {
            return Ok(None);
        }
        let image = spec
            .task_template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.image)
            .unwrap_or_default();
        Ok(Some(SwarmService {
            id: found.id.unwrap_or_default(),
            name: name.to_owned(),
            image,
            update: found.update_status.map(|u| UpdateState {
                state: u.state.map(|s| s.to_string()).unwrap_or_default(),
                started_at: u.started_at.map(|t| t.to_string()),
                message: u.message,
            }),
        }))
    }

    pub(super) async fn distribution_of(
        &self,
        reference: &str,
    ) -> Result<Distribution, EngineError> {
        let docker = self.client().await?;
        let repository = Reference::parse(reference).map_or(reference, |r| r.repository);
        let credentials = credentials_for(registry_of(repository));
        let found = super::engine::bounded(docker.inspect_registry_image(reference, credentials))
            .await
            .map_err(super::engine::classify)?;
        let digest = found.descriptor.digest.ok_or_else(|| {
            EngineError::Api(format!("the registry gave no digest for {reference}"))
        })?;
        Ok(Distribution {
            digest,
            platforms: found
                .platforms
                .into_iter()
                .filter_map(|p| Some((p.os?, p.architecture?)))
                .collect(),
        })
    }

    /// Sets the service's image (and the image's platforms as placement),
    /// sending the registry credentials along.
    pub(super) async fn set_service_image(
        &self,
        name: &str,
        image: &str,
        platforms: &[(String, String)],
    ) -> Result<(), EngineError> {
        let repository = Reference::parse(image).map_or(image, |r| r.repository);
        let credentials = credentials_for(registry_of(repository));
        self.update_service(name, credentials, None, |spec| {
            let template = spec.task_template.get_or_insert_with(Default::default);
            template
                .container_spec
                .get_or_insert_with(Default::default)
                .image = Some(image.to_owned());
            if !platforms.is_empty() {
                let placement = template
                    .placement
                    .get_or_insert_with(TaskSpecPlacement::default);
                placement.platforms = Some(
                    platforms
                        .iter()
                        .map(|(os, architecture)| Platform {
                            os: Some(os.clone()),
                            architecture: Some(architecture.clone()),
                        })
                        .collect(),
                );
            }
        })
        .await
    }

    /// Asks the engine to return the service to its previous spec.
    pub(super) async fn roll_back_service(&self, name: &str) -> Result<(), EngineError> {
        self.update_service(name, None, Some("previous"), |_| {})
            .await
    }

    /// Reads the service, changes its spec with `edit`, and sends it at the
    /// version read; when the service changed in between ("update out of
    /// sequence"), reads it again and retries.
    async fn update_service(
        &self,
        name: &str,
        credentials: Option<DockerCredentials>,
        rollback: Option<&str>,
        edit: impl Fn(&mut ServiceSpec),
    ) -> Result<(), EngineError> {
        let docker = self.client().await?;
        let mut attempt = 0;
        loop {
            let found = super::engine::bounded(docker.inspect_service(name, None))
                .await
                .map_err(super::engine::classify)?;
            let version = found.version.and_then(|v| v.index).unwrap_or_default();
            let mut spec = found.spec.unwrap_or_default();
            edit(&mut spec);
            let mut options = UpdateServiceOptionsBuilder::new()
                .version(i32::try_from(version).unwrap_or(i32::MAX));
            if let Some(rollback) = rollback {
                options = options.rollback(rollback);
            }
            match super::engine::bounded(docker.update_service(
                name,
                spec,
                options.build(),
                credentials.clone(),
            ))
            .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_out_of_sequence(&e) && attempt < OUT_OF_SEQUENCE_RETRIES => {
                    attempt += 1
                }
                Err(e) => return Err(super::engine::classify(e)),
            }
        }
    }

    pub(super) async fn count_tasks(
        &self,
        service_id: &str,
        image: &str,
    ) -> Result<TaskCount, EngineError> {
        let docker = self.client().await?;
        let filters = HashMap::from([
            ("service".to_string(), vec![service_id.to_string()]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        let tasks = super::engine::bounded(docker.list_tasks(Some(options)))
            .await
            .map_err(super::engine::classify)?;
        let mut count = TaskCount::default();
        for task in tasks {
            count.desired += 1;
            let running = task
                .status
                .as_ref()
                .and_then(|s| s.state)
                .is_some_and(|s| s.to_string() == "running");
            let task_image = task
                .spec
                .and_then(|s| s.container_spec)
                .and_then(|c| c.image)
                .unwrap_or_default();
            if running && task_image == image {
                count.running_image += 1;
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_keep_the_tag_and_take_the_new_digest() {
        let old = format!("reg.example.com:5000/web:v2@{D}");
        assert_eq!(
            unpinned_reference(&old).unwrap(),
            "reg.example.com:5000/web:v2"
        );
        assert_eq!(unpinned_reference("web").unwrap(), "web");
        assert_eq!(digest_of(&old), Some(D));
        assert_eq!(digest_of("web:v2"), None);
        let new = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
        assert_eq!(
            pinned_reference(&old, None, new).unwrap(),
            format!("reg.example.com:5000/web:v2@{new}")
        );
        assert_eq!(
            pinned_reference(&old, Some("reg.example.com:5000/web"), new).unwrap(),
            format!("reg.example.com:5000/web@{new}")
        );
        assert_eq!(pinned_reference("Not A Reference", None, new), None);
    }
}
