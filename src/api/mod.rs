//! The HTTP API: poem-openapi operations, the OpenAPI document, and the
//! mapping of domain outcomes to statuses. Only this module knows poem types.

mod deploy;
mod health;
mod jobs;
mod model;
mod signed;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use poem::http::{HeaderName, Method, StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use poem_openapi::{LicenseObject, OpenApiService, ServerObject, Tags};

pub use model::{DeployRequest, Job, JobList, Problem};

use crate::gateway::{Gateway, SignedHeaders};
use crate::names::Action;
use crate::policy::Policy;

#[derive(Tags)]
enum ApiTag {
    /// Redeploy a compose service.
    Deploy,
    /// Follow deploy jobs.
    Jobs,
    /// Liveness and readiness, unauthenticated.
    Health,
}

const DESCRIPTION: &str = r#"Redeploys docker compose services on this host when a CI pipeline asks, under a per-project policy.

## Signing

Every operation but the health checks is signed with one of the calling project's secrets:

- `X-Timestamp`: the current Unix time in seconds, decimal digits only. It must be within the gateway's tolerance (default 300 s) of its clock, in either direction.
- `X-Signature`: hex (either case) HMAC-SHA256, keyed with the UTF-8 bytes of the secret, over this message, optionally prefixed `sha256=`:
  - `POST`: the exact raw bytes of the request body, immediately followed by the `X-Timestamp` string;
  - `GET`: the request target (path and query exactly as sent, e.g. `/jobs/5f0c3a9e8b7d4c21a0e9f8d7c6b5a493?wait=30`), immediately followed by the `X-Timestamp` string.
- `X-Project`: the project's name; optional on `POST`, required on `GET`.

With openssl and curl:

```sh
BODY='{"container_name": "billing-web"}'
TS=$(date +%s)
SIG=$(printf '%s%s' "$BODY" "$TS" | openssl dgst -sha256 -hmac "$SECRET" | cut -d' ' -f2)
curl --fail -H 'Content-Type: application/json' -H "X-Timestamp: $TS" -H "X-Signature: $SIG" \
     -d "$BODY" "https://deploy.example.com/pull?wait=300"
```

A signed request runs at most once: sent again while its timestamp is in the window, it gets the first request's job back with `replayed: true`.

## Errors

Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code` and a human `message`. Authentication errors name the rule that failed, never whether a project or container exists.
"#;

type Api = (deploy::DeployApi, jobs::JobsApi, health::HealthApi);

fn service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (deploy::DeployApi, jobs::JobsApi, health::HealthApi),
        "delivery-hook",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
    .license(LicenseObject::new("MIT").url("https://opensource.org/license/mit"))
    .server(ServerObject::new("/").description("the gateway serving this document"))
}

/// The OpenAPI 3 document, as JSON.
pub fn document() -> String {
    service().spec()
}

/// The client address of `request` under `policy`'s trusted proxies.
pub(crate) fn client_of(policy: &Policy, request: &Request) -> IpAddr {
    let peer = request
        .remote_addr()
        .as_socket_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    // Read only when some proxy is trusted: the header is ignored otherwise.
    let forwarded = (!policy.server.trusted_proxies.is_empty())
        .then(|| {
            request
                .headers()
                .get(policy.server.client_ip_header.as_str())
        })
        .flatten()
        .and_then(|v| v.to_str().ok());
    crate::client_addr::resolve(&policy.server.trusted_proxies, peer, forwarded)
}

/// The signing headers as sent. Read from the request itself rather than
/// from the documented parameters, which treat a value that is not visible
/// ASCII as absent: such a value must be refused as malformed, not missing.
pub(crate) fn signing_headers(request: &Request) -> SignedHeaders<'_> {
    static TIMESTAMP: HeaderName = HeaderName::from_static("x-timestamp");
    static SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
    static PROJECT: HeaderName = HeaderName::from_static("x-project");
    let text = |name: &HeaderName| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or(UNREADABLE))
    };
    SignedHeaders {
        timestamp: text(&TIMESTAMP),
        signature: text(&SIGNATURE),
        project: text(&PROJECT),
    }
}

/// Stands in for a header value that is not text; it fails every check.
const UNREADABLE: &str = "\u{fffd}";

/// The methods a path answers, for the `Allow` header of a 405.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/pull" | "/build" => Some("POST"),
        "/jobs" | "/healthz" | "/readyz" | "/openapi.json" | "/metrics" => Some("GET"),
        p if p.starts_with("/jobs/") || p.starts_with("/docs") => Some("GET"),
        _ => None,
    }
}

/// Which operation a request is, for the request counter.
fn operation_of(method: &Method, path: &str) -> &'static str {
    match (method.as_str(), path) {
        ("POST", "/pull") => "pullContainer",
        ("POST", "/build") => "buildContainer",
        ("GET", "/jobs") => "listJobs",
        ("GET", p) if p.starts_with("/jobs/") => "getJob",
        ("GET", "/healthz") => "getHealth",
        ("GET", "/readyz") => "getReadiness",
        ("GET", "/openapi.json") => "openapi",
        ("GET", "/metrics") => "metrics",
        ("GET", p) if p == "/docs" || p.starts_with("/docs/") => "docs",
        _ => "other",
    }
}

/// Errors raised outside the operations (unknown path, wrong method) as problem documents.
fn routing_problem(err: poem::Error) -> Response {
    let status = err.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not accept this method".to_owned(),
        ),
        _ => ("invalid_request", err.to_string()),
    };
    model::ProblemJson(Problem::new(status.as_u16(), code, message)).into_response()
}

/// The outermost layer: deploy requests go straight to their handler,
/// routing errors become problem documents, a 405 says what is allowed, and
/// every answer is counted. One layer rather than poem's `catch_all_error`
/// and `around`, because each layer moves the request's future once more.
struct Edge<E> {
    inner: E,
    gateway: Arc<Gateway>,
    /// Whether `POST /pull` and `POST /build` are served here rather than
    /// through `inner`'s routes (the same operations, more slowly).
    deploys: bool,
}

/// The deploy action a request asks for, if it is one.
fn deploy_action(method: &Method, path: &str) -> Option<Action> {
    match (method, path) {
        (&Method::POST, "/pull") => Some(Action::Pull),
        (&Method::POST, "/build") => Some(Action::Build),
        _ => None,
    }
}

impl<E: Endpoint> Endpoint for Edge<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let path = request.uri().path();
        let operation = operation_of(request.method(), path);
        if let Some(action) = deploy_action(request.method(), path).filter(|_| self.deploys) {
            // Boxed: a refusal should not move the accepting path's state.
            let response = Box::pin(deploy::serve(&self.gateway, request, action)).await;
            self.gateway
                .metrics()
                .request(operation, response.status().as_u16());
            return Ok(response);
        }
        let allow = allowed_methods(path);
        let mut response = match self.inner.call(request).await {
            Ok(output) => output.into_response(),
            Err(err) => routing_problem(err),
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            if let Some(allow) = allow {
                let value = header::HeaderValue::from_static(allow);
                response.headers_mut().insert(header::ALLOW, value);
            }
        }
        self.gateway
            .metrics()
            .request(operation, response.status().as_u16());
        Ok(response)
    }
}

/// `GET /openapi.json`, rendered on first request: rendering walks every
/// type of the API, which an idle gateway need not page in.
#[handler]
fn openapi_json() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(DOCUMENT.get_or_init(document).clone())
}

#[handler]
fn metrics(gateway: poem::web::Data<&Arc<Gateway>>) -> Response {
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(gateway.metrics().render(&gateway.gauges()))
}

/// `GET /metrics` alone, for a separate `metrics_listen` address.
pub fn metrics_app(gateway: Arc<Gateway>) -> impl Endpoint + 'static {
    let inner = Route::new()
        .at("/metrics", get(metrics))
        .data(gateway.clone());
    Edge {
        inner,
        gateway,
        deploys: false,
    }
}

/// The whole HTTP application for `gateway`. Docs and metrics follow the
/// policy at the time it is built.
pub fn app(gateway: Arc<Gateway>) -> impl Endpoint + 'static {
    application(gateway, true)
}

/// [`app`] with deploy requests routed to the poem-openapi operations
/// instead of served at the edge; tests compare the two.
#[doc(hidden)]
pub fn app_through_operations(gateway: Arc<Gateway>) -> impl Endpoint + 'static {
    application(gateway, false)
}

fn application(gateway: Arc<Gateway>, deploys: bool) -> impl Endpoint + 'static {
    let policy = gateway.policy();
    let service = service();
    let mut route = Route::new().at("/openapi.json", get(openapi_json));
    if policy.server.docs {
        route = route.nest("/docs", service.swagger_ui());
    }
    if policy.server.metrics && policy.server.metrics_listen.is_none() {
        route = route.at("/metrics", get(metrics));
    }
    let inner = route.nest("/", service).data(gateway.clone());
    Edge {
        inner,
        gateway,
        deploys,
    }
}
