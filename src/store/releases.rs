//! The releases table: each deploy that succeeded, per service, kept to the
//! policy's `release_history` whatever the jobs table keeps.

use rusqlite::{Connection, params};

use super::StoreError;
use crate::names::JobId;
use crate::record::{JobRecord, JobState, JobTarget, Requester};

/// One release of a service: the image a job that succeeded left running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The job that made it.
    pub job: JobId,
    /// The policy project that asked.
    pub project: String,
    /// The service's key: `<compose project>/<service>`, or
    /// `@swarm/<service>` (compose project names never start with `@`).
    pub service: String,
    /// The image it left running: a compose service's image id, or the
    /// digest reference a Swarm job deployed.
    pub image: String,
    /// Its repository digest, `repository@sha256:…`, where it has one.
    pub digest: Option<String>,
    pub requested_by: Option<Requester>,
    /// When the job ended, Unix milliseconds.
    pub at_ms: u64,
}

/// The key releases of a compose service are kept under.
pub fn compose_key(compose_project: &str, service: &str) -> String {
    format!("{compose_project}/{service}")
}

/// The key releases of a Swarm service are kept under.
pub fn swarm_key(service: &str) -> String {
    format!("@swarm/{service}")
}

impl Release {
    /// The release a job makes: only one that succeeded, with an image.
    pub fn of(record: &JobRecord) -> Option<Release> {
        if record.state != JobState::Succeeded {
            return None;
        }
        let image = record.running_image.clone()?;
        let (service, digest) = match &record.target {
            JobTarget::Compose(c) => (
                compose_key(&c.compose_project, &c.service),
                record.running_digest.clone(),
            ),
            JobTarget::Swarm(s) => (swarm_key(&s.name), swarm_digest(&image)),
        };
        Some(Release {
            job: record.id,
            project: record.project.clone(),
            service,
            image,
            digest,
            requested_by: record.requested_by.clone(),
            at_ms: record.finished_at_ms.unwrap_or(record.created_at_ms),
        })
    }
}

/// `repository@sha256:…` of a Swarm job's `repository:tag@sha256:…`.
fn swarm_digest(reference: &str) -> Option<String> {
    let parsed = crate::docker::Reference::parse(reference)?;
    parsed.pin().map(|pin| pin.to_string())
}

/// Records `release` and drops its service's releases beyond the newest
/// `keep`.
pub(super) fn put_release(c: &Connection, release: &Release, keep: u64) -> Result<(), StoreError> {
    let requested_by = release
        .requested_by
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    c.prepare_cached(
        "INSERT OR REPLACE INTO releases (job_id, project, service, image, digest, requested_by, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        release.job.to_string(),
        release.project,
        release.service,
        release.image,
        release.digest,
        requested_by,
        release.at_ms as i64
    ])?;
    c.prepare_cached(
        "DELETE FROM releases WHERE service = ?1 AND job_id IN (
             SELECT job_id FROM releases WHERE service = ?1
             ORDER BY at DESC, job_id DESC LIMIT -1 OFFSET ?2)",
    )?
    .execute(params![release.service, keep as i64])?;
    Ok(())
}

/// A service's releases (only `project`'s, when given), newest first, at
/// most `limit`.
pub(super) fn list(
    c: &Connection,
    project: Option<&str>,
    service: &str,
    limit: usize,
) -> Result<Vec<Release>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT job_id, project, service, image, digest, requested_by, at FROM releases
         WHERE (?1 IS NULL OR project = ?1) AND service = ?2
         ORDER BY at DESC, job_id DESC LIMIT ?3",
    )?;
    let rows = statement
        .query_map(params![project, service, limit as i64], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, i64>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .filter_map(|(job, project, service, image, digest, by, at)| {
            let job = JobId::parse(&job)?;
            Some((job, project, service, image, digest, by, at))
        })
        .map(|(job, project, service, image, digest, by, at)| {
            Ok(Release {
                job,
                project,
                service,
                image,
                digest,
                requested_by: by.map(|t| serde_json::from_str(&t)).transpose()?,
                at_ms: at.max(0) as u64,
            })
        })
        .collect()
}
