//! Reads of jobs: `GET /jobs/{id}` and `GET /jobs`, signed over the request
//! target, for the project named by `X-Project`.

use std::time::Duration;

use super::{Code, Gateway, JobPage, ReadCall, Refusal, check_wait, named_project};
use crate::auth::signature::AuthError;
use crate::names::JobId;
use crate::policy::{Policy, Project};
use crate::record::JobRecord;
use crate::store::Cursor;

impl Gateway {
    /// Authenticates a read (`GET /jobs…`): `X-Project` is required and the
    /// request target is the signed message, or a CI token must be admitted
    /// by one of the project's rules. Reads change nothing, so a token may
    /// read as often as it is valid.
    pub(super) async fn authenticate_read(
        &self,
        policy: &Policy,
        call: &ReadCall<'_>,
    ) -> Result<String, Refusal> {
        self.check_throttle(policy, call.client)?;
        let fail = |e: AuthError| self.auth_failed(policy, call.client, e);
        let named = || {
            let name = call
                .headers
                .project
                .ok_or(AuthError::MissingProject)
                .map_err(fail)?;
            Ok::<_, Refusal>((name, named_project(policy, name).map_err(fail)?))
        };
        if let Some(token) = call.headers.token() {
            let token = self.verify_token(policy, call.client, token).await?;
            let (name, project) = named()?;
            let candidates: Vec<&Project> = project.into_iter().collect();
            self.token_project(policy, call.client, &candidates, &token)?;
            return Ok(name.to_owned());
        }
        let signed = self.signed_headers(policy, call.headers).map_err(fail)?;
        let (name, project) = named()?;
        let candidates: Vec<&Project> = project.into_iter().collect();
        signed
            .signer(&candidates, call.target.as_bytes())
            .map_err(fail)?;
        Ok(name.to_owned())
    }

    /// `GET /jobs/{id}`: a job of the authenticated project.
    pub async fn job(
        &self,
        call: ReadCall<'_>,
        id: &str,
        wait_secs: Option<u64>,
    ) -> Result<JobRecord, Refusal> {
        let policy = self.policy();
        let result = async {
            let project = self.authenticate_read(&policy, &call).await?;
            if let Some(wait) = wait_secs {
                check_wait(&policy, wait)?;
            }
            let not_found =
                || Refusal::new(Code::JobNotFound, "no job with this id for this project");
            let id = JobId::parse(id).ok_or_else(not_found)?;
            let job = match wait_secs.filter(|w| *w > 0) {
                Some(wait) => {
                    let _waiting = self.wait_slot(&policy, &project)?;
                    self.jobs.wait(id, Duration::from_secs(wait)).await
                }
                None => self.jobs.get(id).await,
            }
            .map_err(|e| Refusal::store(&e))?;
            job.filter(|j| j.project == project).ok_or_else(not_found)
        }
        .await;
        self.audit.read(
            &call,
            "getJob",
            result.as_ref().map(|_| ()),
            self.clock.now(),
        );
        result
    }

    /// `GET /jobs`: a page of the authenticated project's jobs, newest first.
    pub async fn list_jobs(
        &self,
        call: ReadCall<'_>,
        limit: usize,
        before: Option<&str>,
    ) -> Result<JobPage, Refusal> {
        let policy = self.policy();
        let result = async {
            let project = self.authenticate_read(&policy, &call).await?;
            let cursor = match before {
                None => None,
                Some(text) => Some(parse_cursor(text).ok_or_else(|| {
                    Refusal::new(
                        Code::InvalidParameter,
                        "`before` is not a cursor this gateway issued",
                    )
                })?),
            };
            let jobs = self
                .jobs
                .list(&project, limit, cursor)
                .await
                .map_err(|e| Refusal::store(&e))?;
            let next = (jobs.len() == limit)
                .then(|| jobs.last().map(|j| format!("{}-{}", j.created_at_ms, j.id)))
                .flatten();
            Ok(JobPage { jobs, next })
        }
        .await;
        self.audit.read(
            &call,
            "listJobs",
            result.as_ref().map(|_| ()),
            self.clock.now(),
        );
        result
    }
}

/// `<created_at_ms>-<id>`. A time beyond any representable one means
/// "from the newest", as a cursor from the far future would.
fn parse_cursor(text: &str) -> Option<Cursor> {
    let (at, id) = text.split_once('-')?;
    if at.is_empty() || at.len() > 20 || !at.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Cursor {
        created_at_ms: at.parse().unwrap_or(i64::MAX as u64).min(i64::MAX as u64),
        id: JobId::parse(id)?,
    })
}
