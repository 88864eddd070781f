//! `GET /jobs/{id}` and `GET /jobs`.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, OpenApi};

use super::signed::SignedTarget;
use super::wire::{Answer, Job, JobList, JsonBody, ProblemJson, operation, refusal_responses};
use super::{ApiTag, client_of};
use crate::gateway::{Gateway, ReadCall};

/// The most jobs one page lists.
const MAX_PAGE: u32 = 100;

// Built once per request and moved straight into the body: boxing the large
// variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(ApiResponse)]
pub enum JobResponse {
    /// The job, in whatever state it is.
    #[oai(status = 200)]
    Ok(JsonBody<Job>),
    /// The id is not 32 hex digits, or `wait` is out of range.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Authentication failed (see `pullContainer`); `X-Project` is required here.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemJson),
    /// Authenticated by a CI token that the project's rules do not admit.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemJson),
    /// No job with this id belongs to the authenticated project.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// A bound on this address or project was reached; see `Retry-After`.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(ProblemJson, #[oai(header = "Retry-After")] u64),
    /// The gateway cannot answer now; see `Retry-After`.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson, #[oai(header = "Retry-After")] u64),
}

refusal_responses!(
    JobResponse,
    plain { Unauthenticated => Unauthorized, Forbidden => Forbidden, NotFound => NotFound },
    retry { RateLimited => TooManyRequests, Unavailable => Unavailable },
    otherwise BadRequest,
);

#[derive(ApiResponse)]
pub enum ListResponse {
    /// A page of the project's jobs, newest first.
    #[oai(status = 200)]
    Ok(JsonBody<JobList>),
    /// `limit` or `before` is not valid.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Authentication failed (see `getJob`).
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemJson),
    /// Authenticated by a CI token that the project's rules do not admit.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemJson),
    /// Too many failed authentications from this address; see `Retry-After`.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(ProblemJson, #[oai(header = "Retry-After")] u64),
    /// The gateway cannot answer now; see `Retry-After`.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson, #[oai(header = "Retry-After")] u64),
}

refusal_responses!(
    ListResponse,
    plain { Unauthenticated => Unauthorized, Forbidden => Forbidden },
    retry { RateLimited => TooManyRequests, Unavailable => Unavailable },
    otherwise BadRequest,
);

/// A read as the gateway takes it.
pub(super) fn read_call<'a>(
    gateway: &Gateway,
    request: &Request,
    signed: SignedTarget<'a>,
) -> ReadCall<'a> {
    ReadCall {
        client: client_of(&gateway.policy(), request),
        headers: signed.headers,
        target: signed.target,
    }
}

pub struct JobsApi;

#[OpenApi(tag = "ApiTag::Jobs")]
impl JobsApi {
    /// Get a job
    ///
    /// One job of the authenticated project. Signed over the request target
    /// (path and query exactly as sent, e.g. `/jobs/5f0c…?wait=30`) followed
    /// by the X-Timestamp string; `X-Project` is required.
    #[oai(path = "/jobs/:id", method = "get", operation_id = "getJob")]
    async fn get_job(
        &self,
        gateway: Data<&Arc<Gateway>>,
        request: &Request,
        /// The job id, 32 hex digits.
        #[oai(validator(pattern = "^[0-9a-f]{32}$"))]
        id: Path<String>,
        signed: SignedTarget<'_>,
        /// Hold the response up to this many seconds until the job ends.
        #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
        wait: Query<Option<u32>>,
    ) -> Answer<JobResponse, operation::GetJob> {
        let call = read_call(&gateway, request, signed);
        match gateway.job(call, &id, wait.0.map(u64::from)).await {
            Ok(job) => Answer::new(JobResponse::Ok(JsonBody(Job::from_record(
                job, false, false,
            )))),
            Err(refusal) => refusal.into(),
        }
    }

    /// List recent jobs
    ///
    /// The authenticated project's jobs, newest first. Signed like `getJob`.
    #[oai(path = "/jobs", method = "get", operation_id = "listJobs")]
    async fn list_jobs(
        &self,
        gateway: Data<&Arc<Gateway>>,
        request: &Request,
        signed: SignedTarget<'_>,
        /// Jobs per page, 1 to 100.
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// The `next_before` of the previous page.
        #[oai(validator(pattern = "^[0-9]{1,20}-[0-9a-f]{32}$"))]
        before: Query<Option<String>>,
    ) -> Answer<ListResponse, operation::ListJobs> {
        let call = read_call(&gateway, request, signed);
        let limit = limit.0.unwrap_or(20).min(MAX_PAGE) as usize;
        match gateway.list_jobs(call, limit, before.0.as_deref()).await {
            Ok(page) => Answer::new(ListResponse::Ok(JsonBody(JobList {
                jobs: page
                    .jobs
                    .into_iter()
                    .map(|j| Job::from_record(j, false, false))
                    .collect(),
                next_before: page.next,
            }))),
            Err(refusal) => refusal.into(),
        }
    }
}
