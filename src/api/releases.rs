//! `GET /releases` and `POST /rollback`.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::{ApiResponse, OpenApi};

use super::ApiTag;
use super::deploy::{DeployResponse, deploy};
use super::jobs::read_call;
use super::signed::{SignedBody, SignedTarget};
use super::wire::{
    Answer, JsonBody, ProblemJson, ReleaseList, RollbackRequest, operation, refusal_responses,
};
use crate::gateway::{Code, Gateway, NamedTarget, Refusal};
use crate::names::{Action, ContainerName, SwarmServiceName};

#[derive(ApiResponse)]
pub enum ReleasesResponse {
    /// The project's releases of the service, newest first, at most the
    /// server's `release_history`.
    #[oai(status = 200)]
    Ok(JsonBody<ReleaseList>),
    /// `container_name` or `service_name` is not valid.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Authentication failed (see `getJob`); `X-Project` is required here.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemJson),
    /// The service is outside the project's policy, as for a deploy.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemJson),
    /// No such container or service, as for a deploy; or the query names
    /// not exactly one of them.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// The container's labels do not name a compose service, or the engine
    /// is not a Swarm manager.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// Too many failed authentications from this address; see `Retry-After`.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(ProblemJson, #[oai(header = "Retry-After")] u64),
    /// The gateway cannot answer now; see `Retry-After`.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson, #[oai(header = "Retry-After")] u64),
}

refusal_responses!(
    ReleasesResponse,
    plain {
        Unauthenticated => Unauthorized,
        Forbidden => Forbidden,
        NotFound => NotFound,
        Undeployable => Unprocessable,
    },
    retry { RateLimited => TooManyRequests, Unavailable => Unavailable },
    otherwise BadRequest,
);

/// The service a read names: exactly one of the two parameters.
fn named(container: Option<String>, service: Option<String>) -> Result<NamedTarget, Refusal> {
    let invalid = |why: String| Refusal::new(Code::InvalidParameter, why);
    match (container, service) {
        (Some(name), None) => ContainerName::parse(&name)
            .map(NamedTarget::Container)
            .map_err(|e| invalid(format!("`container_name` {e}"))),
        (None, Some(name)) => SwarmServiceName::parse(&name)
            .map(NamedTarget::Service)
            .map_err(|e| invalid(format!("`service_name` {e}"))),
        // Both are optional to the document, which cannot say "one of
        // two parameters": a query naming no one service names none.
        _ => Err(Refusal::new(
            Code::ServiceNotNamed,
            "no one service is named: send either `container_name` or `service_name`",
        )),
    }
}

pub struct ReleasesApi;

#[OpenApi(tag = "ApiTag::Releases")]
impl ReleasesApi {
    /// List a service's releases
    ///
    /// Every deploy of the service by the authenticated project that ended
    /// `succeeded`, newest first, kept per service to the server's
    /// `release_history` whatever the job history keeps. Signed like
    /// `getJob`.
    #[oai(path = "/releases", method = "get", operation_id = "listReleases")]
    async fn list_releases(
        &self,
        gateway: Data<&Arc<Gateway>>,
        request: &Request,
        signed: SignedTarget<'_>,
        /// A container of the compose service.
        #[oai(validator(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$", max_length = 255))]
        container_name: Query<Option<String>>,
        /// A Swarm service.
        #[oai(validator(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$", max_length = 255))]
        service_name: Query<Option<String>>,
    ) -> Answer<ReleasesResponse, operation::ListReleases> {
        let call = read_call(&gateway, request, signed);
        let result = match named(container_name.0, service_name.0) {
            Ok(target) => gateway.list_releases(call, target).await,
            Err(refusal) => Err(refusal),
        };
        match result {
            Ok(releases) => Answer::new(ReleasesResponse::Ok(JsonBody(ReleaseList {
                releases: releases.into_iter().map(Into::into).collect(),
            }))),
            Err(refusal) => refusal.into(),
        }
    }

    /// Roll a service back to a release
    ///
    /// Deploys a release of the service again: `to` is `previous` (the
    /// newest release whose image is not the one running) or the job id of
    /// a release. A release with a repository digest is deployed as a pin;
    /// one without (a `/build`) by its image id while the host still has
    /// it. It is a pull in every other way (policy, health gate, automatic
    /// rollback, notifications, `wait`, answers): the job's `action` is
    /// `pull`, and `restored` names the release. Signed like
    /// `pullContainer`.
    #[oai(path = "/rollback", method = "post", operation_id = "rollbackService")]
    async fn rollback(
        &self,
        gateway: Data<&Arc<Gateway>>,
        request: &Request,
        /// Hold the response up to this many seconds until the job ends,
        /// as for `pullContainer`.
        #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
        wait: Query<Option<u32>>,
        body: SignedBody<'_, RollbackRequest>,
    ) -> Answer<DeployResponse, operation::Rollback> {
        deploy(&gateway, request, (Action::Pull, true), wait.0, body).await
    }
}
