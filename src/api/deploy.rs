//! `POST /pull` and `POST /build`.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::{ApiResponse, OpenApi};

use super::signed::SignedBody;
use super::wire::{
    Answer, BuildRequest, Job, JsonBody, ProblemJson, PullRequest, operation, refusal_responses,
};
use super::{ApiTag, client_of};
use crate::gateway::{DeployCall, DeployOutcome, Gateway};
use crate::names::Action;
use crate::record::JobState;

/// The answer to a deploy request.
#[derive(ApiResponse)]
pub enum DeployResponse {
    /// With `wait`: the job succeeded. Without `wait`: this request was seen
    /// before and its job has finished (in any state); the body says which.
    #[oai(status = 200)]
    Finished(JsonBody<Job>),
    /// The job is queued or running. Follow it with `GET /jobs/{id}` (the
    /// `Location` header), or send the request with `wait`.
    #[oai(status = 202)]
    Accepted(JsonBody<Job>, #[oai(header = "Location")] String),
    /// With `wait`: the job failed, timed out, was interrupted, or was
    /// rolled back (`rolled_back`: the new version did not come up and the
    /// previous image runs again). The body is the job; `error` says why,
    /// `rollback` what the rollback did, and `output` holds compose's output.
    #[oai(status = 502)]
    JobFailed(JsonBody<Job>),
    /// The body, a name in it, `image` or `wait` is not valid.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Authentication failed; `code` names the rule (for a bearer token,
    /// `invalid_token` with the failed check in `rule`), never whether a
    /// project or container exists.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemJson),
    /// Authenticated, but the project may not do this.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemJson),
    /// Authenticated and allowed, but there is no such container, service,
    /// or (for a replayed request) job.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// The body did not arrive within the request timeout.
    #[oai(status = 408, content_type = "application/problem+json")]
    RequestTimeout(ProblemJson),
    /// The body is larger than the server's `max_body_bytes`.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(ProblemJson),
    /// The body is not sent as JSON.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(ProblemJson),
    /// The container or service exists but cannot be deployed from here.
    /// For compose files, mount them into the gateway at the same absolute
    /// path as on the host.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// A bound on this address or project was reached; see `Retry-After`.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(ProblemJson, #[oai(header = "Retry-After")] u64),
    /// The gateway cannot take the request now; nothing was run. See
    /// `Retry-After`.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson, #[oai(header = "Retry-After")] u64),
}

refusal_responses!(
    DeployResponse,
    plain {
        Invalid => BadRequest,
        Unauthenticated => Unauthorized,
        Forbidden => Forbidden,
        NotFound => NotFound,
        BodyTimeout => RequestTimeout,
        BodyTooLarge => PayloadTooLarge,
        NotJson => UnsupportedMediaType,
        Undeployable => Unprocessable,
    },
    retry { RateLimited => TooManyRequests, Unavailable => Unavailable },
    otherwise BadRequest,
);

impl From<DeployOutcome> for DeployResponse {
    /// 202 while the job is queued or running; 200 once it succeeded, or for
    /// any final state when the caller did not wait; 502 when a waited-for
    /// job failed.
    fn from(o: DeployOutcome) -> Self {
        let state = o.job.state;
        let job = Job::from_record(o.job, o.replayed, o.coalesced);
        if !state.is_final() {
            let location = format!("/jobs/{}", job.id);
            Self::Accepted(JsonBody(job), location)
        } else if state == JobState::Succeeded || !o.waited {
            Self::Finished(JsonBody(job))
        } else {
            Self::JobFailed(JsonBody(job))
        }
    }
}

pub struct DeployApi;

/// Every deploy operation: they differ in the action, and a rollback in
/// what its body names.
pub(super) async fn deploy<T, O: operation::Marker>(
    gateway: &Gateway,
    request: &Request,
    (action, rollback): (Action, bool),
    wait: Option<u32>,
    body: SignedBody<'_, T>,
) -> Answer<DeployResponse, O> {
    let policy = gateway.policy();
    let timeout = policy.server.request_timeout();
    let call = DeployCall {
        action,
        rollback,
        client: client_of(&policy, request),
        headers: body.headers,
        wait_secs: wait.map(u64::from),
    };
    drop(policy);
    match gateway
        .deploy(call, |limit| body.read(limit, timeout))
        .await
    {
        Ok(outcome) => Answer::new(outcome.into()),
        Err(refusal) => refusal.into(),
    }
}

#[OpenApi(tag = "ApiTag::Deploy")]
impl DeployApi {
    /// Pull and recreate a service
    ///
    /// Runs `compose pull <service>` then `compose up -d <service>` for the
    /// compose service of the named container, as its labels record it.
    /// The request must be signed (see the API description).
    #[oai(path = "/pull", method = "post", operation_id = "pullContainer")]
    async fn pull(
        &self,
        gateway: Data<&Arc<Gateway>>,
        request: &Request,
        /// Hold the response up to this many seconds until the job ends
        /// (200 succeeded, 502 failed); at most the server's `max_wait_secs`
        /// (600 unless configured; never more than 86400).
        #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
        wait: Query<Option<u32>>,
        body: SignedBody<'_, PullRequest>,
    ) -> Answer<DeployResponse, operation::Pull> {
        deploy(&gateway, request, (Action::Pull, false), wait.0, body).await
    }

    /// Rebuild and recreate a service
    ///
    /// Runs `compose up -d --build <service>` for the compose service of the
    /// named container. Its build context must be visible to the gateway at
    /// the same path as on the host. Signed like `pullContainer`.
    #[oai(path = "/build", method = "post", operation_id = "buildContainer")]
    async fn build(
        &self,
        gateway: Data<&Arc<Gateway>>,
        request: &Request,
        /// Hold the response up to this many seconds until the job ends.
        #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
        wait: Query<Option<u32>>,
        body: SignedBody<'_, BuildRequest>,
    ) -> Answer<DeployResponse, operation::Build> {
        deploy(&gateway, request, (Action::Build, false), wait.0, body).await
    }
}
