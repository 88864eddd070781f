//! `GET /healthz` and `GET /readyz`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTag;
use super::wire::{Answer, JsonBody, Problem, ProblemJson, operation};
use crate::gateway::{Code, Gateway, Refusal};

/// A health answer.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
    /// On `/readyz`: whether the engine is a Swarm manager, which alone
    /// can update Swarm services.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_manager: Option<bool>,
    /// On `/readyz`: the compose tool jobs run, absent when none answers
    /// (compose deploys then fail).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeInfo>,
}

/// The compose tool found on the host.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ComposeInfo {
    /// `v1` (`docker-compose`) or `v2` (`docker compose`), from the version;
    /// `unknown` for a command that does not tell its version.
    pub tool: String,
    /// What the tool's `version --short` printed, e.g. `2.26.1`.
    pub version: String,
    /// The command run, e.g. `docker compose`.
    pub command: String,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The process serves requests.
    #[oai(status = 200)]
    Ok(JsonBody<Health>),
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The Docker engine answers; deploys can run.
    #[oai(status = 200)]
    Ready(JsonBody<Health>),
    /// The Docker engine does not answer.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson, #[oai(header = "Retry-After")] u64),
}

impl From<Refusal> for ReadyResponse {
    fn from(r: Refusal) -> Self {
        let retry_after = r.retry_after.unwrap_or(1);
        Self::Unavailable(ProblemJson(Problem::from(&r)), retry_after)
    }
}

pub struct HealthApi;

#[OpenApi(tag = "ApiTag::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process serves requests. Unauthenticated.
    #[oai(path = "/healthz", method = "get", operation_id = "getHealth")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(JsonBody(Health {
            status: "ok".into(),
            swarm_manager: None,
            compose: None,
        }))
    }

    /// Readiness
    ///
    /// 200 when the Docker engine answers, else 503; says which compose
    /// tool jobs run. Unauthenticated.
    #[oai(path = "/readyz", method = "get", operation_id = "getReadiness")]
    async fn readyz(
        &self,
        gateway: Data<&Arc<Gateway>>,
    ) -> Answer<ReadyResponse, operation::Readiness> {
        match gateway.engine().ping().await {
            Ok(()) => Answer::new(ReadyResponse::Ready(JsonBody(Health {
                status: "ready".into(),
                swarm_manager: gateway.engine().is_swarm_manager().await.ok(),
                compose: match gateway.engine().compose_tool().await {
                    Ok(found) => Some(ComposeInfo {
                        tool: found.generation().into(),
                        version: found.version,
                        command: found.argv.join(" "),
                    }),
                    Err(e) => {
                        tracing::warn!("{e}");
                        None
                    }
                },
            }))),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                Refusal::new(Code::EngineUnavailable, "the Docker engine does not answer")
                    .retry_after(5)
                    .into()
            }
        }
    }
}
