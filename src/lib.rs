//! delivery-hook: a signed HTTP endpoint that lets CI pipelines redeploy a
//! docker compose service on the host it runs on, under a per-project
//! policy, without SSH keys in the pipeline and without polling a registry.
//!
//! A request names a container; its HMAC signature is checked against the
//! keys of the projects allowed to touch that container; the container's
//! compose labels say which project, files and service to run
//! `compose pull` + `up -d` (or `up -d --build`) for; a job runs it, one at a
//! time per service, and reports whether the service came up.
//!
//! # Layout
//!
//! - [`cli`]: the command line; `serve`, `check`, `openapi`, `sign`, `trigger`.
//! - [`serve`]: assembling a running gateway: store, jobs, API, shutdown.
//! - [`api`]: everything HTTP: the accept loop and its limits (`api::server`),
//!   the operations, the signed-request extractors and the OpenAPI document;
//!   the only code that knows poem or hyper.
//! - [`gateway`]: the decisions behind each request, in order, and the audit log.
//! - [`policy`]: `delivery.toml` to a compiled, validated policy; pure after loading.
//! - [`admission`]: authentication, replay, throttling, client addresses and
//!   bounded counts: the pure pieces of admitting a request.
//! - [`jobs`]: queueing, per-service serialisation, workers, the durable store.
//! - [`docker`]: the only code that talks to the engine or starts processes.
//! - [`oidc`]: OpenID Connect tokens from CI: their verification and the
//!   issuers' key sets.
//! - [`logging`]: text or JSON log lines on stderr, through a writer thread.
//! - [`metrics`]: counters for `GET /metrics` (OpenMetrics text).
//! - [`recent`]: answers reused for a short while (lookups, resolved paths).
//! - [`names`]: validated names; text becomes one of these once, at the edge.
//! - [`privilege`]: dropping root when started as root in the container image.
//! - [`trigger_client`]: the `sign` and `trigger` commands (the CI side).

pub mod api;
pub mod auth;
pub mod catalogue;
pub mod cli;
pub mod client_addr;
pub mod clock;
pub mod docker;
pub mod gateway;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod outbound;
pub mod policy;
pub mod privilege;
pub mod recent;
pub mod serve;
pub mod slots;
pub mod trigger_client;

/// An error and its causes, one line, outermost first.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
