//! The HTTP API: poem-openapi operations, the OpenAPI document, and the
//! mapping of domain outcomes to statuses. Only this module knows poem types.

mod deploy;
mod health;
mod jobs;
mod releases;
pub mod server;
mod signed;
mod ui;
mod wire;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use poem_openapi::{LicenseObject, OpenApiService, OperationId, ServerObject, Tags};

pub use wire::{
    BuildRequest, DeployRequest, Job, JobAction, JobList, JobRollback, JobStatus, Problem,
    PullRequest, RollbackStatus, ServiceDeployRequest, http_status,
};

use crate::gateway::{Code, Gateway};
use crate::policy::Policy;

#[derive(Tags)]
enum ApiTag {
    /// Redeploy a compose service.
    Deploy,
    /// Follow deploy jobs.
    Jobs,
    /// What each service ran, and going back to it.
    Releases,
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

type Api = (
    deploy::DeployApi,
    jobs::JobsApi,
    releases::ReleasesApi,
    health::HealthApi,
);

fn service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (
            deploy::DeployApi,
            jobs::JobsApi,
            releases::ReleasesApi,
            health::HealthApi,
        ),
        "delivery-hook",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
    .license(LicenseObject::new("MIT").url("https://opensource.org/license/mit"))
    .server(ServerObject::new("/").description("the gateway serving this document"))
}

pub use ui::{assets as ui_assets, render_project as ui_project_page};

/// Fields a body must not carry, which the types cannot say (they ignore
/// every field they do not name): a container's body names no service and
/// a service's no container, and the bodies that take no pin carry no
/// `image`. The gateway refuses each with 400.
const ABSENT_FIELDS: [(&str, &[&str]); 5] = [
    ("DeployRequest", &["service_name"]),
    ("ServiceDeployRequest", &["container_name"]),
    ("BuildRequest", &["service_name", "image"]),
    ("ContainerRollbackRequest", &["service_name", "image"]),
    ("ServiceRollbackRequest", &["container_name", "image"]),
];

/// The OpenAPI 3 document, as JSON.
pub fn document() -> String {
    let mut document: serde_json::Value =
        serde_json::from_str(&service().spec()).expect("poem-openapi renders JSON");
    for (schema, fields) in ABSENT_FIELDS {
        let present = fields
            .iter()
            .map(|field| serde_json::json!({ "required": [field] }))
            .collect::<Vec<_>>();
        document["components"]["schemas"][schema]["not"] = serde_json::json!({ "anyOf": present });
    }
    serde_json::to_string_pretty(&document).expect("a JSON value renders")
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

/// Paths served beside the operations, each answering `GET` only, with the
/// name requests to them are counted under.
const OTHER_ROUTES: [(&str, &str); 3] = [
    ("/openapi.json", "openapi"),
    ("/metrics", "metrics"),
    ("/docs", "docs"),
];

/// Whether a path template of the document (`/jobs/{id}`) covers `path`.
fn template_matches(template: &str, path: &str) -> bool {
    let mut expected = template.split('/');
    let mut actual = path.split('/');
    loop {
        match (expected.next(), actual.next()) {
            (None, None) => return true,
            (Some(e), Some(a)) if e.starts_with('{') && e.ends_with('}') && !a.is_empty() => {}
            (Some(e), Some(a)) if e == a => {}
            _ => return false,
        }
    }
}

/// The methods a path answers, for the `Allow` header of a 405: read from
/// the operations' own description, so they cannot disagree with routing.
fn allowed_methods(path: &str) -> Option<String> {
    static OPERATIONS: std::sync::OnceLock<Vec<(String, Vec<String>)>> = std::sync::OnceLock::new();
    let operations = OPERATIONS.get_or_init(|| {
        <Api as poem_openapi::OpenApi>::meta()
            .into_iter()
            .flat_map(|api| api.paths)
            .map(|p| {
                let methods = p.operations.iter().map(|o| o.method.to_string()).collect();
                (p.path, methods)
            })
            .collect()
    });
    if let Some((_, methods)) = operations.iter().find(|(t, _)| template_matches(t, path)) {
        return Some(methods.join(", "));
    }
    OTHER_ROUTES
        .iter()
        .any(|(route, _)| path == *route || path.starts_with(&format!("{route}/")))
        .then(|| "GET".to_owned())
}

/// Errors raised outside the operations (unknown path, wrong method) as problem documents.
fn routing_problem(err: poem::Error) -> Response {
    let status = err.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (Code::NotFound, "no such endpoint".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            Code::MethodNotAllowed,
            "this endpoint does not accept this method".to_owned(),
        ),
        _ => (Code::InvalidRequest, err.to_string()),
    };
    wire::ProblemJson(Problem::new(code, message)).into_response()
}

/// The outermost layer: routing errors become problem documents, a 405
/// says what is allowed, and every answer is counted under its operation.
struct Edge<E> {
    inner: E,
    gateway: Arc<Gateway>,
}

impl<E: Endpoint> Endpoint for Edge<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let path = request.uri().path().to_owned();
        let mut response = match self.inner.call(request).await {
            Ok(output) => output.into_response(),
            Err(err) => routing_problem(err),
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED
            && let Some(allow) = allowed_methods(&path)
            && let Ok(value) = header::HeaderValue::from_str(&allow)
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
        let operation = response.data::<OperationId>().map_or("other", |id| id.0);
        self.gateway
            .metrics()
            .request(operation, response.status().as_u16());
        Ok(response)
    }
}

/// Counts requests to `endpoint` under `name`, as the operations are.
fn named(endpoint: impl Endpoint + 'static, name: &'static str) -> impl Endpoint + 'static {
    endpoint.map_to_response().after(move |result| async move {
        result.map(|mut response| {
            response.set_data(OperationId(name));
            response
        })
    })
}

/// The name an extra route is counted under.
fn route_name(path: &str) -> &'static str {
    OTHER_ROUTES
        .iter()
        .find(|(route, _)| *route == path)
        .map_or("other", |(_, name)| name)
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
        .header(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
        .body(gateway.metrics().render(&gateway.gauges()))
}

/// `GET /metrics` alone, for a separate `metrics_listen` address.
pub fn metrics_app(gateway: Arc<Gateway>) -> impl Endpoint + 'static {
    let inner = Route::new()
        .at("/metrics", named(get(metrics), route_name("/metrics")))
        .data(gateway.clone());
    Edge { inner, gateway }
}

/// The whole HTTP application for `gateway`. Docs and metrics follow the
/// policy at the time it is built.
pub fn app(gateway: Arc<Gateway>) -> impl Endpoint + 'static {
    let policy = gateway.policy();
    let service = service();
    let mut route = Route::new().at(
        "/openapi.json",
        named(get(openapi_json), route_name("/openapi.json")),
    );
    if policy.server.docs {
        route = route.nest("/docs", named(service.swagger_ui(), route_name("/docs")));
    }
    if policy.server.metrics && policy.server.metrics_listen.is_none() {
        route = route.at("/metrics", named(get(metrics), route_name("/metrics")));
    }
    if policy.server.ui.enabled {
        route = route.nest("/ui", named(ui::routes(), "ui"));
    }
    let inner = route.nest("/", service).data(gateway.clone());
    Edge { inner, gateway }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pin the document's pattern admits, the gateway accepts:
    /// a generated client's valid body is never refused as malformed.
    #[test]
    fn the_documented_pin_pattern_admits_only_pins_the_gateway_takes() {
        use proptest::prelude::*;
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let image = &schemas["DeployRequest"]["properties"]["image"];
        let service_image = &schemas["ServiceDeployRequest"]["properties"]["image"];
        assert_eq!(image["pattern"], service_image["pattern"]);
        assert_eq!(image["maxLength"], service_image["maxLength"]);
        let pattern = image["pattern"].as_str().unwrap();
        let max = image["maxLength"].as_u64().unwrap() as usize;
        let inner = pattern
            .strip_prefix('^')
            .unwrap()
            .strip_suffix('$')
            .unwrap();
        let strategy = proptest::string::string_regex(inner).unwrap();
        proptest!(ProptestConfig::with_cases(200), |(text in strategy)| {
            // Longer ones the document's maxLength refuses already.
            if text.len() <= max {
                prop_assert!(crate::docker::ImagePin::parse(&text).is_ok(), "{}", text);
            }
        });
    }

    /// poem-openapi's validators take literals; the document must say what
    /// the gateway enforces.
    #[test]
    fn the_document_states_the_gateways_own_bounds() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        for body in ["DeployRequest", "BuildRequest", "ContainerRollbackRequest"] {
            let name = &doc["components"]["schemas"][body]["properties"]["container_name"];
            assert_eq!(name["pattern"], crate::names::CONTAINER_NAME_PATTERN);
            assert_eq!(name["maxLength"], crate::names::MAX_CONTAINER_NAME);
        }
        let mut waits = 0;
        for (_, operations) in doc["paths"].as_object().unwrap() {
            for (_, operation) in operations.as_object().unwrap() {
                for param in operation["parameters"].as_array().into_iter().flatten() {
                    if param["name"] == "wait" {
                        let max = param["schema"]["maximum"].as_f64();
                        assert_eq!(max, Some(crate::names::MAX_WAIT_SECS as f64));
                        waits += 1;
                    }
                }
            }
        }
        assert_eq!(waits, 4, "pull, build, rollback and getJob take wait");
    }

    #[test]
    fn allow_lists_what_a_path_answers() {
        assert_eq!(allowed_methods("/pull").as_deref(), Some("POST"));
        assert_eq!(allowed_methods("/jobs/0123").as_deref(), Some("GET"));
        assert_eq!(allowed_methods("/jobs").as_deref(), Some("GET"));
        assert_eq!(allowed_methods("/docs/index.css").as_deref(), Some("GET"));
        assert_eq!(allowed_methods("/nope"), None);
        assert_eq!(allowed_methods("/jobs/a/b"), None);
    }
}
