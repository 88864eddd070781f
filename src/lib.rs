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
//! The vocabulary, which the rest reads and which reads none of it:
//! - [`names`]: validated names; text becomes one of these once, at the edge.
//! - [`policy`]: `delivery.toml` validated into a compiled policy; pure after
//!   loading; held in force by one `PolicyCell`.
//! - [`catalogue`]: every refusal code, with its kind and its operations.
//! - [`record`]: what a job deploys, carried whole from admission to its
//!   record, and the record as stored and reported.
//! - [`clock`]: the one clock every part reads, which tests move.
//!
//! Serving a request, in the order it passes:
//! - [`api`]: everything HTTP: the accept loop and its limits (`api::server`),
//!   the operations, the signed-request extractors, the wire types and the
//!   OpenAPI document; the only code that knows poem or hyper.
//! - [`client_addr`]: the client's address behind trusted proxies.
//! - [`slots`]: bounded counts per key (connections per address, waiters
//!   per project).
//! - [`auth`]: signatures, CI tokens (`auth::oidc`), the replay memory and
//!   the throttle.
//! - [`gateway`]: the decisions behind each request, in order, and the audit log.
//! - [`sessions`]: the web page's viewers' signed sessions and their generation.
//! - [`jobs`]: queueing, per-service serialisation, workers, the self-update.
//! - [`store`]: the durable state in SQLite: jobs, replay entries, the
//!   notification outbox, releases.
//! - [`docker`]: the only code that talks to the engine or starts processes,
//!   the compose judge (`docker::model`) among it.
//! - [`notifications`]: deploy results told to webhooks, Slack and mail.
//!
//! Around them:
//! - [`cli`]: the command line; `serve`, `check`, `openapi`, `sign`, `trigger`.
//! - [`serve`]: assembling a running gateway: store, jobs, API, shutdown.
//! - [`trigger_client`]: the `sign` and `trigger` commands (the CI side), to one
//!   host or a fleet, and as the GitHub Action.
//! - [`outbound`]: the HTTP client for requests the gateway makes itself.
//! - [`logging`]: text or JSON log lines on stderr, through a writer thread.
//! - [`metrics`]: counters for `GET /metrics` (OpenMetrics text).
//! - [`recent`]: answers reused for a short while (lookups, resolved paths).
//! - [`privilege`]: dropping root when started as root in the container image.

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
pub mod notifications;
pub mod outbound;
pub mod policy;
pub mod privilege;
pub mod recent;
pub mod record;
pub mod serve;
pub mod sessions;
pub mod slots;
pub mod store;
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
